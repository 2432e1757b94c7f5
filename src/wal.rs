//! The WAL archive in S3: what PostgreSQL's `archive_command` and
//! `restore_command` call (`drillbook wal-push %p`, `drillbook wal-fetch %f %p`).
//!
//! Each file PostgreSQL archives (segments, `.history`, `.backup` labels) is
//! stored at `wal/<timeline>/<file name>` as one object: a header line
//! (`drillbook-wal 2 <raw length> <sha256 of the raw bytes>`) followed by the
//! file, DEFLATE-compressed at the fastest level: WAL switched early by
//! `archive_timeout` is mostly zeros, and a full segment of row data still
//! shrinks by half or more, while compression stays far faster than S3.
//!
//! # Guarantees
//! - Archived WAL is never overwritten: pushing a file that is already there
//!   with the same bytes succeeds (PostgreSQL retries after a crash), with
//!   different bytes fails with [`WalError::Conflict`].
//! - A fetched file is written only after its SHA-256 matched; a damaged
//!   object fails with [`WalError::Corrupt`] and nothing is written.
//! - A file that is not in the archive is [`Fetched::Missing`], the normal
//!   end of the archive during recovery, distinct from every error.
//!
//! `wal-fetch` reads ahead: the segments after the one PostgreSQL asks for
//! are fetched and checked in the background into a private spool in
//! `pg_wal`, so the next call is a rename ([`spool`] says how it stays
//! safe, bounded and cleaned up).

mod spool;

use std::path::Path;

pub use spool::{DEFAULT_DEPTH, DEFAULT_JOBS, Prefetch, SPOOL_DIR, remove_spool, restore_file, run_prefetcher};

use sha2::{Digest, Sha256};

use crate::store::{S3Config, Store, StoreError};

pub type Result<T, E = WalError> = std::result::Result<T, E>;

/// Key prefix of the archive inside the store.
pub const WAL_PREFIX: &str = "wal/";
const MAGIC: &str = "drillbook-wal 2";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    #[error(
        "{name:?} is not a WAL file name PostgreSQL archives (24 hex digits, TTTTTTTT.history, or a .backup/.partial \
         file); pass %f to wal-fetch and %p to wal-push"
    )]
    BadName { name: String },
    #[error(
        "refusing to overwrite archived WAL {key}: it holds different bytes (sha256 {archived}, new {new}); archived WAL \
         is never replaced. Two clusters archive into the same place: give each its own bucket or prefix"
    )]
    Conflict { key: String, archived: String, new: String },
    #[error(
        "archived WAL {key} is corrupt ({reason}); recovery must not use it. Restore the object from another copy of \
         the archive, or recover to a point before this segment"
    )]
    Corrupt { key: String, reason: String },
    #[error("failed to {context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "WAL archive location missing: set BACKUP_BUCKET=s3://bucket[/prefix] (and AWS_ENDPOINT_URL for an \
         S3-compatible server) in the server's environment"
    )]
    NoLocation,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "WAL segment {segment} was not archived within {seconds} s (last failed: {last_failed}); check the \
         archive_command's messages in the server log"
    )]
    NotArchived {
        segment: String,
        seconds: u64,
        last_failed: String,
    },
    #[error("failed to {context}")]
    Sql {
        context: String,
        #[source]
        source: sqlx::Error,
    },
}

/// What [`WalArchive::push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Stored {
        raw_bytes: u64,
        stored_bytes: u64,
    },
    /// The same bytes were already archived (a retry after a crash).
    AlreadyArchived,
}

/// What [`WalArchive::fetch`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetched {
    Restored {
        bytes: u64,
    },
    /// Not in the archive: for recovery, the end of the archive.
    Missing,
}

/// The archive under `wal/` of one store.
#[derive(Debug, Clone)]
pub struct WalArchive {
    store: Store,
}

