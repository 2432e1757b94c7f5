//! The containers backend: a Postgres container per server and an S3
//! container, through testcontainers (0.27, re-exported by
//! testcontainers-modules 0.15), ports mapped to loopback.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `DRILL_PG_IMAGE` | Postgres image `name[:tag]`; must honour `POSTGRES_USER`/`POSTGRES_PASSWORD`/`POSTGRES_DB` and log "database system is ready to accept connections" | `drillbook/postgres:local` (built by `ci/images/build.sh`) |
//! | `DRILL_S3_PRESET` | `moto` or `localstack` (LocalStack 4.5, the module's pin) | `moto` |
//! | `DRILL_S3_IMAGE` | any S3 image `name[:tag]` instead of the preset | the preset's (`drillbook/moto-s3:local`) |
//! | `DRILL_S3_PORT` | its S3 port | the preset's (5000 moto, 4566 LocalStack) |
//! | `DRILL_S3_READY` | readiness: `stdout:<text>`, `stderr:<text>` or `sleep:<seconds>` | the preset's |
//!
//! Containers are removed by [`ContainersEnvironment::cleanup`], and by
//! `Drop` on a panic; `DRILL_KEEP=1` keeps them and prints their ids.
//! When Docker cannot be reached, [`ContainersEnvironment::start`] fails
//! once, saying how to start it or to use the embedded backend.
//!
//! Client tools (`pg_dump`, `pg_restore`) run on this machine, so the
//! image's major version must not be newer than the local tools.
//!
//! # Caveats
//!
//! No K3s: `DRILL_K3S_IMAGE` is not supported in this version (no K3s image
//! can be built or pulled here). The drills that need a Kubernetes cluster
//! stay in their `#[ignore]`d cluster lane on every backend.

use std::path::{Path, PathBuf};
use std::time::Duration;

use testcontainers_modules::localstack::LocalStack;
use testcontainers_modules::postgres::Postgres;
use testcontainers_modules::testcontainers::core::{AccessMode, IntoContainerPort, Mount, WaitFor};
use testcontainers_modules::testcontainers::runners::AsyncRunner;
use testcontainers_modules::testcontainers::{ContainerAsync, GenericImage, ImageExt, TestcontainersError};

use super::{APP_DATABASE, BACKUP_BUCKET, EnvError, Result};
use crate::fixtures::{self, FixtureSpec, SeedSummary};
use crate::pg::{ConnInfo, PgBinaries, Secret};
use crate::store::{S3Config, Store};

pub const DEFAULT_PG_IMAGE: &str = "drillbook/postgres:local";
pub const DEFAULT_MOTO_IMAGE: &str = "drillbook/moto-s3:local";
const PG_PORT: u16 = 5432;
const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);
const S3_ACCESS_KEY: &str = "drillbook";

/// Where containers come from, read from the environment (a seam for tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSettings {
    /// `DOCKER_HOST`, else the default socket (what testcontainers uses too).
    pub docker_host: String,
    pub pg_image: (String, String),
    pub s3: S3Image,
    /// Server settings every Postgres container starts with (`-c name=value`).
    pub server_settings: Vec<(String, String)>,
}

/// The S3 container to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum S3Image {
    LocalStack,
    Generic {
        image: (String, String),
        port: u16,
        ready: Ready,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ready {
    Stdout(String),
    Stderr(String),
    Sleep(Duration),
}

fn split_image(image: &str) -> (String, String) {
    // A registry port (host:5000/name) is not a tag: the tag follows the last '/'.
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name.to_owned(), tag.to_owned()),
        _ => (image.to_owned(), "latest".to_owned()),
    }
}

