//! The monthly drill report's model: this month's runs (from the history
//! and the per-drill JUnit files, merged), the trend months, and the ONE
//! merged JUnit document CI displays.
//!
//! A run is identified by its drill name and start time (to the
//! millisecond), which the drill's JUnit suite and its history record share:
//! a run found in both is shown once, with the history's richer facts and
//! the original JUnit suite. JUnit files are read with quick-junit; suites
//! without a `scenario` property (nextest's own report) are copied into the
//! merged JUnit untouched but are not drills.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

use super::history::{
    DATASET_PROPERTY, FORMAT_VERSION, History, HistoryRecord, RecordCheck, RecordEvent, RecordIncident, RecordPhase,
};
use super::month::Month;
use super::projection::{NotProjectable, Projection, ProjectionSize, project};
use crate::drill::{DatasetSize, Moved};
use crate::time::{format_duration, timestamp};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    #[error(
        "failed to read JUnit input `{}`: the file does not exist; run the drills first \
         (`cargo nextest run --profile drill` writes target/drill-reports/*.xml) or pass an existing file to --junit",
        path.display()
    )]
    MissingJunit { path: PathBuf },
    #[error("failed to read JUnit input `{}`", path.display())]
    ReadJunit {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to parse JUnit input `{}`: {problem}; pass a JUnit XML file written by a drill", path.display())]
    ParseJunit { path: PathBuf, problem: String },
    #[error("failed to list JUnit inputs in `{}`", dir.display())]
    ListJunit {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One parsed JUnit file.
#[derive(Debug, Clone)]
pub struct JunitInput {
    pub path: PathBuf,
    pub suites: Vec<TestSuite>,
}

/// Reads one JUnit file.
///
/// # Errors
///
/// [`ReportError::MissingJunit`] naming the file if it does not exist,
/// [`ReportError::ReadJunit`] / [`ReportError::ParseJunit`] otherwise.
pub fn read_junit(path: &Path) -> Result<JunitInput, ReportError> {
    let text = std::fs::read_to_string(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => ReportError::MissingJunit { path: path.to_owned() },
        _ => ReportError::ReadJunit {
            path: path.to_owned(),
            source,
        },
    })?;
    let report = Report::deserialize_from_str(&text).map_err(|error| ReportError::ParseJunit {
        path: path.to_owned(),
        problem: error.to_string(),
    })?;
    Ok(JunitInput {
        path: path.to_owned(),
        suites: report.test_suites,
    })
}

/// The `*.xml` files in `dir`, sorted; none if `dir` does not exist.
///
/// # Errors
///
/// [`ReportError::ListJunit`] if `dir` exists but cannot be listed.
pub fn junit_files_in(dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(ReportError::ListJunit {
                dir: dir.to_owned(),
                source,
            });
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "xml"))
        .collect();
    files.sort();
    Ok(files)
}

/// One drill run of the month.
#[derive(Debug, Clone)]
pub struct Run {
    pub record: HistoryRecord,
    /// The drill's own JUnit suite, when a JUnit input held it.
    pub suite: Option<TestSuite>,
}

/// Everything the monthly report shows.
#[derive(Debug, Clone)]
pub struct MonthlyReport {
    pub month: Month,
    /// This month's runs, oldest first.
    pub runs: Vec<Run>,
    /// The months the charts cover, oldest first, ending with `month`.
    pub trend_months: Vec<Month>,
    /// Every run in `trend_months` (history plus this month's JUnit-only runs).
    pub trend: Vec<HistoryRecord>,
    /// What was skipped while reading, one sentence each.
    pub warnings: Vec<String>,
    /// Suites from the JUnit inputs that are not drills, copied into the merged JUnit.
    pub other_suites: Vec<TestSuite>,
    pub generated_at: DateTime<Utc>,
    /// The size each run's RTO is projected to (`--project-size`), if any.
    pub projection_size: Option<ProjectionSize>,
}

/// The summary verdict of a month.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MonthVerdict {
    /// No drill ran: the schedule was not kept.
    NoDrills,
    Passed,
    Failed,
}

impl MonthVerdict {
    pub fn label(self) -> &'static str {
        match self {
            Self::NoDrills => "NO DRILLS",
            Self::Passed => "PASSED",
            Self::Failed => "FAILED",
        }
    }
}

