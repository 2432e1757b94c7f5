//! `drillbook backup` and `drillbook restore`.

use anyhow::Context as _;
use clap::Args;

use super::exit;
use super::interrupt::Interrupts;
use crate::backup::{backup_database, sweep_leftovers};
use crate::pg::{ConnInfo, PgBinaries};
use crate::restore::{
    BackupChoice, GrantsMode, RestoreError, RestoreOptions, restore_database, restore_unverified_dump,
};
use crate::store::{S3Config, Store};
use crate::table_restore::{restore_table_copy, swap_table_from};

/// Where the backups are. Credentials come from the default AWS chain
/// (`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`, profiles, instance roles).
#[derive(Debug, Args)]
pub(super) struct S3Args {
    /// Bucket and optional prefix, as the playbook writes it.
    #[arg(long, env = "BACKUP_BUCKET", value_name = "s3://BUCKET[/PREFIX]")]
    bucket: String,
    /// S3 endpoint for S3-compatible servers (LocalStack, MinIO, `env up`); AWS when unset.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    s3_endpoint: Option<String>,
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    region: String,
}

impl S3Args {
    /// The store, once its bucket is known to exist: a misspelt bucket fails
    /// here, before a dump of hours, and is never created.
    pub(super) async fn store(&self) -> anyhow::Result<Store> {
        open_store(&self.bucket, self.s3_endpoint.clone(), &self.region).await
    }
}

/// The store at `location` (`s3://BUCKET[/PREFIX]`), once its bucket is
/// known to exist.
pub(super) async fn open_store(location: &str, endpoint: Option<String>, region: &str) -> anyhow::Result<Store> {
    let (bucket, prefix) = S3Config::parse_location(location)?;
    let store = Store::connect(S3Config {
        endpoint,
        region: region.to_owned(),
        bucket,
        prefix,
        credentials: None,
    })
    .await;
    store.require_bucket().await?;
    Ok(store)
}

#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  drillbook backup --database-url \"$DATABASE_URL\" --admin-url \"$ADMIN_DATABASE_URL\" \\\n      --bucket s3://immoflowme-backups"
)]
pub(super) struct BackupArgs {
    /// The database to back up.
    #[arg(long, env = "DATABASE_URL", value_name = "postgres://...")]
    database_url: String,
    /// A superuser URL on the same server, to record the cluster's roles too.
    #[arg(long, env = "ADMIN_DATABASE_URL", value_name = "postgres://...")]
    admin_url: Option<String>,
    #[command(flatten)]
    s3: S3Args,
    /// Print the manifest as JSON on stdout.
    #[arg(long)]
    json: bool,
}

impl BackupArgs {
    pub(super) async fn run(self) -> anyhow::Result<u8> {
        let mut interrupts = Interrupts::catch()?;
        let source: ConnInfo = self.database_url.parse().context("--database-url")?;
        let admin: Option<ConnInfo> = self
            .admin_url
            .as_deref()
            .map(str::parse)
            .transpose()
            .context("--admin-url")?;
        let bins = PgBinaries::discover()?;
        let store = self.s3.store().await?;
        let report = match interrupts
            .run(backup_database(&bins, &source, admin.as_ref(), &store))
            .await
        {
            Ok(report) => report?,
            Err(interrupted) => {
                // Its writes have stopped: what it put outside daily/ goes now.
                tracing::warn!("{} received: removing what this backup wrote", interrupted.name);
                sweep_leftovers(&store, true)
                    .await
                    .context("remove the interrupted backup's objects (the next backup will)")?;
                return Ok(interrupted.exit_code);
            }
        };
        if self.json {
            println!("{}", serde_json::to_string_pretty(&report.manifest)?);
        } else {
            let manifest = &report.manifest;
            println!(
                "backed up {} to {}{} ({} bytes, sha256 {}) in {:.1}s",
                manifest.database,
                store.config().location(),
                manifest.dump.key,
                manifest.dump.bytes,
                manifest.dump.sha256,
                report.elapsed.as_secs_f64()
            );
        }
        Ok(exit::SUCCESS)
    }
}

#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  drillbook restore --admin-url \"$ADMIN_DATABASE_URL\" --bucket s3://immoflowme-backups\n\nThe restore goes to a NEW database, <db>_restore_<UTC time>, never over an existing one.\nIt re-applies the grants the backup recorded (pg_restore --no-acl drops them) and checks row counts,\ncontent fingerprints, the audit chain head and anchor, and the grants against the manifest."
)]
pub(super) struct RestoreArgs {
    /// A URL of the server to restore onto, as a role that may create databases.
    #[arg(long, env = "ADMIN_DATABASE_URL", value_name = "postgres://...")]
    admin_url: String,
    /// Restore this backup stamp (e.g. 20261128T233506.123Z) instead of the newest.
    #[arg(long, value_name = "STAMP")]
    backup: Option<String>,
    /// Name of the database to create (default: <db>_restore_<UTC time>).
    #[arg(long)]
    target_database: Option<String>,
    /// `pg_restore --jobs`.
    #[arg(long, default_value_t = 4)]
    jobs: usize,
    /// When the chosen dump has no manifest, restore it anyway, unverified
    /// (no size, checksum, roles or row counts to check); without this such a
    /// dump is refused.
    #[arg(long)]
    accept_unverified: bool,
    /// Do not re-apply the grants the backup recorded: the playbook's bare
    /// `pg_restore --no-acl`. The application role then cannot read the
    /// restored tables; the report lists the grants it lacks.
    #[arg(long)]
    no_grants: bool,
    /// Restore only this table (`name` or `schema.name`): into a new database
    /// (`--target-database`, default <db>_<table>_restore_<UTC time>) for
    /// inspection, or with `--swap-into` over the damaged table.
    #[arg(long, value_name = "TABLE", conflicts_with_all = ["accept_unverified", "no_grants"])]
    table: Option<String>,
    /// With `--table`: replace that table's rows in this database in ONE
    /// transaction (readers see the old rows or the backup's, never a mix);
    /// refused when the table's columns differ from the backup's.
    #[arg(
        long,
        value_name = "postgres://...",
        requires = "table",
        conflicts_with = "target_database"
    )]
    swap_into: Option<String>,
    #[command(flatten)]
    s3: S3Args,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

