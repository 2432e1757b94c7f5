//! Retention for the bucket (`drillbook expire`): keep the newest N daily
//! dumps and the newest N base backups, delete older ones, and delete the
//! archived WAL no kept base backup can use.
//!
//! Two steps: [`survey`] reads the bucket (listings, manifests, owner
//! markers, and the newest dumps' bytes until one verifies), [`plan`] decides
//! from that alone (pure, unit-tested), and [`execute`] deletes what the
//! plan says, in its order. [`expire`] does all three.
//!
//! # What is kept
//!
//! - The newest `keep_daily` daily backups that have a manifest (a dump
//!   without one never counts: a restore refuses it), and the newest one
//!   that verifies (manifest present, the dump's size and sha256 the
//!   manifest's), also when it is older: if none of the newest N verifies,
//!   the plan keeps going back until one does and says so. If no dump in
//!   the bucket verifies, no daily backup is deleted.
//! - The newest `keep_base` base backups (with a manifest), and the newest
//!   intact one (its tar has the manifest's size) likewise.
//! - Every WAL object but the segments wholly before the start LSN of the
//!   oldest kept base backup, on its timeline or the timelines its history
//!   file names as its ancestors. Timeline history files, `.backup` labels
//!   and segments at or after that point, segments of every other timeline,
//!   and names that do not parse are kept. Without a base backup whose
//!   manifest reads, no WAL is deleted.
//! - Unfinished backups whose writer runs (or cannot be judged from here:
//!   another machine, an earlier boot; see [`crate::store::owner`]).
//! - Everything outside `daily/`, `manifests/`, `incoming/`, `base/` and
//!   `wal/`: anchors, check state, drill history are never looked at.
//!
//! Unfinished backups of gone writers, and manifest-less objects of backups
//! an earlier expire was stopped in the middle of, are deleted as leftovers.
//!
//! # Crash safety
//!
//! A kill at any instant leaves a consistent bucket, and the next run
//! finishes the job: a backup's manifest is deleted first, so it stops
//! counting at once (restore, check and PITR ignore a backup without one),
//! then its data objects, its owner marker last; daily dumps, then base
//! backups (oldest first), then WAL oldest segment first, so the WAL that is
//! left always runs without a gap from the oldest base backup still counted.
//! The objects a stopped run left behind have no manifest and no live
//! owner: the next run deletes them as leftovers.
//!
//! # Caveats
//!
//! Deletions go through [`Store::delete`], as the backups' own sweeps do.
//! The staging guard (`env::guard`) protects staging from drills, which never
//! call this; an operator's `expire` deletes what the plan names in the
//! bucket it is given.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::basebackup::{BASE_PREFIX, BaseBackupManifest};
use crate::check::{SEGMENT_BYTES, WalFile, parse_history, parse_wal_name, segment_file_name};
use crate::store::manifest::BackupManifest;
use crate::store::owner::{self, Writer};
use crate::store::{ObjectInfo, Store, StoreError, layout};
use crate::wal::{WAL_PREFIX, decode, format_lsn, parse_lsn};

pub type Result<T, E = ExpireError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExpireError {
    #[error(
        "refusing --keep-{what} 0: keeping nothing is deleting every {noun} in the bucket; keep at least 1 \
         (the playbook's restores start from the newest)"
    )]
    KeepNothing { what: &'static str, noun: &'static str },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How many of each to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub keep_daily: usize,
    pub keep_base: usize,
}

impl Retention {
    /// # Errors
    /// [`ExpireError::KeepNothing`] for 0 of either.
    pub fn new(keep_daily: usize, keep_base: usize) -> Result<Self> {
        if keep_daily == 0 {
            return Err(ExpireError::KeepNothing {
                what: "daily",
                noun: "daily backup",
            });
        }
        if keep_base == 0 {
            return Err(ExpireError::KeepNothing {
                what: "base",
                noun: "base backup (and the WAL they need)",
            });
        }
        Ok(Self { keep_daily, keep_base })
    }
}

// ---------------------------------------------------------------------------
// What the bucket holds (the planner's input).

/// What [`survey`] found, everything [`plan`] decides from.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub location: String,
    /// One entry per stamp under `daily/`, `manifests/` or `incoming/`.
    pub daily: Vec<DailyEntry>,
    /// One entry per stamp under `base/`.
    pub base: Vec<BaseEntry>,
    /// Every object under `wal/`.
    pub wal: Vec<ObjectInfo>,
    /// The ancestors of each timeline whose history file reads (`wal/T/T.history`).
    pub histories: BTreeMap<u32, Vec<u32>>,
}

/// A daily backup's objects, by stamp.
#[derive(Debug, Clone)]
pub struct DailyEntry {
    pub stamp: String,
    /// Everything of this stamp under `daily/`, `manifests/` and `incoming/`.
    pub objects: Vec<ObjectInfo>,
    /// Its dump under `daily/`: published.
    pub dump: Option<String>,
    pub manifest: Described,
    /// The writer named by `incoming/<stamp>/owner` ([`Writer::None`] without one).
    pub writer: Writer,
    pub verdict: Verdict,
}

/// Whether a backup has a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Described {
    Missing,
    /// Present but not readable: the backup counts, and does not verify.
    Unreadable {
        key: String,
        reason: String,
    },
    Present {
        key: String,
    },
}

impl Described {
    fn counts(&self) -> bool {
        !matches!(self, Described::Missing)
    }
}

/// Whether a daily dump is what its manifest says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Size and sha256 are the manifest's.
    Verified,
    Damaged(String),
    /// Not read: a newer one verified first.
    NotChecked,
}

/// A base backup's objects, by stamp.
#[derive(Debug, Clone)]
pub struct BaseEntry {
    pub stamp: String,
    pub objects: Vec<ObjectInfo>,
    /// `None` without `base/<stamp>/manifest.json`; `Err` when it does not read.
    pub manifest: Option<Result<BaseBackupManifest, String>>,
    /// The writer named by `base/<stamp>/owner` ([`Writer::None`] without one).
    pub writer: Writer,
}

