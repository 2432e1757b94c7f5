//! `drillbook wal-push` and `drillbook wal-fetch`: PostgreSQL's
//! `archive_command` and `restore_command`.
//!
//! The S3 location comes from the server's environment (`BACKUP_BUCKET`,
//! `AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`).

use std::path::PathBuf;

use clap::Args;

use super::{exit, print_error};
use crate::wal::{self, Fetched, WalArchive};

/// `wal-fetch`: the file is not in the archive. PostgreSQL reads any exit
/// status up to 125 as "not available" and ends (or waits for) recovery there.
pub(super) const WAL_MISSING: u8 = 1;
/// `wal-fetch`: the archived file is damaged, or the archive unreachable or
/// its bucket missing (never "the end of the archive").
/// PostgreSQL treats an exit status above 125 from `restore_command` as
/// fatal, so recovery stops instead of taking the archive as ended early.
pub(super) const WAL_FATAL: u8 = 126;

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  archive_command = 'drillbook wal-push %p'\n\n\
    Exit codes: 0 archived (or already archived with identical bytes), 2 not archived (the message says why; \
    PostgreSQL retries).")]
pub(super) struct WalPushArgs {
    /// The WAL file to archive (PostgreSQL's %p).
    path: PathBuf,
}

impl WalPushArgs {
    pub(super) async fn run(self) -> anyhow::Result<u8> {
        let archive = WalArchive::from_env().await?;
        archive.push(&self.path).await?;
        Ok(exit::SUCCESS)
    }
}

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  restore_command = 'drillbook wal-fetch %f %p'\n\n\
    While PostgreSQL replays one segment, the next ones (--prefetch, same timeline) are fetched and checked in \
    the background into pg_wal/drillbook-spool/ (owner-only, at most --prefetch segments, removed when \
    recovery ends); a segment is served from there only once its sha256 matched.\n\n\
    Exit codes: 0 restored, 1 not in the archive (quietly: the normal end of the archive), \
    126 corrupt object, missing bucket or unreachable archive (PostgreSQL aborts recovery).")]
pub(super) struct WalFetchArgs {
    /// The file name PostgreSQL asks for (%f).
    name: String,
    /// Where to write it (%p).
    dest: PathBuf,
    /// Segments to fetch ahead into the spool next to %p (0: none, fetch each file when asked).
    #[arg(long, env = "DRILLBOOK_WAL_PREFETCH", default_value_t = wal::DEFAULT_DEPTH as u16,
          value_parser = clap::value_parser!(u16).range(0..=64))]
    prefetch: u16,
    /// Downloads in flight at once while fetching ahead.
    #[arg(long, env = "DRILLBOOK_WAL_PREFETCH_JOBS", default_value_t = wal::DEFAULT_JOBS as u16,
          value_parser = clap::value_parser!(u16).range(1..=16))]
    prefetch_jobs: u16,
    /// Run as the background prefetcher a wal-fetch call starts (internal).
    #[arg(long, hide = true)]
    prefetcher: bool,
}

impl WalFetchArgs {
    pub(super) async fn run(self) -> anyhow::Result<u8> {
        if self.prefetcher {
            // In the background, output discarded: nothing to report to.
            let _ = wal::run_prefetcher(&self.dest, self.prefetch.into(), self.prefetch_jobs.into()).await;
            return Ok(exit::SUCCESS);
        }
        let prefetch = wal::Prefetch {
            depth: self.prefetch.into(),
            jobs: self.prefetch_jobs.into(),
            // The prefetcher is this very binary; without /proc, no read-ahead.
            program: std::env::current_exe().unwrap_or_default(),
        };
        let prefetch = if prefetch.program.as_os_str().is_empty() {
            wal::Prefetch { depth: 0, ..prefetch }
        } else {
            prefetch
        };
        match wal::restore_file(&self.name, &self.dest, &prefetch).await {
            Ok(Fetched::Restored { .. }) => Ok(exit::SUCCESS),
            Ok(Fetched::Missing) => Ok(WAL_MISSING),
            Err(e) => {
                print_error(&anyhow::Error::new(e).context(format!("failed to fetch WAL file {}", self.name)));
                Ok(WAL_FATAL)
            }
        }
    }
}
