//! A pure-Rust model of the ledger and of every check, for property tests:
//! a test oracle, compiled only with the `test-oracle` feature (which every
//! test build turns on; see Cargo.toml), never part of the library's API.
//!
//! [`Ledger`] holds the tables in memory (amounts in cents); its check
//! functions mirror the SQL checks ([`super::sql`], the playbook's 4.2 to
//! 4.5 and section 7) filter for filter and threshold for threshold, and the
//! chain checks go through the same [`ChainVerifier`] the suite streams
//! into. The corruption operators mirror the harness's (`fault`) as pure
//! functions and say which findings they must cause.
//!
//! Semantics kept exactly:
//! - 4.3: only live lines (`deleted_at IS NULL`) of invoices that exist
//!   (inner join), flagged when `|charges - credits| > 0.01`, i.e. more than
//!   1 cent.
//! - 4.4: tenants that exist and have entries (inner join), flagged when
//!   `|charges - payments|` exceeds the threshold (10,000.00 by default).
//! - 4.5: live lines without their invoice; entries without their tenant.
//! - 4.2: every run neither `completed` nor `rolled_back` (the suite lists
//!   all of them, not the first 10).
//! - Duplicate hashes: one finding per shared hash, keyed by its lowest id.
//! - Chain order is `(created_at, id)`, as 4.1's; ids are not judged
//!   ([`Ledger::as_written_concurrently`] shows why: a valid chain whose ids
//!   concurrent writers drew out of chain order).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::anchor::{ANCHOR_FORMAT, Anchor};
use super::chain::{AUDIT_TABLE, AnchorMismatch, AuditRow, ChainVerifier};
use super::{CheckName, Expected, Finding};
use crate::fixtures::audit_hash::GENESIS;
use crate::fixtures::{CRITICAL_TABLES, PROTECTED_TABLES};

/// The playbook's 4.4 threshold, in cents.
pub const LEDGER_THRESHOLD_CENTS: i64 = 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: i64,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoice {
    pub id: i64,
    pub tenant_id: i64,
    pub total_cents: i64,
    pub paid: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineType {
    Charge,
    Credit,
}

impl LineType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Charge => "charge",
            Self::Credit => "credit",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceLine {
    pub id: i64,
    pub invoice_id: i64,
    pub line_type: LineType,
    pub amount_cents: i64,
    pub deleted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryType {
    Charge,
    Payment,
}

impl EntryType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Charge => "charge",
            Self::Payment => "payment",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub id: i64,
    pub tenant_id: i64,
    pub kind: EntryType,
    pub amount_cents: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub id: i64,
    pub tenant_id: i64,
    pub invoice_id: i64,
    pub amount_cents: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillingRun {
    pub run_id: i64,
    /// `pending`, `running`, `completed`, `failed` or `rolled_back`.
    pub status: String,
    pub created_at: DateTime<Utc>,
}

/// The ledger's tables, in memory.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ledger {
    pub tenants: Vec<Tenant>,
    pub invoices: Vec<Invoice>,
    pub invoice_lines: Vec<InvoiceLine>,
    pub ledger_entries: Vec<LedgerEntry>,
    pub payments: Vec<Payment>,
    pub billing_runs: Vec<BillingRun>,
    /// In any order; the checks sort by `(created_at, id)`.
    pub audit_logs: Vec<AuditRow>,
    /// Tables with row-level security enabled.
    pub rls_enabled: BTreeSet<String>,
}

/// How big a sampled ledger is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub tenants: i64,
    pub invoices_per_tenant: i64,
    pub billing_runs: i64,
    pub audit_rows: i64,
}

