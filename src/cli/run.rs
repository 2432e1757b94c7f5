//! `drillbook run`: the built-in drills, from the binary alone.

use std::time::Duration;

use anyhow::bail;
use clap::Args;

use super::exit;
use crate::drill::{DrillSummary, error_chain};
use crate::drills::{self, BuiltinDrill};
use crate::env::Backend;
use crate::report::history::HistoryRecord;
use crate::report::projection::{NotProjectable, Projection, ProjectionSize, SizeRequest, project};
use crate::report::schedule::Cadence;
use crate::time::format_duration;

const EXAMPLES: &str = "\
Examples:
  drillbook run --list                               # the built-in drills and their cadence
  drillbook run                                      # this backend's drills (no cluster needed)
  DRILL_ENV=staging DRILL_CONFIG=drill.toml drillbook run   # the drills safe on staging
  drillbook run complete_infrastructure_loss --json  # one drill, its summary as JSON on stdout
  drillbook run --cadence weekly                     # the playbook's weekly backup verification
  drillbook run complete_infrastructure_loss --project-size 500GB   # and its RTO projected to 500 GB
  DRILL_KUBE_CONTEXT=staging drillbook run pod_crash # a cluster drill, against your own deployment

Each phase is logged to stderr as it runs; the summary table (or --json) goes to stdout.
--project-size projects each drill's RTO to that size from the measured throughput of its data-moving
phases (linear scaling, stated in the output); a projection over the target counts as a failure.
Exit codes: 0 every drill passed, 1 a drill failed or a projection missed its target, 2 could not run
(e.g. an unknown drill name).";

#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub(super) struct RunArgs {
    /// Drills to run, by name (`complete_infrastructure_loss` or `drill_complete_infrastructure_loss`).
    /// Default: every drill that needs no Kubernetes cluster and runs on
    /// the backend `DRILL_ENV` names (`--list` shows which run where).
    #[arg(value_name = "DRILL")]
    drills: Vec<String>,
    /// Run every drill of this cadence (playbook section 8) that runs on this backend.
    #[arg(long, value_name = "daily|weekly|monthly|quarterly", conflicts_with = "drills")]
    cadence: Option<Cadence>,
    /// Print the summaries as a JSON array on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// List the built-in drills with their cadence and exit.
    #[arg(long)]
    list: bool,
    /// Project each drill's RTO to this database size (`500GB`, `1.5TiB`; B, KB, MB, GB, TB, KiB..., any
    /// case), or to the newest logical backup in the staging bucket (`newest-backup`, DRILL_ENV=staging).
    #[arg(long, value_name = "SIZE|newest-backup")]
    project_size: Option<SizeRequest>,
}

/// One drill's outcome: its summary, or why it ended without one.
struct Outcome {
    name: &'static str,
    result: Result<DrillSummary, String>,
}

impl Outcome {
    fn passed(&self) -> bool {
        self.result.as_ref().is_ok_and(|summary| summary.verdict.passed())
    }
}

