//! Logical backups: `pg_dump -Fc` streamed into S3 with a manifest.
//!
//! The manifest's facts (row counts, newest rows, audit chain head) are read
//! inside the very snapshot `pg_dump` dumps (`pg_export_snapshot()` +
//! `pg_dump --snapshot`), so they describe exactly what the dump holds, even
//! while the application keeps writing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection, Row};

use crate::pg::tools::{DumpStream, dump_roles, program_version};
use crate::pg::{ConnInfo, PgBinaries, PgError, quote_ident};
use crate::store::manifest::{BackupManifest, ChainHead, FORMAT, ObjectRef, TableFacts};
use crate::store::{Store, StoreError, layout};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    #[error("failed to back up {database}")]
    Postgres {
        database: String,
        #[source]
        source: PgError,
    },
    #[error("failed to store the backup of {database} in {location}")]
    Store {
        database: String,
        location: String,
        #[source]
        source: StoreError,
    },
}

/// What a backup wrote.
#[derive(Debug, Clone)]
pub struct BackupReport {
    pub manifest: BackupManifest,
    pub manifest_key: String,
    pub elapsed: Duration,
}

/// Backs up `source` into `store` under `daily/<stamp>/`.
///
/// `admin` (a superuser connection to the same server) is used to record the
/// cluster's roles; without it, or without the privilege, the backup has no
/// roles file and a restore onto a new server needs the roles created first.
///
/// # Guarantees
/// Either the dump, its manifest and its roles file all exist, the dump
/// written last, or none of them does: a failed backup removes what it wrote.
pub async fn backup_database(
    bins: &PgBinaries,
    source: &ConnInfo,
    admin: Option<&ConnInfo>,
    store: &Store,
) -> Result<BackupReport, BackupError> {
    let started = Instant::now();
    let stamp = layout::stamp(Utc::now());
    let mut written = Vec::new();
    let result = write_backup(bins, source, admin, store, &stamp, &mut written).await;
    if result.is_err() {
        for key in written.iter().rev() {
            if let Err(e) = store.delete(key).await {
                tracing::warn!(key, error = %e, "could not remove part of a failed backup");
            }
        }
    }
    let manifest = result?;
    tracing::info!(
        database = %source.database,
        stamp,
        bytes = manifest.dump.bytes,
        elapsed = ?started.elapsed(),
        "backup stored"
    );
    Ok(BackupReport {
        manifest,
        manifest_key: layout::manifest_key(&stamp),
        elapsed: started.elapsed(),
    })
}

