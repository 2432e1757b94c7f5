//! The result of a suite run: what ran, what it found, what the playbook's
//! own 4.1 query would have missed; as JSON (stable) and as text for people.
//!
//! # JSON shape (stable; fields are only ever added)
//!
//! ```json
//! {
//!   "database": "immoflowme",
//!   "started_at": "2026-11-28T23:35:06.123456Z",
//!   "duration": 1.234,                       // seconds
//!   "anchor": { ...Anchor... } | null,       // the anchor verified against
//!   "audit_rows": 20000 | null,              // rows the chain verifier read
//!   "playbook_4_1_broken_links": 0 | null,   // the verbatim 4.1 query's count
//!   "checks": [ { "check": "chain_links", "playbook_section": "4.1" | null,
//!                 "status": "passed" | "failed" | "not_run", "reason": null | "...",
//!                 "findings": 0, "duration": 0.5 } ],
//!   "findings": [ { "check": "chain_content", "table": "audit_logs",
//!                   "key": "123" | null, "detail": "..." } ],
//!   "missed_by_playbook": [ ...findings, same shape... ]
//! }
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::anchor::Anchor;
use super::{CheckName, Finding};

/// How one check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Passed,
    Failed,
    NotRun,
}

/// One check's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct CheckOutcome {
    pub check: CheckName,
    pub playbook_section: Option<&'static str>,
    pub status: CheckStatus,
    /// Why the check did not run.
    pub reason: Option<String>,
    /// Findings reported by this check.
    pub findings: usize,
    #[serde(with = "crate::serde_duration")]
    pub duration: Duration,
}

/// What a suite run found; see the module docs for the JSON shape.
#[derive(Debug, Clone, Serialize)]
pub struct IntegrityReport {
    pub database: String,
    pub started_at: DateTime<Utc>,
    #[serde(with = "crate::serde_duration")]
    pub duration: Duration,
    pub anchor: Option<Anchor>,
    pub audit_rows: Option<u64>,
    pub playbook_4_1_broken_links: Option<i64>,
    pub checks: Vec<CheckOutcome>,
    pub findings: Vec<Finding>,
    missed_by_playbook: Vec<Finding>,
}

