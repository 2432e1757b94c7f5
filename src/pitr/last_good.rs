//! Recover to the last good moment without being told when the damage
//! happened (`drillbook recover --to-last-good`).
//!
//! The archive's commits are listed with `pg_waldump` (in WAL order, each
//! with its xid, LSN and time). A state "after commit i" is a recovery paused
//! with `recovery_target_xid = c_i` (inclusive: every commit before it in WAL
//! order, and it). The integrity suite judges a state on the paused hot
//! standby. The answer is the pair (last good i, first bad i + 1): exact to
//! the transaction, whatever else commits around it.
//!
//! # Cost: about one replay
//! A paused recovery only moves forward, and a cleanly stopped paused data
//! directory can be copied. So:
//! 1. **scan**: one server moves forward in a few steps over the commits
//!    ([`scan_stops`]: as many as pay for themselves, from the archive's
//!    size), judged at each stop; before each step the clean directory is
//!    kept (a copy), so the last clean stop survives the step past it;
//! 2. **bisect**: between the last clean stop (lo) and the first dirty one
//!    (hi), a copy of lo's directory replays to the middle commit; clean →
//!    it becomes lo, dirty → hi; down to hi = lo + 1.
//!
//! The scan replays the archive once. Each bisection probe replays from lo
//! to the middle: half the interval, then a quarter, ...: at most the scan
//! step again in total, plus, per probe, a restart from the last
//! restartpoint before lo and a copy of the data directory. A restartpoint
//! can only be made at a checkpoint record the source wrote, so this holds
//! when the source checkpoints regularly (production does, every few
//! minutes); in an archive without checkpoints every restart replays from
//! the base backup. A naive bisection restores the base backup and replays
//! from it for every probe: log2(commits) full replays. Measured in
//! `benches/last_good.rs`.
//!
//! The probes replay from one local copy of the archived WAL, fetched and
//! checked once (the copy `pg_waldump` lists the commits from), not from
//! the bucket per probe; the recovery left in `pgdata` is moved to its
//! point once more with `drillbook wal-fetch`, the `restore_command` every
//! later `recover` of it uses.
//!
//! Checks that need an anchor (the audit chain's head recorded outside the
//! database) use the bucket's: a state after commit i is checked against
//! the newest anchor recorded by c_i's time, whose head it holds. A gap in
//! the archive ends the search there, and the result says so.
//!
//! # Exactness
//! The suite must be clean at the base backup (else the previous base
//! backup is tried) and dirty at the end of the archive (else nothing is
//! recovered: "nothing found"). Damage is assumed to persist once made (a
//! later transaction does not repair it); the scan confirms the state at
//! every stop is judged, so a repaired state would show as clean again.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;

use super::data_dir::{Phase, RecoveryState};
use super::{AtTarget, PitrError, PitrOptions, RecoveryHost, RecoveryTarget, Result, recover_further, recover_on};
use crate::basebackup::{BaseBackupManifest, list_base_backups};
use crate::integrity::{CheckName, Finding, IntegrityReport, SuiteOptions, run_suite};
use crate::pg::{ConnInfo, DataDirServer, PgBinaries, PgError};
use crate::store::Store;
use crate::store::manifest::{ANCHORS, Anchor};
use crate::wal::{Fetched, WalArchive, format_lsn, parse_lsn};

/// At most this many stops in the forward scan over the commits.
pub const MAX_SCAN_STOPS: usize = 8;

/// A probe's fixed cost (stop, copy, restart from the last restartpoint,
/// checks) in the WAL a replay gets through in the same time: about 1.5 s
/// against 60-65 MB/s of replay on the 2-core machines of
/// `benches/last_good.rs`.
const PROBE_COST_IN_WAL_BYTES: f64 = 96.0 * 1024.0 * 1024.0;

/// How many stops the forward scan makes over `commits` commits in
/// `wal_bytes` of WAL: the count with the least estimated cost. Each stop
/// is a probe; more stops leave a shorter interval for the bisection,
/// whose probes replay within it (at most the interval's WAL in all) and
/// number log2 of its commits. A small archive bisects (almost) at once; a
/// large one scans more finely, so that bisection replays little.
pub fn scan_stops(commits: usize, wal_bytes: u64) -> usize {
    let cost = |stops: usize| {
        let per_interval = (commits as f64 / stops as f64).max(1.0);
        PROBE_COST_IN_WAL_BYTES * (stops as f64 + per_interval.log2().ceil()) + wal_bytes as f64 / stops as f64
    };
    (1..=MAX_SCAN_STOPS.min(commits.max(1)))
        .min_by(|a, b| cost(*a).total_cmp(&cost(*b)))
        .unwrap_or(1)
}

