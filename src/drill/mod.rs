//! The drill harness (layer 4): phases, timeline, RTO/RPO and the verdict.
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
//! use drillbook::drill::Drill;
//! use drillbook::playbook::Scenario;
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
//! # What this room owns
//!
//! - this module: the harness [`Drill`], its errors, and [`StepContext`]
//!   (a drill's `?` names the step that failed);
//! - [`record`]: what a drill records and the judged [`DrillSummary`];
//! - [`targets`]: the RTO/RPO [`Targets`] and their environment layering;
//! - [`moved`]: what a data-moving phase moved ([`Moved`]) and the size of
//!   the dataset it moved it for ([`DatasetSize`]), for RTO projections;
//! - [`outputs`]: the [`Outputs`] sink a finished drill's record goes to.
//!
//! Durations and clocks are [`crate::time`]'s, the scenarios
//! [`crate::playbook`]'s.
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
//! [`ManualClock`](crate::time::ManualClock) in tests that need four hours
//! to pass instantly.
//!
//! # Failing
//!
//! A drill fails, it does not panic: its story returns
//! `Result<(), DrillError>`, every fallible step `?`-ed with
//! [`StepContext::step`] (or run as a [`Drill::step`]), and
//! [`Drill::conclude`] ends it: finished and judged on `Ok`, handed to the
//! outputs as aborted *with the cause's whole chain* on `Err`, which it then
//! returns. [`error_chain`] prints such an error with its causes.
//!
//! # Reports
//!
//! [`Drill::finish`] hands the judged record to the drill's [`Outputs`]; the
//! built-in drills' (`report::DrillReports`) write JUnit to
//! `<report dir>/<name>.xml` (`report::report_dir`) and append the history
//! record. A drill
//! that returns early (`?` on a failed phase) or panics never reaches
//! `finish`, so dropping an unfinished [`Drill`] hands the record over
//! anyway, marked as aborted: CI then shows a failed drill instead of a
//! missing file. A drill without outputs writes nothing.

pub mod moved;
pub mod outputs;
pub mod record;
pub mod targets;

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::Instrument;

pub use self::moved::{DatasetSize, Moved, Quantity};
pub use self::outputs::Outputs;
pub use self::record::{Check, DrillSummary, Incident, Phase, RecoveryPoint, RecoverySource, TimelineEvent, Verdict};
pub use self::targets::Targets;
use crate::playbook::Scenario;
use crate::time::{Clock, ParseDurationError, SystemClock, format_duration, timestamp};

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
    /// A step of the drill failed, so the drill stopped there: `step` says
    /// what it was doing, `source` why it failed.
    #[error("step `{step}` failed")]
    Step {
        step: String,
        #[source]
        source: BoxError,
    },
}

/// Any error a step can fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

impl DrillError {
    /// A failed step: what the drill was doing, and why it failed.
    pub fn step(step: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Step {
            step: step.into(),
            source: source.into(),
        }
    }
}

/// `?` with the step it ends: `conn.execute(..).await.step("create the
/// application role")?` turns any error into [`DrillError::Step`], and a
/// `None` into one whose cause says nothing was there.
pub trait StepContext<T> {
    /// # Errors
    /// [`DrillError::Step`] naming `step`, with the error as its source.
    fn step(self, step: impl Into<String>) -> Result<T>;
}

impl<T, E: Into<BoxError>> StepContext<T> for std::result::Result<T, E> {
    fn step(self, step: impl Into<String>) -> Result<T> {
        self.map_err(|source| DrillError::step(step, source))
    }
}

impl<T> StepContext<T> for Option<T> {
    fn step(self, step: impl Into<String>) -> Result<T> {
        self.ok_or_else(|| DrillError::step(step, "there was nothing to find"))
    }
}

/// `error` and every source under it, `: `-separated, as one line. A
/// cause whose text the line already ends with (an error that prints its
/// source, as sqlx's do) is not repeated.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Property the report reads the backend from (`embedded`, `containers`, `staging`).
pub const BACKEND_PROPERTY: &str = "backend";
/// Property the report reads the dataset size from (`small`, `medium`, `large`).
pub const DATASET_PROPERTY: &str = "dataset_profile";
/// Property the report reads the PostgreSQL server version from.
pub const POSTGRES_VERSION_PROPERTY: &str = "postgres_version";

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
    "dataset_database_bytes",
    "dataset_dump_bytes",
    "throughput_recorded",
];

