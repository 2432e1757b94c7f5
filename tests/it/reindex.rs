//! Playbook section 5 step 1 (`REINDEX DATABASE`) and section 7 (the
//! post-recovery checklist) on a restored database, on a real PostgreSQL.

use chrono::Utc;
use drillbook::backup::backup_database;
use drillbook::checklist::{Checklist, Facts, Item, Status, backup_times};
use drillbook::env::EmbeddedEnvironment;
use drillbook::fixtures::{FixtureSpec, Profile};
use drillbook::integrity::{SuiteOptions, run_suite};
use drillbook::playbook::Scenario;
use drillbook::reindex::{invalid_indexes, reindex_database};
use sqlx::{Connection, PgConnection};
use std::time::Duration;

#[tokio::test]
async fn reindex_of_the_seeded_ledger_leaves_every_index_valid() {
    let env = EmbeddedEnvironment::start().await.unwrap();
    env.seed(FixtureSpec::ending_now(Profile::Small, 7)).await.unwrap();
    let report = reindex_database(&env.source(), Duration::from_secs(600)).await.unwrap();
    println!(
        "REINDEX DATABASE (small fixture): {:?} for {} indexes",
        report.duration, report.indexes
    );
    assert!(report.indexes >= 7, "the schema's primary keys at least: {report:?}");
    assert!(report.is_clean(), "{report:?}");
    assert!(!report.database.contains(env.source().password.expose()) || env.source().password.expose().is_empty());
    // The operator's command runs the same call.
    let out = crate::common::drillbook(
        env.store(),
        &["reindex", "--database-url", &env.source().url(), "--json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", crate::common::output_text(&out));
    let json = crate::common::json(&out);
    assert_eq!(json["indexes"].as_u64(), Some(report.indexes), "{json:#}");
    assert_eq!(json["invalid"], serde_json::json!([]), "{json:#}");
    env.cleanup().await.unwrap();
}

#[tokio::test]
async fn an_invalid_index_is_found_and_the_reindex_over_duplicates_fails_naming_the_database() {
    let env = EmbeddedEnvironment::start().await.unwrap();
    env.seed(FixtureSpec::ending_now(Profile::Small, 7)).await.unwrap();
    let mut conn = PgConnection::connect_with(&env.source().connect_options())
        .await
        .unwrap();
    // A unique index built concurrently over duplicated values fails and is
    // left behind invalid: what a crashed migration leaves in a backup.
    let failed = sqlx::raw_sql("CREATE UNIQUE INDEX CONCURRENTLY tenants_dup_idx ON tenants ((1))")
        .execute(&mut conn)
        .await;
    assert!(failed.is_err(), "duplicates must make the build fail");
    conn.close().await.unwrap();

    let invalid = invalid_indexes(&env.source()).await.unwrap();
    assert_eq!(invalid.len(), 1, "{invalid:?}");
    assert_eq!(
        (invalid[0].table.as_str(), invalid[0].index.as_str()),
        ("tenants", "tenants_dup_idx")
    );

    let err = reindex_database(&env.source(), Duration::from_secs(600))
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("failed to REINDEX DATABASE") && message.contains("/immoflowme"),
        "{message}"
    );
    let out = crate::common::drillbook(env.store(), &["reindex", "--database-url", &env.source().url()]);
    assert_eq!(out.status.code(), Some(2), "{}", crate::common::output_text(&out));
    assert!(
        crate::common::output_text(&out).contains("failed to REINDEX DATABASE"),
        "{}",
        crate::common::output_text(&out)
    );
    env.cleanup().await.unwrap();
}

#[tokio::test]
async fn the_checklist_of_a_recovered_database_passes_its_machine_items_and_explains_the_rest() {
    let env = EmbeddedEnvironment::start().await.unwrap();
    env.seed(FixtureSpec::ending_now(Profile::Small, 11)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut drill = crate::common::drill_in(dir.path(), "checklist_test", Scenario::CompleteInfrastructureLoss);
    drill.incident("test incident");
    let integrity = run_suite(&env.source(), &SuiteOptions::default()).await.unwrap();
    drill.verified();
    let recovered_at = Utc::now();

    // Before any new backup: "backup schedule resumed" fails.
    let timeline = drill.summary().timeline;
    let facts = |backups| Facts {
        integrity: Some(&integrity),
        recovered_at: Some(recovered_at),
        backups: Some(backups),
        timeline: &timeline,
        ..Facts::default()
    };
    let before = Checklist::evaluate(&facts(backup_times(env.store()).await.unwrap()));
    assert!(
        matches!(before.status(Item::BackupScheduleResumed), Some(Status::Failed(_))),
        "{before:?}"
    );

    backup_database(env.binaries(), &env.source(), None, env.store())
        .await
        .unwrap();
    let after = Checklist::evaluate(&facts(backup_times(env.store()).await.unwrap()));
    for item in [
        Item::CriticalTablesPresent,
        Item::AuditChainIntact,
        Item::RlsEnabled,
        Item::BackupScheduleResumed,
        Item::IncidentTimelineDocumented,
    ] {
        assert!(
            matches!(after.status(item), Some(Status::Passed(_))),
            "{item:?}: {after:?}"
        );
    }
    assert!(
        matches!(after.status(Item::ScheduledJobs), Some(Status::NotApplicable(r)) if r.contains("no cluster configured"))
    );
    assert!(after.passed());

    after.attach(&mut drill);
    let summary = drill.finish().unwrap();
    assert!(
        summary
            .checks
            .iter()
            .any(|c| c.name == "checklist: Backup schedule resumed" && c.passed)
    );
    assert!(summary.properties["checklist.stakeholders_notified"].starts_with("not applicable: "));
    summary.assert_passed();
    env.cleanup().await.unwrap();
}
