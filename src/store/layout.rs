//! Object keys, compatible with the playbook's own shell commands.
//!
//! ```text
//! daily/<stamp>/<db>.dump            pg_dump -Fc: the only objects written under daily/
//! manifests/<stamp>/manifest.json    what the backup holds (sha256, counts, chain head)
//! manifests/<stamp>/roles.sql        cluster roles the dump's policies refer to
//! incoming/<stamp>/owner             which process is writing this backup
//! incoming/<stamp>/upload            the dump's unfinished multipart upload (key, id)
//! incoming/<stamp>/<db>.dump         (older versions) the dump while it streamed in
//! ```
//!
//! The playbook (3.2 step 1) finds the newest dump with
//! `aws s3 ls $BACKUP_BUCKET/daily/ --recursive | sort | tail -1`, which sorts
//! on LastModified. Invariant, whatever is killed when: the newest object
//! under `daily/` is a complete dump whose manifest already exists. So
//! nothing but finished dumps is ever written under `daily/` (a roles file or
//! manifest there would sort last whenever a backup died before its dump
//! landed), and the manifest is written before the dump appears. The dump,
//! whose SHA-256 the manifest needs, streams straight to its `daily/` key as
//! a multipart upload, which no listing shows and no GET reads until it is
//! completed ([`crate::store::multipart`]): the manifest is written after the
//! last part, and the completion publishes the dump, whole, in one step.
//! A dead backup's upload is aborted by the next backup's sweep, through the
//! id recorded under `incoming/`.
//!
//! Backups written before this layout kept their manifest and roles under
//! `daily/<stamp>/`; readers still find them there ([`legacy_manifest_key`]).
//! Backups of the previous version streamed the dump to `incoming/` and
//! copied it into `daily/`; their leftovers are swept the same way.
//!
//! Stamps are UTC with milliseconds, `20261128T233506.123Z`: they sort as
//! text in time order.

use chrono::{DateTime, NaiveDateTime, Utc};

pub const DAILY: &str = "daily/";
pub const MANIFESTS: &str = "manifests/";
pub const INCOMING: &str = "incoming/";
const STAMP_FORMAT: &str = "%Y%m%dT%H%M%S%.3fZ";

/// The sortable stamp naming a backup taken at `at`.
pub fn stamp(at: DateTime<Utc>) -> String {
    at.format(STAMP_FORMAT).to_string()
}

/// Reads a stamp back; `None` when `text` is not one.
pub fn parse_stamp(text: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(text, STAMP_FORMAT)
        .ok()
        .map(|t| t.and_utc())
}

pub fn dump_key(stamp: &str, database: &str) -> String {
    format!("{DAILY}{stamp}/{database}.dump")
}

pub fn manifest_key(stamp: &str) -> String {
    format!("{MANIFESTS}{stamp}/manifest.json")
}

/// Where backups written before the current layout kept their manifest.
pub fn legacy_manifest_key(stamp: &str) -> String {
    format!("{DAILY}{stamp}/manifest.json")
}

pub fn roles_key(stamp: &str) -> String {
    format!("{MANIFESTS}{stamp}/roles.sql")
}

pub fn incoming_key(stamp: &str, database: &str) -> String {
    format!("{INCOMING}{stamp}/{database}.dump")
}

/// Where a backup records its dump's unfinished multipart upload.
pub fn incoming_upload_key(stamp: &str) -> String {
    format!("{INCOMING}{stamp}/upload")
}

pub fn incoming_owner_key(stamp: &str) -> String {
    format!("{INCOMING}{stamp}/owner")
}

/// The stamp of a `daily/<stamp>/<db>.dump` key.
pub fn stamp_of_dump(key: &str) -> Option<&str> {
    let (stamp, file) = key.strip_prefix(DAILY)?.split_once('/')?;
    let is_dump = file
        .strip_suffix(".dump")
        .is_some_and(|db| !db.is_empty() && !db.contains('/'));
    (is_dump && parse_stamp(stamp).is_some()).then_some(stamp)
}

/// The stamp of any key under `prefix` (`incoming/`, `manifests/`):
/// `<prefix><stamp>/...`.
pub fn stamp_under<'k>(prefix: &str, key: &'k str) -> Option<&'k str> {
    let (stamp, _) = key.strip_prefix(prefix)?.split_once('/')?;
    parse_stamp(stamp).map(|_| stamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_sort_in_time_order_and_round_trip() {
        let a: DateTime<Utc> = "2026-01-09T23:59:59.999Z".parse().unwrap();
        let b: DateTime<Utc> = "2026-01-10T00:00:00.001Z".parse().unwrap();
        assert!(stamp(a) < stamp(b));
        assert_eq!(parse_stamp(&stamp(a)), Some(a));
        assert_eq!(stamp(a), "20260109T235959.999Z");
    }

    #[test]
    fn keys_name_their_stamp() {
        let stamp = "20260109T235959.999Z";
        assert_eq!(stamp_of_dump(&dump_key(stamp, "db")), Some(stamp));
        assert_eq!(stamp_of_dump(&legacy_manifest_key(stamp)), None);
        assert_eq!(stamp_of_dump("daily/20260109T235959.999Z/roles.sql"), None);
        assert_eq!(stamp_of_dump("daily/notastamp/db.dump"), None);
        assert_eq!(stamp_under(MANIFESTS, &manifest_key(stamp)), Some(stamp));
        assert_eq!(stamp_under(INCOMING, &incoming_owner_key(stamp)), Some(stamp));
        assert_eq!(stamp_under(INCOMING, &manifest_key(stamp)), None);
    }

    #[test]
    fn nothing_but_dumps_is_written_under_daily() {
        let stamp = "20260109T235959.999Z";
        for key in [
            manifest_key(stamp),
            roles_key(stamp),
            incoming_key(stamp, "db"),
            incoming_owner_key(stamp),
            incoming_upload_key(stamp),
        ] {
            assert!(
                !key.starts_with(DAILY),
                "{key} would sort into the playbook's daily/ listing"
            );
        }
        assert!(dump_key(stamp, "db").starts_with(DAILY));
    }
}
