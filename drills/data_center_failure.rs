//! Decision matrix: "Data center failure — Failover to standby region — < 1 hour",
//! and the playbook's RPO promise for streaming replication (5 minutes).
//!
//! A hot standby (second cluster, `pg_basebackup` + streaming replication)
//! follows the primary while the application writes and a canary commits a
//! row every 5 ms. The primary is killed with SIGKILL and its data directory
//! deleted mid-write; the standby is promoted. RTO runs from the kill to a
//! promoted standby that passes the playbook's checks; RPO is the kill time
//! minus the newest canary that survived on the standby.

#[tokio::test]
async fn data_center_failure() {
    drillbook::drills::data_center_failure::run().await.assert_passed();
}