impl Ledger {
    /// A valid ledger (no check finds anything), derived from `seed`:
    /// balanced invoices (some with voided lines and deposit credits), a
    /// ledger entry per charge and payment, completed and rolled-back runs,
    /// and a hash chain from `GENESIS` with strictly increasing times,
    /// payloads with tabs, backslashes, newlines and non-ASCII text.
    /// Critical tables are non-empty when every size is at least 1.
    pub fn sample(seed: u64, size: Size) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().expect("valid time");
        let mut ledger = Self {
            rls_enabled: PROTECTED_TABLES.iter().map(|t| (*t).to_owned()).collect(),
            ..Self::default()
        };
        let (mut invoice_id, mut line_id, mut entry_id, mut payment_id) = (0, 0, 0, 0);
        for tenant in 1..=size.tenants {
            ledger.tenants.push(Tenant {
                id: tenant,
                created_at: t0 + Duration::seconds(tenant),
            });
            for _ in 0..size.invoices_per_tenant {
                invoice_id += 1;
                let mut total = 0;
                let mut line = |ledger: &mut Self, line_type, amount_cents, deleted| {
                    line_id += 1;
                    ledger.invoice_lines.push(InvoiceLine {
                        id: line_id,
                        invoice_id,
                        line_type,
                        amount_cents,
                        deleted,
                    });
                };
                for _ in 0..rng.random_range(1..=3) {
                    let amount = rng.random_range(100..100_000);
                    total += amount;
                    line(&mut ledger, LineType::Charge, amount, false);
                }
                if rng.random_bool(0.2) {
                    line(&mut ledger, LineType::Charge, rng.random_range(100..9_000), true);
                }
                let deposit = if rng.random_bool(0.3) {
                    rng.random_range(0..total)
                } else {
                    0
                };
                if deposit > 0 {
                    line(&mut ledger, LineType::Credit, deposit, false);
                }
                line(&mut ledger, LineType::Credit, total - deposit, false);
                // The first invoice is paid, so `payments` (a critical table) is never empty.
                let paid = invoice_id == 1 || rng.random_bool(0.7);
                ledger.invoices.push(Invoice {
                    id: invoice_id,
                    tenant_id: tenant,
                    total_cents: total,
                    paid,
                    created_at: t0 + Duration::days(invoice_id),
                });
                entry_id += 1;
                ledger.ledger_entries.push(LedgerEntry {
                    id: entry_id,
                    tenant_id: tenant,
                    kind: EntryType::Charge,
                    amount_cents: total,
                });
                if paid {
                    entry_id += 1;
                    ledger.ledger_entries.push(LedgerEntry {
                        id: entry_id,
                        tenant_id: tenant,
                        kind: EntryType::Payment,
                        amount_cents: total,
                    });
                    payment_id += 1;
                    ledger.payments.push(Payment {
                        id: payment_id,
                        tenant_id: tenant,
                        invoice_id,
                        amount_cents: total,
                    });
                }
            }
        }
        for run_id in 1..=size.billing_runs {
            let status = if rng.random_bool(0.25) {
                "rolled_back"
            } else {
                "completed"
            };
            ledger.billing_runs.push(BillingRun {
                run_id,
                status: status.to_owned(),
                created_at: t0 + Duration::hours(run_id),
            });
        }
        const PAYLOADS: [&str; 6] = [
            "{}",
            "{\"amount_cents\":12345}",
            "tab\there",
            "back\\slash",
            "line\nbreak",
            "Müller zahlt 42 €",
        ];
        let mut at = t0;
        let mut previous_hash = GENESIS.to_owned();
        for id in 1..=size.audit_rows {
            at += Duration::microseconds(rng.random_range(1..5_000_000));
            let mut row = AuditRow {
                id,
                created_at: at,
                tenant_id: (size.tenants > 0 && rng.random_bool(0.8))
                    .then(|| rng.random_range(1..=size.tenants.max(1))),
                actor: format!("user:{}", rng.random_range(1..50)),
                action: "invoice.created".to_owned(),
                entity_type: "monthly_invoice".to_owned(),
                entity_id: rng.random_range(1..1000).to_string(),
                payload: format!("{} #{id}", PAYLOADS[rng.random_range(0..PAYLOADS.len())]),
                previous_hash: std::mem::take(&mut previous_hash),
                hash: None,
            };
            let hash = row.canonical_hash();
            previous_hash.clone_from(&hash);
            row.hash = Some(hash);
            ledger.audit_logs.push(row);
        }
        ledger
    }

    /// Leaves the chain as concurrent writers leave it, still valid: each id
    /// was drawn from the identity default before its writer took the chain's
    /// lock, so ids run out of chain order (each moved at most 3 places);
    /// and some rows share their predecessor's `created_at` where the ids
    /// still order the tie as the chain links it. The chain is re-linked and
    /// re-hashed in its order; no check may find anything.
    pub fn as_written_concurrently(&mut self, seed: u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        self.audit_logs.sort_by_key(|r| (r.created_at, r.id));
        let n = self.audit_logs.len();
        let mut ids: Vec<i64> = self.audit_logs.iter().map(|r| r.id).collect();
        ids.sort_unstable();
        for i in 0..n {
            let j = rng.random_range(i..(i + 4).min(n));
            ids.swap(i, j);
        }
        let mut previous = GENESIS.to_owned();
        for i in 0..n {
            self.audit_logs[i].id = ids[i];
            if i > 0 && ids[i - 1] < ids[i] && rng.random_bool(0.2) {
                self.audit_logs[i].created_at = self.audit_logs[i - 1].created_at;
            }
            let row = &mut self.audit_logs[i];
            row.previous_hash = std::mem::take(&mut previous);
            let hash = row.canonical_hash();
            previous.clone_from(&hash);
            row.hash = Some(hash);
        }
    }

    /// The audit rows in chain order (`ORDER BY created_at, id`).
    pub fn chain(&self) -> Vec<&AuditRow> {
        let mut rows: Vec<&AuditRow> = self.audit_logs.iter().collect();
        rows.sort_by_key(|r| (r.created_at, r.id));
        rows
    }

    /// The anchor `drillbook anchor` would record now; `None` for an empty chain.
    pub fn anchor(&self) -> Option<Anchor> {
        let chain = self.chain();
        let (first, head) = (chain.first()?, chain.last()?);
        Some(Anchor {
            format: ANCHOR_FORMAT,
            database: "model".to_owned(),
            recorded_at: head.created_at,
            genesis_hash: first.hash.clone().unwrap_or_default(),
            head_id: head.id,
            head_hash: head.hash.clone().unwrap_or_default(),
            head_created_at: head.created_at,
            rows: chain.len() as u64,
        })
    }

    fn table_len(&self, table: &str) -> usize {
        match table {
            "tenants" => self.tenants.len(),
            "monthly_invoices" => self.invoices.len(),
            "invoice_lines" => self.invoice_lines.len(),
            "ledger_entries" => self.ledger_entries.len(),
            "payments" => self.payments.len(),
            "billing_runs" => self.billing_runs.len(),
            "audit_logs" => self.audit_logs.len(),
            _ => 0,
        }
    }

    /// 3.2 step 4 / 7: each critical table is non-empty.
    pub fn check_critical_tables(&self) -> Vec<Finding> {
        CRITICAL_TABLES
            .iter()
            .filter(|table| self.table_len(table) == 0)
            .map(|table| {
                Finding::new(
                    CheckName::CriticalTablesPresent,
                    table,
                    None,
                    format!("table {table} is empty"),
                )
            })
            .collect()
    }

    /// 7: row-level security on every protected table.
    pub fn check_rls(&self) -> Vec<Finding> {
        PROTECTED_TABLES
            .iter()
            .filter(|table| !self.rls_enabled.contains(**table))
            .map(|table| {
                Finding::new(
                    CheckName::RlsEnabled,
                    table,
                    None,
                    format!("row-level security is disabled on {table}"),
                )
            })
            .collect()
    }

    /// 4.2.
    pub fn check_billing_runs(&self) -> Vec<Finding> {
        let mut runs: Vec<&BillingRun> = self
            .billing_runs
            .iter()
            .filter(|r| r.status != "completed" && r.status != "rolled_back")
            .collect();
        runs.sort_by_key(|r| (std::cmp::Reverse(r.created_at), r.run_id));
        runs.iter()
            .map(|r| {
                Finding::new(
                    CheckName::BillingRuns,
                    "billing_runs",
                    Some(r.run_id.to_string()),
                    format!("status {}", r.status),
                )
            })
            .collect()
    }

    /// 4.3.
    pub fn check_invoice_balance(&self) -> Vec<Finding> {
        let invoices: BTreeSet<i64> = self.invoices.iter().map(|i| i.id).collect();
        let mut sums: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
        for line in self
            .invoice_lines
            .iter()
            .filter(|l| !l.deleted && invoices.contains(&l.invoice_id))
        {
            let sum = sums.entry(line.invoice_id).or_default();
            match line.line_type {
                LineType::Charge => sum.0 += line.amount_cents,
                LineType::Credit => sum.1 += line.amount_cents,
            }
        }
        sums.into_iter()
            .filter(|(_, (charges, credits))| (charges - credits).abs() > 1)
            .map(|(id, (charges, credits))| {
                Finding::new(
                    CheckName::InvoiceBalance,
                    "monthly_invoices",
                    Some(id.to_string()),
                    format!("charges {charges} and credits {credits} (cents) differ"),
                )
            })
            .collect()
    }

    /// 4.4, with the threshold in cents.
    pub fn check_ledger_consistency(&self, threshold_cents: i64) -> Vec<Finding> {
        let tenants: BTreeSet<i64> = self.tenants.iter().map(|t| t.id).collect();
        let mut sums: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
        for entry in self.ledger_entries.iter().filter(|e| tenants.contains(&e.tenant_id)) {
            let sum = sums.entry(entry.tenant_id).or_default();
            match entry.kind {
                EntryType::Charge => sum.0 += entry.amount_cents,
                EntryType::Payment => sum.1 += entry.amount_cents,
            }
        }
        sums.into_iter()
            .filter(|(_, (charges, payments))| (charges - payments).abs() > threshold_cents)
            .map(|(id, (charges, payments))| {
                Finding::new(
                    CheckName::LedgerConsistency,
                    "tenants",
                    Some(id.to_string()),
                    format!("charges {charges} minus payments {payments} (cents) beyond the threshold"),
                )
            })
            .collect()
    }

    /// 4.5, invoice lines.
    pub fn check_orphaned_invoice_lines(&self) -> Vec<Finding> {
        let invoices: BTreeSet<i64> = self.invoices.iter().map(|i| i.id).collect();
        let mut lines: Vec<&InvoiceLine> = self
            .invoice_lines
            .iter()
            .filter(|l| !l.deleted && !invoices.contains(&l.invoice_id))
            .collect();
        lines.sort_by_key(|l| l.id);
        lines
            .iter()
            .map(|l| {
                Finding::new(
                    CheckName::OrphanedInvoiceLines,
                    "invoice_lines",
                    Some(l.id.to_string()),
                    format!("invoice {} does not exist", l.invoice_id),
                )
            })
            .collect()
    }

    /// 4.5, ledger entries.
    pub fn check_orphaned_ledger_entries(&self) -> Vec<Finding> {
        let tenants: BTreeSet<i64> = self.tenants.iter().map(|t| t.id).collect();
        let mut entries: Vec<&LedgerEntry> = self
            .ledger_entries
            .iter()
            .filter(|e| !tenants.contains(&e.tenant_id))
            .collect();
        entries.sort_by_key(|e| e.id);
        entries
            .iter()
            .map(|e| {
                Finding::new(
                    CheckName::OrphanedLedgerEntries,
                    "ledger_entries",
                    Some(e.id.to_string()),
                    format!("tenant {} does not exist", e.tenant_id),
                )
            })
            .collect()
    }

    /// No two rows share a hash: one finding per shared hash, keyed by its lowest id.
    pub fn check_duplicate_hashes(&self) -> Vec<Finding> {
        let mut ids: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
        for row in &self.audit_logs {
            if let Some(hash) = &row.hash {
                ids.entry(hash).or_default().push(row.id);
            }
        }
        let mut findings: Vec<(i64, Finding)> = ids
            .into_iter()
            .filter(|(_, ids)| ids.len() > 1)
            .map(|(hash, ids)| {
                let min = *ids.iter().min().expect("non-empty");
                let finding = Finding::new(
                    CheckName::ChainDuplicateHash,
                    AUDIT_TABLE,
                    Some(min.to_string()),
                    format!("{} rows share hash {hash}", ids.len()),
                );
                (min, finding)
            })
            .collect();
        findings.sort_by_key(|(min, _)| *min);
        findings.into_iter().map(|(_, f)| f).collect()
    }

    /// The streaming chain checks, through [`ChainVerifier`].
    ///
    /// # Errors
    /// [`AnchorMismatch`] when the anchor belongs to another chain.
    pub fn check_chain(&self, anchor: Option<&Anchor>) -> Result<Vec<Finding>, AnchorMismatch> {
        let mut verifier = ChainVerifier::new(anchor);
        for row in self.chain() {
            verifier.push(row);
        }
        verifier.finish()
    }

    /// Every check, sorted.
    ///
    /// # Errors
    /// [`AnchorMismatch`] when the anchor belongs to another chain.
    pub fn check_all(&self, anchor: Option<&Anchor>) -> Result<Vec<Finding>, AnchorMismatch> {
        let mut findings = self.check_chain(anchor)?;
        findings.extend(self.check_critical_tables());
        findings.extend(self.check_rls());
        findings.extend(self.check_duplicate_hashes());
        findings.extend(self.check_billing_runs());
        findings.extend(self.check_invoice_balance());
        findings.extend(self.check_ledger_consistency(LEDGER_THRESHOLD_CENTS));
        findings.extend(self.check_orphaned_invoice_lines());
        findings.extend(self.check_orphaned_ledger_entries());
        findings.sort();
        Ok(findings)
    }
}