impl ContainerSettings {
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
    }

    /// # Errors
    /// [`EnvError::Staging`]-style messages naming the bad variable.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let bad = |var: &str, problem: String| EnvError::Containers {
            problem: format!("{var}: {problem}"),
            fix: "see the containers backend's variables in README.md".to_owned(),
            source: None,
        };
        let docker_host = lookup("DOCKER_HOST").unwrap_or_else(|| "unix:///var/run/docker.sock".to_owned());
        let pg_image = split_image(&lookup("DRILL_PG_IMAGE").unwrap_or_else(|| DEFAULT_PG_IMAGE.to_owned()));
        let preset = lookup("DRILL_S3_PRESET").unwrap_or_else(|| "moto".to_owned());
        let (default_image, default_port, default_ready) = match preset.trim() {
            "moto" => (DEFAULT_MOTO_IMAGE, 5000, Ready::Stderr("Running on".to_owned())),
            "localstack" if lookup("DRILL_S3_IMAGE").is_none() => {
                return Ok(Self {
                    docker_host,
                    pg_image,
                    s3: S3Image::LocalStack,
                    server_settings: Vec::new(),
                });
            }
            "localstack" => ("localstack/localstack:4.5", 4566, Ready::Stdout("Ready.".to_owned())),
            other => {
                return Err(bad(
                    "DRILL_S3_PRESET",
                    format!("{other:?} is not a preset; use moto or localstack"),
                ));
            }
        };
        let image = split_image(&lookup("DRILL_S3_IMAGE").unwrap_or_else(|| default_image.to_owned()));
        let port = match lookup("DRILL_S3_PORT") {
            None => default_port,
            Some(port) => port
                .trim()
                .parse()
                .map_err(|_| bad("DRILL_S3_PORT", format!("{port:?} is not a port number")))?,
        };
        let ready = match lookup("DRILL_S3_READY") {
            None => default_ready,
            Some(spec) => match spec.split_once(':') {
                Some(("stdout", text)) => Ready::Stdout(text.to_owned()),
                Some(("stderr", text)) => Ready::Stderr(text.to_owned()),
                Some(("sleep", secs)) => {
                    Ready::Sleep(Duration::from_secs(secs.trim().parse().map_err(|_| {
                        bad("DRILL_S3_READY", format!("{secs:?} is not a number of seconds"))
                    })?))
                }
                _ => {
                    return Err(bad(
                        "DRILL_S3_READY",
                        format!("{spec:?} must be stdout:<text>, stderr:<text> or sleep:<seconds>"),
                    ));
                }
            },
        };
        Ok(Self {
            docker_host,
            pg_image,
            s3: S3Image::Generic { image, port, ready },
            server_settings: Vec::new(),
        })
    }
}

/// Asks the daemon `GET /_ping`, with a timeout.
async fn docker_reachable(host: &str) -> std::result::Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ping = async {
        let request = b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n";
        let mut response = Vec::new();
        if let Some(path) = host.strip_prefix("unix://") {
            let mut stream = tokio::net::UnixStream::connect(path).await?;
            stream.write_all(request).await?;
            stream.read_to_end(&mut response).await?;
        } else if let Some(addr) = host.strip_prefix("tcp://").or_else(|| host.strip_prefix("http://")) {
            let mut stream = tokio::net::TcpStream::connect(addr.trim_end_matches('/')).await?;
            stream.write_all(request).await?;
            stream.read_to_end(&mut response).await?;
        } else {
            return Err(std::io::Error::other(format!(
                "unsupported DOCKER_HOST scheme in {host:?}"
            )));
        }
        if response.starts_with(b"HTTP/1.0 200") || response.starts_with(b"HTTP/1.1 200") {
            Ok(())
        } else {
            Err(std::io::Error::other("the daemon did not answer /_ping with 200"))
        }
    };
    match tokio::time::timeout(Duration::from_secs(10), ping).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 10 s".to_owned()),
    }
}

fn docker_unavailable(host: &str) -> impl FnOnce(String) -> EnvError + '_ {
    move |reason| EnvError::DockerUnavailable {
        host: host.to_owned(),
        reason,
    }
}

fn container_error(what: &str) -> impl FnOnce(TestcontainersError) -> EnvError + '_ {
    move |e| {
        EnvError::Containers {
        problem: format!("failed to {what}"),
        fix: "check `docker images` has the image (build it with ci/images/build.sh) and `docker ps -a` / the container logs".to_owned(),
        source: Some(Box::new(e)),
    }
    }
}

enum S3Container {
    LocalStack(ContainerAsync<LocalStack>),
    Generic(ContainerAsync<GenericImage>),
}

