//! The playbook's own SQL (sections 3.2 step 4, 3.3 and 4), run verbatim
//! against the fixture ledger: it gives the answers the playbook expects, and
//! each check fails when the fault it looks for is planted, so a passing
//! check is evidence rather than a query that cannot fail.

use drillbook::env::EmbeddedEnvironment;
use drillbook::fixtures::{CRITICAL_TABLES, FixtureSpec, Profile};
use drillbook::playbook::{PITR_LATEST_RECORDS, PlaybookAnswers, TextRow};
use sqlx::{Connection, PgConnection};

#[tokio::test]
async fn playbook_checks_pass_on_the_fixture_and_catch_each_planted_fault() {
    let env = EmbeddedEnvironment::start().await.unwrap();
    let seeded = env.seed(FixtureSpec::ending_now(Profile::Small, 42)).await.unwrap();
    let target = env.source();

    // The fixture passes every check with the playbook's expected answers.
    let clean = PlaybookAnswers::collect(&target).await.unwrap();
    let expected_counts: Vec<(String, i64)> = CRITICAL_TABLES
        .iter()
        .map(|t| (t.to_string(), seeded.rows_in(t).unwrap() as i64))
        .collect();
    assert_eq!(clean.critical_counts, expected_counts, "3.2 step 4");
    assert!(
        clean.critical_counts.iter().all(|(_, n)| *n > 0),
        "{:?}",
        clean.critical_counts
    );
    assert_eq!(clean.broken_links, 0, "4.1");
    assert_eq!(clean.unfinished_billing_runs, Vec::<TextRow>::new(), "4.2");
    assert_eq!(clean.unbalanced_invoices, Vec::<TextRow>::new(), "4.3");
    assert_eq!(clean.ledger_imbalances, Vec::<TextRow>::new(), "4.4");
    assert_eq!(clean.orphans, orphans(0, 0), "4.5");
    assert_eq!(clean.problems(), Vec::<String>::new());

    let mut conn = PgConnection::connect_with(&target.connect_options()).await.unwrap();

    // 3.3: both statements answer (psql -c prints both results), each with
    // the newest row of its table as psql would print it in this session.
    let pitr = PITR_LATEST_RECORDS.run(&mut conn).await.unwrap();
    let (newest_audit, newest_billing): (String, String) = sqlx::query_as(
        "SELECT (SELECT max(created_at)::text FROM audit_logs), (SELECT max(created_at)::text FROM billing_runs)",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        column(&pitr, "latest_record"),
        Some(newest_audit.as_str()),
        "3.3 returned {pitr:?}"
    );
    assert_eq!(
        column(&pitr, "latest_billing"),
        Some(newest_billing.as_str()),
        "3.3 returned {pitr:?}"
    );

    // Now plant one fault at a time; each check reports its own and only it.
    // (a) 4.1: one audit row no longer links to the row before it.
    let tampered: i64 =
        sqlx::query_scalar("UPDATE audit_logs SET previous_hash = repeat('0', 64) WHERE id = 10000 RETURNING id")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    let answers = PlaybookAnswers::collect(&target).await.unwrap();
    assert_eq!(answers.broken_links, 1, "4.1 finds audit row {tampered}");
    assert_eq!(answers.problems().len(), 1, "{:?}", answers.problems());

    // (b) 4.2: a billing run stuck in 'running'.
    let stuck: i64 = sqlx::query_scalar(
        "UPDATE billing_runs SET status = 'running', completed_at = NULL
         WHERE run_id = (SELECT min(run_id) FROM billing_runs WHERE status = 'completed') RETURNING run_id",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let answers = PlaybookAnswers::collect(&target).await.unwrap();
    assert_eq!(
        answers.unfinished_billing_runs.len(),
        1,
        "{:?}",
        answers.unfinished_billing_runs
    );
    assert_eq!(
        column(&answers.unfinished_billing_runs, "run_id"),
        Some(stuck.to_string().as_str())
    );
    assert_eq!(column(&answers.unfinished_billing_runs, "status"), Some("running"));
    assert_eq!(answers.problems().len(), 2, "{:?}", answers.problems());

    // (c) 4.3: one live invoice line's amount changed.
    let unbalanced: i64 = sqlx::query_scalar(
        "UPDATE invoice_lines SET amount = amount + 1.00
         WHERE id = (SELECT min(id) FROM invoice_lines WHERE deleted_at IS NULL AND line_type = 'charge')
         RETURNING invoice_id",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let answers = PlaybookAnswers::collect(&target).await.unwrap();
    assert_eq!(
        answers.unbalanced_invoices.len(),
        1,
        "{:?}",
        answers.unbalanced_invoices
    );
    assert_eq!(
        column(&answers.unbalanced_invoices, "invoice_id"),
        Some(unbalanced.to_string().as_str())
    );
    assert_eq!(answers.problems().len(), 3, "{:?}", answers.problems());

    // (d) 4.5: an invoice line whose invoice does not exist. The foreign key
    // refuses it; only `session_replication_role = replica` (no FK triggers)
    // gets it in, as a faulty restore or manual repair could.
    let orphan_line = "INSERT INTO invoice_lines (id, invoice_id, line_type, amount, description)
                       SELECT max(id) + 1, 999999999, 'charge', 10.00, 'orphan' FROM invoice_lines";
    let refused = sqlx::raw_sql(orphan_line).execute(&mut conn).await.unwrap_err();
    assert!(refused.to_string().contains("foreign key"), "{refused}");
    let replica = format!("SET session_replication_role = replica; {orphan_line}; RESET session_replication_role");
    sqlx::raw_sql(sqlx::AssertSqlSafe(replica))
        .execute(&mut conn)
        .await
        .unwrap();
    let answers = PlaybookAnswers::collect(&target).await.unwrap();
    assert_eq!(answers.orphans, orphans(1, 0), "4.5");
    assert_eq!(
        answers.critical_counts[0],
        ("invoice_lines".to_owned(), expected_counts[0].1 + 1),
        "3.2 counts it"
    );
    assert_eq!(answers.problems().len(), 4, "{:?}", answers.problems());

    // 4.4: a tenant charged far more than paid.
    sqlx::raw_sql(
        "INSERT INTO ledger_entries (id, tenant_id, type, amount, reference)
         SELECT max(id) + 1, 1, 'charge', 20000.00, 'drill:imbalance' FROM ledger_entries",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let answers = PlaybookAnswers::collect(&target).await.unwrap();
    assert_eq!(answers.ledger_imbalances.len(), 1, "{:?}", answers.ledger_imbalances);
    assert_eq!(column(&answers.ledger_imbalances, "tenant_id"), Some("1"));

    // 4.5, second row: a ledger entry for a tenant that does not exist.
    sqlx::raw_sql(
        "SET session_replication_role = replica;
         INSERT INTO ledger_entries (id, tenant_id, type, amount, reference)
         SELECT max(id) + 1, 999999999, 'charge', 1.00, 'orphan' FROM ledger_entries;
         RESET session_replication_role",
    )
    .execute(&mut conn)
    .await
    .unwrap();

    // 3.2 step 4: an emptied critical table.
    sqlx::raw_sql("DELETE FROM payments").execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();

    let answers = PlaybookAnswers::collect(&target).await.unwrap();
    assert_eq!(answers.broken_links, 1);
    assert_eq!(answers.orphans, orphans(1, 1));
    let problems = answers.problems();
    let expected_problems = [
        "3.2 step 4: critical table payments is empty".to_owned(),
        "4.1: 1 broken links".to_owned(),
        format!("4.2: 1 billing runs neither completed nor rolled back, e.g. run_id={stuck}, status=running"),
        format!("4.3: 1 invoices whose charges and credits differ, e.g. invoice_id={unbalanced}, "),
        "4.4: 1 tenants with a ledger imbalance over 10000, e.g. tenant_id=1, ".to_owned(),
        "4.5: 1 orphaned_invoice_lines".to_owned(),
        "4.5: 1 orphaned_ledger_entries".to_owned(),
    ];
    assert_eq!(problems.len(), expected_problems.len(), "{problems:#?}");
    for (problem, expected) in problems.iter().zip(&expected_problems) {
        assert!(
            problem.starts_with(expected.as_str()),
            "{problem:?} should start with {expected:?}"
        );
    }

    env.cleanup().await.unwrap();
}

/// 4.5's two rows, as [`PlaybookAnswers::orphans`] holds them.
fn orphans(invoice_lines: i64, ledger_entries: i64) -> Vec<(String, i64)> {
    vec![
        ("orphaned_invoice_lines".to_owned(), invoice_lines),
        ("orphaned_ledger_entries".to_owned(), ledger_entries),
    ]
}

/// The value of `name` in the first row that has that column.
fn column<'a>(rows: &'a [TextRow], name: &str) -> Option<&'a str> {
    rows.iter()
        .flat_map(|row| row.iter())
        .find(|(column, _)| column == name)
        .and_then(|(_, value)| value.as_deref())
}
