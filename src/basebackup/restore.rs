//! Restoring a base backup from S3 into a data directory in one pass.
//!
//! Three stages run at once, joined by bounded channels:
//!
//! 1. the object comes down as ranged GETs, a few in flight, in order
//!    ([`Store::download_ranges`]);
//! 2. a thread hashes it (sha256, against our manifest) and decompresses it;
//! 3. a thread untars it, writing each file and computing the checksum
//!    `backup_manifest` records for it as it is written.
//!
//! Then [`backup_manifest::check`] compares what was written with what
//! `backup_manifest` lists, and `pg_waldump` parses the WAL the backup needs:
//! what `pg_verifybackup` checks, without reading the files a second time.
//! The hashing thread always reads the object to its end, even after the
//! extraction failed, so a damaged object is reported as such (its sha256)
//! rather than as whatever broke first.

use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::path::{Component, Path, PathBuf};

use bytes::{Buf, Bytes};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::backup_manifest::{self, ChecksumAlgorithm, WrittenFile};
use super::{BaseBackupError, BaseBackupManifest, Compression, Result};
use crate::pg::PgBinaries;
use crate::store::Store;

/// Ranged GETs: 8 MiB each, three in flight (measured on 2 cores against
/// the embedded S3: more in flight buys nothing, fewer leaves gaps).
const RANGE_SIZE: u64 = 8 << 20;
const RANGES_IN_FLIGHT: usize = 3;
/// Decompressed bytes are handed to the untar thread in blocks this big.
const BLOCK_SIZE: usize = 1 << 20;
/// Blocks queued between stages.
const QUEUED: usize = 4;

/// Downloads a base backup into `workdir/data` (created; it must not
/// exist), verifying it as it is written. Returns the data directory,
/// ready for a `recovery.signal`.
///
/// # Errors
/// [`BaseBackupError::ChecksumMismatch`] or [`BaseBackupError::Damaged`]
/// naming what failed (the object's sha256 or size, a file's checksum or
/// size, a file missing or extra, `backup_manifest` itself, the WAL).
///
/// # Guarantees
/// On error `workdir/data` does not exist. Killed midway, what is left is
/// inside `workdir`, which the caller owns.
pub async fn download_base_backup(
    bins: &PgBinaries,
    store: &Store,
    manifest: &BaseBackupManifest,
    workdir: &Path,
) -> Result<PathBuf> {
    let data = workdir.join("data");
    create_private_dir(&data)?;
    match restore_into(bins, store, manifest, &data).await {
        Ok(()) => Ok(data),
        Err(e) => {
            if let Err(remove) = std::fs::remove_dir_all(&data) {
                tracing::warn!(dir = %data.display(), error = %remove, "could not remove a refused base backup's files");
            }
            Err(e)
        }
    }
}

fn create_private_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .map_err(|source| BaseBackupError::Io {
            context: format!("create {}", path.display()),
            source,
        })
}

async fn restore_into(bins: &PgBinaries, store: &Store, manifest: &BaseBackupManifest, data: &Path) -> Result<()> {
    let key = manifest.tar_key.as_str();
    let damaged = |problem: String| BaseBackupError::Damaged {
        key: key.to_owned(),
        problem,
    };
    match store.size_of(key).await? {
        None => {
            return Err(crate::store::StoreError::NotFound {
                bucket: store.config().bucket.clone(),
                key: format!("{}{key}", store.config().prefix),
            }
            .into());
        }
        Some(size) if size != manifest.tar_bytes => {
            return Err(damaged(format!(
                "it is {size} bytes, its manifest says {}",
                manifest.tar_bytes
            )));
        }
        Some(_) => {}
    }

    let (object_tx, object_rx) = mpsc::channel::<Bytes>(QUEUED);
    let mut threads = Threads::new(object_tx);
    let (tar_tx, tar_rx) = mpsc::channel::<Bytes>(QUEUED);
    let compression = manifest.compression;
    let alive = threads.alive.clone();
    let unpacking = tokio::task::spawn_blocking(move || {
        let _alive = alive;
        unpack(Chunks::new(object_rx, true), compression, tar_tx)
    });
    let computed = compression.file_checksums();
    let root = data.to_path_buf();
    let (alive, cancelled) = (threads.alive.clone(), threads.cancelled.clone());
    let untarring = tokio::task::spawn_blocking(move || {
        let _alive = alive;
        untar(Chunks::new(tar_rx, false), &root, computed, &cancelled)
    });

    let progress = crate::progress::task(
        format!("restore {key}"),
        crate::progress::Unit::Bytes,
        Some(manifest.tar_bytes),
    );
    let mut ranges = std::pin::pin!(store.download_ranges(key, manifest.tar_bytes, RANGE_SIZE, RANGES_IN_FLIGHT));
    let mut downloaded = Ok(());
    let mut first = true;
    while let Some(range) = ranges.next().await {
        match range {
            Ok(bytes) => {
                progress.advance(bytes.len() as u64);
                if threads.object.send(bytes).await.is_err() {
                    break; // The hashing thread stopped: it says why.
                }
                if std::mem::take(&mut first) {
                    // Files half written, the rest still to come.
                    crate::failpoint!("basebackup::restore_midway");
                }
            }
            Err(e) => {
                downloaded = Err(e);
                break;
            }
        }
    }
    threads.end_of_object();
    let unpacked = unpacking.await.expect("the unpacking thread does not panic");
    let untarred = untarring.await.expect("the untar thread does not panic");
    downloaded?;
    progress.finish();

    if unpacked.sha256 != manifest.tar_sha256 {
        return Err(BaseBackupError::ChecksumMismatch {
            key: key.to_owned(),
            expected: manifest.tar_sha256.clone(),
            actual: unpacked.sha256,
        });
    }
    if let Some(problem) = unpacked.failure {
        return Err(damaged(problem));
    }
    let written = untarred.map_err(|e| match e {
        UntarError::Damaged(problem) => damaged(problem),
        UntarError::Io { context, source } => BaseBackupError::Io { context, source },
    })?;
    let Some(text) = written.manifest else {
        return Err(damaged(
            "it holds no backup_manifest (pg_basebackup writes one last: the tar is cut short)".into(),
        ));
    };
    let root = data.to_path_buf();
    let files = written.files;
    let wal_ranges = tokio::task::spawn_blocking(move || backup_manifest::check(&text, &files, computed, &root))
        .await
        .expect("the manifest check does not panic")
        .map_err(damaged)?;
    for range in &wal_ranges {
        crate::pg::tools::parse_wal_range(
            bins,
            &data.join("pg_wal"),
            range.timeline,
            &range.start_lsn,
            &range.end_lsn,
        )
        .await
        .map_err(|e| damaged(format!("the WAL it needs does not parse: {e}")))?;
    }
    Ok(())
}