fn run_key(drill: &str, at: DateTime<Utc>) -> (String, i64) {
    (drill.to_owned(), at.timestamp_millis())
}

impl MonthlyReport {
    /// Merges `history` (read for `trend_months`) and `junit` into the
    /// report of `month`. JUnit suites outside `month` are left out.
    pub fn build(month: Month, trend_months: Vec<Month>, history: History, junit: Vec<JunitInput>) -> Self {
        let History { records, mut warnings } = history;
        let mut runs: Vec<Run> = records
            .iter()
            .filter(|r| month.contains(r.started_at))
            .cloned()
            .map(|record| Run { record, suite: None })
            .collect();
        let mut trend: Vec<HistoryRecord> = records;
        let mut other_suites = Vec::new();
        let mut outside = 0;
        for input in junit {
            for suite in input.suites {
                let source = input.path.display();
                let Some(record) = record_from_suite(&suite) else {
                    if suite.timestamp.is_none_or(|at| month.contains(at.with_timezone(&Utc))) {
                        other_suites.push(suite);
                    }
                    continue;
                };
                let record = match record {
                    Ok(record) => record,
                    Err(problem) => {
                        let warning = format!("skipped suite `{}` of `{source}`: {problem}", suite.name.as_str());
                        tracing::warn!("{warning}");
                        warnings.push(warning);
                        continue;
                    }
                };
                if !month.contains(record.started_at) {
                    outside += 1;
                    continue;
                }
                let key = run_key(&record.drill, record.started_at);
                match runs
                    .iter_mut()
                    .find(|run| run_key(&run.record.drill, run.record.started_at) == key)
                {
                    Some(run) => run.suite = Some(suite),
                    None => {
                        trend.push(record.clone());
                        runs.push(Run {
                            record,
                            suite: Some(suite),
                        });
                    }
                }
            }
        }
        if outside > 0 {
            tracing::info!("{outside} JUnit suites ran outside {month} and are not in its report");
        }
        runs.sort_by(|a, b| (a.record.started_at, &a.record.drill).cmp(&(b.record.started_at, &b.record.drill)));
        trend.retain(|r| trend_months.contains(&Month::of(r.started_at)));
        trend.sort_by_key(|r| r.started_at);
        Self {
            month,
            runs,
            trend_months,
            trend,
            warnings,
            other_suites,
            generated_at: Utc::now(),
            projection_size: None,
        }
    }

    /// The report with every run's RTO projected to `size`.
    pub fn with_projection(mut self, size: ProjectionSize) -> Self {
        self.projection_size = Some(size);
        self
    }

    /// Each run's projection to [`Self::projection_size`], in run order;
    /// empty without one.
    pub fn projections(&self) -> Vec<(&Run, Result<Projection, NotProjectable>)> {
        let Some(size) = &self.projection_size else {
            return Vec::new();
        };
        self.runs.iter().map(|run| (run, project(&run.record, size))).collect()
    }

    /// The drills whose projected RTO misses its target.
    fn projected_misses(&self) -> Vec<&str> {
        self.projections()
            .into_iter()
            .filter(|(_, p)| p.as_ref().is_ok_and(|p| !p.within_target()))
            .map(|(run, _)| run.record.drill.as_str())
            .collect()
    }

    pub fn verdict(&self) -> MonthVerdict {
        if self.runs.is_empty() {
            MonthVerdict::NoDrills
        } else if self.runs.iter().all(|run| run.record.passed) && self.projected_misses().is_empty() {
            MonthVerdict::Passed
        } else {
            MonthVerdict::Failed
        }
    }

    /// One sentence under the verdict.
    pub fn summary_sentence(&self) -> String {
        let drills: BTreeSet<&str> = self.runs.iter().map(|r| r.record.drill.as_str()).collect();
        let failed: Vec<&str> = self
            .runs
            .iter()
            .filter(|r| !r.record.passed)
            .map(|r| r.record.drill.as_str())
            .collect();
        let runs = plural(self.runs.len(), "run", "runs");
        let of = plural(drills.len(), "drill", "drills");
        let projected = match (&self.projection_size, self.projected_misses()) {
            (Some(size), misses) if !misses.is_empty() => format!(
                " Projected to {}, the RTO misses its target in {}: {}.",
                size.label(),
                plural(misses.len(), "run", "runs"),
                misses.join(", ")
            ),
            _ => String::new(),
        };
        match self.verdict() {
            MonthVerdict::NoDrills => format!(
                "No drills ran in {}. The playbook's schedule (section 8) expects monthly, weekly and daily drills.",
                self.month.long_name()
            ),
            MonthVerdict::Passed => format!(
                "{runs} of {of} in {}; every run met its targets.",
                self.month.long_name()
            ),
            MonthVerdict::Failed if failed.is_empty() => format!(
                "{runs} of {of} in {}; every run met its measured targets.{projected}",
                self.month.long_name()
            ),
            MonthVerdict::Failed => format!(
                "{runs} of {of} in {}; {} failed: {}.{projected}",
                self.month.long_name(),
                failed.len(),
                failed.join(", ")
            ),
        }
    }

