//! Point-in-time recovery from base backups and WAL archived to the embedded
//! S3 by `drillbook wal-push`, replayed by `drillbook wal-fetch`: the target
//! is hit exactly, and every way it cannot be is reported, never "succeeds".

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use drillbook::basebackup::take_base_backup;
use drillbook::canary::{CanaryWriter, check_canaries};
use drillbook::env::EmbeddedS3;
use drillbook::pg::{Cluster, PgBinaries};
use drillbook::pitr::{AtTarget, PitrError, PitrOptions, RecoveryTarget, recover_to};
use drillbook::store::Store;
use drillbook::wal::{self, parse_lsn, segment_name, switch_and_wait_archived};
use sqlx::{Connection, PgConnection};

const ARCHIVED_WITHIN: Duration = Duration::from_secs(60);

struct Setup {
    bins: PgBinaries,
    s3: EmbeddedS3,
    store: Store,
    primary: Cluster,
}

fn program() -> &'static Path {
    Path::new(crate::common::BIN)
}

impl Setup {
    async fn start() -> Self {
        let bins = PgBinaries::discover().unwrap();
        let s3 = EmbeddedS3::start().unwrap();
        let store = Store::connect(s3.config("pitr-test")).await;
        store.ensure_bucket().await.unwrap();
        let options = wal::archiving_options(program(), store.config(), Duration::from_secs(60)).unwrap();
        let primary = Cluster::start(&bins, options).await.unwrap();
        primary.create_database("app").await.unwrap();
        Self {
            bins,
            s3,
            store,
            primary,
        }
    }

    fn app(&self) -> drillbook::pg::ConnInfo {
        self.primary.admin().with_database("app")
    }

    async fn admin_conn(&self) -> PgConnection {
        PgConnection::connect_with(&self.primary.admin().connect_options())
            .await
            .unwrap()
    }

    fn options(&self) -> PitrOptions {
        PitrOptions {
            drillbook: program().to_path_buf(),
            password: self.primary.password().clone(),
            now: Utc::now(),
            restore_command: None,
            at_target: AtTarget::Promote,
        }
    }

    async fn cleanup(self) {
        self.primary.cleanup().await.unwrap();
        self.s3.cleanup();
    }
}

