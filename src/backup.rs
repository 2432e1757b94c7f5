//! Logical backups: `pg_dump -Fc` streamed into S3 with a manifest.
//!
//! The manifest's facts (row counts, newest rows, content fingerprints,
//! grants, audit chain head and anchor) are read inside the very snapshot
//! `pg_dump` dumps (`pg_export_snapshot()` + `pg_dump --snapshot`), so they
//! describe exactly what the dump holds, even while the application keeps
//! writing. They are read while the dump runs, on the connection that
//! exported the snapshot, not before or after it.
//!
//! # Crash safety
//!
//! The write order ([`crate::store::layout`] says why) makes the completion
//! of the dump's multipart upload the one step that publishes a backup:
//! owner marker; the upload begun at the dump's `daily/` key and its id
//! recorded under `incoming/`; the dump streamed into it (invisible: an
//! unfinished upload lists nowhere) while the facts are read and the roles
//! recorded; the manifest; the completion, after which the whole dump
//! appears in `daily/` at once; then the `incoming/` objects are removed.
//! Each byte of the dump is written once, to its final key. Killed before
//! the completion, a backup leaves nothing under `daily/`; killed after it,
//! only `incoming/` objects. Those leftovers (and the unfinished upload) are
//! removed by the next backup ([`sweep_leftovers`]) once their owner is
//! known to be gone, never while it runs.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection};

