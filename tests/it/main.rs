//! drillbook's integration tests, one test binary: one module per area
//! (each was a test binary of its own), and [`common`] for the helpers they
//! share. A single binary links once instead of two dozen times.
//!
//! Tests write reports, JUnit and drill history only into their own temp
//! dirs ([`common::drill_in`], or `DRILL_REPORT_DIR`/`DRILL_HISTORY_DIR` set
//! on the `drillbook` processes they start), never into `target/`.
//!
//! ```text
//! cargo nextest run                                   # all of them but the lanes below
//! cargo nextest run --features failpoints -E 'test(/^crash_points::/) | test(/^expire::crash_/)'   # crash lane
//! cargo nextest run --run-ignored only -E 'test(/^report_html::/)'       # browser lane (Chromium)
//! ```

mod common;

// issue 13: the archive faults `check` must catch, on disposable buckets only.
mod archive_faults;
mod audit_soak;
mod backup_restore;
// issue 15: base backups restored in one pass (compressed, verified as written).
mod basebackup;
// issue 11: processes killed at every crash point; the failpoints exist only
// with the feature (src/failpoint.rs). .ci/run runs it.
#[cfg(feature = "failpoints")]
mod crash_points;
// issue 5: backends (containers, staging) and drill.toml.
mod env_backends;
// issue 13 item 5: retention (drillbook expire).
mod expire;
mod fixture_ledger;
mod http_checks;
mod integrity_properties;
mod integrity_suite;
mod k8s_api;
// issue 12: the README's layering, checked.
mod last_good;
mod layering;
// issue 13: the operator's commands (basebackup, check, restore --table).
mod operator_cli;
mod orphaned_clusters;
mod pitr_recovery;
mod playbook_sql;
mod progress_cli;
mod recover_cli;
mod reindex;
mod report_cli;
mod report_history_s3;
mod report_html;
mod run_cli;
mod staging_config;
mod staging_rehearsal;
mod store_transfer;
mod table_restore;
mod verify_cli;
mod wal_archive;
