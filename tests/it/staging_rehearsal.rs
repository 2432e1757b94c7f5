//! The staging rehearsal: the staging code path, for real, against real
//! servers. `drillbook env up` plays staging (a seeded Postgres with a
//! password, an S3 with a secret key, a first backup); a `drill.toml` points
//! at it; the drill suite runs with `DRILL_ENV=staging` as an operator would
//! run it, `drillbook run` (which selects the drills that run on staging),
//! with its stdout and stderr captured. Then:
//!
//! - every drill passed, on the staging backend (its JUnit says so);
//! - no output (stdout, stderr with debug logs, JUnit, drill history) holds
//!   the admin password or the S3 secret key;
//! - staging is exactly as before: same databases, same source rows, same
//!   objects in the bucket (the restored copy was dropped).
//!
//! `drillbook run` runs the very library functions the drill targets run
//! (`drillbook::drills`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use drillbook::pg::ConnInfo;
use drillbook::store::{S3Config, Store};
use drillbook::workload::write_activity;
use sqlx::{Connection, PgConnection};

use crate::common::BIN;

/// The drills that run on staging (the others refuse it, loudly).
fn staging_drills() -> Vec<&'static str> {
    drillbook::drills::runnable_on(drillbook::env::Backend::Staging)
        .filter(|drill| !drill.needs_cluster)
        .map(|drill| drill.name)
        .collect()
}

/// `drillbook env up`, stopped with SIGINT on drop.
pub(crate) struct EnvUp {
    child: Child,
    facts: serde_json::Value,
    stderr: PathBuf,
}

impl EnvUp {
    pub(crate) fn start(dir: &Path) -> Self {
        let stderr = dir.join("env-up.stderr");
        let mut child = Command::new(BIN)
            .args(["env", "up", "--profile", "small", "--seed", "9"])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let mut json = String::new();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        while let Some(Ok(line)) = lines.next() {
            json.push_str(&line);
            json.push('\n');
            if line == "}" {
                break;
            }
        }
        let facts: serde_json::Value = serde_json::from_str(&json)
            .unwrap_or_else(|e| panic!("env up printed no JSON ({e}); see {}", stderr.display()));
        Self { child, facts, stderr }
    }

    pub(crate) fn fact(&self, name: &str) -> String {
        self.facts[name]
            .as_str()
            .unwrap_or_else(|| panic!("no {name} in env up's JSON"))
            .to_owned()
    }

    /// A `drill.toml` pointing at this environment as staging.
    pub(crate) fn drill_toml(&self) -> String {
        let admin: ConnInfo = self.fact("admin_url").parse().unwrap();
        let source: ConnInfo = self.fact("database_url").parse().unwrap();
        format!(
            "# staging rehearsal: env up posing as staging\n[database]\nadmin_url = \"{}\"\nsource = \"{}\"\n\n[s3]\nbucket = \"s3://{}\"\nendpoint = \"{}\"\nregion = \"{}\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
            admin.url(),
            source.database,
            self.fact("bucket"),
            self.fact("s3_endpoint"),
            self.fact("region"),
            self.fact("access_key"),
            self.fact("secret_key"),
        )
    }

    /// Its bucket, with its keys.
    pub(crate) async fn store(&self) -> Store {
        Store::connect(S3Config {
            endpoint: Some(self.fact("s3_endpoint")),
            region: self.fact("region"),
            bucket: self.fact("bucket"),
            prefix: String::new(),
            credentials: Some((
                self.fact("access_key"),
                drillbook::pg::Secret::new(self.fact("secret_key")),
            )),
        })
        .await
    }
}

impl Drop for EnvUp {
    fn drop(&mut self) {
        // SAFETY-free: kill(2) with SIGINT on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
    }
}

async fn databases(admin: &ConnInfo) -> Vec<String> {
    let mut conn = PgConnection::connect_with(&admin.connect_options()).await.unwrap();
    let names = sqlx::query_scalar("SELECT datname::text FROM pg_database ORDER BY 1")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    names
}

async fn row_counts(source: &ConnInfo) -> Vec<(String, i64)> {
    let mut conn = PgConnection::connect_with(&source.connect_options()).await.unwrap();
    let mut counts = Vec::new();
    for table in [
        "audit_logs",
        "ledger_entries",
        "invoice_lines",
        "payments",
        "monthly_invoices",
    ] {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&mut conn)
            .await
            .unwrap();
        counts.push((table.to_owned(), n));
    }
    conn.close().await.unwrap();
    counts
}

/// The value of JUnit property `name` in `xml`.
fn property(xml: &str, name: &str) -> String {
    let start = format!("name=\"{name}\" value=\"");
    let from = xml.find(&start).unwrap_or_else(|| panic!("no property {name}: {xml}")) + start.len();
    xml[from..][..xml[from..].find('"').unwrap()].to_owned()
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                found.extend(files(&path));
            } else {
                found.push(path);
            }
        }
    }
    found
}

