//! The embedded backend: a PostgreSQL cluster per drill and an in-process
//! S3 server, all on 127.0.0.1, all removed at the end.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::{APP_DATABASE, BACKUP_BUCKET, EmbeddedS3, Result};
use crate::fixtures::{self, FixtureSpec, SeedSummary};
use crate::pg::{Cluster, ClusterOptions, ConnInfo, PgBinaries};
use crate::store::{S3Config, Store};

/// A disposable environment: everything in it was created by this process,
/// so drills may corrupt, kill and delete freely.
#[derive(Debug)]
pub struct EmbeddedEnvironment {
    bins: PgBinaries,
    primary: Option<Cluster>,
    /// Clusters created during the drill (restore targets, standbys).
    others: Vec<Cluster>,
    s3: EmbeddedS3,
    store: Store,
}

/// What `drillbook env up` prints: everything needed to run the playbook's
/// own `psql` and `aws` commands against the environment.
#[derive(Debug, Serialize)]
pub struct ConnectionFacts {
    pub database_url: String,
    pub admin_url: String,
    pub s3_endpoint: String,
    pub region: String,
    pub bucket: String,
    pub backup_bucket: String,
    pub access_key: String,
    pub secret_key: String,
    pub pg_bin: String,
}

impl EmbeddedEnvironment {
    /// Starts a cluster with an empty application database and an S3 server
    /// with the backup bucket.
    pub async fn start() -> Result<Self> {
        Self::start_with(ClusterOptions::default()).await
    }

    pub async fn start_with(options: ClusterOptions) -> Result<Self> {
        Self::start_configured(|_| Ok(options)).await
    }

    /// [`Self::start_with`] a primary that archives its WAL into the
    /// environment's S3 with `program wal-push` (`drillbook env up
    /// --wal-archiving`), so base backups, recovery and `check` can be tried
    /// by hand. `program` must be executable by the server's user.
    pub async fn start_archiving(port: Option<u16>, program: &Path, archive_timeout: Duration) -> Result<Self> {
        Self::start_configured(|s3| {
            let mut options = crate::wal::archiving_options(program, s3, archive_timeout)?;
            options.port = port;
            Ok(options)
        })
        .await
    }

    /// The bucket exists before the primary starts: an archiving primary
    /// pushes its first segment into it at once.
    async fn start_configured(options: impl FnOnce(&S3Config) -> Result<ClusterOptions>) -> Result<Self> {
        let bins = PgBinaries::discover()?;
        let s3 = EmbeddedS3::start()?;
        let config = s3.config(BACKUP_BUCKET);
        let store = Store::connect(config.clone()).await;
        store.ensure_bucket().await?;
        let primary = Cluster::start(&bins, options(&config)?).await?;
        primary.create_database(APP_DATABASE).await?;
        Ok(Self {
            bins,
            primary: Some(primary),
            others: Vec::new(),
            s3,
            store,
        })
    }

    /// Loads the fixture ledger into the application database.
    pub async fn seed(&self, spec: FixtureSpec) -> Result<SeedSummary> {
        Ok(fixtures::seed(&self.source(), spec).await?)
    }

    pub fn binaries(&self) -> &PgBinaries {
        &self.bins
    }

    /// The primary cluster; panics after [`Self::destroy_primary`].
    pub fn primary(&self) -> &Cluster {
        self.primary.as_ref().expect("the primary cluster was destroyed")
    }

    /// The application database on the primary.
    pub fn source(&self) -> ConnInfo {
        self.primary().admin().with_database(APP_DATABASE)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn s3(&self) -> &EmbeddedS3 {
        &self.s3
    }

    /// The incident of "complete infrastructure loss": the primary is killed
    /// (SIGKILL) and its data directory deleted. The S3 bucket survives.
    pub async fn destroy_primary(&mut self) -> Result<()> {
        if let Some(mut primary) = self.primary.take() {
            primary.kill();
            // Keep nothing, whatever DRILL_KEEP says: the point is that it is gone.
            std::fs::remove_dir_all(primary.data_dir())
                .map_err(crate::pg::PgError::io("delete the primary's data directory"))?;
            primary.cleanup().await?;
        }
        Ok(())
    }

    /// A new, empty cluster (a replacement server); returns its admin facts.
    pub async fn provision_cluster(&mut self) -> Result<ConnInfo> {
        let cluster = Cluster::start(&self.bins, ClusterOptions::default()).await?;
        let admin = cluster.admin();
        self.others.push(cluster);
        Ok(admin)
    }

    /// A hot standby of the primary (`pg_basebackup`, then streaming over
    /// loopback); returns its admin facts once it answers read-only queries.
    pub async fn start_standby(&mut self) -> Result<ConnInfo> {
        let primary = self.primary();
        let standby = crate::failover::create_standby(&self.bins, primary, primary.port()).await?;
        let admin = standby.admin();
        self.others.push(standby);
        Ok(admin)
    }

    /// Whether `target` is a database on one of this environment's own
    /// clusters (the primary or one it provisioned): servers this process
    /// created and will delete, where the harness (`fault`) may inject incidents.
    pub fn owns(&self, target: &ConnInfo) -> bool {
        self.primary.iter().chain(&self.others).any(|cluster| {
            let admin = cluster.admin();
            admin.host == target.host && admin.port == target.port
        })
    }

    pub fn connection_facts(&self) -> ConnectionFacts {
        let primary = self.primary();
        ConnectionFacts {
            database_url: self.source().url(),
            admin_url: primary.admin().url(),
            s3_endpoint: self.s3.endpoint(),
            region: self.store.config().region.clone(),
            bucket: self.store.config().bucket.clone(),
            backup_bucket: self.store.config().location(),
            access_key: self.s3.access_key().to_owned(),
            secret_key: self.s3.secret_key().expose().to_owned(),
            pg_bin: self.bins.bin_dir().display().to_string(),
        }
    }

    /// Stops every server and removes every file (kept with `DRILL_KEEP=1`).
    pub async fn cleanup(mut self) -> Result<()> {
        let mut first_error = None;
        for cluster in self.primary.take().into_iter().chain(self.others.drain(..)) {
            if let Err(e) = cluster.cleanup().await {
                first_error.get_or_insert(e);
            }
        }
        self.s3.cleanup();
        first_error.map_or(Ok(()), |e| Err(e.into()))
    }
}