/// One commit record of the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Commit {
    pub xid: u32,
    /// Where its commit record starts.
    pub lsn: String,
    pub time: DateTime<Utc>,
}

/// A judged point: the state after a commit (or the base backup's end).
#[derive(Debug, Clone, Serialize)]
pub struct GoodPoint {
    /// The last commit included; `None` at the base backup's end.
    pub commit: Option<Commit>,
    pub lsn: Option<String>,
}

/// The first transaction whose effects make a check fail.
#[derive(Debug, Clone, Serialize)]
pub struct FirstBad {
    pub commit: Commit,
    /// Relations its WAL records touched (`schema.table`, from `pg_waldump`).
    pub relations: Vec<String>,
    /// What the checks found right after it.
    pub findings: Vec<Finding>,
}

/// What the search found.
#[derive(Debug, Clone, Serialize)]
pub struct LastGood {
    pub base_backup: String,
    /// Base backups found damaged themselves (newest first), skipped.
    pub damaged_base_backups: Vec<String>,
    pub last_good: GoodPoint,
    /// `None`: the checks are clean at the end of the archive.
    pub first_bad: Option<FirstBad>,
    /// Commits after the last good point up to the end of the archive: the
    /// work given up by recovering to it.
    pub given_up_transactions: usize,
    pub given_up_from: Option<DateTime<Utc>>,
    pub given_up_to: Option<DateTime<Utc>>,
    /// Commits the search chose among.
    pub commits: usize,
    /// Why the search stopped before the end of the archive (a WAL gap).
    pub archive_gap: Option<String>,
    /// WAL replayed by every recovery of the search (restarts replay from
    /// their last restartpoint).
    pub wal_bytes_replayed: u64,
    /// States judged (scan stops and bisection probes), and copies made.
    pub probes: usize,
    pub forks: usize,
    #[serde(with = "crate::serde_duration")]
    pub elapsed: Duration,
}

/// What to search with.
#[derive(Debug, Clone)]
pub struct SearchOptions {
    pub pitr: PitrOptions,
    /// Only damage after this time: the newest base backup before it starts.
    pub since: Option<DateTime<Utc>>,
    /// The checks that judge a state (empty: the whole suite).
    pub checks: Vec<CheckName>,
    /// The database the checks judge (the application's).
    pub database: String,
}

