//! `drillbook report`: the monthly drill report from history and JUnit.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use super::exit;
use crate::report::history::{self, HistoryStore};
use crate::report::month::Month;
use crate::report::monthly::{self, MonthVerdict, MonthlyReport};
use crate::report::projection::{NotProjectable, Projection, ProjectionSize, SizeRequest};
use crate::report::render;
use crate::store::{S3Config, Store};

const EXAMPLES: &str = "\
Examples:
  drillbook report                                  # this month, from target/drill-history and target/drill-reports
  drillbook report --month 2026-05 --out public/
  drillbook report --history s3://immoflowme-backups --junit target/drill-reports/complete_infrastructure_loss.xml
  drillbook report --project-size 500GB             # each run's RTO projected to a 500 GB database
  DRILL_ENV=staging DRILL_CONFIG=drill.toml drillbook report --project-size newest-backup

Writes <out>/drill-report-<month>.html (self-contained), .md and junit-<month>.xml.
With --project-size, each run's RTO is also projected to that size from the measured throughput of its
data-moving phases (linear scaling, stated in the report); a projection over the target fails the
testcase `projected RTO at <size> within target` of the merged JUnit and the month's verdict.
Exit codes: 0 every drill of the month passed, 1 a drill failed, a projection missed or none ran, 2 could not run.";

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
    /// Project each run's RTO to this database size (`500GB`, `1.5TiB`; B, KB, MB, GB, TB, KiB..., any
    /// case), or to the newest logical backup in the staging bucket (`newest-backup`, DRILL_ENV=staging).
    #[arg(long, value_name = "SIZE|newest-backup")]
    project_size: Option<SizeRequest>,
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
        let mut report = MonthlyReport::build(month, months, history, junit);
        if let Some(request) = &self.project_size {
            report = report.with_projection(resolve_project_size(request).await?);
        }

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
        if let Some(size) = &report.projection_size {
            print_projections(size, report.projections().iter().map(|(run, p)| (&run.record, p)));
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

/// The size `--project-size` asked for: a database size as given, or the
/// newest logical backup in the staging bucket (`DRILL_ENV=staging`,
/// `DRILL_CONFIG`), read only.
///
/// # Errors
///
/// `newest-backup` off staging, a staging configuration that does not
/// read, or a bucket without a backup.
pub(super) async fn resolve_project_size(request: &SizeRequest) -> anyhow::Result<ProjectionSize> {
    match request {
        SizeRequest::Bytes(bytes) => Ok(ProjectionSize::database(*bytes)),
        SizeRequest::NewestBackup => {
            let backend = crate::env::Backend::from_env()?;
            if backend != crate::env::Backend::Staging {
                anyhow::bail!(
                    "--project-size newest-backup reads the newest backup in the staging bucket, but DRILL_ENV is `{}`; \
                     set DRILL_ENV=staging (and DRILL_CONFIG=drill.toml), or give a size such as --project-size 500GB",
                    backend.name()
                );
            }
            let config = crate::env::StagingConfig::from_env()?;
            let store = Store::connect(config.s3.clone()).await;
            let manifest = crate::restore::find_backup(&store, &crate::restore::BackupChoice::Newest)
                .await
                .with_context(|| {
                    format!(
                        "failed to find the newest backup in {} for --project-size newest-backup",
                        store.config().location()
                    )
                })?;
            Ok(ProjectionSize::dump(manifest.dump.bytes, manifest.dump.key))
        }
    }
}

/// The projection per run on stdout: measured, projected, target, verdict,
/// then the assumption.
pub(super) fn print_projections<'r>(
    size: &ProjectionSize,
    runs: impl Iterator<Item = (&'r history::HistoryRecord, &'r Result<Projection, NotProjectable>)>,
) {
    use crate::report::monthly::seconds_text;
    println!(
        "{:<30} {:<30} {:>14} {:>16} {:>14}  VERDICT",
        "DRILL",
        "SCENARIO",
        "RTO MEASURED",
        format!("AT {}", size.label().to_uppercase()),
        "TARGET"
    );
    for (record, projection) in runs {
        let measured = record.rto_seconds.map_or_else(|| "-".to_owned(), seconds_text);
        let (projected, verdict) = match projection {
            Ok(p) if p.within_target() => (seconds_text(p.projected_rto), "within target".to_owned()),
            Ok(p) => (seconds_text(p.projected_rto), "MISSES target".to_owned()),
            Err(why) => ("-".to_owned(), format!("not projected: {why}")),
        };
        println!(
            "{:<30} {:<30} {measured:>14} {projected:>16} {:>14}  {verdict}",
            record.drill,
            record.scenario_title(),
            seconds_text(record.rto_target_seconds)
        );
        if let Ok(p) = projection
            && !p.phases.is_empty()
        {
            println!("{:<30} {}", "", p.breakdown());
        }
    }
    println!("{}", size.assumption());
}
