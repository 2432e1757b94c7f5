//! Logical backups: `pg_dump -Fc` streamed into S3 with a manifest.
//!
//! The manifest's facts (row counts, newest rows, audit chain head) are read
//! inside the very snapshot `pg_dump` dumps (`pg_export_snapshot()` +
//! `pg_dump --snapshot`), so they describe exactly what the dump holds, even
//! while the application keeps writing.
//!
//! # Crash safety
//!
//! The write order ([`crate::store::layout`] says why) makes the server-side
//! copy of the dump into `daily/` the one step that publishes a backup:
//! owner marker, roles, dump into `incoming/`, manifest, copy into `daily/`,
//! then the `incoming/` objects are removed. Killed before the copy, a backup
//! leaves nothing under `daily/`; killed after it, only `incoming/` objects.
//! Those leftovers are removed by the next backup ([`sweep_leftovers`]) once
//! their owner is known to be gone, never while it runs.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection};

use crate::pg::tools::{DumpStream, dump_roles, program_version};
use crate::pg::{ConnInfo, PgBinaries, PgError, table_facts};
use crate::store::manifest::{BackupManifest, ChainHead, FORMAT, ObjectRef};
use crate::store::owner::{self, Writer};
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
/// The dump appears under `daily/` only once it and its manifest (and roles
/// file) are complete, and as the last object written there. A failed
/// backup removes what it wrote; a killed one leaves only objects outside
/// `daily/`, removed by the next backup. Leftovers of dead backups are swept
/// first ([`sweep_leftovers`]).
pub async fn backup_database(
    bins: &PgBinaries,
    source: &ConnInfo,
    admin: Option<&ConnInfo>,
    store: &Store,
) -> Result<BackupReport, BackupError> {
    let started = Instant::now();
    if let Err(e) = sweep_leftovers(store, false).await {
        tracing::warn!(error = %e, "could not sweep the leftovers of earlier backups; this backup goes on");
    }
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
    // Published: what is left in incoming/ is housekeeping, not the backup.
    for key in [
        layout::incoming_key(&stamp, &manifest.database),
        layout::incoming_owner_key(&stamp),
    ] {
        if let Err(e) = store.delete(&key).await {
            tracing::warn!(key, error = %e, "could not remove a finished backup's incoming object; the next backup will");
        }
    }
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

/// What [`sweep_leftovers`] removed and left.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Stamps of dead or finished backups whose leftovers were removed.
    pub removed: Vec<String>,
    /// Stamps of backups whose owner runs, or cannot be judged from here.
    pub left: Vec<String>,
}

/// Removes what dead backups left outside `daily/`: `incoming/<stamp>/`
/// objects and `manifests/<stamp>/` side files of a backup whose dump never
/// reached `daily/`.
///
/// A backup's `incoming/<stamp>/owner` names its process (this machine's
/// boot, pid, start time). Its leftovers are removed when its dump is in
/// `daily/` (finished), or when its owner is known to be gone (this boot of
/// this machine, process not running), or, with `also_this_process`, when it
/// is this process (a backup interrupted by a signal, its writes stopped).
/// A backup of another machine or an earlier boot is left alone and
/// reported: only its own process can tell it is dead. Side files under
/// `manifests/` with neither a dump nor an owner are leftovers of an
/// interrupted sweep and are removed.
pub async fn sweep_leftovers(store: &Store, also_this_process: bool) -> Result<Sweep, StoreError> {
    use std::collections::{BTreeMap, BTreeSet};

    let published: BTreeSet<String> = store
        .list(layout::DAILY)
        .await?
        .iter()
        .filter_map(|o| layout::stamp_of_dump(&o.key).map(str::to_owned))
        .collect();
    let mut by_stamp: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for prefix in [layout::MANIFESTS, layout::INCOMING] {
        for object in store.list(prefix).await? {
            if let Some(stamp) = layout::stamp_under(prefix, &object.key) {
                by_stamp.entry(stamp.to_owned()).or_default().push(object.key.clone());
            }
        }
    }

    let mut sweep = Sweep::default();
    for (stamp, mut keys) in by_stamp {
        let owner_key = layout::incoming_owner_key(&stamp);
        let finished = published.contains(&stamp);
        if finished {
            // Its manifest and roles belong to the published dump.
            keys.retain(|key| key.starts_with(layout::INCOMING));
            if keys.is_empty() {
                continue;
            }
        } else if owner::writer(store, &owner_key, also_this_process).await? == Writer::Unknown {
            tracing::info!(stamp, "a backup in progress (or of another machine) is left alone");
            sweep.left.push(stamp);
            continue;
        }
        // The owner marker goes last, so an interrupted sweep is resumed.
        keys.sort_by_key(|key| *key == owner_key);
        for key in &keys {
            store.delete(key).await?;
        }
        tracing::warn!(
            stamp,
            objects = keys.len(),
            finished,
            "removed the leftovers of an interrupted backup"
        );
        sweep.removed.push(stamp);
    }
    Ok(sweep)
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

    let owner_key = layout::incoming_owner_key(stamp);
    owner::mark(store, &owner_key).await.map_err(store_error)?;
    written.push(owner_key);

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

    crate::failpoint!("backup::before_dump");
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
    crate::failpoint!("backup::before_manifest");
    let manifest_key = layout::manifest_key(stamp);
    store
        .put_bytes(&manifest_key, manifest.to_json(), "application/json")
        .await
        .map_err(store_error)?;
    written.push(manifest_key);

    crate::failpoint!("backup::before_publish");
    // The one step that publishes the backup (see the module docs).
    store
        .copy(&incoming, &manifest.dump.key, manifest.dump.bytes)
        .await
        .map_err(store_error)?;
    crate::failpoint!("backup::after_publish");
    Ok(manifest)
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
