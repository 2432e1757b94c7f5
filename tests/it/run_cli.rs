//! `drillbook run`, through the real binary: the built-in drills ship in it.

use std::process::Command;

use crate::common::BIN;

#[test]
fn list_names_every_drill_with_its_cadence() {
    let out = Command::new(BIN).args(["run", "--list"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    for drill in drillbook::drills::all() {
        let line = stdout
            .lines()
            .find(|line| line.split_whitespace().next() == Some(drill.name))
            .unwrap_or_else(|| panic!("`{}` missing from --list:\n{stdout}", drill.name));
        assert!(line.contains(drill.cadence.as_str()), "{line}");
    }
    assert_eq!(stdout.lines().count(), drillbook::drills::all().len(), "{stdout}");
}

#[test]
fn unknown_drill_exits_2_naming_the_known_ones() {
    let out = Command::new(BIN).args(["run", "no_such_drill"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("no_such_drill"), "{stderr}");
    for drill in drillbook::drills::all() {
        assert!(stderr.contains(drill.name), "`{}` not named in:\n{stderr}", drill.name);
    }
}

#[test]
fn a_drill_that_stops_is_a_failed_drill_with_its_cause() {
    // pod_crash stops at once without a Kubernetes context.
    let reports = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["run", "pod_crash"])
        .env_remove("DRILL_KUBE_CONTEXT")
        .env("DRILL_REPORT_DIR", reports.path().join("reports"))
        .env("DRILL_HISTORY_DIR", reports.path().join("history"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let row = stdout
        .lines()
        .find(|l| l.starts_with("pod_crash"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(row.contains("FAILED"), "{row}");
    assert!(stdout.contains("DRILL_KUBE_CONTEXT is not set"), "{stdout}");
    // The drill exists before its setup fails, so its report says why.
    let junit = std::fs::read_to_string(reports.path().join("reports/pod_crash.xml")).unwrap();
    assert!(
        junit.contains(
            "the drill stopped: step `connect to the Kubernetes cluster` failed: DRILL_KUBE_CONTEXT is not set"
        ),
        "{junit}"
    );
}

#[test]
fn runs_complete_infrastructure_loss_with_json_summary() {
    let reports = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["run", "complete_infrastructure_loss", "--json"])
        .env("DRILL_REPORT_DIR", reports.path().join("reports"))
        .env("DRILL_HISTORY_DIR", reports.path().join("history"))
        .env_remove("DRILL_ENV")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    assert!(
        stderr.contains("drillbook restore: newest backup from S3"),
        "phases are reported as they run:\n{stderr}"
    );
    let summaries: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let summaries = summaries.as_array().expect("a JSON array");
    assert_eq!(summaries.len(), 1);
    let summary = &summaries[0];
    assert_eq!(summary["drill"], "complete_infrastructure_loss");
    assert_eq!(summary["passed"], true);
    assert_eq!(summary["verdict"]["failures"], serde_json::json!([]));
    assert!(!summary["rto"].is_null(), "RTO measured: {summary}");
    assert!(!summary["targets"]["rto"].is_null(), "{summary}");
}

#[test]
fn a_cadence_on_staging_runs_only_the_drills_safe_there_and_names_the_others() {
    // A drill.toml that does not exist: each selected drill fails at once
    // (the point here is which drills were selected, not running them).
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["run", "--cadence", "monthly", "--json"])
        .env("DRILL_ENV", "staging")
        .env("DRILL_CONFIG", dir.path().join("missing-drill.toml"))
        .env("DRILL_REPORT_DIR", dir.path().join("reports"))
        .env("DRILL_HISTORY_DIR", dir.path().join("history"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let summaries: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let ran: Vec<&str> = summaries.iter().filter_map(|s| s["drill"].as_str()).collect();
    let staging = drillbook::env::Backend::Staging;
    let monthly: Vec<_> = drillbook::drills::all()
        .iter()
        .filter(|d| d.cadence == drillbook::report::schedule::Cadence::Monthly)
        .collect();
    let expected: Vec<&str> = monthly.iter().filter(|d| d.runs_on(staging)).map(|d| d.name).collect();
    assert_eq!(ran, expected);
    assert!(!expected.is_empty() && expected.len() < monthly.len());
    for drill in monthly.iter().filter(|d| !d.runs_on(staging)) {
        assert!(
            stderr.contains(&format!("not run on the staging backend: {}", drill.name)),
            "{} not named:\n{stderr}",
            drill.name
        );
    }
    assert!(
        stderr.contains("missing-drill.toml"),
        "the config problem is named:\n{stderr}"
    );
}

#[test]
fn project_size_prints_the_projection_with_its_assumption() {
    // pod_crash stops at once without a Kubernetes context: nothing to
    // project, but the table and its assumption are printed.
    let reports = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["run", "pod_crash", "--project-size", "500 GiB"])
        .env_remove("DRILL_KUBE_CONTEXT")
        .env("DRILL_REPORT_DIR", reports.path().join("reports"))
        .env("DRILL_HISTORY_DIR", reports.path().join("history"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    for needle in ["AT 536.9 GB", "Assumption: linear scaling", "S = 536.9 GB."] {
        assert!(stdout.contains(needle), "{needle:?} missing from\n{stdout}");
    }
}

#[test]
fn a_bad_project_size_is_refused_before_any_drill_runs() {
    let out = Command::new(BIN)
        .args(["run", "complete_infrastructure_loss", "--project-size", "lots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("`lots` is not a size"), "{stderr}");
    assert!(!stderr.contains("==> drill"), "no drill ran: {stderr}");
}