impl RunArgs {
    pub(super) async fn run(self) -> anyhow::Result<u8> {
        if self.list {
            for drill in drills::all() {
                let cluster = if drill.needs_cluster {
                    "  (needs a Kubernetes cluster)"
                } else {
                    ""
                };
                let backends: Vec<_> = drill.backends.iter().map(|b| b.name()).collect();
                println!(
                    "{:<30} {:<10} {:<32} {}{cluster}",
                    drill.name,
                    drill.cadence.as_str(),
                    backends.join(","),
                    drill.scenario
                );
            }
            return Ok(exit::SUCCESS);
        }
        let selected = self.select()?;
        // Resolved before the drills run: a bad size or an unreachable
        // bucket should not cost a drill run.
        let size = match &self.project_size {
            Some(request) => Some(super::report::resolve_project_size(request).await?),
            None => None,
        };
        let mut outcomes = Vec::with_capacity(selected.len());
        for drill in selected {
            eprintln!("==> drill {} ({}, {})", drill.name, drill.cadence, drill.scenario);
            let outcome = run_one(drill).await;
            match &outcome.result {
                Ok(summary) => eprintln!("==> drill {}: {}", drill.name, summary.verdict),
                Err(cause) => eprintln!("==> drill {}: failed: {cause}", drill.name),
            }
            outcomes.push(outcome);
        }
        let projections: Vec<(HistoryRecord, Result<Projection, NotProjectable>)> = match &size {
            Some(size) => outcomes
                .iter()
                .filter_map(|o| o.result.as_ref().ok())
                .map(|summary| {
                    let record = HistoryRecord::from_summary(summary);
                    let projection = project(&record, size);
                    (record, projection)
                })
                .collect(),
            None => Vec::new(),
        };
        if self.json {
            let summaries: Vec<serde_json::Value> = outcomes
                .iter()
                .map(|outcome| {
                    let mut value = json_of(outcome);
                    let projection = projections.iter().find(|(r, _)| r.drill == outcome_drill_name(outcome));
                    if let (Some(size), Some((_, projection)), Some(object)) =
                        (&size, projection, value.as_object_mut())
                    {
                        object.insert("projection".to_owned(), projection_json(size, projection));
                    }
                    value
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&summaries)?);
        } else {
            print_table(&outcomes);
            if let Some(size) = &size {
                println!();
                super::report::print_projections(size, projections.iter().map(|(r, p)| (r, p)));
            }
        }
        let projected_within = projections
            .iter()
            .all(|(_, p)| p.as_ref().map_or(true, Projection::within_target));
        Ok(if outcomes.iter().all(Outcome::passed) && projected_within {
            exit::SUCCESS
        } else {
            exit::FAILED
        })
    }

    fn select(&self) -> anyhow::Result<Vec<BuiltinDrill>> {
        let all = drills::all();
        if let Some(cadence) = self.cadence {
            // The cadence's drills, cluster drills included (the schedule
            // runs them), that run on this backend.
            return Ok(on_this_backend(drills::of_cadence(cadence))?);
        }
        if self.drills.is_empty() {
            return Ok(on_this_backend(all.iter().copied().filter(|d| !d.needs_cluster))?);
        }
        let mut selected = Vec::new();
        for name in &self.drills {
            match drills::find(name) {
                Some(drill) => selected.push(drill),
                None => {
                    let known: Vec<_> = all.iter().map(|d| d.name).collect();
                    bail!(
                        "failed to find a built-in drill named `{name}`: use one of {} (`drillbook run --list`)",
                        known.join(", ")
                    );
                }
            }
        }
        Ok(selected)
    }
}

/// The drills of `candidates` that run on `DRILL_ENV`'s backend; each one
/// left out is named on stderr (a drill named explicitly runs anyway, and
/// fails saying why).
fn on_this_backend(candidates: impl Iterator<Item = BuiltinDrill>) -> Result<Vec<BuiltinDrill>, crate::env::EnvError> {
    let backend = Backend::from_env()?;
    let (runnable, elsewhere): (Vec<_>, Vec<_>) = candidates.partition(|d| d.runs_on(backend));
    for drill in elsewhere {
        let backends: Vec<_> = drill.backends.iter().map(|b| b.name()).collect();
        eprintln!(
            "==> not run on the {} backend: {} (runs on {}; name it to see why)",
            backend.name(),
            drill.name,
            backends.join(", ")
        );
    }
    Ok(runnable)
}

/// Runs one drill in its own task. A drill that stops on an error is a
/// failed drill with that cause (its report already says so); a panicking
/// drill, the safety net, is one too.
async fn run_one(drill: BuiltinDrill) -> Outcome {
    let result = match tokio::spawn((drill.run)()).await {
        Ok(Ok(summary)) => Ok(summary),
        Ok(Err(error)) => Err(error_chain(&error)),
        Err(error) if error.is_panic() => {
            let payload = error.into_panic();
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "the drill panicked".to_owned());
            Err(format!("the drill panicked: {message}"))
        }
        Err(error) => Err(format!("the drill's task ended: {error}")),
    };
    Outcome {
        name: drill.name,
        result,
    }
}