    /// The merged JUnit document: one suite per run (the drill's own suite
    /// when a JUnit input held it, else rebuilt from its history record),
    /// every measurement and target as properties, a failing testcase for
    /// every missed target; a failing `drills ran in <month>` when none did.
    pub fn junit(&self) -> Report {
        let mut report = Report::new(format!("drillbook drill report {}", self.month));
        report.set_timestamp(self.generated_at);
        let mut names = BTreeSet::new();
        let duplicated: BTreeSet<&str> = self
            .runs
            .iter()
            .map(|r| r.record.drill.as_str())
            .filter(|d| self.runs.iter().filter(|r| r.record.drill == *d).count() > 1)
            .collect();
        let projections = self.projections();
        for (index, run) in self.runs.iter().enumerate() {
            let record = &run.record;
            let mut suite = run.suite.clone().unwrap_or_else(|| suite_from_record(record));
            if let (Some(size), Some((_, projection))) = (&self.projection_size, projections.get(index)) {
                let mut case = projection_case(size, projection);
                case.set_classname(record.drill.as_str());
                suite.add_test_case(case);
            }
            if duplicated.contains(record.drill.as_str()) {
                suite.name = format!("{} @ {}", record.drill, timestamp(record.started_at)).into();
            }
            names.insert(suite.name.as_str().to_owned());
            let present: BTreeSet<String> = suite.properties.iter().map(|p| p.name.as_str().to_owned()).collect();
            let extra = [
                ("month", Some(self.month.to_string())),
                ("backend", Some(record.backend.clone())),
                ("dataset_size", record.dataset_size.clone()),
                ("drillbook_version", Some(record.drillbook_version.clone())),
                ("postgres_version", record.postgres_version.clone()),
                ("verdict", Some(record.verdict_label().to_owned())),
            ];
            for (name, value) in extra {
                if let Some(value) = value.filter(|_| !present.contains(name)) {
                    suite.add_property(Property::new(name, value));
                }
            }
            report.add_test_suite(suite);
        }
        if self.runs.is_empty() {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
            status.set_message(format!(
                "no drill ran in {}; run the scheduled drills (cargo nextest run --profile drill-monthly, ...)",
                self.month
            ));
            let mut suite = TestSuite::new(format!("drill schedule {}", self.month));
            suite.add_test_case(TestCase::new(format!("drills ran in {}", self.month), status));
            suite.add_property(Property::new("month", self.month.to_string()));
            report.add_test_suite(suite);
        }
        report.add_test_suites(self.other_suites.iter().cloned());
        report
    }
}