/// The corruption operators of the harness (`fault`), on the model. Each returns
/// the findings the checks must now report.
impl Ledger {
    fn audit_index(&self, id: i64) -> Option<usize> {
        self.audit_logs.iter().position(|r| r.id == id)
    }

    /// Ids in chain order.
    fn chain_ids(&self) -> Vec<i64> {
        self.chain().iter().map(|r| r.id).collect()
    }

    /// Re-links and re-hashes every row after `id` in chain order.
    fn rehash_after(&mut self, id: i64) {
        let ids = self.chain_ids();
        let Some(start) = ids.iter().position(|i| *i == id) else {
            return;
        };
        let mut previous = self.audit_logs[self.audit_index(id).expect("present")].hash.clone();
        for next in &ids[start + 1..] {
            let index = self.audit_index(*next).expect("present");
            let row = &mut self.audit_logs[index];
            row.previous_hash = previous.unwrap_or_default();
            let hash = row.canonical_hash();
            row.hash = Some(hash);
            previous = row.hash.clone();
        }
    }

    /// Deletes audit rows: 4.1 sees the next surviving row link to a hash no
    /// longer there (a genesis finding if it becomes the first row).
    pub fn delete_audit_rows(&mut self, ids: &[i64]) -> Vec<Expected> {
        let chain = self.chain_ids();
        let hashed: BTreeSet<i64> = self
            .audit_logs
            .iter()
            .filter(|r| r.hash.is_some())
            .map(|r| r.id)
            .collect();
        let mut expect = BTreeSet::new();
        for (position, id) in chain.iter().enumerate() {
            if !ids.contains(id) || !hashed.contains(id) {
                continue;
            }
            if let Some(successor) = chain[position + 1..].iter().find(|i| !ids.contains(i)) {
                let survivors_before = chain[..position].iter().any(|i| !ids.contains(i));
                let check = if survivors_before {
                    CheckName::ChainLinks
                } else {
                    CheckName::ChainGenesis
                };
                expect.insert(Expected::new(check, AUDIT_TABLE, Some(successor.to_string())));
            }
        }
        self.audit_logs.retain(|r| !ids.contains(&r.id));
        expect.into_iter().collect()
    }

