//! Where a drill runs. `DRILL_ENV` picks the backend:
//!
//! | backend | PostgreSQL | S3 | what a drill may destroy |
//! |---|---|---|---|
//! | `embedded` (default) | clusters from the installed binaries | in-process s3s-fs | everything (all of it is its own) |
//! | `containers` | a Postgres container per server | an S3 container (moto, LocalStack, any image) | everything (all of it is its own) |
//! | `staging` | the server named in `drill.toml` | the real bucket | only its restored copies and scratch objects ([`guard`]) |
//!
//! This room owns where a drill runs: the backends ([`embedded`](EmbeddedEnvironment),
//! [`containers`], [`staging`]), their configuration ([`config`]), the
//! guard that keeps a drill to what it created ([`guard`]), the embedded S3
//! server, and [`ArchivingEnvironment`] (a primary archiving its WAL, and
//! recoveries from that archive, embedded or in containers). It builds on
//! the operations below it (`pitr`, `wal`, `failover`) and the fixture; it
//! knows nothing of drills, faults or reports.
//!
//! Drills get an [`Environment`] from [`from_env`] and use the same calls on
//! every backend. A call a backend cannot honour (seeding or killing a
//! staging server, a standby on containers) fails with
//! [`EnvError::Unsupported`], which names the backend and the reason: a drill
//! never passes by quietly doing less.

mod archiving;
pub mod config;
pub mod containers;
mod embedded;
pub mod guard;
mod s3_server;
pub mod staging;

pub use archiving::ArchivingEnvironment;
pub use config::{ConfigError, StagingConfig};
pub use containers::{ContainerSettings, ContainersEnvironment};
pub use embedded::{ConnectionFacts, EmbeddedEnvironment};
pub use guard::{Guard, GuardError};
pub use s3_server::{EmbeddedS3, S3ServerError};
pub use staging::StagingEnvironment;

use std::time::Duration;

use crate::fixtures::{FixtureError, FixtureSpec, SeedSummary};
use crate::pg::{ClusterOptions, ConnInfo, PgBinaries, PgError};
use crate::store::{Store, StoreError};

/// The application database name every backend uses for the fixture.
pub const APP_DATABASE: &str = "immoflowme";
/// The backup bucket the playbook names (`s3://immoflowme-backups`).
pub const BACKUP_BUCKET: &str = "immoflowme-backups";

