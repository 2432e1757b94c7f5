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
//!
//! Runs on every backend: on staging the damage goes into the drill's own
//! restored copy of the newest backup (see `workbench.rs`).

use crate::drill::{Drill, DrillSummary, RecoveryPoint, Result, StepContext};
use crate::fault;
use crate::integrity::CheckName;
use crate::integrity::suite::run_suite;
use crate::playbook::Scenario;
use sqlx::{Connection, PgConnection};

use super::workbench::Workbench;

const RLS_TABLE: &str = "payments";

pub async fn run() -> Result<DrillSummary> {
    let mut drill = super::steps::reported_drill("corruption-structure", Scenario::DbCorruptionFull)?;
    let outcome = story(&mut drill).await;
    drill.conclude(outcome)
}

async fn story(drill: &mut Drill) -> Result<()> {
    let mut bench = Workbench::open(drill, 13).await?;
    let source = bench.database.clone();
    let options = bench.suite_options()?;

    const PICK: &str = "pick the rows to damage";
    let mut conn = PgConnection::connect_with(&source.connect_options()).await.step(PICK)?;
    let line_id: i64 =
        sqlx::query_scalar("SELECT id FROM invoice_lines WHERE deleted_at IS NULL ORDER BY id OFFSET 50 LIMIT 1")
            .fetch_one(&mut conn)
            .await
            .step(PICK)?;
    let run_id: i64 =
        sqlx::query_scalar("SELECT run_id FROM billing_runs WHERE status = 'completed' ORDER BY run_id LIMIT 1")
            .fetch_one(&mut conn)
            .await
            .step(PICK)?;
    conn.close().await.step(PICK)?;

    let target = &bench.disposable;
    drill.incident("structure corrupted: orphaned invoice line, RLS disabled, billing run stuck in running");
    const INJECT: &str = "inject the structure corruption";
    let injected = [
        fault::orphan_invoice_line(target, line_id).await.step(INJECT)?,
        fault::disable_rls(target, RLS_TABLE).await.step(INJECT)?,
        fault::stuck_billing_run(target, run_id).await.step(INJECT)?,
    ];

    let report = drill.step("detect", run_suite(&source, &options)).await?;
    drill.property("findings_after_incident", report.findings.len());
    for (check, what) in [
        (CheckName::OrphanedInvoiceLines, "orphaned invoice line"),
        (CheckName::RlsEnabled, "RLS disabled"),
        (CheckName::BillingRuns, "stuck billing run"),
    ] {
        drill.check(
            &format!("{what} detected ({check})"),
            injected.iter().flat_map(|i| &i.expect).any(|e| e.check == check) && !report.findings_of(check).is_empty(),
            format!("{:?}", report.findings_of(check)),
        );
    }
    for expected in injected.iter().flat_map(|i| &i.expect) {
        drill.check(
            &format!("{} finding at {:?} detected", expected.check, expected.key),
            report.findings.iter().any(|f| expected.matches(f)),
            format!("{:?}", report.findings),
        );
    }

    let (admin, restored) = bench
        .restore_and_verify(drill, "restored database has zero findings, RLS included")
        .await?;
    const RLS: &str = "read RLS and policies on the restored copy";
    let mut conn = PgConnection::connect_with(&restored.target.connect_options())
        .await
        .step(RLS)?;
    let (rls, policies): (bool, i64) = sqlx::query_as(
        "SELECT c.relrowsecurity, (SELECT count(*) FROM pg_policies p WHERE p.tablename = c.relname) \
         FROM pg_class c WHERE c.oid = to_regclass($1)",
    )
    .bind(format!("public.{RLS_TABLE}"))
    .fetch_one(&mut conn)
    .await
    .step(RLS)?;
    conn.close().await.step(RLS)?;
    drill.check(
        &format!("{RLS_TABLE} has RLS enabled and its policies after the restore"),
        rls && policies > 0,
        format!("relrowsecurity {rls}, {policies} policies"),
    );
    drill.verified();
    // Playbook section 7: resume backups, then the post-recovery checklist.
    super::post_recovery_checklist(drill, &restored.target, bench.resume_backups(&admin)).await?;
    drill.recovery_point(RecoveryPoint::snapshot(&bench.manifest));

    bench.env.cleanup().await.step("clean up the environment")?;
    Ok(())
}
