//! Backup health in one pass (`drillbook check`): what the playbook's weekly
//! "backup verification" asks, and what pgBackRest's `check`/`verify`,
//! Barman's `check` and WAL-G's `wal-verify` do, against the bucket the
//! restores read.
//!
//! | check | passes when |
//! |---|---|
//! | `daily_dump` | the newest dump under `daily/` (the one a restore picks) has its manifest, is at most `max_dump_age` old, and its size and SHA-256 are the manifest's |
//! | `base_backup` | a base backup exists, the newest is at most `max_base_backup_age` old, and every tar has its manifest's size (and, when sampled, its SHA-256) |
//! | `wal_archive` | every segment from the start of the oldest base backup to the newest archived one is there, on the timeline the history files say, every timeline after the first has its history file, and every sampled object decodes to the bytes its header's SHA-256 names |
//! | `archive_lag` | (with a database) the server archives into this bucket, without a failure since its last success, and its last archived segment is at most two `archive_timeout`s behind |
//! | `anchors` | an anchor under `anchors/` exists and is not older than the newest dump |
//!
//! Re-reading every object on every run does not scale, so content hashes
//! (base backup tars, WAL) are sampled: with `sample_runs = N` an object is
//! read on the runs where `run ≡ h(key) (mod N)`, so each is read once
//! every N runs, and a new object lands in a fixed slot. The run counter is
//! kept in the bucket ([`STATE_KEY`]). The newest dump is always read whole:
//! it is the one a restore would use tonight.
//!
//! Read-only except for [`STATE_KEY`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::basebackup::list_base_backups;
use crate::pg::ConnInfo;
use crate::restore::{BackupChoice, RestoreError, find_backup};
use crate::store::manifest::{ANCHORS, Anchor};
use crate::store::{Store, StoreError};
use crate::wal::{WAL_PREFIX, decode, parse_lsn};

/// Where the sampling state lives in the bucket.
pub const STATE_KEY: &str = "check/state.json";

/// PostgreSQL's default WAL segment size; drillbook's servers use it.
pub(crate) const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;

/// At most this many missing or damaged names are listed per check.
const LISTED: usize = 10;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("could not read the archive status of {database}: {source}")]
    Database {
        database: String,
        #[source]
        source: sqlx::Error,
    },
}

/// What to hold the bucket to.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    pub now: DateTime<Utc>,
    /// The newest daily dump may be this old (the playbook backs up daily).
    pub max_dump_age: Duration,
    /// The newest base backup may be this old.
    pub max_base_backup_age: Duration,
    /// Each sampled object is re-hashed once every this many runs (1: every run).
    pub sample_runs: u32,
    /// The archiving server, for `archive_lag`.
    pub database: Option<ConnInfo>,
}

/// One check's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub check: &'static str,
    pub ok: bool,
    /// One line: what was looked at.
    pub summary: String,
    /// What is wrong, each with what to do.
    pub problems: Vec<String>,
    /// Figures for monitoring (`--prometheus`): ages in seconds, counts.
    pub figures: BTreeMap<&'static str, f64>,
}

impl CheckResult {
    fn new(check: &'static str) -> Self {
        Self {
            check,
            ok: true,
            summary: String::new(),
            problems: Vec::new(),
            figures: BTreeMap::new(),
        }
    }

    fn problem(&mut self, text: impl Into<String>) {
        self.ok = false;
        self.problems.push(text.into());
    }
}

/// Every check's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub location: String,
    pub checked_at: DateTime<Utc>,
    /// This run's number (sampling slot).
    pub run: u64,
    pub sample_runs: u32,
    pub ok: bool,
    pub checks: Vec<CheckResult>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct SamplingState {
    runs: u64,
}

