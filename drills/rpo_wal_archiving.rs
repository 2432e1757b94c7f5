//! The playbook's RPO promise for WAL archiving: 1 hour.
//!
//! A primary archives WAL to S3 with `archive_timeout` set; a canary commits
//! every 5 ms. The primary is lost outright (SIGKILL, data directory
//! deleted), so only S3 remains: the newest base backup plus every archived
//! segment is replayed to the end of the archive. The canaries written in the
//! segment that was still open are the loss, so the measured RPO must be
//! within `archive_timeout` plus the time to archive that one segment.

#[tokio::test]
async fn rpo_wal_archiving() {
    drillbook::drills::rpo_wal_archiving::run_with(std::path::Path::new(env!("CARGO_BIN_EXE_drillbook")))
        .await
        .assert_passed();
}
