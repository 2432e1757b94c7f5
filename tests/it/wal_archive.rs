//! `drillbook wal-push` / `wal-fetch` as PostgreSQL runs them: a separate
//! process configured only through its environment, against the embedded S3.

use std::path::Path;
use std::process::{Command, Output};

use drillbook::env::EmbeddedS3;
use drillbook::store::Store;
use drillbook::wal::{self, WalArchive};

const BUCKET: &str = "wal-test";
const SEGMENT: &str = "000000010000000000000007";

fn run(s3: &Store, args: &[&str]) -> Output {
    Command::new(crate::common::BIN)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(wal::server_env(s3.config()))
        .output()
        .expect("run drillbook")
}

fn segment_bytes(marker: u8) -> Vec<u8> {
    // 16 MiB like a real segment: a few written pages, then zeros.
    let mut bytes = vec![0u8; 16 << 20];
    for (i, b) in bytes[..5 * 8192].iter_mut().enumerate() {
        *b = (i % 253) as u8 ^ marker;
    }
    bytes
}

fn write_segment(dir: &Path, marker: u8) -> std::path::PathBuf {
    let path = dir.join(SEGMENT);
    std::fs::write(&path, segment_bytes(marker)).unwrap();
    path
}

#[tokio::test]
async fn wal_push_and_fetch_behave_as_postgres_expects() {
    let s3 = EmbeddedS3::start().unwrap();
    let store = Store::connect(s3.config(BUCKET)).await;
    store.ensure_bucket().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = write_segment(dir.path(), 1);
    let path_text = path.to_str().unwrap();

    // Push, stored compressed under wal/<timeline>/<segment>.
    let pushed = run(&store, &["wal-push", path_text]);
    assert!(pushed.status.success(), "{}", String::from_utf8_lossy(&pushed.stderr));
    let key = format!("wal/00000001/{SEGMENT}");
    let stored = store.size_of(&key).await.unwrap().expect("segment archived");
    assert!(stored < 1 << 20, "zero pages elided: {stored} bytes stored");

    // The same bytes again (a retry after a crash): success.
    let again = run(&store, &["wal-push", path_text]);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));

    // Different bytes under the same name: refused, the archive unchanged.
    let other_dir = tempfile::tempdir().unwrap();
    let other = write_segment(other_dir.path(), 2);
    let refused = run(&store, &["wal-push", other.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(2));
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("refusing to overwrite archived WAL"), "{message}");

    // Fetch restores the original bytes exactly.
    let dest = dir.path().join("RECOVERYXLOG");
    let fetched = run(&store, &["wal-fetch", SEGMENT, dest.to_str().unwrap()]);
    assert!(fetched.status.success(), "{}", String::from_utf8_lossy(&fetched.stderr));
    assert!(
        std::fs::read(&dest).unwrap() == segment_bytes(1),
        "fetched bytes differ"
    );

    // A missing segment: exit 1, quietly (the normal end of the archive).
    let missing = run(
        &store,
        &["wal-fetch", "000000010000000000000099", dest.to_str().unwrap()],
    );
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        missing.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );

    // A damaged object: exit 126 (PostgreSQL aborts recovery), nothing written.
    let mut object = store.get_bytes(&key).await.unwrap();
    // A bit inside the first stored page (after the header line and its flag).
    let page = object.iter().position(|&b| b == b'\n').unwrap() + 2;
    object[page + 100] ^= 0x01;
    store.put_bytes(&key, object, "application/octet-stream").await.unwrap();
    let fresh = dir.path().join("FRESH");
    let corrupt = run(&store, &["wal-fetch", SEGMENT, fresh.to_str().unwrap()]);
    assert_eq!(corrupt.status.code(), Some(126));
    let message = String::from_utf8_lossy(&corrupt.stderr);
    assert!(
        message.contains("is corrupt") && message.contains("sha256"),
        "{message}"
    );
    assert!(!fresh.exists(), "a corrupt segment must never reach the server");

    // The library says the same.
    let archive = WalArchive::new(store.clone());
    assert_eq!(archive.list(Some(1)).await.unwrap(), vec![SEGMENT.to_owned()]);
    s3.cleanup();
}

#[test]
fn the_server_user_can_run_the_test_binary() {
    let program = Path::new(crate::common::BIN);
    drillbook::pg::Cluster::check_executable_by_server(program).unwrap();
    let hidden = tempfile::Builder::new().prefix("drillbook-private-").tempdir().unwrap();
    std::fs::set_permissions(hidden.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let copy = hidden.path().join("drillbook");
    std::fs::copy(program, &copy).unwrap();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let err = drillbook::pg::Cluster::check_executable_by_server(&copy).unwrap_err();
        assert!(err.to_string().contains("cannot execute"), "{err}");
    } else {
        // Not root: the server runs as this user, who can run its own copy.
        drillbook::pg::Cluster::check_executable_by_server(&copy).unwrap();
    }
}

