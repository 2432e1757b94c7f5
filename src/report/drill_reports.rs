//! What a finished drill leaves behind for CI and people: [`DrillReports`],
//! the harness's [`Outputs`] implemented by the reports. The built-in
//! drills are created with it (`drills::steps::reported_drill`); a drill
//! without it writes nothing.
//!
//! - the JUnit report, `<report dir>/<name>.xml` ([`junit`]), the report
//!   dir being [`report_dir`] (`DRILL_REPORT_DIR`) unless set;
//! - the history record, appended to the local history store
//!   ([`history::default_dir`], `DRILL_HISTORY_DIR`) unless set, and not at
//!   all with `DRILL_HISTORY=off`. A failure there is a warning, never a
//!   drill failure: history is a report's input, not the drill's outcome.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::history::{self, HistoryRecord};
use super::junit;
use crate::drill::{DrillError, DrillSummary, Outputs};

/// The JUnit report and the history record of a drill.
#[derive(Debug, Clone, Default)]
pub struct DrillReports {
    /// `None`: [`report_dir`], read when the drill ends.
    report_dir: Option<PathBuf>,
    /// `None`: [`history::default_dir`], read when the drill ends.
    history_dir: Option<PathBuf>,
}

impl DrillReports {
    /// Reports into the directories the environment names.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes the JUnit report into `dir` instead of [`report_dir`].
    pub fn with_report_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.report_dir = Some(dir.into());
        self
    }

    /// Appends the history record to `dir` instead of the default local
    /// history store.
    pub fn with_history_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.history_dir = Some(dir.into());
        self
    }

    /// `<report dir>/<drill>.xml`, the name kept one path component.
    fn junit_path(&self, drill: &str) -> PathBuf {
        let file_name: String = drill
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let dir = self.report_dir.clone().unwrap_or_else(report_dir);
        dir.join(format!("{file_name}.xml"))
    }

    fn append_history(&self, summary: &DrillSummary) {
        if history::disabled() {
            return;
        }
        let dir = self
            .history_dir
            .as_deref()
            .map_or_else(history::default_dir, Path::to_path_buf);
        let record = HistoryRecord::from_summary(summary);
        match history::append_local(&dir, &record) {
            Ok(()) => tracing::debug!(drill = %summary.name, history = %dir.display(), "appended drill history"),
            Err(error) => {
                let cause = std::error::Error::source(&error)
                    .map(ToString::to_string)
                    .unwrap_or_default();
                tracing::warn!(drill = %summary.name, "{error}: {cause}");
            }
        }
    }
}

impl Outputs for DrillReports {
    fn finished(&mut self, summary: &DrillSummary) -> crate::drill::Result<Option<PathBuf>> {
        let path = self.junit_path(&summary.name);
        // History first: a report that cannot be written must not lose the record.
        self.append_history(summary);
        junit::write(summary, &path).map_err(|source| DrillError::WriteReport {
            path: path.clone(),
            source,
        })?;
        Ok(Some(path))
    }

    fn aborted(&mut self, summary: &DrillSummary) {
        let path = self.junit_path(&summary.name);
        if let Err(error) = junit::write(summary, &path) {
            // Called from `drop`: nowhere to return an error, and panicking
            // could abort a process that is already unwinding.
            tracing::error!(drill = %summary.name, report = %path.display(), %error, "failed to write JUnit report");
        }
        self.append_history(summary);
    }
}

/// Where JUnit reports go: `DRILL_REPORT_DIR`, else `./target/drill-reports`.
/// Tests run from the package root, so that is beside nextest's own
/// `target/nextest/<profile>/junit.xml`, also when `CARGO_TARGET_DIR` moves
/// the build elsewhere.
pub fn report_dir() -> PathBuf {
    report_dir_from(|name| std::env::var_os(name))
}

