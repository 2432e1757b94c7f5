//! Recovery figures, each next to the same operation on the local disk,
//! measured in one run:
//!
//! ```sh
//! cargo bench --bench recovery                       # small profile
//! BENCH_PROFILE=medium BENCH_WAL_MB=400 cargo bench --bench recovery
//! ```
//!
//! Prints: a base backup to the embedded S3 and its restore (ranged GETs,
//! zstd, untar, each file checked against backup_manifest) next to
//! pgBackRest's full backup and restore of the same cluster (a local repo,
//! lz4, process-max 2; install it with `apt-get install -y pgbackrest`,
//! without it that side is skipped and its ratios are unavailable);
//! PITR replay speed in WAL MB/s with `restore_command` = `drillbook
//! wal-fetch` from S3 and = `cp` from a local archive; PITR to a time with
//! `drillbook recover --to-time` next to the library call the drills made
//! before the command existed. Figures, not assertions: shared machines are
//! noisy. Ends with one `ratio <name> <measured> goal <goal>` line per
//! comparison with pgBackRest.

use std::path::Path;
use std::time::{Duration, Instant};

use drillbook::basebackup::{download_base_backup, take_base_backup};
use drillbook::env::ArchivingEnvironment;
use drillbook::fixtures::{FixtureSpec, Profile, seed};
use drillbook::pg::Cluster;
use drillbook::pitr::{RecoveryTarget, recover_to};
use drillbook::wal::{WalArchive, switch_and_wait_archived};
use sqlx::{Connection, PgConnection};

#[path = "support/local_archive.rs"]
mod local_archive;
use local_archive::copy_archive_locally;