impl IntegrityReport {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        database: String,
        started_at: DateTime<Utc>,
        duration: Duration,
        anchor: Option<Anchor>,
        audit_rows: Option<u64>,
        playbook_4_1_broken_links: Option<i64>,
        checks: Vec<CheckOutcome>,
        findings: Vec<Finding>,
    ) -> Self {
        let missed_by_playbook = missed(&findings, playbook_4_1_broken_links);
        Self {
            database,
            started_at,
            duration,
            anchor,
            audit_rows,
            playbook_4_1_broken_links,
            checks,
            findings,
            missed_by_playbook,
        }
    }

    /// The chain findings the playbook's verbatim 4.1 query would not have
    /// reported: every chain finding of a check 4.1 does not perform
    /// (content, genesis, NULL hashes, duplicates, ordering, anchor), and
    /// the `chain_links` findings too when 4.1, run in the same snapshot,
    /// counted no broken link.
    pub fn missed_by_playbook(&self) -> &[Finding] {
        &self.missed_by_playbook
    }

    /// Whether every check ran and none found anything.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty() && self.incomplete().is_empty()
    }

    /// Checks that did not run for a reason other than a choice of the
    /// caller (the anchor check without an anchor is a choice).
    pub fn incomplete(&self) -> Vec<&CheckOutcome> {
        self.checks
            .iter()
            .filter(|c| c.status == CheckStatus::NotRun)
            .filter(|c| {
                !(c.check == CheckName::ChainAnchor && self.anchor.is_none() && c.reason.as_deref() == Some(NO_ANCHOR))
            })
            .collect()
    }

    pub fn outcome(&self, check: CheckName) -> Option<&CheckOutcome> {
        self.checks.iter().find(|c| c.check == check)
    }

    /// Findings of one check.
    pub fn findings_of(&self, check: CheckName) -> Vec<&Finding> {
        self.findings.iter().filter(|f| f.check == check).collect()
    }

    /// The report for people: checks, findings grouped by check with their
    /// playbook section, and what 4.1 alone would have missed. `timings`
    /// off gives output that depends on the data only (for snapshots).
    pub fn human(&self, timings: bool) -> String {
        let mut out = String::new();
        let _ = write!(out, "integrity report for database {}", self.database);
        if timings {
            let _ = write!(
                out,
                " (started {}, took {:.2}s)",
                self.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
                self.duration.as_secs_f64()
            );
        }
        out.push('\n');
        match &self.anchor {
            Some(a) => {
                let _ = writeln!(
                    out,
                    "anchor: head row {} ({} rows), recorded {} from {}",
                    a.head_id,
                    a.rows,
                    if timings {
                        a.recorded_at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
                    } else {
                        "[time]".to_owned()
                    },
                    a.database
                );
            }
            None => out.push_str("anchor: none given (deletion of the newest audit rows cannot be seen)\n"),
        }
        if let Some(rows) = self.audit_rows {
            let _ = writeln!(out, "audit rows verified: {rows}");
        }
        out.push_str("\nchecks:\n");
        for c in &self.checks {
            let status = match c.status {
                CheckStatus::Passed => "passed ",
                CheckStatus::Failed => "FAILED ",
                CheckStatus::NotRun => "not run",
            };
            let _ = write!(
                out,
                "  {status}  {:<24} {:<24} {:>5} findings",
                c.check.as_str(),
                section(c.check),
                c.findings
            );
            if timings {
                let _ = write!(out, "  {:.3}s", c.duration.as_secs_f64());
            }
            if let Some(reason) = &c.reason {
                let _ = write!(out, "  ({reason})");
            }
            out.push('\n');
        }

        let mut by_check: BTreeMap<CheckName, Vec<&Finding>> = BTreeMap::new();
        for f in &self.findings {
            by_check.entry(f.check).or_default().push(f);
        }
        if by_check.is_empty() {
            out.push_str("\nfindings: none\n");
        } else {
            let _ = writeln!(out, "\nfindings: {}", self.findings.len());
            for (check, findings) in &by_check {
                let _ = writeln!(out, "  {check} [{}] ({})", section(*check), findings.len());
                for f in findings {
                    let _ = writeln!(out, "    {}: {}", locate(f), f.detail);
                }
            }
        }

        if let Some(count) = self.playbook_4_1_broken_links {
            let chain: Vec<&Finding> = self.findings.iter().filter(|f| is_chain(f.check)).collect();
            let _ = writeln!(
                out,
                "\nplaybook 4.1 (verbatim, same snapshot): {count} broken links; drillbook: {} chain findings, \
                 {} of which 4.1 alone would have missed",
                chain.len(),
                self.missed_by_playbook.len()
            );
            for f in &self.missed_by_playbook {
                let _ = writeln!(out, "  missed: {} {}", f.check, locate(f));
            }
        }

        let verdict = if !self.findings.is_empty() {
            "FINDINGS"
        } else if !self.incomplete().is_empty() {
            "INCOMPLETE (some checks could not run)"
        } else {
            "CLEAN"
        };
        let _ = writeln!(out, "\nverdict: {verdict}");
        out
    }
}

/// The reason given when the anchor check is not run because no anchor was given.
pub(crate) const NO_ANCHOR: &str = "no anchor given (--anchor): deleted newest rows cannot be detected";

fn section(check: CheckName) -> String {
    check
        .playbook_section()
        .map_or_else(|| "drillbook".to_owned(), |s| format!("playbook {s}"))
}

fn locate(f: &Finding) -> String {
    match &f.key {
        Some(key) => format!("{} #{key}", f.table),
        None => f.table.clone(),
    }
}

/// The audit-chain checks (4.1 and what drillbook adds to it).
pub fn is_chain(check: CheckName) -> bool {
    matches!(
        check,
        CheckName::ChainLinks
            | CheckName::ChainContent
            | CheckName::ChainGenesis
            | CheckName::ChainNullHash
            | CheckName::ChainDuplicateHash
            | CheckName::ChainOrdering
            | CheckName::ChainAnchor
    )
}

fn missed(findings: &[Finding], playbook: Option<i64>) -> Vec<Finding> {
    findings
        .iter()
        .filter(|f| is_chain(f.check))
        .filter(|f| f.check != CheckName::ChainLinks || playbook.is_none_or(|n| n <= 0))
        .cloned()
        .collect()
}
