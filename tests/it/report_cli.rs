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

/// One run of a drill on a manual clock starting at `at`, as a real drill
/// records it: incident, `fixed` of fixed-cost work, a data-moving phase of
/// `moving` that moved `moved` (none: no data-moving phase), verified,
/// then the size of the dataset it recovered (`database_bytes`).
pub(crate) struct DataRun<'a> {
    pub name: &'a str,
    pub scenario: drillbook::playbook::Scenario,
    pub at: &'a str,
    pub fixed: std::time::Duration,
    pub moving: std::time::Duration,
    pub moved: Option<drillbook::drill::Moved>,
    pub database_bytes: u64,
    /// The dump it restored, if it restored one.
    pub dump_bytes: Option<u64>,
}

impl DataRun<'_> {
    pub(crate) async fn record_in(self, dirs: &Path) {
        use std::sync::Arc;
        let start: chrono::DateTime<chrono::Utc> = self.at.parse().unwrap();
        let clock = drillbook::time::ManualClock::new(start);
        let mut drill = crate::common::drill_in(dirs, self.name, self.scenario).with_clock(Arc::new(clock.clone()));
        drill.property("dataset_profile", "small");
        drill.incident(format!("{}: primary lost", self.name));
        clock.advance(self.fixed);
        match self.moved {
            Some(moved) => {
                let moving = self.moving;
                let restore = drill.data_phase(
                    "restore",
                    async {
                        clock.advance(moving);
                        Ok::<_, String>(())
                    },
                    |()| [moved],
                );
                restore.await.unwrap();
                drill.verified();
                drill.dataset_size(drillbook::drill::DatasetSize::new(self.database_bytes, self.dump_bytes));
            }
            None => {
                clock.advance(self.moving);
                drill.verified();
            }
        }
        drill.finish().unwrap();
    }
}

/// A 7.6 s restore drill on an 80 MB database (5.6 s moving a 20 MB dump)
/// and a failover that moves nothing, in May 2026.
async fn may_with_throughput(dir: &Path) {
    use drillbook::drill::Moved;
    use drillbook::playbook::Scenario;
    use std::time::Duration;
    DataRun {
        name: "complete_infrastructure_loss",
        scenario: Scenario::CompleteInfrastructureLoss,
        at: "2026-05-05T02:00:00Z",
        fixed: Duration::from_secs(2),
        moving: Duration::from_millis(5600),
        moved: Some(Moved::bytes(20_000_000)),
        database_bytes: 80_000_000,
        dump_bytes: Some(20_000_000),
    }
    .record_in(dir)
    .await;
    DataRun {
        name: "data_center_failure",
        scenario: Scenario::DataCenterFailure,
        at: "2026-05-19T02:00:00Z",
        fixed: Duration::from_secs(40),
        moving: Duration::ZERO,
        moved: None,
        database_bytes: 0,
        dump_bytes: None,
    }
    .record_in(dir)
    .await;
}

#[tokio::test]
async fn a_projection_over_the_target_fails_the_month_and_its_testcase() {
    let dir = tempfile::tempdir().unwrap();
    may_with_throughput(dir.path()).await;
    let history = dir.path().join("history");
    let reports = dir.path().join("reports");
    let run = report(
        dir.path(),
        &[
            "--month",
            "2026-05",
            "--history",
            history.to_str().unwrap(),
            "--junit",
            reports.join("complete_infrastructure_loss.xml").to_str().unwrap(),
            "--project-size",
            "500GB",
        ],
    );
    // Both drills met their measured targets; the restore's projection does not.
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    // 500 GB is 6 250 times 80 MB: 5.6 s of restore becomes 9h 43m 20s, plus 2 s fixed.
    let line = |drill: &str| {
        run.stdout
            .lines()
            .find(|l| l.starts_with(drill))
            .unwrap_or_else(|| panic!("no line for {drill} in\n{}", run.stdout))
            .to_owned()
    };
    for (drill, fields) in [
        (
            "complete_infrastructure_loss",
            ["7.6s", "9h 43m 22.0s", "4h 00m 00.0s", "MISSES target"],
        ),
        (
            "data_center_failure",
            ["40.0s", "40.0s", "1h 00m 00.0s", "within target"],
        ),
    ] {
        let line = line(drill);
        for field in fields {
            assert!(line.contains(field), "{field:?} missing from {line:?}");
        }
    }
    for needle in [
        "`restore` 5.6s -> 9h 43m 20.0s (20 MB at 3.6 MB/s); fixed 2.0s",
        "Assumption: linear scaling",
        "size = database size (pg_database_size of the database the drill recovered); S = 500 GB.",
        "FAILED: 2 runs of 2 drills in May 2026; every run met its measured targets. Projected to 500 GB, \
         the RTO misses its target in 1 run: complete_infrastructure_loss.",
    ] {
        assert!(run.stdout.contains(needle), "{needle:?} missing from\n{}", run.stdout);
    }
    let md = read(dir.path(), "drill-report-2026-05.md");
    for needle in [
        "## RTO projected to 500 GB",
        "| `complete_infrastructure_loss` | Complete infrastructure loss | 7.6s | 9h 43m 22.0s | 4h 00m 00.0s | MISSES target | restore: 20 MB at 3.6 MB/s | 205.7 GB |",
        "| `data_center_failure` | Data center failure | 40.0s | 40.0s | 1h 00m 00.0s | within target | none (nothing scales) | never |",
        "| Complete infrastructure loss | 4h 00m 00.0s | – | – | – | – | – | 7.6s (at 500 GB: 9h 43m 22.0s) |",
    ] {
        assert!(md.contains(needle), "{needle:?} missing from\n{md}");
    }
    let junit = read(dir.path(), "junit-2026-05.xml");
    let report = quick_junit::Report::deserialize_from_str(&junit).unwrap();
    let restore = &report.test_suites[0];
    let case = restore
        .test_cases
        .iter()
        .find(|c| c.name.as_str() == "projected RTO at 500 GB within target")
        .unwrap_or_else(|| panic!("no projection testcase in\n{junit}"));
    let quick_junit::TestCaseStatus::NonSuccess { message, .. } = &case.status else {
        panic!("the projection over target passed:\n{junit}");
    };
    let message = message.as_ref().unwrap().as_str();
    assert!(
        message.starts_with("projected RTO at 500 GB 9h 43m 22.0s exceeds target 4h 00m 00.0s")
            && message.contains("Assumption: linear scaling"),
        "{message}"
    );
    assert_eq!(report.failures, 1, "only the projection failed:\n{junit}");
}

