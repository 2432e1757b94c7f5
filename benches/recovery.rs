//! Recovery figures, each next to the same operation on the local disk,
//! measured in one run:
//!
//! ```sh
//! cargo bench --bench recovery                       # small profile
//! BENCH_PROFILE=medium BENCH_WAL_MB=400 cargo bench --bench recovery
//! ```
//!
//! Prints: base backup throughput to the embedded S3 and to a local file;
//! base backup restore (download or copy, sha256, extract, pg_verifybackup);
//! PITR replay speed in WAL MB/s with `restore_command` = `drillbook
//! wal-fetch` from S3 and = `cp` from a local archive; PITR to a time with
//! `drillbook recover --to-time` next to the library call the drills made
//! before the command existed. Figures, not assertions: shared machines are
//! noisy.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use drillbook::basebackup::{download_base_backup, extract_tar, take_base_backup};
use drillbook::env::ArchivingEnvironment;
use drillbook::fixtures::{FixtureSpec, Profile, seed};
use drillbook::pg::tools::{BaseBackupStream, verify_backup};
use drillbook::pitr::{RecoveryTarget, recover_to};
use drillbook::wal::{WalArchive, switch_and_wait_archived};
use sqlx::{Connection, PgConnection};

#[tokio::main]
async fn main() {
    let profile = match std::env::var("BENCH_PROFILE").as_deref() {
        Ok("medium") => Profile::Medium,
        Ok("large") => Profile::Large,
        _ => Profile::Small,
    };
    let wal_mb: u64 = std::env::var("BENCH_WAL_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(160);
    let program = Path::new(env!("CARGO_BIN_EXE_drillbook"));
    let env = ArchivingEnvironment::start(program, Duration::from_secs(60))
        .await
        .expect("environment starts");
    seed(&env.source(), FixtureSpec::ending_now(profile, 42))
        .await
        .expect("seed");
    let bins = env.bins.clone();
    let admin = env.primary().admin();
    let scratch = tempfile::tempdir().expect("temp dir");

    // Base backup: to S3 and to a local file.
    let started = Instant::now();
    let base = take_base_backup(&bins, &admin, env.store())
        .await
        .expect("base backup to S3");
    let to_s3 = started.elapsed();
    let local_tar = scratch.path().join("local-base.tar");
    let started = Instant::now();
    let mut stream = BaseBackupStream::spawn(&bins, &admin).expect("pg_basebackup");
    let mut file = tokio::fs::File::create(&local_tar).await.expect("local tar");
    tokio::io::copy(stream.stdout(), &mut file)
        .await
        .expect("write local tar");
    stream.finish().await.expect("pg_basebackup finishes");
    let to_disk = started.elapsed();
    let local_bytes = std::fs::metadata(&local_tar).map(|m| m.len()).unwrap_or(0);
    println!("base backup (pg_basebackup tar, profile {profile})");
    println!(
        "  to the embedded S3:  {:>8} in {:>7}  {}",
        mb(base.tar_bytes),
        secs(to_s3),
        rate(base.tar_bytes, to_s3)
    );
    println!(
        "  to a local file:     {:>8} in {:>7}  {}",
        mb(local_bytes),
        secs(to_disk),
        rate(local_bytes, to_disk)
    );

    // Restore of the base backup: download, sha256, extract, pg_verifybackup.
    let from_s3_dir = scratch.path().join("from-s3");
    std::fs::create_dir(&from_s3_dir).expect("dir");
    let started = Instant::now();
    download_base_backup(&bins, env.store(), &base, &from_s3_dir)
        .await
        .expect("restore from S3");
    let from_s3 = started.elapsed();
    let from_disk_dir = scratch.path().join("from-disk");
    let started = Instant::now();
    extract_tar(&local_tar, &from_disk_dir)
        .await
        .expect("extract local tar");
    verify_backup(&bins, &from_disk_dir).await.expect("pg_verifybackup");
    let from_disk = started.elapsed();
    println!("base backup restore (fetch + sha256 + extract + pg_verifybackup)");
    println!(
        "  from the embedded S3: {:>8} in {:>7}  {}",
        mb(base.tar_bytes),
        secs(from_s3),
        rate(base.tar_bytes, from_s3)
    );
    println!(
        "  from a local file:    {:>8} in {:>7}  {}",
        mb(local_bytes),
        secs(from_disk),
        rate(local_bytes, from_disk)
    );

    // WAL to replay: about wal_mb of inserts after the base backup, archived.
    let mut conn = PgConnection::connect_with(&env.source().connect_options())
        .await
        .expect("connect");
    let rows = wal_mb * 1024 * 1024 / 300;
    let started = Instant::now();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE bench_wal (id bigint, pad text);
         INSERT INTO bench_wal SELECT g, repeat(md5(g::text), 6) FROM generate_series(1, {rows}) g;"
    )))
    .execute(&mut conn)
    .await
    .expect("generate WAL");
    // A time target inside the archive: a commit after it ends its replay.
    let target_time = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    sqlx::raw_sql("INSERT INTO bench_wal VALUES (0, 'after the target')")
        .execute(&mut conn)
        .await
        .expect("a commit after the target");
    conn.close().await.expect("close");
    let mut admin_conn = PgConnection::connect_with(&admin.connect_options())
        .await
        .expect("connect");
    switch_and_wait_archived(&mut admin_conn, Duration::from_secs(600))
        .await
        .expect("archived");
    let archiving = started.elapsed();
    admin_conn.close().await.expect("close");
    let archive = WalArchive::new(env.store().clone());
    let names = archive.list(None).await.expect("list archive");
    println!(
        "WAL written and archived to S3 by wal-push: {} files in {}",
        names.len(),
        secs(archiving)
    );

    // The same archive on local disk, for `cp` as restore_command.
    let local_archive = scratch.path().join("archive");
    std::fs::create_dir(&local_archive).expect("dir");
    for name in &names {
        archive
            .fetch(name, &local_archive.join(name))
            .await
            .expect("copy archive locally");
        std::fs::set_permissions(local_archive.join(name), std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    for dir in [scratch.path(), local_archive.as_path()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    println!("PITR replay to the end of the archive (server start to promoted)");
    for (label, command) in [
        ("restore_command = drillbook wal-fetch (S3)", None),
        (
            "restore_command = cp (local disk)       ",
            Some(format!("cp {}/%f %p", local_archive.display())),
        ),
    ] {
        let mut options = env.pitr_options();
        options.restore_command = command;
        let recovered = recover_to(&bins, env.store(), &RecoveryTarget::EndOfArchive, &options)
            .await
            .expect("recovery");
        println!(
            "  {label}: {:>8} WAL in {:>7}  {}",
            mb(recovered.wal_bytes_replayed),
            secs(recovered.replay),
            rate(recovered.wal_bytes_replayed, recovered.replay)
        );
        recovered.server.cleanup().await.expect("cleanup");
    }

    // `drillbook recover --to-time` (the operator's command) against the
    // library call the PITR drills made before it existed, same archive and
    // target, wall clock from the call to a promoted server.
    println!("PITR to a time, end to end (pick + download + check + replay + promote)");
    let target = RecoveryTarget::Time(target_time);
    let started = Instant::now();
    let recovered = recover_to(&bins, env.store(), &target, &env.pitr_options())
        .await
        .expect("library recovery");
    let library = started.elapsed();
    recovered.server.cleanup().await.expect("cleanup");
    let pgdata = scratch.path().join("recovered-by-command");
    let started = Instant::now();
    let output = std::process::Command::new(program)
        .args(["recover", "--bucket", &env.store().config().location(), "--pgdata"])
        .arg(&pgdata)
        .args([
            "--to-time",
            &target_time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "--json",
        ])
        .envs(drillbook::wal::server_env(env.store().config()))
        .env("DRILL_PROGRESS", "off")
        .output()
        .expect("run drillbook recover");
    let command = started.elapsed();
    assert!(
        output.status.success(),
        "drillbook recover failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    drillbook::pg::DataDirServer::open(&bins, &pgdata)
        .expect("recovered data dir")
        .stop()
        .await
        .expect("stop the recovered server");
    println!("  library recover_to (into a temp cluster): {:>7}", secs(library));
    println!(
        "  drillbook recover --to-time (--pgdata):   {:>7}  ({:.2}x the library call)",
        secs(command),
        command.as_secs_f64() / library.as_secs_f64().max(1e-9)
    );
    env.cleanup().await.expect("cleanup");
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
