//! `drillbook verify` and `drillbook anchor`, the binary itself: exit 0 on a
//! clean database, 1 with findings, 2 when it could not run (an anchor that
//! does not parse or belongs to another chain, a connection lost mid-run,
//! never "clean").

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use drillbook::env::EmbeddedEnvironment;
use drillbook::fixtures::{FixtureSpec, Profile};
use drillbook::integrity::suite::APPLICATION_NAME;
use sqlx::{Connection, PgConnection};

use crate::common::{BIN, output_text};

fn spec(seed: u64) -> FixtureSpec {
    FixtureSpec {
        profile: Profile::Small,
        seed,
        until: "2026-06-30T12:00:00Z".parse().unwrap(),
    }
}

fn drillbook(env: &EmbeddedEnvironment, args: &[&str]) -> Output {
    let facts = env.connection_facts();
    Command::new(BIN)
        .args(args)
        .env("AWS_ACCESS_KEY_ID", &facts.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &facts.secret_key)
        .env("AWS_ENDPOINT_URL", &facts.s3_endpoint)
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env_remove("DATABASE_URL")
        .output()
        .unwrap()
}

#[tokio::test]
async fn verify_exit_codes_json_and_anchors() {
    let env = EmbeddedEnvironment::start().await.unwrap();
    env.seed(spec(7)).await.unwrap();
    let url = env.source().url();
    let bucket = env.connection_facts().backup_bucket;

    // Clean: exit 0, human output says so.
    let out = drillbook(&env, &["verify", "--database-url", &url]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("verdict: CLEAN"),
        "{}",
        output_text(&out)
    );

    // `anchor` writes anchors/<stamp>.json; verify against it from S3: exit 0.
    let out = drillbook(&env, &["anchor", "--database-url", &url, "--bucket", &bucket, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let anchor: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(anchor["rows"], 20_000);
    let keys = env.store().list("anchors/").await.unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let anchor_url = format!("s3://{}/{}", env.store().config().bucket, keys[0].key);
    let out = drillbook(
        &env,
        &["verify", "--database-url", &url, "--anchor", &anchor_url, "--json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["findings"], serde_json::json!([]));
    assert_eq!(report["playbook_4_1_broken_links"], 0);
    assert!(
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["status"] == "passed")
    );

    // The newest rows deleted: only the anchor sees it; exit 1, JSON says so.
    let mut conn = PgConnection::connect_with(&env.source().connect_options())
        .await
        .unwrap();
    sqlx::raw_sql(
        "DELETE FROM audit_logs WHERE id IN (SELECT id FROM audit_logs ORDER BY created_at DESC, id DESC LIMIT 5)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    let out = drillbook(
        &env,
        &["verify", "--database-url", &url, "--anchor", &anchor_url, "--json"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let checks: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["check"].as_str().unwrap())
        .collect();
    assert_eq!(checks, vec!["chain_anchor"], "{}", output_text(&out));
    assert_eq!(report["missed_by_playbook"].as_array().unwrap().len(), 1);
    let out = drillbook(&env, &["verify", "--database-url", &url, "--anchor", &anchor_url]);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    let human = String::from_utf8_lossy(&out.stdout);
    assert!(
        human.contains("chain_anchor [drillbook]") && human.contains("missed: chain_anchor"),
        "{human}"
    );

    // An anchor that does not parse: exit 2, says so.
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("anchor.json");
    std::fs::write(&garbage, b"{\"head_id\": \"not a number\"").unwrap();
    let out = drillbook(
        &env,
        &["verify", "--database-url", &url, "--anchor", garbage.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not parse"),
        "{}",
        output_text(&out)
    );
    assert!(out.stdout.is_empty(), "{}", output_text(&out));

    // An anchor of another chain (another database, another seed): exit 2.
    let other = env.primary().create_database("other").await.unwrap();
    drillbook::fixtures::seed(&other, spec(8)).await.unwrap();
    let out = drillbook(
        &env,
        &["verify", "--database-url", &other.url(), "--anchor", &anchor_url],
    );
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another chain"),
        "{}",
        output_text(&out)
    );
    env.cleanup().await.unwrap();
}

#[tokio::test]
async fn a_connection_lost_mid_verification_exits_2_never_clean() {
    let env = EmbeddedEnvironment::start().await.unwrap();
    env.seed(spec(7)).await.unwrap();
    let target = env.source();
    // Hold a lock so verify is caught in the middle of its run, inside its
    // snapshot: its first read of billing_runs waits, and its backend is
    // terminated from another connection while it waits.
    let mut locker = PgConnection::connect_with(&target.connect_options()).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE billing_runs IN ACCESS EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .unwrap();
    let child = Command::new(BIN)
        .args(["verify", "--database-url", &target.url()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut killer = PgConnection::connect_with(&target.connect_options()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let terminated = loop {
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name = $1 AND wait_event_type = 'Lock'",
        )
        .bind(APPLICATION_NAME)
        .fetch_all(&mut killer)
        .await
        .unwrap();
        if killed.contains(&true) {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let out = child.wait_with_output().unwrap();
    assert!(
        terminated,
        "verify never reached the locked table: {}",
        output_text(&out)
    );
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("NOT verified"), "{}", output_text(&out));
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("CLEAN"),
        "{}",
        output_text(&out)
    );
    sqlx::raw_sql("ROLLBACK").execute(&mut locker).await.unwrap();
    locker.close().await.unwrap();
    killer.close().await.unwrap();
    env.cleanup().await.unwrap();
}
