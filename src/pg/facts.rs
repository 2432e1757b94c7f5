//! What a database holds, table by table: row counts and newest rows, read
//! in whatever snapshot the caller's connection is in. Backups record them
//! in the manifest; restore checks and drills compare against them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Row};

use super::{PgError, quote_ident};

/// One table's facts, as a backup manifest records them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableFacts {
    pub rows: u64,
    /// `max(created_at)`, for tables that have that column.
    pub newest_created_at: Option<DateTime<Utc>>,
    /// Content fingerprint (the integrity checks' restore fidelity) of the critical
    /// tables, taken in the dump's snapshot; absent for other tables and in
    /// older manifests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

/// Row count and newest `created_at` of every user table, in the snapshot.
pub async fn table_facts(conn: &mut PgConnection) -> Result<BTreeMap<String, TableFacts>, PgError> {
    let tables = sqlx::query(
        "SELECT n.nspname AS schema, c.relname AS name,
                EXISTS (SELECT 1 FROM pg_attribute a
                        WHERE a.attrelid = c.oid AND a.attname = 'created_at'
                          AND a.atttypid = 'timestamptz'::regtype AND NOT a.attisdropped) AS has_created_at
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
           AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
         ORDER BY 1, 2",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(PgError::sql("list the tables to back up"))?;

    let mut facts = BTreeMap::new();
    for table in tables {
        let (schema, name): (String, String) = (table.get("schema"), table.get("name"));
        let has_created_at: bool = table.get("has_created_at");
        let newest = if has_created_at {
            "max(created_at)"
        } else {
            "NULL::timestamptz"
        };
        let sql = format!(
            "SELECT count(*), {newest} FROM {}.{}",
            quote_ident(&schema),
            quote_ident(&name)
        );
        let (rows, newest_created_at): (i64, Option<DateTime<Utc>>) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut *conn)
            .await
            .map_err(PgError::sql(format!("count the rows of {schema}.{name}")))?;
        facts.insert(
            format!("{schema}.{name}"),
            TableFacts {
                rows: rows as u64,
                newest_created_at,
                fingerprint: None,
            },
        );
    }
    Ok(facts)
}
