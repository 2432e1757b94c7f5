//! `drill.toml`: where the staging backend finds its servers.
//!
//! # Precedence
//!
//! Built-in defaults, then the file named by `DRILL_CONFIG` (if any), then
//! environment variables: a later layer wins, key by key.
//!
//! | file key | environment variable | default |
//! |---|---|---|
//! | `[database] admin_url` | `DRILL_ADMIN_URL` | (required) |
//! | `[database] source` | `DRILL_SOURCE_DATABASE` | `immoflowme` |
//! | `[s3] bucket` (`name`, `s3://name` or `s3://name/prefix`) | `DRILL_S3_BUCKET` | (required) |
//! | `[s3] prefix` | `DRILL_S3_PREFIX` | the prefix in `bucket`, else none |
//! | `[s3] endpoint` | `DRILL_S3_ENDPOINT` | AWS |
//! | `[s3] region` | `DRILL_S3_REGION` | `us-east-1` |
//! | `[s3] access_key_id`, `secret_access_key` | `DRILL_S3_ACCESS_KEY_ID`, `DRILL_S3_SECRET_ACCESS_KEY` | the default AWS credential chain |
//! | `[kube] context` | `DRILL_KUBE_CONTEXT` | none |
//! | `[app] base_url` | `DRILL_APP_URL` | none |
//!
//! [`check`] reports every problem at once, each with the line it is on (or
//! the variable it came from), and never echoes a password or secret key.

use std::fmt;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

use super::APP_DATABASE;
use crate::pg::{ConnInfo, Secret};
use crate::store::S3Config;

/// A file key and the environment variable that overrides it.
struct Key {
    section: &'static str,
    name: &'static str,
    var: &'static str,
}

const KEYS: &[Key] = &[
    Key {
        section: "database",
        name: "admin_url",
        var: "DRILL_ADMIN_URL",
    },
    Key {
        section: "database",
        name: "source",
        var: "DRILL_SOURCE_DATABASE",
    },
    Key {
        section: "s3",
        name: "bucket",
        var: "DRILL_S3_BUCKET",
    },
    Key {
        section: "s3",
        name: "prefix",
        var: "DRILL_S3_PREFIX",
    },
    Key {
        section: "s3",
        name: "endpoint",
        var: "DRILL_S3_ENDPOINT",
    },
    Key {
        section: "s3",
        name: "region",
        var: "DRILL_S3_REGION",
    },
    Key {
        section: "s3",
        name: "access_key_id",
        var: "DRILL_S3_ACCESS_KEY_ID",
    },
    Key {
        section: "s3",
        name: "secret_access_key",
        var: "DRILL_S3_SECRET_ACCESS_KEY",
    },
    Key {
        section: "kube",
        name: "context",
        var: "DRILL_KUBE_CONTEXT",
    },
    Key {
        section: "app",
        name: "base_url",
        var: "DRILL_APP_URL",
    },
];

const DEFAULT_REGION: &str = "us-east-1";
/// `<db>_restore_<17-digit stamp>` must fit PostgreSQL's 63-byte identifiers.
const MAX_SOURCE_NAME: usize = 63 - "_restore_".len() - 17;

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    /// The file, at this 1-based line.
    File {
        line: usize,
    },
    /// This environment variable.
    Env(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("default"),
            Self::File { line } => write!(f, "line {line}"),
            Self::Env(var) => write!(f, "${var}"),
        }
    }
}

/// One thing wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub origin: Origin,
    pub message: String,
}

/// Every problem found, printed one per line as `file:line: message`.
#[derive(Debug, Clone)]
pub struct Problems {
    pub file: Option<PathBuf>,
    pub problems: Vec<Problem>,
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self
            .file
            .as_ref()
            .map_or_else(|| "(no DRILL_CONFIG file)".to_owned(), |p| p.display().to_string());
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            match &problem.origin {
                Origin::File { line } => write!(f, "{file}:{line}: {}", problem.message)?,
                Origin::Env(var) => write!(f, "${var}: {}", problem.message)?,
                Origin::Default => write!(f, "{file}: {}", problem.message)?,
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("failed to read the drill configuration {path}; check DRILL_CONFIG names a readable file")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the staging configuration has {n} problem(s); fix them (run `drillbook config check` to list them):\n{problems}", n = problems.problems.len())]
    Invalid { problems: Problems },
}

/// The validated staging configuration. Its `Debug` never shows secrets.
#[derive(Debug, Clone)]
pub struct StagingConfig {
    /// A role that may create and drop databases on the staging server.
    pub admin: ConnInfo,
    /// The application database whose backups are drilled (never written).
    pub source_database: String,
    pub s3: S3Config,
    pub kube_context: Option<String>,
    pub app_base_url: Option<String>,
    /// Where each setting came from, in `KEYS` order: `(section.key, origin)`.
    pub origins: Vec<(String, Origin)>,
}

impl StagingConfig {
    /// Reads `DRILL_CONFIG` (if set) and the environment.
    ///
    /// # Errors
    /// [`ConfigError::Read`] for an unreadable file, [`ConfigError::Invalid`]
    /// with every problem otherwise.
    pub fn from_env() -> Result<Self, ConfigError> {
        let path = std::env::var_os("DRILL_CONFIG")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        Self::load(path.as_deref(), |var| std::env::var(var).ok())
    }

