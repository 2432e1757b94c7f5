//! `drillbook check`: backup health in one command (see [`crate::check`]).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use super::exit;
use super::transfer::S3Args;
use crate::check::{CheckOptions, check_backups, prometheus_text};
use crate::pg::ConnInfo;

#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  drillbook check --bucket s3://immoflowme-backups --database-url \"$DATABASE_URL\" \\\n      --prometheus /var/lib/node_exporter/textfile/drillbook.prom\n\n\
Checks: daily_dump (newest dump: manifest, age, size and sha256), base_backup (age, tars), wal_archive\n\
(no gap from the oldest base backup on, history files, sampled content hashes), archive_lag (with\n\
--database-url: the server archives here, recently, without failing), anchors (not older than the dump).\n\
Exit 0 healthy, 1 a check failed, 2 could not run."
)]
pub(super) struct CheckArgs {
    #[command(flatten)]
    s3: S3Args,
    /// The archiving server, to compare its WAL position and archiver status with the bucket.
    #[arg(long, env = "DATABASE_URL", value_name = "postgres://...")]
    database_url: Option<String>,
    /// The newest daily dump may be this old (`26h`, `2d`).
    #[arg(long, default_value = "26h", value_parser = humantime::parse_duration)]
    max_dump_age: std::time::Duration,
    /// The newest base backup may be this old.
    #[arg(long, default_value = "8d", value_parser = humantime::parse_duration)]
    max_base_backup_age: std::time::Duration,
    /// Re-hash each base backup tar and WAL object once every N runs instead of every run.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    sample_runs: u32,
    /// Also write the result for node_exporter's textfile collector to FILE.
    #[arg(long, value_name = "FILE")]
    prometheus: Option<PathBuf>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

impl CheckArgs {
    pub(super) async fn run(self) -> anyhow::Result<u8> {
        let database: Option<ConnInfo> = self
            .database_url
            .as_deref()
            .map(str::parse)
            .transpose()
            .context("--database-url")?;
        let store = self.s3.store().await?;
        let options = CheckOptions {
            now: chrono::Utc::now(),
            max_dump_age: self.max_dump_age,
            max_base_backup_age: self.max_base_backup_age,
            sample_runs: self.sample_runs,
            database,
        };
        let report = check_backups(&store, &options).await?;
        if let Some(path) = &self.prometheus {
            write_atomically(path, &prometheus_text(&report))
                .with_context(|| format!("write the Prometheus textfile {}", path.display()))?;
        }
        if self.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            let passed = report.checks.iter().filter(|c| c.ok).count();
            println!(
                "check {}: {passed} of {} checks passed (run {}, objects re-hashed every {} run(s))",
                report.location,
                report.checks.len(),
                report.run,
                report.sample_runs
            );
            for check in &report.checks {
                let verdict = if check.ok { "ok  " } else { "FAIL" };
                println!("  {verdict}  {:<12} {}", check.check, check.summary);
                for problem in &check.problems {
                    println!("        - {problem}");
                }
            }
        }
        Ok(if report.ok { exit::SUCCESS } else { exit::FAILED })
    }
}

/// node_exporter may read the file at any instant: write beside it, rename.
fn write_atomically(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let partial = path.with_extension("prom.partial");
    std::fs::write(&partial, text)?;
    std::fs::rename(&partial, path)
}
