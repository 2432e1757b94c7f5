//! The checks that are plain SQL: each one query, in the caller's
//! read-only transaction, returning at most `cap` findings plus one summary
//! finding (no key) saying how many more there were.
//!
//! The playbook's sections 4.2 to 4.5 with their exact semantics (same
//! filters, same thresholds), but listing every offending row rather than
//! the first 10 or 20; section 7's two checklist items; and the duplicate
//! hash check the streaming chain verifier leaves to the database.

use rust_decimal::Decimal;
use sqlx::PgConnection;
use sqlx::postgres::PgRow;

use super::{CheckName, Finding};

/// The tables the suite reads, and which checks need them.
pub const SUITE_TABLES: [&str; 7] = [
    "tenants",
    "monthly_invoices",
    "invoice_lines",
    "ledger_entries",
    "payments",
    "billing_runs",
    "audit_logs",
];

/// The tables a check reads; a check whose table is missing is not run.
pub fn tables_needed(check: CheckName) -> &'static [&'static str] {
    match check {
        CheckName::ChainLinks
        | CheckName::ChainContent
        | CheckName::ChainGenesis
        | CheckName::ChainNullHash
        | CheckName::ChainOrdering
        | CheckName::ChainAnchor
        | CheckName::ChainDuplicateHash => &["audit_logs"],
        CheckName::BillingRuns => &["billing_runs"],
        CheckName::InvoiceBalance => &["monthly_invoices", "invoice_lines"],
        CheckName::LedgerConsistency => &["tenants", "ledger_entries"],
        CheckName::OrphanedInvoiceLines => &["invoice_lines", "monthly_invoices"],
        CheckName::OrphanedLedgerEntries => &["ledger_entries", "tenants"],
        _ => &[],
    }
}

/// Which of `tables` exist in the `public` schema (the caller's snapshot).
pub async fn existing_tables(conn: &mut PgConnection, tables: &[&str]) -> Result<Vec<String>, sqlx::Error> {
    let names: Vec<String> = tables.iter().map(|t| (*t).to_owned()).collect();
    sqlx::query_scalar(
        "SELECT t FROM unnest($1::text[]) AS t WHERE to_regclass(quote_ident('public') || '.' || quote_ident(t)) IS NOT NULL",
    )
    .bind(names)
    .fetch_all(conn)
    .await
}

/// 3.2 step 4 / 7: each critical table that exists is not empty (missing
/// tables are reported by the caller, which knows what exists).
pub async fn critical_tables_non_empty(conn: &mut PgConnection, present: &[&str]) -> Result<Vec<Finding>, sqlx::Error> {
    let mut findings = Vec::new();
    for table in present {
        let sql = format!("SELECT EXISTS (SELECT 1 FROM public.{})", crate::pg::quote_ident(table));
        let any: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut *conn)
            .await?;
        if !any {
            findings.push(Finding::new(
                CheckName::CriticalTablesPresent,
                table,
                None,
                format!("table {table} is empty"),
            ));
        }
    }
    Ok(findings)
}

/// 7: row-level security enabled on each protected table that exists.
pub async fn rls_enabled(conn: &mut PgConnection, present: &[&str]) -> Result<Vec<Finding>, sqlx::Error> {
    let names: Vec<String> = present.iter().map(|t| (*t).to_owned()).collect();
    let off: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relname = ANY($1::text[]) AND NOT c.relrowsecurity ORDER BY 1",
    )
    .bind(names)
    .fetch_all(conn)
    .await?;
    Ok(off
        .into_iter()
        .map(|table| {
            let detail = format!(
                "row-level security is disabled on {table}: every tenant can read every row \
                 (ALTER TABLE {table} ENABLE ROW LEVEL SECURITY)"
            );
            Finding::new(CheckName::RlsEnabled, &table, None, detail)
        })
        .collect())
}

/// No two audit rows share a hash.
pub async fn duplicate_hashes(conn: &mut PgConnection, cap: usize) -> Result<Vec<Finding>, sqlx::Error> {
    let rows: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT hash, count(*), string_agg(id::text, ', ' ORDER BY id)
         FROM public.audit_logs WHERE hash IS NOT NULL
         GROUP BY hash HAVING count(*) > 1 ORDER BY min(id) LIMIT $1",
    )
    .bind(limit(cap))
    .fetch_all(conn)
    .await?;
    Ok(capped(
        CheckName::ChainDuplicateHash,
        "audit_logs",
        cap,
        rows,
        |(hash, n, ids)| {
            (
                ids.split(", ").next().map(str::to_owned),
                format!("{n} rows share hash {hash}: ids {ids}"),
            )
        },
    ))
}

/// 4.2: billing runs neither completed nor rolled back.
pub async fn billing_runs(conn: &mut PgConnection, cap: usize) -> Result<Vec<Finding>, sqlx::Error> {
    type Run = (i64, String, i32, i64, i32, Option<String>);
    let rows: Vec<Run> = sqlx::query_as(
        "SELECT run_id, status, expected_lines, (inserted + updated)::bigint AS actual_lines,
                conflict_count, error_message
         FROM public.billing_runs
         WHERE status NOT IN ('completed', 'rolled_back')
         ORDER BY created_at DESC, run_id LIMIT $1",
    )
    .bind(limit(cap))
    .fetch_all(conn)
    .await?;
    Ok(capped(
        CheckName::BillingRuns,
        "billing_runs",
        cap,
        rows,
        |(id, status, expected, actual, conflicts, error)| {
            (
                Some(id.to_string()),
                format!(
                    "status {status}: expected {expected} lines, {actual} written, {conflicts} conflicts{}",
                    error.map(|e| format!(", error: {e}")).unwrap_or_default()
                ),
            )
        },
    ))
}

