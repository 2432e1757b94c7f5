//! Who made a thing, told apart from a later process that reuses its pid:
//! [`Owner`] (pid and start time, for this machine's temp dir), its
//! machine-wide label (boot id first: container labels, S3 keys) and
//! [`ProcessTag`] (where no space may go: database names, sessions'
//! `application_name`). Each can be judged "known to be gone" from outside
//! the process.

use std::fs;

/// A process, told apart from a later one that reuses its pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owner {
    pub(super) pid: u32,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat`, field 22).
    pub(super) started: u64,
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

    pub(crate) fn pid(self) -> u32 {
        self.pid
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
}
