//! The integrity check suite against a real PostgreSQL: a clean fixture has
//! no findings; each check finds the fault planted for it with plain SQL;
//! a missing table is a finding, not a crash; the suite cannot write;
//! restore fidelity makes the grants `--no-acl` drops visible. Reports are
//! snapshotted (human and JSON) for a clean and a corrupted fixture.

use std::collections::BTreeSet;

use drillbook::backup::backup_database;
use drillbook::env::EmbeddedEnvironment;
use drillbook::fixtures::{FixtureSpec, Profile};
use drillbook::integrity::anchor::Anchor;
use drillbook::integrity::fidelity::{compare_acl, compare_with_manifest};
use drillbook::integrity::suite::connect_read_only;
use drillbook::integrity::{CheckName, CheckStatus, IntegrityReport, SuiteOptions, run_suite};
use drillbook::restore::{GrantsMode, RestoreOptions, restore_database};
use sqlx::{Connection, PgConnection};

use crate::common::{connect, exec};

/// Deterministic rows: the same data (ids, times, hashes) on every run.
fn fixed_spec() -> FixtureSpec {
    FixtureSpec {
        profile: Profile::Small,
        seed: 7,
        until: "2026-06-30T12:00:00Z".parse().unwrap(),
    }
}

/// The id of the n-th audit row in chain order (0-based).
async fn chain_id(conn: &mut PgConnection, n: i64) -> i64 {
    sqlx::query_scalar("SELECT id FROM audit_logs ORDER BY created_at, id OFFSET $1 LIMIT 1")
        .bind(n)
        .fetch_one(conn)
        .await
        .unwrap()
}

fn keys(report: &IntegrityReport, check: CheckName) -> BTreeSet<String> {
    report.findings_of(check).iter().filter_map(|f| f.key.clone()).collect()
}

fn set(keys: &[i64]) -> BTreeSet<String> {
    keys.iter().map(i64::to_string).collect()
}

fn with_anchor(anchor: &Anchor) -> SuiteOptions {
    SuiteOptions {
        anchor: Some(anchor.clone()),
        ..SuiteOptions::default()
    }
}

