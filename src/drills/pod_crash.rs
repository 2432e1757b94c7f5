//! Decision matrix, "Single pod crash: auto-heal (K8s), < 2 min": one ready
//! pod of the deployment is deleted and the drill measures how long until
//! as many pods are ready again, then that the rollout is complete.
//!
//! Needs a Kubernetes cluster: `DRILL_KUBE_CONTEXT` (or `[kube] context` in
//! `drill.toml` on staging) names the kube context
//! (staging, or a K3s in containers), `DRILL_KUBE_NAMESPACE` (default
//! `default`), `DRILL_KUBE_DEPLOYMENT` (default `immoflowme`) and
//! `DRILL_KUBE_SELECTOR` (default `app=immoflowme`). Without one it FAILS
//! with that message; it is `#[ignore]`d so that only `--run-ignored` runs
//! it, where a cluster exists.

use std::time::Duration;

use crate::drill::{Drill, DrillSummary, Result};
use crate::k8s::rollout::Rollout;
use crate::k8s::{Wait, pods};
use crate::playbook::Scenario;

pub async fn run() -> Result<DrillSummary> {
    let mut drill = super::steps::reported_drill("pod_crash", Scenario::SinglePodCrash)?;
    let outcome = story(&mut drill).await;
    drill.conclude(outcome)
}

async fn story(drill: &mut Drill) -> Result<()> {
    super::record_cluster_backend(drill)?;
    let client = super::kube_cluster().await?;
    let namespace = super::cluster_setting("DRILL_KUBE_NAMESPACE", "default");
    let deployment = super::cluster_setting("DRILL_KUBE_DEPLOYMENT", "immoflowme");
    let selector = super::cluster_setting("DRILL_KUBE_SELECTOR", "app=immoflowme");
    let target = drill.targets().rto;

    drill.incident(format!("one pod of `{namespace}/{selector}` deleted"));
    // A pod holds no data: nothing can be lost.
    drill.nothing_lost();
    let heal = drill
        .phase(
            "auto-heal",
            pods::delete_one_and_wait(client.clone(), &namespace, &selector, Wait::new(target)),
        )
        .await;
    if let Ok(heal) = &heal {
        drill.property("deleted_pod", &heal.deleted);
        drill.property("time_to_ready_s", heal.time_to_ready.as_secs_f64());
    }
    let rollout = Rollout::new(client, &namespace, &deployment);
    let status = drill
        .phase(
            "rollout status",
            rollout.wait_complete(Wait::new(Duration::from_secs(60))),
        )
        .await;
    if heal.is_ok() && status.is_ok() {
        drill.verified();
    }
    Ok(())
}