/// Waits until `n` canaries were committed after `after` (a minute at most).
async fn wait_for_canaries_after(canaries: &CanaryWriter, after: chrono::DateTime<Utc>, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while canaries.committed().iter().filter(|c| c.written_at > after).count() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "fewer than {n} canaries in a minute"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn recovery_to_a_time_keeps_every_canary_before_it_and_none_after() {
    let setup = Setup::start().await;
    let canaries = CanaryWriter::start(&setup.app(), Duration::from_millis(5))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    take_base_backup(&setup.bins, &setup.primary.admin(), &setup.store)
        .await
        .unwrap();
    // Counted, not slept: a loaded machine writes fewer canaries per second.
    wait_for_canaries_after(&canaries, Utc::now(), 30).await;
    let target = Utc::now();
    wait_for_canaries_after(&canaries, target, 30).await;
    let log = canaries.stop().await;
    switch_and_wait_archived(&mut setup.admin_conn().await, ARCHIVED_WITHIN)
        .await
        .unwrap();

    let recovered = recover_to(
        &setup.bins,
        &setup.store,
        &RecoveryTarget::Time(target),
        &setup.options(),
    )
    .await
    .unwrap();
    let report = check_canaries(
        &recovered.server.admin().with_database("app"),
        &log.committed,
        Some(target),
    )
    .await
    .unwrap();
    assert!(report.clean(), "{report:?}");
    assert!(report.surviving > 20, "{report:?}");
    assert!(report.newest_surviving.unwrap() <= target, "{report:?}");
    let after = log.committed.iter().filter(|c| c.written_at > target).count();
    assert!(
        after > 20 && report.surviving < log.committed.len(),
        "{after} canaries after the target; {report:?}"
    );
    assert!(
        recovered.stop_line.is_some(),
        "recovery stopped at the target, not at the end of WAL"
    );
    recovered.server.cleanup().await.unwrap();
    setup.cleanup().await;
}

#[tokio::test]
async fn recovery_to_a_restore_point_and_to_an_lsn() {
    let setup = Setup::start().await;
    take_base_backup(&setup.bins, &setup.primary.admin(), &setup.store)
        .await
        .unwrap();
    let mut app = PgConnection::connect_with(&setup.app().connect_options())
        .await
        .unwrap();
    sqlx::raw_sql("CREATE TABLE marks (n int PRIMARY KEY); INSERT INTO marks VALUES (1)")
        .execute(&mut app)
        .await
        .unwrap();
    let mut admin = setup.admin_conn().await;
    sqlx::query("SELECT pg_create_restore_point('before-two')")
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query("INSERT INTO marks VALUES (2)")
        .execute(&mut app)
        .await
        .unwrap();
    let lsn: String = sqlx::query_scalar("SELECT pg_current_wal_insert_lsn()::text")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    sqlx::query("INSERT INTO marks VALUES (3)")
        .execute(&mut app)
        .await
        .unwrap();
    switch_and_wait_archived(&mut admin, ARCHIVED_WITHIN).await.unwrap();

    for (target, expected) in [
        (RecoveryTarget::Name("before-two".into()), vec![1]),
        (RecoveryTarget::Lsn(lsn.clone()), vec![1, 2]),
    ] {
        let recovered = recover_to(&setup.bins, &setup.store, &target, &setup.options())
            .await
            .unwrap();
        let mut conn = PgConnection::connect_with(&recovered.server.admin().with_database("app").connect_options())
            .await
            .unwrap();
        let marks: Vec<i32> = sqlx::query_scalar("SELECT n FROM marks ORDER BY n")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        assert_eq!(marks, expected, "recovered to {target}");
        conn.close().await.unwrap();
        recovered.server.cleanup().await.unwrap();
    }
    setup.cleanup().await;
}

/// A primary with a base backup and three archived segments after it; the
/// names of those segments.
async fn three_segments_after_a_backup(setup: &Setup) -> Vec<String> {
    take_base_backup(&setup.bins, &setup.primary.admin(), &setup.store)
        .await
        .unwrap();
    let canaries = CanaryWriter::start(&setup.app(), Duration::from_millis(5))
        .await
        .unwrap();
    let mut admin = setup.admin_conn().await;
    let mut segments = Vec::new();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        segments.push(switch_and_wait_archived(&mut admin, ARCHIVED_WITHIN).await.unwrap());
    }
    canaries.stop().await;
    switch_and_wait_archived(&mut admin, ARCHIVED_WITHIN).await.unwrap();
    segments
}

#[tokio::test]
async fn a_segment_missing_from_s3_stops_recovery_at_the_gap_and_says_where() {
    let setup = Setup::start().await;
    let segments = three_segments_after_a_backup(&setup).await;
    setup.store.delete(&wal::key_for(&segments[1]).unwrap()).await.unwrap();

    let target = RecoveryTarget::Time(Utc::now());
    let err = recover_to(&setup.bins, &setup.store, &target, &setup.options())
        .await
        .unwrap_err();
    let PitrError::TargetNotReached { furthest_lsn, .. } = &err else {
        panic!("expected TargetNotReached, got {err}");
    };
    let furthest = parse_lsn(furthest_lsn.as_deref().expect("furthest point known")).unwrap();
    assert_eq!(
        segment_name(1, furthest, 16 << 20),
        segments[0],
        "stopped in the segment before the gap: {err}"
    );
    assert!(err.to_string().contains("furthest reachable point"), "{err}");
    setup.cleanup().await;
}

#[tokio::test]
async fn a_segment_with_a_bad_checksum_is_never_replayed() {
    let setup = Setup::start().await;
    let segments = three_segments_after_a_backup(&setup).await;
    let key = wal::key_for(&segments[1]).unwrap();
    let mut object = setup.store.get_bytes(&key).await.unwrap();
    let page = object.iter().position(|&b| b == b'\n').unwrap() + 2;
    object[page + 500] ^= 0x10;
    setup
        .store
        .put_bytes(&key, object, "application/octet-stream")
        .await
        .unwrap();

    let target = RecoveryTarget::Time(Utc::now());
    let err = recover_to(&setup.bins, &setup.store, &target, &setup.options())
        .await
        .unwrap_err();
    assert!(matches!(err, PitrError::ArchiveFailed { .. }), "{err}");
    assert!(
        err.to_string().contains("is corrupt"),
        "the server log names the damage: {err}"
    );
    setup.cleanup().await;
}

