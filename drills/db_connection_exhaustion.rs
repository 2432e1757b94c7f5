//! Decision matrix: "DB connection exhaustion — Kill queries + restart — < 15 min".
//!
//! A leaking application fills every connection slot with idle sessions and
//! long-running queries until the server refuses new ones. The responder
//! (a superuser on a reserved slot) detects it from `pg_stat_activity`,
//! terminates sessions idle first and oldest first, never its own, and
//! proves the application can connect and write again.

#[tokio::test]
async fn db_connection_exhaustion() {
    drillbook::drills::db_connection_exhaustion::run().await.assert_passed();
}
