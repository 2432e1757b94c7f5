//! JUnit XML for a drill: one `<testsuite>` named after the drill.
//!
//! Each phase and check is a testcase (`phase: <name>`, `check: <name>`;
//! a data-moving phase's `<system-out>` holds one `moved <amount> <unit>`
//! line per amount, its throughput),
//! followed by `RTO within target` and, when an RPO target is set,
//! `RPO within target`. Every failure in the verdict makes one of these
//! testcases fail, so CI's red/green matches [`DrillSummary::assert_passed`].
//! The measurements travel as `<properties>` on the suite (`rto_seconds`,
//! `rto_target_seconds`, ...: see [`HARNESS_PROPERTIES`]) and the timeline
//! as the suite's `<system-out>`.
//!
//! Written with quick-junit rather than junit-report because quick-junit
//! carries `<properties>`, which junit-report cannot, and the measured RTO
//! and RPO must reach CI as properties.
//!
//! [`HARNESS_PROPERTIES`]: crate::drill::HARNESS_PROPERTIES

use std::path::Path;
use std::time::Duration;
use std::{fs, io};

use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

use crate::drill::{Check, DrillSummary, Phase};
use crate::time::{format_duration, timestamp};

/// Renders the summary as a JUnit document.
pub fn render(summary: &DrillSummary) -> String {
    let mut report = Report::new("drillbook");
    report.add_test_suite(test_suite(summary));
    report.to_string().expect("serializing into memory has no I/O to fail")
}

/// Renders the summary to `path`, creating its parent directories.
///
/// # Errors
///
/// Any error creating the directories or writing the file.
pub fn write(summary: &DrillSummary, path: &Path) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(path, render(summary))
}

fn test_suite(summary: &DrillSummary) -> TestSuite {
    let aborted = summary
        .aborted
        .as_deref()
        .map(|reason| TestCase::new("drill completed", failure(reason)));
    let phases = summary.phases.iter().map(phase_case);
    let checks = summary.checks.iter().map(check_case);
    let rpo = summary.targets.rpo.map(|target| rpo_case(summary, target));
    let cases = aborted
        .into_iter()
        .chain(phases)
        .chain(checks)
        .chain([rto_case(summary)])
        .chain(rpo)
        .map(|mut case| {
            case.set_classname(&summary.name);
            case
        });
    let timeline: String = summary.timeline.iter().map(|event| format!("{event}\n")).collect();

    let mut suite = TestSuite::new(&summary.name);
    suite
        .set_timestamp(summary.started_at)
        .set_time(summary.duration)
        .add_properties(properties(summary))
        .add_test_cases(cases)
        .set_system_out(timeline);
    suite
}

fn properties(summary: &DrillSummary) -> Vec<Property> {
    let targets = &summary.targets;
    let measured = [
        ("scenario", Some(summary.scenario.slug().to_owned())),
        ("action", Some(summary.scenario.action().to_owned())),
        ("rto_seconds", summary.rto.map(seconds)),
        ("rto_target_seconds", Some(seconds(targets.rto))),
        ("rpo_seconds", summary.rpo.map(seconds)),
        ("rpo_target_seconds", targets.rpo.map(seconds)),
        ("incident_at", summary.incident.as_ref().map(|i| timestamp(i.at))),
        ("verified_at", summary.verified_at.map(timestamp)),
        ("recovery_point_at", summary.recovery_point.map(|p| timestamp(p.at))),
        (
            "recovery_point_source",
            summary.recovery_point.map(|p| p.source.slug().to_owned()),
        ),
        ("rows_lost", summary.rows_lost.map(|n| n.to_string())),
        (
            "dataset_database_bytes",
            summary.dataset.map(|d| d.database_bytes.to_string()),
        ),
        (
            "dataset_dump_bytes",
            summary.dataset.and_then(|d| d.dump_bytes).map(|n| n.to_string()),
        ),
        // This drillbook records what data-moving phases move: a phase
        // without `moved` lines moved nothing (older reports cannot say so).
        ("throughput_recorded", Some("true".to_owned())),
    ];
    let measured = measured
        .into_iter()
        .filter_map(|(name, value)| Some(Property::new(name, value?)));
    let own = summary
        .properties
        .iter()
        .map(|(name, value)| Property::new(name, value));
    measured.chain(own).collect()
}

