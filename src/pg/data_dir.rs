//! A server on a data directory an operator names, not a disposable
//! cluster: `drillbook recover --pgdata DIR` leaves it running after
//! drillbook exits (a paused recovery stays open for inspection), and the
//! next `drillbook recover --pgdata DIR` finds it again from the directory.
//!
//! - It is started with `pg_ctl`, which puts the postmaster in a session of
//!   its own: a Ctrl-C at drillbook's terminal does not reach it. As root it
//!   runs as the server user, who owns the directory.
//! - Its settings live in a marked block of `postgresql.auto.conf`, so a
//!   restart brings back the same server; secrets (the S3 credentials its
//!   `restore_command` needs) travel only in its environment.
//! - drillbook reaches it over a Unix socket in the data directory itself
//!   (mode 0700): only the server's own account and root can open it, and
//!   they can read the data files anyway, so that socket trusts local
//!   connections (first line of `drillbook_hba.conf`, ahead of the backup's
//!   own `pg_hba.conf` rules, which keep governing TCP).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

use super::cluster::{ServerUser, read_tail};
use super::{PgBinaries, PgError, Result};

/// The server's log, in the data directory.
pub const LOG_FILE: &str = "drillbook-server.log";
const HBA_FILE: &str = "drillbook_hba.conf";
const AUTO_CONF: &str = "postgresql.auto.conf";
const BLOCK_BEGIN: &str = "# --- drillbook recover: begin (rewritten by drillbook; do not edit inside) ---";
const BLOCK_END: &str = "# --- drillbook recover: end ---";
/// The settings that place a server: where it listens and who may connect.
const PLACEMENT: [&str; 5] = [
    "port",
    "listen_addresses",
    "unix_socket_directories",
    "unix_socket_permissions",
    "hba_file",
];
const START_TIMEOUT: Duration = Duration::from_secs(600);
const STOP_TIMEOUT_SECONDS: &str = "60";

/// A server running (or once run) on an operator's data directory.
#[derive(Debug, Clone)]
pub struct DataDirServer {
    bins: PgBinaries,
    pgdata: PathBuf,
    server_user: Option<ServerUser>,
}

impl DataDirServer {
    /// Makes `pgdata` (a restored base backup) ready to run as a server on
    /// `port` with `settings`: a `postgresql.conf` when the backup has none
    /// (Debian keeps it in /etc), drillbook's hba file, the settings block,
    /// everything owned by the server user and the directory private.
    ///
    /// # Errors
    /// [`PgError::NotADataDir`] without `PG_VERSION`; I/O errors naming the file.
    pub fn prepare(bins: &PgBinaries, pgdata: &Path, port: u16, settings: &[(String, String)]) -> Result<Self> {
        if !pgdata.join("PG_VERSION").is_file() {
            return Err(PgError::NotADataDir {
                path: pgdata.to_path_buf(),
            });
        }
        let conf = pgdata.join("postgresql.conf");
        if !conf.exists() {
            fs::write(
                &conf,
                "# Written by drillbook recover: the base backup had no postgresql.conf.\n",
            )
            .map_err(PgError::io(format!("write {}", conf.display())))?;
        }
        let own_rules = fs::read_to_string(pgdata.join("pg_hba.conf")).unwrap_or_default();
        let hba = format!(
            "# drillbook: the Unix socket lives in the data directory (mode 0700); only the server's account\n\
             # and root can reach it.\nlocal all all trust\n# The backup's own rules:\n{own_rules}"
        );
        fs::write(pgdata.join(HBA_FILE), hba).map_err(PgError::io("write the recovery's hba file"))?;
        let server = Self {
            bins: bins.clone(),
            pgdata: pgdata.to_path_buf(),
            server_user: ServerUser::resolve()?,
        };
        let mut all = vec![
            ("port".to_owned(), port.to_string()),
            ("listen_addresses".to_owned(), "127.0.0.1".to_owned()),
            ("unix_socket_directories".to_owned(), pgdata.display().to_string()),
            ("unix_socket_permissions".to_owned(), "0700".to_owned()),
            ("hba_file".to_owned(), pgdata.join(HBA_FILE).display().to_string()),
        ];
        all.extend(settings.iter().cloned());
        server.write_settings(&all)?;
        fs::set_permissions(pgdata, fs::Permissions::from_mode(0o700))
            .map_err(PgError::io("restrict the data directory"))?;
        if let Some(user) = server.server_user {
            own_tree(pgdata, user)?;
        }
        Ok(server)
    }

