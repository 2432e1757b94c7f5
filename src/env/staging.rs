//! The staging backend: existing servers named in `drill.toml` (see
//! [`super::config`]).
//!
//! # Guarantees
//!
//! Nothing that existed before the drill is written, corrupted or dropped:
//! the source database is only read, the existing backups are only read,
//! restores go to new `<source>_restore_<stamp>` databases that the
//! [`Guard`] records, and only recorded databases and scratch objects are
//! ever dropped or deleted: by [`StagingEnvironment::cleanup`], or by `Drop`
//! when a drill panics (`DRILL_KEEP=1` keeps them and prints their names).
//!
//! # Caveats
//!
//! A restore replays the backup's `roles.sql` on the staging server: missing
//! roles are created, existing ones get the attributes they had at backup time.

use std::time::Duration;

use chrono::Utc;
use sqlx::{Connection, PgConnection};

use super::config::StagingConfig;
use super::guard::Guard;
use super::{EnvError, RestoreTarget, Result};
use crate::pg::{ConnInfo, PgBinaries, PgError, quote_ident};
use crate::store::Store;

/// Connecting, listing and dropping on staging each get this long.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Existing servers; see the module docs for what a drill may do to them.
#[derive(Debug)]
pub struct StagingEnvironment {
    config: StagingConfig,
    bins: PgBinaries,
    store: Store,
    guard: Guard,
    cleaned: bool,
}

async fn timed<T>(what: &str, call: impl Future<Output = T>) -> Result<T> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .map_err(|_| EnvError::Timeout {
            what: what.to_owned(),
            after: CALL_TIMEOUT,
        })
}

