//! Crash points (issue 11): backups and restores stopped at every phase
//! boundary and at timed moments, and what a kill may never leave behind.
//!
//! Real `drillbook backup` and `drillbook restore` processes are held at a
//! crash point (`FAILPOINTS=<point>=return`, see src/failpoint.rs) or let
//! run for a while, then killed: SIGKILL of the process alone (its children
//! must die with it), SIGKILL of its process group, SIGTERM, SIGINT. After
//! each kill:
//!
//! - restore: every new database under a final name is complete (its row
//!   counts are the manifest's); after SIGTERM/SIGINT there is no new
//!   database at all and the exit code is 143/130; no `pg_restore` is left
//!   running; temp dirs are owner-only (0700, files 0600), and gone on exit
//!   (signals) or after the next run (SIGKILL).
//! - backup: every object under `daily/` is a complete dump (size and
//!   sha256 as its manifest says) whose manifest exists, so whatever the
//!   playbook's `sort | tail -1` picks is one; after SIGTERM/SIGINT nothing
//!   of the killed backup is left outside `daily/`.
//!
//! - recover: a data directory a killed `recover` leaves is never one that
//!   looks recovered (its state file says `replaying`); after SIGTERM/SIGINT
//!   there is no data directory, no download and no server at all.
//!
//! Then a normal run must succeed and leave nothing of the killed one.
//! Single-table restore and base backup have no command of their own yet:
//! they are held at each boundary in-process, their future dropped (as a
//! cancelled task is) and cleaned up as the command line does after a
//! signal, with the same checks.
//!
//! Needs the `failpoints` feature, without which this module is not built
//! (the crash lane of .ci/run):
//! `cargo nextest run --features failpoints -E 'test(/^crash_points::/)'`.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use drillbook::backup::backup_database;
use drillbook::basebackup::{list_base_backups, sweep_leftovers as sweep_base_backups, take_base_backup};
use drillbook::env::EmbeddedEnvironment;
use drillbook::fixtures::{FixtureSpec, Profile};
use drillbook::pg::incomplete;
use drillbook::pg::table_facts;
use drillbook::pg::{ConnInfo, quote_ident};
use drillbook::store::manifest::BackupManifest;
use drillbook::store::{Store, layout};
use sqlx::{Connection, PgConnection};

use crate::common::{BIN, sha256_hex, test_name};

/// How a process is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kill {
    /// SIGKILL of drillbook alone: its children must die with it.
    Process,
    /// SIGKILL of its whole process group, as a terminal or supervisor does.
    Group,
    Term,
    Int,
}

impl Kill {
    fn is_signal_handled(self) -> bool {
        matches!(self, Kill::Term | Kill::Int)
    }

    fn send(self, child: &Child) {
        let pid = child.id() as libc::pid_t;
        let (target, signal) = match self {
            Kill::Process => (pid, libc::SIGKILL),
            Kill::Group => (-pid, libc::SIGKILL),
            Kill::Term => (pid, libc::SIGTERM),
            Kill::Int => (pid, libc::SIGINT),
        };
        // SAFETY: kill(2) on our own child (or its group, which it leads).
        unsafe { libc::kill(target, signal) };
    }

    fn exit_code(self) -> Option<i32> {
        match self {
            Kill::Term => Some(143),
            Kill::Int => Some(130),
            _ => None,
        }
    }
}

fn moment_is(moment: Moment, point: &str) -> bool {
    matches!(moment, Moment::At(at) if at == point)
}

/// When the kill comes.
#[derive(Debug, Clone, Copy)]
enum Moment {
    /// Held at a crash point.
    At(&'static str),
    /// This long after the start.
    After(Duration),
}

/// An environment with a seeded source database and one backup, and a
/// private TMPDIR for the processes under test.
struct Bench {
    env: EmbeddedEnvironment,
    tmp: tempfile::TempDir,
    manifest: BackupManifest,
    runs: u32,
    /// A time between two archived commits (archiving benches).
    recovery_target: Option<String>,
}

impl Bench {
    async fn start() -> Self {
        Self::seeded(EmbeddedEnvironment::start().await.unwrap()).await
    }