/// Finds the last good point in the archive and leaves a recovery paused
/// there in `pgdata` (promoted with `at_target = Promote`); see the module
/// docs. `pgdata` must be new or empty. With nothing found, nothing is left.
///
/// # Errors
/// As `recover_on` for the recoveries it runs; [`PitrError::SearchFailed`]
/// when no base backup is clean or a check cannot run.
pub async fn recover_to_last_good(
    bins: &PgBinaries,
    store: &Store,
    pgdata: &Path,
    port: Option<u16>,
    options: &SearchOptions,
) -> Result<LastGood> {
    let started = Instant::now();
    match super::data_dir::inspect(bins, pgdata).await? {
        super::data_dir::Existing::Absent | super::data_dir::Existing::Empty => {}
        super::data_dir::Existing::Recovery(_) => {
            return Err(PitrError::DataDirNotEmpty { pgdata: pgdata.into() });
        }
    }
    let work = SearchDir::create(pgdata)?;
    let mut search = Search {
        bins,
        store,
        options,
        work: &work,
        anchors: anchors_in(store, &options.database).await?,
        gap: None,
        local_restore: None,
        replayed: 0,
        probes: 0,
        forks: 0,
        next_dir: 0,
    };
    let mut backups = list_base_backups(store).await?;
    backups.retain(|b| options.since.is_none_or(|since| b.end_time <= since));
    if backups.is_empty() {
        return Err(PitrError::NoBaseBackup {
            location: format!("{} (before --since)", store.config().location()),
        });
    }
    let mut damaged = Vec::new();
    // The newest base backup whose own state is clean.
    let (base, base_dir) = loop {
        let Some(base) = backups.pop() else {
            return Err(PitrError::SearchFailed {
                why: format!(
                    "every base backup is damaged itself ({}): nothing good to recover to",
                    damaged.join(", ")
                ),
            });
        };
        search.replay_from_local_copy(&base).await?;
        let dir = search
            .start_at(&base, &RecoveryTarget::Lsn(base.end_lsn.clone()))
            .await?;
        match search.judge(&dir, base.start_time).await? {
            Verdict::Clean => break (base, dir),
            Verdict::Dirty(_) => {
                tracing::warn!(
                    stamp = base.stamp,
                    "the base backup itself is damaged; trying the one before it"
                );
                search.discard(&dir).await;
                damaged.push(base.stamp.clone());
            }
        }
    };
    let (commits, wal_bytes) = search.commits_after(&base).await?;
    let commits: Vec<Commit> = commits
        .into_iter()
        .filter(|c| options.since.is_none_or(|since| c.time > since))
        .collect();
    tracing::info!(
        commits = commits.len(),
        base = base.stamp,
        "searching the archive's commits"
    );

    // Scan: lo is the index of the last clean state (-1: the base), kept in `good`.
    let mut good = base_dir;
    let mut lo: isize = -1;
    let mut bad: Option<(isize, PathBuf, Vec<Finding>)> = None;
    let stops = scan_stops(commits.len(), wal_bytes);
    tracing::info!(stops, wal_bytes, "scanning forward, then bisecting");
    let step = commits.len().div_ceil(stops).max(1);
    let mut next = 0usize;
    while next < commits.len() {
        let stop = (next + step - 1).min(commits.len() - 1);
        let probe = search.fork(&good).await?;
        search.move_to(&probe, &commits[stop]).await?;
        match search.judge(&probe, commits[stop].time).await? {
            Verdict::Clean => {
                search.discard(&good).await;
                good = probe;
                lo = stop as isize;
            }
            Verdict::Dirty(findings) => {
                bad = Some((stop as isize, probe, findings));
                break;
            }
        }
        next = stop + 1;
    }
    let Some((mut hi, mut bad_dir, mut bad_findings)) = bad else {
        // Clean to the end of the archive: nothing to recover to.
        search.discard(&good).await;
        return Ok(LastGood {
            base_backup: base.stamp,
            damaged_base_backups: damaged,
            last_good: GoodPoint {
                commit: commits.last().cloned(),
                lsn: None,
            },
            first_bad: None,
            given_up_transactions: 0,
            given_up_from: None,
            given_up_to: None,
            commits: commits.len(),
            archive_gap: search.gap.clone(),
            wal_bytes_replayed: search.replayed,
            probes: search.probes,
            forks: search.forks,
            elapsed: started.elapsed(),
        });
    };
    // Bisect between lo (clean, in `good`) and hi (dirty).
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        let probe = search.fork(&good).await?;
        search.move_to(&probe, &commits[mid as usize]).await?;
        match search.judge(&probe, commits[mid as usize].time).await? {
            Verdict::Clean => {
                search.discard(&good).await;
                good = probe;
                lo = mid;
            }
            Verdict::Dirty(findings) => {
                search.discard(&bad_dir).await;
                bad_dir = probe;
                bad_findings = findings;
                hi = mid;
            }
        }
    }
    search.discard(&bad_dir).await;
    let first_bad = commits[hi as usize].clone();
    let relations = search.relations_touched(&good, &first_bad).await;
    let last_good = usize::try_from(lo).ok().map(|i| commits[i].clone());
    let given_up = &commits[hi as usize..];

    // The last good state becomes `pgdata`, paused there (or promoted).
    let point = search.install(&good, pgdata, port, last_good.as_ref(), &base).await?;
    if options.pitr.at_target == AtTarget::Promote {
        super::promote_data_dir(bins, pgdata).await?;
    }
    Ok(LastGood {
        base_backup: base.stamp,
        damaged_base_backups: damaged,
        last_good: GoodPoint {
            commit: last_good,
            lsn: point,
        },
        first_bad: Some(FirstBad {
            commit: first_bad,
            relations,
            findings: bad_findings,
        }),
        given_up_transactions: given_up.len(),
        given_up_from: given_up.first().map(|c| c.time),
        given_up_to: given_up.last().map(|c| c.time),
        commits: commits.len(),
        archive_gap: search.gap.clone(),
        wal_bytes_replayed: search.replayed,
        probes: search.probes,
        forks: search.forks,
        elapsed: started.elapsed(),
    })
}

enum Verdict {
    Clean,
    Dirty(Vec<Finding>),
}

/// The search's directories: `.<name>.drillbook-search` next to `pgdata`,
/// removed (servers stopped) when dropped; one a killed search left is
/// removed by the next.
struct SearchDir {
    path: PathBuf,
}

