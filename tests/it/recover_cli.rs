//! `drillbook recover` through the real binary (issue 13 item 2): a base
//! backup and archived WAL of a real archiving server in a real S3 API,
//! recovered into a data directory the test names, paused at a time for
//! inspection (`drillbook verify` against it), refused a target behind the
//! point reached, moved forward to an LSN, promoted. Then what it must
//! refuse, leaving nothing behind, and what it says when WAL is missing.

use std::path::Path;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use drillbook::env::ArchivingEnvironment;
use drillbook::fixtures::{FixtureSpec, Profile};
use drillbook::pg::{ConnInfo, DataDirServer, PgBinaries};
use drillbook::pitr::data_dir::incoming_path;
use drillbook::wal::switch_and_wait_archived;
use sqlx::Connection;

use crate::common::{BIN, connect, drillbook, exec, json, output_text};

const ARCHIVED_WITHIN: Duration = Duration::from_secs(60);

/// An archiving server with the fixture ledger, a base backup taken with
/// `drillbook basebackup`, and the table `marks`: row 1 committed before
/// `before`, row 2 after it, at `lsn_after_2` — all archived.
struct Archive {
    env: ArchivingEnvironment,
    before: String,
    lsn_after_2: String,
    dir: tempfile::TempDir,
}

impl Archive {
    async fn start() -> Self {
        let env = ArchivingEnvironment::start(Path::new(BIN), Duration::from_secs(60))
            .await
            .unwrap();
        drillbook::fixtures::seed(
            &env.source(),
            FixtureSpec {
                profile: Profile::Small,
                seed: 31,
                until: "2026-06-30T12:00:00Z".parse().unwrap(),
            },
        )
        .await
        .unwrap();
        let bucket = env.store().config().location();
        let out = drillbook(
            env.store(),
            &["basebackup", "--admin-url", &env.admin().url(), "--bucket", &bucket],
        );
        assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
        let mut conn = connect(&env.source()).await;
        exec(
            &mut conn,
            "CREATE TABLE marks (id int PRIMARY KEY); INSERT INTO marks VALUES (1)",
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
        tokio::time::sleep(Duration::from_millis(300)).await;
        exec(&mut conn, "INSERT INTO marks VALUES (2)").await;
        let lsn_after_2: String = sqlx::query_scalar("SELECT pg_current_wal_insert_lsn()::text")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        switch_and_wait_archived(&mut connect(&env.admin()).await, ARCHIVED_WITHIN)
            .await
            .unwrap();
        Self {
            env,
            before,
            lsn_after_2,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn recover(&self, args: &[&str]) -> std::process::Output {
        let bucket = self.env.store().config().location();
        let mut all = vec!["recover", "--bucket", &bucket];
        all.extend_from_slice(args);
        drillbook(self.env.store(), &all)
    }

    fn pgdata(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// The recovered server in `pgdata` as the source's superuser, over TCP.
    fn recovered(&self, port: u64, database: &str) -> ConnInfo {
        let mut admin = self.env.admin().with_database(database);
        admin.host = "127.0.0.1".into();
        admin.port = u16::try_from(port).unwrap();
        admin
    }

    async fn stop(&self, pgdata: &str) {
        DataDirServer::open(&PgBinaries::discover().unwrap(), Path::new(pgdata))
            .unwrap()
            .stop()
            .await
            .unwrap();
    }

    async fn cleanup(self) {
        self.env.cleanup().await.unwrap();
    }
}

async fn marks(target: &ConnInfo) -> Vec<i32> {
    let mut conn = connect(target).await;
    let ids = sqlx::query_scalar("SELECT id FROM marks ORDER BY id")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    ids
}

async fn in_recovery(target: &ConnInfo) -> bool {
    let mut conn = connect(target).await;
    let answer = sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    answer
}

/// Whether a `postgres` runs with `pgdata` on its command line.
fn server_runs_on(pgdata: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|entry| {
        std::fs::read(entry.path().join("cmdline")).is_ok_and(|cmdline| {
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            args.first().is_some_and(|p| p.ends_with(b"postgres")) && args.contains(&pgdata.as_bytes())
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_pauses_for_inspection_moves_forward_and_promotes() {
    let archive = Archive::start().await;
    let pgdata = archive.pgdata("recovered");

    let out = archive.recover(&["--pgdata", &pgdata, "--to-time", &archive.before, "--pause", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let paused = json(&out);
    assert_eq!(paused["state"], "paused", "{paused:#}");
    assert_eq!(paused["timeline"], 1, "{paused:#}");
    assert!(
        paused["recovery_stop"]
            .as_str()
            .unwrap()
            .contains("recovery stopping before commit"),
        "{paused:#}"
    );
    let port = paused["port"].as_u64().unwrap();
    let app = archive.recovered(port, drillbook::env::APP_DATABASE);
    assert_eq!(marks(&app).await, [1], "paused before row 2's commit");
    assert!(in_recovery(&app).await, "paused, still in recovery (read-only)");
    // The operator's check while paused: the integrity suite, read-only.
    let out = drillbook(archive.env.store(), &["verify", "--database-url", &app.url()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "verify on the paused recovery: {}",
        output_text(&out)
    );

    // Backwards is refused and leaves the paused server as it was.
    let out = archive.recover(&["--pgdata", &pgdata, "--to-time", "2026-06-30T12:00:00Z", "--pause"]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("behind the point already reached"),
        "{}",
        output_text(&out)
    );
    assert_eq!(marks(&app).await, [1], "a refused move changes nothing");

    // Forward, to just after row 2.
    let out = archive.recover(&[
        "--pgdata",
        &pgdata,
        "--to-lsn",
        &archive.lsn_after_2,
        "--pause",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert_eq!(json(&out)["state"], "paused");
    assert_eq!(marks(&app).await, [1, 2], "moved forward past row 2");

    let out = drillbook(
        archive.env.store(),
        &["recover", "--pgdata", &pgdata, "--promote", "--json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let promoted = json(&out);
    assert_eq!(promoted["state"], "promoted", "{promoted:#}");
    assert_eq!(promoted["timeline"], 2, "a new timeline: {promoted:#}");
    assert!(!in_recovery(&app).await, "promoted: out of recovery");
    let mut conn = connect(&app).await;
    exec(&mut conn, "INSERT INTO marks VALUES (3)").await;
    conn.close().await.unwrap();
    let out = drillbook(archive.env.store(), &["recover", "--pgdata", &pgdata, "--promote"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "promoting twice is refused: {}",
        output_text(&out)
    );

    // The source never noticed: its rows and its archiving are as before.
    assert_eq!(marks(&archive.env.source()).await, [1, 2]);
    archive.stop(&pgdata).await;
    archive.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_refuses_bad_input_and_names_the_furthest_point_when_wal_is_missing() {
    let archive = Archive::start().await;
    let fresh = archive.pgdata("fresh");
    let refusals: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--to-time".into(), "2099-01-01T00:00:00Z".into()],
            "is in the future",
        ),
        (
            vec!["--to-time".into(), "2020-01-01T00:00:00Z".into()],
            "before the oldest base backup",
        ),
        (vec!["--to-time".into(), "yesterday".into()], "not a time with a zone"),
        (vec!["--to-lsn".into(), "nowhere".into()], "is not a WAL position"),
        (vec!["--to-latest".into(), "--pause".into()], "--pause needs a target"),
    ];
    for (args, says) in refusals {
        let mut all = vec!["--pgdata", fresh.as_str()];
        all.extend(args.iter().map(String::as_str));
        let out = archive.recover(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", output_text(&out));
        assert!(
            output_text(&out).contains(says),
            "{args:?} must say {says:?}: {}",
            output_text(&out)
        );
        assert!(!Path::new(&fresh).exists(), "{args:?} left {fresh}");
        assert!(!incoming_path(Path::new(&fresh)).exists(), "{args:?} left a download");
    }

    // A non-empty directory is never written to.
    let occupied = archive.pgdata("occupied");
    std::fs::create_dir(&occupied).unwrap();
    std::fs::write(Path::new(&occupied).join("notes.txt"), "mine").unwrap();
    let out = archive.recover(&["--pgdata", &occupied, "--to-latest"]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(output_text(&out).contains("is not empty"), "{}", output_text(&out));
    assert_eq!(std::fs::read_dir(&occupied).unwrap().count(), 1);
    assert_eq!(
        std::fs::read_to_string(Path::new(&occupied).join("notes.txt")).unwrap(),
        "mine"
    );

    // As root the server runs as the server user, who must reach the directory.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let private = archive.dir.path().join("private");
        std::fs::create_dir(&private).unwrap();
        std::fs::set_permissions(&private, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        let inside = private.join("pgdata").display().to_string();
        let out = archive.recover(&["--pgdata", &inside, "--to-latest"]);
        assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
        assert!(
            output_text(&out).contains("is not searchable by it"),
            "{}",
            output_text(&out)
        );
        assert_eq!(
            std::fs::read_dir(&private).unwrap().count(),
            0,
            "nothing was made there"
        );
    }

    // A port in use, a bucket that does not exist, promoting a stranger's directory.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let out = archive.recover(&["--pgdata", &fresh, "--to-latest", "--port", &port]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(output_text(&out).contains("already in use"), "{}", output_text(&out));
    drop(listener);
    let out = drillbook(
        archive.env.store(),
        &[
            "recover",
            "--bucket",
            "s3://no-such-bucket",
            "--pgdata",
            &fresh,
            "--to-latest",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    let out = drillbook(archive.env.store(), &["recover", "--pgdata", &occupied, "--promote"]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("holds no drillbook recovery"),
        "{}",
        output_text(&out)
    );
    assert!(!Path::new(&fresh).exists());

    // The WAL segment holding row 2 gone: recovery says how far it got, and keeps nothing.
    let lsn = drillbook::wal::parse_lsn(&archive.lsn_after_2).unwrap();
    let segment = format!("00000001{:08X}{:08X}", lsn >> 32, (lsn & 0xFFFF_FFFF) >> 24);
    let removed = archive
        .env
        .store()
        .list("wal/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .find(|k| k.contains(&segment))
        .unwrap_or_else(|| panic!("segment {segment} is archived"));
    archive.env.store().delete(&removed).await.unwrap();
    let out = archive.recover(&["--pgdata", &fresh, "--to-lsn", &archive.lsn_after_2]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("The furthest reachable point is"),
        "without {removed}: {}",
        output_text(&out)
    );
    assert!(!Path::new(&fresh).exists(), "a recovery short of its target is removed");
    assert!(!incoming_path(Path::new(&fresh)).exists());
    assert!(!server_runs_on(&fresh), "and its server stopped");
    archive.cleanup().await;
}