impl S3Container {
    fn id(&self) -> &str {
        match self {
            Self::LocalStack(c) => c.id(),
            Self::Generic(c) => c.id(),
        }
    }

    async fn rm(self) -> std::result::Result<(), TestcontainersError> {
        match self {
            Self::LocalStack(c) => c.rm().await,
            Self::Generic(c) => c.rm().await,
        }
    }
}

/// One Postgres container and how to reach it.
struct PgContainer {
    container: Option<ContainerAsync<Postgres>>,
    /// Its name on the environment's network.
    name: String,
    admin: ConnInfo,
    /// A directory of this machine mounted as its `PGDATA`, removed after
    /// it (fields drop in order).
    data_dir: Option<(PathBuf, tempfile::TempDir)>,
}

/// Disposable containers: everything in it is the drill's own.
pub struct ContainersEnvironment {
    settings: ContainerSettings,
    /// The Docker network every Postgres container of this environment
    /// joins (created and removed by testcontainers); container names are
    /// `<network>-<n>`.
    network: String,
    started: usize,
    /// The S3 server as the server containers reach it (by name on the network).
    s3_for_servers: S3Config,
    bins: PgBinaries,
    primary: Option<PgContainer>,
    others: Vec<PgContainer>,
    s3: Option<S3Container>,
    store: Store,
}

impl std::fmt::Debug for ContainersEnvironment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainersEnvironment")
            .field("pg_image", &self.settings.pg_image)
            .field("primary", &self.primary.as_ref().map(|p| &p.admin))
            .field("others", &self.others.iter().map(|p| &p.admin).collect::<Vec<_>>())
            .field("s3", &self.store.config())
            .finish()
    }
}

fn random_secret() -> Secret {
    use rand::Rng;
    let bytes: [u8; 16] = rand::rng().random();
    Secret::new(hex::encode(bytes))
}

/// What a Postgres container is to the environment.
enum Role<'a> {
    /// A new, empty server with this superuser password.
    Fresh(Secret),
    /// A hot standby of the container named `of` (same network): the
    /// entrypoint takes a `pg_basebackup` of it and streams from it.
    StandbyOf { of: &'a str, password: Secret },
}

/// Where the `drillbook` binary is mounted (read-only) in a server
/// container that runs it as `archive_command` or `restore_command`.
pub const DRILLBOOK_IN_CONTAINER: &str = "/usr/local/bin/drillbook";
/// The image's `PGDATA`.
const PGDATA_IN_CONTAINER: &str = "/var/lib/postgresql/data";

/// What a server container gets beyond its role: settings, environment,
/// the `drillbook` binary, a data directory from this machine.
#[derive(Debug, Default)]
struct Extras {
    settings: Vec<(String, String)>,
    env: Vec<(String, String)>,
    /// Mounted read-only at [`DRILLBOOK_IN_CONTAINER`].
    drillbook: Option<PathBuf>,
    /// A directory of this machine mounted as `PGDATA`, with the temp dir
    /// that holds it (so a drill can damage data files of a stopped server).
    data_dir: Option<(PathBuf, tempfile::TempDir)>,
    /// `data_dir` holds a base backup prepared for recovery: the server
    /// starts on it as it is and nobody waits for readiness (the caller
    /// watches the recovery).
    recovering: bool,
    /// `POSTGRES_INITDB_ARGS`.
    initdb_args: Option<&'static str>,
}

impl Extras {
    /// A primary whose `archive_command` is `drillbook wal-push` into `s3`
    /// (as the server containers reach it), with data checksums on and its
    /// data directory on this machine.
    fn archiving(program: &Path, s3: &S3Config, archive_timeout: Duration) -> Result<Self> {
        let settings = crate::pg::ClusterOptions::default()
            .archiving(
                &crate::wal::archive_command(Path::new(DRILLBOOK_IN_CONTAINER)),
                archive_timeout,
            )
            .settings;
        let dir = host_data_dir()?;
        // Docker mounts only a path that exists.
        std::fs::create_dir(dir.path().join("data")).map_err(|e| EnvError::Containers {
            problem: "failed to create a server container's data directory".to_owned(),
            fix: "check that $TMPDIR is writable and has space".to_owned(),
            source: Some(Box::new(e)),
        })?;
        Ok(Self {
            settings,
            env: crate::wal::server_env(s3),
            drillbook: Some(program.to_owned()),
            data_dir: Some((dir.path().join("data"), dir)),
            recovering: false,
            initdb_args: Some("--data-checksums"),
        })
    }
}

