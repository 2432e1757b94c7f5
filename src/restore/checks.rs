//! What a full restore ([`super`]) checks besides the dump's size
//! and checksum, and what it reports having compared.
//!
//! - **Before anything is downloaded:** the manifest lists every critical
//!   table of the playbook's 3.2 step 4 with its row count
//!   ([`check_manifest`]), and a named target database does not exist yet
//!   ([`check_target_absent`]; `CREATE DATABASE` stays the real guard
//!   against a race).
//! - **After `pg_restore`** ([`verify_restore`]): the grants recorded at
//!   backup time are re-applied (`pg_restore --no-acl` dropped them) unless
//!   [`GrantsMode::Bare`]; then, in one read-only snapshot, every table's
//!   row count, the content fingerprint of each table the manifest
//!   fingerprinted, the audit chain head and anchor, and the grants are
//!   compared with the manifest. The first difference fails the restore
//!   (the caller drops the database) with an error naming it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::{Connection, PgConnection};

use super::RestoreError;
use crate::backup::chain_head;
use crate::fixtures::CRITICAL_TABLES;
use crate::integrity::anchor::Anchor;
use crate::integrity::fidelity::{apply_grants, fingerprint_table, read_grants};
use crate::pg::table_facts;
use crate::pg::{ConnInfo, PgError};
use crate::store::layout;
use crate::store::manifest::{BackupManifest, ChainHead, Grant};

/// PostgreSQL's identifier limit (NAMEDATALEN - 1).
pub(crate) const MAX_IDENTIFIER_BYTES: usize = 63;

/// Whether a restore re-applies the grants the backup recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantsMode {
    /// Re-apply the recorded grants (to roles that exist on the target
    /// server), then check them.
    #[default]
    Reapply,
    /// The playbook's bare `pg_restore --no-acl`: no grants; the report
    /// names the grants the roles lack.
    Bare,
}

/// What a restore compared with the manifest, all of it equal.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// Tables whose row count was compared (every table of the manifest).
    pub tables: usize,
    /// Rows over those tables.
    pub rows: u64,
    /// Tables whose content fingerprint was compared.
    pub fingerprints: Vec<String>,
    /// Critical tables the manifest has no fingerprint for (older manifests).
    pub fingerprints_not_recorded: Vec<String>,
    /// The audit chain head compared (`None`: the chain was empty at backup).
    pub audit_chain_head: Option<ChainHead>,
    /// Whether the manifest's anchor (genesis hash, head, row count) was
    /// compared; older manifests have none.
    pub anchor_compared: bool,
    pub grants: GrantsCheck,
    /// Time of the row counts, the fingerprints, and the grants (re-apply
    /// and comparison).
    #[serde(with = "crate::serde_duration")]
    pub counts_took: Duration,
    #[serde(with = "crate::serde_duration")]
    pub fingerprints_took: Duration,
    #[serde(with = "crate::serde_duration")]
    pub grants_took: Duration,
}

/// What became of the grants the backup recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum GrantsCheck {
    /// Re-applied and present after the restore.
    Restored {
        grants: usize,
        roles: Vec<String>,
        /// Grantees that do not exist on the target server: not granted.
        skipped_roles: Vec<String>,
    },
    /// [`GrantsMode::Bare`]: not restored; these roles lack `missing`
    /// privileges they held at backup time.
    NotRestored { missing: usize, roles: Vec<String> },
    /// The manifest predates recorded grants: nothing compared.
    NotRecorded,
}

impl Verification {
    /// The report's lines for a person.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "row counts: {} tables, {} rows, equal to the manifest",
            self.tables, self.rows
        )];
        let mut fingerprints = if self.fingerprints.is_empty() {
            "content fingerprints: none recorded in the manifest, not compared".to_owned()
        } else {
            format!(
                "content fingerprints: {} tables equal ({})",
                self.fingerprints.len(),
                self.fingerprints.join(", ")
            )
        };
        if !self.fingerprints.is_empty() && !self.fingerprints_not_recorded.is_empty() {
            fingerprints.push_str(&format!(
                "; not recorded for {}",
                self.fingerprints_not_recorded.join(", ")
            ));
        }
        lines.push(fingerprints);
        let mut chain = match &self.audit_chain_head {
            Some(head) => format!(
                "audit chain head: id {}, hash {} equal",
                head.id,
                head.hash.as_deref().unwrap_or("NULL")
            ),
            None => "audit chain head: empty chain in the backup and the restore".to_owned(),
        };
        chain.push_str(if self.anchor_compared {
            "; anchor (genesis hash, head, row count) equal"
        } else {
            "; no anchor in the manifest, not compared"
        });
        lines.push(chain);
        lines.push(match &self.grants {
            GrantsCheck::Restored {
                grants,
                roles,
                skipped_roles,
            } => {
                let mut line = format!(
                    "grants: {grants} recorded at backup re-applied and present (to {})",
                    list_or_none(roles)
                );
                if !skipped_roles.is_empty() {
                    line.push_str(&format!(
                        "; NOT granted to {}: no such role on this server (create it and re-run the grants)",
                        skipped_roles.join(", ")
                    ));
                }
                line
            }
            GrantsCheck::NotRestored { missing, roles } => format!(
                "grants: NOT restored (--no-grants, the playbook's bare --no-acl): {} lack {missing} privileges \
                 they held at backup time; the application cannot read its tables until they are granted",
                list_or_none(roles)
            ),
            GrantsCheck::NotRecorded => {
                "grants: not compared (the manifest predates recorded grants) and not re-applied".to_owned()
            }
        });
        lines
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "no role".to_owned()
    } else {
        items.join(", ")
    }
}

