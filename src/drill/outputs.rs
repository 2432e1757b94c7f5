//! What a drill leaves behind goes through a sink the harness defines and
//! does not implement: [`Outputs`]. `report` implements it (JUnit under
//! [`report_dir`], the history record) and `drills` wires it into the
//! built-in drills; a drill without one writes nothing. So the harness
//! (layer 4) never imports the reports (layer 5).

use std::any::Any;
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

use super::{DrillSummary, Result};

/// Where a finished (or abandoned) drill's record goes.
///
/// `Any` so the one who installed a sink can find it again
/// ([`Drill::outputs_mut`](super::Drill::outputs_mut)) to adjust it.
pub trait Outputs: Any + Send + Sync + fmt::Debug {
    /// Writes what a drill that reached [`Drill::finish`](super::Drill::finish)
    /// leaves behind. Returns where its JUnit report went, if it wrote one.
    ///
    /// # Errors
    ///
    /// [`DrillError::WriteReport`](super::DrillError::WriteReport) if the
    /// report cannot be written; `finish` returns it.
    fn finished(&mut self, summary: &DrillSummary) -> Result<Option<PathBuf>>;

    /// Writes what a drill dropped without `finish` leaves behind
    /// (`summary.aborted` says why), so CI shows a failed drill instead of
    /// a missing file. Called from `drop`: nowhere to return an error to,
    /// so a failure is logged, never a panic.
    fn aborted(&mut self, summary: &DrillSummary);
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
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn report_dir_precedence() {
        let dir = |vars: &[(&str, &str)]| {
            let vars: HashMap<&str, &str> = vars.iter().copied().collect();
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
