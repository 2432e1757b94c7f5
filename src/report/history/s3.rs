//! The S3 history store: one JSON object per record under
//! `drills/history/<YYYY-MM>/` of a [`Store`]'s prefix (S3 has no append).

use super::{History, HistoryError, HistoryRecord, Result};
use crate::report::month::Month;
use crate::store::Store;

/// Key prefix of the S3 history store (relative to the store's prefix).
pub const S3_PREFIX: &str = "drills/history/";

/// Writes `record` as its own object.
pub(super) async fn put(store: &Store, record: &HistoryRecord) -> Result<()> {
    let key = s3_key(record);
    let bytes = serde_json::to_vec_pretty(record).expect("a record always serializes");
    store
        .put_bytes(&key, bytes, "application/json")
        .await
        .map_err(|source| HistoryError::PutObject { key, source })
}

/// `drills/history/<YYYY-MM>/<stamp>_<drill>_<12 random hex digits>.json`.
///
/// The random suffix keeps two records of the same drill started in the same
/// millisecond (two CI jobs, two hosts) from overwriting each other. Keys
/// written before it (`<stamp>_<drill>.json`) still read: readers list the
/// month's prefix and parse every object, whatever its name.
fn s3_key(record: &HistoryRecord) -> String {
    let suffix = rand::random::<u64>() & 0xffff_ffff_ffff;
    s3_key_with_suffix(record, suffix)
}

fn s3_key_with_suffix(record: &HistoryRecord, suffix: u64) -> String {
    let stamp = record.started_at.format("%Y%m%dT%H%M%S%.3fZ");
    let drill: String = record
        .drill
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "{S3_PREFIX}{}/{stamp}_{drill}_{suffix:012x}.json",
        Month::of(record.started_at)
    )
}

pub(super) async fn read_s3(store: &Store, months: &[Month]) -> Result<History> {
    let mut history = History::default();
    for &month in months {
        let prefix = format!("{S3_PREFIX}{month}/");
        let objects = store.list(&prefix).await.map_err(|source| HistoryError::List {
            location: format!("{}{prefix}", store.config().location()),
            source,
        })?;
        for object in objects {
            let source = format!("{}{}", store.config().location(), object.key);
            match store.get_bytes(&object.key).await {
                Ok(bytes) => match std::str::from_utf8(&bytes)
                    .map_err(|e| e.to_string())
                    .and_then(HistoryRecord::parse)
                {
                    Ok(record) => history.records.push(record),
                    Err(problem) => history.warn(format!("skipped history object `{source}`: {problem}")),
                },
                Err(error) => history.warn(format!("skipped history object `{source}`: {error}")),
            }
        }
    }
    history.sort();
    Ok(history)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::history::record::tests::summary;

    #[test]
    fn s3_keys_of_the_same_drill_in_the_same_millisecond_differ() {
        let record = HistoryRecord::from_summary(&summary());
        let first = s3_key(&record);
        let second = s3_key(&record);
        assert_ne!(first, second, "same drill, same start: distinct objects");
        let stamp = record.started_at.format("%Y%m%dT%H%M%S%.3fZ").to_string();
        let expected_start = format!("{S3_PREFIX}{}/{stamp}_full_restore_", Month::of(record.started_at));
        for key in [&first, &second] {
            assert!(key.starts_with(&expected_start), "{key}");
            assert!(key.ends_with(".json"), "{key}");
        }
        assert_eq!(
            s3_key_with_suffix(&record, 0xabc),
            format!("{expected_start}000000000abc.json"),
            "sortable by start, then drill, then suffix"
        );
    }
}
