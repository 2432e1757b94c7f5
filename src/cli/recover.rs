//! `drillbook recover`: point-in-time recovery into a data directory, the
//! playbook's section 3.3 as a command. The server it starts outlives it:
//! `--pause` leaves the recovery open read-only at its target for
//! inspection and `drillbook verify`; `--promote` then ends it, or another
//! `--to-...` moves it forward.

use std::path::PathBuf;

use anyhow::Context as _;
use chrono::{DateTime, SecondsFormat, Utc};
use clap::{ArgGroup, Args};
use serde::Serialize;

use super::exit;
use super::interrupt::Interrupts;
use super::transfer::open_store;
use crate::integrity::CheckName;
use crate::pg::{PgBinaries, Secret};
use crate::pitr::data_dir::{ReachedPoint, RecoveryState, describe};
use crate::pitr::last_good::{SearchOptions, recover_to_last_good};
use crate::pitr::{AtTarget, PitrOptions, Recovered, RecoveryTarget, promote_data_dir, recover_data_dir};

#[derive(Debug, Args)]
#[command(
    group(ArgGroup::new("action").required(true).multiple(true).args(["to_time", "to_lsn", "to_name", "to_latest", "to_last_good", "promote"])),
    after_help = "Examples:\n  \
drillbook recover --bucket s3://immoflowme-backups --pgdata /srv/recovered --to-time '2026-11-30T02:59:00Z' --pause\n  \
drillbook verify --database-url postgres://postgres@127.0.0.1:<port>/immoflowme   # read-only, while paused\n  \
drillbook recover --pgdata /srv/recovered --promote\n\n\
The newest base backup finished before the target is downloaded, checked (sha256, pg_verifybackup) and\n\
prepared next to --pgdata, then moved there; the server replays archived WAL (restore_command = drillbook\n\
wal-fetch) as the server user when run as root, listening on 127.0.0.1 only, with archiving off: the source\n\
server and its archive are never touched. S3 credentials must be in the environment (the server inherits it).\n\
Stop the server with `pg_ctl stop -D DIR` (as the server user)."
)]
pub(super) struct RecoverArgs {
    /// The data directory: new or empty to recover into, or one `recover` made (to promote it or move it forward).
    #[arg(long, value_name = "DIR")]
    pgdata: PathBuf,
    /// Stop after the last commit at or before this time (RFC 3339 with a zone, e.g. 2026-11-30T02:59:00Z).
    #[arg(long, value_name = "TIME")]
    to_time: Option<String>,
    /// Stop at this WAL position (X/Y, e.g. 0/5000060).
    #[arg(long, value_name = "LSN")]
    to_lsn: Option<String>,
    /// Stop at a restore point made with pg_create_restore_point(NAME).
    #[arg(long, value_name = "NAME")]
    to_name: Option<String>,
    /// Replay everything the archive holds, then promote (the primary is lost).
    #[arg(long)]
    to_latest: bool,
    /// Find the last moment the integrity checks are clean, without being told when the damage happened,
    /// and stop there paused (with --promote: promoted). Names the transaction that did the damage.
    #[arg(long)]
    to_last_good: bool,
    /// With --to-last-good: the damage happened after this time (RFC 3339); the search starts there.
    #[arg(long, value_name = "TIME", requires = "to_last_good")]
    since: Option<String>,
    /// With --to-last-good: the checks that judge (comma-separated names as in `verify --json`; default all).
    #[arg(long, value_name = "LIST", value_delimiter = ',', requires = "to_last_good")]
    checks: Vec<String>,
    /// With --to-last-good: the database the checks judge.
    #[arg(long, default_value = "immoflowme", requires = "to_last_good")]
    database: String,
    /// At the target, stay in recovery, open read-only (hot standby), instead of promoting.
    #[arg(long, conflicts_with_all = ["promote", "to_last_good"])]
    pause: bool,
    /// Promote the recovery paused in --pgdata: it leaves recovery on a new timeline and accepts writes.
    #[arg(long)]
    promote: bool,
    /// Port on 127.0.0.1 for the recovered server (default: a free one).
    #[arg(long)]
    port: Option<u16>,
    /// Bucket and optional prefix holding base/ and wal/ (needed to recover, not to promote).
    #[arg(long, env = "BACKUP_BUCKET", value_name = "s3://BUCKET[/PREFIX]")]
    bucket: Option<String>,
    /// S3 endpoint for S3-compatible servers (LocalStack, MinIO, `env up`); AWS when unset.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    s3_endpoint: Option<String>,
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    region: String,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// What `recover` prints with `--json`.
#[derive(Debug, Serialize)]
struct RecoverReport {
    pgdata: PathBuf,
    port: Option<u16>,
    /// `paused` or `promoted`.
    state: &'static str,
    target: Option<String>,
    base_backup: Option<String>,
    /// The base backup's tar bytes: what the download moved.
    base_backup_bytes: Option<u64>,
    lsn: Option<String>,
    timeline: Option<u32>,
    last_replayed_commit: Option<DateTime<Utc>>,
    recovery_stop: Option<String>,
    wal_bytes_replayed: Option<u64>,
    download_and_verify_seconds: Option<f64>,
    replay_seconds: Option<f64>,
}

impl RecoverArgs {
    pub(super) async fn run(self) -> anyhow::Result<u8> {
        let interrupts = Interrupts::catch()?;
        let bins = PgBinaries::discover()?;
        let pgdata =
            std::path::absolute(&self.pgdata).with_context(|| format!("--pgdata {}", self.pgdata.display()))?;
        let targets = [
            self.to_time.is_some(),
            self.to_lsn.is_some(),
            self.to_name.is_some(),
            self.to_latest,
            self.to_last_good,
        ]
        .into_iter()
        .filter(|t| *t)
        .count();
        anyhow::ensure!(
            targets <= 1,
            "give one target: --to-time, --to-lsn, --to-name, --to-latest or --to-last-good"
        );
        anyhow::ensure!(
            !(self.promote && targets == 1 && !self.to_last_good),
            "--promote alone promotes a paused recovery; with --to-time/--to-lsn/--to-name/--to-latest the \
             recovery promotes at its target anyway (leave out --pause)"
        );
        if self.to_last_good {
            return self.find_last_good(interrupts, &bins, &pgdata).await;
        }
        if self.promote {
            let point = promote_data_dir(&bins, &pgdata)
                .await
                .with_context(|| format!("promote the recovery in {}", pgdata.display()))?;
            self.print_promoted(&pgdata, &point)?;
            return Ok(exit::SUCCESS);
        }
        let target = self.target()?;
        let location = self
            .bucket
            .as_deref()
            .context("--bucket (or BACKUP_BUCKET) is required to recover: the bucket holding base/ and wal/")?;
        let store = open_store(location, self.s3_endpoint.clone(), &self.region).await?;
        let options = PitrOptions {
            drillbook: std::env::current_exe().context("find the drillbook binary for restore_command")?,
            // The superuser's password is the source cluster's; drillbook reaches the server over its socket.
            password: Secret::new(String::new()),
            now: Utc::now(),
            restore_command: None,
            at_target: if self.pause { AtTarget::Pause } else { AtTarget::Promote },
        };
        let work = recover_data_dir(&bins, &store, &pgdata, self.port, &target, &options);
        let mut interrupts = interrupts;
        let recovered = match interrupts.run(work).await {
            Ok(recovered) => recovered.with_context(|| format!("recover {} to {target}", pgdata.display()))?,
            Err(interrupted) => {
                tracing::warn!(
                    "{} received: the recovery's server was stopped; what it had not reached was removed",
                    interrupted.name
                );
                return Ok(interrupted.exit_code);
            }
        };
        self.print_recovered(&pgdata, &target, &recovered)?;
        Ok(exit::SUCCESS)
    }

