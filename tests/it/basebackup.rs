//! Base backups restored from the embedded S3 in one pass (issue 15): a
//! compressed backup comes back verified and starts; a damaged object, or a
//! file that does not match `backup_manifest`, is refused naming what failed
//! and leaves no directory; a backup written by the previous version
//! (uncompressed, SHA256 per file, no `compression` in its manifest) still
//! restores.

use std::path::Path;

use drillbook::basebackup::{
    BaseBackupManifest, Compression, download_base_backup, list_base_backups, take_base_backup,
};
use drillbook::env::EmbeddedS3;
use drillbook::pg::tools::{BaseBackupStream, verify_backup};
use drillbook::pg::{Cluster, ClusterOptions, PgBinaries};
use drillbook::store::Store;
use sha2::{Digest, Sha256};
use sqlx::{Connection, PgConnection};

const ROWS: i64 = 20_000;

struct Setup {
    bins: PgBinaries,
    s3: EmbeddedS3,
    store: Store,
    primary: Cluster,
}

impl Setup {
    /// A cluster with a table of [`ROWS`] rows, and a bucket.
    async fn start(bucket: &str) -> Self {
        let bins = PgBinaries::discover().unwrap();
        let s3 = EmbeddedS3::start().unwrap();
        let store = Store::connect(s3.config(bucket)).await;
        store.ensure_bucket().await.unwrap();
        let primary = Cluster::start(&bins, ClusterOptions::default()).await.unwrap();
        let mut conn = PgConnection::connect_with(&primary.admin().connect_options())
            .await
            .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE kept (id bigint PRIMARY KEY, pad text);
             INSERT INTO kept SELECT g, md5(g::text) FROM generate_series(1, {ROWS}) g;"
        )))
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
        Self {
            bins,
            s3,
            store,
            primary,
        }
    }

    /// Starts a server on a restored data dir and counts the table's rows.
    async fn rows_in(&self, data: &Path) -> i64 {
        let cluster = Cluster::start_from_data_dir(
            &self.bins,
            data,
            self.primary.password().clone(),
            ClusterOptions::default(),
        )
        .await
        .unwrap();
        let mut conn = PgConnection::connect_with(&cluster.admin().connect_options())
            .await
            .unwrap();
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM kept")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        cluster.cleanup().await.unwrap();
        rows
    }

    async fn cleanup(self) {
        self.primary.cleanup().await.unwrap();
        self.s3.cleanup();
    }
}

/// Stores `bytes` as a copy of `base`'s object and returns a manifest for it.
async fn store_copy(store: &Store, base: &BaseBackupManifest, name: &str, bytes: Vec<u8>) -> BaseBackupManifest {
    let key = format!("base/{}/{name}", base.stamp);
    let manifest = BaseBackupManifest {
        tar_key: key.clone(),
        tar_bytes: bytes.len() as u64,
        tar_sha256: hex::encode(Sha256::digest(&bytes)),
        ..base.clone()
    };
    store.put_bytes(&key, bytes, "application/zstd").await.unwrap();
    manifest
}

fn assert_nothing_left(workdir: &Path) {
    let left: Vec<_> = std::fs::read_dir(workdir).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(left.is_empty(), "a refused restore left {left:?}");
}

#[tokio::test]
async fn a_compressed_base_backup_restores_verified_and_starts() {
    let setup = Setup::start("basebackup-compressed").await;
    let base = take_base_backup(&setup.bins, &setup.primary.admin(), &setup.store)
        .await
        .unwrap();
    assert_eq!(base.compression, Compression::Zstd);
    assert!(base.tar_key.ends_with("/base.tar.zst"), "{}", base.tar_key);
    let workdir = tempfile::tempdir().unwrap();
    let data = download_base_backup(&setup.bins, &setup.store, &base, workdir.path())
        .await
        .unwrap();
    // pg_verifybackup, reading the copy again, agrees with the one pass.
    verify_backup(&setup.bins, &data).await.unwrap();
    assert_eq!(setup.rows_in(&data).await, ROWS);
    setup.cleanup().await;
}

#[tokio::test]
async fn a_damaged_compressed_base_backup_is_refused_and_leaves_no_directory() {
    let setup = Setup::start("basebackup-damaged").await;
    let base = take_base_backup(&setup.bins, &setup.primary.admin(), &setup.store)
        .await
        .unwrap();
    let mut bytes = setup.store.get_bytes(&base.tar_key).await.unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    setup
        .store
        .put_bytes(&base.tar_key, bytes, "application/zstd")
        .await
        .unwrap();
    let workdir = tempfile::tempdir().unwrap();
    let err = download_base_backup(&setup.bins, &setup.store, &base, workdir.path())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&base.tar_key), "{err}");
    assert!(err.contains("sha256") && err.contains(&base.tar_sha256), "{err}");
    assert_nothing_left(workdir.path());
    setup.cleanup().await;
}

