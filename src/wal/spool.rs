//! The read-ahead of `wal-fetch`: while PostgreSQL replays one segment, the
//! next ones are already fetched, checked and waiting on local disk.
//!
//! PostgreSQL runs `restore_command` once per file, serially, each a new
//! process. Fetching one object per call leaves the replay waiting on S3 for
//! every segment. So a `wal-fetch` call for segment `S` also makes sure a
//! *prefetcher* runs: a background `drillbook wal-fetch --prefetcher`
//! process that fetches the segments after `S` on the same timeline (a
//! window of `depth`, a few GETs at a time, decoded and checked two at a
//! time so that the segment needed next is not slowed by all those after it)
//! into the spool, and the next call finds its segment there and moves it
//! into place with one rename.
//!
//! # The spool
//!
//! `<dir of %p>/drillbook-spool/`, that is `pg_wal/drillbook-spool/` (%p is
//! `pg_wal/RECOVERYXLOG`): inside the data directory, so only the server
//! user can read it (0700, checked on every call), on the same filesystem
//! as %p (serving is a rename, no copy), and PostgreSQL ignores directories
//! in `pg_wal` (its scans match WAL file names only; base backups leave
//! `pg_wal`'s contents out). It holds:
//!
//! - `identity`: the boot and the archive location the spool was filled
//!   from; a spool of another boot (files renamed but maybe never flushed
//!   before a power loss) or another archive is removed, never served;
//! - `<segment>`: a segment whose SHA-256 matched the archive's header,
//!   written to `<segment>.tmp-<pid>-<n>` first and renamed: only verified
//!   bytes ever carry a segment's name;
//! - `requested` (`<segment> <segment size>`): the last segment PostgreSQL
//!   asked for, which the prefetcher's window follows;
//! - `lock`: held (an open-file-description lock) by the one running
//!   prefetcher, whose pid it holds; `stop`: the spool is being removed.
//!
//! # Guarantees
//! - Only a segment that verified is served; a segment that did not (or is
//!   not in the archive, or failed to download) is fetched directly, with
//!   that fetch's exit code: a damaged object stops recovery exactly as
//!   without the spool, the end of the archive is still exit 1.
//! - Killed at any instant, a prefetcher leaves only `*.tmp-*` files, which
//!   are never served and are removed by the next prefetcher; a foreground
//!   call waiting for a segment in flight sees the lock go free and fetches
//!   it itself.
//! - Bounded: segments after the requested one, at most `depth` of them
//!   (`depth` x 16 MiB: 128 MiB by default); each call removes segments at
//!   or before the one requested and of other timelines.
//! - Removed when recovery ends: a file the archive does not have (the end
//!   of the archive, or the `.history` probe PostgreSQL makes as it
//!   promotes) or a fatal error removes the spool; `pitr` removes it too
//!   once a recovery promoted ([`remove_spool`]).
//! - Two processes never write the same file: only the lock holder writes
//!   segments, each under a temp name of its own; the foreground only
//!   renames and removes whole files. A prefetcher works through a
//!   descriptor of its spool directory, so once the spool is removed (and
//!   perhaps made again for another recovery) it can write nothing there.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs::{self, File};
use std::io::{Read as _, Write as _};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Fetched, Result, WalArchive, WalError};

/// The spool's directory name, next to `%p`.
pub const SPOOL_DIR: &str = "drillbook-spool";
/// Segments fetched ahead by default: 128 MiB of 16 MiB segments.
pub const DEFAULT_DEPTH: usize = 8;
/// GETs in flight at once by default.
pub const DEFAULT_JOBS: usize = 4;

const IDENTITY: &str = "identity";
const REQUESTED: &str = "requested";
const LOCK: &str = "lock";
const STOP: &str = "stop";
const TEMP_MARK: &str = ".tmp-";
/// PostgreSQL's default; a cluster with another size is learnt from the
/// first segment served.
const DEFAULT_SEGMENT_BYTES: u64 = 16 << 20;
/// How long a call waits for its segment while the prefetcher downloads
/// it, before fetching it itself.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(60);
/// Segments decoded at once: inflating and hashing 16 MiB takes about
/// 100 ms of a core, more than PostgreSQL needs to replay it, so one
/// decoder falls behind; more than two would take the replay's core.
const DECODES: usize = 2;
/// How long an idle prefetcher waits for the next request before it exits.
const LINGER: Duration = Duration::from_secs(2);

