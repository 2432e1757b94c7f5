//! Single-table restore: one damaged table brought back from the newest
//! logical backup without touching the rest of the database.
//!
//! 1. The newest dump is downloaded and its sha256 checked against its manifest.
//! 2. `pg_restore --table` loads that table alone into a scratch database.
//! 3. In ONE transaction on the damaged database the table's rows are
//!    deleted and the backup's rows copied in (`COPY` scratch → target), with
//!    `session_replication_role = replica` so triggers (the audit hash chain)
//!    do not rewrite restored values and foreign keys are not re-fired row by
//!    row. Readers see the damaged table or the restored one, never a mix;
//!    any error rolls everything back.
//! 4. The scratch database is dropped.
//!
//! # Guarantees
//! The scratch database is an incomplete one ([`crate::pg::incomplete`]):
//! named so, owned by this process, and dropped by the next restore on the
//! server if this process is killed first. `pg_restore` dies with drillbook.
//! Step 3 is one transaction: killed at any instant, the target table is
//! either untouched or fully restored.
//!
//! # Caveats
//! Rows written to the table after the backup are lost (the RPO of daily
//! dumps); rows elsewhere that reference removed rows are reported by the
//! integrity checks that should run right after.

use std::time::{Duration, Instant};

use futures::TryStreamExt;
use serde::Serialize;
use sqlx::{Connection, PgConnection};

use crate::pg::incomplete::IncompleteDatabase;
use crate::pg::tools::pg_restore_table;
use crate::pg::{ConnInfo, PgBinaries, PgError, quote_ident};
use crate::restore::{BackupChoice, RestoreError, find_backup};
use crate::store::Store;
use crate::store::manifest::BackupManifest;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TableRestoreError {
    #[error(transparent)]
    Restore(#[from] RestoreError),
    #[error(transparent)]
    Postgres(#[from] PgError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(
        "downloaded dump {key} does not match its manifest (sha256 {actual}, manifest {expected}); it is damaged: \
         pick an older backup"
    )]
    ChecksumMismatch {
        key: String,
        expected: String,
        actual: String,
    },
    #[error("table {table:?} is not in backup {stamp}; name it as in the manifest (e.g. public.invoice_lines)")]
    NotInBackup { table: String, stamp: String },
    #[error("failed to {context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// What a single-table restore did.
#[derive(Debug, Clone, Serialize)]
pub struct TableRestoreReport {
    pub table: String,
    pub backup: BackupManifest,
    pub rows_before: i64,
    pub rows_restored: u64,
    #[serde(with = "crate::serde_duration")]
    pub download: Duration,
    #[serde(with = "crate::serde_duration")]
    pub scratch_restore: Duration,
    #[serde(with = "crate::serde_duration")]
    pub replace: Duration,
}

/// Restores `table` (`schema.name` or `name` in `public`) of `target` from the
/// newest logical backup in `store`. `admin` is a superuser on the same server.
pub async fn restore_table(
    bins: &PgBinaries,
    admin: &ConnInfo,
    target: &ConnInfo,
    store: &Store,
    table: &str,
) -> Result<TableRestoreReport, TableRestoreError> {
    let (schema, name) = table.split_once('.').unwrap_or(("public", table));
    let qualified = format!("{schema}.{name}");
    crate::scratch::reap_temp_dir_once();
    crate::pg::incomplete::reap(admin, false).await?;
    let manifest = find_backup(store, &BackupChoice::Newest).await?;
    if !manifest.tables.contains_key(&qualified) && !manifest.tables.contains_key(name) {
        return Err(TableRestoreError::NotInBackup {
            table: qualified,
            stamp: manifest.stamp.clone(),
        });
    }

    let started = Instant::now();
    let work = crate::scratch::owned_tempdir("drillbook-table-").map_err(|source| TableRestoreError::Io {
        context: "create a temp dir for the dump".into(),
        source,
    })?;
    let dump = work.path().join("backup.dump");
    let transfer = store.download_to_file(&manifest.dump.key, &dump).await?;
    if transfer.sha256 != manifest.dump.sha256 {
        return Err(TableRestoreError::ChecksumMismatch {
            key: manifest.dump.key.clone(),
            expected: manifest.dump.sha256.clone(),
            actual: transfer.sha256,
        });
    }
    let download = started.elapsed();

    let started = Instant::now();
    let scratch_db = IncompleteDatabase::create(admin, &format!("{}_scratch", target.database)).await?;
    let scratch = scratch_db.conn();
    let result = async {
        // pg_restore -t matches the bare table name in every schema and does
        // not create schemas: create each one holding a table of that name.
        let schemas = manifest
            .tables
            .keys()
            .filter_map(|key| key.split_once('.'))
            .filter(|(_, table)| *table == name)
            .map(|(schema, _)| schema);
        create_schemas(&scratch, schemas).await?;
        crate::failpoint!("table_restore::before_pg_restore");
        pg_restore_table(bins, &scratch, &dump, name).await?;
        crate::failpoint!("table_restore::before_replace");
        let scratch_restore = started.elapsed();
        let started = Instant::now();
        let (rows_before, rows_restored) = replace_rows(&scratch, target, schema, name).await?;
        Ok::<_, TableRestoreError>((scratch_restore, started.elapsed(), rows_before, rows_restored))
    }
    .await;
    scratch_db.discard().await;
    let (scratch_restore, replace, rows_before, rows_restored) = result?;
    Ok(TableRestoreReport {
        table: qualified,
        backup: manifest,
        rows_before,
        rows_restored,
        download,
        scratch_restore,
        replace,
    })
}

/// Creates `schemas` (those missing) in the scratch database.
async fn create_schemas(scratch: &ConnInfo, schemas: impl Iterator<Item = &str>) -> Result<(), PgError> {
    let mut conn = PgConnection::connect_with(&scratch.connect_options())
        .await
        .map_err(PgError::sql(format!("connect to {scratch}")))?;
    for schema in schemas {
        let sql = format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(schema));
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .map_err(PgError::sql(format!("create schema {schema} in the scratch database")))?;
    }
    let _ = conn.close().await;
    Ok(())
}

