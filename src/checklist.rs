//! Playbook section 7, the post-recovery checklist, as machine-checked
//! items: each one passed, failed, or not applicable with the reason.
//!
//! [`Checklist::evaluate`] is pure: it judges [`Facts`] gathered by the
//! drill (the integrity report of the recovered database, the backups in
//! the store, the drill's timeline, whether a cluster / application is
//! configured). [`Checklist::attach`] records it on a [`Drill`]: passed and
//! failed items become checks (a failed item fails the drill), not
//! applicable items become properties and timeline lines with their reason,
//! so the report says what was not verified and why.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::drill::{Drill, TimelineEvent};
use crate::integrity::report::CheckStatus;
use crate::integrity::{CheckName, IntegrityReport};
use crate::store::{Store, layout};
use crate::time::timestamp;

/// The items of section 7, in its order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Item {
    CriticalTablesPresent,
    AuditChainIntact,
    RlsEnabled,
    UserAuthentication,
    BillingPipeline,
    PaymentProcessing,
    ScheduledJobs,
    MonitoringRestored,
    BackupScheduleResumed,
    IncidentTimelineDocumented,
    StakeholdersNotified,
}

impl Item {
    pub const ALL: [Self; 11] = [
        Self::CriticalTablesPresent,
        Self::AuditChainIntact,
        Self::RlsEnabled,
        Self::UserAuthentication,
        Self::BillingPipeline,
        Self::PaymentProcessing,
        Self::ScheduledJobs,
        Self::MonitoringRestored,
        Self::BackupScheduleResumed,
        Self::IncidentTimelineDocumented,
        Self::StakeholdersNotified,
    ];

    /// The playbook's wording.
    pub fn title(self) -> &'static str {
        match self {
            Self::CriticalTablesPresent => "All critical tables present and non-empty",
            Self::AuditChainIntact => "Audit log hash chain intact (0 broken links)",
            Self::RlsEnabled => "RLS enabled on all protected tables",
            Self::UserAuthentication => "User authentication working",
            Self::BillingPipeline => "Billing pipeline operational (test with small batch)",
            Self::PaymentProcessing => "Payment processing functional",
            Self::ScheduledJobs => "Scheduled jobs running",
            Self::MonitoringRestored => "Monitoring and alerting restored",
            Self::BackupScheduleResumed => "Backup schedule resumed",
            Self::IncidentTimelineDocumented => "Incident timeline documented",
            Self::StakeholdersNotified => "Stakeholders notified of recovery",
        }
    }
}

/// How an item ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "detail")]
pub enum Status {
    Passed(String),
    Failed(String),
    /// Not checked here; the reason says why.
    NotApplicable(String),
}

/// One judged item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChecklistItem {
    pub item: Item,
    pub title: &'static str,
    #[serde(flatten)]
    pub status: Status,
}

/// What the checklist is judged on.
#[derive(Debug, Clone, Default)]
pub struct Facts<'a> {
    /// The integrity suite's report on the recovered database.
    pub integrity: Option<&'a IntegrityReport>,
    /// When the recovery finished (verified healthy).
    pub recovered_at: Option<DateTime<Utc>>,
    /// Times of the backups in the store (see [`backup_times`]); `None`
    /// when no store was looked at.
    pub backups: Option<Vec<DateTime<Utc>>>,
    /// The drill's timeline.
    pub timeline: &'a [TimelineEvent],
    /// Base URL of the application, when one is configured (smoke checks).
    pub application: Option<ApplicationFacts>,
    /// Whether a Prometheus answered the error-rate query after the switch.
    pub monitoring: Option<Result<String, String>>,
}

/// Results of application checks made by the drill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplicationFacts {
    /// `/api/health` answered 2xx: the playbook's nearest machine check of
    /// "user authentication working".
    pub api_health: Result<String, String>,
}

/// The judged list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Checklist {
    pub items: Vec<ChecklistItem>,
}