    async fn find_last_good(
        &self,
        mut interrupts: Interrupts,
        bins: &PgBinaries,
        pgdata: &std::path::Path,
    ) -> anyhow::Result<u8> {
        let checks = self
            .checks
            .iter()
            .map(|name| {
                CheckName::parse(name)
                    .filter(|c| CheckName::SUITE.contains(c))
                    .with_context(|| {
                        let known: Vec<&str> = CheckName::SUITE.iter().map(|c| c.as_str()).collect();
                        format!("--checks: no check named {name:?}; the checks are {}", known.join(", "))
                    })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let since = self.since.as_deref().map(parse_time).transpose()?;
        let location = self
            .bucket
            .as_deref()
            .context("--bucket (or BACKUP_BUCKET) is required to recover: the bucket holding base/ and wal/")?;
        let store = open_store(location, self.s3_endpoint.clone(), &self.region).await?;
        let options = SearchOptions {
            pitr: PitrOptions {
                drillbook: std::env::current_exe().context("find the drillbook binary for restore_command")?,
                password: Secret::new(String::new()),
                now: Utc::now(),
                restore_command: None,
                at_target: if self.promote {
                    AtTarget::Promote
                } else {
                    AtTarget::Pause
                },
            },
            since,
            checks,
            database: self.database.clone(),
        };
        let work = recover_to_last_good(bins, &store, pgdata, self.port, &options);
        let found = match interrupts.run(work).await {
            Ok(found) => found.with_context(|| format!("find the last good point into {}", pgdata.display()))?,
            Err(interrupted) => {
                tracing::warn!(
                    "{} received: the search's servers were stopped and its copies removed",
                    interrupted.name
                );
                return Ok(interrupted.exit_code);
            }
        };
        if self.json {
            println!("{}", serde_json::to_string_pretty(&found)?);
            return Ok(exit::SUCCESS);
        }
        let Some(bad) = &found.first_bad else {
            if let Some(gap) = &found.archive_gap {
                println!("{gap}");
            }
            println!(
                "nothing found: the checks are clean from base backup {} to the end of the archive ({} commits); nothing was recovered",
                found.base_backup, found.commits
            );
            return Ok(exit::SUCCESS);
        };
        let at = |c: &crate::pitr::last_good::Commit| {
            format!(
                "transaction {} committed {} at LSN {}",
                c.xid,
                c.time.to_rfc3339_opts(SecondsFormat::Micros, true),
                c.lsn
            )
        };
        println!("first bad: {}", at(&bad.commit));
        if !bad.relations.is_empty() {
            println!("  it wrote {}", bad.relations.join(", "));
        }
        for finding in bad.findings.iter().take(10) {
            let key = finding.key.as_deref().map(|k| format!(" {k}")).unwrap_or_default();
            println!(
                "  right after it: {} {}{key}: {}",
                finding.check.as_str(),
                finding.table,
                finding.detail
            );
        }
        match &found.last_good.commit {
            Some(commit) => println!("last good: {}", at(commit)),
            None => println!(
                "last good: the end of base backup {} (the first commit after it is the bad one)",
                found.base_backup
            ),
        }
        println!(
            "given up: {} committed transaction(s){}",
            found.given_up_transactions,
            match (found.given_up_from, found.given_up_to) {
                (Some(from), Some(to)) => format!(
                    " from {} to {}",
                    from.to_rfc3339_opts(SecondsFormat::Secs, true),
                    to.to_rfc3339_opts(SecondsFormat::Secs, true)
                ),
                _ => String::new(),
            }
        );
        if let Some(gap) = &found.archive_gap {
            println!("  {gap}");
        }
        for stamp in &found.damaged_base_backups {
            println!("  base backup {stamp} is damaged itself and was skipped");
        }
        println!(
            "searched {} commits with {} probes and {} copies in {:.1}s; {} is {} at the last good point",
            found.commits,
            found.probes,
            found.forks,
            found.elapsed.as_secs_f64(),
            pgdata.display(),
            if self.promote { "promoted" } else { "paused" }
        );
        if !self.promote {
            println!(
                "next: inspect it, then drillbook recover --pgdata {} --promote",
                pgdata.display()
            );
        }
        Ok(exit::SUCCESS)
    }

    fn target(&self) -> anyhow::Result<RecoveryTarget> {
        Ok(match (&self.to_time, &self.to_lsn, &self.to_name) {
            (Some(time), _, _) => RecoveryTarget::Time(parse_time(time)?),
            (_, Some(lsn), _) => {
                anyhow::ensure!(
                    crate::wal::parse_lsn(lsn).is_some(),
                    "--to-lsn {lsn:?} is not a WAL position: write it as PostgreSQL does, X/Y in hex (e.g. 0/5000060)"
                );
                RecoveryTarget::Lsn(lsn.clone())
            }
            (_, _, Some(name)) => RecoveryTarget::Name(name.clone()),
            _ => RecoveryTarget::EndOfArchive,
        })
    }

    fn print_recovered(&self, pgdata: &std::path::Path, target: &RecoveryTarget, r: &Recovered) -> anyhow::Result<()> {
        let port = r.server.admin().port;
        let paused = r.at_target == AtTarget::Pause;
        if self.json {
            let report = RecoverReport {
                pgdata: pgdata.to_path_buf(),
                port: Some(port),
                state: if paused { "paused" } else { "promoted" },
                target: Some(target.to_string()),
                base_backup: Some(r.base_backup.stamp.clone()),
                base_backup_bytes: Some(r.base_backup.tar_bytes),
                lsn: r.replayed_lsn.clone(),
                timeline: r.timeline,
                last_replayed_commit: r.last_replayed_commit,
                recovery_stop: r.stop_line.clone(),
                wal_bytes_replayed: Some(r.wal_bytes_replayed),
                download_and_verify_seconds: Some(r.download_and_verify.as_secs_f64()),
                replay_seconds: Some(r.replay.as_secs_f64()),
            };
            println!("{}", serde_json::to_string_pretty(&report)?);
            return Ok(());
        }
        let point = ReachedPoint {
            lsn: r.replayed_lsn.clone(),
            timeline: r.timeline,
            last_replayed_commit: r.last_replayed_commit,
        };
        println!(
            "recovered {} to {target} from base backup {}: {} at {}",
            pgdata.display(),
            r.base_backup.stamp,
            if paused { "paused" } else { "promoted" },
            describe(&point)
        );
        if let Some(stop) = &r.stop_line {
            println!("  {}", stop.trim());
        }
        println!(
            "  {:.1} MB of WAL replayed in {:.1}s; base backup downloaded and checked in {:.1}s",
            r.wal_bytes_replayed as f64 / 1e6,
            r.replay.as_secs_f64(),
            r.download_and_verify.as_secs_f64()
        );
        println!(
            "  server on 127.0.0.1:{port} (socket in {}), log {}",
            pgdata.display(),
            pgdata.join(crate::pg::data_dir::LOG_FILE).display()
        );
        if paused {
            println!(
                "next: inspect it read-only, e.g. drillbook verify --database-url postgres://postgres:<password>@127.0.0.1:{port}/<database>"
            );
            println!("      then drillbook recover --pgdata {} --promote", pgdata.display());
            println!(
                "      or   drillbook recover --pgdata {} --to-time <later> --pause   (moves forward)",
                pgdata.display()
            );
        } else {
            println!(
                "next: verify it, then point the application at it (archiving is off: turn it on before it becomes the primary)"
            );
        }
        Ok(())
    }

    fn print_promoted(&self, pgdata: &std::path::Path, point: &ReachedPoint) -> anyhow::Result<()> {
        if self.json {
            let state = RecoveryState::read(pgdata)?;
            let report = RecoverReport {
                pgdata: pgdata.to_path_buf(),
                port: crate::pg::DataDirServer::open(&PgBinaries::discover()?, pgdata)?.port(),
                state: "promoted",
                target: state.as_ref().map(|s| s.target.clone()),
                base_backup: state.map(|s| s.base_backup),
                base_backup_bytes: None,
                lsn: point.lsn.clone(),
                timeline: point.timeline,
                last_replayed_commit: point.last_replayed_commit,
                recovery_stop: None,
                wal_bytes_replayed: None,
                download_and_verify_seconds: None,
                replay_seconds: None,
            };
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            println!("promoted {}: {}", pgdata.display(), describe(point));
            println!(
                "next: archiving is off; turn it on (archive_mode, archive_command) before this server becomes the primary"
            );
        }
        Ok(())
    }
}

/// An RFC 3339 time, or PostgreSQL's `2026-11-30 02:59:00+00`; a zone is
/// required: a time without one is ambiguous at 3 a.m.
fn parse_time(text: &str) -> anyhow::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%#z"))
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            anyhow::anyhow!(
                "--to-time {text:?} is not a time with a zone: write it as RFC 3339, e.g. {}",
                Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_need_a_zone() {
        assert_eq!(
            parse_time("2026-11-30T02:59:00Z").unwrap().to_rfc3339(),
            "2026-11-30T02:59:00+00:00"
        );
        assert_eq!(
            parse_time("2026-11-30 03:59:00+01").unwrap().to_rfc3339(),
            "2026-11-30T02:59:00+00:00"
        );
        let err = parse_time("2026-11-30 02:59:00").unwrap_err().to_string();
        assert!(err.contains("not a time with a zone"), "{err}");
    }
}
