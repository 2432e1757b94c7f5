//! The drill harness: phases, clock, timeline, RTO/RPO and the verdict.
//!
//! A drill is an async test function that walks a [`Drill`] through the
//! playbook's story: back up, cause the [`incident`](Drill::incident),
//! recover in timed [`phase`](Drill::phase)s, run [`check`](Drill::check)s,
//! mark the system [`verified`](Drill::verified) healthy, then
//! [`finish`](Drill::finish) and [`assert_passed`](DrillSummary::assert_passed).
//! While the drill runs the harness only records; judging happens once, over
//! the record, in [`Drill::verdict`].
//!
//! ```no_run
//! use drillbook::drill::{Drill, Scenario};
//!
//! # async fn restore() -> anyhow::Result<()> { Ok(()) }
//! # async fn drill() -> anyhow::Result<()> {
//! let mut drill = Drill::new("full_restore", Scenario::CompleteInfrastructureLoss)?;
//! drill.incident("dropped the ledger database");
//! drill.phase("restore latest dump", restore()).await?;
//! drill.check("row counts match manifest", true, "7 tables, 48 213 rows");
//! drill.verified();
//! drill.finish()?.assert_passed();
//! # Ok(())
//! # }
//! ```
//!
//! # Measurements
//!
//! - **RTO** runs from the incident to verified healthy on the *monotonic*
//!   clock, so a wall-clock step (NTP, a resumed VM) cannot bend it.
//! - **RPO** is the incident's wall time minus the [`RecoveryPoint`]: the
//!   moment up to which the recovered data is complete, with what proves it
//!   (a backup's snapshot, the end of WAL replay, a promoted standby's last
//!   replayed commit, the newest surviving canary). Never the age of the
//!   newest row: a database that was quiet before its backup lost nothing.
//!   Both ends are wall timestamps because one of them is read out of the
//!   data. The rows actually lost are reported beside it where a drill
//!   counts them ([`Drill::rows_lost`]).
//!
//! Time comes from a [`Clock`]: [`SystemClock`] in real drills,
//! [`ManualClock`] in tests that need four hours to pass instantly.
//!
//! # Targets
//!
//! Layered, later layers win:
//!
//! 1. the playbook's decision matrix ([`Scenario::default_rto`]), no RPO target;
//! 2. `DRILL_RTO_TARGET` / `DRILL_RPO_TARGET`, for every drill;
//! 3. `DRILL_RTO_TARGET_<SCENARIO>` / `DRILL_RPO_TARGET_<SCENARIO>`, e.g.
//!    `DRILL_RTO_TARGET_COMPLETE_INFRASTRUCTURE_LOSS`;
//! 4. [`Drill::with_rto_target`] / [`Drill::with_rpo_target`] in the drill.
//!
//! Values take [`parse_duration`]'s form: `90s`, `15m`, `2h`, `1h30m`.
//!
//! # Reports
//!
//! [`Drill::finish`] writes JUnit to `<`[`report_dir`]`>/<name>.xml`. A drill
//! that returns early (`?` on a failed phase) or panics never reaches
//! `finish`, so dropping an unfinished [`Drill`] writes the report anyway,
//! marked as aborted: CI then shows a failed drill instead of a missing file.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::report::junit;

/// Result of the harness's fallible operations.
pub type Result<T, E = DrillError> = std::result::Result<T, E>;

/// What can go wrong in the harness itself (not in the system under drill).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DrillError {
    /// A target override in the environment is not a duration.
    #[error("failed to parse target override `{variable}`")]
    InvalidTarget {
        variable: String,
        #[source]
        source: ParseDurationError,
    },
    /// The JUnit report could not be written.
    #[error("failed to write JUnit report to `{}`", path.display())]
    WriteReport {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A string that is not a duration in [`parse_duration`]'s form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration `{input}`: {problem}; expected numbers with units h, m or s, \
     largest unit first, such as `90s`, `15m`, `2h` or `1h30m`"
)]
pub struct ParseDurationError {
    input: String,
    problem: DurationProblem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DurationProblem {
    Empty,
    ExpectedNumber(char),
    MissingUnit,
    UnknownUnit(char),
    UnitOrder,
    TooLarge,
}

impl fmt::Display for DurationProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("it is empty"),
            Self::ExpectedNumber(found) => write!(f, "expected a number, found `{found}`"),
            Self::MissingUnit => f.write_str("the last number has no unit"),
            Self::UnknownUnit(found) => write!(f, "unknown unit `{found}`"),
            Self::UnitOrder => f.write_str("each unit may appear once, largest first"),
            Self::TooLarge => f.write_str("it is too large"),
        }
    }
}

/// Parses `90s`, `15m`, `2h`, `1h30m`, `1h30m15s`: whole numbers, each with
/// a unit, units largest first and at most once. Surrounding whitespace is
/// ignored; anything else (fractions, spaces, bare numbers) is an error, so a
/// typo in a target fails loudly instead of silently meaning something else.
///
/// # Errors
///
/// [`ParseDurationError`] names the input, what is wrong with it and the
/// accepted form.
pub fn parse_duration(input: &str) -> Result<Duration, ParseDurationError> {
    let error = |problem| ParseDurationError {
        input: input.to_owned(),
        problem,
    };
    let mut rest = input.trim();
    if rest.is_empty() {
        return Err(error(DurationProblem::Empty));
    }
    let mut seconds: u64 = 0;
    let mut previous_unit = u64::MAX;
    while let Some(first) = rest.chars().next() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(error(DurationProblem::ExpectedNumber(first)));
        }
        let (number, tail) = rest.split_at(digits);
        let mut tail = tail.chars();
        let unit = match tail.next() {
            Some('h') => 3600,
            Some('m') => 60,
            Some('s') => 1,
            Some(other) => return Err(error(DurationProblem::UnknownUnit(other))),
            None => return Err(error(DurationProblem::MissingUnit)),
        };
        if unit >= previous_unit {
            return Err(error(DurationProblem::UnitOrder));
        }
        previous_unit = unit;
        seconds = number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(unit))
            .and_then(|part| seconds.checked_add(part))
            .ok_or_else(|| error(DurationProblem::TooLarge))?;
        rest = tail.as_str();
    }
    Ok(Duration::from_secs(seconds))
}

/// Formats a duration for people, rounded to a tenth of a second:
/// `4.2s`, `15m 00.0s`, `1h 02m 03.4s`. Fixed-width minutes and seconds keep
/// a measured value and its target easy to compare by eye.
pub fn format_duration(duration: Duration) -> String {
    let tenths = (duration.as_millis() + 50) / 100;
    let (hours, minutes) = (tenths / 36_000, tenths / 600 % 60);
    let (seconds, tenth) = (tenths / 10 % 60, tenths % 10);
    match (hours, minutes) {
        (0, 0) => format!("{seconds}.{tenth}s"),
        (0, _) => format!("{minutes}m {seconds:02}.{tenth}s"),
        _ => format!("{hours}h {minutes:02}m {seconds:02}.{tenth}s"),
    }
}

