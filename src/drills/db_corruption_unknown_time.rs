//! Decision matrix: "DB corruption (full) — Point-in-time recovery — < 2
//! hours", as it happens in real incidents: nobody knows when.
//!
//! The primary archives its WAL to S3 and has a base backup and an anchor.
//! Several sessions write (the application, a canary) while, at a moment
//! chosen at random, a corruption chosen at random from the fault operators
//! runs in one transaction: a tampered amount, a re-hashed audit row, deleted
//! audit rows, or a "migration" updating many rows. The writes go on; then
//! the damage is detected. Recovery is not told when:
//! `drillbook recover --to-last-good` (the real binary) must find the exact
//! transaction that did it — the drill's ground truth is that transaction's
//! xid — and pause just before it; then `recover --promote`, the canaries
//! (every one acknowledged before the last good commit present, none
//! after), and the post-recovery checklist. RPO is detection time minus the
//! last good commit.
//!
//! The random choices come from `DRILL_SEED` (a number), else from the
//! clock; the seed is in the report (`seed`) to replay a failure.
//!
//! Runs on embedded and containers (its own server and bucket); never on
//! staging.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::{Rng, SeedableRng};
use serde_json::Value;
use sqlx::{Connection, PgConnection};

use crate::canary::{CanaryWriter, check_canaries};
use crate::drill::{Drill, DrillSummary, Moved, RecoveryPoint, RecoverySource, Result, StepContext};
use crate::env::{APP_DATABASE, ArchivingEnvironment};
use crate::fault::{self, Disposable, Injected};
use crate::integrity::{SuiteOptions, run_suite};
use crate::playbook::Scenario;
use crate::workload::write_activity;

/// The corruptions the drill picks from.
const CORRUPTIONS: [&str; 4] = [
    "tampered amount",
    "re-hashed audit row",
    "deleted audit rows",
    "migration",
];

pub async fn run() -> Result<DrillSummary> {
    run_with(&super::program()).await
}