/// The name a drill's record carries (its summary's), else the registry's.
fn outcome_drill_name(outcome: &Outcome) -> &str {
    outcome.result.as_ref().map_or(outcome.name, |s| s.name.as_str())
}

/// A projection in `--json`: the size, the figures, the verdict and the assumption.
fn projection_json(size: &ProjectionSize, projection: &Result<Projection, NotProjectable>) -> serde_json::Value {
    match projection {
        Ok(p) => serde_json::json!({
            "size_bytes": size.bytes,
            "size": size.label(),
            "measured_size_bytes": p.measured_size,
            "measured_rto_seconds": p.measured_rto,
            "projected_rto_seconds": p.projected_rto,
            "fixed_seconds": p.fixed_seconds,
            "target_seconds": p.target,
            "within_target": p.within_target(),
            "breakdown": p.breakdown(),
            "assumption": size.assumption(),
        }),
        Err(why) => serde_json::json!({
            "size_bytes": size.bytes,
            "size": size.label(),
            "not_projected": why.to_string(),
        }),
    }
}

fn json_of(outcome: &Outcome) -> serde_json::Value {
    match &outcome.result {
        Ok(summary) => {
            let mut value = serde_json::to_value(summary).unwrap_or(serde_json::Value::Null);
            if let Some(object) = value.as_object_mut() {
                object.insert("drill".to_owned(), outcome.name.into());
                object.insert("passed".to_owned(), summary.verdict.passed().into());
            }
            value
        }
        Err(message) => serde_json::json!({
            "drill": outcome.name,
            "passed": false,
            "verdict": { "failures": [message] },
        }),
    }
}

fn vs(measured: Option<Duration>, target: Option<Duration>) -> String {
    let measured = measured.map_or_else(|| "-".to_owned(), format_duration);
    match target {
        Some(target) => format!("{measured} / {}", format_duration(target)),
        None => measured,
    }
}

/// RPO against target, with what bounds it and the rows lost where counted.
fn rpo_text(summary: &crate::drill::DrillSummary) -> String {
    let mut text = vs(summary.rpo, summary.targets.rpo);
    let detail: Vec<String> = summary
        .recovery_point
        .map(|p| p.source.to_string())
        .into_iter()
        .chain(summary.rows_lost.map(|n| format!("{n} rows lost")))
        .collect();
    if !detail.is_empty() {
        text.push_str(&format!(" ({})", detail.join(", ")));
    }
    text
}

fn print_table(outcomes: &[Outcome]) {
    println!("{:<30} {:<8} {:<24} RPO / TARGET", "DRILL", "VERDICT", "RTO / TARGET");
    for outcome in outcomes {
        let (verdict, rto, rpo) = match &outcome.result {
            Ok(s) => (
                if s.verdict.passed() { "passed" } else { "FAILED" },
                vs(s.rto, Some(s.targets.rto)),
                rpo_text(s),
            ),
            Err(_) => ("FAILED", "-".to_owned(), "-".to_owned()),
        };
        println!("{:<30} {verdict:<8} {rto:<24} {rpo}", outcome.name);
    }
    for outcome in outcomes.iter().filter(|o| !o.passed()) {
        match &outcome.result {
            Ok(summary) => println!("\n{}: {}", outcome.name, summary.verdict),
            Err(message) => println!("\n{}: failed: {message}", outcome.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The safety net: a drill that panics anyway is a failed drill with
    /// the panic's message, not a crashed `drillbook run`.
    #[tokio::test]
    async fn a_panicking_drill_is_a_failed_drill_with_its_message() {
        let drill = BuiltinDrill {
            run: || Box::pin(async { panic!("the harness broke") }),
            ..drills::all()[0]
        };
        let outcome = run_one(drill).await;
        assert!(!outcome.passed());
        assert_eq!(
            outcome.result.err().as_deref(),
            Some("the drill panicked: the harness broke")
        );
    }
}