/// Deletes the target table's rows and copies the scratch copy's in, in one transaction.
async fn replace_rows(scratch: &ConnInfo, target: &ConnInfo, schema: &str, name: &str) -> Result<(i64, u64), PgError> {
    let table = format!("{}.{}", quote_ident(schema), quote_ident(name));
    let mut source = PgConnection::connect_with(&scratch.connect_options())
        .await
        .map_err(PgError::sql(format!("connect to {scratch}")))?;
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT quote_ident(column_name::text) FROM information_schema.columns
         WHERE table_schema = $1 AND table_name = $2 AND is_generated = 'NEVER'
         ORDER BY ordinal_position",
    )
    .bind(schema)
    .bind(name)
    .fetch_all(&mut source)
    .await
    .map_err(PgError::sql("read the restored table's columns"))?;
    let column_list = columns.join(", ");

    let mut conn = PgConnection::connect_with(&target.connect_options())
        .await
        .map_err(PgError::sql(format!("connect to {target}")))?;
    let mut tx = conn.begin().await.map_err(PgError::sql("begin the replacement"))?;
    sqlx::raw_sql("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .map_err(PgError::sql("disable triggers for the replacement (needs a superuser)"))?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"
    )))
    .execute(&mut *tx)
    .await
    .map_err(PgError::sql(format!("lock {table}")))?;
    let rows_before: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(&mut *tx)
        .await
        .map_err(PgError::sql(format!("count {table}")))?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DELETE FROM {table}")))
        .execute(&mut *tx)
        .await
        .map_err(PgError::sql(format!("empty the damaged {table}")))?;
    let mut copy_in = tx
        .copy_in_raw(&format!("COPY {table} ({column_list}) FROM STDIN"))
        .await
        .map_err(PgError::sql(format!("start copying into {table}")))?;
    {
        let mut out = source
            .copy_out_raw(&format!("COPY {table} ({column_list}) TO STDOUT"))
            .await
            .map_err(PgError::sql(format!(
                "start copying {table} out of the scratch database"
            )))?;
        while let Some(chunk) = out.try_next().await.map_err(PgError::sql("read the restored rows"))? {
            copy_in
                .send(chunk)
                .await
                .map_err(PgError::sql(format!("copy rows into {table}")))?;
        }
    }
    let rows_restored = copy_in
        .finish()
        .await
        .map_err(PgError::sql(format!("finish copying into {table}")))?;
    tx.commit().await.map_err(PgError::sql("commit the replacement"))?;
    let _ = conn.close().await;
    let _ = source.close().await;
    Ok((rows_before, rows_restored))
}
