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
    #[error(
        "refusing to swap {table}: its definition differs from backup {stamp}'s ({}); the backup's rows would not \
         fit. Restore the table for inspection instead (without --swap-into) and move the rows by hand",
        differences.join("; ")
    )]
    DefinitionDiffers {
        table: String,
        stamp: String,
        differences: Vec<String>,
    },
    #[error(
        "restored {restored} rows of {table}, but the backup's manifest records {expected}: the dump is not what was backed up"
    )]
    RowCountMismatch {
        table: String,
        expected: u64,
        restored: u64,
    },
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
    /// Rows the table had before its rows were replaced (swap only).
    pub rows_before: Option<i64>,
    pub rows_restored: u64,
    /// The database the table is now in: the swapped one, or the new one.
    pub database: String,
    #[serde(with = "crate::serde_duration")]
    pub download: Duration,
    #[serde(with = "crate::serde_duration")]
    pub scratch_restore: Duration,
    /// The one-transaction replacement (swap only).
    #[serde(with = "crate::serde_duration::option")]
    pub replace: Option<Duration>,
}

/// Restores `table` (`schema.name` or `name` in `public`) of `target` from the
/// newest logical backup in `store`, replacing its rows in one transaction.
/// `admin` is a superuser on the same server.
///
/// # Errors
/// [`TableRestoreError::DefinitionDiffers`] when the table's columns are not
/// the backup's: the rows would not fit, and nothing is touched.
pub async fn restore_table(
    bins: &PgBinaries,
    admin: &ConnInfo,
    target: &ConnInfo,
    store: &Store,
    table: &str,
) -> Result<TableRestoreReport, TableRestoreError> {
    swap_table_from(bins, admin, target, store, table, &BackupChoice::Newest).await
}

/// [`restore_table`] from the chosen backup: what
/// `drillbook restore --table T --swap-into URL` runs.
///
/// # Errors
/// As [`restore_table`].
pub async fn swap_table_from(
    bins: &PgBinaries,
    admin: &ConnInfo,
    target: &ConnInfo,
    store: &Store,
    table: &str,
    choice: &BackupChoice,
) -> Result<TableRestoreReport, TableRestoreError> {
    let (schema, name) = split_table(table);
    let manifest = find_backup(store, choice).await?;
    let scratch_name = format!("{}_scratch", target.database);
    let loaded = load_into_scratch(bins, admin, store, table, manifest, &scratch_name).await?;
    let scratch = loaded.database.conn();
    let result = async {
        let differences = definition_differences(&scratch, target, schema, name).await?;
        if !differences.is_empty() {
            return Err(TableRestoreError::DefinitionDiffers {
                table: format!("{schema}.{name}"),
                stamp: loaded.manifest.stamp.clone(),
                differences,
            });
        }
        crate::failpoint!("table_restore::before_replace");
        let started = Instant::now();
        let (rows_before, rows_restored) = replace_rows(&scratch, target, schema, name).await?;
        Ok::<_, TableRestoreError>((started.elapsed(), rows_before, rows_restored))
    }
    .await;
    loaded.database.discard().await;
    let (replace, rows_before, rows_restored) = result?;
    Ok(TableRestoreReport {
        table: format!("{schema}.{name}"),
        backup: loaded.manifest,
        rows_before: Some(rows_before),
        rows_restored,
        database: target.database.clone(),
        download: loaded.download,
        scratch_restore: loaded.scratch_restore,
        replace: Some(replace),
    })
}