#[tokio::test]
async fn clean_fixture_has_no_findings_and_each_check_finds_its_planted_fault() {
    let env = EmbeddedEnvironment::start().await.unwrap();
    env.seed(fixed_spec()).await.unwrap();
    let target = env.source();
    let anchor = Anchor::capture(&target).await.unwrap();
    assert_eq!(anchor.rows, 20_000);

    let clean = run_suite(&target, &with_anchor(&anchor)).await.unwrap();
    assert_eq!(clean.findings, vec![], "{}", clean.human(false));
    assert!(clean.is_clean());
    assert_eq!(clean.playbook_4_1_broken_links, Some(0));
    assert_eq!(clean.audit_rows, Some(20_000));
    assert_eq!(clean.checks.len(), 14);
    assert!(
        clean.checks.iter().all(|c| c.status == CheckStatus::Passed),
        "{}",
        clean.human(false)
    );

    let mut conn = connect(&target).await;
    let ids: Vec<i64> = {
        let mut ids = Vec::new();
        for n in [1_000, 3_000, 5_000, 7_000, 9_000, 11_000] {
            ids.push(chain_id(&mut conn, n).await);
        }
        ids
    };
    let (content, null_hash, genesis, duplicate, moved, link) = (ids[0], ids[1], ids[2], ids[3], ids[4], ids[5]);
    let next_of_null: i64 = chain_id(&mut conn, 3_001).await;
    // ChainContent: a payload edited without re-hashing.
    exec(
        &mut conn,
        &format!("UPDATE audit_logs SET payload = payload || ' ' WHERE id = {content}"),
    )
    .await;
    // ChainNullHash: a hash set NULL (4.1 skips such rows).
    exec(
        &mut conn,
        &format!("UPDATE audit_logs SET hash = NULL WHERE id = {null_hash}"),
    )
    .await;
    // ChainGenesis: a forged GENESIS mid-chain (4.1 skips GENESIS rows).
    exec(
        &mut conn,
        &format!("UPDATE audit_logs SET previous_hash = 'GENESIS' WHERE id = {genesis}"),
    )
    .await;
    // ChainDuplicateHash: a row given its predecessor's hash.
    exec(
        &mut conn,
        &format!(
            "UPDATE audit_logs SET hash = (SELECT hash FROM audit_logs WHERE id = {content}) WHERE id = {duplicate}"
        ),
    )
    .await;
    // ChainOrdering: a row moved to just before its predecessor in time, so
    // the predecessor now follows the row that links to it.
    let moved_prev = chain_id(&mut conn, 8_999).await;
    exec(
        &mut conn,
        &format!(
            "UPDATE audit_logs SET created_at = (SELECT created_at FROM audit_logs WHERE id = {moved_prev}) \
             - interval '1 microsecond' WHERE id = {moved}"
        ),
    )
    .await;
    // ChainLinks: a row that no longer links to its predecessor.
    exec(
        &mut conn,
        &format!("UPDATE audit_logs SET previous_hash = 'x' || previous_hash WHERE id = {link}"),
    )
    .await;
    // ChainAnchor: the newest rows deleted (what no in-database check sees).
    exec(
        &mut conn,
        "DELETE FROM audit_logs WHERE id IN (SELECT id FROM audit_logs ORDER BY created_at DESC, id DESC LIMIT 3)",
    )
    .await;

    // The SQL checks, each on its own rows.
    let (run_id, line_id, invoice_id, tenant_id): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT min(run_id) FROM billing_runs),
                il.id, il.invoice_id, (SELECT min(id) FROM tenants)
         FROM invoice_lines il WHERE il.deleted_at IS NULL AND il.line_type = 'charge' ORDER BY il.id LIMIT 1",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    exec(
        &mut conn,
        &format!("UPDATE billing_runs SET status = 'running' WHERE run_id = {run_id}"),
    )
    .await;
    exec(
        &mut conn,
        &format!("UPDATE invoice_lines SET amount = amount + 5 WHERE id = {line_id}"),
    )
    .await;
    exec(
        &mut conn,
        &format!(
            "INSERT INTO ledger_entries (id, tenant_id, type, amount, reference)
             SELECT max(id) + 1, {tenant_id}, 'charge', 20000, 'planted' FROM ledger_entries"
        ),
    )
    .await;
    exec(&mut conn, "ALTER TABLE payments DISABLE ROW LEVEL SECURITY").await;
    // Orphans need the foreign keys bypassed.
    exec(
        &mut conn,
        "SET session_replication_role = replica;
         INSERT INTO invoice_lines (id, invoice_id, line_type, amount, description)
           SELECT max(id) + 1, 999999999, 'charge', 10, 'orphan' FROM invoice_lines;
         INSERT INTO ledger_entries (id, tenant_id, type, amount, reference)
           SELECT max(id) + 1, 999999999, 'payment', 1, 'orphan' FROM ledger_entries;
         SET session_replication_role = origin;",
    )
    .await;
    let (orphan_line, orphan_entry): (i64, i64) =
        sqlx::query_as("SELECT (SELECT max(id) FROM invoice_lines), (SELECT max(id) FROM ledger_entries)")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    conn.close().await.unwrap();

    let report = run_suite(&target, &with_anchor(&anchor)).await.unwrap();
    let shown = report.human(false);
    assert!(
        keys(&report, CheckName::ChainContent).contains(&content.to_string()),
        "{shown}"
    );
    assert_eq!(keys(&report, CheckName::ChainNullHash), set(&[null_hash]), "{shown}");
    assert_eq!(keys(&report, CheckName::ChainGenesis), set(&[genesis]), "{shown}");
    assert!(
        keys(&report, CheckName::ChainDuplicateHash).contains(&content.min(duplicate).to_string()),
        "{shown}"
    );
    assert_eq!(keys(&report, CheckName::ChainOrdering), set(&[moved_prev]), "{shown}");
    // The move is in the row's content too (created_at is hashed).
    assert!(
        keys(&report, CheckName::ChainContent).contains(&moved.to_string()),
        "{shown}"
    );
    let links = keys(&report, CheckName::ChainLinks);
    assert!(links.contains(&link.to_string()), "{shown}");
    assert!(
        links.contains(&next_of_null.to_string()),
        "NULL hash breaks the next link: {shown}"
    );
    assert_eq!(keys(&report, CheckName::ChainAnchor), set(&[anchor.head_id]), "{shown}");
    assert_eq!(keys(&report, CheckName::BillingRuns), set(&[run_id]), "{shown}");
    assert_eq!(keys(&report, CheckName::InvoiceBalance), set(&[invoice_id]), "{shown}");
    assert_eq!(
        keys(&report, CheckName::LedgerConsistency),
        set(&[tenant_id]),
        "{shown}"
    );
    assert_eq!(
        keys(&report, CheckName::OrphanedInvoiceLines),
        set(&[orphan_line]),
        "{shown}"
    );
    assert_eq!(
        keys(&report, CheckName::OrphanedLedgerEntries),
        set(&[orphan_entry]),
        "{shown}"
    );
    let rls: Vec<String> = report
        .findings_of(CheckName::RlsEnabled)
        .iter()
        .map(|f| f.table.clone())
        .collect();
    assert_eq!(rls, vec!["payments".to_owned()], "{shown}");
    assert!(
        report.findings_of(CheckName::CriticalTablesPresent).is_empty(),
        "{shown}"
    );

    // The playbook's 4.1 ran verbatim in the same snapshot and counts exactly
    // our chain_links findings; everything else in the chain it missed.
    assert_eq!(
        report.playbook_4_1_broken_links,
        Some(report.findings_of(CheckName::ChainLinks).len() as i64),
        "{shown}"
    );
    let missed: BTreeSet<CheckName> = report.missed_by_playbook().iter().map(|f| f.check).collect();
    assert_eq!(
        missed,
        BTreeSet::from([
            CheckName::ChainContent,
            CheckName::ChainGenesis,
            CheckName::ChainNullHash,
            CheckName::ChainDuplicateHash,
            CheckName::ChainOrdering,
            CheckName::ChainAnchor,
        ]),
        "{shown}"
    );
    assert!(shown.contains("4.1 alone would have missed"), "{shown}");
    env.cleanup().await.unwrap();
}

