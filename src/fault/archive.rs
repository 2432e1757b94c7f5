//! Incidents in the backups themselves: an archived WAL segment deleted, an
//! object's bytes flipped in place, the daily backup gone stale. What
//! `drillbook check` must catch (issue 13), caused on purpose.
//!
//! Every operator takes a [`DisposableBucket`]: proof that the bucket is
//! one the drill's own environment created and throws away. Only two
//! things mint it: [`DisposableBucket::archiving`] (the bucket of an
//! [`ArchivingEnvironment`], embedded or containers, always the drill's
//! own) and [`DisposableBucket::owned_by`] (an [`Environment`]'s bucket,
//! refused on staging, whose bucket holds real backups). A location typed
//! by a user or staging's bucket cannot get one, so no operator can touch
//! them; and the token carries its own client, so an operator cannot be
//! pointed at another bucket.
//!
//! Each operator returns an [`ArchiveFault`]: what it changed, and how to
//! put it back ([`ArchiveFault::undo`]), so a drill can inject the faults
//! one at a time and judge `check` on each alone.
//!
//! # Caveats
//!
//! The operators rewrite objects in place, which the bucket's own rule
//! ("every key is written once") forbids to drillbook's commands: that is
//! the damage. Under S3 Object Lock they would fail, as they should.

use std::time::Duration;

use crate::env::{ArchivingEnvironment, Environment};
use crate::restore::{BackupChoice, find_backup};
use crate::store::manifest::BackupManifest;
use crate::store::{S3Config, Store, StoreError, layout};
use crate::wal::WAL_PREFIX;

use super::{Fault, FaultError, Result};

/// The top-level prefixes of the backups `check` reads; an operator damages
/// nothing else (not the drill history, not `check`'s own state).
const ARCHIVE_PREFIXES: &[&str] = &[layout::DAILY, layout::MANIFESTS, "base/", WAL_PREFIX, "anchors/"];

/// Proof that a bucket may be damaged: see the module docs.
#[derive(Debug, Clone)]
pub struct DisposableBucket {
    store: Store,
}

impl DisposableBucket {
    /// The bucket of an archiving environment: its own embedded or
    /// container S3 (staging has no archiving environment).
    pub fn archiving(env: &ArchivingEnvironment) -> Self {
        Self {
            store: env.store().clone(),
        }
    }

    /// The bucket of a disposable backend's environment (embedded,
    /// containers: its own S3 server).
    ///
    /// # Errors
    /// [`FaultError::NotDisposableBucket`] on staging: its bucket holds the
    /// real backups, which a drill only ever reads.
    pub fn owned_by(env: &Environment) -> Result<Self> {
        if env.is_disposable() {
            Ok(Self {
                store: env.store().clone(),
            })
        } else {
            Err(FaultError::NotDisposableBucket {
                location: env.store().config().location(),
                reason: format!(
                    "it is the {} backend's bucket, not one the drill created",
                    env.backend().name()
                ),
            })
        }
    }

    /// The bucket this token allows damaging.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn location(&self) -> String {
        self.store.config().location()
    }

    /// `key`, when it is a backup object this token's operators may touch.
    fn archive_key<'k>(&self, action: &'static str, key: &'k str) -> Result<&'k str> {
        if ARCHIVE_PREFIXES.iter().any(|prefix| key.starts_with(prefix)) && !key.contains("..") {
            Ok(key)
        } else {
            Err(FaultError::NotInArchive {
                action,
                location: self.location(),
                key: key.to_owned(),
                reason: format!("it is not a backup object (under {})", ARCHIVE_PREFIXES.join(", ")),
            })
        }
    }
}

/// One step that puts back what an operator changed.
#[derive(Debug, Clone)]
enum Undo {
    Put { key: String, bytes: Vec<u8> },
    Copy { from: String, to: String, size: u64 },
    Delete { key: String },
}

/// What an archive operator did, and how to undo it.
#[derive(Debug, Clone)]
#[must_use = "an archive fault stays in the bucket until undone or the bucket is removed"]
pub struct ArchiveFault {
    pub fault: Fault,
    /// The objects changed, deleted or written.
    pub keys: Vec<String>,
    /// One line for the drill's timeline.
    pub description: String,
    /// The bucket it was injected into.
    target: S3Config,
    undo: Vec<Undo>,
}