impl WalArchive {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// From the environment `archive_command` runs in: `BACKUP_BUCKET`,
    /// `AWS_ENDPOINT_URL` (optional), `AWS_REGION` (default us-east-1) and the
    /// default AWS credential chain (`AWS_ACCESS_KEY_ID`, ...).
    pub async fn from_env() -> Result<Self> {
        let location = std::env::var("BACKUP_BUCKET").map_err(|_| WalError::NoLocation)?;
        let (bucket, prefix) = S3Config::parse_location(&location)?;
        let config = S3Config {
            endpoint: std::env::var("AWS_ENDPOINT_URL").ok().filter(|e| !e.is_empty()),
            region: std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".to_owned()),
            bucket,
            prefix,
            credentials: None,
        };
        Ok(Self::new(Store::connect(config).await))
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Archives the file at `path` (named as PostgreSQL names WAL files).
    pub async fn push(&self, path: &Path) -> Result<Pushed> {
        let name = file_name(path)?;
        let key = key_for(name)?;
        let raw = tokio::fs::read(path).await.map_err(|source| WalError::Io {
            context: format!("read WAL file {}", path.display()),
            source,
        })?;
        let sha = hex::encode(Sha256::digest(&raw));
        match self.store.get_bytes(&key).await {
            Ok(existing) => {
                let archived = match decode(&existing) {
                    Ok(bytes) => hex::encode(Sha256::digest(&bytes)),
                    Err(reason) => format!("unreadable: {reason}"),
                };
                if archived == sha {
                    tracing::info!(key, "WAL already archived with identical content");
                    return Ok(Pushed::AlreadyArchived);
                }
                return Err(WalError::Conflict {
                    key,
                    archived,
                    new: sha,
                });
            }
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let encoded = encode(&raw);
        let stored_bytes = encoded.len() as u64;
        self.store.put_bytes(&key, encoded, "application/octet-stream").await?;
        tracing::debug!(key, raw = raw.len(), stored = stored_bytes, "archived WAL");
        Ok(Pushed::Stored {
            raw_bytes: raw.len() as u64,
            stored_bytes,
        })
    }

    /// Restores archived file `name` to `dest` after checking its SHA-256.
    pub async fn fetch(&self, name: &str, dest: &Path) -> Result<Fetched> {
        let Some(raw) = self.fetch_verified(name).await? else {
            return Ok(Fetched::Missing);
        };
        let bytes = raw.len() as u64;
        let partial = dest.with_extension("drillbook-partial");
        tokio::fs::write(&partial, &raw).await.map_err(|source| WalError::Io {
            context: format!("write {}", partial.display()),
            source,
        })?;
        tokio::fs::rename(&partial, dest).await.map_err(|source| WalError::Io {
            context: format!("move the fetched WAL into {}", dest.display()),
            source,
        })?;
        Ok(Fetched::Restored { bytes })
    }

    /// The raw bytes of archived file `name`, once their SHA-256 matched;
    /// `None` when it is not in the archive.
    ///
    /// # Errors
    /// [`WalError::Corrupt`] for a damaged object; store errors as they come.
    pub async fn fetch_verified(&self, name: &str) -> Result<Option<Vec<u8>>> {
        match self.fetch_stored(name).await? {
            Some(stored) => verify_stored(name, stored).await.map(Some),
            None => Ok(None),
        }
    }

    /// The archived object of `name` as stored (compressed, unchecked);
    /// `None` when it is not in the archive.
    async fn fetch_stored(&self, name: &str) -> Result<Option<Vec<u8>>> {
        match self.store.get_bytes(&key_for(name)?).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Archived file names of one timeline (`None`: all), sorted.
    pub async fn list(&self, timeline: Option<u32>) -> Result<Vec<String>> {
        let prefix = match timeline {
            Some(t) => format!("{WAL_PREFIX}{t:08X}/"),
            None => WAL_PREFIX.to_owned(),
        };
        let mut names: Vec<String> = self
            .store
            .list(&prefix)
            .await?
            .into_iter()
            .filter_map(|o| o.key.rsplit('/').next().map(str::to_owned))
            .collect();
        names.sort();
        Ok(names)
    }
}

/// Decodes `name`'s stored object and checks its SHA-256 ([`decode`]),
/// off the async threads: inflating and hashing 16 MiB is CPU work.
///
/// # Errors
/// [`WalError::Corrupt`] for a damaged object.
async fn verify_stored(name: &str, stored: Vec<u8>) -> Result<Vec<u8>> {
    let key = key_for(name)?;
    match tokio::task::spawn_blocking(move || decode(&stored)).await {
        Ok(decoded) => decoded.map_err(|reason| WalError::Corrupt { key, reason }),
        Err(e) => Err(WalError::Corrupt {
            key,
            reason: format!("decoding stopped ({e})"),
        }),
    }
}

/// The store key of a WAL file name: `wal/<timeline>/<name>`.
pub fn key_for(name: &str) -> Result<String> {
    let bad = || WalError::BadName { name: name.to_owned() };
    let hex8 = |s: &str| s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit());
    let valid = if let Some(tli) = name.strip_suffix(".history") {
        hex8(tli)
    } else {
        let (segment, rest) = name.split_at_checked(24).ok_or_else(bad)?;
        segment.bytes().all(|b| b.is_ascii_hexdigit())
            && (rest.is_empty() || rest == ".partial" || (rest.ends_with(".backup") && rest.len() == 16))
    };
    if !valid || name.contains('/') {
        return Err(bad());
    }
    Ok(format!("{WAL_PREFIX}{}/{name}", &name[..8]))
}

/// The segment file name holding `lsn` on `timeline` (16 MiB segments).
pub fn segment_name(timeline: u32, lsn: u64, segment_bytes: u64) -> String {
    let segno = lsn / segment_bytes;
    let per_id = 0x1_0000_0000 / segment_bytes;
    format!("{timeline:08X}{:08X}{:08X}", segno / per_id, segno % per_id)
}

/// Parses `X/Y` into a 64-bit LSN.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// Formats a 64-bit LSN as `X/Y`.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// `archive_command` running `program wal-push`.
pub fn archive_command(program: &Path) -> String {
    format!("{} wal-push %p", shell_quote(&program.display().to_string()))
}

/// `restore_command` running `program wal-fetch`.
pub fn restore_command(program: &Path) -> String {
    format!("{} wal-fetch %f %p", shell_quote(&program.display().to_string()))
}

/// `restore_command` copying from `dir`, a local copy of archived segments
/// already fetched and verified (a missing one ends recovery there, as
/// `wal-fetch` does at the end of the archive).
pub fn copy_restore_command(dir: &Path) -> String {
    format!("cp {}/%f %p", shell_quote(&dir.display().to_string()))
}

/// Environment for a server whose archive/restore command reaches `config`.
/// The credentials travel in the server's environment, never its settings
/// (which `SHOW` and logs would reveal).
pub fn server_env(config: &S3Config) -> Vec<(String, String)> {
    let mut env = vec![
        ("BACKUP_BUCKET".to_owned(), config.location()),
        ("AWS_REGION".to_owned(), config.region.clone()),
        ("NO_PROXY".to_owned(), "127.0.0.1,localhost".to_owned()),
        ("RUST_LOG".to_owned(), "drillbook=warn".to_owned()),
    ];
    if let Some(endpoint) = &config.endpoint {
        env.push(("AWS_ENDPOINT_URL".to_owned(), endpoint.clone()));
    }
    if let Some((key, secret)) = &config.credentials {
        env.push(("AWS_ACCESS_KEY_ID".to_owned(), key.clone()));
        env.push(("AWS_SECRET_ACCESS_KEY".to_owned(), secret.expose().to_owned()));
    }
    env
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn file_name(path: &Path) -> Result<&str> {
    path.file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| WalError::BadName {
            name: path.display().to_string(),
        })
}

/// Header line, then the raw bytes DEFLATE-compressed.
pub fn encode(raw: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let header = format!("{MAGIC} {} {}\n", raw.len(), hex::encode(Sha256::digest(raw))).into_bytes();
    let mut encoder = flate2::write::DeflateEncoder::new(header, flate2::Compression::fast());
    encoder.write_all(raw).expect("writing to a Vec cannot fail");
    encoder.finish().expect("writing to a Vec cannot fail")
}

/// Inverse of [`encode`], checking length and SHA-256.
pub fn decode(stored: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let newline = stored.iter().position(|&b| b == b'\n').ok_or("no header line")?;
    let header = std::str::from_utf8(&stored[..newline]).map_err(|_| "header is not text")?;
    let rest = header.strip_prefix(MAGIC).ok_or("not a drillbook WAL object")?;
    let mut fields = rest.split_whitespace();
    let len: usize = fields
        .next()
        .and_then(|f| f.parse().ok())
        .ok_or("header has no length")?;
    let expected = fields.next().ok_or("header has no sha256")?;
    let mut raw = Vec::with_capacity(len);
    // One byte past the stated length is enough to tell "too long" apart,
    // and bounds what a damaged object can make us allocate.
    flate2::read::DeflateDecoder::new(&stored[newline + 1..])
        .take(len as u64 + 1)
        .read_to_end(&mut raw)
        .map_err(|e| format!("compressed data is damaged ({e})"))?;
    if raw.len() != len {
        return Err(format!("{} bytes decompressed, header says {len}", raw.len()));
    }
    let actual = hex::encode(Sha256::digest(&raw));
    if actual != expected {
        return Err(format!("sha256 {actual}, header says {expected}"));
    }
    Ok(raw)
}

/// Options for a primary that archives every WAL file to `config` through
/// `program wal-push`, switching segments at least every `archive_timeout`.
///
/// # Errors
/// When the server user cannot execute `program` (see
/// [`crate::pg::Cluster::check_executable_by_server`]).
pub fn archiving_options(
    program: &Path,
    config: &S3Config,
    archive_timeout: std::time::Duration,
) -> Result<crate::pg::ClusterOptions, crate::pg::PgError> {
    crate::pg::Cluster::check_executable_by_server(program)?;
    let mut options = crate::pg::ClusterOptions::default().archiving(&archive_command(program), archive_timeout);
    for (name, value) in server_env(config) {
        options = options.env(&name, value);
    }
    Ok(options)
}

/// `pg_switch_wal()` and wait until the switched segment is archived
/// (`pg_stat_archiver`). Returns the segment's name.
pub async fn switch_and_wait_archived(conn: &mut sqlx::PgConnection, timeout: std::time::Duration) -> Result<String> {
    let sql = |context: &str| {
        let context = context.to_owned();
        move |source| WalError::Sql { context, source }
    };
    // A switch with no WAL since the last one does nothing and names the
    // current, unfinished segment, which would never be archived: write one
    // record first (a logical message, no table touched).
    sqlx::query("SELECT pg_logical_emit_message(false, 'drillbook', 'switch')")
        .execute(&mut *conn)
        .await
        .map_err(sql("write a WAL record before switching"))?;
    let segment: String = sqlx::query_scalar("SELECT pg_walfile_name(pg_switch_wal())")
        .fetch_one(&mut *conn)
        .await
        .map_err(sql("switch WAL (pg_switch_wal)"))?;
    wait_archived(conn, &segment, timeout).await?;
    Ok(segment)
}

/// Waits until `segment` (or a later one) is archived.
pub async fn wait_archived(conn: &mut sqlx::PgConnection, segment: &str, timeout: std::time::Duration) -> Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let (archived, failed): (Option<String>, Option<String>) =
            sqlx::query_as("SELECT last_archived_wal, last_failed_wal FROM pg_stat_archiver")
                .fetch_one(&mut *conn)
                .await
                .map_err(|source| WalError::Sql {
                    context: "read pg_stat_archiver".into(),
                    source,
                })?;
        // Names of one timeline sort in WAL order.
        if archived.as_deref().is_some_and(|a| a.len() == 24 && a >= segment) {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(WalError::NotArchived {
                segment: segment.to_owned(),
                seconds: timeout.as_secs(),
                last_failed: failed.unwrap_or_else(|| "none".into()),
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEGMENT: usize = 16 << 20;

    #[test]
    fn a_mostly_empty_segment_compresses_to_almost_nothing_and_round_trips() {
        let mut raw = vec![0u8; SEGMENT];
        raw[8192 + 3] = 7;
        raw[SEGMENT - 1] = 1;
        let encoded = encode(&raw);
        assert!(encoded.len() < SEGMENT / 100, "{} bytes stored", encoded.len());
        assert_eq!(decode(&encoded).unwrap(), raw);
    }

    #[test]
    fn damage_is_refused_never_decoded_into_wrong_wal() {
        let raw: Vec<u8> = (0..3 * 8192).map(|i| (i * 7 % 251) as u8).collect();
        let encoded = encode(&raw);
        for at in [encoded.len() / 2, encoded.len() - 2] {
            let mut damaged = encoded.clone();
            damaged[at] ^= 0x40;
            assert!(decode(&damaged).is_err(), "a flipped byte at {at} went unnoticed");
        }
        let err = decode(&encoded[..encoded.len() - 8]).unwrap_err();
        assert!(err.contains("damaged") || err.contains("header says"), "{err}");
        let mut wrong_header = encoded.clone();
        let digit = wrong_header.iter().position(|&b| b == b' ').unwrap() + 18;
        wrong_header[digit] = if wrong_header[digit] == b'a' { b'b' } else { b'a' };
        assert!(decode(&wrong_header).is_err());
    }

    #[test]
    fn keys_follow_the_timeline() {
        assert_eq!(
            key_for("000000020000000000000003").unwrap(),
            "wal/00000002/000000020000000000000003"
        );
        assert_eq!(key_for("00000002.history").unwrap(), "wal/00000002/00000002.history");
        assert_eq!(
            key_for("000000010000000000000002.00000028.backup").unwrap(),
            "wal/00000001/000000010000000000000002.00000028.backup"
        );
        for bad in [
            "../etc/passwd",
            "RECOVERYXLOG",
            "0000000100000000000000",
            "x00000010000000000000003",
        ] {
            assert!(matches!(key_for(bad), Err(WalError::BadName { .. })), "{bad}");
        }
    }

    #[test]
    fn lsns_and_segment_names() {
        assert_eq!(parse_lsn("0/3000148"), Some(0x300_0148));
        assert_eq!(format_lsn(0x1_0300_0148), "1/3000148");
        assert_eq!(segment_name(1, 0x300_0148, 16 << 20), "000000010000000000000003");
        assert_eq!(segment_name(2, 0x1_0300_0148, 16 << 20), "000000020000000100000003");
    }
}