#[tokio::test]
async fn a_missing_table_is_a_finding_and_its_checks_do_not_run() {
    let env = EmbeddedEnvironment::start().await.unwrap();
    env.seed(fixed_spec()).await.unwrap();
    let target = env.source();
    let mut conn = connect(&target).await;
    exec(&mut conn, "DROP TABLE billing_runs; DELETE FROM payments;").await;
    conn.close().await.unwrap();

    let report = run_suite(&target, &SuiteOptions::default()).await.unwrap();
    let shown = report.human(false);
    let critical: Vec<(String, String)> = report
        .findings_of(CheckName::CriticalTablesPresent)
        .iter()
        .map(|f| (f.table.clone(), f.detail.clone()))
        .collect();
    assert_eq!(
        critical,
        vec![
            (
                "billing_runs".to_owned(),
                "table billing_runs does not exist".to_owned()
            ),
            ("payments".to_owned(), "table payments is empty".to_owned()),
        ],
        "{shown}"
    );
    let billing = report.outcome(CheckName::BillingRuns).unwrap();
    assert_eq!(billing.status, CheckStatus::NotRun, "{shown}");
    assert_eq!(billing.reason.as_deref(), Some("table billing_runs does not exist"));
    // Everything else still ran.
    assert_eq!(
        report.outcome(CheckName::ChainContent).unwrap().status,
        CheckStatus::Passed
    );
    assert_eq!(
        report.outcome(CheckName::InvoiceBalance).unwrap().status,
        CheckStatus::Passed
    );
    assert!(!report.is_clean());

    // No audit_logs at all: the chain checks do not run, no crash.
    let mut conn = connect(&target).await;
    exec(&mut conn, "DROP TABLE audit_logs").await;
    conn.close().await.unwrap();
    let report = run_suite(&target, &SuiteOptions::default()).await.unwrap();
    assert_eq!(
        report.outcome(CheckName::ChainLinks).unwrap().status,
        CheckStatus::NotRun
    );
    assert_eq!(
        report.outcome(CheckName::ChainDuplicateHash).unwrap().status,
        CheckStatus::NotRun
    );
    assert_eq!(report.playbook_4_1_broken_links, None);
    assert!(
        report
            .findings_of(CheckName::CriticalTablesPresent)
            .iter()
            .any(|f| f.detail == "table audit_logs does not exist")
    );
    env.cleanup().await.unwrap();
}

