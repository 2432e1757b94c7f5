//! The progress display of the long commands, through the real binary, and
//! `--help` of every subcommand.
//!
//! stderr is a pipe here, so the binary must fall back to plain lines: a
//! start and an end line per transfer (label, a byte figure, a rate), never
//! a carriage return or a terminal escape; `DRILL_PROGRESS=off` silences
//! them; secrets never appear.

use std::process::{Command, Output};

use drillbook::env::EmbeddedEnvironment;
use drillbook::fixtures::{FixtureSpec, Profile};
use drillbook::pg::quote_ident;
use sqlx::{Connection, PgConnection};

use crate::common::{BIN, output_text};

fn drillbook(env: &EmbeddedEnvironment, progress: Option<&str>, args: &[&str]) -> Output {
    let facts = env.connection_facts();
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env("AWS_ACCESS_KEY_ID", &facts.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &facts.secret_key)
        .env("AWS_ENDPOINT_URL", &facts.s3_endpoint)
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env_remove("DATABASE_URL")
        .env_remove("ADMIN_DATABASE_URL")
        .env_remove("BACKUP_BUCKET")
        .env_remove("RUST_LOG");
    match progress {
        Some(setting) => command.env("DRILL_PROGRESS", setting),
        None => command.env_remove("DRILL_PROGRESS"),
    };
    let output = command.output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{args:?} failed:\n{}",
        output_text(&output)
    );
    output
}

/// The one line that starts with `prefix` and contains `marker`.
fn line<'a>(stderr: &'a str, prefix: &str, marker: &str) -> &'a str {
    let found: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with(prefix) && l.contains(marker))
        .collect();
    assert_eq!(found.len(), 1, "one `{prefix}…{marker}` line expected in:\n{stderr}");
    found[0]
}

/// A byte figure such as `2.1 MiB` or `512 B`.
fn has_byte_figure(line: &str) -> bool {
    let words: Vec<&str> = line.split_whitespace().collect();
    words.windows(2).any(|w| {
        let unit = w[1].trim_end_matches([')', ',']);
        w[0].trim_start_matches('(').parse::<f64>().is_ok() && ["B", "KiB", "MiB", "GiB"].contains(&unit)
    })
}

/// A byte figure and a rate (`7.3 MiB/s`).
fn has_bytes_and_rate(line: &str) -> bool {
    has_byte_figure(line) && line.contains("B/s")
}

fn assert_plain(stderr: &str) {
    assert!(!stderr.contains('\r'), "a carriage return in plain mode:\n{stderr:?}");
    assert!(
        !stderr.contains('\x1b'),
        "a terminal escape (line clear, colour) in plain mode:\n{stderr:?}"
    );
}

