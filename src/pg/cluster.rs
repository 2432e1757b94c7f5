//! Disposable PostgreSQL clusters: one per drill, in a temp dir, on a free
//! loopback port, with data checksums on.
//!
//! `initdb` runs once per machine and server version into a cached template
//! (under `$TMPDIR/drillbook-cache-<uid>`); each cluster is a copy of it, so a
//! fresh cluster costs a directory copy plus a server start.
//!
//! PostgreSQL refuses to run as root. When this process is root the server
//! (and `initdb`) run as an unprivileged user, `postgres` unless
//! `DRILL_PG_USER` names another, and everything they touch is owned by it.
//!
//! # Guarantees
//! [`Cluster::cleanup`] stops the server and removes the directory; `Drop`
//! does the same for a cluster that was not cleaned up (a panicking test).
//! With `DRILL_KEEP=1` the directory is kept and its path printed.

use std::ffi::CString;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::{PermissionsExt, chown};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

use super::{ConnInfo, PgBinaries, PgError, Result, Secret, quote_ident, quote_literal};
use crate::scratch::{self, keep_requested};

const SUPERUSER: &str = "postgres";
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// How to start a cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// A fixed port; `None` picks a free one.
    pub port: Option<u16>,
    /// Extra server settings, passed as `-c name=value`.
    pub settings: Vec<(String, String)>,
    /// Where the initdb template is cached: `DRILL_CACHE_DIR`, else
    /// `$TMPDIR/drillbook-cache-<uid>` when `None`.
    pub template_cache: Option<PathBuf>,
    /// Environment variables for the server process and whatever it runs
    /// (`archive_command`, `restore_command`): S3 endpoint and credentials.
    pub env: Vec<(String, String)>,
}

impl ClusterOptions {
    pub fn setting(mut self, name: &str, value: impl ToString) -> Self {
        self.settings.push((name.to_owned(), value.to_string()));
        self
    }

    /// Adds an environment variable for the server process.
    pub fn env(mut self, name: &str, value: impl ToString) -> Self {
        self.env.push((name.to_owned(), value.to_string()));
        self
    }

    /// WAL archiving on: `wal_level=replica`, `archive_mode=on`, the given
    /// `archive_command` (`%p` is the segment's path) and `archive_timeout`
    /// (a segment is switched and archived at least this often while there
    /// are writes, which bounds the RPO of archiving alone).
    pub fn archiving(self, archive_command: &str, archive_timeout: Duration) -> Self {
        self.setting("wal_level", "replica")
            .setting("archive_mode", "on")
            .setting("archive_command", archive_command)
            .setting("archive_timeout", format!("{}s", archive_timeout.as_secs().max(1)))
    }
}

/// The unprivileged account the server runs as when we are root.
#[derive(Debug, Clone, Copy)]
pub(super) struct ServerUser {
    pub(super) uid: u32,
    pub(super) gid: u32,
}

impl ServerUser {
    /// `None` when this process may run the server itself (not root).
    pub(super) fn resolve() -> Result<Option<Self>> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Ok(None);
        }
        let name = std::env::var("DRILL_PG_USER").unwrap_or_else(|_| "postgres".to_owned());
        lookup_user(&name).map(Some).ok_or(PgError::NoServerUser { user: name })
    }

    pub(super) fn own(&self, path: &Path) -> Result<()> {
        chown(path, Some(self.uid), Some(self.gid))
            .map_err(PgError::io(format!("give {} to the server user", path.display())))
    }
}

fn lookup_user(name: &str) -> Option<ServerUser> {
    let name = CString::new(name).ok()?;
    // SAFETY: all-zero is a valid `passwd` (null pointers, zero ids) to be filled in.
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buffer = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call and `buffer.len()` is its size;
    // getpwnam_r is the re-entrant variant, safe under concurrent lookups.
    let rc = unsafe { libc::getpwnam_r(name.as_ptr(), &mut entry, buffer.as_mut_ptr(), buffer.len(), &mut found) };
    (rc == 0 && !found.is_null()).then_some(ServerUser {
        uid: entry.pw_uid,
        gid: entry.pw_gid,
    })
}