/// Only a missing key is the end of the archive (1). A missing bucket or an
/// archive nobody answers for must stop recovery (126): taken as the end,
/// PostgreSQL would promote a database that silently lacks everything after.
#[tokio::test]
async fn wal_fetch_without_a_bucket_or_a_server_is_fatal_not_the_end_of_the_archive() {
    let s3 = EmbeddedS3::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("RECOVERYXLOG");
    let dest = dest.to_str().unwrap();

    let missing = Store::connect(s3.config("no-such-bucket")).await;
    let out = run(&missing, &["wal-fetch", SEGMENT, dest]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(126), "{stderr}");
    assert!(stderr.contains("\"no-such-bucket\" does not exist"), "{stderr}");
    assert!(!s3.root().join("no-such-bucket").exists(), "the bucket was created");

    // A port nobody listens on: the archive is unreachable.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut config = s3.config(BUCKET);
    config.endpoint = Some(endpoint.clone());
    let unreachable = Store::connect(config).await;
    let out = run(&unreachable, &["wal-fetch", SEGMENT, dest]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(126), "{stderr}");
    assert!(stderr.contains(SEGMENT), "{stderr}");
    assert!(!Path::new(dest).exists());
    s3.cleanup();
}

/// Synthetic segment `n` of timeline 1: 16 MiB, a few written pages, then zeros.
fn numbered_segment(n: u8) -> (String, Vec<u8>) {
    (format!("0000000100000000000000{n:02X}"), segment_bytes(n))
}

/// Archives segments `1..=count` through the library, returns them in order.
pub(crate) async fn archive_segments(store: &Store, count: u8) -> Vec<(String, Vec<u8>)> {
    let archive = WalArchive::new(store.clone());
    let dir = tempfile::tempdir().unwrap();
    let mut segments = Vec::new();
    for n in 1..=count {
        let (name, bytes) = numbered_segment(n);
        let path = dir.path().join(&name);
        std::fs::write(&path, &bytes).unwrap();
        archive.push(&path).await.unwrap();
        segments.push((name, bytes));
    }
    segments
}

/// Flips one stored bit of `name`'s archived object (its sha256 then fails).
async fn damage(store: &Store, name: &str) -> Vec<u8> {
    let key = wal::key_for(name).unwrap();
    let original = store.get_bytes(&key).await.unwrap();
    let mut object = original.clone();
    let page = object.iter().position(|&b| b == b'\n').unwrap() + 2;
    object[page + 100] ^= 0x01;
    store.put_bytes(&key, object, "application/octet-stream").await.unwrap();
    original
}