/// A reading of both clocks at one moment.
#[derive(Debug, Clone, Copy)]
struct Mark {
    monotonic: Duration,
    wall: DateTime<Utc>,
}

/// One drill run: records phases, marks, checks and properties, then judges
/// them and hands the record to its [`Outputs`]. See the [module docs](self).
#[derive(Debug)]
pub struct Drill {
    name: String,
    scenario: Scenario,
    targets: Targets,
    clock: Arc<dyn Clock>,
    /// Where the finished record goes; `None` writes nothing.
    outputs: Option<Box<dyn Outputs>>,
    started: Mark,
    incident: Option<(Mark, String)>,
    verified: Option<Mark>,
    recovery_point: Option<RecoveryPoint>,
    rows_lost: Option<u64>,
    dataset: Option<DatasetSize>,
    phases: Vec<Phase>,
    checks: Vec<Check>,
    properties: BTreeMap<String, String>,
    timeline: Vec<TimelineEvent>,
    finished: bool,
    /// Why the drill stopped early ([`Self::conclude`] with an error): the
    /// aborted record says this instead of "returned without finish".
    stopped_by: Option<String>,
}

impl Drill {
    /// A drill on the system clock with the matrix's targets and the
    /// environment's overrides. It writes nothing until given
    /// [`Outputs`] ([`with_outputs`](Self::with_outputs)).
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
            outputs: None,
            incident: None,
            verified: None,
            recovery_point: None,
            rows_lost: None,
            dataset: None,
            phases: Vec::new(),
            checks: Vec::new(),
            properties: BTreeMap::new(),
            timeline: Vec::new(),
            finished: false,
            stopped_by: None,
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

    /// Hands the drill's record to `outputs` when it finishes (or is
    /// dropped unfinished), replacing any earlier sink.
    pub fn with_outputs(mut self, outputs: impl Outputs) -> Self {
        self.outputs = Some(Box::new(outputs));
        self
    }

