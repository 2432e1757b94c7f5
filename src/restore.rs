//! Full restore from the newest logical backup (the playbook's section 3.2).
//!
//! 1. Pick the backup: the newest manifest under `daily/`, or a named stamp.
//!    Refuse a manifest without every critical table's row count, and a
//!    named target database that exists, before downloading anything.
//! 2. Check the dump exists with the manifest's size, download it to a temp
//!    dir hashing it on the way, and refuse it unless the SHA-256 matches.
//! 3. Create the cluster roles the backup recorded, if missing.
//! 4. `CREATE DATABASE <db>_restore_<stamp>` (never an existing database),
//!    `pg_restore --no-owner --no-acl --jobs=N`.
//! 5. Re-apply the grants the backup recorded (unless
//!    [`GrantsMode::Bare`]), then compare row counts, content fingerprints,
//!    the audit chain head and anchor, and the grants with the manifest
//!    ([`crate::restore_checks`]); the report says what was compared.
//!
//! # Guarantees
//! A restore that fails at step 4 or 5 drops the database it created: no
//! half-restored database is left behind looking usable. The downloaded
//! dump is deleted in every case.

use std::time::{Duration, Instant};

use chrono::Utc;
use serde::Serialize;
use sqlx::{Connection, PgConnection};

use crate::pg::tools::pg_restore;
use crate::pg::{ConnInfo, PgBinaries, PgError, quote_ident};
pub use crate::restore_checks::{GrantsCheck, GrantsMode, Verification};
use crate::restore_checks::{MAX_IDENTIFIER_BYTES, check_manifest, check_target_absent, verify_restore};
use crate::store::manifest::{BackupManifest, FORMAT};
use crate::store::{Store, StoreError, layout};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    #[error("no backups under {location}daily/; take one with `drillbook backup` or check the bucket and prefix")]
    NoBackups { location: String },
    #[error("no backup {stamp} under {location}daily/; available: {}", available.join(", "))]
    NoSuchBackup {
        stamp: String,
        location: String,
        available: Vec<String>,
    },
    #[error(
        "manifest {location}{key} does not parse ({reason}); this backup is unusable: \
         restore an older one with --backup <stamp> or take a new backup"
    )]
    ManifestUnreadable {
        location: String,
        key: String,
        reason: String,
    },
    #[error(
        "manifest {location}{key} lists no row count for the critical table(s) {} (playbook 3.2 step 4), so a \
         restore could not show it got them; the manifest was not written by `drillbook backup` or was altered: \
         restore another backup with --backup <stamp> or take a new backup. Nothing was downloaded or created",
        missing.join(", ")
    )]
    ManifestIncomplete {
        location: String,
        key: String,
        missing: Vec<String>,
    },
    #[error("manifest {key} has format {found}, newer than this drillbook reads ({FORMAT}); upgrade drillbook")]
    ManifestTooNew { key: String, found: u32 },
    #[error(
        "dump {location}{key} is missing although its manifest exists; the backup is incomplete: \
         restore an older one with --backup <stamp>"
    )]
    DumpMissing { location: String, key: String },
    #[error(
        "dump {location}{key} is {actual} bytes but its manifest says {expected} (truncated or replaced?); \
         refusing to restore it: restore an older one with --backup <stamp>"
    )]
    DumpSizeMismatch {
        location: String,
        key: String,
        expected: u64,
        actual: u64,
    },
    #[error(
        "dump {location}{key} has sha256 {actual} but its manifest says {expected}; the dump is corrupt \
         or was replaced: refusing to restore it. Restore an older one with --backup <stamp>"
    )]
    ChecksumMismatch {
        location: String,
        key: String,
        expected: String,
        actual: String,
    },
    #[error(
        "restored table {table} has {actual} rows but the backup's manifest says {expected}; the restore is incomplete and was dropped"
    )]
    RowCountMismatch { table: String, expected: u64, actual: u64 },
    #[error("restored database is missing table {table} that the backup's manifest lists; the restore was dropped")]
    TableMissing { table: String },
    #[error(
        "restored database has table {table} that the backup's manifest does not list (a manifest lists every \
         table of the dump): the manifest does not describe this dump; the restore was dropped"
    )]
    TableNotInManifest { table: String },
    #[error(
        "restored table {table} has content fingerprint {actual} but the backup's manifest says {expected}: \
         its rows differ from the backup's; the restore was dropped"
    )]
    FingerprintMismatch {
        table: String,
        expected: String,
        actual: String,
    },
    #[error(
        "restored audit chain {what} is {actual} but the backup's manifest says {expected}; the restore was dropped"
    )]
    AuditChainMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error(
        "after re-applying the backup's grants the restored database still lacks {}: the application role \
         cannot read what it could at backup time; the restore was dropped",
        missing.join(", ")
    )]
    GrantsMissing { missing: Vec<String> },
    #[error(
        "failed to restore into {database}; the partial database was dropped. The dump may be damaged \
         (try an older one with --backup <stamp>) or the server lacks what it needs (see the cause)"
    )]
    Restore {
        database: String,
        #[source]
        source: PgError,
    },
    #[error(transparent)]
    Postgres(#[from] PgError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "target database name {database:?} is longer than PostgreSQL's {MAX_IDENTIFIER_BYTES} bytes; \
         name a shorter target database"
    )]
    TargetNameTooLong { database: String },
    #[error("failed to create a temp dir for the download")]
    TempDir(#[source] std::io::Error),
}