    /// Reads `path` (if any) with `lookup` for environment variables.
    pub fn load(path: Option<&Path>, lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let text = match path {
            Some(path) => std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?,
            None => String::new(),
        };
        check(&text, lookup).map_err(|problems| ConfigError::Invalid {
            problems: Problems {
                file: path.map(Path::to_owned),
                problems,
            },
        })
    }
}

/// One raw setting before validation.
struct Raw {
    value: String,
    origin: Origin,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

/// Validates `text` (the file's contents; empty for none) layered with
/// `lookup`, returning the configuration or every problem found.
///
/// # Errors
/// Every problem, each with its line or variable, in file order.
pub fn check(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<StagingConfig, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut raw: Vec<Option<Raw>> = KEYS.iter().map(|_| None).collect();

    let (document, syntax) = DeTable::parse_recoverable(text);
    for error in syntax {
        let line = error.span().map_or(1, |span| line_of(text, span.start));
        problems.push(Problem {
            origin: Origin::File { line },
            message: format!("TOML syntax: {}", error.message().trim()),
        });
    }
    for (section, value) in document.get_ref().iter() {
        let section_line = line_of(text, section.span().start);
        let section_name: &str = section.get_ref();
        let DeValue::Table(table) = value.get_ref() else {
            problems.push(Problem {
                origin: Origin::File { line: section_line },
                message: format!(
                    "`{section_name}` must be a table ([{section_name}]); known sections: [database], [s3], [kube], [app]"
                ),
            });
            continue;
        };
        if !KEYS.iter().any(|k| k.section == section_name) {
            problems.push(Problem {
                origin: Origin::File { line: section_line },
                message: format!("unknown section [{section_name}]; known sections: [database], [s3], [kube], [app]"),
            });
            continue;
        }
        for (key, value) in table.iter() {
            let line = line_of(text, key.span().start);
            let name: &str = key.get_ref();
            let Some(index) = KEYS.iter().position(|k| k.section == section_name && k.name == name) else {
                let known: Vec<&str> = KEYS
                    .iter()
                    .filter(|k| k.section == section_name)
                    .map(|k| k.name)
                    .collect();
                problems.push(Problem {
                    origin: Origin::File { line },
                    message: format!(
                        "unknown key `{name}` in [{section_name}]; known keys: {}",
                        known.join(", ")
                    ),
                });
                continue;
            };
            match value.get_ref() {
                DeValue::String(s) => {
                    raw[index] = Some(Raw {
                        value: s.to_string(),
                        origin: Origin::File { line },
                    })
                }
                other => problems.push(Problem {
                    origin: Origin::File { line },
                    message: format!("[{section_name}] {name} must be a string, not {}", other.type_str()),
                }),
            }
        }
    }
    for (index, key) in KEYS.iter().enumerate() {
        if let Some(value) = lookup(key.var).filter(|v| !v.trim().is_empty()) {
            raw[index] = Some(Raw {
                value,
                origin: Origin::Env(key.var),
            });
        }
    }

    let config = validate(&raw, &mut problems);
    problems.sort_by_key(|p| match p.origin {
        Origin::File { line } => (0, line),
        Origin::Env(_) => (1, 0),
        Origin::Default => (2, 0),
    });
    match config {
        Some(config) if problems.is_empty() => Ok(config),
        _ => Err(problems),
    }
}

fn validate(raw: &[Option<Raw>], problems: &mut Vec<Problem>) -> Option<StagingConfig> {
    let get = |name: &str| {
        let index = KEYS.iter().position(|k| k.name == name).expect("known key");
        raw[index].as_ref()
    };
    let mut problem = |origin: &Origin, message: String| {
        problems.push(Problem {
            origin: origin.clone(),
            message,
        })
    };
    let missing = |section: &str, name: &str, var: &str| {
        format!("[{section}] {name} is required: set it in the file or in ${var}")
    };

    let admin = match get("admin_url") {
        None => {
            problem(&Origin::Default, missing("database", "admin_url", "DRILL_ADMIN_URL"));
            None
        }
        // The value is never echoed: it may hold a password.
        Some(raw) => match raw.value.trim().parse::<ConnInfo>() {
            Ok(info) => Some(info),
            Err(e) => {
                problem(
                    &raw.origin,
                    format!(
                        "[database] admin_url is not a usable postgres:// URL ({e}); the value is not shown because it may hold a password"
                    ),
                );
                None
            }
        },
    };

    let source_database = match get("source") {
        None => APP_DATABASE.to_owned(),
        Some(raw) => {
            let name = raw.value.trim();
            if name.is_empty() || name.len() > MAX_SOURCE_NAME || name.contains('\0') {
                problem(
                    &raw.origin,
                    format!(
                        "[database] source {name:?} must be a database name of 1 to {MAX_SOURCE_NAME} bytes, so that its restored copy `<source>_restore_<stamp>` fits PostgreSQL's 63-byte names"
                    ),
                );
            }
            name.to_owned()
        }
    };

    let (bucket, mut prefix) = match get("bucket") {
        None => {
            problem(&Origin::Default, missing("s3", "bucket", "DRILL_S3_BUCKET"));
            (None, String::new())
        }
        Some(raw) => match S3Config::parse_location(raw.value.trim()) {
            Ok((bucket, prefix)) => (Some(bucket), prefix),
            Err(e) => {
                problem(&raw.origin, format!("[s3] bucket: {e}"));
                (None, String::new())
            }
        },
    };
    if let Some(raw) = get("prefix") {
        let trimmed = raw.value.trim().trim_matches('/');
        if trimmed.contains("//") || trimmed.starts_with("s3:") {
            problem(
                &raw.origin,
                format!(
                    "[s3] prefix {:?} must be a key prefix like `staging/`, not a URL",
                    raw.value
                ),
            );
        }
        prefix = if trimmed.is_empty() {
            String::new()
        } else {
            format!("{trimmed}/")
        };
    }

    let endpoint = get("endpoint").and_then(|raw| match url::Url::parse(raw.value.trim()) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => {
            Some(raw.value.trim().to_owned())
        }
        _ => {
            problem(
                &raw.origin,
                format!(
                    "[s3] endpoint {:?} must be an http:// or https:// URL with a host",
                    raw.value
                ),
            );
            None
        }
    });
    let region = match get("region") {
        None => DEFAULT_REGION.to_owned(),
        Some(raw) => {
            let region = raw.value.trim();
            if region.is_empty() || !region.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                problem(
                    &raw.origin,
                    format!("[s3] region {region:?} must look like `eu-central-1`"),
                );
            }
            region.to_owned()
        }
    };
    let credentials = match (get("access_key_id"), get("secret_access_key")) {
        (None, None) => None,
        (Some(key), Some(secret)) => Some((key.value.trim().to_owned(), Secret::new(secret.value.trim()))),
        (Some(raw), None) => {
            problem(
                &raw.origin,
                "[s3] access_key_id is set without secret_access_key: set both, or neither to use the default AWS credential chain".to_owned(),
            );
            None
        }
        (None, Some(raw)) => {
            problem(
                &raw.origin,
                "[s3] secret_access_key is set without access_key_id: set both, or neither to use the default AWS credential chain".to_owned(),
            );
            None
        }
    };

