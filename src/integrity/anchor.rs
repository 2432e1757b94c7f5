//! The audit-chain anchor: the chain's head recorded outside the database.
//!
//! No check inside the database can see its newest rows deleted: the rows
//! that remain still form a valid chain. Only a head recorded elsewhere
//! (in every backup manifest, and by `drillbook anchor` under `anchors/` in
//! S3) shows that the chain once reached further.
//!
//! An anchor names its chain by the hash of the chain's first row, which is
//! the same in a restored copy (another database name, another server) and
//! different for any other chain.

use chrono::{DateTime, Utc};

// The data lives in the store layer, which persists it (manifests,
// `anchors/`); this module reads anchors from databases and files.
pub use crate::store::manifest::{ANCHOR_FORMAT, ANCHORS, Anchor};

/// Why an anchor could not be taken, read or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnchorError {
    #[error("failed to read the audit chain head from {database}")]
    Read {
        database: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "database {database} has no audit_logs table, so there is no chain to anchor; \
         point --database-url at the application database"
    )]
    NoChainTable { database: String },
    #[error("database {database} has an empty audit chain: nothing to anchor yet")]
    EmptyChain { database: String },
    #[error("the first audit row of {database} has a NULL hash, so the chain cannot be named; repair the chain first")]
    UnnamedChain { database: String },
    #[error("failed to read the anchor file {path}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to fetch the anchor {location}")]
    Fetch {
        location: String,
        #[source]
        source: crate::store::StoreError,
    },
    #[error(
        "the anchor {location} does not parse ({reason}); pass a file written by `drillbook anchor` \
         (anchors/<stamp>.json) or by a backup manifest's `anchor` field"
    )]
    Parse { location: String, reason: String },
    #[error(
        "the anchor {location} has format {found}, newer than this drillbook understands ({ANCHOR_FORMAT}); \
         upgrade drillbook"
    )]
    TooNew { location: String, found: u32 },
}

/// `SELECT` of the chain facts an anchor records; one row, in one snapshot.
const HEAD_SQL: &str = "SELECT current_database()::text, now(),
        (SELECT hash FROM public.audit_logs ORDER BY created_at, id LIMIT 1),
        h.id, h.hash, h.created_at,
        (SELECT count(*) FROM public.audit_logs)
 FROM (SELECT id, hash, created_at FROM public.audit_logs ORDER BY created_at DESC, id DESC LIMIT 1) h";

// Constructors that read a database, a file or S3. An inherent impl may live
// in any module of the crate: the dependency points from integrity down to
// store, never back.
impl Anchor {
    /// Reads the current chain head, the genesis hash and the row count from
    /// `conn` (in whatever transaction `conn` is in: inside a backup's snapshot
    /// the anchor describes exactly what the dump holds).
    ///
    /// # Errors
    /// No `audit_logs` table, an empty chain, a first row without a hash, or
    /// a failed query.
    pub async fn read(conn: &mut sqlx::PgConnection) -> Result<Self, AnchorError> {
        let database: String = sqlx::query_scalar("SELECT current_database()::text")
            .fetch_one(&mut *conn)
            .await
            .map_err(|source| AnchorError::Read {
                database: "?".to_owned(),
                source,
            })?;
        let read_error = |source| AnchorError::Read {
            database: database.clone(),
            source,
        };
        let exists: bool = sqlx::query_scalar("SELECT to_regclass('public.audit_logs') IS NOT NULL")
            .fetch_one(&mut *conn)
            .await
            .map_err(read_error)?;
        if !exists {
            return Err(AnchorError::NoChainTable { database });
        }
        type Head = (
            String,
            DateTime<Utc>,
            Option<String>,
            i64,
            Option<String>,
            DateTime<Utc>,
            i64,
        );
        let head: Option<Head> = sqlx::query_as(HEAD_SQL)
            .fetch_optional(&mut *conn)
            .await
            .map_err(|source| AnchorError::Read {
                database: database.clone(),
                source,
            })?;
        let Some((database, recorded_at, genesis, head_id, head_hash, head_created_at, rows)) = head else {
            return Err(AnchorError::EmptyChain { database });
        };
        let Some(genesis_hash) = genesis else {
            return Err(AnchorError::UnnamedChain { database });
        };
        Ok(Self {
            format: ANCHOR_FORMAT,
            database,
            recorded_at,
            genesis_hash,
            head_id,
            // A NULL head hash is recorded as empty: the verifier reports the
            // NULL itself, and an empty anchored hash matches no later row.
            head_hash: head_hash.unwrap_or_default(),
            head_created_at,
            rows: rows as u64,
        })
    }

    /// Connects to `target` and reads its anchor in a read-only snapshot.
    pub async fn capture(target: &crate::pg::ConnInfo) -> Result<Self, AnchorError> {
        use sqlx::Connection as _;
        let read_error = |source| AnchorError::Read {
            database: target.redacted_url(),
            source,
        };
        let options = target
            .connect_options()
            .options([("default_transaction_read_only", "on")]);
        let mut conn = sqlx::PgConnection::connect_with(&options).await.map_err(read_error)?;
        let mut tx = conn
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(read_error)?;
        let anchor = Self::read(&mut tx).await?;
        tx.rollback().await.map_err(read_error)?;
        let _ = conn.close().await;
        Ok(anchor)
    }

    /// Parses an anchor file; `location` names it in errors.
    pub fn parse(bytes: &[u8], location: &str) -> Result<Self, AnchorError> {
        let anchor: Self = serde_json::from_slice(bytes).map_err(|e| AnchorError::Parse {
            location: location.to_owned(),
            reason: e.to_string(),
        })?;
        if anchor.format > ANCHOR_FORMAT {
            return Err(AnchorError::TooNew {
                location: location.to_owned(),
                found: anchor.format,
            });
        }
        if anchor.genesis_hash.is_empty() {
            return Err(AnchorError::Parse {
                location: location.to_owned(),
                reason: "genesis_hash is empty".to_owned(),
            });
        }
        Ok(anchor)
    }

    /// Reads an anchor from a local file or `s3://bucket/key` (`s3` gives
    /// the endpoint and region for S3 locations; the bucket comes from the
    /// location itself).
    pub async fn load(location: &str, s3: Option<&crate::store::S3Config>) -> Result<Self, AnchorError> {
        let bytes = if let Some(rest) = location.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            if key.is_empty() {
                return Err(AnchorError::Parse {
                    location: location.to_owned(),
                    reason: "an S3 anchor location is s3://BUCKET/anchors/<stamp>.json".to_owned(),
                });
            }
            let config = crate::store::S3Config {
                endpoint: s3.and_then(|c| c.endpoint.clone()),
                region: s3.map_or_else(|| "us-east-1".to_owned(), |c| c.region.clone()),
                bucket: bucket.to_owned(),
                prefix: String::new(),
                credentials: s3.and_then(|c| c.credentials.clone()),
            };
            let store = crate::store::Store::connect(config).await;
            store.get_bytes(key).await.map_err(|source| AnchorError::Fetch {
                location: location.to_owned(),
                source,
            })?
        } else {
            std::fs::read(location).map_err(|source| AnchorError::File {
                path: location.to_owned(),
                source,
            })?
        };
        Self::parse(&bytes, location)
    }
}
