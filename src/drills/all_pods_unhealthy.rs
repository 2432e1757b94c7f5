//! Decision matrix, "All pods unhealthy: rollback deployment, < 10 min".
//! The incident is a release whose image does not exist (every new pod
//! fails to start, the rollout stalls); recovery is `rollout undo` to the
//! previous revision and `rollout status` until complete.
//!
//! Needs a Kubernetes cluster (see `src/drills/pod_crash.rs` for the
//! settings): `#[ignore]`d here, FAILS when run without one. It patches the
//! named deployment: point it at a drill deployment of your own, never at
//! production.

use std::time::Duration;

use crate::drill::{Drill, DrillSummary, Result, StepContext};
use crate::k8s::rollout::Rollout;
use crate::k8s::{K8sError, Wait};
use crate::playbook::Scenario;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

pub async fn run() -> Result<DrillSummary> {
    let mut drill = super::steps::reported_drill("all_pods_unhealthy", Scenario::AllPodsUnhealthy)?;
    let outcome = story(&mut drill).await;
    drill.conclude(outcome)
}

async fn story(drill: &mut Drill) -> Result<()> {
    super::record_cluster_backend(drill)?;
    let client = super::kube_cluster().await?;
    let namespace = super::cluster_setting("DRILL_KUBE_NAMESPACE", "default");
    let name = super::cluster_setting("DRILL_KUBE_DEPLOYMENT", "immoflowme");
    let rollout = Rollout::new(client.clone(), &namespace, &name);

    const READ: &str = "read the deployment's container";
    let current = rollout.get().await.step(READ)?;
    let container = current
        .spec
        .as_ref()
        .and_then(|spec| spec.template.spec.as_ref())
        .and_then(|pod| pod.containers.first())
        .step(READ)?
        .name
        .clone();
    drill.incident(format!("release of a broken image to `{namespace}/{name}`"));
    // A release replaces pods, not data: nothing can be lost.
    drill.nothing_lost();
    let broken = json!({"spec": {"progressDeadlineSeconds": 60, "template": {"spec": {"containers": [
        {"name": container, "image": "registry.invalid/drillbook/broken:does-not-exist"}]}}}});
    let api: Api<Deployment> = Api::namespaced(client, &namespace);
    api.patch(&name, &PatchParams::default(), &Patch::Strategic(&broken))
        .await
        .step("release the broken image")?;
    // The broken rollout must stall (ProgressDeadlineExceeded) or time out.
    let stalled = rollout.wait_complete(Wait::new(Duration::from_secs(180))).await;
    drill.check(
        "broken release does not roll out",
        matches!(
            stalled,
            Err(K8sError::RolloutStalled { .. } | K8sError::RolloutTimeout { .. })
        ),
        format!("{stalled:?}"),
    );

    let undo = drill.phase("rollout undo", rollout.undo()).await;
    if let Ok(undo) = &undo {
        drill.property("rolled_back_to_revision", undo.to_revision);
    }
    let done = drill
        .phase("rollout status", rollout.wait_complete(Wait::new(drill.targets().rto)))
        .await;
    if undo.is_ok() && done.is_ok() {
        drill.verified();
    }
    Ok(())
}
