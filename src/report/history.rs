//! Drill history: one versioned record per drill run, kept over months so
//! the monthly report can draw trends.
//!
//! # Stores
//!
//! - **Local** (the default): a directory, `DRILL_HISTORY_DIR` or
//!   `target/drill-history/`, with one JSON-lines file per month
//!   (`2026-05.jsonl`), only ever appended to. Each record is one line written
//!   with a single `O_APPEND` write, so drills finishing at the same time do
//!   not interleave.
//! - **S3**: `drills/history/<YYYY-MM>/<stamp>_<drill>_<random>.json` under a
//!   [`Store`]'s prefix. S3 has no append, so each record is its own object;
//!   the random suffix keeps records started in the same millisecond apart.
//!
//! # Versions
//!
//! Every record carries `format` ([`FORMAT_VERSION`]). Readers upgrade older
//! formats ([`RecordV0`]: the pre-versioned shape without `format`) to the
//! current [`HistoryRecord`]; a record from a *newer* drillbook is skipped
//! with a warning that says to upgrade. New fields are only ever added, with
//! defaults, so a newer reader still reads every line this one wrote.
//!
//! # Guarantees
//!
//! Reading never fails on content: a line that is not a record, a file that
//! cannot be read, a record from the future: each is skipped and named in
//! [`History::warnings`] (and logged), and the rest is read. Only an
//! unreachable store (a bucket that cannot be listed) is an error.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDate, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::drill::{DrillSummary, Scenario};
use crate::store::{Store, StoreError};

/// The record format this drillbook writes.
pub const FORMAT_VERSION: u32 = 1;

/// Key prefix of the S3 history store (relative to the store's prefix).
pub const S3_PREFIX: &str = "drills/history/";

/// Property a drill sets to name its dataset size (`small`, `medium`, `large`).
pub const DATASET_PROPERTY: &str = "dataset_profile";

/// Properties a drill may set with the PostgreSQL server version, first wins.
pub const POSTGRES_VERSION_PROPERTIES: &[&str] = &["postgres_version", "server_version", "pg_version"];

pub type Result<T, E = HistoryError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryError {
    #[error(
        "failed to append to drill history `{}`; check that the directory is writable, \
         set DRILL_HISTORY_DIR to another one, or DRILL_HISTORY=off",
        path.display()
    )]
    Append {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to write drill history object `{key}` to S3; check the bucket and its credentials")]
    PutObject {
        key: String,
        #[source]
        source: StoreError,
    },
    #[error("failed to list drill history under `{location}`; check the bucket and its credentials")]
    List {
        location: String,
        #[source]
        source: StoreError,
    },
    #[error("invalid month `{input}`: expected YYYY-MM with a month from 01 to 12, such as `2026-05`")]
    InvalidMonth { input: String },
}

/// A calendar month in UTC: the unit of history files and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    year: i32,
    month: u32,
}

impl Month {
    /// # Errors
    ///
    /// [`HistoryError::InvalidMonth`] unless `1 <= month <= 12`.
    pub fn new(year: i32, month: u32) -> Result<Self> {
        if (1..=12).contains(&month) && (1..=9999).contains(&year) {
            Ok(Self { year, month })
        } else {
            Err(HistoryError::InvalidMonth {
                input: format!("{year:04}-{month:02}"),
            })
        }
    }

    /// The month `at` falls in.
    pub fn of(at: DateTime<Utc>) -> Self {
        Self {
            year: at.year(),
            month: at.month(),
        }
    }

    pub fn year(self) -> i32 {
        self.year
    }

    pub fn month(self) -> u32 {
        self.month
    }

    pub fn previous(self) -> Self {
        match self.month {
            1 => Self {
                year: self.year - 1,
                month: 12,
            },
            m => Self {
                year: self.year,
                month: m - 1,
            },
        }
    }

    pub fn next(self) -> Self {
        match self.month {
            12 => Self {
                year: self.year + 1,
                month: 1,
            },
            m => Self {
                year: self.year,
                month: m + 1,
            },
        }
    }

