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

use crate::drill::{Drill, DrillError, DrillSummary, Result, StepContext};
use crate::http::{HttpChecker, RetryPolicy, WatchOptions};
use crate::k8s::istio::switch_traffic;
use crate::playbook::Scenario;
use crate::time::parse_duration;

fn missing(name: &str) -> DrillError {
    DrillError::step(
        "read the drill's settings",
        format!(
            "{name} is not set: the traffic-switch drill needs a cluster with the application (see \
             src/drills/traffic_switch.rs); it never passes without one"
        ),
    )
}

fn required(name: &str) -> Result<String> {
    std::env::var(name).map_err(|_| missing(name))
}

pub async fn run() -> Result<DrillSummary> {
    let mut drill = super::steps::reported_drill("traffic_switch", Scenario::CompleteInfrastructureLoss)?;
    let outcome = story(&mut drill).await;
    drill.conclude(outcome)
}

async fn story(drill: &mut Drill) -> Result<()> {
    super::record_cluster_backend(drill)?;
    let app_url = crate::env::cluster_target()
        .step("read the drill's settings")?
        .app_base_url
        .ok_or_else(|| missing("DRILL_APP_URL (or [app] base_url in drill.toml on staging)"))?;
    let prometheus = required("DRILL_PROMETHEUS_URL")?;
    let client = super::kube_cluster().await?;
    let namespace = super::cluster_setting("DRILL_KUBE_NAMESPACE", "default");
    let name = super::cluster_setting("DRILL_VIRTUAL_SERVICE", "immoflowme");
    let subset = super::cluster_setting("DRILL_SWITCH_SUBSET", "green");
    let window =
        parse_duration(&super::cluster_setting("DRILL_WATCH_WINDOW", "15m")).step("read DRILL_WATCH_WINDOW")?;
    let checker = HttpChecker::new(RetryPolicy::default());

    drill.incident("traffic must move to the restored environment");
    // Moving traffic moves no data: nothing can be lost.
    drill.nothing_lost();
    let switch = drill
        .step(
            "switch VirtualService (6.1)",
            switch_traffic(client.clone(), &namespace, &name, &subset),
        )
        .await?;
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
            drill.step("revert the switch", switch.revert(client)).await?;
        }
    }
    Ok(())
}
