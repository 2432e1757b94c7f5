//! Decision matrix: "DB corruption (full) — Point-in-time recovery — < 2 hours".
//!
//! The primary archives its WAL to S3 (`drillbook wal-push`) and has a base
//! backup there. While the application and a canary write, a bad migration
//! corrupts the ledger (charges tripled, audit rows deleted). The playbook's
//! checks detect it. Then the operator's path, through the real binary:
//! `drillbook recover --to-time <before the migration> --pause` into a data
//! directory, `drillbook verify` and the playbook's checks on the paused,
//! read-only copy, the canaries (every one committed before that moment is
//! there, none after it), then `drillbook recover --promote` and the
//! post-recovery checklist on the promoted server.
//!
//! Runs on embedded and on containers (there the primary is a container
//! with the `drillbook` binary mounted as its `archive_command`; `recover`
//! runs where the operator is, a server from this machine's binaries
//! replaying from the containers' S3); not on staging, whose server the
//! drill cannot reconfigure or corrupt.

use std::path::Path;
use std::time::Duration;

use crate::canary::{CanaryWriter, check_canaries};
use crate::drill::{Drill, DrillSummary, Result, StepContext};
use crate::env::APP_DATABASE;
use crate::playbook::PlaybookAnswers;
use crate::playbook::Scenario;
use crate::workload::write_activity;
use sqlx::{Connection, PgConnection};

pub async fn run() -> Result<DrillSummary> {
    run_with(&super::program()).await
}

/// [`run`] with the `drillbook` binary the server's `archive_command` and
/// `restore_command` call (in tests, `env!("CARGO_BIN_EXE_drillbook")`).
pub async fn run_with(program: &Path) -> Result<DrillSummary> {
    let mut drill = super::steps::reported_drill("db-corruption-full", Scenario::DbCorruptionFull)?
        .with_rpo_target(Duration::from_secs(3600));
    let outcome = story(&mut drill, program).await;
    drill.conclude(outcome)
}

async fn story(drill: &mut Drill, program: &Path) -> Result<()> {
    let (mut env, _) = super::steps::archiving_primary(drill, program, Duration::from_secs(60)).await?;

    let source = env.source();
    let canary = CanaryWriter::start(&source, Duration::from_millis(5))
        .await
        .step("start the canary writer")?;
    drill.step("application writes", write_activity(&source, 20)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let incident = drill.incident("bad migration corrupts the ledger: charges tripled, audit rows deleted");
    const MIGRATE: &str = "run the bad migration";
    let mut conn = PgConnection::connect_with(&source.connect_options())
        .await
        .step(MIGRATE)?;
    sqlx::raw_sql(
        "BEGIN;
         ALTER TABLE audit_logs DISABLE TRIGGER USER;
         UPDATE invoice_lines SET amount = amount * 3 WHERE line_type = 'charge';
         DELETE FROM audit_logs WHERE id % 7 = 3;
         ALTER TABLE audit_logs ENABLE TRIGGER USER;
         COMMIT;",
    )
    .execute(&mut conn)
    .await
    .step(MIGRATE)?;
    conn.close().await.step(MIGRATE)?;
    // The application keeps writing on top of the corrupted data for a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let detected = drill
        .step("playbook checks on the primary", PlaybookAnswers::collect(&source))
        .await?;
    drill.check(
        "corruption detected by the playbook's checks",
        !detected.problems().is_empty(),
        detected.problems().join("; "),
    );
    let canaries = canary.stop().await;
    super::steps::flush_wal_to_archive(drill, &env).await?;

    // The operator's path (playbook 3.3): `drillbook recover --pause` into a
    // data directory, inspect and verify the paused copy, then `--promote`.
    const RECOVER: &str = "drillbook recover --to-time <before the migration> --pause";
    let dir = super::steps::RecoveryDir::create(RECOVER)?;
    let (pgdata_arg, bucket) = (dir.pgdata(), env.store().config().location());
    let incident_arg = incident.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let recovered = drill
        .data_step(
            RECOVER,
            super::steps::operator_command(
                program,
                env.store(),
                &[
                    "recover",
                    "--bucket",
                    &bucket,
                    "--pgdata",
                    &pgdata_arg,
                    "--to-time",
                    &incident_arg,
                    "--pause",
                ],
            ),
            super::steps::moved_by_recover_command,
        )
        .await?;
    let outcome = inspect_and_promote(drill, program, &env, &pgdata_arg, &recovered, &canaries, incident).await;
    let removed = dir.remove(&env).await;
    outcome?;
    removed?;

    const CLEANUP: &str = "clean up the environment";
    env.destroy_primary().await.step(CLEANUP)?;
    env.cleanup().await.step(CLEANUP)?;
    Ok(())
}

/// The paused recovery checked as an operator would, promoted with the
/// operator's command, then the post-recovery checklist on it.
async fn inspect_and_promote(
    drill: &mut Drill,
    program: &Path,
    env: &crate::env::ArchivingEnvironment,
    pgdata: &str,
    recovered: &serde_json::Value,
    canaries: &crate::canary::CanaryLog,
    incident: chrono::DateTime<chrono::Utc>,
) -> Result<()> {
    drill.property("wal_bytes_replayed", &recovered["wal_bytes_replayed"]);
    drill.property("replay_seconds", &recovered["replay_seconds"]);
    drill.property("recovery_stop", recovered["recovery_stop"].as_str().unwrap_or_default());
    drill.check(
        "recovery paused at the target, read-only",
        recovered["state"] == "paused",
        recovered.to_string(),
    );
    let admin = super::steps::RecoveryDir::admin(env, recovered)?;
    let target = admin.with_database(APP_DATABASE);
    let target_url = target.url();
    drill
        .step(
            "drillbook verify on the paused recovery (read-only)",
            super::steps::operator_answer(
                program,
                env.store(),
                &["verify"],
                &[("DATABASE_URL", &target_url)],
                &[super::steps::EXIT_SUCCESS],
            ),
        )
        .await?;
    let answers = drill
        .step(
            "playbook checks (3.2 step 4, 4.1-4.5)",
            PlaybookAnswers::collect(&target),
        )
        .await?;
    let problems = answers.problems();
    drill.check("playbook checks pass", problems.is_empty(), problems.join("; "));
    let report = drill
        .step(
            "canaries against the recovery target",
            check_canaries(&target, &canaries.committed, Some(incident)),
        )
        .await?;
    drill.check(
        "every canary before the target present, none after",
        report.clean() && report.surviving > 0,
        format!("{report:?}"),
    );
    let promoted = drill
        .step(
            "drillbook recover --promote",
            super::steps::operator_command(program, env.store(), &["recover", "--pgdata", pgdata, "--promote"]),
        )
        .await?;
    drill.check(
        "promoted onto a new timeline",
        promoted["state"] == "promoted" && promoted["timeline"].as_u64() > recovered["timeline"].as_u64(),
        promoted.to_string(),
    );
    drill.verified();
    super::steps::record_dataset(drill, &target, None).await?;
    // Playbook section 7: resume backups, then the post-recovery checklist.
    super::post_recovery_checklist(drill, &target, Some((&env.bins, &admin, env.store()))).await?;
    if let Some(at) = recovered["last_replayed_commit"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    {
        drill.recovery_point(crate::drill::RecoveryPoint::new(
            crate::drill::RecoverySource::ReplayEnd,
            at.with_timezone(&chrono::Utc),
        ));
    }
    super::steps::record_canaries(drill, &report)?;
    drill.property("canaries_acknowledged", report.acknowledged);
    drill.property("canaries_surviving", report.surviving);
    Ok(())
}
