//! Decision matrix: "DB corruption (single table) — Restore table from
//! backup — < 30 min".
//!
//! A faulty job corrupts `invoice_lines` (charges rewritten, lines deleted)
//! while the rest of the database keeps taking writes. The playbook's checks
//! find it; the table alone is restored from the newest logical backup by
//! the command an operator runs, `drillbook restore --table invoice_lines
//! --swap-into URL` (`pg_restore -t` into a scratch database, then swapped
//! in inside one transaction); the checks pass again and the other tables
//! keep every row written since the backup.
//!
//! Runs on every backend: on staging the faulty job and the later writes
//! hit the drill's own restored copy of the newest backup
//! (see `workbench.rs`), never the staging database.

use std::path::Path;
use std::time::Duration;

use crate::drill::{Drill, DrillSummary, RecoveryPoint, Result, StepContext};
use crate::playbook::PlaybookAnswers;
use crate::playbook::Scenario;
use crate::workload::write_activity;
use sqlx::{Connection, PgConnection};

use super::workbench::Workbench;

const TABLE: &str = "public.invoice_lines";

pub async fn run() -> Result<DrillSummary> {
    run_with(&super::program()).await
}

/// [`run`] with the `drillbook` binary whose `restore --table` it drives
/// (in tests, `env!("CARGO_BIN_EXE_drillbook")`).
pub async fn run_with(program: &Path) -> Result<DrillSummary> {
    let mut drill = super::steps::reported_drill("db-corruption-single-table", Scenario::DbCorruptionSingleTable)?
        .with_rpo_target(Duration::from_secs(24 * 3600));
    let outcome = story(&mut drill, program).await;
    drill.conclude(outcome)
}

async fn story(drill: &mut Drill, program: &Path) -> Result<()> {
    drill.property("table", TABLE);
    let bench = Workbench::open(drill, 42).await?;
    // The damage goes only where the bench's token allows it.
    let source = bench.disposable.target().clone();
    let admin = bench.admin.clone();
    let late = drill
        .step("application keeps writing", write_activity(&source, 15))
        .await?;

    drill.incident("faulty job corrupts invoice_lines: charge amounts rewritten, lines deleted");
    const JOB: &str = "run the faulty job";
    let mut conn = PgConnection::connect_with(&source.connect_options()).await.step(JOB)?;
    sqlx::raw_sql(
        "UPDATE invoice_lines SET amount = amount + 17.03 WHERE line_type = 'charge' AND id % 5 = 0;
         DELETE FROM invoice_lines WHERE id % 11 = 0;",
    )
    .execute(&mut conn)
    .await
    .step(JOB)?;
    let detected = drill
        .step("playbook checks find the damage", PlaybookAnswers::collect(&source))
        .await?;
    drill.check(
        "corruption detected",
        !detected.problems().is_empty(),
        detected.problems().join("; "),
    );

    let store = bench.env.store();
    let (admin_url, source_url, bucket) = (admin.url(), source.url(), store.config().location());
    let report = drill
        .data_step(
            "drillbook restore --table invoice_lines --swap-into (one transaction)",
            super::steps::operator_command(
                program,
                store,
                &[
                    "restore",
                    "--admin-url",
                    &admin_url,
                    "--bucket",
                    &bucket,
                    "--table",
                    TABLE,
                    "--swap-into",
                    &source_url,
                ],
            ),
            super::steps::moved_by_table_restore_command,
        )
        .await?;
    let rows_restored = report["rows_restored"]
        .as_u64()
        .step("read rows_restored from the command's report")?;
    drill.property("rows_restored", rows_restored);
    let expected = bench
        .manifest
        .rows_in(TABLE)
        .or_else(|| bench.manifest.rows_in("invoice_lines"));
    drill.check(
        "restored row count matches the manifest",
        Some(rows_restored) == expected,
        format!("{rows_restored} restored, {expected:?} in manifest"),
    );
    let answers = drill
        .step(
            "playbook checks (3.2 step 4, 4.1-4.5)",
            PlaybookAnswers::collect(&source),
        )
        .await?;
    let problems = answers.problems();
    drill.check("playbook checks pass", problems.is_empty(), problems.join("; "));
    const COUNT: &str = "count the late writes and scratch databases";
    let (late_kept,): (i64,) = sqlx::query_as("SELECT count(*) FROM audit_logs WHERE id = ANY($1)")
        .bind(&late.audit_ids)
        .fetch_one(&mut conn)
        .await
        .step(COUNT)?;
    drill.check(
        "other tables keep the writes made after the backup",
        late_kept as usize == late.audit_ids.len(),
        format!("{late_kept} of {} late audit rows present", late.audit_ids.len()),
    );
    let scratch_left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname LIKE '%\\_scratch\\_%'")
        .fetch_one(&mut conn)
        .await
        .step(COUNT)?;
    drill.check("scratch database removed", scratch_left == 0, scratch_left.to_string());
    drill.verified();
    super::steps::record_dataset(drill, &source, Some(bench.manifest.dump.bytes)).await?;
    // Playbook section 7: resume backups, then the post-recovery checklist.
    super::post_recovery_checklist(drill, &source, bench.resume_backups(&admin)).await?;
    // The table is back to the backup's snapshot: what it had later is the loss.
    drill.recovery_point(RecoveryPoint::snapshot(&bench.manifest));
    conn.close().await.step(COUNT)?;

    bench.env.cleanup().await.step("clean up the environment")?;
    Ok(())
}
