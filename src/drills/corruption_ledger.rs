//! Decision matrix: "DB corruption (single table) — Restore table from
//! backup — < 30 min".
//!
//! The ledger amounts family: a faulty job rewrites an invoice line's amount
//! and inserts a charge without its credit. Both damage `invoice_lines` only.
//! The suite detects both unbalanced invoices (measured phase "detect");
//! `invoice_lines` alone is restored from the newest logical backup
//! (`pg_restore -t` into a scratch database, swapped in inside one
//! transaction, see `crate::table_restore`); the suite then finds
//! nothing, chain and anchor included.
//!
//! Runs on every backend: on staging the damage goes into the drill's own
//! restored copy of the newest backup (see `workbench.rs`), and the table
//! is restored into that copy.

use crate::drill::{Drill, DrillSummary, RecoveryPoint, Result, StepContext};
use crate::fault;
use crate::integrity::CheckName;
use crate::integrity::suite::run_suite;
use crate::playbook::Scenario;
use crate::table_restore::restore_table;
use sqlx::{Connection, PgConnection};

use super::workbench::Workbench;

const TABLE: &str = "public.invoice_lines";

pub async fn run() -> Result<DrillSummary> {
    let mut drill = super::steps::reported_drill("corruption-ledger", Scenario::DbCorruptionSingleTable)?;
    let outcome = story(&mut drill).await;
    drill.conclude(outcome)
}

async fn story(drill: &mut Drill) -> Result<()> {
    drill.property("table", TABLE);
    let bench = Workbench::open(drill, 11).await?;
    let (bins, source, admin) = (&bench.bins, bench.database.clone(), bench.admin.clone());
    let options = bench.suite_options()?;

    // A live line of one invoice, and another invoice to unbalance.
    const PICK: &str = "pick the rows to damage";
    let mut conn = PgConnection::connect_with(&source.connect_options()).await.step(PICK)?;
    let (line_id, line_invoice): (i64, i64) = sqlx::query_as(
        "SELECT id, invoice_id FROM invoice_lines WHERE deleted_at IS NULL ORDER BY id OFFSET 100 LIMIT 1",
    )
    .fetch_one(&mut conn)
    .await
    .step(PICK)?;
    let other_invoice: i64 =
        sqlx::query_scalar("SELECT id FROM monthly_invoices WHERE id <> $1 ORDER BY id OFFSET 10 LIMIT 1")
            .bind(line_invoice)
            .fetch_one(&mut conn)
            .await
            .step(PICK)?;
    conn.close().await.step(PICK)?;

    let target = &bench.disposable;
    drill.incident("ledger amounts corrupted: an invoice line's amount rewritten, a charge added without credit");
    const INJECT: &str = "inject the ledger corruption";
    let injected = vec![
        fault::tamper_amount(target, "invoice_lines", line_id, 4_217)
            .await
            .step(INJECT)?,
        fault::unbalance_invoice(target, other_invoice, 9_999)
            .await
            .step(INJECT)?,
    ];

    let report = drill.step("detect", run_suite(&source, &options)).await?;
    drill.property("findings_after_incident", report.findings.len());
    for injected in &injected {
        drill.check(
            &format!("{:?} promises a finding", injected.fault),
            !injected.expect.is_empty(),
            format!("{injected:?}"),
        );
    }
    for expected in injected.iter().flat_map(|i| &i.expect) {
        drill.check(
            &format!("{} finding at {:?} detected", expected.check, expected.key),
            report.findings.iter().any(|f| expected.matches(f)),
            format!("{:?}", report.findings),
        );
    }
    let unbalanced: Vec<_> = report
        .findings_of(CheckName::InvoiceBalance)
        .iter()
        .filter_map(|f| f.key.clone())
        .collect();
    drill.check(
        "4.3 names exactly the two damaged invoices",
        unbalanced == [line_invoice.min(other_invoice), line_invoice.max(other_invoice)].map(|id| id.to_string()),
        format!("{unbalanced:?}"),
    );

    let restored = drill
        .step(
            "restore invoice_lines from the newest backup (one transaction)",
            restore_table(bins, &admin, &source, bench.env.store(), TABLE),
        )
        .await?;
    drill.check(
        "restored row count matches the manifest",
        Some(restored.rows_restored) == bench.manifest.rows_in("invoice_lines"),
        format!(
            "{} restored, {:?} in manifest",
            restored.rows_restored,
            bench.manifest.rows_in("invoice_lines")
        ),
    );
    let verified = drill
        .step("verify database after table restore", run_suite(&source, &options))
        .await?;
    drill.check(
        "zero findings after the table restore",
        verified.is_clean(),
        format!("{:?}", verified.findings),
    );
    drill.verified();
    // Playbook section 7: resume backups, then the post-recovery checklist.
    super::post_recovery_checklist(drill, &source, bench.resume_backups(&admin)).await?;
    // Nothing was written after the backup: the table restore loses nothing.
    drill.recovery_point(RecoveryPoint::snapshot(&bench.manifest));

    bench.env.cleanup().await.step("clean up the environment")?;
    Ok(())
}
