//! Integrity figures, measured side by side in one run:
//!
//! ```sh
//! cargo bench --bench integrity                       # medium (1M audit rows), then large (4M)
//! BENCH_PROFILES=medium cargo bench --bench integrity # medium only
//! ```
//!
//! For each profile, in one read-only snapshot, each timed `RUNS` times
//! (median printed):
//! - `COPY (SELECT <the verified columns> ORDER BY created_at, id) TO STDOUT`
//!   read into nothing: the cost of reading the chain;
//! - full chain verification (links + content hashes + anchor) through the
//!   same COPY: parsing and hashing on a second thread;
//! - the playbook's 4.1 query, verbatim;
//! - the ratio verification / COPY (target <= 1.3x);
//! - peak RSS (VmHWM) of the verification, reset before it
//!   (`/proc/self/clear_refs`), to show memory does not grow with the chain.
//!
//! Figures, not assertions: shared machines are noisy. Ends with
//! `ratio verify_vs_copy <r> goal 1.00` (issue 15) for the first profile run.

use std::time::{Duration, Instant};

use drillbook::env::EmbeddedEnvironment;
use drillbook::fixtures::{FixtureSpec, Profile};
use drillbook::integrity::anchor::Anchor;
use drillbook::integrity::sql::playbook_broken_links;
use drillbook::integrity::stream::{CHAIN_COPY_SQL, verify_chain};
use futures::TryStreamExt as _;
use sqlx::{Connection, PgConnection};

const RUNS: usize = 3;

#[tokio::main]
async fn main() {
    let profiles: Vec<Profile> = match std::env::var("BENCH_PROFILES").as_deref() {
        Ok("medium") => vec![Profile::Medium],
        Ok("small") => vec![Profile::Small],
        Ok("large") => vec![Profile::Large],
        _ => vec![Profile::Medium, Profile::Large],
    };
    let mut ratios = Vec::new();
    for profile in profiles {
        ratios.push((profile, bench(profile).await));
    }
    // Issue 15's figure is the medium profile's (1M audit rows): the first run.
    let (profile, ratio) = ratios[0];
    println!("verification / COPY, profile {profile}:");
    println!("ratio verify_vs_copy {ratio:.2} goal 1.00");
}

/// One profile's figures; returns verification / COPY.
async fn bench(profile: Profile) -> f64 {
    let env = EmbeddedEnvironment::start().await.expect("environment starts");
    let seeded = env.seed(FixtureSpec::ending_now(profile, 42)).await.expect("seed");
    let rows = seeded.rows_in("audit_logs").unwrap_or(0);
    println!(
        "profile {profile}: {rows} audit rows (seeded in {:.1}s)",
        seeded.elapsed.as_secs_f64()
    );

    let mut conn = PgConnection::connect_with(&env.source().connect_options())
        .await
        .expect("connect");
    let mut tx = conn
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .expect("snapshot");
    sqlx::raw_sql("SET LOCAL TimeZone = 'UTC'; SET LOCAL DateStyle = 'ISO, MDY'")
        .execute(&mut *tx)
        .await
        .expect("settings");
    let anchor = Anchor::read(&mut tx).await.expect("anchor");

    let (mut copy, mut verify, mut playbook) = (Vec::new(), Vec::new(), Vec::new());
    let mut bytes = 0u64;
    let mut peak_kib = 0u64;
    for _ in 0..RUNS {
        let started = Instant::now();
        let mut stream = tx.copy_out_raw(CHAIN_COPY_SQL).await.expect("copy");
        bytes = 0;
        while let Some(chunk) = stream.try_next().await.expect("copy chunk") {
            bytes += chunk.len() as u64;
        }
        drop(stream);
        copy.push(started.elapsed());

        reset_peak_rss();
        let pass = verify_chain(&mut tx, Some(&anchor)).await.expect("verify");
        verify.push(pass.elapsed);
        peak_kib = peak_kib.max(peak_rss_kib());
        assert_eq!(pass.rows, rows, "every row verified");
        assert!(
            pass.findings.is_empty(),
            "{:?}",
            &pass.findings[..pass.findings.len().min(3)]
        );

        let started = Instant::now();
        let broken = playbook_broken_links(&mut tx).await.expect("4.1");
        playbook.push(started.elapsed());
        assert_eq!(broken, 0);
    }
    let (copy, verify, playbook) = (median(&mut copy), median(&mut verify), median(&mut playbook));
    println!(
        "  COPY of the verified columns into nothing: {}  ({:.0} MB)",
        secs(copy),
        bytes as f64 / 1e6
    );
    println!("  full chain verification (links + content + anchor): {}", secs(verify));
    println!("  playbook 4.1 verbatim: {}", secs(playbook));
    println!(
        "  verification / COPY: {:.2}x (target <= 1.3x)",
        verify.as_secs_f64() / copy.as_secs_f64()
    );
    println!(
        "  verification rate: {:.0} rows/s; peak RSS during verification: {:.1} MiB",
        rows as f64 / verify.as_secs_f64(),
        peak_kib as f64 / 1024.0
    );
    let _ = tx.rollback().await;
    let _ = conn.close().await;
    env.cleanup().await.expect("cleanup");
    verify.as_secs_f64() / copy.as_secs_f64()
}

/// Resets VmHWM to the current RSS (Linux: `echo 5 > /proc/self/clear_refs`).
fn reset_peak_rss() {
    if let Err(e) = std::fs::write("/proc/self/clear_refs", "5") {
        eprintln!("could not reset the peak RSS ({e}); the figure includes seeding");
    }
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}