/// `projected RTO at 500 GB within target`: fails when the projection
/// misses the target, skipped when the run cannot be projected; its message
/// carries the figures and the assumption.
fn projection_case(size: &ProjectionSize, projection: &Result<Projection, NotProjectable>) -> TestCase {
    let name = format!("projected RTO at {} within target", size.label());
    match projection {
        Ok(p) => {
            let figures = format!("{p}: {}. {}", p.breakdown(), size.assumption());
            if p.within_target() {
                let mut case = TestCase::new(name, TestCaseStatus::success());
                case.set_system_out(figures);
                case
            } else {
                let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
                status.set_message(format!(
                    "projected RTO at {} {} exceeds target {}; {}. {}",
                    size.label(),
                    seconds_text(p.projected_rto),
                    seconds_text(p.target),
                    p.breakdown(),
                    size.assumption()
                ));
                TestCase::new(name, status)
            }
        }
        Err(why) => {
            let mut status = TestCaseStatus::skipped();
            status.set_message(format!("not projected: {why}"));
            TestCase::new(name, status)
        }
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `4.2s`, `15m 00.0s`: a record's seconds, formatted as the harness does.
pub fn seconds_text(seconds: f64) -> String {
    format_duration(Duration::from_secs_f64(seconds.max(0.0)))
}

fn seconds_property(seconds: f64) -> String {
    format!("{seconds:.3}")
}

/// A JUnit suite for a run known only from history.
fn suite_from_record(record: &HistoryRecord) -> TestSuite {
    let failure = |message: String| {
        let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
        status.set_message(message);
        status
    };
    let mut cases = Vec::new();
    if let Some(reason) = &record.aborted {
        cases.push(TestCase::new("drill completed", failure(reason.clone())));
    }
    for phase in &record.phases {
        let status = phase.error.clone().map_or_else(TestCaseStatus::success, failure);
        let mut case = TestCase::new(format!("phase: {}", phase.name), status);
        case.set_time(Duration::from_secs_f64(phase.duration_seconds.max(0.0)));
        if let Some(at) = phase.started_at {
            case.set_timestamp(at);
        }
        let moved: Vec<String> = phase.moved.iter().map(ToString::to_string).collect();
        if !moved.is_empty() {
            case.set_system_out(moved.join("\n"));
        }
        cases.push(case);
    }
    for check in &record.checks {
        let status = if check.passed {
            TestCaseStatus::success()
        } else {
            failure(check.detail.clone())
        };
        cases.push(TestCase::new(format!("check: {}", check.name), status));
    }
    let rto = match record.rto_seconds {
        _ if !record.rto_missed() => TestCaseStatus::success(),
        Some(rto) => failure(format!(
            "RTO {} exceeds target {}",
            seconds_text(rto),
            seconds_text(record.rto_target_seconds)
        )),
        None => failure("RTO was not measured (no incident or never verified healthy)".to_owned()),
    };
    cases.push(TestCase::new("RTO within target", rto));
    if let Some(target) = record.rpo_target_seconds {
        let rpo = match record.rpo_seconds {
            _ if !record.rpo_missed() => TestCaseStatus::success(),
            Some(rpo) => failure(format!(
                "RPO {} exceeds target {}",
                seconds_text(rpo),
                seconds_text(target)
            )),
            None => failure("an RPO target is set but no RPO was measured".to_owned()),
        };
        cases.push(TestCase::new("RPO within target", rpo));
    }
    let any_failed = cases
        .iter()
        .any(|c| !matches!(c.status, TestCaseStatus::Success { .. }));
    if !record.passed && !any_failed {
        cases.push(TestCase::new("drill passed", failure(record.failures.join("; "))));
    }
    for case in &mut cases {
        case.set_classname(record.drill.as_str());
    }
    let measured = [
        ("scenario", Some(record.scenario.clone())),
        ("action", Some(record.action.clone())),
        ("rto_seconds", record.rto_seconds.map(seconds_property)),
        ("rto_target_seconds", Some(seconds_property(record.rto_target_seconds))),
        ("rpo_seconds", record.rpo_seconds.map(seconds_property)),
        ("rpo_target_seconds", record.rpo_target_seconds.map(seconds_property)),
        ("incident_at", record.incident.as_ref().map(|i| timestamp(i.at))),
        ("verified_at", record.verified_at.map(timestamp)),
        (
            "dataset_database_bytes",
            record.dataset.map(|d| d.database_bytes.to_string()),
        ),
        (
            "dataset_dump_bytes",
            record.dataset.and_then(|d| d.dump_bytes).map(|n| n.to_string()),
        ),
        (
            "throughput_recorded",
            record.throughput_recorded.then(|| "true".to_owned()),
        ),
    ];
    let properties = measured
        .into_iter()
        .filter_map(|(name, value)| Some(Property::new(name, value?)))
        .chain(record.properties.iter().map(|(n, v)| Property::new(n, v)));
    let timeline: String = record
        .timeline
        .iter()
        .map(|e| {
            format!(
                "{} {:>14}  {}\n",
                timestamp(e.at),
                format!("+{}", seconds_text(e.elapsed_seconds)),
                e.message
            )
        })
        .collect();
    let mut suite = TestSuite::new(record.drill.as_str());
    suite
        .set_timestamp(record.started_at)
        .set_time(Duration::from_secs_f64(record.duration_seconds.max(0.0)))
        .add_properties(properties)
        .add_test_cases(cases);
    if !timeline.is_empty() {
        suite.set_system_out(timeline);
    }
    suite
}

fn failure_message(status: &TestCaseStatus) -> Option<String> {
    match status {
        TestCaseStatus::Success { .. } | TestCaseStatus::Skipped { .. } => None,
        TestCaseStatus::NonSuccess { message, .. } => Some(
            message
                .as_ref()
                .map_or_else(|| "failed".to_owned(), |m| m.as_str().to_owned()),
        ),
    }
}

/// The run a drill's JUnit suite describes: `None` if it is not a drill's
/// suite (no `scenario` property), `Some(Err)` if it is one but unreadable.
fn record_from_suite(suite: &TestSuite) -> Option<Result<HistoryRecord, String>> {
    let property = |name: &str| {
        suite
            .properties
            .iter()
            .find(|p| p.name.as_str() == name)
            .map(|p| p.value.as_str().to_owned())
    };
    let scenario = property("scenario")?;
    Some(drill_record(suite, scenario, property))
}

fn drill_record(
    suite: &TestSuite,
    scenario: String,
    property: impl Fn(&str) -> Option<String>,
) -> Result<HistoryRecord, String> {
    let started_at = suite.timestamp.ok_or("the suite has no timestamp")?.with_timezone(&Utc);
    let number = |name: &str| -> Result<Option<f64>, String> {
        property(name)
            .map(|v| {
                v.parse::<f64>()
                    .map_err(|_| format!("property `{name}` is `{v}`, not seconds"))
            })
            .transpose()
    };
    let time = |name: &str| -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&property(name)?)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    };
    let rto_target_seconds = number("rto_target_seconds")?.ok_or("property `rto_target_seconds` is missing")?;
    let mut phases = Vec::new();
    let mut checks = Vec::new();
    let mut failures = Vec::new();
    let mut findings = Vec::new();
    let mut aborted = None;
    for case in &suite.test_cases {
        let name = case.name.as_str();
        let failed = failure_message(&case.status);
        if let Some(phase) = name.strip_prefix("phase: ") {
            if let Some(error) = &failed {
                let sentence = format!("phase `{phase}` failed: {error}");
                findings.push(sentence.clone());
                failures.push(sentence);
            }
            let moved = case
                .system_out
                .as_ref()
                .map(|out| out.as_str().lines().filter_map(Moved::parse_line).collect())
                .unwrap_or_default();
            phases.push(RecordPhase {
                name: phase.to_owned(),
                started_at: case.timestamp.map(|t| t.with_timezone(&Utc)),
                duration_seconds: case.time.map_or(0.0, |d| d.as_secs_f64()),
                error: failed,
                moved,
            });
        } else if let Some(check) = name.strip_prefix("check: ") {
            let detail = match &failed {
                Some(message) => message.clone(),
                None => case
                    .system_out
                    .as_ref()
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_default(),
            };
            if failed.is_some() {
                let sentence = format!("check `{check}` failed: {detail}");
                findings.push(sentence.clone());
                failures.push(sentence);
            }
            checks.push(RecordCheck {
                name: check.to_owned(),
                passed: failed.is_none(),
                detail,
            });
        } else if let Some(message) = failed {
            if name == "drill completed" {
                aborted = Some(message.clone());
            }
            failures.push(message);
        }
    }
    let timeline = suite
        .system_out
        .as_ref()
        .map(|out| parse_timeline(out.as_str(), started_at))
        .unwrap_or_default();
    let bytes = |name: &str| -> Result<Option<u64>, String> {
        property(name)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| format!("property `{name}` is `{v}`, not bytes"))
            })
            .transpose()
    };
    let dump_bytes = bytes("dataset_dump_bytes")?;
    let dataset = bytes("dataset_database_bytes")?.map(|database| DatasetSize::new(database, dump_bytes));
    let properties = suite
        .properties
        .iter()
        .filter(|p| !crate::drill::HARNESS_PROPERTIES.contains(&p.name.as_str()))
        .map(|p| (p.name.as_str().to_owned(), p.value.as_str().to_owned()))
        .collect();
    Ok(HistoryRecord {
        format: FORMAT_VERSION,
        drill: suite.name.as_str().to_owned(),
        action: property("action").unwrap_or_default(),
        scenario,
        backend: property("backend").unwrap_or_else(|| "unknown".to_owned()),
        dataset_size: property(DATASET_PROPERTY),
        started_at,
        duration_seconds: suite.time.map_or(0.0, |d| d.as_secs_f64()),
        incident: time("incident_at").map(|at| RecordIncident {
            at,
            description: timeline
                .iter()
                .find_map(|e| e.message.strip_prefix("incident: ").map(str::to_owned))
                .unwrap_or_default(),
        }),
        verified_at: time("verified_at"),
        rto_seconds: number("rto_seconds")?,
        rto_target_seconds,
        rpo_seconds: number("rpo_seconds")?,
        rpo_target_seconds: number("rpo_target_seconds")?,
        phases,
        checks,
        findings,
        passed: failures.is_empty(),
        failures,
        aborted,
        drillbook_version: property("drillbook_version").unwrap_or_else(|| "unknown".to_owned()),
        postgres_version: super::history::POSTGRES_VERSION_PROPERTIES
            .iter()
            .find_map(|name| property(name)),
        properties,
        timeline,
        dataset,
        throughput_recorded: property("throughput_recorded").is_some_and(|v| v == "true"),
    })
}

