//! The operator's commands of issue 13, through the real binary against an
//! archiving server and a real S3 API: `basebackup`, `check` (healthy, then
//! each fault it must name: a deleted WAL segment, a damaged segment, a
//! damaged dump, a stale backup) and `restore --table` (into a new database,
//! and `--swap-into` the damaged one, refused when the columns differ).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use drillbook::env::ArchivingEnvironment;
use drillbook::fixtures::{FixtureSpec, Profile};
use drillbook::wal::switch_and_wait_archived;
use serde_json::Value;

use crate::common::{BIN, connect, drillbook, drillbook_at, exec, json, output_text};

const ARCHIVED_WITHIN: Duration = Duration::from_secs(60);

/// Rows in `invoice_lines` of the database `conn` is on.
async fn invoice_lines(conn: &mut sqlx::PgConnection) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM invoice_lines")
        .fetch_one(conn)
        .await
        .unwrap()
}

/// The `check` of this name in a `check --json` report.
fn check<'r>(report: &'r Value, name: &str) -> &'r Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {report:#}"))
}

fn problems(report: &Value, name: &str) -> String {
    check(report, name)["problems"].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basebackup_check_and_table_restore_from_the_command_line() {
    let env = ArchivingEnvironment::start(Path::new(BIN), Duration::from_secs(60))
        .await
        .unwrap();
    let store = env.store().clone();
    let bucket = store.config().location();
    let admin = env.admin().url();
    let source = env.source().url();
    drillbook::fixtures::seed(
        &env.source(),
        FixtureSpec {
            profile: Profile::Small,
            seed: 13,
            until: "2026-06-30T12:00:00Z".parse().unwrap(),
        },
    )
    .await
    .unwrap();

    // basebackup: bad input first, then the real one.
    let out = drillbook(
        &store,
        &["basebackup", "--admin-url", &admin, "--bucket", "s3://no-such-bucket"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not exist"),
        "{}",
        output_text(&out)
    );
    let unreachable = "postgres://postgres:x@127.0.0.1:1/postgres";
    let out = drillbook(&store, &["basebackup", "--admin-url", unreachable, "--bucket", &bucket]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(
        store.list("base/").await.unwrap().is_empty(),
        "a refused base backup writes nothing"
    );
    let out = drillbook(
        &store,
        &["basebackup", "--admin-url", &admin, "--bucket", &bucket, "--json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let base = json(&out);
    assert!(base["tar_bytes"].as_u64().unwrap() > 1_000_000, "{base:#}");
    assert!(
        store
            .size_of(&format!("base/{}/manifest.json", base["stamp"].as_str().unwrap()))
            .await
            .unwrap()
            .is_some(),
        "its manifest is in the bucket"
    );

    // A daily dump, an anchor, and the WAL since the base backup archived.
    let out = drillbook(
        &store,
        &[
            "backup",
            "--database-url",
            &source,
            "--admin-url",
            &admin,
            "--bucket",
            &bucket,
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let out = drillbook(&store, &["anchor", "--database-url", &source, "--bucket", &bucket]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let mut admin_conn = connect(&env.admin()).await;
    for _ in 0..3 {
        exec(&mut connect(&env.source()).await, "UPDATE tenants SET name = name").await;
        switch_and_wait_archived(&mut admin_conn, ARCHIVED_WITHIN)
            .await
            .unwrap();
    }

    // Healthy: every check passes, exit 0; the textfile says so.
    let prom = tempfile::tempdir().unwrap();
    let prom_file = prom.path().join("drillbook.prom");
    let prom_arg = prom_file.display().to_string();
    let args = ["check", "--bucket", &bucket, "--database-url", &admin, "--json"];
    let out = drillbook(&store, &[&args[..], &["--prometheus", &prom_arg]].concat());
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let healthy = json(&out);
    for name in ["daily_dump", "base_backup", "wal_archive", "archive_lag", "anchors"] {
        assert_eq!(check(&healthy, name)["ok"], true, "{name}: {healthy:#}");
    }
    assert!(check(&healthy, "wal_archive")["figures"]["segments"].as_f64().unwrap() >= 3.0);
    let text = std::fs::read_to_string(&prom_file).unwrap();
    assert!(text.contains("drillbook_check_ok{check=\"wal_archive\"} 1"), "{text}");

    // A WAL segment deleted from the middle of the archive: a gap, exit 1.
    let mut segments: Vec<String> = store
        .list("wal/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .filter(|k| k.rsplit('/').next().is_some_and(|n| n.len() == 24))
        .collect();
    segments.sort();
    let deleted = segments[segments.len() - 2].clone();
    let deleted_bytes = store.get_bytes(&deleted).await.unwrap();
    store.delete(&deleted).await.unwrap();
    let out = drillbook(&store, &args);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    let report = json(&out);
    let name = deleted.rsplit('/').next().unwrap();
    assert!(
        problems(&report, "wal_archive").contains(name),
        "the gap is named: {report:#}"
    );
    store
        .put_bytes(&deleted, deleted_bytes.clone(), "application/octet-stream")
        .await
        .unwrap();

    // The same segment damaged instead: its content no longer matches its header.
    let mut damaged = deleted_bytes.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 0xff;
    store
        .put_bytes(&deleted, damaged, "application/octet-stream")
        .await
        .unwrap();
    let out = drillbook(&store, &args);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(
        problems(&json(&out), "wal_archive").contains("damaged"),
        "{}",
        output_text(&out)
    );
    store
        .put_bytes(&deleted, deleted_bytes, "application/octet-stream")
        .await
        .unwrap();

    // Sampling: with 3 runs per cycle, the WAL objects are spread over the runs.
    let wal_objects = || async { store.list("wal/").await.unwrap().len() as f64 };
    let objects = wal_objects().await;
    let mut hashed = 0.0;
    for _ in 0..3 {
        let out = drillbook(&store, &["check", "--bucket", &bucket, "--sample-runs", "3", "--json"]);
        assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
        let report = json(&out);
        hashed += check(&report, "wal_archive")["figures"]["hashed"].as_f64().unwrap();
    }
    assert_eq!(
        wal_objects().await,
        objects,
        "the server archived nothing meanwhile (it is idle)"
    );
    assert_eq!(hashed, objects, "three sampled runs hash every WAL object exactly once");

    // The newest dump damaged: its sha256 no longer matches the manifest.
    let dump_key = check(&healthy, "daily_dump")["summary"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .nth(2)
        .unwrap()
        .to_owned();
    let dump = store.get_bytes(&dump_key).await.unwrap();
    let mut bad = dump.clone();
    bad[100] ^= 0xff;
    store
        .put_bytes(&dump_key, bad, "application/octet-stream")
        .await
        .unwrap();
    let out = drillbook(&store, &args);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(
        problems(&json(&out), "daily_dump").contains("damaged"),
        "{}",
        output_text(&out)
    );
    store
        .put_bytes(&dump_key, dump, "application/octet-stream")
        .await
        .unwrap();

    // Stale: the same bucket judged with a one-second maximum age.
    let out = drillbook(
        &store,
        &[
            "check",
            "--bucket",
            &bucket,
            "--max-dump-age",
            "1s",
            "--max-base-backup-age",
            "1s",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    let stale = json(&out);
    assert!(problems(&stale, "daily_dump").contains("stopped"), "{stale:#}");
    assert!(problems(&stale, "base_backup").contains("old"), "{stale:#}");

    // restore --table: the damaged table stays as it is; the backup's copy
    // lands in a new database, with the manifest's row count.
    let mut app = connect(&env.source()).await;
    exec(&mut app, "DELETE FROM invoice_lines WHERE id % 4 = 0").await;
    let damaged_rows = invoice_lines(&mut app).await;
    let out = drillbook(
        &store,
        &[
            "restore",
            "--admin-url",
            &admin,
            "--bucket",
            &bucket,
            "--table",
            "invoice_lines",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let copy = json(&out);
    let copy_db = copy["database"].as_str().unwrap().to_owned();
    assert!(copy_db.contains("invoice_lines_restore_"), "{copy:#}");
    let restored = copy["rows_restored"].as_i64().unwrap();
    assert!(restored > damaged_rows, "{copy:#}");
    let mut copy_conn = connect(&env.admin().with_database(&copy_db)).await;
    let in_copy = invoice_lines(&mut copy_conn).await;
    assert_eq!(in_copy, restored);
    drop(copy_conn);

    // --swap-into refused when the columns differ; nothing touched.
    exec(&mut app, "ALTER TABLE invoice_lines ADD COLUMN note text").await;
    let swap = [
        "restore",
        "--admin-url",
        &admin,
        "--bucket",
        &bucket,
        "--table",
        "invoice_lines",
        "--swap-into",
        &source,
    ];
    let out = drillbook(&store, &swap);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("definition differs"),
        "{}",
        output_text(&out)
    );
    let still = invoice_lines(&mut app).await;
    assert_eq!(still, damaged_rows, "a refused swap touches nothing");

    // Same columns again: the swap replaces the rows in one transaction.
    exec(&mut app, "ALTER TABLE invoice_lines DROP COLUMN note").await;
    let out = drillbook(&store, &[&swap[..], &["--json"]].concat());
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let swapped = json(&out);
    assert_eq!(swapped["rows_before"], damaged_rows, "{swapped:#}");
    let now = invoice_lines(&mut app).await;
    assert_eq!(now, restored);
    // --swap-into without --table is a usage error.
    let out = drillbook(
        &store,
        &[
            "restore",
            "--admin-url",
            &admin,
            "--bucket",
            &bucket,
            "--swap-into",
            &source,
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));

    drop(app);
    drop(admin_conn);
    env.cleanup().await.unwrap();
}

/// `drillbook env up --wal-archiving`: the environment the README's
/// operator commands are tried against. It archives WAL, has a first base
/// backup, dump and anchor, so `check` passes on it as it comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_up_with_wal_archiving_is_healthy_as_it_comes() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let dir = tempfile::tempdir().unwrap();
    let stderr = dir.path().join("env-up.stderr");
    let mut child = Command::new(BIN)
        .args(["env", "up", "--wal-archiving", "--archive-timeout", "10s"])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let mut text = String::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        text.push_str(&line);
        if line == "}" {
            break;
        }
    }
    let stop = |mut child: std::process::Child| {
        // SAFETY: kill(2) with SIGINT on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        child.wait().unwrap()
    };
    let facts: Value = match serde_json::from_str(&text) {
        Ok(facts) => facts,
        Err(e) => {
            stop(child);
            panic!(
                "env up printed no JSON ({e}): {}",
                std::fs::read_to_string(&stderr).unwrap()
            );
        }
    };
    let fact = |name: &str| {
        facts[name]
            .as_str()
            .unwrap_or_else(|| panic!("no {name} in {facts:#}"))
            .to_owned()
    };
    let base = fact("first_base_backup");
    let run = |args: &[&str]| drillbook_at(&fact("s3_endpoint"), &fact("access_key"), &fact("secret_key"), args);
    // The server archives: a switched segment lands in the bucket within the timeout.
    let admin: drillbook::pg::ConnInfo = fact("admin_url").parse().unwrap();
    switch_and_wait_archived(&mut connect(&admin).await, ARCHIVED_WITHIN)
        .await
        .unwrap();
    let out = run(&[
        "check",
        "--bucket",
        &fact("backup_bucket"),
        "--database-url",
        &fact("admin_url"),
        "--json",
    ]);
    let status = stop(child);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let report = json(&out);
    assert!(
        check(&report, "base_backup")["summary"]
            .as_str()
            .unwrap()
            .contains(&base),
        "{report:#}"
    );
    assert!(status.success(), "env up stops cleanly on SIGINT: {status:?}");
}