    /// A bench whose server archives its WAL, with a base backup, and a
    /// recovery target: `recovery_target` lies between two archived commits.
    async fn start_archiving() -> Self {
        let env = EmbeddedEnvironment::start_archiving(None, Path::new(BIN), Duration::from_secs(60))
            .await
            .unwrap();
        let mut bench = Self::seeded(env).await;
        take_base_backup(bench.env.binaries(), &bench.admin(), bench.store())
            .await
            .unwrap();
        let mut conn = PgConnection::connect_with(&bench.env.source().connect_options())
            .await
            .unwrap();
        sqlx::raw_sql("CREATE TABLE marks (id int); INSERT INTO marks VALUES (1)")
            .execute(&mut conn)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        bench.recovery_target = Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
        tokio::time::sleep(Duration::from_millis(300)).await;
        sqlx::raw_sql("INSERT INTO marks VALUES (2)")
            .execute(&mut conn)
            .await
            .unwrap();
        let mut admin = PgConnection::connect_with(&bench.admin().connect_options())
            .await
            .unwrap();
        drillbook::wal::switch_and_wait_archived(&mut admin, Duration::from_secs(60))
            .await
            .unwrap();
        bench
    }

    async fn seeded(env: EmbeddedEnvironment) -> Self {
        env.seed(FixtureSpec {
            profile: Profile::Small,
            seed: 7,
            until: "2026-06-30T12:00:00Z".parse().unwrap(),
        })
        .await
        .unwrap();
        let admin = env.primary().admin();
        let report = backup_database(env.binaries(), &env.source(), Some(&admin), env.store())
            .await
            .unwrap();
        Self {
            env,
            tmp: tempfile::tempdir().unwrap(),
            manifest: report.manifest,
            runs: 0,
            recovery_target: None,
        }
    }

    fn admin(&self) -> ConnInfo {
        self.env.primary().admin()
    }

    fn store(&self) -> &Store {
        self.env.store()
    }

