//! The playbook's RPO promise for WAL archiving: 1 hour.
//!
//! A primary archives WAL to S3 with `archive_timeout` set; a canary commits
//! every 5 ms. The primary is lost outright (SIGKILL, data directory
//! deleted; on containers, its container removed), so only S3 remains: the newest base backup plus every archived
//! segment is replayed to the end of the archive. The canaries written in the
//! segment that was still open are the loss, so the measured RPO must be
//! within `archive_timeout` plus the time to archive that one segment.

use std::path::Path;
use std::time::Duration;

use crate::canary::{CanaryWriter, check_canaries};
use crate::drill::{Drill, DrillSummary, Result, StepContext};
use crate::env::APP_DATABASE;
use crate::pitr::RecoveryTarget;
use crate::playbook::Scenario;
use crate::time::format_duration;
use crate::wal::WalArchive;

const ARCHIVE_TIMEOUT: Duration = Duration::from_secs(2);
/// Time to push the one segment the timeout closed (spawn + upload).
const ONE_SEGMENT_ALLOWANCE: Duration = Duration::from_secs(2);

pub async fn run() -> Result<DrillSummary> {
    run_with(&super::program()).await
}

/// [`run`] with the `drillbook` binary the server's `archive_command` and
/// `restore_command` call (in tests, `env!("CARGO_BIN_EXE_drillbook")`).
pub async fn run_with(program: &Path) -> Result<DrillSummary> {
    let mut drill = super::steps::reported_drill("rpo-wal-archiving", Scenario::CompleteInfrastructureLoss)?
        .with_rpo_target(Duration::from_secs(3600));
    let outcome = story(&mut drill, program).await;
    drill.conclude(outcome)
}

async fn story(drill: &mut Drill, program: &Path) -> Result<()> {
    drill.property("archive_timeout_seconds", ARCHIVE_TIMEOUT.as_secs());
    let (mut env, _) = super::steps::archiving_primary(drill, program, ARCHIVE_TIMEOUT).await?;

    let canary = CanaryWriter::start(&env.source(), Duration::from_millis(5))
        .await
        .step("start the canary writer")?;
    // Long enough for archive_timeout to close and archive a few segments.
    tokio::time::sleep(ARCHIVE_TIMEOUT * 3 + Duration::from_millis(1500)).await;
    drill.incident(match env.backend() {
        crate::env::Backend::Containers => "primary lost with its disks: its container removed",
        _ => "primary lost with its disks: postgres SIGKILLed, data directory deleted",
    });
    drill.step("destroy primary", env.destroy_primary()).await?;
    let canaries = canary.stop().await;
    let archived = WalArchive::new(env.store().clone())
        .list(None)
        .await
        .step("list the WAL archive")?;
    drill.property("archived_wal_files", archived.len());

    let recovered = drill
        .data_step(
            "recover from S3: base backup + every archived segment",
            env.recover(&RecoveryTarget::EndOfArchive),
            super::steps::moved_by_recovery,
        )
        .await?;
    let target = recovered.server.admin().with_database(APP_DATABASE);
    let report = drill
        .step(
            "canaries after recovery",
            check_canaries(&target, &canaries.committed, None),
        )
        .await?;
    drill.check(
        "surviving canaries are a gap-free prefix",
        report.clean(),
        format!("{report:?}"),
    );
    drill.verified();
    super::steps::record_dataset(drill, &target, None).await?;
    // Playbook section 7: resume backups, then the post-recovery checklist.
    super::post_recovery_checklist(
        drill,
        &target,
        Some((&env.bins, &recovered.server.admin(), env.store())),
    )
    .await?;
    super::steps::record_replay_end(drill, &recovered);
    super::steps::record_canaries(drill, &report)?;
    let rpo = drill.rpo().step("measure the RPO")?;
    drill.check(
        "loss within archive_timeout plus one segment",
        rpo <= ARCHIVE_TIMEOUT + ONE_SEGMENT_ALLOWANCE,
        format!(
            "RPO {}; bound {} + {}",
            format_duration(rpo),
            format_duration(ARCHIVE_TIMEOUT),
            format_duration(ONE_SEGMENT_ALLOWANCE)
        ),
    );

    const CLEANUP: &str = "clean up the environment";
    recovered.server.cleanup().await.step(CLEANUP)?;
    env.cleanup().await.step(CLEANUP)?;
    Ok(())
}
