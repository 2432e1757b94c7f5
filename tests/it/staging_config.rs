//! `drillbook config check`: every problem with its line, secrets never
//! echoed, the documented precedence (defaults < file < environment).

use std::process::{Command, Output};

use crate::common::BIN;

const PASSWORD: &str = "pa55-Zq9-never-shown";
const SECRET_KEY: &str = "sk-8f1e-never-shown";

fn config_check(file: &std::path::Path, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command.args(["config", "check"]).arg(file);
    for (key, _) in std::env::vars() {
        if key.starts_with("DRILL_") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied()).output().unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn write(dir: &tempfile::TempDir, body: &str) -> std::path::PathBuf {
    let path = dir.path().join("drill.toml");
    std::fs::write(&path, body).unwrap();
    path
}

#[test]
fn every_problem_is_reported_with_its_line_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        &format!(
            "# staging\n[database]\nadmin_url = \"postgresql://admin:{PASSWORD}@db.staging:5432\"\nsource = \"\"\n\n[s3]\nbucket = \"s3://\"\nendpoint = \"ftp://minio\"\nsecret_access_key = \"{SECRET_KEY}\"\nregoin = \"eu-central-1\"\n\n[kube]\ncontext = 3\n\n[app]\nbase_url = \"not a url\"\n[extras]\nx = \"\"\n"
        ),
    );
    let output = config_check(&path, &[]);
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(1), "{shown}");
    let file = path.display().to_string();
    for (line, needle) in [
        (4, "[database] source"),
        (7, "[s3] bucket"),
        (8, "[s3] endpoint"),
        (9, "secret_access_key is set without access_key_id"),
        (10, "unknown key `regoin` in [s3]"),
        (13, "[kube] context must be a string"),
        (16, "[app] base_url"),
        (17, "unknown section [extras]"),
    ] {
        assert!(
            shown.contains(&format!("{file}:{line}: "))
                && shown
                    .lines()
                    .any(|l| l.starts_with(&format!("{file}:{line}: ")) && l.contains(needle)),
            "line {line} ({needle}) missing in:\n{shown}"
        );
    }
    assert!(shown.contains("8 problem(s)"), "{shown}");
    assert!(!shown.contains(PASSWORD) && !shown.contains(SECRET_KEY), "{shown}");
}

#[test]
fn syntax_errors_and_missing_keys_are_located() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "[database]\nadmin_url = \"postgres://a@h/db\n[s3]\n");
    let output = config_check(&path, &[]);
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(1), "{shown}");
    assert!(shown.contains(&format!("{}:2: TOML syntax", path.display())), "{shown}");

    let path = write(&dir, "[kube]\ncontext = \"staging\"\n");
    let output = config_check(&path, &[]);
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(1), "{shown}");
    assert!(shown.contains("[database] admin_url is required"), "{shown}");
    assert!(shown.contains("[s3] bucket is required"), "{shown}");

    let output = config_check(&dir.path().join("absent.toml"), &[]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
}

#[test]
fn environment_overrides_the_file_and_secrets_stay_hidden() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        &format!(
            "[database]\nadmin_url = \"postgres://admin:{PASSWORD}@db.staging:5432/postgres\"\n[s3]\nbucket = \"s3://immoflowme-backups/staging\"\nregion = \"eu-central-1\"\naccess_key_id = \"AKIDEXAMPLE\"\nsecret_access_key = \"{SECRET_KEY}\"\n"
        ),
    );
    let output = config_check(
        &path,
        &[("DRILL_S3_REGION", "us-west-2"), ("DRILL_SOURCE_DATABASE", "billing")],
    );
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(0), "{shown}");
    assert!(shown.contains("region us-west-2"), "env beats file: {shown}");
    assert!(shown.contains("s3.region ($DRILL_S3_REGION)"), "{shown}");
    assert!(shown.contains("database.admin_url (line 2)"), "{shown}");
    assert!(shown.contains("database.source = billing"), "{shown}");
    assert!(shown.contains("s3://immoflowme-backups/staging/"), "{shown}");
    assert!(
        shown.contains("postgres://admin:***@db.staging:5432/postgres"),
        "{shown}"
    );
    assert!(!shown.contains(PASSWORD) && !shown.contains(SECRET_KEY), "{shown}");

    // A bad value from the environment is named by its variable.
    let output = config_check(&path, &[("DRILL_ADMIN_URL", "mysql://x")]);
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(1), "{shown}");
    assert!(shown.contains("$DRILL_ADMIN_URL: [database] admin_url"), "{shown}");
}