    /// The first instant of the month.
    pub fn start(self) -> DateTime<Utc> {
        let date = NaiveDate::from_ymd_opt(self.year, self.month, 1).expect("validated month");
        Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).expect("midnight exists"))
    }

    pub fn contains(self, at: DateTime<Utc>) -> bool {
        Self::of(at) == self
    }

    /// `count` months ending with this one, oldest first.
    pub fn trailing(self, count: usize) -> Vec<Self> {
        let mut months = Vec::with_capacity(count);
        let mut month = self;
        for _ in 0..count {
            months.push(month);
            month = month.previous();
        }
        months.reverse();
        months
    }

    /// `July 2026`.
    pub fn long_name(self) -> String {
        self.start().format("%B %Y").to_string()
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl FromStr for Month {
    type Err = HistoryError;

    fn from_str(input: &str) -> Result<Self> {
        let invalid = || HistoryError::InvalidMonth {
            input: input.to_owned(),
        };
        let (year, month) = input.trim().split_once('-').ok_or_else(invalid)?;
        if year.len() != 4 || month.len() != 2 {
            return Err(invalid());
        }
        let year = year.parse().map_err(|_| invalid())?;
        let month = month.parse().map_err(|_| invalid())?;
        Self::new(year, month).map_err(|_| invalid())
    }
}

/// A timed step, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordPhase {
    pub name: String,
    pub started_at: Option<DateTime<Utc>>,
    pub duration_seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A named check, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordCheck {
    pub name: String,
    pub passed: bool,
    #[serde(default)]
    pub detail: String,
}

/// The incident that started the RTO clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordIncident {
    pub at: DateTime<Utc>,
    pub description: String,
}

/// One line of the drill's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordEvent {
    pub at: DateTime<Utc>,
    /// Seconds since the drill started.
    pub elapsed_seconds: f64,
    pub message: String,
}

/// One drill run, format [`FORMAT_VERSION`]. Everything the monthly report
/// shows about a run comes from here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryRecord {
    pub format: u32,
    /// The drill's name (`complete_infrastructure_loss`).
    pub drill: String,
    /// The scenario's slug (`complete-infrastructure-loss`); a string so a
    /// scenario added later still reads here.
    pub scenario: String,
    /// The decision matrix's action (`Full restore from backup`).
    #[serde(default)]
    pub action: String,
    /// `DRILL_ENV` at run time: `embedded`, `containers`, `staging`.
    #[serde(default = "unknown")]
    pub backend: String,
    /// The drill's `dataset_profile` property, if it set one.
    #[serde(default)]
    pub dataset_size: Option<String>,
    pub started_at: DateTime<Utc>,
    #[serde(default)]
    pub duration_seconds: f64,
    #[serde(default)]
    pub incident: Option<RecordIncident>,
    #[serde(default)]
    pub verified_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub rto_seconds: Option<f64>,
    pub rto_target_seconds: f64,
    #[serde(default)]
    pub rpo_seconds: Option<f64>,
    #[serde(default)]
    pub rpo_target_seconds: Option<f64>,
    #[serde(default)]
    pub phases: Vec<RecordPhase>,
    #[serde(default)]
    pub checks: Vec<RecordCheck>,
    /// Failed checks and phases, one sentence each.
    #[serde(default)]
    pub findings: Vec<String>,
    pub passed: bool,
    /// The verdict's failures, one sentence each; empty iff `passed`.
    #[serde(default)]
    pub failures: Vec<String>,
    /// Why the drill ended without `Drill::finish`, if it did.
    #[serde(default)]
    pub aborted: Option<String>,
    #[serde(default = "unknown")]
    pub drillbook_version: String,
    #[serde(default)]
    pub postgres_version: Option<String>,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    #[serde(default)]
    pub timeline: Vec<RecordEvent>,
}

fn unknown() -> String {
    "unknown".to_owned()
}