#[tokio::test]
async fn the_suite_connection_cannot_write_or_create_temp_objects() {
    let env = EmbeddedEnvironment::start().await.unwrap();
    env.seed(fixed_spec()).await.unwrap();
    let target = env.source();
    let mut conn = connect_read_only(&target).await.unwrap();
    for statement in [
        "CREATE TEMP TABLE scratch (x int)",
        "UPDATE tenants SET name = name WHERE id = 1",
        "INSERT INTO audit_logs (actor, action, entity_type, entity_id, payload) VALUES ('a', 'b', 'c', 'd', 'e')",
    ] {
        let err = sqlx::raw_sql(statement).execute(&mut conn).await.unwrap_err();
        let code = err.as_database_error().and_then(|e| e.code()).map(|c| c.into_owned());
        assert_eq!(code.as_deref(), Some("25006"), "{statement}: {err}");
    }
    conn.close().await.unwrap();
    // And a run leaves nothing behind: no temp schema objects, same row counts.
    run_suite(&target, &SuiteOptions::default()).await.unwrap();
    let mut conn = connect(&target).await;
    let temp_objects: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname LIKE 'pg_temp%'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(temp_objects, 0);
    conn.close().await.unwrap();
    env.cleanup().await.unwrap();
}

#[tokio::test]
async fn restore_fidelity_shows_the_grants_no_acl_drops_and_content_changes() {
    let env = EmbeddedEnvironment::start().await.unwrap();
    env.seed(fixed_spec()).await.unwrap();
    let source = env.source();
    let admin = env.primary().admin();
    let backup = backup_database(env.binaries(), &source, Some(&admin), env.store())
        .await
        .unwrap();
    let manifest = &backup.manifest;
    for table in drillbook::fixtures::CRITICAL_TABLES {
        let facts = &manifest.tables[&format!("public.{table}")];
        assert_eq!(facts.fingerprint.as_ref().map(String::len), Some(64), "{table}");
    }
    let anchor = manifest.anchor.clone().expect("the backup records the chain anchor");
    assert_eq!(anchor.rows, 20_000);

    // The playbook's bare `--no-acl` restore, without re-applying the grants.
    let bare = RestoreOptions {
        grants: GrantsMode::Bare,
        ..RestoreOptions::default()
    };
    let restored = restore_database(env.binaries(), &admin, env.store(), &bare)
        .await
        .unwrap();
    let target = restored.target.clone();
    assert_eq!(compare_with_manifest(&target, manifest).await.unwrap(), vec![]);

    // pg_restore --no-acl: every grant to immoflowme_app is gone; policies survive.
    let acl = compare_acl(&source, &target).await.unwrap();
    let grants: BTreeSet<(String, String)> = acl
        .iter()
        .filter(|f| f.check == CheckName::Grants)
        .map(|f| (f.table.clone(), f.key.clone().unwrap()))
        .collect();
    let expected: BTreeSet<(String, String)> = [
        "tenants",
        "monthly_invoices",
        "invoice_lines",
        "ledger_entries",
        "payments",
        "billing_runs",
        "audit_logs",
    ]
    .iter()
    .map(|t| ((*t).to_owned(), "immoflowme_app".to_owned()))
    .collect();
    assert_eq!(grants, expected, "{acl:#?}");
    assert!(acl.iter().any(|f| f.detail.contains("--no-acl")), "{acl:#?}");
    assert!(
        acl.iter().all(|f| f.check == CheckName::Grants),
        "policies survive: {acl:#?}"
    );
    // The source compared with itself: nothing (the comparison can pass).
    assert_eq!(compare_acl(&source, &source).await.unwrap(), vec![]);

    // The restored copy verifies clean against the backup's anchor.
    let report = run_suite(&target, &with_anchor(&anchor)).await.unwrap();
    assert!(report.is_clean(), "{}", report.human(false));

    // A changed row in the restored copy: same counts, another fingerprint.
    let mut conn = connect(&target).await;
    exec(
        &mut conn,
        "UPDATE tenants SET name = name || '.' WHERE id = (SELECT min(id) FROM tenants)",
    )
    .await;
    exec(&mut conn, "DROP POLICY tenant_isolation ON payments").await;
    conn.close().await.unwrap();
    let findings = compare_with_manifest(&target, manifest).await.unwrap();
    let found: Vec<(CheckName, String)> = findings.iter().map(|f| (f.check, f.table.clone())).collect();
    assert_eq!(
        found,
        vec![(CheckName::ContentFingerprint, "tenants".to_owned())],
        "{findings:#?}"
    );
    let acl = compare_acl(&source, &target).await.unwrap();
    assert!(
        acl.iter().any(|f| f.check == CheckName::Policies
            && f.table == "payments"
            && f.key.as_deref() == Some("tenant_isolation")),
        "{acl:#?}"
    );
    env.cleanup().await.unwrap();
}

