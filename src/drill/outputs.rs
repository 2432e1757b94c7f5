//! What a drill leaves behind goes through a sink the harness defines and
//! does not implement: [`Outputs`]. `report` implements it (JUnit under
//! `report::report_dir`, the history record) and `drills` wires it into the
//! built-in drills; a drill without one writes nothing. So the harness
//! (layer 4) never imports the reports (layer 5).

use std::any::Any;
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
