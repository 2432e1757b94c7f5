//! Postgres server containers: starting one in its role (fresh, a standby
//! of another, a recovery on a base backup, an archiving primary), with the
//! `drillbook` binary and a data directory from this machine mounted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use testcontainers_modules::postgres::Postgres;
use testcontainers_modules::testcontainers::core::{AccessMode, Mount, WaitFor};
use testcontainers_modules::testcontainers::runners::AsyncRunner;
use testcontainers_modules::testcontainers::{ContainerAsync, ImageExt};

use super::orphans::{OWNER_LABEL, owner_label};
use super::{ContainerSettings, STARTUP_TIMEOUT, container_error};
use crate::env::{EnvError, Result};
use crate::pg::{ConnInfo, Secret};
use crate::store::S3Config;

pub(super) const PG_PORT: u16 = 5432;

/// One Postgres container and how to reach it.
pub(super) struct PgContainer {
    pub(super) container: Option<ContainerAsync<Postgres>>,
    /// Its name on the environment's network.
    pub(super) name: String,
    pub(super) admin: ConnInfo,
    /// A directory of this machine mounted as its `PGDATA`, removed after
    /// it (fields drop in order).
    pub(super) data_dir: Option<(PathBuf, tempfile::TempDir)>,
}

/// What a Postgres container is to the environment.
pub(super) enum Role<'a> {
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
pub(super) struct Extras {
    pub(super) settings: Vec<(String, String)>,
    pub(super) env: Vec<(String, String)>,
    /// Mounted read-only at [`DRILLBOOK_IN_CONTAINER`].
    pub(super) drillbook: Option<PathBuf>,
    /// A directory of this machine mounted as `PGDATA`, with the temp dir
    /// that holds it (so a drill can damage data files of a stopped server).
    pub(super) data_dir: Option<(PathBuf, tempfile::TempDir)>,
    /// `data_dir` holds a base backup prepared for recovery: the server
    /// starts on it as it is and nobody waits for readiness (the caller
    /// watches the recovery).
    pub(super) recovering: bool,
    /// `POSTGRES_INITDB_ARGS`.
    pub(super) initdb_args: Option<&'static str>,
}

impl Extras {
    /// A primary whose `archive_command` is `drillbook wal-push` into `s3`
    /// (as the server containers reach it), with data checksums on and its
    /// data directory on this machine.
    pub(super) fn archiving(program: &Path, s3: &S3Config, archive_timeout: Duration) -> Result<Self> {
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
    crate::scratch::owned_tempdir("drillbook-pgdata-").map_err(|e| EnvError::Containers {
        problem: "failed to create a temp dir for a server container's data directory".to_owned(),
        fix: "check that $TMPDIR is writable and has space".to_owned(),
        source: Some(Box::new(e)),
    })
}

pub(super) async fn start_postgres(
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
pub(super) async fn wait_accepting(admin: &ConnInfo) -> Result<()> {
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
