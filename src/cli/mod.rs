//! The command-line front end: argument parsing and output. Everything it
//! does is a call into the library; anyhow is used only here, at the edge.

mod basebackup;
mod check;
mod config;
mod env_up;
mod expire;
mod interrupt;
mod recover;
mod reindex;
mod report;
mod run;
mod transfer;
mod verify;
mod wal;

use clap::{Parser, Subcommand};

/// Documented exit codes.
pub mod exit {
    /// The command did what was asked.
    pub const SUCCESS: u8 = 0;
    /// The command ran and what it checked failed (a drill missed its target).
    pub const FAILED: u8 = 1;
    /// The command could not do its work: bad input, unreachable server,
    /// refused backup. The message says what and how to fix it.
    pub const ERROR: u8 = 2;
    /// `backup`, `basebackup`, `restore` or `recover` stopped by SIGINT (128 + 2)
    /// or SIGTERM (128 + 15): what it had made was removed. `expire` stops
    /// between two deletions with the same codes.
    pub const INTERRUPTED: [u8; 2] = [130, 143];
}

const EXAMPLES: &str = "\
Examples:
  drillbook env up --profile small          # a local Postgres + S3 to explore
  drillbook backup --database-url \"$DATABASE_URL\" --bucket s3://immoflowme-backups
  drillbook restore --admin-url \"$ADMIN_DATABASE_URL\" --bucket s3://immoflowme-backups

Exit codes: 0 success, 1 a check failed, 2 could not run (the message says why);
130/143 backup, basebackup, restore or recover stopped by SIGINT/SIGTERM (what it had made was removed).
Logs go to stderr; RUST_LOG=drillbook=debug shows more.
Progress of run, backup, restore and verify goes to stderr too: one line redrawn in place on a
terminal, plain lines otherwise; DRILL_PROGRESS=plain|terminal|off overrides.";

/// Disaster-recovery drills for PostgreSQL + S3, as tests you can run.
#[derive(Debug, Parser)]
#[command(name = "drillbook", version, about, after_help = EXAMPLES)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Local environments for exploring and rehearsing.
    #[command(subcommand)]
    Env(env_up::EnvCommand),
    /// Back up a database to S3 (`pg_dump -Fc` + manifest under daily/).
    Backup(transfer::BackupArgs),
    /// Restore the newest (or a chosen) backup from S3 into a new database.
    Restore(transfer::RestoreArgs),
    /// Take a physical base backup to S3 (pg_basebackup + manifest under base/), the start of PITR.
    Basebackup(basebackup::BaseBackupArgs),
    /// Point-in-time recovery into a data directory (base backup + archived WAL); --pause, then --promote.
    Recover(recover::RecoverArgs),
    /// Archive one WAL file to S3 (PostgreSQL's archive_command).
    WalPush(wal::WalPushArgs),
    /// Restore one WAL file from S3 (PostgreSQL's restore_command).
    WalFetch(wal::WalFetchArgs),
    /// Check backup health: newest dump, base backups, WAL continuity, archive lag, anchors (exit 1 on a problem).
    Check(check::CheckArgs),
    /// Retention: keep the newest N daily dumps and base backups, delete older ones and the WAL no kept one needs.
    Expire(expire::ExpireArgs),
    /// REINDEX DATABASE a restored database and check no index is left invalid (playbook section 5 step 1).
    Reindex(reindex::ReindexArgs),
    /// Verify a database's integrity, read-only (the playbook's daily audit chain validation).
    Verify(verify::VerifyArgs),
    /// Record the audit chain's head in S3 (anchors/<stamp>.json) for `verify --anchor`.
    Anchor(verify::AnchorArgs),
    /// Staging configuration (drill.toml): `config check [FILE]`.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Write the monthly drill report (HTML, Markdown, merged JUnit) from history and per-drill JUnit.
    Report(report::ReportArgs),
    /// Run built-in drills (all that need no cluster, by name, or by --cadence) and print RTO/RPO against target.
    Run(run::RunArgs),
}

impl Cli {
    pub async fn run(self) -> anyhow::Result<u8> {
        // The long commands show progress on stderr (DRILL_PROGRESS=plain|terminal|off).
        if matches!(
            self.command,
            Command::Run(_)
                | Command::Backup(_)
                | Command::Basebackup(_)
                | Command::Recover(_)
                | Command::Restore(_)
                | Command::Verify(_)
                | Command::Check(_)
                | Command::Expire(_)
        ) {
            crate::progress::install_from_env();
        }
        match self.command {
            Command::Env(command) => command.run().await,
            Command::Backup(args) => args.run().await,
            Command::Basebackup(args) => args.run().await,
            Command::Recover(args) => args.run().await,
            Command::Restore(args) => args.run().await,
            Command::WalPush(args) => args.run().await,
            Command::WalFetch(args) => args.run().await,
            Command::Check(args) => args.run().await,
            Command::Expire(args) => args.run().await,
            Command::Reindex(args) => args.run().await,
            Command::Verify(args) => args.run().await,
            Command::Anchor(args) => args.run().await,
            Command::Config(command) => command.run().await,
            Command::Report(args) => args.run().await,
            Command::Run(args) => args.run().await,
        }
    }
}

/// Logs at `info` for drillbook by default; `RUST_LOG` overrides. To stderr,
/// so stdout stays clean for JSON.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("drillbook=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        // stderr, clearing a terminal progress line first.
        .with_writer(crate::progress::log_writer)
        // Colours only on a terminal (and never with NO_COLOR): CI logs stay plain text.
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .with_target(false)
        .init();
}

/// `error: <message>` then each cause once, indented.
pub fn print_error(error: &anyhow::Error) {
    eprintln!("error: {error}");
    for cause in error.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
}
