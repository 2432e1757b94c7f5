//! Decision matrix: "Database corruption (full) — Full restore from backup".
//!
//! The audit chain family: a careful attacker edits an audit payload and
//! re-hashes the rest of the chain (nothing inside the database can tell),
//! another edit leaves a hash stale, and the newest rows are deleted. The
//! suite, given the anchor from the backup manifest, detects all three
//! (measured phase "detect"); the database is restored from the backup and
//! verified with zero findings.
//!
//! Runs on every backend: on staging the damage goes into the drill's own
//! restored copy of the newest backup (see `workbench.rs`).

use crate::drill::{Drill, DrillSummary, RecoveryPoint, Result, StepContext};
use crate::fault;
use crate::integrity::suite::run_suite;
use crate::playbook::Scenario;

use super::workbench::Workbench;

pub async fn run() -> Result<DrillSummary> {
    let mut drill = super::steps::reported_drill("corruption-audit-chain", Scenario::DbCorruptionFull)?;
    let outcome = story(&mut drill).await;
    drill.conclude(outcome)
}

async fn story(drill: &mut Drill) -> Result<()> {
    let mut bench = Workbench::open(drill, 7).await?;
    let source = bench.database.clone();
    let options = bench.suite_options()?;
    let anchor = options.anchor.clone().step("read the chain anchor")?;
    drill.property("anchor_head_id", anchor.head_id);

    let target = &bench.disposable;
    drill.incident("audit chain corrupted: payload edited, chain re-hashed, newest rows deleted");
    const INJECT: &str = "inject the audit chain corruption";
    let injected = [
        fault::tamper_audit_payload(target, 1_234).await.step(INJECT)?,
        fault::tamper_and_rehash(target, anchor.head_id / 2)
            .await
            .step(INJECT)?,
        fault::truncate_chain_tail(target, 50).await.step(INJECT)?,
    ];

    let report = drill.step("detect", run_suite(&source, &options)).await?;
    drill.property("findings_after_incident", report.findings.len());
    drill.property("findings_missed_by_playbook_4_1", report.missed_by_playbook().len());
    // The truncation deleted the re-hashed head, so the anchor reports the
    // head gone; the stale hash of row 1234 was re-hashed over by the attacker
    // only if it came after the re-hashed row.
    let anchor_gone = report
        .findings_of(crate::integrity::CheckName::ChainAnchor)
        .iter()
        .any(|f| f.key.as_deref() == Some(&anchor.head_id.to_string()));
    drill.check(
        "anchor check sees the rewritten and truncated chain",
        anchor_gone,
        format!("{:?}", report.findings.len()),
    );
    for expected in injected.iter().flat_map(|i| &i.expect) {
        let found = report.findings.iter().any(|f| expected.matches(f));
        drill.check(
            &format!("{} finding at {:?}", expected.check, expected.key),
            found,
            format!("{} findings", report.findings.len()),
        );
    }
    drill.check(
        "the playbook's 4.1 alone misses the re-hash and the truncation",
        report.playbook_4_1_broken_links == Some(0) && !report.missed_by_playbook().is_empty(),
        format!("4.1 counted {:?}", report.playbook_4_1_broken_links),
    );

    let (admin, restored) = bench
        .restore_and_verify(drill, "restored database has zero findings against the anchor")
        .await?;
    drill.verified();
    // Playbook section 7: resume backups, then the post-recovery checklist.
    super::post_recovery_checklist(drill, &restored.target, bench.resume_backups(&admin)).await?;
    // The database is back to the backup's snapshot: what came later is the loss.
    drill.recovery_point(RecoveryPoint::snapshot(&bench.manifest));

    bench.env.cleanup().await.step("clean up the environment")?;
    Ok(())
}
