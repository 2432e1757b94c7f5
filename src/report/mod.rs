//! Drill reports: what a finished drill leaves behind for CI and for people.
//!
//! Reports are pure renderings of a [`DrillSummary`](crate::drill::DrillSummary):
//! the harness records and judges, a report only formats. That keeps every
//! report format consistent with the verdict, and testable without a drill.

pub mod history;
pub mod junit;
pub mod monthly;
pub mod render;
pub mod schedule;
