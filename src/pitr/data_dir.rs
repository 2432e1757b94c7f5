//! Recovery into a data directory the operator names (`drillbook recover
//! --pgdata DIR`): the server outlives drillbook, so a recovery paused at
//! its target stays open (hot standby, read-only) for inspection and
//! `drillbook verify`, then is promoted or moved forward to a later target.
//!
//! # Crash safety
//! - The base backup is downloaded and extracted into a sibling,
//!   `.<name>.drillbook-incoming`, that records its owner; it becomes `DIR`
//!   by one rename. A later run removes the sibling of a dead owner.
//! - `DIR/drillbook-recover.json` says where the directory stands:
//!   `replaying` (with the owner moving it), `paused` (target reached and
//!   checked), `promoted`, or `failed` (why). It goes into the data before the
//!   rename, so `DIR` never exists without it. Only `paused` may be promoted.
//! - A first recovery that fails, is interrupted (SIGINT/SIGTERM) or whose
//!   drillbook was killed (found `replaying` with a dead owner) never reached
//!   anything: its server is stopped and `DIR` removed. A recovery moved on
//!   from a paused point keeps `DIR` when that fails (state `failed`, server
//!   stopped): the download is not thrown away, and another target may go on
//!   from it.

use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::{AtTarget, PitrError, RecoveryTarget, Result};
use crate::pg::{DataDirServer, PgBinaries};
use crate::scratch::Owner;

/// The state file in a recovered data directory.
pub const STATE_FILE: &str = "drillbook-recover.json";

/// Where a recovered data directory stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// A drillbook is replaying WAL into it (or died doing so).
    Replaying,
    /// Stopped at its target, open read-only.
    Paused,
    /// Promoted: a primary on a new timeline.
    Promoted,
    /// A move forward failed; the server is stopped. Another target may go on.
    Failed,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Replaying => "replaying",
            Self::Paused => "paused",
            Self::Promoted => "promoted",
            Self::Failed => "failed",
        })
    }
}

/// A point recovery reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReachedPoint {
    pub lsn: Option<String>,
    pub timeline: Option<u32>,
    pub last_replayed_commit: Option<DateTime<Utc>>,
}

/// `DIR/drillbook-recover.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryState {
    pub phase: Phase,
    /// The drillbook process moving it (`pid start-ticks`), while replaying.
    pub owner: Option<String>,
    pub target: String,
    pub base_backup: String,
    pub bucket: String,
    /// The last target reached and checked, if any.
    pub reached: Option<ReachedPoint>,
    pub failure: Option<String>,
}