/// How `wal-fetch` reads ahead.
#[derive(Debug, Clone)]
pub struct Prefetch {
    /// Segments after the requested one to keep ready (0: no read-ahead).
    pub depth: usize,
    /// Downloads in flight at once.
    pub jobs: usize,
    /// The `drillbook` binary that runs the prefetcher.
    pub program: PathBuf,
}

/// `restore_command`: restores `name` to `dest` from the spool when it is
/// there and verified, else straight from the archive in the environment
/// ([`WalArchive::from_env`]), and keeps the read-ahead going.
///
/// # Errors
/// As [`WalArchive::fetch`] for a file fetched directly; spool trouble is
/// never an error (the file is fetched directly instead).
pub async fn restore_file(name: &str, dest: &Path, prefetch: &Prefetch) -> Result<Fetched> {
    super::key_for(name)?;
    let spool = if prefetch.depth > 0 && is_segment(name) {
        match Spool::open(dest) {
            Ok(spool) => Some(spool),
            Err(e) => {
                tracing::warn!(error = %e, "WAL read-ahead off for this file: no usable spool next to {}", dest.display());
                None
            }
        }
    } else {
        None
    };
    if let Some(spool) = &spool {
        match spool.serve(name, dest, prefetch) {
            Ok(Some(bytes)) => return Ok(Fetched::Restored { bytes }),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "could not read {name} from the WAL spool; fetching it directly"),
        }
    }
    let result = WalArchive::from_env().await?.fetch(name, dest).await;
    match (&result, &spool) {
        (Ok(Fetched::Restored { bytes }), Some(spool)) => spool.learn_segment_size(name, *bytes),
        // The end of the archive (or of recovery: the `.history` probe at
        // promotion), or recovery stops: nothing more will be asked for.
        (Ok(Fetched::Missing) | Err(_), _) => remove_spool(spool_parent(dest)),
        _ => {}
    }
    result
}

