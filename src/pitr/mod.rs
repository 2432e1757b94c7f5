//! Point-in-time recovery: the newest base backup before the target, plus
//! archived WAL from S3 replayed up to a time, an LSN or a named restore
//! point, then promoted into a new cluster.
//!
//! # Guarantees
//! - Recovery either stops exactly at the target and promotes, or fails with
//!   [`PitrError::TargetNotReached`] naming the furthest point the archive
//!   reaches (read from the server log) — never a "success" short of the
//!   target.
//! - A damaged archived segment stops recovery ([`PitrError::ArchiveFailed`]);
//!   it is never replayed.
//! - Targets before the oldest base backup or in the future are refused
//!   before anything is downloaded.
//!
//! - At the target the server promotes, or with [`AtTarget::Pause`] stays
//!   paused in recovery, open read-only for inspection.
//!
//! Recoveries run in a local cluster, in a server container of any host
//! that implements [`RecoveryContainers`], or in a data directory an
//! operator names ([`data_dir`]: `drillbook recover --pgdata`, the server
//! outliving drillbook). The environment that archives and recovers in one
//! place is `env::ArchivingEnvironment`.

pub mod data_dir;
pub mod last_good;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::basebackup::{BaseBackupError, BaseBackupManifest, download_base_backup, list_base_backups};
use crate::pg::{Cluster, ClusterOptions, ConnInfo, DataDirServer, PgBinaries, PgError, Secret};
use crate::store::Store;
use crate::wal::{format_lsn, parse_lsn, restore_command, server_env};
use data_dir::{Phase, ReachedPoint, RecoveryState};

const RECOVERY_TIMEOUT: Duration = Duration::from_secs(30 * 60);

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum RecoveryTarget {
    /// Replay up to and including the last commit at or before this time.
    Time(DateTime<Utc>),
    /// Replay up to and including this LSN (`X/Y`).
    Lsn(String),
    /// Replay up to a restore point made with `pg_create_restore_point(name)`.
    Name(String),
    /// Replay up to and including the commit of this transaction (and every
    /// commit before it in WAL order).
    Xid(u32),
    /// Replay everything the archive holds, then promote: the recovery after
    /// losing the primary outright. Whatever was not archived yet is the loss.
    EndOfArchive,
}

