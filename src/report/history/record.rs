//! The versioned history record: one drill run as it is kept, the formats
//! it was kept in before, and how a judged [`DrillSummary`] becomes one.
//!
//! Every record carries `format` ([`FORMAT_VERSION`]). Readers upgrade older
//! formats ([`RecordV0`]: the pre-versioned shape without `format`) to the
//! current [`HistoryRecord`]; a record from a *newer* drillbook is refused
//! with a sentence that says to upgrade. New fields are only ever added, with
//! defaults, so a newer reader still reads every line this one wrote.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::drill::{DatasetSize, DrillSummary, Moved};
use crate::playbook::Scenario;

/// The record format this drillbook writes.
pub const FORMAT_VERSION: u32 = 1;

/// Property a drill sets to name its dataset size (`small`, `medium`,
/// `large`): [`Drill::set_dataset_profile`](crate::drill::Drill::set_dataset_profile).
pub const DATASET_PROPERTY: &str = crate::drill::DATASET_PROPERTY;

/// Properties a drill may set with the PostgreSQL server version, first
/// wins: [`Drill::set_postgres_version`](crate::drill::Drill::set_postgres_version)
/// sets the first; the others are read in older records.
pub const POSTGRES_VERSION_PROPERTIES: &[&str] =
    &[crate::drill::POSTGRES_VERSION_PROPERTY, "server_version", "pg_version"];

/// A timed step, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordPhase {
    pub name: String,
    pub started_at: Option<DateTime<Utc>>,
    pub duration_seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the phase moved, if it moves data; absent in older records.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moved: Vec<Moved>,
}

impl RecordPhase {
    /// Whether the phase recorded data it moved.
    pub fn moves_data(&self) -> bool {
        !self.moved.is_empty()
    }
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
    /// The size of the dataset the drill recovered, the yardstick of RTO
    /// projections; absent in older records and drills that move no data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<DatasetSize>,
    /// Whether the drillbook that wrote this record recorded what its
    /// data-moving phases moved; `false` in older records, whose phases say
    /// nothing either way, so their RTO cannot be projected.
    #[serde(default)]
    pub throughput_recorded: bool,
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
                    moved: phase.moved.clone(),
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
            dataset: summary.dataset,
            throughput_recorded: true,
        }
    }

    /// The scenario, if this drillbook knows its slug.
    pub fn scenario(&self) -> Option<Scenario> {
        Scenario::from_slug(&self.scenario)
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
        let action = Scenario::from_slug(&self.scenario)
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
            dataset: None,
            throughput_recorded: false,
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::time::Duration;

    use super::*;
    use crate::drill::testing::{fixture, t0};
    use crate::drill::{RecoveryPoint, RecoverySource};

    const MINUTE: Duration = Duration::from_mins(1);

    /// A judged complete-infrastructure-loss drill on the manual clock: one
    /// passing and one failing check, RTO 3 minutes, RPO 1 minute.
    pub(in crate::report::history) fn summary() -> DrillSummary {
        let mut fx = fixture("full_restore", Scenario::CompleteInfrastructureLoss);
        fx.drill.property("dataset_profile", "small");
        fx.drill.property("server_version", "17.2");
        fx.clock.advance(MINUTE);
        fx.drill.incident("dropped the ledger database");
        fx.drill
            .recovery_point(RecoveryPoint::new(RecoverySource::Snapshot, t0()));
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
    fn newer_formats_are_refused_with_an_upgrade_hint() {
        let problem = HistoryRecord::parse(r#"{"format": 9, "drill": "x"}"#).unwrap_err();
        assert!(
            problem.contains("newer drillbook") && problem.contains("upgrade"),
            "{problem}"
        );
    }
}