/// 4.3: per invoice, live charges equal live credits within 0.01.
pub async fn invoice_balance(conn: &mut PgConnection, cap: usize) -> Result<Vec<Finding>, sqlx::Error> {
    let rows: Vec<(i64, Decimal, Decimal)> = sqlx::query_as(
        "SELECT i.id,
                sum(CASE WHEN il.line_type = 'charge' THEN il.amount ELSE 0 END),
                sum(CASE WHEN il.line_type = 'credit' THEN il.amount ELSE 0 END)
         FROM public.monthly_invoices i
         JOIN public.invoice_lines il ON il.invoice_id = i.id AND il.deleted_at IS NULL
         GROUP BY i.id
         HAVING abs(sum(CASE WHEN il.line_type = 'charge' THEN il.amount ELSE 0 END) -
                    sum(CASE WHEN il.line_type = 'credit' THEN il.amount ELSE 0 END)) > 0.01
         ORDER BY i.id LIMIT $1",
    )
    .bind(limit(cap))
    .fetch_all(conn)
    .await?;
    Ok(capped(
        CheckName::InvoiceBalance,
        "monthly_invoices",
        cap,
        rows,
        |(id, charges, credits)| {
            (
                Some(id.to_string()),
                format!(
                    "charges {charges} and credits {credits} differ by {}",
                    charges - credits
                ),
            )
        },
    ))
}

/// 4.4: per tenant, ledger charges minus payments within `threshold`.
pub async fn ledger_consistency(
    conn: &mut PgConnection,
    threshold: Decimal,
    cap: usize,
) -> Result<Vec<Finding>, sqlx::Error> {
    let rows: Vec<(i64, Decimal, Decimal)> = sqlx::query_as(
        "SELECT t.id,
                sum(CASE WHEN le.type = 'charge' THEN le.amount ELSE 0 END),
                sum(CASE WHEN le.type = 'payment' THEN le.amount ELSE 0 END)
         FROM public.tenants t
         JOIN public.ledger_entries le ON le.tenant_id = t.id
         GROUP BY t.id
         HAVING abs(sum(CASE WHEN le.type = 'charge' THEN le.amount ELSE 0 END) -
                    sum(CASE WHEN le.type = 'payment' THEN le.amount ELSE 0 END)) > $1
         ORDER BY t.id LIMIT $2",
    )
    .bind(threshold)
    .bind(limit(cap))
    .fetch_all(conn)
    .await?;
    Ok(capped(
        CheckName::LedgerConsistency,
        "tenants",
        cap,
        rows,
        |(id, charges, payments)| {
            (
                Some(id.to_string()),
                format!(
                    "charges {charges} minus payments {payments} is {}, beyond the threshold {threshold}",
                    charges - payments
                ),
            )
        },
    ))
}

/// 4.5: live invoice lines whose invoice does not exist.
pub async fn orphaned_invoice_lines(conn: &mut PgConnection, cap: usize) -> Result<Vec<Finding>, sqlx::Error> {
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT il.id, il.invoice_id FROM public.invoice_lines il
         WHERE il.deleted_at IS NULL
           AND NOT EXISTS (SELECT 1 FROM public.monthly_invoices mi WHERE mi.id = il.invoice_id)
         ORDER BY il.id LIMIT $1",
    )
    .bind(limit(cap))
    .fetch_all(conn)
    .await?;
    Ok(capped(
        CheckName::OrphanedInvoiceLines,
        "invoice_lines",
        cap,
        rows,
        |(id, invoice)| (Some(id.to_string()), format!("invoice {invoice} does not exist")),
    ))
}

/// 4.5: ledger entries whose tenant does not exist.
pub async fn orphaned_ledger_entries(conn: &mut PgConnection, cap: usize) -> Result<Vec<Finding>, sqlx::Error> {
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT le.id, le.tenant_id FROM public.ledger_entries le
         WHERE NOT EXISTS (SELECT 1 FROM public.tenants t WHERE t.id = le.tenant_id)
         ORDER BY le.id LIMIT $1",
    )
    .bind(limit(cap))
    .fetch_all(conn)
    .await?;
    Ok(capped(
        CheckName::OrphanedLedgerEntries,
        "ledger_entries",
        cap,
        rows,
        |(id, tenant)| (Some(id.to_string()), format!("tenant {tenant} does not exist")),
    ))
}

/// The playbook's 4.1 query, verbatim (simple query protocol, as `psql -c`
/// sends it): its `broken_links` count.
pub async fn playbook_broken_links(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    use sqlx::Row as _;
    let rows: Vec<PgRow> = sqlx::raw_sql(crate::playbook::AUDIT_HASH_CHAIN.sql)
        .fetch_all(conn)
        .await?;
    let text: Option<String> = match rows.first() {
        Some(row) => row.try_get_unchecked(0)?,
        None => None,
    };
    Ok(text.and_then(|t| t.parse().ok()).unwrap_or(-1))
}

/// One more row than kept, to know whether there were more.
fn limit(cap: usize) -> i64 {
    i64::try_from(cap).unwrap_or(i64::MAX - 1) + 1
}

fn capped<R>(
    check: CheckName,
    table: &str,
    cap: usize,
    rows: Vec<R>,
    describe: impl Fn(R) -> (Option<String>, String),
) -> Vec<Finding> {
    let more = rows.len() > cap;
    let mut findings: Vec<Finding> = rows
        .into_iter()
        .take(cap)
        .map(|row| {
            let (key, detail) = describe(row);
            Finding::new(check, table, key, detail)
        })
        .collect();
    if more {
        findings.push(Finding::new(
            check,
            table,
            None,
            format!("more {check} findings not listed (the first {cap} are)"),
        ));
    }
    findings
}
