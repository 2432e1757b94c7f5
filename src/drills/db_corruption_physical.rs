//! Physical corruption: bytes flipped in a relation file on disk of a stopped
//! cluster (data checksums on), as a failing disk or a bad storage layer
//! would. Detected by the page checksum failure on read and by `pg_amcheck`;
//! recovered from the base backup plus every archived WAL segment in S3,
//! which lose nothing that was archived before the damage.
//!
//! Runs on embedded and on containers, where the primary's `PGDATA` is a
//! directory of this machine mounted into its container, so the damage is
//! done the same way while the container is stopped.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use crate::canary::{CanaryWriter, check_canaries};
use crate::drill::DrillSummary;
use crate::env::APP_DATABASE;
use crate::fixtures::Profile;
use crate::pg::tools::pg_amcheck;
use crate::pitr::RecoveryTarget;
use crate::playbook::PlaybookAnswers;
use crate::playbook::Scenario;
use crate::wal::switch_and_wait_archived;
use sqlx::{Connection, PgConnection};

pub async fn run() -> DrillSummary {
    run_with(&super::program()).await
}

/// [`run`] with the `drillbook` binary the server's `archive_command` and
/// `restore_command` call (in tests, `env!("CARGO_BIN_EXE_drillbook")`).
pub async fn run_with(program: &Path) -> DrillSummary {
    let mut drill = super::steps::reported_drill("db-corruption-physical", Scenario::DbCorruptionFull)
        .expect("drill targets")
        .with_rpo_target(Duration::from_secs(3600));
    let (mut env, _) =
        super::steps::archiving_primary(&mut drill, program, Duration::from_secs(60), Profile::Small).await;
    let source = env.source();
    let canary = CanaryWriter::start(&source, Duration::from_millis(5)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let canaries = canary.stop().await;
    let mut conn = PgConnection::connect_with(&source.connect_options()).await.unwrap();
    let (file, rows): (String, i64) =
        sqlx::query_as("SELECT pg_relation_filepath('invoice_lines'), (SELECT count(*) FROM invoice_lines)")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    conn.close().await.unwrap();
    let mut admin = PgConnection::connect_with(&env.admin().connect_options())
        .await
        .unwrap();
    switch_and_wait_archived(&mut admin, Duration::from_secs(120))
        .await
        .unwrap();
    admin.close().await.unwrap();
    drill.phase("maintenance stop", env.stop_primary()).await.unwrap();

    drill.incident("storage corrupts invoice_lines on disk: bytes flipped in its first page");
    let path = env.primary_data_dir().join(&file);
    let mut relation = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    let mut bytes = [0u8; 16];
    relation.seek(SeekFrom::Start(6000)).unwrap();
    relation.read_exact(&mut bytes).unwrap();
    for b in &mut bytes {
        *b ^= 0xA5;
    }
    relation.seek(SeekFrom::Start(6000)).unwrap();
    relation.write_all(&bytes).unwrap();
    relation.sync_all().unwrap();
    drop(relation);
    drill
        .phase("start the damaged primary", env.restart_primary())
        .await
        .unwrap();
    // A restarted container may listen on another port.
    let source = env.source();

    let mut conn = PgConnection::connect_with(&source.connect_options()).await.unwrap();
    let read = sqlx::query_scalar::<_, i64>("SELECT sum(amount::numeric)::bigint FROM invoice_lines")
        .fetch_one(&mut conn)
        .await;
    let read_error = read.err().map(|e| e.to_string()).unwrap_or_default();
    let log = env.primary_log().await;
    let checksum_line = log
        .lines()
        .find(|l| l.contains("page verification failed"))
        .unwrap_or_default();
    drill.check(
        "reading the table fails its page checksum",
        read_error.contains("invalid page") && checksum_line.contains("checksum"),
        format!("{read_error}; server log: {checksum_line}"),
    );
    conn.close().await.unwrap();
    let amcheck = drill.phase("pg_amcheck", pg_amcheck(&env.bins, &source)).await.unwrap();
    drill.check(
        "pg_amcheck reports the damage",
        !amcheck.is_empty(),
        amcheck.lines().take(3).collect::<Vec<_>>().join(" | "),
    );

    let recovered = drill
        .phase(
            "recover from S3: base backup + every archived segment",
            env.recover(&RecoveryTarget::EndOfArchive),
        )
        .await
        .unwrap();
    let target = recovered.server.admin().with_database(APP_DATABASE);
    let clean = drill
        .phase("pg_amcheck on the recovered copy", pg_amcheck(&env.bins, &target))
        .await
        .unwrap();
    drill.check("pg_amcheck finds nothing", clean.is_empty(), clean);
    let answers = drill
        .phase(
            "playbook checks (3.2 step 4, 4.1-4.5)",
            PlaybookAnswers::collect(&target),
        )
        .await
        .unwrap();
    let problems = answers.problems();
    drill.check("playbook checks pass", problems.is_empty(), problems.join("; "));
    let mut conn = PgConnection::connect_with(&target.connect_options()).await.unwrap();
    let recovered_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM invoice_lines")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    drill.check(
        "every invoice line is back",
        recovered_rows == rows,
        format!("{recovered_rows} recovered, {rows} before the damage"),
    );
    let report = check_canaries(&target, &canaries.committed, None).await.unwrap();
    drill.check(
        "every canary survived",
        report.clean() && report.surviving == report.acknowledged,
        format!("{report:?}"),
    );
    drill.verified();
    // Playbook section 7: resume backups, then the post-recovery checklist.
    super::post_recovery_checklist(
        &mut drill,
        &target,
        Some((&env.bins, &recovered.server.admin(), env.store())),
    )
    .await;
    super::steps::record_replay_end(&mut drill, &recovered);
    super::steps::record_canaries(&mut drill, &report);

    recovered.server.cleanup().await.unwrap();
    env.cleanup().await.unwrap();
    drill.finish().expect("drill report written")
}
