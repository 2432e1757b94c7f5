//! drillbook: disaster-recovery drills for PostgreSQL + S3 as tests you can run.

pub mod backup;
pub mod cli;
pub mod drill;
pub mod env;
pub mod fixtures;
pub mod pg;
pub mod playbook;
pub mod report;
pub mod restore;
mod serde_duration;
pub mod store;
pub mod workload;
