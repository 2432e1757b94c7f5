//! Foundation figures, measured side by side in one run:
//!
//! ```sh
//! cargo bench --bench foundation            # medium profile
//! BENCH_PROFILE=small cargo bench --bench foundation
//! ```
//!
//! Prints: embedded environment bring-up, cold (initdb into an empty
//! template cache) and warm (template copied); seed time of the profile;
//! `drillbook backup` next to `pg_dump -Fc > file` of the same database;
//! restore times and the dump size; `drillbook restore` next to the
//! playbook's steps by hand (`aws s3 cp` from the embedded S3, `createdb`,
//! `pg_restore --jobs=4`, needs the AWS CLI); restore's verification
//! stages side by side (row counts, which restore always did, next to the
//! content fingerprints, grants re-apply + check and audit head/anchor it
//! adds), over restores with and without re-applying grants. Figures, not
//! assertions: shared machines are noisy, so nothing here passes or fails
//! on time. `BENCH_SKIP_BRINGUP=1` skips the bring-up figures. Ends with
//! `ratio logical_backup_vs_pg_dump <r> goal 1.10` and
//! `ratio logical_restore_vs_playbook_steps <r> goal 1.00` (issue 15), each
//! the best of its runs over the best of the peer's.

use std::path::Path;
use std::time::{Duration, Instant};

use drillbook::backup::backup_database;
use drillbook::env::EmbeddedEnvironment;
use drillbook::fixtures::{FixtureSpec, Profile};
use drillbook::pg::{ClusterOptions, ConnInfo};
use drillbook::restore::{GrantsMode, RestoreOptions, RestoreReport, restore_database};
use drillbook::store::Store;

const COLD_RUNS: usize = 3;
const WARM_RUNS: usize = 5;
/// Restores per mode (grants re-applied, bare), alternating.
const RESTORE_ROUNDS: usize = 2;

