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
pub mod integrity;
pub mod wal;
pub mod basebackup;
pub mod fault;
pub mod pitr;
pub mod canary;
pub mod failover;
pub mod sessions;
pub mod table_restore;
pub mod reindex;
pub mod http;
pub mod k8s;
pub mod checklist;
