//! Foundation figures, measured side by side in one run:
//!
//! ```sh
//! cargo bench --bench foundation            # medium profile
//! BENCH_PROFILE=small cargo bench --bench foundation
//! ```
//!
//! Prints: embedded environment bring-up, cold (initdb into an empty
//! template cache) and warm (template copied); seed time of the profile;
//! backup and restore times and the dump size; restore's verification
//! stages side by side (row counts, which restore always did, next to the
//! content fingerprints, grants re-apply + check and audit head/anchor it
//! adds), over restores with and without re-applying grants. Figures, not
//! assertions: shared machines are noisy, so nothing here passes or fails
//! on time. `BENCH_SKIP_BRINGUP=1` skips the bring-up figures.

use std::time::{Duration, Instant};

use drillbook::backup::backup_database;
use drillbook::env::EmbeddedEnvironment;
use drillbook::fixtures::{FixtureSpec, Profile};
use drillbook::pg::ClusterOptions;
use drillbook::restore::{GrantsMode, RestoreOptions, RestoreReport, restore_database};

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
    let backup = backup_database(env.binaries(), &env.source(), Some(&admin), env.store())
        .await
        .expect("backup");
    let dump_mib = backup.manifest.dump.bytes as f64 / (1 << 20) as f64;
    println!("backup to the embedded S3 (pg_dump -Fc streamed, manifest, copy into daily/)");
    println!(
        "  {} for a {dump_mib:.1} MiB dump ({:.1} MiB/s)",
        secs(backup.elapsed),
        dump_mib / backup.elapsed.as_secs_f64()
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
    env.cleanup().await.expect("cleanup");
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
