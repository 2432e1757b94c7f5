//! Full restore from the newest logical backup (the playbook's section 3.2).
//!
//! 1. Pick the backup: the newest dump under `daily/` (as the playbook's
//!    `sort | tail -1` does), or a named stamp, and read its manifest. A dump
//!    without a manifest is refused: restoring an older backup instead would
//!    silently lose data, restoring it unverified takes
//!    [`restore_unverified_dump`], on the operator's explicit word. Refuse a
//!    manifest without every critical table's row count, and a named target
//!    database that exists, before downloading anything.
//! 2. Check the dump exists with the manifest's size, download it to a
//!    private temp dir hashing it on the way, and refuse it unless the
//!    SHA-256 matches.
//! 3. Create the cluster roles the backup recorded, if missing.
//! 4. Create the database as `drillbook_incomplete_<owner>_<random>`
//!    ([`crate::pg::incomplete`]), `pg_restore --no-owner --no-acl --jobs=N`.
//! 5. Re-apply the grants the backup recorded (unless
//!    [`GrantsMode::Bare`]), then compare row counts, content fingerprints,
//!    the audit chain head and anchor, and the grants with the manifest
//!    ([`checks`]); the report says what was compared.
//! 6. Rename it to `<db>_restore_<time>` (or the chosen name).
//!
//! # Guarantees
//! Nothing under the final name is half restored or unverified, whatever
//! is killed when: the database gets its name only after step 5 passed. A
//! restore that fails drops its incomplete database; an interrupted one
//! (SIGINT/SIGTERM to `drillbook restore`) has it dropped by the command
//! line; a killed one (SIGKILL) leaves it under its incomplete name, and
//! the next restore on that server drops it. `pg_restore` dies with
//! drillbook (`pg::child`). The downloaded dump lives in an
//! owner-only dir, deleted on every exit path and reaped when its owner is
//! gone.

use std::time::{Duration, Instant};

use chrono::Utc;
use serde::Serialize;
use sqlx::{Connection, PgConnection};

pub mod checks;

use crate::pg::incomplete::IncompleteDatabase;
use crate::pg::tools::pg_restore;
use crate::pg::{ConnInfo, PgBinaries, PgError};
use crate::store::manifest::{BackupManifest, FORMAT};

