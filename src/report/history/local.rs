//! The local history store: one JSON-lines file per month in a directory,
//! each record one line appended with a single `O_APPEND` write.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::{History, HistoryError, HistoryRecord, Result};
use crate::report::month::Month;

/// `DRILL_HISTORY_DIR`, else `target/drill-history` (relative to the package
/// root, where tests and drills run).
pub fn default_dir() -> PathBuf {
    std::env::var_os("DRILL_HISTORY_DIR")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("target").join("drill-history"), PathBuf::from)
}

/// Whether `DRILL_HISTORY=off` (also `0`, `false`, `no`) turns recording off.
pub(crate) fn disabled() -> bool {
    std::env::var("DRILL_HISTORY")
        .is_ok_and(|value| matches!(value.trim().to_ascii_lowercase().as_str(), "off" | "0" | "false" | "no"))
}

/// The file of `month` in a local history directory.
pub(crate) fn month_file(dir: &Path, month: Month) -> PathBuf {
    dir.join(format!("{month}.jsonl"))
}

/// Appends `record` to its month's file in `dir` with one write.
///
/// # Errors
///
/// [`HistoryError::Append`] if the directory or file cannot be written.
pub(crate) fn append_local(dir: &Path, record: &HistoryRecord) -> Result<()> {
    let path = month_file(dir, Month::of(record.started_at));
    let error = |source| HistoryError::Append {
        path: path.clone(),
        source,
    };
    fs::create_dir_all(dir).map_err(error)?;
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(error)?;
    file.write_all(record.to_json_line().as_bytes()).map_err(error)
}

pub(crate) fn read_local(dir: &Path, months: &[Month]) -> History {
    let mut history = History::default();
    for &month in months {
        let path = month_file(dir, month);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => {
                history.warn(format!("skipped history file `{}`: {error}", path.display()));
                continue;
            }
        };
        read_lines(&mut history, &path.display().to_string(), &bytes);
    }
    history.sort();
    history
}

fn read_lines(history: &mut History, source: &str, bytes: &[u8]) {
    for (index, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let Ok(line) = std::str::from_utf8(line) else {
            history.warn(format!("skipped line {} of `{source}`: not UTF-8", index + 1));
            continue;
        };
        if line.trim().is_empty() {
            continue;
        }
        match HistoryRecord::parse(line) {
            Ok(record) => history.records.push(record),
            Err(problem) => history.warn(format!("skipped line {} of `{source}`: {problem}", index + 1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::history::record::tests::summary;

    #[test]
    fn local_store_appends_per_month_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut record = HistoryRecord::from_summary_on(&summary(), "embedded");
        append_local(dir.path(), &record).unwrap();
        record.started_at = "2026-04-30T23:59:59Z".parse().unwrap();
        append_local(dir.path(), &record).unwrap();
        append_local(dir.path(), &record).unwrap();
        let april = fs::read_to_string(dir.path().join("2026-04.jsonl")).unwrap();
        assert_eq!(april.lines().count(), 2);
        let history = read_local(dir.path(), &"2026-05".parse::<Month>().unwrap().trailing(2));
        assert_eq!(history.records.len(), 3);
        assert!(history.warnings.is_empty(), "{:?}", history.warnings);
        let may: Month = "2026-05".parse().unwrap();
        assert_eq!(history.records.iter().filter(|r| may.contains(r.started_at)).count(), 1);
    }
}
