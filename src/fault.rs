//! Incident injection: the corruptions drills and tests cause on purpose.
//!
//! Every operator takes a [`Disposable`]: proof that the target database is
//! one this process created and will throw away. Only four things mint it:
//! [`Disposable::embedded`] (a database on one of an
//! [`EmbeddedEnvironment`]'s own clusters), [`Disposable::owned_by`] (what an
//! [`Environment`] of any backend says the drill owns: on staging, only the
//! drill's own restored copies), [`Disposable::restored_copy`] (the
//! database a drill's own restore just created) and
//! [`Disposable::archiving_primary`] (the primary of an
//! [`ArchivingEnvironment`], which is always the drill's own). A URL typed by
//! a user, a staging server or the source database of a staging drill cannot
//! get one, so no operator can touch them.
//!
//! Damage on disk ([`flip_page_bytes`]) needs more: the server's data
//! directory, which only [`Disposable::archiving_primary`] records. Every
//! other token is refused, and so is a file outside that directory.
//!
//! Each operator returns an [`Injected`]: what it changed, and the findings
//! the integrity checks must now report ([`Injected::expect`]), so a test can
//! check that each finding points at the corrupted row.
//!
//! Damage to the backups themselves (a WAL segment deleted, an object's
//! bytes flipped, a backup made stale) is in [`archive`], behind its own
//! token for buckets, [`archive::DisposableBucket`].
//!
//! # Caveats
//!
//! The playbook's 4.3 query flags an invoice only when charges and credits
//! differ by more than 0.01: operators change amounts by at least 2 cents.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{Connection, PgConnection, Row};

use crate::env::{ArchivingEnvironment, EmbeddedEnvironment, Environment};
use crate::fixtures::audit_hash::GENESIS;
use crate::integrity::chain::{AUDIT_TABLE, AuditRow};
use crate::integrity::{CheckName, Expected};
use crate::pg::{ConnInfo, PgError, quote_ident};
use crate::restore::RestoreReport;

pub mod archive;

pub type Result<T, E = FaultError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FaultError {
    #[error(
        "refusing to inject an incident into {target}: {reason}; incidents only go into a database the drill \
         created itself (an embedded environment's cluster, or the drill's own restored copy)"
    )]
    NotDisposable { target: String, reason: String },
    #[error("failed to find {table} row {key} in {target} to corrupt; pick a key that exists")]
    NoSuchRow { target: String, table: String, key: String },
    #[error("table {table:?} has no amount to tamper; use invoice_lines, ledger_entries, payments or monthly_invoices")]
    NoAmount { table: String },
    #[error("audit_logs in {target} is empty: there is no chain to corrupt; seed the fixture first")]
    EmptyChain { target: String },
    #[error("failed to damage `{}` on disk; stop the server first and check the file is writable", path.display())]
    Disk {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "refusing to inject an incident into {location}: {reason}; archive incidents only go into a bucket the \
         drill's own environment created (the embedded or container S3 of an embedded or containers backend), \
         never staging's"
    )]
    NotDisposableBucket { location: String, reason: String },
    #[error("refusing to {action} {key} in {location}: {reason}")]
    NotInArchive {
        action: &'static str,
        location: String,
        key: String,
        reason: String,
    },
    #[error(transparent)]
    Postgres(#[from] PgError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("failed to find the newest backup to age")]
    NoBackup(#[source] Box<crate::restore::RestoreError>),
}

/// Proof that a database may be corrupted: see the module docs.
#[derive(Debug, Clone)]
pub struct Disposable {
    target: ConnInfo,
    /// The target server's data directory, where the token allows damage
    /// on disk ([`flip_page_bytes`]); `None`: SQL-level damage only.
    data_dir: Option<PathBuf>,
}

impl Disposable {
    /// A database on one of `env`'s own clusters.
    ///
    /// # Errors
    /// [`FaultError::NotDisposable`] when `target` is on any other server.
    pub fn embedded(env: &EmbeddedEnvironment, target: &ConnInfo) -> Result<Self> {
        if env.owns(target) {
            Ok(Self {
                target: target.clone(),
                data_dir: None,
            })
        } else {
            Err(FaultError::NotDisposable {
                target: target.to_string(),
                reason: "the server is not one of this embedded environment's clusters".to_owned(),
            })
        }
    }

    /// A database `env` says the drill owns ([`Environment::owns`]): any
    /// database on a disposable backend's own servers, and on staging only
    /// the databases the drill created itself (its restored copies).
    ///
    /// # Errors
    /// [`FaultError::NotDisposable`] for anything else: the staging source,
    /// a server the environment did not start.
    pub fn owned_by(env: &Environment, target: &ConnInfo) -> Result<Self> {
        if env.owns(target) {
            Ok(Self {
                target: target.clone(),
                data_dir: None,
            })
        } else {
            Err(FaultError::NotDisposable {
                target: target.to_string(),
                reason: format!("the {} environment did not create this database", env.backend().name()),
            })
        }
    }

    /// The database a drill's restore just created (never the backup's
    /// source database, which keeps its own name).
    ///
    /// # Errors
    /// [`FaultError::NotDisposable`] when the report names the source database.
    pub fn restored_copy(report: &RestoreReport) -> Result<Self> {
        if report.database == report.manifest.database || report.target.database != report.database {
            return Err(FaultError::NotDisposable {
                target: report.target.to_string(),
                reason: format!(
                    "it is not a restored copy (the backup's source database is {:?})",
                    report.manifest.database
                ),
            });
        }
        Ok(Self {
            target: report.target.clone(),
            data_dir: None,
        })
    }

    /// The application database on `env`'s primary, with the primary's
    /// data directory: an archiving environment's primary is always the
    /// drill's own (embedded or containers, never staging), so this is the
    /// one token that allows damage on disk.
    pub fn archiving_primary(env: &ArchivingEnvironment) -> Self {
        Self {
            target: env.source(),
            data_dir: Some(env.primary_data_dir()),
        }
    }

    /// The database this token allows corrupting.
    pub fn target(&self) -> &ConnInfo {
        &self.target
    }

    async fn connect(&self) -> Result<PgConnection> {
        Ok(PgConnection::connect_with(&self.target.connect_options())
            .await
            .map_err(PgError::sql(format!(
                "connect to {} to inject an incident",
                self.target
            )))?)
    }
}

/// Which incident an operator caused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Fault {
    DeleteRows,
    TamperAmount,
    TamperAuditPayload,
    TamperAndRehash,
    MoveAuditRow,
    ForgeGenesis,
    NullHash,
    TruncateChainTail,
    OrphanInvoiceLine,
    DisableRls,
    StuckBillingRun,
    UnbalanceInvoice,
    BadMigration,
    FlipPageBytes,
    DeleteWalSegment,
    DamageObject,
    AgeBackup,
}

