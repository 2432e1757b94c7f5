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

mod orphans;
mod postgres;
mod s3;
mod settings;

use std::path::{Path, PathBuf};
use std::time::Duration;

use testcontainers_modules::postgres::Postgres;
use testcontainers_modules::testcontainers::{ContainerAsync, TestcontainersError};

use orphans::reap_orphans_once;
pub use orphans::{OWNER_LABEL, reap_orphans};
pub use postgres::DRILLBOOK_IN_CONTAINER;
use postgres::{Extras, PG_PORT, PgContainer, Role, start_postgres, wait_accepting};
use s3::{S3Container, start_s3};
pub use settings::{ContainerSettings, DEFAULT_MOTO_IMAGE, DEFAULT_PG_IMAGE, Ready, S3Image};

use super::{APP_DATABASE, EnvError, Result};
use crate::fixtures::{self, FixtureSpec, SeedSummary};
use crate::pg::{ConnInfo, PgBinaries, Secret};
use crate::store::{S3Config, Store};

const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);

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
    pub async fn provision_cluster(&mut self) -> Result<ConnInfo> {
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
        if crate::scratch::keep_requested() {
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
        if !crate::scratch::keep_requested() {
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

/// Recoveries (`pitr::recover_on`) in server containers on this environment's network.
#[async_trait::async_trait]
impl crate::pitr::RecoveryContainers for ContainersEnvironment {
    fn drillbook_in_container(&self) -> PathBuf {
        PathBuf::from(DRILLBOOK_IN_CONTAINER)
    }

    async fn start_recovery(
        &mut self,
        data_dir: (PathBuf, tempfile::TempDir),
        settings: Vec<(String, String)>,
        program: &Path,
        password: Secret,
    ) -> std::result::Result<(String, ConnInfo), Box<dyn std::error::Error + Send + Sync>> {
        Ok(ContainersEnvironment::start_recovery(self, data_dir, settings, program, password).await?)
    }

    async fn is_running(&self, name: &str) -> bool {
        ContainersEnvironment::is_running(self, name).await
    }

    async fn server_log(&self, name: &str) -> String {
        ContainersEnvironment::server_log(self, name).await
    }
}