impl std::fmt::Display for RecoveryTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Time(t) => write!(f, "time {}", t.to_rfc3339_opts(SecondsFormat::Micros, true)),
            Self::Lsn(l) => write!(f, "LSN {l}"),
            Self::Name(n) => write!(f, "restore point {n:?}"),
            Self::Xid(x) => write!(f, "the commit of transaction {x}"),
            Self::EndOfArchive => f.write_str("the end of the WAL archive"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PitrError {
    #[error("no base backup under base/ in {location}; take one (`take_base_backup`) before the target")]
    NoBaseBackup { location: String },
    #[error(
        "recovery target {target} is before the oldest base backup (finished {oldest}); nothing can be recovered to \
         it: pick a target after {oldest} or restore a logical backup instead"
    )]
    TargetBeforeOldestBackup { target: RecoveryTarget, oldest: String },
    #[error(
        "recovery target {target} is in the future (now {now}); a recovery can only stop at a point that was \
         written: pick the incident time or earlier"
    )]
    TargetInFuture { target: RecoveryTarget, now: String },
    #[error(
        "recovery to {target} did not reach it: the WAL archive ends earlier (a segment is missing or was never \
         archived). The furthest reachable point is {}{}; recover to that point instead, or restore the missing \
         WAL. Server log:\n{log}",
        furthest_lsn.as_deref().unwrap_or("unknown"),
        furthest_time.map(|t| format!(" (last transaction at {})", t.to_rfc3339_opts(SecondsFormat::Micros, true))).unwrap_or_default()
    )]
    TargetNotReached {
        target: RecoveryTarget,
        furthest_lsn: Option<String>,
        furthest_time: Option<DateTime<Utc>>,
        log: String,
    },
    #[error(
        "recovery to {target} stopped: restore_command failed on a damaged or unreachable archive object; the \
         recovered copy was discarded. Server log:\n{log}"
    )]
    ArchiveFailed { target: RecoveryTarget, log: String },
    #[error("recovery to {target} failed before replaying the archive; server log:\n{log}")]
    RecoveryFailed { target: RecoveryTarget, log: String },
    #[error("recovery to {target} did not finish within {} s; see the server log:\n{log}", RECOVERY_TIMEOUT.as_secs())]
    Timeout { target: RecoveryTarget, log: String },
    #[error(
        "--pgdata {} is not empty and holds no drillbook recovery; recover into a new or empty directory \
         (drillbook never writes over existing files)", pgdata.display()
    )]
    DataDirNotEmpty { pgdata: PathBuf },
    #[error("--pgdata {} is busy: {why}; wait for it, or stop that process first", pgdata.display())]
    DataDirBusy { pgdata: PathBuf, why: String },
    #[error(
        "--pgdata {} holds no drillbook recovery (no {}); only a directory `drillbook recover` made can be \
         promoted or moved forward", pgdata.display(), data_dir::STATE_FILE
    )]
    NotARecovery { pgdata: PathBuf },
    #[error("the recovery in {} is {phase}, not paused at a target: {what}", pgdata.display())]
    NotPaused {
        pgdata: PathBuf,
        phase: Phase,
        what: String,
    },
    #[error(
        "recovery target {target} is behind the point already reached ({reached}); recovery only moves \
         forward: pick a later target, or recover into a new --pgdata"
    )]
    TargetBehind { target: RecoveryTarget, reached: String },
    #[error(
        "--pause needs a target to pause at; --to-latest ends recovery where the archive ends and promotes: \
         use --to-time, --to-lsn or --to-name, or leave out --pause"
    )]
    PauseNeedsTarget,
    #[error("the search for the last good point failed: {why}")]
    SearchFailed { why: String },
    #[error("failed to start the recovery's server container")]
    Container(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    BaseBackup(#[from] BaseBackupError),
    #[error(transparent)]
    Postgres(#[from] PgError),
    #[error("failed to {context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = PitrError> = std::result::Result<T, E>;

/// How to run a recovery.
#[derive(Debug, Clone)]
pub struct PitrOptions {
    /// The `drillbook` binary PostgreSQL runs as `restore_command`.
    pub drillbook: PathBuf,
    /// The superuser password of the backed-up cluster (in its catalog).
    pub password: Secret,
    /// The wall clock "now" for the future-target check.
    pub now: DateTime<Utc>,
    /// Replaces `drillbook wal-fetch` as `restore_command` (e.g. a `cp` from a
    /// local archive, for comparison); `None` fetches from `store`.
    pub restore_command: Option<String>,
    /// What the server does at the target.
    pub at_target: AtTarget,
}

/// What a recovery does once it reaches its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AtTarget {
    /// Ends recovery: a primary on a new timeline.
    #[default]
    Promote,
    /// Stays in recovery at the target, open read-only (hot standby), until
    /// promoted or moved to a later target.
    Pause,
}

impl AtTarget {
    fn setting(self) -> &'static str {
        match self {
            Self::Promote => "promote",
            Self::Pause => "pause",
        }
    }
}

/// The server a recovery ran in.
#[derive(Debug)]
pub enum RecoveredServer {
    /// A local cluster (the embedded backend).
    Local(Cluster),
    /// A server container of a [`RecoveryContainers`] host, removed with it.
    Container { name: String, admin: ConnInfo },
    /// A server on an operator's data directory; it outlives drillbook.
    DataDir { server: DataDirServer, admin: ConnInfo },
}

impl RecoveredServer {
    /// A superuser on the recovered server.
    pub fn admin(&self) -> ConnInfo {
        match self {
            Self::Local(cluster) => cluster.admin(),
            Self::Container { admin, .. } | Self::DataDir { admin, .. } => admin.clone(),
        }
    }

    /// Removes what `wal-fetch` read ahead and recovery did not need
    /// (`pg_wal/drillbook-spool`); a container's goes with the container.
    fn remove_wal_spool(&self) {
        match self {
            Self::Local(cluster) => crate::wal::remove_spool(&cluster.data_dir().join("pg_wal")),
            Self::DataDir { server, .. } => crate::wal::remove_spool(&server.pgdata().join("pg_wal")),
            Self::Container { .. } => {}
        }
    }

    /// Stops a local cluster and removes its files; a container goes with
    /// its environment's cleanup; an operator's data directory stays, its
    /// server running.
    pub async fn cleanup(self) -> Result<(), PgError> {
        match self {
            Self::Local(cluster) => cluster.cleanup().await,
            Self::Container { .. } | Self::DataDir { .. } => Ok(()),
        }
    }
}

/// Where a recovery runs.
pub enum RecoveryHost<'a> {
    /// A local cluster from this machine's server binaries.
    Local,
    /// A server container of an environment, on its network: its
    /// `restore_command` is the `drillbook` binary mounted into it.
    Containers(&'a mut dyn RecoveryContainers),
    /// A data directory an operator names, new or empty: the server starts
    /// there detached (on `port`, or a free one) and outlives drillbook.
    DataDir { pgdata: PathBuf, port: Option<u16> },
}

impl std::fmt::Debug for RecoveryHost<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local => f.write_str("Local"),
            Self::Containers(_) => f.write_str("Containers"),
            Self::DataDir { pgdata, .. } => write!(f, "DataDir({})", pgdata.display()),
        }
    }
}

/// Server containers a recovery can run in: what a recovery needs of an
/// environment that runs PostgreSQL in containers (`env::ContainersEnvironment`
/// implements it), so that recovery knows nothing else of environments.
#[async_trait::async_trait]
pub trait RecoveryContainers: Send + Sync {
    /// Where a server container finds the `drillbook` binary the host mounts
    /// into it (its `restore_command` runs `wal-fetch` from there).
    fn drillbook_in_container(&self) -> PathBuf;