/// Which backup to restore.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum BackupChoice {
    #[default]
    Newest,
    Stamp(String),
}

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub backup: BackupChoice,
    /// `pg_restore --jobs`.
    pub jobs: usize,
    /// Name of the database to create; `<db>_restore_<UTC time>` by default.
    pub target_database: Option<String>,
    /// Re-apply the backup's grants (default) or restore bare, as the
    /// playbook's `pg_restore --no-acl`.
    pub grants: GrantsMode,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        Self {
            backup: BackupChoice::Newest,
            jobs: 4,
            target_database: None,
            grants: GrantsMode::default(),
        }
    }
}

/// What a restore did, with its timings.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// The restored database.
    #[serde(skip)]
    pub target: ConnInfo,
    pub database: String,
    pub manifest: BackupManifest,
    #[serde(with = "crate::serde_duration")]
    pub download: Duration,
    #[serde(with = "crate::serde_duration")]
    pub restore: Duration,
    #[serde(with = "crate::serde_duration")]
    pub verify: Duration,
    /// What was compared with the manifest.
    pub verification: Verification,
}

/// Finds and reads the manifest of the chosen backup.
pub async fn find_backup(store: &Store, choice: &BackupChoice) -> Result<BackupManifest, RestoreError> {
    let location = store.config().location();
    let mut stamps: Vec<String> = store
        .list(layout::DAILY)
        .await?
        .iter()
        .filter_map(|object| layout::stamp_of_manifest(&object.key).map(str::to_owned))
        .collect();
    stamps.sort();
    let stamp = match choice {
        BackupChoice::Newest => stamps.last().cloned().ok_or(RestoreError::NoBackups {
            location: location.clone(),
        })?,
        BackupChoice::Stamp(wanted) => {
            stamps
                .iter()
                .find(|s| *s == wanted)
                .cloned()
                .ok_or_else(|| RestoreError::NoSuchBackup {
                    stamp: wanted.clone(),
                    location: location.clone(),
                    available: stamps.clone(),
                })?
        }
    };
    let key = layout::manifest_key(&stamp);
    let bytes = store.get_bytes(&key).await?;
    let manifest = BackupManifest::from_json(&bytes).map_err(|e| RestoreError::ManifestUnreadable {
        location: location.clone(),
        key: key.clone(),
        reason: e.to_string(),
    })?;
    if manifest.format > FORMAT {
        return Err(RestoreError::ManifestTooNew {
            key,
            found: manifest.format,
        });
    }
    Ok(manifest)
}