impl HistoryRecord {
    /// The record of a judged drill, with the backend read from `DRILL_ENV`.
    pub fn from_summary(summary: &DrillSummary) -> Self {
        let backend = std::env::var("DRILL_ENV")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| "embedded".to_owned());
        Self::from_summary_on(summary, &backend)
    }

    /// The record of a judged drill that ran on `backend`.
    pub fn from_summary_on(summary: &DrillSummary, backend: &str) -> Self {
        let failed_phases = summary.phases.iter().filter_map(|phase| {
            let error = phase.error.as_ref()?;
            Some(format!("phase `{}` failed: {error}", phase.name))
        });
        let failed_checks = summary
            .checks
            .iter()
            .filter(|check| !check.passed)
            .map(|check| format!("check `{}` failed: {}", check.name, check.detail));
        let findings = failed_phases.chain(failed_checks).collect();
        let postgres_version = POSTGRES_VERSION_PROPERTIES
            .iter()
            .find_map(|name| summary.properties.get(*name).cloned());
        Self {
            format: FORMAT_VERSION,
            drill: summary.name.clone(),
            scenario: summary.scenario.slug().to_owned(),
            action: summary.scenario.action().to_owned(),
            backend: backend.to_owned(),
            dataset_size: summary.properties.get(DATASET_PROPERTY).cloned(),
            started_at: summary.started_at,
            duration_seconds: summary.duration.as_secs_f64(),
            incident: summary.incident.as_ref().map(|incident| RecordIncident {
                at: incident.at,
                description: incident.description.clone(),
            }),
            verified_at: summary.verified_at,
            rto_seconds: summary.rto.map(|d| d.as_secs_f64()),
            rto_target_seconds: summary.targets.rto.as_secs_f64(),
            rpo_seconds: summary.rpo.map(|d| d.as_secs_f64()),
            rpo_target_seconds: summary.targets.rpo.map(|d| d.as_secs_f64()),
            phases: summary
                .phases
                .iter()
                .map(|phase| RecordPhase {
                    name: phase.name.clone(),
                    started_at: Some(phase.started_at),
                    duration_seconds: phase.duration.as_secs_f64(),
                    error: phase.error.clone(),
                })
                .collect(),
            checks: summary
                .checks
                .iter()
                .map(|check| RecordCheck {
                    name: check.name.clone(),
                    passed: check.passed,
                    detail: check.detail.clone(),
                })
                .collect(),
            findings,
            passed: summary.verdict.passed(),
            failures: summary.verdict.failures.clone(),
            aborted: summary.aborted.clone(),
            drillbook_version: env!("CARGO_PKG_VERSION").to_owned(),
            postgres_version,
            properties: summary.properties.clone(),
            timeline: summary
                .timeline
                .iter()
                .map(|event| RecordEvent {
                    at: event.at,
                    elapsed_seconds: event.elapsed.as_secs_f64(),
                    message: event.message.clone(),
                })
                .collect(),
        }
    }

    /// The scenario, if this drillbook knows its slug.
    pub fn scenario(&self) -> Option<Scenario> {
        Scenario::all().iter().copied().find(|s| s.slug() == self.scenario)
    }

    /// The scenario's title, or its slug when unknown here.
    pub fn scenario_title(&self) -> String {
        self.scenario()
            .map_or_else(|| self.scenario.clone(), |s| s.title().to_owned())
    }

    /// `passed`, `failed` or `aborted`.
    pub fn verdict_label(&self) -> &'static str {
        match (self.passed, self.aborted.is_some()) {
            (true, _) => "passed",
            (false, true) => "aborted",
            (false, false) => "failed",
        }
    }

    /// Whether the measured RTO missed its target (or was never measured).
    pub fn rto_missed(&self) -> bool {
        self.rto_seconds.is_none_or(|rto| rto > self.rto_target_seconds)
    }

    /// Whether the measured RPO missed a set target.
    pub fn rpo_missed(&self) -> bool {
        match (self.rpo_target_seconds, self.rpo_seconds) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(target), Some(rpo)) => rpo > target,
        }
    }

    /// The record as one JSON line, newline included.
    pub fn to_json_line(&self) -> String {
        let mut line = serde_json::to_string(self).expect("a record always serializes");
        line.push('\n');
        line
    }

    /// Reads one record of any known format.
    ///
    /// # Errors
    ///
    /// A sentence saying why the text is not a readable record.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON ({e})"))?;
        let format = match value.get("format") {
            None => 0,
            Some(format) => format
                .as_u64()
                .ok_or_else(|| format!("`format` is {format}, not a version number"))?,
        };
        match format {
            0 => serde_json::from_value::<RecordV0>(value)
                .map(RecordV0::upgrade)
                .map_err(|e| format!("not a format-0 history record ({e})")),
            1 => serde_json::from_value::<Self>(value).map_err(|e| format!("not a format-1 history record ({e})")),
            newer => Err(format!(
                "format {newer} was written by a newer drillbook (this one reads up to {FORMAT_VERSION}); \
                 upgrade drillbook to read it"
            )),
        }
    }
}

