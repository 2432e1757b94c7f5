//! PostgreSQL: finding the binaries, running disposable clusters, connecting.
//!
//! This room owns everything that talks to a server: the binaries
//! ([`binaries`]), local clusters, connection facts, the client programs
//! ([`tools`]: `pg_dump`, `pg_restore`), databases left incomplete by a
//! killed process ([`incomplete`]) and what a database holds ([`facts`]).
//! Temp dirs and their reaping are [`crate::scratch`]'s.
//!
//! Everything here talks to a real server through its real programs
//! (`initdb`, `postgres`, `pg_dump`, `pg_restore`); nothing is simulated.

pub mod binaries;
pub(crate) mod child;
mod cluster;
mod conn;
pub mod data_dir;
pub mod facts;
pub mod incomplete;
pub mod tools;

use std::path::PathBuf;

pub use binaries::{PgBinaries, SearchPath};
pub use cluster::{Cluster, ClusterOptions, create_database};
pub use conn::{ConnInfo, Secret};
pub use data_dir::DataDirServer;
pub use facts::{TableFacts, table_facts};

pub type Result<T, E = PgError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    #[error(
        "PostgreSQL {} ({}) not found; searched {}. Install them (Debian/Ubuntu: `apt-get install {}`) or set \
         PG_BIN to the directory that holds them",
        needs.what(), needs.programs().join(", "), searched.join(", "), needs.package()
    )]
    BinariesNotFound {
        needs: binaries::Needs,
        searched: Vec<String>,
    },

    #[error(
        "PG_BIN={} holds no {}; point PG_BIN at PostgreSQL's bin directory (e.g. /usr/lib/postgresql/15/bin) or unset it",
        dir.display(), needs.programs().join(" and ")
    )]
    BadPgBin { needs: binaries::Needs, dir: PathBuf },

    #[error("failed to run {}", program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("could not read a PostgreSQL version from `postgres --version` output {output:?}")]
    UnknownVersion { output: String },

    #[error("invalid database URL: {reason}")]
    BadUrl { reason: String },

    #[error(
        "PostgreSQL refuses to run as root and there is no unprivileged user {user:?} to run it as; \
         create one (`useradd --system --no-create-home {user}`) or name another with DRILL_PG_USER"
    )]
    NoServerUser { user: String },

    #[error(
        "port {port} on 127.0.0.1 is already in use; stop whatever listens there or let drillbook pick a free port (omit the port)"
    )]
    PortInUse { port: u16 },

    #[error("{program} failed ({status}); its output:\n{output}")]
    ProgramFailed {
        program: String,
        status: std::process::ExitStatus,
        output: String,
    },

    #[error("PostgreSQL did not start; last lines of {}:\n{log_tail}", log.display())]
    StartFailed { log: PathBuf, log_tail: String },

    #[error("PostgreSQL did not accept connections within {seconds} s; see {}", log.display())]
    StartTimeout { log: PathBuf, seconds: u64 },

    #[error(
        "database {database:?} already exists; drillbook never restores over an existing database: \
         name another target or leave it out to get <db>_restore_<time>"
    )]
    DatabaseExists { database: String },

    #[error("failed to {context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("failed to {context}")]
    Sql {
        context: String,
        #[source]
        source: sqlx::Error,
    },

    #[error("{} is not a PostgreSQL data directory (no PG_VERSION); restore a base backup into it first", path.display())]
    NotADataDir { path: PathBuf },

    #[error(
        "the server user {user:?} cannot reach {}: {} is not searchable by it; put the data directory under one \
         that user can reach (e.g. /var/lib/postgresql or /srv), or `chmod o+x {}`",
        dir.display(), blocked.display(), blocked.display()
    )]
    DirNotReachableByServer {
        dir: PathBuf,
        user: String,
        /// The first directory on the way the user cannot search.
        blocked: PathBuf,
    },

    #[error(
        "the server user {user:?} cannot execute {}: {} {}; every directory above it must be searchable and the \
         file readable and executable by that user: fix the mode of {}, build into a target dir that user can \
         reach (CARGO_TARGET_DIR), or copy the binary somewhere like /usr/local/bin",
        path.display(),
        blocked.display(),
        if blocked == path { "is not readable and executable by it" } else { "is not searchable by it" },
        blocked.display()
    )]
    NotReachableByServer {
        path: PathBuf,
        user: String,
        /// The first directory above `path` the user cannot search, or
        /// `path` itself when every directory is searchable.
        blocked: PathBuf,
    },
}

impl PgError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }

    pub(crate) fn sql(context: impl Into<String>) -> impl FnOnce(sqlx::Error) -> Self {
        let context = context.into();
        move |source| Self::Sql { context, source }
    }
}

/// Quotes an SQL identifier (`"my ""db"""`).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes an SQL string literal (`'it''s'`).
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}
