//! The playbook's own SQL (sections 3.2 step 4, 3.3 and 4), run verbatim.
//!
//! The queries live in `fixtures/playbook/`, copied character for character
//! from the playbook, and go to the server as they are, through the simple
//! query protocol, exactly as `psql -c` would send them. Their answers come
//! back as text, the way an operator at a terminal reads them.

use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::{Column, Connection, PgConnection, Row};

use crate::pg::{ConnInfo, PgError};

/// One query of the playbook.
#[derive(Debug, Clone, Copy)]
pub struct PlaybookQuery {
    pub section: &'static str,
    pub title: &'static str,
    pub sql: &'static str,
}

pub const CRITICAL_TABLE_COUNTS: PlaybookQuery = PlaybookQuery {
    section: "3.2 step 4",
    title: "Verify critical tables",
    sql: include_str!("../../fixtures/playbook/3.2-step4-critical-tables.sql"),
};
pub const PITR_LATEST_RECORDS: PlaybookQuery = PlaybookQuery {
    section: "3.3",
    title: "After PITR completes, verify data",
    sql: include_str!("../../fixtures/playbook/3.3-pitr-latest-records.sql"),
};
pub const AUDIT_HASH_CHAIN: PlaybookQuery = PlaybookQuery {
    section: "4.1",
    title: "Audit log hash chain verification",
    sql: include_str!("../../fixtures/playbook/4.1-audit-hash-chain.sql"),
};
pub const BILLING_RUN_CONSISTENCY: PlaybookQuery = PlaybookQuery {
    section: "4.2",
    title: "Billing run consistency",
    sql: include_str!("../../fixtures/playbook/4.2-billing-run-consistency.sql"),
};
pub const INVOICE_LINE_BALANCE: PlaybookQuery = PlaybookQuery {
    section: "4.3",
    title: "Invoice line balance check (debit = credit per invoice)",
    sql: include_str!("../../fixtures/playbook/4.3-invoice-line-balance.sql"),
};
pub const LEDGER_ENTRY_CONSISTENCY: PlaybookQuery = PlaybookQuery {
    section: "4.4",
    title: "Ledger entry consistency",
    sql: include_str!("../../fixtures/playbook/4.4-ledger-entry-consistency.sql"),
};
pub const ORPHANED_RECORDS: PlaybookQuery = PlaybookQuery {
    section: "4.5",
    title: "Orphaned records check",
    sql: include_str!("../../fixtures/playbook/4.5-orphaned-records.sql"),
};

/// A result row, each column as the text `psql` would print (`None` = NULL).
pub type TextRow = Vec<(String, Option<String>)>;

impl PlaybookQuery {
    /// Runs the query verbatim and returns the rows of all its statements, in
    /// order, as `psql -c` prints them (3.3 has two statements, one row each).
    pub async fn run(&self, conn: &mut PgConnection) -> Result<Vec<TextRow>, PgError> {
        let rows: Vec<PgRow> = sqlx::raw_sql(self.sql)
            .fetch_all(conn)
            .await
            .map_err(PgError::sql(format!(
                "run the playbook's {} query ({})",
                self.section, self.title
            )))?;
        Ok(rows.iter().map(text_row).collect())
    }
}

fn text_row(row: &PgRow) -> TextRow {
    row.columns()
        .iter()
        .map(|column| {
            // The simple query protocol returns every value in text format, so
            // reading the raw bytes as UTF-8 is exactly what psql shows.
            let value = row
                .try_get_unchecked::<Option<String>, _>(column.ordinal())
                .ok()
                .flatten();
            (column.name().to_owned(), value)
        })
        .collect()
}

/// The answers of section 3.2 step 4 and section 4 for one database.
#[derive(Debug, Clone, Serialize)]
pub struct PlaybookAnswers {
    /// 3.2 step 4: `(table, count)`.
    pub critical_counts: Vec<(String, i64)>,
    /// 4.1: must be 0.
    pub broken_links: i64,
    /// 4.2: billing runs neither completed nor rolled back; must be none.
    pub unfinished_billing_runs: Vec<TextRow>,
    /// 4.3: invoices whose charges and credits differ; must be none.
    pub unbalanced_invoices: Vec<TextRow>,
    /// 4.4: tenants with an imbalance over 10,000; must be none.
    pub ledger_imbalances: Vec<TextRow>,
    /// 4.5: `(check_type, count)`; every count must be 0.
    pub orphans: Vec<(String, i64)>,
}

impl PlaybookAnswers {
    /// Runs every query against `target`.
    pub async fn collect(target: &ConnInfo) -> Result<Self, PgError> {
        let mut conn = PgConnection::connect_with(&target.connect_options())
            .await
            .map_err(PgError::sql(format!("connect to {target}")))?;
        let pairs = |rows: Vec<TextRow>| -> Vec<(String, i64)> {
            rows.into_iter()
                .map(|row| {
                    let label = row[0].1.clone().unwrap_or_default();
                    let count = row[1].1.as_deref().and_then(|c| c.parse().ok()).unwrap_or(-1);
                    (label, count)
                })
                .collect()
        };
        let critical_counts = pairs(CRITICAL_TABLE_COUNTS.run(&mut conn).await?);
        let chain = AUDIT_HASH_CHAIN.run(&mut conn).await?;
        let broken_links = chain
            .first()
            .and_then(|row| row[0].1.as_deref())
            .and_then(|n| n.parse().ok())
            .unwrap_or(-1);
        let answers = Self {
            critical_counts,
            broken_links,
            unfinished_billing_runs: BILLING_RUN_CONSISTENCY.run(&mut conn).await?,
            unbalanced_invoices: INVOICE_LINE_BALANCE.run(&mut conn).await?,
            ledger_imbalances: LEDGER_ENTRY_CONSISTENCY.run(&mut conn).await?,
            orphans: pairs(ORPHANED_RECORDS.run(&mut conn).await?),
        };
        let _ = conn.close().await;
        Ok(answers)
    }

    /// What differs from the playbook's expected answers, one sentence each;
    /// empty when the database passes.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (table, count) in &self.critical_counts {
            if *count <= 0 {
                problems.push(format!("3.2 step 4: critical table {table} is empty"));
            }
        }
        if self.broken_links != 0 {
            problems.push(format!(
                "4.1: {} broken links in the audit hash chain (expected 0)",
                self.broken_links
            ));
        }
        let mut rows = |section: &str, what: &str, found: &[TextRow]| {
            if !found.is_empty() {
                problems.push(format!("{section}: {} {what}, e.g. {}", found.len(), render(&found[0])));
            }
        };
        rows(
            "4.2",
            "billing runs neither completed nor rolled back",
            &self.unfinished_billing_runs,
        );
        rows(
            "4.3",
            "invoices whose charges and credits differ",
            &self.unbalanced_invoices,
        );
        rows(
            "4.4",
            "tenants with a ledger imbalance over 10000",
            &self.ledger_imbalances,
        );
        for (check, count) in &self.orphans {
            if *count != 0 {
                problems.push(format!("4.5: {count} {check}"));
            }
        }
        problems
    }
}

fn render(row: &TextRow) -> String {
    row.iter()
        .map(|(name, value)| format!("{name}={}", value.as_deref().unwrap_or("NULL")))
        .collect::<Vec<_>>()
        .join(", ")
}
