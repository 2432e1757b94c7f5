//! What a drill records, and the judged record it ends with: phases,
//! checks, the incident, the timeline, the recovery point, the verdict and
//! the [`DrillSummary`] that reports and history are made of.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Targets;
use super::moved::{DatasetSize, Moved};
use crate::playbook::Scenario;
use crate::time::{format_duration, timestamp};

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
    /// The incident touched no data (a pod, a connection slot, a route):
    /// complete up to the incident itself, RPO 0.
    NothingLost,
}

impl RecoverySource {
    /// The name in reports (`snapshot`, `replay_end`, ...).
    pub fn slug(self) -> &'static str {
        match self {
            Self::Snapshot => "snapshot",
            Self::ReplayEnd => "replay_end",
            Self::LastReplayedCommit => "last_replayed_commit",
            Self::Canary => "canary",
            Self::NothingLost => "nothing_lost",
        }
    }

    pub(super) fn describe(self) -> &'static str {
        match self {
            Self::Snapshot => "the backup's snapshot",
            Self::ReplayEnd => "the last commit WAL replay applied",
            Self::LastReplayedCommit => "the standby's last replayed commit",
            Self::Canary => "the newest surviving canary",
            Self::NothingLost => "the incident touched no data",
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
    /// What the phase moved, if it moves data (a restore, a download, WAL
    /// replay); empty for fixed-cost phases and in older records.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moved: Vec<Moved>,
}

impl Phase {
    pub fn passed(&self) -> bool {
        self.error.is_none()
    }

    /// Whether the phase recorded data it moved.
    pub fn moves_data(&self) -> bool {
        !self.moved.is_empty()
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
        let elapsed = format!("+{}", format_duration(self.elapsed));
        write!(f, "{} {elapsed:>14}  {}", timestamp(self.at), self.message)
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
    /// The size of the dataset the drill recovered, if it measured it
    /// ([`Drill::dataset_size`](super::Drill::dataset_size)); older records have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<DatasetSize>,
    /// Why the drill ended without [`Drill::finish`](super::Drill::finish), if it did.
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

    /// The verdict over everything recorded: an abort, RTO and RPO against
    /// their targets, then every failed phase and check.
    pub(super) fn judge(&self) -> Verdict {
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
