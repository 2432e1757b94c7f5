//! Decision matrix: "Complete infrastructure loss — Full restore from backup
//! — < 4 hours".
//!
//! Seed the ledger, back it up to S3, keep writing, then lose the primary
//! server entirely (killed, data directory deleted). Bring up a new server,
//! restore the newest backup from S3 exactly as the playbook's section 3.2
//! does, run the playbook's checks, and assert RTO and RPO. The rows written
//! after the backup are the loss: the drill proves the restore holds exactly
//! what the manifest says and nothing written later.

use std::time::Duration;

use drillbook::backup::{backup_database, table_facts};
use drillbook::drill::{Drill, Scenario};
use drillbook::env;
use drillbook::fixtures::{CRITICAL_TABLES, FixtureSpec, Profile};
use drillbook::playbook::PlaybookAnswers;
use drillbook::restore::{RestoreOptions, restore_database};
use drillbook::workload::write_activity;
use sqlx::{Connection, PgConnection};

/// Writes after the backup: the data this drill expects to lose.
const LATE_WRITES: usize = 25;

#[tokio::test]
async fn complete_infrastructure_loss() {
    // The playbook backs up daily, so up to a day of writes may be lost.
    let mut drill = Drill::new("complete-infrastructure-loss", Scenario::CompleteInfrastructureLoss)
        .expect("drill targets")
        .with_rpo_target(Duration::from_secs(24 * 3600));
    let profile = drill_profile();
    drill.property("dataset_profile", profile);

    let mut env = drill.phase("bring up environment", env::from_env()).await.unwrap();
    let seeded = drill
        .phase("seed fixture ledger", env.seed(FixtureSpec::ending_now(profile, 42)))
        .await
        .unwrap();
    drill.property("audit_logs_rows", seeded.rows_in("audit_logs").unwrap_or(0));

    let (bins, source, admin) = (env.binaries().clone(), env.source(), env.primary().admin());
    // Traffic up to the backup, so the backup's newest row is recent.
    drill
        .phase("application writes", write_activity(&source, 5))
        .await
        .unwrap();
    let backup = drill
        .phase(
            "daily backup to S3",
            backup_database(&bins, &source, Some(&admin), env.store()),
        )
        .await
        .unwrap();
    drill.property("dump_bytes", backup.manifest.dump.bytes);
    drill.property("backup_stamp", &backup.manifest.stamp);

    let late = drill
        .phase("application keeps writing", write_activity(&source, LATE_WRITES))
        .await
        .unwrap();

    drill.incident("primary database server lost: postgres killed, data directory deleted");
    drill.phase("destroy primary", env.destroy_primary()).await.unwrap();

    let replacement = drill
        .phase("provision replacement server", env.provision_cluster())
        .await
        .unwrap();
    let restored = drill
        .phase(
            "restore newest backup from S3 (playbook 3.2)",
            restore_database(&bins, &replacement, env.store(), &RestoreOptions::default()),
        )
        .await
        .unwrap();
    drill.check(
        "restored backup is the newest",
        restored.manifest.stamp == backup.manifest.stamp,
        &restored.manifest.stamp,
    );

    let answers = drill
        .phase(
            "playbook checks (3.2 step 4, 4.1-4.5)",
            PlaybookAnswers::collect(&restored.target),
        )
        .await
        .unwrap();
    let problems = answers.problems();
    drill.check("playbook checks pass", problems.is_empty(), problems.join("; "));
    drill.check(
        "4.1 broken links = 0",
        answers.broken_links == 0,
        answers.broken_links.to_string(),
    );
    for table in CRITICAL_TABLES {
        let count = answers
            .critical_counts
            .iter()
            .find(|(t, _)| t == table)
            .map_or(-1, |(_, n)| *n);
        let expected = backup.manifest.rows_in(table).map_or(-1, |n| n as i64);
        drill.check(
            &format!("{table} count matches manifest"),
            count == expected,
            format!("{count} restored, {expected} in manifest"),
        );
    }
    drill.verified();

    // RPO: the newest data that survived, against what the manifest promised.
    let mut conn = PgConnection::connect_with(&restored.target.connect_options())
        .await
        .unwrap();
    let facts = table_facts(&mut conn).await.unwrap();
    let newest_surviving = facts
        .values()
        .filter_map(|t| t.newest_created_at)
        .max()
        .expect("restored data has timestamps");
    drill.newest_surviving_data(newest_surviving);
    drill.check(
        "newest surviving data is the backup's newest",
        Some(newest_surviving) == backup.manifest.newest_data(),
        format!(
            "{newest_surviving} restored, {:?} in manifest",
            backup.manifest.newest_data()
        ),
    );
    let late_ids: Vec<i64> = late.audit_ids.clone();
    let (late_survivors,): (i64,) = sqlx::query_as("SELECT count(*) FROM audit_logs WHERE id = ANY($1)")
        .bind(&late_ids)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    drill.check(
        "writes after the backup are exactly the loss",
        late_survivors == 0 && late.newest > newest_surviving,
        format!(
            "{late_survivors} of {LATE_WRITES} late writes present; newest late write {}",
            late.newest
        ),
    );
    conn.close().await.unwrap();
    drill.property("lost_audit_rows", LATE_WRITES);

    env.cleanup().await.unwrap();
    drill.finish().expect("drill report written").assert_passed();
}

/// `DRILL_PROFILE=small|medium|large`, small by default.
fn drill_profile() -> Profile {
    match std::env::var("DRILL_PROFILE").as_deref() {
        Err(_) | Ok("") | Ok("small") => Profile::Small,
        Ok("medium") => Profile::Medium,
        Ok("large") => Profile::Large,
        Ok(other) => panic!("DRILL_PROFILE={other:?} is not a profile; use small, medium or large"),
    }
}