impl Checklist {
    /// Judges every item of section 7 on `facts`.
    pub fn evaluate(facts: &Facts<'_>) -> Self {
        let items = Item::ALL
            .iter()
            .map(|&item| ChecklistItem {
                item,
                title: item.title(),
                status: judge(item, facts),
            })
            .collect();
        Self { items }
    }

    pub fn status(&self, item: Item) -> Option<&Status> {
        self.items.iter().find(|i| i.item == item).map(|i| &i.status)
    }

    /// Whether no item failed.
    pub fn passed(&self) -> bool {
        !self.items.iter().any(|i| matches!(i.status, Status::Failed(_)))
    }

    /// Records the list on `drill`: checks named `checklist: <title>` for
    /// passed and failed items; a property `checklist.<item>` =
    /// `not applicable: <reason>` and a timeline line for the others.
    pub fn attach(&self, drill: &mut Drill) {
        for item in &self.items {
            let name = format!("checklist: {}", item.title);
            match &item.status {
                Status::Passed(detail) => drill.check(&name, true, detail.clone()),
                Status::Failed(detail) => drill.check(&name, false, detail.clone()),
                Status::NotApplicable(reason) => {
                    let key = serde_json::to_value(item.item)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default();
                    drill.property(&format!("checklist.{key}"), format!("not applicable: {reason}"));
                    drill.event(format!("{name}: not applicable: {reason}"));
                }
            }
        }
    }
}

fn judge(item: Item, facts: &Facts<'_>) -> Status {
    match item {
        Item::CriticalTablesPresent => integrity_item(facts, &[CheckName::CriticalTablesPresent]),
        Item::AuditChainIntact => integrity_item(
            facts,
            &[
                CheckName::ChainLinks,
                CheckName::ChainContent,
                CheckName::ChainGenesis,
                CheckName::ChainNullHash,
                CheckName::ChainDuplicateHash,
                CheckName::ChainOrdering,
            ],
        ),
        Item::RlsEnabled => integrity_item(facts, &[CheckName::RlsEnabled]),
        Item::UserAuthentication => match &facts.application {
            None => Status::NotApplicable("no application configured (no base URL to check /api/health)".to_owned()),
            Some(app) => match &app.api_health {
                Ok(detail) => Status::Passed(detail.clone()),
                Err(error) => Status::Failed(error.clone()),
            },
        },
        Item::BillingPipeline => Status::NotApplicable(
            "needs the application's billing run API; no test batch endpoint is configured".to_owned(),
        ),
        Item::PaymentProcessing => {
            Status::NotApplicable("needs the payment provider's sandbox; not configured for drills".to_owned())
        }
        Item::ScheduledJobs => {
            Status::NotApplicable("no cluster configured (CronJobs are not visible here)".to_owned())
        }
        Item::MonitoringRestored => match &facts.monitoring {
            None => Status::NotApplicable("no Prometheus configured".to_owned()),
            Some(Ok(detail)) => Status::Passed(detail.clone()),
            Some(Err(error)) => Status::Failed(error.clone()),
        },
        Item::BackupScheduleResumed => backup_item(facts),
        Item::IncidentTimelineDocumented => {
            let incident = facts.timeline.iter().any(|e| e.message.starts_with("incident:"));
            match (facts.timeline.len(), incident) {
                (0, _) => Status::Failed("the drill's timeline is empty".to_owned()),
                (_, false) => Status::Failed(format!(
                    "the timeline has {} events but no incident",
                    facts.timeline.len()
                )),
                (events, true) => Status::Passed(format!("{events} timeline events, incident included")),
            }
        }
        Item::StakeholdersNotified => {
            Status::NotApplicable("a human step (section 1's escalation); not machine-checkable".to_owned())
        }
    }
}