    fn command(&self, args: &[&str]) -> Command {
        let facts = self.env.connection_facts();
        let mut command = Command::new(BIN);
        command
            .args(args)
            .args(["--bucket", &facts.backup_bucket])
            .env("AWS_ACCESS_KEY_ID", &facts.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &facts.secret_key)
            .env("AWS_ENDPOINT_URL", &facts.s3_endpoint)
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("TMPDIR", self.tmp.path())
            .env("DRILL_PROGRESS", "plain")
            .env("RUST_LOG", "drillbook=info")
            .env_remove("DATABASE_URL")
            .env_remove("ADMIN_DATABASE_URL")
            .env_remove("BACKUP_BUCKET")
            .env_remove("FAILPOINTS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        command
    }

    fn restore_args(&mut self) -> Vec<String> {
        self.runs += 1;
        vec![
            "restore".into(),
            "--admin-url".into(),
            self.admin().url(),
            "--target-database".into(),
            format!("crash_restore_{}", self.runs),
        ]
    }

    fn backup_args(&self) -> Vec<String> {
        vec![
            "backup".into(),
            "--database-url".into(),
            self.env.source().url(),
            "--admin-url".into(),
            self.admin().url(),
        ]
    }

    /// Runs `args` to the end, expecting success.
    fn run_ok(&self, args: &[String]) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = self.command(&args).output().unwrap();
        assert!(
            output.status.success(),
            "{args:?} after a kill must succeed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Starts `args`, kills it at `moment` with `kill`, and returns its exit
    /// status code (None when killed by a signal) and its stderr.
    fn run_and_kill(&self, args: &[String], moment: Moment, kill: Kill) -> (Option<i32>, String) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut command = self.command(&args);
        if let Moment::At(point) = moment {
            command.env("FAILPOINTS", format!("{point}=return"));
        }
        let mut child = command.spawn().unwrap();
        let (lines, seen) = mpsc::channel::<String>();
        let stderr = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                all.push_str(&line);
                all.push('\n');
                let _ = lines.send(line);
            }
            all
        });
        match moment {
            Moment::At(point) => {
                let marker = format!("failpoint {point} reached");
                let deadline = Instant::now() + Duration::from_secs(120);
                loop {
                    match seen.recv_timeout(Duration::from_millis(200)) {
                        Ok(line) if line.contains(&marker) => break,
                        Ok(_) => {}
                        Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                            if let Ok(Some(status)) = child.try_wait() {
                                panic!("{args:?} exited ({status}) before reaching {point}");
                            }
                        }
                        Err(_) => {
                            let status = child.wait().unwrap();
                            let stderr = reader.join().unwrap();
                            panic!("{args:?} never reached {point} ({status}):\n{stderr}");
                        }
                    }
                }
            }
            Moment::After(delay) => std::thread::sleep(delay),
        }
        kill.send(&child);
        let status = child.wait().unwrap();
        let stderr = reader.join().unwrap();
        (status.code(), stderr)
    }

    /// Processes whose command line names this bench's TMPDIR (`pg_restore`
    /// of a downloaded dump): waited for a few seconds, then returned.
    fn surviving_children(&self) -> Vec<String> {
        let needle = self.tmp.path().as_os_str().as_encoded_bytes().to_vec();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut found = Vec::new();
            for entry in std::fs::read_dir("/proc").unwrap().flatten() {
                let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                    continue;
                };
                if cmdline.windows(needle.len()).any(|w| w == needle) {
                    found.push(String::from_utf8_lossy(&cmdline).replace('\0', " "));
                }
            }
            if found.is_empty() || Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything under the bench's TMPDIR: `(path, mode)`.
    fn temp_entries(&self) -> Vec<(String, u32)> {
        fn walk(dir: &Path, into: &mut Vec<(String, u32)>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                let Ok(meta) = std::fs::symlink_metadata(&path) else {
                    continue;
                };
                into.push((path.display().to_string(), meta.permissions().mode() & 0o777));
                if meta.is_dir() {
                    walk(&path, into);
                }
            }
        }
        let mut entries = Vec::new();
        walk(self.tmp.path(), &mut entries);
        entries
    }

    /// Temp data is private: directories 0700, the rest readable by the owner alone.
    fn assert_temp_private(&self, context: &str) {
        for (path, mode) in self.temp_entries() {
            let limit = if Path::new(&path).is_dir() { 0o700 } else { 0o600 };
            assert_eq!(
                mode & !limit,
                0,
                "{context}: {path} has mode {mode:o}, readable by others"
            );
        }
    }

    async fn databases(&self) -> BTreeSet<String> {
        let mut conn = PgConnection::connect_with(&self.admin().connect_options())
            .await
            .unwrap();
        let names: Vec<String> = sqlx::query_scalar("SELECT datname FROM pg_database WHERE NOT datistemplate")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        names.into_iter().collect()
    }

    /// Every table's row count in `database` equals the manifest's.
    async fn assert_complete(&self, database: &str, context: &str) {
        let mut conn = PgConnection::connect_with(&self.admin().with_database(database).connect_options())
            .await
            .unwrap();
        let facts = table_facts(&mut conn).await.unwrap();
        for (table, expected) in &self.manifest.tables {
            let actual = facts.get(table).map(|f| f.rows);
            assert_eq!(
                actual,
                Some(expected.rows),
                "{context}: {database} holds an incomplete {table} under a final name"
            );
        }
    }

    async fn drop_database(&self, database: &str) {
        let mut conn = PgConnection::connect_with(&self.admin().connect_options())
            .await
            .unwrap();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(database));
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .unwrap();
    }

    /// One restore killed at `moment` with `kill`, the invariants, then a
    /// normal restore that must succeed and leave nothing of the killed one.
    async fn kill_a_restore(&mut self, moment: Moment, kill: Kill) {
        let context = format!("restore killed ({kill:?}) at {moment:?}");
        let before = self.databases().await;
        let args = self.restore_args();
        let (code, stderr) = self.run_and_kill(&args, moment, kill);
        let finished = code == Some(0);
        if let (Some(expected), Moment::At(_)) = (kill.exit_code(), moment) {
            assert_eq!(code, Some(expected), "{context}: exit code\n{stderr}");
        }
        assert_eq!(
            self.surviving_children(),
            Vec::<String>::new(),
            "{context}: children outlived drillbook"
        );

        let new: Vec<String> = self.databases().await.difference(&before).cloned().collect();
        for database in &new {
            if database.starts_with(incomplete::PREFIX) {
                assert!(
                    !kill.is_signal_handled(),
                    "{context}: {database} was left although the signal was handled\n{stderr}"
                );
            } else {
                // Under its final name only after verification: complete.
                self.assert_complete(database, &context).await;
            }
        }
        self.assert_temp_private(&context);
        if kill.is_signal_handled() || finished {
            let left: Vec<_> = self
                .temp_entries()
                .into_iter()
                .filter(|(p, _)| p.contains("drillbook-restore-"))
                .collect();
            assert_eq!(left, vec![], "{context}: the download outlived the command\n{stderr}");
        }

        // The next restore succeeds and removes what the killed one left.
        let followup = self.restore_args();
        self.run_ok(&followup);
        let after = self.databases().await;
        let incomplete_left: Vec<&String> = after.iter().filter(|d| d.starts_with(incomplete::PREFIX)).collect();
        assert_eq!(
            incomplete_left,
            Vec::<&String>::new(),
            "{context}: the next restore reaps"
        );
        assert_eq!(
            self.temp_entries(),
            vec![],
            "{context}: the next restore reaps the temp dir"
        );
        for database in after.difference(&before) {
            self.assert_complete(database, &context).await;
            self.drop_database(database).await;
        }
    }

    /// Every object under `daily/` is a complete dump whose manifest exists.
    async fn assert_daily_complete(&self, context: &str) {
        let daily = self.store().list(layout::DAILY).await.unwrap();
        assert!(!daily.is_empty(), "{context}: the first backup is gone");
        for object in &daily {
            let stamp = layout::stamp_of_dump(&object.key)
                .unwrap_or_else(|| panic!("{context}: {} under daily/ is not a dump", object.key));
            let manifest = self
                .store()
                .get_bytes(&layout::manifest_key(stamp))
                .await
                .unwrap_or_else(|e| panic!("{context}: {} has no manifest: {e}", object.key));
            let manifest = BackupManifest::from_json(&manifest).unwrap();
            let dump = self.store().get_bytes(&object.key).await.unwrap();
            assert_eq!(manifest.dump.key, object.key, "{context}");
            assert_eq!(
                dump.len() as u64,
                manifest.dump.bytes,
                "{context}: {} is partial",
                object.key
            );
            assert_eq!(sha256_hex(&dump), manifest.dump.sha256, "{context}: {}", object.key);
        }
    }

    /// Nothing outside `daily/` but what its published dumps own.
    async fn assert_no_backup_leftovers(&self, context: &str) {
        let published: BTreeSet<String> = self
            .store()
            .list(layout::DAILY)
            .await
            .unwrap()
            .iter()
            .filter_map(|o| layout::stamp_of_dump(&o.key).map(str::to_owned))
            .collect();
        assert_eq!(
            self.store().list(layout::INCOMING).await.unwrap(),
            vec![],
            "{context}: incoming/ left"
        );
        for object in self.store().list(layout::MANIFESTS).await.unwrap() {
            let stamp = layout::stamp_under(layout::MANIFESTS, &object.key).unwrap();
            assert!(
                published.contains(stamp),
                "{context}: {} of no published dump",
                object.key
            );
        }
    }

    async fn kill_a_backup(&mut self, moment: Moment, kill: Kill) {
        let context = format!("backup killed ({kill:?}) at {moment:?}");
        let unfinished_before = self.unfinished_uploads();
        let args = self.backup_args();
        let (code, stderr) = self.run_and_kill(&args, moment, kill);
        if let (Some(expected), Moment::At(_)) = (kill.exit_code(), moment) {
            assert_eq!(code, Some(expected), "{context}: exit code\n{stderr}");
        }
        assert_eq!(
            self.surviving_children(),
            Vec::<String>::new(),
            "{context}: children outlived drillbook"
        );
        self.assert_daily_complete(&context).await;
        if kill.is_signal_handled() || code == Some(0) {
            self.assert_no_backup_leftovers(&context).await;
        }
        self.assert_temp_private(&context);

        self.run_ok(&args);
        self.assert_daily_complete(&context).await;
        self.assert_no_backup_leftovers(&context).await;
        // Every dump upload the killed backup recorded was aborted by the
        // next one's sweep. Killed between beginning its upload and
        // recording it, a SIGKILLed backup leaves one only AWS can list
        // (the embedded server cannot), invisible and never read.
        let unrecorded = moment_is(moment, "backup::upload_begun") && !kill.is_signal_handled();
        let unfinished = self.unfinished_uploads() - unfinished_before.min(self.unfinished_uploads());
        assert!(
            unfinished <= usize::from(unrecorded),
            "{context}: {unfinished} multipart uploads were never aborted"
        );
    }

    /// Multipart uploads begun and neither completed nor aborted, in the
    /// embedded S3's files (`.upload-<id>.json` each).
    fn unfinished_uploads(&self) -> usize {
        std::fs::read_dir(self.env.s3().root())
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                let name = name.to_string_lossy();
                name.starts_with(".upload-") && name.ends_with(".json")
            })
            .count()
    }

    async fn kill_a_base_backup(&mut self, moment: Moment, kill: Kill) {
        let context = format!("basebackup killed ({kill:?}) at {moment:?}");
        let args = vec!["basebackup".to_owned(), "--admin-url".to_owned(), self.admin().url()];
        let (code, stderr) = self.run_and_kill(&args, moment, kill);
        if let (Some(expected), Moment::At(_)) = (kill.exit_code(), moment) {
            assert_eq!(code, Some(expected), "{context}: exit code\n{stderr}");
        }
        assert_eq!(
            self.surviving_children(),
            Vec::<String>::new(),
            "{context}: children outlived drillbook"
        );
        assert_base_backups_complete(self.store(), &context, kill.is_signal_handled() || code == Some(0)).await;

        self.run_ok(&args);
        assert_base_backups_complete(self.store(), &context, true).await;
    }
}