/// Runs every check against `store`.
///
/// # Errors
/// Only when a check could not run at all (the bucket unreachable, the
/// database unreachable); what a check finds wrong is in the report.
pub async fn check_backups(store: &Store, options: &CheckOptions) -> Result<CheckReport, CheckError> {
    store.require_bucket().await?;
    let sample_runs = options.sample_runs.max(1);
    let state: SamplingState = match store.get_bytes(STATE_KEY).await {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
        Err(StoreError::NotFound { .. }) => SamplingState::default(),
        Err(e) => return Err(e.into()),
    };
    let run = state.runs;
    let sampled = |key: &str| sample_runs == 1 || slot(key, sample_runs) == run % u64::from(sample_runs);

    let daily = check_daily_dump(store, options).await?;
    let newest_dump_at = daily.1;
    let mut checks = vec![daily.0];
    let (base, oldest_base_start) = check_base_backups(store, options, &sampled).await?;
    checks.push(base);
    checks.push(check_wal_archive(store, oldest_base_start, options.now, &sampled).await?);
    if let Some(database) = &options.database {
        checks.push(check_archive_lag(store, database, options.now).await?);
    }
    checks.push(check_anchors(store, newest_dump_at).await?);

    let next = serde_json::to_vec(&SamplingState { runs: run + 1 }).expect("state serializes");
    store.put_bytes(STATE_KEY, next, "application/json").await?;
    Ok(CheckReport {
        location: store.config().location(),
        checked_at: options.now,
        run,
        sample_runs,
        ok: checks.iter().all(|c| c.ok),
        checks,
    })
}

