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