/// Refuses a manifest that does not list every critical table (playbook
/// 3.2 step 4) with its row count: a restore could not show it got them.
pub fn check_manifest(manifest: &BackupManifest, location: &str) -> Result<(), RestoreError> {
    let missing: Vec<String> = CRITICAL_TABLES
        .iter()
        .filter(|table| !manifest.tables.contains_key(&format!("public.{table}")))
        .map(|table| (*table).to_owned())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(RestoreError::ManifestIncomplete {
        location: location.to_owned(),
        key: layout::manifest_key(&manifest.stamp),
        missing,
    })
}

/// Refuses a named target database that is too long or already exists,
/// before anything is downloaded.
pub async fn check_target_absent(admin: &ConnInfo, database: &str) -> Result<(), RestoreError> {
    if database.len() > MAX_IDENTIFIER_BYTES {
        return Err(RestoreError::TargetNameTooLong {
            database: database.to_owned(),
        });
    }
    let mut conn = PgConnection::connect_with(&admin.connect_options())
        .await
        .map_err(PgError::sql(format!("connect to {admin}")))?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(database)
        .fetch_one(&mut conn)
        .await
        .map_err(PgError::sql("look up existing databases"))?;
    let _ = conn.close().await;
    if exists {
        return Err(PgError::DatabaseExists {
            database: database.to_owned(),
        }
        .into());
    }
    Ok(())
}

/// Re-applies the recorded grants (unless `mode` is [`GrantsMode::Bare`])
/// and compares the restored database `target` with `manifest`. See the
/// module docs.
pub async fn verify_restore(
    target: &ConnInfo,
    manifest: &BackupManifest,
    mode: GrantsMode,
) -> Result<Verification, RestoreError> {
    let mut conn = PgConnection::connect_with(&target.connect_options())
        .await
        .map_err(PgError::sql(format!("connect to {target}")))?;
    let verified = verify_on(&mut conn, manifest, mode).await;
    let _ = conn.close().await;
    verified
}