    /// Adds `delta_cents` to an invoice line's or ledger entry's amount.
    pub fn tamper_amount(&mut self, table: &str, id: i64, delta_cents: i64) -> Vec<Expected> {
        match table {
            "invoice_lines" => {
                let Some(line) = self.invoice_lines.iter_mut().find(|l| l.id == id) else {
                    return vec![];
                };
                line.amount_cents += delta_cents;
                let invoice = line.invoice_id;
                self.invoice_expectation(invoice)
            }
            "ledger_entries" => {
                let Some(entry) = self.ledger_entries.iter_mut().find(|e| e.id == id) else {
                    return vec![];
                };
                entry.amount_cents += delta_cents;
                let tenant = entry.tenant_id;
                if !self.tenants.iter().any(|t| t.id == tenant) {
                    return vec![];
                }
                let imbalance: i64 = self
                    .ledger_entries
                    .iter()
                    .filter(|e| e.tenant_id == tenant)
                    .map(|e| match e.kind {
                        EntryType::Charge => e.amount_cents,
                        EntryType::Payment => -e.amount_cents,
                    })
                    .sum();
                if imbalance.abs() > LEDGER_THRESHOLD_CENTS {
                    vec![Expected::new(
                        CheckName::LedgerConsistency,
                        "tenants",
                        Some(tenant.to_string()),
                    )]
                } else {
                    vec![]
                }
            }
            _ => vec![],
        }
    }