/// Restores `table` alone from the chosen backup into a NEW database on
/// `admin`'s server, for inspection (`drillbook restore --table T`): named
/// `database`, or `<db>_<table>_restore_<UTC time>`. Nothing else is touched.
///
/// # Errors
/// [`PgError::DatabaseExists`] when the name is taken; the new database
/// gets its name only once the table is in it with the manifest's row count.
pub async fn restore_table_copy(
    bins: &PgBinaries,
    admin: &ConnInfo,
    store: &Store,
    table: &str,
    choice: &BackupChoice,
    database: Option<&str>,
) -> Result<TableRestoreReport, TableRestoreError> {
    let (schema, name) = split_table(table);
    // One lookup: the name and the restored rows come from the same backup.
    let manifest = find_backup(store, choice).await?;
    let final_name = match database {
        Some(name) => name.to_owned(),
        None => format!(
            "{}_{name}_restore_{}",
            manifest.database,
            chrono::Utc::now().format("%Y%m%d%H%M%S%3f")
        ),
    };
    crate::restore::checks::check_target_absent(admin, &final_name).await?;
    let loaded = load_into_scratch(bins, admin, store, table, manifest, &final_name).await?;
    let scratch = loaded.database.conn();
    let counted = async {
        let mut conn = PgConnection::connect_with(&scratch.connect_options())
            .await
            .map_err(PgError::sql(format!("connect to {scratch}")))?;
        let rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {}.{}",
            quote_ident(schema),
            quote_ident(name)
        )))
        .fetch_one(&mut conn)
        .await
        .map_err(PgError::sql("count the restored rows"))?;
        let _ = conn.close().await;
        Ok::<_, PgError>(rows.max(0) as u64)
    }
    .await;
    let rows = match counted {
        Ok(rows) => rows,
        Err(e) => {
            loaded.database.discard().await;
            return Err(e.into());
        }
    };
    let expected = loaded.manifest.rows_in(&format!("{schema}.{name}"));
    if let Some(expected) = expected.filter(|&expected| expected != rows) {
        loaded.database.discard().await;
        return Err(TableRestoreError::RowCountMismatch {
            table: format!("{schema}.{name}"),
            expected,
            restored: rows,
        });
    }
    loaded.database.complete(&final_name).await?;
    Ok(TableRestoreReport {
        table: format!("{schema}.{name}"),
        backup: loaded.manifest,
        rows_before: None,
        rows_restored: rows,
        database: final_name,
        download: loaded.download,
        scratch_restore: loaded.scratch_restore,
        replace: None,
    })
}

fn split_table(table: &str) -> (&str, &str) {
    table.split_once('.').unwrap_or(("public", table))
}

/// `manifest`'s backup of `table`, alone, in an incomplete database meant
/// to become `final_name`.
struct Loaded {
    database: IncompleteDatabase,
    manifest: BackupManifest,
    download: Duration,
    scratch_restore: Duration,
}

async fn load_into_scratch(
    bins: &PgBinaries,
    admin: &ConnInfo,
    store: &Store,
    table: &str,
    manifest: BackupManifest,
    final_name: &str,
) -> Result<Loaded, TableRestoreError> {
    let (schema, name) = split_table(table);
    let qualified = format!("{schema}.{name}");
    crate::scratch::reap_temp_dir_once();
    crate::pg::incomplete::reap(admin, false).await?;
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
    let database = IncompleteDatabase::create(admin, final_name).await?;
    let scratch = database.conn();
    let loaded = async {
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
        pg_restore_table(bins, &scratch, &dump, name).await
    }
    .await;
    if let Err(e) = loaded {
        database.discard().await;
        return Err(e.into());
    }
    Ok(Loaded {
        database,
        manifest,
        download,
        scratch_restore: started.elapsed(),
    })
}

/// How the columns of `schema.name` in `target` differ from the backup's
/// copy in `scratch` (name, type, NOT NULL, in order); empty when they match.
async fn definition_differences(
    scratch: &ConnInfo,
    target: &ConnInfo,
    schema: &str,
    name: &str,
) -> Result<Vec<String>, PgError> {
    async fn columns(conn: &ConnInfo, schema: &str, name: &str) -> Result<Vec<(String, String, bool)>, PgError> {
        let mut c = PgConnection::connect_with(&conn.connect_options())
            .await
            .map_err(PgError::sql(format!("connect to {conn}")))?;
        let columns = sqlx::query_as(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull
             FROM pg_attribute a
             WHERE a.attrelid = to_regclass(format('%I.%I', $1::text, $2::text))
               AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum",
        )
        .bind(schema)
        .bind(name)
        .fetch_all(&mut c)
        .await
        .map_err(PgError::sql(format!("read the columns of {schema}.{name}")))?;
        let _ = c.close().await;
        Ok(columns)
    }
    let backup = columns(scratch, schema, name).await?;
    let live = columns(target, schema, name).await?;
    if live.is_empty() {
        return Ok(vec![format!(
            "{schema}.{name} does not exist in {}: restore it for inspection instead (without --swap-into)",
            target.database
        )]);
    }
    let show = |(column, kind, not_null): &(String, String, bool)| {
        format!("{column} {kind}{}", if *not_null { " NOT NULL" } else { "" })
    };
    let mut differences = Vec::new();
    for i in 0..backup.len().max(live.len()) {
        match (backup.get(i), live.get(i)) {
            (Some(b), Some(l)) if b == l => {}
            (Some(b), Some(l)) => differences.push(format!(
                "column {}: backup has {}, the table has {}",
                i + 1,
                show(b),
                show(l)
            )),
            (Some(b), None) => differences.push(format!("the table lacks the backup's column {}", show(b))),
            (None, Some(l)) => differences.push(format!("the table has column {}, which the backup lacks", show(l))),
            (None, None) => {}
        }
    }
    Ok(differences)
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
