//! Typed wrappers of the PostgreSQL client programs drills rely on.
//!
//! Connection facts reach the programs through libpq environment variables,
//! never argv, so passwords do not show in `ps`. Every program is started
//! by `pg::child`, so it dies with drillbook.

use std::path::Path;
use std::process::Stdio;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdout, Command};

use super::{ConnInfo, PgBinaries, PgError, Result};

fn command(bins: &PgBinaries, program: &str, conn: &ConnInfo) -> Command {
    let mut command = Command::new(bins.program(program));
    command.envs(conn.libpq_env()).stdin(Stdio::null()).kill_on_drop(true);
    command
}

/// Runs a program to completion, failing with its output when it fails.
async fn run(command: Command, program: &str) -> Result<String> {
    let output = super::child::output(command).await.map_err(|source| PgError::Spawn {
        program: program.into(),
        source,
    })?;
    if !output.status.success() {
        return Err(PgError::ProgramFailed {
            program: program.to_owned(),
            status: output.status,
            output: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A running `pg_dump -Fc` whose archive is read from [`DumpStream::stdout`].
#[derive(Debug)]
pub struct DumpStream {
    child: Child,
    stdout: Option<ChildStdout>,
    stderr: tokio::task::JoinHandle<String>,
}

impl DumpStream {
    /// Starts `pg_dump --format=custom` of `conn.database`. With `snapshot`
    /// the dump sees exactly that exported snapshot (`pg_export_snapshot()`),
    /// so facts recorded beside it describe the same data.
    pub fn spawn(bins: &PgBinaries, conn: &ConnInfo, snapshot: Option<&str>) -> Result<Self> {
        let mut command = command(bins, "pg_dump", conn);
        command.args(["--format=custom", "--no-password"]);
        if let Some(snapshot) = snapshot {
            command.arg(format!("--snapshot={snapshot}"));
        }
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = super::child::spawn(command).map_err(|source| PgError::Spawn {
            program: bins.program("pg_dump"),
            source,
        })?;
        let stdout = child.stdout.take();
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text).await;
            text
        });
        Ok(Self { child, stdout, stderr })
    }

    /// The archive bytes. Read to the end before calling [`Self::finish`].
    pub fn stdout(&mut self) -> &mut ChildStdout {
        self.stdout.as_mut().expect("stdout is taken only by finish")
    }

    /// Waits for `pg_dump` to exit and fails with its stderr if it failed.
    pub async fn finish(mut self) -> Result<()> {
        drop(self.stdout.take());
        let status = self.child.wait().await.map_err(PgError::io("wait for pg_dump"))?;
        let stderr = self.stderr.await.unwrap_or_default();
        if !status.success() {
            return Err(PgError::ProgramFailed {
                program: "pg_dump".into(),
                status,
                output: stderr,
            });
        }
        Ok(())
    }
}

/// `pg_restore --no-owner --no-acl --jobs=N --exit-on-error` of an archive
/// into `conn.database`, as the playbook's section 3.2 step 3 does (plus
/// `--exit-on-error`: a restore that hit an error must not look finished).
pub async fn pg_restore(bins: &PgBinaries, conn: &ConnInfo, archive: &Path, jobs: usize) -> Result<()> {
    let mut command = command(bins, "pg_restore", conn);
    command
        .args(["--no-owner", "--no-acl", "--exit-on-error", "--no-password"])
        .arg(format!("--jobs={}", jobs.max(1)))
        .arg(format!("--dbname={}", conn.database))
        .arg(archive);
    run(command, "pg_restore").await.map(drop)
}

/// `pg_dumpall --roles-only --no-role-passwords`: the cluster-wide roles a
/// database's policies and grants refer to, which `pg_dump` leaves out.
pub async fn dump_roles(bins: &PgBinaries, admin: &ConnInfo) -> Result<String> {
    let mut command = command(bins, "pg_dumpall", admin);
    command.args(["--roles-only", "--no-role-passwords", "--no-password"]);
    run(command, "pg_dumpall").await
}

/// `--version` of one program, e.g. `pg_dump (PostgreSQL) 15.18`.
pub async fn program_version(bins: &PgBinaries, program: &str) -> Result<String> {
    let mut command = Command::new(bins.program(program));
    command.arg("--version");
    Ok(run(command, program).await?.trim().to_owned())
}

/// A running `pg_basebackup --format=tar --pgdata=- --wal-method=fetch`: the
/// whole cluster (with the WAL needed to make it consistent and the
/// `backup_manifest`, last) as one tar stream, compressed or not, on
/// [`BaseBackupStream::stdout`].
#[derive(Debug)]
pub struct BaseBackupStream {
    child: Child,
    stdout: Option<ChildStdout>,
    stderr: tokio::task::JoinHandle<String>,
}

/// What `pg_basebackup --verbose` reported about the backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseBackupPoints {
    /// WAL start point (`X/Y`) and its timeline.
    pub start_lsn: String,
    pub timeline: u32,
    /// WAL end point (`X/Y`): the backup is consistent from here on.
    pub end_lsn: String,
}

