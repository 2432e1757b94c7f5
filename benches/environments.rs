//! Time from asking for an environment to it being ready, per backend, side
//! by side in one run: embedded cold (the first in the process) and warm,
//! containers cold (first container of the run) and warm, staging connect
//! (against an embedded server posing as staging). Prints figures; asserts
//! nothing about speed. Containers are measured only where Docker answers
//! and the images exist (`ci/images/build.sh`); otherwise the reason is printed.
//!
//! `cargo bench --bench environments` (`BENCH_ROUNDS`, default 3).

use std::time::{Duration, Instant};

use drillbook::env::config::check;
use drillbook::env::containers::ContainersEnvironment;
use drillbook::env::{EmbeddedEnvironment, StagingEnvironment};

fn summary(label: &str, samples: &[Duration]) {
    if samples.is_empty() {
        return;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{label:<28} n={:<2} min {:>8.1} ms  median {:>8.1} ms  max {:>8.1} ms",
        sorted.len(),
        ms(sorted[0]),
        ms(sorted[sorted.len() / 2]),
        ms(sorted[sorted.len() - 1])
    );
}

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    println!("environment ready times ({rounds} warm rounds each)");

    let started = Instant::now();
    let env = EmbeddedEnvironment::start().await.expect("embedded environment starts");
    let embedded_cold = started.elapsed();
    env.cleanup().await.unwrap();
    let mut embedded_warm = Vec::new();
    for _ in 0..rounds {
        let started = Instant::now();
        let env = EmbeddedEnvironment::start().await.expect("embedded environment starts");
        embedded_warm.push(started.elapsed());
        env.cleanup().await.unwrap();
    }
    summary("embedded cold", &[embedded_cold]);
    summary("embedded warm", &embedded_warm);

    let started = Instant::now();
    match ContainersEnvironment::start().await {
        Ok(env) => {
            let cold = started.elapsed();
            env.cleanup().await.unwrap();
            let mut warm = Vec::new();
            for _ in 0..rounds {
                let started = Instant::now();
                let env = ContainersEnvironment::start()
                    .await
                    .expect("containers environment starts");
                warm.push(started.elapsed());
                env.cleanup().await.unwrap();
            }
            summary("containers cold", &[cold]);
            summary("containers warm", &warm);
        }
        Err(e) => println!("{:<28} not measured: {e}", "containers"),
    }

    // Staging: connecting to existing servers (an embedded one stands in).
    let server = EmbeddedEnvironment::start().await.unwrap();
    let facts = server.connection_facts();
    let text = format!(
        "[database]\nadmin_url = \"{}\"\n[s3]\nbucket = \"s3://{}\"\nendpoint = \"{}\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
        facts.admin_url, facts.bucket, facts.s3_endpoint, facts.access_key, facts.secret_key
    );
    let config = check(&text, |_| None).expect("valid config");
    let mut staging = Vec::new();
    for _ in 0..rounds {
        let started = Instant::now();
        let env = StagingEnvironment::connect(config.clone()).await.unwrap();
        staging.push(started.elapsed());
        env.cleanup().await.unwrap();
    }
    summary("staging connect", &staging);
    server.cleanup().await.unwrap();
}