use crate::pg::tools::{DumpStream, dump_roles, program_version};
use crate::pg::{ConnInfo, PgBinaries, PgError, table_facts};
use crate::store::manifest::{BackupManifest, ChainHead, FORMAT, ObjectRef};
use crate::store::multipart::PendingUpload;
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
    let mut written = Written::default();
    let result = write_backup(bins, source, admin, store, &stamp, &mut written).await;
    if result.is_err() {
        if let Some(upload) = &written.upload {
            match store.abort_upload(upload).await {
                Ok(()) => pending_uploads().retain(|u| u != upload),
                Err(e) => tracing::warn!(
                    key = upload.key,
                    error = %e,
                    "could not abort the failed backup's upload; the next backup will"
                ),
            }
        }
        for key in written.keys.iter().rev() {
            if let Err(e) = store.delete(key).await {
                tracing::warn!(key, error = %e, "could not remove part of a failed backup");
            }
        }
    }
    let manifest = result?;
    // Published: what is left in incoming/ is housekeeping, not the backup.
    for key in [layout::incoming_upload_key(&stamp), layout::incoming_owner_key(&stamp)] {
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

    if also_this_process {
        // Begun by this process's interrupted backup, perhaps before it
        // could record the upload under incoming/.
        let interrupted = std::mem::take(&mut *pending_uploads());
        for upload in &interrupted {
            store.abort_upload(upload).await?;
        }
    }

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
        // Its unfinished upload first (its record goes with the keys below).
        let upload_key = layout::incoming_upload_key(&stamp);
        if !finished && keys.contains(&upload_key) {
            abort_recorded_upload(store, &upload_key).await?;
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
    abort_unrecorded_uploads(store, &published).await?;
    Ok(sweep)
}

/// Aborts the upload recorded at `record_key` (a dead backup's dump).
async fn abort_recorded_upload(store: &Store, record_key: &str) -> Result<(), StoreError> {
    let record = match store.get_bytes(record_key).await {
        Ok(record) => record,
        Err(StoreError::NotFound { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    match PendingUpload::from_record(&record) {
        // Only a dump's key: a damaged record must not abort anything else.
        Some(upload) if layout::stamp_of_dump(&upload.key).is_some() => store.abort_upload(&upload).await,
        _ => {
            tracing::warn!(record_key, "unreadable upload record; removing it");
            Ok(())
        }
    }
}

/// Aborts unfinished dump uploads under `daily/` that no record names (a
/// backup killed between beginning its upload and recording it) and whose
/// backup is not running: on servers that list uploads (AWS does, the
/// embedded one does not; there they stay invisible and unread).
async fn abort_unrecorded_uploads(
    store: &Store,
    published: &std::collections::BTreeSet<String>,
) -> Result<(), StoreError> {
    let Some(uploads) = store.list_uploads(layout::DAILY).await? else {
        return Ok(());
    };
    for found in uploads {
        let Some(stamp) = layout::stamp_of_dump(&found.upload.key) else {
            continue;
        };
        if published.contains(stamp)
            || owner::writer(store, &layout::incoming_owner_key(stamp), false).await? == Writer::Unknown
        {
            continue;
        }
        tracing::warn!(
            key = found.upload.key,
            "aborting the unfinished upload of an interrupted backup"
        );
        store.abort_upload(&found.upload).await?;
    }
    Ok(())
}

/// Dump uploads this process began and has not published or aborted yet:
/// a backup interrupted by a signal (its future dropped) may not have
/// recorded its upload yet, and `sweep_leftovers(.., true)` aborts them.
fn pending_uploads() -> std::sync::MutexGuard<'static, Vec<PendingUpload>> {
    static PENDING: std::sync::Mutex<Vec<PendingUpload>> = std::sync::Mutex::new(Vec::new());
    PENDING.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a backup wrote so far, for its failure path.
#[derive(Debug, Default)]
struct Written {
    /// Keys to remove, in write order.
    keys: Vec<String>,
    /// The dump's unfinished upload, to abort.
    upload: Option<PendingUpload>,
}

async fn write_backup(
    bins: &PgBinaries,
    source: &ConnInfo,
    admin: Option<&ConnInfo>,
    store: &Store,
    stamp: &str,
    written: &mut Written,
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
    written.keys.push(owner_key);

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

    // The dump goes straight to its daily/ key, invisible until published.
    let dump_key = layout::dump_key(stamp, &database);
    let upload = store.begin_upload(&dump_key).await.map_err(store_error)?;
    written.upload = Some(upload.clone());
    pending_uploads().push(upload.clone());
    crate::failpoint!("backup::upload_begun");
    let record_key = layout::incoming_upload_key(stamp);
    store
        .put_bytes(&record_key, upload.to_record(), "text/plain")
        .await
        .map_err(store_error)?;
    written.keys.push(record_key);

    crate::failpoint!("backup::before_dump");
    let mut dump = DumpStream::spawn(bins, source, Some(&snapshot_id)).map_err(pg_error)?;
    // While pg_dump streams: the facts, in the same snapshot on the exporting
    // connection; the roles; pg_dump's version. Each on its own connection or
    // process, so the dump never waits for them.
    let (staged, facts, roles, pg_dump_version) = tokio::join!(
        store.stage(&upload, dump.stdout()),
        snapshot_facts(&mut snapshot, &database),
        record_roles(bins, admin, store, stamp),
        program_version(bins, "pg_dump"),
    );
    let dumped = dump.finish().await;
    if let Ok(Some(roles)) = &roles {
        written.keys.push(roles.key.clone());
    }
    dumped.map_err(pg_error)?;
    let roles = roles.map_err(store_error)?;
    let staged = staged.map_err(store_error)?;
    let facts = facts.map_err(pg_error)?;
    let pg_dump_version = pg_dump_version.map_err(pg_error)?;
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
            key: dump_key.clone(),
            bytes: staged.transfer.bytes,
            sha256: staged.transfer.sha256.clone(),
        },
        roles,
        server_version,
        pg_dump_version,
        tables: facts.tables,
        audit_chain_head: facts.audit_chain_head,
        anchor: facts.anchor,
        grants: Some(facts.grants),
    };
    crate::failpoint!("backup::before_manifest");
    let manifest_key = layout::manifest_key(stamp);
    store
        .put_bytes(&manifest_key, manifest.to_json(), "application/json")
        .await
        .map_err(store_error)?;
    written.keys.push(manifest_key);

    crate::failpoint!("backup::before_publish");
    // The one step that publishes the backup (see the module docs).
    if let Err(e) = store.publish(&upload, staged).await {
        // A completion whose answer was lost may still have published it:
        // then the manifest must stay.
        if store.size_of(&dump_key).await.ok().flatten() != Some(manifest.dump.bytes) {
            return Err(store_error(e));
        }
    }
    written.upload = None;
    pending_uploads().retain(|u| *u != upload);
    crate::failpoint!("backup::after_publish");
    Ok(manifest)
}

/// The manifest's facts about the data, read in the dump's snapshot.
struct SnapshotFacts {
    tables: std::collections::BTreeMap<String, crate::pg::TableFacts>,
    audit_chain_head: Option<ChainHead>,
    anchor: Option<crate::store::manifest::Anchor>,
    grants: Vec<crate::store::manifest::Grant>,
}

/// Reads [`SnapshotFacts`] in `snapshot` (the transaction that exported
/// the dump's snapshot).
async fn snapshot_facts(snapshot: &mut PgConnection, database: &str) -> Result<SnapshotFacts, PgError> {
    let mut tables = table_facts(&mut *snapshot).await?;
    let audit_chain_head = chain_head(&mut *snapshot).await?;
    crate::integrity::fidelity::record_fingerprints(&mut *snapshot, &mut tables).await?;
    let grants = crate::integrity::fidelity::read_grants(&mut *snapshot).await?;
    // A savepoint keeps a failed anchor read from aborting the transaction
    // whose exported snapshot pg_dump is using.
    sqlx::raw_sql("SAVEPOINT drillbook_anchor")
        .execute(&mut *snapshot)
        .await
        .map_err(PgError::sql("set a savepoint for the anchor"))?;
    let anchor = match crate::integrity::anchor::Anchor::read(&mut *snapshot).await {
        Ok(anchor) => Some(anchor),
        Err(e) => {
            sqlx::raw_sql("ROLLBACK TO SAVEPOINT drillbook_anchor")
                .execute(&mut *snapshot)
                .await
                .map_err(PgError::sql("roll back the failed anchor read"))?;
            // The backup is still good; only `verify --anchor` against this
            // manifest is impossible, which the operator must hear about.
            let mut reason = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                reason.push_str(": ");
                reason.push_str(&c.to_string());
                cause = c.source();
            }
            tracing::warn!(database, %reason, "backup records no audit chain anchor");
            None
        }
    };
    Ok(SnapshotFacts {
        tables,
        audit_chain_head,
        anchor,
        grants,
    })
}

/// Records the cluster's roles (`pg_dumpall --roles-only`) under
/// `manifests/`; `None` without `admin`, or when they cannot be read (said
/// in the log).
async fn record_roles(
    bins: &PgBinaries,
    admin: Option<&ConnInfo>,
    store: &Store,
    stamp: &str,
) -> Result<Option<ObjectRef>, StoreError> {
    let Some(admin) = admin else { return Ok(None) };
    let sql = match dump_roles(bins, admin).await {
        Ok(sql) => sql,
        Err(e) => {
            tracing::warn!(error = %e, "could not record cluster roles; the backup will not carry them");
            return Ok(None);
        }
    };
    let key = layout::roles_key(stamp);
    let reference = ObjectRef {
        key: key.clone(),
        bytes: sql.len() as u64,
        sha256: sha256_hex(sql.as_bytes()),
    };
    store.put_bytes(&key, sql.into_bytes(), "application/sql").await?;
    Ok(Some(reference))
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
