//! Drill history: one versioned record per drill run, kept over months so
//! the monthly report can draw trends.
//!
//! # What this room owns
//!
//! - [`record`]: the versioned [`HistoryRecord`] (and [`RecordV0`] before it);
//! - `local`: the **local** store (the default): a directory,
//!   `DRILL_HISTORY_DIR` or `target/drill-history/`, with one JSON-lines
//!   file per month (`2026-05.jsonl`), only ever appended to. Each record is
//!   one line written with a single `O_APPEND` write, so drills finishing at
//!   the same time do not interleave;
//! - `s3`: the **S3** store: `drills/history/<YYYY-MM>/<stamp>_<drill>_<random>.json`
//!   under a [`Store`]'s prefix. S3 has no append, so each record is its own
//!   object; the random suffix keeps records started in the same
//!   millisecond apart;
//! - this module: [`HistoryStore`], the choice between them, and what
//!   reading returns ([`History`]).
//!
//! The months are [`super::month`]'s.
//!
//! # Guarantees
//!
//! Reading never fails on content: a line that is not a record, a file that
//! cannot be read, a record from the future: each is skipped and named in
//! [`History::warnings`] (and logged), and the rest is read. Only an
//! unreachable store (a bucket that cannot be listed) is an error.

mod local;
pub mod record;
mod s3;

use std::path::PathBuf;

pub use self::local::default_dir;
pub(crate) use self::local::{append_local, disabled};
#[cfg(test)]
pub(crate) use self::local::{month_file, read_local};
pub use self::record::{
    DATASET_PROPERTY, FORMAT_VERSION, HistoryRecord, POSTGRES_VERSION_PROPERTIES, RecordCheck, RecordEvent,
    RecordIncident, RecordPhase, RecordV0,
};
pub use self::s3::S3_PREFIX;
use crate::report::month::Month;
use crate::store::{Store, StoreError};

pub type Result<T, E = HistoryError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryError {
    #[error(
        "failed to append to drill history `{}`; check that the directory is writable, \
         set DRILL_HISTORY_DIR to another one, or DRILL_HISTORY=off",
        path.display()
    )]
    Append {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to write drill history object `{key}` to S3; check the bucket and its credentials")]
    PutObject {
        key: String,
        #[source]
        source: StoreError,
    },
    #[error("failed to list drill history under `{location}`; check the bucket and its credentials")]
    List {
        location: String,
        #[source]
        source: StoreError,
    },
}

/// What was read: the records (oldest first) and what was skipped, as
/// sentences naming file/object and line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    pub records: Vec<HistoryRecord>,
    pub warnings: Vec<String>,
}

impl History {
    fn warn(&mut self, warning: String) {
        tracing::warn!("{warning}");
        self.warnings.push(warning);
    }

    fn sort(&mut self) {
        self.records
            .sort_by(|a, b| (a.started_at, &a.drill).cmp(&(b.started_at, &b.drill)));
    }
}

/// Where history lives.
#[derive(Debug, Clone)]
pub enum HistoryStore {
    /// One JSON-lines file per month in a directory.
    Local(PathBuf),
    /// One object per record under [`S3_PREFIX`].
    S3(Store),
}

impl HistoryStore {
    /// Appends one record.
    ///
    /// # Errors
    ///
    /// [`HistoryError::Append`] / [`HistoryError::PutObject`].
    pub async fn append(&self, record: &HistoryRecord) -> Result<()> {
        match self {
            Self::Local(dir) => local::append_local(dir, record),
            Self::S3(store) => s3::put(store, record).await,
        }
    }

    /// Reads every record of `months` (a file or object that cannot be read
    /// is skipped with a warning).
    ///
    /// # Errors
    ///
    /// [`HistoryError::List`] if the S3 history cannot be listed.
    pub async fn read(&self, months: &[Month]) -> Result<History> {
        match self {
            Self::Local(dir) => Ok(local::read_local(dir, months)),
            Self::S3(store) => s3::read_s3(store, months).await,
        }
    }

    /// `target/drill-history` or `s3://bucket/prefix/drills/history/`, for messages.
    pub fn location(&self) -> String {
        match self {
            Self::Local(dir) => dir.display().to_string(),
            Self::S3(store) => format!("{}{S3_PREFIX}", store.config().location()),
        }
    }
}