impl RestoreArgs {
    pub(super) async fn run(self) -> anyhow::Result<u8> {
        let mut interrupts = Interrupts::catch()?;
        let admin: ConnInfo = self.admin_url.parse().context("--admin-url")?;
        let bins = PgBinaries::discover()?;
        let store = self.s3.store().await?;
        let options = RestoreOptions {
            backup: self.backup.map_or(BackupChoice::Newest, BackupChoice::Stamp),
            jobs: self.jobs,
            target_database: self.target_database,
            grants: if self.no_grants {
                GrantsMode::Bare
            } else {
                GrantsMode::Reapply
            },
        };
        if let Some(table) = &self.table {
            let swap_into: Option<ConnInfo> = self
                .swap_into
                .as_deref()
                .map(str::parse)
                .transpose()
                .context("--swap-into")?;
            let restored = interrupts
                .run(async {
                    match &swap_into {
                        Some(target) => swap_table_from(&bins, &admin, target, &store, table, &options.backup).await,
                        None => {
                            restore_table_copy(
                                &bins,
                                &admin,
                                &store,
                                table,
                                &options.backup,
                                options.target_database.as_deref(),
                            )
                            .await
                        }
                    }
                })
                .await;
            let report = match restored {
                Ok(report) => report?,
                Err(interrupted) => {
                    tracing::warn!("{} received: dropping the interrupted table restore", interrupted.name);
                    crate::pg::incomplete::reap(&admin, true)
                        .await
                        .context("drop the interrupted restore's scratch database (the next restore will)")?;
                    return Ok(interrupted.exit_code);
                }
            };
            if self.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else if let Some(before) = report.rows_before {
                println!(
                    "replaced the {before} rows of {} in database {} with the {} rows of backup {}, in one transaction",
                    report.table, report.database, report.rows_restored, report.backup.stamp
                );
            } else {
                println!(
                    "restored {} from backup {} into the new database {} on {}:{} ({} rows, as the manifest records); \
                     the damaged table is untouched",
                    report.table, report.backup.stamp, report.database, admin.host, admin.port, report.rows_restored
                );
            }
            return Ok(exit::SUCCESS);
        }
        let accept_unverified = self.accept_unverified;
        let restored = interrupts
            .run(async {
                match restore_database(&bins, &admin, &store, &options).await {
                    Err(RestoreError::ManifestMissing { .. }) if accept_unverified => {
                        restore_unverified_dump(&bins, &admin, &store, &options)
                            .await
                            .map(|report| Restored::Unverified(Box::new(report)))
                    }
                    other => other.map(|report| Restored::Verified(Box::new(report))),
                }
            })
            .await;
        let report = match restored {
            Ok(report) => report?,
            Err(interrupted) => {
                // pg_restore is stopped and the download removed; the database goes now.
                tracing::warn!("{} received: dropping the interrupted restore", interrupted.name);
                crate::pg::incomplete::reap(&admin, true)
                    .await
                    .context("drop the interrupted restore's database (the next restore will)")?;
                return Ok(interrupted.exit_code);
            }
        };
        let report = match report {
            Restored::Verified(report) => report,
            Restored::Unverified(report) => {
                if self.json {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                } else {
                    println!(
                        "restored the UNVERIFIED dump {} into database {} on {}:{}: it has no manifest, so nothing \
                         was checked (size, checksum, row counts, fingerprints, audit chain) and no roles or grants \
                         were re-applied; verify it before use (drillbook verify)",
                        report.dump, report.database, admin.host, admin.port
                    );
                }
                return Ok(exit::SUCCESS);
            }
        };
        if self.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            println!(
                "restored backup {} into database {} on {}:{} (download {:.1}s, restore {:.1}s, verify {:.1}s)",
                report.manifest.stamp,
                report.database,
                admin.host,
                admin.port,
                report.download.as_secs_f64(),
                report.restore.as_secs_f64(),
                report.verify.as_secs_f64()
            );
            println!("compared with the backup's manifest:");
            for line in report.verification.lines() {
                println!("  {line}");
            }
        }
        Ok(exit::SUCCESS)
    }
}

enum Restored {
    Verified(Box<crate::restore::RestoreReport>),
    Unverified(Box<crate::restore::UnverifiedRestoreReport>),
}
