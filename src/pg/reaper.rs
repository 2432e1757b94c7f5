//! Clusters and embedded S3 data whose test process died without cleaning up.
//!
//! A drill killed by nextest's timeout (SIGTERM, then SIGKILL) runs no
//! `Drop`, so its `postgres` keeps running and its temp dirs stay. Each
//! `drillbook-*` temp dir (clusters, embedded S3 data, downloads, a server
//! container's mounted data) therefore records its owner (pid and process
//! start time, so a reused pid is not mistaken for the owner) in a
//! `.drillbook-owner` file (a name no S3 bucket can have), and the first
//! cluster a process starts reaps every such dir in the temp dir whose
//! owner is gone: a cluster's server is stopped (SIGQUIT, SIGKILL after a
//! grace period) and the dir removed.
//!
//! Only dirs with an owner file are touched: what `DRILL_KEEP=1` keeps gets
//! none, and neither does anything drillbook did not make.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const OWNER_FILE: &str = ".drillbook-owner";
const PREFIX: &str = "drillbook-";

/// A process, told apart from a later one that reuses its pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owner {
    pid: u32,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat`, field 22).
    started: u64,
}

impl Owner {
    /// This process.
    pub(crate) fn current() -> Option<Self> {
        let pid = std::process::id();
        Some(Self {
            pid,
            started: start_time(pid)?,
        })
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        let (pid, started) = text.trim().split_once(' ')?;
        Some(Self {
            pid: pid.parse().ok()?,
            started: started.parse().ok()?,
        })
    }

    pub(crate) fn render(self) -> String {
        format!("{} {}\n", self.pid, self.started)
    }

    pub(crate) fn is_alive(self) -> bool {
        start_time(self.pid) == Some(self.started)
    }
}

/// This machine's current boot (`/proc/sys/kernel/random/boot_id`).
pub(crate) fn boot_id() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|id| id.trim().to_owned())
}

/// This process named so that it can be judged from outside the machine's
/// temp dir (a container label, a database comment, an S3 key): the boot,
/// the pid and its start time. `None` when `/proc` cannot tell.
pub(crate) fn machine_owner_label() -> Option<String> {
    let owner = Owner::current()?;
    Some(format!("{} {}", boot_id()?, owner.render().trim()))
}

/// Whether the owner a [`machine_owner_label`] names is known to be gone:
/// this boot of this machine, and the process is not running. Anything
/// else (another machine, an earlier boot, an unreadable label) cannot be
/// judged and is reported as not gone.
pub(crate) fn machine_owner_is_gone(label: &str) -> bool {
    let Some((boot, owner)) = label.trim().split_once(' ') else {
        return false;
    };
    boot_id().is_some_and(|id| id == boot) && Owner::parse(owner).is_some_and(|owner| !owner.is_alive())
}

/// A process named where no space may go (a database name, a session's
/// `application_name`): `<boot>_<pid>_<start>`, the boot being the first 8
/// hex digits of this machine's boot id, enough to tell one boot from another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProcessTag {
    boot: String,
    owner: Owner,
}

impl ProcessTag {
    /// This process; `None` when `/proc` cannot tell. Built once.
    pub(crate) fn current() -> Option<&'static Self> {
        static CURRENT: std::sync::OnceLock<Option<ProcessTag>> = std::sync::OnceLock::new();
        CURRENT
            .get_or_init(|| {
                Some(ProcessTag {
                    boot: short_boot(&boot_id()?),
                    owner: Owner::current()?,
                })
            })
            .as_ref()
    }

    /// Reads a tag at the start of `text`; returns it and what follows it
    /// (after one `_`, if anything does).
    pub(crate) fn parse_prefix(text: &str) -> Option<(Self, &str)> {
        let mut parts = text.splitn(4, '_');
        let (boot, pid, started) = (parts.next()?, parts.next()?, parts.next()?);
        let rest = parts.next().unwrap_or("");
        let owner = Owner::parse(&format!("{pid} {started}"))?;
        let boot_ok = boot.len() == 8 && boot.chars().all(|c| c.is_ascii_hexdigit());
        boot_ok.then(|| {
            (
                Self {
                    boot: boot.to_owned(),
                    owner,
                },
                rest,
            )
        })
    }

    /// Known to be gone: this boot of this machine, and not running.
    /// Another machine or an earlier boot cannot be judged from here.
    pub(crate) fn is_gone(&self) -> bool {
        let this_boot = boot_id().is_some_and(|id| short_boot(&id) == self.boot);
        this_boot && !self.owner.is_alive()
    }

    pub(crate) fn is_this_process(&self) -> bool {
        Self::current() == Some(self)
    }
}

impl std::fmt::Display for ProcessTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}_{}_{}", self.boot, self.owner.pid, self.owner.started)
    }
}

fn short_boot(boot_id: &str) -> String {
    boot_id.chars().filter(char::is_ascii_hexdigit).take(8).collect()
}

/// Field 22 of `/proc/<pid>/stat`: after the command name in parentheses,
/// which may itself hold spaces and parentheses.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    // after_name starts at field 3 (state); field 22 is the 20th from there.
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// Records `owner` in a cluster or embedded S3 dir.
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
    if !super::keep_requested()
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

/// Reaps orphaned clusters in `temp_dir`; returns the dirs removed.
pub(super) fn reap_orphans(temp_dir: &Path) -> Vec<PathBuf> {
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
    fn owners_round_trip_and_only_the_living_count() {
        let me = Owner::current().expect("this process has a /proc entry");
        assert!(me.is_alive());
        assert_eq!(Owner::parse(&me.render()), Some(me));
        let reused = Owner {
            started: me.started + 1,
            ..me
        };
        assert!(!reused.is_alive(), "a pid with another start time is another process");
        assert_eq!(Owner::parse("garbage"), None);
    }

    #[test]
    fn process_tags_round_trip_and_judge_only_this_boot() {
        let me = ProcessTag::current().expect("this process has /proc");
        assert!(me.is_this_process() && !me.is_gone());
        let text = format!("{me}_rest_of_name");
        let (read, rest) = ProcessTag::parse_prefix(&text).expect("a tag reads back");
        assert_eq!((&read, rest), (me, "rest_of_name"));
        let dead = ProcessTag {
            owner: Owner {
                started: me.owner.started + 1,
                ..me.owner
            },
            ..me.clone()
        };
        assert!(dead.is_gone() && !dead.is_this_process());
        let elsewhere = ProcessTag {
            boot: "00000000".to_owned(),
            ..dead
        };
        assert!(!elsewhere.is_gone(), "another boot cannot be judged");
        assert_eq!(ProcessTag::parse_prefix("unknown_abc"), None);
    }

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