fn integrity_item(facts: &Facts<'_>, checks: &[CheckName]) -> Status {
    let Some(report) = facts.integrity else {
        return Status::NotApplicable("the integrity suite was not run on the recovered database".to_owned());
    };
    let mut passed = Vec::new();
    for &check in checks {
        match report.outcome(check) {
            None => return Status::Failed(format!("`{check}` is missing from the integrity report")),
            Some(outcome) => match outcome.status {
                CheckStatus::Passed => passed.push(check.as_str()),
                CheckStatus::Failed => {
                    return Status::Failed(format!("`{check}`: {} findings", outcome.findings));
                }
                CheckStatus::NotRun => {
                    let reason = outcome.reason.clone().unwrap_or_default();
                    return Status::Failed(format!("`{check}` did not run: {reason}"));
                }
            },
        }
    }
    Status::Passed(format!("passed: {}", passed.join(", ")))
}

fn backup_item(facts: &Facts<'_>) -> Status {
    let Some(backups) = &facts.backups else {
        return Status::NotApplicable("no backup store was looked at".to_owned());
    };
    let Some(recovered_at) = facts.recovered_at else {
        return Status::Failed("the recovery time is unknown (the drill was not verified)".to_owned());
    };
    match backups.iter().max() {
        // Backup stamps keep milliseconds: a backup taken in the recovery's
        // own millisecond carries that millisecond's stamp.
        Some(&newest) if newest >= truncate_to_millis(recovered_at) => Status::Passed(format!(
            "newest backup {} is newer than the recovery at {}",
            timestamp(newest),
            timestamp(recovered_at)
        )),
        Some(&newest) => Status::Failed(format!(
            "newest backup {} is older than the recovery at {}: no backup since; resume the schedule",
            timestamp(newest),
            timestamp(recovered_at)
        )),
        None => Status::Failed("no backup in the store; resume the schedule".to_owned()),
    }
}

fn truncate_to_millis(at: DateTime<Utc>) -> DateTime<Utc> {
    let excess = at.timestamp_subsec_nanos() % 1_000_000;
    at - chrono::Duration::nanoseconds(i64::from(excess))
}

/// The times of the published backups in `store` (`daily/<stamp>/<db>.dump`:
/// a dump reaches `daily/` only complete and with its manifest).
///
/// # Errors
/// The listing fails.
pub async fn backup_times(store: &Store) -> crate::store::Result<Vec<DateTime<Utc>>> {
    let objects = store.list(layout::DAILY).await?;
    Ok(objects
        .iter()
        .filter_map(|o| layout::stamp_of_dump(&o.key))
        .filter_map(layout::parse_stamp)
        .collect())
}

/// Why [`record_after_recovery`] could not judge the list.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChecklistError {
    #[error("failed to run the integrity suite on the recovered database for the post-recovery checklist")]
    Integrity(#[source] crate::integrity::IntegrityError),
    #[error("failed to list the backups for the post-recovery checklist")]
    Store(#[source] crate::store::StoreError),
}

/// The post-recovery checklist as a drill records it: runs the integrity
/// suite on the recovered database, lists the backups in `store` when given
/// (a backup newer than the recovery shows the schedule resumed; `None`
/// leaves that item not applicable, as on staging, where drillbook never
/// writes backups), judges every item on the drill's own timeline, and
/// attaches the list to `drill`.
pub async fn record_after_recovery(
    drill: &mut Drill,
    recovered: &crate::pg::ConnInfo,
    store: Option<&Store>,
    recovered_at: DateTime<Utc>,
) -> Result<Checklist, ChecklistError> {
    let integrity = crate::integrity::run_suite(recovered, &crate::integrity::SuiteOptions::default())
        .await
        .map_err(ChecklistError::Integrity)?;
    let backups = match store {
        Some(store) => Some(backup_times(store).await.map_err(ChecklistError::Store)?),
        None => None,
    };
    let timeline = drill.summary().timeline;
    let checklist = Checklist::evaluate(&Facts {
        integrity: Some(&integrity),
        recovered_at: Some(recovered_at),
        backups,
        timeline: &timeline,
        ..Facts::default()
    });
    checklist.attach(drill);
    Ok(checklist)
}