impl BaseEntry {
    /// Manifest reads and its tar is listed with the manifest's size.
    fn intact(&self) -> Result<(), String> {
        match &self.manifest {
            None => Err("no manifest".to_owned()),
            Some(Err(reason)) => Err(format!("its manifest does not read ({reason})")),
            Some(Ok(manifest)) => match self.objects.iter().find(|o| o.key == manifest.tar_key) {
                None => Err(format!("its tar {} is missing", manifest.tar_key)),
                Some(tar) if tar.size != manifest.tar_bytes => Err(format!(
                    "{} is {} bytes, its manifest says {}",
                    manifest.tar_key, tar.size, manifest.tar_bytes
                )),
                Some(_) => Ok(()),
            },
        }
    }
}

// ---------------------------------------------------------------------------
// The plan (the planner's output).

/// What a kept or deleted item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A daily backup (`daily/<stamp>/` dump, `manifests/<stamp>/`).
    Daily,
    /// A base backup (`base/<stamp>/`).
    Base,
    /// A range of archived WAL of one timeline.
    Wal,
    /// What an unfinished or interrupted daily backup left.
    DailyLeftover,
    /// What an unfinished or interrupted base backup left.
    BaseLeftover,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Daily => "daily",
            Kind::Base => "base",
            Kind::Wal => "wal",
            Kind::DailyLeftover => "daily leftover",
            Kind::BaseLeftover => "base leftover",
        }
    }
}

/// A backup the plan keeps, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Kept {
    pub kind: Kind,
    pub stamp: String,
    pub reason: String,
}

/// One backup, leftover or WAL range the plan deletes, and why. Its keys
/// are deleted in their order (a manifest first, an owner marker last).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deletion {
    pub kind: Kind,
    /// The backup's stamp (backups and leftovers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stamp: Option<String>,
    /// The first and last WAL key of the range (WAL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last: Option<String>,
    pub keys: Vec<String>,
    /// The size of each key, in the same order.
    #[serde(skip)]
    pub sizes: Vec<u64>,
    pub bytes: u64,
    pub reason: String,
}

impl Deletion {
    /// `20261128T233506.123Z`, or `<first>..<last>` for WAL.
    pub fn name(&self) -> String {
        match (&self.stamp, &self.first, &self.last) {
            (Some(stamp), _, _) => stamp.clone(),
            (None, Some(first), Some(last)) => {
                let short = |k: &str| k.rsplit('/').next().unwrap_or(k).to_owned();
                if first == last {
                    short(first)
                } else {
                    format!("{}..{}", short(first), short(last))
                }
            }
            _ => String::new(),
        }
    }
}

/// Something the plan leaves alone although it is not a kept backup: an
/// unfinished backup whose writer may still run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeftAlone {
    pub kind: Kind,
    pub stamp: String,
    pub keys: Vec<String>,
    pub reason: String,
}

/// What [`plan`] decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub location: String,
    pub keep_daily: usize,
    pub keep_base: usize,
    pub kept: Vec<Kept>,
    /// In the order they are deleted.
    pub deleted: Vec<Deletion>,
    pub left_alone: Vec<LeftAlone>,
    /// What the operator should know: kept beyond N, nothing verifies, ...
    pub notes: Vec<String>,
    /// The WAL cutoff: segments before this LSN (on `wal_cutoff_timelines`) are deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wal_cutoff: Option<String>,
    pub bytes_freed: u64,
    pub objects: usize,
}

/// What [`expire`] did.
#[derive(Debug, Clone, Serialize)]
pub struct ExpireReport {
    #[serde(flatten)]
    pub plan: Plan,
    /// Nothing was deleted.
    pub dry_run: bool,
    /// Objects deleted by this run.
    pub deleted_objects: usize,
    #[serde(with = "crate::serde_duration")]
    pub elapsed: Duration,
}

// ---------------------------------------------------------------------------
// Planning.

/// Decides what to keep and delete, from the bucket as [`survey`] found it.
pub fn plan(listing: &Listing, retention: Retention) -> Plan {
    let mut plan = Plan {
        location: listing.location.clone(),
        keep_daily: retention.keep_daily,
        keep_base: retention.keep_base,
        kept: Vec::new(),
        deleted: Vec::new(),
        left_alone: Vec::new(),
        notes: Vec::new(),
        wal_cutoff: None,
        bytes_freed: 0,
        objects: 0,
    };
    plan_daily(listing, retention.keep_daily, &mut plan);
    let cutoff = plan_base(listing, retention.keep_base, &mut plan);
    plan_wal(listing, cutoff, &mut plan);
    plan_daily_leftovers(listing, &mut plan);
    plan_base_leftovers(listing, &mut plan);
    plan.bytes_freed = plan.deleted.iter().map(|d| d.bytes).sum();
    plan.objects = plan.deleted.iter().map(|d| d.keys.len()).sum();
    plan
}

/// Deletion order of one backup's keys: manifests first, owner marker last.
fn ordered<'o>(
    objects: impl IntoIterator<Item = &'o ObjectInfo>,
    is_manifest: impl Fn(&str) -> bool,
    is_owner: impl Fn(&str) -> bool,
) -> Vec<&'o ObjectInfo> {
    let mut objects: Vec<&ObjectInfo> = objects.into_iter().collect();
    objects.sort_by_key(|o| (!is_manifest(&o.key), is_owner(&o.key), o.key.clone()));
    objects
}

fn keys(objects: &[&ObjectInfo]) -> Vec<String> {
    objects.iter().map(|o| o.key.clone()).collect()
}

/// Deletes `objects` in their order.
fn deletion(kind: Kind, stamp: Option<&str>, objects: &[&ObjectInfo], reason: String) -> Deletion {
    let is_wal = kind == Kind::Wal;
    Deletion {
        kind,
        stamp: stamp.map(str::to_owned),
        first: is_wal.then(|| objects.first().map(|o| o.key.clone())).flatten(),
        last: is_wal.then(|| objects.last().map(|o| o.key.clone())).flatten(),
        keys: keys(objects),
        sizes: objects.iter().map(|o| o.size).collect(),
        bytes: objects.iter().map(|o| o.size).sum(),
        reason,
    }
}

fn is_daily_manifest(stamp: &str) -> impl Fn(&str) -> bool {
    let keys = [layout::manifest_key(stamp), layout::legacy_manifest_key(stamp)];
    move |key| keys.iter().any(|k| k == key)
}

