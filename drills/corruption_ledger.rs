//! Decision matrix: "DB corruption (single table) — Restore table from
//! backup — < 30 min".
//!
//! The ledger amounts family: a faulty job rewrites an invoice line's amount
//! and inserts a charge without its credit. Both damage `invoice_lines` only.
//! The suite detects both unbalanced invoices (measured phase "detect");
//! `invoice_lines` alone is restored from the newest logical backup
//! (`pg_restore -t` into a scratch database, swapped in inside one
//! transaction, see `drillbook::table_restore`); the suite then finds
//! nothing, chain and anchor included.

#[tokio::test]
async fn corruption_ledger() {
    drillbook::drills::corruption_ledger::run().await.assert_passed();
}
