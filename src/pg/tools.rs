//! Typed wrappers of the PostgreSQL client programs drills rely on.
//!
//! Connection facts reach the programs through libpq environment variables,
//! never argv, so passwords do not show in `ps`.

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
async fn run(mut command: Command, program: &str) -> Result<String> {
    let output = command.output().await.map_err(|source| PgError::Spawn {
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
        let mut child = command.spawn().map_err(|source| PgError::Spawn {
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
