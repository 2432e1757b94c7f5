//! Scratch space on this machine: `drillbook-*` temp dirs owned by the
//! process that made them, reaped once that process is gone, kept on request.
//!
//! This room owns:
//! - `owned_tempdir` and `record_owner`: every `drillbook-*` temp dir
//!   (clusters, embedded S3 data, downloads, a server container's mounted
//!   data) records its `Owner` in a `.drillbook-owner` file (a name no S3
//!   bucket can have).
//! - Reaping: a drill killed by nextest's timeout (SIGTERM, then SIGKILL)
//!   runs no `Drop`, so its `postgres` keeps running and its temp dirs stay.
//!   Once per process (`reap_temp_dir_once`, before its first cluster,
//!   restore or download) every such dir whose owner is gone is removed, a
//!   cluster's server stopped first (SIGQUIT, SIGKILL after a grace period).
//! - [`keep_requested`] (`DRILL_KEEP=1`): what is kept gets no owner, so it
//!   is never reaped; neither is anything drillbook did not make.
//! - Owner identities (`owner`): pids with start times, machine labels and
//!   process tags, for what lives outside the temp dir (containers, S3
//!   objects, databases, sessions).

mod owner;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub(crate) use owner::{Owner, ProcessTag, machine_owner_is_gone, machine_owner_label};

const OWNER_FILE: &str = ".drillbook-owner";
const PREFIX: &str = "drillbook-";

/// Whether `DRILL_KEEP=1` asks to keep drill resources for inspection.
pub fn keep_requested() -> bool {
    std::env::var("DRILL_KEEP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// Removes the `drillbook-*` temp dirs left by processes that died without
/// cleaning up (clusters, whose servers are stopped first, embedded S3 data,
/// restore and base-backup downloads, containers' mounted data dirs);
/// returns the dirs removed. Every process does this once before its first
/// cluster, container environment, restore or download.
pub fn reap_orphaned_dirs() -> Vec<PathBuf> {
    reap_orphans(&tempfile::env::temp_dir())
}

/// Records `owner` in a `drillbook-*` dir (a cluster's, the embedded S3's).
pub(crate) fn record_owner(root: &Path, owner: Owner) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(root.join(OWNER_FILE))?
        .write_all(owner.render().as_bytes())
}

/// A `drillbook-*` temp dir (`prefix` names it) that records this process
/// as its owner, so a later process reaps it if this one dies without its
/// `Drop` (with `DRILL_KEEP=1`, no owner: kept things are never reaped).
pub(crate) fn owned_tempdir(prefix: &str) -> std::io::Result<tempfile::TempDir> {
    debug_assert!(prefix.starts_with(PREFIX), "the reaper only looks at {PREFIX}* dirs");
    // Owner-only: these dirs hold dumps and data directories.
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()?;
    if !keep_requested()
        && let Some(owner) = Owner::current()
    {
        record_owner(dir.path(), owner)?;
    }
    Ok(dir)
}

/// Reaps the dirs of dead processes in the temp dir, once per process:
/// before its first cluster starts, or its first restore or base-backup
/// download.
pub(crate) fn reap_temp_dir_once() {
    static REAPED: std::sync::Once = std::sync::Once::new();
    REAPED.call_once(|| {
        reap_orphans(&tempfile::env::temp_dir());
    });
}

/// Reaps the dirs of dead owners in `temp_dir`; returns the dirs removed.
fn reap_orphans(temp_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(temp_dir) else {
        return Vec::new();
    };
    let mut reaped = Vec::new();
    for entry in entries.flatten() {
        let root = entry.path();
        let is_ours = entry.file_name().to_str().is_some_and(|name| name.starts_with(PREFIX));
        let owner = fs::read_to_string(root.join(OWNER_FILE))
            .ok()
            .and_then(|text| Owner::parse(&text));
        let Some(owner) = owner.filter(|_| is_ours) else {
            continue;
        };
        if owner.is_alive() {
            continue;
        }
        stop_orphan_server(&root.join("data"));
        match fs::remove_dir_all(&root) {
            Ok(()) => {
                tracing::warn!(dir = %root.display(), owner = owner.pid, "reaped a dir whose test process died");
                reaped.push(root);
            }
            Err(e) => tracing::warn!(dir = %root.display(), "failed to remove an orphaned dir: {e}"),
        }
    }
    reaped
}

/// Stops the postmaster of `data_dir` if it still runs: SIGQUIT (immediate
/// shutdown), SIGKILL after 5 s. Only a process that is a `postgres` on
/// exactly this data dir is signalled.
fn stop_orphan_server(data_dir: &Path) {
    let Some(pid) = fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()
        .and_then(|text| text.lines().next()?.trim().parse::<i32>().ok())
    else {
        return;
    };
    let runs_here = || {
        fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            args.first().is_some_and(|program| program.ends_with(b"postgres"))
                && args.contains(&data_dir.as_os_str().as_encoded_bytes())
        })
    };
    if !runs_here() {
        return;
    }
    // SAFETY: kill(2) on a pid we just checked is this data dir's postmaster.
    unsafe { libc::kill(pid, libc::SIGQUIT) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while runs_here() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if runs_here() {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dead_owners_cluster_dirs_are_reaped() {
        let temp = tempfile::tempdir().unwrap();
        let make = |name: &str, owner: Option<Owner>| {
            let root = temp.path().join(name);
            fs::create_dir_all(root.join("data")).unwrap();
            if let Some(owner) = owner {
                record_owner(&root, owner).unwrap();
            }
            root
        };
        let me = Owner::current().unwrap();
        let dead = Owner {
            pid: me.pid,
            started: me.started + 1,
        };
        let orphan = make("drillbook-pg-orphan", Some(dead));
        let orphan_s3 = make("drillbook-s3-orphan", Some(dead));
        let orphan_download = make("drillbook-restore-orphan", Some(dead));
        let alive = make("drillbook-pg-alive", Some(me));
        let kept = make("drillbook-pg-kept", None);
        let cache = make("drillbook-cache-0", None);
        let other = make("someone-else", Some(dead));
        let mut reaped = reap_orphans(temp.path());
        reaped.sort();
        assert_eq!(reaped, vec![orphan.clone(), orphan_download.clone(), orphan_s3.clone()]);
        assert!(!orphan.exists() && !orphan_s3.exists() && !orphan_download.exists());
        assert!(alive.exists() && kept.exists() && cache.exists() && other.exists());
    }
}
