//! `drillbook config check`: validate a staging `drill.toml`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::exit;
use crate::env::config::{Origin, Problems, check};

#[derive(Debug, Subcommand)]
#[command(after_help = "Example:\n  drillbook config check drill.toml   # details: drillbook config check --help")]
pub(super) enum ConfigCommand {
    /// Validate a drill.toml layered with the DRILL_* environment variables,
    /// report every problem with its line, and print the settings in effect
    /// (passwords and secret keys shown as ***).
    #[command(after_help = "\
Example:
  drillbook config check drill.toml

Precedence: built-in defaults < the file < environment variables (DRILL_ADMIN_URL,
DRILL_SOURCE_DATABASE, DRILL_S3_BUCKET, DRILL_S3_PREFIX, DRILL_S3_ENDPOINT, DRILL_S3_REGION,
DRILL_S3_ACCESS_KEY_ID, DRILL_S3_SECRET_ACCESS_KEY, DRILL_KUBE_CONTEXT, DRILL_APP_URL).

Exit codes: 0 valid, 1 problems found (each printed as FILE:LINE: message), 2 the file cannot be read.")]
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub(super) struct CheckArgs {
    /// The file to check (default: $DRILL_CONFIG, else ./drill.toml).
    file: Option<PathBuf>,
    /// Check the file alone, ignoring DRILL_* environment variables.
    #[arg(long)]
    file_only: bool,
}

impl ConfigCommand {
    pub(super) async fn run(self) -> anyhow::Result<u8> {
        let Self::Check(args) = self;
        let path = args
            .file
            .or_else(|| {
                std::env::var_os("DRILL_CONFIG")
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from)
            })
            .unwrap_or_else(|| PathBuf::from("drill.toml"));
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) => {
                eprintln!(
                    "error: failed to read {}: {e}; name an existing drill.toml (or set DRILL_CONFIG)",
                    path.display()
                );
                return Ok(exit::ERROR);
            }
        };
        let file_only = args.file_only;
        let result = check(&text, |var| if file_only { None } else { std::env::var(var).ok() });
        match result {
            Ok(config) => {
                println!("{}: valid", path.display());
                println!("  database.admin_url = {}", config.admin);
                println!("  database.source = {}", config.source_database);
                println!(
                    "  s3 = {} (endpoint {}, region {}, credentials {})",
                    config.s3.location(),
                    config.s3.endpoint.as_deref().unwrap_or("AWS"),
                    config.s3.region,
                    match &config.s3.credentials {
                        Some((key, _)) => format!("{key} / ***"),
                        None => "from the default AWS chain".to_owned(),
                    }
                );
                println!(
                    "  kube.context = {}",
                    config.kube_context.as_deref().unwrap_or("(none)")
                );
                println!(
                    "  app.base_url = {}",
                    config.app_base_url.as_deref().unwrap_or("(none)")
                );
                let from: Vec<String> = config
                    .origins
                    .iter()
                    .filter(|(_, origin)| *origin != Origin::Default)
                    .map(|(key, origin)| format!("{key} ({origin})"))
                    .collect();
                println!("  set by: {}", from.join(", "));
                Ok(exit::SUCCESS)
            }
            Err(problems) => {
                let n = problems.len();
                println!(
                    "{}",
                    Problems {
                        file: Some(path.clone()),
                        problems
                    }
                );
                eprintln!("{}: {n} problem(s)", path.display());
                Ok(exit::FAILED)
            }
        }
    }
}
