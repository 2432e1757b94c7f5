//! drillbook: disaster-recovery drills for PostgreSQL + S3 as tests you can run.

pub mod backup;
pub mod basebackup;
pub mod canary;
pub mod checklist;
pub mod cli;
pub mod drill;
pub mod drills;
pub mod env;
pub mod failover;
pub mod fault;
pub mod fixtures;
pub mod http;
pub mod integrity;
pub mod k8s;
pub mod pg;
pub mod pitr;
pub mod playbook;
pub mod progress;
pub mod reindex;
pub mod report;
pub mod restore;
mod serde_duration;
pub mod sessions;
pub mod store;
pub mod table_restore;
pub mod wal;
pub mod workload;
