//! Decision matrix: "Data center failure — Failover to standby region — < 1 hour",
//! and the playbook's RPO promise for streaming replication (5 minutes).
//!
//! A hot standby (`pg_basebackup` + streaming replication: a second cluster
//! on embedded, a second container on the primary's Docker network on
//! containers) follows the primary while the application writes and a
//! canary commits a row every 5 ms. The primary is destroyed mid-write
//! (SIGKILL and data directory deleted; on containers, its container
//! removed, which cuts it off the network); the standby is promoted. RTO runs from the kill to a
//! promoted standby that passes the playbook's checks; RPO is the kill time
//! minus the newest canary that survived on the standby.

use std::time::Duration;

use crate::canary::CanaryWriter;
use crate::drill::{Drill, DrillSummary, Result, StepContext};
use crate::env::APP_DATABASE;
use crate::failover::{promote, replay_state};
use crate::playbook::PlaybookAnswers;
use crate::playbook::Scenario;
use crate::workload::write_activity;

pub async fn run() -> Result<DrillSummary> {
    let mut drill = super::steps::reported_drill("data-center-failure", Scenario::DataCenterFailure)?
        .with_rpo_target(Duration::from_secs(5 * 60));
    let outcome = story(&mut drill).await;
    drill.conclude(outcome)
}

async fn story(drill: &mut Drill) -> Result<()> {
    let (mut env, standby) = super::steps::primary_with_standby(drill).await?;

    // Write load: the application's writes and the canary, until the kill.
    let source = env.source();
    let canary = CanaryWriter::start(&source, Duration::from_millis(5))
        .await
        .step("start the canary writer")?;
    let app_load = tokio::spawn({
        let source = source.clone();
        // One request every 20 ms: steady traffic that keeps the ledger
        // within the playbook's 4.4 imbalance threshold for a few seconds.
        // Runs until a write fails: the primary is gone.
        async move {
            loop {
                if let Err(e) = write_activity(&source, 1).await {
                    return e;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(3)).await;

    let incident = drill.incident(format!("primary region lost under write load: {}", env.primary_loss()));
    drill.step("destroy primary", env.destroy_primary()).await?;
    // A container is removed through the Docker API, so the primary may
    // commit until the removal lands, a little after the incident mark.
    let primary_gone = chrono::Utc::now();
    let canaries = canary.stop().await;
    let load = app_load.await.step("stop the application's write load")?;
    let last_ack = canaries
        .committed
        .last()
        .map(|c| c.acked_at)
        .step("read the last acknowledged canary")?;
    drill.check(
        "write load was running when the primary died",
        incident - last_ack < chrono::Duration::milliseconds(500),
        format!("application writes ended with: {load}; last canary acknowledged {last_ack}"),
    );
    let before = replay_state(&standby).await.step("read the standby's replay state")?;
    drill.property(
        "standby_replayed_lsn_at_failover",
        before.replayed_lsn.unwrap_or_default(),
    );

    let promotion = drill.step("promote standby", promote(&standby)).await?;
    drill.property("promote_ms", promotion.as_millis());
    let target = standby.with_database(APP_DATABASE);
    let answers = drill
        .step(
            "playbook checks (3.2 step 4, 4.1-4.5)",
            PlaybookAnswers::collect(&target),
        )
        .await?;
    let problems = answers.problems();
    drill.check("playbook checks pass", problems.is_empty(), problems.join("; "));
    let report = super::steps::verdict_on_promoted_standby(drill, &env, &standby, &canaries.committed).await?;
    let newest = report
        .newest_surviving
        .step("find the newest canary on the promoted standby")?;
    drill.property("canaries_acknowledged", report.acknowledged);
    drill.property("canaries_surviving", report.surviving);
    drill.check(
        "newest surviving canary precedes the primary's loss",
        newest <= primary_gone,
        format!("{newest} vs incident {incident}, primary gone at {primary_gone}"),
    );

    env.cleanup().await.step("clean up the environment")?;
    Ok(())
}