impl SearchDir {
    fn create(pgdata: &Path) -> Result<Self> {
        let name = pgdata
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let path = pgdata.with_file_name(format!(".{name}.drillbook-search"));
        if path.exists() {
            stop_servers_under(&path);
            std::fs::remove_dir_all(&path).map_err(|source| PitrError::Io {
                context: format!("remove the leftovers of an earlier search in {}", path.display()),
                source,
            })?;
        }
        std::fs::create_dir(&path).map_err(|source| PitrError::Io {
            context: format!("create {} next to --pgdata", path.display()),
            source,
        })?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o711)).map_err(|source| {
            PitrError::Io {
                context: format!("set the mode of {}", path.display()),
                source,
            }
        })?;
        Ok(Self { path })
    }
}

impl Drop for SearchDir {
    fn drop(&mut self) {
        stop_servers_under(&self.path);
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Stops every postmaster running on a directory directly under `dir`.
fn stop_servers_under(dir: &Path) {
    let Ok(bins) = PgBinaries::discover() else { return };
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if let Ok(server) = DataDirServer::open(&bins, &entry.path()) {
            let _ = server.stop_now();
        }
    }
}

struct Search<'a> {
    bins: &'a PgBinaries,
    store: &'a Store,
    options: &'a SearchOptions,
    work: &'a SearchDir,
    /// The bucket's anchors of the judged database, oldest first.
    anchors: Vec<Anchor>,
    /// A gap in the archive the search stopped at.
    gap: Option<String>,
    /// The probes' `restore_command`: a copy from the local WAL.
    local_restore: Option<String>,
    replayed: u64,
    probes: usize,
    forks: usize,
    next_dir: usize,
}