#[tokio::test]
async fn a_target_before_the_oldest_base_backup_is_refused() {
    let setup = Setup::start().await;
    let before = Utc::now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    take_base_backup(&setup.bins, &setup.primary.admin(), &setup.store)
        .await
        .unwrap();
    let err = recover_to(
        &setup.bins,
        &setup.store,
        &RecoveryTarget::Time(before),
        &setup.options(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, PitrError::TargetBeforeOldestBackup { .. }), "{err}");
    assert!(err.to_string().contains("before the oldest base backup"), "{err}");
    setup.cleanup().await;
}

#[tokio::test]
async fn a_target_in_the_future_is_refused() {
    let setup = Setup::start().await;
    take_base_backup(&setup.bins, &setup.primary.admin(), &setup.store)
        .await
        .unwrap();
    let future = Utc::now() + chrono::Duration::hours(1);
    let err = recover_to(
        &setup.bins,
        &setup.store,
        &RecoveryTarget::Time(future),
        &setup.options(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, PitrError::TargetInFuture { .. }), "{err}");
    setup.cleanup().await;
}

/// The read-ahead of `wal-fetch` (issue 15) changes nothing but speed: a
/// replay through the spool reaches the same point with the same data as
/// one fetching each file when asked (`--prefetch 0`), and leaves no spool.
#[tokio::test]
async fn replay_through_the_read_ahead_spool_recovers_the_same_data_as_without() {
    let setup = Setup::start().await;
    take_base_backup(&setup.bins, &setup.primary.admin(), &setup.store)
        .await
        .unwrap();
    let mut app = PgConnection::connect_with(&setup.app().connect_options())
        .await
        .unwrap();
    // About five segments of WAL after the base backup.
    sqlx::raw_sql(
        "CREATE TABLE spooled (id bigint, pad text);
         INSERT INTO spooled SELECT g, repeat(md5(g::text), 6) FROM generate_series(1, 280000) g;",
    )
    .execute(&mut app)
    .await
    .unwrap();
    app.close().await.unwrap();
    let mut admin = setup.admin_conn().await;
    let last = switch_and_wait_archived(&mut admin, ARCHIVED_WITHIN).await.unwrap();

    let program = program().display().to_string();
    let mut results = Vec::new();
    for command in [None, Some(format!("'{program}' wal-fetch --prefetch 0 %f %p"))] {
        let mut options = setup.options();
        options.restore_command = command.clone();
        let recovered = recover_to(&setup.bins, &setup.store, &RecoveryTarget::EndOfArchive, &options)
            .await
            .unwrap();
        let drillbook::pitr::RecoveredServer::Local(cluster) = &recovered.server else {
            panic!("a local recovery");
        };
        assert!(
            !cluster.data_dir().join("pg_wal").join(wal::SPOOL_DIR).exists(),
            "the spool outlived the recovery ({command:?})"
        );
        let restored = cluster.log_since(0).matches("restored log file").count();
        let mut conn = PgConnection::connect_with(&recovered.server.admin().with_database("app").connect_options())
            .await
            .unwrap();
        let content: (i64, String) =
            sqlx::query_as("SELECT count(*), md5(string_agg(id::text || pad, ',' ORDER BY id)) FROM spooled")
                .fetch_one(&mut conn)
                .await
                .unwrap();
        conn.close().await.unwrap();
        results.push((content, recovered.replayed_lsn.clone(), restored));
        recovered.server.cleanup().await.unwrap();
    }
    assert_eq!(results[0].0.0, 280_000);
    assert_eq!(results[0], results[1], "(rows, md5), replayed LSN, files restored");
    assert!(results[0].2 >= 5, "the replay read the archive: {results:?}");
    assert!(last.as_str() >= "000000010000000000000005", "{last}");
    setup.cleanup().await;
}
