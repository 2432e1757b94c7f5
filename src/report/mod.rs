//! Drill reports (layer 5): what a finished drill leaves behind for CI and
//! for people.
//!
//! Reports are pure renderings of a [`DrillSummary`](crate::drill::DrillSummary)
//! or of the history records made from it: the harness records and judges,
//! a report only formats. That keeps every report format consistent with
//! the verdict, and testable without a drill.
//!
//! # What this room owns
//!
//! - [`drill_reports`]: [`DrillReports`], the harness's outputs sink
//!   (JUnit file and history record of each drill run);
//! - [`junit`]: one drill's JUnit document;
//! - [`history`]: the versioned history record and its local and S3 stores;
//! - [`month`]: the calendar month history and reports are cut by;
//! - [`monthly`]: the monthly report's model and its merged JUnit;
//! - [`projection`]: a run's RTO projected to a production-size database
//!   from the throughput of its data-moving phases;
//! - [`render`]: the monthly report as Markdown and HTML;
//! - [`schedule`]: the playbook's drill schedule (cadences).

pub mod drill_reports;
pub mod history;
pub mod junit;
pub mod month;
pub mod monthly;
pub mod projection;
pub mod render;
pub mod schedule;

pub use drill_reports::{DrillReports, report_dir};
