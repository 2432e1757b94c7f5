//! `drillbook report`: the monthly drill report from history and JUnit.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use super::exit;
use crate::report::history::{self, HistoryStore};
use crate::report::month::Month;
use crate::report::monthly::{self, MonthVerdict, MonthlyReport};
use crate::report::render;
use crate::store::{S3Config, Store};

const EXAMPLES: &str = "\
Examples:
  drillbook report                                  # this month, from target/drill-history and target/drill-reports
  drillbook report --month 2026-05 --out public/
  drillbook report --history s3://immoflowme-backups --junit target/drill-reports/complete_infrastructure_loss.xml

Writes <out>/drill-report-<month>.html (self-contained), .md and junit-<month>.xml.
Exit codes: 0 every drill of the month passed, 1 a drill failed or none ran, 2 could not run.";

#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub(super) struct ReportArgs {
    /// The month to report, UTC (default: the current month).
    #[arg(long, value_name = "YYYY-MM")]
    month: Option<Month>,
    /// The drill history: a directory (DRILL_HISTORY_DIR, default target/drill-history)
    /// or s3://BUCKET[/PREFIX] (reads drills/history/ under it).
    #[arg(long, value_name = "DIR|s3://BUCKET[/PREFIX]")]
    history: Option<String>,
    /// Per-drill JUnit files to merge (default: every *.xml in DRILL_REPORT_DIR or target/drill-reports).
    #[arg(long, value_name = "FILE", num_args = 1..)]
    junit: Vec<PathBuf>,
    /// Where the report files go.
    #[arg(long, value_name = "DIR", default_value = "target/drill-report")]
    out: PathBuf,
    /// How many months the trend charts cover, ending with --month.
    #[arg(long, value_name = "N", default_value_t = 6, value_parser = clap::value_parser!(u16).range(1..=120))]
    trend_months: u16,
    /// S3 endpoint for an S3 history on S3-compatible servers; AWS when unset.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    s3_endpoint: Option<String>,
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    region: String,
}

impl ReportArgs {
    pub(super) async fn run(self) -> anyhow::Result<u8> {
        let month = self.month.unwrap_or_else(|| Month::of(chrono::Utc::now()));
        let months = month.trailing(usize::from(self.trend_months));
        let store = match self.history.as_deref() {
            Some(location) if location.starts_with("s3://") => {
                let (bucket, prefix) = S3Config::parse_location(location)?;
                HistoryStore::S3(
                    Store::connect(S3Config {
                        endpoint: self.s3_endpoint.clone(),
                        region: self.region.clone(),
                        bucket,
                        prefix,
                        credentials: None,
                    })
                    .await,
                )
            }
            Some(dir) => HistoryStore::Local(PathBuf::from(dir)),
            None => HistoryStore::Local(history::default_dir()),
        };
        let history = store.read(&months).await?;
        let files = if self.junit.is_empty() {
            monthly::junit_files_in(&crate::report::report_dir())?
        } else {
            self.junit.clone()
        };
        let junit = files
            .iter()
            .map(|path| monthly::read_junit(path))
            .collect::<Result<Vec<_>, _>>()?;
        for warning in &history.warnings {
            eprintln!("warning: {warning}");
        }
        let report = MonthlyReport::build(month, months, history, junit);

        std::fs::create_dir_all(&self.out)
            .with_context(|| format!("failed to create the output directory `{}`", self.out.display()))?;
        let html = self.out.join(format!("drill-report-{month}.html"));
        let md = self.out.join(format!("drill-report-{month}.md"));
        let xml = self.out.join(format!("junit-{month}.xml"));
        let junit_text = report
            .junit()
            .to_string()
            .context("failed to serialize the merged JUnit report")?;
        for (path, text) in [
            (&html, render::html(&report)),
            (&md, render::markdown(&report)),
            (&xml, junit_text),
        ] {
            std::fs::write(path, text).with_context(|| format!("failed to write `{}`", path.display()))?;
        }
        println!(
            "{}: {}\n{} runs this month; history {}; {} JUnit files\nwrote {}\nwrote {}\nwrote {}",
            report.verdict().label(),
            report.summary_sentence(),
            report.runs.len(),
            store.location(),
            files.len(),
            html.display(),
            md.display(),
            xml.display()
        );
        Ok(match report.verdict() {
            MonthVerdict::Passed => exit::SUCCESS,
            MonthVerdict::Failed | MonthVerdict::NoDrills => exit::FAILED,
        })
    }
}
