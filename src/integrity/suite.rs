//! The check suite: every check over one database, in one snapshot.
//!
//! # Guarantees
//! - Safe against production: the connection is opened with
//!   `default_transaction_read_only=on`, every check runs inside ONE
//!   `BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY` transaction (one
//!   consistent snapshot, no writes possible) with `SET LOCAL
//!   statement_timeout`, and nothing is created: no temp tables, no
//!   functions. Each check runs under a savepoint, so a check whose query
//!   fails is reported as not run and the others still run.
//! - Streaming: the audit chain is read with COPY, row by row, into the
//!   [`super::chain::ChainVerifier`] (see [`super::stream`]); duplicate
//!   hashes are found by the database (`GROUP BY hash`); every other check
//!   is one aggregate query. Memory does not grow with the tables.
//! - A lost connection is an [`IntegrityError`], never a clean report.
//!
//! # Caveats
//! A table the suite expects but that does not exist is a finding
//! (`critical_tables_present` or `rls_enabled`, "table X does not exist"),
//! and the checks that need it are reported `not_run` with that reason.

use std::time::{Duration, Instant};

use chrono::Utc;
use rust_decimal::Decimal;
use sqlx::{Connection, PgConnection};

use super::anchor::Anchor;
use super::report::{CheckOutcome, CheckStatus, IntegrityReport, NO_ANCHOR};
use super::stream::{ChainStreamError, verify_chain};
use super::{CheckName, Finding, sql};
use crate::fixtures::{CRITICAL_TABLES, PROTECTED_TABLES};
use crate::pg::ConnInfo;

/// How the suite runs.
#[derive(Debug, Clone)]
pub struct SuiteOptions {
    /// `SET LOCAL statement_timeout` for every statement (default 5 min).
    pub statement_timeout: Duration,
    /// 4.4's imbalance threshold per tenant (the playbook's 10000).
    pub ledger_threshold: Decimal,
    /// Verify the chain against this anchor (chain head recorded outside).
    pub anchor: Option<Anchor>,
    /// At most this many findings listed per SQL check (the rest counted).
    pub max_findings_per_check: usize,
}

impl Default for SuiteOptions {
    fn default() -> Self {
        Self {
            statement_timeout: Duration::from_secs(300),
            ledger_threshold: Decimal::from(10_000),
            anchor: None,
            max_findings_per_check: 1_000,
        }
    }
}

/// Why the suite could not run; a report with findings is not an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IntegrityError {
    #[error("failed to connect to {database} (check the URL, that the server runs and accepts the role)")]
    Connect {
        database: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "failed to run the integrity checks on {database}: the connection failed or was lost \
         (no result: the database was NOT verified; run again)"
    )]
    Lost {
        database: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("failed to parse the audit chain of {database}; the database was NOT verified")]
    Chain {
        database: String,
        #[source]
        source: ChainStreamError,
    },
    #[error("the anchor does not belong to the audit chain of {database}")]
    AnchorOfAnotherChain {
        database: String,
        #[source]
        source: super::chain::AnchorMismatch,
    },
}

/// The suite's connection: `default_transaction_read_only=on` from the
/// start, application name `drillbook-verify` (visible in
/// `pg_stat_activity`). Every transaction on it is read-only.
pub async fn connect_read_only(target: &ConnInfo) -> Result<PgConnection, IntegrityError> {
    let connect_options = target
        .connect_options()
        .application_name(APPLICATION_NAME)
        .options([("default_transaction_read_only", "on")]);
    PgConnection::connect_with(&connect_options)
        .await
        .map_err(|source| IntegrityError::Connect {
            database: target.redacted_url(),
            source,
        })
}

/// `application_name` of the suite's connection.
pub const APPLICATION_NAME: &str = "drillbook-verify";

