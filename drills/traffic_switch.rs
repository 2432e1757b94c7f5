//! Playbook 6.1 + 6.3: after a restore, switch traffic to the recovered
//! (green) environment on the Istio VirtualService, smoke-test it and watch
//! the 5xx error rate; the switch is reverted if anything fails.
//!
//! Needs a Kubernetes cluster with Istio and the application: settings
//! `DRILL_KUBE_CONTEXT`, `DRILL_KUBE_NAMESPACE` (default `default`),
//! `DRILL_VIRTUAL_SERVICE` (default `immoflowme`), `DRILL_SWITCH_SUBSET`
//! (default `green`), `DRILL_APP_URL` (smoke tests), `DRILL_PROMETHEUS_URL`
//! and `DRILL_WATCH_WINDOW` (default `15m`). `#[ignore]`d here, FAILS when
//! run without them.

#[tokio::test]
#[ignore = "needs a Kubernetes cluster (DRILL_KUBE_CONTEXT or K3s): not available on this machine"]
async fn traffic_switch() {
    drillbook::drills::traffic_switch::run().await.assert_passed();
}