impl ArchiveFault {
    /// Puts the bucket back as it was before the fault.
    ///
    /// # Errors
    /// [`FaultError::NotDisposableBucket`] when `bucket` is not the one the
    /// fault was injected into; [`FaultError::Store`] when S3 fails.
    pub async fn undo(self, bucket: &DisposableBucket) -> Result<()> {
        // Same bucket on the same server: staging's bucket may have the same name.
        if bucket.store.config() != &self.target {
            return Err(FaultError::NotDisposableBucket {
                location: bucket.location(),
                reason: format!("the fault was injected into {}", self.target.location()),
            });
        }
        let store = bucket.store();
        for step in self.undo {
            match step {
                Undo::Put { key, bytes } => store.put_bytes(&key, bytes, "application/octet-stream").await?,
                Undo::Copy { from, to, size } => store.copy(&from, &to, size).await?,
                Undo::Delete { key } => store.delete(&key).await?,
            }
        }
        Ok(())
    }
}

/// Whether `key` names an archived WAL segment: `wal/<timeline>/<24 hex digits>`.
fn is_wal_segment(key: &str) -> bool {
    let Some(rest) = key.strip_prefix(WAL_PREFIX) else {
        return false;
    };
    let Some((timeline, name)) = rest.split_once('/') else {
        return false;
    };
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    hex(timeline, 8) && hex(name, 24) && name.starts_with(timeline)
}

/// The archived WAL segments of `bucket`, oldest first.
///
/// # Errors
/// [`FaultError::Store`] when the bucket cannot be listed.
pub async fn archived_segments(bucket: &DisposableBucket) -> Result<Vec<String>> {
    let mut keys: Vec<String> = bucket
        .store()
        .list(WAL_PREFIX)
        .await?
        .into_iter()
        .map(|o| o.key)
        .filter(|k| is_wal_segment(k))
        .collect();
    keys.sort_by_key(|key| segment_order(key));
    Ok(keys)
}

/// `(segment number, timeline)` of a segment key: archive order.
fn segment_order(key: &str) -> (String, String) {
    let name = key.rsplit('/').next().unwrap_or_default();
    (
        name.get(8..).unwrap_or_default().to_owned(),
        name.get(..8).unwrap_or_default().to_owned(),
    )
}

/// Deletes one archived WAL segment, as a lifecycle rule or a careless
/// cleanup would: point-in-time recovery then stops at the gap.
///
/// # Errors
/// [`FaultError::NotInArchive`] when `key` is not an archived segment
/// (`wal/<timeline>/<segment>`) or is not in the bucket; nothing is touched.
pub async fn delete_archived_wal_segment(bucket: &DisposableBucket, key: &str) -> Result<ArchiveFault> {
    const ACTION: &str = "delete the WAL segment";
    let key = bucket.archive_key(ACTION, key)?;
    if !is_wal_segment(key) {
        return Err(FaultError::NotInArchive {
            action: ACTION,
            location: bucket.location(),
            key: key.to_owned(),
            reason: "it is not an archived WAL segment (wal/<timeline>/<24 hex digits>)".to_owned(),
        });
    }
    let original = read(bucket, ACTION, key).await?;
    bucket.store().delete(key).await?;
    Ok(ArchiveFault {
        fault: Fault::DeleteWalSegment,
        keys: vec![key.to_owned()],
        description: format!("archived WAL segment {key} deleted"),
        target: bucket.store.config().clone(),
        undo: vec![Undo::Put {
            key: key.to_owned(),
            bytes: original,
        }],
    })
}

/// Flips `len` bytes of the object at `key` from `offset` on (XOR `0xA5`),
/// in place, as bit rot or a bad copy would: its size is unchanged, its
/// SHA-256 is not.
///
/// # Errors
/// [`FaultError::NotInArchive`] when `key` is not a backup object, is not
/// in the bucket, or is shorter than `offset + len`; nothing is touched.
pub async fn damage_object(bucket: &DisposableBucket, key: &str, offset: usize, len: usize) -> Result<ArchiveFault> {
    const ACTION: &str = "damage";
    let key = bucket.archive_key(ACTION, key)?;
    let original = read(bucket, ACTION, key).await?;
    let damaged = flip(&original, offset, len).ok_or_else(|| FaultError::NotInArchive {
        action: ACTION,
        location: bucket.location(),
        key: key.to_owned(),
        reason: format!("it is {} bytes, shorter than {offset} + {len}", original.len()),
    })?;
    bucket
        .store()
        .put_bytes(key, damaged, "application/octet-stream")
        .await?;
    Ok(ArchiveFault {
        fault: Fault::DamageObject,
        keys: vec![key.to_owned()],
        description: format!("{len} byte(s) of {key} flipped at offset {offset}"),
        target: bucket.store.config().clone(),
        undo: vec![Undo::Put {
            key: key.to_owned(),
            bytes: original,
        }],
    })
}