impl RecoveryState {
    /// Reads the state of `pgdata`; `None` when it has none (not drillbook's).
    pub fn read(pgdata: &Path) -> Result<Option<Self>> {
        match fs::read(pgdata.join(STATE_FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| PitrError::Io {
                context: format!("read {}", pgdata.join(STATE_FILE).display()),
                source: std::io::Error::other(e),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(PitrError::Io {
                context: format!("read {}", pgdata.join(STATE_FILE).display()),
                source,
            }),
        }
    }

    /// Writes it atomically (temp file, rename).
    pub fn write(&self, pgdata: &Path) -> Result<()> {
        let path = pgdata.join(STATE_FILE);
        let staged = pgdata.join(format!("{STATE_FILE}.new"));
        let io = |source| PitrError::Io {
            context: format!("write {}", path.display()),
            source,
        };
        fs::write(&staged, serde_json::to_vec_pretty(self).expect("state serializes")).map_err(io)?;
        fs::rename(&staged, &path).map_err(io)
    }

    /// Whether the drillbook it names as moving it is known to be gone.
    pub fn owner_is_gone(&self) -> bool {
        self.owner
            .as_deref()
            .and_then(Owner::parse)
            .is_none_or(|owner| !owner.is_alive())
    }
}

/// This process as a state's owner.
pub(super) fn this_owner() -> Option<String> {
    Owner::current().map(|o| o.render().trim().to_owned())
}

/// Where the base backup is prepared before it becomes `pgdata`.
pub fn incoming_path(pgdata: &Path) -> PathBuf {
    let name = pgdata
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    pgdata.with_file_name(format!(".{name}.drillbook-incoming"))
}

/// The sibling a recovery downloads into: removed on drop unless it was
/// installed as the data directory.
#[derive(Debug)]
pub(super) struct Incoming {
    path: PathBuf,
}

impl Incoming {
    /// Creates the sibling of `pgdata`, recording this process as its owner;
    /// removes one a dead drillbook left, refuses one a live drillbook works in.
    pub(super) fn create(pgdata: &Path) -> Result<Self> {
        let path = incoming_path(pgdata);
        let owner_file = path.join(".drillbook-owner");
        if path.exists() {
            let owner = fs::read_to_string(&owner_file).ok().and_then(|t| Owner::parse(&t));
            match owner {
                Some(owner) if owner.is_alive() => {
                    return Err(PitrError::DataDirBusy {
                        pgdata: pgdata.to_path_buf(),
                        why: format!("drillbook (pid {}) is downloading into {}", owner.pid(), path.display()),
                    });
                }
                _ => {
                    tracing::warn!(dir = %path.display(), "removing the download of an interrupted recover");
                    fs::remove_dir_all(&path).map_err(|source| PitrError::Io {
                        context: format!("remove {}", path.display()),
                        source,
                    })?;
                }
            }
        }
        let context = format!("create {} next to --pgdata (is its parent writable?)", path.display());
        let io = |source| PitrError::Io {
            context: context.clone(),
            source,
        };
        fs::create_dir(&path).map_err(io)?;
        let incoming = Self { path };
        fs::set_permissions(&incoming.path, std::os::unix::fs::PermissionsExt::from_mode(0o700)).map_err(io)?;
        if let Some(owner) = Owner::current() {
            fs::write(incoming.path.join(".drillbook-owner"), owner.render()).map_err(io)?;
        }
        Ok(incoming)
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the prepared data directory (`<incoming>/data`, its state file
    /// written) to `pgdata` in one rename and removes the sibling.
    pub(super) fn install(self, pgdata: &Path) -> Result<()> {
        let data = self.path.join("data");
        // `pgdata` is absent or empty (checked before the download), and
        // rename(2) replaces an empty directory.
        fs::rename(&data, pgdata).map_err(|source| PitrError::Io {
            context: format!("move the restored base backup to {}", pgdata.display()),
            source,
        })?;
        Ok(())
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.path.display(), error = %e, "could not remove the recover's download dir");
        }
    }
}

/// Until [`Guard::settle`], a recovery in `pgdata` that fails or is dropped
/// (interrupted) is undone: the server stopped, and the directory removed
/// when it never reached a target, else marked `failed`.
pub(super) struct Guard {
    bins: PgBinaries,
    pgdata: PathBuf,
    /// What `pgdata` held before: `None` for a new directory.
    previous: Option<RecoveryState>,
    /// Whether `pgdata` existed (empty) before the recovery.
    existed_empty: bool,
    settled: bool,
}

impl Guard {
    /// Guards `pgdata` from before the base backup is moved there.
    pub(super) fn new(bins: &PgBinaries, pgdata: &Path, previous: Option<RecoveryState>, existed_empty: bool) -> Self {
        Self {
            bins: bins.clone(),
            pgdata: pgdata.to_path_buf(),
            previous,
            existed_empty,
            settled: false,
        }
    }

    /// The recovery reached its target: keep everything.
    pub(super) fn settle(mut self) {
        self.settled = true;
    }

    fn undo(&mut self, why: &str) {
        let pgdata = self.pgdata.clone();
        if let Ok(server) = DataDirServer::open(&self.bins, &pgdata)
            && let Err(e) = server.stop_now()
        {
            tracing::warn!(pgdata = %pgdata.display(), error = %e, "could not stop the recovery's server");
        }
        match self.previous.clone() {
            Some(mut state) if state.reached.is_some() => {
                state.phase = Phase::Failed;
                state.owner = None;
                state.failure = Some(why.to_owned());
                if let Err(e) = state.write(&pgdata) {
                    tracing::warn!(error = %e, "could not mark the recovery failed");
                }
            }
            _ => remove_recovery(&pgdata, self.existed_empty),
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.settled {
            self.undo("the recovery was interrupted or failed before reaching its target");
        }
    }
}

/// Removes a recovery's data directory (recreating it empty when it was an
/// empty directory the operator made).
pub(super) fn remove_recovery(pgdata: &Path, recreate_empty: bool) {
    match fs::remove_dir_all(pgdata) {
        Ok(()) => tracing::warn!(pgdata = %pgdata.display(), "removed the unfinished recovery"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(pgdata = %pgdata.display(), error = %e, "could not remove the unfinished recovery"),
    }
    if recreate_empty {
        let _ = fs::create_dir(pgdata);
    }
}

/// What `pgdata` holds, judged before a recovery starts.
#[derive(Debug)]
pub(super) enum Existing {
    /// Nothing: a new directory will be made.
    Absent,
    /// An empty directory.
    Empty,
    /// A drillbook recovery that can be promoted or moved forward.
    Recovery(RecoveryState),
}

/// Looks at `pgdata`: refuses a non-empty directory that is not a
/// drillbook recovery, and a recovery another drillbook is moving; cleans
/// up after a drillbook that died replaying.
pub(super) async fn inspect(bins: &PgBinaries, pgdata: &Path) -> Result<Existing> {
    let entries = match fs::read_dir(pgdata) {
        Ok(entries) => entries.count(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Existing::Absent),
        Err(source) => {
            return Err(PitrError::Io {
                context: format!("read --pgdata {}", pgdata.display()),
                source,
            });
        }
    };
    if entries == 0 {
        return Ok(Existing::Empty);
    }
    let Some(mut state) = RecoveryState::read(pgdata)? else {
        return Err(PitrError::DataDirNotEmpty {
            pgdata: pgdata.to_path_buf(),
        });
    };
    if state.phase != Phase::Replaying {
        return Ok(Existing::Recovery(state));
    }
    if !state.owner_is_gone() {
        return Err(PitrError::DataDirBusy {
            pgdata: pgdata.to_path_buf(),
            why: format!(
                "drillbook (process {}) is replaying WAL into it",
                state.owner.as_deref().unwrap_or("?")
            ),
        });
    }
    // Its drillbook died mid-replay (SIGKILL): nothing it did was checked.
    let server = DataDirServer::open(bins, pgdata)?;
    server.stop().await?;
    if state.reached.is_some() {
        tracing::warn!(pgdata = %pgdata.display(), "the drillbook moving this recovery died; marked failed");
        state.phase = Phase::Failed;
        state.owner = None;
        state.failure = Some("the drillbook moving it forward was killed".into());
        state.write(pgdata)?;
        Ok(Existing::Recovery(state))
    } else {
        tracing::warn!(pgdata = %pgdata.display(), "removing a recovery whose drillbook was killed before its target");
        remove_recovery(pgdata, false);
        Ok(Existing::Absent)
    }
}

/// Fails unless a recovery may move from `reached` to `target`.
pub(super) fn check_forward(reached: &ReachedPoint, target: &RecoveryTarget, at_target: AtTarget) -> Result<()> {
    let behind = match target {
        RecoveryTarget::Time(t) => reached.last_replayed_commit.is_some_and(|at| *t < at),
        RecoveryTarget::Lsn(l) => {
            let (Some(to), Some(at)) = (
                crate::wal::parse_lsn(l),
                reached.lsn.as_deref().and_then(crate::wal::parse_lsn),
            ) else {
                return Ok(());
            };
            to < at
        }
        RecoveryTarget::Name(_) | RecoveryTarget::Xid(_) | RecoveryTarget::EndOfArchive => false,
    };
    if behind {
        return Err(PitrError::TargetBehind {
            target: target.clone(),
            reached: describe(reached),
        });
    }
    if at_target == AtTarget::Pause && *target == RecoveryTarget::EndOfArchive {
        return Err(PitrError::PauseNeedsTarget);
    }
    Ok(())
}

/// `LSN 0/5000060 on timeline 1, last commit 2026-...`.
pub fn describe(point: &ReachedPoint) -> String {
    let mut text = format!("LSN {}", point.lsn.as_deref().unwrap_or("unknown"));
    if let Some(timeline) = point.timeline {
        text.push_str(&format!(" on timeline {timeline}"));
    }
    if let Some(at) = point.last_replayed_commit {
        text.push_str(&format!(
            ", last commit {}",
            at.to_rfc3339_opts(SecondsFormat::Micros, true)
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_behind_the_point_reached_is_refused() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let reached = ReachedPoint {
            lsn: Some("0/5000000".into()),
            timeline: Some(1),
            last_replayed_commit: Some(at("2026-11-30T12:00:00Z")),
        };
        let earlier = RecoveryTarget::Time(at("2026-11-30T11:59:59Z"));
        assert!(matches!(
            check_forward(&reached, &earlier, AtTarget::Pause),
            Err(PitrError::TargetBehind { .. })
        ));
        let later = RecoveryTarget::Lsn("0/6000000".into());
        assert!(check_forward(&reached, &later, AtTarget::Pause).is_ok());
        assert!(matches!(
            check_forward(&reached, &RecoveryTarget::EndOfArchive, AtTarget::Pause),
            Err(PitrError::PauseNeedsTarget)
        ));
        assert!(check_forward(&reached, &RecoveryTarget::EndOfArchive, AtTarget::Promote).is_ok());
    }

    #[test]
    fn the_download_dir_is_a_hidden_sibling() {
        assert_eq!(
            incoming_path(Path::new("/srv/pg/recovered")),
            Path::new("/srv/pg/.recovered.drillbook-incoming")
        );
    }
}