    /// An unbalanced-invoice expectation if `invoice` exists and its live lines differ by more than 1 cent.
    fn invoice_expectation(&self, invoice: i64) -> Vec<Expected> {
        if !self.invoices.iter().any(|i| i.id == invoice) {
            return vec![];
        }
        let live: Vec<&InvoiceLine> = self
            .invoice_lines
            .iter()
            .filter(|l| l.invoice_id == invoice && !l.deleted)
            .collect();
        let diff: i64 = live
            .iter()
            .map(|l| match l.line_type {
                LineType::Charge => l.amount_cents,
                LineType::Credit => -l.amount_cents,
            })
            .sum();
        if !live.is_empty() && diff.abs() > 1 {
            vec![Expected::new(
                CheckName::InvoiceBalance,
                "monthly_invoices",
                Some(invoice.to_string()),
            )]
        } else {
            vec![]
        }
    }

    /// Adds a charge line without its credit.
    pub fn unbalance_invoice(&mut self, invoice_id: i64, cents: i64) -> Vec<Expected> {
        let id = self.invoice_lines.iter().map(|l| l.id).max().unwrap_or(0) + 1;
        self.invoice_lines.push(InvoiceLine {
            id,
            invoice_id,
            line_type: LineType::Charge,
            amount_cents: cents,
            deleted: false,
        });
        self.invoice_expectation(invoice_id)
    }