fn is_daily_owner(stamp: &str) -> impl Fn(&str) -> bool {
    let owner = layout::incoming_owner_key(stamp);
    move |key| key == owner
}

/// The trailing `kind` deletions, pushed newest first, reversed.
fn oldest_first(plan: &mut Plan, kind: Kind) {
    if let Some(first) = plan.deleted.iter().position(|d| d.kind == kind) {
        plan.deleted[first..].reverse();
    }
}

fn plan_daily(listing: &Listing, keep: usize, plan: &mut Plan) {
    let mut published: Vec<&DailyEntry> = listing.daily.iter().filter(|d| d.dump.is_some()).collect();
    published.sort_by(|a, b| b.stamp.cmp(&a.stamp));
    let any_verified = published.iter().any(|d| d.verdict == Verdict::Verified);
    if !any_verified && published.iter().any(|d| d.manifest.counts()) {
        plan.notes.push(
            "no daily dump verifies (manifest present, size and sha256 its manifest's): no daily backup is deleted; \
             run drillbook check and take a new backup"
                .to_owned(),
        );
    }
    let mut counted = 0;
    let mut verified_kept = false;
    for entry in published {
        let in_window = counted < keep;
        let counts = entry.manifest.counts();
        let keep_it = if !any_verified {
            Some(match &entry.manifest {
                Described::Missing => "no manifest; nothing in the bucket verifies, so nothing is deleted".to_owned(),
                _ => "nothing in the bucket verifies, so nothing is deleted".to_owned(),
            })
        } else if in_window && counts {
            counted += 1;
            let verdict = match &entry.verdict {
                Verdict::Verified => {
                    verified_kept = true;
                    "; dump verified (size and sha256)".to_owned()
                }
                Verdict::Damaged(why) => format!("; does NOT verify: {why}"),
                Verdict::NotChecked => String::new(),
            };
            Some(format!("one of the {keep} newest (--keep-daily){verdict}"))
        } else if in_window {
            Some(
                "no manifest (a restore refuses it; not counted), newer than the backups kept: left for an operator to judge"
                    .to_owned(),
            )
        } else if !verified_kept && entry.verdict == Verdict::Verified {
            verified_kept = true;
            plan.notes.push(format!(
                "none of the newest {keep} daily backups verifies: also keeping {}, the newest that does",
                entry.stamp
            ));
            Some(format!(
                "the newest dump that verifies (size and sha256): none of the newest {keep} does"
            ))
        } else {
            None
        };
        if let Some(reason) = keep_it {
            plan.kept.push(Kept {
                kind: Kind::Daily,
                stamp: entry.stamp.clone(),
                reason,
            });
            continue;
        }
        let objects = ordered(
            &entry.objects,
            is_daily_manifest(&entry.stamp),
            is_daily_owner(&entry.stamp),
        );
        let reason = match (&entry.manifest, &entry.verdict) {
            (Described::Missing, _) => format!(
                "no manifest (an earlier expire deleted it first, or its backup never finished) and older than the \
                 {keep} newest (--keep-daily {keep})"
            ),
            (_, Verdict::Damaged(why)) => {
                format!("older than the {keep} newest (--keep-daily {keep}), and damaged: {why}")
            }
            _ => format!("older than the {keep} newest (--keep-daily {keep})"),
        };
        plan.deleted
            .push(deletion(Kind::Daily, Some(&entry.stamp), &objects, reason));
    }
    oldest_first(plan, Kind::Daily);
}

/// Unpublished daily backups (no dump under `daily/`) and the `incoming/`
/// objects of published ones, as the backup's own sweep judges them.
fn plan_daily_leftovers(listing: &Listing, plan: &mut Plan) {
    let deleted: BTreeSet<String> = plan
        .deleted
        .iter()
        .filter(|d| d.kind == Kind::Daily)
        .filter_map(|d| d.stamp.clone())
        .collect();
    for entry in &listing.daily {
        if entry.dump.is_some() {
            if deleted.contains(&entry.stamp) {
                continue;
            }
            // Published: its incoming/ copy is housekeeping the backup did not finish.
            let incoming = entry.objects.iter().filter(|o| o.key.starts_with(layout::INCOMING));
            let objects = ordered(incoming, |_| false, is_daily_owner(&entry.stamp));
            if objects.is_empty() {
                continue;
            }
            plan.deleted.push(deletion(
                Kind::DailyLeftover,
                Some(&entry.stamp),
                &objects,
                "the incoming/ copy of a published backup (its dump is under daily/)".to_owned(),
            ));
            continue;
        }
        let objects = ordered(
            &entry.objects,
            is_daily_manifest(&entry.stamp),
            is_daily_owner(&entry.stamp),
        );
        let reason = match entry.writer {
            Writer::Unknown => {
                plan.left_alone.push(LeftAlone {
                    kind: Kind::DailyLeftover,
                    stamp: entry.stamp.clone(),
                    keys: keys(&objects),
                    reason: "an unfinished backup whose writer runs (or is on another machine): left alone".to_owned(),
                });
                continue;
            }
            Writer::Gone => "an unfinished backup whose writer is gone".to_owned(),
            Writer::None => "no dump and no owner: left by an interrupted backup, sweep or expire".to_owned(),
        };
        plan.deleted
            .push(deletion(Kind::DailyLeftover, Some(&entry.stamp), &objects, reason));
    }
}

fn is_base_manifest(stamp: &str) -> impl Fn(&str) -> bool {
    let manifest = format!("{BASE_PREFIX}{stamp}/manifest.json");
    move |key| key == manifest
}

fn is_base_owner(stamp: &str) -> impl Fn(&str) -> bool {
    let owner = format!("{BASE_PREFIX}{stamp}/owner");
    move |key| key == owner
}