impl Bench {
    /// One `recover --pause` killed at `moment` with `kill`: a data
    /// directory it leaves is never one that looks recovered (its state is
    /// `replaying`, which nothing promotes), after SIGTERM/SIGINT nothing is
    /// left and no server runs; then a normal recover into the same
    /// directory reaps the leftovers and pauses at the target.
    async fn kill_a_recover(&mut self, moment: Moment, kill: Kill) {
        use drillbook::pitr::data_dir::{Phase, RecoveryState, incoming_path};
        let context = format!("recover killed ({kill:?}) at {moment:?}");
        self.runs += 1;
        let pgdata = self.tmp.path().join(format!("recovered-{}", self.runs));
        let args: Vec<String> = [
            "recover",
            "--pgdata",
            &pgdata.display().to_string(),
            "--to-time",
            self.recovery_target.as_deref().expect("an archiving bench"),
            "--pause",
        ]
        .map(str::to_owned)
        .to_vec();
        let (code, stderr) = self.run_and_kill(&args, moment, kill);
        if let (Some(expected), Moment::At(_)) = (kill.exit_code(), moment) {
            assert_eq!(code, Some(expected), "{context}: exit code\n{stderr}");
        }
        let state = RecoveryState::read(&pgdata).unwrap();
        match code {
            Some(0) => assert_eq!(state.map(|s| s.phase), Some(Phase::Paused), "{context}: finished"),
            _ if kill.is_signal_handled() => {
                assert!(
                    !pgdata.exists(),
                    "{context}: an interrupted recovery left {}\n{stderr}",
                    pgdata.display()
                );
                assert!(!incoming_path(&pgdata).exists(), "{context}: its download stayed");
                assert_eq!(
                    self.surviving_children(),
                    Vec::<String>::new(),
                    "{context}: its server kept running"
                );
            }
            _ => {
                if pgdata.exists() {
                    assert_eq!(
                        state.map(|s| s.phase),
                        Some(Phase::Replaying),
                        "{context}: a killed recovery must never look recovered"
                    );
                }
            }
        }

        // The next recover into the same directory finishes the job.
        let pgdata_text = pgdata.display().to_string();
        if code == Some(0) {
            self.stop_recovery(&pgdata).await;
            std::fs::remove_dir_all(&pgdata).unwrap();
        }
        self.run_ok(&args);
        assert_eq!(
            RecoveryState::read(&pgdata).unwrap().map(|s| s.phase),
            Some(Phase::Paused),
            "{context}: the recover after it pauses at the target"
        );
        assert!(
            !incoming_path(&pgdata).exists(),
            "{context}: {pgdata_text}'s download stayed"
        );
        self.stop_recovery(&pgdata).await;
        assert_eq!(
            self.surviving_children(),
            Vec::<String>::new(),
            "{context}: a server outlived its recovery"
        );
        std::fs::remove_dir_all(&pgdata).unwrap();
    }

