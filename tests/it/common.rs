//! Helpers the integration tests share (each file of `tests/` had its own
//! copy before they became one binary).

use std::path::Path;
use std::process::{Command, Output};

use drillbook::backup::{BackupReport, backup_database};
use drillbook::drill::Drill;
use drillbook::env::EmbeddedEnvironment;
use drillbook::pg::ConnInfo;
use drillbook::playbook::Scenario;
use drillbook::report::DrillReports;
use drillbook::store::Store;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::{Connection, PgConnection};

/// The `drillbook` binary built with these tests.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_drillbook");

/// A drill whose JUnit report goes to `dir/reports` and whose history
/// record to `dir/history`: a test never writes into the user's
/// `target/drill-reports` or `target/drill-history`.
pub(crate) fn drill_in(dir: &Path, name: &str, scenario: Scenario) -> Drill {
    let reports = DrillReports::new()
        .with_report_dir(dir.join("reports"))
        .with_history_dir(dir.join("history"));
    Drill::new(name, scenario).unwrap().with_outputs(reports)
}

/// The name libtest knows the test `function` of module `module`
/// (`module_path!()`) by: the path without the crate, as `--exact` wants it
/// when a test runs itself as a child process.
pub(crate) fn test_name(module: &str, function: &str) -> String {
    match module.split_once("::") {
        Some((_crate, path)) => format!("{path}::{function}"),
        None => function.to_owned(),
    }
}

pub(crate) async fn connect(target: &ConnInfo) -> PgConnection {
    PgConnection::connect_with(&target.connect_options()).await.unwrap()
}

/// Runs `sql` (one or more statements), panicking with the SQL on error.
pub(crate) async fn exec(conn: &mut PgConnection, sql: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// A daily backup of the environment's application database.
pub(crate) async fn backup(env: &EmbeddedEnvironment) -> BackupReport {
    backup_database(env.binaries(), &env.source(), Some(&env.primary().admin()), env.store())
        .await
        .unwrap()
}

/// A finished process's exit status, stdout and stderr, for assertion messages.
pub(crate) fn output_text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `drillbook <args>` with the store's endpoint and credentials.
pub(crate) fn drillbook(store: &Store, args: &[&str]) -> Output {
    let config = store.config();
    let (key, secret) = config.credentials.clone().expect("the embedded S3 has credentials");
    let endpoint = config.endpoint.clone().expect("the embedded S3 has an endpoint");
    drillbook_at(&endpoint, &key, secret.expose(), args)
}

/// `drillbook <args>` against the S3 API at `endpoint`, with nothing of the
/// caller's environment standing in for a flag.
pub(crate) fn drillbook_at(endpoint: &str, key: &str, secret: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("AWS_ACCESS_KEY_ID", key)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("DRILL_PROGRESS", "off")
        .env_remove("DATABASE_URL")
        .env_remove("ADMIN_DATABASE_URL")
        .env_remove("BACKUP_BUCKET")
        .output()
        .unwrap()
}

/// A command's stdout as JSON.
pub(crate) fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", output_text(out)))
}
