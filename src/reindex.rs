//! Playbook section 5 step 1: `REINDEX DATABASE` on the restored database,
//! timed, then a check that no index is left invalid.
//!
//! A restore rebuilds every index anyway, so the reindex mostly measures
//! what the playbook's step costs; the check afterwards is what matters: an
//! index with `pg_index.indisvalid = false` (left by a failed
//! `CREATE INDEX CONCURRENTLY`, or a unique index over duplicated rows) is
//! ignored by the planner and, for a unique index, no longer enforces
//! uniqueness.
//!
//! # Caveats
//! `REINDEX DATABASE` takes an exclusive lock on each table in turn: run it
//! on the restored copy before traffic is switched to it, never on a
//! database serving traffic.

use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::{AssertSqlSafe, Connection, PgConnection, Row};

use crate::pg::{ConnInfo, quote_ident};

/// Why the reindex or the check could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReindexError {
    #[error("failed to connect to {database} (check the URL, that the server runs and accepts the role)")]
    Connect {
        database: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "failed to REINDEX DATABASE {database} after {elapsed:?} (a unique index over duplicated rows fails \
         here: find them with the invalid-index check and the playbook's section 4 queries, then run again)"
    )]
    Reindex {
        database: String,
        elapsed: Duration,
        #[source]
        source: sqlx::Error,
    },
    #[error("failed to list the indexes of {database}; the database was NOT checked, run again")]
    Check {
        database: String,
        #[source]
        source: sqlx::Error,
    },
}

pub type Result<T, E = ReindexError> = std::result::Result<T, E>;

/// An index PostgreSQL marks invalid (`pg_index.indisvalid = false`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvalidIndex {
    pub schema: String,
    pub table: String,
    pub index: String,
}

/// What a reindex did.
#[derive(Debug, Clone, Serialize)]
pub struct ReindexReport {
    /// The database, redacted URL.
    pub database: String,
    /// Wall time of the `REINDEX DATABASE` statement alone.
    #[serde(with = "crate::serde_duration")]
    pub duration: Duration,
    /// User indexes in the database (system catalogs excluded).
    pub indexes: u64,
    /// Indexes still invalid afterwards; empty when the step succeeded.
    pub invalid: Vec<InvalidIndex>,
}

impl ReindexReport {
    /// Whether every index is valid after the reindex.
    pub fn is_clean(&self) -> bool {
        self.invalid.is_empty()
    }
}

/// `REINDEX DATABASE <target.database>` (the playbook's
/// `psql "$DATABASE_URL" -c "REINDEX DATABASE immoflowme;"`), timed, then
/// [`invalid_indexes`].
///
/// # Errors
/// The connection fails, the reindex fails (for example a unique index over
/// duplicated rows) or the check query fails. Invalid indexes are not an
/// error: they are in the report.
pub async fn reindex_database(target: &ConnInfo, statement_timeout: Duration) -> Result<ReindexReport> {
    let database = target.redacted_url();
    let mut conn = connect(target).await?;
    // Simple-query protocol: REINDEX DATABASE refuses to run in a transaction block.
    let timeout = format!("SET statement_timeout = {}", statement_timeout.as_millis());
    sqlx::raw_sql(AssertSqlSafe(timeout))
        .execute(&mut conn)
        .await
        .map_err(|source| ReindexError::Check {
            database: database.clone(),
            source,
        })?;
    let sql = format!("REINDEX DATABASE {}", quote_ident(&target.database));
    let started = Instant::now();
    let result = sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut conn).await;
    let duration = started.elapsed();
    if let Err(source) = result {
        return Err(ReindexError::Reindex {
            database,
            elapsed: duration,
            source,
        });
    }
    let indexes = count_indexes(&mut conn, &database).await?;
    let invalid = invalid_indexes_on(&mut conn, &database).await?;
    let _ = conn.close().await;
    tracing::info!(%database, ?duration, indexes, invalid = invalid.len(), "REINDEX DATABASE finished");
    Ok(ReindexReport {
        database,
        duration,
        indexes,
        invalid,
    })
}

/// Every invalid user index of `target`, sorted by schema, table, index.
///
/// # Errors
/// The connection or the catalog query fails.
pub async fn invalid_indexes(target: &ConnInfo) -> Result<Vec<InvalidIndex>> {
    let database = target.redacted_url();
    let mut conn = connect(target).await?;
    let invalid = invalid_indexes_on(&mut conn, &database).await?;
    let _ = conn.close().await;
    Ok(invalid)
}

const USER_INDEXES: &str = "FROM pg_index i
       JOIN pg_class ic ON ic.oid = i.indexrelid
       JOIN pg_class tc ON tc.oid = i.indrelid
       JOIN pg_namespace n ON n.oid = ic.relnamespace
      WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
        AND n.nspname NOT LIKE 'pg_toast%'";

async fn invalid_indexes_on(conn: &mut PgConnection, database: &str) -> Result<Vec<InvalidIndex>> {
    let sql = format!(
        "SELECT n.nspname::text, tc.relname::text, ic.relname::text {USER_INDEXES} AND NOT i.indisvalid ORDER BY 1, 2, 3"
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .fetch_all(conn)
        .await
        .map_err(|source| ReindexError::Check {
            database: database.to_owned(),
            source,
        })?;
    Ok(rows
        .iter()
        .map(|row| InvalidIndex {
            schema: row.get(0),
            table: row.get(1),
            index: row.get(2),
        })
        .collect())
}

async fn count_indexes(conn: &mut PgConnection, database: &str) -> Result<u64> {
    let sql = format!("SELECT count(*) {USER_INDEXES}");
    let count: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
        .fetch_one(conn)
        .await
        .map_err(|source| ReindexError::Check {
            database: database.to_owned(),
            source,
        })?;
    Ok(u64::try_from(count).unwrap_or(0))
}

async fn connect(target: &ConnInfo) -> Result<PgConnection> {
    PgConnection::connect_with(&target.connect_options().application_name("drillbook-reindex"))
        .await
        .map_err(|source| ReindexError::Connect {
            database: target.redacted_url(),
            source,
        })
}