pub type Result<T, E = EnvError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvError {
    #[error("DRILL_ENV={value:?} is not a backend; use embedded (the default), containers or staging")]
    UnknownBackend { value: String },
    #[error(
        "{operation} is not supported on the {backend} backend because {reason}; run this drill with DRILL_ENV=embedded"
    )]
    Unsupported {
        operation: &'static str,
        backend: &'static str,
        reason: &'static str,
    },
    #[error("{problem}; {fix}")]
    Staging {
        problem: String,
        fix: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    #[error(
        "failed to reach Docker at {host} ({reason}): the containers backend needs a running Docker daemon; start it \
         (`sudo systemctl start docker`, or `dockerd &`), point DOCKER_HOST at it, or run with DRILL_ENV=embedded"
    )]
    DockerUnavailable { host: String, reason: String },
    #[error("{problem}; {fix}")]
    Containers {
        problem: String,
        fix: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    #[error("failed to {what} within {after:?}; check that it is reachable from this machine")]
    Timeout { what: String, after: Duration },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Guard(#[from] GuardError),
    #[error(transparent)]
    Postgres(#[from] PgError),
    #[error("failed to start the embedded S3 server")]
    S3Server(#[from] S3ServerError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Fixture(#[from] FixtureError),
    #[error(transparent)]
    Failover(#[from] crate::failover::FailoverError),
}

/// The backends drills can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Containers,
    Staging,
}

impl Backend {
    /// Reads `DRILL_ENV` (unset or empty means embedded).
    pub fn from_env() -> Result<Self> {
        Self::parse(std::env::var("DRILL_ENV").ok().as_deref())
    }

    pub fn parse(value: Option<&str>) -> Result<Self> {
        match value.map(str::trim) {
            None | Some("") | Some("embedded") => Ok(Self::Embedded),
            Some("containers") => Ok(Self::Containers),
            Some("staging") => Ok(Self::Staging),
            Some(other) => Err(EnvError::UnknownBackend {
                value: other.to_owned(),
            }),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Embedded => "embedded",
            Self::Containers => "containers",
            Self::Staging => "staging",
        }
    }
}

/// Where a restore goes: a server and a database name nobody uses yet.
/// Pass `database` as `RestoreOptions::target_database`.
#[derive(Debug, Clone)]
pub struct RestoreTarget {
    pub admin: ConnInfo,
    pub database: String,
}

impl RestoreTarget {
    /// The restored database's connection facts.
    pub fn target(&self) -> ConnInfo {
        self.admin.with_database(&self.database)
    }
}

fn restore_name(source: &str) -> String {
    format!("{source}_restore_{}", chrono::Utc::now().format("%Y%m%d%H%M%S%3f"))
}

/// Where a drill runs: one of the backends, behind the calls drills make.
// One per drill, moved a handful of times: boxing would only add noise to matches.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
#[non_exhaustive]
pub enum Environment {
    Embedded(EmbeddedEnvironment),
    Containers(ContainersEnvironment),
    Staging(StagingEnvironment),
}

const STAGING_NOT_OURS: &str = "the staging server and its data are not the drill's own (drills there use the existing data and backups, and only restore into new `<db>_restore_<stamp>` databases)";

impl Environment {
    pub fn backend(&self) -> Backend {
        match self {
            Self::Embedded(_) => Backend::Embedded,
            Self::Containers(_) => Backend::Containers,
            Self::Staging(_) => Backend::Staging,
        }
    }

    /// Whether everything in it is the drill's own (seed, corrupt and kill freely).
    pub fn is_disposable(&self) -> bool {
        !matches!(self, Self::Staging(_))
    }

    fn unsupported(&self, operation: &'static str, reason: &'static str) -> EnvError {
        EnvError::Unsupported {
            operation,
            backend: self.backend().name(),
            reason,
        }
    }

    /// The local PostgreSQL client tools (`pg_dump`, `pg_restore`).
    pub fn binaries(&self) -> &PgBinaries {
        match self {
            Self::Embedded(env) => env.binaries(),
            Self::Containers(env) => env.binaries(),
            Self::Staging(env) => env.binaries(),
        }
    }

    /// The application database.
    pub fn source(&self) -> ConnInfo {
        match self {
            Self::Embedded(env) => env.source(),
            Self::Containers(env) => env.source(),
            Self::Staging(env) => env.source(),
        }
    }

    /// A superuser (or `CREATEDB`) role on the primary server.
    pub fn admin(&self) -> ConnInfo {
        match self {
            Self::Embedded(env) => env.primary().admin(),
            Self::Containers(env) => env.admin(),
            Self::Staging(env) => env.admin(),
        }
    }

    /// The backup catalog.
    pub fn store(&self) -> &Store {
        match self {
            Self::Embedded(env) => env.store(),
            Self::Containers(env) => env.store(),
            Self::Staging(env) => env.store(),
        }
    }

    /// Loads the fixture ledger into the application database.
    ///
    /// # Errors
    /// [`EnvError::Unsupported`] on staging, whose data is never written.
    pub async fn seed(&self, spec: FixtureSpec) -> Result<SeedSummary> {
        match self {
            Self::Embedded(env) => env.seed(spec).await,
            Self::Containers(env) => env.seed(spec).await,
            Self::Staging(_) => Err(self.unsupported("seeding the fixture ledger", STAGING_NOT_OURS)),
        }
    }

    /// A new, empty server (a replacement for a lost one); its admin facts.
    ///
    /// # Errors
    /// [`EnvError::Unsupported`] on staging, where drillbook creates no
    /// servers: use [`Self::provision_restore_target`].
    pub async fn provision_cluster(&mut self) -> Result<ConnInfo> {
        match self {
            Self::Embedded(env) => env.provision_cluster().await,
            Self::Containers(env) => env.provision_cluster().await,
            Self::Staging(_) => Err(self.unsupported(
                "provisioning a new server",
                "drillbook creates no servers on staging (restores go to a new database on the staging server: use provision_restore_target)",
            )),
        }
    }

    /// Where a restore of the source goes: a new server on disposable
    /// backends, a new `<db>_restore_<stamp>` database on staging. Either
    /// way the drill owns it and [`Self::cleanup`] removes it.
    pub async fn provision_restore_target(&mut self) -> Result<RestoreTarget> {
        match self {
            Self::Staging(env) => env.provision_restore_target().await,
            _ => {
                let admin = self.provision_cluster().await?;
                Ok(RestoreTarget {
                    admin,
                    database: restore_name(APP_DATABASE),
                })
            }
        }
    }

    /// The incident "the primary server is lost": killed and its data
    /// deleted (embedded), its container removed (containers).
    ///
    /// # Errors
    /// [`EnvError::Unsupported`] on staging.
    pub async fn destroy_primary(&mut self) -> Result<()> {
        match self {
            Self::Embedded(env) => env.destroy_primary().await,
            Self::Containers(env) => env.destroy_primary().await,
            Self::Staging(_) => Err(self.unsupported("destroying the primary server", STAGING_NOT_OURS)),
        }
    }

    /// A hot standby of the primary, streaming from it: a second local
    /// cluster (embedded), a second container on the primary's network
    /// (containers). Its admin facts; [`Self::cleanup`] removes it.
    ///
    /// # Errors
    /// [`EnvError::Unsupported`] on staging, where drillbook creates no servers.
    pub async fn start_standby(&mut self) -> Result<ConnInfo> {
        match self {
            Self::Embedded(env) => env.start_standby().await,
            Self::Containers(env) => env.start_standby().await,
            Self::Staging(_) => Err(self.unsupported(
                "building a standby server",
                "drillbook creates no servers on staging, and a failover drill must kill the primary it fails over from",
            )),
        }
    }

    /// What [`Self::destroy_primary`] does on this backend, for incident timelines.
    pub fn primary_loss(&self) -> &'static str {
        match self {
            Self::Embedded(_) => "postgres SIGKILLed, data directory deleted",
            Self::Containers(_) => "primary container removed (killed, cut off the network, data gone)",
            Self::Staging(_) => "simulated (the staging server is not touched)",
        }
    }

    /// Whether `target` is a database the drill may damage: anything on a
    /// disposable backend's own servers, on staging only what it created.
    pub fn owns(&self, target: &ConnInfo) -> bool {
        match self {
            Self::Embedded(env) => env.owns(target),
            Self::Containers(env) => env.owns(target),
            Self::Staging(env) => env.guard().owns_database(target),
        }
    }

    /// Drops a database the drill owns ([`Self::owns`]).
    ///
    /// # Errors
    /// [`EnvError::Guard`] for any other database; nothing is touched.
    pub async fn drop_database(&mut self, target: &ConnInfo) -> Result<()> {
        match self {
            Self::Staging(env) => env.drop_database(target).await,
            _ => {
                let mut guard = Guard::new(self.backend().name());
                if self.owns(target) {
                    guard.created_database(target);
                }
                guard.allow_database("drop", target)?;
                let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect_with(
                    &target.with_database("postgres").connect_options(),
                )
                .await
                .map_err(PgError::sql(format!("connect to {target}")))?;
                let sql = format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    crate::pg::quote_ident(&target.database)
                );
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                    .map_err(PgError::sql(format!("drop database {:?}", target.database)))?;
                let _ = sqlx::Connection::close(conn).await;
                Ok(())
            }
        }
    }

    /// Deletes an object from the backup bucket: any object on a disposable
    /// backend (the bucket is the drill's own), only its scratch objects on staging.
    pub async fn delete_object(&mut self, key: &str) -> Result<()> {
        match self {
            Self::Staging(env) => env.delete_object(key).await,
            _ => Ok(self.store().delete(key).await?),
        }
    }

    /// The embedded backend's own handle (local clusters: standbys, crashes,
    /// file-level damage).
    ///
    /// # Errors
    /// [`EnvError::Unsupported`] on every other backend.
    pub fn embedded(&self) -> Result<&EmbeddedEnvironment> {
        match self {
            Self::Embedded(env) => Ok(env),
            _ => Err(self.unsupported("local cluster access (pg::Cluster)", LOCAL_CLUSTERS_ONLY)),
        }
    }

    pub fn staging(&self) -> Option<&StagingEnvironment> {
        match self {
            Self::Staging(env) => Some(env),
            _ => None,
        }
    }

    /// Removes everything the drill created (kept with `DRILL_KEEP=1`).
    pub async fn cleanup(self) -> Result<()> {
        match self {
            Self::Embedded(env) => env.cleanup().await,
            Self::Containers(env) => env.cleanup().await,
            Self::Staging(env) => env.cleanup().await,
        }
    }
}

const LOCAL_CLUSTERS_ONLY: &str = "this drill drives local PostgreSQL processes directly (standbys, crashes, data files), which only the embedded backend has";

/// Drills written against the embedded backend's handle (`env.primary()`,
/// `fault::Disposable::embedded(&env, ..)`) keep compiling; on any other
/// backend the first such use panics with [`EnvError::Unsupported`]'s
/// message: the drill fails loudly instead of running somewhere else.
impl std::ops::Deref for Environment {
    type Target = EmbeddedEnvironment;

    fn deref(&self) -> &EmbeddedEnvironment {
        match self.embedded() {
            Ok(env) => env,
            Err(e) => panic!("{e}"),
        }
    }
}

/// Where the cluster drills act (playbook sections 5 and 6).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterTarget {
    /// The kube context of the deployment to drill on.
    pub kube_context: Option<String>,
    /// The application's base URL, for smoke tests.
    pub app_base_url: Option<String>,
}

