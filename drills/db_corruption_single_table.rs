//! Decision matrix: "DB corruption (single table) — Restore table from
//! backup — < 30 min".
//!
//! A faulty job corrupts `invoice_lines` (charges rewritten, lines deleted)
//! while the rest of the database keeps taking writes. The playbook's checks
//! find it; the table alone is restored from the newest logical backup
//! (`pg_restore -t` into a scratch database, then swapped in inside one
//! transaction); the checks pass again and the other tables keep every row
//! written since the backup.

#[tokio::test]
async fn db_corruption_single_table() {
    drillbook::drills::db_corruption_single_table::run()
        .await
        .assert_passed();
}