/// The extraction threads of one restore. Dropped with the restore (its
/// future cancelled, as an interrupted `recover` is), it stops them and
/// waits until they did, so nothing writes into the data directory once the
/// caller removes it.
struct Threads {
    /// Into the hashing thread; closed first when dropped.
    object: mpsc::Sender<Bytes>,
    cancelled: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Each thread holds a clone; `done` reports when all are gone.
    alive: std::sync::mpsc::Sender<()>,
    done: std::sync::mpsc::Receiver<()>,
}

impl Threads {
    fn new(object: mpsc::Sender<Bytes>) -> Self {
        let (alive, done) = std::sync::mpsc::channel();
        Self {
            object,
            cancelled: Default::default(),
            alive,
            done,
        }
    }

    /// Tells the hashing thread the object ended.
    fn end_of_object(&mut self) {
        self.object = mpsc::channel(1).0;
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        self.cancelled.store(true, std::sync::atomic::Ordering::Relaxed);
        self.end_of_object();
        let (alive, _) = std::sync::mpsc::channel();
        drop(std::mem::replace(&mut self.alive, alive));
        // Returns at once when they finished; else within one block's write.
        let _ = self.done.recv();
    }
}

/// A reader over the byte blocks of a channel. With `hashing`, every block
/// received is hashed, read or not.
struct Chunks {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
    hasher: Option<Sha256>,
    received: u64,
}

impl Chunks {
    fn new(rx: mpsc::Receiver<Bytes>, hashing: bool) -> Self {
        Self {
            rx,
            current: Bytes::new(),
            hasher: hashing.then(Sha256::new),
            received: 0,
        }
    }

    fn receive(&mut self) -> Option<Bytes> {
        let block = self.rx.blocking_recv()?;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&block);
        }
        self.received += block.len() as u64;
        Some(block)
    }

    /// Receives (and hashes) the rest, returning the sha256 of all.
    fn drain(mut self) -> String {
        while self.receive().is_some() {}
        self.hasher.map(|h| hex::encode(h.finalize())).unwrap_or_default()
    }
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Chunks {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while self.current.is_empty() {
            match self.receive() {
                Some(block) => self.current = block,
                None => break,
            }
        }
        Ok(&self.current)
    }

    fn consume(&mut self, amount: usize) {
        self.current.advance(amount);
    }
}

/// What the hashing thread saw.
struct Unpacked {
    sha256: String,
    /// Why decompression stopped early, if it did.
    failure: Option<String>,
}

/// Hashes and decompresses `object` into `tar`, then reads `object` to its
/// end whatever happened.
fn unpack(mut object: Chunks, compression: Compression, tar: mpsc::Sender<Bytes>) -> Unpacked {
    let failure = match compression {
        Compression::None => {
            while let Some(block) = object.receive() {
                if tar.blocking_send(block).is_err() {
                    break;
                }
            }
            None
        }
        Compression::Zstd => match zstd::stream::read::Decoder::with_buffer(&mut object) {
            Ok(decoder) => forward(decoder, &tar)
                .err()
                .map(|e| format!("zstd decompression failed: {e}")),
            Err(e) => Some(format!("zstd decompression failed to start: {e}")),
        },
    };
    drop(tar);
    Unpacked {
        sha256: object.drain(),
        failure,
    }
}

