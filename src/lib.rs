//! drillbook: disaster-recovery drills for PostgreSQL + S3 as tests you can run.

pub mod drill;
pub mod report;
pub mod pg;
pub mod fixtures;
mod serde_duration;
pub mod store;
pub mod env;
pub mod playbook;
pub mod backup;
pub mod restore;
pub mod workload;
