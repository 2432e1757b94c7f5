//! Steps several drills share, each a timed phase of the drill: the
//! openings of the failover drills (a primary with a hot standby) and of the
//! PITR drills (a primary archiving its WAL, a base backup in S3), and the
//! failover drills' verdict on the promoted standby. The detection drills
//! have theirs in `workbench.rs`.
//!
//! A step that fails returns [`DrillError::Step`](crate::drill::DrillError::Step) for the drill to `?`.
//!
//! Also where every built-in drill gets its harness: [`reported_drill`],
//! the one place the reports are wired in as the drill's outputs; and
//! [`record_setup`], the one place the properties the report reads
//! (backend, dataset profile, server version) are recorded.

use std::path::Path;
use std::time::Duration;

use sqlx::{Connection, PgConnection};

use crate::basebackup::{BaseBackupManifest, take_base_backup};
use crate::canary::{Canary, CanaryReport, check_canaries};
use crate::drill::{DatasetSize, Drill, Moved, RecoveryPoint, RecoverySource, Result, StepContext};
use crate::env::ArchivingEnvironment;
use crate::env::{APP_DATABASE, Backend, Environment};
use crate::failover::{replay_state, wait_caught_up};
use crate::fixtures::{FixtureSpec, Profile, seed};
use crate::pg::ConnInfo;
use crate::playbook::Scenario;
use crate::report::DrillReports;

/// A built-in drill's harness: [`Drill::new`] with the reports as its
/// outputs ([`DrillReports`]: the JUnit file under `DRILL_REPORT_DIR`, the
/// history record).
///
/// # Errors
///
/// [`crate::drill::DrillError::InvalidTarget`] if a target override is not a duration.
pub(super) fn reported_drill(name: &str, scenario: Scenario) -> Result<Drill> {
    Ok(Drill::new(name, scenario)?.with_outputs(DrillReports::new()))
}

/// Records what the report reads about where the drill ran: the backend,
/// the dataset profile it seeded (`None`: it seeded nothing, e.g. on
/// staging) and the version of the PostgreSQL server `server` is on.
///
/// # Errors
/// [`DrillError::Step`](crate::drill::DrillError::Step) when the server cannot be asked its version.
pub(super) async fn record_setup(
    drill: &mut Drill,
    backend: Backend,
    profile: Option<Profile>,
    server: &ConnInfo,
) -> Result<()> {
    drill.set_backend(backend);
    if let Some(profile) = profile {
        drill.set_dataset_profile(profile);
    }
    let version = server_version(server)
        .await
        .step("read the PostgreSQL server version")?;
    drill.set_postgres_version(&version);
    Ok(())
}

/// `SHOW server_version` on `server`.
async fn server_version(server: &ConnInfo) -> std::result::Result<String, sqlx::Error> {
    let mut conn = PgConnection::connect_with(&server.connect_options()).await?;
    let version = sqlx::query_scalar("SHOW server_version").fetch_one(&mut conn).await?;
    conn.close().await?;
    Ok(version)
}

/// The fixture ledger (`DRILL_PROFILE`) on the primary of `DRILL_ENV`'s
/// environment, and a hot standby that has caught up with it. Returns the
/// environment and the standby's admin facts.
pub(super) async fn primary_with_standby(drill: &mut Drill) -> Result<(Environment, ConnInfo)> {
    let profile = super::drill_profile()?;
    let mut env = drill.step("bring up environment", crate::env::from_env()).await?;
    record_setup(drill, env.backend(), Some(profile), &env.admin()).await?;
    let seeded = drill
        .data_step(
            "seed fixture ledger",
            env.seed(FixtureSpec::ending_now(profile, 42)),
            moved_by_seed,
        )
        .await?;
    drill.property("audit_logs_rows", seeded.rows_in("audit_logs").unwrap_or(0));
    let standby = drill
        .step("build hot standby (pg_basebackup + streaming)", env.start_standby())
        .await?;
    drill
        .step(
            "standby catches up",
            wait_caught_up(&env.admin(), &standby, Duration::from_secs(120)),
        )
        .await?;
    Ok((env, standby))
}