/// Lines of `<rfc3339> <+elapsed, right-aligned>  <message>`, as the harness
/// writes the timeline into `<system-out>`.
fn parse_timeline(text: &str, started_at: DateTime<Utc>) -> Vec<RecordEvent> {
    text.lines()
        .filter_map(|line| {
            let (at, rest) = line.split_once(' ')?;
            let at = DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&Utc);
            let message = rest.split_once("s  ").map_or(rest.trim(), |(_, m)| m);
            let elapsed = (at - started_at).to_std().unwrap_or(Duration::ZERO);
            Some(RecordEvent {
                at,
                elapsed_seconds: elapsed.as_secs_f64(),
                message: message.to_owned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drill::testing::{fixture, t0};
    use crate::playbook::Scenario;
    use crate::report::junit;

    #[test]
    fn a_drills_junit_reads_back_as_its_history_record() {
        let mut fx = fixture("full_restore", Scenario::CompleteInfrastructureLoss);
        fx.drill = fx.drill.with_rpo_target(Duration::from_hours(1));
        fx.drill.property("dataset_profile", "small");
        fx.clock.advance(Duration::from_mins(1));
        fx.drill.incident("dropped the ledger database");
        fx.drill.recovery_point(crate::drill::RecoveryPoint::new(
            crate::drill::RecoverySource::Snapshot,
            t0(),
        ));
        fx.clock.advance(Duration::from_mins(3));
        fx.drill.check("4.1 broken links = 0", false, "3 broken links");
        fx.drill.verified();
        let summary = fx.drill.summary();
        let expected = HistoryRecord::from_summary_on(&summary, "unknown");
        let report = Report::deserialize_from_str(&junit::render(&summary)).unwrap();
        let record = record_from_suite(&report.test_suites[0]).unwrap().unwrap();
        assert_eq!(record.drill, expected.drill);
        assert_eq!(record.started_at, expected.started_at);
        assert_eq!(
            (record.rto_seconds, record.rpo_seconds, record.rpo_target_seconds),
            (Some(180.0), Some(60.0), Some(3600.0))
        );
        assert_eq!(record.findings, expected.findings);
        assert_eq!(record.passed, expected.passed);
        assert_eq!(record.dataset_size.as_deref(), Some("small"));
        let messages: Vec<&str> = record.timeline.iter().map(|e| e.message.as_str()).collect();
        let expected_messages: Vec<&str> = expected.timeline.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(messages, expected_messages);
        assert_eq!(
            record.incident.map(|i| i.description).as_deref(),
            Some("dropped the ledger database")
        );
    }

    /// A restore drill: incident, a 10 s restore of a 100 MB dump, 2 s of
    /// checks, a 400 MB database; RTO 12 s against the matrix's 4 hours.
    async fn restore_run() -> HistoryRecord {
        let mut fx = fixture("full_restore", Scenario::CompleteInfrastructureLoss);
        let clock = fx.clock.clone();
        fx.drill.incident("primary lost");
        fx.drill
            .data_phase(
                "restore",
                async {
                    clock.advance(Duration::from_secs(10));
                    Ok::<_, String>(())
                },
                |()| [crate::drill::Moved::bytes(100_000_000)],
            )
            .await
            .unwrap();
        fx.clock.advance(Duration::from_secs(2));
        fx.drill.verified();
        fx.drill
            .dataset_size(crate::drill::DatasetSize::new(400_000_000, Some(100_000_000)));
        HistoryRecord::from_summary_on(&fx.drill.summary(), "embedded")
    }

    #[tokio::test]
    async fn throughput_and_dataset_read_back_from_a_drills_junit() {
        let record = restore_run().await;
        let suite = suite_from_record(&record);
        let read = record_from_suite(&suite).unwrap().unwrap();
        assert_eq!(read.phases[0].moved, record.phases[0].moved);
        assert_eq!(read.dataset, record.dataset);
    }

    fn month_of(record: HistoryRecord) -> MonthlyReport {
        let month = Month::of(record.started_at);
        let history = History {
            records: vec![record],
            warnings: Vec::new(),
        };
        MonthlyReport::build(month, vec![month], history, Vec::new())
    }

    fn projection_case_of(report: &MonthlyReport, name: &str) -> TestCase {
        let junit = report.junit();
        junit.test_suites[0]
            .test_cases
            .iter()
            .find(|c| c.name.as_str() == name)
            .unwrap_or_else(|| panic!("no testcase {name:?} in {junit:?}"))
            .clone()
    }

    #[tokio::test]
    async fn a_projection_over_the_target_is_a_failed_testcase_saying_its_assumption() {
        use crate::report::projection::ProjectionSize;
        // 1 TB is 2 500 times the 400 MB measured: 25 000 s of restore + 2 s.
        let report = month_of(restore_run().await).with_projection(ProjectionSize::database(1_000_000_000_000));
        let case = projection_case_of(&report, "projected RTO at 1 TB within target");
        let message = failure_message(&case.status).expect("a failed testcase");
        for needle in [
            "projected RTO at 1 TB 6h 56m 42.0s exceeds target 4h 00m 00.0s",
            "`restore` 10.0s -> 6h 56m 40.0s (100 MB at 10 MB/s)",
            "Assumption: linear scaling",
            "pg_database_size",
        ] {
            assert!(message.contains(needle), "{needle:?} missing from {message}");
        }
        assert_eq!(report.verdict(), MonthVerdict::Failed);
        assert!(
            report
                .summary_sentence()
                .contains("Projected to 1 TB, the RTO misses its target in 1 run: full_restore"),
            "{}",
            report.summary_sentence()
        );

        let report = month_of(restore_run().await).with_projection(ProjectionSize::database(100_000_000_000));
        let case = projection_case_of(&report, "projected RTO at 100 GB within target");
        assert!(matches!(case.status, TestCaseStatus::Success { .. }), "{case:?}");
        assert_eq!(report.verdict(), MonthVerdict::Passed);
    }

    #[tokio::test]
    async fn a_run_that_cannot_be_projected_is_a_skipped_testcase_saying_why() {
        use crate::report::projection::ProjectionSize;
        let mut record = restore_run().await;
        record.dataset = None;
        let report = month_of(record).with_projection(ProjectionSize::dump(1_000_000_000, "daily/x/db.dump"));
        let case = projection_case_of(&report, "projected RTO at 1 GB dump within target");
        let TestCaseStatus::Skipped { message, .. } = &case.status else {
            panic!("not skipped: {case:?}");
        };
        let message = message.as_ref().map(|m| m.as_str()).unwrap_or_default();
        assert!(message.contains("not the size of the dataset"), "{message}");
        assert_eq!(report.verdict(), MonthVerdict::Passed);
    }

    #[test]
    fn history_only_runs_get_a_suite_with_failing_target_cases() {
        let mut fx = fixture("slow", Scenario::SinglePodCrash);
        fx.drill.incident("killed the pod");
        fx.clock.advance(Duration::from_mins(3));
        fx.drill.verified();
        let record = HistoryRecord::from_summary_on(&fx.drill.summary(), "embedded");
        let suite = suite_from_record(&record);
        let rto = suite
            .test_cases
            .iter()
            .find(|c| c.name.as_str() == "RTO within target")
            .unwrap();
        assert_eq!(
            failure_message(&rto.status).as_deref(),
            Some("RTO 3m 00.0s exceeds target 2m 00.0s")
        );
        assert!(
            suite
                .properties
                .iter()
                .any(|p| p.name.as_str() == "rto_seconds" && p.value.as_str() == "180.000")
        );
    }
}
