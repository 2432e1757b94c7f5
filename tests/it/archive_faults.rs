//! The archive fault operators (`drillbook::fault::archive`) against a real
//! S3 API: refused on anything but a bucket the drill's own environment
//! created (staging's is refused before anything is read), each fault
//! really in the bucket, and each undone exactly.

use std::time::Duration;

use drillbook::env::{EmbeddedEnvironment, Environment, StagingEnvironment};
use drillbook::fault::FaultError;
use drillbook::fault::archive::{
    DisposableBucket, age_newest_backup, archived_segments, damage_object, delete_archived_wal_segment,
};
use drillbook::fixtures::{FixtureSpec, Profile};
use drillbook::restore::{BackupChoice, find_backup};
use drillbook::store::Store;

use crate::common::backup;
use crate::env_backends::staging_config;

const SEGMENT: &str = "wal/00000001/000000010000000000000003";

async fn keys(store: &Store) -> Vec<String> {
    let mut keys: Vec<String> = store.list("").await.unwrap().into_iter().map(|o| o.key).collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn archive_faults_touch_only_a_disposable_bucket_and_undo_exactly() {
    let server = EmbeddedEnvironment::start().await.unwrap();
    server.seed(FixtureSpec::ending_now(Profile::Small, 8)).await.unwrap();
    let manifest = backup(&server).await.manifest;
    let store = server.store().clone();
    store
        .put_bytes(
            SEGMENT,
            drillbook::wal::encode(&[7u8; 4096]),
            "application/octet-stream",
        )
        .await
        .unwrap();
    store
        .put_bytes("drills/history/2026-11/run.json", b"{}".to_vec(), "application/json")
        .await
        .unwrap();
    let before = keys(&store).await;

    // The same bucket reached as staging's: no token, whatever the key.
    let staging = Environment::Staging(StagingEnvironment::connect(staging_config(&server)).await.unwrap());
    let refused = DisposableBucket::owned_by(&staging).unwrap_err();
    assert!(matches!(refused, FaultError::NotDisposableBucket { .. }), "{refused}");
    let message = refused.to_string();
    assert!(
        message.starts_with("refusing to inject an incident into s3://"),
        "{message}"
    );
    assert!(message.contains("staging"), "{message}");
    assert!(
        !message.contains(server.s3().secret_key().expose()),
        "secret leaked: {message}"
    );
    staging.cleanup().await.unwrap();

    // The embedded environment's own bucket: a token, for backup objects only.
    let env = Environment::Embedded(server);
    let bucket = DisposableBucket::owned_by(&env).unwrap();
    for error in [
        delete_archived_wal_segment(&bucket, &manifest.dump.key)
            .await
            .unwrap_err(),
        delete_archived_wal_segment(&bucket, "wal/00000001/000000010000000000000009")
            .await
            .unwrap_err(),
        damage_object(&bucket, "drills/history/2026-11/run.json", 0, 1)
            .await
            .unwrap_err(),
        damage_object(&bucket, "check/state.json", 0, 1).await.unwrap_err(),
        damage_object(&bucket, &manifest.dump.key, manifest.dump.bytes as usize, 1)
            .await
            .unwrap_err(),
    ] {
        assert!(matches!(error, FaultError::NotInArchive { .. }), "{error}");
    }
    assert_eq!(keys(&store).await, before, "a refused operator touches nothing");
    assert_eq!(archived_segments(&bucket).await.unwrap(), [SEGMENT]);

    // A deleted segment is gone, and comes back byte for byte.
    let original = store.get_bytes(SEGMENT).await.unwrap();
    let fault = delete_archived_wal_segment(&bucket, SEGMENT).await.unwrap();
    assert_eq!(store.size_of(SEGMENT).await.unwrap(), None);
    fault.undo(&bucket).await.unwrap();
    assert_eq!(store.get_bytes(SEGMENT).await.unwrap(), original);

    // A damaged dump keeps its size, not its hash.
    let fault = damage_object(&bucket, &manifest.dump.key, 100, 4).await.unwrap();
    let damaged = store.hash_object(&manifest.dump.key).await.unwrap();
    assert_eq!(damaged.bytes, manifest.dump.bytes);
    assert_ne!(damaged.sha256, manifest.dump.sha256);
    fault.undo(&bucket).await.unwrap();
    assert_eq!(
        store.hash_object(&manifest.dump.key).await.unwrap().sha256,
        manifest.dump.sha256
    );

    // An aged backup is the newest, 30 hours older, same content.
    let by = Duration::from_secs(30 * 3600);
    let fault = age_newest_backup(&bucket, by).await.unwrap();
    let aged = find_backup(&store, &BackupChoice::Newest).await.unwrap();
    assert_eq!(manifest.snapshot_at - aged.snapshot_at, chrono::Duration::hours(30));
    assert!(aged.stamp < manifest.stamp, "{} < {}", aged.stamp, manifest.stamp);
    assert_eq!(aged.dump.sha256, manifest.dump.sha256);
    assert_eq!(
        store.hash_object(&aged.dump.key).await.unwrap().sha256,
        manifest.dump.sha256
    );
    assert_eq!(
        store.size_of(&manifest.dump.key).await.unwrap(),
        None,
        "moved, not copied"
    );
    fault.undo(&bucket).await.unwrap();
    assert_eq!(find_backup(&store, &BackupChoice::Newest).await.unwrap(), manifest);

    assert_eq!(keys(&store).await, before, "every fault undone exactly");
    env.cleanup().await.unwrap();
}