/// `bytes` with `len` bytes from `offset` XORed with `0xA5`; `None` when
/// that range is not inside `bytes` (or is empty).
fn flip(bytes: &[u8], offset: usize, len: usize) -> Option<Vec<u8>> {
    let end = offset.checked_add(len)?;
    if len == 0 || end > bytes.len() {
        return None;
    }
    let mut damaged = bytes.to_vec();
    for b in &mut damaged[offset..end] {
        *b ^= 0xA5;
    }
    Some(damaged)
}

/// Makes the newest daily backup look `by` older, as if the backup
/// schedule had stopped `by` ago and nothing had run since: the backup is
/// moved to the stamp `by` earlier (dump, roles and manifest under their
/// new keys, the manifest's `stamp`, `snapshot_at` and object keys
/// re-dated with it) and its old keys removed. Its content, sizes and
/// hashes are unchanged, so only its age is wrong.
///
/// # Caveats
/// Only the newest backup moves: an older one that is younger than the
/// re-dated time becomes the newest. A bucket with a single backup (a
/// drill's) has none.
///
/// # Errors
/// [`FaultError::NoBackup`] without a backup with a manifest;
/// [`FaultError::NotInArchive`] for a backup in the old layout (its
/// manifest under `daily/`); [`FaultError::Store`] when S3 fails.
pub async fn age_newest_backup(bucket: &DisposableBucket, by: Duration) -> Result<ArchiveFault> {
    const ACTION: &str = "age the backup";
    let store = bucket.store();
    let manifest = find_backup(store, &BackupChoice::Newest)
        .await
        .map_err(|e| FaultError::NoBackup(Box::new(e)))?;
    let old_stamp = manifest.stamp.clone();
    let old_manifest_key = layout::manifest_key(&old_stamp);
    let old_manifest = read(bucket, ACTION, &old_manifest_key).await?;
    let aged = aged(&manifest, by).ok_or_else(|| FaultError::NotInArchive {
        action: ACTION,
        location: bucket.location(),
        key: manifest.dump.key.clone(),
        reason: format!("its stamp {old_stamp:?} cannot be moved back by {by:?}"),
    })?;
    let new_manifest_key = layout::manifest_key(&aged.stamp);
    let mut keys = vec![aged.dump.key.clone(), new_manifest_key.clone()];
    let mut undo = Vec::new();
    // The new backup complete before the old one goes: the newest dump
    // under daily/ always has its manifest.
    store
        .put_bytes(&new_manifest_key, aged.to_json(), "application/json")
        .await?;
    if let (Some(old), Some(new)) = (&manifest.roles, &aged.roles) {
        store.copy(&old.key, &new.key, old.bytes).await?;
        keys.push(new.key.clone());
        undo.push(Undo::Copy {
            from: new.key.clone(),
            to: old.key.clone(),
            size: old.bytes,
        });
    }
    store
        .copy(&manifest.dump.key, &aged.dump.key, manifest.dump.bytes)
        .await?;
    undo.push(Undo::Copy {
        from: aged.dump.key.clone(),
        to: manifest.dump.key.clone(),
        size: manifest.dump.bytes,
    });
    undo.push(Undo::Put {
        key: old_manifest_key.clone(),
        bytes: old_manifest,
    });
    store.delete(&manifest.dump.key).await?;
    store.delete(&old_manifest_key).await?;
    if let Some(old) = &manifest.roles {
        store.delete(&old.key).await?;
    }
    undo.extend(keys.iter().map(|key| Undo::Delete { key: key.clone() }));
    Ok(ArchiveFault {
        fault: Fault::AgeBackup,
        keys,
        description: format!(
            "newest backup {old_stamp} re-dated {} earlier, to {}: the daily backup stopped then",
            crate::progress::duration(by),
            aged.stamp
        ),
        target: bucket.store.config().clone(),
        undo,
    })
}

