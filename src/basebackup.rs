//! Physical base backups in S3: `pg_basebackup` streamed as one tar to
//! `base/<stamp>/base.tar`, then `base/<stamp>/manifest.json` (start/end LSN,
//! times, timeline, sha256) written last, so a backup without a manifest is
//! an unfinished one and never used. `base/<stamp>/owner` names the process
//! while it writes ([`crate::store::owner`]); the next base backup removes
//! what dead ones left ([`sweep_leftovers`]).
//!
//! Restoring downloads the tar, checks its sha256 against the manifest,
//! extracts it and runs `pg_verifybackup` on the copy before anything uses it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::pg::tools::{BaseBackupStream, verify_backup};
use crate::pg::{ConnInfo, PgBinaries, PgError};
use crate::store::{Store, StoreError, layout};
use crate::wal::parse_lsn;

pub const BASE_PREFIX: &str = "base/";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BaseBackupError {
    #[error(transparent)]
    Postgres(#[from] PgError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("failed to read base backup manifest {key}; delete the broken backup or take a new one")]
    BadManifest {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "downloaded base backup {key} does not match its manifest (sha256 {actual}, manifest {expected}); \
         it is damaged: use an older backup"
    )]
    ChecksumMismatch {
        key: String,
        expected: String,
        actual: String,
    },
    #[error("failed to {context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to extract {}: tar said {output}", tar.display())]
    Extract { tar: PathBuf, output: String },
}

pub type Result<T, E = BaseBackupError> = std::result::Result<T, E>;

/// `base/<stamp>/manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseBackupManifest {
    pub stamp: String,
    pub start_lsn: String,
    pub end_lsn: String,
    pub timeline: u32,
    /// Wall clock when `pg_basebackup` started and finished: the backup is
    /// usable for recovery targets after `end_time`.
    pub start_time: DateTime<Utc>,
    pub end_time: DateTime<Utc>,
    pub server_version: String,
    pub tar_key: String,
    pub tar_bytes: u64,
    pub tar_sha256: String,
}

impl BaseBackupManifest {
    pub fn end_lsn_value(&self) -> u64 {
        parse_lsn(&self.end_lsn).unwrap_or(u64::MAX)
    }
}

fn manifest_key(stamp: &str) -> String {
    format!("{BASE_PREFIX}{stamp}/manifest.json")
}

fn owner_key(stamp: &str) -> String {
    format!("{BASE_PREFIX}{stamp}/owner")
}

/// Removes the objects of base backups that never got their manifest and
/// whose writer is known to be gone (or is this process, with
/// `this_process_stopped`), and stale owner markers of finished ones.
/// Returns the stamps cleaned.
pub async fn sweep_leftovers(store: &Store, this_process_stopped: bool) -> Result<Vec<String>> {
    use crate::store::owner::{self, Writer};
    use std::collections::BTreeMap;

    let mut by_stamp: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for object in store.list(BASE_PREFIX).await? {
        if let Some(stamp) = layout::stamp_under(BASE_PREFIX, &object.key) {
            by_stamp.entry(stamp.to_owned()).or_default().push(object.key);
        }
    }
    let mut cleaned = Vec::new();
    for (stamp, mut keys) in by_stamp {
        let owner = owner_key(&stamp);
        if keys.contains(&manifest_key(&stamp)) {
            keys.retain(|key| *key == owner);
        } else if owner::writer(store, &owner, this_process_stopped).await? == Writer::Unknown {
            continue;
        }
        if keys.is_empty() {
            continue;
        }
        // The owner marker last, so an interrupted sweep is resumed.
        keys.sort_by_key(|key| *key == owner);
        for key in &keys {
            store.delete(key).await?;
        }
        tracing::warn!(
            stamp,
            objects = keys.len(),
            "removed the leftovers of an interrupted base backup"
        );
        cleaned.push(stamp);
    }
    Ok(cleaned)
}

/// Takes a base backup of the cluster behind `admin` (a superuser) into S3.
///
/// # Guarantees
/// The backup counts (has its manifest) only once its tar is complete; a
/// failed one removes what it wrote, a killed one is removed by the next
/// ([`sweep_leftovers`], run first).
pub async fn take_base_backup(bins: &PgBinaries, admin: &ConnInfo, store: &Store) -> Result<BaseBackupManifest> {
    if let Err(e) = sweep_leftovers(store, false).await {
        tracing::warn!(error = %e, "could not sweep the leftovers of earlier base backups; this one goes on");
    }
    let start_time = Utc::now();
    let stamp = layout::stamp(start_time);
    let tar_key = format!("{BASE_PREFIX}{stamp}/base.tar");
    let started = Instant::now();
    crate::store::owner::mark(store, &owner_key(&stamp)).await?;
    let taken = write_base_backup(bins, admin, store, &stamp, tar_key, start_time).await;
    match &taken {
        Ok(manifest) => {
            tracing::info!(stamp, bytes = manifest.tar_bytes, elapsed = ?started.elapsed(), "base backup in S3")
        }
        Err(_) => {
            let _ = store.delete(&format!("{BASE_PREFIX}{stamp}/base.tar")).await;
        }
    }
    if let Err(e) = store.delete(&owner_key(&stamp)).await {
        tracing::warn!(stamp, error = %e, "could not remove the base backup's owner marker; the next base backup will");
    }
    taken
}

