//! Decision matrix: "DB corruption (full) — Full restore from backup".
//!
//! The structure family: an invoice line points at an invoice that does not
//! exist, row-level security is switched off on a protected table, and a
//! billing run is left `running`. The suite detects all three (measured
//! phase "detect"); the database is restored from the newest backup with
//! `restore_database`, which must also bring RLS back: `ENABLE ROW LEVEL
//! SECURITY` and the policies are table DDL in the dump, not ACL entries, so
//! the playbook's `--no-acl` restore keeps them. The restored database is
//! verified with zero findings against the manifest's anchor.

#[tokio::test]
async fn corruption_structure() {
    drillbook::drills::corruption_structure::run().await.assert_passed();
}
