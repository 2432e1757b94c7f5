//! The backup manifest: what a dump holds, recorded from the same snapshot
//! the dump was taken from, so a restore can prove it got all of it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Read from the database by [`crate::pg::table_facts`]; recorded per table.
pub use crate::pg::TableFacts;

/// Manifest format written by this version; older formats stay readable.
pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupManifest {
    pub format: u32,
    /// The backup's stamp (see [`super::layout`]).
    pub stamp: String,
    /// When the dump's snapshot was taken (server clock).
    pub snapshot_at: DateTime<Utc>,
    pub database: String,
    pub dump: ObjectRef,
    /// `pg_dumpall --roles-only` output, when it could be taken.
    pub roles: Option<ObjectRef>,
    pub server_version: String,
    pub pg_dump_version: String,
    /// Every user table of the database, by `schema.table` name.
    pub tables: BTreeMap<String, TableFacts>,
    /// Last row of `audit_logs` in chain order, when the table exists.
    pub audit_chain_head: Option<ChainHead>,
    /// The audit chain's anchor (head, genesis hash, row count) in the dump's
    /// snapshot; `drillbook verify --anchor` checks a database against it.
    /// Absent in manifests written before anchors existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<Anchor>,
    /// The grants on the `public` relations in the dump's snapshot, other
    /// than those a relation's owner holds (see `integrity::fidelity`). The
    /// dump is restored with `--no-acl`; a restore re-applies these and
    /// checks them. Absent in manifests written before grants were recorded
    /// (a restore then says it did not compare grants).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grants: Option<Vec<Grant>>,
}

/// One privilege on a relation of the `public` schema, held by a role other
/// than the relation's owner.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Grant {
    /// The relation's name in the `public` schema.
    pub table: String,
    /// A role name, or `PUBLIC`.
    pub grantee: String,
    /// `SELECT`, `INSERT`, `USAGE`, ...
    pub privilege: String,
}

/// Anchor format written by this version.
pub const ANCHOR_FORMAT: u32 = 1;

/// Where `drillbook anchor` writes: `anchors/<stamp>.json`.
pub const ANCHORS: &str = "anchors/";

/// The audit chain's head recorded outside the database: in every manifest
/// and under [`ANCHORS`]. Only the data lives here, in the store layer that
/// persists it; reading one from a database or a file, and what it means for
/// verification, is `integrity::anchor` (which re-exports this type).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    pub format: u32,
    /// The database the head was read from (informational; the chain is
    /// identified by `genesis_hash`).
    pub database: String,
    pub recorded_at: DateTime<Utc>,
    /// `hash` of the chain's first row: which chain this anchor belongs to.
    pub genesis_hash: String,
    /// The last row in chain order when the anchor was taken.
    pub head_id: i64,
    pub head_hash: String,
    pub head_created_at: DateTime<Utc>,
    /// Rows in the chain at that time.
    pub rows: u64,
}

impl Anchor {
    /// The key `drillbook anchor` writes this anchor under: `anchors/<stamp>.json`.
    pub fn key(&self) -> String {
        format!("{ANCHORS}{}.json", super::layout::stamp(self.recorded_at))
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("anchors serialise")
    }
}

/// An object in the bucket and what it must contain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    pub key: String,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    pub id: i64,
    pub hash: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl BackupManifest {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("manifests serialise")
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The newest `created_at` over all tables: the newest data the backup holds.
    pub fn newest_data(&self) -> Option<DateTime<Utc>> {
        self.tables.values().filter_map(|t| t.newest_created_at).max()
    }

    pub fn rows_in(&self, table: &str) -> Option<u64> {
        self.tables
            .get(&format!("public.{table}"))
            .or_else(|| self.tables.get(table))
            .map(|t| t.rows)
    }
}