    /// Moves a line to an invoice that does not exist.
    pub fn orphan_invoice_line(&mut self, line_id: i64) -> Vec<Expected> {
        let missing = self.invoices.iter().map(|i| i.id).max().unwrap_or(0) + 1_000_000;
        let Some(line) = self.invoice_lines.iter_mut().find(|l| l.id == line_id) else {
            return vec![];
        };
        let old = std::mem::replace(&mut line.invoice_id, missing);
        if line.deleted {
            return vec![];
        }
        let mut expect = vec![Expected::new(
            CheckName::OrphanedInvoiceLines,
            "invoice_lines",
            Some(line_id.to_string()),
        )];
        expect.extend(self.invoice_expectation(old));
        expect
    }

    /// Turns row-level security off on a table.
    pub fn disable_rls(&mut self, table: &str) -> Vec<Expected> {
        if self.rls_enabled.remove(table) && PROTECTED_TABLES.contains(&table) {
            vec![Expected::new(CheckName::RlsEnabled, table, None)]
        } else {
            vec![]
        }
    }

    /// Puts a billing run back into `running`.
    pub fn stuck_billing_run(&mut self, run_id: i64) -> Vec<Expected> {
        match self.billing_runs.iter_mut().find(|r| r.run_id == run_id) {
            Some(run) => {
                run.status = "running".to_owned();
                vec![Expected::new(
                    CheckName::BillingRuns,
                    "billing_runs",
                    Some(run_id.to_string()),
                )]
            }
            None => vec![],
        }
    }

    /// Edits a payload, leaving the hash.
    pub fn tamper_audit_payload(&mut self, id: i64) -> Vec<Expected> {
        let Some(index) = self.audit_index(id) else {
            return vec![];
        };
        let row = &mut self.audit_logs[index];
        row.payload.push(' ');
        if row.hash.is_some() {
            vec![Expected::new(
                CheckName::ChainContent,
                AUDIT_TABLE,
                Some(id.to_string()),
            )]
        } else {
            vec![]
        }
    }