/// The pre-versioned record (drillbook before history formats existed):
/// no `format` field, durations as `*_secs`, no phases or timeline.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RecordV0 {
    pub drill: String,
    pub scenario: String,
    pub started_at: DateTime<Utc>,
    #[serde(default)]
    pub rto_secs: Option<f64>,
    pub rto_target_secs: f64,
    #[serde(default)]
    pub rpo_secs: Option<f64>,
    #[serde(default)]
    pub rpo_target_secs: Option<f64>,
    pub passed: bool,
    #[serde(default)]
    pub failures: Vec<String>,
}

impl RecordV0 {
    /// The same run in the current format; what v0 did not record is
    /// `unknown` or empty.
    pub fn upgrade(self) -> HistoryRecord {
        let action = Scenario::all()
            .iter()
            .find(|s| s.slug() == self.scenario)
            .map(|s| s.action().to_owned())
            .unwrap_or_default();
        HistoryRecord {
            format: FORMAT_VERSION,
            drill: self.drill,
            scenario: self.scenario,
            action,
            backend: unknown(),
            dataset_size: None,
            started_at: self.started_at,
            duration_seconds: 0.0,
            incident: None,
            verified_at: None,
            rto_seconds: self.rto_secs,
            rto_target_seconds: self.rto_target_secs,
            rpo_seconds: self.rpo_secs,
            rpo_target_seconds: self.rpo_target_secs,
            phases: Vec::new(),
            checks: Vec::new(),
            findings: Vec::new(),
            passed: self.passed,
            failures: self.failures,
            aborted: None,
            drillbook_version: unknown(),
            postgres_version: None,
            properties: BTreeMap::new(),
            timeline: Vec::new(),
        }
    }
}

/// What was read: the records (oldest first) and what was skipped, as
/// sentences naming file/object and line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    pub records: Vec<HistoryRecord>,
    pub warnings: Vec<String>,
}

impl History {
    fn warn(&mut self, warning: String) {
        tracing::warn!("{warning}");
        self.warnings.push(warning);
    }

    fn sort(&mut self) {
        self.records
            .sort_by(|a, b| (a.started_at, &a.drill).cmp(&(b.started_at, &b.drill)));
    }

    /// The records of `month`.
    pub fn in_month(&self, month: Month) -> impl Iterator<Item = &HistoryRecord> {
        self.records.iter().filter(move |r| month.contains(r.started_at))
    }
}

/// Where history lives.
#[derive(Debug, Clone)]
pub enum HistoryStore {
    /// One JSON-lines file per month in a directory.
    Local(PathBuf),
    /// One object per record under [`S3_PREFIX`].
    S3(Store),
}

impl HistoryStore {
    /// Appends one record.
    ///
    /// # Errors
    ///
    /// [`HistoryError::Append`] / [`HistoryError::PutObject`].
    pub async fn append(&self, record: &HistoryRecord) -> Result<()> {
        match self {
            Self::Local(dir) => append_local(dir, record),
            Self::S3(store) => {
                let key = s3_key(record);
                let bytes = serde_json::to_vec_pretty(record).expect("a record always serializes");
                store
                    .put_bytes(&key, bytes, "application/json")
                    .await
                    .map_err(|source| HistoryError::PutObject { key, source })
            }
        }
    }