/// The cluster drills' target: on staging, `drill.toml`'s `[kube] context`
/// and `[app] base_url` (with `DRILL_KUBE_CONTEXT` / `DRILL_APP_URL`
/// overriding them, the file's usual precedence); on every other backend
/// those two variables alone.
///
/// # Errors
/// On staging, whatever makes `drill.toml` invalid.
pub fn cluster_target() -> Result<ClusterTarget> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    match Backend::from_env()? {
        Backend::Staging => {
            let config = StagingConfig::from_env()?;
            Ok(ClusterTarget {
                kube_context: config.kube_context,
                app_base_url: config.app_base_url,
            })
        }
        _ => Ok(ClusterTarget {
            kube_context: var(crate::k8s::KUBE_CONTEXT_VAR),
            app_base_url: var("DRILL_APP_URL"),
        }),
    }
}

/// The environment `DRILL_ENV` names: `embedded` (default), `containers`,
/// or `staging` (configured by `DRILL_CONFIG` and `DRILL_*` variables).
///
/// # Errors
/// Whatever stops the backend from starting, saying how to fix it; never a
/// fallback to another backend.
pub async fn from_env() -> Result<Environment> {
    from_env_with(&[]).await
}

/// [`from_env`], with server settings (`max_connections`, ...) that every
/// PostgreSQL server the environment starts runs with.
///
/// # Errors
/// As [`from_env`]; with settings, [`EnvError::Unsupported`] on staging,
/// whose server is not the drill's to configure.
pub async fn from_env_with(server_settings: &[(&str, &str)]) -> Result<Environment> {
    match Backend::from_env()? {
        Backend::Embedded => {
            let options = server_settings
                .iter()
                .fold(ClusterOptions::default(), |options, (name, value)| {
                    options.setting(name, value)
                });
            Ok(Environment::Embedded(EmbeddedEnvironment::start_with(options).await?))
        }
        Backend::Containers => {
            let mut settings = containers::ContainerSettings::from_env()?;
            settings.server_settings = server_settings
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect();
            Ok(Environment::Containers(
                ContainersEnvironment::start_with(settings).await?,
            ))
        }
        Backend::Staging if !server_settings.is_empty() => Err(EnvError::Unsupported {
            operation: "starting a server with drill-specific settings",
            backend: Backend::Staging.name(),
            reason: "the staging server is shared and configured by its owners; a drill that needs its own server settings (and may exhaust or kill it) runs on a backend whose servers are its own",
        }),
        Backend::Staging => {
            let config = StagingConfig::from_env()?;
            Ok(Environment::Staging(StagingEnvironment::connect(config).await?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_parse_and_typos_are_named() {
        assert_eq!(Backend::parse(None).unwrap(), Backend::Embedded);
        assert_eq!(Backend::parse(Some("staging")).unwrap(), Backend::Staging);
        let err = Backend::parse(Some("stagign")).unwrap_err();
        assert!(err.to_string().contains("\"stagign\""), "{err}");
    }
}
