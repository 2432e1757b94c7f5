//! The S3 container: LocalStack (the module's) or any image with its
//! readiness signal, reachable from this machine and from the server
//! containers on the environment's network.

use testcontainers_modules::localstack::LocalStack;
use testcontainers_modules::testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers_modules::testcontainers::runners::AsyncRunner;
use testcontainers_modules::testcontainers::{ContainerAsync, GenericImage, ImageExt, TestcontainersError};

use super::orphans::{OWNER_LABEL, owner_label};
use super::{ContainerSettings, Ready, S3Image, STARTUP_TIMEOUT, container_error, random_secret};
use crate::env::{BACKUP_BUCKET, Result};
use crate::store::S3Config;

const S3_ACCESS_KEY: &str = "drillbook";

pub(super) enum S3Container {
    LocalStack(ContainerAsync<LocalStack>),
    Generic(ContainerAsync<GenericImage>),
}

impl S3Container {
    pub(super) fn id(&self) -> &str {
        match self {
            Self::LocalStack(c) => c.id(),
            Self::Generic(c) => c.id(),
        }
    }

    pub(super) async fn rm(self) -> std::result::Result<(), TestcontainersError> {
        match self {
            Self::LocalStack(c) => c.rm().await,
            Self::Generic(c) => c.rm().await,
        }
    }
}

/// The S3 container's name on `network`.
fn s3_name(network: &str) -> String {
    format!("{network}-s3")
}

/// Starts the S3 container on `network`; the S3 config for this machine
/// (mapped port on loopback) and for the server containers (by name).
pub(super) async fn start_s3(settings: &ContainerSettings, network: &str) -> Result<(S3Container, S3Config, S3Config)> {
    let secret = random_secret();
    let (container, port, internal_port) = match &settings.s3 {
        S3Image::LocalStack => {
            let c = LocalStack::default()
                .with_network(network)
                .with_container_name(s3_name(network))
                .with_startup_timeout(STARTUP_TIMEOUT)
                .with_label("drillbook", "drill")
                .with_labels(owner_label().map(|owner| (OWNER_LABEL, owner)))
                .start()
                .await
                .map_err(container_error("start the LocalStack container"))?;
            let port = c
                .get_host_port_ipv4(4566)
                .await
                .map_err(container_error("read LocalStack's port"))?;
            (S3Container::LocalStack(c), port, 4566)
        }
        S3Image::Generic { image, port, ready } => {
            let wait = match ready {
                Ready::Stdout(text) => WaitFor::message_on_stdout(text.as_bytes()),
                Ready::Stderr(text) => WaitFor::message_on_stderr(text.as_bytes()),
                Ready::Sleep(d) => WaitFor::Duration { length: *d },
            };
            let c = GenericImage::new(image.0.clone(), image.1.clone())
                .with_exposed_port(port.tcp())
                .with_wait_for(wait)
                .with_network(network)
                .with_container_name(s3_name(network))
                .with_startup_timeout(STARTUP_TIMEOUT)
                .with_label("drillbook", "drill")
                .with_labels(owner_label().map(|owner| (OWNER_LABEL, owner)))
                .start()
                .await
                .map_err(container_error("start the S3 container"))?;
            let mapped = c
                .get_host_port_ipv4(*port)
                .await
                .map_err(container_error("read the S3 container's port"))?;
            (S3Container::Generic(c), mapped, *port)
        }
    };
    let config = S3Config {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        region: "us-east-1".to_owned(),
        bucket: BACKUP_BUCKET.to_owned(),
        prefix: String::new(),
        credentials: Some((S3_ACCESS_KEY.to_owned(), secret)),
    };
    let for_servers = S3Config {
        endpoint: Some(format!("http://{}:{internal_port}", s3_name(network))),
        ..config.clone()
    };
    Ok((container, config, for_servers))
}
