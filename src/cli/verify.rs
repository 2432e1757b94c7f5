//! `drillbook verify` and `drillbook anchor`.
//!
//! `verify` is the playbook's daily "audit chain validation", safe against
//! production: it connects with `default_transaction_read_only=on`, runs
//! every check inside one `REPEATABLE READ READ ONLY` transaction with a
//! bounded `statement_timeout`, and creates nothing (no temp tables).
//!
//! Exit codes: 0 clean; 1 findings; 2 could not run (bad URL, unreachable
//! or lost connection, a check that could not run, an anchor that does not
//! parse or belongs to another chain). A lost connection is never "clean".
//!
//! `--json` prints the [`crate::integrity::IntegrityReport`] (shape documented
//! in [`crate::integrity::report`]): `database`, `started_at`, `duration`
//! (seconds), `anchor`, `audit_rows`, `playbook_4_1_broken_links`, `checks`
//! (`check`, `playbook_section`, `status` passed/failed/not_run, `reason`,
//! `findings`, `duration`), `findings` (`check`, `table`, `key`, `detail`) and
//! `missed_by_playbook` (findings of the same shape). Fields are only added.
//!
//! `anchor` reads the chain head (with the genesis hash and row count) and
//! writes it to `anchors/<stamp>.json` in the bucket; `verify --anchor`
//! takes such an object (`s3://bucket/anchors/<stamp>.json`) or a local file.

use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use super::exit;
use crate::integrity::anchor::Anchor;
use crate::integrity::{SuiteOptions, run_suite};
use crate::pg::ConnInfo;
use crate::store::{S3Config, Store};

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  drillbook verify --database-url \"$DATABASE_URL\"
  drillbook verify --database-url \"$DATABASE_URL\" --anchor s3://immoflowme-backups/anchors/20261128T233506.123Z.json --json

Exit codes: 0 clean, 1 findings, 2 could not run (never 0 when the connection is lost).")]
pub(super) struct VerifyArgs {
    /// The database to verify (read-only; safe against production).
    #[arg(long, env = "DATABASE_URL", value_name = "postgres://...")]
    database_url: String,
    /// Verify the audit chain against an anchor: s3://BUCKET/anchors/<stamp>.json or a local file.
    #[arg(long, value_name = "s3://... | FILE")]
    anchor: Option<String>,
    /// S3 endpoint for an s3:// anchor on an S3-compatible server; AWS when unset.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    s3_endpoint: Option<String>,
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    region: String,
    /// Statement timeout for every query, in seconds.
    #[arg(long, default_value_t = 300)]
    statement_timeout_secs: u64,
    /// 4.4's per-tenant imbalance threshold.
    #[arg(long, default_value = "10000")]
    ledger_threshold: rust_decimal::Decimal,
    /// Print the report as JSON on stdout (stable shape, see the docs).
    #[arg(long)]
    json: bool,
}

impl VerifyArgs {
    pub(super) async fn run(self) -> anyhow::Result<u8> {
        let target: ConnInfo = self.database_url.parse().context("--database-url")?;
        let anchor = match &self.anchor {
            Some(location) => {
                let s3 = s3_config(self.s3_endpoint.clone(), &self.region, "anchors");
                Some(Anchor::load(location, Some(&s3)).await?)
            }
            None => None,
        };
        let options = SuiteOptions {
            statement_timeout: Duration::from_secs(self.statement_timeout_secs.max(1)),
            ledger_threshold: self.ledger_threshold,
            anchor,
            ..SuiteOptions::default()
        };
        let report = run_suite(&target, &options).await?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", report.human(true));
        }
        Ok(if !report.findings.is_empty() {
            exit::FAILED
        } else if !report.incomplete().is_empty() {
            exit::ERROR
        } else {
            exit::SUCCESS
        })
    }
}

#[derive(Debug, Args)]
#[command(after_help = "\
Example:
  drillbook anchor --database-url \"$DATABASE_URL\" --bucket s3://immoflowme-backups

Writes anchors/<UTC stamp>.json; pass it to `drillbook verify --anchor` later.")]
pub(super) struct AnchorArgs {
    /// The database whose audit chain head to record (read-only).
    #[arg(long, env = "DATABASE_URL", value_name = "postgres://...")]
    database_url: String,
    /// Bucket and optional prefix, as the playbook writes it.
    #[arg(long, env = "BACKUP_BUCKET", value_name = "s3://BUCKET[/PREFIX]")]
    bucket: String,
    /// S3 endpoint for S3-compatible servers; AWS when unset.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    s3_endpoint: Option<String>,
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    region: String,
    /// Print the anchor as JSON on stdout.
    #[arg(long)]
    json: bool,
}

impl AnchorArgs {
    pub(super) async fn run(self) -> anyhow::Result<u8> {
        let target: ConnInfo = self.database_url.parse().context("--database-url")?;
        let (bucket, prefix) = S3Config::parse_location(&self.bucket)?;
        let store = Store::connect(S3Config {
            endpoint: self.s3_endpoint.clone(),
            region: self.region.clone(),
            bucket,
            prefix,
            credentials: None,
        })
        .await;
        let anchor = Anchor::capture(&target).await?;
        let key = anchor.key();
        store.put_bytes(&key, anchor.to_json(), "application/json").await?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&anchor)?);
        } else {
            println!(
                "anchored {} at row {} ({} rows) in {}{key}",
                anchor.database,
                anchor.head_id,
                anchor.rows,
                store.config().location()
            );
        }
        Ok(exit::SUCCESS)
    }
}

fn s3_config(endpoint: Option<String>, region: &str, bucket: &str) -> S3Config {
    S3Config {
        endpoint,
        region: region.to_owned(),
        bucket: bucket.to_owned(),
        prefix: String::new(),
        credentials: None,
    }
}