/// What an operator did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Injected {
    pub fault: Fault,
    /// The table changed.
    pub table: String,
    /// The keys of the rows changed (or the table's name for DDL).
    pub keys: Vec<String>,
    /// Findings the checks must now report (at least these).
    pub expect: Vec<Expected>,
    /// The transaction that did it, when the operator ran one transaction
    /// (the ground truth of `recover --to-last-good`).
    pub xid: Option<u32>,
}

fn key_column(table: &str) -> &'static str {
    if table == "billing_runs" { "run_id" } else { "id" }
}

/// Commits `tx`, returning its transaction id (the one `pg_waldump` and
/// `recovery_target_xid` name: the low 32 bits of `txid_current()`).
async fn commit(mut tx: sqlx::Transaction<'_, sqlx::Postgres>, what: &str) -> Result<u32> {
    let xid: i64 = sqlx::query_scalar("SELECT txid_current() % 4294967296")
        .fetch_one(&mut *tx)
        .await
        .map_err(PgError::sql(format!("read the transaction id of {what}")))?;
    tx.commit().await.map_err(PgError::sql(format!("commit {what}")))?;
    Ok(u32::try_from(xid).expect("reduced modulo 2^32"))
}

/// Deletes rows by primary key (`run_id` for `billing_runs`). For
/// `audit_logs`, expects 4.1's broken link on the next surviving row (or a
/// genesis finding when the chain's first rows go).
pub async fn delete_rows(d: &Disposable, table: &str, keys: &[i64]) -> Result<Injected> {
    let mut conn = d.connect().await?;
    let mut tx = conn.begin().await.map_err(PgError::sql("begin"))?;
    let mut expect = Vec::new();
    if table == AUDIT_TABLE {
        let successors: Vec<(i64, bool)> = sqlx::query_as(
            "SELECT DISTINCT s.id, EXISTS (SELECT 1 FROM audit_logs p WHERE p.id <> ALL($1) \
                 AND (p.created_at, p.id) < (s.created_at, s.id)) \
             FROM audit_logs d \
             CROSS JOIN LATERAL (SELECT a.id, a.created_at FROM audit_logs a \
                 WHERE (a.created_at, a.id) > (d.created_at, d.id) AND a.id <> ALL($1) \
                 ORDER BY a.created_at, a.id LIMIT 1) s \
             WHERE d.id = ANY($1) AND d.hash IS NOT NULL",
        )
        .bind(keys)
        .fetch_all(&mut *tx)
        .await
        .map_err(PgError::sql("find the rows after the deleted audit rows"))?;
        for (id, has_predecessor) in successors {
            let check = if has_predecessor {
                CheckName::ChainLinks
            } else {
                CheckName::ChainGenesis
            };
            expect.push(Expected::new(check, AUDIT_TABLE, Some(id.to_string())));
        }
    }
    let sql = format!(
        "DELETE FROM {} WHERE {} = ANY($1) RETURNING {}",
        quote_ident(table),
        key_column(table),
        key_column(table)
    );
    let deleted: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(keys)
        .fetch_all(&mut *tx)
        .await
        .map_err(PgError::sql(format!("delete rows from {table}")))?;
    let xid = commit(tx, "the deletion").await?;
    let _ = conn.close().await;
    Ok(Injected {
        xid: Some(xid),
        fault: Fault::DeleteRows,
        table: table.to_owned(),
        keys: deleted.iter().map(i64::to_string).collect(),
        expect,
    })
}

