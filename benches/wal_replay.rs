//! PITR replay with `restore_command = drillbook wal-fetch %f %p` from the
//! embedded S3 next to `cp` from a local archive of the same segments: same
//! cluster, same base backup, same WAL, one run.
//!
//! ```sh
//! cargo bench --bench wal_replay                     # about 200 MB of WAL
//! BENCH_WAL_MB=400 BENCH_ROUNDS=3 cargo bench --bench wal_replay
//! ```
//!
//! Each way replays from the server's start to promoted at the end of the
//! archive, `BENCH_ROUNDS` times (default 2) in turns; the best of each is
//! compared, a shared machine's noise only ever adds. `wal-fetch
//! --prefetch 0` (each file fetched when asked, the behaviour before the
//! read-ahead) is shown for reference. Ends with
//! `ratio wal_replay_vs_cp <wal-fetch / cp> goal 1.10` (issue 15).
//! `BENCH_SHOW_LOG=1` prints each replay's restore lines from the server
//! log, with their times: where a replay waits shows there.

use std::path::Path;
use std::time::Duration;

use drillbook::basebackup::take_base_backup;
use drillbook::env::ArchivingEnvironment;
use drillbook::pitr::{RecoveryTarget, recover_to};
use drillbook::wal::{SPOOL_DIR, WalArchive, switch_and_wait_archived};
use sqlx::{Connection, PgConnection};

#[path = "support/local_archive.rs"]
mod local_archive;
use local_archive::copy_archive_locally;

#[tokio::main]
async fn main() {
    let wal_mb: u64 = env_number("BENCH_WAL_MB", 200);
    let rounds = env_number("BENCH_ROUNDS", 2).max(1);
    let show_log = std::env::var_os("BENCH_SHOW_LOG").is_some();
    let program = Path::new(env!("CARGO_BIN_EXE_drillbook"));
    let env = ArchivingEnvironment::start(program, Duration::from_secs(60))
        .await
        .expect("environment starts");
    let bins = env.bins.clone();
    take_base_backup(&bins, &env.primary().admin(), env.store())
        .await
        .expect("base backup");

    // About wal_mb of inserts after the base backup, all archived.
    let mut conn = PgConnection::connect_with(&env.source().connect_options())
        .await
        .expect("connect");
    let rows = wal_mb * 1024 * 1024 / 300;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE bench_wal (id bigint, pad text);
         INSERT INTO bench_wal SELECT g, repeat(md5(g::text), 6) FROM generate_series(1, {rows}) g;"
    )))
    .execute(&mut conn)
    .await
    .expect("generate WAL");
    conn.close().await.expect("close");
    let mut admin = PgConnection::connect_with(&env.primary().admin().connect_options())
        .await
        .expect("connect");
    switch_and_wait_archived(&mut admin, Duration::from_secs(600))
        .await
        .expect("archived");
    admin.close().await.expect("close");

    // The same segments on local disk, readable by the server user, for `cp`.
    let archive = WalArchive::new(env.store().clone());
    let names = archive.list(None).await.expect("list archive");
    let scratch = tempfile::tempdir().expect("temp dir");
    let local = copy_archive_locally(&archive, &names, scratch.path()).await;
    println!(
        "WAL archived: {} files; replay to the end of the archive, server start to promoted",
        names.len()
    );

    let program_text = program.display().to_string();
    let ways = [
        ("drillbook wal-fetch (S3, read-ahead)", None),
        (
            "cp (local disk)                     ",
            Some(format!("cp {}/%f %p", local.display())),
        ),
        (
            "drillbook wal-fetch --prefetch 0    ",
            Some(format!("'{program_text}' wal-fetch --prefetch 0 %f %p")),
        ),
    ];
    let mut best = [Duration::MAX; 3];
    let mut replayed = [0u64; 3];
    for round in 1..=rounds {
        for (i, (label, command)) in ways.iter().enumerate() {
            let mut options = env.pitr_options();
            options.restore_command = command.clone();
            let recovered = recover_to(&bins, env.store(), &RecoveryTarget::EndOfArchive, &options)
                .await
                .expect("recovery");
            if let drillbook::pitr::RecoveredServer::Local(cluster) = &recovered.server
                && show_log
            {
                let log = cluster.log_since(0);
                let shown = [
                    "restored log file",
                    "redo ",
                    "selected new timeline",
                    "checkpoint complete",
                ];
                for line in log.lines().filter(|l| shown.iter().any(|s| l.contains(s))) {
                    println!("    {line}");
                }
            }
            if let drillbook::pitr::RecoveredServer::Local(cluster) = &recovered.server {
                let spool = cluster.data_dir().join("pg_wal").join(SPOOL_DIR);
                assert!(!spool.exists(), "the spool outlived the recovery: {}", spool.display());
            }
            println!(
                "  round {round} {label}: {:>8} in {:>7}  {}",
                mb(recovered.wal_bytes_replayed),
                secs(recovered.replay),
                rate(recovered.wal_bytes_replayed, recovered.replay)
            );
            best[i] = best[i].min(recovered.replay);
            replayed[i] = recovered.wal_bytes_replayed;
            recovered.server.cleanup().await.expect("cleanup");
        }
    }
    println!("best of {rounds}:");
    for (i, (label, _)) in ways.iter().enumerate() {
        println!(
            "  {label}: {:>8} in {:>7}  {}",
            mb(replayed[i]),
            secs(best[i]),
            rate(replayed[i], best[i])
        );
    }
    env.cleanup().await.expect("cleanup");
    println!(
        "ratio wal_replay_vs_cp {:.2} goal 1.10",
        best[0].as_secs_f64() / best[1].as_secs_f64().max(1e-9)
    );
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn rate(bytes: u64, d: Duration) -> String {
    format!("{:.1} MB/s", bytes as f64 / 1e6 / d.as_secs_f64().max(1e-9))
}