    /// Reads every record of `months` (a file or object that cannot be read
    /// is skipped with a warning).
    ///
    /// # Errors
    ///
    /// [`HistoryError::List`] if the S3 history cannot be listed.
    pub async fn read(&self, months: &[Month]) -> Result<History> {
        match self {
            Self::Local(dir) => Ok(read_local(dir, months)),
            Self::S3(store) => read_s3(store, months).await,
        }
    }

    /// `target/drill-history` or `s3://bucket/prefix/drills/history/`, for messages.
    pub fn location(&self) -> String {
        match self {
            Self::Local(dir) => dir.display().to_string(),
            Self::S3(store) => format!("{}{S3_PREFIX}", store.config().location()),
        }
    }
}

/// `DRILL_HISTORY_DIR`, else `target/drill-history` (relative to the package
/// root, where tests and drills run).
pub fn default_dir() -> PathBuf {
    std::env::var_os("DRILL_HISTORY_DIR")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("target").join("drill-history"), PathBuf::from)
}

/// Whether `DRILL_HISTORY=off` (also `0`, `false`, `no`) turns recording off.
pub fn disabled() -> bool {
    std::env::var("DRILL_HISTORY")
        .is_ok_and(|value| matches!(value.trim().to_ascii_lowercase().as_str(), "off" | "0" | "false" | "no"))
}

/// The file of `month` in a local history directory.
pub fn month_file(dir: &Path, month: Month) -> PathBuf {
    dir.join(format!("{month}.jsonl"))
}

/// The harness's hook: appends the summary's record to `dir` (or
/// [`default_dir`]) unless [`disabled`]. A failure is a warning, never a
/// drill failure: history is a report's input, not the drill's outcome.
pub fn record_drill(summary: &DrillSummary, dir: Option<&Path>) {
    if disabled() {
        return;
    }
    let dir = dir.map_or_else(default_dir, Path::to_path_buf);
    let record = HistoryRecord::from_summary(summary);
    match append_local(&dir, &record) {
        Ok(()) => tracing::debug!(drill = %summary.name, history = %dir.display(), "appended drill history"),
        Err(error) => {
            let cause = std::error::Error::source(&error)
                .map(ToString::to_string)
                .unwrap_or_default();
            tracing::warn!(drill = %summary.name, "{error}: {cause}");
        }
    }
}

/// Appends `record` to its month's file in `dir` with one write.
///
/// # Errors
///
/// [`HistoryError::Append`] if the directory or file cannot be written.
pub fn append_local(dir: &Path, record: &HistoryRecord) -> Result<()> {
    let path = month_file(dir, Month::of(record.started_at));
    let error = |source| HistoryError::Append {
        path: path.clone(),
        source,
    };
    fs::create_dir_all(dir).map_err(error)?;
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(error)?;
    file.write_all(record.to_json_line().as_bytes()).map_err(error)
}

fn read_local(dir: &Path, months: &[Month]) -> History {
    let mut history = History::default();
    for &month in months {
        let path = month_file(dir, month);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => {
                history.warn(format!("skipped history file `{}`: {error}", path.display()));
                continue;
            }
        };
        read_lines(&mut history, &path.display().to_string(), &bytes);
    }
    history.sort();
    history
}

fn read_lines(history: &mut History, source: &str, bytes: &[u8]) {
    for (index, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let Ok(line) = std::str::from_utf8(line) else {
            history.warn(format!("skipped line {} of `{source}`: not UTF-8", index + 1));
            continue;
        };
        if line.trim().is_empty() {
            continue;
        }
        match HistoryRecord::parse(line) {
            Ok(record) => history.records.push(record),
            Err(problem) => history.warn(format!("skipped line {} of `{source}`: {problem}", index + 1)),
        }
    }
}