/// [`run`] with the `drillbook` binary (in tests, `env!("CARGO_BIN_EXE_drillbook")`).
pub async fn run_with(program: &Path) -> Result<DrillSummary> {
    let seed = std::env::var("DRILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| Utc::now().timestamp_micros().unsigned_abs());
    run_seeded(program, seed).await
}

/// One run of the drill with its random choices drawn from `seed`.
pub async fn run_seeded(program: &Path, seed: u64) -> Result<DrillSummary> {
    let mut drill = super::steps::reported_drill("db-corruption-unknown-time", Scenario::DbCorruptionFull)?
        .with_rpo_target(Duration::from_secs(3600));
    drill.property("seed", seed);
    let outcome = story(&mut drill, program, seed).await;
    drill.conclude(outcome)
}

async fn story(drill: &mut Drill, program: &Path, seed: u64) -> Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (env, _) = super::steps::archiving_primary(drill, program, Duration::from_secs(60)).await?;
    let source = env.source();
    let (bucket, source_url) = (env.store().config().location(), source.url());
    // The chain's head recorded outside the database, as production does daily.
    let anchor = drill
        .step(
            "drillbook anchor",
            super::steps::operator_answer(
                program,
                env.store(),
                &["anchor", "--bucket", &bucket],
                &[("DATABASE_URL", &source_url)],
                &[super::steps::EXIT_SUCCESS],
            ),
        )
        .await?;
    let anchor: crate::store::manifest::Anchor =
        serde_json::from_value(anchor.report).step("read the anchor `drillbook anchor --json` printed")?;
    let anchor_location = format!("{bucket}{}", anchor.key());

    let canary = CanaryWriter::start(&source, Duration::from_millis(5))
        .await
        .step("start the canary writer")?;
    let writers: Vec<_> = (0..2)
        .map(|_| {
            let source = source.clone();
            tokio::spawn(async move { write_activity(&source, 40).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(rng.random_range(100..800))).await;

    let choice = rng.random_range(0..CORRUPTIONS.len());
    drill.property("corruption", CORRUPTIONS[choice]);
    let disposable = Disposable::archiving_primary(&env);
    let injected = drill
        .step(
            "a corruption at a moment nobody writes down",
            corrupt(&disposable, choice, &mut rng),
        )
        .await?;
    let Some(culprit) = injected.xid else {
        return Err(crate::drill::DrillError::step(
            "learn the corrupting transaction",
            std::io::Error::other("the fault operator ran no single transaction"),
        ));
    };
    drill.property("corrupting_xid", culprit);
    drill
        .step("the application keeps writing on top", write_activity(&source, 20))
        .await?;
    for writer in writers {
        writer
            .await
            .step("the application keeps writing")?
            .step("the application keeps writing")?;
    }
    let canaries = canary.stop().await;

    // Detection as the playbook's daily audit runs it: `drillbook verify` against the anchor.
    let verdict = drill
        .step(
            "detection: drillbook verify --anchor on the primary",
            super::steps::operator_answer(
                program,
                env.store(),
                &["verify", "--anchor", &anchor_location],
                &[("DATABASE_URL", &source_url)],
                &[super::steps::EXIT_SUCCESS, super::steps::EXIT_FAILED],
            ),
        )
        .await?;
    drill.check(
        "the corruption is detected",
        verdict.code == super::steps::EXIT_FAILED,
        format!(
            "{} finding(s)",
            verdict.report["findings"].as_array().map_or(0, Vec::len)
        ),
    );
    let detected = drill.incident(format!("{} detected, time unknown", CORRUPTIONS[choice]));
    super::steps::flush_wal_to_archive(drill, &env).await?;

    const FIND: &str = "drillbook recover --to-last-good (not told when)";
    let dir = super::steps::RecoveryDir::create(FIND)?;
    let pgdata_arg = dir.pgdata();
    let found = drill
        .data_step(
            FIND,
            super::steps::operator_command(
                program,
                env.store(),
                &[
                    "recover",
                    "--bucket",
                    &bucket,
                    "--pgdata",
                    &pgdata_arg,
                    "--to-last-good",
                ],
            ),
            // Every probe's replay: the search's cost grows with the WAL.
            |found| found["wal_bytes_replayed"].as_u64().map(Moved::wal_bytes),
        )
        .await?;
    let outcome = judge_and_promote(drill, program, &env, &pgdata_arg, &found, culprit, &canaries, detected).await;
    let removed = dir.remove(&env).await;
    outcome?;
    removed?;
    const CLEANUP: &str = "clean up the environment";
    env.cleanup().await.step(CLEANUP)?;
    Ok(())
}

/// Runs corruption `choice` in one transaction on the drill's own primary.
async fn corrupt(d: &Disposable, choice: usize, rng: &mut rand::rngs::StdRng) -> fault::Result<Injected> {
    let mut conn = PgConnection::connect_with(&d.target().connect_options())
        .await
        .map_err(crate::pg::PgError::sql("connect to pick the rows to corrupt"))?;
    let pick = |table: &'static str, filter: &'static str| {
        let offset = rng.random_range(0..200i64);
        async move {
            let sql = format!("SELECT id FROM {table} WHERE {filter} ORDER BY id OFFSET $1 LIMIT 1");
            sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
                .bind(offset)
                .fetch_one(&mut conn)
                .await
                .map_err(crate::pg::PgError::sql("pick a row to corrupt"))
        }
    };
    match choice {
        0 => {
            let id = pick("invoice_lines", "line_type = 'charge'").await?;
            fault::tamper_amount(d, "invoice_lines", id, 1_703).await
        }
        1 => {
            let id = pick("audit_logs", "true").await?;
            fault::tamper_and_rehash(d, id).await
        }
        2 => {
            let id = pick("audit_logs", "true").await?;
            fault::delete_rows(d, "audit_logs", &[id]).await
        }
        _ => fault::bad_migration(d, rng.random_range(0..7)).await,
    }
}

/// The search's answer judged against the drill's ground truth, then the
/// operator's promotion and the canaries.
#[allow(clippy::too_many_arguments)]
async fn judge_and_promote(
    drill: &mut Drill,
    program: &Path,
    env: &ArchivingEnvironment,
    pgdata: &str,
    found: &Value,
    culprit: u32,
    canaries: &crate::canary::CanaryLog,
    detected: DateTime<Utc>,
) -> Result<()> {
    let first_bad = &found["first_bad"]["commit"];
    drill.property("found_xid", &first_bad["xid"]);
    drill.property("probes", &found["probes"]);
    drill.property("forks", &found["forks"]);
    drill.property("commits_searched", &found["commits"]);
    drill.property("given_up_transactions", &found["given_up_transactions"]);
    drill.check(
        "the first bad transaction is exactly the corrupting one",
        first_bad["xid"].as_u64() == Some(u64::from(culprit)),
        format!("found {}, corrupted by {culprit}", first_bad["xid"]),
    );
    let last_good_time = found["last_good"]["commit"]["time"]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .step("read the last good commit's time from the search's JSON")?;
    let promoted = drill
        .step(
            "drillbook recover --promote",
            super::steps::operator_command(program, env.store(), &["recover", "--pgdata", pgdata, "--promote"]),
        )
        .await?;
    let admin = super::steps::RecoveryDir::admin(env, &promoted)?;
    let target = admin.with_database(APP_DATABASE);
    let integrity = drill
        .step(
            "the integrity suite on the recovered server",
            run_suite(&target, &SuiteOptions::default()),
        )
        .await?;
    drill.check(
        "the recovered database is clean",
        integrity.findings.is_empty(),
        format!("{:?}", integrity.findings.iter().take(5).collect::<Vec<_>>()),
    );
    let report = drill
        .step(
            "canaries against the last good point",
            check_canaries(&target, &canaries.committed, Some(last_good_time)),
        )
        .await?;
    drill.check(
        "every canary before the last good commit present, none after",
        report.clean(),
        format!("{report:?}"),
    );
    drill.verified();
    super::steps::record_dataset(drill, &target, None).await?;
    drill.recovery_point(RecoveryPoint::new(RecoverySource::ReplayEnd, last_good_time));
    drill.property("detected_at", detected.to_rfc3339());
    super::post_recovery_checklist(drill, &target, Some((&env.bins, &admin, env.store()))).await?;
    super::steps::record_canaries(drill, &report)?;
    Ok(())
}