    /// A prepared data directory copied or moved to `pgdata`: its placement
    /// (port, socket, hba file) follows it, every other setting stays.
    ///
    /// # Errors
    /// As [`DataDirServer::prepare`].
    pub fn relocated(bins: &PgBinaries, pgdata: &Path, port: u16) -> Result<Self> {
        let kept: Vec<(String, String)> = Self::open(bins, pgdata)?
            .settings()
            .into_iter()
            .filter(|(name, _)| !PLACEMENT.contains(&name.as_str()))
            .collect();
        Self::prepare(bins, pgdata, port, &kept)
    }

    /// Moves the (stopped) server to another port.
    ///
    /// # Errors
    /// I/O errors naming the file.
    pub fn set_port(&self, port: u16) -> Result<()> {
        self.set_setting("port", Some(&port.to_string()))
    }

    /// Sets one setting of the block (`None` removes it), keeping the
    /// others; a running server sees it after a restart or, for settings
    /// PostgreSQL reloads, `pg_reload_conf()`.
    ///
    /// # Errors
    /// I/O errors naming the file.
    pub fn set_setting(&self, name: &str, value: Option<&str>) -> Result<()> {
        let mut settings: Vec<(String, String)> = self.settings().into_iter().filter(|(n, _)| n != name).collect();
        if let Some(value) = value {
            settings.push((name.to_owned(), value.to_owned()));
        }
        self.write_settings(&settings)
    }

    /// The server of a data directory prepared by [`DataDirServer::prepare`],
    /// running or not.
    ///
    /// # Errors
    /// [`PgError::NotADataDir`] when `pgdata` holds no data directory.
    pub fn open(bins: &PgBinaries, pgdata: &Path) -> Result<Self> {
        if !pgdata.join("PG_VERSION").is_file() {
            return Err(PgError::NotADataDir {
                path: pgdata.to_path_buf(),
            });
        }
        Ok(Self {
            bins: bins.clone(),
            pgdata: pgdata.to_path_buf(),
            server_user: ServerUser::resolve()?,
        })
    }

    pub fn pgdata(&self) -> &Path {
        &self.pgdata
    }

    pub fn log_path(&self) -> PathBuf {
        self.pgdata.join(LOG_FILE)
    }

    /// Replaces the settings block in `postgresql.auto.conf` (the rest of the
    /// file, the backup's `ALTER SYSTEM` settings, stays; the block comes
    /// last, so its settings win).
    ///
    /// # Errors
    /// I/O errors naming the file.
    pub fn write_settings(&self, settings: &[(String, String)]) -> Result<()> {
        let path = self.pgdata.join(AUTO_CONF);
        let existing = fs::read_to_string(&path).unwrap_or_default();
        let mut text = without_block(&existing);
        text.push_str(BLOCK_BEGIN);
        text.push('\n');
        for (name, value) in settings {
            text.push_str(&format!("{name} = '{}'\n", value.replace('\'', "''")));
        }
        text.push_str(BLOCK_END);
        text.push('\n');
        let staged = self.pgdata.join(format!("{AUTO_CONF}.drillbook-new"));
        fs::write(&staged, text).map_err(PgError::io(format!("write {}", staged.display())))?;
        if let Some(user) = self.server_user {
            user.own(&staged)?;
        }
        fs::rename(&staged, &path).map_err(PgError::io(format!("replace {}", path.display())))
    }

    /// The port the settings block names.
    pub fn port(&self) -> Option<u16> {
        let text = fs::read_to_string(self.pgdata.join(AUTO_CONF)).ok()?;
        block_setting(&text, "port")?.parse().ok()
    }

    /// The settings in drillbook's block, in order.
    pub fn settings(&self) -> Vec<(String, String)> {
        let text = fs::read_to_string(self.pgdata.join(AUTO_CONF)).unwrap_or_default();
        block_settings(&text)
    }

    /// Starts the server detached (`pg_ctl start`) with `env` as its
    /// environment on top of this process's, and waits until it accepts
    /// connections (for a recovery: once it is consistent, as a hot standby).
    ///
    /// # Errors
    /// [`PgError::StartFailed`] with the log's tail when the server exits first.
    pub async fn start(&self, env: &[(String, String)]) -> Result<()> {
        let log = self.log_path();
        let mut command = self.pg_ctl();
        command
            .arg("start")
            .arg("-D")
            .arg(&self.pgdata)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", &START_TIMEOUT.as_secs().to_string()])
            .envs(env.iter().map(|(k, v)| (k, v)));
        let log_offset = fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let output = run(command).await?;
        if !output.status.success() {
            return Err(PgError::StartFailed {
                log: log.clone(),
                log_tail: format!(
                    "{}\n{}",
                    String::from_utf8_lossy(&output.stderr).trim(),
                    read_tail(&log, log_offset)
                ),
            });
        }
        Ok(())
    }

