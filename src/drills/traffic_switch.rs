//! Playbook 6.1 + 6.3: after a restore, switch traffic to the recovered
//! (green) environment on the Istio VirtualService, smoke-test it and watch
//! the 5xx error rate; the switch is reverted if anything fails.
//!
//! Needs a Kubernetes cluster with Istio and the application: settings
//! `DRILL_KUBE_CONTEXT` (on staging also `[kube] context` in `drill.toml`),
//! `DRILL_KUBE_NAMESPACE` (default `default`),
//! `DRILL_VIRTUAL_SERVICE` (default `immoflowme`), `DRILL_SWITCH_SUBSET`
//! (default `green`), `DRILL_APP_URL` (smoke tests; on staging also `[app] base_url`), `DRILL_PROMETHEUS_URL`
//! and `DRILL_WATCH_WINDOW` (default `15m`). `#[ignore]`d here, FAILS when
//! run without them.

use crate::drill::DrillSummary;
use crate::http::{HttpChecker, RetryPolicy, WatchOptions};
use crate::k8s::istio::switch_traffic;
use crate::playbook::Scenario;
use crate::time::parse_duration;

fn missing(name: &str) -> String {
    format!(
        "{name} is not set: the traffic-switch drill needs a cluster with the application (see \
         src/drills/traffic_switch.rs); it never passes without one"
    )
}

fn required(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{}", missing(name)))
}

pub async fn run() -> DrillSummary {
    let app_url = crate::env::cluster_target()
        .unwrap_or_else(|e| panic!("{e}"))
        .app_base_url
        .unwrap_or_else(|| {
            panic!(
                "{}",
                missing("DRILL_APP_URL (or [app] base_url in drill.toml on staging)")
            )
        });
    let prometheus = required("DRILL_PROMETHEUS_URL");
    let client = super::kube_cluster().await;
    let namespace = super::cluster_setting("DRILL_KUBE_NAMESPACE", "default");
    let name = super::cluster_setting("DRILL_VIRTUAL_SERVICE", "immoflowme");
    let subset = super::cluster_setting("DRILL_SWITCH_SUBSET", "green");
    let window = parse_duration(&super::cluster_setting("DRILL_WATCH_WINDOW", "15m")).unwrap();
    let checker = HttpChecker::new(RetryPolicy::default());
    let mut drill = super::steps::reported_drill("traffic_switch", Scenario::CompleteInfrastructureLoss).unwrap();

    drill.incident("traffic must move to the restored environment");
    let switch = drill
        .phase(
            "switch VirtualService (6.1)",
            switch_traffic(client.clone(), &namespace, &name, &subset),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let smoke = drill.phase("smoke tests (6.3)", checker.smoke(&app_url)).await;
    let options = WatchOptions {
        window,
        ..WatchOptions::default()
    };
    let watch = match &smoke {
        Ok(_) => Some(
            drill
                .phase(
                    "5xx error-rate watch (6.1)",
                    checker.watch_error_rate(&prometheus, &options),
                )
                .await,
        ),
        Err(_) => None,
    };
    match watch {
        Some(Ok(watch)) => {
            drill.property("max_error_rate", format!("{:?}", watch.max_rate));
            drill.verified();
        }
        _ => {
            drill
                .phase("revert the switch", switch.revert(client))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
    drill.finish().expect("drill report written")
}