async fn write_backup(
    bins: &PgBinaries,
    source: &ConnInfo,
    admin: Option<&ConnInfo>,
    store: &Store,
    stamp: &str,
    written: &mut Vec<String>,
) -> Result<BackupManifest, BackupError> {
    let database = source.database.clone();
    let pg_error = |source| BackupError::Postgres {
        database: database.clone(),
        source,
    };
    let store_error = |source| BackupError::Store {
        database: database.clone(),
        location: store.config().location(),
        source,
    };

    let roles = match admin {
        Some(admin) => match dump_roles(bins, admin).await {
            Ok(sql) => {
                let key = layout::roles_key(stamp);
                let reference = ObjectRef {
                    key: key.clone(),
                    bytes: sql.len() as u64,
                    sha256: sha256_hex(sql.as_bytes()),
                };
                store
                    .put_bytes(&key, sql.into_bytes(), "application/sql")
                    .await
                    .map_err(store_error)?;
                written.push(key);
                Some(reference)
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not record cluster roles; the backup will not carry them");
                None
            }
        },
        None => None,
    };

    // The snapshot stays open until pg_dump has finished reading it.
    let mut conn = PgConnection::connect_with(&source.connect_options())
        .await
        .map_err(|e| pg_error(PgError::sql(format!("connect to {source}"))(e)))?;
    let mut snapshot = conn
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(|e| pg_error(PgError::sql("open the backup snapshot")(e)))?;
    let (snapshot_id, snapshot_at, server_version): (String, DateTime<Utc>, String) =
        sqlx::query_as("SELECT pg_export_snapshot(), now(), current_setting('server_version')")
            .fetch_one(&mut *snapshot)
            .await
            .map_err(|e| pg_error(PgError::sql("export the backup snapshot")(e)))?;
    let mut tables = table_facts(&mut snapshot).await.map_err(pg_error)?;
    let audit_chain_head = chain_head(&mut snapshot).await.map_err(pg_error)?;
    crate::integrity::fidelity::record_fingerprints(&mut snapshot, &mut tables)
        .await
        .map_err(pg_error)?;
    let grants = crate::integrity::fidelity::read_grants(&mut snapshot)
        .await
        .map_err(pg_error)?;
    // A savepoint keeps a failed anchor read from aborting the transaction
    // whose exported snapshot pg_dump is about to use.
    sqlx::raw_sql("SAVEPOINT drillbook_anchor")
        .execute(&mut *snapshot)
        .await
        .map_err(|e| pg_error(PgError::sql("set a savepoint for the anchor")(e)))?;
    let anchor = match crate::integrity::anchor::Anchor::read(&mut snapshot).await {
        Ok(anchor) => Some(anchor),
        Err(e) => {
            sqlx::raw_sql("ROLLBACK TO SAVEPOINT drillbook_anchor")
                .execute(&mut *snapshot)
                .await
                .map_err(|e| pg_error(PgError::sql("roll back the failed anchor read")(e)))?;
            // The backup is still good; only `verify --anchor` against this
            // manifest is impossible, which the operator must hear about.
            let mut reason = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                reason.push_str(": ");
                reason.push_str(&c.to_string());
                cause = c.source();
            }
            tracing::warn!(database = %database, %reason, "backup records no audit chain anchor");
            None
        }
    };

    let incoming = layout::incoming_key(stamp, &database);
    let mut dump = DumpStream::spawn(bins, source, Some(&snapshot_id)).map_err(pg_error)?;
    let uploaded = store
        .upload_stream(&incoming, dump.stdout(), "application/octet-stream")
        .await;
    let dumped = dump.finish().await;
    if uploaded.is_ok() {
        written.push(incoming.clone());
    }
    dumped.map_err(pg_error)?;
    let transfer = uploaded.map_err(store_error)?;
    snapshot
        .rollback()
        .await
        .map_err(|e| pg_error(PgError::sql("close the backup snapshot")(e)))?;
    let _ = conn.close().await;

    let manifest = BackupManifest {
        format: FORMAT,
        stamp: stamp.to_owned(),
        snapshot_at,
        database: database.clone(),
        dump: ObjectRef {
            key: layout::dump_key(stamp, &database),
            bytes: transfer.bytes,
            sha256: transfer.sha256,
        },
        roles,
        server_version,
        pg_dump_version: program_version(bins, "pg_dump").await.map_err(pg_error)?,
        tables,
        audit_chain_head,
        anchor,
        grants: Some(grants),
    };
    let manifest_key = layout::manifest_key(stamp);
    store
        .put_bytes(&manifest_key, manifest.to_json(), "application/json")
        .await
        .map_err(store_error)?;
    written.push(manifest_key);

    store
        .copy(&incoming, &manifest.dump.key, manifest.dump.bytes)
        .await
        .map_err(store_error)?;
    written.push(manifest.dump.key.clone());
    store.delete(&incoming).await.map_err(store_error)?;
    written.retain(|key| key != &incoming);
    Ok(manifest)
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

/// The last `audit_logs` row in chain order, if the table exists.
pub async fn chain_head(conn: &mut PgConnection) -> Result<Option<ChainHead>, PgError> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('public.audit_logs') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await
        .map_err(PgError::sql("look for audit_logs"))?;
    if !exists {
        return Ok(None);
    }
    let head: Option<(i64, Option<String>, DateTime<Utc>)> =
        sqlx::query_as("SELECT id, hash, created_at FROM public.audit_logs ORDER BY created_at DESC, id DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await
            .map_err(PgError::sql("read the audit chain head"))?;
    Ok(head.map(|(id, hash, created_at)| ChainHead { id, hash, created_at }))
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
