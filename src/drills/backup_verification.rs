//! The playbook's weekly "backup verification" (section 8), through the
//! command an operator runs for it: `drillbook check`.
//!
//! A primary archives its WAL to S3 (`drillbook wal-push`) and has a base
//! backup; `drillbook backup` takes the daily dump and `drillbook anchor`
//! records the chain head, each run as the real binary. `drillbook check
//! --json` must then pass every check (exit 0). Then the backups are
//! damaged, one fault at a time, in the drill's own bucket only
//! ([`DisposableBucket`]), and each time `check` must exit 1 with exactly
//! the check that guards against that fault failing, naming it:
//!
//! | fault | failing check |
//! |---|---|
//! | an archived WAL segment deleted from the middle of the archive | `wal_archive` (the gap, by name) |
//! | bytes of an archived WAL segment flipped | `wal_archive` (damaged) |
//! | bytes of the newest dump flipped | `daily_dump` (damaged) |
//! | the daily backup stopped 30 hours ago (the newest backup re-dated) | `daily_dump` (too old) |
//!
//! Each fault is undone before the next; a last `check` passes again.
//! What each run took and what it reported go into the drill's report.
//!
//! Its own server and bucket (embedded or containers): staging's bucket
//! holds the real backups, which no drill damages.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::drill::{Drill, DrillSummary, Result, StepContext};
use crate::env::ArchivingEnvironment;
use crate::fault::archive::{
    ArchiveFault, DisposableBucket, age_newest_backup, archived_segments, damage_object, delete_archived_wal_segment,
};
use crate::playbook::Scenario;
use crate::wal::switch_and_wait_archived;

use super::steps::{Answer, EXIT_FAILED, EXIT_SUCCESS, operator_answer};

/// Long enough that the idle server switches no segment on its own while
/// the drill runs: the archive holds exactly what the drill switched.
const ARCHIVE_TIMEOUT: Duration = Duration::from_secs(300);
const ARCHIVED_WITHIN: Duration = Duration::from_secs(60);
/// Segments switched after the base backup: a gap can be cut in the middle.
const SWITCHES: usize = 3;
/// How stale the stale backup is: past check's default `--max-dump-age` (26h).
const STOPPED_FOR: Duration = Duration::from_secs(30 * 3600);

/// Every check `drillbook check` runs with `--database-url`.
const CHECKS: [&str; 5] = ["daily_dump", "base_backup", "wal_archive", "archive_lag", "anchors"];

pub async fn run() -> Result<DrillSummary> {
    run_with(&super::program()).await
}

/// [`run`] with the `drillbook` binary the server archives with and the
/// drill runs as the operator's commands (in tests,
/// `env!("CARGO_BIN_EXE_drillbook")`).
pub async fn run_with(program: &Path) -> Result<DrillSummary> {
    let mut drill = super::steps::reported_drill("backup-verification", Scenario::CompleteInfrastructureLoss)?;
    let outcome = story(&mut drill, program).await;
    drill.conclude(outcome)
}

