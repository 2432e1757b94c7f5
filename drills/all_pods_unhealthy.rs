//! Decision matrix, "All pods unhealthy: rollback deployment, < 10 min".
//! The incident is a release whose image does not exist (every new pod
//! fails to start, the rollout stalls); recovery is `rollout undo` to the
//! previous revision and `rollout status` until complete.
//!
//! Needs a Kubernetes cluster (see `drills/pod_crash.rs` for the
//! settings): `#[ignore]`d here, FAILS when run without one. It patches the
//! named deployment: point it at a drill deployment of your own, never at
//! production.

#[tokio::test]
#[ignore = "needs a Kubernetes cluster (DRILL_KUBE_CONTEXT or K3s): not available on this machine"]
async fn all_pods_unhealthy() {
    drillbook::drills::all_pods_unhealthy::run().await.assert_passed();
}
