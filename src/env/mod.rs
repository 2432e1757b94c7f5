//! Where a drill runs. `DRILL_ENV` picks the backend; `embedded` (the
//! default) runs everything on this machine: PostgreSQL clusters from the
//! installed binaries and an in-process S3 server.

mod embedded;
mod s3_server;

pub use embedded::{ConnectionFacts, EmbeddedEnvironment};
pub use s3_server::{EmbeddedS3, S3ServerError};

use crate::fixtures::FixtureError;
use crate::pg::PgError;
use crate::store::StoreError;

/// The application database name every backend uses for the fixture.
pub const APP_DATABASE: &str = "immoflowme";
/// The backup bucket the playbook names (`s3://immoflowme-backups`).
pub const BACKUP_BUCKET: &str = "immoflowme-backups";

pub type Result<T, E = EnvError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvError {
    #[error("DRILL_ENV={value:?} is not a backend; use embedded (the default), containers or staging")]
    UnknownBackend { value: String },
    #[error("the {backend} backend is not available in this version of drillbook; run with DRILL_ENV=embedded")]
    BackendUnavailable { backend: &'static str },
    #[error(transparent)]
    Postgres(#[from] PgError),
    #[error("failed to start the embedded S3 server")]
    S3Server(#[from] S3ServerError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Fixture(#[from] FixtureError),
}

/// The backends drills can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Containers,
    Staging,
}

impl Backend {
    /// Reads `DRILL_ENV` (unset or empty means embedded).
    pub fn from_env() -> Result<Self> {
        Self::parse(std::env::var("DRILL_ENV").ok().as_deref())
    }

    pub fn parse(value: Option<&str>) -> Result<Self> {
        match value.map(str::trim) {
            None | Some("") | Some("embedded") => Ok(Self::Embedded),
            Some("containers") => Ok(Self::Containers),
            Some("staging") => Ok(Self::Staging),
            Some(other) => Err(EnvError::UnknownBackend {
                value: other.to_owned(),
            }),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Embedded => "embedded",
            Self::Containers => "containers",
            Self::Staging => "staging",
        }
    }
}

/// The environment a drill gets from `DRILL_ENV`.
///
/// # Errors
/// [`EnvError::BackendUnavailable`] for `containers` and `staging`, which this
/// version does not have yet: a drill asked to run there fails loudly rather
/// than quietly running somewhere else.
pub async fn from_env() -> Result<EmbeddedEnvironment> {
    match Backend::from_env()? {
        Backend::Embedded => EmbeddedEnvironment::start().await,
        other => Err(EnvError::BackendUnavailable { backend: other.name() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_parse_and_typos_are_named() {
        assert_eq!(Backend::parse(None).unwrap(), Backend::Embedded);
        assert_eq!(Backend::parse(Some("staging")).unwrap(), Backend::Staging);
        let err = Backend::parse(Some("stagign")).unwrap_err();
        assert!(err.to_string().contains("\"stagign\""), "{err}");
    }
}
