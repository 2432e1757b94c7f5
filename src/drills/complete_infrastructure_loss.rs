//! Decision matrix: "Complete infrastructure loss — Full restore from backup
//! — < 4 hours".
//!
//! Seed the ledger, back it up to S3, keep writing, then lose the primary
//! server entirely (killed, data directory deleted). Bring up a new server,
//! restore the newest backup from S3 exactly as the playbook's section 3.2
//! does, with the command an operator runs for it (`drillbook restore
//! --json`, the real binary, its report read back), run the playbook's
//! checks, and assert RTO and RPO. The rows written
//! after the backup are the loss: the drill proves the restore holds exactly
//! what the manifest says and nothing written later.
//!
//! Runs on every backend (`DRILL_ENV`). On staging it seeds, writes and
//! destroys nothing: it restores the newest existing backup into a new
//! `<db>_restore_<stamp>` database on the staging server, counts the rows
//! the source holds beyond the backup as the loss (read only), asserts the
//! same checks, and drops its copy at the end.
//!
//! Library code so `drillbook run` ships it; `tests/it/staging_rehearsal.rs`
//! runs exactly this code on the staging backend.

use std::path::Path;
use std::time::Duration;

use crate::backup::backup_database;
use crate::drill::{Drill, DrillSummary, Moved, RecoveryPoint, Result, StepContext};
use crate::env;
use crate::fixtures::{CRITICAL_TABLES, FixtureSpec};
use crate::pg::table_facts;
use crate::playbook::PlaybookAnswers;
use crate::playbook::Scenario;
use crate::restore::{BackupChoice, find_backup};
use crate::store::manifest::BackupManifest;
use crate::workload::write_activity;
use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection};

/// Writes after the backup: the data this drill expects to lose.
const LATE_WRITES: usize = 25;

/// Rows written after the backup: the loss.
struct Late {
    audit_ids: Vec<i64>,
    newest: Option<DateTime<Utc>>,
}

pub async fn run() -> Result<DrillSummary> {
    run_with(&super::program()).await
}

/// [`run`] with the `drillbook` binary whose `restore` it drives (in
/// tests, `env!("CARGO_BIN_EXE_drillbook")`).
pub async fn run_with(program: &Path) -> Result<DrillSummary> {
    // The playbook backs up daily, so up to a day of writes may be lost.
    let mut drill = super::steps::reported_drill("complete-infrastructure-loss", Scenario::CompleteInfrastructureLoss)?
        .with_rpo_target(Duration::from_secs(24 * 3600));
    let outcome = story(&mut drill, program).await;
    drill.conclude(outcome)
}

