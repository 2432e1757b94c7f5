//! `recover --to-last-good` next to the two ways to do without it, on the
//! same archive in one run:
//!
//! ```sh
//! cargo bench --bench last_good                                  # small profile, ~200 MB of WAL
//! BENCH_PROFILE=medium BENCH_WAL_MB=300 cargo bench --bench last_good
//! ```
//!
//! The archive: a seeded ledger, a base backup, then `BENCH_WAL_MB` of
//! writes in `BENCH_COMMITS` transactions with one tampered amount at a
//! random commit among them, and a `CHECKPOINT` every
//! `BENCH_CHECKPOINT_EVERY` commits (default 25; 0: none) standing in for
//! production's checkpoint interval: a restarted recovery replays from the
//! last checkpoint record before its pause, so the search's cost depends on
//! how often the source checkpoints. Printed for each method: WAL replayed, wall
//! time, probes and copies:
//! - (a) one straight replay to the end of the archive (the floor: it finds
//!   nothing);
//! - (b) a naive bisection over the same commits that restores the base
//!   backup and replays from it for every probe;
//! - (c) `recover_to_last_good` (scan, then bisection on copies).
//!
//! Figures, not assertions; (b) and (c) must name the same transaction.

use std::path::Path;
use std::time::{Duration, Instant};

use drillbook::basebackup::{list_base_backups, take_base_backup};
use drillbook::env::{APP_DATABASE, ArchivingEnvironment};
use drillbook::fixtures::{FixtureSpec, Profile, seed};
use drillbook::integrity::{SuiteOptions, run_suite};
use drillbook::pg::{ConnInfo, DataDirServer, Secret};
use drillbook::pitr::last_good::{SearchOptions, archive_commits, recover_to_last_good};
use drillbook::pitr::{AtTarget, RecoveryHost, RecoveryTarget, recover_on, recover_to};
use drillbook::wal::switch_and_wait_archived;
use rand::{Rng, SeedableRng};
use sqlx::{Connection, PgConnection};