#[tokio::main]
async fn main() {
    let profile = match std::env::var("BENCH_PROFILE").as_deref() {
        Ok("medium") => Profile::Medium,
        Ok("large") => Profile::Large,
        _ => Profile::Small,
    };
    let wal_mb: u64 = std::env::var("BENCH_WAL_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(160);
    let program = Path::new(env!("CARGO_BIN_EXE_drillbook"));
    let env = ArchivingEnvironment::start(program, Duration::from_secs(60))
        .await
        .expect("environment starts");
    seed(&env.source(), FixtureSpec::ending_now(profile, 42))
        .await
        .expect("seed");
    let bins = env.bins.clone();
    let admin = env.primary().admin();
    let scratch = tempfile::tempdir().expect("temp dir");

    // Base backups side by side: drillbook to the embedded S3, pgBackRest
    // to a repo on local disk, of the same cluster; then their restores.
    // Each backup starts from a clean checkpoint: the seeding's dirty pages
    // are not flushed on the first one's account.
    checkpoint(&admin).await;
    let started = Instant::now();
    let base = take_base_backup(&bins, &admin, env.store())
        .await
        .expect("base backup to S3");
    let backup_time = started.elapsed();
    let restore_dir = scratch.path().join("from-s3");
    std::fs::create_dir(&restore_dir).expect("dir");
    let started = Instant::now();
    let restored = download_base_backup(&bins, env.store(), &base, &restore_dir)
        .await
        .expect("restore from S3");
    let restore_time = started.elapsed();
    let restored_bytes = dir_bytes(&restored);
    let pgbackrest = match PgBackRest::find() {
        Some(program) => {
            checkpoint(&admin).await;
            Some(PgBackRest::new(program, env.primary()).measure())
        }
        None => {
            println!(
                "pgbackrest not found: install pgBackRest 2.45 from Debian (`apt-get install -y pgbackrest`) to compare; its side is skipped"
            );
            None
        }
    };
    println!(
        "base backup of the same cluster (profile {profile}: {} of files in the backup)",
        mb(restored_bytes)
    );
    println!(
        "  drillbook to the embedded S3 ({:?}):  {:>8} stored in {:>7}  {}",
        base.compression,
        mb(base.tar_bytes),
        secs(backup_time),
        rate(restored_bytes, backup_time)
    );
    if let Some(peer) = &pgbackrest {
        println!(
            "  pgBackRest to a local repo (lz4, process-max 2): {:>8} stored in {:>7}  {}",
            mb(peer.stored_bytes),
            secs(peer.backup),
            rate(restored_bytes, peer.backup)
        );
    }
    println!("base backup restore into a data dir, verified, ready to start");
    println!(
        "  drillbook from the embedded S3 (ranged GETs, zstd, untar, backup_manifest checksums): {:>8} in {:>7}  {}",
        mb(restored_bytes),
        secs(restore_time),
        rate(restored_bytes, restore_time)
    );
    if let Some(peer) = &pgbackrest {
        println!(
            "  pgBackRest restore from the local repo (checks each file's sha1): {:>8} in {:>7}  {}",
            mb(peer.restored_bytes),
            secs(peer.restore),
            rate(peer.restored_bytes, peer.restore)
        );
        println!("    (its WAL comes by archive-get at start; drillbook's tar carries the WAL the backup needs)");
    }
    let mut ratios = Vec::new();
    match &pgbackrest {
        Some(peer) => {
            ratios.push(format!(
                "ratio physical_restore_vs_pgbackrest {:.2} goal 1.00",
                restore_time.as_secs_f64() / peer.restore.as_secs_f64().max(1e-9)
            ));
            ratios.push(format!(
                "ratio base_backup_vs_pgbackrest {:.2} goal 1.00",
                backup_time.as_secs_f64() / peer.backup.as_secs_f64().max(1e-9)
            ));
            ratios.push(format!(
                "ratio base_backup_bytes_vs_pgbackrest {:.2} goal 1.00",
                base.tar_bytes as f64 / peer.stored_bytes.max(1) as f64
            ));
        }
        None => ratios.push(
            "ratio physical_restore_vs_pgbackrest, base_backup_vs_pgbackrest, base_backup_bytes_vs_pgbackrest: \
             unavailable (pgbackrest is not installed)"
                .to_owned(),
        ),
    }
    std::fs::remove_dir_all(&restore_dir).expect("remove the restored copy");

    // WAL to replay: about wal_mb of inserts after the base backup, archived.
    let mut conn = PgConnection::connect_with(&env.source().connect_options())
        .await
        .expect("connect");
    let rows = wal_mb * 1024 * 1024 / 300;
    let started = Instant::now();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE bench_wal (id bigint, pad text);
         INSERT INTO bench_wal SELECT g, repeat(md5(g::text), 6) FROM generate_series(1, {rows}) g;"
    )))
    .execute(&mut conn)
    .await
    .expect("generate WAL");
    // A time target inside the archive: a commit after it ends its replay.
    let target_time = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    sqlx::raw_sql("INSERT INTO bench_wal VALUES (0, 'after the target')")
        .execute(&mut conn)
        .await
        .expect("a commit after the target");
    conn.close().await.expect("close");
    let mut admin_conn = PgConnection::connect_with(&admin.connect_options())
        .await
        .expect("connect");
    switch_and_wait_archived(&mut admin_conn, Duration::from_secs(600))
        .await
        .expect("archived");
    let archiving = started.elapsed();
    admin_conn.close().await.expect("close");
    let archive = WalArchive::new(env.store().clone());
    let names = archive.list(None).await.expect("list archive");
    println!(
        "WAL written and archived to S3 by wal-push: {} files in {}",
        names.len(),
        secs(archiving)
    );

    // The same archive on local disk, for `cp` as restore_command.
    let local_archive = copy_archive_locally(&archive, &names, scratch.path()).await;

    println!("PITR replay to the end of the archive (server start to promoted)");
    for (label, command) in [
        ("restore_command = drillbook wal-fetch (S3)", None),
        (
            "restore_command = cp (local disk)       ",
            Some(format!("cp {}/%f %p", local_archive.display())),
        ),
    ] {
        let mut options = env.pitr_options();
        options.restore_command = command;
        let recovered = recover_to(&bins, env.store(), &RecoveryTarget::EndOfArchive, &options)
            .await
            .expect("recovery");
        println!(
            "  {label}: {:>8} WAL in {:>7}  {}",
            mb(recovered.wal_bytes_replayed),
            secs(recovered.replay),
            rate(recovered.wal_bytes_replayed, recovered.replay)
        );
        recovered.server.cleanup().await.expect("cleanup");
    }

    // `drillbook recover --to-time` (the operator's command) against the
    // library call the PITR drills made before it existed, same archive and
    // target, wall clock from the call to a promoted server.
    println!("PITR to a time, end to end (pick + download + check + replay + promote)");
    let target = RecoveryTarget::Time(target_time);
    let started = Instant::now();
    let recovered = recover_to(&bins, env.store(), &target, &env.pitr_options())
        .await
        .expect("library recovery");
    let library = started.elapsed();
    recovered.server.cleanup().await.expect("cleanup");
    let pgdata = scratch.path().join("recovered-by-command");
    let started = Instant::now();
    let output = std::process::Command::new(program)
        .args(["recover", "--bucket", &env.store().config().location(), "--pgdata"])
        .arg(&pgdata)
        .args([
            "--to-time",
            &target_time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "--json",
        ])
        .envs(drillbook::wal::server_env(env.store().config()))
        .env("DRILL_PROGRESS", "off")
        .output()
        .expect("run drillbook recover");
    let command = started.elapsed();
    assert!(
        output.status.success(),
        "drillbook recover failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    drillbook::pg::DataDirServer::open(&bins, &pgdata)
        .expect("recovered data dir")
        .stop()
        .await
        .expect("stop the recovered server");
    println!("  library recover_to (into a temp cluster): {:>7}", secs(library));
    println!(
        "  drillbook recover --to-time (--pgdata):   {:>7}  ({:.2}x the library call)",
        secs(command),
        command.as_secs_f64() / library.as_secs_f64().max(1e-9)
    );
    env.cleanup().await.expect("cleanup");
    for line in ratios {
        println!("{line}");
    }
}

