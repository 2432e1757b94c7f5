//! Where containers come from: the images and the S3 container's readiness,
//! read from `DRILL_*` variables (see the parent module's table).

use std::time::Duration;

use super::{EnvError, Result};

pub const DEFAULT_PG_IMAGE: &str = "drillbook/postgres:local";
pub const DEFAULT_MOTO_IMAGE: &str = "drillbook/moto-s3:local";

/// Where containers come from, read from the environment (a seam for tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSettings {
    /// `DOCKER_HOST`, else the default socket (what testcontainers uses too).
    pub docker_host: String,
    pub pg_image: (String, String),
    pub s3: S3Image,
    /// Server settings every Postgres container starts with (`-c name=value`).
    pub server_settings: Vec<(String, String)>,
}

/// The S3 container to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum S3Image {
    LocalStack,
    Generic {
        image: (String, String),
        port: u16,
        ready: Ready,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ready {
    Stdout(String),
    Stderr(String),
    Sleep(Duration),
}

fn split_image(image: &str) -> (String, String) {
    // A registry port (host:5000/name) is not a tag: the tag follows the last '/'.
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name.to_owned(), tag.to_owned()),
        _ => (image.to_owned(), "latest".to_owned()),
    }
}

impl ContainerSettings {
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
    }

    /// # Errors
    /// [`EnvError::Staging`]-style messages naming the bad variable.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let bad = |var: &str, problem: String| EnvError::Containers {
            problem: format!("{var}: {problem}"),
            fix: "see the containers backend's variables in README.md".to_owned(),
            source: None,
        };
        let docker_host = lookup("DOCKER_HOST").unwrap_or_else(|| "unix:///var/run/docker.sock".to_owned());
        let pg_image = split_image(&lookup("DRILL_PG_IMAGE").unwrap_or_else(|| DEFAULT_PG_IMAGE.to_owned()));
        let preset = lookup("DRILL_S3_PRESET").unwrap_or_else(|| "moto".to_owned());
        let (default_image, default_port, default_ready) = match preset.trim() {
            "moto" => (DEFAULT_MOTO_IMAGE, 5000, Ready::Stderr("Running on".to_owned())),
            "localstack" if lookup("DRILL_S3_IMAGE").is_none() => {
                return Ok(Self {
                    docker_host,
                    pg_image,
                    s3: S3Image::LocalStack,
                    server_settings: Vec::new(),
                });
            }
            "localstack" => ("localstack/localstack:4.5", 4566, Ready::Stdout("Ready.".to_owned())),
            other => {
                return Err(bad(
                    "DRILL_S3_PRESET",
                    format!("{other:?} is not a preset; use moto or localstack"),
                ));
            }
        };
        let image = split_image(&lookup("DRILL_S3_IMAGE").unwrap_or_else(|| default_image.to_owned()));
        let port = match lookup("DRILL_S3_PORT") {
            None => default_port,
            Some(port) => port
                .trim()
                .parse()
                .map_err(|_| bad("DRILL_S3_PORT", format!("{port:?} is not a port number")))?,
        };
        let ready = match lookup("DRILL_S3_READY") {
            None => default_ready,
            Some(spec) => match spec.split_once(':') {
                Some(("stdout", text)) => Ready::Stdout(text.to_owned()),
                Some(("stderr", text)) => Ready::Stderr(text.to_owned()),
                Some(("sleep", secs)) => {
                    Ready::Sleep(Duration::from_secs(secs.trim().parse().map_err(|_| {
                        bad("DRILL_S3_READY", format!("{secs:?} is not a number of seconds"))
                    })?))
                }
                _ => {
                    return Err(bad(
                        "DRILL_S3_READY",
                        format!("{spec:?} must be stdout:<text>, stderr:<text> or sleep:<seconds>"),
                    ));
                }
            },
        };
        Ok(Self {
            docker_host,
            pg_image,
            s3: S3Image::Generic { image, port, ready },
            server_settings: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_default_to_the_local_images_and_read_overrides() {
        let none = ContainerSettings::from_lookup(|_| None).unwrap();
        assert_eq!(none.pg_image, ("drillbook/postgres".to_owned(), "local".to_owned()));
        assert!(matches!(none.s3, S3Image::Generic { port: 5000, .. }));
        let localstack =
            ContainerSettings::from_lookup(|v| (v == "DRILL_S3_PRESET").then(|| "localstack".to_owned())).unwrap();
        assert_eq!(localstack.s3, S3Image::LocalStack);
        let custom = ContainerSettings::from_lookup(|v| match v {
            "DRILL_S3_IMAGE" => Some("registry:5000/minio".to_owned()),
            "DRILL_S3_PORT" => Some("9000".to_owned()),
            "DRILL_S3_READY" => Some("sleep:2".to_owned()),
            _ => None,
        })
        .unwrap();
        assert_eq!(
            custom.s3,
            S3Image::Generic {
                image: ("registry:5000/minio".to_owned(), "latest".to_owned()),
                port: 9000,
                ready: Ready::Sleep(Duration::from_secs(2)),
            }
        );
        let err = ContainerSettings::from_lookup(|v| (v == "DRILL_S3_READY").then(|| "soon".to_owned())).unwrap_err();
        assert!(err.to_string().contains("DRILL_S3_READY"), "{err}");
    }
}