/// Seam for time so RTO arithmetic is testable without sleeping.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Monotonic reading since an arbitrary fixed origin.
    fn monotonic(&self) -> Duration;
    /// The current wall-clock time.
    fn wall(&self) -> DateTime<Utc>;
}

/// The real clocks: [`Instant`] for monotonic readings, [`Utc::now`] for wall.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn monotonic(&self) -> Duration {
        static ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);
        ORIGIN.elapsed()
    }

    fn wall(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told to. Clones share one time, so a test
/// keeps a handle to advance while the drill reads another.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<ManualNow>>,
}

#[derive(Debug)]
struct ManualNow {
    monotonic: Duration,
    wall: DateTime<Utc>,
}

impl ManualClock {
    /// A clock reading `wall_start` on the wall and zero on the monotonic side.
    pub fn new(wall_start: DateTime<Utc>) -> Self {
        let now = ManualNow {
            monotonic: Duration::ZERO,
            wall: wall_start,
        };
        Self {
            now: Arc::new(Mutex::new(now)),
        }
    }

    /// Moves both readings forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.lock();
        now.monotonic += by;
        now.wall += by;
    }

    fn lock(&self) -> MutexGuard<'_, ManualNow> {
        // Two plain values, always updated together: a panic elsewhere
        // cannot leave them inconsistent, so poisoning carries no meaning.
        self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Clock for ManualClock {
    fn monotonic(&self) -> Duration {
        self.lock().monotonic
    }

    fn wall(&self) -> DateTime<Utc> {
        self.lock().wall
    }
}

/// The rows of the playbook's decision matrix (section 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Scenario {
    SinglePodCrash,
    AllPodsUnhealthy,
    DbConnectionExhaustion,
    DbCorruptionSingleTable,
    DbCorruptionFull,
    CompleteInfrastructureLoss,
    DataCenterFailure,
}

/// One row of the decision matrix, kept together so it reads like the table.
struct MatrixRow {
    slug: &'static str,
    title: &'static str,
    action: &'static str,
    rto: Duration,
}

impl Scenario {
    const ALL: [Self; 7] = [
        Self::SinglePodCrash,
        Self::AllPodsUnhealthy,
        Self::DbConnectionExhaustion,
        Self::DbCorruptionSingleTable,
        Self::DbCorruptionFull,
        Self::CompleteInfrastructureLoss,
        Self::DataCenterFailure,
    ];

    /// Every scenario, in the matrix's order.
    pub fn all() -> &'static [Self] {
        &Self::ALL
    }

    #[rustfmt::skip]
    const fn row(self) -> MatrixRow {
        const fn row(slug: &'static str, title: &'static str, action: &'static str, rto: Duration) -> MatrixRow {
            MatrixRow { slug, title, action, rto }
        }
        match self {
            Self::SinglePodCrash => row("single-pod-crash", "Single pod crash", "Auto-heal (K8s)", Duration::from_mins(2)),
            Self::AllPodsUnhealthy => row("all-pods-unhealthy", "All pods unhealthy", "Rollback deployment", Duration::from_mins(10)),
            Self::DbConnectionExhaustion => row("db-connection-exhaustion", "DB connection exhaustion", "Kill queries + restart", Duration::from_mins(15)),
            Self::DbCorruptionSingleTable => row("db-corruption-single-table", "DB corruption (single table)", "Restore table from backup", Duration::from_mins(30)),
            Self::DbCorruptionFull => row("db-corruption-full", "DB corruption (full)", "Point-in-time recovery", Duration::from_hours(2)),
            Self::CompleteInfrastructureLoss => row("complete-infrastructure-loss", "Complete infrastructure loss", "Full restore from backup", Duration::from_hours(4)),
            Self::DataCenterFailure => row("data-center-failure", "Data center failure", "Failover to standby region", Duration::from_hours(1)),
        }
    }

    /// Stable kebab-case identifier, also the serde form: `complete-infrastructure-loss`.
    pub const fn slug(self) -> &'static str {
        self.row().slug
    }

    /// The matrix's wording: `Complete infrastructure loss`.
    pub const fn title(self) -> &'static str {
        self.row().title
    }

    /// The matrix's action: `Full restore from backup`.
    pub const fn action(self) -> &'static str {
        self.row().action
    }

    /// The matrix's expected RTO: `< 4 hours` is four hours.
    pub const fn default_rto(self) -> Duration {
        self.row().rto
    }

    /// Suffix of the per-scenario environment overrides: `COMPLETE_INFRASTRUCTURE_LOSS`.
    fn env_suffix(self) -> String {
        self.slug().to_ascii_uppercase().replace('-', "_")
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.title())
    }
}

/// What a drill must achieve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Targets {
    pub rto: Duration,
    /// `None` means RPO is measured and reported but not judged.
    pub rpo: Option<Duration>,
}

impl Targets {
    /// The decision matrix's RTO, no RPO target.
    pub fn for_scenario(scenario: Scenario) -> Self {
        Self {
            rto: scenario.default_rto(),
            rpo: None,
        }
    }

    /// The matrix's targets with the process environment's overrides applied
    /// (see the [module docs](self) for the layering).
    ///
    /// # Errors
    ///
    /// [`DrillError::InvalidTarget`] if an override is not a duration.
    pub fn from_env(scenario: Scenario) -> Result<Self> {
        // Lossy, so a non-UTF-8 value fails parsing visibly instead of
        // being ignored as if unset.
        Self::from_lookup(scenario, |name| {
            std::env::var_os(name).map(|value| value.to_string_lossy().into_owned())
        })
    }

    /// Like [`from_env`](Self::from_env), reading variables through `lookup`
    /// so tests need not mutate the (process-wide) environment. An empty
    /// value counts as unset, as CI templates pass empty strings for unset
    /// inputs.
    ///
    /// # Errors
    ///
    /// [`DrillError::InvalidTarget`] if an override is not a duration.
    pub fn from_lookup(scenario: Scenario, lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let suffix = scenario.env_suffix();
        let read = |variable: &str| -> Result<Option<Duration>> {
            let Some(value) = lookup(variable).filter(|value| !value.trim().is_empty()) else {
                return Ok(None);
            };
            parse_duration(&value)
                .map(Some)
                .map_err(|source| DrillError::InvalidTarget {
                    variable: variable.to_owned(),
                    source,
                })
        };
        let mut targets = Self::for_scenario(scenario);
        for variable in ["DRILL_RTO_TARGET".to_owned(), format!("DRILL_RTO_TARGET_{suffix}")] {
            if let Some(rto) = read(&variable)? {
                targets.rto = rto;
            }
        }
        for variable in ["DRILL_RPO_TARGET".to_owned(), format!("DRILL_RPO_TARGET_{suffix}")] {
            if let Some(rpo) = read(&variable)? {
                targets.rpo = Some(rpo);
            }
        }
        Ok(targets)
    }
}