    /// Starts a server container on `data_dir` (a base backup prepared for
    /// recovery, with the temp dir that holds it) with `settings`, `program`
    /// mounted as the `drillbook` binary; returns its name and admin facts
    /// without waiting for the recovery.
    async fn start_recovery(
        &mut self,
        data_dir: (PathBuf, tempfile::TempDir),
        settings: Vec<(String, String)>,
        program: &std::path::Path,
        password: Secret,
    ) -> Result<(String, ConnInfo), Box<dyn std::error::Error + Send + Sync>>;

    /// Whether the server container `name` still runs.
    async fn is_running(&self, name: &str) -> bool;

    /// Everything the server container `name` logged.
    async fn server_log(&self, name: &str) -> String;
}

/// A finished recovery: a server at the target, promoted or paused.
#[derive(Debug)]
pub struct Recovered {
    pub server: RecoveredServer,
    pub base_backup: BaseBackupManifest,
    pub at_target: AtTarget,
    /// The last replayed LSN.
    pub replayed_lsn: Option<String>,
    /// The timeline the server is on: a new one once promoted.
    pub timeline: Option<u32>,
    /// Commit time of the last transaction replayed: the recovered data is
    /// complete up to here (the drills' recovery point).
    pub last_replayed_commit: Option<DateTime<Utc>>,
    /// Where recovery stopped, from the server log ("recovery stopping ...").
    pub stop_line: Option<String>,
    /// Bytes of WAL replayed (base backup end LSN to replayed LSN).
    pub wal_bytes_replayed: u64,
    pub download_and_verify: Duration,
    pub replay: Duration,
}

/// Picks the newest base backup usable for `target`.
pub fn choose_base_backup<'a>(
    backups: &'a [BaseBackupManifest],
    target: &RecoveryTarget,
) -> Result<&'a BaseBackupManifest, Option<&'a BaseBackupManifest>> {
    let usable = |b: &&BaseBackupManifest| match target {
        RecoveryTarget::Time(t) => b.end_time <= *t,
        RecoveryTarget::Lsn(l) => parse_lsn(l).is_some_and(|lsn| b.end_lsn_value() <= lsn),
        RecoveryTarget::Name(_) | RecoveryTarget::Xid(_) | RecoveryTarget::EndOfArchive => true,
    };
    backups
        .iter()
        .filter(usable)
        .max_by_key(|b| b.end_time)
        .ok_or(backups.first())
}

/// Recovers to `target` into a new local cluster from the base backups and
/// WAL in `store`.
///
/// # Errors
/// See the module's guarantees; each refusal says what to do instead.
pub async fn recover_to(
    bins: &PgBinaries,
    store: &Store,
    target: &RecoveryTarget,
    options: &PitrOptions,
) -> Result<Recovered> {
    recover_on(RecoveryHost::Local, bins, store, target, options).await
}