/// A running PostgreSQL cluster owned by this process.
#[derive(Debug)]
pub struct Cluster {
    bins: PgBinaries,
    root: PathBuf,
    port: u16,
    password: Secret,
    server: Option<Child>,
    server_user: Option<ServerUser>,
    settings: Vec<(String, String)>,
    env: Vec<(String, String)>,
    keep: bool,
    cleaned_up: bool,
}

impl Cluster {
    /// Creates a cluster from the cached template and starts it.
    ///
    /// # Errors
    /// [`PgError::PortInUse`] when `options.port` is taken; [`PgError::NoServerUser`]
    /// as root without an unprivileged user; [`PgError::StartFailed`] with the
    /// server's log when it does not come up. Nothing is left behind on error.
    pub async fn start(bins: &PgBinaries, options: ClusterOptions) -> Result<Self> {
        scratch::reap_temp_dir_once();
        let server_user = ServerUser::resolve()?;
        if let Some(port) = options.port {
            ensure_port_free(port)?;
        }
        let template = ensure_template(bins, server_user, options.template_cache.as_deref())?;

        let root = tempfile::Builder::new()
            .prefix("drillbook-pg-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .map_err(PgError::io("create a temp dir for the cluster"))?
            .keep();
        let mut cluster = Self {
            bins: bins.clone(),
            root,
            port: 0,
            password: Secret::new(random_token()),
            server: None,
            server_user,
            settings: options.settings.clone(),
            env: options.env.clone(),
            keep: keep_requested(),
            cleaned_up: false,
        };
        // From here on `cluster`'s Drop removes what was made if we bail out.
        cluster.record_owner()?;
        if let Some(user) = server_user {
            user.own(&cluster.root)?;
        }
        copy_tree(&template, &cluster.data_dir(), server_user)?;
        cluster.start_prepared(&options, true).await?;
        Ok(cluster)
    }

    /// Starts a server on a data directory prepared elsewhere: a restored
    /// base backup (with `recovery.signal` for PITR) or a standby's copy
    /// (with `standby.signal`). `prepared` is copied into the cluster's own
    /// temp dir and left as it was. `password` is the superuser password of
    /// the cluster the data came from: it is in the copied catalog.
    ///
    /// The call returns once the server accepts connections: for a server in
    /// recovery that is when it reached a consistent state (hot standby).
    ///
    /// # Errors
    /// [`PgError::StartFailed`] with the server log when it exits first, for
    /// example because recovery could not find the WAL it needs.
    pub async fn start_from_data_dir(
        bins: &PgBinaries,
        prepared: &Path,
        password: Secret,
        options: ClusterOptions,
    ) -> Result<Self> {
        scratch::reap_temp_dir_once();
        let server_user = ServerUser::resolve()?;
        if let Some(port) = options.port {
            ensure_port_free(port)?;
        }
        if !prepared.join("PG_VERSION").is_file() {
            return Err(PgError::NotADataDir {
                path: prepared.to_path_buf(),
            });
        }
        let root = tempfile::Builder::new()
            .prefix("drillbook-pg-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .map_err(PgError::io("create a temp dir for the cluster"))?
            .keep();
        let mut cluster = Self {
            bins: bins.clone(),
            root,
            port: 0,
            password,
            server: None,
            server_user,
            settings: options.settings.clone(),
            env: options.env.clone(),
            keep: keep_requested(),
            cleaned_up: false,
        };
        cluster.record_owner()?;
        if let Some(user) = server_user {
            user.own(&cluster.root)?;
        }
        copy_tree(prepared, &cluster.data_dir(), server_user)?;
        // PostgreSQL insists on a private data directory.
        fs::set_permissions(cluster.data_dir(), fs::Permissions::from_mode(0o700))
            .map_err(PgError::io("restrict the data directory"))?;
        cluster.start_prepared(&options, false).await?;
        Ok(cluster)
    }

    async fn start_prepared(&mut self, options: &ClusterOptions, set_password: bool) -> Result<()> {
        let cluster = self;
        fs::create_dir(cluster.socket_dir()).map_err(PgError::io("create the socket dir"))?;
        if let Some(user) = cluster.server_user {
            user.own(&cluster.socket_dir())?;
        }

        // An automatically picked port can be taken between our probe and the
        // server's bind; pick again a few times before giving up.
        let attempts = if options.port.is_some() { 1 } else { 5 };
        for attempt in 1..=attempts {
            cluster.port = match options.port {
                Some(port) => port,
                None => free_port()?,
            };
            match cluster.launch(set_password).await {
                Ok(()) => return Ok(()),
                Err(PgError::StartFailed { log_tail, .. }) if is_bind_failure(&log_tail) => {
                    if attempt == attempts {
                        return Err(PgError::PortInUse { port: cluster.port });
                    }
                    tracing::debug!(port = cluster.port, "port taken after probing, picking another");
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the loop returns on its last attempt")
    }

    /// Starts the server on `self.port` and waits until it accepts connections.
    async fn launch(&mut self, set_password: bool) -> Result<()> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(PgError::io("open the server log"))?;
        let log_offset = log.metadata().map(|m| m.len()).unwrap_or(0);
        let mut command = Command::new(self.bins.program("postgres"));
        command
            .arg("-D")
            .arg(self.data_dir())
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.socket_dir().display()))
            .args(["-c", "unix_socket_permissions=0700"])
            // A cluster lives in a temp dir and goes with it: nothing it writes
            // must survive an OS crash. A killed server loses nothing without
            // fsync (its writes are in the OS already), so the drills' SIGKILLs
            // mean what they do in production. `settings` may turn it back on.
            .args(["-c", "fsync=off"]);
        for (name, value) in &self.settings {
            command.arg("-c").arg(format!("{name}={value}"));
        }
        command
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(PgError::io("share the server log"))?)
            .stderr(log);
        if let Some(user) = self.server_user {
            command.uid(user.uid).gid(user.gid);
        }
        let child = command.spawn().map_err(|source| PgError::Spawn {
            program: self.bins.program("postgres"),
            source,
        })?;
        self.server = Some(child);

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.server.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.server = None;
                tracing::debug!(%status, "postgres exited during start");
                return Err(PgError::StartFailed {
                    log: self.log_path(),
                    log_tail: read_tail(&self.log_path(), log_offset),
                });
            }
            if let Ok(mut conn) = PgConnection::connect_with(&self.socket_options()).await {
                if !set_password {
                    let _ = conn.close().await;
                    tracing::debug!(port = self.port, root = %self.root.display(), "cluster ready");
                    return Ok(());
                }
                // initdb set no password; each cluster gets its own random one.
                let sql = format!(
                    "ALTER ROLE {SUPERUSER} PASSWORD {}",
                    quote_literal(self.password.expose())
                );
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                    .map_err(PgError::sql("set the superuser password"))?;
                let _ = conn.close().await;
                tracing::debug!(port = self.port, root = %self.root.display(), "cluster ready");
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop_blocking();
                return Err(PgError::StartTimeout {
                    log: self.log_path(),
                    seconds: START_TIMEOUT.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Connection facts for the `postgres` database as the superuser.
    pub fn admin(&self) -> ConnInfo {
        ConnInfo {
            host: Ipv4Addr::LOCALHOST.to_string(),
            port: self.port,
            user: SUPERUSER.to_owned(),
            password: self.password.clone(),
            database: "postgres".to_owned(),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn binaries(&self) -> &PgBinaries {
        &self.bins
    }

    /// The temp dir holding the data dir, socket and log.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.root.join("postgres.log")
    }

    fn socket_dir(&self) -> PathBuf {
        self.root.join("sock")
    }

    fn socket_options(&self) -> PgConnectOptions {
        PgConnectOptions::new()
            .socket(self.socket_dir())
            .port(self.port)
            .username(SUPERUSER)
            .database("postgres")
    }

    /// The superuser password (pass it to [`Cluster::start_from_data_dir`]
    /// for a copy of this cluster's data).
    pub fn password(&self) -> &Secret {
        &self.password
    }

    /// A superuser connection over the Unix socket (trust auth): works on a
    /// standby and during recovery as soon as connections are accepted.
    pub async fn connect_local(&self) -> Result<PgConnection> {
        PgConnection::connect_with(&self.socket_options())
            .await
            .map_err(PgError::sql(format!("connect to the cluster on port {}", self.port)))
    }

    /// Promotes a standby (or a server paused in recovery) to a primary and
    /// waits until it accepts writes (`pg_promote(wait => true)`).
    pub async fn promote(&self) -> Result<()> {
        let mut conn = self.connect_local().await?;
        let promoted: bool = sqlx::query_scalar("SELECT pg_promote(true, 60)")
            .fetch_one(&mut conn)
            .await
            .map_err(PgError::sql("promote the standby (pg_promote)"))?;
        let _ = conn.close().await;
        if !promoted {
            return Err(PgError::StartFailed {
                log: self.log_path(),
                log_tail: format!(
                    "pg_promote did not finish within 60 s\n{}",
                    read_tail(&self.log_path(), 0)
                ),
            });
        }
        Ok(())
    }

    /// Starts a stopped (or killed) server again on the same data directory
    /// and port, with the same settings and environment.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        self.launch(false).await
    }

    /// The server log written since byte `from` (all of it with 0).
    pub fn log_since(&self, from: u64) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(self.log_path()) {
            let _ = file.seek(SeekFrom::Start(from));
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    /// Fails unless the account the server runs as may execute `program`
    /// (an `archive_command` / `restore_command` binary). Checked by running
    /// `test -x` as that user, so every directory above counts.
    pub fn check_executable_by_server(program: &Path) -> Result<()> {
        let Some(user) = ServerUser::resolve()? else {
            return Ok(());
        };
        let status = Command::new("/bin/sh")
            .args(["-c", "test -r \"$1\" && test -x \"$1\"", "sh"])
            .arg(program)
            .uid(user.uid)
            .gid(user.gid)
            .current_dir("/")
            .stdin(Stdio::null())
            .status()
            .map_err(|source| PgError::Spawn {
                program: "/bin/sh".into(),
                source,
            })?;
        if status.success() {
            return Ok(());
        }
        // The first directory on the way the user cannot search, found the
        // same way; the program itself when none blocks.
        let ancestors: Vec<&Path> = program.ancestors().skip(1).collect();
        let blocked = Command::new("/bin/sh")
            .args([
                "-c",
                "for d; do test -x \"$d\" || { printf %s \"$d\"; exit 0; }; done",
                "sh",
            ])
            .args(ancestors.iter().rev())
            .uid(user.uid)
            .gid(user.gid)
            .current_dir("/")
            .stdin(Stdio::null())
            .output()
            .ok()
            .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).into_owned()))
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or_else(|| program.to_path_buf());
        Err(PgError::NotReachableByServer {
            path: program.to_path_buf(),
            user: std::env::var("DRILL_PG_USER").unwrap_or_else(|_| "postgres".to_owned()),
            blocked,
        })
    }

    /// Fails unless the account the server runs as can reach `dir` (every
    /// directory down to it searchable): where a data directory is to go.
    /// `dir` itself must exist.
    ///
    /// # Errors
    /// [`PgError::DirNotReachableByServer`] naming the first directory it cannot search.
    pub fn check_dir_reachable_by_server(dir: &Path) -> Result<()> {
        let Some(user) = ServerUser::resolve()? else {
            return Ok(());
        };
        let mut ways: Vec<&Path> = dir.ancestors().collect();
        ways.reverse();
        let output = Command::new("/bin/sh")
            .args([
                "-c",
                "for d; do test -x \"$d\" || { printf %s \"$d\"; exit 0; }; done",
                "sh",
            ])
            .args(&ways)
            .uid(user.uid)
            .gid(user.gid)
            .current_dir("/")
            .stdin(Stdio::null())
            .output()
            .map_err(|source| PgError::Spawn {
                program: "/bin/sh".into(),
                source,
            })?;
        if output.stdout.is_empty() {
            return Ok(());
        }
        Err(PgError::DirNotReachableByServer {
            dir: dir.to_path_buf(),
            user: std::env::var("DRILL_PG_USER").unwrap_or_else(|_| "postgres".to_owned()),
            blocked: PathBuf::from(String::from_utf8_lossy(&output.stdout).into_owned()),
        })
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        self.server.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Creates an empty database and returns how to reach it.
    pub async fn create_database(&self, name: &str) -> Result<ConnInfo> {
        create_database(&self.admin(), name).await?;
        Ok(self.admin().with_database(name))
    }

    /// Fast shutdown (SIGINT), then SIGKILL if it takes longer than 30 s.
    pub async fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.server.take() else {
            return Ok(());
        };
        signal(&child, libc::SIGINT);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while matches!(child.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                tracing::warn!(port = self.port, "postgres ignored fast shutdown; killing it");
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Names this process as the cluster dir's owner, so that a later
    /// process reaps the cluster if this one dies without cleaning up
    /// ([`crate::scratch`]). A kept cluster (`DRILL_KEEP=1`) has no owner.
    fn record_owner(&self) -> Result<()> {
        match scratch::Owner::current() {
            Some(owner) if !self.keep => {
                scratch::record_owner(&self.root, owner).map_err(PgError::io("record the cluster's owner"))
            }
            _ => Ok(()),
        }
    }

    /// Kills the server outright (SIGKILL), as a crash or a lost host would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server and removes its directory (kept with `DRILL_KEEP=1`).
    pub async fn cleanup(mut self) -> Result<()> {
        self.stop().await?;
        self.cleaned_up = true;
        self.remove_files()
    }

    fn stop_blocking(&mut self) {
        let Some(mut child) = self.server.take() else { return };
        signal(&child, libc::SIGINT);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    fn remove_files(&self) -> Result<()> {
        if self.keep {
            eprintln!(
                "DRILL_KEEP=1: kept PostgreSQL cluster at {} (data {}, log {}, last port {})",
                self.root.display(),
                self.data_dir().display(),
                self.log_path().display(),
                self.port
            );
            return Ok(());
        }
        fs::remove_dir_all(&self.root).map_err(PgError::io(format!("remove cluster dir {}", self.root.display())))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.cleaned_up {
            return;
        }
        self.stop_blocking();
        if let Err(e) = self.remove_files() {
            eprintln!("drillbook: {e}");
        }
    }
}

/// `CREATE DATABASE`, refusing to touch one that exists.
pub async fn create_database(admin: &ConnInfo, name: &str) -> Result<()> {
    let mut conn = PgConnection::connect_with(&admin.connect_options())
        .await
        .map_err(PgError::sql(format!("connect to {admin}")))?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut conn)
        .await
        .map_err(PgError::sql("look up existing databases"))?;
    if exists {
        return Err(PgError::DatabaseExists {
            database: name.to_owned(),
        });
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {}", quote_ident(name))))
        .execute(&mut conn)
        .await
        .map_err(PgError::sql(format!("create database {name:?}")))?;
    let _ = conn.close().await;
    Ok(())
}

fn signal(child: &Child, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill has no memory-safety preconditions; pid is our own child,
    // not yet reaped, so it cannot name an unrelated process.
    unsafe { libc::kill(pid, signal) };
}

pub(super) fn ensure_port_free(port: u16) -> Result<()> {
    match TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(PgError::PortInUse { port }),
        Err(e) => Err(PgError::io(format!("probe port {port}"))(e)),
    }
}

pub(super) fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(PgError::io("find a free port on 127.0.0.1"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(PgError::io("read the probed port"))
}

pub(super) fn is_bind_failure(log: &str) -> bool {
    log.contains("could not bind") || log.contains("Address already in use")
}

pub(super) fn read_tail(path: &Path, from: u64) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(path) {
        let _ = file.seek(SeekFrom::Start(from));
        let _ = file.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn random_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 18];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Returns the template data dir for these binaries, running `initdb` into it
/// the first time. Concurrent test processes race safely: each initdb's into
/// its own dir and the first rename wins.
fn ensure_template(bins: &PgBinaries, server_user: Option<ServerUser>, cache: Option<&Path>) -> Result<PathBuf> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let cache = cache
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("DRILL_CACHE_DIR").map(PathBuf::from))
        .unwrap_or_else(|| std::env::temp_dir().join(format!("drillbook-cache-{uid}")));
    fs::create_dir_all(&cache).map_err(PgError::io(format!("create cache dir {}", cache.display())))?;

    let recipe = format!("{}|{}|{INITDB_ARGS:?}", bins.bin_dir().display(), bins.version());
    let key = hex::encode(&Sha256::digest(recipe.as_bytes())[..6]);
    let template = cache.join(format!("template-pg{}-{key}", bins.major_version()));
    if template.join("PG_VERSION").is_file() {
        return Ok(template);
    }

    let started = Instant::now();
    let staging = cache.join(format!(".initdb-{}-{}", std::process::id(), random_token()));
    fs::create_dir(&staging).map_err(PgError::io("create the initdb staging dir"))?;
    fs::set_permissions(&staging, fs::Permissions::from_mode(0o700))
        .map_err(PgError::io("restrict the initdb staging dir"))?;
    if let Some(user) = server_user {
        user.own(&staging)?;
    }
    let result = run_initdb(bins, &staging, server_user);
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&staging);
        return Err(e);
    }
    if fs::rename(&staging, &template).is_err() {
        // Another process won the race; its template is as good as ours.
        let _ = fs::remove_dir_all(&staging);
    }
    tracing::info!(template = %template.display(), elapsed = ?started.elapsed(), "created cluster template");
    Ok(template)
}

const INITDB_ARGS: [&str; 7] = [
    "--data-checksums",
    "--encoding=UTF8",
    "--locale=C",
    "--username=postgres",
    "--auth-local=trust",
    "--auth-host=scram-sha-256",
    "--no-sync",
];

fn run_initdb(bins: &PgBinaries, data_dir: &Path, server_user: Option<ServerUser>) -> Result<()> {
    let program = bins.program("initdb");
    let mut command = Command::new(&program);
    command.arg("-D").arg(data_dir).args(INITDB_ARGS).current_dir("/");
    if let Some(user) = server_user {
        command.uid(user.uid).gid(user.gid);
    }
    let output = command.output().map_err(|source| PgError::Spawn {
        program: program.clone(),
        source,
    })?;
    if !output.status.success() {
        return Err(PgError::ProgramFailed {
            program: program.display().to_string(),
            status: output.status,
            output: String::from_utf8_lossy(&[output.stdout, output.stderr].concat()).into_owned(),
        });
    }
    Ok(())
}

/// Copies a directory tree, keeping permission bits, optionally giving every
/// entry to `owner`.
fn copy_tree(from: &Path, to: &Path, owner: Option<ServerUser>) -> Result<()> {
    let meta = fs::metadata(from).map_err(PgError::io(format!("read {}", from.display())))?;
    fs::create_dir(to).map_err(PgError::io(format!("create {}", to.display())))?;
    fs::set_permissions(to, meta.permissions()).map_err(PgError::io(format!("chmod {}", to.display())))?;
    if let Some(user) = owner {
        user.own(to)?;
    }
    for entry in fs::read_dir(from).map_err(PgError::io(format!("list {}", from.display())))? {
        let entry = entry.map_err(PgError::io(format!("list {}", from.display())))?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        let kind = entry
            .file_type()
            .map_err(PgError::io(format!("stat {}", source.display())))?;
        if kind.is_dir() {
            copy_tree(&source, &target, owner)?;
        } else if kind.is_symlink() {
            let link = fs::read_link(&source).map_err(PgError::io(format!("read link {}", source.display())))?;
            std::os::unix::fs::symlink(link, &target)
                .map_err(PgError::io(format!("create link {}", target.display())))?;
        } else {
            fs::copy(&source, &target).map_err(PgError::io(format!("copy {}", source.display())))?;
            if let Some(user) = owner {
                user.own(&target)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_failures_are_recognised_in_the_server_log() {
        assert!(is_bind_failure(
            "LOG:  could not bind IPv4 address \"127.0.0.1\": Address already in use"
        ));
        assert!(!is_bind_failure("FATAL:  data directory has wrong ownership"));
    }

    #[test]
    fn a_taken_port_is_refused_with_a_clear_error() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let err = ensure_port_free(port).unwrap_err();
        assert!(matches!(err, PgError::PortInUse { port: p } if p == port), "{err}");
        assert!(err.to_string().contains("already in use"), "{err}");
    }
}