fn phase_case(phase: &Phase) -> TestCase {
    let status = match &phase.error {
        Some(error) => failure(error),
        None => TestCaseStatus::success(),
    };
    let mut case = TestCase::new(format!("phase: {}", phase.name), status);
    case.set_timestamp(phase.started_at).set_time(phase.duration);
    // One `moved ...` line per amount: the throughput the monthly report
    // reads back (`Moved::parse_line`) to project the RTO.
    let moved: Vec<String> = phase.moved.iter().map(ToString::to_string).collect();
    if !moved.is_empty() {
        case.set_system_out(moved.join("\n"));
    }
    case
}

fn check_case(check: &Check) -> TestCase {
    let name = format!("check: {}", check.name);
    let mut case = match (check.passed, check.detail.as_str()) {
        (false, "") => TestCase::new(name, failure("check failed")),
        (false, detail) => TestCase::new(name, failure(detail)),
        (true, detail) => {
            let mut case = TestCase::new(name, TestCaseStatus::success());
            if !detail.is_empty() {
                case.set_system_out(detail);
            }
            case
        }
    };
    case.set_timestamp(check.at);
    case
}

fn rto_case(summary: &DrillSummary) -> TestCase {
    let failures = summary.rto_failures();
    let failure = (!failures.is_empty()).then(|| failures.join("; "));
    let measured = measured_vs_target("RTO", summary.rto, summary.targets.rto);
    let mut case = judged("RTO within target", failure, measured);
    if let Some(rto) = summary.rto {
        case.set_time(rto);
    }
    case
}

fn rpo_case(summary: &DrillSummary, target: Duration) -> TestCase {
    let measured = measured_vs_target("RPO", summary.rpo, target);
    judged("RPO within target", summary.rpo_failure(), measured)
}

/// A target's testcase: fails with `failure`, or passes showing what was measured.
fn judged(name: &str, failure_message: Option<String>, measured: String) -> TestCase {
    match failure_message {
        Some(message) => TestCase::new(name, failure(&message)),
        None => {
            let mut case = TestCase::new(name, TestCaseStatus::success());
            case.set_system_out(measured);
            case
        }
    }
}

fn measured_vs_target(what: &str, measured: Option<Duration>, target: Duration) -> String {
    let measured = measured.map_or_else(|| "not measured".to_owned(), format_duration);
    format!("{what} {measured}, target {}", format_duration(target))
}

fn failure(message: &str) -> TestCaseStatus {
    let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
    status.set_message(message);
    status
}