#[test]
fn an_unknown_size_unit_is_refused_naming_the_units() {
    let dir = tempfile::tempdir().unwrap();
    let run = report(dir.path(), &["--project-size", "500XB"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    for needle in ["`500XB`", "unknown unit `XB`", "B, KB, MB, GB, TB", "KiB", "any case"] {
        assert!(run.stderr.contains(needle), "{needle:?} missing from {}", run.stderr);
    }
    assert!(!dir.path().join("out").exists(), "nothing is written");
}

#[test]
fn newest_backup_off_staging_is_refused_saying_how() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(crate::common::BIN)
        .args(["report", "--project-size", "newest-backup", "--out"])
        .arg(dir.path().join("out"))
        .env("DRILL_ENV", "embedded")
        .env("DRILL_REPORT_DIR", dir.path().join("no-junit"))
        .env("DRILL_HISTORY_DIR", dir.path().join("history"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    for needle in ["DRILL_ENV is `embedded`", "DRILL_ENV=staging", "--project-size 500GB"] {
        assert!(stderr.contains(needle), "{needle:?} missing from {stderr}");
    }
}

/// On staging, `--project-size newest-backup` takes the size of the newest
/// logical dump in the staging bucket (`drillbook env up` plays staging,
/// with its first backup) and scales each run by the dump it restored.
#[tokio::test]
async fn newest_backup_on_staging_projects_to_the_newest_dumps_size() {
    let dir = tempfile::tempdir().unwrap();
    may_with_throughput(dir.path()).await;
    let staging = crate::staging_rehearsal::EnvUp::start(dir.path());
    let config = dir.path().join("drill.toml");
    std::fs::write(&config, staging.drill_toml()).unwrap();
    let store = staging.store().await;
    let dump = store
        .list("daily/")
        .await
        .unwrap()
        .into_iter()
        .filter(|o| o.key.ends_with(".dump"))
        .max_by(|a, b| a.key.cmp(&b.key))
        .expect("env up took a first backup");

    let history = dir.path().join("history");
    let output = Command::new(crate::common::BIN)
        .args([
            "report",
            "--month",
            "2026-05",
            "--project-size",
            "newest-backup",
            "--history",
        ])
        .arg(&history)
        .arg("--out")
        .arg(dir.path().join("out"))
        .env("DRILL_ENV", "staging")
        .env("DRILL_CONFIG", &config)
        .env("DRILL_REPORT_DIR", dir.path().join("no-junit"))
        .env("NO_PROXY", "127.0.0.1,localhost")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(matches!(output.status.code(), Some(0 | 1)), "{stdout}\n{stderr}");
    let label = format!("{} dump", drillbook::drill::moved::format_bytes(dump.size as f64));
    for needle in [
        format!(
            "size = logical dump bytes (against the dump the drill restored); S = {label} (the newest backup, `{}`).",
            dump.key
        ),
        format!("projected RTO at {label}")
            .replace("projected RTO at", "AT")
            .to_uppercase(),
    ] {
        assert!(stdout.contains(&needle), "{needle:?} missing from\n{stdout}\n{stderr}");
    }
    // The restore scales by the newest dump over the 20 MB dump it restored.
    let projected = 2.0 + 5.6 * dump.size as f64 / 20_000_000.0;
    let line = stdout
        .lines()
        .find(|l| l.starts_with("complete_infrastructure_loss"))
        .unwrap_or_else(|| panic!("{stdout}"));
    // Within the tenth of a second the table prints.
    let expected: Vec<String> = [projected - 0.05, projected, projected + 0.05]
        .into_iter()
        .map(drillbook::report::monthly::seconds_text)
        .collect();
    assert!(
        expected.iter().any(|e| line.contains(e.as_str())),
        "{expected:?} missing from {line:?}"
    );
}
