//! Decision matrix: "DB corruption (full) — Point-in-time recovery — < 2 hours".
//!
//! The primary archives its WAL to S3 (`drillbook wal-push`) and has a base
//! backup there. While the application and a canary write, a bad migration
//! corrupts the ledger (charges tripled, audit rows deleted). The playbook's
//! checks detect it; the database is recovered to the moment before the
//! migration from the base backup plus archived WAL (`drillbook wal-fetch`),
//! and the drill proves every canary committed before that moment is there
//! and none after it.

#[tokio::test]
async fn db_corruption_full() {
    drillbook::drills::db_corruption_full::run_with(std::path::Path::new(env!("CARGO_BIN_EXE_drillbook")))
        .await
        .assert_passed();
}
