//! `drillbook env up`: a local environment to explore and rehearse on.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde::Serialize;
use tokio::signal::unix::{SignalKind, signal};

use super::exit;
use crate::backup::backup_database;
use crate::basebackup::take_base_backup;
use crate::env::{ConnectionFacts, EmbeddedEnvironment};
use crate::fixtures::{FixtureSpec, Profile};
use crate::pg::ClusterOptions;

#[derive(Debug, Subcommand)]
#[command(after_help = "Example:\n  drillbook env up --profile small > env.json   # details: drillbook env up --help")]
pub(super) enum EnvCommand {
    /// Start an embedded Postgres + S3, seed it, take a first backup and
    /// anchor (and with --wal-archiving a base backup), print the connection
    /// facts as JSON, and keep running until interrupted.
    #[command(after_help = "\
Example:
  drillbook env up --profile small > env.json
  export DATABASE_URL=$(jq -r .database_url env.json) AWS_ENDPOINT_URL=$(jq -r .s3_endpoint env.json)
  export AWS_ACCESS_KEY_ID=$(jq -r .access_key env.json) AWS_SECRET_ACCESS_KEY=$(jq -r .secret_key env.json)
  aws s3 ls s3://immoflowme-backups/daily/ --recursive | sort | tail -1

Everything is removed on Ctrl-C (DRILL_KEEP=1 keeps the files).")]
    Up(UpArgs),
}

#[derive(Debug, Args)]
pub(super) struct UpArgs {
    #[arg(long, value_enum, default_value_t = Profile::Small)]
    profile: Profile,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Fixed PostgreSQL port (default: a free one).
    #[arg(long)]
    port: Option<u16>,
    /// Archive WAL into the environment's S3 (`archive_command = drillbook
    /// wal-push %p`) and take a first base backup, so `basebackup`, `check`
    /// and point-in-time recovery can be tried by hand.
    #[arg(long)]
    wal_archiving: bool,
    /// With `--wal-archiving`: the server switches to a new WAL segment (and
    /// archives it) at least this often while it is written to.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, requires = "wal_archiving")]
    archive_timeout: std::time::Duration,
}

#[derive(Serialize)]
struct UpOutput {
    #[serde(flatten)]
    facts: ConnectionFacts,
    profile: Profile,
    seed: u64,
    first_backup: String,
    /// With `--wal-archiving`: the first base backup's stamp.
    #[serde(skip_serializing_if = "Option::is_none")]
    first_base_backup: Option<String>,
}

impl EnvCommand {
    pub(super) async fn run(self) -> anyhow::Result<u8> {
        let Self::Up(args) = self;
        // Signals are caught from the start: an interrupt while seeding must
        // still stop the servers and remove their files.
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let start = async {
            if args.wal_archiving {
                let program = std::env::current_exe().context("find the drillbook binary for archive_command")?;
                EmbeddedEnvironment::start_archiving(args.port, &program, args.archive_timeout)
                    .await
                    .context("start an archiving environment")
            } else {
                let options = ClusterOptions {
                    port: args.port,
                    ..Default::default()
                };
                Ok(EmbeddedEnvironment::start_with(options).await?)
            }
        };
        let env = tokio::select! {
            env = start => env?,
            _ = interrupt.recv() => return Ok(exit::ERROR),
            _ = terminate.recv() => return Ok(exit::ERROR),
        };
        let served = tokio::select! {
            result = serve(&env, &args) => result,
            _ = interrupt.recv() => Ok(()),
            _ = terminate.recv() => Ok(()),
        };
        tracing::info!("stopping the environment");
        env.cleanup().await?;
        served.map(|()| exit::SUCCESS)
    }
}

/// Seeds, backs up, prints the facts, then waits forever (until a signal).
async fn serve(env: &EmbeddedEnvironment, args: &UpArgs) -> anyhow::Result<()> {
    let seeded = env.seed(FixtureSpec::ending_now(args.profile, args.seed)).await?;
    tracing::info!(profile = %args.profile, elapsed = ?seeded.elapsed, "seeded");
    let admin = env.primary().admin();
    let backup = backup_database(env.binaries(), &env.source(), Some(&admin), env.store()).await?;
    // What a well-run production has beside its backups: the chain's head
    // recorded outside the database (`drillbook anchor`).
    let anchor = crate::integrity::anchor::Anchor::capture(&env.source()).await?;
    env.store()
        .put_bytes(&anchor.key(), anchor.to_json(), "application/json")
        .await?;
    let first_base_backup = if args.wal_archiving {
        Some(take_base_backup(env.binaries(), &admin, env.store()).await?.stamp)
    } else {
        None
    };
    let output = UpOutput {
        first_base_backup,
        facts: env.connection_facts(),
        profile: args.profile,
        seed: args.seed,
        first_backup: backup.manifest.dump.key,
    };
    println!("{}", serde_json::to_string_pretty(&output)?);
    tracing::info!("environment ready; Ctrl-C stops it and removes everything");
    std::future::pending().await
}