/// Reads `from` in blocks into `to` until its end or until `to` is closed.
fn forward(mut from: impl Read, to: &mpsc::Sender<Bytes>) -> std::io::Result<()> {
    loop {
        let mut block = vec![0; BLOCK_SIZE];
        let mut filled = 0;
        while filled < BLOCK_SIZE {
            match from.read(&mut block[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        if filled == 0 {
            return Ok(());
        }
        block.truncate(filled);
        if to.blocking_send(Bytes::from(block)).is_err() {
            return Ok(());
        }
    }
}

/// What the untar thread wrote.
struct Written {
    files: BTreeMap<PathBuf, WrittenFile>,
    /// `backup_manifest`'s text.
    manifest: Option<Vec<u8>>,
}

enum UntarError {
    /// The archive itself is wrong.
    Damaged(String),
    /// Writing failed (disk full, permissions).
    Io { context: String, source: std::io::Error },
}

fn damaged(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> UntarError {
    let what = what.into();
    move |e| UntarError::Damaged(format!("{what}: {e}"))
}

fn untar(
    input: Chunks,
    root: &Path,
    computed: ChecksumAlgorithm,
    cancelled: &std::sync::atomic::AtomicBool,
) -> Result<Written, UntarError> {
    let stop_if_cancelled = || {
        if cancelled.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(UntarError::Io {
                context: "extract the base backup".into(),
                source: std::io::Error::new(std::io::ErrorKind::Interrupted, "the restore was cancelled"),
            });
        }
        Ok(())
    };
    let mut archive = tar::Archive::new(input);
    let mut written = Written {
        files: BTreeMap::new(),
        manifest: None,
    };
    let mut buf = vec![0; 1 << 18];
    for entry in archive.entries().map_err(damaged("its tar does not read"))? {
        stop_if_cancelled()?;
        let mut entry = entry.map_err(damaged("its tar does not read"))?;
        let path = entry.path().map_err(damaged("its tar has an unreadable name"))?;
        let relative = safe_relative(&path)?;
        let mode = entry.header().mode().unwrap_or(0o600) & 0o777;
        let target = root.join(&relative);
        match entry.header().entry_type() {
            tar::EntryType::Directory => create_dirs(root, &relative, mode)?,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(parent) = relative.parent() {
                    create_dirs(root, parent, 0o700)?;
                }
                let io = |what: &'static str| {
                    let context = format!("{what} {}", target.display());
                    move |source| UntarError::Io { context, source }
                };
                let mut file = {
                    use std::os::unix::fs::OpenOptionsExt;
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(mode)
                        .open(&target)
                        .map_err(io("create"))?
                };
                let is_manifest = relative == Path::new("backup_manifest");
                let mut text = Vec::new();
                let mut hasher = computed.hasher();
                let mut size = 0u64;
                loop {
                    stop_if_cancelled()?;
                    let n = entry
                        .read(&mut buf)
                        .map_err(damaged(format!("its tar breaks off in {}", relative.display())))?;
                    if n == 0 {
                        break;
                    }
                    if is_manifest {
                        text.extend_from_slice(&buf[..n]);
                    } else {
                        hasher.update(&buf[..n]);
                    }
                    file.write_all(&buf[..n]).map_err(io("write"))?;
                    size += n as u64;
                }
                if is_manifest {
                    written.manifest = Some(text);
                }
                written.files.insert(
                    relative,
                    WrittenFile {
                        size,
                        checksum: hasher.finish(),
                    },
                );
            }
            other => {
                return Err(UntarError::Damaged(format!(
                    "its tar holds {} as {other:?}, which a pg_basebackup tar of one tablespace never has",
                    relative.display()
                )));
            }
        }
    }
    Ok(written)
}

/// The entry's path, refused when it could leave the data directory.
fn safe_relative(path: &Path) -> Result<PathBuf, UntarError> {
    let mut relative = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => relative.push(part),
            Component::CurDir => {}
            _ => {
                return Err(UntarError::Damaged(format!(
                    "its tar names {}, outside the data directory",
                    path.display()
                )));
            }
        }
    }
    if relative.as_os_str().is_empty() {
        return Err(UntarError::Damaged("its tar has an entry without a name".into()));
    }
    Ok(relative)
}

/// Creates `relative` and its missing parents under `root`, never `root`
/// itself: once the caller removed `root`, nothing is created again.
fn create_dirs(root: &Path, relative: &Path, mode: u32) -> Result<(), UntarError> {
    use std::os::unix::fs::DirBuilderExt;
    let mut path = root.to_path_buf();
    let mut components = relative.components().peekable();
    while let Some(component) = components.next() {
        path.push(component);
        let last = components.peek().is_none();
        match std::fs::DirBuilder::new()
            .mode(if last { mode | 0o700 } else { 0o700 })
            .create(&path)
        {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => {}
            Err(source) => {
                return Err(UntarError::Io {
                    context: format!("create {}", path.display()),
                    source,
                });
            }
        }
    }
    Ok(())
}
