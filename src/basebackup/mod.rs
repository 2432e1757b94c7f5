//! Physical base backups in S3: `pg_basebackup` streamed as one zstd tar
//! (`--compress=client-zstd:level=1`, `backup_manifest` with CRC32C per file
//! inside) to `base/<stamp>/base.tar.zst`, then `base/<stamp>/manifest.json`
//! (start/end LSN, times, timeline, sha256, compression) written last, so a
//! backup without a manifest is an unfinished one and never used.
//! `base/<stamp>/owner` names the process while it writes
//! ([`crate::store::owner`]); the next base backup removes what dead ones
//! left ([`sweep_leftovers`]).
//!
//! Why zstd level 1 on the client: on 2 cores it stores 0.6x the bytes of
//! pgBackRest's lz4 for the same cluster, in less time than lz4 saves on the
//! wire; `server-*` compression cannot put `backup_manifest` into a tar
//! written to stdout. Backups written before (uncompressed `base.tar`, SHA256
//! per file, no `compression` in the manifest) still restore.
//!
//! Restoring ([`download_base_backup`], in `restore.rs`) streams the object
//! from S3 in ranges straight into decompression and extraction, checking
//! each file against `backup_manifest` as it is written and the object's
//! sha256 against the manifest: one pass, no temp file, no second read.

mod backup_manifest;
mod restore;

pub use backup_manifest::ChecksumAlgorithm;
pub use restore::download_base_backup;

use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::pg::tools::BaseBackupStream;
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
    #[error("base backup {key} is damaged: {problem}; use an older backup, or take a new one")]
    Damaged { key: String, problem: String },
    #[error("failed to {context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
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
    /// The stored object (compressed as `compression` says), its size and sha256.
    pub tar_key: String,
    pub tar_bytes: u64,
    pub tar_sha256: String,
    /// Absent in manifests written before base backups were compressed.
    #[serde(default)]
    pub compression: Compression,
}

/// How the stored tar is compressed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// `base.tar`, as base backups were stored before.
    #[default]
    None,
    /// `base.tar.zst`, one zstd stream.
    Zstd,
}

impl Compression {
    /// What new base backups use.
    pub const CURRENT: Self = Self::Zstd;

    /// The object's name under `base/<stamp>/`.
    pub fn object_name(self) -> &'static str {
        match self {
            Self::None => "base.tar",
            Self::Zstd => "base.tar.zst",
        }
    }

    /// `pg_basebackup --compress`.
    pub fn pg_basebackup_compress(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Zstd => "client-zstd:level=1",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Self::None => "application/x-tar",
            Self::Zstd => "application/zstd",
        }
    }

    /// The per-file checksum of the `backup_manifest` inside: uncompressed
    /// backups were taken with `--manifest-checksums=SHA256`, compressed
    /// ones with PostgreSQL's default, CRC32C (the object's sha256 covers
    /// the whole).
    pub fn file_checksums(self) -> ChecksumAlgorithm {
        match self {
            Self::None => ChecksumAlgorithm::Sha256,
            Self::Zstd => ChecksumAlgorithm::Crc32c,
        }
    }
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
    let compression = Compression::CURRENT;
    let tar_key = format!("{BASE_PREFIX}{stamp}/{}", compression.object_name());
    let started = Instant::now();
    crate::store::owner::mark(store, &owner_key(&stamp)).await?;
    let taken = write_base_backup(bins, admin, store, &stamp, &tar_key, compression, start_time).await;
    match &taken {
        Ok(manifest) => {
            tracing::info!(stamp, bytes = manifest.tar_bytes, elapsed = ?started.elapsed(), "base backup in S3")
        }
        Err(_) => {
            let _ = store.delete(&tar_key).await;
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
    tar_key: &str,
    compression: Compression,
    start_time: DateTime<Utc>,
) -> Result<BaseBackupManifest> {
    crate::failpoint!("basebackup::before_tar");
    let mut stream = BaseBackupStream::spawn(
        bins,
        admin,
        compression.pg_basebackup_compress(),
        compression.file_checksums().name(),
    )?;
    let upload = store
        .upload_stream(tar_key, stream.stdout(), compression.content_type())
        .await;
    let points = stream.finish().await;
    let (transfer, points) = match (upload, points) {
        (Ok(t), Ok(p)) => (t, p),
        (upload, points) => {
            let _ = store.delete(tar_key).await;
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
        tar_key: tar_key.to_owned(),
        tar_bytes: transfer.bytes,
        tar_sha256: transfer.sha256,
        compression,
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
