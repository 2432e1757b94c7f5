//! The playbook's RPO promise for streaming replication: 5 minutes.
//!
//! Like the data-center failover, but the link between the regions goes
//! down first: for a few seconds before the primary dies the standby
//! receives nothing ([`crate::failover::cut_replication`]). The measured RPO
//! must reflect that lag (it is at least the stall, the canaries written
//! during it are lost) and stay within the 5-minute target; the survivors
//! are a gap-free prefix. Runs on embedded and containers (a standby
//! container on the primary's network).

use std::time::Duration;

use crate::canary::CanaryWriter;
use crate::drill::{Drill, DrillSummary, Result, StepContext};
use crate::failover::{cut_replication, promote, replay_state};
use crate::playbook::Scenario;
use crate::time::format_duration;

const STALL: Duration = Duration::from_secs(3);

pub async fn run() -> Result<DrillSummary> {
    let mut drill = super::steps::reported_drill("rpo-streaming-replication", Scenario::DataCenterFailure)?
        .with_rpo_target(Duration::from_secs(5 * 60));
    let outcome = story(&mut drill).await;
    drill.conclude(outcome)
}

async fn story(drill: &mut Drill) -> Result<()> {
    drill.property("replication_stall_seconds", STALL.as_secs());
    let (mut env, standby) = super::steps::primary_with_standby(drill).await?;

    let canary = CanaryWriter::start(&env.source(), Duration::from_millis(5))
        .await
        .step("start the canary writer")?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    cut_replication(&standby, Duration::from_secs(30))
        .await
        .step("cut the replication link")?;
    let stalled_at = chrono::Utc::now();
    drill.event("replication link down: the standby receives nothing from here on");
    tokio::time::sleep(STALL).await;

    let incident = drill.incident(format!(
        "primary region lost while the standby lagged: {}",
        env.primary_loss()
    ));
    drill.step("destroy primary", env.destroy_primary()).await?;
    let canaries = canary.stop().await;
    let lag = replay_state(&standby).await.step("read the standby's replay state")?;
    let lag_seconds = lag
        .last_replayed_commit
        .map(|t| (incident - t).num_milliseconds() as f64 / 1000.0)
        .unwrap_or(f64::NAN);
    drill.property("standby_lag_at_failover_seconds", format!("{lag_seconds:.3}"));

    drill.step("promote standby", promote(&standby)).await?;
    let report = super::steps::verdict_on_promoted_standby(drill, &env, &standby, &canaries.committed).await?;
    let newest = report
        .newest_surviving
        .step("find the newest canary on the promoted standby")?;
    let rpo = drill.rpo().step("measure the RPO")?;
    let lost_in_stall = canaries.committed.iter().filter(|c| c.written_at > stalled_at).count();
    drill.check(
        "measured RPO reflects the standby's lag",
        rpo >= STALL && newest <= stalled_at,
        format!(
            "RPO {} with a {} stall; {lost_in_stall} canaries written during the stall",
            format_duration(rpo),
            format_duration(STALL)
        ),
    );
    drill.check(
        "every canary written during the stall is lost",
        report.acknowledged - report.surviving >= lost_in_stall && lost_in_stall > 0,
        format!(
            "{} lost, {lost_in_stall} written during the stall",
            report.acknowledged - report.surviving
        ),
    );

    env.cleanup().await.step("clean up the environment")?;
    Ok(())
}