/// Restores a backup from `store` into a new database on the server `admin`
/// points at. See the module docs for the steps and guarantees.
pub async fn restore_database(
    bins: &PgBinaries,
    admin: &ConnInfo,
    store: &Store,
    options: &RestoreOptions,
) -> Result<RestoreReport, RestoreError> {
    let location = store.config().location();
    let manifest = find_backup(store, &options.backup).await?;
    check_manifest(&manifest, &location)?;
    if let Some(database) = &options.target_database {
        check_target_absent(admin, database).await?;
    }
    let dump = &manifest.dump;
    match store.size_of(&dump.key).await? {
        None => {
            return Err(RestoreError::DumpMissing {
                location,
                key: dump.key.clone(),
            });
        }
        Some(actual) if actual != dump.bytes => {
            return Err(RestoreError::DumpSizeMismatch {
                location,
                key: dump.key.clone(),
                expected: dump.bytes,
                actual,
            });
        }
        Some(_) => {}
    }

    let started = Instant::now();
    let workdir = crate::pg::reaper::owned_tempdir("drillbook-restore-").map_err(RestoreError::TempDir)?;
    let archive = workdir.path().join(format!("{}.dump", manifest.database));
    let downloaded = store.download_to_file(&dump.key, &archive).await?;
    if downloaded.sha256 != dump.sha256 {
        return Err(RestoreError::ChecksumMismatch {
            location,
            key: dump.key.clone(),
            expected: dump.sha256.clone(),
            actual: downloaded.sha256,
        });
    }
    let download = started.elapsed();
    tracing::info!(key = %dump.key, bytes = downloaded.bytes, elapsed = ?download, "dump downloaded and verified");

    if let Some(roles) = &manifest.roles {
        let sql = store.get_bytes(&roles.key).await?;
        ensure_roles(admin, &String::from_utf8_lossy(&sql)).await?;
    }

    let database = options
        .target_database
        .clone()
        .unwrap_or_else(|| format!("{}_restore_{}", manifest.database, Utc::now().format("%Y%m%d%H%M%S%3f")));
    if database.len() > MAX_IDENTIFIER_BYTES {
        // PostgreSQL would silently truncate it and we would then connect elsewhere.
        return Err(RestoreError::TargetNameTooLong { database });
    }
    crate::pg::create_database(admin, &database).await?;
    let target = admin.with_database(&database);

    let restore_started = Instant::now();
    let restored = async {
        // pg_restore reports no byte progress: shown as a phase with its elapsed time.
        let phase = crate::progress::task(
            format!("pg_restore into {database}"),
            crate::progress::Unit::Elapsed,
            None,
        );
        pg_restore(bins, &target, &archive, options.jobs)
            .await
            .map_err(|source| RestoreError::Restore {
                database: database.clone(),
                source,
            })?;
        phase.finish();
        let restore = restore_started.elapsed();
        let verify_started = Instant::now();
        let verification = verify_restore(&target, &manifest, options.grants).await?;
        Ok::<_, RestoreError>((restore, verify_started.elapsed(), verification))
    }
    .await;
    let (restore, verify, verification) = match restored {
        Ok(timings) => timings,
        Err(e) => {
            drop_database(admin, &database).await;
            return Err(e);
        }
    };
    tracing::info!(%database, elapsed = ?restore, "restore verified against the manifest");
    Ok(RestoreReport {
        target,
        database,
        manifest,
        download,
        restore,
        verify,
        verification,
    })
}

/// Best effort: the database is being dropped because something already failed.
async fn drop_database(admin: &ConnInfo, database: &str) {
    let dropped = async {
        let mut conn = PgConnection::connect_with(&admin.connect_options()).await?;
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(database));
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await?;
        conn.close().await
    }
    .await;
    match dropped {
        Ok(()) => tracing::info!(database, "dropped the failed restore"),
        Err(e) => tracing::error!(database, error = %e, "could not drop the failed restore; drop it by hand"),
    }
}

/// Creates the roles a `pg_dumpall --roles-only` script defines, skipping
/// those that exist; other statements (role attributes, memberships) run as
/// they are. psql meta-commands and `SET` lines are skipped.
async fn ensure_roles(admin: &ConnInfo, script: &str) -> Result<(), PgError> {
    let mut conn = PgConnection::connect_with(&admin.connect_options())
        .await
        .map_err(PgError::sql(format!("connect to {admin}")))?;
    for statement in script.lines().map(str::trim) {
        if statement.is_empty()
            || statement.starts_with("--")
            || statement.starts_with('\\')
            || statement.starts_with("SET ")
        {
            continue;
        }
        let sql = if statement.starts_with("CREATE ROLE ") {
            format!("DO $drillbook$ BEGIN {statement} EXCEPTION WHEN duplicate_object THEN NULL; END $drillbook$")
        } else {
            statement.to_owned()
        };
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .map_err(PgError::sql(format!("recreate roles: {statement}")))?;
    }
    let _ = conn.close().await;
    Ok(())
}