impl Search<'_> {
    fn new_dir(&mut self) -> PathBuf {
        self.next_dir += 1;
        self.work.path.join(format!("probe-{}", self.next_dir))
    }

    /// How the probes recover: paused, from the local WAL.
    fn pause_options(&self) -> PitrOptions {
        PitrOptions {
            at_target: AtTarget::Pause,
            restore_command: self.local_restore.clone().or(self.options.pitr.restore_command.clone()),
            ..self.options.pitr.clone()
        }
    }

    /// Fetches `base`'s WAL once (checked against the archive's sha256) into
    /// a directory only the server's account reads, and points the probes'
    /// `restore_command` at it.
    async fn replay_from_local_copy(&mut self, base: &BaseBackupManifest) -> Result<()> {
        let wal_dir = self.wal_dir(base).await?;
        crate::pg::data_dir::hand_to_server_user(&wal_dir)?;
        self.local_restore = Some(crate::wal::copy_restore_command(&wal_dir));
        Ok(())
    }

    /// A recovery from `base` paused at `target`, in a new directory.
    async fn start_at(&mut self, base: &BaseBackupManifest, target: &RecoveryTarget) -> Result<PathBuf> {
        let dir = self.new_dir();
        let host = RecoveryHost::DataDir {
            pgdata: dir.clone(),
            port: None,
        };
        // An LSN target at `base`'s end picks `base` itself.
        debug_assert!(matches!(target, RecoveryTarget::Lsn(l) if *l == base.end_lsn));
        let recovered = recover_on(host, self.bins, self.store, target, &self.pause_options()).await?;
        self.replayed += recovered.wal_bytes_replayed;
        Ok(dir)
    }

    /// A copy of the paused recovery in `from` (its server stopped first),
    /// ready to move forward on a port of its own.
    async fn fork(&mut self, from: &Path) -> Result<PathBuf> {
        let server = DataDirServer::open(self.bins, from)?;
        server.stop().await?;
        let dir = self.new_dir();
        let output = tokio::process::Command::new("cp")
            .arg("-a")
            .arg(from)
            .arg(&dir)
            .output()
            .await
            .map_err(|source| PitrError::Io {
                context: "run cp -a to fork the recovery".into(),
                source,
            })?;
        if !output.status.success() {
            return Err(PitrError::Io {
                context: format!("copy {} to {}", from.display(), dir.display()),
                source: std::io::Error::other(String::from_utf8_lossy(&output.stderr).into_owned()),
            });
        }
        let _ = std::fs::remove_file(dir.join(crate::pg::data_dir::LOG_FILE));
        // A copy is thrown away, or made durable when installed (`install`):
        // nothing it writes needs to reach the disk on its own.
        DataDirServer::relocated(self.bins, &dir, DataDirServer::free_port()?)?.set_setting("fsync", Some("off"))?;
        self.forks += 1;
        Ok(dir)
    }

    /// Moves the paused recovery in `dir` forward to just after `commit`.
    /// A copy's port was probed free, but another process may bind it
    /// first: then the copy gets another free port and moves again.
    async fn move_to(&mut self, dir: &Path, commit: &Commit) -> Result<()> {
        let target = RecoveryTarget::Xid(commit.xid);
        let mut attempt = 1;
        loop {
            match recover_further(self.bins, self.store, dir, &target, &self.pause_options()).await {
                Ok(recovered) => {
                    self.replayed += recovered.wal_bytes_replayed;
                    return Ok(());
                }
                Err(e) if attempt < 3 && port_was_taken(&e) => {
                    DataDirServer::open(self.bins, dir)?.set_port(DataDirServer::free_port()?)?;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Runs the chosen checks on the paused recovery in `dir`, whose state
    /// includes every commit up to `state_time`: the chain is checked against
    /// the newest anchor recorded by then (its head is in that state).
    async fn judge(&mut self, dir: &Path, state_time: DateTime<Utc>) -> Result<Verdict> {
        self.probes += 1;
        let server = DataDirServer::open(self.bins, dir)?;
        let port = server
            .port()
            .ok_or_else(|| PitrError::NotARecovery { pgdata: dir.into() })?;
        let target = ConnInfo {
            host: dir.display().to_string(),
            port,
            user: "postgres".into(),
            password: crate::pg::Secret::new(String::new()),
            database: self.options.database.clone(),
        };
        let suite = SuiteOptions {
            anchor: self.anchors.iter().rev().find(|a| a.recorded_at <= state_time).cloned(),
            ..SuiteOptions::default()
        };
        let report = run_suite(&target, &suite).await.map_err(|e| PitrError::SearchFailed {
            why: format!("the checks could not run on the recovery in {}: {e}", dir.display()),
        })?;
        let findings = self.relevant(&report);
        Ok(if findings.is_empty() {
            Verdict::Clean
        } else {
            Verdict::Dirty(findings)
        })
    }

    fn relevant(&self, report: &IntegrityReport) -> Vec<Finding> {
        report
            .findings
            .iter()
            .filter(|f| self.options.checks.is_empty() || self.options.checks.contains(&f.check))
            .cloned()
            .collect()
    }

    async fn discard(&mut self, dir: &Path) {
        if let Ok(server) = DataDirServer::open(self.bins, dir) {
            let _ = server.stop().await;
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Every commit after the base backup's end, in WAL order, from the
    /// archived WAL of its timeline (fetched into the search dir).
    /// With the bytes of WAL they span.
    async fn commits_after(&mut self, base: &BaseBackupManifest) -> Result<(Vec<Commit>, u64)> {
        let (commits, gap) = archive_commits(self.bins, self.store, base, &self.work.path).await?;
        self.gap = self.gap.take().or(gap);
        let wal_bytes = match (commits.first(), commits.last()) {
            (Some(first), Some(last)) => parse_lsn(&last.lsn)
                .zip(parse_lsn(&first.lsn))
                .map_or(0, |(last, first)| last.saturating_sub(first)),
            _ => 0,
        };
        Ok((commits, wal_bytes))
    }

    async fn wal_dir(&mut self, base: &BaseBackupManifest) -> Result<PathBuf> {
        let (wal_dir, gap) = fetch_wal(self.store, base, &self.work.path).await?;
        self.gap = self.gap.take().or(gap);
        Ok(wal_dir)
    }

    async fn waldump(&self, wal_dir: &Path, base: &BaseBackupManifest, extra: &[&str]) -> Result<String> {
        waldump(self.bins, wal_dir, base, extra).await
    }

    /// The relations `commit`'s transaction wrote, named on the server in `dir`.
    async fn relations_touched(&mut self, dir: &Path, commit: &Commit) -> Vec<String> {
        let Some(base_stamp) = RecoveryState::read(dir).ok().flatten().map(|s| s.base_backup) else {
            return Vec::new();
        };
        let Ok(backups) = list_base_backups(self.store).await else {
            return Vec::new();
        };
        let Some(base) = backups.into_iter().find(|b| b.stamp == base_stamp) else {
            return Vec::new();
        };
        let Ok(wal_dir) = self.wal_dir(&base).await else {
            return Vec::new();
        };
        let Ok(dump) = self.waldump(&wal_dir, &base, &["--xid", &commit.xid.to_string()]).await else {
            return Vec::new();
        };
        let filenodes: BTreeSet<(u32, u32)> = parse_relations(&dump);
        let Ok(server) = DataDirServer::open(self.bins, dir) else {
            return Vec::new();
        };
        if server
            .start(&crate::wal::server_env(self.store.config()))
            .await
            .is_err()
            && !server.is_running()
        {
            return filenodes
                .iter()
                .map(|(db, node)| format!("relfilenode {node} (database oid {db})"))
                .collect();
        }
        let mut names = Vec::new();
        for (db, node) in filenodes {
            names.push(
                name_relation(&server, db, node)
                    .await
                    .unwrap_or_else(|| format!("relfilenode {node}")),
            );
        }
        names
    }

    /// Moves the good directory to `pgdata`, paused at its point again.
    async fn install(
        &mut self,
        good: &Path,
        pgdata: &Path,
        port: Option<u16>,
        last_good: Option<&Commit>,
        base: &BaseBackupManifest,
    ) -> Result<Option<String>> {
        let server = DataDirServer::open(self.bins, good)?;
        server.stop().await?;
        // Durable before it becomes `pgdata`, so no kill leaves the
        // operator's directory with fsync off: what the copy wrote without
        // it is flushed, and the server writes with it from now on.
        server.set_setting("fsync", None)?;
        sync_filesystem_of(good)?;
        std::fs::rename(good, pgdata).map_err(|source| PitrError::Io {
            context: format!("move the last good recovery to {}", pgdata.display()),
            source,
        })?;
        let port = match port {
            Some(port) => port,
            None => DataDirServer::free_port()?,
        };
        let server = DataDirServer::relocated(self.bins, pgdata, port)?;
        let target = match last_good {
            Some(commit) => RecoveryTarget::Xid(commit.xid),
            None => RecoveryTarget::Lsn(base.end_lsn.clone()),
        };
        let recovered = recover_further(self.bins, self.store, pgdata, &target, &self.pause_options()).await?;
        self.replayed += recovered.wal_bytes_replayed;
        // The local WAL goes with the search: from here on the server
        // fetches from the archive, as every later `recover` of it does.
        let archive = self
            .options
            .pitr
            .restore_command
            .clone()
            .unwrap_or_else(|| crate::wal::restore_command(&self.options.pitr.drillbook));
        server.set_setting("restore_command", Some(&archive))?;
        let mut conn = server.connect().await?;
        sqlx::query("SELECT pg_reload_conf()")
            .execute(&mut conn)
            .await
            .map_err(PgError::sql("reload the recovery's settings"))?;
        let mut state =
            RecoveryState::read(pgdata)?.ok_or_else(|| PitrError::NotARecovery { pgdata: pgdata.into() })?;
        state.target = format!("the last good point ({target})");
        state.phase = Phase::Paused;
        state.write(pgdata)?;
        Ok(recovered.replayed_lsn)
    }
}

/// Flushes the filesystem holding `path` to disk (`syncfs`).
fn sync_filesystem_of(path: &Path) -> Result<()> {
    let dir = std::fs::File::open(path).map_err(|source| PitrError::Io {
        context: format!("open {} to flush it to disk", path.display()),
        source,
    })?;
    // SAFETY: `dir` is an open file descriptor for the duration of the call.
    if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)) } != 0 {
        return Err(PitrError::Io {
            context: format!("flush {} to disk", path.display()),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Every commit after `base`'s end in the archive, in WAL order (from
/// `pg_waldump` over the WAL of its timeline, fetched into `dir`), and the
/// gap that ended the archive early, if any.
///
/// # Errors
/// When the archive cannot be read or `pg_waldump` cannot run.
pub async fn archive_commits(
    bins: &PgBinaries,
    store: &Store,
    base: &BaseBackupManifest,
    dir: &Path,
) -> Result<(Vec<Commit>, Option<String>)> {
    let (wal_dir, gap) = fetch_wal(store, base, dir).await?;
    let output = waldump(bins, &wal_dir, base, &["--rmgr=Transaction"]).await?;
    Ok((parse_commits(&output), gap))
}

/// The archived WAL of `base`'s timeline from its start, into `dir/wal-<stamp>`
/// (once), up to the first gap.
async fn fetch_wal(store: &Store, base: &BaseBackupManifest, dir: &Path) -> Result<(PathBuf, Option<String>)> {
    let wal_dir = dir.join(format!("wal-{}", base.stamp));
    let mut gap = None;
    if wal_dir.is_dir() {
        return Ok((wal_dir, gap));
    }
    std::fs::create_dir(&wal_dir).map_err(|source| PitrError::Io {
        context: format!("create {}", wal_dir.display()),
        source,
    })?;
    let archive = WalArchive::new(store.clone());
    let first = crate::wal::segment_name(base.timeline, parse_lsn(&base.start_lsn).unwrap_or(0), 16 << 20);
    let names = archive.list(Some(base.timeline)).await.map_err(wal_error)?;
    let mut expected: Option<String> = None;
    for name in names.iter().filter(|n| n.len() == 24 && n.as_str() >= first.as_str()) {
        if let Some(expected) = expected.as_deref()
            && name != expected
        {
            // A gap: recovery cannot pass it, so neither does the search.
            gap = Some(format!(
                "WAL segment {expected} is missing from the archive (the next archived one is {name}): the \
                 search covered only the commits before it"
            ));
            break;
        }
        match archive.fetch(name, &wal_dir.join(name)).await.map_err(wal_error)? {
            Fetched::Restored { .. } => {}
            Fetched::Missing => break,
        }
        expected = next_segment(name);
    }
    Ok((wal_dir, gap))
}

async fn waldump(bins: &PgBinaries, wal_dir: &Path, base: &BaseBackupManifest, extra: &[&str]) -> Result<String> {
    let mut command = tokio::process::Command::new(bins.program("pg_waldump"));
    command
        .arg("--path")
        .arg(wal_dir)
        .args(["--timeline", &base.timeline.to_string(), "--start", &base.end_lsn]);
    // Without an end, pg_waldump waits 5 s for the segment after the last
    // one (ten tries, 500 ms apart) before it gives up.
    if let Some(end) = end_of_segments_in(wal_dir) {
        command.args(["--end", &format_lsn(end)]);
    }
    command.args(extra).kill_on_drop(true);
    let output = crate::pg::child::output(command).await.map_err(|source| {
        PitrError::Postgres(PgError::Spawn {
            program: bins.program("pg_waldump"),
            source,
        })
    })?;
    // pg_waldump ends with an error at the end of the WAL it has: expected.
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The anchors in the bucket recorded for `database`, oldest first.
async fn anchors_in(store: &Store, database: &str) -> Result<Vec<Anchor>> {
    let mut anchors = Vec::new();
    let objects = store.list(ANCHORS).await.map_err(|e| PitrError::SearchFailed {
        why: format!("could not list the anchors: {e}"),
    })?;
    for object in objects {
        let bytes = store
            .get_bytes(&object.key)
            .await
            .map_err(|e| PitrError::SearchFailed {
                why: format!("could not read the anchor {}: {e}", object.key),
            })?;
        match Anchor::parse(&bytes, &object.key) {
            Ok(anchor) if anchor.database == database => anchors.push(anchor),
            Ok(_) => {}
            Err(e) => tracing::warn!(key = object.key, error = %e, "skipping an anchor that does not parse"),
        }
    }
    anchors.sort_by_key(|a| a.recorded_at);
    Ok(anchors)
}

async fn name_relation(server: &DataDirServer, db_oid: u32, filenode: u32) -> Option<String> {
    use sqlx::Connection as _;
    let mut conn = server.connect().await.ok()?;
    let database: String = sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE oid = $1::oid")
        .bind(i64::from(db_oid))
        .fetch_one(&mut conn)
        .await
        .ok()?;
    let _ = conn.close().await;
    let mut conn = server.connect_to(&database).await.ok()?;
    let name: Option<String> = sqlx::query_scalar("SELECT pg_filenode_relation(0, $1::oid)::regclass::text")
        .bind(i64::from(filenode))
        .fetch_one(&mut conn)
        .await
        .ok()?;
    let _ = conn.close().await;
    name.map(|n| format!("{database}.{n}"))
}

fn wal_error(e: crate::wal::WalError) -> PitrError {
    PitrError::SearchFailed {
        why: format!("could not read the WAL archive: {e}"),
    }
}

/// Whether a recovery failed because its server could not bind its port.
fn port_was_taken(error: &PitrError) -> bool {
    let text = error.to_string();
    text.contains("could not create any TCP/IP sockets") || text.contains("Address already in use")
}

/// The segment after `name` (16 MiB segments: 256 per log id).
/// The LSN just past the newest WAL segment in `dir` (16 MB segments).
fn end_of_segments_in(dir: &Path) -> Option<u64> {
    let newest = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit()))
        .max()?;
    let log = u64::from_str_radix(&newest[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&newest[16..24], 16).ok()?;
    Some((log << 32) + ((seg + 1) << 24))
}

fn next_segment(name: &str) -> Option<String> {
    let timeline = &name[..8];
    let log = u32::from_str_radix(&name[8..16], 16).ok()?;
    let seg = u32::from_str_radix(&name[16..24], 16).ok()?;
    let (log, seg) = if seg == 0xFF { (log + 1, 0) } else { (log, seg + 1) };
    Some(format!("{timeline}{log:08X}{seg:08X}"))
}

/// Commit records of `pg_waldump --rmgr=Transaction` output, in WAL order.
fn parse_commits(output: &str) -> Vec<Commit> {
    output
        .lines()
        .filter_map(|line| {
            let desc = line.split_once("desc: COMMIT ")?.1;
            let xid: u32 = line.split_once("tx:")?.1.split(',').next()?.trim().parse().ok()?;
            let lsn = line.split_once("lsn:")?.1.split(',').next()?.trim();
            let lsn = format_lsn(parse_lsn(lsn)?);
            let stamp = desc.split(';').next()?.trim().trim_end_matches(" UTC");
            let time = NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d %H:%M:%S%.f")
                .ok()?
                .and_utc();
            (xid != 0).then_some(Commit { xid, lsn, time })
        })
        .collect()
}

/// `(database oid, relfilenode)` of every `rel A/B/C` a record names.
fn parse_relations(output: &str) -> BTreeSet<(u32, u32)> {
    let mut found = BTreeSet::new();
    for line in output.lines() {
        for part in line.split("rel ").skip(1) {
            let token = part.split_whitespace().next().unwrap_or_default().trim_end_matches(',');
            let ids: Vec<u32> = token.split('/').filter_map(|p| p.parse().ok()).collect();
            if let [_tablespace, db, node] = ids[..]
                && db != 0
            {
                found.insert((db, node));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_follow_each_other() {
        assert_eq!(
            next_segment("000000010000000000000004").unwrap(),
            "000000010000000000000005"
        );
        assert_eq!(
            next_segment("0000000200000001000000FF").unwrap(),
            "000000020000000200000000"
        );
    }

    #[test]
    fn a_small_archive_is_bisected_at_once_and_a_large_one_scanned_first() {
        // The drill's archive: ~200 commits in under 1 MB of WAL: no more
        // probes than one stop at the end and a bisection of all of them.
        let small = scan_stops(200, 500 << 10);
        let probes = |stops: usize| stops + (200f64 / stops as f64).log2().ceil() as usize;
        assert_eq!(probes(small), probes(1), "{small} stops");
        // Gigabytes of WAL: a probe costs less than replaying a scan step twice.
        let large = scan_stops(10_000, 2 << 30);
        assert!((4..=MAX_SCAN_STOPS).contains(&large), "{large} stops");
        assert!(scan_stops(10_000, 64 << 30) <= MAX_SCAN_STOPS);
        assert_eq!(scan_stops(3, 64 << 30), 3, "never more stops than commits");
        assert_eq!(scan_stops(0, 0), 1);
    }

    #[test]
    fn the_end_of_the_local_wal_is_past_its_newest_segment() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(end_of_segments_in(dir.path()), None);
        for name in [
            "000000010000000000000003",
            "0000000100000001000000FF",
            "00000001.history",
        ] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        assert_eq!(end_of_segments_in(dir.path()).map(format_lsn).as_deref(), Some("2/0"));
    }

    #[test]
    fn commits_and_relations_are_read_from_pg_waldump() {
        let out = "rmgr: Transaction len (rec/tot):     34/    34, tx:        736, lsn: 0/05000028, prev 0/04FFFFB0, desc: COMMIT 2026-11-30 15:14:47.091071 UTC\n\
                   rmgr: Transaction len (rec/tot):    130/   130, tx:        737, lsn: 0/050000A0, prev 0/05000028, desc: COMMIT 2026-11-30 15:14:48.000001 UTC; inval msgs: catcache 80\n\
                   rmgr: Transaction len (rec/tot):     34/    34, tx:        738, lsn: 0/05000120, prev 0/050000A0, desc: ABORT 2026-11-30 15:14:49.000001 UTC\n";
        let commits = parse_commits(out);
        assert_eq!(commits.len(), 2);
        assert_eq!((commits[0].xid, commits[0].lsn.as_str()), (736, "0/5000028"));
        assert_eq!(commits[1].time.to_rfc3339(), "2026-11-30T15:14:48.000001+00:00");
        let rels = "rmgr: Heap len (rec/tot): 54/54, tx: 736, lsn: 0/05000000, prev 0/04FF, desc: HOT_UPDATE off 3, blkref #0: rel 1663/16384/16402 blk 7\n\
                    rmgr: Btree len (rec/tot): 64/64, tx: 736, lsn: 0/05000040, prev 0/05000000, desc: INSERT_LEAF off 2, blkref #0: rel 1663/16384/16410 blk 1\n\
                    rmgr: Heap2 len (rec/tot): 60/60, tx: 0, desc: PRUNE, blkref #0: rel 1664/0/1262 blk 0\n";
        assert_eq!(
            parse_relations(rels).into_iter().collect::<Vec<_>>(),
            [(16384, 16402), (16384, 16410)]
        );
    }
}