/// Where JUnit reports go: `DRILL_REPORT_DIR`, else `./target/drill-reports`.
/// Tests run from the package root, so that is beside nextest's own
/// `target/nextest/<profile>/junit.xml`, also when `CARGO_TARGET_DIR` moves
/// the build elsewhere.
pub fn report_dir() -> PathBuf {
    report_dir_from(|name| std::env::var_os(name))
}

fn report_dir_from(lookup: impl Fn(&str) -> Option<OsString>) -> PathBuf {
    let set = |name| lookup(name).filter(|value| !value.is_empty()).map(PathBuf::from);
    set("DRILL_REPORT_DIR").unwrap_or_else(|| PathBuf::from("target").join("drill-reports"))
}

/// Property names the JUnit report sets itself; [`Drill::property`] refuses
/// them so a drill cannot shadow a measurement.
pub const HARNESS_PROPERTIES: &[&str] = &[
    "scenario",
    "action",
    "rto_seconds",
    "rto_target_seconds",
    "rpo_seconds",
    "rpo_target_seconds",
    "incident_at",
    "verified_at",
    "recovery_point_at",
    "recovery_point_source",
    "rows_lost",
];

/// What proves the recovered data complete up to a [`RecoveryPoint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RecoverySource {
    /// A logical backup's snapshot (its manifest's `snapshot_at`): every
    /// transaction committed before it is in the dump.
    Snapshot,
    /// The commit time of the last transaction point-in-time recovery replayed.
    ReplayEnd,
    /// The last commit a promoted standby had replayed.
    LastReplayedCommit,
    /// The newest canary found in the recovered data.
    Canary,
}

impl RecoverySource {
    /// The name in reports (`snapshot`, `replay_end`, ...).
    pub fn slug(self) -> &'static str {
        match self {
            Self::Snapshot => "snapshot",
            Self::ReplayEnd => "replay_end",
            Self::LastReplayedCommit => "last_replayed_commit",
            Self::Canary => "canary",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Snapshot => "the backup's snapshot",
            Self::ReplayEnd => "the last commit WAL replay applied",
            Self::LastReplayedCommit => "the standby's last replayed commit",
            Self::Canary => "the newest surviving canary",
        }
    }
}

impl fmt::Display for RecoverySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.slug())
    }
}

/// The moment up to which the recovered data is complete, and what proves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RecoveryPoint {
    pub at: DateTime<Utc>,
    pub source: RecoverySource,
}

impl RecoveryPoint {
    pub fn new(source: RecoverySource, at: DateTime<Utc>) -> Self {
        Self { at, source }
    }

    /// A logical restore of `manifest`'s backup: complete up to its snapshot,
    /// however old the newest row in it.
    pub fn snapshot(manifest: &crate::store::manifest::BackupManifest) -> Self {
        Self::new(RecoverySource::Snapshot, manifest.snapshot_at)
    }

    /// The data lost to an incident at `incident`: `incident − self`, zero
    /// when the recovered data reaches the incident.
    pub fn rpo(&self, incident: DateTime<Utc>) -> Duration {
        (incident - self.at).to_std().unwrap_or(Duration::ZERO)
    }
}

/// A timed step of the drill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Phase {
    pub name: String,
    pub started_at: DateTime<Utc>,
    pub duration: Duration,
    /// The error text, `None` if the phase succeeded.
    pub error: Option<String>,
}

impl Phase {
    pub fn passed(&self) -> bool {
        self.error.is_none()
    }
}

/// A named assertion about the recovered system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
    pub at: DateTime<Utc>,
}

/// The incident that started the RTO clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Incident {
    pub at: DateTime<Utc>,
    pub description: String,
}

/// One line of the drill's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TimelineEvent {
    pub at: DateTime<Utc>,
    /// Time since the drill started, on the monotonic clock.
    pub elapsed: Duration,
    pub message: String,
}

impl fmt::Display for TimelineEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.at.to_rfc3339_opts(SecondsFormat::Millis, true);
        let elapsed = format!("+{}", format_duration(self.elapsed));
        write!(f, "{at} {elapsed:>14}  {}", self.message)
    }
}

/// Whether a drill passed; each failure is a sentence for people.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub failures: Vec<String>,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.passed() {
            return f.write_str("passed");
        }
        f.write_str("failed:")?;
        self.failures
            .iter()
            .try_for_each(|failure| write!(f, "\n  - {failure}"))
    }
}

/// Everything a drill recorded, judged: what reports and history are made of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DrillSummary {
    pub name: String,
    pub scenario: Scenario,
    pub targets: Targets,
    pub verdict: Verdict,
    pub started_at: DateTime<Utc>,
    /// From the drill's start to this summary, on the monotonic clock.
    pub duration: Duration,
    pub incident: Option<Incident>,
    pub verified_at: Option<DateTime<Utc>>,
    pub recovery_point: Option<RecoveryPoint>,
    /// Rows the incident lost, where the drill counted them.
    pub rows_lost: Option<u64>,
    pub rto: Option<Duration>,
    pub rpo: Option<Duration>,
    pub phases: Vec<Phase>,
    pub checks: Vec<Check>,
    pub properties: BTreeMap<String, String>,
    pub timeline: Vec<TimelineEvent>,
    /// Why the drill ended without [`Drill::finish`], if it did.
    pub aborted: Option<String>,
    /// Where the JUnit report was written, once it was.
    pub junit_path: Option<PathBuf>,
}

impl DrillSummary {
    /// Panics unless the drill passed, listing every failure and the JUnit
    /// report's path: the last line of a drill.
    #[track_caller]
    pub fn assert_passed(&self) {
        if self.verdict.passed() {
            return;
        }
        let report = match &self.junit_path {
            Some(path) => path.display().to_string(),
            None => "not written".to_owned(),
        };
        panic!(
            "drill `{}` ({}) {}\nJUnit report: {report}",
            self.name, self.scenario, self.verdict
        );
    }