/// A primary archiving its WAL to S3 through `program wal-push` (segments
/// switched at least every `archive_timeout`), the fixture ledger
/// (`DRILL_PROFILE`) on it, and a base backup in S3.
pub(super) async fn archiving_primary(
    drill: &mut Drill,
    program: &Path,
    archive_timeout: Duration,
) -> Result<(ArchivingEnvironment, BaseBackupManifest)> {
    let profile = super::drill_profile()?;
    let env = drill
        .step(
            "bring up environment (WAL archiving to S3, data checksums on)",
            ArchivingEnvironment::from_env(program, archive_timeout),
        )
        .await?;
    record_setup(drill, env.backend(), Some(profile), &env.admin()).await?;
    let seeded = drill
        .data_step(
            "seed fixture ledger",
            seed(&env.source(), FixtureSpec::ending_now(profile, 42)),
            moved_by_seed,
        )
        .await?;
    drill.property("audit_logs_rows", seeded.rows_in("audit_logs").unwrap_or(0));
    let base = drill
        .data_step(
            "base backup to S3",
            take_base_backup(&env.bins, &env.admin(), env.store()),
            |base| [Moved::bytes(base.tar_bytes)],
        )
        .await?;
    drill.property("base_backup_bytes", base.tar_bytes);
    Ok((env, base))
}

/// After failing over to `standby` (promoted): the canaries on its
/// application database must be a gap-free prefix of those `committed`;
/// then the drill is verified, section 7 runs (backups resumed from the
/// promoted standby), and the newest surviving canary becomes the drill's
/// newest surviving data. Returns the canary report for the drill's own
/// RPO checks.
pub(super) async fn verdict_on_promoted_standby(
    drill: &mut Drill,
    env: &Environment,
    standby: &ConnInfo,
    committed: &[Canary],
) -> Result<CanaryReport> {
    let target = standby.with_database(APP_DATABASE);
    let report = drill
        .step(
            "canaries on the promoted standby",
            check_canaries(&target, committed, None),
        )
        .await?;
    drill.check(
        "surviving canaries are a gap-free prefix",
        report.clean(),
        format!("{report:?}"),
    );
    drill.verified();
    // Playbook section 7: resume backups, then the post-recovery checklist.
    super::post_recovery_checklist(drill, &target, Some((env.binaries(), standby, env.store()))).await?;
    let replay = replay_state(standby)
        .await
        .step("read the promoted standby's replay state")?;
    if let Some(at) = replay.last_replayed_commit {
        drill.recovery_point(RecoveryPoint::new(RecoverySource::LastReplayedCommit, at));
    }
    record_canaries(drill, &report)?;
    Ok(report)
}

/// What the canaries found in recovered data say: the newest bounds the
/// recovery point, the acknowledged ones missing are the rows lost.
///
/// # Errors
/// [`DrillError::Step`](crate::drill::DrillError::Step) when no canary survived: nothing bounds the loss.
pub(super) fn record_canaries(drill: &mut Drill, report: &CanaryReport) -> Result<()> {
    let newest = report
        .newest_surviving
        .step("find the newest canary in the recovered data")?;
    drill.recovery_point(RecoveryPoint::new(RecoverySource::Canary, newest));
    let lost = report.acknowledged.saturating_sub(report.surviving);
    drill.property("canaries_lost", lost);
    drill.rows_lost(lost as u64);
    Ok(())
}

/// Where point-in-time recovery's replay ended, as the recovery point.
pub(super) fn record_replay_end(drill: &mut Drill, recovered: &crate::pitr::Recovered) {
    if let Some(at) = recovered.last_replayed_commit {
        drill.recovery_point(RecoveryPoint::new(RecoverySource::ReplayEnd, at));
    }
}