    /// The installed sink, if it is a `T`: for whoever installed it to
    /// adjust it later.
    pub fn outputs_mut<T: Outputs>(&mut self) -> Option<&mut T> {
        let outputs: &mut dyn Any = self.outputs.as_deref_mut()?;
        outputs.downcast_mut()
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
    /// dropping the drill still hands an aborted record to its outputs.
    ///
    /// A phase that moves data (restores, downloads, replays, copies) is a
    /// [`data_phase`](Self::data_phase) instead, so the RTO can be projected
    /// to a larger database.
    // Not `async` itself (nor `data_phase`): each extra layer of future
    // nesting counts against the compiler's query depth in the drills.
    pub fn phase<T, E: fmt::Display>(
        &mut self,
        name: &str,
        fut: impl Future<Output = Result<T, E>>,
    ) -> impl Future<Output = Result<T, E>> {
        self.timed(name, fut, |_| Vec::new())
    }

    /// A [`phase`](Self::phase) that moves data: `moved` reads what it moved
    /// out of its result (the library's own figures: a dump's bytes, the WAL
    /// bytes replayed, the rows restored), so the record carries the
    /// phase's throughput and the report can project the RTO to another
    /// size. A failed phase records nothing moved.
    ///
    /// ```no_run
    /// # use drillbook::drill::{Drill, Moved};
    /// # async fn restore() -> Result<u64, String> { Ok(1) }
    /// # async fn story(drill: &mut Drill) -> Result<(), String> {
    /// let dump_bytes = drill
    ///     .data_phase("restore the dump", restore(), |&bytes| [Moved::bytes(bytes)])
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn data_phase<T, E, M>(
        &mut self,
        name: &str,
        fut: impl Future<Output = Result<T, E>>,
        moved: impl FnOnce(&T) -> M,
    ) -> impl Future<Output = Result<T, E>>
    where
        E: fmt::Display,
        M: IntoIterator<Item = Moved>,
    {
        self.timed(name, fut, |value| moved(value).into_iter().collect())
    }

    async fn timed<T, E: fmt::Display>(
        &mut self,
        name: &str,
        fut: impl Future<Output = Result<T, E>>,
        moved: impl FnOnce(&T) -> Vec<Moved>,
    ) -> Result<T, E> {
        let started = self.now();
        self.record(started, format!("phase `{name}` started"), false);
        let span = tracing::info_span!("phase", drill = %self.name, phase = name);
        let result = fut.instrument(span).await;
        let ended = self.now();
        let duration = ended.monotonic.saturating_sub(started.monotonic);
        // `{:#}` so an anyhow error keeps its chain of causes.
        let error = result.as_ref().err().map(|error| format!("{error:#}"));
        let moved = result.as_ref().map_or_else(|_| Vec::new(), moved);
        let message = match &error {
            None => format!(
                "phase `{name}` finished in {}{}",
                format_duration(duration),
                throughput_text(&moved, duration)
            ),
            Some(error) => format!("phase `{name}` failed after {}: {error}", format_duration(duration)),
        };
        self.record(ended, message, error.is_some());
        self.phases.push(Phase {
            name: name.to_owned(),
            started_at: started.wall,
            duration,
            error,
            moved,
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
                timestamp(mark.wall)
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
            timestamp(point.at),
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

    /// Records the backend the drill runs on, for the report's backend column.
    pub fn set_backend(&mut self, backend: crate::env::Backend) {
        self.property(BACKEND_PROPERTY, backend.name());
    }

    /// Records the size of the dataset the drill seeded, for the report.
    pub fn set_dataset_profile(&mut self, profile: crate::fixtures::Profile) {
        self.property(DATASET_PROPERTY, profile);
    }

    /// Records the PostgreSQL server version (`SHOW server_version`) the
    /// drill ran against, for the report.
    pub fn set_postgres_version(&mut self, version: &str) {
        self.property(POSTGRES_VERSION_PROPERTY, version);
    }

    /// Records that the incident touched no data (a pod, a connection
    /// slot, a route): the recovered data is complete up to the incident,
    /// RPO 0, no rows lost. Call after [`Self::incident`].
    ///
    /// # Panics
    ///
    /// If no incident was recorded yet: there is nothing to measure from.
    #[track_caller]
    pub fn nothing_lost(&mut self) {
        let Some((mark, _)) = &self.incident else {
            panic!(
                "drill `{}`: nothing_lost before any incident; call `incident` first",
                self.name
            );
        };
        let at = mark.wall;
        self.recovery_point(RecoveryPoint::new(RecoverySource::NothingLost, at));
        self.rows_lost(0);
    }

    /// A [`phase`](Self::phase) the drill cannot go on without: its error
    /// becomes [`DrillError::Step`] named after the phase, for `?`.
    ///
    /// # Errors
    ///
    /// [`DrillError::Step`] with the phase's error as its source.
    pub async fn step<T, E>(&mut self, name: &str, fut: impl Future<Output = Result<T, E>>) -> Result<T>
    where
        E: fmt::Display + Into<BoxError>,
    {
        self.timed(name, fut, |_| Vec::new()).await.step(name)
    }

    /// A [`data_phase`](Self::data_phase) the drill cannot go on without, as
    /// [`step`](Self::step) is to [`phase`](Self::phase).
    ///
    /// # Errors
    ///
    /// [`DrillError::Step`] with the phase's error as its source.
    pub async fn data_step<T, E, M>(
        &mut self,
        name: &str,
        fut: impl Future<Output = Result<T, E>>,
        moved: impl FnOnce(&T) -> M,
    ) -> Result<T>
    where
        E: fmt::Display + Into<BoxError>,
        M: IntoIterator<Item = Moved>,
    {
        self.timed(name, fut, |value| moved(value).into_iter().collect())
            .await
            .step(name)
    }

    /// Records the size of the dataset the drill recovered (measured after
    /// recovery, outside the RTO window): what its data-moving phases scale
    /// with when the RTO is projected to another size.
    pub fn dataset_size(&mut self, size: DatasetSize) {
        let now = self.now();
        let dump = size
            .dump_bytes
            .map(|bytes| format!(", restored from a {} dump", moved::format_bytes(bytes as f64)))
            .unwrap_or_default();
        self.record(
            now,
            format!(
                "dataset: database of {}{dump}",
                moved::format_bytes(size.database_bytes as f64)
            ),
            false,
        );
        self.dataset = Some(size);
    }

    /// Ends a drill whose story returned `outcome`: on `Ok`,
    /// [`finish`](Self::finish)es it; on `Err`, hands the record to the
    /// outputs as aborted, the error's whole chain as the reason, and
    /// returns the error.
    ///
    /// # Errors
    ///
    /// The story's error, or [`DrillError::WriteReport`] from `finish`.
    pub fn conclude(mut self, outcome: Result<()>) -> Result<DrillSummary> {
        match outcome {
            Ok(()) => self.finish(),
            Err(error) => {
                self.stopped_by = Some(format!("the drill stopped: {}", error_chain(&error)));
                // Dropping the unfinished drill writes the aborted record.
                drop(self);
                Err(error)
            }
        }
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
            dataset: self.dataset,
            aborted: None,
            junit_path: None,
        };
        summary.verdict = summary.judge();
        summary
    }

    /// Judges the drill and hands the record to its [`Outputs`] (the
    /// built-in drills': the JUnit report and the history record). Call
    /// [`DrillSummary::assert_passed`] on the result; `finish` itself
    /// succeeds for a failed drill.
    ///
    /// # Errors
    ///
    /// [`DrillError::WriteReport`] if the outputs cannot write the report.
    pub fn finish(mut self) -> Result<DrillSummary> {
        self.finished = true;
        let mut summary = self.summary();
        if let Some(outputs) = self.outputs.as_mut() {
            summary.junit_path = outputs.finished(&summary)?;
        }
        let report = summary
            .junit_path
            .as_deref()
            .map_or_else(|| "not written".to_owned(), |path| path.display().to_string());
        if summary.verdict.passed() {
            tracing::info!(drill = %self.name, %report, "drill passed");
        } else {
            tracing::warn!(drill = %self.name, %report, "drill {}", summary.verdict);
        }
        Ok(summary)
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

/// `: moved 86.0 MB (45.2 MB/s)`, each amount with its rate; empty when
/// nothing was moved.
fn throughput_text(moved: &[Moved], phase: Duration) -> String {
    let parts: Vec<String> = moved
        .iter()
        .map(|m| {
            let seconds = m.seconds(phase);
            let amount = moved::format_amount(m.quantity, m.amount as f64);
            if seconds > 0.0 {
                format!(
                    "{amount} ({})",
                    moved::format_rate(m.quantity, m.amount as f64 / seconds)
                )
            } else {
                amount
            }
        })
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(": moved {}", parts.join(", "))
    }
}

fn now(clock: &dyn Clock) -> Mark {
    Mark {
        monotonic: clock.monotonic(),
        wall: clock.wall(),
    }
}

/// The fallback for drills that never reach [`Drill::finish`]: hand the
/// record to the outputs anyway, marked aborted, so the failure is visible
/// in CI.
impl Drop for Drill {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let reason = match self.stopped_by.take() {
            Some(cause) => cause,
            None if std::thread::panicking() => "the drill panicked without calling `Drill::finish`".to_owned(),
            None => "the drill returned without calling `Drill::finish`".to_owned(),
        };
        let at = self.now();
        self.record(at, reason.clone(), true);
        let mut summary = self.summary();
        summary.aborted = Some(reason);
        summary.verdict = summary.judge();
        if let Some(outputs) = self.outputs.as_mut() {
            outputs.aborted(&summary);
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::time::ManualClock;

    /// 2026-05-01T08:00:00Z, where every test's manual clock starts.
    pub(crate) fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_777_622_400, 0).expect("valid timestamp")
    }

    /// A drill on a manual clock at [`t0`] with the matrix's targets and no
    /// outputs, and a temporary directory for tests that give it some.
    pub(crate) struct Fixture {
        // Declared first so it drops first: a fallback report its outputs
        // write must land before `reports` is deleted.
        pub(crate) drill: Drill,
        pub(crate) clock: ManualClock,
        pub(crate) reports: tempfile::TempDir,
    }

    pub(crate) fn fixture(name: &str, scenario: Scenario) -> Fixture {
        let clock = ManualClock::new(t0());
        let reports = tempfile::tempdir().expect("create temporary report dir");
        let drill =
            Drill::with_targets(name, scenario, Targets::for_scenario(scenario)).with_clock(Arc::new(clock.clone()));
        Fixture { drill, clock, reports }
    }
}

#[cfg(test)]
mod tests {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::sync::Mutex;

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
    async fn a_data_phase_records_what_it_moved_and_its_rate() {
        let mut fx = fixture("restore", Scenario::CompleteInfrastructureLoss);
        let clock = fx.clock.clone();
        let bytes = fx
            .drill
            .data_phase(
                "restore the dump",
                async {
                    clock.advance(Duration::from_secs(4));
                    Ok::<_, String>(86_400_000_u64)
                },
                |&bytes| [Moved::bytes(bytes), Moved::rows(48_213).within(Duration::from_secs(1))],
            )
            .await;
        assert_eq!(bytes, Ok(86_400_000));
        let failed = fx
            .drill
            .data_phase("replay", async { Err::<u64, _>("archive gap") }, |&n| {
                [Moved::wal_bytes(n)]
            })
            .await;
        assert!(failed.is_err());
        fx.drill.dataset_size(DatasetSize::new(345_600_000, Some(86_400_000)));
        let summary = fx.drill.summary();
        assert_eq!(
            summary.phases[0].moved,
            [
                Moved::bytes(86_400_000),
                Moved::rows(48_213).within(Duration::from_secs(1))
            ]
        );
        assert!(summary.phases[1].moved.is_empty(), "a failed phase moved nothing");
        assert_eq!(summary.dataset, Some(DatasetSize::new(345_600_000, Some(86_400_000))));
        let messages: Vec<&str> = summary.timeline.iter().map(|e| e.message.as_str()).collect();
        assert!(
            messages.contains(
                &"phase `restore the dump` finished in 4.0s: moved 86.4 MB (21.6 MB/s), 48,213 rows (48,213 rows/s)"
            ),
            "{messages:#?}"
        );
        assert!(
            messages.contains(&"dataset: database of 345.6 MB, restored from a 86.4 MB dump"),
            "{messages:#?}"
        );
        let json = serde_json::to_string(&summary).unwrap();
        assert_eq!(serde_json::from_str::<DrillSummary>(&json).unwrap(), summary);
    }

    /// A record from before throughput existed (no `moved`, no `dataset`) still reads.
    #[test]
    fn a_summary_without_throughput_still_reads() {
        let fx = recovered_after(MINUTE);
        let mut value = serde_json::to_value(fx.drill.summary()).unwrap();
        value.as_object_mut().unwrap().remove("dataset");
        let summary: DrillSummary = serde_json::from_value(value).unwrap();
        assert_eq!(summary.dataset, None);
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

    /// A sink that keeps what it was handed.
    #[derive(Debug, Default)]
    struct Kept(Arc<Mutex<Vec<DrillSummary>>>);

    impl Outputs for Kept {
        fn finished(&mut self, summary: &DrillSummary) -> Result<Option<PathBuf>> {
            self.0.lock().unwrap().push(summary.clone());
            Ok(Some(PathBuf::from(format!("{}.kept", summary.name))))
        }

        fn aborted(&mut self, summary: &DrillSummary) {
            self.0.lock().unwrap().push(summary.clone());
        }
    }

    #[test]
    fn finish_hands_the_judged_record_to_the_outputs() {
        let kept = Arc::default();
        let mut fx = recovered_after(MINUTE);
        fx.drill = fx.drill.with_outputs(Kept(Arc::clone(&kept)));
        let summary = fx.drill.finish().unwrap();
        assert_eq!(summary.junit_path, Some(PathBuf::from("full_restore.kept")));
        let kept = kept.lock().unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].verdict, summary.verdict);
        summary.assert_passed();

        let json = serde_json::to_string(&summary).unwrap();
        assert_eq!(serde_json::from_str::<DrillSummary>(&json).unwrap(), summary);
    }

    #[test]
    fn dropping_an_unfinished_drill_hands_over_an_aborted_record() {
        let kept = Arc::default();
        let mut fx = recovered_after(MINUTE);
        fx.drill = fx.drill.with_outputs(Kept(Arc::clone(&kept)));
        drop(fx.drill);
        let kept = kept.lock().unwrap();
        assert_eq!(kept.len(), 1);
        let reason = "the drill returned without calling `Drill::finish`";
        assert_eq!(kept[0].aborted.as_deref(), Some(reason));
        assert_eq!(kept[0].verdict.failures[0], reason);
        assert!(kept[0].timeline.last().is_some_and(|e| e.message == reason));
    }

    #[test]
    fn a_drill_stopped_by_an_error_hands_over_its_cause() {
        let kept = Arc::default();
        let mut fx = fixture("stopped", Scenario::SinglePodCrash);
        fx.drill = fx.drill.with_outputs(Kept(Arc::clone(&kept)));
        let outcome = Err(std::io::Error::other("connection refused")).step("seed fixture ledger");
        let error = fx.drill.conclude(outcome).unwrap_err();
        assert_eq!(
            error_chain(&error),
            "step `seed fixture ledger` failed: connection refused"
        );
        let kept = kept.lock().unwrap();
        assert_eq!(kept.len(), 1);
        let reason = "the drill stopped: step `seed fixture ledger` failed: connection refused";
        assert_eq!(kept[0].aborted.as_deref(), Some(reason));
        assert_eq!(kept[0].verdict.failures[0], reason);
    }

    #[test]
    fn error_chain_does_not_repeat_a_cause_its_error_already_prints() {
        #[derive(Debug, thiserror::Error)]
        #[error("error returned from database: {0}")]
        struct Prints(#[source] std::io::Error);
        let error = DrillError::step(
            "pick the rows",
            Prints(std::io::Error::other("relation does not exist")),
        );
        assert_eq!(
            error_chain(&error),
            "step `pick the rows` failed: error returned from database: relation does not exist"
        );
    }

    #[test]
    fn conclude_finishes_a_drill_whose_story_succeeded() {
        let kept = Arc::default();
        let mut fx = recovered_after(MINUTE);
        fx.drill = fx.drill.with_outputs(Kept(Arc::clone(&kept)));
        fx.drill.conclude(Ok(())).unwrap().assert_passed();
        assert_eq!(kept.lock().unwrap()[0].aborted, None);
    }

    #[tokio::test]
    async fn a_failed_step_is_a_failed_phase_and_a_step_error() {
        let mut fx = recovered_after(MINUTE);
        let error = fx
            .drill
            .step("restore", async {
                Err::<(), _>(std::io::Error::other("bucket unreachable"))
            })
            .await
            .unwrap_err();
        assert_eq!(error_chain(&error), "step `restore` failed: bucket unreachable");
        assert_eq!(
            fx.drill.verdict().failures,
            ["phase `restore` failed: bucket unreachable"]
        );
        let missing = None::<u8>.step("newest canary").unwrap_err();
        assert_eq!(
            error_chain(&missing),
            "step `newest canary` failed: there was nothing to find"
        );
    }

    #[test]
    fn nothing_lost_is_rpo_zero_and_no_rows() {
        let mut fx = fixture("pod", Scenario::SinglePodCrash);
        fx.clock.advance(MINUTE);
        fx.drill.incident("killed the pod");
        fx.clock.advance(MINUTE);
        fx.drill.nothing_lost();
        let summary = fx.drill.summary();
        assert_eq!(summary.rpo, Some(Duration::ZERO));
        assert_eq!(summary.rows_lost, Some(0));
        assert_eq!(
            summary.recovery_point.map(|p| p.source),
            Some(RecoverySource::NothingLost)
        );
    }

    #[test]
    fn typed_setters_fill_the_properties_the_report_reads() {
        let mut fx = fixture("typed", Scenario::SinglePodCrash);
        fx.drill.set_backend(crate::env::Backend::Containers);
        fx.drill.set_dataset_profile(crate::fixtures::Profile::Medium);
        fx.drill.set_postgres_version("16.4");
        let properties = fx.drill.summary().properties;
        assert_eq!(properties[BACKEND_PROPERTY], "containers");
        assert_eq!(properties[DATASET_PROPERTY], "medium");
        assert_eq!(properties[POSTGRES_VERSION_PROPERTY], "16.4");
    }

    #[test]
    fn without_outputs_a_drill_writes_nothing() {
        let fx = recovered_after(MINUTE);
        let summary = fx.drill.finish().unwrap();
        assert_eq!(summary.junit_path, None);
        let written: Vec<_> = std::fs::read_dir(fx.reports.path()).unwrap().collect();
        assert!(written.is_empty(), "{written:?}");
    }

    #[test]
    fn outputs_mut_finds_the_installed_sink_by_type() {
        let mut fx = fixture("sinks", Scenario::SinglePodCrash);
        assert!(fx.drill.outputs_mut::<Kept>().is_none());
        fx.drill = fx.drill.with_outputs(Kept::default());
        assert!(fx.drill.outputs_mut::<Kept>().is_some());
    }

    #[test]
    fn assert_passed_lists_every_failure() {
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
            "JUnit report: not written",
        ] {
            assert!(message.contains(needle), "{needle:?} missing from {message}");
        }
    }
}