/// A temp dir for a server container's `PGDATA` (its `data` child, which
/// the container creates).
fn host_data_dir() -> Result<tempfile::TempDir> {
    crate::pg::reaper::owned_tempdir("drillbook-pgdata-").map_err(|e| EnvError::Containers {
        problem: "failed to create a temp dir for a server container's data directory".to_owned(),
        fix: "check that $TMPDIR is writable and has space".to_owned(),
        source: Some(Box::new(e)),
    })
}

async fn start_postgres(
    settings: &ContainerSettings,
    network: &str,
    name: &str,
    role: Role<'_>,
    extras: Extras,
) -> Result<PgContainer> {
    let (name_image, tag) = &settings.pg_image;
    // The module's own default (fsync off: these servers are thrown away),
    // then the drill's settings.
    let mut args = vec!["-c".to_owned(), "fsync=off".to_owned()];
    for (setting, value) in settings.server_settings.iter().chain(&extras.settings) {
        args.extend(["-c".to_owned(), format!("{setting}={value}")]);
    }
    let (password, standby_of) = match role {
        Role::Fresh(password) => (password, None),
        Role::StandbyOf { of, password } => (password, Some(of)),
    };
    let mut request = Postgres::default()
        .with_password(password.expose())
        .with_name(name_image.clone())
        .with_tag(tag.clone())
        .with_network(network)
        .with_container_name(name)
        .with_cmd(args)
        .with_startup_timeout(STARTUP_TIMEOUT)
        .with_label("drillbook", "drill");
    if let Some(owner) = owner_label() {
        request = request.with_label(OWNER_LABEL, owner);
    }
    if let Some(primary) = standby_of {
        request = request.with_env_var("POSTGRES_STANDBY_OF", primary);
    }
    for (var, value) in &extras.env {
        request = request.with_env_var(var, value);
    }
    if let Some(program) = &extras.drillbook {
        request = request.with_mount(
            Mount::bind_mount(program.display().to_string(), DRILLBOOK_IN_CONTAINER)
                .with_access_mode(AccessMode::ReadOnly),
        );
    }
    if let Some(args) = extras.initdb_args {
        request = request.with_env_var("POSTGRES_INITDB_ARGS", args);
    }
    if let Some((data, _)) = &extras.data_dir {
        request = request.with_mount(Mount::bind_mount(data.display().to_string(), PGDATA_IN_CONTAINER));
    }
    let recovering = extras.recovering;
    if recovering {
        request = request.with_ready_conditions(vec![WaitFor::Nothing]);
    }
    let what = if standby_of.is_some() {
        "start the standby Postgres container (its log shows the pg_basebackup from the primary)"
    } else {
        "start the Postgres container"
    };
    let container = request.start().await.map_err(container_error(what))?;
    let port = container
        .get_host_port_ipv4(PG_PORT)
        .await
        .map_err(container_error("read the Postgres container's port"))?;
    let admin = ConnInfo {
        host: "127.0.0.1".to_owned(),
        port,
        user: "postgres".to_owned(),
        password,
        database: "postgres".to_owned(),
    };
    if !recovering {
        wait_accepting(&admin).await?;
    }
    Ok(PgContainer {
        container: Some(container),
        name: name.to_owned(),
        admin,
        data_dir: extras.data_dir,
    })
}