/// Seconds with millisecond precision, as JUnit's own `time` attributes.
fn seconds(duration: Duration) -> String {
    format!("{:.3}", duration.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use quick_junit::{Report, TestCaseStatus};

    use super::*;
    use crate::drill::HARNESS_PROPERTIES;
    use crate::drill::testing::{Fixture, fixture, t0};
    use crate::playbook::Scenario;

    const MINUTE: Duration = Duration::from_mins(1);
    const HOUR: Duration = Duration::from_hours(1);

    /// A complete-infrastructure-loss drill on a fixed clock: two phases,
    /// one passing and one failing check, RTO 3h 59m, RPO 20m against 1h.
    async fn full_restore() -> Fixture {
        let mut fx = fixture("full_restore", Scenario::CompleteInfrastructureLoss);
        fx.drill = fx.drill.with_rpo_target(HOUR);
        let clock = fx.clock.clone();
        fx.drill.property("dataset_rows", 48_213);
        let backup = fx.drill.phase("backup", async {
            clock.advance(5 * MINUTE);
            Ok::<_, String>(())
        });
        backup.await.unwrap();
        fx.clock.advance(20 * MINUTE);
        fx.drill.incident("dropped the ledger database");
        fx.drill.recovery_point(crate::drill::RecoveryPoint::new(
            crate::drill::RecoverySource::Snapshot,
            t0() + 5 * MINUTE,
        ));
        let restore = fx.drill.data_phase(
            "restore",
            async {
                clock.advance(3 * HOUR);
                Ok::<_, String>(86_400_000)
            },
            |&bytes| [crate::drill::Moved::bytes(bytes)],
        );
        restore.await.unwrap();
        fx.clock.advance(59 * MINUTE);
        fx.drill
            .check("row counts match manifest", true, "7 tables, 48213 rows");
        fx.drill
            .check("4.1 broken links = 0", false, "3 invoice lines without invoice");
        fx.drill.verified();
        fx.drill
            .dataset_size(crate::drill::DatasetSize::new(345_600_000, Some(86_400_000)));
        fx
    }

    fn parse(xml: &str) -> quick_junit::TestSuite {
        let mut report = Report::deserialize_from_str(xml).expect("valid JUnit");
        assert_eq!(report.test_suites.len(), 1);
        report.test_suites.remove(0)
    }

    fn failure_message(status: &TestCaseStatus) -> Option<&str> {
        match status {
            TestCaseStatus::NonSuccess { message, .. } => message.as_deref(),
            _ => None,
        }
    }

    #[tokio::test]
    async fn rendered_report_reads_back_as_the_drill() {
        let fx = full_restore().await;
        let suite = parse(&render(&fx.drill.summary()));

        assert_eq!(suite.name.as_str(), "full_restore");
        assert_eq!((suite.tests, suite.failures), (6, 1));
        let cases: Vec<(&str, Option<&str>)> = suite
            .test_cases
            .iter()
            .map(|case| (case.name.as_str(), failure_message(&case.status)))
            .collect();
        assert_eq!(
            cases,
            [
                ("phase: backup", None),
                ("phase: restore", None),
                ("check: row counts match manifest", None),
                ("check: 4.1 broken links = 0", Some("3 invoice lines without invoice")),
                ("RTO within target", None),
                ("RPO within target", None),
            ]
        );
        assert_eq!(suite.test_cases[1].time, Some(3 * HOUR));

        let properties: Vec<(&str, &str)> = suite
            .properties
            .iter()
            .map(|p| (p.name.as_str(), p.value.as_str()))
            .collect();
        assert_eq!(
            properties,
            [
                ("scenario", "complete-infrastructure-loss"),
                ("action", "Full restore from backup"),
                ("rto_seconds", "14340.000"),
                ("rto_target_seconds", "14400.000"),
                ("rpo_seconds", "1200.000"),
                ("rpo_target_seconds", "3600.000"),
                ("incident_at", "2026-05-01T08:25:00.000Z"),
                ("verified_at", "2026-05-01T12:24:00.000Z"),
                ("recovery_point_at", "2026-05-01T08:05:00.000Z"),
                ("recovery_point_source", "snapshot"),
                ("dataset_database_bytes", "345600000"),
                ("dataset_dump_bytes", "86400000"),
                ("throughput_recorded", "true"),
                ("dataset_rows", "48213"),
            ]
        );
        let restore = suite.test_cases[1].system_out.as_ref().map(|out| out.as_str());
        assert_eq!(restore, Some("moved 86400000 bytes"));
        let out = suite.system_out.expect("timeline in system-out").into_string();
        assert!(out.contains("incident: dropped the ledger database"), "{out}");
    }

    #[tokio::test]
    async fn raw_xml_has_the_elements_ci_reads() {
        let fx = full_restore().await;
        let xml = render(&fx.drill.summary());
        for element in [
            r#"<testsuite name="full_restore" tests="6" disabled="0" errors="0" failures="1""#,
            r#"<property name="rto_seconds" value="14340.000"/>"#,
            r#"<testcase name="phase: restore" classname="full_restore" timestamp="2026-05-01T08:25:00.000+00:00" time="10800.000">"#,
            r#"<failure message="3 invoice lines without invoice"/>"#,
            "<system-out>",
        ] {
            assert!(xml.contains(element), "{element:?} missing from\n{xml}");
        }
    }

    #[test]
    fn unmet_targets_and_missing_marks_fail_their_testcases() {
        let mut fx = fixture("too_slow", Scenario::DbConnectionExhaustion);
        fx.drill = fx.drill.with_rpo_target(MINUTE);
        let suite = parse(&render(&fx.drill.summary()));
        let messages: Vec<_> = suite
            .test_cases
            .iter()
            .map(|case| (case.name.as_str(), failure_message(&case.status).unwrap_or("passed")))
            .collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert_eq!(messages[0].0, "RTO within target");
        assert!(messages[0].1.contains("no incident was recorded"), "{messages:?}");
        assert!(messages[0].1.contains("never verified healthy"), "{messages:?}");
        assert_eq!(messages[1].0, "RPO within target");
        assert!(messages[1].1.contains("no RPO was measured"), "{messages:?}");
    }

    #[test]
    fn rto_over_target_reports_measured_and_target() {
        let mut fx = fixture("slow", Scenario::SinglePodCrash);
        fx.drill.incident("killed the pod");
        fx.clock.advance(3 * MINUTE);
        fx.drill.verified();
        let suite = parse(&render(&fx.drill.summary()));
        let rto = &suite.test_cases[0];
        assert_eq!(
            failure_message(&rto.status),
            Some("RTO 3m 00.0s exceeds target 2m 00.0s (Single pod crash: Auto-heal (K8s))")
        );
        assert_eq!(rto.time, Some(3 * MINUTE));
        assert!(!suite.properties.iter().any(|p| p.name.as_str() == "rpo_target_seconds"));
    }

    #[test]
    fn aborted_drills_fail_a_testcase_of_their_own() {
        let mut fx = fixture("aborted", Scenario::SinglePodCrash);
        fx.drill.incident("killed the pod");
        fx.drill.verified();
        let mut summary = fx.drill.summary();
        summary.aborted = Some("the drill panicked without calling `Drill::finish`".to_owned());
        let suite = parse(&render(&summary));
        assert_eq!(suite.test_cases[0].name.as_str(), "drill completed");
        assert_eq!(failure_message(&suite.test_cases[0].status), summary.aborted.as_deref());
    }

    #[test]
    fn harness_properties_are_the_ones_rendered() {
        let mut fx = fixture("all_properties", Scenario::SinglePodCrash);
        fx.drill = fx.drill.with_rpo_target(MINUTE);
        fx.drill.incident("killed the pod");
        fx.drill.recovery_point(crate::drill::RecoveryPoint::new(
            crate::drill::RecoverySource::Canary,
            t0(),
        ));
        fx.drill.rows_lost(0);
        fx.drill.verified();
        fx.drill.dataset_size(crate::drill::DatasetSize::new(1, Some(1)));
        let names: Vec<_> = properties(&fx.drill.summary())
            .into_iter()
            .map(|p| p.name.into_string())
            .collect();
        assert_eq!(names, HARNESS_PROPERTIES);
    }

    #[test]
    fn write_creates_parent_directories() {
        let fx = fixture("nested", Scenario::SinglePodCrash);
        let path = fx.reports.path().join("a/b/nested.xml");
        write(&fx.drill.summary(), &path).unwrap();
        assert!(fs::read_to_string(&path).unwrap().contains(r#"name="nested""#));
    }

    #[tokio::test]
    async fn snapshot() {
        // The manual clock makes every time in the report fixed: nothing to redact.
        let fx = full_restore().await;
        let xml = render(&fx.drill.summary());
        insta::with_settings!({snapshot_path => concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots")}, {
            insta::assert_snapshot!("junit_full_restore", xml);
        });
    }
}