async fn story(drill: &mut Drill, program: &Path) -> Result<()> {
    let (env, base) = super::steps::archiving_primary(drill, program, ARCHIVE_TIMEOUT).await?;
    drill.property("base_backup_stamp", &base.stamp);
    let bucket_url = env.store().config().location();
    let (source_url, admin_url) = (env.source().url(), env.admin().url());
    let store = env.store();

    let dump = drill
        .step(
            "drillbook backup (the daily dump)",
            operator_answer(
                program,
                store,
                &["backup", "--bucket", &bucket_url],
                &[("DATABASE_URL", &source_url), ("ADMIN_DATABASE_URL", &admin_url)],
                &[EXIT_SUCCESS],
            ),
        )
        .await?;
    let dump_key = dump.report["dump"]["key"]
        .as_str()
        .step("read the dump's key from drillbook backup's manifest")?
        .to_owned();
    drill.property("dump_key", &dump_key);
    drill
        .step(
            "drillbook anchor",
            operator_answer(
                program,
                store,
                &["anchor", "--bucket", &bucket_url],
                &[("DATABASE_URL", &source_url)],
                &[EXIT_SUCCESS],
            ),
        )
        .await?;
    drill
        .step("application writes, WAL segments archived", switch_segments(&env))
        .await?;

    let check = ["check", "--bucket", &bucket_url];
    let database = [("DATABASE_URL", admin_url.as_str())];
    let run_check = || operator_answer(program, store, &check, &database, &[EXIT_SUCCESS, EXIT_FAILED]);

    let healthy = drill.step("drillbook check: healthy", run_check()).await?;
    judge(drill, "healthy", &healthy, None);
    drill.property(
        "wal_segments",
        figure(&healthy.report, "wal_archive", "segments").unwrap_or(-1.0),
    );

    let bucket = DisposableBucket::archiving(&env);
    drill.incident("the backups damaged, one fault at a time, in the drill's own bucket");
    let segments = drill
        .step("list the archived WAL segments", archived_segments(&bucket))
        .await?;
    // Neither the newest (the server reports it archived: archive_lag would
    // fail too) nor one before the base backup (no longer needed).
    let middle = segments
        .len()
        .checked_sub(2)
        .map(|i| segments[i].clone())
        .step("pick a WAL segment in the middle of the archive")?;
    let faults: [(&str, &str, Incident<'_>); 4] = [
        ("deleted_wal_segment", "wal_archive", Incident::DeleteSegment(&middle)),
        ("damaged_wal_segment", "wal_archive", Incident::Damage(&middle)),
        ("damaged_dump", "daily_dump", Incident::Damage(&dump_key)),
        ("stale_backup", "daily_dump", Incident::Stale),
    ];
    for (name, failing, fault) in faults {
        let injected = drill.step(&format!("inject: {name}"), fault.inject(&bucket)).await?;
        drill.event(injected.description.clone());
        let answer = drill.step(&format!("drillbook check: {name}"), run_check()).await?;
        let named = fault.named_by(&injected);
        judge(drill, name, &answer, Some((failing, named.as_str())));
        drill.step(&format!("undo: {name}"), injected.undo(&bucket)).await?;
    }

    let after = drill.step("drillbook check: healthy again", run_check()).await?;
    judge(drill, "healthy_again", &after, None);
    drill.verified();
    // The faults hit the backups, never the database.
    drill.nothing_lost();

    env.cleanup().await.step("clean up the environment")?;
    Ok(())
}

/// One fault of the drill, on its target.
#[derive(Debug, Clone, Copy)]
enum Incident<'k> {
    DeleteSegment(&'k str),
    /// Flip bytes of this object: near its end (a WAL object's compressed
    /// stream) or at byte 100 of a dump, past its header.
    Damage(&'k str),
    Stale,
}

impl Incident<'_> {
    async fn inject(self, bucket: &DisposableBucket) -> crate::fault::Result<ArchiveFault> {
        match self {
            Self::DeleteSegment(key) => delete_archived_wal_segment(bucket, key).await,
            Self::Damage(key) => {
                let size = bucket.store().size_of(key).await?.unwrap_or(0) as usize;
                let offset = if key.starts_with(crate::wal::WAL_PREFIX) {
                    size.saturating_sub(8)
                } else {
                    100
                };
                damage_object(bucket, key, offset, 4).await
            }
            Self::Stale => age_newest_backup(bucket, STOPPED_FOR).await,
        }
    }

    /// What `check`'s problem must name: the deleted segment's file name,
    /// "damaged", or that the daily backup stopped.
    fn named_by(self, injected: &ArchiveFault) -> String {
        match self {
            Self::DeleteSegment(_) => injected
                .keys
                .first()
                .and_then(|key| key.rsplit('/').next())
                .unwrap_or_default()
                .to_owned(),
            Self::Damage(_) => "damaged".to_owned(),
            Self::Stale => "stopped".to_owned(),
        }
    }
}

/// Writes, then switches and waits for the archive, [`SWITCHES`] times.
async fn switch_segments(
    env: &ArchivingEnvironment,
) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use sqlx::Connection as _;
    let mut app = sqlx::PgConnection::connect_with(&env.source().connect_options()).await?;
    let mut admin = sqlx::PgConnection::connect_with(&env.admin().connect_options()).await?;
    for _ in 0..SWITCHES {
        sqlx::query("UPDATE tenants SET name = name").execute(&mut app).await?;
        switch_and_wait_archived(&mut admin, ARCHIVED_WITHIN).await?;
    }
    app.close().await?;
    admin.close().await?;
    Ok(())
}

/// Judges one `check` run: `expect` `None` is healthy (exit 0, every check
/// passed); `Some((failing, named))` is exit 1 with `failing` the one
/// failing check and a problem of it containing `named`. Records what the
/// run took and found.
fn judge(drill: &mut Drill, run: &str, answer: &Answer, expect: Option<(&str, &str)>) {
    drill.property(
        &format!("check_{run}_seconds"),
        format!("{:.3}", answer.elapsed.as_secs_f64()),
    );
    let failing: Vec<&str> = CHECKS
        .iter()
        .copied()
        .filter(|name| check_of(&answer.report, name).is_none_or(|c| c["ok"] != Value::Bool(true)))
        .collect();
    let findings = failing
        .iter()
        .map(|name| format!("{name}: {}", problems(&answer.report, name).join("; ")))
        .collect::<Vec<_>>()
        .join(" | ");
    drill.property(
        &format!("check_{run}_findings"),
        if findings.is_empty() { "none" } else { &findings },
    );
    match expect {
        None => {
            drill.check(
                &format!("check {run}: exit 0, every check passes"),
                answer.code == EXIT_SUCCESS && failing.is_empty(),
                format!("exit {}; failing: {findings}", answer.code),
            );
        }
        Some((expected, named)) => {
            drill.check(
                &format!("check {run}: exit 1, only {expected} fails"),
                answer.code == EXIT_FAILED && failing == [expected],
                format!("exit {}; failing: {findings}", answer.code),
            );
            let said = problems(&answer.report, expected).join("; ");
            drill.check(
                &format!("check {run}: {expected} says {named:?}"),
                said.contains(named),
                said,
            );
        }
    }
}

/// The result of check `name` in a `check --json` report.
fn check_of<'r>(report: &'r Value, name: &str) -> Option<&'r Value> {
    report["checks"].as_array()?.iter().find(|c| c["check"] == name)
}

fn problems(report: &Value, name: &str) -> Vec<String> {
    check_of(report, name)
        .and_then(|c| c["problems"].as_array())
        .map(|problems| problems.iter().filter_map(|p| p.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

fn figure(report: &Value, name: &str, figure: &str) -> Option<f64> {
    check_of(report, name)?["figures"][figure].as_f64()
}