#[tokio::main]
async fn main() {
    let profile = match std::env::var("BENCH_PROFILE").as_deref() {
        Ok("small") => Profile::Small,
        Ok("large") => Profile::Large,
        _ => Profile::Medium,
    };
    if std::env::var_os("BENCH_SKIP_BRINGUP").is_none() {
        bring_up().await;
    }
    let mut env = EmbeddedEnvironment::start().await.expect("environment starts");
    let seeded = env.seed(FixtureSpec::ending_now(profile, 42)).await.expect("seed");
    println!("seed, profile {profile}");
    println!(
        "  {} rows in {} ({} audit_logs rows)",
        total_rows(&seeded.rows),
        secs(seeded.elapsed),
        seeded.rows_in("audit_logs").unwrap_or(0)
    );

    let admin = env.primary().admin();
    let scratch = tempfile::tempdir().expect("temp dir");
    // Backups side by side, alternating: `drillbook backup` (the library
    // call the command makes) and the peer, `pg_dump -Fc > file`.
    let (mut backups, mut dumps) = (Vec::new(), Vec::new());
    let mut backup = None;
    for _ in 0..RESTORE_ROUNDS {
        let report = backup_database(env.binaries(), &env.source(), Some(&admin), env.store())
            .await
            .expect("backup");
        backups.push(report.elapsed);
        backup = Some(report);
        let file = scratch.path().join("peer.dump");
        dumps.push(pg_dump_to_file(env.binaries(), &env.source(), &file).await);
    }
    let backup = backup.expect("at least one backup");
    let dump_mib = backup.manifest.dump.bytes as f64 / (1 << 20) as f64;
    let peer_mib = std::fs::metadata(scratch.path().join("peer.dump")).map_or(0, |m| m.len()) as f64 / (1 << 20) as f64;
    let (backup_best, dump_best) = (best(&backups), best(&dumps));
    println!("logical backup, same database, alternating, best of {RESTORE_ROUNDS}");
    println!(
        "  drillbook backup (pg_dump -Fc to daily/ + manifest facts in its snapshot): {} for {dump_mib:.1} MiB \
         ({:.1} MiB/s)  runs {}",
        secs(backup_best),
        dump_mib / backup_best.as_secs_f64(),
        list(&backups)
    );
    println!(
        "  pg_dump -Fc > file:                                                        {} for {peer_mib:.1} MiB \
         ({:.1} MiB/s)  runs {}",
        secs(dump_best),
        peer_mib / dump_best.as_secs_f64(),
        list(&dumps)
    );

    let replacement = env.provision_cluster().await.expect("replacement cluster");
    let bins = env.binaries().clone();
    let mut runs = Vec::new();
    for round in 0..RESTORE_ROUNDS {
        for (label, grants) in [
            ("grants re-applied", GrantsMode::Reapply),
            ("bare (--no-grants)", GrantsMode::Bare),
        ] {
            let options = RestoreOptions {
                target_database: Some(format!("bench_restore_{round}_{}", runs.len())),
                grants,
                ..RestoreOptions::default()
            };
            let started = Instant::now();
            let report = restore_database(&bins, &replacement, env.store(), &options)
                .await
                .expect("restore");
            runs.push((label, report, started.elapsed()));
        }
    }
    let (_, restored, total) = &runs[0];
    println!("restore from the embedded S3 onto a new cluster (pg_restore --jobs=4)");
    println!(
        "  total {}: download + sha256 {}, pg_restore {}, verification {}",
        secs(*total),
        secs(restored.download),
        secs(restored.restore),
        secs(restored.verify)
    );
    restore_checks(&runs);

    // The playbook's restore by hand, on the same cluster and dump:
    // `aws s3 cp` of the newest dump, `createdb`, `pg_restore --jobs=4`.
    let mut playbook = Vec::new();
    for round in 0..RESTORE_ROUNDS {
        let name = format!("bench_playbook_{round}");
        playbook.push(
            playbook_restore(
                &bins,
                env.store(),
                &backup.manifest.dump.key,
                &replacement,
                &name,
                scratch.path(),
            )
            .await,
        );
    }
    let restores: Vec<Duration> = runs
        .iter()
        .filter(|(label, ..)| *label == "grants re-applied")
        .map(|(.., total)| *total)
        .collect();
    let (restore_best, playbook_best) = (best(&restores), best(&playbook));
    println!("logical restore, same dump, same cluster, best of {RESTORE_ROUNDS}");
    println!(
        "  drillbook restore (download + sha256, pg_restore --jobs=4, grants, verification): {}  runs {}",
        secs(restore_best),
        list(&restores)
    );
    println!(
        "  the playbook's steps (aws s3 cp, createdb, pg_restore --jobs=4):                  {}  runs {}",
        secs(playbook_best),
        list(&playbook)
    );
    env.cleanup().await.expect("cleanup");
    println!(
        "ratio logical_backup_vs_pg_dump {:.2} goal 1.10",
        backup_best.as_secs_f64() / dump_best.as_secs_f64()
    );
    // Issue 15's table puts restore at 0.93-1.11x the playbook's steps: the
    // goal is to be no slower than doing them by hand, checks included.
    println!(
        "ratio logical_restore_vs_playbook_steps {:.2} goal 1.00",
        restore_best.as_secs_f64() / playbook_best.as_secs_f64()
    );
}

/// `pg_dump -Fc > file` of `source`: its wall time.
async fn pg_dump_to_file(bins: &drillbook::pg::PgBinaries, source: &ConnInfo, file: &Path) -> Duration {
    let out = std::fs::File::create(file).expect("dump file");
    let started = Instant::now();
    let status = tokio::process::Command::new(bins.bin_dir().join("pg_dump"))
        .args(["-Fc", "--no-password", &format!("--dbname={}", source.url())])
        .stdout(out)
        .status()
        .await
        .expect("run pg_dump");
    let took = started.elapsed();
    assert!(status.success(), "pg_dump failed");
    took
}

