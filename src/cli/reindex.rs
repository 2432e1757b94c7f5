//! `drillbook reindex`: the playbook's section 5 step 1 on a restored
//! database (`REINDEX DATABASE`, timed), then the check that no index is
//! left invalid — the same call the tests of `crate::reindex` make.

use anyhow::Context as _;
use clap::Args;

use super::exit;
use crate::pg::ConnInfo;
use crate::reindex::reindex_database;

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  \
drillbook reindex --database-url \"$RESTORED_DATABASE_URL\"\n\n\
REINDEX DATABASE takes an exclusive lock on each table in turn: run it on the restored copy before\n\
traffic is switched to it, never on a database serving traffic.\n\
Exit 0 every index valid, 1 an index is left invalid (listed), 2 could not run.")]
pub(super) struct ReindexArgs {
    /// The restored database to reindex.
    #[arg(long, env = "DATABASE_URL", value_name = "postgres://...")]
    database_url: String,
    /// Longest the REINDEX may run.
    #[arg(long, default_value = "2h", value_parser = humantime::parse_duration)]
    statement_timeout: std::time::Duration,
    /// Print the report (database, duration, indexes, invalid) as JSON on stdout.
    #[arg(long)]
    json: bool,
}

impl ReindexArgs {
    pub(super) async fn run(self) -> anyhow::Result<u8> {
        let target: ConnInfo = self.database_url.parse().context("--database-url")?;
        let report = reindex_database(&target, self.statement_timeout).await?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            println!(
                "REINDEX DATABASE {}: {} indexes in {:.1}s",
                report.database,
                report.indexes,
                report.duration.as_secs_f64()
            );
            for index in &report.invalid {
                println!("  INVALID {}.{} on {}", index.schema, index.index, index.table);
            }
        }
        Ok(if report.is_clean() { exit::SUCCESS } else { exit::FAILED })
    }
}