async fn write_base_backup(
    bins: &PgBinaries,
    admin: &ConnInfo,
    store: &Store,
    stamp: &str,
    tar_key: String,
    start_time: DateTime<Utc>,
) -> Result<BaseBackupManifest> {
    crate::failpoint!("basebackup::before_tar");
    let mut stream = BaseBackupStream::spawn(bins, admin)?;
    let upload = store
        .upload_stream(&tar_key, stream.stdout(), "application/x-tar")
        .await;
    let points = stream.finish().await;
    let (transfer, points) = match (upload, points) {
        (Ok(t), Ok(p)) => (t, p),
        (upload, points) => {
            let _ = store.delete(&tar_key).await;
            points?;
            upload?;
            unreachable!("one of them failed");
        }
    };
    let version: String = {
        let mut conn = sqlx::PgConnection::connect_with(&admin.connect_options())
            .await
            .map_err(PgError::sql(format!("connect to {admin}")))?;
        sqlx::query_scalar("SHOW server_version")
            .fetch_one(&mut conn)
            .await
            .map_err(PgError::sql("read the server version"))?
    };
    let manifest = BaseBackupManifest {
        stamp: stamp.to_owned(),
        start_lsn: points.start_lsn,
        end_lsn: points.end_lsn,
        timeline: points.timeline,
        start_time,
        end_time: Utc::now(),
        server_version: version,
        tar_key,
        tar_bytes: transfer.bytes,
        tar_sha256: transfer.sha256,
    };
    let json = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
    crate::failpoint!("basebackup::before_manifest");
    store.put_bytes(&manifest_key(stamp), json, "application/json").await?;
    crate::failpoint!("basebackup::after_manifest");
    Ok(manifest)
}

use sqlx::Connection as _;

/// Every finished base backup (those with a manifest), oldest first.
pub async fn list_base_backups(store: &Store) -> Result<Vec<BaseBackupManifest>> {
    let mut manifests = Vec::new();
    for object in store.list(BASE_PREFIX).await? {
        if !object.key.ends_with("/manifest.json") {
            continue;
        }
        let bytes = store.get_bytes(&object.key).await?;
        let manifest: BaseBackupManifest =
            serde_json::from_slice(&bytes).map_err(|source| BaseBackupError::BadManifest {
                key: object.key.clone(),
                source,
            })?;
        manifests.push(manifest);
    }
    manifests.sort_by_key(|m| m.end_time);
    Ok(manifests)
}

/// Downloads a base backup into `workdir/data` (created), checks the tar's
/// sha256 against the manifest, extracts it and runs `pg_verifybackup`.
/// Returns the data directory, ready for a `recovery.signal`.
pub async fn download_base_backup(
    bins: &PgBinaries,
    store: &Store,
    manifest: &BaseBackupManifest,
    workdir: &Path,
) -> Result<PathBuf> {
    let tar = workdir.join("base.tar");
    let transfer = store.download_to_file(&manifest.tar_key, &tar).await?;
    if transfer.sha256 != manifest.tar_sha256 {
        return Err(BaseBackupError::ChecksumMismatch {
            key: manifest.tar_key.clone(),
            expected: manifest.tar_sha256.clone(),
            actual: transfer.sha256,
        });
    }
    let data = workdir.join("data");
    extract_tar(&tar, &data).await?;
    let _ = tokio::fs::remove_file(&tar).await;
    verify_backup(bins, &data).await?;
    Ok(data)
}

/// Extracts a tar into a new directory with the system `tar`.
pub async fn extract_tar(tar: &Path, into: &Path) -> Result<()> {
    tokio::fs::create_dir_all(into)
        .await
        .map_err(|source| BaseBackupError::Io {
            context: format!("create {}", into.display()),
            source,
        })?;
    let mut command = tokio::process::Command::new("tar");
    command.arg("-xf").arg(tar).arg("-C").arg(into).kill_on_drop(true);
    let output = crate::pg::child::output(command)
        .await
        .map_err(|source| BaseBackupError::Io {
            context: "run tar (install it: apt-get install tar)".into(),
            source,
        })?;
    if !output.status.success() {
        return Err(BaseBackupError::Extract {
            tar: tar.to_path_buf(),
            output: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(())
}
