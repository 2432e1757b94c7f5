//! `drillbook env up`: a local environment to explore and rehearse on.

use clap::{Args, Subcommand};
use serde::Serialize;
use tokio::signal::unix::{SignalKind, signal};

use super::exit;
use crate::backup::backup_database;
use crate::env::{ConnectionFacts, EmbeddedEnvironment};
use crate::fixtures::{FixtureSpec, Profile};
use crate::pg::ClusterOptions;

#[derive(Debug, Subcommand)]
#[command(after_help = "Example:\n  drillbook env up --profile small > env.json   # details: drillbook env up --help")]
pub(super) enum EnvCommand {
    /// Start an embedded Postgres + S3, seed it, take a first backup, print
    /// the connection facts as JSON, and keep running until interrupted.
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
}

#[derive(Serialize)]
struct UpOutput {
    #[serde(flatten)]
    facts: ConnectionFacts,
    profile: Profile,
    seed: u64,
    first_backup: String,
}

impl EnvCommand {
    pub(super) async fn run(self) -> anyhow::Result<u8> {
        let Self::Up(args) = self;
        // Signals are caught from the start: an interrupt while seeding must
        // still stop the servers and remove their files.
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let options = ClusterOptions {
            port: args.port,
            ..Default::default()
        };
        let env = tokio::select! {
            env = EmbeddedEnvironment::start_with(options) => env?,
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
    let output = UpOutput {
        facts: env.connection_facts(),
        profile: args.profile,
        seed: args.seed,
        first_backup: backup.manifest.dump.key,
    };
    println!("{}", serde_json::to_string_pretty(&output)?);
    tracing::info!("environment ready; Ctrl-C stops it and removes everything");
    std::future::pending().await
}