    async fn stop_recovery(&self, pgdata: &Path) {
        drillbook::pg::DataDirServer::open(self.env.binaries(), pgdata)
            .unwrap()
            .stop()
            .await
            .unwrap();
    }
}

const RECOVER_POINTS: [&str; 4] = [
    "basebackup::restore_midway",
    "recover::after_download",
    "recover::after_install",
    "recover::replaying",
];

const RESTORE_POINTS: [&str; 3] = [
    "restore::before_pg_restore",
    "restore::before_verify",
    "incomplete::before_rename",
];

const BACKUP_POINTS: [&str; 5] = [
    "backup::upload_begun",
    "backup::before_dump",
    "backup::before_manifest",
    "backup::before_publish",
    "backup::after_publish",
];

const MOMENTS_MS: [u64; 4] = [150, 500, 1_000, 2_000];

#[derive(Debug, Clone, Copy)]
enum Operation {
    Backup,
    BaseBackup,
    Restore,
    Recover,
}

fn at_points(points: &[&'static str]) -> Vec<Moment> {
    points.iter().map(|&point| Moment::At(point)).collect()
}

fn timed() -> Vec<Moment> {
    MOMENTS_MS
        .iter()
        .map(|&ms| Moment::After(Duration::from_millis(ms)))
        .collect()
}

/// Kills `operation` at every moment with every kill, on one bench.
async fn kill_at_every(operation: Operation, moments: &[Moment], kills: &[Kill]) {
    let mut bench = match operation {
        Operation::Recover => Bench::start_archiving().await,
        _ => Bench::start().await,
    };
    for &moment in moments {
        for &kill in kills {
            match operation {
                Operation::Backup => bench.kill_a_backup(moment, kill).await,
                Operation::BaseBackup => bench.kill_a_base_backup(moment, kill).await,
                Operation::Restore => bench.kill_a_restore(moment, kill).await,
                Operation::Recover => bench.kill_a_recover(moment, kill).await,
            }
        }
    }
    eprintln!(
        "{operation:?}: {} moments x {kills:?} tried, invariants held",
        moments.len()
    );
    bench.env.cleanup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restores_sigkilled_at_every_crash_point_leave_nothing_that_looks_restored() {
    kill_at_every(
        Operation::Restore,
        &at_points(&RESTORE_POINTS),
        &[Kill::Process, Kill::Group],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restores_interrupted_at_every_crash_point_drop_what_they_made() {
    kill_at_every(
        Operation::Restore,
        &at_points(&RESTORE_POINTS),
        &[Kill::Term, Kill::Int],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restores_killed_at_timed_moments_leave_nothing_that_looks_restored() {
    kill_at_every(Operation::Restore, &timed(), &[Kill::Process, Kill::Term]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_sigkilled_at_every_crash_point_keep_every_daily_object_a_complete_dump() {
    kill_at_every(
        Operation::Backup,
        &at_points(&BACKUP_POINTS),
        &[Kill::Process, Kill::Group],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_interrupted_at_every_crash_point_keep_every_daily_object_a_complete_dump() {
    kill_at_every(Operation::Backup, &at_points(&BACKUP_POINTS), &[Kill::Term, Kill::Int]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_killed_at_timed_moments_keep_every_daily_object_a_complete_dump() {
    kill_at_every(Operation::Backup, &timed(), &[Kill::Process, Kill::Term]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_killed_at_every_crash_point_leave_nothing_that_looks_recovered() {
    kill_at_every(
        Operation::Recover,
        &at_points(&RECOVER_POINTS),
        &[Kill::Group, Kill::Term],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_killed_at_timed_moments_leave_nothing_that_looks_recovered() {
    let moments = [300, 1_500, 3_000].map(|ms| Moment::After(Duration::from_millis(ms)));
    kill_at_every(Operation::Recover, &moments, &[Kill::Process, Kill::Int]).await;
}

/// Holds `work` at `point` in this process, then drops it, as a cancelled
/// task is dropped.
async fn hold_and_drop<T>(point: &'static str, work: impl std::future::Future<Output = T>) {
    fail::cfg(point, "return").unwrap();
    let reached = async {
        while !drillbook::failpoint::was_reached(point) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        _ = work => panic!("the operation finished although held at {point}"),
        () = reached => {}
        () = tokio::time::sleep(Duration::from_secs(120)) => panic!("{point} never reached"),
    }
    fail::remove(point);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_table_restores_stopped_at_every_crash_point_leave_the_table_untouched() {
    let bench = Bench::start().await;
    let source = bench.env.source();
    let admin = bench.admin();
    let count = || async {
        let mut conn = PgConnection::connect_with(&source.connect_options()).await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM invoice_lines")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        n
    };
    let mut conn = PgConnection::connect_with(&source.connect_options()).await.unwrap();
    sqlx::raw_sql("DELETE FROM invoice_lines WHERE id % 3 = 0")
        .execute(&mut conn)
        .await
        .unwrap();
    let damaged = count().await;
    for point in ["table_restore::before_pg_restore", "table_restore::before_replace"] {
        hold_and_drop(
            point,
            drillbook::table_restore::restore_table(
                bench.env.binaries(),
                &admin,
                &source,
                bench.store(),
                "invoice_lines",
            ),
        )
        .await;
        assert_eq!(count().await, damaged, "stopped at {point}: the table is untouched");
        // What the command line does after a signal: its scratch database goes.
        let reaped = incomplete::reap(&admin, true).await.unwrap();
        assert!(
            reaped.iter().all(|d| d.owner_gone),
            "stopped at {point}: every scratch database is reaped: {reaped:?}"
        );
        assert!(
            incomplete::reap(&admin, false).await.unwrap().is_empty(),
            "stopped at {point}: no scratch database is left"
        );
    }
    let report =
        drillbook::table_restore::restore_table(bench.env.binaries(), &admin, &source, bench.store(), "invoice_lines")
            .await
            .unwrap();
    assert_eq!(
        count().await as u64,
        report.rows_restored,
        "a normal run after the stops restores"
    );
    assert!(report.rows_restored as i64 > damaged);
    bench.env.cleanup().await.unwrap();
}

/// Every base backup that counts is complete (its tar as its manifest
/// says); with `swept`, nothing else is under `base/` either (no tar
/// without a manifest, no owner marker).
async fn assert_base_backups_complete(store: &Store, context: &str, swept: bool) {
    let finished = list_base_backups(store).await.unwrap();
    for manifest in &finished {
        let tar = store.size_of(&manifest.tar_key).await.unwrap();
        assert_eq!(tar, Some(manifest.tar_bytes), "{context}: {}", manifest.tar_key);
    }
    if !swept {
        return;
    }
    let finished: BTreeSet<&str> = finished.iter().map(|m| m.stamp.as_str()).collect();
    for object in store.list("base/").await.unwrap() {
        let stamp = layout::stamp_under("base/", &object.key).unwrap();
        assert!(
            finished.contains(stamp) && !object.key.ends_with("/owner"),
            "{context}: {} left behind",
            object.key
        );
    }
}

/// `drillbook basebackup` held at each crash point and killed: handled
/// signals exit 130/143 and leave no tar without its manifest; after a
/// SIGKILL the next base backup sweeps what was left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_backup_commands_killed_at_every_crash_point_leave_only_complete_base_backups() {
    let points = [
        "basebackup::before_tar",
        "basebackup::before_manifest",
        "basebackup::after_manifest",
    ];
    kill_at_every(
        Operation::BaseBackup,
        &at_points(&points),
        &[Kill::Term, Kill::Int, Kill::Process],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_backups_stopped_at_every_crash_point_are_never_used_and_are_swept() {
    let bench = Bench::start().await;
    let admin = bench.admin();
    let store = bench.store();
    for point in [
        "basebackup::before_tar",
        "basebackup::before_manifest",
        "basebackup::after_manifest",
    ] {
        hold_and_drop(point, take_base_backup(bench.env.binaries(), &admin, store)).await;
        assert_base_backups_complete(store, &format!("stopped at {point}"), false).await;
        // What the command line does after a signal.
        sweep_base_backups(store, true).await.unwrap();
        assert_base_backups_complete(store, &format!("stopped at {point}"), true).await;
    }
    let taken = take_base_backup(bench.env.binaries(), &admin, store).await.unwrap();
    assert!(
        list_base_backups(store)
            .await
            .unwrap()
            .iter()
            .any(|m| m.stamp == taken.stamp)
    );
    bench.env.cleanup().await.unwrap();
}

/// Set in the child process of the test below: the admin URL it connects to.
const SESSION_CHILD: &str = "DRILLBOOK_SESSION_CHILD";

/// A drillbook killed while the server works for it leaves that work
/// running: the server notices a vanished client only when it next writes
/// to it, so a `CREATE DATABASE` or `pg_restore` load goes on and may commit
/// after a reap has listed the databases. The reap therefore ends the
/// sessions of gone drillbooks first, and waits for them; a living
/// process's sessions are left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_drillbooks_server_sessions_are_ended_before_its_databases_are_reaped() {
    if let Some(url) = std::env::var_os(SESSION_CHILD) {
        let admin: ConnInfo = url.to_str().unwrap().parse().unwrap();
        let mut conn = PgConnection::connect_with(&admin.connect_options()).await.unwrap();
        let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        println!("backend {backend}");
        let _ = sqlx::raw_sql("SELECT pg_sleep(600)").execute(&mut conn).await;
        return;
    }
    let bins = drillbook::pg::PgBinaries::discover().unwrap();
    let cluster = drillbook::pg::Cluster::start(&bins, drillbook::pg::ClusterOptions::default())
        .await
        .unwrap();
    let admin = cluster.admin();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            &test_name(
                module_path!(),
                "a_killed_drillbooks_server_sessions_are_ended_before_its_databases_are_reaped",
            ),
            "--nocapture",
        ])
        .env(SESSION_CHILD, admin.url())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let backend: i32 = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find_map(|line| line.strip_prefix("backend ")?.parse().ok())
        .expect("the child reports its session");

    let mut watcher = PgConnection::connect_with(&admin.connect_options()).await.unwrap();
    let state = async |watcher: &mut PgConnection| -> Option<(String, String)> {
        sqlx::query_as("SELECT coalesce(state, ''), application_name FROM pg_stat_activity WHERE pid = $1")
            .bind(backend)
            .fetch_optional(watcher)
            .await
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while state(&mut watcher).await.is_none_or(|(state, _)| state != "active") {
        assert!(Instant::now() < deadline, "the child's session never became active");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A living process's busy session: this one, in the background.
    let mut living = PgConnection::connect_with(&admin.connect_options()).await.unwrap();
    let living_backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut living)
        .await
        .unwrap();
    let busy = tokio::spawn(async move { sqlx::raw_sql("SELECT pg_sleep(600)").execute(&mut living).await });

    Kill::Process.send(&child);
    child.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, application) = state(&mut watcher)
        .await
        .expect("the server still works for the killed client: the case this test is about");
    assert!(
        application.starts_with("drillbook/") && application.contains(&format!("_{}_", child.id())),
        "a session names its drillbook process: {application}"
    );

    let reaped = incomplete::reap(&admin, false).await.unwrap();
    assert!(reaped.is_empty(), "no incomplete database here: {reaped:?}");
    assert_eq!(
        state(&mut watcher).await,
        None,
        "the killed drillbook's session was ended, and waited for"
    );
    let alive: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)")
        .bind(living_backend)
        .fetch_one(&mut watcher)
        .await
        .unwrap();
    assert!(alive && !busy.is_finished(), "a living process's session is left alone");
    busy.abort();
    drop(watcher);
    cluster.cleanup().await.unwrap();
}

/// The read-ahead of `wal-fetch` (issue 15), its prefetcher SIGKILLed with a
/// verified segment fully written to its temp file (held just before the
/// rename): nothing it wrote is ever served (the temp files are even
/// overwritten with garbage here), the next call fetches the segment itself,
/// and the next prefetcher removes the temp files.
#[tokio::test]
async fn wal_prefetchers_killed_before_their_rename_leave_nothing_that_is_served() {
    use crate::wal_archive::{archive_segments, fetch_as_postgres, spool_files, wait_for_spool};

    let s3 = drillbook::env::EmbeddedS3::start().unwrap();
    let store = Store::connect(s3.config("wal-prefetch-kill")).await;
    store.ensure_bucket().await.unwrap();
    let segments = archive_segments(&store, 4).await;
    let data_dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(data_dir.path().join("pg_wal")).unwrap();
    let spool = data_dir.path().join("pg_wal").join(drillbook::wal::SPOOL_DIR);

    // The prefetcher inherits FAILPOINTS from the call that starts it.
    // SAFETY: no other thread of this test process reads the environment now.
    unsafe { std::env::set_var("FAILPOINTS", "wal::prefetch::before_rename=return") };
    let first = fetch_as_postgres(&store, data_dir.path(), &segments[0].0);
    // SAFETY: as above.
    unsafe { std::env::remove_var("FAILPOINTS") };
    assert!(first.unwrap() == segments[0].1);
    let held = |files: &[String]| {
        files
            .iter()
            .filter(|f| f.contains(".tmp-"))
            .filter(|f| std::fs::metadata(spool.join(f)).is_ok_and(|m| m.len() == 16 << 20))
            .count()
            == 1
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !held(&spool_files(&spool)) {
        assert!(
            Instant::now() < deadline,
            "prefetcher never held: {:?}",
            spool_files(&spool)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid: i32 = std::fs::read_to_string(spool.join("lock"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: kill(2) of the prefetcher this test started (its pid from the lock it holds).
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}/stat"))
        .exists()
        .then(|| std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default())
        .is_some_and(|stat| !stat.contains(") Z "))
    {
        assert!(Instant::now() < deadline, "the prefetcher outlived SIGKILL");
        std::thread::sleep(Duration::from_millis(10));
    }

    let left = spool_files(&spool);
    let temps: Vec<&String> = left.iter().filter(|f| f.contains(".tmp-")).collect();
    // The prefetcher ramps up: held at its first segment, it starts no other.
    assert_eq!(temps.len(), 1, "{left:?}");
    assert!(
        !left.iter().any(|f| f.len() == 24),
        "a segment was renamed into place: {left:?}"
    );
    for temp in &temps {
        std::fs::write(spool.join(temp), vec![0xAB; 16 << 20]).unwrap();
    }
    for (name, bytes) in &segments[1..] {
        assert!(
            fetch_as_postgres(&store, data_dir.path(), name).unwrap() == *bytes,
            "{name} differs"
        );
    }
    let after = wait_for_spool(&spool, |_| true);
    assert!(
        !after.iter().any(|f| f.contains(&format!(".tmp-{pid}-"))),
        "the killed prefetcher's temp files stayed: {after:?}"
    );
    let (code, _) = fetch_as_postgres(&store, data_dir.path(), "000000010000000000000005").unwrap_err();
    assert_eq!(code, Some(1));
    assert!(!spool.exists());
    s3.cleanup();
}