/// Adds `delta_cents` (at least 2 in absolute value to be visible to 4.3)
/// to one row's amount. Expects an unbalanced invoice for an invoice line;
/// a ledger imbalance for a ledger entry when the tenant's imbalance then
/// exceeds the playbook's 10,000 threshold.
pub async fn tamper_amount(d: &Disposable, table: &str, id: i64, delta_cents: i64) -> Result<Injected> {
    let (column, group) = match table {
        "invoice_lines" => ("amount", Some("invoice_id")),
        "ledger_entries" => ("amount", Some("tenant_id")),
        "payments" | "monthly_invoices" => (if table == "payments" { "amount" } else { "total" }, None),
        other => {
            return Err(FaultError::NoAmount {
                table: other.to_owned(),
            });
        }
    };
    let mut conn = d.connect().await?;
    let mut tx = conn.begin().await.map_err(PgError::sql("begin"))?;
    let sql = format!(
        "UPDATE {table} SET {column} = {column} + $2::numeric / 100 WHERE id = $1 RETURNING {}",
        group.unwrap_or("id")
    );
    let owner: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(delta_cents)
        .fetch_optional(&mut *tx)
        .await
        .map_err(PgError::sql(format!("tamper the amount of {table} row {id}")))?;
    let owner = owner.ok_or_else(|| FaultError::NoSuchRow {
        target: d.target.to_string(),
        table: table.to_owned(),
        key: id.to_string(),
    })?;
    let mut expect = Vec::new();
    match table {
        "invoice_lines" => {
            let live: bool = sqlx::query_scalar("SELECT deleted_at IS NULL FROM invoice_lines WHERE id = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await
                .map_err(PgError::sql("read the tampered line"))?;
            if live && delta_cents.abs() > 1 {
                expect.push(Expected::new(
                    CheckName::InvoiceBalance,
                    "monthly_invoices",
                    Some(owner.to_string()),
                ));
            }
        }
        "ledger_entries" => {
            let imbalance: i64 = sqlx::query_scalar(
                "SELECT (abs(sum(CASE WHEN type = 'charge' THEN amount ELSE 0 END) \
                 - sum(CASE WHEN type = 'payment' THEN amount ELSE 0 END)) * 100)::bigint \
                 FROM ledger_entries WHERE tenant_id = $1",
            )
            .bind(owner)
            .fetch_one(&mut *tx)
            .await
            .map_err(PgError::sql("read the tenant's ledger"))?;
            if imbalance > 1_000_000 {
                expect.push(Expected::new(
                    CheckName::LedgerConsistency,
                    "tenants",
                    Some(owner.to_string()),
                ));
            }
        }
        _ => {}
    }
    let xid = commit(tx, "the tampered amount").await?;
    let _ = conn.close().await;
    Ok(Injected {
        xid: Some(xid),
        fault: Fault::TamperAmount,
        table: table.to_owned(),
        keys: vec![id.to_string()],
        expect,
    })
}

/// Adds a charge line of `cents` (at least 2) to a live invoice, as if a
/// line had been inserted without its credit. Expects an unbalanced invoice.
pub async fn unbalance_invoice(d: &Disposable, invoice_id: i64, cents: i64) -> Result<Injected> {
    let mut conn = d.connect().await?;
    let line: Option<i64> = sqlx::query_scalar(
        "INSERT INTO invoice_lines (id, invoice_id, line_type, amount, description) \
         SELECT (SELECT coalesce(max(id), 0) + 1 FROM invoice_lines), i.id, 'charge', $2::numeric / 100, \
                'injected: charge without credit' \
         FROM monthly_invoices i WHERE i.id = $1 RETURNING id",
    )
    .bind(invoice_id)
    .bind(cents)
    .fetch_optional(&mut conn)
    .await
    .map_err(PgError::sql(format!("unbalance invoice {invoice_id}")))?;
    let _ = conn.close().await;
    let line = line.ok_or_else(|| FaultError::NoSuchRow {
        target: d.target.to_string(),
        table: "monthly_invoices".to_owned(),
        key: invoice_id.to_string(),
    })?;
    Ok(Injected {
        xid: None,
        fault: Fault::UnbalanceInvoice,
        table: "invoice_lines".to_owned(),
        keys: vec![line.to_string()],
        expect: vec![Expected::new(
            CheckName::InvoiceBalance,
            "monthly_invoices",
            Some(invoice_id.to_string()),
        )],
    })
}

/// A bad migration in one transaction: every charge line whose id is
/// `bucket` modulo 7 tripled. Expects invoices out of balance (4.3).
pub async fn bad_migration(d: &Disposable, bucket: i64) -> Result<Injected> {
    let mut conn = d.connect().await?;
    let mut tx = conn.begin().await.map_err(PgError::sql("begin"))?;
    let changed: Vec<(i64, i64)> = sqlx::query_as(
        "UPDATE invoice_lines SET amount = amount * 3 \
         WHERE line_type = 'charge' AND amount <> 0 AND id % 7 = $1 RETURNING id, invoice_id",
    )
    .bind(bucket.rem_euclid(7))
    .fetch_all(&mut *tx)
    .await
    .map_err(PgError::sql("run the bad migration"))?;
    let xid = commit(tx, "the bad migration").await?;
    let _ = conn.close().await;
    let invoices: std::collections::BTreeSet<i64> = changed.iter().map(|(_, invoice)| *invoice).collect();
    Ok(Injected {
        xid: Some(xid),
        fault: Fault::BadMigration,
        table: "invoice_lines".to_owned(),
        keys: changed.iter().map(|(id, _)| id.to_string()).collect(),
        expect: invoices
            .into_iter()
            .map(|invoice| Expected::new(CheckName::InvoiceBalance, "monthly_invoices", Some(invoice.to_string())))
            .collect(),
    })
}

/// Moves a live invoice line to an invoice that does not exist, past the
/// foreign key (`session_replication_role = replica`, superuser only).
/// Expects the orphaned line, and its old invoice out of balance.
pub async fn orphan_invoice_line(d: &Disposable, line_id: i64) -> Result<Injected> {
    let mut conn = d.connect().await?;
    let mut tx = conn.begin().await.map_err(PgError::sql("begin"))?;
    sqlx::raw_sql("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .map_err(PgError::sql("bypass foreign keys (needs a superuser)"))?;
    let moved: Option<(i64, Option<DateTime<Utc>>)> = sqlx::query_as(
        "WITH old AS (SELECT invoice_id FROM invoice_lines WHERE id = $1) \
         UPDATE invoice_lines SET invoice_id = (SELECT coalesce(max(id), 0) + 1000000 FROM monthly_invoices) \
         WHERE id = $1 RETURNING (SELECT invoice_id FROM old), deleted_at",
    )
    .bind(line_id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(PgError::sql(format!("orphan invoice line {line_id}")))?;
    let (old_invoice, deleted_at) = moved.ok_or_else(|| FaultError::NoSuchRow {
        target: d.target.to_string(),
        table: "invoice_lines".to_owned(),
        key: line_id.to_string(),
    })?;
    let xid = commit(tx, "the orphaned line").await?;
    let _ = conn.close().await;
    let mut expect = Vec::new();
    if deleted_at.is_none() {
        expect.push(Expected::new(
            CheckName::OrphanedInvoiceLines,
            "invoice_lines",
            Some(line_id.to_string()),
        ));
        expect.push(Expected::new(
            CheckName::InvoiceBalance,
            "monthly_invoices",
            Some(old_invoice.to_string()),
        ));
    }
    Ok(Injected {
        xid: Some(xid),
        fault: Fault::OrphanInvoiceLine,
        table: "invoice_lines".to_owned(),
        keys: vec![line_id.to_string()],
        expect,
    })
}

/// Turns row-level security off on a table. Expects an RLS finding.
pub async fn disable_rls(d: &Disposable, table: &str) -> Result<Injected> {
    let mut conn = d.connect().await?;
    let sql = format!("ALTER TABLE {} DISABLE ROW LEVEL SECURITY", quote_ident(table));
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .map_err(PgError::sql(format!("disable row-level security on {table}")))?;
    let _ = conn.close().await;
    Ok(Injected {
        xid: None,
        fault: Fault::DisableRls,
        table: table.to_owned(),
        keys: vec![table.to_owned()],
        expect: vec![Expected::new(CheckName::RlsEnabled, table, None)],
    })
}

/// Puts a billing run back into `running`, as if the billing job had died
/// mid-run. Expects the run in 4.2.
pub async fn stuck_billing_run(d: &Disposable, run_id: i64) -> Result<Injected> {
    let mut conn = d.connect().await?;
    let updated = sqlx::query(
        "UPDATE billing_runs SET status = 'running', completed_at = NULL, error_message = NULL WHERE run_id = $1",
    )
    .bind(run_id)
    .execute(&mut conn)
    .await
    .map_err(PgError::sql(format!("leave billing run {run_id} running")))?;
    let _ = conn.close().await;
    if updated.rows_affected() == 0 {
        return Err(FaultError::NoSuchRow {
            target: d.target.to_string(),
            table: "billing_runs".to_owned(),
            key: run_id.to_string(),
        });
    }
    Ok(Injected {
        xid: None,
        fault: Fault::StuckBillingRun,
        table: "billing_runs".to_owned(),
        keys: vec![run_id.to_string()],
        expect: vec![Expected::new(
            CheckName::BillingRuns,
            "billing_runs",
            Some(run_id.to_string()),
        )],
    })
}

/// The columns of an [`AuditRow`], in its field order.
pub const AUDIT_COLUMNS: &str =
    "id, created_at, tenant_id, actor, action, entity_type, entity_id, payload, previous_hash, hash";

/// Reads an `audit_logs` row selected with [`AUDIT_COLUMNS`].
pub fn audit_row(row: &PgRow) -> std::result::Result<AuditRow, sqlx::Error> {
    Ok(AuditRow {
        id: row.try_get(0)?,
        created_at: row.try_get(1)?,
        tenant_id: row.try_get(2)?,
        actor: row.try_get(3)?,
        action: row.try_get(4)?,
        entity_type: row.try_get(5)?,
        entity_id: row.try_get(6)?,
        payload: row.try_get(7)?,
        previous_hash: row.try_get(8)?,
        hash: row.try_get(9)?,
    })
}

async fn fetch_audit_row(conn: &mut PgConnection, d: &Disposable, id: i64) -> Result<AuditRow> {
    let sql = format!("SELECT {AUDIT_COLUMNS} FROM audit_logs WHERE id = $1 FOR UPDATE");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(PgError::sql(format!("read audit row {id}")))?
        .ok_or_else(|| FaultError::NoSuchRow {
            target: d.target.to_string(),
            table: AUDIT_TABLE.to_owned(),
            key: id.to_string(),
        })?;
    Ok(audit_row(&row).map_err(PgError::sql(format!("decode audit row {id}")))?)
}

/// The chain's head (newest row in chain order), if any.
async fn chain_head_id(conn: &mut PgConnection) -> Result<Option<i64>> {
    Ok(
        sqlx::query_scalar("SELECT id FROM audit_logs ORDER BY created_at DESC, id DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await
            .map_err(PgError::sql("read the chain head"))?,
    )
}

const REHASH_BATCH: i64 = 5_000;

/// Writes `row` with `previous_hash` and its canonical hash, then re-links
/// and re-hashes every row after it in chain order, in batches, with the
/// canonical function: the chain is whole again, only different.
/// Returns the rows rewritten.
async fn rewrite_from(conn: &mut PgConnection, row: &mut AuditRow) -> Result<u64> {
    let hash = row.canonical_hash();
    sqlx::query("UPDATE audit_logs SET payload = $2, previous_hash = $3, hash = $4 WHERE id = $1")
        .bind(row.id)
        .bind(&row.payload)
        .bind(&row.previous_hash)
        .bind(&hash)
        .execute(&mut *conn)
        .await
        .map_err(PgError::sql(format!("rewrite audit row {}", row.id)))?;
    let mut rewritten = 1;
    let (mut after_at, mut after_id, mut previous) = (row.created_at, row.id, hash);
    let select = format!(
        "SELECT {AUDIT_COLUMNS} FROM audit_logs WHERE (created_at, id) > ($1, $2) ORDER BY created_at, id LIMIT $3"
    );
    loop {
        let rows = sqlx::query(sqlx::AssertSqlSafe(select.clone()))
            .bind(after_at)
            .bind(after_id)
            .bind(REHASH_BATCH)
            .fetch_all(&mut *conn)
            .await
            .map_err(PgError::sql("read the rest of the chain to re-hash"))?;
        if rows.is_empty() {
            return Ok(rewritten);
        }
        let (mut ids, mut links, mut hashes) = (Vec::new(), Vec::new(), Vec::new());
        for pg_row in &rows {
            let mut next = audit_row(pg_row).map_err(PgError::sql("decode an audit row"))?;
            next.previous_hash = std::mem::take(&mut previous);
            previous = next.canonical_hash();
            (after_at, after_id) = (next.created_at, next.id);
            ids.push(next.id);
            links.push(next.previous_hash);
            hashes.push(previous.clone());
        }
        rewritten += ids.len() as u64;
        sqlx::query(
            "UPDATE audit_logs a SET previous_hash = v.p, hash = v.h \
             FROM unnest($1::bigint[], $2::text[], $3::text[]) AS v(id, p, h) WHERE a.id = v.id",
        )
        .bind(&ids)
        .bind(&links)
        .bind(&hashes)
        .execute(&mut *conn)
        .await
        .map_err(PgError::sql("write the re-hashed chain"))?;
    }
}

fn edited(payload: &str) -> String {
    format!("{payload} ")
}

/// Edits one audit row's payload and leaves its hash as it was. Expects a
/// content finding on the row (the playbook's 4.1 sees nothing).
pub async fn tamper_audit_payload(d: &Disposable, id: i64) -> Result<Injected> {
    let sql = "UPDATE audit_logs SET payload = payload || ' ' WHERE id = $1";
    update_audit_row(
        d,
        id,
        sql,
        "tamper the payload of",
        Fault::TamperAuditPayload,
        CheckName::ChainContent,
    )
    .await
}

/// Runs a one-row `UPDATE ... WHERE id = $1` on `audit_logs` and reports it
/// as `fault`, expecting `check` to find the row.
async fn update_audit_row(
    d: &Disposable,
    id: i64,
    sql: &'static str,
    what: &str,
    fault: Fault,
    check: CheckName,
) -> Result<Injected> {
    let mut conn = d.connect().await?;
    let updated = sqlx::query(sql)
        .bind(id)
        .execute(&mut conn)
        .await
        .map_err(PgError::sql(format!("{what} audit row {id}")))?;
    let _ = conn.close().await;
    if updated.rows_affected() == 0 {
        return Err(FaultError::NoSuchRow {
            target: d.target.to_string(),
            table: AUDIT_TABLE.to_owned(),
            key: id.to_string(),
        });
    }
    Ok(Injected {
        xid: None,
        fault,
        table: AUDIT_TABLE.to_owned(),
        keys: vec![id.to_string()],
        expect: vec![Expected::new(check, AUDIT_TABLE, Some(id.to_string()))],
    })
}

/// Edits one audit row's payload and re-hashes it and the rest of the chain
/// with the canonical function: a careful attacker. Nothing inside the
/// database can tell; expects the anchor check to report the anchored head
/// (the head at the time of the incident) rewritten.
pub async fn tamper_and_rehash(d: &Disposable, id: i64) -> Result<Injected> {
    let mut conn = d.connect().await?;
    let mut tx = conn.begin().await.map_err(PgError::sql("begin"))?;
    let mut row = fetch_audit_row(&mut tx, d, id).await?;
    let head = chain_head_id(&mut tx).await?.unwrap_or(id);
    row.payload = edited(&row.payload);
    let rewritten = rewrite_from(&mut tx, &mut row).await?;
    let xid = commit(tx, "the re-hashed chain").await?;
    let _ = conn.close().await;
    tracing::info!(id, rewritten, "audit payload tampered and chain re-hashed");
    Ok(Injected {
        xid: Some(xid),
        fault: Fault::TamperAndRehash,
        table: AUDIT_TABLE.to_owned(),
        keys: vec![id.to_string()],
        expect: vec![Expected::new(
            CheckName::ChainAnchor,
            AUDIT_TABLE,
            Some(head.to_string()),
        )],
    })
}

/// Moves one audit row in time: `created_at` set to `to`, and with
/// `rehash` the row's hash recomputed for its new time (the rest of the
/// chain left as it was). Expects, not re-hashed, a content finding on the
/// row; re-hashed, a broken link on the row that linked to it (a genesis
/// finding if that row is now the chain's first), or, when nothing linked
/// to it (the head), the anchor check to report the anchored head gone.
/// Nothing when `to` is the row's time already.
pub async fn move_audit_row(d: &Disposable, id: i64, to: DateTime<Utc>, rehash: bool) -> Result<Injected> {
    let mut conn = d.connect().await?;
    let mut tx = conn.begin().await.map_err(PgError::sql("begin"))?;
    let mut row = fetch_audit_row(&mut tx, d, id).await?;
    let mut expect = Vec::new();
    if row.created_at != to {
        let successor: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM audit_logs WHERE previous_hash = $1 AND id <> $2 ORDER BY created_at, id LIMIT 1",
        )
        .bind(&row.hash)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(PgError::sql(format!("find the row linked to audit row {id}")))?;
        let old_hash = row.hash.clone();
        row.created_at = to;
        let hash = if rehash {
            Some(row.canonical_hash())
        } else {
            old_hash.clone()
        };
        sqlx::query("UPDATE audit_logs SET created_at = $2, hash = $3 WHERE id = $1")
            .bind(id)
            .bind(to)
            .bind(&hash)
            .execute(&mut *tx)
            .await
            .map_err(PgError::sql(format!("move audit row {id} in time")))?;
        let (check, key) = match (rehash, successor) {
            (false, _) if old_hash.is_none() => (None, id),
            (false, _) => (Some(CheckName::ChainContent), id),
            (true, None) => (Some(CheckName::ChainAnchor), id),
            (true, Some(successor)) => {
                let first: Option<i64> =
                    sqlx::query_scalar("SELECT id FROM audit_logs ORDER BY created_at, id LIMIT 1")
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(PgError::sql("read the chain's first row"))?;
                let check = if first == Some(successor) {
                    CheckName::ChainGenesis
                } else {
                    CheckName::ChainLinks
                };
                (Some(check), successor)
            }
        };
        expect.extend(check.map(|check| Expected::new(check, AUDIT_TABLE, Some(key.to_string()))));
    }
    let xid = commit(tx, "the moved audit row").await?;
    let _ = conn.close().await;
    Ok(Injected {
        xid: Some(xid),
        fault: Fault::MoveAuditRow,
        table: AUDIT_TABLE.to_owned(),
        keys: vec![id.to_string()],
        expect,
    })
}

/// Makes an audit row mid-chain a second `GENESIS` (its hash recomputed and
/// the rest of the chain re-hashed, so every link holds): the playbook's 4.1
/// query skips `GENESIS` rows and counts nothing. Expects a genesis finding
/// on the row (and, against an earlier anchor, the head rewritten).
pub async fn forge_genesis(d: &Disposable, id: i64) -> Result<Injected> {
    let mut conn = d.connect().await?;
    let mut tx = conn.begin().await.map_err(PgError::sql("begin"))?;
    let mut row = fetch_audit_row(&mut tx, d, id).await?;
    row.previous_hash = GENESIS.to_owned();
    rewrite_from(&mut tx, &mut row).await?;
    let xid = commit(tx, "the forged genesis").await?;
    let _ = conn.close().await;
    Ok(Injected {
        xid: Some(xid),
        fault: Fault::ForgeGenesis,
        table: AUDIT_TABLE.to_owned(),
        keys: vec![id.to_string()],
        expect: vec![Expected::new(
            CheckName::ChainGenesis,
            AUDIT_TABLE,
            Some(id.to_string()),
        )],
    })
}

/// Sets one audit row's hash to NULL. Expects a NULL-hash finding (4.1
/// skips the row; the next row's link then breaks, if there is one).
pub async fn null_hash(d: &Disposable, id: i64) -> Result<Injected> {
    let sql = "UPDATE audit_logs SET hash = NULL WHERE id = $1";
    update_audit_row(
        d,
        id,
        sql,
        "null the hash of",
        Fault::NullHash,
        CheckName::ChainNullHash,
    )
    .await
}

/// Deletes the `rows` newest audit rows: what remains is a valid chain.
/// Expects the anchor check to report the anchored head gone.
pub async fn truncate_chain_tail(d: &Disposable, rows: i64) -> Result<Injected> {
    let mut conn = d.connect().await?;
    let mut tx = conn.begin().await.map_err(PgError::sql("begin"))?;
    let head = chain_head_id(&mut tx).await?.ok_or_else(|| FaultError::EmptyChain {
        target: d.target.to_string(),
    })?;
    let deleted: Vec<i64> = sqlx::query_scalar(
        "DELETE FROM audit_logs WHERE id IN \
         (SELECT id FROM audit_logs ORDER BY created_at DESC, id DESC LIMIT $1) RETURNING id",
    )
    .bind(rows)
    .fetch_all(&mut *tx)
    .await
    .map_err(PgError::sql("truncate the chain's tail"))?;
    let emptied: bool = sqlx::query_scalar("SELECT NOT EXISTS (SELECT 1 FROM audit_logs)")
        .fetch_one(&mut *tx)
        .await
        .map_err(PgError::sql("count what is left of the chain"))?;
    let xid = commit(tx, "the truncated chain").await?;
    let _ = conn.close().await;
    let mut expect = vec![Expected::new(
        CheckName::ChainAnchor,
        AUDIT_TABLE,
        Some(head.to_string()),
    )];
    // Cutting the whole chain also leaves a critical table empty.
    if emptied {
        expect.push(Expected::new(CheckName::CriticalTablesPresent, AUDIT_TABLE, None));
    }
    Ok(Injected {
        xid: Some(xid),
        fault: Fault::TruncateChainTail,
        table: AUDIT_TABLE.to_owned(),
        keys: deleted.iter().map(i64::to_string).collect(),
        expect,
    })
}

/// A table's main relation file, relative to its server's data directory
/// (`pg_relation_filepath`), found while the server runs so that
/// [`flip_page_bytes`] can damage it while the server is stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationFile {
    pub table: String,
    /// As `pg_relation_filepath` returns it: `base/16384/16402`.
    pub path: String,
}

/// Where `table`'s main relation file is in the data directory of `d`'s server.
pub async fn locate_relation(d: &Disposable, table: &str) -> Result<RelationFile> {
    let mut conn = d.connect().await?;
    let path: Option<String> = sqlx::query_scalar("SELECT pg_relation_filepath(to_regclass($1))")
        .bind(table)
        .fetch_one(&mut conn)
        .await
        .map_err(PgError::sql(format!("find {table}'s relation file")))?;
    conn.close().await.map_err(PgError::sql("close the connection"))?;
    let path = path.ok_or_else(|| FaultError::NoSuchRow {
        target: d.target.to_string(),
        table: table.to_owned(),
        key: "(the table itself)".to_owned(),
    })?;
    Ok(RelationFile {
        table: table.to_owned(),
        path,
    })
}

/// Flips `len` bytes at `offset` of `file` on disk (XOR `0xA5`), as a
/// failing disk or a bad storage layer would; stop the server first. With
/// data checksums on, reading the page then fails its checksum. No
/// integrity-suite finding is promised: the page cannot be read at all.
///
/// # Errors
/// [`FaultError::NotDisposable`] unless `d` names its server's data
/// directory ([`Disposable::archiving_primary`]) and `file` lies inside it;
/// [`FaultError::Disk`] when the file cannot be read or written.
pub fn flip_page_bytes(d: &Disposable, file: &RelationFile, offset: u64, len: usize) -> Result<Injected> {
    let path = file_in_data_dir(d, &file.path)?;
    let disk = |source| FaultError::Disk {
        path: path.clone(),
        source,
    };
    let mut relation = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(disk)?;
    let mut bytes = vec![0u8; len];
    relation.seek(SeekFrom::Start(offset)).map_err(disk)?;
    relation.read_exact(&mut bytes).map_err(disk)?;
    for b in &mut bytes {
        *b ^= 0xA5;
    }
    relation.seek(SeekFrom::Start(offset)).map_err(disk)?;
    relation.write_all(&bytes).map_err(disk)?;
    relation.sync_all().map_err(disk)?;
    Ok(Injected {
        xid: None,
        fault: Fault::FlipPageBytes,
        table: file.table.clone(),
        keys: vec![format!("{}@{offset}+{len}", file.path)],
        expect: Vec::new(),
    })
}

/// `relative` inside the data directory `d` allows damaging, or why not.
fn file_in_data_dir(d: &Disposable, relative: &str) -> Result<PathBuf> {
    let refuse = |reason: &str| FaultError::NotDisposable {
        target: d.target.to_string(),
        reason: reason.to_owned(),
    };
    let data_dir = d.data_dir.as_deref().ok_or_else(|| {
        refuse("the token does not name the server's data directory (only a drill's own archiving primary may be damaged on disk)")
    })?;
    let relative = Path::new(relative);
    if !relative.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(refuse(&format!(
            "`{}` is not a path inside the server's data directory",
            relative.display()
        )));
    }
    Ok(data_dir.join(relative))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::Secret;

    fn token(data_dir: Option<&Path>) -> Disposable {
        Disposable {
            target: ConnInfo {
                host: "127.0.0.1".to_owned(),
                port: 5432,
                user: "postgres".to_owned(),
                password: Secret::new("secret"),
                database: "immoflowme".to_owned(),
            },
            data_dir: data_dir.map(Path::to_path_buf),
        }
    }

    fn relation(path: &str) -> RelationFile {
        RelationFile {
            table: "invoice_lines".to_owned(),
            path: path.to_owned(),
        }
    }

    #[test]
    fn flip_page_bytes_flips_exactly_the_bytes_asked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("base/1")).unwrap();
        let original: Vec<u8> = (0..=255).cycle().take(8192).collect();
        std::fs::write(dir.path().join("base/1/2"), &original).unwrap();
        let injected = flip_page_bytes(&token(Some(dir.path())), &relation("base/1/2"), 6000, 16).unwrap();
        assert_eq!(injected.fault, Fault::FlipPageBytes);
        assert_eq!(injected.table, "invoice_lines");
        let damaged = std::fs::read(dir.path().join("base/1/2")).unwrap();
        for (i, (before, after)) in original.iter().zip(&damaged).enumerate() {
            let expected = if (6000..6016).contains(&i) {
                before ^ 0xA5
            } else {
                *before
            };
            assert_eq!(*after, expected, "byte {i}");
        }
    }

    /// Only a token that names its server's data directory may damage a
    /// file, and only inside it: a token from `owned_by`, `embedded` or
    /// `restored_copy` names none.
    #[test]
    fn flip_page_bytes_refuses_what_is_not_disposable() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("victim"), [0u8; 64]).unwrap();
        let without_dir = flip_page_bytes(&token(None), &relation("victim"), 0, 8).unwrap_err();
        assert!(matches!(without_dir, FaultError::NotDisposable { .. }), "{without_dir}");
        assert!(
            without_dir.to_string().starts_with("refusing to inject an incident"),
            "{without_dir}"
        );
        assert!(
            !without_dir.to_string().contains("secret"),
            "password leaked: {without_dir}"
        );

        let inside = tempfile::tempdir_in(dir.path()).unwrap();
        let name = inside.path().file_name().unwrap().to_str().unwrap().to_owned();
        for escape in [
            "../victim".to_owned(),
            dir.path().join("victim").display().to_string(),
            format!("{name}/../../victim"),
        ] {
            let error = flip_page_bytes(&token(Some(inside.path())), &relation(&escape), 0, 8).unwrap_err();
            assert!(matches!(error, FaultError::NotDisposable { .. }), "{escape}: {error}");
        }
        assert_eq!(
            std::fs::read(dir.path().join("victim")).unwrap(),
            [0u8; 64],
            "nothing was touched"
        );
    }
}