    /// Why the RTO is not within target: missing marks or too slow.
    pub(crate) fn rto_failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        if self.incident.is_none() {
            failures.push("no incident was recorded (call `Drill::incident` when it starts)".to_owned());
        }
        if self.verified_at.is_none() {
            failures.push("the system was never verified healthy (call `Drill::verified` once checks pass)".to_owned());
        }
        if let Some(rto) = self.rto.filter(|&rto| rto > self.targets.rto) {
            failures.push(format!(
                "RTO {} exceeds target {} ({}: {})",
                format_duration(rto),
                format_duration(self.targets.rto),
                self.scenario.title(),
                self.scenario.action(),
            ));
        }
        failures
    }

    /// Why the RPO is not within target; nothing when no target is set.
    pub(crate) fn rpo_failure(&self) -> Option<String> {
        let target = self.targets.rpo?;
        match self.rpo {
            None => Some(format!(
                "an RPO target of {} is set but no RPO was measured \
                 (call `Drill::incident` and `Drill::recovery_point`)",
                format_duration(target)
            )),
            Some(rpo) if rpo > target => Some(format!(
                "RPO {} exceeds target {} ({})",
                format_duration(rpo),
                format_duration(target),
                self.scenario.title(),
            )),
            Some(_) => None,
        }
    }

    fn judge(&self) -> Verdict {
        let phases = self.phases.iter().filter_map(|phase| {
            let error = phase.error.as_ref()?;
            Some(format!("phase `{}` failed: {error}", phase.name))
        });
        let checks = self
            .checks
            .iter()
            .filter(|check| !check.passed)
            .map(|check| format!("check `{}` failed: {}", check.name, check.detail));
        let failures = self
            .aborted
            .iter()
            .cloned()
            .chain(self.rto_failures())
            .chain(self.rpo_failure())
            .chain(phases)
            .chain(checks)
            .collect();
        Verdict { failures }
    }
}

/// A reading of both clocks at one moment.
#[derive(Debug, Clone, Copy)]
struct Mark {
    monotonic: Duration,
    wall: DateTime<Utc>,
}

/// One drill run: records phases, marks, checks and properties, then judges
/// and reports them. See the [module docs](self).
#[derive(Debug)]
pub struct Drill {
    name: String,
    scenario: Scenario,
    targets: Targets,
    clock: Arc<dyn Clock>,
    report_dir: Option<PathBuf>,
    /// Where the history record goes; `None` is the default store.
    history_dir: Option<PathBuf>,
    started: Mark,
    incident: Option<(Mark, String)>,
    verified: Option<Mark>,
    recovery_point: Option<RecoveryPoint>,
    rows_lost: Option<u64>,
    phases: Vec<Phase>,
    checks: Vec<Check>,
    properties: BTreeMap<String, String>,
    timeline: Vec<TimelineEvent>,
    finished: bool,
}

impl Drill {
    /// A drill on the system clock with the matrix's targets and the
    /// environment's overrides.
    ///
    /// # Errors
    ///
    /// [`DrillError::InvalidTarget`] if a target override is not a duration.
    pub fn new(name: &str, scenario: Scenario) -> Result<Self> {
        Ok(Self::with_targets(name, scenario, Targets::from_env(scenario)?))
    }

    fn with_targets(name: &str, scenario: Scenario, targets: Targets) -> Self {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        Self {
            name: name.to_owned(),
            scenario,
            targets,
            started: now(&*clock),
            clock,
            report_dir: None,
            history_dir: None,
            incident: None,
            verified: None,
            recovery_point: None,
            rows_lost: None,
            phases: Vec::new(),
            checks: Vec::new(),
            properties: BTreeMap::new(),
            timeline: Vec::new(),
            finished: false,
        }
    }