    let kube_context = get("context").map(|raw| {
        if raw.value.trim().is_empty() {
            problem(
                &raw.origin,
                "[kube] context must not be empty; remove it to run without a cluster".to_owned(),
            );
        }
        raw.value.trim().to_owned()
    });
    let app_base_url = get("base_url").and_then(|raw| match url::Url::parse(raw.value.trim()) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Some(raw.value.trim().to_owned()),
        _ => {
            problem(
                &raw.origin,
                format!("[app] base_url {:?} must be an http:// or https:// URL", raw.value),
            );
            None
        }
    });

    let origins = KEYS
        .iter()
        .zip(raw)
        .map(|(key, raw)| {
            let origin = raw.as_ref().map_or(Origin::Default, |r| r.origin.clone());
            (format!("{}.{}", key.section, key.name), origin)
        })
        .collect();
    Some(StagingConfig {
        admin: admin?,
        source_database,
        s3: S3Config {
            endpoint,
            region,
            bucket: bucket?,
            prefix,
            credentials,
        },
        kube_context,
        app_base_url,
        origins,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn a_complete_file_parses_and_env_wins() {
        let text = "[database]\nadmin_url = \"postgres://admin:pw@db.example:5432/postgres\"\n\n[s3]\nbucket = \"s3://b/staging\"\nregion = \"eu-central-1\"\n";
        let config = check(text, no_env).unwrap();
        assert_eq!(config.s3.bucket, "b");
        assert_eq!(config.s3.prefix, "staging/");
        assert_eq!(config.source_database, APP_DATABASE);
        assert_eq!(config.origins[0].1, Origin::File { line: 2 });
        let config = check(text, |v| (v == "DRILL_S3_REGION").then(|| "us-west-2".to_owned())).unwrap();
        assert_eq!(config.s3.region, "us-west-2");
        assert_eq!(config.origins[5].1, Origin::Env("DRILL_S3_REGION"));
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let text = "[database]\nadmin_url = \"mysql://u:hunter2@h/db\"\nsorce = \"x\"\n[s3]\nbucket = \"Bad_Bucket\"\nregion = 5\n[extra]\nx = \"1\"\n";
        let problems = check(text, no_env).unwrap_err();
        let lines: Vec<_> = problems.iter().map(|p| p.origin.clone()).collect();
        assert_eq!(
            lines,
            [2, 3, 5, 6, 7].map(|line| Origin::File { line }).to_vec(),
            "{problems:#?}"
        );
        assert!(problems.iter().all(|p| !p.message.contains("hunter2")), "{problems:#?}");
    }
}