/// Keeps and expires finished base backups; returns the WAL cutoff:
/// `(timeline, start LSN, stamp)` of the kept base backup that starts first.
fn plan_base(listing: &Listing, keep: usize, plan: &mut Plan) -> Option<(u32, u64, String)> {
    let mut finished: Vec<&BaseEntry> = listing.base.iter().filter(|b| b.manifest.is_some()).collect();
    finished.sort_by(|a, b| b.stamp.cmp(&a.stamp));
    let any_intact = finished.iter().any(|b| b.intact().is_ok());
    if !any_intact && !finished.is_empty() {
        plan.notes.push(
            "no base backup is intact (manifest reads, tar of its size): no base backup and no WAL is deleted; take \
             a new base backup (drillbook basebackup)"
                .to_owned(),
        );
    }
    let mut kept: Vec<&BaseEntry> = Vec::new();
    let mut intact_kept = false;
    for (i, entry) in finished.iter().enumerate() {
        let intact = entry.intact();
        let reason = if !any_intact {
            Some("no base backup in the bucket is intact, so nothing is deleted".to_owned())
        } else if i < keep {
            intact_kept |= intact.is_ok();
            Some(match &intact {
                Ok(()) => format!("one of the {keep} newest (--keep-base)"),
                Err(why) => format!("one of the {keep} newest (--keep-base); NOT intact: {why}"),
            })
        } else if !intact_kept && intact.is_ok() {
            intact_kept = true;
            plan.notes.push(format!(
                "none of the newest {keep} base backups is intact: also keeping {}, the newest that is",
                entry.stamp
            ));
            Some(format!("the newest intact base backup: none of the newest {keep} is"))
        } else {
            None
        };
        if let Some(reason) = reason {
            plan.kept.push(Kept {
                kind: Kind::Base,
                stamp: entry.stamp.clone(),
                reason,
            });
            kept.push(entry);
            continue;
        }
        let objects = ordered(
            &entry.objects,
            is_base_manifest(&entry.stamp),
            is_base_owner(&entry.stamp),
        );
        let reason = match intact {
            Ok(()) => format!("older than the {keep} newest (--keep-base {keep})"),
            Err(why) => format!("older than the {keep} newest (--keep-base {keep}), and not intact: {why}"),
        };
        plan.deleted
            .push(deletion(Kind::Base, Some(&entry.stamp), &objects, reason));
    }
    oldest_first(plan, Kind::Base);

    if kept.is_empty() {
        if listing.wal.iter().any(|o| !o.key.ends_with(".history")) {
            plan.notes.push(
                "no base backup: the WAL archive is kept whole (nothing can tell which part is needed)".to_owned(),
            );
        }
        return None;
    }
    let mut cutoff: Option<(u32, u64, String)> = None;
    for entry in kept {
        let start = match &entry.manifest {
            Some(Ok(manifest)) => parse_lsn(&manifest.start_lsn).map(|lsn| (manifest.timeline, lsn)),
            _ => None,
        };
        let Some((timeline, lsn)) = start else {
            plan.notes.push(format!(
                "kept base backup {} has no readable start LSN: no WAL is deleted",
                entry.stamp
            ));
            return None;
        };
        if cutoff.as_ref().is_none_or(|(_, c, _)| lsn < *c) {
            cutoff = Some((timeline, lsn, entry.stamp.clone()));
        }
    }
    cutoff
}

/// Manifest-less base backups: of gone writers (or none) deleted, of live ones left.
fn plan_base_leftovers(listing: &Listing, plan: &mut Plan) {
    for entry in listing.base.iter().filter(|b| b.manifest.is_none()) {
        let objects = ordered(&entry.objects, |_| false, is_base_owner(&entry.stamp));
        let reason = match entry.writer {
            Writer::Unknown => {
                plan.left_alone.push(LeftAlone {
                    kind: Kind::BaseLeftover,
                    stamp: entry.stamp.clone(),
                    keys: keys(&objects),
                    reason: "a base backup in progress (its writer runs, or is on another machine): left alone"
                        .to_owned(),
                });
                continue;
            }
            Writer::Gone => "an unfinished base backup whose writer is gone".to_owned(),
            Writer::None => "no manifest and no owner: left by an interrupted base backup, sweep or expire".to_owned(),
        };
        plan.deleted
            .push(deletion(Kind::BaseLeftover, Some(&entry.stamp), &objects, reason));
    }
}

/// The segment number an archived WAL object belongs to, for segments,
/// `.partial` segments and `.backup` labels; `None` for history files and
/// names that do not parse (kept).
fn wal_segment(key: &str) -> Option<(u32, u64)> {
    let name = key.rsplit('/').next()?;
    let segment = name.get(..24)?;
    let rest = &name[24..];
    let known = rest.is_empty() || rest == ".partial" || (rest.starts_with('.') && rest.ends_with(".backup"));
    match parse_wal_name(segment) {
        WalFile::Segment { timeline, segno } if known => Some((timeline, segno)),
        _ => None,
    }
}

fn plan_wal(listing: &Listing, cutoff: Option<(u32, u64, String)>, plan: &mut Plan) {
    let Some((timeline, lsn, stamp)) = cutoff else {
        return;
    };
    plan.wal_cutoff = Some(format_lsn(lsn));
    let first_kept = lsn / SEGMENT_BYTES;
    let mut timelines = BTreeSet::from([timeline]);
    match listing.histories.get(&timeline) {
        Some(ancestors) => timelines.extend(ancestors.iter().copied()),
        None if timeline > 1 => plan.notes.push(format!(
            "timeline {timeline}'s history file is missing or unreadable: only WAL of timeline {timeline} is deleted"
        )),
        None => {}
    }
    let mut doomed: Vec<((u64, u32), &ObjectInfo)> = listing
        .wal
        .iter()
        .filter_map(|o| wal_segment(&o.key).map(|(t, s)| ((s, t), o)))
        .filter(|((segno, t), _)| *segno < first_kept && timelines.contains(t))
        .collect();
    doomed.sort_by(|a, b| (a.0, &a.1.key).cmp(&(b.0, &b.1.key)));
    let reason = format!(
        "wholly before {}, where the oldest kept base backup {stamp} starts (segment {}); timeline{} {}",
        format_lsn(lsn),
        segment_file_name(timeline, first_kept),
        if timelines.len() > 1 { "s" } else { "" },
        timelines.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
    );
    // One entry per run of one timeline, in deletion order (oldest first).
    let mut runs: Vec<(u32, Vec<&ObjectInfo>)> = Vec::new();
    for ((_, t), object) in doomed {
        match runs.last_mut() {
            Some((run_timeline, objects)) if *run_timeline == t => objects.push(object),
            _ => runs.push((t, vec![object])),
        }
    }
    for (_, objects) in runs {
        plan.deleted.push(deletion(Kind::Wal, None, &objects, reason.clone()));
    }
}