/// Why an operator's command, run by a drill, gave no report.
#[derive(Debug, thiserror::Error)]
pub(super) enum CommandError {
    #[error("could not start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`drillbook {command}` exited with {status}: {stderr}")]
    Failed {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("`drillbook {command}` printed no JSON report ({source})")]
    NotJson {
        command: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Runs `program <args> --json` — the command an operator types in a real
/// incident, so the drill walks the operator's path, not a library call of
/// its own — against `store`'s bucket, and returns its JSON report. The
/// command dies with the drill (`pg::child`).
pub(super) async fn operator_command(
    program: &Path,
    store: &crate::store::Store,
    args: &[&str],
) -> std::result::Result<serde_json::Value, CommandError> {
    operator_answer(program, store, args, &[], &[EXIT_SUCCESS])
        .await
        .map(|answer| answer.report)
}

/// The operator's commands' exit code for success (`cli::exit::SUCCESS`).
pub(super) const EXIT_SUCCESS: i32 = 0;
/// Their exit code for "a check failed" (`cli::exit::FAILED`): for `check`
/// and `verify` a verdict, with a report, not an error.
pub(super) const EXIT_FAILED: i32 = 1;

/// What an operator's command answered.
#[derive(Debug, Clone)]
pub(super) struct Answer {
    /// Its exit code, one of the verdicts the caller accepted.
    pub code: i32,
    /// Its JSON report.
    pub report: serde_json::Value,
    /// How long it ran, start to exit.
    pub elapsed: Duration,
}

/// [`operator_command`] for a command whose exit code is a verdict
/// (`drillbook check`: 0 healthy, 1 a check failed, both with a report):
/// any code in `verdicts` is an answer. `env` goes into the command's
/// environment rather than its arguments, where `ps` would show it: URLs
/// with passwords (`DATABASE_URL`, `ADMIN_DATABASE_URL`).
pub(super) async fn operator_answer(
    program: &Path,
    store: &crate::store::Store,
    args: &[&str],
    env: &[(&str, &str)],
    verdicts: &[i32],
) -> std::result::Result<Answer, CommandError> {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .arg("--json")
        // The bucket, region, endpoint and credentials, as the server's
        // archive_command gets them.
        .envs(crate::wal::server_env(store.config()))
        .env("DRILL_PROGRESS", "off")
        .env_remove("DATABASE_URL")
        .env_remove("ADMIN_DATABASE_URL")
        .envs(env.iter().copied());
    // The secrets stay out of what is reported: the subcommand names the step.
    let shown = args.first().copied().unwrap_or_default().to_owned();
    let started = std::time::Instant::now();
    let output = crate::pg::child::output(command)
        .await
        .map_err(|source| CommandError::Spawn {
            program: program.display().to_string(),
            source,
        })?;
    let elapsed = started.elapsed();
    let code = output.status.code();
    let Some(code) = code.filter(|code| verdicts.contains(code)) else {
        return Err(CommandError::Failed {
            command: shown,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    };
    let report =
        serde_json::from_slice(&output.stdout).map_err(|source| CommandError::NotJson { command: shown, source })?;
    Ok(Answer { code, report, elapsed })
}

/// Flushes the archiving primary's last WAL segment into the archive, so a
/// recovery can reach everything committed so far.
pub(super) async fn flush_wal_to_archive(drill: &mut Drill, env: &ArchivingEnvironment) -> Result<()> {
    const FLUSH: &str = "flush the primary's last WAL to the archive";
    let mut admin = PgConnection::connect_with(&env.admin().connect_options())
        .await
        .step(FLUSH)?;
    drill
        .step(
            FLUSH,
            crate::wal::switch_and_wait_archived(&mut admin, Duration::from_secs(120)),
        )
        .await?;
    admin.close().await.step(FLUSH)?;
    Ok(())
}

/// Where a drill's `drillbook recover` puts its data directory: `data` in a
/// temp dir of the drill's own (the reaper stops a server left in `data` if
/// the drill dies), searchable by the server user, its listing private.
pub(super) struct RecoveryDir {
    work: tempfile::TempDir,
}

impl RecoveryDir {
    pub(super) fn create(step: &str) -> Result<Self> {
        let work = crate::scratch::owned_tempdir("drillbook-recover-").step(step)?;
        std::fs::set_permissions(work.path(), std::os::unix::fs::PermissionsExt::from_mode(0o711)).step(step)?;
        Ok(Self { work })
    }

    /// The `--pgdata` argument.
    pub(super) fn pgdata(&self) -> String {
        self.work.path().join("data").display().to_string()
    }

    /// The recovered server's superuser over TCP: the source's, whose
    /// catalog the recovery holds, at `recover --json`'s `port`.
    pub(super) fn admin(env: &ArchivingEnvironment, report: &serde_json::Value) -> Result<ConnInfo> {
        let port = report["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .step("read the recovered server's port from `drillbook recover --json`")?;
        Ok(ConnInfo {
            host: "127.0.0.1".into(),
            port,
            ..env.admin()
        })
    }

    /// Stops the server the recovery left running (none when nothing was
    /// recovered) and removes the directory.
    pub(super) async fn remove(self, env: &ArchivingEnvironment) -> Result<()> {
        const STOP: &str = "stop the recovered server";
        if let Ok(server) = crate::pg::DataDirServer::open(&env.bins, &self.work.path().join("data")) {
            server.stop().await.step(STOP)?;
        }
        Ok(())
    }
}

/// Records the size of the dataset the drill recovered, the yardstick of
/// its RTO projections: `pg_database_size` of `recovered` (the recovered
/// application database) and the bytes of the logical dump it was restored
/// from, if it was. Call after `drill.verified()`: it is not recovery work.
///
/// # Errors
/// [`DrillError::Step`](crate::drill::DrillError::Step) when the size cannot be read.
pub(super) async fn record_dataset(drill: &mut Drill, recovered: &ConnInfo, restored_dump: Option<u64>) -> Result<()> {
    const MEASURE: &str = "measure the recovered database's size";
    let mut conn = PgConnection::connect_with(&recovered.connect_options())
        .await
        .step(MEASURE)?;
    let bytes: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
        .fetch_one(&mut conn)
        .await
        .step(MEASURE)?;
    conn.close().await.step(MEASURE)?;
    drill.dataset_size(DatasetSize::new(bytes.max(0) as u64, restored_dump));
    Ok(())
}

/// What a point-in-time recovery moved: the base backup (downloaded and
/// verified) and the WAL it replayed, each in the part the library timed.
pub(super) fn moved_by_recovery(recovered: &crate::pitr::Recovered) -> [Moved; 2] {
    [
        Moved::bytes(recovered.base_backup.tar_bytes).within(recovered.download_and_verify),
        Moved::wal_bytes(recovered.wal_bytes_replayed).within(recovered.replay),
    ]
}

/// What `drillbook recover --json` reported moving: the base backup's bytes
/// and the WAL replayed, each in its own timed part when reported.
pub(super) fn moved_by_recover_command(report: &serde_json::Value) -> Vec<Moved> {
    let seconds = |name: &str| report[name].as_f64().and_then(|s| Duration::try_from_secs_f64(s).ok());
    let timed = |moved: Moved, part: Option<Duration>| match part {
        Some(part) => moved.within(part),
        None => moved,
    };
    let base = report["base_backup_bytes"]
        .as_u64()
        .map(|bytes| timed(Moved::bytes(bytes), seconds("download_and_verify_seconds")));
    let wal = report["wal_bytes_replayed"]
        .as_u64()
        .map(|bytes| timed(Moved::wal_bytes(bytes), seconds("replay_seconds")));
    base.into_iter().chain(wal).collect()
}

/// What `drillbook restore --json` reported moving: the dump downloaded,
/// the dump restored, and the rows verified against the manifest.
pub(super) fn moved_by_restore_command(report: &serde_json::Value) -> Vec<Moved> {
    let seconds = |name: &str| report[name].as_f64().and_then(|s| Duration::try_from_secs_f64(s).ok());
    let Some(dump) = report["manifest"]["dump"]["bytes"].as_u64() else {
        return Vec::new();
    };
    let rows: u64 = report["manifest"]["tables"]
        .as_object()
        .map(|tables| tables.values().filter_map(|t| t["rows"].as_u64()).sum())
        .unwrap_or(0);
    [
        ("download", Moved::bytes(dump)),
        ("restore", Moved::bytes(dump)),
        ("verify", Moved::rows(rows)),
    ]
    .into_iter()
    .filter_map(|(part, moved)| Some(moved.within(seconds(part)?)))
    .collect()
}

/// What `drillbook restore --table --json` reported moving: the dump
/// downloaded, then the table's rows restored into scratch and swapped in.
pub(super) fn moved_by_table_restore_command(report: &serde_json::Value) -> Vec<Moved> {
    let seconds = |name: &str| report[name].as_f64().and_then(|s| Duration::try_from_secs_f64(s).ok());
    let dump = report["backup"]["dump"]["bytes"].as_u64().map(Moved::bytes);
    let rows = report["rows_restored"].as_u64().map(Moved::rows);
    [("download", dump), ("scratch_restore", rows.clone()), ("replace", rows)]
        .into_iter()
        .filter_map(|(part, moved)| Some(moved?.within(seconds(part)?)))
        .collect()
}

/// What seeding the fixture ledger moved: its rows, every table's.
pub(super) fn moved_by_seed(seeded: &crate::fixtures::SeedSummary) -> [Moved; 1] {
    [Moved::rows(seeded.rows.iter().map(|(_, rows)| rows).sum())]
}
