//! Object keys, compatible with the playbook's own shell commands.
//!
//! ```text
//! daily/<stamp>/roles.sql       cluster roles the dump's policies refer to
//! daily/<stamp>/manifest.json   what the backup holds (sha256, counts, chain head)
//! daily/<stamp>/<db>.dump       pg_dump -Fc, always the LAST object written
//! incoming/<stamp>/<db>.dump    the dump while it streams in; removed after
//! ```
//!
//! The playbook (3.2 step 1) finds the newest dump with
//! `aws s3 ls $BACKUP_BUCKET/daily/ --recursive | sort | tail -1`, which sorts
//! on LastModified. So the dump must be written after its manifest, yet the
//! manifest needs the dump's SHA-256. The dump therefore streams to
//! `incoming/` (hashed on the way), the manifest is written, and only then is
//! the dump copied server-side into `daily/`: the newest object under `daily/`
//! is a complete, described dump.
//!
//! Stamps are UTC with milliseconds, `20261128T233506.123Z`: they sort as
//! text in time order.

use chrono::{DateTime, NaiveDateTime, Utc};

pub const DAILY: &str = "daily/";
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
    format!("{DAILY}{stamp}/manifest.json")
}

pub fn roles_key(stamp: &str) -> String {
    format!("{DAILY}{stamp}/roles.sql")
}

pub fn incoming_key(stamp: &str, database: &str) -> String {
    format!("{INCOMING}{stamp}/{database}.dump")
}

/// The stamp of a `daily/<stamp>/manifest.json` key.
pub fn stamp_of_manifest(key: &str) -> Option<&str> {
    let stamp = key.strip_prefix(DAILY)?.strip_suffix("/manifest.json")?;
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
    fn manifest_keys_name_their_stamp() {
        let key = manifest_key("20260109T235959.999Z");
        assert_eq!(stamp_of_manifest(&key), Some("20260109T235959.999Z"));
        assert_eq!(stamp_of_manifest("daily/notastamp/manifest.json"), None);
        assert_eq!(stamp_of_manifest(&dump_key("20260109T235959.999Z", "db")), None);
    }
}