/// pgBackRest over the bench's cluster: a stanza in a temp repo on local
/// disk (lz4, process-max 2), run as the server's user. WAL is archived by
/// drillbook, so pgBackRest's archive checks are off (`archive-check=n`);
/// its full backup still waits for the backup's end WAL to be archived by
/// the server as any backup does.
struct PgBackRest {
    program: std::path::PathBuf,
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
}

/// What pgBackRest took and restored.
struct PeerFigures {
    backup: Duration,
    stored_bytes: u64,
    restore: Duration,
    restored_bytes: u64,
}

impl PgBackRest {
    const USER: &str = "postgres";
    const STANZA: &str = "bench";

    fn find() -> Option<std::path::PathBuf> {
        std::env::var_os("PATH")
            .into_iter()
            .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
            .map(|dir| dir.join("pgbackrest"))
            .find(|path| path.is_file())
    }

    fn new(program: std::path::PathBuf, cluster: &Cluster) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("drillbook-bench-pgbackrest-")
            .tempdir()
            .expect("temp dir");
        let config = dir.path().join("pgbackrest.conf");
        std::fs::write(
            &config,
            format!(
                "[global]\n\
                 repo1-path={repo}\n\
                 repo1-retention-full=1\n\
                 compress-type=lz4\n\
                 process-max=2\n\
                 start-fast=y\n\
                 archive-check=n\n\
                 log-level-console=warn\n\
                 log-level-file=off\n\
                 lock-path={lock}\n\
                 [{stanza}]\n\
                 pg1-path={data}\n\
                 pg1-port={port}\n\
                 pg1-socket-path={socket}\n",
                repo = dir.path().join("repo").display(),
                lock = dir.path().join("lock").display(),
                stanza = Self::STANZA,
                data = cluster.data_dir().display(),
                port = cluster.port(),
                socket = cluster.root().join("sock").display(),
            ),
        )
        .expect("write pgbackrest.conf");
        let peer = Self { program, dir, config };
        peer.chown(peer.dir.path());
        peer
    }

    fn chown(&self, path: &Path) {
        let status = std::process::Command::new("chown")
            .args(["-R", &format!("{0}:{0}", Self::USER)])
            .arg(path)
            .status()
            .expect("run chown");
        assert!(status.success(), "chown {} to {}", path.display(), Self::USER);
    }

    /// `pgbackrest <args>` as the server's user; panics with its output on failure.
    fn run(&self, args: &[&str]) -> String {
        let output = std::process::Command::new("runuser")
            .args(["-u", Self::USER, "--"])
            .arg(&self.program)
            .arg(format!("--config={}", self.config.display()))
            .arg(format!("--stanza={}", Self::STANZA))
            .args(args)
            .output()
            .expect("run pgbackrest");
        assert!(
            output.status.success(),
            "pgbackrest {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn measure(self) -> PeerFigures {
        self.run(&["stanza-create"]);
        let started = Instant::now();
        self.run(&["--type=full", "backup"]);
        let backup = started.elapsed();
        let info: serde_json::Value = serde_json::from_str(&self.run(&["--output=json", "info"])).expect("info json");
        let stored_bytes = info[0]["backup"]
            .as_array()
            .and_then(|backups| backups.last())
            .and_then(|last| last["info"]["repository"]["size"].as_u64())
            .expect("pgbackrest info names the backup's repository size");
        let target = self.dir.path().join("restored");
        std::fs::create_dir(&target).expect("restore dir");
        self.chown(&target);
        let started = Instant::now();
        self.run(&[&format!("--pg1-path={}", target.display()), "restore"]);
        let restore = started.elapsed();
        let restored_bytes = dir_bytes(&target);
        PeerFigures {
            backup,
            stored_bytes,
            restore,
            restored_bytes,
        }
    }
}

async fn checkpoint(admin: &drillbook::pg::ConnInfo) {
    let mut conn = PgConnection::connect_with(&admin.connect_options())
        .await
        .expect("connect");
    sqlx::raw_sql("CHECKPOINT")
        .execute(&mut conn)
        .await
        .expect("checkpoint");
    conn.close().await.expect("close");
}

/// Bytes of the regular files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => total += dir_bytes(&entry.path()),
            Ok(kind) if kind.is_file() => total += entry.metadata().map(|m| m.len()).unwrap_or(0),
            _ => {}
        }
    }
    total
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn rate(bytes: u64, d: Duration) -> String {
    format!("{:.1} MB/s", bytes as f64 / 1e6 / d.as_secs_f64().max(1e-9))
}