/// Names of the files in the spool (empty when it does not exist).
pub(crate) fn spool_files(spool: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(spool) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Waits (30 s at most) until the spool's prefetcher is done: no temp files
/// and `until` holds.
pub(crate) fn wait_for_spool(spool: &Path, until: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let files = spool_files(spool);
        if !files.iter().any(|f| f.contains(".tmp-")) && until(&files) {
            return files;
        }
        assert!(std::time::Instant::now() < deadline, "spool never settled: {files:?}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Runs `wal-fetch name pg_wal/RECOVERYXLOG` as PostgreSQL does (from the
/// data directory) and returns what it restored, or its exit code and stderr.
pub(crate) fn fetch_as_postgres(store: &Store, data_dir: &Path, name: &str) -> Result<Vec<u8>, (Option<i32>, String)> {
    let dest = data_dir.join("pg_wal/RECOVERYXLOG");
    let _ = std::fs::remove_file(&dest);
    let out = Command::new(crate::common::BIN)
        .args(["wal-fetch", name, "pg_wal/RECOVERYXLOG"])
        .current_dir(data_dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(wal::server_env(store.config()))
        // The crash tests hold the prefetcher it starts at a crash point.
        .envs(std::env::var("FAILPOINTS").map(|points| ("FAILPOINTS", points)))
        .output()
        .expect("run drillbook");
    if out.status.success() {
        Ok(std::fs::read(&dest).unwrap())
    } else {
        assert!(!dest.exists(), "a failed wal-fetch left {}", dest.display());
        Err((out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned()))
    }
}

/// The read-ahead (issue 15): segments after the requested one wait in a
/// private spool in pg_wal; only those whose sha256 matched are ever
/// served; a damaged one is fetched directly and fails as without the
/// spool; the end of the archive is still exit 1, and removes the spool.
#[tokio::test]
async fn wal_fetch_reads_ahead_and_never_serves_a_segment_that_did_not_verify() {
    use std::os::unix::fs::PermissionsExt as _;

    let s3 = EmbeddedS3::start().unwrap();
    let store = Store::connect(s3.config(BUCKET)).await;
    store.ensure_bucket().await.unwrap();
    let segments = archive_segments(&store, 12).await;
    let (damaged, _) = &segments[4];
    let good_object = damage(&store, damaged).await;
    let data_dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(data_dir.path().join("pg_wal")).unwrap();
    let spool = data_dir.path().join("pg_wal").join(wal::SPOOL_DIR);

    // The first call fetches directly and starts the read-ahead of 2..=9.
    assert_eq!(
        fetch_as_postgres(&store, data_dir.path(), &segments[0].0).unwrap(),
        segments[0].1
    );
    let mode = std::fs::metadata(&spool).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "the spool is the server user's alone");
    let ahead = wait_for_spool(&spool, |files| files.iter().any(|f| *f == segments[8].0));
    for (name, _) in &segments[1..9] {
        assert_eq!(
            ahead.contains(name),
            name != damaged,
            "read ahead: {ahead:?} (the damaged {damaged} must not be there)"
        );
    }
    assert!(!ahead.contains(&segments[9].0), "more than 8 segments ahead: {ahead:?}");

    // Served from the spool, byte for byte, each taken out as it goes.
    for (name, bytes) in &segments[1..4] {
        assert!(
            fetch_as_postgres(&store, data_dir.path(), name).unwrap() == *bytes,
            "{name} differs"
        );
        assert!(!spool.join(name).exists(), "{name} stayed in the spool");
    }
    // The damaged one fails as a direct fetch does: 126, nothing written,
    // and the spool is gone (recovery stops).
    let (code, stderr) = fetch_as_postgres(&store, data_dir.path(), damaged).unwrap_err();
    assert_eq!(code, Some(126), "{stderr}");
    assert!(
        stderr.contains("is corrupt") && stderr.contains(damaged.as_str()),
        "{stderr}"
    );
    wait_for_spool(&spool, <[String]>::is_empty);

    // Repaired (another copy put back), replay goes on to the end.
    store
        .put_bytes(&wal::key_for(damaged).unwrap(), good_object, "application/octet-stream")
        .await
        .unwrap();
    for (name, bytes) in &segments[4..] {
        assert!(
            fetch_as_postgres(&store, data_dir.path(), name).unwrap() == *bytes,
            "{name} differs"
        );
        let files = spool_files(&spool);
        let ready = files.iter().filter(|f| f.len() == 24).count();
        assert!(ready <= 8, "the spool holds more than --prefetch segments: {files:?}");
    }
    // The end of the archive: exit 1, quietly, and the spool is removed.
    let (code, stderr) = fetch_as_postgres(&store, data_dir.path(), "00000001000000000000000D").unwrap_err();
    assert_eq!((code, stderr.as_str()), (Some(1), ""));
    wait_for_spool(&spool, <[String]>::is_empty);
    assert!(!spool.exists(), "the spool outlived the end of the archive");

    // --prefetch 0: no spool at all.
    let out = Command::new(crate::common::BIN)
        .args(["wal-fetch", "--prefetch", "0", &segments[0].0, "pg_wal/RECOVERYXLOG"])
        .current_dir(data_dir.path())
        .env_clear()
        .envs(wal::server_env(store.config()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!spool.exists());
    s3.cleanup();
}

/// A spool filled from another archive (or boot) is never served: it is
/// removed and the file fetched from the archive the environment names.
#[tokio::test]
async fn a_spool_of_another_archive_is_never_served() {
    let s3 = EmbeddedS3::start().unwrap();
    let store = Store::connect(s3.config(BUCKET)).await;
    store.ensure_bucket().await.unwrap();
    let segments = archive_segments(&store, 3).await;
    let data_dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(data_dir.path().join("pg_wal")).unwrap();
    let spool = data_dir.path().join("pg_wal").join(wal::SPOOL_DIR);
    fetch_as_postgres(&store, data_dir.path(), &segments[0].0).unwrap();
    wait_for_spool(&spool, |files| files.contains(&segments[2].0));

    // The same names, from another bucket's spool: planted bytes must not come back.
    std::fs::write(spool.join("identity"), "boot x\nlocation s3://elsewhere/\nendpoint \n").unwrap();
    std::fs::write(spool.join(&segments[1].0), b"not this archive's segment").unwrap();
    assert!(fetch_as_postgres(&store, data_dir.path(), &segments[1].0).unwrap() == segments[1].1);
    s3.cleanup();
}