impl StagingEnvironment {
    /// Checks that the admin role can connect, that the source database
    /// exists and that the bucket can be listed; changes nothing.
    ///
    /// # Errors
    /// [`EnvError::Staging`] naming what was unreachable and how to fix it.
    pub async fn connect(config: StagingConfig) -> Result<Self> {
        let bins = PgBinaries::discover_client()?;
        let admin = config.admin.clone();
        let mut conn = timed(
            &format!("connect to the staging server {admin}"),
            PgConnection::connect_with(&admin.connect_options()),
        )
        .await?
        .map_err(|e| EnvError::Staging {
            problem: format!("failed to connect to the staging admin URL {admin}"),
            fix: "check [database] admin_url (or DRILL_ADMIN_URL): host, port, role and password".to_owned(),
            source: Some(Box::new(e)),
        })?;
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&config.source_database)
            .fetch_one(&mut conn)
            .await
            .map_err(PgError::sql("look up the source database"))?;
        let _ = conn.close().await;
        if !exists {
            return Err(EnvError::Staging {
                problem: format!(
                    "the source database {:?} does not exist on {admin}",
                    config.source_database
                ),
                fix: "set [database] source (or DRILL_SOURCE_DATABASE) to the application database".to_owned(),
                source: None,
            });
        }
        let store = Store::connect(config.s3.clone()).await;
        timed(
            &format!("list {}", config.s3.location()),
            store.list(crate::store::layout::DAILY),
        )
        .await?
        .map_err(|e| EnvError::Staging {
            problem: format!("failed to list the backups in {}", config.s3.location()),
            fix: "check [s3] bucket, endpoint, region and the credentials (the default AWS chain unless set)"
                .to_owned(),
            source: Some(Box::new(e)),
        })?;
        tracing::info!(server = %admin, source = %config.source_database, bucket = %config.s3.location(), "staging environment ready");
        Ok(Self {
            config,
            bins,
            store,
            guard: Guard::new("staging"),
            cleaned: false,
        })
    }

    pub fn config(&self) -> &StagingConfig {
        &self.config
    }

    pub fn binaries(&self) -> &PgBinaries {
        &self.bins
    }

    pub fn admin(&self) -> ConnInfo {
        self.config.admin.clone()
    }

    /// The application database (read only).
    pub fn source(&self) -> ConnInfo {
        self.config.admin.with_database(&self.config.source_database)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn guard(&self) -> &Guard {
        &self.guard
    }

    /// A new database name on the staging server for a restore, recorded
    /// in the guard. `restore_database` creates it and refuses if a database
    /// of that name exists, so a name taken by someone else is never adopted.
    pub async fn provision_restore_target(&mut self) -> Result<RestoreTarget> {
        let database = format!(
            "{}_restore_{}",
            self.config.source_database,
            Utc::now().format("%Y%m%d%H%M%S%3f")
        );
        let admin = self.admin();
        let mut conn = timed(
            "connect to the staging server",
            PgConnection::connect_with(&admin.connect_options()),
        )
        .await?
        .map_err(PgError::sql(format!("connect to {admin}")))?;
        let taken: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&database)
            .fetch_one(&mut conn)
            .await
            .map_err(PgError::sql("look up existing databases"))?;
        let _ = conn.close().await;
        if taken {
            return Err(PgError::DatabaseExists { database }.into());
        }
        self.guard.created_database(&admin.with_database(&database));
        Ok(RestoreTarget { admin, database })
    }

    /// Drops a database this drill created.
    ///
    /// # Errors
    /// [`EnvError::Guard`] for any other database, before connecting.
    pub async fn drop_database(&mut self, target: &ConnInfo) -> Result<()> {
        self.guard.allow_database("drop", target)?;
        drop_database(&self.admin(), &target.database).await?;
        self.guard.forget_database(target);
        Ok(())
    }

    /// Writes a scratch object; refuses to write over an existing key.
    pub async fn put_scratch_object(&mut self, key: &str, bytes: Vec<u8>) -> Result<()> {
        if self.store.size_of(key).await?.is_some() && !self.guard.owns_object(key) {
            self.guard
                .allow_object("overwrite", &self.store.config().location(), key)?;
        }
        self.guard.created_object(key);
        self.store.put_bytes(key, bytes, "application/octet-stream").await?;
        Ok(())
    }

    /// Deletes a scratch object this drill wrote.
    ///
    /// # Errors
    /// [`EnvError::Guard`] for any other key.
    pub async fn delete_object(&mut self, key: &str) -> Result<()> {
        self.guard
            .allow_object("delete", &self.store.config().location(), key)?;
        self.store.delete(key).await?;
        Ok(())
    }

    /// Drops the drill's restored databases and deletes its scratch objects
    /// (kept with `DRILL_KEEP=1`, and their names printed).
    pub async fn cleanup(mut self) -> Result<()> {
        self.cleaned = true;
        if crate::scratch::keep_requested() {
            self.print_kept();
            return Ok(());
        }
        let mut first_error = None;
        let admin = self.admin();
        let databases: Vec<String> = self.guard.databases().map(|(_, _, d)| d.to_owned()).collect();
        for database in databases {
            if let Err(e) = drop_database(&admin, &database).await {
                first_error.get_or_insert(e);
            }
        }
        let objects: Vec<String> = self.guard.objects().map(str::to_owned).collect();
        for key in objects {
            if let Err(e) = self.store.delete(&key).await {
                first_error.get_or_insert(e.into());
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn print_kept(&self) {
        for (_, _, database) in self.guard.databases() {
            eprintln!(
                "DRILL_KEEP=1: kept staging database {database} on {}",
                self.config.admin
            );
        }
        for key in self.guard.objects() {
            eprintln!(
                "DRILL_KEEP=1: kept scratch object {}{key}",
                self.store.config().location()
            );
        }
    }
}

impl Drop for StagingEnvironment {
    /// The panic path: drops what the drill created, on a thread of its own
    /// (a runtime cannot block inside itself).
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        if crate::scratch::keep_requested() {
            self.print_kept();
            return;
        }
        let admin = self.admin();
        let databases: Vec<String> = self.guard.databases().map(|(_, _, d)| d.to_owned()).collect();
        let objects: Vec<String> = self.guard.objects().map(str::to_owned).collect();
        if databases.is_empty() && objects.is_empty() {
            return;
        }
        let store = self.store.clone();
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            runtime.block_on(async {
                for database in databases {
                    if let Err(e) = drop_database(&admin, &database).await {
                        eprintln!("could not drop staging database {database}: {e}; drop it by hand");
                    }
                }
                for key in objects {
                    if let Err(e) = store.delete(&key).await {
                        eprintln!("could not delete scratch object {key}: {e}; delete it by hand");
                    }
                }
            });
        });
        let _ = cleanup.join();
    }
}

async fn drop_database(admin: &ConnInfo, database: &str) -> Result<()> {
    let mut conn = timed(
        "connect to the staging server",
        PgConnection::connect_with(&admin.connect_options()),
    )
    .await?
    .map_err(PgError::sql(format!("connect to {admin}")))?;
    let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(database));
    timed(
        &format!("drop database {database}"),
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn),
    )
    .await?
    .map_err(PgError::sql(format!("drop database {database:?}")))?;
    let _ = conn.close().await;
    tracing::info!(database, "dropped the drill's restored copy");
    Ok(())
}