use crate::store::{Store, StoreError, layout};
pub use checks::{GrantsCheck, GrantsMode, Verification};
use checks::{MAX_IDENTIFIER_BYTES, check_manifest, check_target_absent, verify_restore};

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
        "dump {location}{dump} has no manifest ({location}{manifest}): it cannot be verified and may be \
         incomplete, so it is not restored. {}",
        match (newest_described, older_by) {
            (Some(stamp), Some(gap)) => format!(
                "The newest backup with a manifest is {stamp}, {} older: restore it with --backup {stamp}, \
                 or restore the unverified dump with --accept-unverified (nothing is then checked)",
                crate::progress::duration(*gap)
            ),
            _ => "No older backup has a manifest either: restore the unverified dump with \
                  --accept-unverified (nothing is then checked), or take a new backup".to_owned(),
        }
    )]
    ManifestMissing {
        location: String,
        dump: String,
        manifest: String,
        newest_described: Option<String>,
        older_by: Option<Duration>,
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

/// The dumps under `daily/`, oldest first: `(stamp, key)`.
async fn published_dumps(store: &Store) -> Result<Vec<(String, String)>, RestoreError> {
    let mut dumps: Vec<(String, String)> = store
        .list(layout::DAILY)
        .await?
        .into_iter()
        .filter_map(|object| layout::stamp_of_dump(&object.key).map(|stamp| (stamp.to_owned(), object.key.clone())))
        .collect();
    dumps.sort();
    Ok(dumps)
}

/// The chosen dump: `(stamp, key)`.
async fn find_dump(store: &Store, choice: &BackupChoice) -> Result<(String, String), RestoreError> {
    let location = store.config().location();
    let dumps = published_dumps(store).await?;
    match choice {
        BackupChoice::Newest => dumps.last().cloned().ok_or(RestoreError::NoBackups { location }),
        BackupChoice::Stamp(wanted) => {
            dumps
                .iter()
                .find(|(stamp, _)| stamp == wanted)
                .cloned()
                .ok_or_else(|| RestoreError::NoSuchBackup {
                    stamp: wanted.clone(),
                    location,
                    available: dumps.into_iter().map(|(stamp, _)| stamp).collect(),
                })
        }
    }
}

/// The manifest of the backup `stamp`, where it is now or where backups of
/// the earlier layout kept it; `None` when it has none.
async fn read_manifest(store: &Store, stamp: &str) -> Result<Option<(String, Vec<u8>)>, RestoreError> {
    for key in [layout::manifest_key(stamp), layout::legacy_manifest_key(stamp)] {
        match store.get_bytes(&key).await {
            Ok(bytes) => return Ok(Some((key, bytes))),
            Err(StoreError::NotFound { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(None)
}

/// Finds and reads the manifest of the chosen backup: the newest dump under
/// `daily/`, or the named stamp.
///
/// # Errors
/// [`RestoreError::ManifestMissing`] when that dump has no manifest: never
/// an older backup in its place.
pub async fn find_backup(store: &Store, choice: &BackupChoice) -> Result<BackupManifest, RestoreError> {
    let location = store.config().location();
    let (stamp, dump) = find_dump(store, choice).await?;
    let Some((key, bytes)) = read_manifest(store, &stamp).await? else {
        // Name the newest backup that could be restored instead, and the cost.
        let mut described = None;
        for (older, _) in published_dumps(store)
            .await?
            .into_iter()
            .rev()
            .filter(|(s, _)| *s < stamp)
        {
            if read_manifest(store, &older).await?.is_some() {
                described = Some(older);
                break;
            }
        }
        let older_by = described.as_deref().and_then(|older| {
            let gap = layout::parse_stamp(&stamp)? - layout::parse_stamp(older)?;
            gap.to_std().ok()
        });
        return Err(RestoreError::ManifestMissing {
            location,
            dump,
            manifest: layout::manifest_key(&stamp),
            newest_described: described,
            older_by,
        });
    };
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
    reap_leftovers(admin).await?;
    let location = store.config().location();
    let manifest = find_backup(store, &options.backup).await?;
    check_manifest(&manifest, &location)?;
    let database = target_name(options, &manifest.database)?;
    if options.target_database.is_some() {
        check_target_absent(admin, &database).await?;
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
    let workdir = crate::scratch::owned_tempdir("drillbook-restore-").map_err(RestoreError::TempDir)?;
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

    let restore_started = Instant::now();
    let incomplete = IncompleteDatabase::create(admin, &database).await?;
    let restored = async {
        restore_archive(bins, &incomplete, &database, &archive, options.jobs).await?;
        let restore = restore_started.elapsed();
        let verify_started = Instant::now();
        crate::failpoint!("restore::before_verify");
        let verification = verify_restore(&incomplete.conn(), &manifest, options.grants).await?;
        Ok::<_, RestoreError>((restore, verify_started.elapsed(), verification))
    }
    .await;
    let (restore, verify, verification) = match restored {
        Ok(timings) => timings,
        Err(e) => {
            incomplete.discard().await;
            return Err(e);
        }
    };
    let target = incomplete.complete(&database).await?;
    drop(workdir);
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

/// What [`restore_unverified_dump`] did: nothing was checked.
#[derive(Debug, Clone, Serialize)]
pub struct UnverifiedRestoreReport {
    #[serde(skip)]
    pub target: ConnInfo,
    pub database: String,
    pub dump: String,
    pub bytes: u64,
    /// SHA-256 of what was downloaded: nothing to compare it with.
    pub sha256: String,
    /// Always `false`: no manifest, so no size, checksum, roles or row counts.
    pub verified: bool,
    #[serde(with = "crate::serde_duration")]
    pub download: Duration,
    #[serde(with = "crate::serde_duration")]
    pub restore: Duration,
}

/// Restores the chosen dump although it has no manifest (the operator's
/// explicit `--accept-unverified`): nothing can be checked, not its size,
/// its checksum, its roles or its row counts, and the report says so. The
/// restore is still atomic as seen from outside (see the module docs).
pub async fn restore_unverified_dump(
    bins: &PgBinaries,
    admin: &ConnInfo,
    store: &Store,
    options: &RestoreOptions,
) -> Result<UnverifiedRestoreReport, RestoreError> {
    reap_leftovers(admin).await?;
    let (stamp, dump) = find_dump(store, &options.backup).await?;
    let source_database = dump
        .rsplit('/')
        .next()
        .and_then(|file| file.strip_suffix(".dump"))
        .unwrap_or("restored")
        .to_owned();
    let database = target_name(options, &source_database)?;
    if options.target_database.is_some() {
        check_target_absent(admin, &database).await?;
    }
    tracing::warn!(%dump, stamp, "restoring a dump WITHOUT a manifest: nothing will be verified");

    let started = Instant::now();
    let workdir = crate::scratch::owned_tempdir("drillbook-restore-").map_err(RestoreError::TempDir)?;
    let archive = workdir.path().join(format!("{source_database}.dump"));
    let downloaded = store.download_to_file(&dump, &archive).await?;
    let download = started.elapsed();

    let restore_started = Instant::now();
    let incomplete = IncompleteDatabase::create(admin, &database).await?;
    if let Err(e) = restore_archive(bins, &incomplete, &database, &archive, options.jobs).await {
        incomplete.discard().await;
        return Err(e);
    }
    let restore = restore_started.elapsed();
    let target = incomplete.complete(&database).await?;
    drop(workdir);
    Ok(UnverifiedRestoreReport {
        target,
        database,
        dump,
        bytes: downloaded.bytes,
        sha256: downloaded.sha256,
        verified: false,
        download,
        restore,
    })
}

/// Drops what interrupted restores left on `admin`'s server (incomplete
/// databases whose owner is gone) and in this machine's temp dir.
async fn reap_leftovers(admin: &ConnInfo) -> Result<(), RestoreError> {
    crate::scratch::reap_temp_dir_once();
    crate::pg::incomplete::reap(admin, false).await?;
    Ok(())
}

/// The final name: the chosen one or `<db>_restore_<UTC time>`.
fn target_name(options: &RestoreOptions, source_database: &str) -> Result<String, RestoreError> {
    let database = options
        .target_database
        .clone()
        .unwrap_or_else(|| format!("{source_database}_restore_{}", Utc::now().format("%Y%m%d%H%M%S%3f")));
    if database.len() > MAX_IDENTIFIER_BYTES {
        // PostgreSQL would silently truncate it and we would then connect elsewhere.
        return Err(RestoreError::TargetNameTooLong { database });
    }
    Ok(database)
}

/// `pg_restore` of `archive` into the incomplete database meant to become `database`.
async fn restore_archive(
    bins: &PgBinaries,
    incomplete: &IncompleteDatabase,
    database: &str,
    archive: &std::path::Path,
    jobs: usize,
) -> Result<(), RestoreError> {
    crate::failpoint!("restore::before_pg_restore");
    // pg_restore reports no byte progress: shown as a phase with its elapsed time.
    // Named after the database the operator asked for; it gets that name once verified.
    let phase = crate::progress::task(
        format!("pg_restore into {database}"),
        crate::progress::Unit::Elapsed,
        None,
    );
    pg_restore(bins, &incomplete.conn(), archive, jobs)
        .await
        .map_err(|source| RestoreError::Restore {
            database: database.to_owned(),
            source,
        })?;
    phase.finish();
    Ok(())
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
