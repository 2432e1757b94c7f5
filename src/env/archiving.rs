//! The environment of WAL-archiving drills: an S3 server and a primary
//! whose `archive_command` is `drillbook wal-push` into it, recoveries
//! (point in time, end of archive) into new servers of the same backend.
//! Embedded or containers; never staging, whose server is not the drill's.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;

use super::{APP_DATABASE, BACKUP_BUCKET, Backend, ContainerSettings, ContainersEnvironment, EmbeddedS3, EnvError};
use crate::pg::{Cluster, ConnInfo, PgBinaries, PgError, Secret};
use crate::pitr::{AtTarget, PitrOptions, Recovered, RecoveryHost, RecoveryTarget, recover_on, recover_to};
use crate::store::Store;

/// A disposable environment for WAL-archiving drills: an S3 server and a
/// primary whose `archive_command` is `drillbook wal-push` into it, with the
/// application database. Embedded: a local cluster and the in-process S3;
/// containers: a server container (the `drillbook` binary mounted into it)
/// and the S3 container on one network, recoveries in containers too.
/// Everything is removed by [`Self::cleanup`].
#[derive(Debug)]
pub struct ArchivingEnvironment {
    pub bins: PgBinaries,
    backend: Archiving,
    password: Secret,
    program: PathBuf,
}

// One per drill: boxing the larger variant would only add noise to matches.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Archiving {
    Embedded {
        s3: EmbeddedS3,
        store: Store,
        primary: Option<Cluster>,
    },
    Containers(ContainersEnvironment),
}

impl ArchivingEnvironment {
    /// The embedded flavour, whatever `DRILL_ENV` says. `program` is the
    /// `drillbook` binary the server runs (in tests,
    /// `env!("CARGO_BIN_EXE_drillbook")`); it must be executable by the server user.
    pub async fn start(program: &Path, archive_timeout: Duration) -> Result<Self, EnvError> {
        let bins = PgBinaries::discover()?;
        let s3 = EmbeddedS3::start()?;
        let store = Store::connect(s3.config(BACKUP_BUCKET)).await;
        store.ensure_bucket().await?;
        let options = crate::wal::archiving_options(program, store.config(), archive_timeout)?;
        let primary = Cluster::start(&bins, options).await?;
        primary.create_database(APP_DATABASE).await?;
        let password = primary.password().clone();
        Ok(Self {
            bins,
            backend: Archiving::Embedded {
                s3,
                store,
                primary: Some(primary),
            },
            password,
            program: program.to_path_buf(),
        })
    }

    /// The flavour `DRILL_ENV` names: embedded or containers.
    ///
    /// # Errors
    /// [`EnvError::Unsupported`] on staging: archiving is set up
    /// on a server the drill starts, and staging's server is not its own.
    pub async fn from_env(program: &Path, archive_timeout: Duration) -> Result<Self, EnvError> {
        match Backend::from_env()? {
            Backend::Embedded => Self::start(program, archive_timeout).await,
            Backend::Containers => {
                let settings = ContainerSettings::from_env()?;
                let env = ContainersEnvironment::start_archiving(settings, program, archive_timeout).await?;
                Ok(Self {
                    bins: env.binaries().clone(),
                    password: env.admin().password,
                    backend: Archiving::Containers(env),
                    program: program.to_path_buf(),
                })
            }
            Backend::Staging => Err(EnvError::Unsupported {
                operation: "WAL archiving from a drill's own primary",
                backend: Backend::Staging.name(),
                reason: "the drill sets archive_command on a server it starts and then destroys it; staging's server is not the drill's",
            }),
        }
    }

    /// Which backend it runs on.
    pub fn backend(&self) -> Backend {
        match self.backend {
            Archiving::Embedded { .. } => Backend::Embedded,
            Archiving::Containers(_) => Backend::Containers,
        }
    }

    /// The local primary cluster (embedded only: file-level damage, restarts).
    ///
    /// # Panics
    /// On containers, with the reason; and after [`Self::destroy_primary`].
    pub fn primary(&self) -> &Cluster {
        match &self.backend {
            Archiving::Embedded { primary, .. } => primary.as_ref().expect("the primary was destroyed"),
            Archiving::Containers(_) => panic!("{LOCAL_PRIMARY_ONLY}"),
        }
    }