    /// Replaces the clock; the drill starts over at the new clock's "now".
    ///
    /// # Panics
    ///
    /// If anything was already recorded: its times came from the old clock.
    #[track_caller]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        assert!(
            self.timeline.is_empty(),
            "drill `{}`: with_clock must be called before anything is recorded",
            self.name
        );
        self.started = now(&*clock);
        self.clock = clock;
        self
    }

    /// Overrides the RTO target; beats the environment.
    pub fn with_rto_target(mut self, target: Duration) -> Self {
        self.targets.rto = target;
        self
    }

    /// Sets the RPO target; beats the environment.
    pub fn with_rpo_target(mut self, target: Duration) -> Self {
        self.targets.rpo = Some(target);
        self
    }

    /// Writes the report into `dir` instead of [`report_dir()`].
    pub fn with_report_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.report_dir = Some(dir.into());
        self
    }

    /// Appends the history record to `dir` instead of the default history
    /// store (see [`report::history`](crate::report::history)).
    pub fn with_history_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.history_dir = Some(dir.into());
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn scenario(&self) -> Scenario {
        self.scenario
    }

    pub fn targets(&self) -> Targets {
        self.targets
    }

    /// Adds a wall-clock stamped line to the timeline and logs it.
    pub fn event(&mut self, message: impl Into<String>) {
        let at = self.now();
        self.record(at, message.into(), false);
    }

    /// Runs one step of the drill, timing it on the monotonic clock and
    /// recording whether it failed. The future runs inside a tracing span
    /// named after the phase, so its logs say where they came from.
    ///
    /// The error is passed back untouched for the drill to `?`; if it does,
    /// dropping the drill still writes the report.
    pub async fn phase<T, E: fmt::Display>(
        &mut self,
        name: &str,
        fut: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let started = self.now();
        self.record(started, format!("phase `{name}` started"), false);
        let span = tracing::info_span!("phase", drill = %self.name, phase = name);
        let result = fut.instrument(span).await;
        let ended = self.now();
        let duration = ended.monotonic.saturating_sub(started.monotonic);
        // `{:#}` so an anyhow error keeps its chain of causes.
        let error = result.as_ref().err().map(|error| format!("{error:#}"));
        let message = match &error {
            None => format!("phase `{name}` finished in {}", format_duration(duration)),
            Some(error) => format!("phase `{name}` failed after {}: {error}", format_duration(duration)),
        };
        self.record(ended, message, error.is_some());
        self.phases.push(Phase {
            name: name.to_owned(),
            started_at: started.wall,
            duration,
            error,
        });
        result
    }

    /// Marks the start of the incident: RTO runs from here, RPO is measured
    /// back from here. Returns the incident's wall time.
    ///
    /// # Panics
    ///
    /// If an incident was already recorded: a drill has exactly one.
    #[track_caller]
    pub fn incident(&mut self, description: impl Into<String>) -> DateTime<Utc> {
        if let Some((mark, previous)) = &self.incident {
            panic!(
                "drill `{}`: incident recorded twice; the first, {previous:?}, began at {}",
                self.name,
                mark.wall.to_rfc3339_opts(SecondsFormat::Millis, true)
            );
        }
        let description = description.into();
        let at = self.now();
        self.record(at, format!("incident: {description}"), false);
        self.incident = Some((at, description));
        at.wall
    }

    /// Marks the system verified healthy: RTO stops here.
    ///
    /// # Panics
    ///
    /// If no incident was recorded yet, or if already verified: both mean
    /// the RTO would measure something other than the recovery.
    #[track_caller]
    pub fn verified(&mut self) {
        assert!(
            self.incident.is_some(),
            "drill `{}`: verified before any incident; call `incident` first",
            self.name
        );
        assert!(
            self.verified.is_none(),
            "drill `{}`: verified twice; RTO stops at the first",
            self.name
        );
        let at = self.now();
        self.record(at, "verified healthy".to_owned(), false);
        self.verified = Some(at);
    }

    /// Records evidence of the moment up to which the recovered data is
    /// complete, for the RPO. Each piece proves completeness up to its own
    /// moment, so with several (a replay end and a canary) the latest is the
    /// recovery point.
    pub fn recovery_point(&mut self, point: RecoveryPoint) {
        let now = self.now();
        let message = format!(
            "recovered data complete up to {} ({})",
            point.at.to_rfc3339_opts(SecondsFormat::Millis, true),
            point.source.describe()
        );
        self.record(now, message, false);
        if self.recovery_point.is_none_or(|known| point.at > known.at) {
            self.recovery_point = Some(point);
        }
    }

    /// Records how many rows the incident lost (written after the recovery
    /// point, absent from the recovered data), reported beside the RPO.
    pub fn rows_lost(&mut self, rows: u64) {
        let now = self.now();
        self.record(now, format!("rows lost: {rows}"), false);
        self.rows_lost = Some(rows);
    }

    /// Records a named check, such as `row counts match manifest`.
    pub fn check(&mut self, name: &str, passed: bool, detail: impl Into<String>) {
        let detail = detail.into();
        let at = self.now();
        let outcome = if passed { "passed" } else { "FAILED" };
        let message = match detail.as_str() {
            "" => format!("check `{name}` {outcome}"),
            detail => format!("check `{name}` {outcome}: {detail}"),
        };
        self.record(at, message, !passed);
        self.checks.push(Check {
            name: name.to_owned(),
            passed,
            detail,
            at: at.wall,
        });
    }

    /// Records a measured value (dataset size, dump bytes, ...) for the
    /// report. Setting a name again replaces its value.
    ///
    /// # Panics
    ///
    /// If `name` is one of [`HARNESS_PROPERTIES`].
    #[track_caller]
    pub fn property(&mut self, name: &str, value: impl ToString) {
        assert!(
            !HARNESS_PROPERTIES.contains(&name),
            "drill `{}`: property `{name}` is set by the harness itself",
            self.name
        );
        self.properties.insert(name.to_owned(), value.to_string());
    }

    /// Incident to verified healthy, once both are recorded.
    pub fn rto(&self) -> Option<Duration> {
        let (incident, _) = self.incident.as_ref()?;
        Some(self.verified?.monotonic.saturating_sub(incident.monotonic))
    }

    /// Incident minus the recovery point ([`RecoveryPoint::rpo`]).
    pub fn rpo(&self) -> Option<Duration> {
        let (incident, _) = self.incident.as_ref()?;
        Some(self.recovery_point?.rpo(incident.wall))
    }

    /// Judges what was recorded so far. Passes iff the incident and verified
    /// healthy were recorded, RTO and RPO are within their targets (an RPO
    /// target needs a measured RPO), and every phase and check passed.
    pub fn verdict(&self) -> Verdict {
        self.summary().verdict
    }

    /// Everything recorded so far, judged.
    pub fn summary(&self) -> DrillSummary {
        let now = self.now();
        let mut summary = DrillSummary {
            name: self.name.clone(),
            scenario: self.scenario,
            targets: self.targets,
            verdict: Verdict::default(),
            started_at: self.started.wall,
            duration: now.monotonic.saturating_sub(self.started.monotonic),
            incident: self.incident.as_ref().map(|(mark, description)| Incident {
                at: mark.wall,
                description: description.clone(),
            }),
            verified_at: self.verified.map(|mark| mark.wall),
            recovery_point: self.recovery_point,
            rows_lost: self.rows_lost,
            rto: self.rto(),
            rpo: self.rpo(),
            phases: self.phases.clone(),
            checks: self.checks.clone(),
            properties: self.properties.clone(),
            timeline: self.timeline.clone(),
            aborted: None,
            junit_path: None,
        };
        summary.verdict = summary.judge();
        summary
    }

    /// Judges the drill and writes its JUnit report to
    /// `<report dir>/<name>.xml`. Call [`DrillSummary::assert_passed`] on the
    /// result; `finish` itself succeeds for a failed drill.
    ///
    /// # Errors
    ///
    /// [`DrillError::WriteReport`] if the report cannot be written.
    pub fn finish(mut self) -> Result<DrillSummary> {
        self.finished = true;
        let mut summary = self.summary();
        let path = self.junit_path();
        // History first: a report that cannot be written must not lose the record.
        crate::report::history::record_drill(&summary, self.history_dir.as_deref());
        junit::write(&summary, &path).map_err(|source| DrillError::WriteReport {
            path: path.clone(),
            source,
        })?;
        if summary.verdict.passed() {
            tracing::info!(drill = %self.name, report = %path.display(), "drill passed");
        } else {
            tracing::warn!(drill = %self.name, report = %path.display(), "drill {}", summary.verdict);
        }
        summary.junit_path = Some(path);
        Ok(summary)
    }

    fn junit_path(&self) -> PathBuf {
        // The name becomes a file name: keep it one path component.
        let file_name: String = self
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let dir = self.report_dir.clone().unwrap_or_else(report_dir);
        dir.join(format!("{file_name}.xml"))
    }

    fn now(&self) -> Mark {
        now(&*self.clock)
    }

    fn record(&mut self, at: Mark, message: String, failure: bool) {
        if failure {
            tracing::warn!(drill = %self.name, "{message}");
        } else {
            tracing::info!(drill = %self.name, "{message}");
        }
        self.timeline.push(TimelineEvent {
            at: at.wall,
            elapsed: at.monotonic.saturating_sub(self.started.monotonic),
            message,
        });
    }
}

fn now(clock: &dyn Clock) -> Mark {
    Mark {
        monotonic: clock.monotonic(),
        wall: clock.wall(),
    }
}

