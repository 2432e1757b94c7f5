//! Restore fidelity: did the restore bring back everything the backup held,
//! and everything the source database had around the data?
//!
//! - **Row counts and content fingerprints.** At backup time, inside the
//!   dump's snapshot, each critical table gets a fingerprint: the SHA-256 of
//!   `COPY (SELECT * FROM t ORDER BY <primary key>) TO STDOUT`, streamed
//!   (never the table in memory), with the session's output formats pinned
//!   (`TimeZone`, `DateStyle`, `IntervalStyle`, `extra_float_digits`,
//!   `bytea_output`) so the same rows give the same bytes on any server.
//!   The fingerprint is recorded in the manifest's [`TableFacts`] and
//!   compared after restore ([`compare_with_manifest`]): `RowCounts` and
//!   `ContentFingerprint` findings.
//! - **Grants and RLS policies** compared between a source and a restored
//!   database ([`compare_acl`]). The playbook restores with `--no-acl`, so a
//!   restored database has lost every grant to `immoflowme_app`: this makes
//!   that visible (`Grants` findings) where the playbook's checks stay silent.
//!   Policies are part of the schema and survive (`Policies` findings only if
//!   they do not). Grants held by a table's owner are left out of the
//!   comparison: `--no-owner` gives the tables another owner on purpose.

use std::collections::{BTreeMap, BTreeSet};

use futures::TryStreamExt as _;
use sha2::{Digest, Sha256};
use sqlx::{Connection, PgConnection};

use super::{CheckName, Finding};
use crate::fixtures::CRITICAL_TABLES;
use crate::pg::{ConnInfo, PgError, TableFacts, quote_ident, table_facts};
use crate::store::manifest::{BackupManifest, Grant as RecordedGrant};

/// Session settings that fix COPY's text output, set `LOCAL` to the
/// caller's transaction.
const PIN_FORMATS: &str = "SET LOCAL TimeZone = 'UTC'; SET LOCAL DateStyle = 'ISO, MDY'; \
     SET LOCAL IntervalStyle = 'postgres'; SET LOCAL extra_float_digits = 3; SET LOCAL bytea_output = 'hex'";

