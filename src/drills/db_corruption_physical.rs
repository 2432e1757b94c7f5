//! Physical corruption: bytes flipped in a relation file on disk of a stopped
//! cluster (data checksums on), as a failing disk or a bad storage layer
//! would ([`crate::fault::flip_page_bytes`], on the drill's own primary only). Detected by the page checksum failure on read and by `pg_amcheck`;
//! recovered from the base backup plus every archived WAL segment in S3,
//! which lose nothing that was archived before the damage.
//!
//! Runs on embedded and on containers, where the primary's `PGDATA` is a
//! directory of this machine mounted into its container, so the damage is
//! done the same way while the container is stopped.

use std::path::Path;
use std::time::Duration;

use crate::canary::{CanaryWriter, check_canaries};
use crate::drill::{Drill, DrillSummary, Result, StepContext};
use crate::env::APP_DATABASE;
use crate::fault::{self, Disposable};
use crate::pg::tools::pg_amcheck;
use crate::pitr::RecoveryTarget;
use crate::playbook::PlaybookAnswers;
use crate::playbook::Scenario;
use crate::wal::switch_and_wait_archived;
use sqlx::{Connection, PgConnection};

pub async fn run() -> Result<DrillSummary> {
    run_with(&super::program()).await
}

/// [`run`] with the `drillbook` binary the server's `archive_command` and
/// `restore_command` call (in tests, `env!("CARGO_BIN_EXE_drillbook")`).
pub async fn run_with(program: &Path) -> Result<DrillSummary> {
    let mut drill = super::steps::reported_drill("db-corruption-physical", Scenario::DbCorruptionFull)?
        .with_rpo_target(Duration::from_secs(3600));
    let outcome = story(&mut drill, program).await;
    drill.conclude(outcome)
}

async fn story(drill: &mut Drill, program: &Path) -> Result<()> {
    let (mut env, _) = super::steps::archiving_primary(drill, program, Duration::from_secs(60)).await?;
    let source = env.source();
    let canary = CanaryWriter::start(&source, Duration::from_millis(5))
        .await
        .step("start the canary writer")?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let canaries = canary.stop().await;
    // The damage goes only where the token allows it: the drill's own primary.
    let disposable = Disposable::archiving_primary(&env);
    let relation = fault::locate_relation(&disposable, "invoice_lines")
        .await
        .step("find invoice_lines on disk")?;
    const COUNT: &str = "count invoice_lines before the damage";
    let mut conn = PgConnection::connect_with(&source.connect_options())
        .await
        .step(COUNT)?;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM invoice_lines")
        .fetch_one(&mut conn)
        .await
        .step(COUNT)?;
    conn.close().await.step(COUNT)?;
    const FLUSH: &str = "archive the primary's last WAL";
    let mut admin = PgConnection::connect_with(&env.admin().connect_options())
        .await
        .step(FLUSH)?;
    switch_and_wait_archived(&mut admin, Duration::from_secs(120))
        .await
        .step(FLUSH)?;
    admin.close().await.step(FLUSH)?;
    drill.step("maintenance stop", env.stop_primary()).await?;

    drill.incident("storage corrupts invoice_lines on disk: bytes flipped in its first page");
    fault::flip_page_bytes(&disposable, &relation, 6000, 16).step("flip bytes in invoice_lines' first page")?;
    drill.step("start the damaged primary", env.restart_primary()).await?;
    // A restarted container may listen on another port.
    let source = env.source();

    const READ: &str = "read the damaged table";
    let mut conn = PgConnection::connect_with(&source.connect_options()).await.step(READ)?;
    let read = sqlx::query_scalar::<_, i64>("SELECT sum(amount::numeric)::bigint FROM invoice_lines")
        .fetch_one(&mut conn)
        .await;
    let read_error = read.err().map(|e| e.to_string()).unwrap_or_default();
    // A container's log reaches us through Docker a moment after the error.
    let mut checksum_line = String::new();
    for _ in 0..50 {
        if let Some(line) = env
            .primary_log()
            .await
            .lines()
            .find(|l| l.contains("page verification failed"))
        {
            checksum_line = line.to_owned();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drill.check(
        "reading the table fails its page checksum",
        read_error.contains("invalid page") && checksum_line.contains("checksum"),
        format!("{read_error}; server log: {checksum_line}"),
    );
    conn.close().await.step(READ)?;
    let amcheck = drill.step("pg_amcheck", pg_amcheck(&env.bins, &source)).await?;
    drill.check(
        "pg_amcheck reports the damage",
        !amcheck.is_empty(),
        amcheck.lines().take(3).collect::<Vec<_>>().join(" | "),
    );

    let recovered = drill
        .data_step(
            "recover from S3: base backup + every archived segment",
            env.recover(&RecoveryTarget::EndOfArchive),
            super::steps::moved_by_recovery,
        )
        .await?;
    let target = recovered.server.admin().with_database(APP_DATABASE);
    let clean = drill
        .step("pg_amcheck on the recovered copy", pg_amcheck(&env.bins, &target))
        .await?;
    drill.check("pg_amcheck finds nothing", clean.is_empty(), clean);
    let answers = drill
        .step(
            "playbook checks (3.2 step 4, 4.1-4.5)",
            PlaybookAnswers::collect(&target),
        )
        .await?;
    let problems = answers.problems();
    drill.check("playbook checks pass", problems.is_empty(), problems.join("; "));
    const RECOUNT: &str = "count invoice_lines after recovery";
    let mut conn = PgConnection::connect_with(&target.connect_options())
        .await
        .step(RECOUNT)?;
    let recovered_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM invoice_lines")
        .fetch_one(&mut conn)
        .await
        .step(RECOUNT)?;
    conn.close().await.step(RECOUNT)?;
    drill.check(
        "every invoice line is back",
        recovered_rows == rows,
        format!("{recovered_rows} recovered, {rows} before the damage"),
    );
    let report = check_canaries(&target, &canaries.committed, None)
        .await
        .step("check the canaries after recovery")?;
    drill.check(
        "every canary survived",
        report.clean() && report.surviving == report.acknowledged,
        format!("{report:?}"),
    );
    drill.verified();
    super::steps::record_dataset(drill, &target, None).await?;
    // Playbook section 7: resume backups, then the post-recovery checklist.
    super::post_recovery_checklist(
        drill,
        &target,
        Some((&env.bins, &recovered.server.admin(), env.store())),
    )
    .await?;
    super::steps::record_replay_end(drill, &recovered);
    super::steps::record_canaries(drill, &report)?;

    const CLEANUP: &str = "clean up the environment";
    recovered.server.cleanup().await.step(CLEANUP)?;
    env.cleanup().await.step(CLEANUP)?;
    Ok(())
}
