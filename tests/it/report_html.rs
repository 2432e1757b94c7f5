//! The monthly report as people see it: three months of drills recorded by
//! the real harness (on a manual clock), `drillbook report` run on their
//! history and JUnit, the HTML rendered by headless Chromium, and the
//! rendered DOM checked for the drill names, RTO/RPO figures and verdicts.
//! Also checks the merged JUnit that CI displays.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use drillbook::playbook::Scenario;
use drillbook::time::ManualClock;

const MINUTE: Duration = Duration::from_mins(1);

/// Runs one drill on a manual clock starting at `at`: incident, recovery of
/// `rto`, newest surviving data `rpo` before the incident.
fn drill(dirs: &Path, name: &str, scenario: Scenario, at: &str, rto: Duration, rpo: Duration) {
    let start: DateTime<Utc> = at.parse().unwrap();
    let clock = ManualClock::new(start);
    let mut drill = crate::common::drill_in(dirs, name, scenario)
        .with_clock(Arc::new(clock.clone()))
        .with_rpo_target(5 * MINUTE);
    drill.property("dataset_profile", "small");
    drill.event("seeded 20000 audit rows");
    clock.advance(MINUTE);
    let incident = drill.incident(format!("{name}: primary lost"));
    drill.recovery_point(drillbook::drill::RecoveryPoint::new(
        drillbook::drill::RecoverySource::Snapshot,
        incident - chrono::Duration::from_std(rpo).unwrap(),
    ));
    clock.advance(rto);
    drill.check("4.1 broken links = 0", true, "0 broken links");
    drill.verified();
    drill.finish().unwrap();
}

fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(output) = Command::new("sh").arg("-c").arg(format!("command -v {name}")).output()
            && output.status.success()
        {
            return PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        }
    }
    panic!(
        "headless Chromium is needed to render the drill report and was not found on PATH \
         (tried chromium, chromium-browser, google-chrome); install it: `apt-get install -y chromium`"
    );
}

