//! Decision matrix: "Database corruption (full) — Full restore from backup".
//!
//! The audit chain family: a careful attacker edits an audit payload and
//! re-hashes the rest of the chain (nothing inside the database can tell),
//! another edit leaves a hash stale, and the newest rows are deleted. The
//! suite, given the anchor from the backup manifest, detects all three
//! (measured phase "detect"); the database is restored from the backup and
//! verified with zero findings.

#[tokio::test]
async fn corruption_audit_chain() {
    drillbook::drills::corruption_audit_chain::run().await.assert_passed();
}