    /// The primary, to stop, restart or crash it (embedded only, as [`Self::primary`]).
    pub fn primary_mut(&mut self) -> &mut Cluster {
        match &mut self.backend {
            Archiving::Embedded { primary, .. } => primary.as_mut().expect("the primary was destroyed"),
            Archiving::Containers(_) => panic!("{LOCAL_PRIMARY_ONLY}"),
        }
    }

    /// A maintenance stop of the primary: a fast shutdown.
    pub async fn stop_primary(&mut self) -> Result<(), EnvError> {
        match &mut self.backend {
            Archiving::Embedded { .. } => Ok(self.primary_mut().stop().await?),
            Archiving::Containers(env) => env.stop_primary().await,
        }
    }

    /// Starts the stopped primary again on the same data directory; its
    /// port may change on containers, so read [`Self::source`] afterwards.
    pub async fn restart_primary(&mut self) -> Result<(), EnvError> {
        match &mut self.backend {
            Archiving::Embedded { .. } => Ok(self.primary_mut().restart().await?),
            Archiving::Containers(env) => env.restart_primary().await,
        }
    }

    /// The primary's data directory on this machine (on containers, the
    /// directory mounted as its `PGDATA`).
    pub fn primary_data_dir(&self) -> PathBuf {
        match &self.backend {
            Archiving::Embedded { .. } => self.primary().data_dir().to_path_buf(),
            Archiving::Containers(env) => env
                .primary_data_dir()
                .expect("an archiving primary's PGDATA is mounted from this machine")
                .to_path_buf(),
        }
    }

    /// Everything the primary logged so far.
    pub async fn primary_log(&self) -> String {
        match &self.backend {
            Archiving::Embedded { .. } => self.primary().log_since(0),
            Archiving::Containers(env) => env.primary_log().await,
        }
    }

    /// A superuser on the primary.
    pub fn admin(&self) -> ConnInfo {
        match &self.backend {
            Archiving::Embedded { .. } => self.primary().admin(),
            Archiving::Containers(env) => env.admin(),
        }
    }

    /// The application database on the primary.
    pub fn source(&self) -> ConnInfo {
        self.admin().with_database(APP_DATABASE)
    }

    pub fn store(&self) -> &Store {
        match &self.backend {
            Archiving::Embedded { store, .. } => store,
            Archiving::Containers(env) => env.store(),
        }
    }

    /// What [`recover_to`] needs, with "now" as the future-target limit.
    pub fn pitr_options(&self) -> PitrOptions {
        PitrOptions {
            drillbook: self.program.clone(),
            password: self.password.clone(),
            now: Utc::now(),
            restore_command: None,
            at_target: AtTarget::Promote,
        }
    }

    /// Recovers to `target` from this environment's archive into a new
    /// server of its backend (a local cluster, or a container on its network).
    ///
    /// # Errors
    /// As [`recover_to`].
    pub async fn recover(&mut self, target: &RecoveryTarget) -> crate::pitr::Result<Recovered> {
        let options = self.pitr_options();
        match &mut self.backend {
            Archiving::Embedded { store, .. } => recover_to(&self.bins, store, target, &options).await,
            Archiving::Containers(env) => {
                let store = env.store().clone();
                recover_on(RecoveryHost::Containers(env), &self.bins, &store, target, &options).await
            }
        }
    }

    /// The primary is lost with its disks: killed (SIGKILL) and its data
    /// directory deleted, or its container removed. The archive in S3 survives.
    pub async fn destroy_primary(&mut self) -> Result<(), EnvError> {
        match &mut self.backend {
            Archiving::Embedded { primary, .. } => {
                if let Some(mut primary) = primary.take() {
                    primary.kill();
                    std::fs::remove_dir_all(primary.data_dir())
                        .map_err(PgError::io("delete the primary's data directory"))?;
                    primary.cleanup().await?;
                }
                Ok(())
            }
            Archiving::Containers(env) => env.destroy_primary().await,
        }
    }

    pub async fn cleanup(self) -> Result<(), EnvError> {
        match self.backend {
            Archiving::Embedded { s3, primary, .. } => {
                if let Some(primary) = primary {
                    primary.cleanup().await?;
                }
                s3.cleanup();
                Ok(())
            }
            Archiving::Containers(env) => env.cleanup().await,
        }
    }
}

const LOCAL_PRIMARY_ONLY: &str = "local cluster access (stop, restart, data files) is not supported on the containers backend because the primary is a container; run this drill with DRILL_ENV=embedded";