fn chromium_args(profile: &Path) -> Vec<String> {
    [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    .iter()
    .map(ToString::to_string)
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect()
}

/// The DOM after Chromium parsed and laid out the page, with tags removed.
fn rendered_text(html: &Path, profile: &Path) -> String {
    let output = Command::new(chromium())
        .args(chromium_args(profile))
        .arg("--dump-dom")
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success() && dom.contains("</html>"),
        "chromium failed to render {}: {}\n{dom}",
        html.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    dom
}

#[test]
#[ignore = "needs Chromium: run in the browser lane (.ci/run: --run-ignored only -E 'test(/^report_html::/)')"]
fn the_html_report_renders_with_the_numbers_it_should() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = tmp.path();
    // Two earlier months: history only (their JUnit files were overwritten by later runs).
    drill(
        dirs,
        "complete_infrastructure_loss",
        Scenario::CompleteInfrastructureLoss,
        "2026-03-03T02:00:00Z",
        20 * MINUTE,
        2 * MINUTE,
    );
    drill(
        dirs,
        "data_center_failure",
        Scenario::DataCenterFailure,
        "2026-04-01T02:00:00Z",
        9 * MINUTE,
        MINUTE,
    );
    drill(
        dirs,
        "complete_infrastructure_loss",
        Scenario::CompleteInfrastructureLoss,
        "2026-04-07T02:00:00Z",
        15 * MINUTE,
        3 * MINUTE,
    );
    // This month: one pass, one RTO miss, one RPO miss.
    drill(
        dirs,
        "complete_infrastructure_loss",
        Scenario::CompleteInfrastructureLoss,
        "2026-05-05T02:00:00Z",
        12 * MINUTE + Duration::from_millis(34_500),
        90 * Duration::from_secs(1),
    );
    drill(
        dirs,
        "db_corruption_single_table",
        Scenario::DbCorruptionSingleTable,
        "2026-05-12T02:00:00Z",
        41 * MINUTE,
        30 * Duration::from_secs(1),
    );
    drill(
        dirs,
        "data_center_failure",
        Scenario::DataCenterFailure,
        "2026-05-19T02:00:00Z",
        7 * MINUTE,
        8 * MINUTE,
    );

    let mut junit: Vec<PathBuf> = std::fs::read_dir(dirs.join("reports"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    junit.sort();
    assert_eq!(junit.len(), 3, "one JUnit file per drill, the newest run");
    let out = dirs.join("out");
    let status = Command::new(crate::common::BIN)
        .args(["report", "--month", "2026-05", "--trend-months", "3"])
        .arg("--history")
        .arg(dirs.join("history"))
        .arg("--out")
        .arg(&out)
        .arg("--junit")
        .args(&junit)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1), "two drills failed this month");

    let html = out.join("drill-report-2026-05.html");
    let source = std::fs::read_to_string(&html).unwrap();
    for external in ["<script", "<link", "src=\"http", "href=\"http", "url("] {
        assert!(
            !source.contains(external),
            "the report must be self-contained, found {external:?}"
        );
    }
    let dom = rendered_text(&html, &dirs.join("chromium-profile"));

    assert!(
        dom.contains(r#"<span class="verdict failed" id="verdict">FAILED</span>"#),
        "verdict"
    );
    assert!(
        dom.contains("3 runs of 3 drills in May 2026; 2 failed: db_corruption_single_table, data_center_failure."),
        "summary sentence"
    );
    // The drills table: each run once (history and JUnit merged), measured vs target.
    assert_eq!(dom.matches(r##"<tr><td><a href="#run-"##).count(), 3, "one row per run");
    for row in [
        "<code>complete_infrastructure_loss</code></a></td><td>Complete infrastructure loss</td><td>Full restore from backup</td><td class=\"num ok\">12m 34.5s / 4h 00m 00.0s</td><td class=\"num ok\">1m 30.0s / 5m 00.0s</td><td class=\"ok\">passed</td>",
        "<code>db_corruption_single_table</code></a></td><td>DB corruption (single table)</td><td>Restore table from backup</td><td class=\"num miss\">41m 00.0s / 30m 00.0s</td><td class=\"num ok\">30.0s / 5m 00.0s</td><td class=\"miss\">failed</td>",
        "<code>data_center_failure</code></a></td><td>Data center failure</td><td>Failover to standby region</td><td class=\"num ok\">7m 00.0s / 1h 00m 00.0s</td><td class=\"num miss\">8m 00.0s / 5m 00.0s</td><td class=\"miss\">failed</td>",
    ] {
        assert!(dom.contains(row), "row missing: {row}");
    }
    for text in [
        "RTO 41m 00.0s exceeds target 30m 00.0s",
        "RPO 8m 00.0s exceeds target 5m 00.0s",
        // Timelines and checks of each run.
        "incident: db_corruption_single_table: primary lost",
        "verified healthy",
        "4.1 broken links = 0",
        "Post-recovery checks",
        // The trend charts: titles, bars of earlier months from history, targets.
        "RTO and RPO per scenario, 2026-03 to 2026-05",
        "<title>RTO: Complete infrastructure loss</title>",
        "<title>2026-03: 20m 00.0s</title>",
        "<title>2026-04: 15m 00.0s</title>",
        "<title>2026-05: 12m 34.5s</title>",
        "<title>RPO: Data center failure</title>",
        "target 4h 00m 00.0s",
        "backend embedded",
        "dataset small",
    ] {
        assert!(dom.contains(text), "{text:?} missing from the rendered report");
    }

    // A screenshot renders too (a blank or failed page would be tiny).
    let png = dirs.join("report.png");
    let shot = Command::new(chromium())
        .args(chromium_args(&dirs.join("chromium-profile")))
        .arg(format!("--screenshot={}", png.display()))
        .arg("--window-size=1200,1600")
        .arg(format!("file://{}", html.display()))
        .output()
        .unwrap();
    assert!(shot.status.success(), "{}", String::from_utf8_lossy(&shot.stderr));
    let bytes = std::fs::read(&png).unwrap();
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 20_000,
        "screenshot {} bytes",
        bytes.len()
    );
    if let Some(keep) = std::env::var_os("DRILL_REPORT_SCREENSHOT") {
        std::fs::copy(&png, keep).unwrap();
    }

    // The merged JUnit: every run a suite with measured values and targets as
    // properties, a failing testcase for every missed target.
    let xml = std::fs::read_to_string(out.join("junit-2026-05.xml")).unwrap();
    let report = quick_junit::Report::deserialize_from_str(&xml).unwrap();
    let suites: Vec<&str> = report.test_suites.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        suites,
        [
            "complete_infrastructure_loss",
            "db_corruption_single_table",
            "data_center_failure"
        ]
    );
    assert_eq!(report.failures, 2, "{xml}");
    for property in [
        r#"<property name="rto_seconds" value="2460.000"/>"#,
        r#"<property name="rto_target_seconds" value="1800.000"/>"#,
        r#"<property name="rpo_seconds" value="480.000"/>"#,
        r#"<property name="rpo_target_seconds" value="300.000"/>"#,
        r#"<property name="backend" value="embedded"/>"#,
        r#"<property name="month" value="2026-05"/>"#,
    ] {
        assert!(xml.contains(property), "{property} missing from\n{xml}");
    }
    assert!(xml.contains("RTO 41m 00.0s exceeds target 30m 00.0s"), "{xml}");
    assert!(xml.contains("RPO 8m 00.0s exceeds target 5m 00.0s"), "{xml}");
}

/// The projection as people see it: `drillbook report --project-size 500GB`
/// over two months of restore drills that recorded their throughput, the
/// page rendered by Chromium: the projection table and the assumption, the
/// RTO-by-size chart with its target line, and the monthly charts on a
/// logarithmic axis where a 7.6 s measurement, a 4-hour target and a 9-hour
/// projection are all visible.
#[test]
#[ignore = "needs Chromium: run in the browser lane (.ci/run: --run-ignored only -E 'test(/^report_html::/)')"]
fn the_projection_renders_with_its_chart_and_both_values_visible() {
    use crate::report_cli::DataRun;
    use drillbook::drill::Moved;
    let tmp = tempfile::tempdir().unwrap();
    let dirs = tmp.path();
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let restore = |at: &'static str, moving_ms: u64| DataRun {
        name: "complete_infrastructure_loss",
        scenario: Scenario::CompleteInfrastructureLoss,
        at,
        fixed: Duration::from_secs(2),
        moving: Duration::from_millis(moving_ms),
        moved: Some(Moved::bytes(20_000_000)),
        database_bytes: 80_000_000,
        dump_bytes: Some(20_000_000),
    };
    runtime.block_on(async {
        restore("2026-04-07T02:00:00Z", 4_000).record_in(dirs).await;
        restore("2026-05-05T02:00:00Z", 5_600).record_in(dirs).await;
        DataRun {
            name: "db_corruption_single_table",
            scenario: Scenario::DbCorruptionSingleTable,
            at: "2026-05-12T02:00:00Z",
            fixed: Duration::from_secs(3),
            moving: Duration::from_millis(200),
            moved: Some(Moved::rows(20_000)),
            database_bytes: 80_000_000,
            dump_bytes: Some(20_000_000),
        }
        .record_in(dirs)
        .await;
    });
    let out = dirs.join("out");
    let output = Command::new(crate::common::BIN)
        .args([
            "report",
            "--month",
            "2026-05",
            "--trend-months",
            "2",
            "--project-size",
            "500GB",
        ])
        .arg("--history")
        .arg(dirs.join("history"))
        .arg("--out")
        .arg(&out)
        .env("DRILL_REPORT_DIR", dirs.join("reports"))
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(1),
        "the restore's projection misses: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let html = out.join("drill-report-2026-05.html");
    let dom = rendered_text(&html, &dirs.join("chromium-profile"));
    for text in [
        "RTO projected to 500 GB",
        "Assumption: linear scaling",
        "pg_database_size",
        // The table: measured, projected, target, verdict, throughput, break-even.
        "<td class=\"num\">7.6s</td><td class=\"num miss\">9h 43m 22.0s</td><td class=\"num\">4h 00m 00.0s</td><td class=\"miss\">MISSES target</td><td>restore: 20 MB at 3.6 MB/s</td><td class=\"num\">205.7 GB</td>",
        "<td class=\"num\">3.2s</td><td class=\"num ok\">20m 53.0s</td><td class=\"num\">30m 00.0s</td><td class=\"ok\">within target</td><td>restore: 20,000 rows at 100,000 rows/s</td>",
        // The RTO-by-size chart: title, break-even, the measured and projected points.
        "<title>complete_infrastructure_loss: projected RTO by database size</title>",
        "projected RTO by database size; target 4h 00m 00.0s",
        "reaches the target at 205.7 GB",
        "<title>measured 7.6s at 80 MB</title>",
        "<title>projected 9h 43m 22.0s at 500 GB</title>",
        // The monthly chart: both bars of each month, and the log axis.
        "<title>2026-04: 6.0s</title>",
        "<title>2026-04: projected 6h 56m 42.0s</title>",
        "<title>2026-05: 7.6s</title>",
        "<title>2026-05: projected 9h 43m 22.0s</title>",
        "Logarithmic scale",
        ">1 h</text>",
        ">10 s</text>",
        // The phases of a run carry their throughput.
        "20 MB (3.6 MB/s)",
    ] {
        assert!(dom.contains(text), "{text:?} missing from the rendered report");
    }

    // Both values visible: on the chart of May, the measured bar is tens of
    // pixels high (a linear axis up to 9.7 h drew it at under a pixel) and
    // the projected bar reaches past the target line.
    let svg = |class: &str| -> Vec<f64> {
        dom.match_indices(&format!("<rect class=\"{class}\""))
            .map(|(at, _)| {
                let rest = &dom[at..];
                let height = rest.split("height=\"").nth(1).unwrap();
                height.split('"').next().unwrap().parse::<f64>().unwrap()
            })
            .collect()
    };
    let measured = svg("measured");
    let projected = svg("projected");
    assert!(!measured.is_empty() && !projected.is_empty(), "bars drawn");
    assert!(
        measured.iter().all(|h| *h >= 20.0),
        "measured bars visible: {measured:?}"
    );
    assert!(
        projected.iter().all(|h| *h > measured[0]),
        "{projected:?} vs {measured:?}"
    );

    let png = dirs.join("projection.png");
    let shot = Command::new(chromium())
        .args(chromium_args(&dirs.join("chromium-profile")))
        .arg(format!("--screenshot={}", png.display()))
        .arg("--window-size=1200,2200")
        .arg(format!("file://{}", html.display()))
        .output()
        .unwrap();
    assert!(shot.status.success(), "{}", String::from_utf8_lossy(&shot.stderr));
    assert!(std::fs::read(&png).unwrap().len() > 20_000, "a rendered page");
    if let Some(keep) = std::env::var_os("DRILL_PROJECTION_SCREENSHOT") {
        std::fs::copy(&png, keep).unwrap();
    }
}