/// Removes the spool in `dir` (a data directory's `pg_wal`, where `%p`
/// points) if there is one: a prefetcher still running sees `stop` and can
/// write nothing more into it.
pub fn remove_spool(dir: &Path) {
    let spool = dir.join(SPOOL_DIR);
    if !spool.exists() {
        return;
    }
    let _ = File::create(spool.join(STOP));
    // A prefetcher may add a temp file between the listing and the rmdir.
    for _ in 0..20 {
        match fs::remove_dir_all(&spool) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    tracing::warn!("could not remove the WAL spool {}", spool.display());
}

/// Where the spool for `%p` = `dest` lives: `dest`'s directory.
fn spool_parent(dest: &Path) -> &Path {
    dest.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Whether `name` is a WAL segment (24 hex digits), the only files read ahead.
fn is_segment(name: &str) -> bool {
    name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The segment after `name` with segments of `segment_bytes`.
fn next_segment(name: &str, segment_bytes: u64) -> Option<String> {
    let per_id = 0x1_0000_0000 / segment_bytes.max(1);
    let timeline = &name[..8];
    let id = u64::from_str_radix(&name[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&name[16..24], 16).ok()?;
    let (id, seg) = if seg + 1 >= per_id { (id + 1, 0) } else { (id, seg + 1) };
    (id <= 0xFFFF_FFFF).then(|| format!("{timeline}{id:08X}{seg:08X}"))
}

/// A plausible segment size (a power of two, 1 MiB to 1 GiB).
fn plausible_segment_size(bytes: u64) -> bool {
    bytes.is_power_of_two() && ((1 << 20)..=(1 << 30)).contains(&bytes)
}

/// What the spool must have been filled from to be served: this boot, this archive.
fn identity() -> Result<String> {
    let location = std::env::var("BACKUP_BUCKET").map_err(|_| WalError::NoLocation)?;
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    Ok(format!(
        "boot {}\nlocation {location}\nendpoint {endpoint}\n",
        boot.trim()
    ))
}

/// The spool as the foreground call sees it.
#[derive(Debug)]
struct Spool {
    dir: PathBuf,
}

impl Spool {
    /// The spool next to `dest`, made (0700) if absent; one of another boot
    /// or archive, or not private to this user, is removed and made anew.
    fn open(dest: &Path) -> Result<Self> {
        let parent = spool_parent(dest);
        let dir = parent.join(SPOOL_DIR);
        let identity = identity()?;
        let io = |context: String| move |source| WalError::Io { context, source };
        if let Ok(meta) = fs::symlink_metadata(&dir) {
            // SAFETY: geteuid has no preconditions.
            let mine = meta.is_dir() && meta.uid() == unsafe { libc::geteuid() } && meta.mode() & 0o077 == 0;
            let same = fs::read_to_string(dir.join(IDENTITY)).is_ok_and(|id| id == identity);
            if mine && same && !dir.join(STOP).exists() {
                return Ok(Self { dir });
            }
            if !meta.is_dir() {
                return Err(WalError::Io {
                    context: format!("use {} as the WAL spool", dir.display()),
                    source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
                });
            }
            remove_spool(parent);
        }
        // Made under a temp name with its identity, then renamed: the spool
        // never exists without one.
        let fresh = parent.join(format!("{SPOOL_DIR}.new-{}", std::process::id()));
        let _ = fs::remove_dir_all(&fresh);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&fresh)
            .map_err(io(format!("create the WAL spool {}", fresh.display())))?;
        fs::write(fresh.join(IDENTITY), &identity).map_err(io(format!("write {}", fresh.display())))?;
        if fs::rename(&fresh, &dir).is_err() {
            // Made by another call meanwhile: use that one if it is sound.
            let _ = fs::remove_dir_all(&fresh);
            if !fs::read_to_string(dir.join(IDENTITY)).is_ok_and(|id| id == identity) {
                return Err(WalError::Io {
                    context: format!("create the WAL spool {}", dir.display()),
                    source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
                });
            }
        }
        Ok(Self { dir })
    }

    /// Records `name` as requested, drops what is behind it, starts a
    /// prefetcher if none runs, and moves `name` into `dest` if the spool
    /// has it (waiting while the prefetcher downloads it). `None`: fetch it
    /// directly.
    fn serve(&self, name: &str, dest: &Path, prefetch: &Prefetch) -> std::io::Result<Option<u64>> {
        let segment_bytes = read_requested(&self.dir).map_or(DEFAULT_SEGMENT_BYTES, |(_, bytes)| bytes);
        self.request(name, segment_bytes)?;
        self.remove_behind(name)?;
        if !prefetcher_running(&self.dir) {
            spawn_prefetcher(name, dest, prefetch)?;
        }
        let deadline = Instant::now() + IN_FLIGHT_WAIT;
        loop {
            let waiting = Instant::now() < deadline && self.in_flight(name)? && prefetcher_running(&self.dir);
            // Taken after the look at the download: a segment that landed
            // just before it finished is still found.
            if let Some(bytes) = self.take(name, dest)? {
                self.learn_segment_size(name, bytes);
                return Ok(Some(bytes));
            }
            if !waiting {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Moves the verified `name` into `dest` if the spool has it.
    fn take(&self, name: &str, dest: &Path) -> std::io::Result<Option<u64>> {
        let ready = self.dir.join(name);
        match fs::rename(&ready, dest) {
            Ok(()) => Ok(Some(fs::metadata(dest)?.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            // `%p` on another filesystem than the spool: copy, then rename.
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                let partial = dest.with_extension("drillbook-partial");
                let bytes = fs::copy(&ready, &partial)?;
                fs::rename(&partial, dest)?;
                fs::remove_file(&ready)?;
                Ok(Some(bytes))
            }
            Err(e) => Err(e),
        }
    }

    fn request(&self, name: &str, segment_bytes: u64) -> std::io::Result<()> {
        let temp = self.dir.join(format!("{REQUESTED}.{}", std::process::id()));
        fs::write(&temp, format!("{name} {segment_bytes}\n"))?;
        fs::rename(&temp, self.dir.join(REQUESTED))
    }

    /// Records the segment size a served file showed, when it is news.
    fn learn_segment_size(&self, name: &str, bytes: u64) {
        let known = read_requested(&self.dir).map(|(_, b)| b);
        if plausible_segment_size(bytes) && known != Some(bytes) {
            let _ = self.request(name, bytes);
        }
    }

    /// Removes segments at or before `name`, and of other timelines.
    fn remove_behind(&self, name: &str) -> std::io::Result<()> {
        for entry in fs::read_dir(&self.dir)? {
            let file = entry?.file_name();
            let Some(file) = file.to_str() else { continue };
            if is_segment(file) && file != name && (file[..8] != name[..8] || file < name) {
                let _ = fs::remove_file(self.dir.join(file));
            }
        }
        Ok(())
    }

    /// Whether the prefetcher is downloading `name` now.
    fn in_flight(&self, name: &str) -> std::io::Result<bool> {
        let marker = format!("{name}{TEMP_MARK}");
        for entry in fs::read_dir(&self.dir)? {
            if entry?.file_name().to_str().is_some_and(|f| f.starts_with(&marker)) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

fn read_requested(dir: &Path) -> Option<(String, u64)> {
    parse_requested(&fs::read_to_string(dir.join(REQUESTED)).ok()?)
}

fn parse_requested(text: &str) -> Option<(String, u64)> {
    let (name, bytes) = text.trim().split_once(' ')?;
    let bytes = bytes.parse().ok().filter(|b| plausible_segment_size(*b))?;
    is_segment(name).then(|| (name.to_owned(), bytes))
}

/// Starts `drillbook wal-fetch --prefetcher` in the background. Its output
/// goes nowhere: whoever started PostgreSQL may wait for the server's
/// stdout and stderr to close. It stays in the server's process group, so
/// a server shutdown (SIGTERM/SIGQUIT to the group) stops it too.
fn spawn_prefetcher(name: &str, dest: &Path, prefetch: &Prefetch) -> std::io::Result<()> {
    std::process::Command::new(&prefetch.program)
        .arg("wal-fetch")
        .arg("--prefetcher")
        .arg(format!("--prefetch={}", prefetch.depth))
        .arg(format!("--prefetch-jobs={}", prefetch.jobs))
        .arg(name)
        .arg(dest)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(drop)
}

/// Whether a prefetcher holds the spool's lock (tested without taking it).
fn prefetcher_running(dir: &Path) -> bool {
    let Ok(file) = fs::OpenOptions::new().read(true).write(true).open(dir.join(LOCK)) else {
        return false;
    };
    let mut lock = whole_file_lock(libc::F_WRLCK);
    // SAFETY: fcntl on an open descriptor with a valid `flock`.
    let probed = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut lock) };
    probed == 0 && i32::from(lock.l_type) != libc::F_UNLCK
}

fn whole_file_lock(kind: i32) -> libc::flock {
    // SAFETY: `flock` is plain data; all zeros is "the whole file, from 0".
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock
}

/// The background prefetcher (`wal-fetch --prefetcher NAME %p`): keeps the
/// `depth` segments after the requested one in the spool next to `dest`,
/// then exits. Returns quietly when another one runs or there is no spool.
///
/// # Errors
/// Only when the archive's location is missing from the environment;
/// everything else just ends the read-ahead.
pub async fn run_prefetcher(dest: &Path, depth: usize, jobs: usize) -> Result<()> {
    let Ok(dir) = SpoolDir::open(&spool_parent(dest).join(SPOOL_DIR)) else {
        return Ok(());
    };
    let Some(mut lock) = dir.try_lock() else {
        return Ok(());
    };
    let archive = WalArchive::from_env().await?;
    dir.remove_temps();
    let dir = std::sync::Arc::new(dir);
    let decode_slot = std::sync::Arc::new(tokio::sync::Semaphore::new(DECODES.min(jobs.max(1))));
    let mut running = tokio::task::JoinSet::new();
    let mut in_flight = BTreeSet::new();
    // Names not to try again in this process: damaged, failed, or at or
    // past the end of the archive.
    let mut given_up = BTreeSet::new();
    let mut end: Option<String> = None;
    let mut temp_seq = 0u64;
    let mut placed = 0usize;
    loop {
        if dir.exists(STOP) {
            running.abort_all();
            return Ok(());
        }
        let Some((requested, segment_bytes)) = dir.requested() else {
            return Ok(());
        };
        // Ramping up: one download more for each segment placed, so the
        // first ones, which the replay waits for now, get the machine.
        let slots = jobs.max(1).min(1 + placed);
        let mut next = requested.clone();
        for _ in 0..depth {
            if running.len() >= slots {
                break;
            }
            let Some(candidate) = next_segment(&next, segment_bytes) else {
                break;
            };
            next = candidate.clone();
            if end.as_ref().is_some_and(|end| candidate >= *end)
                || in_flight.contains(&candidate)
                || given_up.contains(&candidate)
                || dir.exists(&candidate)
            {
                continue;
            }
            in_flight.insert(candidate.clone());
            temp_seq += 1;
            let temp = format!("{candidate}{TEMP_MARK}{}-{temp_seq}", std::process::id());
            running.spawn(fetch_into_spool(
                dir.clone(),
                archive.clone(),
                decode_slot.clone(),
                candidate,
                temp,
            ));
        }
        if running.is_empty() {
            // Nothing to do: PostgreSQL asks for the next segment soon,
            // which saves starting another prefetcher for it.
            if dir.changes_within(&requested, LINGER).await {
                continue;
            }
            // Let go, then look once more, so a request
            // written as the lock went free is never left unserved.
            drop(lock);
            let again = dir.requested();
            if (again.is_some_and(|(name, _)| name != requested) || dir.exists(STOP))
                && let Some(relocked) = dir.try_lock()
            {
                lock = relocked;
                continue;
            }
            return Ok(());
        }
        let Some(Ok((name, outcome))) = running.join_next().await else {
            continue;
        };
        in_flight.remove(&name);
        match outcome {
            Outcome::Placed => placed += 1,
            Outcome::Stale => {}
            Outcome::Missing => {
                if end.as_ref().is_none_or(|end| name < *end) {
                    end = Some(name);
                }
            }
            Outcome::Failed => {
                given_up.insert(name);
            }
        }
    }
}

enum Outcome {
    Placed,
    /// Fetched, but PostgreSQL had moved past it, or the spool is going away.
    Stale,
    Missing,
    Failed,
}

/// Downloads `name`, checks it, and renames it into the spool.
async fn fetch_into_spool(
    dir: std::sync::Arc<SpoolDir>,
    archive: WalArchive,
    decode_slot: std::sync::Arc<tokio::sync::Semaphore>,
    name: String,
    temp: String,
) -> (String, Outcome) {
    // The temp file exists for the whole download: it tells a waiting
    // foreground call that this segment is on its way.
    let Ok(mut file) = dir.create_new(&temp) else {
        return (name, Outcome::Failed);
    };
    // Downloads overlap; decoding (inflate + sha256, CPU-bound) goes at
    // most DECODES at a time, in the order the downloads finish (nearest
    // first, mostly): the segment needed next is not held up by all those
    // after it, and the replay keeps a core.
    let fetched = match archive.fetch_stored(&name).await {
        Ok(Some(stored)) => {
            let _slot = decode_slot.acquire().await;
            super::verify_stored(&name, stored).await.map(Some)
        }
        Ok(None) => Ok(None),
        Err(e) => Err(e),
    };
    let outcome = match fetched {
        Ok(Some(raw)) => {
            let written = tokio::task::spawn_blocking(move || file.write_all(&raw)).await;
            crate::failpoint!("wal::prefetch::before_rename");
            let behind = dir.requested().is_some_and(|(requested, _)| name <= requested);
            if !matches!(written, Ok(Ok(()))) {
                Outcome::Failed
            } else if behind || dir.exists(STOP) {
                Outcome::Stale
            } else if dir.rename(&temp, &name).is_ok() {
                return (name, Outcome::Placed);
            } else {
                Outcome::Failed
            }
        }
        Ok(None) => Outcome::Missing,
        Err(e) => {
            tracing::debug!(error = %e, name, "read-ahead of a WAL segment failed; wal-fetch will fetch it directly");
            Outcome::Failed
        }
    };
    dir.remove(&temp);
    (name, outcome)
}

/// The spool directory held open by the prefetcher: every file operation
/// is relative to this descriptor, so it never reaches a spool made anew
/// at the same path after this one was removed.
struct SpoolDir {
    fd: OwnedFd,
}

impl SpoolDir {
    fn open(path: &Path) -> std::io::Result<Self> {
        let path = CString::new(path.as_os_str().as_bytes())?;
        // SAFETY: a NUL-terminated path; the descriptor is owned below.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and is owned by nobody else.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    fn open_at(&self, name: &str, flags: i32) -> std::io::Result<File> {
        let name = CString::new(name)?;
        // SAFETY: a valid directory descriptor and NUL-terminated name.
        let fd = unsafe { libc::openat(self.fd.as_raw_fd(), name.as_ptr(), flags | libc::O_CLOEXEC, 0o600) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and is owned by nobody else.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    fn create_new(&self, name: &str) -> std::io::Result<File> {
        self.open_at(name, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL)
    }

    fn exists(&self, name: &str) -> bool {
        let Ok(name) = CString::new(name) else { return false };
        // SAFETY: a valid directory descriptor and NUL-terminated name.
        unsafe { libc::faccessat(self.fd.as_raw_fd(), name.as_ptr(), libc::F_OK, 0) == 0 }
    }

    fn rename(&self, from: &str, to: &str) -> std::io::Result<()> {
        let (from, to) = (CString::new(from)?, CString::new(to)?);
        let fd = self.fd.as_raw_fd();
        // SAFETY: a valid directory descriptor and NUL-terminated names.
        if unsafe { libc::renameat(fd, from.as_ptr(), fd, to.as_ptr()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    fn remove(&self, name: &str) {
        if let Ok(name) = CString::new(name) {
            // SAFETY: a valid directory descriptor and NUL-terminated name.
            unsafe { libc::unlinkat(self.fd.as_raw_fd(), name.as_ptr(), 0) };
        }
    }

    /// Whether a request after `requested`, or `stop`, comes within `wait`.
    async fn changes_within(&self, requested: &str, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if self.exists(STOP) || self.requested().is_some_and(|(name, _)| name != requested) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    }

    fn requested(&self) -> Option<(String, u64)> {
        let mut text = String::new();
        self.open_at(REQUESTED, libc::O_RDONLY)
            .ok()?
            .read_to_string(&mut text)
            .ok()?;
        parse_requested(&text)
    }

    /// The lock, if no other prefetcher holds it; it records this pid.
    fn try_lock(&self) -> Option<File> {
        let mut file = self.open_at(LOCK, libc::O_RDWR | libc::O_CREAT).ok()?;
        let lock = whole_file_lock(libc::F_WRLCK);
        // SAFETY: fcntl on an open descriptor with a valid `flock`.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) } != 0 {
            return None;
        }
        let _ = file.set_len(0);
        let _ = file.write_all(format!("{}\n", std::process::id()).as_bytes());
        Some(file)
    }

    /// Removes the temp files of killed prefetchers (only the lock holder writes any).
    fn remove_temps(&self) {
        let Ok(entries) = fs::read_dir(format!("/proc/self/fd/{}", self.fd.as_raw_fd())) else {
            return;
        };
        for entry in entries.flatten() {
            if let Some(name) = entry.file_name().to_str()
                && name.len() > 24
                && is_segment(&name[..24])
                && name[24..].starts_with(TEMP_MARK)
            {
                self.remove(name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_segment_follows_postgres_naming() {
        let mib16 = 16 << 20;
        assert_eq!(
            next_segment("000000010000000000000007", mib16).unwrap(),
            "000000010000000000000008"
        );
        assert_eq!(
            next_segment("0000000200000000000000FF", mib16).unwrap(),
            "000000020000000100000000"
        );
        // 64 MiB segments: 64 per "log id".
        assert_eq!(
            next_segment("00000001000000000000003F", 64 << 20).unwrap(),
            "000000010000000100000000"
        );
        assert_eq!(next_segment("00000001FFFFFFFF000000FF", mib16), None);
    }

    #[test]
    fn the_request_file_is_read_back_or_ignored() {
        assert_eq!(
            parse_requested("000000010000000000000007 16777216\n"),
            Some(("000000010000000000000007".into(), 16 << 20))
        );
        for bad in [
            "",
            "000000010000000000000007",
            "x 16777216",
            "000000010000000000000007 1000",
        ] {
            assert_eq!(parse_requested(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn only_segments_are_read_ahead() {
        assert!(is_segment("000000010000000000000007"));
        for other in [
            "00000002.history",
            "000000010000000000000007.partial",
            "000000010000000000000002.00000028.backup",
        ] {
            assert!(!is_segment(other), "{other}");
        }
    }
}