async fn story(drill: &mut Drill, program: &Path) -> Result<()> {
    let mut env = drill.step("bring up environment", env::from_env()).await?;
    let (bins, source) = (env.binaries().clone(), env.source());

    let (manifest, late): (BackupManifest, Late) = if env.is_disposable() {
        let profile = super::drill_profile()?;
        super::steps::record_setup(drill, env.backend(), Some(profile), &env.admin()).await?;
        let seeded = drill
            .data_step(
                "seed fixture ledger",
                env.seed(FixtureSpec::ending_now(profile, 42)),
                super::steps::moved_by_seed,
            )
            .await?;
        drill.property("audit_logs_rows", seeded.rows_in("audit_logs").unwrap_or(0));
        let admin = env.admin();
        // Traffic up to the backup, so the backup's newest row is recent.
        drill.step("application writes", write_activity(&source, 5)).await?;
        let backup = drill
            .data_step(
                "daily backup to S3",
                backup_database(&bins, &source, Some(&admin), env.store()),
                |backup| [Moved::bytes(backup.manifest.dump.bytes)],
            )
            .await?;
        let late = drill
            .step("application keeps writing", write_activity(&source, LATE_WRITES))
            .await?;
        drill.incident("primary database server lost: postgres killed, data directory deleted");
        drill.step("destroy primary", env.destroy_primary()).await?;
        let late = Late {
            audit_ids: late.audit_ids,
            newest: Some(late.newest),
        };
        (backup.manifest, late)
    } else {
        // Staging: the existing data and backups, read only. The server is
        // not touched; the drill restores next to it.
        super::steps::record_setup(drill, env.backend(), None, &source).await?;
        let manifest = drill
            .step(
                "find newest existing backup in S3",
                find_backup(env.store(), &BackupChoice::Newest),
            )
            .await?;
        let late = drill
            .step(
                "writes since the backup (read only)",
                writes_after(&source, manifest.newest_data()),
            )
            .await?;
        drill.incident("primary database server declared lost (staging: simulated, the server is not touched)");
        (manifest, late)
    };
    drill.property("dump_bytes", manifest.dump.bytes);
    drill.property("backup_stamp", &manifest.stamp);

    let replacement = drill
        .step("provision replacement server", env.provision_restore_target())
        .await?;
    // The operator's command, as the playbook's 3.2 runs it; the admin URL
    // (with its password) travels in the environment, not the arguments.
    let (bucket, admin_url) = (env.store().config().location(), replacement.admin.url());
    let answer = drill
        .data_step(
            "drillbook restore: newest backup from S3 (playbook 3.2)",
            super::steps::operator_answer(
                program,
                env.store(),
                &[
                    "restore",
                    "--bucket",
                    &bucket,
                    "--target-database",
                    &replacement.database,
                ],
                &[("ADMIN_DATABASE_URL", &admin_url)],
                &[super::steps::EXIT_SUCCESS],
            ),
            |answer| super::steps::moved_by_restore_command(&answer.report),
        )
        .await?;
    let restored = restored_from(&answer.report, &replacement).step("read drillbook restore's JSON report")?;
    drill.property(
        "restore_command_seconds",
        format!("{:.3}", answer.elapsed.as_secs_f64()),
    );
    drill.check(
        "restored into the database asked for",
        restored.database == replacement.database,
        &restored.database,
    );
    drill.check(
        "restored backup is the newest",
        restored.manifest.stamp == manifest.stamp,
        &restored.manifest.stamp,
    );

    let answers = drill
        .step(
            "playbook checks (3.2 step 4, 4.1-4.5)",
            PlaybookAnswers::collect(&restored.target),
        )
        .await?;
    let problems = answers.problems();
    drill.check("playbook checks pass", problems.is_empty(), problems.join("; "));
    drill.check(
        "4.1 broken links = 0",
        answers.broken_links == 0,
        answers.broken_links.to_string(),
    );
    for table in CRITICAL_TABLES {
        let count = answers
            .critical_counts
            .iter()
            .find(|(t, _)| t == table)
            .map_or(-1, |(_, n)| *n);
        let expected = manifest.rows_in(table).map_or(-1, |n| n as i64);
        drill.check(
            &format!("{table} count matches manifest"),
            count == expected,
            format!("{count} restored, {expected} in manifest"),
        );
    }
    drill.verified();
    super::steps::record_dataset(drill, &restored.target, Some(restored.manifest.dump.bytes)).await?;

    // RPO: the restore is complete up to the backup's snapshot, however
    // quiet the database was before it; the newest row only checks content.
    drill.recovery_point(RecoveryPoint::snapshot(&restored.manifest));
    const COMPARE: &str = "compare the restored data with the late writes";
    let mut conn = PgConnection::connect_with(&restored.target.connect_options())
        .await
        .step(COMPARE)?;
    let facts = table_facts(&mut conn).await.step(COMPARE)?;
    let newest_surviving = facts
        .values()
        .filter_map(|t| t.newest_created_at)
        .max()
        .step("find the newest timestamp in the restored data")?;
    drill.check(
        "newest surviving data is the backup's newest",
        Some(newest_surviving) == manifest.newest_data(),
        format!("{newest_surviving} restored, {:?} in manifest", manifest.newest_data()),
    );
    let (late_survivors,): (i64,) = sqlx::query_as("SELECT count(*) FROM audit_logs WHERE id = ANY($1)")
        .bind(&late.audit_ids)
        .fetch_one(&mut conn)
        .await
        .step(COMPARE)?;
    drill.check(
        "writes after the backup are exactly the loss",
        late_survivors == 0 && late.newest.is_none_or(|newest| newest > newest_surviving),
        format!(
            "{late_survivors} of {} late writes present; newest late write {:?}",
            late.audit_ids.len(),
            late.newest
        ),
    );
    conn.close().await.step(COMPARE)?;
    // Every application write leaves one audit row: the rows lost, counted.
    drill.rows_lost(late.audit_ids.len() as u64);

    // Playbook section 7. On a disposable backend the drill resumes the
    // backup schedule itself; on staging it never writes a backup, so that
    // item is not applicable there.
    let resume = env.is_disposable().then(|| (&bins, &replacement.admin, env.store()));
    super::post_recovery_checklist(drill, &restored.target, resume).await?;

    env.cleanup().await.step("clean up the environment")?;
    Ok(())
}

/// What `drillbook restore --json` reported: the database it created and
/// the manifest of the backup it restored.
struct Restored {
    database: String,
    manifest: BackupManifest,
    /// The restored database, on the replacement server.
    target: crate::pg::ConnInfo,
}

fn restored_from(report: &serde_json::Value, replacement: &env::RestoreTarget) -> Result<Restored, String> {
    let database = report["database"]
        .as_str()
        .ok_or_else(|| format!("no `database` in {report}"))?
        .to_owned();
    let manifest: BackupManifest =
        serde_json::from_value(report["manifest"].clone()).map_err(|e| format!("its `manifest` does not read: {e}"))?;
    Ok(Restored {
        target: replacement.admin.with_database(&database),
        database,
        manifest,
    })
}

/// The audit rows committed after `since` (the backup's newest data), read
/// in a read-only session: on staging, what a loss now would lose.
async fn writes_after(source: &crate::pg::ConnInfo, since: Option<DateTime<Utc>>) -> Result<Late, sqlx::Error> {
    let options = source
        .connect_options()
        .options([("default_transaction_read_only", "on"), ("statement_timeout", "60s")]);
    let mut conn = PgConnection::connect_with(&options).await?;
    let rows: Vec<(i64, DateTime<Utc>)> =
        sqlx::query_as("SELECT id, created_at FROM audit_logs WHERE created_at > $1 ORDER BY created_at, id")
            .bind(since.unwrap_or(DateTime::<Utc>::MIN_UTC))
            .fetch_all(&mut conn)
            .await?;
    conn.close().await?;
    Ok(Late {
        newest: rows.iter().map(|(_, at)| *at).max(),
        audit_ids: rows.into_iter().map(|(id, _)| id).collect(),
    })
}