#[tokio::test]
async fn long_commands_print_plain_progress_lines_when_stderr_is_not_a_terminal() {
    let env = EmbeddedEnvironment::start().await.unwrap();
    env.seed(FixtureSpec {
        profile: Profile::Small,
        seed: 11,
        until: "2026-06-30T12:00:00Z".parse().unwrap(),
    })
    .await
    .unwrap();
    let facts = env.connection_facts();
    let source = env.source().url();
    let admin = facts.admin_url.clone();
    let bucket = facts.backup_bucket.clone();
    let secrets: Vec<String> = [
        facts.secret_key.clone(),
        env.primary().admin().password.expose().to_owned(),
    ]
    .into_iter()
    .filter(|s| !s.is_empty())
    .collect();
    assert!(!secrets.is_empty());

    // Backup: the dump's upload, total unknown.
    let out = drillbook(&env, None, &["backup", "--database-url", &source, "--bucket", &bucket]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_plain(&stderr);
    line(&stderr, "upload ", "  started");
    let done = line(&stderr, "upload ", "  done: ");
    assert!(done.contains(".dump"), "{done}");
    assert!(has_bytes_and_rate(done), "no byte figure and rate in {done:?}");

    // Restore: the download, total known; pg_restore as a phase.
    let plain_db = "progress_cli_plain";
    let out = drillbook(
        &env,
        Some("plain"),
        &[
            "restore",
            "--admin-url",
            &admin,
            "--bucket",
            &bucket,
            "--target-database",
            plain_db,
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_plain(&stderr);
    let started = line(&stderr, "download ", "  started (");
    assert!(has_byte_figure(started), "no size in {started:?}");
    let done = line(&stderr, "download ", "  done: ");
    assert!(has_bytes_and_rate(done), "no byte figure and rate in {done:?}");
    line(&stderr, &format!("pg_restore into {plain_db}"), "  done in ");
    // What restore compared with the manifest, on stdout.
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    for part in [
        "compared with the backup's manifest:",
        "row counts: ",
        "content fingerprints: 5 tables equal",
        "audit chain head: id ",
        "anchor (genesis hash, head, row count) equal",
        "re-applied and present (to immoflowme_app)",
    ] {
        assert!(stdout.contains(part), "restore's report lacks {part:?}:\n{stdout}");
    }
    for secret in &secrets {
        assert!(!stderr.contains(secret.as_str()), "a secret on stderr:\n{stderr}");
    }

    // Verify: the audit chain, in rows.
    let out = drillbook(&env, None, &["verify", "--database-url", &source]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_plain(&stderr);
    let done = line(&stderr, "verify audit chain", "  done: ");
    assert!(done.contains("20,000 rows") && done.contains("rows/s"), "{done}");

    // Forced terminal mode with --json: progress stays on stderr, stdout is the JSON alone.
    let out = drillbook(&env, Some("terminal"), &["verify", "--database-url", &source, "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not only JSON ({e}):\n{}", output_text(&out)));
    assert_eq!(report["audit_rows"], 20_000, "{report}");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(stderr.contains("verify audit chain  done: 20,000 rows"), "{stderr:?}");

    // Off: the same work, no progress lines at all.
    let off_db = "progress_cli_off";
    let out = drillbook(
        &env,
        Some("off"),
        &["backup", "--database-url", &source, "--bucket", &bucket],
    );
    let backup_stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let out = drillbook(
        &env,
        Some("off"),
        &[
            "restore",
            "--admin-url",
            &admin,
            "--bucket",
            &bucket,
            "--target-database",
            off_db,
        ],
    );
    let restore_stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    for stderr in [&backup_stderr, &restore_stderr] {
        let progress: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("  started") || l.contains("  done") || l.starts_with("upload "))
            .collect();
        assert!(progress.is_empty(), "DRILL_PROGRESS=off printed {progress:#?}");
    }
    assert!(
        restore_stderr.contains("dump downloaded and verified"),
        "the logs still run with progress off:\n{restore_stderr}"
    );

    // Clean up: the databases the restores created, then the environment.
    let admin_info = env.primary().admin();
    let mut conn = PgConnection::connect_with(&admin_info.connect_options()).await.unwrap();
    for db in [plain_db, off_db] {
        let sql = format!("DROP DATABASE {} WITH (FORCE)", quote_ident(db));
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    conn.close().await.unwrap();
    env.cleanup().await.unwrap();
}

/// The subcommands a `--help` lists under `Commands:` (without `help`).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim_end() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

fn help(path: &[String]) -> String {
    let out = Command::new(BIN).args(path).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{path:?} --help:\n{}", output_text(&out));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn every_subcommand_help_shows_an_example() {
    let top = help(&[]);
    let mut pending: Vec<Vec<String>> = subcommands(&top).into_iter().map(|name| vec![name]).collect();
    assert!(pending.len() >= 10, "the top-level help lists the subcommands:\n{top}");
    let mut checked = Vec::new();
    let mut missing = Vec::new();
    while let Some(path) = pending.pop() {
        let text = help(&path);
        if !text.lines().any(|l| l.starts_with("Example")) {
            missing.push(format!("drillbook {} --help:\n{text}", path.join(" ")));
        }
        for nested in subcommands(&text) {
            let mut deeper = path.clone();
            deeper.push(nested);
            pending.push(deeper);
        }
        checked.push(path.join(" "));
    }
    for expected in [
        "backup",
        "restore",
        "verify",
        "run",
        "env up",
        "config check",
        "wal-push",
    ] {
        assert!(
            checked.iter().any(|c| c == expected),
            "`{expected}` not checked: {checked:?}"
        );
    }
    assert!(missing.is_empty(), "no Example section in:\n{}", missing.join("\n"));
    assert!(
        top.contains("DRILL_PROGRESS"),
        "the top-level help documents DRILL_PROGRESS:\n{top}"
    );
}

#[test]
fn byte_figures_and_rates_are_recognized() {
    assert!(has_bytes_and_rate("upload x.dump  done: 2.1 MiB in 0.3s (7.0 MiB/s)"));
    assert!(has_byte_figure("download x  started (512 B)"));
    assert!(!has_byte_figure("download x  started"));
    assert!(!has_bytes_and_rate(
        "verify audit chain  done: 20,000 rows in 0.2s (100,000 rows/s)"
    ));
}

#[test]
fn subcommand_lists_are_parsed_from_help_output() {
    let help = "Usage: x\n\nCommands:\n  env        Local\n  report     Write the\n             per-drill\n  help       Print\n\nOptions:\n  -h\n";
    assert_eq!(subcommands(help), ["env", "report"]);
}
