//! Single-table restore (`drillbook::table_restore`) against a real
//! PostgreSQL and the embedded S3 server: the happy path, every refusal, and
//! that the scratch database is gone afterwards in each case.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use drillbook::env::EmbeddedEnvironment;
use drillbook::fixtures::{FixtureSpec, Profile};
use drillbook::pg::ConnInfo;
use drillbook::table_restore::{TableRestoreError, TableRestoreReport, restore_table};
use sqlx::Connection;

use crate::common::{backup, connect};

/// A fixed end, so every run seeds the same rows.
fn until() -> DateTime<Utc> {
    "2026-05-01T08:00:00Z".parse().unwrap()
}

async fn seeded_env() -> EmbeddedEnvironment {
    let env = EmbeddedEnvironment::start().await.unwrap();
    env.seed(FixtureSpec {
        profile: Profile::Small,
        seed: 7,
        until: until(),
    })
    .await
    .unwrap();
    env
}

async fn restore(env: &EmbeddedEnvironment, table: &str) -> Result<TableRestoreReport, TableRestoreError> {
    restore_table(
        env.binaries(),
        &env.primary().admin(),
        &env.source(),
        env.store(),
        table,
    )
    .await
}

async fn execute(conn: &ConnInfo, sql: &str) {
    let mut c = connect(conn).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
}