/// The fallback for drills that never reach [`Drill::finish`]: write the
/// report anyway, marked aborted, so the failure is visible in CI.
impl Drop for Drill {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let how = if std::thread::panicking() {
            "panicked"
        } else {
            "returned"
        };
        let reason = format!("the drill {how} without calling `Drill::finish`");
        let at = self.now();
        self.record(at, reason.clone(), true);
        let mut summary = self.summary();
        summary.aborted = Some(reason);
        summary.verdict = summary.judge();
        let path = self.junit_path();
        if let Err(error) = junit::write(&summary, &path) {
            // Nowhere to return an error from `drop`, and panicking here
            // could abort a process that is already unwinding.
            tracing::error!(drill = %self.name, report = %path.display(), %error, "failed to write JUnit report");
        }
        crate::report::history::record_drill(&summary, self.history_dir.as_deref());
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// 2026-05-01T08:00:00Z, where every test's manual clock starts.
    pub(crate) fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_777_622_400, 0).expect("valid timestamp")
    }

    /// A drill on a manual clock at [`t0`] with the matrix's targets,
    /// reporting into its own temporary directory.
    pub(crate) struct Fixture {
        // Declared first so it drops first: its fallback report must land
        // before `reports` is deleted.
        pub(crate) drill: Drill,
        pub(crate) clock: ManualClock,
        pub(crate) reports: tempfile::TempDir,
    }

    pub(crate) fn fixture(name: &str, scenario: Scenario) -> Fixture {
        let clock = ManualClock::new(t0());
        let reports = tempfile::tempdir().expect("create temporary report dir");
        let drill = Drill::with_targets(name, scenario, Targets::for_scenario(scenario))
            .with_clock(Arc::new(clock.clone()))
            .with_report_dir(reports.path())
            .with_history_dir(reports.path().join("history"));
        Fixture { drill, clock, reports }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::panic::{AssertUnwindSafe, catch_unwind};

    use super::testing::{Fixture, fixture, t0};
    use super::*;

    const MINUTE: Duration = Duration::from_mins(1);
    const HOUR: Duration = Duration::from_hours(1);

    /// Incident, `recovery` later verified healthy.
    fn recovered_after(recovery: Duration) -> Fixture {
        let mut fx = fixture("full_restore", Scenario::CompleteInfrastructureLoss);
        fx.clock.advance(10 * MINUTE);
        fx.drill.incident("dropped the ledger database");
        fx.clock.advance(recovery);
        fx.drill.verified();
        fx
    }

    #[test]
    fn rto_just_under_the_matrix_target_passes() {
        let fx = recovered_after(3 * HOUR + 59 * MINUTE);
        assert_eq!(fx.drill.rto(), Some(3 * HOUR + 59 * MINUTE));
        assert_eq!(fx.drill.verdict(), Verdict::default());
    }

    #[test]
    fn rto_over_the_matrix_target_fails_with_a_sentence() {
        let fx = recovered_after(4 * HOUR + MINUTE);
        assert_eq!(
            fx.drill.verdict().failures,
            ["RTO 4h 01m 00.0s exceeds target 4h 00m 00.0s \
              (Complete infrastructure loss: Full restore from backup)"]
        );
    }

    #[test]
    fn rto_equal_to_target_passes() {
        let fx = recovered_after(4 * HOUR);
        assert!(fx.drill.verdict().passed());
    }

    #[test]
    fn with_rto_target_overrides_the_matrix() {
        let mut fx = recovered_after(20 * MINUTE);
        fx.drill = fx.drill.with_rto_target(15 * MINUTE);
        assert_eq!(fx.drill.targets().rto, 15 * MINUTE);
        assert!(!fx.drill.verdict().passed());
    }

    #[test]
    fn rpo_is_incident_minus_the_recovery_point() {
        let mut fx = fixture("pitr", Scenario::DbCorruptionFull);
        fx.clock.advance(40 * MINUTE);
        fx.drill.incident("corrupted every table");
        fx.drill
            .recovery_point(RecoveryPoint::new(RecoverySource::ReplayEnd, t0() + 10 * MINUTE));
        fx.clock.advance(HOUR);
        fx.drill.verified();
        assert_eq!(fx.drill.rpo(), Some(30 * MINUTE));

        fx.drill = fx.drill.with_rpo_target(15 * MINUTE);
        assert_eq!(
            fx.drill.verdict().failures,
            ["RPO 30m 00.0s exceeds target 15m 00.0s (DB corruption (full))"]
        );
        fx.drill = fx.drill.with_rpo_target(HOUR);
        assert!(fx.drill.verdict().passed());
    }

    #[test]
    fn rpo_saturates_at_zero_when_surviving_data_is_newer_than_the_incident() {
        let mut fx = fixture("failover", Scenario::DataCenterFailure);
        fx.drill.incident("region lost");
        fx.drill.recovery_point(RecoveryPoint::new(
            RecoverySource::LastReplayedCommit,
            t0() + 5 * MINUTE,
        ));
        assert_eq!(fx.drill.rpo(), Some(Duration::ZERO));
    }

    /// Issue 11 row 12: a staging backup taken 2 s before the incident, the
    /// database quiet for 19 minutes before it. Nothing was lost: RPO 2 s,
    /// not the newest row's age.
    #[test]
    fn rpo_of_a_restore_is_the_backups_snapshot_not_the_newest_rows_age() {
        let mut fx = fixture("full_restore", Scenario::CompleteInfrastructureLoss);
        fx.clock.advance(HOUR);
        let incident = fx.drill.incident("primary declared lost");
        let newest_row = incident - chrono::Duration::milliseconds(19 * 60_000 + 18_900);
        let manifest: crate::store::manifest::BackupManifest = serde_json::from_value(serde_json::json!({
            "format": 1,
            "stamp": "20260501T085958.000Z",
            "snapshot_at": incident - chrono::Duration::seconds(2),
            "database": "immoflowme",
            "dump": { "key": "daily/20260501T085958.000Z/immoflowme.dump", "bytes": 1, "sha256": "00" },
            "server_version": "15",
            "pg_dump_version": "15",
            "tables": { "audit_logs": { "rows": 3, "newest_created_at": newest_row } },
        }))
        .expect("a manifest");
        assert_eq!(manifest.newest_data(), Some(newest_row));
        fx.drill.recovery_point(RecoveryPoint::snapshot(&manifest));
        fx.drill.rows_lost(0);
        let summary = fx.drill.summary();
        assert_eq!(summary.rpo, Some(Duration::from_secs(2)));
        assert_eq!(summary.recovery_point.map(|p| p.source), Some(RecoverySource::Snapshot));
        assert_eq!(summary.rows_lost, Some(0));
    }

    #[test]
    fn the_latest_evidence_is_the_recovery_point() {
        let mut fx = fixture("pitr", Scenario::DbCorruptionFull);
        fx.clock.advance(HOUR);
        fx.drill.incident("corrupted every table");
        let canary = RecoveryPoint::new(RecoverySource::Canary, t0() + 50 * MINUTE);
        fx.drill.recovery_point(canary);
        fx.drill
            .recovery_point(RecoveryPoint::new(RecoverySource::ReplayEnd, t0() + 40 * MINUTE));
        assert_eq!(fx.drill.summary().recovery_point, Some(canary));
        assert_eq!(fx.drill.rpo(), Some(10 * MINUTE));
    }

    #[test]
    fn rpo_target_without_a_measured_rpo_fails() {
        let mut fx = recovered_after(MINUTE);
        fx.drill = fx.drill.with_rpo_target(5 * MINUTE);
        assert_eq!(fx.drill.rpo(), None);
        let failures = fx.drill.verdict().failures;
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(failures[0].contains("no RPO was measured"), "{failures:?}");
    }

    #[test]
    fn missing_incident_and_verification_fail_the_verdict() {
        let fx = fixture("nothing_happened", Scenario::SinglePodCrash);
        let failures = fx.drill.verdict().failures;
        assert_eq!(fx.drill.rto(), None);
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(failures[0].contains("no incident was recorded"), "{failures:?}");
        assert!(failures[1].contains("never verified healthy"), "{failures:?}");
    }

    #[test]
    fn missing_verification_fails_the_verdict() {
        let mut fx = fixture("never_recovered", Scenario::SinglePodCrash);
        fx.drill.incident("killed the pod");
        assert_eq!(fx.drill.rto(), None);
        let failures = fx.drill.verdict().failures;
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(failures[0].contains("never verified healthy"), "{failures:?}");
    }

    #[tokio::test]
    async fn phase_times_its_future_and_passes_its_value_through() {
        let mut fx = fixture("phases", Scenario::SinglePodCrash);
        let clock = fx.clock.clone();
        let rows = fx
            .drill
            .phase("seed", async {
                clock.advance(Duration::from_secs(90));
                Ok::<_, String>(48_213)
            })
            .await;
        assert_eq!(rows, Ok(48_213));
        let phase = &fx.drill.summary().phases[0];
        assert_eq!(
            (phase.name.as_str(), phase.duration, phase.started_at),
            ("seed", Duration::from_secs(90), t0())
        );
        assert!(phase.passed());
    }

    #[tokio::test]
    async fn failed_phase_fails_the_verdict() {
        let mut fx = recovered_after(MINUTE);
        let result = fx
            .drill
            .phase("restore", async { Err::<(), _>("bucket unreachable") })
            .await;
        assert_eq!(result, Err("bucket unreachable"));
        assert_eq!(
            fx.drill.verdict().failures,
            ["phase `restore` failed: bucket unreachable"]
        );
    }

    #[test]
    fn failed_check_fails_the_verdict() {
        let mut fx = recovered_after(MINUTE);
        fx.drill.check("row counts match manifest", true, "7 tables");
        fx.drill.check("4.1 broken links = 0", false, "3 broken links");
        assert_eq!(
            fx.drill.verdict().failures,
            ["check `4.1 broken links = 0` failed: 3 broken links"]
        );
    }

    #[test]
    #[should_panic(expected = "incident recorded twice")]
    fn second_incident_panics() {
        let mut fx = fixture("twice", Scenario::SinglePodCrash);
        fx.drill.incident("first");
        fx.drill.incident("second");
    }

    #[test]
    #[should_panic(expected = "verified before any incident")]
    fn verified_before_incident_panics() {
        fixture("early", Scenario::SinglePodCrash).drill.verified();
    }

    #[test]
    #[should_panic(expected = "set by the harness itself")]
    fn harness_property_names_are_refused() {
        fixture("shadow", Scenario::SinglePodCrash)
            .drill
            .property("rto_seconds", 1);
    }

    #[test]
    fn timeline_records_marks_on_both_clocks() {
        let mut fx = fixture("timeline", Scenario::SinglePodCrash);
        fx.drill.event("seeded");
        fx.clock.advance(MINUTE);
        fx.drill.incident("killed the pod");
        fx.drill
            .recovery_point(RecoveryPoint::new(RecoverySource::Canary, t0()));
        fx.clock.advance(MINUTE);
        fx.drill.verified();
        let timeline = fx.drill.summary().timeline;
        let lines: Vec<String> = timeline.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "2026-05-01T08:00:00.000Z          +0.0s  seeded",
                "2026-05-01T08:01:00.000Z      +1m 00.0s  incident: killed the pod",
                "2026-05-01T08:01:00.000Z      +1m 00.0s  recovered data complete up to 2026-05-01T08:00:00.000Z (the newest surviving canary)",
                "2026-05-01T08:02:00.000Z      +2m 00.0s  verified healthy",
            ]
        );
    }

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars.iter().map(|&(k, v)| (k.to_owned(), v.to_owned())).collect();
        move |name| vars.get(name).cloned()
    }

    #[test]
    fn targets_default_to_the_matrix() {
        let targets = Targets::from_lookup(Scenario::DbCorruptionSingleTable, lookup(&[])).unwrap();
        assert_eq!(
            targets,
            Targets {
                rto: 30 * MINUTE,
                rpo: None
            }
        );
    }

    #[test]
    fn per_scenario_overrides_beat_global_ones() {
        let env = [
            ("DRILL_RTO_TARGET", "90s"),
            ("DRILL_RPO_TARGET", "1h"),
            ("DRILL_RTO_TARGET_COMPLETE_INFRASTRUCTURE_LOSS", "1h30m"),
            ("DRILL_RPO_TARGET_COMPLETE_INFRASTRUCTURE_LOSS", "5m"),
        ];
        let loss = Targets::from_lookup(Scenario::CompleteInfrastructureLoss, lookup(&env)).unwrap();
        assert_eq!(
            loss,
            Targets {
                rto: 90 * MINUTE,
                rpo: Some(5 * MINUTE)
            }
        );
        let crash = Targets::from_lookup(Scenario::SinglePodCrash, lookup(&env)).unwrap();
        assert_eq!(
            crash,
            Targets {
                rto: Duration::from_secs(90),
                rpo: Some(HOUR)
            }
        );
    }

    #[test]
    fn empty_overrides_count_as_unset() {
        let env = [("DRILL_RTO_TARGET", ""), ("DRILL_RPO_TARGET", "  ")];
        let targets = Targets::from_lookup(Scenario::SinglePodCrash, lookup(&env)).unwrap();
        assert_eq!(targets, Targets::for_scenario(Scenario::SinglePodCrash));
    }

    #[test]
    fn bad_override_names_variable_value_and_accepted_form() {
        let env = [("DRILL_RTO_TARGET_DATA_CENTER_FAILURE", "4 hours")];
        let error = Targets::from_lookup(Scenario::DataCenterFailure, lookup(&env)).unwrap_err();
        assert!(
            matches!(&error, DrillError::InvalidTarget { variable, .. } if variable == "DRILL_RTO_TARGET_DATA_CENTER_FAILURE")
        );
        let source = std::error::Error::source(&error)
            .expect("error has a source")
            .to_string();
        let chain = format!("{error}: {source}");
        for needle in ["DRILL_RTO_TARGET_DATA_CENTER_FAILURE", "`4 hours`", "`1h30m`"] {
            assert!(chain.contains(needle), "{needle:?} missing from {chain:?}");
        }
    }

    #[test]
    fn parse_duration_accepts_the_documented_forms() {
        let cases = [
            ("90s", 90),
            ("15m", 15 * 60),
            ("2h", 7200),
            ("1h30m", 5400),
            ("1h30m15s", 5415),
            ("1h15s", 3615),
            ("0s", 0),
            (" 5m\n", 300),
        ];
        for (input, seconds) in cases {
            assert_eq!(parse_duration(input), Ok(Duration::from_secs(seconds)), "{input:?}");
        }
    }

    #[test]
    fn parse_duration_rejects_everything_else() {
        let cases = [
            ("", "it is empty"),
            ("90", "the last number has no unit"),
            ("1h30", "the last number has no unit"),
            ("h", "expected a number, found `h`"),
            ("-5m", "expected a number, found `-`"),
            ("5ms", "expected a number, found `s`"),
            ("1.5h", "unknown unit `.`"),
            ("1h 30m", "expected a number, found ` `"),
            ("2H", "unknown unit `H`"),
            ("30m1h", "largest first"),
            ("1h1h", "largest first"),
            ("99999999999999999999s", "too large"),
            ("5124095576030432h", "too large"),
        ];
        for (input, problem) in cases {
            let error = parse_duration(input).expect_err(input).to_string();
            assert!(error.contains(problem), "{input:?}: {error}");
            assert!(error.contains(&format!("`{input}`")), "{input:?}: {error}");
        }
    }

    #[test]
    fn format_duration_is_readable_and_rounds_to_tenths() {
        let cases = [
            (Duration::ZERO, "0.0s"),
            (Duration::from_millis(4_240), "4.2s"),
            (Duration::from_millis(4_250), "4.3s"),
            (15 * MINUTE, "15m 00.0s"),
            (Duration::from_millis(59_960), "1m 00.0s"),
            (Duration::from_millis(3_723_400), "1h 02m 03.4s"),
            (5 * HOUR, "5h 00m 00.0s"),
            (100 * HOUR, "100h 00m 00.0s"),
        ];
        for (duration, text) in cases {
            assert_eq!(format_duration(duration), text, "{duration:?}");
        }
    }

    #[test]
    fn scenarios_follow_the_decision_matrix() {
        let rows: Vec<_> = Scenario::all().iter().map(|s| (s.title(), s.default_rto())).collect();
        assert_eq!(
            rows,
            [
                ("Single pod crash", 2 * MINUTE),
                ("All pods unhealthy", 10 * MINUTE),
                ("DB connection exhaustion", 15 * MINUTE),
                ("DB corruption (single table)", 30 * MINUTE),
                ("DB corruption (full)", 2 * HOUR),
                ("Complete infrastructure loss", 4 * HOUR),
                ("Data center failure", HOUR),
            ]
        );
        assert_eq!(Scenario::DbConnectionExhaustion.action(), "Kill queries + restart");
        assert_eq!(
            Scenario::DbCorruptionSingleTable.env_suffix(),
            "DB_CORRUPTION_SINGLE_TABLE"
        );
    }

    #[test]
    fn scenario_serde_form_is_its_slug() {
        for &scenario in Scenario::all() {
            let json = serde_json::to_string(&scenario).unwrap();
            assert_eq!(json, format!("\"{}\"", scenario.slug()));
            assert_eq!(serde_json::from_str::<Scenario>(&json).unwrap(), scenario);
        }
    }

    #[test]
    fn report_dir_precedence() {
        let dir = |vars: &[(&str, &str)]| {
            let vars = lookup(vars);
            report_dir_from(|name| vars(name).map(OsString::from))
        };
        assert_eq!(dir(&[]), PathBuf::from("target/drill-reports"));
        assert_eq!(
            dir(&[("CARGO_TARGET_DIR", "/t")]),
            PathBuf::from("target/drill-reports")
        );
        assert_eq!(
            dir(&[("CARGO_TARGET_DIR", "/t"), ("DRILL_REPORT_DIR", "/r")]),
            PathBuf::from("/r")
        );
        assert_eq!(dir(&[("DRILL_REPORT_DIR", "")]), PathBuf::from("target/drill-reports"));
    }

    #[test]
    fn finish_writes_junit_named_after_the_drill() {
        let mut fx = recovered_after(MINUTE);
        fx.drill.property("dataset_rows", 48_213);
        let summary = fx.drill.finish().unwrap();
        let path = fx.reports.path().join("full_restore.xml");
        assert_eq!(summary.junit_path.as_deref(), Some(path.as_path()));
        let xml = std::fs::read_to_string(&path).unwrap();
        assert!(xml.contains(r#"<testsuite name="full_restore""#), "{xml}");
        summary.assert_passed();

        let json = serde_json::to_string(&summary).unwrap();
        assert_eq!(serde_json::from_str::<DrillSummary>(&json).unwrap(), summary);
    }

    #[test]
    fn an_unwritable_report_still_appends_the_history_record() {
        let mut fx = recovered_after(MINUTE);
        // A file where the report directory should be.
        let blocker = fx.reports.path().join("reports");
        std::fs::write(&blocker, "not a directory").unwrap();
        let history_dir = fx.reports.path().join("history");
        fx.drill = fx.drill.with_report_dir(&blocker);
        let error = fx.drill.finish().unwrap_err();
        assert!(matches!(error, DrillError::WriteReport { .. }), "{error}");
        let month = crate::report::history::Month::of(t0());
        let history = std::fs::read_to_string(crate::report::history::month_file(&history_dir, month)).unwrap();
        assert_eq!(history.lines().count(), 1, "{history}");
        assert!(history.contains(r#""drill":"full_restore""#), "{history}");
    }

    #[test]
    fn drill_names_cannot_escape_the_report_dir() {
        let fx = fixture("../drills::restore/full", Scenario::SinglePodCrash);
        let path = fx.drill.junit_path();
        assert_eq!(path, fx.reports.path().join(".._drills__restore_full.xml"));
    }

    #[test]
    fn dropping_an_unfinished_drill_writes_an_aborted_report() {
        let Fixture { drill, reports, .. } = recovered_after(MINUTE);
        drop(drill);
        let xml = std::fs::read_to_string(reports.path().join("full_restore.xml")).unwrap();
        assert!(
            xml.contains("the drill returned without calling `Drill::finish`"),
            "{xml}"
        );
    }

    #[test]
    fn assert_passed_lists_every_failure_and_the_report() {
        let mut fx = fixture("doomed", Scenario::SinglePodCrash);
        fx.drill.check("smoke test", false, "HTTP 503");
        let summary = fx.drill.finish().unwrap();
        let panic = catch_unwind(AssertUnwindSafe(|| summary.assert_passed())).unwrap_err();
        let message = panic.downcast_ref::<String>().expect("formatted panic message");
        for needle in [
            "drill `doomed` (Single pod crash) failed:",
            "no incident was recorded",
            "never verified healthy",
            "check `smoke test` failed: HTTP 503",
            "doomed.xml",
        ] {
            assert!(message.contains(needle), "{needle:?} missing from {message}");
        }
    }
}
