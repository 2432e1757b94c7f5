//! Decision matrix: "DB corruption (full) — Point-in-time recovery — < 2 hours".
//!
//! The primary archives its WAL to S3 (`drillbook wal-push`) and has a base
//! backup there. While the application and a canary write, a bad migration
//! corrupts the ledger (charges tripled, audit rows deleted). The playbook's
//! checks detect it; the database is recovered to the moment before the
//! migration from the base backup plus archived WAL (`drillbook wal-fetch`),
//! and the drill proves every canary committed before that moment is there
//! and none after it.
//!
//! Runs on embedded and on containers (the primary and the recovered server
//! are containers there, with the `drillbook` binary mounted as their
//! `archive_command`/`restore_command`); not on staging, whose server the
//! drill cannot reconfigure or corrupt.

use std::path::Path;
use std::time::Duration;

use crate::canary::{CanaryWriter, check_canaries};
use crate::drill::{Drill, DrillSummary, Result, StepContext};
use crate::env::APP_DATABASE;
use crate::pitr::RecoveryTarget;
use crate::playbook::PlaybookAnswers;
use crate::playbook::Scenario;
use crate::wal::switch_and_wait_archived;
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
    const FLUSH: &str = "flush the primary's last WAL to the archive";
    let mut admin = PgConnection::connect_with(&env.admin().connect_options())
        .await
        .step(FLUSH)?;
    drill
        .step(FLUSH, switch_and_wait_archived(&mut admin, Duration::from_secs(120)))
        .await?;
    admin.close().await.step(FLUSH)?;

    let recovered = drill
        .step(
            "point-in-time recovery to just before the migration",
            env.recover(&RecoveryTarget::Time(incident)),
        )
        .await?;
    drill.property("wal_bytes_replayed", recovered.wal_bytes_replayed);
    drill.property("replay_seconds", format!("{:.3}", recovered.replay.as_secs_f64()));
    drill.property("recovery_stop", recovered.stop_line.clone().unwrap_or_default());
    let target = recovered.server.admin().with_database(APP_DATABASE);
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
    drill.verified();
    // Playbook section 7: resume backups, then the post-recovery checklist.
    super::post_recovery_checklist(
        drill,
        &target,
        Some((&env.bins, &recovered.server.admin(), env.store())),
    )
    .await?;
    super::steps::record_replay_end(drill, &recovered);
    super::steps::record_canaries(drill, &report)?;
    drill.property("canaries_acknowledged", report.acknowledged);
    drill.property("canaries_surviving", report.surviving);

    const CLEANUP: &str = "clean up the environment";
    recovered.server.cleanup().await.step(CLEANUP)?;
    env.destroy_primary().await.step(CLEANUP)?;
    env.cleanup().await.step(CLEANUP)?;
    Ok(())
}