#[tokio::test]
async fn report_snapshots_clean_and_corrupted() {
    let env = EmbeddedEnvironment::start().await.unwrap();
    env.seed(fixed_spec()).await.unwrap();
    let target = env.source();
    let anchor = Anchor::capture(&target).await.unwrap();
    let clean = run_suite(&target, &with_anchor(&anchor)).await.unwrap();

    let mut conn = connect(&target).await;
    let tampered = chain_id(&mut conn, 10_000).await;
    exec(
        &mut conn,
        &format!("UPDATE audit_logs SET payload = payload || '!' WHERE id = {tampered}"),
    )
    .await;
    let linked = chain_id(&mut conn, 12_000).await;
    exec(
        &mut conn,
        &format!("UPDATE audit_logs SET previous_hash = 'GENESIS' WHERE id = {linked}"),
    )
    .await;
    exec(
        &mut conn,
        "DELETE FROM audit_logs WHERE id IN (SELECT id FROM audit_logs ORDER BY created_at DESC, id DESC LIMIT 2);
         UPDATE billing_runs SET status = 'running' WHERE run_id = (SELECT min(run_id) FROM billing_runs);",
    )
    .await;
    conn.close().await.unwrap();
    let corrupted = run_suite(&target, &with_anchor(&anchor)).await.unwrap();
    assert!(!corrupted.findings.is_empty());

    insta::with_settings!({snapshot_path => concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"), prepend_module_to_snapshot => false}, {
        insta::assert_snapshot!("verify_clean_human", clean.human(false));
        insta::assert_snapshot!("verify_corrupted_human", corrupted.human(false));
        for (name, report) in [("verify_clean_json", &clean), ("verify_corrupted_json", &corrupted)] {
            insta::assert_json_snapshot!(name, report, {
                ".started_at" => "[time]",
                ".duration" => "[duration]",
                ".checks[].duration" => "[duration]",
                ".anchor.recorded_at" => "[time]",
            });
        }
    });
    env.cleanup().await.unwrap();
}
