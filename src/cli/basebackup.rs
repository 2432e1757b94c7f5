//! `drillbook basebackup`: the physical base backup point-in-time recovery
//! starts from, as the PITR drills take it.

use anyhow::Context as _;
use clap::Args;

use super::exit;
use super::interrupt::Interrupts;
use super::transfer::S3Args;
use crate::basebackup::{BASE_PREFIX, sweep_leftovers, take_base_backup};
use crate::pg::{ConnInfo, PgBinaries};

#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  drillbook basebackup --admin-url \"$ADMIN_DATABASE_URL\" --bucket s3://immoflowme-backups\n\n\
pg_basebackup streams the whole cluster (tar, WAL fetched alongside) to base/<stamp>/base.tar;\n\
its manifest (LSNs, timeline, size, sha256) is written last, so a backup without one never counts.\n\
Recovery to a time after it also needs the WAL archived since (archive_command = drillbook wal-push)."
)]
pub(super) struct BaseBackupArgs {
    /// A superuser (or replication) URL of the server to back up.
    #[arg(long, env = "ADMIN_DATABASE_URL", value_name = "postgres://...")]
    admin_url: String,
    #[command(flatten)]
    s3: S3Args,
    /// Print the manifest as JSON on stdout.
    #[arg(long)]
    json: bool,
}

impl BaseBackupArgs {
    pub(super) async fn run(self) -> anyhow::Result<u8> {
        let mut interrupts = Interrupts::catch()?;
        let admin: ConnInfo = self.admin_url.parse().context("--admin-url")?;
        let bins = PgBinaries::discover()?;
        let store = self.s3.store().await?;
        may_stream_base_backups(&admin).await?;
        let started = std::time::Instant::now();
        let manifest = match interrupts.run(take_base_backup(&bins, &admin, &store)).await {
            Ok(taken) => taken.with_context(|| format!("base backup of {admin}"))?,
            Err(interrupted) => {
                // pg_basebackup is stopped: the tar without a manifest goes now.
                tracing::warn!("{} received: removing what this base backup wrote", interrupted.name);
                sweep_leftovers(&store, true)
                    .await
                    .context("remove the interrupted base backup's objects (the next base backup will)")?;
                return Ok(interrupted.exit_code);
            }
        };
        if self.json {
            println!("{}", serde_json::to_string_pretty(&manifest)?);
        } else {
            println!(
                "base backup {} of {}:{} to {}{BASE_PREFIX}{}/ ({} bytes, sha256 {}) in {:.1}s",
                manifest.stamp,
                admin.host,
                admin.port,
                store.config().location(),
                manifest.stamp,
                manifest.tar_bytes,
                manifest.tar_sha256,
                started.elapsed().as_secs_f64()
            );
            println!(
                "  WAL {} .. {} on timeline {}, PostgreSQL {}",
                manifest.start_lsn, manifest.end_lsn, manifest.timeline, manifest.server_version
            );
        }
        Ok(exit::SUCCESS)
    }
}

/// Refuses, before anything is written to S3, a server that cannot be
/// reached or a role that may not stream a base backup.
async fn may_stream_base_backups(admin: &ConnInfo) -> anyhow::Result<()> {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect_with(&admin.connect_options())
        .await
        .with_context(|| format!("connect to {admin} (--admin-url)"))?;
    let (role, allowed): (String, bool) = sqlx::query_as(
        "SELECT current_user::text, rolsuper OR rolreplication FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(&mut conn)
    .await
    .context("read the role's privileges")?;
    let _ = conn.close().await;
    anyhow::ensure!(
        allowed,
        "role {role:?} may not stream a base backup: use a superuser, or a role with REPLICATION \
         (ALTER ROLE {role} REPLICATION) and a pg_hba.conf line allowing its replication connections"
    );
    Ok(())
}