/// `manifest` as if its backup had been taken `by` earlier.
fn aged(manifest: &BackupManifest, by: Duration) -> Option<BackupManifest> {
    let by = chrono::Duration::from_std(by).ok()?;
    let taken = layout::parse_stamp(&manifest.stamp)?.checked_sub_signed(by)?;
    let stamp = layout::stamp(taken);
    let mut aged = manifest.clone();
    aged.snapshot_at = manifest.snapshot_at.checked_sub_signed(by)?;
    aged.dump.key = layout::dump_key(&stamp, &manifest.database);
    if let Some(roles) = &mut aged.roles {
        roles.key = layout::roles_key(&stamp);
    }
    aged.stamp = stamp;
    Some(aged)
}

/// The bytes at `key`, or why the operator cannot act on it.
async fn read(bucket: &DisposableBucket, action: &'static str, key: &str) -> Result<Vec<u8>> {
    match bucket.store().get_bytes(key).await {
        Ok(bytes) => Ok(bytes),
        Err(StoreError::NotFound { .. }) => Err(FaultError::NotInArchive {
            action,
            location: bucket.location(),
            key: key.to_owned(),
            reason: "no such object".to_owned(),
        }),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_archived_segments_count_as_segments() {
        assert!(is_wal_segment("wal/00000001/000000010000000000000003"));
        assert!(is_wal_segment("wal/00000002/0000000200000001000000FF"));
        for not in [
            "wal/00000001/00000001.history",
            "wal/00000001/000000010000000000000002.00000028.backup",
            "wal/00000001/000000010000000000000003.partial",
            "wal/00000002/000000010000000000000003",
            "daily/20261128T233506.123Z/immoflowme.dump",
            "wal/000000010000000000000003",
            "wal/00000001/../00000001/000000010000000000000003",
        ] {
            assert!(!is_wal_segment(not), "{not}");
        }
    }

    #[test]
    fn segments_sort_in_archive_order_across_timelines() {
        let mut keys = vec![
            "wal/00000002/000000020000000000000005".to_owned(),
            "wal/00000001/000000010000000000000004".to_owned(),
            "wal/00000001/000000010000000000000010".to_owned(),
        ];
        keys.sort_by_key(|key| segment_order(key));
        assert_eq!(
            keys,
            [
                "wal/00000001/000000010000000000000004",
                "wal/00000002/000000020000000000000005",
                "wal/00000001/000000010000000000000010"
            ]
        );
    }

    #[test]
    fn flip_changes_exactly_the_range_asked_and_refuses_outside() {
        let original: Vec<u8> = (0..=255).collect();
        let damaged = flip(&original, 100, 4).unwrap();
        for (i, (before, after)) in original.iter().zip(&damaged).enumerate() {
            let expected = if (100..104).contains(&i) {
                before ^ 0xA5
            } else {
                *before
            };
            assert_eq!(*after, expected, "byte {i}");
        }
        assert!(flip(&original, 254, 4).is_none(), "past the end");
        assert!(flip(&original, 0, 0).is_none(), "nothing to flip");
        assert!(flip(&original, usize::MAX, 2).is_none(), "overflow");
    }

    #[test]
    fn an_aged_manifest_moves_stamp_snapshot_and_keys_together() {
        let taken = layout::parse_stamp("20261128T233506.123Z").unwrap();
        let manifest = BackupManifest {
            format: 1,
            stamp: "20261128T233506.123Z".to_owned(),
            snapshot_at: taken,
            database: "immoflowme".to_owned(),
            dump: crate::store::manifest::ObjectRef {
                key: layout::dump_key("20261128T233506.123Z", "immoflowme"),
                bytes: 10,
                sha256: "ab".to_owned(),
            },
            roles: Some(crate::store::manifest::ObjectRef {
                key: layout::roles_key("20261128T233506.123Z"),
                bytes: 3,
                sha256: "cd".to_owned(),
            }),
            server_version: "17".to_owned(),
            pg_dump_version: "17".to_owned(),
            tables: Default::default(),
            audit_chain_head: None,
            anchor: None,
            grants: None,
        };
        let aged = aged(&manifest, Duration::from_secs(30 * 3600)).unwrap();
        assert_eq!(aged.stamp, "20261127T173506.123Z");
        assert_eq!(aged.snapshot_at, taken - chrono::Duration::hours(30));
        assert_eq!(aged.dump.key, "daily/20261127T173506.123Z/immoflowme.dump");
        assert_eq!(aged.roles.unwrap().key, "manifests/20261127T173506.123Z/roles.sql");
        assert_eq!(
            (aged.dump.bytes, aged.dump.sha256.as_str()),
            (10, "ab"),
            "content unchanged"
        );
    }
}