/// Every database on the server.
async fn databases(env: &EmbeddedEnvironment) -> BTreeSet<String> {
    let mut c = connect(&env.primary().admin()).await;
    let names: Vec<String> = sqlx::query_scalar("SELECT datname::text FROM pg_database")
        .fetch_all(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    names.into_iter().collect()
}

/// Row count and an md5 over every row of `table` in id order.
async fn content(conn: &ConnInfo, table: &str, key: &str) -> (i64, String) {
    let mut c = connect(conn).await;
    let sql =
        format!("SELECT count(*), coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t.{key})), '') FROM {table} t");
    let row: (i64, String) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_one(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    row
}

fn assert_no_scratch(before: &BTreeSet<String>, after: &BTreeSet<String>) {
    assert_eq!(before, after, "databases changed: the scratch database was left behind");
    assert!(
        !after.iter().any(|name| name.contains("_scratch_")),
        "scratch database left behind: {after:?}"
    );
}

#[tokio::test]
async fn a_damaged_table_comes_back_from_the_newest_backup_and_nothing_else_changes() {
    let env = seeded_env().await;
    let source = env.source();
    let backup = backup(&env).await;
    let backed_up = content(&source, "invoice_lines", "id").await;
    assert_eq!(
        backed_up.0 as u64, backup.manifest.tables["public.invoice_lines"].rows,
        "no writes between the backup and this count"
    );
    assert!(backed_up.0 > 10, "the fixture has invoice lines: {backed_up:?}");

    // The damage: half the rows gone, the rest rewritten.
    execute(
        &source,
        "DELETE FROM invoice_lines WHERE id % 2 = 0; UPDATE invoice_lines SET description = 'corrupted'",
    )
    .await;
    let damaged = content(&source, "invoice_lines", "id").await;
    assert_ne!(damaged, backed_up);
    // A later write to another table, which the restore must keep.
    execute(
        &source,
        "UPDATE tenants SET name = 'renamed after the backup' WHERE id = (SELECT min(id) FROM tenants)",
    )
    .await;
    let tenants_after_write = content(&source, "tenants", "id").await;

    let before = databases(&env).await;
    let report = restore(&env, "invoice_lines").await.unwrap();
    assert_no_scratch(&before, &databases(&env).await);

    assert_eq!(report.table, "public.invoice_lines");
    assert_eq!(report.backup.stamp, backup.manifest.stamp);
    assert_eq!(report.rows_before, Some(damaged.0));
    assert_eq!(report.rows_restored as i64, backed_up.0);
    assert_eq!(
        content(&source, "invoice_lines", "id").await,
        backed_up,
        "row count and content of the backup"
    );
    assert_eq!(
        content(&source, "tenants", "id").await,
        tenants_after_write,
        "other tables' later writes kept"
    );

    // The schema-qualified name works the same and is idempotent.
    let again = restore(&env, "public.invoice_lines").await.unwrap();
    assert_eq!(again.rows_before, Some(backed_up.0));
    assert_eq!(content(&source, "invoice_lines", "id").await, backed_up);
    assert_no_scratch(&before, &databases(&env).await);

    env.cleanup().await.unwrap();
}

#[tokio::test]
async fn a_table_that_is_not_in_the_backup_is_refused_with_the_fix() {
    let env = seeded_env().await;
    let backup = backup(&env).await;
    // Created after the backup: the dump cannot have it.
    execute(
        &env.source(),
        "CREATE TABLE late_table (id bigint PRIMARY KEY); INSERT INTO late_table VALUES (1)",
    )
    .await;

    let before = databases(&env).await;
    let err = restore(&env, "late_table").await.unwrap_err();
    assert_no_scratch(&before, &databases(&env).await);

    match &err {
        TableRestoreError::NotInBackup { table, stamp } => {
            assert_eq!(table, "public.late_table");
            assert_eq!(stamp, &backup.manifest.stamp);
        }
        other => panic!("expected NotInBackup, got {other:?}"),
    }
    let message = err.to_string();
    for part in [
        "public.late_table",
        &backup.manifest.stamp,
        "name it as in the manifest",
    ] {
        assert!(message.contains(part), "message lacks {part:?}: {message}");
    }
    // Nothing was touched.
    assert_eq!(content(&env.source(), "late_table", "id").await.0, 1);

    // A table in another schema is not its `public` namesake.
    let err = restore(&env, "elsewhere.invoice_lines").await.unwrap_err();
    assert!(
        matches!(&err, TableRestoreError::NotInBackup { table, .. } if table == "elsewhere.invoice_lines"),
        "{err:?}"
    );
    assert_no_scratch(&before, &databases(&env).await);

    env.cleanup().await.unwrap();
}

#[tokio::test]
async fn a_dump_that_does_not_match_its_manifest_is_refused() {
    let env = seeded_env().await;
    let backup = backup(&env).await;
    let dump = &backup.manifest.dump;
    let original = env.store().get_bytes(&dump.key).await.unwrap();
    let tampered: Vec<u8> = original.iter().map(|b| b ^ 0x5a).collect();
    env.store()
        .put_bytes(&dump.key, tampered, "application/octet-stream")
        .await
        .unwrap();
    execute(&env.source(), "DELETE FROM invoice_lines WHERE id % 3 = 0").await;
    let damaged = content(&env.source(), "invoice_lines", "id").await;

    let before = databases(&env).await;
    let err = restore(&env, "invoice_lines").await.unwrap_err();
    assert_no_scratch(&before, &databases(&env).await);

    match &err {
        TableRestoreError::ChecksumMismatch { key, expected, actual } => {
            assert_eq!(key, &dump.key);
            assert_eq!(expected, &dump.sha256);
            assert_ne!(actual, expected);
        }
        other => panic!("expected ChecksumMismatch, got {other:?}"),
    }
    let message = err.to_string();
    for part in [dump.key.as_str(), dump.sha256.as_str(), "older backup"] {
        assert!(message.contains(part), "message lacks {part:?}: {message}");
    }
    assert_eq!(
        content(&env.source(), "invoice_lines", "id").await,
        damaged,
        "refused: nothing replaced"
    );

    env.cleanup().await.unwrap();
}

#[tokio::test]
async fn a_failed_replacement_rolls_back_and_drops_the_scratch_database() {
    let env = seeded_env().await;
    backup(&env).await;
    // The target now refuses some of the backup's rows (same columns, a new
    // constraint): the COPY into it fails after the rows were deleted, in
    // the middle of the replacement.
    execute(
        &env.source(),
        "DELETE FROM invoice_lines WHERE id % 2 = 0; \
         ALTER TABLE invoice_lines ADD CONSTRAINT only_odd_ids CHECK (id % 2 = 1)",
    )
    .await;
    let damaged = content(&env.source(), "invoice_lines", "id").await;

    let before = databases(&env).await;
    let err = restore(&env, "invoice_lines").await.unwrap_err();
    assert_no_scratch(&before, &databases(&env).await);
    assert!(matches!(err, TableRestoreError::Postgres(_)), "{err:?}");
    assert_eq!(
        content(&env.source(), "invoice_lines", "id").await,
        damaged,
        "the failed replacement rolled back: the damaged rows are still there"
    );

    // A column the backup's rows carry is gone: refused before anything is
    // touched, naming the difference.
    execute(
        &env.source(),
        "ALTER TABLE invoice_lines DROP CONSTRAINT only_odd_ids; ALTER TABLE invoice_lines DROP COLUMN description",
    )
    .await;
    let damaged = content(&env.source(), "invoice_lines", "id").await;
    let err = restore(&env, "invoice_lines").await.unwrap_err();
    assert_no_scratch(&before, &databases(&env).await);
    let TableRestoreError::DefinitionDiffers { differences, .. } = &err else {
        panic!("{err:?}");
    };
    assert!(differences.iter().any(|d| d.contains("description")), "{err}");
    assert_eq!(content(&env.source(), "invoice_lines", "id").await, damaged);

    env.cleanup().await.unwrap();
}

#[tokio::test]
async fn a_table_outside_public_is_restored_even_with_a_public_namesake() {
    let env = seeded_env().await;
    let source = env.source();
    execute(
        &source,
        "CREATE SCHEMA archive;
         CREATE TABLE archive.invoice_lines (id bigint PRIMARY KEY, note text NOT NULL);
         INSERT INTO archive.invoice_lines SELECT g, 'archived ' || g FROM generate_series(1, 50) g",
    )
    .await;
    backup(&env).await;
    let backed_up = content(&source, "archive.invoice_lines", "id").await;
    let public_lines = content(&source, "invoice_lines", "id").await;
    execute(&source, "DELETE FROM archive.invoice_lines WHERE id > 10").await;

    let before = databases(&env).await;
    let report = restore(&env, "archive.invoice_lines").await.unwrap();
    assert_no_scratch(&before, &databases(&env).await);

    assert_eq!(report.table, "archive.invoice_lines");
    assert_eq!(report.rows_before, Some(10));
    assert_eq!(report.rows_restored, 50);
    assert_eq!(content(&source, "archive.invoice_lines", "id").await, backed_up);
    assert_eq!(
        content(&source, "invoice_lines", "id").await,
        public_lines,
        "the namesake is untouched"
    );

    env.cleanup().await.unwrap();
}

#[tokio::test]
async fn the_audit_chain_comes_back_byte_for_byte() {
    let env = seeded_env().await;
    let source = env.source();
    backup(&env).await;
    let backed_up = content(&source, "audit_logs", "id").await;
    assert!(backed_up.0 > 0, "the fixture has audit rows");
    // Tampering: hashes overwritten, rows removed.
    execute(
        &source,
        "UPDATE audit_logs SET hash = 'forged' WHERE id % 5 = 0; DELETE FROM audit_logs WHERE id % 7 = 0",
    )
    .await;

    let before = databases(&env).await;
    let report = restore(&env, "public.audit_logs").await.unwrap();
    assert_no_scratch(&before, &databases(&env).await);
    assert_eq!(report.rows_restored as i64, backed_up.0);
    assert_eq!(content(&source, "audit_logs", "id").await, backed_up);

    env.cleanup().await.unwrap();
}