/// [`recover_to`] into a new server on `host`.
///
/// # Errors
/// As [`recover_to`].
pub async fn recover_on(
    mut host: RecoveryHost<'_>,
    bins: &PgBinaries,
    store: &Store,
    target: &RecoveryTarget,
    options: &PitrOptions,
) -> Result<Recovered> {
    check_target(target, options)?;
    if matches!(host, RecoveryHost::Local | RecoveryHost::DataDir { .. }) {
        Cluster::check_executable_by_server(&options.drillbook)?;
    }
    // A data directory: what it holds is judged before anything is downloaded.
    let mut existed_empty = false;
    if let RecoveryHost::DataDir { pgdata, port } = &host {
        match data_dir::inspect(bins, pgdata).await? {
            data_dir::Existing::Absent => {}
            data_dir::Existing::Empty => existed_empty = true,
            data_dir::Existing::Recovery(_) => {
                return Err(PitrError::DataDirNotEmpty { pgdata: pgdata.clone() });
            }
        }
        if let Some(port) = port {
            DataDirServer::check_port(*port)?;
        }
        let parent = pgdata.parent().unwrap_or(std::path::Path::new("/"));
        if !parent.is_dir() {
            return Err(PitrError::Io {
                context: format!("use --pgdata {}: its parent directory does not exist", pgdata.display()),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        Cluster::check_dir_reachable_by_server(parent)?;
    }
    let base = pick_base_backup(store, target).await?;

    let started = Instant::now();
    // Where the base backup is extracted: a temp dir, or the sibling of an operator's data directory.
    let (work, incoming) = match &host {
        RecoveryHost::DataDir { pgdata, .. } => (None, Some(data_dir::Incoming::create(pgdata)?)),
        _ => (
            Some(
                crate::scratch::owned_tempdir("drillbook-pitr-").map_err(|source| PitrError::Io {
                    context: "create a temp dir for the base backup".into(),
                    source,
                })?,
            ),
            None,
        ),
    };
    let work_path = match (&work, &incoming) {
        (Some(work), _) => work.path().to_path_buf(),
        (None, Some(incoming)) => incoming.path().to_path_buf(),
        (None, None) => unreachable!("one of them is made above"),
    };
    let data = download_base_backup(bins, store, &base, &work_path).await?;
    std::fs::write(data.join("recovery.signal"), b"").map_err(|source| PitrError::Io {
        context: "write recovery.signal".into(),
        source,
    })?;
    let download_and_verify = started.elapsed();
    crate::failpoint!("recover::after_download");

    // Where the server finds drillbook for `wal-fetch`: here, or mounted in its container.
    let program = match &host {
        RecoveryHost::Containers(env) => env.drillbook_in_container(),
        RecoveryHost::Local | RecoveryHost::DataDir { .. } => options.drillbook.clone(),
    };
    let settings = recovery_settings(target, options, &program);

    let replay_started = Instant::now();
    let mut guard = None;
    let mut server = match &mut host {
        RecoveryHost::Local => {
            let mut cluster_options = ClusterOptions {
                settings,
                ..ClusterOptions::default()
            };
            for (name, value) in server_env(store.config()) {
                cluster_options = cluster_options.env(&name, value);
            }
            match Cluster::start_from_data_dir(bins, &data, options.password.clone(), cluster_options).await {
                Ok(cluster) => RecoveredServer::Local(cluster),
                Err(PgError::StartFailed { log_tail, .. }) => return Err(failure(target, &log_tail)),
                Err(e) => return Err(e.into()),
            }
        }
        RecoveryHost::Containers(env) => {
            let work = work.expect("containers recover from a temp dir");
            let (name, admin) = env
                .start_recovery(
                    (data.clone(), work),
                    settings,
                    &options.drillbook,
                    options.password.clone(),
                )
                .await
                .map_err(PitrError::Container)?;
            RecoveredServer::Container { name, admin }
        }
        RecoveryHost::DataDir { pgdata, port } => {
            // Undone on failure or drop from here on (the rename may happen any moment).
            guard = Some(data_dir::Guard::new(bins, pgdata, None, existed_empty));
            // The state goes in before the rename: the directory never exists without it.
            RecoveryState {
                phase: Phase::Replaying,
                owner: data_dir::this_owner(),
                target: target.to_string(),
                base_backup: base.stamp.clone(),
                bucket: store.config().location(),
                reached: None,
                failure: None,
            }
            .write(&data)?;
            incoming
                .expect("a data dir recovers from its sibling")
                .install(pgdata)?;
            crate::failpoint!("recover::after_install");
            let chosen = port.is_some();
            let port = match port {
                Some(port) => *port,
                None => DataDirServer::free_port()?,
            };
            let server = DataDirServer::prepare(bins, pgdata, port, &settings)?;
            let started = if chosen {
                server.start(&server_env(store.config())).await
            } else {
                server.start_on_a_free_port(&server_env(store.config())).await
            };
            let admin = data_dir_admin(server.port().unwrap_or(port), options);
            match started {
                Ok(()) => {}
                Err(PgError::StartFailed { .. }) => return Err(failure(target, &server.log_since(0))),
                Err(e) => return Err(e.into()),
            }
            crate::failpoint!("recover::replaying");
            RecoveredServer::DataDir { server, admin }
        }
    };
    let reached = wait_for_target(&host, &mut server, target, options.at_target, 0).await?;
    if options.at_target == AtTarget::Promote {
        server.remove_wal_spool();
    }
    if let (
        Some(guard),
        RecoveredServer::DataDir {
            server: data_dir_server,
            ..
        },
    ) = (guard, &server)
    {
        let state = RecoveryState {
            phase: phase_of(options.at_target),
            owner: None,
            target: target.to_string(),
            base_backup: base.stamp.clone(),
            bucket: store.config().location(),
            reached: Some(reached.point.clone()),
            failure: None,
        };
        state.write(data_dir_server.pgdata())?;
        guard.settle();
    }
    let wal_bytes_replayed = reached
        .point
        .lsn
        .as_deref()
        .and_then(parse_lsn)
        .map_or(0, |r| r.saturating_sub(base.end_lsn_value()));
    Ok(Recovered {
        server,
        base_backup: base,
        at_target: options.at_target,
        replayed_lsn: reached.point.lsn,
        timeline: reached.point.timeline,
        last_replayed_commit: reached.point.last_replayed_commit,
        stop_line: reached.stop_line,
        wal_bytes_replayed,
        download_and_verify,
        replay: replay_started.elapsed(),
    })
}

/// `drillbook recover --pgdata`: recovers into `pgdata` when it is new or
/// empty (after removing what a killed recover left there), or moves the
/// drillbook recovery it holds forward to `target`.
///
/// # Errors
/// As [`recover_on`]; moving forward refuses a target behind the point
/// reached and a promoted recovery, and leaves `pgdata` marked failed when
/// the new target is not reached.
pub async fn recover_data_dir(
    bins: &PgBinaries,
    store: &Store,
    pgdata: &std::path::Path,
    port: Option<u16>,
    target: &RecoveryTarget,
    options: &PitrOptions,
) -> Result<Recovered> {
    match data_dir::inspect(bins, pgdata).await? {
        data_dir::Existing::Recovery(_) => recover_further(bins, store, pgdata, target, options).await,
        data_dir::Existing::Absent | data_dir::Existing::Empty => {
            let host = RecoveryHost::DataDir {
                pgdata: pgdata.to_path_buf(),
                port,
            };
            recover_on(host, bins, store, target, options).await
        }
    }
}

/// Moves a paused (or failed) recovery in `pgdata` forward to a later
/// `target`: the settings are rewritten and the server restarted, replaying
/// from its last restartpoint; it then pauses or promotes as asked.
///
/// # Errors
/// [`PitrError::TargetBehind`] for a target before the point reached,
/// [`PitrError::NotPaused`] for a promoted recovery; a failure to reach the
/// target leaves `pgdata` marked failed with its server stopped.
pub(super) async fn recover_further(
    bins: &PgBinaries,
    store: &Store,
    pgdata: &std::path::Path,
    target: &RecoveryTarget,
    options: &PitrOptions,
) -> Result<Recovered> {
    check_target(target, options)?;
    Cluster::check_executable_by_server(&options.drillbook)?;
    let previous = match data_dir::inspect(bins, pgdata).await? {
        data_dir::Existing::Recovery(state) => state,
        _ => return Err(PitrError::NotARecovery { pgdata: pgdata.into() }),
    };
    let reached_before = match (&previous.phase, &previous.reached) {
        (Phase::Paused | Phase::Failed, Some(reached)) => reached.clone(),
        (phase, _) => {
            return Err(PitrError::NotPaused {
                pgdata: pgdata.into(),
                phase: *phase,
                what: "a promoted server has left recovery; recover into a new --pgdata".into(),
            });
        }
    };
    data_dir::check_forward(&reached_before, target, options.at_target)?;
    let backups = list_base_backups(store).await?;
    let base = backups
        .into_iter()
        .find(|b| b.stamp == previous.base_backup)
        .ok_or_else(|| PitrError::NoBaseBackup {
            location: format!(
                "{} (the recovery in {} came from base backup {}, which is gone)",
                store.config().location(),
                pgdata.display(),
                previous.base_backup
            ),
        })?;

    let server = DataDirServer::open(bins, pgdata)?;
    let port = server
        .port()
        .ok_or_else(|| PitrError::NotARecovery { pgdata: pgdata.into() })?;
    let admin = data_dir_admin(port, options);
    let mut moving = previous.clone();
    moving.phase = Phase::Replaying;
    moving.owner = data_dir::this_owner();
    moving.target = target.to_string();
    moving.failure = None;
    moving.write(pgdata)?;
    let guard = data_dir::Guard::new(bins, pgdata, Some(previous), false);
    let replay_started = Instant::now();
    server.stop().await?;
    // `recovery.signal` stays until promotion: the server resumes recovery.
    let mut all = server_settings_kept(&server);
    all.extend(recovery_settings(target, options, &options.drillbook));
    server.write_settings(&all)?;
    let log_from = server.log_len();
    match server.start(&server_env(store.config())).await {
        Ok(()) => {}
        Err(PgError::StartFailed { .. }) => return Err(failure(target, &server.log_since(log_from))),
        Err(e) => return Err(e.into()),
    }
    let host = RecoveryHost::DataDir {
        pgdata: pgdata.into(),
        port: Some(port),
    };
    let mut recovered_server = RecoveredServer::DataDir { server, admin };
    let reached = wait_for_target(&host, &mut recovered_server, target, options.at_target, log_from).await?;
    if options.at_target == AtTarget::Promote {
        recovered_server.remove_wal_spool();
    }
    let mut state = moving;
    state.phase = phase_of(options.at_target);
    state.owner = None;
    state.reached = Some(reached.point.clone());
    state.write(pgdata)?;
    guard.settle();
    // A restart replays from its redo point (the last restartpoint), not from where it paused.
    let redo_start =
        server_log_redo_start(&recovered_server, log_from).or(reached_before.lsn.as_deref().and_then(parse_lsn));
    let wal_bytes_replayed = match (reached.point.lsn.as_deref().and_then(parse_lsn), redo_start) {
        (Some(now), Some(start)) => now.saturating_sub(start),
        _ => 0,
    };
    Ok(Recovered {
        server: recovered_server,
        base_backup: base,
        at_target: options.at_target,
        replayed_lsn: reached.point.lsn,
        timeline: reached.point.timeline,
        last_replayed_commit: reached.point.last_replayed_commit,
        stop_line: reached.stop_line,
        wal_bytes_replayed,
        download_and_verify: Duration::ZERO,
        replay: replay_started.elapsed(),
    })
}

/// Where the restarted server in `server` began redo (`redo starts at X/Y`
/// in its log from byte `log_from`).
fn server_log_redo_start(server: &RecoveredServer, log_from: u64) -> Option<u64> {
    let RecoveredServer::DataDir { server, .. } = server else {
        return None;
    };
    server
        .log_since(log_from)
        .lines()
        .find_map(|l| l.split_once("redo starts at ").map(|(_, r)| r.trim().to_owned()))
        .and_then(|lsn| parse_lsn(&lsn))
}

/// Promotes the recovery paused in `pgdata` (`pg_promote`): it leaves
/// recovery on a new timeline and accepts writes. Returns the point it
/// promoted at.
///
/// # Errors
/// [`PitrError::NotPaused`] unless the recovery is paused at a target with
/// its server running.
pub async fn promote_data_dir(bins: &PgBinaries, pgdata: &std::path::Path) -> Result<ReachedPoint> {
    let mut state = match data_dir::inspect(bins, pgdata).await? {
        data_dir::Existing::Recovery(state) => state,
        _ => return Err(PitrError::NotARecovery { pgdata: pgdata.into() }),
    };
    let server = DataDirServer::open(bins, pgdata)?;
    let refuse = |what: &str| PitrError::NotPaused {
        pgdata: pgdata.into(),
        phase: state.phase,
        what: what.to_owned(),
    };
    match state.phase {
        Phase::Paused if server.is_running() => {}
        Phase::Paused => {
            return Err(refuse(
                "its server is not running; start it again with the same recover command (same --to-... target), then promote",
            ));
        }
        Phase::Promoted => return Err(refuse("it is promoted already")),
        Phase::Failed => {
            return Err(refuse(&format!(
                "its last move failed ({}); recover it to a target again first",
                state.failure.as_deref().unwrap_or("no reason recorded")
            )));
        }
        Phase::Replaying => return Err(refuse("a drillbook is still replaying into it")),
    }
    let mut conn = server.connect().await?;
    let promoted: bool = sqlx::query_scalar("SELECT pg_promote(true, 60)")
        .fetch_one(&mut conn)
        .await
        .map_err(PgError::sql("promote the recovered server (pg_promote)"))?;
    if !promoted {
        return Err(PitrError::RecoveryFailed {
            target: RecoveryTarget::EndOfArchive,
            log: format!("pg_promote did not finish within 60 s\n{}", server.log_since(0)),
        });
    }
    let point = promoted_point(&mut conn)
        .await
        .map_err(PgError::sql("read the promoted server's position"))?;
    let _ = sqlx::Connection::close(conn).await;
    crate::wal::remove_spool(&pgdata.join("pg_wal"));
    state.phase = Phase::Promoted;
    state.reached = Some(point.clone());
    state.write(pgdata)?;
    Ok(point)
}

/// Refusals that need nothing downloaded: a target in the future, `--pause` without a target.
fn check_target(target: &RecoveryTarget, options: &PitrOptions) -> Result<()> {
    if let RecoveryTarget::Time(t) = target
        && *t > options.now
    {
        return Err(PitrError::TargetInFuture {
            target: target.clone(),
            now: options.now.to_rfc3339_opts(SecondsFormat::Millis, true),
        });
    }
    if options.at_target == AtTarget::Pause && *target == RecoveryTarget::EndOfArchive {
        return Err(PitrError::PauseNeedsTarget);
    }
    Ok(())
}

/// The newest base backup usable for `target`, or why there is none.
async fn pick_base_backup(store: &Store, target: &RecoveryTarget) -> Result<BaseBackupManifest> {
    let backups = list_base_backups(store).await?;
    match choose_base_backup(&backups, target) {
        Ok(base) => Ok(base.clone()),
        Err(Some(oldest)) => Err(PitrError::TargetBeforeOldestBackup {
            target: target.clone(),
            oldest: format!(
                "{} at LSN {}",
                oldest.end_time.to_rfc3339_opts(SecondsFormat::Millis, true),
                oldest.end_lsn
            ),
        }),
        Err(None) => Err(PitrError::NoBaseBackup {
            location: store.config().location(),
        }),
    }
}

/// The recovery's server settings: `restore_command`, the target, what to
/// do there. Archiving stays off: a recovered copy never writes into the
/// archive of the server it came from.
fn recovery_settings(
    target: &RecoveryTarget,
    options: &PitrOptions,
    program: &std::path::Path,
) -> Vec<(String, String)> {
    let mut settings = vec![
        (
            "restore_command".to_owned(),
            options
                .restore_command
                .clone()
                .unwrap_or_else(|| restore_command(program)),
        ),
        (
            "recovery_target_action".to_owned(),
            options.at_target.setting().to_owned(),
        ),
        ("recovery_target_timeline".to_owned(), "current".to_owned()),
        ("archive_mode".to_owned(), "off".to_owned()),
        ("hot_standby".to_owned(), "on".to_owned()),
    ];
    match target {
        RecoveryTarget::Time(t) => settings.push((
            "recovery_target_time".to_owned(),
            t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string(),
        )),
        RecoveryTarget::Lsn(l) => settings.push(("recovery_target_lsn".to_owned(), l.clone())),
        RecoveryTarget::Name(n) => settings.push(("recovery_target_name".to_owned(), n.clone())),
        RecoveryTarget::Xid(x) => settings.push(("recovery_target_xid".to_owned(), x.to_string())),
        RecoveryTarget::EndOfArchive => {}
    }
    settings
}

/// The settings of a data directory's block that are not the recovery's
/// own (port, socket, hba file), to keep when the target changes.
fn server_settings_kept(server: &DataDirServer) -> Vec<(String, String)> {
    const RECOVERY: [&str; 9] = [
        "recovery_target_xid",
        "restore_command",
        "recovery_target_action",
        "recovery_target_timeline",
        "recovery_target_time",
        "recovery_target_lsn",
        "recovery_target_name",
        "archive_mode",
        "hot_standby",
    ];
    server
        .settings()
        .into_iter()
        .filter(|(name, _)| !RECOVERY.contains(&name.as_str()))
        .collect()
}

/// How to reach a data directory's server over TCP: the superuser of the
/// cluster the backup came from, with its password when known.
fn data_dir_admin(port: u16, options: &PitrOptions) -> ConnInfo {
    ConnInfo {
        host: "127.0.0.1".into(),
        port,
        user: "postgres".into(),
        password: options.password.clone(),
        database: "postgres".into(),
    }
}

fn phase_of(at_target: AtTarget) -> Phase {
    match at_target {
        AtTarget::Promote => Phase::Promoted,
        AtTarget::Pause => Phase::Paused,
    }
}

/// Where a recovery stopped.
struct Reached {
    point: ReachedPoint,
    stop_line: Option<String>,
}

/// Waits until the server on `host` promoted or paused at `target` (as
/// `at_target` says), or fails with what its log (from byte `log_from`)
/// says went wrong.
async fn wait_for_target(
    host: &RecoveryHost<'_>,
    server: &mut RecoveredServer,
    target: &RecoveryTarget,
    at_target: AtTarget,
    log_from: u64,
) -> Result<Reached> {
    let deadline = Instant::now() + RECOVERY_TIMEOUT;
    loop {
        if !host.is_running(server).await {
            let log = host.log(server, log_from).await;
            return Err(failure(target, &log));
        }
        if let Ok(mut conn) = host.connect(server).await {
            let state: Option<String> = sqlx::query_scalar(
                "SELECT CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() ELSE 'promoted' END",
            )
            .fetch_one(&mut conn)
            .await
            .ok();
            let done = match at_target {
                AtTarget::Promote => state.as_deref() == Some("promoted"),
                AtTarget::Pause => state.as_deref() == Some("paused"),
            };
            if done {
                let point = match at_target {
                    AtTarget::Promote => promoted_point(&mut conn).await.ok(),
                    AtTarget::Pause => paused_point(&mut conn).await.ok(),
                }
                .unwrap_or(ReachedPoint {
                    lsn: None,
                    timeline: None,
                    last_replayed_commit: None,
                });
                let _ = sqlx::Connection::close(conn).await;
                let log = host.log(server, log_from).await;
                let stop_line = log.lines().find(|l| l.contains("recovery stopping")).map(str::to_owned);
                return Ok(Reached { point, stop_line });
            }
            let _ = sqlx::Connection::close(conn).await;
        }
        if Instant::now() > deadline {
            return Err(PitrError::Timeout {
                target: target.clone(),
                log: host.log(server, log_from).await,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The point a paused recovery stands at.
async fn paused_point(conn: &mut sqlx::PgConnection) -> Result<ReachedPoint, sqlx::Error> {
    let (lsn, last_replayed_commit, timeline): (Option<String>, Option<DateTime<Utc>>, Option<i32>) = sqlx::query_as(
        "SELECT pg_last_wal_replay_lsn()::text, pg_last_xact_replay_timestamp(), \
             (SELECT timeline_id FROM pg_control_checkpoint())",
    )
    .fetch_one(conn)
    .await?;
    Ok(ReachedPoint {
        lsn,
        timeline: timeline.and_then(|t| u32::try_from(t).ok()),
        last_replayed_commit,
    })
}

/// The point a promoted server left recovery at, and its new timeline.
async fn promoted_point(conn: &mut sqlx::PgConnection) -> Result<ReachedPoint, sqlx::Error> {
    // Both replay functions keep what recovery left after promotion.
    let (lsn, last_replayed_commit, timeline): (Option<String>, Option<DateTime<Utc>>, Option<String>) =
        sqlx::query_as(
            "SELECT pg_last_wal_replay_lsn()::text, pg_last_xact_replay_timestamp(), \
             substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)",
        )
        .fetch_one(conn)
        .await?;
    Ok(ReachedPoint {
        lsn,
        timeline: timeline.and_then(|t| u32::from_str_radix(&t, 16).ok()),
        last_replayed_commit,
    })
}

impl RecoveryHost<'_> {
    async fn is_running(&self, server: &mut RecoveredServer) -> bool {
        match (self, server) {
            (_, RecoveredServer::Local(cluster)) => cluster.is_running(),
            (_, RecoveredServer::DataDir { server, .. }) => server.is_running(),
            (Self::Containers(env), RecoveredServer::Container { name, .. }) => env.is_running(name).await,
            (_, RecoveredServer::Container { .. }) => false,
        }
    }

    async fn log(&self, server: &RecoveredServer, from: u64) -> String {
        match (self, server) {
            (_, RecoveredServer::Local(cluster)) => cluster.log_since(from),
            (_, RecoveredServer::DataDir { server, .. }) => server.log_since(from),
            (Self::Containers(env), RecoveredServer::Container { name, .. }) => env.server_log(name).await,
            (_, RecoveredServer::Container { .. }) => String::new(),
        }
    }

    async fn connect(&self, server: &RecoveredServer) -> Result<sqlx::PgConnection, PgError> {
        match server {
            RecoveredServer::Local(cluster) => cluster.connect_local().await,
            RecoveredServer::DataDir { server, .. } => server.connect().await,
            RecoveredServer::Container { admin, .. } => {
                <sqlx::PgConnection as sqlx::Connection>::connect_with(&admin.connect_options())
                    .await
                    .map_err(PgError::sql(format!("connect to {admin}")))
            }
        }
    }
}

/// Turns a server log of a recovery that ended without promoting into the error.
fn failure(target: &RecoveryTarget, log: &str) -> PitrError {
    let relevant: Vec<&str> = log
        .lines()
        .filter(|l| {
            [
                "FATAL",
                "ERROR",
                "redo ",
                "last completed transaction",
                "consistent recovery",
                "could not restore",
                "wal-fetch",
                "corrupt",
                "restored log file",
            ]
            .iter()
            .any(|k| l.contains(k))
        })
        .collect();
    let excerpt = relevant[relevant.len().saturating_sub(20)..].join("\n");
    if log.contains("could not restore file") || log.contains("is corrupt") {
        return PitrError::ArchiveFailed {
            target: target.clone(),
            log: excerpt,
        };
    }
    let furthest_lsn = log
        .lines()
        .rev()
        .filter_map(|l| l.split_once("redo done at ").map(|(_, r)| r))
        .filter_map(|r| r.split_whitespace().next())
        .filter_map(parse_lsn)
        .map(format_lsn)
        .next();
    if !log.contains("recovery ended before configured recovery target was reached") {
        return PitrError::RecoveryFailed {
            target: target.clone(),
            log: excerpt,
        };
    }
    let furthest_time = log
        .lines()
        .rev()
        .filter_map(|l| {
            l.split_once("last completed transaction was at log time ")
                .map(|(_, r)| r.trim())
        })
        .filter_map(parse_pg_time)
        .next();
    PitrError::TargetNotReached {
        target: target.clone(),
        furthest_lsn,
        furthest_time,
        log: excerpt,
    }
}

/// `2026-11-29 00:40:01.123456+00` as PostgreSQL logs it.
fn parse_pg_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%#z")
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(stamp: &str, end: &str, lsn: &str) -> BaseBackupManifest {
        let end_time = DateTime::parse_from_rfc3339(end).unwrap().with_timezone(&Utc);
        BaseBackupManifest {
            stamp: stamp.into(),
            start_lsn: lsn.into(),
            end_lsn: lsn.into(),
            timeline: 1,
            start_time: end_time,
            end_time,
            server_version: "15".into(),
            tar_key: String::new(),
            tar_bytes: 0,
            tar_sha256: String::new(),
            compression: Default::default(),
        }
    }

    #[test]
    fn the_newest_backup_before_the_target_is_chosen() {
        let backups = [
            backup("a", "2026-01-01T00:00:00Z", "0/2000100"),
            backup("b", "2026-01-02T00:00:00Z", "0/5000100"),
        ];
        let at = |s: &str| RecoveryTarget::Time(DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc));
        assert_eq!(
            choose_base_backup(&backups, &at("2026-01-01T12:00:00Z")).unwrap().stamp,
            "a"
        );
        assert_eq!(
            choose_base_backup(&backups, &at("2026-01-03T00:00:00Z")).unwrap().stamp,
            "b"
        );
        let before = choose_base_backup(&backups, &at("2025-12-31T00:00:00Z")).unwrap_err();
        assert_eq!(before.unwrap().stamp, "a");
        let lsn = RecoveryTarget::Lsn("0/3000000".into());
        assert_eq!(choose_base_backup(&backups, &lsn).unwrap().stamp, "a");
        assert!(choose_base_backup(&[], &lsn).unwrap_err().is_none());
    }

    #[test]
    fn the_furthest_point_is_read_from_the_log() {
        let log = "LOG:  restored log file \"000000010000000000000004\" from archive\n\
                   LOG:  redo done at 0/4000110 system usage: CPU: user: 0.00 s\n\
                   LOG:  last completed transaction was at log time 2026-11-29 00:40:01.123456+00\n\
                   FATAL:  recovery ended before configured recovery target was reached\n";
        let err = failure(&RecoveryTarget::Lsn("0/9000000".into()), log);
        let PitrError::TargetNotReached {
            furthest_lsn,
            furthest_time,
            ..
        } = &err
        else {
            panic!("{err}");
        };
        assert_eq!(furthest_lsn.as_deref(), Some("0/4000110"));
        assert_eq!(
            furthest_time.unwrap().to_rfc3339_opts(SecondsFormat::Micros, true),
            "2026-11-29T00:40:01.123456Z"
        );
        assert!(
            err.to_string().contains("furthest reachable point is 0/4000110"),
            "{err}"
        );
    }
}