    /// Edits a payload and re-hashes the row and the rest of the chain:
    /// against the anchor taken before, the head is rewritten.
    pub fn tamper_and_rehash(&mut self, id: i64) -> Vec<Expected> {
        let Some(index) = self.audit_index(id) else {
            return vec![];
        };
        let head = self.anchor().map(|a| a.head_id);
        let row = &mut self.audit_logs[index];
        row.payload.push(' ');
        row.hash = Some(row.canonical_hash());
        self.rehash_after(id);
        head.map(|head| Expected::new(CheckName::ChainAnchor, AUDIT_TABLE, Some(head.to_string())))
            .into_iter()
            .collect()
    }

    /// Makes a row a second `GENESIS`, re-hashing it and the rest.
    pub fn forge_genesis(&mut self, id: i64) -> Vec<Expected> {
        let Some(index) = self.audit_index(id) else {
            return vec![];
        };
        let first = self.chain_ids().first() == Some(&id);
        let row = &mut self.audit_logs[index];
        row.previous_hash = GENESIS.to_owned();
        row.hash = Some(row.canonical_hash());
        self.rehash_after(id);
        if first {
            vec![]
        } else {
            vec![Expected::new(
                CheckName::ChainGenesis,
                AUDIT_TABLE,
                Some(id.to_string()),
            )]
        }
    }

    /// Moves a row in time: its `created_at` set to `to`, and with `rehash`
    /// its hash recomputed for the moved row (the rest left as it was). The
    /// ordering check once judged ids to catch this; now the others do: not
    /// re-hashed, a content finding on the row; re-hashed, the row that
    /// linked to it no longer does (a genesis finding if it is now first);
    /// a re-hashed head (nothing links to it) is the anchor's to see.
    pub fn move_audit_row(&mut self, id: i64, to: DateTime<Utc>, rehash: bool) -> Vec<Expected> {
        let Some(index) = self.audit_index(id) else {
            return vec![];
        };
        let row = &self.audit_logs[index];
        if row.created_at == to {
            return vec![];
        }
        let old_hash = row.hash.clone();
        let successor = self
            .chain()
            .iter()
            .find(|r| r.id != id && old_hash.as_ref() == Some(&r.previous_hash))
            .map(|r| r.id);
        let row = &mut self.audit_logs[index];
        row.created_at = to;
        if !rehash {
            return old_hash
                .map(|_| Expected::new(CheckName::ChainContent, AUDIT_TABLE, Some(id.to_string())))
                .into_iter()
                .collect();
        }
        row.hash = Some(row.canonical_hash());
        let expected = match successor {
            Some(successor) => {
                let check = if self.chain_ids().first() == Some(&successor) {
                    CheckName::ChainGenesis
                } else {
                    CheckName::ChainLinks
                };
                Expected::new(check, AUDIT_TABLE, Some(successor.to_string()))
            }
            None => Expected::new(CheckName::ChainAnchor, AUDIT_TABLE, Some(id.to_string())),
        };
        vec![expected]
    }

    /// Sets a row's hash to NULL.
    pub fn null_hash(&mut self, id: i64) -> Vec<Expected> {
        let Some(index) = self.audit_index(id) else {
            return vec![];
        };
        self.audit_logs[index].hash = None;
        vec![Expected::new(
            CheckName::ChainNullHash,
            AUDIT_TABLE,
            Some(id.to_string()),
        )]
    }

    /// Deletes the `rows` newest audit rows: against the anchor taken
    /// before, the head is gone.
    pub fn truncate_chain_tail(&mut self, rows: usize) -> Vec<Expected> {
        let chain = self.chain_ids();
        let Some(head) = chain.last().copied() else {
            return vec![];
        };
        if rows == 0 {
            return vec![];
        }
        let cut: BTreeSet<i64> = chain.iter().rev().take(rows).copied().collect();
        self.audit_logs.retain(|r| !cut.contains(&r.id));
        let mut expect = vec![Expected::new(
            CheckName::ChainAnchor,
            AUDIT_TABLE,
            Some(head.to_string()),
        )];
        if self.audit_logs.is_empty() {
            expect.push(Expected::new(CheckName::CriticalTablesPresent, AUDIT_TABLE, None));
        }
        expect
    }
}
