//! The backup manifest: what a dump holds, recorded from the same snapshot
//! the dump was taken from, so a restore can prove it got all of it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

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
    pub anchor: Option<crate::integrity::anchor::Anchor>,
}

/// An object in the bucket and what it must contain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    pub key: String,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableFacts {
    pub rows: u64,
    /// `max(created_at)`, for tables that have that column.
    pub newest_created_at: Option<DateTime<Utc>>,
    /// Content fingerprint (see `integrity::fidelity`) of the critical
    /// tables, taken in the dump's snapshot; absent for other tables and in
    /// older manifests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
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