#[tokio::test]
async fn staging_rehearsal() {
    let work = tempfile::tempdir().unwrap();
    let staging = EnvUp::start(work.path());
    let admin: ConnInfo = staging.fact("admin_url").parse().unwrap();
    let source: ConnInfo = staging.fact("database_url").parse().unwrap();
    let password = admin.password.expose().to_owned();
    let secret_key = staging.fact("secret_key");
    assert!(
        password.len() >= 8 && secret_key.len() >= 8,
        "the secrets must be worth searching for"
    );

    // The application keeps writing after the nightly backup: the loss.
    let late = write_activity(&source, 7).await.unwrap();
    let config = work.path().join("drill.toml");
    std::fs::write(&config, staging.drill_toml()).unwrap();
    let store = staging.store().await;
    let keys = |objects: Vec<drillbook::store::ObjectInfo>| objects.into_iter().map(|o| o.key).collect::<Vec<_>>();
    let before = (
        databases(&admin).await,
        row_counts(&source).await,
        keys(store.list("").await.unwrap()),
    );

    let reports = work.path().join("reports");
    let history = work.path().join("history");
    let mut outputs = vec![staging.stderr.clone()];
    let output = tokio::task::spawn_blocking({
        let (config, reports, history) = (config.clone(), reports.clone(), history.clone());
        move || {
            Command::new(BIN)
                .args(["run", "--json"])
                .env("DRILL_ENV", "staging")
                .env("DRILL_CONFIG", &config)
                .env("DRILL_REPORT_DIR", &reports)
                .env("DRILL_HISTORY_DIR", &history)
                // Logs as an operator would switch them on, to stderr: scanned too.
                .env("RUST_LOG", "debug")
                .env("DRILL_PROGRESS", "plain")
                .env("NO_PROXY", "127.0.0.1,localhost")
                .env_remove("DRILL_KEEP")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = work.path().join("run.stdout");
    let stderr = work.path().join("run.stderr");
    std::fs::write(&stdout, &output.stdout).unwrap();
    std::fs::write(&stderr, &output.stderr).unwrap();
    assert!(
        output.status.success(),
        "the drill suite failed on staging:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    outputs.extend([stdout, stderr]);
    let summaries: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    let ran: Vec<&str> = summaries.iter().filter_map(|s| s["drill"].as_str()).collect();
    assert_eq!(
        ran.len(),
        staging_drills().len(),
        "one summary per staging drill: {ran:?}"
    );

    // The drills ran on staging and reported it.
    let junit = files(&reports);
    assert_eq!(
        junit.len(),
        staging_drills().len(),
        "one JUnit report per drill: {junit:?}"
    );
    for report in &junit {
        let xml = std::fs::read_to_string(report).unwrap();
        assert!(
            xml.contains("name=\"backend\" value=\"staging\""),
            "{}: {xml}",
            report.display()
        );
        assert!(!xml.contains("<failure"), "{}: {xml}", report.display());
    }
    let full_restore = std::fs::read_to_string(reports.join("complete-infrastructure-loss.xml")).unwrap();
    assert!(
        full_restore.contains(&format!("name=\"rows_lost\" value=\"{}\"", late.audit_ids.len())),
        "{full_restore}"
    );
    // Honest RPO: the restored backup is complete up to its snapshot, so the
    // loss is incident − snapshot, however old the newest row in it is.
    let manifest = drillbook::restore::find_backup(&store, &drillbook::restore::BackupChoice::Newest)
        .await
        .unwrap();
    assert!(
        full_restore.contains(&format!("name=\"backup_stamp\" value=\"{}\"", manifest.stamp)),
        "{full_restore}"
    );
    assert_eq!(property(&full_restore, "recovery_point_source"), "snapshot");
    let incident_at: chrono::DateTime<chrono::Utc> = property(&full_restore, "incident_at").parse().unwrap();
    let rpo_seconds: f64 = property(&full_restore, "rpo_seconds").parse().unwrap();
    let expected = (incident_at - manifest.snapshot_at).num_microseconds().unwrap() as f64 / 1e6;
    // incident_at and rpo_seconds are printed to the millisecond: each rounds.
    assert!(
        (rpo_seconds - expected).abs() <= 0.005,
        "RPO {rpo_seconds} s, but the backup's snapshot was {expected} s before the incident: {full_restore}"
    );
    let recorded = files(&history);
    assert!(!recorded.is_empty(), "the drill history was written");

    // No output holds a secret.
    let scanned: Vec<PathBuf> = outputs.into_iter().chain(junit).chain(recorded).collect();
    for path in &scanned {
        let content = String::from_utf8_lossy(&std::fs::read(path).unwrap()).into_owned();
        assert!(
            !content.is_empty() || path.ends_with("env-up.stderr"),
            "{} is empty",
            path.display()
        );
        assert!(
            !content.contains(&password),
            "{} holds the admin password",
            path.display()
        );
        assert!(
            !content.contains(&secret_key),
            "{} holds the S3 secret key",
            path.display()
        );
    }
    // The logs did mention the server (redacted), so the scan looked at real logs.
    let logs = std::fs::read_to_string(work.path().join("run.stderr")).unwrap();
    assert!(logs.contains(":***@127.0.0.1"), "the logs name the server, redacted");

    // Staging is exactly as it was.
    let after = (
        databases(&admin).await,
        row_counts(&source).await,
        keys(store.list("").await.unwrap()),
    );
    assert_eq!(after, before, "staging changed");
    drop(staging);
    tokio::time::sleep(Duration::from_millis(10)).await;
}