/// Runs one check query under a savepoint, unless a table it needs is
/// missing: `Ok(value)`, or `Err(reason)` it did not run; a lost connection
/// returns from the enclosing function.
macro_rules! guarded {
    ($run:ident, $needs:expr, $body:expr) => {{
        match $run.missing($needs) {
            Some(reason) => Err(reason),
            None => {
                $run.savepoint().await?;
                let result = $body.await;
                $run.settle(result).await?
            }
        }
    }};
}
/// Runs every check on `target`; see the module docs.
///
/// # Errors
/// The connection cannot be opened or is lost, the chain's COPY output does
/// not parse, or the anchor belongs to another chain. Findings are not errors.
pub async fn run_suite(target: &ConnInfo, options: &SuiteOptions) -> Result<IntegrityReport, IntegrityError> {
    let started_at = Utc::now();
    let started = Instant::now();
    let database = target.database.clone();
    let mut conn = connect_read_only(target).await?;
    let lost = |source| IntegrityError::Lost {
        database: database.clone(),
        source,
    };
    let mut tx = conn
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(lost)?;
    let timeout_ms = options.statement_timeout.as_millis().max(1);
    let setup = format!(
        "SET LOCAL statement_timeout = {timeout_ms}; SET LOCAL lock_timeout = {timeout_ms}; \
         SET LOCAL TimeZone = 'UTC'; SET LOCAL DateStyle = 'ISO, MDY'"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(setup))
        .execute(&mut *tx)
        .await
        .map_err(lost)?;

    let mut run = Run {
        conn: &mut tx,
        database: &database,
        present: Vec::new(),
        checks: Vec::new(),
        findings: Vec::new(),
    };
    run.present = sql::existing_tables(run.conn, &sql::SUITE_TABLES).await.map_err(lost)?;
    let cap = options.max_findings_per_check;

    // 3.2 step 4 / 7: critical tables present and non-empty.
    let t = Instant::now();
    let critical_present: Vec<&str> = CRITICAL_TABLES.iter().copied().filter(|t| run.has(t)).collect();
    let mut findings: Vec<Finding> = CRITICAL_TABLES
        .iter()
        .filter(|t| !run.has(t))
        .map(|t| {
            Finding::new(
                CheckName::CriticalTablesPresent,
                t,
                None,
                format!("table {t} does not exist"),
            )
        })
        .collect();
    let more = guarded!(run, &[], sql::critical_tables_non_empty(run.conn, &critical_present));
    run.record(
        CheckName::CriticalTablesPresent,
        t,
        more.map(|more| {
            findings.extend(more);
            findings
        }),
    );

    // 7: RLS enabled on every protected table.
    let t = Instant::now();
    let protected_present: Vec<&str> = PROTECTED_TABLES.iter().copied().filter(|t| run.has(t)).collect();
    let mut findings: Vec<Finding> = PROTECTED_TABLES
        .iter()
        .filter(|t| !run.has(t))
        .map(|t| {
            let detail = format!("table {t} does not exist, so no row-level security protects it");
            Finding::new(CheckName::RlsEnabled, t, None, detail)
        })
        .collect();
    let more = guarded!(run, &[], sql::rls_enabled(run.conn, &protected_present));
    run.record(
        CheckName::RlsEnabled,
        t,
        more.map(|more| {
            findings.extend(more);
            findings
        }),
    );

    // The audit chain, streamed through the verifier.
    const CHAIN_CHECKS: [CheckName; 6] = [
        CheckName::ChainLinks,
        CheckName::ChainContent,
        CheckName::ChainGenesis,
        CheckName::ChainNullHash,
        CheckName::ChainOrdering,
        CheckName::ChainAnchor,
    ];
    let mut audit_rows = None;
    let mut playbook_links = None;
    let chain_tables = sql::tables_needed(CheckName::ChainLinks);
    if let Some(reason) = run.missing(chain_tables) {
        for check in CHAIN_CHECKS.into_iter().chain([CheckName::ChainDuplicateHash]) {
            run.not_run(check, Duration::ZERO, reason.clone());
        }
    } else {
        let t = Instant::now();
        run.savepoint().await?;
        let pass = verify_chain(run.conn, options.anchor.as_ref()).await;
        let elapsed = t.elapsed();
        match pass {
            Ok(pass) => {
                run.settle(Ok(())).await?.ok();
                audit_rows = Some(pass.rows);
                for check in CHAIN_CHECKS {
                    if check == CheckName::ChainAnchor && options.anchor.is_none() {
                        run.not_run(check, Duration::ZERO, NO_ANCHOR.to_owned());
                        continue;
                    }
                    let mine: Vec<Finding> = pass.findings.iter().filter(|f| f.check == check).cloned().collect();
                    run.push(check, elapsed, mine);
                }
            }
            Err(ChainStreamError::Read(source)) => {
                let reason = run.settle::<()>(Err(source)).await?.unwrap_err();
                for check in CHAIN_CHECKS {
                    run.not_run(check, elapsed, reason.clone());
                }
            }
            Err(ChainStreamError::AnchorMismatch(source)) => {
                return Err(IntegrityError::AnchorOfAnotherChain { database, source });
            }
            Err(source) => return Err(IntegrityError::Chain { database, source }),
        }

        let t = Instant::now();
        let result = guarded!(run, chain_tables, sql::duplicate_hashes(run.conn, cap));
        run.record(CheckName::ChainDuplicateHash, t, result);

        // The playbook's own 4.1, verbatim, in the same snapshot: its count
        // shows beside ours.
        match guarded!(run, chain_tables, sql::playbook_broken_links(run.conn)) {
            Ok(n) => playbook_links = Some(n),
            Err(reason) => tracing::warn!(reason, "the playbook's 4.1 query failed"),
        }
    }

    let t = Instant::now();
    let result = guarded!(
        run,
        sql::tables_needed(CheckName::BillingRuns),
        sql::billing_runs(run.conn, cap)
    );
    run.record(CheckName::BillingRuns, t, result);
    let t = Instant::now();
    let result = guarded!(
        run,
        sql::tables_needed(CheckName::InvoiceBalance),
        sql::invoice_balance(run.conn, cap)
    );
    run.record(CheckName::InvoiceBalance, t, result);
    let t = Instant::now();
    let threshold = options.ledger_threshold;
    let result = guarded!(
        run,
        sql::tables_needed(CheckName::LedgerConsistency),
        sql::ledger_consistency(run.conn, threshold, cap)
    );
    run.record(CheckName::LedgerConsistency, t, result);
    let t = Instant::now();
    let result = guarded!(
        run,
        sql::tables_needed(CheckName::OrphanedInvoiceLines),
        sql::orphaned_invoice_lines(run.conn, cap)
    );
    run.record(CheckName::OrphanedInvoiceLines, t, result);
    let t = Instant::now();
    let result = guarded!(
        run,
        sql::tables_needed(CheckName::OrphanedLedgerEntries),
        sql::orphaned_ledger_entries(run.conn, cap)
    );
    run.record(CheckName::OrphanedLedgerEntries, t, result);

    let Run { checks, findings, .. } = run;
    tx.rollback().await.map_err(lost)?;
    let _ = conn.close().await;
    Ok(IntegrityReport::new(
        database,
        started_at,
        started.elapsed(),
        options.anchor.clone(),
        audit_rows,
        playbook_links,
        checks,
        findings,
    ))
}