/// The playbook's restore steps by hand into a new database `name` on
/// `server`; their wall time.
async fn playbook_restore(
    bins: &drillbook::pg::PgBinaries,
    store: &Store,
    dump_key: &str,
    server: &ConnInfo,
    name: &str,
    scratch: &Path,
) -> Duration {
    let config = store.config();
    let (key_id, secret) = config.credentials.clone().expect("the embedded S3's credentials");
    let file = scratch.join("playbook.dump");
    let started = Instant::now();
    let copied = tokio::process::Command::new("aws")
        .args(["s3", "cp", "--only-show-errors"])
        .arg(format!("s3://{}/{}{dump_key}", config.bucket, config.prefix))
        .arg(&file)
        .args(["--endpoint-url", config.endpoint.as_deref().expect("embedded endpoint")])
        .env("AWS_ACCESS_KEY_ID", key_id)
        .env("AWS_SECRET_ACCESS_KEY", secret.expose())
        .env("AWS_DEFAULT_REGION", &config.region)
        .status()
        .await
        .expect("run aws (the AWS CLI; install it with `pip install awscli`)");
    assert!(copied.success(), "aws s3 cp failed");
    let created = tokio::process::Command::new(bins.bin_dir().join("createdb"))
        .args(["--no-password", &format!("--maintenance-db={}", server.url()), name])
        .status()
        .await
        .expect("run createdb");
    assert!(created.success(), "createdb failed");
    let restored = tokio::process::Command::new(bins.bin_dir().join("pg_restore"))
        .args(["--no-owner", "--no-acl", "--jobs=4", "--no-password"])
        .arg(format!("--dbname={}", server.with_database(name).url()))
        .arg(&file)
        .status()
        .await
        .expect("run pg_restore");
    let took = started.elapsed();
    assert!(restored.success(), "pg_restore failed");
    took
}

fn best(values: &[Duration]) -> Duration {
    values.iter().copied().min().unwrap_or_default()
}

fn restore_checks(runs: &[(&str, RestoreReport, Duration)]) {
    println!("restore verification, side by side (same backup, same cluster, alternating)");
    for (label, report, total) in runs {
        let v = &report.verification;
        let other = report
            .verify
            .saturating_sub(v.counts_took + v.fingerprints_took + v.grants_took);
        let added = report.verify.saturating_sub(v.counts_took);
        println!(
            "  {label:<19} total {}: download {}, pg_restore {}, verify {} = row counts {} + fingerprints {} \
             + grants {} + head/anchor/connect {}; added by the new checks {} ({:.1}% of the restore)",
            secs(*total),
            secs(report.download),
            secs(report.restore),
            secs(report.verify),
            secs(v.counts_took),
            secs(v.fingerprints_took),
            secs(v.grants_took),
            secs(other),
            secs(added),
            100.0 * added.as_secs_f64() / total.as_secs_f64()
        );
    }
}

async fn bring_up() {
    let mut cold = Vec::new();
    for _ in 0..COLD_RUNS {
        let cache = tempfile::tempdir().expect("temp dir");
        let options = ClusterOptions {
            template_cache: Some(cache.path().to_owned()),
            ..Default::default()
        };
        let started = Instant::now();
        let env = EmbeddedEnvironment::start_with(options)
            .await
            .expect("environment starts");
        cold.push(started.elapsed());
        env.cleanup().await.expect("cleanup");
    }
    let mut warm = Vec::new();
    for _ in 0..WARM_RUNS {
        let started = Instant::now();
        let env = EmbeddedEnvironment::start().await.expect("environment starts");
        warm.push(started.elapsed());
        env.cleanup().await.expect("cleanup");
    }
    println!("environment bring-up (cluster + database + S3 + bucket)");
    println!(
        "  cold, initdb into an empty cache: median {}  runs {}",
        secs(median(&mut cold)),
        list(&cold)
    );
    println!(
        "  warm, template copied:            median {}  runs {}",
        secs(median(&mut warm)),
        list(&warm)
    );
    println!(
        "  cold / warm:                      {:.1}x",
        median(&mut cold).as_secs_f64() / median(&mut warm).as_secs_f64()
    );
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn secs(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

fn list(values: &[Duration]) -> String {
    values.iter().map(|d| secs(*d)).collect::<Vec<_>>().join(" ")
}

fn total_rows(rows: &[(String, u64)]) -> u64 {
    rows.iter().map(|(_, n)| n).sum()
}