fn report_dir_from(lookup: impl Fn(&str) -> Option<OsString>) -> PathBuf {
    let set = |name| lookup(name).filter(|value| !value.is_empty()).map(PathBuf::from);
    set("DRILL_REPORT_DIR").unwrap_or_else(|| PathBuf::from("target").join("drill-reports"))
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::time::Duration;

    use super::*;
    use crate::drill::testing::{Fixture, fixture, t0};
    use crate::playbook::Scenario;
    use crate::report::history::month_file;
    use crate::report::month::Month;

    const MINUTE: Duration = Duration::from_mins(1);

    /// A fixture drill reporting into its temporary directory: JUnit at
    /// the top, history in `history/`.
    fn reported(name: &str, scenario: Scenario) -> Fixture {
        let mut fx = fixture(name, scenario);
        let reports = DrillReports::new()
            .with_report_dir(fx.reports.path())
            .with_history_dir(fx.reports.path().join("history"));
        fx.drill = fx.drill.with_outputs(reports);
        fx
    }

    /// Incident, a minute later verified healthy.
    fn recovered() -> Fixture {
        let mut fx = reported("full_restore", Scenario::CompleteInfrastructureLoss);
        fx.clock.advance(10 * MINUTE);
        fx.drill.incident("dropped the ledger database");
        fx.clock.advance(MINUTE);
        fx.drill.verified();
        fx
    }

    fn history_of(fx_reports: &Path) -> history::History {
        history::read_local(&fx_reports.join("history"), &[Month::of(t0())])
    }

    #[test]
    fn finish_writes_junit_named_after_the_drill() {
        let mut fx = recovered();
        fx.drill.property("dataset_rows", 48_213);
        let summary = fx.drill.finish().unwrap();
        let path = fx.reports.path().join("full_restore.xml");
        assert_eq!(summary.junit_path.as_deref(), Some(path.as_path()));
        let xml = fs::read_to_string(&path).unwrap();
        assert!(xml.contains(r#"<testsuite name="full_restore""#), "{xml}");
        summary.assert_passed();

        let json = serde_json::to_string(&summary).unwrap();
        assert_eq!(serde_json::from_str::<DrillSummary>(&json).unwrap(), summary);
    }

    #[test]
    fn an_unwritable_report_still_appends_the_history_record() {
        let mut fx = recovered();
        // A file where the report directory should be.
        let blocker = fx.reports.path().join("reports");
        fs::write(&blocker, "not a directory").unwrap();
        let history_dir = fx.reports.path().join("history");
        fx.drill.outputs_mut::<DrillReports>().unwrap().report_dir = Some(blocker.clone());
        let error = fx.drill.finish().unwrap_err();
        assert!(matches!(error, DrillError::WriteReport { .. }), "{error}");
        let history = fs::read_to_string(month_file(&history_dir, Month::of(t0()))).unwrap();
        assert_eq!(history.lines().count(), 1, "{history}");
        assert!(history.contains(r#""drill":"full_restore""#), "{history}");
    }

    #[test]
    fn drill_names_cannot_escape_the_report_dir() {
        let reports = DrillReports::new().with_report_dir("/reports");
        assert_eq!(
            reports.junit_path("../drills::restore/full"),
            Path::new("/reports/.._drills__restore_full.xml")
        );
    }

    #[test]
    fn dropping_an_unfinished_drill_writes_an_aborted_report() {
        let Fixture { drill, reports, .. } = recovered();
        drop(drill);
        let xml = fs::read_to_string(reports.path().join("full_restore.xml")).unwrap();
        assert!(
            xml.contains("the drill returned without calling `Drill::finish`"),
            "{xml}"
        );
    }

    #[test]
    fn assert_passed_names_the_report() {
        let mut fx = reported("doomed", Scenario::SinglePodCrash);
        fx.drill.check("smoke test", false, "HTTP 503");
        let summary = fx.drill.finish().unwrap();
        let panic = catch_unwind(AssertUnwindSafe(|| summary.assert_passed())).unwrap_err();
        let message = panic.downcast_ref::<String>().expect("formatted panic message");
        for needle in [
            "drill `doomed` (Single pod crash) failed:",
            "check `smoke test` failed: HTTP 503",
            "doomed.xml",
        ] {
            assert!(message.contains(needle), "{needle:?} missing from {message}");
        }
    }

    #[test]
    fn finishing_a_drill_appends_its_record() {
        let mut fx = reported("hooked", Scenario::SinglePodCrash);
        fx.drill.incident("killed the pod");
        fx.drill.verified();
        fx.drill.finish().unwrap();
        let history = history_of(fx.reports.path());
        assert_eq!(history.records.len(), 1, "{history:?}");
        assert_eq!(history.records[0].drill, "hooked");
        assert!(history.records[0].passed);
    }

    #[test]
    fn an_aborted_drill_is_recorded_as_aborted() {
        let Fixture { drill, reports, .. } = reported("dropped", Scenario::SinglePodCrash);
        drop(drill);
        let history = history_of(reports.path());
        assert_eq!(history.records.len(), 1, "{history:?}");
        assert_eq!(history.records[0].verdict_label(), "aborted");
    }

    #[test]
    fn an_unwritable_history_is_a_warning_not_a_failure() {
        let mut fx = reported("unwritable", Scenario::SinglePodCrash);
        // A file where the history directory should be.
        let blocker = fx.reports.path().join("history");
        fs::write(&blocker, "not a directory").unwrap();
        fx.drill.incident("killed the pod");
        fx.drill.verified();
        let summary = fx.drill.finish().expect("history failure must not fail the drill");
        summary.assert_passed();
        assert!(blocker.is_file());
    }

    #[test]
    fn report_dir_precedence() {
        let dir = |vars: &[(&str, &str)]| {
            let vars: std::collections::HashMap<&str, &str> = vars.iter().copied().collect();
            report_dir_from(|name| vars.get(name).map(OsString::from))
        };
        assert_eq!(dir(&[]), PathBuf::from("target/drill-reports"));
        assert_eq!(
            dir(&[("CARGO_TARGET_DIR", "/t")]),
            PathBuf::from("target/drill-reports")
        );
        assert_eq!(
            dir(&[("CARGO_TARGET_DIR", "/t"), ("DRILL_REPORT_DIR", "/r")]),
            PathBuf::from("/r")
        );
        assert_eq!(dir(&[("DRILL_REPORT_DIR", "")]), PathBuf::from("target/drill-reports"));
    }
}