/// The state of one suite run.
struct Run<'c> {
    conn: &'c mut PgConnection,
    database: &'c str,
    present: Vec<String>,
    checks: Vec<CheckOutcome>,
    findings: Vec<Finding>,
}

impl Run<'_> {
    fn has(&self, table: &str) -> bool {
        self.present.iter().any(|t| t == table)
    }

    fn missing(&self, tables: &[&str]) -> Option<String> {
        tables
            .iter()
            .find(|t| !self.has(t))
            .map(|t| format!("table {t} does not exist"))
    }

    fn lost(&self, source: sqlx::Error) -> IntegrityError {
        IntegrityError::Lost {
            database: self.database.to_owned(),
            source,
        }
    }

    async fn savepoint(&mut self) -> Result<(), IntegrityError> {
        sqlx::raw_sql("SAVEPOINT drillbook_check")
            .execute(&mut *self.conn)
            .await
            .map(drop)
            .map_err(|e| self.lost(e))
    }

    /// Ends a check's savepoint. A server-side error of the check's own
    /// query becomes the reason it did not run (the savepoint undoes it);
    /// anything else (I/O, a terminated backend, an admin shutdown) is fatal.
    async fn settle<T>(&mut self, result: Result<T, sqlx::Error>) -> Result<Result<T, String>, IntegrityError> {
        match result {
            Ok(value) => {
                sqlx::raw_sql("RELEASE SAVEPOINT drillbook_check")
                    .execute(&mut *self.conn)
                    .await
                    .map_err(|e| self.lost(e))?;
                Ok(Ok(value))
            }
            Err(error) => {
                let recoverable = match &error {
                    sqlx::Error::Database(db) => {
                        let code = db.code().unwrap_or_default();
                        !(code.starts_with("08") || code.starts_with("57P"))
                    }
                    _ => false,
                };
                if !recoverable {
                    return Err(self.lost(error));
                }
                let reason = format!("query failed: {error}");
                sqlx::raw_sql("ROLLBACK TO SAVEPOINT drillbook_check")
                    .execute(&mut *self.conn)
                    .await
                    .map_err(|e| self.lost(e))?;
                Ok(Err(reason))
            }
        }
    }

    fn record(&mut self, check: CheckName, started: Instant, result: Result<Vec<Finding>, String>) {
        match result {
            Ok(findings) => self.push(check, started.elapsed(), findings),
            Err(reason) => self.not_run(check, started.elapsed(), reason),
        }
    }

    fn push(&mut self, check: CheckName, duration: Duration, findings: Vec<Finding>) {
        self.checks.push(CheckOutcome {
            check,
            playbook_section: check.playbook_section(),
            status: if findings.is_empty() {
                CheckStatus::Passed
            } else {
                CheckStatus::Failed
            },
            reason: None,
            findings: findings.len(),
            duration,
        });
        self.findings.extend(findings);
    }

    fn not_run(&mut self, check: CheckName, duration: Duration, reason: String) {
        self.checks.push(CheckOutcome {
            check,
            playbook_section: check.playbook_section(),
            status: CheckStatus::NotRun,
            reason: Some(reason),
            findings: 0,
            duration,
        });
    }
}
