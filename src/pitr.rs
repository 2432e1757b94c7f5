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
//! Recoveries run in a local cluster or in a server container of any host
//! that implements [`RecoveryContainers`]; the environment that archives
//! and recovers in one place is `env::ArchivingEnvironment`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::basebackup::{BaseBackupError, BaseBackupManifest, download_base_backup, list_base_backups};
use crate::pg::{Cluster, ClusterOptions, ConnInfo, PgBinaries, PgError, Secret};
use crate::store::Store;
use crate::wal::{format_lsn, parse_lsn, restore_command, server_env};

const RECOVERY_TIMEOUT: Duration = Duration::from_secs(30 * 60);

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum RecoveryTarget {
    /// Replay up to and including the last commit at or before this time.
    Time(DateTime<Utc>),
    /// Replay up to and including this LSN (`X/Y`).
    Lsn(String),
    /// Replay up to a restore point made with `pg_create_restore_point(name)`.
    Name(String),
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
}

/// The server a recovery ran in.
#[derive(Debug)]
pub enum RecoveredServer {
    /// A local cluster (the embedded backend).
    Local(Cluster),
    /// A server container of a [`RecoveryContainers`] host, removed with it.
    Container { name: String, admin: ConnInfo },
}

impl RecoveredServer {
    /// A superuser on the recovered server.
    pub fn admin(&self) -> ConnInfo {
        match self {
            Self::Local(cluster) => cluster.admin(),
            Self::Container { admin, .. } => admin.clone(),
        }
    }

    /// Stops a local cluster and removes its files; a container goes with
    /// its environment's cleanup.
    pub async fn cleanup(self) -> Result<(), PgError> {
        match self {
            Self::Local(cluster) => cluster.cleanup().await,
            Self::Container { .. } => Ok(()),
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
}

impl std::fmt::Debug for RecoveryHost<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local => f.write_str("Local"),
            Self::Containers(_) => f.write_str("Containers"),
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

/// A finished recovery: a promoted server at the target.
#[derive(Debug)]
pub struct Recovered {
    pub server: RecoveredServer,
    pub base_backup: BaseBackupManifest,
    /// The last replayed LSN.
    pub replayed_lsn: Option<String>,
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
        RecoveryTarget::Name(_) | RecoveryTarget::EndOfArchive => true,
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
    if let RecoveryTarget::Time(t) = target
        && *t > options.now
    {
        return Err(PitrError::TargetInFuture {
            target: target.clone(),
            now: options.now.to_rfc3339_opts(SecondsFormat::Millis, true),
        });
    }
    if matches!(host, RecoveryHost::Local) {
        Cluster::check_executable_by_server(&options.drillbook)?;
    }
    let backups = list_base_backups(store).await?;
    let base = match choose_base_backup(&backups, target) {
        Ok(base) => base.clone(),
        Err(Some(oldest)) => {
            return Err(PitrError::TargetBeforeOldestBackup {
                target: target.clone(),
                oldest: format!(
                    "{} at LSN {}",
                    oldest.end_time.to_rfc3339_opts(SecondsFormat::Millis, true),
                    oldest.end_lsn
                ),
            });
        }
        Err(None) => {
            return Err(PitrError::NoBaseBackup {
                location: store.config().location(),
            });
        }
    };

    let started = Instant::now();
    let work = crate::scratch::owned_tempdir("drillbook-pitr-").map_err(|source| PitrError::Io {
        context: "create a temp dir for the base backup".into(),
        source,
    })?;
    let data = download_base_backup(bins, store, &base, work.path()).await?;
    std::fs::write(data.join("recovery.signal"), b"").map_err(|source| PitrError::Io {
        context: "write recovery.signal".into(),
        source,
    })?;
    let download_and_verify = started.elapsed();

    // Where the server finds drillbook for `wal-fetch`: here, or mounted in its container.
    let program = match &host {
        RecoveryHost::Local => options.drillbook.clone(),
        RecoveryHost::Containers(env) => env.drillbook_in_container(),
    };
    let mut cluster_options = ClusterOptions::default()
        .setting(
            "restore_command",
            options
                .restore_command
                .clone()
                .unwrap_or_else(|| restore_command(&program)),
        )
        .setting("recovery_target_action", "promote")
        .setting("recovery_target_timeline", "current")
        .setting("archive_mode", "off");
    cluster_options = match target {
        RecoveryTarget::Time(t) => {
            cluster_options.setting("recovery_target_time", t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string())
        }
        RecoveryTarget::Lsn(l) => cluster_options.setting("recovery_target_lsn", l),
        RecoveryTarget::Name(n) => cluster_options.setting("recovery_target_name", n),
        RecoveryTarget::EndOfArchive => cluster_options,
    };

    let replay_started = Instant::now();
    let mut server = match &mut host {
        RecoveryHost::Local => {
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
            let (name, admin) = env
                .start_recovery(
                    (data.clone(), work),
                    cluster_options.settings,
                    &options.drillbook,
                    options.password.clone(),
                )
                .await
                .map_err(PitrError::Container)?;
            RecoveredServer::Container { name, admin }
        }
    };
    let deadline = Instant::now() + RECOVERY_TIMEOUT;
    loop {
        if !host.is_running(&mut server).await {
            let log = host.log(&server).await;
            return Err(failure(target, &log));
        }
        if let Ok(mut conn) = host.connect(&server).await {
            let in_recovery: Option<bool> = sqlx::query_scalar("SELECT pg_is_in_recovery()")
                .fetch_one(&mut conn)
                .await
                .ok();
            if in_recovery == Some(false) {
                // Both stay as recovery left them after promotion.
                let (replayed, last_replayed_commit): (Option<String>, Option<DateTime<Utc>>) =
                    sqlx::query_as("SELECT pg_last_wal_replay_lsn()::text, pg_last_xact_replay_timestamp()")
                        .fetch_one(&mut conn)
                        .await
                        .unwrap_or((None, None));
                let _ = sqlx::Connection::close(conn).await;
                let log = host.log(&server).await;
                let stop_line = log.lines().find(|l| l.contains("recovery stopping")).map(str::to_owned);
                let wal_bytes_replayed = replayed
                    .as_deref()
                    .and_then(parse_lsn)
                    .map_or(0, |r| r.saturating_sub(base.end_lsn_value()));
                return Ok(Recovered {
                    server,
                    base_backup: base,
                    replayed_lsn: replayed,
                    last_replayed_commit,
                    stop_line,
                    wal_bytes_replayed,
                    download_and_verify,
                    replay: replay_started.elapsed(),
                });
            }
        }
        if Instant::now() > deadline {
            return Err(PitrError::Timeout {
                target: target.clone(),
                log: host.log(&server).await,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl RecoveryHost<'_> {
    async fn is_running(&self, server: &mut RecoveredServer) -> bool {
        match (self, server) {
            (_, RecoveredServer::Local(cluster)) => cluster.is_running(),
            (Self::Containers(env), RecoveredServer::Container { name, .. }) => env.is_running(name).await,
            (Self::Local, RecoveredServer::Container { .. }) => false,
        }
    }

    async fn log(&self, server: &RecoveredServer) -> String {
        match (self, server) {
            (_, RecoveredServer::Local(cluster)) => cluster.log_since(0),
            (Self::Containers(env), RecoveredServer::Container { name, .. }) => env.server_log(name).await,
            (Self::Local, RecoveredServer::Container { .. }) => String::new(),
        }
    }

    async fn connect(&self, server: &RecoveredServer) -> Result<sqlx::PgConnection, PgError> {
        match server {
            RecoveredServer::Local(cluster) => cluster.connect_local().await,
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
