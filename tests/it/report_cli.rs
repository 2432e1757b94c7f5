//! `drillbook report` on bad input: history from an older version, a
//! corrupt history file, a month with no drills, a missing JUnit input.
//! Each runs the real binary against its own temporary directories.

use std::path::Path;
use std::process::{Command, Output};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `drillbook report --out <dir>/out ARGS` with the default JUnit dir
/// pointed at an empty directory, so nothing from a real drill run leaks in.
fn report(dir: &Path, args: &[&str]) -> Run {
    let empty = dir.join("no-junit");
    std::fs::create_dir_all(&empty).unwrap();
    let output: Output = Command::new(crate::common::BIN)
        .arg("report")
        .arg("--out")
        .arg(dir.join("out"))
        .args(args)
        .env("DRILL_REPORT_DIR", &empty)
        .env_remove("DRILL_HISTORY_DIR")
        .output()
        .expect("run drillbook");
    Run {
        code: output.status.code().expect("exited"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join("out").join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn history_from_an_older_version_still_reads() {
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history");
    std::fs::create_dir_all(&history).unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/report_fixtures/history-v0.jsonl");
    std::fs::copy(&fixture, history.join("2026-03.jsonl")).unwrap();

    let run = report(
        dir.path(),
        &["--month", "2026-03", "--history", history.to_str().unwrap()],
    );
    // One of the two v0 runs failed its RTO target: exit 1, not a crash (2).
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        !run.stderr.contains("warning"),
        "v0 lines must not be skipped: {}",
        run.stderr
    );
    let md = read(dir.path(), "drill-report-2026-03.md");
    for needle in [
        "**Verdict: FAILED**",
        "| `complete_infrastructure_loss` | Complete infrastructure loss | Full restore from backup | 12m 34.5s / 4h 00m 00.0s | 1h 00m 00.0s / no target | passed |",
        "| `db_corruption_single_table` | DB corruption (single table) | Restore table from backup | 41m 00.0s / 30m 00.0s |",
        "No timeline was recorded (older history format).",
    ] {
        assert!(md.contains(needle), "{needle:?} missing from\n{md}");
    }
    let junit = read(dir.path(), "junit-2026-03.xml");
    let report = quick_junit::Report::deserialize_from_str(&junit).unwrap();
    assert_eq!(report.test_suites.len(), 2);
    let slow = &report.test_suites[1];
    assert_eq!(slow.name.as_str(), "db_corruption_single_table");
    assert_eq!(slow.failures, 1);
    assert!(
        junit.contains(r#"<property name="rto_seconds" value="2460.000"/>"#),
        "{junit}"
    );
    assert!(
        junit.contains(r#"<failure message="RTO 41m 00.0s exceeds target 30m 00.0s"/>"#),
        "{junit}"
    );
}

#[test]
fn a_corrupt_history_file_is_skipped_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history");
    std::fs::create_dir_all(&history).unwrap();
    let v0 =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/report_fixtures/history-v0.jsonl"))
            .unwrap();
    let good = v0.lines().next().unwrap().replace("2026-03-02", "2026-05-04");
    let mut bytes = Vec::new();
    bytes.extend_from_slice(b"this is not json\n");
    bytes.extend_from_slice(good.as_bytes());
    bytes.extend_from_slice(b"\n{\"format\": 1, \"drill\": \"truncated\", \"scen\n");
    bytes.extend_from_slice(b"\xff\xfe garbage bytes\n");
    bytes.extend_from_slice(b"{\"format\": 7, \"drill\": \"from_the_future\"}\n");
    std::fs::write(history.join("2026-05.jsonl"), bytes).unwrap();
    // A month "file" that cannot be read at all.
    std::fs::create_dir_all(history.join("2026-04.jsonl")).unwrap();

    let run = report(
        dir.path(),
        &["--month", "2026-05", "--history", history.to_str().unwrap()],
    );
    assert_eq!(run.code, 0, "the one good run passed: {}\n{}", run.stdout, run.stderr);
    for needle in [
        "skipped line 1 of",
        "not JSON",
        "skipped line 3 of",
        "skipped line 4 of",
        "not UTF-8",
        "skipped line 5 of",
        "newer drillbook",
        "skipped history file",
        "2026-04.jsonl",
    ] {
        assert!(
            run.stderr.contains(needle),
            "{needle:?} missing from stderr:\n{}",
            run.stderr
        );
    }
    let md = read(dir.path(), "drill-report-2026-05.md");
    assert!(
        md.contains("**Verdict: PASSED** — 1 run of 1 drill in May 2026"),
        "{md}"
    );
    assert!(md.contains("## Skipped while reading"), "{md}");
    let html = read(dir.path(), "drill-report-2026-05.html");
    assert!(html.contains("skipped line 3 of"), "the HTML lists what was skipped");
}

#[test]
fn a_month_with_no_drills_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history");
    let run = report(
        dir.path(),
        &["--month", "2026-02", "--history", history.to_str().unwrap()],
    );
    assert_eq!(
        run.code, 1,
        "no drills is a failed schedule: {}\n{}",
        run.stdout, run.stderr
    );
    assert!(
        run.stdout.contains("NO DRILLS: No drills ran in February 2026."),
        "{}",
        run.stdout
    );
    let md = read(dir.path(), "drill-report-2026-02.md");
    assert!(
        md.contains("**Verdict: NO DRILLS** — No drills ran in February 2026."),
        "{md}"
    );
    assert!(!md.contains("## Drills"), "{md}");
    let html = read(dir.path(), "drill-report-2026-02.html");
    assert!(html.contains(r#"id="verdict">NO DRILLS</span>"#), "{html}");
    let junit = read(dir.path(), "junit-2026-02.xml");
    let report = quick_junit::Report::deserialize_from_str(&junit).unwrap();
    assert_eq!(report.failures, 1, "{junit}");
    assert_eq!(
        report.test_suites[0].test_cases[0].name.as_str(),
        "drills ran in 2026-02"
    );
}

#[test]
fn a_missing_junit_input_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("reports/complete_infrastructure_loss.xml");
    let run = report(
        dir.path(),
        &[
            "--month",
            "2026-05",
            "--history",
            dir.path().join("h").to_str().unwrap(),
            "--junit",
            missing.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains(&format!("`{}`", missing.display())),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("does not exist"), "{}", run.stderr);
    assert!(
        run.stderr.contains("--profile drill"),
        "says how to fix it: {}",
        run.stderr
    );
    assert!(!dir.path().join("out").exists(), "no partial report is written");
}

#[test]
fn a_bad_month_is_refused_with_the_accepted_form() {
    let dir = tempfile::tempdir().unwrap();
    let run = report(dir.path(), &["--month", "2026-13"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("`2026-13`") && run.stderr.contains("YYYY-MM"),
        "{}",
        run.stderr
    );
}