/// `drills/history/<YYYY-MM>/<stamp>_<drill>_<12 random hex digits>.json`.
///
/// The random suffix keeps two records of the same drill started in the same
/// millisecond (two CI jobs, two hosts) from overwriting each other. Keys
/// written before it (`<stamp>_<drill>.json`) still read: readers list the
/// month's prefix and parse every object, whatever its name.
fn s3_key(record: &HistoryRecord) -> String {
    let suffix = rand::random::<u64>() & 0xffff_ffff_ffff;
    s3_key_with_suffix(record, suffix)
}

fn s3_key_with_suffix(record: &HistoryRecord, suffix: u64) -> String {
    let stamp = record.started_at.format("%Y%m%dT%H%M%S%.3fZ");
    let drill: String = record
        .drill
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "{S3_PREFIX}{}/{stamp}_{drill}_{suffix:012x}.json",
        Month::of(record.started_at)
    )
}

async fn read_s3(store: &Store, months: &[Month]) -> Result<History> {
    let mut history = History::default();
    for &month in months {
        let prefix = format!("{S3_PREFIX}{month}/");
        let objects = store.list(&prefix).await.map_err(|source| HistoryError::List {
            location: format!("{}{prefix}", store.config().location()),
            source,
        })?;
        for object in objects {
            let source = format!("{}{}", store.config().location(), object.key);
            match store.get_bytes(&object.key).await {
                Ok(bytes) => match std::str::from_utf8(&bytes)
                    .map_err(|e| e.to_string())
                    .and_then(HistoryRecord::parse)
                {
                    Ok(record) => history.records.push(record),
                    Err(problem) => history.warn(format!("skipped history object `{source}`: {problem}")),
                },
                Err(error) => history.warn(format!("skipped history object `{source}`: {error}")),
            }
        }
    }
    history.sort();
    Ok(history)
}