impl BaseBackupStream {
    /// `conn` must be a superuser (or replication role) connection.
    /// `compress` is `pg_basebackup --compress` (`none`, `client-zstd:level=1`;
    /// server-side compression cannot carry the manifest on stdout), and
    /// `manifest_checksums` the per-file checksum of its `backup_manifest`
    /// (`CRC32C`, `SHA256`).
    pub fn spawn(bins: &PgBinaries, conn: &ConnInfo, compress: &str, manifest_checksums: &str) -> Result<Self> {
        let mut command = command(bins, "pg_basebackup", conn);
        command
            .args(["--pgdata=-", "--format=tar", "--wal-method=fetch", "--checkpoint=fast"])
            .arg(format!("--compress={compress}"))
            .arg(format!("--manifest-checksums={manifest_checksums}"))
            .args(["--verbose", "--no-password"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = super::child::spawn(command).map_err(|source| PgError::Spawn {
            program: bins.program("pg_basebackup"),
            source,
        })?;
        let stdout = child.stdout.take();
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text).await;
            text
        });
        Ok(Self { child, stdout, stderr })
    }

    /// The tar bytes. Read to the end before calling [`Self::finish`].
    pub fn stdout(&mut self) -> &mut ChildStdout {
        self.stdout.as_mut().expect("stdout is taken only by finish")
    }

    /// Waits for `pg_basebackup` and returns its start and end points.
    pub async fn finish(mut self) -> Result<BaseBackupPoints> {
        drop(self.stdout.take());
        let status = self.child.wait().await.map_err(PgError::io("wait for pg_basebackup"))?;
        let stderr = self.stderr.await.unwrap_or_default();
        if !status.success() {
            return Err(PgError::ProgramFailed {
                program: "pg_basebackup".into(),
                status,
                output: stderr,
            });
        }
        parse_basebackup_points(&stderr).ok_or_else(|| PgError::ProgramFailed {
            program: "pg_basebackup (no start/end point in its --verbose output)".into(),
            status,
            output: stderr,
        })
    }
}

/// Reads "write-ahead log start point: 0/2000028 on timeline 1" and
/// "write-ahead log end point: 0/2000100".
fn parse_basebackup_points(stderr: &str) -> Option<BaseBackupPoints> {
    let after = |marker: &str| {
        stderr
            .lines()
            .find_map(|l| l.split_once(marker).map(|(_, rest)| rest.trim().to_owned()))
    };
    let start = after("write-ahead log start point:")?;
    let (start_lsn, timeline) = start.split_once(" on timeline ")?;
    Some(BaseBackupPoints {
        start_lsn: start_lsn.trim().to_owned(),
        timeline: timeline.trim().parse().ok()?,
        end_lsn: after("write-ahead log end point:")?,
    })
}