    /// [`DataDirServer::start`] on a port nobody chose: when another process
    /// took it between the probe and the server's bind, another free port
    /// is written into the settings and the start tried again (5 times).
    ///
    /// # Errors
    /// As [`DataDirServer::start`].
    pub async fn start_on_a_free_port(&self, env: &[(String, String)]) -> Result<()> {
        let mut attempt = 1;
        loop {
            match self.start(env).await {
                Err(PgError::StartFailed { log_tail, .. })
                    if attempt < 5 && super::cluster::is_bind_failure(&log_tail) =>
                {
                    let port = super::cluster::free_port()?;
                    tracing::debug!(
                        port,
                        "the probed port was taken before the server bound it; picking another"
                    );
                    self.set_port(port)?;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Fast shutdown (`pg_ctl stop -m fast`), waiting up to a minute, then
    /// an immediate one. A server that is not running is fine.
    ///
    /// # Errors
    /// When `pg_ctl` cannot be run or the server outlives both.
    pub async fn stop(&self) -> Result<()> {
        if self.postmaster_pid().is_none() {
            return Ok(());
        }
        for mode in ["fast", "immediate"] {
            let mut command = self.pg_ctl();
            command
                .args(["stop", "-m", mode, "-w", "-t", STOP_TIMEOUT_SECONDS, "-D"])
                .arg(&self.pgdata);
            let output = run(command).await?;
            if output.status.success() || self.postmaster_pid().is_none() {
                return Ok(());
            }
            tracing::warn!(mode, pgdata = %self.pgdata.display(), "pg_ctl stop did not stop the server");
        }
        Err(PgError::ProgramFailed {
            program: "pg_ctl stop".into(),
            status: std::process::ExitStatus::default(),
            output: format!("the server on {} is still running", self.pgdata.display()),
        })
    }

    /// Immediate shutdown, blocking: for cleanup where nothing can be awaited
    /// (a drop). The server recovers from it like from a crash.
    ///
    /// # Errors
    /// When `pg_ctl` cannot be run.
    pub fn stop_now(&self) -> Result<()> {
        if self.postmaster_pid().is_none() {
            return Ok(());
        }
        let mut command = self.pg_ctl();
        command
            .args(["stop", "-m", "immediate", "-w", "-t", STOP_TIMEOUT_SECONDS, "-D"])
            .arg(&self.pgdata)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command.status().map_err(|source| PgError::Spawn {
            program: self.bins.program("pg_ctl"),
            source,
        })?;
        Ok(())
    }

    /// Fails with [`PgError::PortInUse`] when `port` is taken on 127.0.0.1.
    ///
    /// # Errors
    /// As said.
    pub fn check_port(port: u16) -> Result<()> {
        super::cluster::ensure_port_free(port)
    }

    /// A free port on 127.0.0.1.
    ///
    /// # Errors
    /// When none can be probed.
    pub fn free_port() -> Result<u16> {
        super::cluster::free_port()
    }

    /// Whether the server of this data directory runs: its `postmaster.pid`
    /// names a live `postgres` process on exactly this directory.
    pub fn is_running(&self) -> bool {
        self.postmaster_pid().is_some()
    }

    fn postmaster_pid(&self) -> Option<i32> {
        let text = fs::read_to_string(self.pgdata.join("postmaster.pid")).ok()?;
        let pid: i32 = text.lines().next()?.trim().parse().ok()?;
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        let ours = args.first().is_some_and(|program| program.ends_with(b"postgres"))
            && args.contains(&self.pgdata.as_os_str().as_encoded_bytes());
        ours.then_some(pid)
    }

    /// The server log from byte `from` on.
    pub fn log_since(&self, from: u64) -> String {
        use std::io::{Read, Seek, SeekFrom};
        let mut text = String::new();
        if let Ok(mut file) = fs::File::open(self.log_path()) {
            let _ = file.seek(SeekFrom::Start(from));
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    /// The log's current length, to read only what a later step writes.
    pub fn log_len(&self) -> u64 {
        fs::metadata(self.log_path()).map(|m| m.len()).unwrap_or(0)
    }

    /// A superuser connection over the data directory's socket.
    ///
    /// # Errors
    /// When the server does not accept it (not running, not yet consistent).
    pub async fn connect(&self) -> Result<PgConnection> {
        self.connect_to("postgres").await
    }

    /// [`DataDirServer::connect`] to `database`.
    ///
    /// # Errors
    /// As [`DataDirServer::connect`].
    pub async fn connect_to(&self, database: &str) -> Result<PgConnection> {
        let port = self.port().ok_or_else(|| PgError::NotADataDir {
            path: self.pgdata.clone(),
        })?;
        let options = PgConnectOptions::new()
            .socket(&self.pgdata)
            .port(port)
            .username("postgres")
            .database(database)
            .application_name(super::conn::session_name());
        PgConnection::connect_with(&options).await.map_err(PgError::sql(format!(
            "connect to the server on {}",
            self.pgdata.display()
        )))
    }

    fn pg_ctl(&self) -> Command {
        let mut command = Command::new(self.bins.program("pg_ctl"));
        command.current_dir("/").stdin(Stdio::null());
        if let Some(user) = self.server_user {
            command.uid(user.uid).gid(user.gid);
        }
        command
    }
}

/// Runs `pg_ctl` to its end off the async threads. Not a [`super::child`]:
/// the server it starts must outlive drillbook.
async fn run(mut command: Command) -> Result<std::process::Output> {
    let program = PathBuf::from(command.get_program());
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    tokio::task::spawn_blocking(move || command.output())
        .await
        .map_err(|e| PgError::io("wait for pg_ctl")(std::io::Error::other(e)))?
        .map_err(|source| PgError::Spawn { program, source })
}

/// `text` without drillbook's block.
fn without_block(text: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in text.lines() {
        if line == BLOCK_BEGIN {
            inside = true;
        } else if line == BLOCK_END {
            inside = false;
        } else if !inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The settings inside drillbook's block.
fn block_settings(text: &str) -> Vec<(String, String)> {
    let Some(block) = text
        .split_once(BLOCK_BEGIN)
        .and_then(|(_, rest)| rest.split_once(BLOCK_END))
        .map(|(block, _)| block)
    else {
        return Vec::new();
    };
    block
        .lines()
        .filter_map(|line| {
            let (key, value) = line.split_once('=')?;
            let value = value.trim();
            let value = value
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .unwrap_or(value);
            Some((key.trim().to_owned(), value.replace("''", "'")))
        })
        .collect()
}

/// A setting's value inside drillbook's block.
fn block_setting(text: &str, name: &str) -> Option<String> {
    block_settings(text)
        .into_iter()
        .rev()
        .find_map(|(key, value)| (key == name).then_some(value))
}

/// Restricts `dir` (mode 0700) and, when this process is root, gives it
/// with everything in it to the server's account: for files only the
/// server reads (a local copy of archived WAL its `restore_command` copies).
///
/// # Errors
/// When the mode or owner cannot be set.
pub fn hand_to_server_user(dir: &Path) -> Result<()> {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(PgError::io(format!("restrict {}", dir.display())))?;
    match ServerUser::resolve()? {
        Some(user) => own_tree(dir, user),
        None => Ok(()),
    }
}

fn own_tree(path: &Path, user: ServerUser) -> Result<()> {
    let meta = fs::symlink_metadata(path).map_err(PgError::io(format!("stat {}", path.display())))?;
    if meta.file_type().is_symlink() {
        // The link itself, never what it points to.
        return std::os::unix::fs::lchown(path, Some(user.uid), Some(user.gid))
            .map_err(PgError::io(format!("give {} to the server user", path.display())));
    }
    user.own(path)?;
    if meta.is_dir() {
        for entry in fs::read_dir(path).map_err(PgError::io(format!("list {}", path.display())))? {
            let entry = entry.map_err(PgError::io(format!("list {}", path.display())))?;
            own_tree(&entry.path(), user)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settings_block_is_replaced_and_read_back() {
        let backup_settings = "# Do not edit this file manually!\nwork_mem = '8MB'\n";
        let with = format!("{backup_settings}{BLOCK_BEGIN}\nport = '5999'\nrecovery_target_lsn = '0/1'\n{BLOCK_END}\n");
        assert_eq!(without_block(&with), backup_settings);
        assert_eq!(block_setting(&with, "port").as_deref(), Some("5999"));
        assert_eq!(
            block_setting(backup_settings, "work_mem"),
            None,
            "only the block counts"
        );
    }
}