#[tokio::main]
async fn main() {
    let profile = match std::env::var("BENCH_PROFILE").as_deref() {
        Ok("medium") => Profile::Medium,
        Ok("large") => Profile::Large,
        _ => Profile::Small,
    };
    let wal_mb: u64 = env_number("BENCH_WAL_MB", 200);
    let commits: u64 = env_number("BENCH_COMMITS", 400);
    let checkpoint_every: u64 = env_number("BENCH_CHECKPOINT_EVERY", 25);
    let program = Path::new(env!("CARGO_BIN_EXE_drillbook"));
    let env = ArchivingEnvironment::start(program, Duration::from_secs(60))
        .await
        .expect("environment starts");
    seed(&env.source(), FixtureSpec::ending_now(profile, 42))
        .await
        .expect("seed");
    let bins = env.bins.clone();
    let base = take_base_backup(&bins, &env.admin(), env.store())
        .await
        .expect("base backup");

    // The archive: bulk commits with one tampered amount among them.
    let mut rng = rand::rngs::StdRng::seed_from_u64(14);
    let culprit_at = rng.random_range(commits / 4..commits * 3 / 4);
    let rows_per_commit = (wal_mb * 1024 * 1024 / 300 / commits).max(1);
    let mut conn = PgConnection::connect_with(&env.source().connect_options())
        .await
        .expect("connect");
    sqlx::raw_sql("CREATE TABLE bench_wal (id bigint, pad text)")
        .execute(&mut conn)
        .await
        .expect("table");
    let mut culprit = 0i64;
    for n in 0..commits {
        if n == culprit_at {
            let mut tx = conn.begin().await.expect("begin");
            sqlx::raw_sql(
                "UPDATE invoice_lines SET amount = amount + 17 \
                 WHERE id = (SELECT min(id) FROM invoice_lines WHERE line_type = 'charge')",
            )
            .execute(&mut *tx)
            .await
            .expect("tamper");
            culprit = sqlx::query_scalar("SELECT txid_current() % 4294967296")
                .fetch_one(&mut *tx)
                .await
                .expect("xid");
            tx.commit().await.expect("commit");
        }
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "INSERT INTO bench_wal SELECT g, repeat(md5(g::text), 6) FROM generate_series(1, {rows_per_commit}) g"
        )))
        .execute(&mut conn)
        .await
        .expect("write");
        // Production checkpoints every few minutes (checkpoint_timeout,
        // max_wal_size); this archive is written in seconds, so it
        // checkpoints every `checkpoint_every` commits instead: a restarted
        // recovery replays from the last checkpoint record before its pause.
        if checkpoint_every > 0 && n % checkpoint_every == checkpoint_every - 1 {
            sqlx::raw_sql("CHECKPOINT")
                .execute(&mut conn)
                .await
                .expect("checkpoint");
        }
    }
    conn.close().await.expect("close");
    let mut admin = PgConnection::connect_with(&env.admin().connect_options())
        .await
        .expect("connect");
    switch_and_wait_archived(&mut admin, Duration::from_secs(600))
        .await
        .expect("archived");
    admin.close().await.expect("close");
    let base = list_base_backups(env.store())
        .await
        .expect("list")
        .into_iter()
        .find(|b| b.stamp == base.stamp)
        .expect("the base backup");
    println!(
        "archive: profile {profile}, {commits} bulk commits (~{wal_mb} MB of WAL), a checkpoint every {checkpoint_every} \
         commits, tampered at commit {culprit_at} (xid {culprit})"
    );

    // (a) One straight replay to the end.
    let started = Instant::now();
    let straight = recover_to(&bins, env.store(), &RecoveryTarget::EndOfArchive, &env.pitr_options())
        .await
        .expect("straight replay");
    let straight_time = started.elapsed();
    let straight_bytes = straight.wal_bytes_replayed;
    straight.server.cleanup().await.expect("cleanup");
    row("(a) one replay to the end", straight_bytes, straight_time, 1, 0);

    // (b) Naive bisection: every probe restores the base backup and replays from it.
    let scratch = tempfile::Builder::new().tempdir().expect("scratch");
    std::fs::set_permissions(scratch.path(), std::os::unix::fs::PermissionsExt::from_mode(0o711)).expect("chmod");
    let (all, _) = archive_commits(&bins, env.store(), &base, scratch.path())
        .await
        .expect("commits");
    let started = Instant::now();
    let (mut lo, mut hi) = (-1isize, all.len() as isize - 1);
    let (mut probes, mut naive_bytes) = (0usize, 0u64);
    let mut options = env.pitr_options();
    options.at_target = AtTarget::Pause;
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        let dir = scratch.path().join(format!("naive-{probes}"));
        let host = RecoveryHost::DataDir {
            pgdata: dir.clone(),
            port: None,
        };
        let recovered = recover_on(
            host,
            &bins,
            env.store(),
            &RecoveryTarget::Xid(all[mid as usize].xid),
            &options,
        )
        .await
        .expect("naive probe");
        naive_bytes += recovered.wal_bytes_replayed;
        probes += 1;
        let server = DataDirServer::open(&bins, &dir).expect("probe dir");
        let target = ConnInfo {
            host: dir.display().to_string(),
            port: server.port().expect("port"),
            user: "postgres".into(),
            password: Secret::new(String::new()),
            database: APP_DATABASE.into(),
        };
        let clean = run_suite(&target, &SuiteOptions::default())
            .await
            .expect("suite")
            .findings
            .is_empty();
        server.stop().await.expect("stop");
        std::fs::remove_dir_all(&dir).expect("remove probe");
        if clean { lo = mid } else { hi = mid }
    }
    let naive_time = started.elapsed();
    let naive_found = all[hi as usize].xid;
    row(
        "(b) naive bisection, base backup each probe",
        naive_bytes,
        naive_time,
        probes,
        probes,
    );

    // (c) The search.
    let pgdata = scratch.path().join("last-good");
    let started = Instant::now();
    let found = recover_to_last_good(
        &bins,
        env.store(),
        &pgdata,
        None,
        &SearchOptions {
            pitr: options.clone(),
            since: None,
            checks: Vec::new(),
            database: APP_DATABASE.into(),
        },
    )
    .await
    .expect("search");
    let search_time = started.elapsed();
    let bad = found.first_bad.as_ref().expect("the tampering is found");
    row(
        "(c) recover --to-last-good (scan + forks)",
        found.wal_bytes_replayed,
        search_time,
        found.probes,
        found.forks,
    );
    println!(
        "  found: (b) xid {naive_found}, (c) xid {}; tampered by xid {culprit}; commits searched {}",
        bad.commit.xid, found.commits
    );
    println!(
        "  (c) wall time is {:.2}x one straight replay and {:.2}x the naive bisection",
        search_time.as_secs_f64() / straight_time.as_secs_f64(),
        search_time.as_secs_f64() / naive_time.as_secs_f64()
    );
    DataDirServer::open(&bins, &pgdata)
        .expect("recovered")
        .stop()
        .await
        .expect("stop");
    env.cleanup().await.expect("cleanup");
}

fn row(label: &str, bytes: u64, time: Duration, probes: usize, copies: usize) {
    println!(
        "  {label:<46} {:>8.1} MB WAL  {:>7.2} s  probes {probes:>3}  copies {copies:>3}",
        bytes as f64 / 1e6,
        time.as_secs_f64()
    );
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}
