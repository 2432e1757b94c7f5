//! Proving a ledger is whole: every integrity check of the playbook's
//! sections 3.2, 4 and 7, plus what the playbook misses.
//!
//! Each check has a stable [`CheckName`], and reports [`Finding`]s: what is
//! wrong, in which table, at which key. A suite run produces an
//! [`IntegrityReport`], serialisable to JSON with a stable shape.
//!
//! Modules:
//! - [`anchor`]: the audit-chain head recorded outside the database.
//! - [`suite`]: [`run_suite`], every check in one read-only snapshot.
//! - [`stream`]: the chain read with COPY into the chain verifier.
//! - [`sql`]: the checks that are one SQL query each.
//! - [`report`]: [`IntegrityReport`], JSON and human output.
//! - [`fidelity`]: restore fidelity (fingerprints, grants, policies).
//! - `model` (with the `test-oracle` feature, for tests only): the ledger and
//!   every check in memory, the property tests' oracle.
//!
//! [`Expected`] is what an injected incident promises the checks will find.

pub mod anchor;
pub mod chain;
pub mod fidelity;
#[cfg(feature = "test-oracle")]
pub mod model;
pub mod report;
pub mod sql;
pub mod stream;
pub mod suite;

pub use report::{CheckOutcome, CheckStatus, IntegrityReport};
pub use suite::{IntegrityError, SuiteOptions, run_suite};

use serde::{Deserialize, Serialize};

/// Every check drillbook runs, by stable name. The serialised form
/// (`snake_case`) is part of the JSON report and never changes meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CheckName {
    /// 3.2 step 4 and 7: each critical table exists and is not empty.
    CriticalTablesPresent,
    /// 7: row-level security is enabled on every protected table.
    RlsEnabled,
    /// 4.1 verbatim: `previous_hash` equals the previous row's `hash`.
    ChainLinks,
    /// Every row's `hash` equals the canonical hash of its content.
    ChainContent,
    /// `GENESIS` only as the first row's `previous_hash`.
    ChainGenesis,
    /// No row has a NULL `hash` (4.1 skips them silently).
    ChainNullHash,
    /// No two rows share a `hash`.
    ChainDuplicateHash,
    /// The chain links rows in `ORDER BY created_at, id` order: no row links to
    /// the row that follows it (a row moved in time, or a `created_at` tie the
    /// ids break against the chain). Ids themselves are not judged: concurrent
    /// writers draw them before the chain's lock, out of chain order.
    ChainOrdering,
    /// The chain still reaches the head recorded outside the database.
    ChainAnchor,
    /// 4.2: no billing run other than completed / rolled back.
    BillingRuns,
    /// 4.3: charges equal credits per invoice (live lines).
    InvoiceBalance,
    /// 4.4: per tenant, charges minus payments within the threshold.
    LedgerConsistency,
    /// 4.5: no live invoice line without its invoice.
    OrphanedInvoiceLines,
    /// 4.5: no ledger entry without its tenant.
    OrphanedLedgerEntries,
    /// Restore fidelity: row counts equal the backup manifest's.
    RowCounts,
    /// Restore fidelity: per-table content fingerprint equals the manifest's.
    ContentFingerprint,
    /// Restore fidelity: grants equal the source database's.
    Grants,
    /// Restore fidelity: RLS policies equal the source database's.
    Policies,
}

impl CheckName {
    /// The checks [`run_suite`] runs on a database (the restore-fidelity
    /// checks need a backup manifest and are run by restore).
    pub const SUITE: [Self; 14] = [
        Self::CriticalTablesPresent,
        Self::RlsEnabled,
        Self::ChainLinks,
        Self::ChainContent,
        Self::ChainGenesis,
        Self::ChainNullHash,
        Self::ChainDuplicateHash,
        Self::ChainOrdering,
        Self::ChainAnchor,
        Self::BillingRuns,
        Self::InvoiceBalance,
        Self::LedgerConsistency,
        Self::OrphanedInvoiceLines,
        Self::OrphanedLedgerEntries,
    ];

    /// The check of this stable name.
    pub fn parse(name: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(name.to_owned())).ok()
    }

    /// The stable name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CriticalTablesPresent => "critical_tables_present",
            Self::RlsEnabled => "rls_enabled",
            Self::ChainLinks => "chain_links",
            Self::ChainContent => "chain_content",
            Self::ChainGenesis => "chain_genesis",
            Self::ChainNullHash => "chain_null_hash",
            Self::ChainDuplicateHash => "chain_duplicate_hash",
            Self::ChainOrdering => "chain_ordering",
            Self::ChainAnchor => "chain_anchor",
            Self::BillingRuns => "billing_runs",
            Self::InvoiceBalance => "invoice_balance",
            Self::LedgerConsistency => "ledger_consistency",
            Self::OrphanedInvoiceLines => "orphaned_invoice_lines",
            Self::OrphanedLedgerEntries => "orphaned_ledger_entries",
            Self::RowCounts => "row_counts",
            Self::ContentFingerprint => "content_fingerprint",
            Self::Grants => "grants",
            Self::Policies => "policies",
        }
    }

    /// Where the check comes from: a playbook section, or `None` for the
    /// checks drillbook adds.
    pub fn playbook_section(self) -> Option<&'static str> {
        match self {
            Self::CriticalTablesPresent => Some("3.2 step 4 / 7"),
            Self::RlsEnabled => Some("7"),
            Self::ChainLinks => Some("4.1"),
            Self::BillingRuns => Some("4.2"),
            Self::InvoiceBalance => Some("4.3"),
            Self::LedgerConsistency => Some("4.4"),
            Self::OrphanedInvoiceLines | Self::OrphanedLedgerEntries => Some("4.5"),
            _ => None,
        }
    }
}

impl std::fmt::Display for CheckName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing found wrong.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Finding {
    pub check: CheckName,
    pub table: String,
    /// The row (primary key) or group (tenant, invoice) concerned, if any.
    pub key: Option<String>,
    pub detail: String,
}

impl Finding {
    pub fn new(check: CheckName, table: &str, key: Option<String>, detail: impl Into<String>) -> Self {
        Self {
            check,
            table: table.to_owned(),
            key,
            detail: detail.into(),
        }
    }
}

/// A finding the checks must report after an incident: what the harness's
/// incident operators (`fault`) promise, and the test oracle's.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Expected {
    pub check: CheckName,
    pub table: String,
    pub key: Option<String>,
}

impl Expected {
    pub fn new(check: CheckName, table: &str, key: Option<String>) -> Self {
        Self {
            check,
            table: table.to_owned(),
            key,
        }
    }

    /// Whether `finding` is this one.
    pub fn matches(&self, finding: &Finding) -> bool {
        finding.check == self.check && finding.table == self.table && finding.key == self.key
    }
}