/// The ready log line can come from the entrypoint's temporary server; wait
/// until the real one answers.
async fn wait_accepting(admin: &ConnInfo) -> Result<()> {
    use sqlx::Connection;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match sqlx::PgConnection::connect_with(&admin.connect_options()).await {
            Ok(conn) => {
                let _ = conn.close().await;
                return Ok(());
            }
            Err(e) if tokio::time::Instant::now() > deadline => {
                return Err(EnvError::Containers {
                    problem: format!("the Postgres container at {admin} does not accept connections"),
                    fix: "check the container's logs (DRILL_KEEP=1 keeps it)".to_owned(),
                    source: Some(Box::new(e)),
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Names the process that owns a container: this machine's boot, the pid
/// and its start time. A process killed outright (nextest's timeout) runs
/// no `Drop`; the next environment of any process on this machine removes
/// its containers ([`reap_orphans`]). Kept containers (`DRILL_KEEP=1`) get none.
pub const OWNER_LABEL: &str = "drillbook.owner";

fn owner_label() -> Option<String> {
    if crate::pg::keep_requested() {
        return None;
    }
    crate::pg::reaper::machine_owner_label()
}

/// Removes (force, with their anonymous volumes) the containers of dead
/// processes of this machine, then their environments' networks; returns
/// the containers' ids. Failures are logged, never fatal: reaping is
/// housekeeping.
pub async fn reap_orphans() -> Vec<String> {
    use bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};
    let docker = match bollard::Docker::connect_with_defaults() {
        Ok(docker) => docker,
        Err(e) => {
            tracing::warn!("failed to connect to Docker to reap orphaned containers: {e}");
            return Vec::new();
        }
    };
    let options = ListContainersOptions {
        all: true,
        filters: Some(std::collections::HashMap::from([(
            "label".to_owned(),
            vec![OWNER_LABEL.to_owned()],
        )])),
        ..ListContainersOptions::default()
    };
    let containers = match docker.list_containers(Some(options)).await {
        Ok(containers) => containers,
        Err(e) => {
            tracing::warn!("failed to list containers to reap orphans: {e}");
            return Vec::new();
        }
    };
    let mut reaped = Vec::new();
    let mut networks = std::collections::BTreeSet::new();
    for container in containers {
        let gone = container
            .labels
            .as_ref()
            .and_then(|labels| labels.get(OWNER_LABEL))
            .is_some_and(|label| crate::pg::reaper::machine_owner_is_gone(label));
        let Some(id) = container.id.filter(|_| gone) else {
            continue;
        };
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..RemoveContainerOptions::default()
        };
        match docker.remove_container(&id, Some(options)).await {
            Ok(()) => {
                tracing::warn!(container = %id, "reaped a container whose drill process died");
                reaped.push(id);
                // Its environment's network (random name, used by that
                // environment alone) goes once its last container is gone.
                networks.extend(
                    container
                        .network_settings
                        .and_then(|settings| settings.networks)
                        .into_iter()
                        .flat_map(|networks| networks.into_keys())
                        .filter(|name| name.starts_with("drillbook-")),
                );
            }
            Err(e) => tracing::warn!(container = %id, "failed to remove an orphaned container: {e}"),
        }
    }
    for network in networks {
        if let Err(e) = docker.remove_network(&network).await {
            tracing::warn!(network = %network, "failed to remove an orphaned network: {e}");
        }
    }
    reaped
}

/// [`reap_orphans`], once per process, before its first environment; then
/// the temp dirs of dead processes (the data dirs those containers had
/// mounted among them), as a process that starts a cluster would.
async fn reap_orphans_once() {
    static REAPED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    REAPED
        .get_or_init(|| async {
            reap_orphans().await;
            let _ = tokio::task::spawn_blocking(crate::pg::reap_orphaned_clusters).await;
        })
        .await;
}

/// The S3 container's name on `network`.
fn s3_name(network: &str) -> String {
    format!("{network}-s3")
}

/// Starts the S3 container on `network`; the S3 config for this machine
/// (mapped port on loopback) and for the server containers (by name).
async fn start_s3(settings: &ContainerSettings, network: &str) -> Result<(S3Container, S3Config, S3Config)> {
    let secret = random_secret();
    let (container, port, internal_port) = match &settings.s3 {
        S3Image::LocalStack => {
            let c = LocalStack::default()
                .with_network(network)
                .with_container_name(s3_name(network))
                .with_startup_timeout(STARTUP_TIMEOUT)
                .with_label("drillbook", "drill")
                .with_labels(owner_label().map(|owner| (OWNER_LABEL, owner)))
                .start()
                .await
                .map_err(container_error("start the LocalStack container"))?;
            let port = c
                .get_host_port_ipv4(4566)
                .await
                .map_err(container_error("read LocalStack's port"))?;
            (S3Container::LocalStack(c), port, 4566)
        }
        S3Image::Generic { image, port, ready } => {
            let wait = match ready {
                Ready::Stdout(text) => WaitFor::message_on_stdout(text.as_bytes()),
                Ready::Stderr(text) => WaitFor::message_on_stderr(text.as_bytes()),
                Ready::Sleep(d) => WaitFor::Duration { length: *d },
            };
            let c = GenericImage::new(image.0.clone(), image.1.clone())
                .with_exposed_port(port.tcp())
                .with_wait_for(wait)
                .with_network(network)
                .with_container_name(s3_name(network))
                .with_startup_timeout(STARTUP_TIMEOUT)
                .with_label("drillbook", "drill")
                .with_labels(owner_label().map(|owner| (OWNER_LABEL, owner)))
                .start()
                .await
                .map_err(container_error("start the S3 container"))?;
            let mapped = c
                .get_host_port_ipv4(*port)
                .await
                .map_err(container_error("read the S3 container's port"))?;
            (S3Container::Generic(c), mapped, *port)
        }
    };
    let config = S3Config {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        region: "us-east-1".to_owned(),
        bucket: BACKUP_BUCKET.to_owned(),
        prefix: String::new(),
        credentials: Some((S3_ACCESS_KEY.to_owned(), secret)),
    };
    let for_servers = S3Config {
        endpoint: Some(format!("http://{}:{internal_port}", s3_name(network))),
        ..config.clone()
    };
    Ok((container, config, for_servers))
}

impl ContainersEnvironment {
    /// Starts a Postgres container with the application database and an
    /// S3 container with the backup bucket.
    ///
    /// # Errors
    /// [`EnvError::DockerUnavailable`] when Docker cannot be reached (one
    /// message saying how to start it or to use the embedded backend).
    pub async fn start() -> Result<Self> {
        let settings = ContainerSettings::from_env()?;
        Self::start_with(settings).await
    }

    pub async fn start_with(settings: ContainerSettings) -> Result<Self> {
        Self::start_inner(settings, None).await
    }

    /// [`Self::start_with`], with a primary that archives its WAL into the
    /// S3 container through `program wal-push` (the `drillbook` binary,
    /// mounted into the container; it must run on the image's Debian).
    pub async fn start_archiving(
        settings: ContainerSettings,
        program: &Path,
        archive_timeout: Duration,
    ) -> Result<Self> {
        Self::start_inner(settings, Some((program, archive_timeout))).await
    }

    async fn start_inner(settings: ContainerSettings, archiving: Option<(&Path, Duration)>) -> Result<Self> {
        docker_reachable(&settings.docker_host)
            .await
            .map_err(docker_unavailable(&settings.docker_host))?;
        reap_orphans_once().await;
        let bins = PgBinaries::discover_client()?;
        let network = format!("drillbook-{}", &random_secret().expose()[..12]);
        let first = format!("{network}-1");
        let (s3, s3_config, s3_for_servers) = start_s3(&settings, &network).await?;
        let extras = match archiving {
            Some((program, timeout)) => Extras::archiving(program, &s3_for_servers, timeout)?,
            None => Extras::default(),
        };
        let primary = start_postgres(&settings, &network, &first, Role::Fresh(random_secret()), extras).await?;
        crate::pg::create_database(&primary.admin, APP_DATABASE).await?;
        let store = Store::connect(s3_config).await;
        store.ensure_bucket().await?;
        tracing::info!(pg = %primary.admin, s3 = %store.config().location(), "containers environment ready");
        Ok(Self {
            settings,
            network,
            started: 1,
            s3_for_servers,
            bins,
            primary: Some(primary),
            others: Vec::new(),
            s3: Some(s3),
            store,
        })
    }

    pub fn binaries(&self) -> &PgBinaries {
        &self.bins
    }

    fn primary(&self) -> &PgContainer {
        self.primary.as_ref().expect("the primary container was destroyed")
    }

    pub fn admin(&self) -> ConnInfo {
        self.primary().admin.clone()
    }

    pub fn source(&self) -> ConnInfo {
        self.primary().admin.with_database(APP_DATABASE)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub async fn seed(&self, spec: FixtureSpec) -> Result<SeedSummary> {
        Ok(fixtures::seed(&self.source(), spec).await?)
    }

    fn next_name(&mut self) -> String {
        self.started += 1;
        format!("{}-{}", self.network, self.started)
    }

    /// A new, empty Postgres container; its admin facts.
    pub async fn provision_server(&mut self) -> Result<ConnInfo> {
        let name = self.next_name();
        let server = start_postgres(
            &self.settings,
            &self.network,
            &name,
            Role::Fresh(random_secret()),
            Extras::default(),
        )
        .await?;
        let admin = server.admin.clone();
        self.others.push(server);
        Ok(admin)
    }

    /// A hot standby of the primary: a second container on the primary's
    /// network that takes a `pg_basebackup` of it over that network and
    /// streams from it; returns once it answers read-only queries. Its
    /// superuser is the primary's (the base backup copied it).
    pub async fn start_standby(&mut self) -> Result<ConnInfo> {
        let name = self.next_name();
        let (primary_name, password) = {
            let primary = self.primary();
            (primary.name.clone(), primary.admin.password.clone())
        };
        let role = Role::StandbyOf {
            of: &primary_name,
            password,
        };
        let server = start_postgres(&self.settings, &self.network, &name, role, Extras::default()).await?;
        let admin = server.admin.clone();
        self.others.push(server);
        Ok(admin)
    }

    /// Starts a server container on `data_dir` (a base backup prepared for
    /// recovery: `recovery.signal` written) with `settings` and the
    /// `drillbook` binary for `restore_command` (`wal-fetch` from the S3
    /// container, whose environment it gets). Returns its name and admin
    /// facts without waiting: the caller watches the recovery
    /// ([`Self::is_running`], [`Self::server_log`]).
    pub async fn start_recovery(
        &mut self,
        data_dir: (PathBuf, tempfile::TempDir),
        settings: Vec<(String, String)>,
        program: &Path,
        password: Secret,
    ) -> Result<(String, ConnInfo)> {
        let name = self.next_name();
        let extras = Extras {
            settings,
            env: crate::wal::server_env(&self.s3_for_servers),
            drillbook: Some(program.to_owned()),
            data_dir: Some(data_dir),
            recovering: true,
            initdb_args: None,
        };
        let server = start_postgres(&self.settings, &self.network, &name, Role::Fresh(password), extras).await?;
        let admin = server.admin.clone();
        self.others.push(server);
        Ok((name, admin))
    }

    fn server(&self, name: &str) -> Option<&ContainerAsync<Postgres>> {
        self.primary
            .iter()
            .chain(&self.others)
            .find(|server| server.name == name)
            .and_then(|server| server.container.as_ref())
    }

    /// Whether the server container `name` still runs.
    pub async fn is_running(&self, name: &str) -> bool {
        match self.server(name) {
            Some(container) => container.is_running().await.unwrap_or(false),
            None => false,
        }
    }

    /// Everything the server container `name` logged (the server logs to stderr).
    pub async fn server_log(&self, name: &str) -> String {
        match self.server(name) {
            Some(container) => {
                let (out, err) = tokio::join!(container.stdout_to_vec(), container.stderr_to_vec());
                let mut log = String::from_utf8_lossy(&err.unwrap_or_default()).into_owned();
                log.push_str(&String::from_utf8_lossy(&out.unwrap_or_default()));
                log
            }
            None => String::new(),
        }
    }

    /// Stops the primary's container (`docker stop`: a fast shutdown).
    pub async fn stop_primary(&self) -> Result<()> {
        let container = self
            .primary()
            .container
            .as_ref()
            .expect("the primary container was removed");
        container
            .stop_with_timeout(Some(30))
            .await
            .map_err(container_error("stop the primary container"))
    }

    /// Starts the stopped primary container again and waits until it
    /// answers; Docker may map it to a new port, which [`Self::admin`] then reports.
    pub async fn restart_primary(&mut self) -> Result<()> {
        let primary = self.primary.as_mut().expect("the primary container was destroyed");
        let container = primary.container.as_ref().expect("the primary container was removed");
        container
            .start()
            .await
            .map_err(container_error("start the primary container again"))?;
        primary.admin.port = container
            .get_host_port_ipv4(PG_PORT)
            .await
            .map_err(container_error("read the restarted primary's port"))?;
        wait_accepting(&primary.admin).await
    }

    /// The primary's data directory on this machine, when it has one
    /// (an archiving primary's `PGDATA` is mounted from here).
    pub fn primary_data_dir(&self) -> Option<&Path> {
        self.primary().data_dir.as_ref().map(|(path, _)| path.as_path())
    }

    /// Everything the primary logged.
    pub async fn primary_log(&self) -> String {
        let name = self.primary().name.clone();
        self.server_log(&name).await
    }

    /// The incident: the primary's container is removed, data and all.
    pub async fn destroy_primary(&mut self) -> Result<()> {
        if let Some(mut primary) = self.primary.take()
            && let Some(container) = primary.container.take()
        {
            container
                .rm()
                .await
                .map_err(container_error("remove the primary container"))?;
        }
        Ok(())
    }

    pub fn owns(&self, target: &ConnInfo) -> bool {
        self.primary
            .iter()
            .chain(&self.others)
            .any(|p| p.admin.host == target.host && p.admin.port == target.port)
    }

    /// Removes every container (kept with `DRILL_KEEP=1`).
    pub async fn cleanup(mut self) -> Result<()> {
        if crate::pg::keep_requested() {
            return Ok(()); // Drop prints and keeps them.
        }
        let mut first_error = None;
        let servers: Vec<PgContainer> = self.primary.take().into_iter().chain(self.others.drain(..)).collect();
        for mut server in servers {
            if let Some(container) = server.container.take()
                && let Err(e) = container.rm().await
            {
                first_error.get_or_insert(container_error("remove a Postgres container")(e));
            }
        }
        if let Some(s3) = self.s3.take()
            && let Err(e) = s3.rm().await
        {
            first_error.get_or_insert(container_error("remove the S3 container")(e));
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for ContainersEnvironment {
    /// testcontainers removes a dropped container itself; with `DRILL_KEEP=1`
    /// they are leaked on purpose and their ids printed.
    fn drop(&mut self) {
        if !crate::pg::keep_requested() {
            return;
        }
        for server in self.primary.iter_mut().chain(self.others.iter_mut()) {
            if let Some(container) = server.container.take() {
                eprintln!(
                    "DRILL_KEEP=1: kept Postgres container {} ({})",
                    container.id(),
                    server.admin
                );
                std::mem::forget(container);
            }
        }
        if let Some(s3) = self.s3.take() {
            eprintln!(
                "DRILL_KEEP=1: kept S3 container {} ({})",
                s3.id(),
                self.store.config().location()
            );
            std::mem::forget(s3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_default_to_the_local_images_and_read_overrides() {
        let none = ContainerSettings::from_lookup(|_| None).unwrap();
        assert_eq!(none.pg_image, ("drillbook/postgres".to_owned(), "local".to_owned()));
        assert!(matches!(none.s3, S3Image::Generic { port: 5000, .. }));
        let localstack =
            ContainerSettings::from_lookup(|v| (v == "DRILL_S3_PRESET").then(|| "localstack".to_owned())).unwrap();
        assert_eq!(localstack.s3, S3Image::LocalStack);
        let custom = ContainerSettings::from_lookup(|v| match v {
            "DRILL_S3_IMAGE" => Some("registry:5000/minio".to_owned()),
            "DRILL_S3_PORT" => Some("9000".to_owned()),
            "DRILL_S3_READY" => Some("sleep:2".to_owned()),
            _ => None,
        })
        .unwrap();
        assert_eq!(
            custom.s3,
            S3Image::Generic {
                image: ("registry:5000/minio".to_owned(), "latest".to_owned()),
                port: 9000,
                ready: Ready::Sleep(Duration::from_secs(2)),
            }
        );
        let err = ContainerSettings::from_lookup(|v| (v == "DRILL_S3_READY").then(|| "soon".to_owned())).unwrap_err();
        assert!(err.to_string().contains("DRILL_S3_READY"), "{err}");
    }
}
