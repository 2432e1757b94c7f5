//! `drillbook expire`: retention for the bucket (see [`crate::expire`]).

use clap::Args;

use super::exit;
use super::interrupt::Interrupts;
use super::transfer::S3Args;
use crate::expire::{ExpireReport, Retention, expire};

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  \
drillbook expire --bucket s3://immoflowme-backups --keep-daily 14 --keep-base 2 --dry-run\n\n\
Keeps the newest N daily dumps and base backups, and the newest dump that verifies (size and sha256)\n\
and the newest intact base backup even when older; deletes older ones, and the archived WAL wholly\n\
before the start of the oldest kept base backup (history files and other timelines are kept).\n\
Never touches anchors/, check/, or a backup whose writer still runs. A backup's manifest goes first,\n\
WAL oldest first: killed at any moment the bucket stays consistent, and a re-run finishes the job.\n\
Exit 0 done (or planned, with --dry-run), 2 could not run (--keep-* 0, a missing bucket).")]
pub(super) struct ExpireArgs {
    #[command(flatten)]
    s3: S3Args,
    /// Keep this many daily dumps (daily/<stamp>/), newest first.
    #[arg(long, value_name = "N")]
    keep_daily: usize,
    /// Keep this many base backups (base/<stamp>/), newest first, and the WAL they need.
    #[arg(long, value_name = "N")]
    keep_base: usize,
    /// Print the plan; delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the plan (kept, deleted with kind and reason, bytes_freed) as JSON on stdout.
    #[arg(long)]
    json: bool,
}

impl ExpireArgs {
    pub(super) async fn run(self) -> anyhow::Result<u8> {
        let mut interrupts = Interrupts::catch()?;
        let retention = Retention::new(self.keep_daily, self.keep_base)?;
        let store = self.s3.store().await?;
        let report = match interrupts.run(expire(&store, retention, self.dry_run)).await {
            Ok(report) => report?,
            Err(interrupted) => {
                // Each deletion keeps the bucket consistent; a re-run finishes the job.
                tracing::warn!(
                    "{} received: stopped between deletions; run expire again to finish",
                    interrupted.name
                );
                return Ok(interrupted.exit_code);
            }
        };
        if self.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print_human(&report);
        }
        Ok(exit::SUCCESS)
    }
}

fn print_human(report: &ExpireReport) {
    let plan = &report.plan;
    println!(
        "expire {}: keep {} daily, {} base{}",
        plan.location,
        plan.keep_daily,
        plan.keep_base,
        if report.dry_run {
            " (dry run: nothing is deleted)"
        } else {
            ""
        }
    );
    for kept in &plan.kept {
        println!("  keep    {:<14} {}  {}", kept.kind.name(), kept.stamp, kept.reason);
    }
    // The same lines with --dry-run: the header and the total say nothing was deleted.
    for deletion in &plan.deleted {
        println!(
            "  delete  {:<14} {}  {} object(s), {}: {}",
            deletion.kind.name(),
            deletion.name(),
            deletion.keys.len(),
            crate::progress::bytes(deletion.bytes),
            deletion.reason
        );
    }
    for left in &plan.left_alone {
        println!("  leave   {:<14} {}  {}", left.kind.name(), left.stamp, left.reason);
    }
    for note in &plan.notes {
        println!("  note: {note}");
    }
    if report.dry_run {
        println!(
            "would delete {} object(s), {} (planned in {})",
            plan.objects,
            crate::progress::bytes(plan.bytes_freed),
            crate::progress::duration(report.elapsed)
        );
    } else {
        println!(
            "deleted {} object(s), {} in {}",
            report.deleted_objects,
            crate::progress::bytes(plan.bytes_freed),
            crate::progress::duration(report.elapsed)
        );
    }
}
