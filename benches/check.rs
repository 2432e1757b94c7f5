//! `drillbook check` on a bucket with 1,000 archived WAL segments, full
//! (every object re-hashed, `--sample-runs 1`) next to sampled
//! (`--sample-runs 7`), measured in one run:
//!
//! ```sh
//! cargo bench --bench check                  # 1,000 segments
//! BENCH_SEGMENTS=200 cargo bench --bench check
//! ```
//!
//! The segments are real: an embedded primary archives through `drillbook
//! wal-push` (the release binary, as `archive_command`) and the bench
//! switches WAL 1,000 times (`pg_switch_wal`, each switch waited for in
//! `pg_stat_archiver`), so every object is what wal-push writes, header
//! and DEFLATE stream, under its real name. Each segment holds one small
//! write and the switch; the rest is zeros (`wal_recycle = off`, so no
//! recycled segment carries old WAL): an idle server's `archive_timeout`
//! switches. Re-hashing still inflates and SHA-256s the full 16 MiB of
//! each; only the download is smaller than a busy server's segments.
//!
//! What is timed is [`drillbook::check::check_backups`], the function
//! `drillbook check` calls, on a bucket with a base backup, a daily dump
//! and an anchor. Figures, not assertions: shared machines are noisy.

use std::path::Path;
use std::time::{Duration, Instant};

use drillbook::basebackup::take_base_backup;
use drillbook::check::{CheckOptions, CheckReport, check_backups};
use drillbook::env::ArchivingEnvironment;
use drillbook::fixtures::{FixtureSpec, Profile, seed};
use drillbook::store::manifest::Anchor;
use drillbook::wal::switch_and_wait_archived;
use sqlx::{Connection, PgConnection};

const SAMPLE_RUNS: u32 = 7;

#[tokio::main]
async fn main() {
    let segments: usize = std::env::var("BENCH_SEGMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let program = Path::new(env!("CARGO_BIN_EXE_drillbook"));
    // archive_timeout off in effect: only the bench's switches close segments.
    let env = ArchivingEnvironment::start(program, Duration::from_secs(3600))
        .await
        .expect("environment starts");
    let admin = env.primary().admin();
    let mut conn = PgConnection::connect_with(&admin.connect_options())
        .await
        .expect("connect");
    for sql in ["ALTER SYSTEM SET wal_recycle = off", "SELECT pg_reload_conf()"] {
        sqlx::raw_sql(sql).execute(&mut conn).await.expect("wal_recycle off");
    }
    seed(&env.source(), FixtureSpec::ending_now(Profile::Small, 42))
        .await
        .expect("seed");
    take_base_backup(&env.bins, &admin, env.store())
        .await
        .expect("base backup");
    drillbook::backup::backup_database(&env.bins, &env.source(), Some(&admin), env.store())
        .await
        .expect("daily dump");
    let anchor = Anchor::capture(&env.source()).await.expect("anchor");
    env.store()
        .put_bytes(&anchor.key(), anchor.to_json(), "application/json")
        .await
        .expect("write the anchor");

    let started = Instant::now();
    for i in 1..=segments {
        switch_and_wait_archived(&mut conn, Duration::from_secs(60))
            .await
            .expect("segment archived");
        if i % 100 == 0 {
            eprintln!("{i} segments archived in {}", secs(started.elapsed()));
        }
    }
    let archived = started.elapsed();
    let objects = env.store().list("wal/").await.expect("list the archive");
    let stored: u64 = objects.iter().map(|o| o.size).sum();
    println!(
        "WAL archive: {} objects ({} stored), {segments} switches archived by wal-push in {} ({:.0} ms each)",
        objects.len(),
        mb(stored),
        secs(archived),
        archived.as_secs_f64() * 1000.0 / segments as f64
    );

    let options = |sample_runs| CheckOptions {
        now: chrono::Utc::now(),
        max_dump_age: Duration::from_secs(26 * 3600),
        max_base_backup_age: Duration::from_secs(8 * 86_400),
        sample_runs,
        database: Some(admin.clone()),
    };
    let (full, report) = timed_check(&env, &options(1)).await;
    let mut sampled = Vec::new();
    for _ in 0..SAMPLE_RUNS {
        sampled.push(timed_check(&env, &options(SAMPLE_RUNS)).await);
    }
    let hashed = |report: &CheckReport| {
        report
            .checks
            .iter()
            .find(|c| c.check == "wal_archive")
            .and_then(|c| c.figures.get("hashed").copied())
            .unwrap_or(0.0)
    };
    let passed = |report: &CheckReport| report.checks.iter().filter(|c| c.ok).count();
    let mean = sampled.iter().map(|(d, _)| *d).sum::<Duration>() / SAMPLE_RUNS;
    let cycle: f64 = sampled.iter().map(|(_, r)| hashed(r)).sum();
    println!(
        "drillbook check (check_backups, {} of {} checks passed)",
        passed(&report),
        report.checks.len()
    );
    println!(
        "  full, --sample-runs 1:  {:>8}  {:>5} WAL objects hashed",
        secs(full),
        hashed(&report)
    );
    for (run, (took, report)) in sampled.iter().enumerate() {
        println!(
            "  sampled, --sample-runs {SAMPLE_RUNS}, run {run}:  {:>8}  {:>5} WAL objects hashed  ({:.1}x faster than full)",
            secs(*took),
            hashed(report),
            full.as_secs_f64() / took.as_secs_f64()
        );
    }
    println!(
        "  sampled, mean of {SAMPLE_RUNS} runs:  {:>8}  {cycle} objects hashed over the cycle  (full/sampled = {:.1}x)",
        secs(mean),
        full.as_secs_f64() / mean.as_secs_f64()
    );

    conn.close().await.ok();
    env.cleanup().await.expect("cleanup");
}

async fn timed_check(env: &ArchivingEnvironment, options: &CheckOptions) -> (Duration, CheckReport) {
    let started = Instant::now();
    let report = check_backups(env.store(), options).await.expect("check runs");
    (started.elapsed(), report)
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}