// ---------------------------------------------------------------------------
// Reading the bucket.

/// Reads what [`plan`] needs: the listings of `manifests/`, `incoming/`,
/// `daily/` (in that order: a backup that publishes meanwhile is seen with
/// its dump), `base/` and `wal/`, every manifest, the owner markers of
/// unfinished backups, the history files, and the newest dumps, read
/// through and hashed newest first until one verifies.
pub async fn survey(store: &Store) -> Result<Listing> {
    store.require_bucket().await?;
    let mut daily: BTreeMap<String, Vec<ObjectInfo>> = BTreeMap::new();
    for prefix in [layout::MANIFESTS, layout::INCOMING, layout::DAILY] {
        for object in store.list(prefix).await? {
            if let Some(stamp) = layout::stamp_under(prefix, &object.key) {
                daily.entry(stamp.to_owned()).or_default().push(object);
            }
        }
    }
    let mut entries = Vec::new();
    for (stamp, objects) in daily {
        let dump = objects
            .iter()
            .find(|o| layout::stamp_of_dump(&o.key) == Some(stamp.as_str()))
            .map(|o| o.key.clone());
        let manifest_key = [layout::manifest_key(&stamp), layout::legacy_manifest_key(&stamp)]
            .into_iter()
            .find(|k| objects.iter().any(|o| o.key == *k));
        let owner_key = layout::incoming_owner_key(&stamp);
        let writer = if dump.is_none() && objects.iter().any(|o| o.key == owner_key) {
            match owner::writer(store, &owner_key, false).await? {
                // Listed, gone since: it just finished. Judged as running.
                Writer::None => Writer::Unknown,
                writer => writer,
            }
        } else {
            Writer::None
        };
        entries.push(DailyEntry {
            stamp,
            objects,
            dump,
            manifest: manifest_key.map_or(Described::Missing, |key| Described::Present { key }),
            writer,
            verdict: Verdict::NotChecked,
        });
    }
    // Verify newest first until one does.
    let mut published: Vec<&mut DailyEntry> = entries.iter_mut().filter(|e| e.dump.is_some()).collect();
    published.sort_by(|a, b| b.stamp.cmp(&a.stamp));
    for entry in published {
        let Described::Present { key } = entry.manifest.clone() else {
            continue;
        };
        let manifest = match store.get_bytes(&key).await {
            Ok(bytes) => match BackupManifest::from_json(&bytes) {
                Ok(manifest) => manifest,
                Err(e) => {
                    entry.manifest = Described::Unreadable {
                        key: key.clone(),
                        reason: e.to_string(),
                    };
                    entry.verdict = Verdict::Damaged(format!("its manifest {key} does not read ({e})"));
                    continue;
                }
            },
            // Deleted meanwhile (another expire): it no longer counts.
            Err(StoreError::NotFound { .. }) => {
                entry.manifest = Described::Missing;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        entry.verdict = verify_dump(store, &entry.objects, &manifest).await?;
        if entry.verdict == Verdict::Verified {
            break;
        }
    }

    let mut base: BTreeMap<String, Vec<ObjectInfo>> = BTreeMap::new();
    for object in store.list(BASE_PREFIX).await? {
        if let Some(stamp) = layout::stamp_under(BASE_PREFIX, &object.key) {
            base.entry(stamp.to_owned()).or_default().push(object);
        }
    }
    let mut bases = Vec::new();
    for (stamp, objects) in base {
        let manifest_key = format!("{BASE_PREFIX}{stamp}/manifest.json");
        let owner_key = format!("{BASE_PREFIX}{stamp}/owner");
        let manifest = if objects.iter().any(|o| o.key == manifest_key) {
            match store.get_bytes(&manifest_key).await {
                Ok(bytes) => Some(serde_json::from_slice::<BaseBackupManifest>(&bytes).map_err(|e| e.to_string())),
                Err(StoreError::NotFound { .. }) => None,
                Err(e) => return Err(e.into()),
            }
        } else {
            None
        };
        let writer = if manifest.is_none() && objects.iter().any(|o| o.key == owner_key) {
            match owner::writer(store, &owner_key, false).await? {
                Writer::None => Writer::Unknown,
                writer => writer,
            }
        } else {
            Writer::None
        };
        bases.push(BaseEntry {
            stamp,
            objects,
            manifest,
            writer,
        });
    }

    let wal = store.list(WAL_PREFIX).await?;
    let mut histories = BTreeMap::new();
    for object in &wal {
        let WalFile::History { timeline } = parse_wal_name(object.key.rsplit('/').next().unwrap_or_default()) else {
            continue;
        };
        let text = match store.get_bytes(&object.key).await {
            Ok(stored) => match decode(&stored) {
                Ok(raw) => String::from_utf8_lossy(&raw).into_owned(),
                Err(reason) => {
                    tracing::warn!(
                        key = object.key,
                        reason,
                        "history file does not decode; its timeline's ancestors are unknown"
                    );
                    continue;
                }
            },
            Err(StoreError::NotFound { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        histories.insert(timeline, parse_history(&text).into_iter().map(|(t, _)| t).collect());
    }

    Ok(Listing {
        location: store.config().location(),
        daily: entries,
        base: bases,
        wal,
        histories,
    })
}

/// The dump is listed with its manifest's size, and reads with its sha256.
async fn verify_dump(store: &Store, objects: &[ObjectInfo], manifest: &BackupManifest) -> Result<Verdict> {
    let dump = &manifest.dump;
    let Some(listed) = objects.iter().find(|o| o.key == dump.key) else {
        return Ok(Verdict::Damaged(format!(
            "its manifest names {}, which is missing",
            dump.key
        )));
    };
    if listed.size != dump.bytes {
        return Ok(Verdict::Damaged(format!(
            "{} is {} bytes, its manifest says {}",
            dump.key, listed.size, dump.bytes
        )));
    }
    match store.hash_object(&dump.key).await {
        Ok(read) if read.bytes == dump.bytes && read.sha256 == dump.sha256 => Ok(Verdict::Verified),
        Ok(read) => Ok(Verdict::Damaged(format!(
            "{} has sha256 {}, its manifest says {}",
            dump.key, read.sha256, dump.sha256
        ))),
        Err(StoreError::NotFound { .. }) => Ok(Verdict::Damaged(format!("{} vanished while read", dump.key))),
        Err(e) => Err(e.into()),
    }
}

// ---------------------------------------------------------------------------
// Deleting.

/// Deletes what `plan` says, in its order, with progress in bytes. Returns
/// the number of objects deleted.
///
/// # Errors
/// The first deletion that fails; what was deleted before it stays deleted,
/// and the bucket is consistent (see the module docs): run it again.
pub async fn execute(store: &Store, plan: &Plan) -> Result<usize> {
    let progress = crate::progress::task(
        format!("expire: delete {} objects", plan.objects),
        crate::progress::Unit::Bytes,
        Some(plan.bytes_freed),
    );
    let mut deleted = 0;
    for deletion in &plan.deleted {
        let is_manifest: Box<dyn Fn(&str) -> bool> = match (deletion.kind, deletion.stamp.as_deref()) {
            (Kind::Daily, Some(stamp)) => Box::new(is_daily_manifest(stamp)),
            (Kind::Base, Some(stamp)) => Box::new(is_base_manifest(stamp)),
            _ => Box::new(|_| false),
        };
        for (key, size) in deletion.keys.iter().zip(&deletion.sizes) {
            store.delete(key).await?;
            deleted += 1;
            progress.advance(*size);
            if is_manifest(key) {
                // Held here, a backup has lost its manifest and kept its data.
                crate::failpoint!("expire::after_manifest");
            }
            if deletion.kind == Kind::Wal {
                crate::failpoint!("expire::after_wal");
            }
        }
        tracing::info!(
            kind = deletion.kind.name(),
            name = deletion.name(),
            objects = deletion.keys.len(),
            "expired"
        );
    }
    progress.finish();
    Ok(deleted)
}

/// Surveys the bucket, plans, and (unless `dry_run`) deletes.
///
/// # Errors
/// [`ExpireError::KeepNothing`] is raised by [`Retention::new`], before
/// this; here only the bucket's errors (missing, unreachable).
pub async fn expire(store: &Store, retention: Retention, dry_run: bool) -> Result<ExpireReport> {
    let started = Instant::now();
    let listing = survey(store).await?;
    let plan = plan(&listing, retention);
    let deleted_objects = if dry_run { 0 } else { execute(store, &plan).await? };
    Ok(ExpireReport {
        plan,
        dry_run,
        deleted_objects,
        elapsed: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(key: &str, size: u64) -> ObjectInfo {
        ObjectInfo {
            key: key.to_owned(),
            size,
            last_modified: None,
        }
    }

    fn stamp(day: u32) -> String {
        format!("202606{day:02}T020000.000Z")
    }

    /// A published daily backup of day `day`.
    fn daily(day: u32, verdict: Verdict) -> DailyEntry {
        let stamp = stamp(day);
        DailyEntry {
            objects: vec![
                object(&layout::dump_key(&stamp, "immoflowme"), 1000),
                object(&layout::manifest_key(&stamp), 10),
                object(&layout::roles_key(&stamp), 5),
            ],
            dump: Some(layout::dump_key(&stamp, "immoflowme")),
            manifest: Described::Present {
                key: layout::manifest_key(&stamp),
            },
            writer: Writer::None,
            verdict,
            stamp,
        }
    }

    fn lsn_of(segno: u64) -> String {
        format_lsn(segno * SEGMENT_BYTES + 0x28)
    }

    /// A finished base backup of day `day` starting in segment `segno` of `timeline`.
    fn base(day: u32, timeline: u32, segno: u64) -> BaseEntry {
        let stamp = stamp(day);
        let tar_key = format!("{BASE_PREFIX}{stamp}/base.tar");
        BaseEntry {
            objects: vec![
                object(&tar_key, 5000),
                object(&format!("{BASE_PREFIX}{stamp}/manifest.json"), 300),
            ],
            manifest: Some(Ok(BaseBackupManifest {
                stamp: stamp.clone(),
                start_lsn: lsn_of(segno),
                end_lsn: lsn_of(segno + 1),
                timeline,
                start_time: layout::parse_stamp(&stamp).unwrap(),
                end_time: layout::parse_stamp(&stamp).unwrap(),
                server_version: "17".into(),
                tar_key,
                tar_bytes: 5000,
                tar_sha256: "00".into(),
                compression: Default::default(),
            })),
            writer: Writer::None,
            stamp,
        }
    }

    fn segment(timeline: u32, segno: u64) -> ObjectInfo {
        let name = segment_file_name(timeline, segno);
        object(&crate::wal::key_for(&name).unwrap(), 100)
    }

    fn stamps(plan: &Plan, kind: Kind) -> (Vec<String>, Vec<String>) {
        let kept = plan
            .kept
            .iter()
            .filter(|k| k.kind == kind)
            .map(|k| k.stamp.clone())
            .collect();
        let deleted = plan
            .deleted
            .iter()
            .filter(|d| d.kind == kind)
            .filter_map(|d| d.stamp.clone())
            .collect();
        (kept, deleted)
    }

    fn wal_keys(plan: &Plan) -> Vec<String> {
        plan.deleted
            .iter()
            .filter(|d| d.kind == Kind::Wal)
            .flat_map(|d| d.keys.iter().cloned())
            .collect()
    }

    fn retention(daily: usize, base: usize) -> Retention {
        Retention::new(daily, base).unwrap()
    }

    #[test]
    fn keeping_nothing_is_refused() {
        let err = Retention::new(0, 2).unwrap_err().to_string();
        assert!(
            err.contains("--keep-daily 0") && err.contains("keeping nothing is deleting"),
            "{err}"
        );
        let err = Retention::new(3, 0).unwrap_err().to_string();
        assert!(err.contains("--keep-base 0"), "{err}");
    }

    #[test]
    fn the_newest_daily_backups_are_kept_and_older_ones_go_manifest_first() {
        let listing = Listing {
            daily: vec![
                daily(1, Verdict::NotChecked),
                daily(2, Verdict::NotChecked),
                daily(3, Verdict::NotChecked),
                daily(4, Verdict::Verified),
            ],
            ..Listing::default()
        };
        let plan = plan(&listing, retention(2, 1));
        let (kept, deleted) = stamps(&plan, Kind::Daily);
        assert_eq!(kept, [stamp(4), stamp(3)]);
        assert_eq!(deleted, [stamp(1), stamp(2)], "oldest first");
        let first = &plan.deleted[0];
        assert_eq!(
            first.keys,
            [
                layout::manifest_key(&stamp(1)),
                layout::dump_key(&stamp(1), "immoflowme"),
                layout::roles_key(&stamp(1)),
            ],
            "the manifest first, so the backup stops counting before its dump goes"
        );
        assert_eq!(first.bytes, 1015);
        assert_eq!(plan.bytes_freed, 2030);
        assert_eq!(plan.objects, 6);
        assert!(plan.notes.is_empty(), "{:?}", plan.notes);
    }

    #[test]
    fn an_older_verifying_dump_is_kept_when_the_newest_do_not_verify() {
        let listing = Listing {
            daily: vec![
                daily(1, Verdict::NotChecked),
                daily(2, Verdict::Verified),
                daily(3, Verdict::Damaged("size".into())),
                daily(4, Verdict::Damaged("sha256".into())),
            ],
            ..Listing::default()
        };
        let plan = plan(&listing, retention(2, 1));
        let (kept, deleted) = stamps(&plan, Kind::Daily);
        assert_eq!(kept, [stamp(4), stamp(3), stamp(2)]);
        assert_eq!(deleted, [stamp(1)]);
        assert!(
            plan.notes
                .iter()
                .any(|n| n.contains(&stamp(2)) && n.contains("the newest that does")),
            "{:?}",
            plan.notes
        );
        assert!(plan.kept[0].reason.contains("NOT verify"), "{:?}", plan.kept[0]);
    }

    #[test]
    fn nothing_daily_is_deleted_when_no_dump_verifies() {
        let listing = Listing {
            daily: vec![
                daily(1, Verdict::Damaged("x".into())),
                daily(2, Verdict::Damaged("y".into())),
                daily(3, Verdict::Damaged("z".into())),
            ],
            ..Listing::default()
        };
        let plan = plan(&listing, retention(1, 1));
        let (kept, deleted) = stamps(&plan, Kind::Daily);
        assert_eq!(kept.len(), 3);
        assert!(deleted.is_empty());
        assert!(
            plan.notes.iter().any(|n| n.contains("no daily dump verifies")),
            "{:?}",
            plan.notes
        );
    }

    #[test]
    fn manifest_less_dumps_do_not_count_and_go_only_when_older_than_the_kept() {
        let mut old = daily(1, Verdict::NotChecked);
        old.objects.retain(|o| !o.key.ends_with("manifest.json"));
        old.manifest = Described::Missing;
        let mut fresh = daily(5, Verdict::NotChecked);
        fresh.objects.retain(|o| !o.key.ends_with("manifest.json"));
        fresh.manifest = Described::Missing;
        let listing = Listing {
            daily: vec![old, daily(2, Verdict::NotChecked), daily(3, Verdict::Verified), fresh],
            ..Listing::default()
        };
        let plan = plan(&listing, retention(1, 1));
        let (kept, deleted) = stamps(&plan, Kind::Daily);
        assert_eq!(
            kept,
            [stamp(5), stamp(3)],
            "the manifest-less newest is kept but not counted"
        );
        assert_eq!(deleted, [stamp(1), stamp(2)]);
        let leftover = plan.deleted.iter().find(|d| d.stamp == Some(stamp(1))).unwrap();
        assert!(leftover.reason.contains("no manifest"), "{leftover:?}");
        assert_eq!(leftover.keys[0], layout::dump_key(&stamp(1), "immoflowme"));
    }

    #[test]
    fn unfinished_daily_backups_of_live_writers_are_left_alone() {
        let unfinished = |day: u32, writer: Writer| {
            let stamp = stamp(day);
            DailyEntry {
                objects: vec![
                    object(&layout::incoming_owner_key(&stamp), 40),
                    object(&layout::incoming_key(&stamp, "immoflowme"), 900),
                    object(&layout::roles_key(&stamp), 5),
                ],
                dump: None,
                manifest: Described::Missing,
                writer,
                verdict: Verdict::NotChecked,
                stamp,
            }
        };
        let mut published = daily(3, Verdict::Verified);
        published
            .objects
            .push(object(&layout::incoming_key(&stamp(3), "immoflowme"), 1000));
        let listing = Listing {
            daily: vec![
                unfinished(1, Writer::Gone),
                unfinished(2, Writer::None),
                published,
                unfinished(4, Writer::Unknown),
            ],
            ..Listing::default()
        };
        let plan = plan(&listing, retention(1, 1));
        let (_, leftovers) = stamps(&plan, Kind::DailyLeftover);
        assert_eq!(leftovers, [stamp(1), stamp(2), stamp(3)]);
        assert_eq!(plan.left_alone.len(), 1);
        assert_eq!(plan.left_alone[0].stamp, stamp(4));
        let gone = plan.deleted.iter().find(|d| d.stamp == Some(stamp(1))).unwrap();
        assert_eq!(
            gone.keys.last().unwrap(),
            &layout::incoming_owner_key(&stamp(1)),
            "the owner marker last"
        );
        let housekeeping = plan.deleted.iter().find(|d| d.stamp == Some(stamp(3))).unwrap();
        assert_eq!(housekeeping.keys, [layout::incoming_key(&stamp(3), "immoflowme")]);
        assert_eq!(stamps(&plan, Kind::Daily).0, [stamp(3)]);
    }

    #[test]
    fn wal_before_the_oldest_kept_base_backup_goes_oldest_first_and_nothing_else() {
        let mut wal: Vec<ObjectInfo> = (1..=12).map(|s| segment(1, s)).collect();
        wal.push(object("wal/00000001/000000010000000000000003.00000028.backup", 300));
        wal.push(object("wal/00000001/not-wal", 1));
        let listing = Listing {
            base: vec![base(1, 1, 2), base(2, 1, 5), base(3, 1, 9)],
            wal,
            ..Listing::default()
        };
        let plan = plan(&listing, retention(1, 2));
        let (kept, deleted) = stamps(&plan, Kind::Base);
        assert_eq!(kept, [stamp(3), stamp(2)]);
        assert_eq!(deleted, [stamp(1)]);
        let base_deletion = plan.deleted.iter().find(|d| d.kind == Kind::Base).unwrap();
        assert!(base_deletion.keys[0].ends_with("/manifest.json"), "{base_deletion:?}");
        assert_eq!(plan.wal_cutoff.as_deref(), Some(lsn_of(5).as_str()));
        let expected: Vec<String> = vec![
            segment(1, 1).key,
            segment(1, 2).key,
            segment(1, 3).key,
            "wal/00000001/000000010000000000000003.00000028.backup".into(),
            segment(1, 4).key,
        ];
        assert_eq!(
            wal_keys(&plan),
            expected,
            "segments 1-4 (before segment 5), oldest first"
        );
        let index = |kind| plan.deleted.iter().position(|d| d.kind == kind).unwrap();
        assert!(
            index(Kind::Base) < index(Kind::Wal),
            "base backups go before the WAL they needed"
        );
        let wal = plan.deleted.iter().find(|d| d.kind == Kind::Wal).unwrap();
        assert_eq!(wal.name(), "000000010000000000000001..000000010000000000000004");
    }

    #[test]
    fn wal_of_ancestor_timelines_goes_and_other_timelines_and_histories_stay() {
        let mut wal: Vec<ObjectInfo> = (1..=6).map(|s| segment(1, s)).collect();
        wal.extend((6..=10).map(|s| segment(2, s)));
        wal.extend((3..=4).map(|s| segment(3, s)));
        wal.push(object("wal/00000002/00000002.history", 50));
        wal.push(object("wal/00000003/00000003.history", 50));
        let listing = Listing {
            base: vec![base(1, 1, 2), base(2, 2, 8)],
            wal: wal.clone(),
            histories: BTreeMap::from([(2, vec![1]), (3, vec![1])]),
            ..Listing::default()
        };
        let planned = plan(&listing, retention(1, 1));
        let mut expected: Vec<String> = (1..=6).map(|s| segment(1, s).key).collect();
        expected.extend([segment(2, 6).key, segment(2, 7).key]);
        assert_eq!(
            wal_keys(&planned),
            expected,
            "timelines 2 and its ancestor 1 before segment 8"
        );
        assert!(
            !wal_keys(&planned)
                .iter()
                .any(|k| k.contains("history") || k.starts_with("wal/00000003/"))
        );

        // Without timeline 2's history, only timeline 2's WAL goes.
        let listing = Listing {
            histories: BTreeMap::new(),
            ..listing
        };
        let plan = plan(&listing, retention(1, 1));
        assert_eq!(wal_keys(&plan), [segment(2, 6).key, segment(2, 7).key]);
        assert!(
            plan.notes.iter().any(|n| n.contains("history file")),
            "{:?}",
            plan.notes
        );
    }

    #[test]
    fn an_older_intact_base_backup_is_kept_when_the_newest_are_not() {
        let mut broken = base(3, 1, 9);
        broken.objects.retain(|o| !o.key.ends_with("base.tar"));
        let listing = Listing {
            base: vec![base(1, 1, 2), base(2, 1, 5), broken],
            wal: (1..=10).map(|s| segment(1, s)).collect(),
            ..Listing::default()
        };
        let plan = plan(&listing, retention(1, 1));
        let (kept, deleted) = stamps(&plan, Kind::Base);
        assert_eq!(kept, [stamp(3), stamp(2)]);
        assert_eq!(deleted, [stamp(1)]);
        assert_eq!(
            wal_keys(&plan).len(),
            4,
            "WAL is kept from the intact one's start: {plan:#?}"
        );
    }

    #[test]
    fn without_a_base_backup_no_wal_is_deleted() {
        let listing = Listing {
            wal: (1..=3).map(|s| segment(1, s)).collect(),
            ..Listing::default()
        };
        let plan = plan(&listing, retention(1, 1));
        assert!(plan.deleted.is_empty(), "{plan:#?}");
        assert!(plan.notes.iter().any(|n| n.contains("kept whole")), "{:?}", plan.notes);
    }

    #[test]
    fn manifest_less_base_backups_go_unless_their_writer_runs() {
        let unfinished = |day: u32, writer: Writer, owner: bool| {
            let stamp = stamp(day);
            let mut objects = vec![object(&format!("{BASE_PREFIX}{stamp}/base.tar"), 700)];
            if owner {
                objects.push(object(&format!("{BASE_PREFIX}{stamp}/owner"), 40));
            }
            BaseEntry {
                objects,
                manifest: None,
                writer,
                stamp,
            }
        };
        let listing = Listing {
            base: vec![
                unfinished(1, Writer::None, false),
                base(2, 1, 3),
                unfinished(3, Writer::Gone, true),
                unfinished(4, Writer::Unknown, true),
            ],
            ..Listing::default()
        };
        let plan = plan(&listing, retention(1, 1));
        assert_eq!(stamps(&plan, Kind::BaseLeftover).1, [stamp(1), stamp(3)]);
        let gone = plan.deleted.iter().find(|d| d.stamp == Some(stamp(3))).unwrap();
        assert!(gone.keys.last().unwrap().ends_with("/owner"), "{gone:?}");
        assert_eq!(plan.left_alone.len(), 1);
        assert_eq!(plan.left_alone[0].stamp, stamp(4));
        assert_eq!(stamps(&plan, Kind::Base).0, [stamp(2)]);
    }

    #[test]
    fn wal_names_map_to_their_segment() {
        assert_eq!(wal_segment("wal/00000001/000000010000000000000003"), Some((1, 3)));
        assert_eq!(
            wal_segment("wal/00000002/000000020000000100000003.partial"),
            Some((2, 259))
        );
        assert_eq!(
            wal_segment("wal/00000001/000000010000000000000003.00000028.backup"),
            Some((1, 3))
        );
        assert_eq!(wal_segment("wal/00000002/00000002.history"), None);
        assert_eq!(wal_segment("wal/00000001/000000010000000000000003.tmp"), None);
    }
}
