//! Physical corruption: bytes flipped in a relation file on disk of a stopped
//! cluster (data checksums on), as a failing disk or a bad storage layer
//! would. Detected by the page checksum failure on read and by `pg_amcheck`;
//! recovered from the base backup plus every archived WAL segment in S3,
//! which lose nothing that was archived before the damage.

#[tokio::test]
async fn db_corruption_physical() {
    drillbook::drills::db_corruption_physical::run_with(std::path::Path::new(env!("CARGO_BIN_EXE_drillbook")))
        .await
        .assert_passed();
}