async fn verify_on(
    conn: &mut PgConnection,
    manifest: &BackupManifest,
    mode: GrantsMode,
) -> Result<Verification, RestoreError> {
    let grants_started = Instant::now();
    let applied = match (&manifest.grants, mode) {
        (Some(recorded), GrantsMode::Reapply) => Some(apply_grants(conn, recorded).await?),
        _ => None,
    };
    let mut grants_took = grants_started.elapsed();

    let mut tx = conn
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(PgError::sql("open a read-only snapshot of the restored database"))?;

    let started = Instant::now();
    let restored = table_facts(&mut tx).await?;
    for (table, expected) in &manifest.tables {
        let actual = restored
            .get(table)
            .ok_or_else(|| RestoreError::TableMissing { table: table.clone() })?;
        if actual.rows != expected.rows {
            return Err(RestoreError::RowCountMismatch {
                table: table.clone(),
                expected: expected.rows,
                actual: actual.rows,
            });
        }
    }
    if let Some(table) = restored.keys().find(|table| !manifest.tables.contains_key(*table)) {
        return Err(RestoreError::TableNotInManifest { table: table.clone() });
    }
    let counts_took = started.elapsed();

    let started = Instant::now();
    let mut fingerprints = Vec::new();
    for (name, expected) in &manifest.tables {
        let Some(wanted) = &expected.fingerprint else {
            continue;
        };
        let (schema, table) = name.split_once('.').unwrap_or(("public", name));
        let actual = fingerprint_table(&mut tx, schema, table).await?;
        if &actual != wanted {
            return Err(RestoreError::FingerprintMismatch {
                table: name.clone(),
                expected: wanted.clone(),
                actual,
            });
        }
        fingerprints.push(name.clone());
    }
    let fingerprints_not_recorded = CRITICAL_TABLES
        .iter()
        .filter(|table| {
            manifest
                .tables
                .get(&format!("public.{table}"))
                .is_none_or(|facts| facts.fingerprint.is_none())
        })
        .map(|table| format!("public.{table}"))
        .collect();
    let fingerprints_took = started.elapsed();

    let head = chain_head(&mut tx).await?;
    if head != manifest.audit_chain_head {
        return Err(RestoreError::AuditChainMismatch {
            what: "head".to_owned(),
            expected: describe_head(manifest.audit_chain_head.as_ref()),
            actual: describe_head(head.as_ref()),
        });
    }

    let started = Instant::now();
    let grants = match &manifest.grants {
        None => GrantsCheck::NotRecorded,
        Some(recorded) => {
            let present: BTreeSet<Grant> = read_grants(&mut tx).await?.into_iter().collect();
            // `--no-owner` makes the restoring role the owner; an owner holds
            // every privilege without a grant of its own.
            let owners: BTreeMap<String, String> = sqlx::query_as(
                "SELECT c.relname::text, pg_get_userbyid(c.relowner)::text FROM pg_class c
                 JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'",
            )
            .fetch_all(&mut *tx)
            .await
            .map_err(PgError::sql("read the owners of the restored relations"))?
            .into_iter()
            .collect();
            let skipped = applied.as_ref().map(|a| a.skipped_roles.clone()).unwrap_or_default();
            let missing: Vec<&Grant> = recorded
                .iter()
                .filter(|grant| {
                    !present.contains(*grant)
                        && !skipped.contains(&grant.grantee)
                        && owners.get(&grant.table) != Some(&grant.grantee)
                })
                .collect();
            let roles = |grants: &mut dyn Iterator<Item = &Grant>| -> Vec<String> {
                grants
                    .map(|g| g.grantee.clone())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect()
            };
            match mode {
                GrantsMode::Reapply if !missing.is_empty() => {
                    return Err(RestoreError::GrantsMissing {
                        missing: missing
                            .iter()
                            .map(|g| format!("{} on {} to {}", g.privilege, g.table, g.grantee))
                            .collect(),
                    });
                }
                GrantsMode::Reapply => GrantsCheck::Restored {
                    grants: recorded.len() - recorded.iter().filter(|g| skipped.contains(&g.grantee)).count(),
                    roles: roles(&mut recorded.iter().filter(|g| !skipped.contains(&g.grantee))),
                    skipped_roles: skipped,
                },
                GrantsMode::Bare => GrantsCheck::NotRestored {
                    missing: missing.len(),
                    roles: roles(&mut missing.iter().copied()),
                },
            }
        }
    };
    grants_took += started.elapsed();

    // Last: a failed read aborts the snapshot.
    let anchor_compared = match &manifest.anchor {
        None => false,
        Some(expected) => {
            let describe = |a: &Anchor| {
                format!(
                    "genesis {}, head id {} hash {} at {}, {} rows",
                    a.genesis_hash, a.head_id, a.head_hash, a.head_created_at, a.rows
                )
            };
            match Anchor::read(&mut tx).await {
                Ok(actual)
                    if actual.genesis_hash == expected.genesis_hash
                        && actual.head_id == expected.head_id
                        && actual.head_hash == expected.head_hash
                        && actual.head_created_at == expected.head_created_at
                        && actual.rows == expected.rows => {}
                Ok(actual) => {
                    return Err(RestoreError::AuditChainMismatch {
                        what: "anchor".to_owned(),
                        expected: describe(expected),
                        actual: describe(&actual),
                    });
                }
                Err(e) => {
                    return Err(RestoreError::AuditChainMismatch {
                        what: "anchor".to_owned(),
                        expected: describe(expected),
                        actual: e.to_string(),
                    });
                }
            }
            true
        }
    };
    let _ = tx.rollback().await;

    Ok(Verification {
        tables: manifest.tables.len(),
        rows: manifest.tables.values().map(|facts| facts.rows).sum(),
        fingerprints,
        fingerprints_not_recorded,
        audit_chain_head: head,
        anchor_compared,
        grants,
        counts_took,
        fingerprints_took,
        grants_took,
    })
}

fn describe_head(head: Option<&ChainHead>) -> String {
    match head {
        None => "no audit row".to_owned(),
        Some(head) => format!(
            "id {} hash {} at {}",
            head.id,
            head.hash.as_deref().unwrap_or("NULL"),
            head.created_at
        ),
    }
}
