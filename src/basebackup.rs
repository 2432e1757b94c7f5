//! Physical base backups in S3: `pg_basebackup` streamed as one tar to
//! `base/<stamp>/base.tar`, then `base/<stamp>/manifest.json` (start/end LSN,
//! times, timeline, sha256) written last, so a backup without a manifest is
//! an unfinished one and never used.
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

/// Takes a base backup of the cluster behind `admin` (a superuser) into S3.
pub async fn take_base_backup(bins: &PgBinaries, admin: &ConnInfo, store: &Store) -> Result<BaseBackupManifest> {
    let start_time = Utc::now();
    let stamp = layout::stamp(start_time);
    let tar_key = format!("{BASE_PREFIX}{stamp}/base.tar");
    let started = Instant::now();
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
        stamp: stamp.clone(),
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
    store.put_bytes(&manifest_key(&stamp), json, "application/json").await?;
    tracing::info!(stamp, bytes = manifest.tar_bytes, elapsed = ?started.elapsed(), "base backup in S3");
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