/// A key's sampling slot: stable, so a new object never moves the others.
fn slot(key: &str, runs: u32) -> u64 {
    let digest = Sha256::digest(key.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")) % u64::from(runs)
}

fn age(now: DateTime<Utc>, then: DateTime<Utc>) -> Duration {
    (now - then).to_std().unwrap_or_default()
}

fn at(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The newest daily dump, the one a restore picks; returns its snapshot time.
async fn check_daily_dump(
    store: &Store,
    options: &CheckOptions,
) -> Result<(CheckResult, Option<DateTime<Utc>>), CheckError> {
    let mut result = CheckResult::new("daily_dump");
    let manifest = match find_backup(store, &BackupChoice::Newest).await {
        Ok(manifest) => manifest,
        Err(RestoreError::ManifestMissing { dump, manifest, .. }) => {
            result.summary = format!("newest dump {dump}");
            result.problem(format!(
                "{dump} has no manifest ({manifest}): a restore refuses it; its backup did not finish. Take a new \
                 backup (drillbook backup)"
            ));
            return Ok((result, None));
        }
        Err(RestoreError::Store(e)) => return Err(e.into()),
        Err(e) => {
            result.summary = "no usable daily dump".to_owned();
            result.problem(format!("{e}"));
            return Ok((result, None));
        }
    };
    let dump_age = age(options.now, manifest.snapshot_at);
    result.figures.insert("age_seconds", dump_age.as_secs_f64());
    result.figures.insert("bytes", manifest.dump.bytes as f64);
    result.summary = format!(
        "newest dump {} ({}, snapshot {} ago)",
        manifest.dump.key,
        crate::progress::bytes(manifest.dump.bytes),
        crate::progress::duration(dump_age)
    );
    if dump_age > options.max_dump_age {
        result.problem(format!(
            "the newest dump is {} old (snapshot {}), more than the {} allowed: the daily backup has stopped; run \
             drillbook backup and find out why the schedule did not",
            crate::progress::duration(dump_age),
            at(manifest.snapshot_at),
            crate::progress::duration(options.max_dump_age)
        ));
    }
    match store.hash_object(&manifest.dump.key).await {
        Ok(read) if read.bytes != manifest.dump.bytes || read.sha256 != manifest.dump.sha256 => result.problem(format!(
            "{} is damaged: {} bytes with sha256 {}, its manifest says {} bytes with sha256 {}; restore the previous \
             backup (drillbook restore --backup <stamp>) and take a new one",
            manifest.dump.key, read.bytes, read.sha256, manifest.dump.bytes, manifest.dump.sha256
        )),
        Ok(_) => result.summary.push_str(", size and sha256 verified"),
        Err(StoreError::NotFound { .. }) => {
            result.problem(format!("{} vanished while being checked", manifest.dump.key))
        }
        Err(e) => return Err(e.into()),
    }
    Ok((result, Some(manifest.snapshot_at)))
}

/// Base backups: age of the newest, every tar's size, sampled hashes.
/// Returns the start LSN and timeline of the oldest (where WAL must begin).
async fn check_base_backups(
    store: &Store,
    options: &CheckOptions,
    sampled: &impl Fn(&str) -> bool,
) -> Result<(CheckResult, Option<(u32, u64)>), CheckError> {
    let mut result = CheckResult::new("base_backup");
    let backups = match list_base_backups(store).await {
        Ok(backups) => backups,
        Err(crate::basebackup::BaseBackupError::Store(e)) => return Err(e.into()),
        Err(e) => {
            result.problem(format!("the base backups cannot be read: {e}"));
            return Ok((result, None));
        }
    };
    result.figures.insert("count", backups.len() as f64);
    let Some(newest) = backups.iter().max_by_key(|b| b.end_time) else {
        result.summary = "no base backup under base/".to_owned();
        result.problem("no base backup: point-in-time recovery has nothing to start from; run drillbook basebackup");
        return Ok((result, None));
    };
    let newest_age = age(options.now, newest.end_time);
    result.figures.insert("age_seconds", newest_age.as_secs_f64());
    if newest_age > options.max_base_backup_age {
        result.problem(format!(
            "the newest base backup ({}) is {} old, more than the {} allowed: recovery replays all WAL since; take \
             one (drillbook basebackup)",
            newest.stamp,
            crate::progress::duration(newest_age),
            crate::progress::duration(options.max_base_backup_age)
        ));
    }
    let sizes: BTreeMap<String, u64> = store
        .list(crate::basebackup::BASE_PREFIX)
        .await?
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    let mut hashed = 0;
    for backup in &backups {
        match sizes.get(&backup.tar_key) {
            None => result.problem(format!(
                "base backup {}: its tar {} is missing; it cannot be restored",
                backup.stamp, backup.tar_key
            )),
            Some(&size) if size != backup.tar_bytes => result.problem(format!(
                "base backup {}: {} is {size} bytes, its manifest says {}",
                backup.stamp, backup.tar_key, backup.tar_bytes
            )),
            Some(_) if sampled(&backup.tar_key) => {
                hashed += 1;
                let read = store.hash_object(&backup.tar_key).await?;
                if read.sha256 != backup.tar_sha256 {
                    result.problem(format!(
                        "base backup {}: {} has sha256 {}, its manifest says {}: it is damaged",
                        backup.stamp, backup.tar_key, read.sha256, backup.tar_sha256
                    ));
                }
            }
            Some(_) => {}
        }
    }
    result.figures.insert("hashed", f64::from(hashed));
    result.summary = format!(
        "{} base backup(s), newest {} ({} ago); {hashed} tar(s) hashed this run",
        backups.len(),
        newest.stamp,
        crate::progress::duration(newest_age)
    );
    let oldest = backups.iter().min_by_key(|b| b.end_time).expect("not empty");
    let start = parse_lsn(&oldest.start_lsn).map(|lsn| (oldest.timeline, lsn));
    Ok((result, start))
}

/// A parsed archived WAL file name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum WalFile {
    Segment { timeline: u32, segno: u64 },
    History { timeline: u32 },
    Other,
}

pub(crate) fn parse_wal_name(name: &str) -> WalFile {
    let hex = |s: &str| u64::from_str_radix(s, 16).ok();
    if let Some(tli) = name.strip_suffix(".history") {
        return hex(tli).map_or(WalFile::Other, |t| WalFile::History { timeline: t as u32 });
    }
    if name.len() != 24 {
        return WalFile::Other;
    }
    let per_id = 0x1_0000_0000 / SEGMENT_BYTES;
    match (hex(&name[..8]), hex(&name[8..16]), hex(&name[16..])) {
        (Some(t), Some(log), Some(seg)) => WalFile::Segment {
            timeline: t as u32,
            segno: log * per_id + seg,
        },
        _ => WalFile::Other,
    }
}

pub(crate) fn segment_file_name(timeline: u32, segno: u64) -> String {
    crate::wal::segment_name(timeline, segno * SEGMENT_BYTES, SEGMENT_BYTES)
}

/// `(timeline, switch LSN)` rows of a history file: the timeline ran until
/// that LSN, where its child began.
pub(crate) fn parse_history(text: &str) -> Vec<(u32, u64)> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            Some((fields.next()?.parse().ok()?, parse_lsn(fields.next()?)?))
        })
        .collect()
}