/// `2026-05-01T08:00:00.000Z`, the form reports print.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::drill::Scenario;
    use crate::drill::testing::{fixture, t0};

    const MINUTE: Duration = Duration::from_mins(1);

    fn summary() -> DrillSummary {
        let mut fx = fixture("full_restore", Scenario::CompleteInfrastructureLoss);
        fx.drill.property("dataset_profile", "small");
        fx.drill.property("server_version", "17.2");
        fx.clock.advance(MINUTE);
        fx.drill.incident("dropped the ledger database");
        fx.drill.recovery_point(crate::drill::RecoveryPoint::new(
            crate::drill::RecoverySource::Snapshot,
            t0(),
        ));
        fx.clock.advance(3 * MINUTE);
        fx.drill.check("row counts match manifest", true, "7 tables");
        fx.drill.check("4.1 broken links = 0", false, "3 broken links");
        fx.drill.verified();
        fx.drill.summary()
    }

    #[test]
    fn record_carries_the_measurements_and_round_trips() {
        let record = HistoryRecord::from_summary_on(&summary(), "embedded");
        assert_eq!(record.format, FORMAT_VERSION);
        assert_eq!(record.scenario, "complete-infrastructure-loss");
        assert_eq!(record.action, "Full restore from backup");
        assert_eq!(record.dataset_size.as_deref(), Some("small"));
        assert_eq!(record.postgres_version.as_deref(), Some("17.2"));
        assert_eq!(record.rto_seconds, Some(180.0));
        assert_eq!(record.rto_target_seconds, 14_400.0);
        assert_eq!(record.rpo_seconds, Some(60.0));
        assert_eq!(record.findings, ["check `4.1 broken links = 0` failed: 3 broken links"]);
        assert!(!record.passed);
        assert_eq!(record.verdict_label(), "failed");
        let line = record.to_json_line();
        assert!(line.ends_with('\n') && !line.trim_end().contains('\n'), "{line}");
        assert_eq!(HistoryRecord::parse(line.trim_end()).unwrap(), record);
    }

    #[test]
    fn months_parse_and_step() {
        let may: Month = "2026-05".parse().unwrap();
        assert_eq!(may.to_string(), "2026-05");
        assert_eq!(may.long_name(), "May 2026");
        assert_eq!("2026-01".parse::<Month>().unwrap().previous().to_string(), "2025-12");
        assert_eq!("2025-12".parse::<Month>().unwrap().next().to_string(), "2026-01");
        let months: Vec<String> = may.trailing(3).iter().map(ToString::to_string).collect();
        assert_eq!(months, ["2026-03", "2026-04", "2026-05"]);
        for bad in ["2026-13", "2026-5", "26-05", "may", "2026-00", ""] {
            let error = bad.parse::<Month>().unwrap_err().to_string();
            assert!(
                error.contains(&format!("`{bad}`")) && error.contains("YYYY-MM"),
                "{error}"
            );
        }
    }

    #[test]
    fn newer_formats_are_refused_with_an_upgrade_hint() {
        let problem = HistoryRecord::parse(r#"{"format": 9, "drill": "x"}"#).unwrap_err();
        assert!(
            problem.contains("newer drillbook") && problem.contains("upgrade"),
            "{problem}"
        );
    }

    #[test]
    fn local_store_appends_per_month_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut record = HistoryRecord::from_summary_on(&summary(), "embedded");
        append_local(dir.path(), &record).unwrap();
        record.started_at = "2026-04-30T23:59:59Z".parse().unwrap();
        append_local(dir.path(), &record).unwrap();
        append_local(dir.path(), &record).unwrap();
        let april = fs::read_to_string(dir.path().join("2026-04.jsonl")).unwrap();
        assert_eq!(april.lines().count(), 2);
        let history = read_local(dir.path(), &"2026-05".parse::<Month>().unwrap().trailing(2));
        assert_eq!(history.records.len(), 3);
        assert!(history.warnings.is_empty(), "{:?}", history.warnings);
        assert_eq!(history.in_month("2026-05".parse().unwrap()).count(), 1);
    }

    #[test]
    fn finishing_a_drill_appends_its_record() {
        let mut fx = fixture("hooked", Scenario::SinglePodCrash);
        fx.drill.incident("killed the pod");
        fx.drill.verified();
        let history_dir = fx.reports.path().join("history");
        fx.drill.finish().unwrap();
        let history = read_local(&history_dir, &[Month::of(t0())]);
        assert_eq!(history.records.len(), 1, "{history:?}");
        assert_eq!(history.records[0].drill, "hooked");
        assert!(history.records[0].passed);
    }

    #[test]
    fn an_aborted_drill_is_recorded_as_aborted() {
        let fx = fixture("dropped", Scenario::SinglePodCrash);
        let history_dir = fx.reports.path().join("history");
        let crate::drill::testing::Fixture { drill, reports, .. } = fx;
        drop(drill);
        let history = read_local(&history_dir, &[Month::of(t0())]);
        assert_eq!(history.records.len(), 1, "{history:?}");
        assert_eq!(history.records[0].verdict_label(), "aborted");
        drop(reports);
    }

    #[test]
    fn s3_keys_of_the_same_drill_in_the_same_millisecond_differ() {
        let record = HistoryRecord::from_summary(&summary());
        let first = s3_key(&record);
        let second = s3_key(&record);
        assert_ne!(first, second, "same drill, same start: distinct objects");
        let stamp = record.started_at.format("%Y%m%dT%H%M%S%.3fZ").to_string();
        let expected_start = format!("{S3_PREFIX}{}/{stamp}_full_restore_", Month::of(record.started_at));
        for key in [&first, &second] {
            assert!(key.starts_with(&expected_start), "{key}");
            assert!(key.ends_with(".json"), "{key}");
        }
        assert_eq!(
            s3_key_with_suffix(&record, 0xabc),
            format!("{expected_start}000000000abc.json"),
            "sortable by start, then drill, then suffix"
        );
    }

    #[test]
    fn an_unwritable_history_is_a_warning_not_a_failure() {
        let mut fx = fixture("unwritable", Scenario::SinglePodCrash);
        // A file where the history directory should be.
        let blocker = fx.reports.path().join("history");
        fs::write(&blocker, "not a directory").unwrap();
        fx.drill.incident("killed the pod");
        fx.drill.verified();
        let summary = fx.drill.finish().expect("history failure must not fail the drill");
        summary.assert_passed();
        assert!(blocker.is_file());
    }
}