#[tokio::test]
async fn a_file_that_does_not_match_backup_manifest_is_refused_naming_it() {
    let setup = Setup::start("basebackup-mismatch").await;
    let base = take_base_backup(&setup.bins, &setup.primary.admin(), &setup.store)
        .await
        .unwrap();
    // One byte of a relation file changed inside an otherwise intact tar:
    // the object matches its own sha256, not backup_manifest's CRC32C.
    let compressed = setup.store.get_bytes(&base.tar_key).await.unwrap();
    let mut tar = zstd::decode_all(compressed.as_slice()).unwrap();
    let (path, offset) = {
        let mut archive = tar::Archive::new(tar.as_slice());
        archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap())
            .find(|e| e.path().unwrap().starts_with("base") && e.size() >= 8192)
            .map(|e| (e.path().unwrap().display().to_string(), e.raw_file_position()))
            .expect("a relation file of a page or more")
    };
    tar[offset as usize + 100] ^= 0x01;
    let tampered = zstd::encode_all(tar.as_slice(), 1).unwrap();
    let tampered = store_copy(&setup.store, &base, "tampered.tar.zst", tampered).await;

    let workdir = tempfile::tempdir().unwrap();
    let err = download_base_backup(&setup.bins, &setup.store, &tampered, workdir.path())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("{path} has CRC32C")), "{err}");
    assert!(err.contains("backup_manifest says"), "{err}");
    assert_nothing_left(workdir.path());
    setup.cleanup().await;
}

#[tokio::test]
async fn a_cut_short_base_backup_is_refused_naming_what_is_missing() {
    let setup = Setup::start("basebackup-cut").await;
    let base = take_base_backup(&setup.bins, &setup.primary.admin(), &setup.store)
        .await
        .unwrap();
    // A tar that ends (properly) before its last files and backup_manifest.
    let compressed = setup.store.get_bytes(&base.tar_key).await.unwrap();
    let tar = zstd::decode_all(compressed.as_slice()).unwrap();
    let end = {
        let mut archive = tar::Archive::new(tar.as_slice());
        let entries: Vec<_> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().raw_header_position())
            .collect();
        entries[entries.len() / 2] as usize
    };
    let mut cut = tar[..end].to_vec();
    cut.extend_from_slice(&[0; 1024]);
    let cut = store_copy(
        &setup.store,
        &base,
        "cut.tar.zst",
        zstd::encode_all(cut.as_slice(), 1).unwrap(),
    )
    .await;

    let workdir = tempfile::tempdir().unwrap();
    let err = download_base_backup(&setup.bins, &setup.store, &cut, workdir.path())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("holds no backup_manifest"), "{err}");
    assert_nothing_left(workdir.path());
    setup.cleanup().await;
}

#[tokio::test]
async fn an_uncompressed_base_backup_of_the_old_format_still_restores() {
    let setup = Setup::start("basebackup-old-format").await;
    // What the previous version wrote: a plain tar, SHA256 per file, and a
    // manifest without `compression`.
    let stamp = "20260101T000000.000Z";
    let tar_key = format!("base/{stamp}/base.tar");
    let start_time = chrono::Utc::now();
    let mut stream = BaseBackupStream::spawn(&setup.bins, &setup.primary.admin(), "none", "SHA256").unwrap();
    let transfer = setup
        .store
        .upload_stream(&tar_key, stream.stdout(), "application/x-tar")
        .await
        .unwrap();
    let points = stream.finish().await.unwrap();
    let old_manifest = serde_json::json!({
        "stamp": stamp,
        "start_lsn": points.start_lsn,
        "end_lsn": points.end_lsn,
        "timeline": points.timeline,
        "start_time": start_time,
        "end_time": chrono::Utc::now(),
        "server_version": "15",
        "tar_key": tar_key,
        "tar_bytes": transfer.bytes,
        "tar_sha256": transfer.sha256,
    });
    setup
        .store
        .put_bytes(
            &format!("base/{stamp}/manifest.json"),
            serde_json::to_vec_pretty(&old_manifest).unwrap(),
            "application/json",
        )
        .await
        .unwrap();

    let listed = list_base_backups(&setup.store).await.unwrap();
    let base = listed
        .iter()
        .find(|b| b.stamp == stamp)
        .expect("the old backup is listed");
    assert_eq!(base.compression, Compression::None);
    let workdir = tempfile::tempdir().unwrap();
    let data = download_base_backup(&setup.bins, &setup.store, base, workdir.path())
        .await
        .unwrap();
    assert_eq!(setup.rows_in(&data).await, ROWS);
    setup.cleanup().await;
}

#[tokio::test]
async fn ranged_downloads_come_back_whole_and_in_order_and_a_wrong_size_fails() {
    use futures::TryStreamExt;
    let s3 = EmbeddedS3::start().unwrap();
    let store = Store::connect(s3.config("basebackup-ranges")).await;
    store.ensure_bucket().await.unwrap();
    // Not a multiple of the range size, so the last range is short.
    let bytes: Vec<u8> = (0..(10 << 20) + 12_345u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    store
        .put_bytes("object", bytes.clone(), "application/octet-stream")
        .await
        .unwrap();
    let size = bytes.len() as u64;
    let ranges: Vec<_> = store
        .download_ranges("object", size, 1 << 20, 3)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(ranges.len(), 11);
    assert_eq!(ranges.concat(), bytes);

    let err = store
        .download_ranges("object", size + 1, 1 << 20, 3)
        .try_collect::<Vec<_>>()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("object"), "{err:#}");
    let err = store
        .download_ranges("missing", size, 1 << 20, 3)
        .try_collect::<Vec<_>>()
        .await
        .unwrap_err();
    assert!(matches!(err, drillbook::store::StoreError::NotFound { .. }), "{err:?}");
    s3.cleanup();
}
