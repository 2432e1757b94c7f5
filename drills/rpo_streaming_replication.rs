//! The playbook's RPO promise for streaming replication: 5 minutes.
//!
//! Like the data-center failover, but the link between the regions is
//! congested: for a few seconds before the primary dies the standby receives
//! nothing (a stalled [`ReplicationLink`]). The measured RPO must reflect that
//! lag (it is at least the stall, the canaries written during it are lost)
//! and stay within the 5-minute target; the survivors are a gap-free prefix.

#[tokio::test]
async fn rpo_streaming_replication() {
    drillbook::drills::rpo_streaming_replication::run()
        .await
        .assert_passed();
}