/// The fingerprint of `schema.table`, in the caller's transaction (which
/// must be one: the format settings are `SET LOCAL`).
pub async fn fingerprint_table(conn: &mut PgConnection, schema: &str, table: &str) -> Result<String, PgError> {
    sqlx::raw_sql(PIN_FORMATS)
        .execute(&mut *conn)
        .await
        .map_err(PgError::sql("pin the output formats for a fingerprint"))?;
    let order: Option<String> = sqlx::query_scalar(
        "SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY k.n)
         FROM pg_index i
         CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
         WHERE i.indrelid = (quote_ident($1) || '.' || quote_ident($2))::regclass AND i.indisprimary",
    )
    .bind(schema)
    .bind(table)
    .fetch_one(&mut *conn)
    .await
    .map_err(PgError::sql(format!("find the primary key of {schema}.{table}")))?;
    // Without a primary key, every column in order: a total order up to
    // identical rows, whose order does not change the bytes.
    let order = match order {
        Some(order) => order,
        None => sqlx::query_scalar::<_, String>(
            "SELECT string_agg(a.attnum::text, ', ' ORDER BY a.attnum) FROM pg_attribute a
             WHERE a.attrelid = (quote_ident($1) || '.' || quote_ident($2))::regclass
               AND a.attnum > 0 AND NOT a.attisdropped",
        )
        .bind(schema)
        .bind(table)
        .fetch_one(&mut *conn)
        .await
        .map_err(PgError::sql(format!("list the columns of {schema}.{table}")))?,
    };
    let statement = format!(
        "COPY (SELECT * FROM {}.{} ORDER BY {order}) TO STDOUT",
        quote_ident(schema),
        quote_ident(table)
    );
    let context = format!("read {schema}.{table} for its fingerprint");
    let mut stream = conn
        .copy_out_raw(&statement)
        .await
        .map_err(PgError::sql(context.clone()))?;
    let mut hasher = Sha256::new();
    while let Some(chunk) = stream.try_next().await.map_err(PgError::sql(context.clone()))? {
        hasher.update(&chunk);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Adds the fingerprint of each critical table present in `tables` (keys
/// `public.<table>`), read in the caller's transaction: the backup snapshot.
pub async fn record_fingerprints(
    conn: &mut PgConnection,
    tables: &mut BTreeMap<String, TableFacts>,
) -> Result<(), PgError> {
    for table in CRITICAL_TABLES {
        if let Some(facts) = tables.get_mut(&format!("public.{table}")) {
            facts.fingerprint = Some(fingerprint_table(conn, "public", table).await?);
        }
    }
    Ok(())
}

/// Compares a restored database with the manifest of the backup it came
/// from: a `RowCounts` finding per table whose count differs (or that is
/// missing), a `ContentFingerprint` finding per critical table whose
/// content differs. Reads in one read-only snapshot.
pub async fn compare_with_manifest(target: &ConnInfo, manifest: &BackupManifest) -> Result<Vec<Finding>, PgError> {
    let mut conn = connect(target).await?;
    let mut tx = conn
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(PgError::sql("open a read-only snapshot"))?;
    let restored = table_facts(&mut tx).await?;
    let mut findings = Vec::new();
    for (name, expected) in &manifest.tables {
        let short = name.strip_prefix("public.").unwrap_or(name);
        let Some(actual) = restored.get(name) else {
            findings.push(Finding::new(
                CheckName::RowCounts,
                short,
                None,
                format!(
                    "table {name} is in the backup ({} rows) but not in the restored database",
                    expected.rows
                ),
            ));
            continue;
        };
        if actual.rows != expected.rows {
            findings.push(Finding::new(
                CheckName::RowCounts,
                short,
                None,
                format!("{} rows restored, the backup holds {}", actual.rows, expected.rows),
            ));
        }
        if let Some(wanted) = &expected.fingerprint {
            let (schema, table) = name.split_once('.').unwrap_or(("public", name));
            let got = fingerprint_table(&mut tx, schema, table).await?;
            if &got != wanted {
                findings.push(Finding::new(
                    CheckName::ContentFingerprint,
                    short,
                    None,
                    format!("content fingerprint {got} differs from the backup's {wanted}: rows were changed"),
                ));
            }
        }
    }
    let _ = tx.rollback().await;
    let _ = conn.close().await;
    Ok(findings)
}

/// One grant on a table: (table, grantee, privilege).
type Grant = (String, String, String);
/// One policy: (table, policy name, its definition as text).
type Policy = (String, String, String);

/// Compares the grants and RLS policies of the `public` tables of `source`
/// and `restored`: a `Grants` finding per grant the one has and the other
/// lacks (key: the grantee), a `Policies` finding per policy missing, added
/// or changed, or per table whose RLS switch differs (key: the policy).
pub async fn compare_acl(source: &ConnInfo, restored: &ConnInfo) -> Result<Vec<Finding>, PgError> {
    let (source_grants, source_policies) = read_acl(source).await?;
    let (restored_grants, restored_policies) = read_acl(restored).await?;
    let mut findings = Vec::new();
    for (table, grantee, privilege) in source_grants.difference(&restored_grants) {
        findings.push(Finding::new(
            CheckName::Grants,
            table,
            Some(grantee.clone()),
            format!(
                "{privilege} granted to {grantee} in the source is missing in the restored database \
                 (pg_restore --no-acl drops grants): re-apply them, e.g. from the schema's GRANT statements"
            ),
        ));
    }
    for (table, grantee, privilege) in restored_grants.difference(&source_grants) {
        findings.push(Finding::new(
            CheckName::Grants,
            table,
            Some(grantee.clone()),
            format!("{privilege} granted to {grantee} in the restored database, not in the source"),
        ));
    }
    let source_by_name: BTreeMap<_, _> = source_policies
        .iter()
        .map(|(t, n, d)| ((t.clone(), n.clone()), d.clone()))
        .collect();
    let restored_by_name: BTreeMap<_, _> = restored_policies
        .iter()
        .map(|(t, n, d)| ((t.clone(), n.clone()), d.clone()))
        .collect();
    for ((table, name), definition) in &source_by_name {
        match restored_by_name.get(&(table.clone(), name.clone())) {
            None => findings.push(Finding::new(
                CheckName::Policies,
                table,
                Some(name.clone()),
                format!("policy {name} ({definition}) is missing in the restored database"),
            )),
            Some(other) if other != definition => findings.push(Finding::new(
                CheckName::Policies,
                table,
                Some(name.clone()),
                format!("policy {name} differs: source {definition}, restored {other}"),
            )),
            Some(_) => {}
        }
    }
    for ((table, name), definition) in &restored_by_name {
        if !source_by_name.contains_key(&(table.clone(), name.clone())) {
            findings.push(Finding::new(
                CheckName::Policies,
                table,
                Some(name.clone()),
                format!("policy {name} ({definition}) exists only in the restored database"),
            ));
        }
    }
    findings.sort();
    Ok(findings)
}

async fn connect(target: &ConnInfo) -> Result<PgConnection, PgError> {
    let options = target
        .connect_options()
        .options([("default_transaction_read_only", "on")]);
    PgConnection::connect_with(&options)
        .await
        .map_err(PgError::sql(format!("connect to {target}")))
}

async fn read_acl(target: &ConnInfo) -> Result<(BTreeSet<Grant>, BTreeSet<Policy>), PgError> {
    let mut conn = connect(target).await?;
    let grants: Vec<Grant> = read_grants(&mut conn)
        .await?
        .into_iter()
        .map(|g| (g.table, g.grantee, g.privilege))
        .collect();
    let mut policies: Vec<Policy> = sqlx::query_as(
        "SELECT tablename::text, policyname::text,
                format('%s %s to %s using %s check %s', permissive, cmd, roles::text,
                       coalesce(qual, '-'), coalesce(with_check, '-'))
         FROM pg_policies WHERE schemaname = 'public'",
    )
    .fetch_all(&mut conn)
    .await
    .map_err(PgError::sql(format!("read the policies of {target}")))?;
    let rls: Vec<(String, bool, bool)> = sqlx::query_as(
        "SELECT c.relname::text, c.relrowsecurity, c.relforcerowsecurity
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')",
    )
    .fetch_all(&mut conn)
    .await
    .map_err(PgError::sql(format!("read the RLS switches of {target}")))?;
    // The RLS switch of a table is compared like a policy named after it.
    policies.extend(rls.into_iter().map(|(table, enabled, forced)| {
        (
            table,
            "(row level security)".to_owned(),
            format!("enabled {enabled}, forced {forced}"),
        )
    }));
    let _ = conn.close().await;
    Ok((grants.into_iter().collect(), policies.into_iter().collect()))
}

/// The grants on the `public` relations (tables, views, sequences) other
/// than the owner's, in the caller's transaction; sorted. At backup time,
/// inside the dump's snapshot, they go into the manifest
/// ([`BackupManifest::grants`]); after a restore they are compared with it.
pub async fn read_grants(conn: &mut PgConnection) -> Result<Vec<RecordedGrant>, PgError> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT c.relname::text, coalesce(r.rolname::text, 'PUBLIC'), a.privilege_type
         FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         CROSS JOIN LATERAL aclexplode(c.relacl) a
         LEFT JOIN pg_roles r ON r.oid = a.grantee
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
           AND a.grantee <> c.relowner",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(PgError::sql("read the grants"))?;
    let mut grants: Vec<RecordedGrant> = rows
        .into_iter()
        .map(|(table, grantee, privilege)| RecordedGrant {
            table,
            grantee,
            privilege,
        })
        .collect();
    grants.sort();
    grants.dedup();
    Ok(grants)
}

/// What [`apply_grants`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppliedGrants {
    /// Grants applied (or already present).
    pub applied: usize,
    /// Grantees that do not exist on the server: their grants were skipped.
    pub skipped_roles: Vec<String>,
    /// Relations the grants name that the database does not have.
    pub missing_relations: Vec<String>,
}

/// Re-applies recorded grants (`pg_restore --no-acl` dropped them) to the
/// database `conn` is connected to, as a role allowed to grant (the owner
/// or a superuser). Grants to roles that do not exist on this server are
/// skipped and named; `GRANT` of a privilege already held changes nothing.
pub async fn apply_grants(conn: &mut PgConnection, grants: &[RecordedGrant]) -> Result<AppliedGrants, PgError> {
    let roles: BTreeSet<String> = sqlx::query_scalar::<_, String>("SELECT rolname::text FROM pg_roles")
        .fetch_all(&mut *conn)
        .await
        .map_err(PgError::sql("list the roles"))?
        .into_iter()
        .collect();
    let kinds: BTreeMap<String, String> = sqlx::query_as::<_, (String, String)>(
        "SELECT c.relname::text, c.relkind::text FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S')",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(PgError::sql("list the relations to grant on"))?
    .into_iter()
    .collect();
    // One GRANT per (relation, grantee) with all its privileges.
    let mut grouped: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
    let mut applied = AppliedGrants::default();
    let mut skipped = BTreeSet::new();
    let mut missing = BTreeSet::new();
    for grant in grants {
        if grant.grantee != "PUBLIC" && !roles.contains(&grant.grantee) {
            skipped.insert(grant.grantee.clone());
        } else if !kinds.contains_key(&grant.table) {
            missing.insert(grant.table.clone());
        } else {
            grouped
                .entry((grant.table.as_str(), grant.grantee.as_str()))
                .or_default()
                .push(grant.privilege.as_str());
        }
    }
    for ((table, grantee), privileges) in grouped {
        let on = if kinds.get(table).map(String::as_str) == Some("S") {
            "SEQUENCE"
        } else {
            "TABLE"
        };
        // Privilege names come from aclexplode (keywords only); anything
        // else is refused rather than spliced into SQL.
        if let Some(odd) = privileges
            .iter()
            .find(|p| !p.bytes().all(|b| b.is_ascii_uppercase() || b == b' '))
        {
            return Err(PgError::sql(format!("re-apply the grants on {table}"))(
                sqlx::Error::Protocol(format!("unexpected privilege {odd:?} in the manifest")),
            ));
        }
        let to = if grantee == "PUBLIC" {
            "PUBLIC".to_owned()
        } else {
            quote_ident(grantee)
        };
        let sql = format!(
            "GRANT {} ON {on} public.{} TO {to}",
            privileges.join(", "),
            quote_ident(table)
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut *conn)
            .await
            .map_err(PgError::sql(format!("re-apply the grants on {table} to {grantee}")))?;
        applied.applied += privileges.len();
    }
    applied.skipped_roles = skipped.into_iter().collect();
    applied.missing_relations = missing.into_iter().collect();
    Ok(applied)
}