/// `pg_waldump --quiet` over the WAL a base backup needs (its
/// `backup_manifest`'s WAL range) in `wal_dir`: every record from `start_lsn`
/// to `end_lsn` on `timeline` is there and reads, as `pg_verifybackup`
/// checks it.
pub async fn parse_wal_range(
    bins: &PgBinaries,
    wal_dir: &Path,
    timeline: u32,
    start_lsn: &str,
    end_lsn: &str,
) -> Result<()> {
    let mut command = Command::new(bins.program("pg_waldump"));
    command
        .arg("--quiet")
        .arg(format!("--path={}", wal_dir.display()))
        .arg(format!("--timeline={timeline}"))
        .arg(format!("--start={start_lsn}"))
        .arg(format!("--end={end_lsn}"))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    run(command, "pg_waldump").await.map(drop)
}

/// `pg_verifybackup` of an extracted base backup (its `backup_manifest`
/// inside): every file's checksum and the WAL it needs. Restores check the
/// same as they write ([`crate::basebackup::download_base_backup`]); this
/// reads the copy again, for tests and benchmarks to compare against.
pub async fn verify_backup(bins: &PgBinaries, data_dir: &Path) -> Result<()> {
    let mut command = Command::new(bins.program("pg_verifybackup"));
    command
        .arg("--quiet")
        .arg(data_dir)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    run(command, "pg_verifybackup").await.map(drop)
}

/// `pg_restore --table=T` of one table's definition and data from an archive
/// into `conn.database` (a scratch database).
pub async fn pg_restore_table(bins: &PgBinaries, conn: &ConnInfo, archive: &Path, table: &str) -> Result<()> {
    let mut command = command(bins, "pg_restore", conn);
    command
        .args(["--no-owner", "--no-acl", "--exit-on-error", "--no-password"])
        .arg(format!("--table={table}"))
        .arg(format!("--dbname={}", conn.database))
        .arg(archive);
    run(command, "pg_restore").await.map(drop)
}

/// `pg_amcheck --heapallindexed` over a database: `Ok(findings)` with its
/// report (empty when clean).
pub async fn pg_amcheck(bins: &PgBinaries, conn: &ConnInfo) -> Result<String> {
    let mut command = command(bins, "pg_amcheck", conn);
    command
        .args(["--heapallindexed", "--install-missing", "--no-password"])
        .arg(format!("--database={}", conn.database));
    let output = super::child::output(command).await.map_err(|source| PgError::Spawn {
        program: bins.program("pg_amcheck"),
        source,
    })?;
    // Exit 2 means corruption found; its report is on stdout.
    match output.status.code() {
        Some(0) => Ok(String::new()),
        Some(2) => Ok(String::from_utf8_lossy(&[output.stdout, output.stderr].concat()).into_owned()),
        _ => Err(PgError::ProgramFailed {
            program: "pg_amcheck".into(),
            status: output.status,
            output: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        }),
    }
}

/// `pg_basebackup --format=plain --wal-method=stream` into `dir` (created
/// by the program): a standby's starting copy of the primary.
pub async fn basebackup_plain(bins: &PgBinaries, conn: &ConnInfo, dir: &Path) -> Result<()> {
    let mut command = command(bins, "pg_basebackup", conn);
    command
        .args([
            "--format=plain",
            "--wal-method=stream",
            "--checkpoint=fast",
            "--no-password",
        ])
        .arg(format!("--pgdata={}", dir.display()));
    run(command, "pg_basebackup").await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basebackup_points_are_read_from_verbose_output() {
        let stderr = "pg_basebackup: initiating base backup, waiting for checkpoint to complete\n\
                      pg_basebackup: checkpoint completed\n\
                      pg_basebackup: write-ahead log start point: 0/2000028 on timeline 1\n\
                      pg_basebackup: write-ahead log end point: 0/2000100\n\
                      pg_basebackup: base backup completed\n";
        assert_eq!(
            parse_basebackup_points(stderr),
            Some(BaseBackupPoints {
                start_lsn: "0/2000028".into(),
                timeline: 1,
                end_lsn: "0/2000100".into(),
            })
        );
        assert_eq!(parse_basebackup_points("pg_basebackup: error"), None);
    }
}