/// The timeline segment `segno` must be read from, given the newest
/// timeline and its ancestry: the first ancestor whose switch point comes
/// after the whole segment, else the newest (a segment holding a switch
/// point is read from the child, which copies its first part).
fn timeline_of(segno: u64, newest: u32, ancestry: &[(u32, u64)]) -> u32 {
    ancestry
        .iter()
        .find(|(_, switch)| (segno + 1) * SEGMENT_BYTES <= *switch)
        .map_or(newest, |(timeline, _)| *timeline)
}

/// Continuity from the oldest base backup's start to the newest segment,
/// history files, and sampled content hashes.
async fn check_wal_archive(
    store: &Store,
    oldest_base_start: Option<(u32, u64)>,
    now: DateTime<Utc>,
    sampled: &impl Fn(&str) -> bool,
) -> Result<CheckResult, CheckError> {
    let mut result = CheckResult::new("wal_archive");
    let objects = store.list(WAL_PREFIX).await?;
    let mut segments: BTreeSet<(u32, u64)> = BTreeSet::new();
    let mut histories: BTreeSet<u32> = BTreeSet::new();
    for object in &objects {
        match parse_wal_name(object.key.rsplit('/').next().unwrap_or_default()) {
            WalFile::Segment { timeline, segno } => {
                segments.insert((timeline, segno));
            }
            WalFile::History { timeline } => {
                histories.insert(timeline);
            }
            WalFile::Other => {}
        }
    }
    result.figures.insert("segments", segments.len() as f64);
    let newest_modified = objects.iter().filter_map(|o| o.last_modified).max();
    if let Some(newest) = newest_modified {
        result
            .figures
            .insert("newest_age_seconds", age(now, newest).as_secs_f64());
    }
    let Some(&(newest_timeline, newest_segno)) = segments.iter().max_by_key(|(t, s)| (*s, *t)) else {
        result.summary = "no WAL under wal/".to_owned();
        result.problem(
            "the WAL archive is empty: point-in-time recovery cannot go past a base backup; set archive_command = \
             'drillbook wal-push %p' (archive_mode = on)",
        );
        return Ok(result);
    };

    // Every timeline after the first needs its history file.
    let timelines: BTreeSet<u32> = segments.iter().map(|(t, _)| *t).collect();
    for timeline in timelines.iter().filter(|t| **t > 1) {
        if !histories.contains(timeline) {
            result.problem(format!(
                "timeline {timeline} has segments but no {timeline:08X}.history: recovery cannot follow it; archive \
                 the history file from the server's pg_wal"
            ));
        }
    }
    let ancestry = if newest_timeline > 1 && histories.contains(&newest_timeline) {
        let key = format!("{WAL_PREFIX}{newest_timeline:08X}/{newest_timeline:08X}.history");
        match store.get_bytes(&key).await.map(|bytes| decode(&bytes)) {
            Ok(Ok(text)) => parse_history(&String::from_utf8_lossy(&text)),
            Ok(Err(reason)) => {
                result.problem(format!("{key} is corrupt ({reason})"));
                Vec::new()
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        Vec::new()
    };
    for (timeline, _) in &ancestry {
        if !timelines.contains(timeline) && !histories.contains(timeline) && *timeline > 1 {
            result.problem(format!(
                "timeline {newest_timeline}'s history names timeline {timeline}, of which the archive has nothing"
            ));
        }
    }

    // Continuity: every segment from the oldest base backup's start on.
    let first = oldest_base_start.map_or_else(
        || segments.iter().map(|(_, s)| *s).min().unwrap_or(newest_segno),
        |(_, lsn)| lsn / SEGMENT_BYTES,
    );
    let mut missing = Vec::new();
    for segno in first..=newest_segno {
        let timeline = timeline_of(segno, newest_timeline, &ancestry);
        if !segments.contains(&(timeline, segno)) {
            missing.push(segment_file_name(timeline, segno));
        }
    }
    result.figures.insert("missing", missing.len() as f64);
    if !missing.is_empty() {
        let listed: Vec<&str> = missing.iter().take(LISTED).map(String::as_str).collect();
        result.problem(format!(
            "{} segment(s) missing between the oldest base backup and the newest segment ({}{}): recovery stops at \
             the first gap; take a new base backup (drillbook basebackup) so the gap is no longer needed",
            missing.len(),
            listed.join(", "),
            if missing.len() > LISTED { ", ..." } else { "" }
        ));
    }

    // Content: sampled objects decode to the bytes their header names.
    let mut hashed = 0u64;
    let mut corrupt = Vec::new();
    for object in objects.iter().filter(|o| sampled(&o.key)) {
        hashed += 1;
        let stored = match store.get_bytes(&object.key).await {
            Ok(bytes) => bytes,
            Err(StoreError::NotFound { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        if let Err(reason) = decode(&stored) {
            corrupt.push(format!("{} ({reason})", object.key));
        }
    }
    result.figures.insert("hashed", hashed as f64);
    result.figures.insert("corrupt", corrupt.len() as f64);
    if !corrupt.is_empty() {
        result.problem(format!(
            "{} archived WAL object(s) are damaged: {}; recovery stops there. Restore them from another copy, or \
             take a new base backup past them",
            corrupt.len(),
            corrupt.iter().take(LISTED).cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    result.summary = format!(
        "{} segment(s) on {} timeline(s), {} to {}; {hashed} object(s) hashed this run",
        segments.len(),
        timelines.len(),
        segment_file_name(timeline_of(first, newest_timeline, &ancestry), first),
        segment_file_name(newest_timeline, newest_segno),
    );
    Ok(result)
}

/// The server archives here, recently, without failing since.
async fn check_archive_lag(store: &Store, database: &ConnInfo, now: DateTime<Utc>) -> Result<CheckResult, CheckError> {
    use sqlx::Connection as _;
    let mut result = CheckResult::new("archive_lag");
    let failed = |source| CheckError::Database {
        database: database.redacted_url(),
        source,
    };
    let mut conn = sqlx::PgConnection::connect_with(&database.connect_options())
        .await
        .map_err(failed)?;
    type Status = (
        String,
        String,
        Option<String>,
        Option<DateTime<Utc>>,
        Option<String>,
        Option<DateTime<Utc>>,
        String,
    );
    let (archive_mode, timeout, last_wal, last_time, failed_wal, failed_time, current_wal): Status = sqlx::query_as(
        "SELECT current_setting('archive_mode'), current_setting('archive_timeout'), last_archived_wal, \
         last_archived_time, last_failed_wal, last_failed_time, \
         CASE WHEN pg_is_in_recovery() THEN '' ELSE pg_walfile_name(pg_current_wal_lsn()) END \
         FROM pg_stat_archiver",
    )
    .fetch_one(&mut conn)
    .await
    .map_err(failed)?;
    let _ = conn.close().await;

    let timeout = parse_pg_seconds(&timeout);
    if archive_mode == "off" {
        result.summary = format!("{}: archive_mode off", database.redacted_url());
        result.problem("the server does not archive WAL (archive_mode = off): set archive_mode = on and archive_command = 'drillbook wal-push %p'");
        return Ok(result);
    }
    let Some(last_wal) = last_wal else {
        result.summary = format!("{}: nothing archived yet", database.redacted_url());
        result
            .problem("the server has not archived any WAL since it started; check archive_command and the server log");
        return Ok(result);
    };
    let since = last_time.map(|t| age(now, t));
    if let Some(since) = since {
        result.figures.insert("age_seconds", since.as_secs_f64());
    }
    let behind = match (parse_wal_name(&last_wal), parse_wal_name(&current_wal)) {
        (WalFile::Segment { segno: done, .. }, WalFile::Segment { segno: current, .. }) => current.saturating_sub(done),
        _ => 0,
    };
    result.figures.insert("segments_behind", behind as f64);
    result.summary = format!(
        "{} archived {last_wal} {} ago (archive_timeout {}), {behind} segment(s) behind",
        database.redacted_url(),
        since.map_or_else(|| "?".to_owned(), crate::progress::duration),
        timeout.map_or_else(|| "off".to_owned(), crate::progress::duration)
    );
    if let (Some(failed_wal), Some(failed_time)) = (&failed_wal, failed_time)
        && last_time.is_none_or(|ok| failed_time > ok)
    {
        result.problem(format!(
            "archiving {failed_wal} failed at {} and has not succeeded since: WAL piles up in pg_wal and recent \
             changes are not recoverable; read the server log for archive_command's error",
            at(failed_time)
        ));
    }
    if let (Some(since), Some(timeout)) = (since, timeout)
        && behind > 1
        && since > timeout * 2 + Duration::from_secs(60)
    {
        result.problem(format!(
            "the last archived segment is {} old and {behind} segments behind the server, more than two \
             archive_timeouts ({}): archiving is stuck or too slow",
            crate::progress::duration(since),
            crate::progress::duration(timeout)
        ));
    }
    let archived = crate::wal::key_for(&last_wal).ok();
    if let Some(key) = archived
        && store.size_of(&key).await?.is_none()
    {
        result.problem(format!(
            "the server reports {last_wal} archived, but {key} is not in {}: it archives somewhere else; point \
             archive_command's BACKUP_BUCKET at this bucket",
            store.config().location()
        ));
    }
    Ok(result)
}

/// `60s`, `5min`, `0` as `SHOW` prints durations; `None` for 0 (off).
fn parse_pg_seconds(text: &str) -> Option<Duration> {
    let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
    let n: u64 = digits.parse().ok()?;
    let unit = text[digits.len()..].trim();
    let secs = match unit {
        "" | "s" => n,
        "ms" => return (n > 0).then(|| Duration::from_millis(n)),
        "min" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return None,
    };
    (secs > 0).then(|| Duration::from_secs(secs))
}

/// An anchor exists and is not older than the newest dump.
async fn check_anchors(store: &Store, newest_dump_at: Option<DateTime<Utc>>) -> Result<CheckResult, CheckError> {
    let mut result = CheckResult::new("anchors");
    let newest_key = store
        .list(ANCHORS)
        .await?
        .into_iter()
        .map(|o| o.key)
        .filter(|k| k.ends_with(".json"))
        .max();
    let Some(key) = newest_key else {
        result.summary = "no anchor under anchors/".to_owned();
        result.problem(
            "no anchor under anchors/: a tampered audit chain that was re-hashed end to end goes unnoticed; record \
             one after each backup (drillbook anchor)",
        );
        return Ok(result);
    };
    let anchor: Anchor = match serde_json::from_slice(&store.get_bytes(&key).await?) {
        Ok(anchor) => anchor,
        Err(e) => {
            result.problem(format!("{key} is not an anchor ({e})"));
            return Ok(result);
        }
    };
    result.summary = format!("newest anchor {key} ({} rows)", anchor.rows);
    if let Some(dump_at) = newest_dump_at
        && anchor.recorded_at < dump_at
    {
        result.problem(format!(
            "the newest anchor ({}) is older than the newest dump ({}): record one (drillbook anchor)",
            at(anchor.recorded_at),
            at(dump_at)
        ));
    }
    Ok(result)
}

/// The report in node_exporter's textfile format.
pub fn prometheus_text(report: &CheckReport) -> String {
    let mut out = String::new();
    out.push_str("# HELP drillbook_check_ok 1 when the backup check passed, 0 when it found a problem.\n");
    out.push_str("# TYPE drillbook_check_ok gauge\n");
    for check in &report.checks {
        out.push_str(&format!(
            "drillbook_check_ok{{check=\"{}\"}} {}\n",
            check.check,
            u8::from(check.ok)
        ));
    }
    let figures: BTreeSet<&str> = report.checks.iter().flat_map(|c| c.figures.keys().copied()).collect();
    for figure in figures {
        out.push_str(&format!("# TYPE drillbook_check_{figure} gauge\n"));
        for check in &report.checks {
            if let Some(value) = check.figures.get(figure) {
                out.push_str(&format!(
                    "drillbook_check_{figure}{{check=\"{}\"}} {value}\n",
                    check.check
                ));
            }
        }
    }
    out.push_str("# TYPE drillbook_check_timestamp_seconds gauge\n");
    out.push_str(&format!(
        "drillbook_check_timestamp_seconds {}\n",
        report.checked_at.timestamp()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_names_parse_into_timeline_and_segment() {
        assert_eq!(
            parse_wal_name("000000020000000100000003"),
            WalFile::Segment {
                timeline: 2,
                segno: 256 + 3
            }
        );
        assert_eq!(parse_wal_name("00000002.history"), WalFile::History { timeline: 2 });
        assert_eq!(
            parse_wal_name("000000010000000000000002.00000028.backup"),
            WalFile::Other
        );
        assert_eq!(segment_file_name(2, 259), "000000020000000100000003");
    }

    #[test]
    fn segments_are_read_from_the_timeline_the_history_says() {
        // Timeline 1 ran until 0/5000100 (inside segment 5): segments 0..=4
        // come from timeline 1, 5 on from timeline 2.
        let ancestry = parse_history("1\t0/5000100\tbefore 2026-11-30 12:00:00+00\n");
        assert_eq!(ancestry, vec![(1, 0x500_0100)]);
        assert_eq!(timeline_of(4, 2, &ancestry), 1);
        assert_eq!(timeline_of(5, 2, &ancestry), 2);
        assert_eq!(timeline_of(9, 2, &[]), 2);
    }

    #[test]
    fn each_object_is_sampled_once_every_n_runs() {
        let keys: Vec<String> = (0..200).map(|i| format!("wal/00000001/{i:024X}")).collect();
        let runs = 5;
        let mut seen = BTreeMap::new();
        for run in 0..u64::from(runs) {
            for key in &keys {
                if slot(key, runs) == run {
                    *seen.entry(key.clone()).or_insert(0) += 1;
                }
            }
        }
        assert!(
            keys.iter().all(|k| seen.get(k) == Some(&1)),
            "every key exactly once per cycle"
        );
        let first_run = keys.iter().filter(|k| slot(k, runs) == 0).count();
        assert!(
            (20..=60).contains(&first_run),
            "slots spread the work: {first_run} of 200 in one run"
        );
    }

    #[test]
    fn archive_timeouts_read_as_show_prints_them() {
        assert_eq!(parse_pg_seconds("60s"), Some(Duration::from_secs(60)));
        assert_eq!(parse_pg_seconds("5min"), Some(Duration::from_secs(300)));
        assert_eq!(parse_pg_seconds("0"), None);
    }

    #[test]
    fn prometheus_text_has_an_ok_gauge_per_check_and_the_figures() {
        let mut failed = CheckResult::new("wal_archive");
        failed.problem("gap");
        failed.figures.insert("missing", 2.0);
        let mut passed = CheckResult::new("daily_dump");
        passed.figures.insert("age_seconds", 3600.0);
        let report = CheckReport {
            location: "s3://b/".into(),
            checked_at: DateTime::parse_from_rfc3339("2026-11-30T12:00:00Z").unwrap().to_utc(),
            run: 0,
            sample_runs: 1,
            ok: false,
            checks: vec![passed, failed],
        };
        let text = prometheus_text(&report);
        assert!(text.contains("drillbook_check_ok{check=\"daily_dump\"} 1\n"), "{text}");
        assert!(text.contains("drillbook_check_ok{check=\"wal_archive\"} 0\n"), "{text}");
        assert!(
            text.contains("drillbook_check_missing{check=\"wal_archive\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("drillbook_check_age_seconds{check=\"daily_dump\"} 3600\n"),
            "{text}"
        );
        assert!(
            text.contains("drillbook_check_timestamp_seconds 1796040000\n"),
            "{text}"
        );
    }
}
