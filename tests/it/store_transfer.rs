//! The S3 store against the in-process S3 server: streaming multipart
//! transfers with SHA-256, and the layout seen through the playbook's own
//! `aws s3 ls ... | sort | tail -1`.

use std::process::Command;

use drillbook::backup::backup_database;
use drillbook::env::EmbeddedEnvironment;
use drillbook::fixtures::{FixtureSpec, Profile};
use drillbook::store::PART_SIZE;
use sha2::{Digest, Sha256};

use crate::common::sha256_hex;

/// Bytes that do not compress or repeat, so a lost or reordered part shows.
fn data(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut block = Sha256::digest(b"drillbook").to_vec();
    while out.len() < len {
        block = Sha256::digest(&block).to_vec();
        out.extend_from_slice(&block);
    }
    out.truncate(len);
    out
}

#[tokio::test]
async fn streams_round_trip_across_part_boundaries() {
    let env = EmbeddedEnvironment::start().await.unwrap();
    let store = env.store();
    let dir = tempfile::tempdir().unwrap();
    // Empty, one byte short of a part, exactly a part, and several parts plus a tail.
    for len in [0, PART_SIZE - 1, PART_SIZE, 2 * PART_SIZE + 12_345] {
        let bytes = data(len);
        let key = format!("transfer/{len}.bin");
        let uploaded = store
            .upload_stream(&key, &mut bytes.as_slice(), "application/octet-stream")
            .await
            .unwrap();
        assert_eq!(uploaded.bytes, len as u64);
        assert_eq!(uploaded.sha256, sha256_hex(&bytes), "upload hash of {len} bytes");
        assert_eq!(store.size_of(&key).await.unwrap(), Some(len as u64));

        let path = dir.path().join("download");
        let downloaded = store.download_to_file(&key, &path).await.unwrap();
        assert_eq!(downloaded, uploaded, "{len} bytes came back different");
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }
    assert_eq!(store.list("transfer/").await.unwrap().len(), 4);
    env.cleanup().await.unwrap();
}

#[tokio::test]
async fn the_playbooks_aws_listing_finds_the_newest_dump() {
    let env = EmbeddedEnvironment::start().await.unwrap();
    let spec = FixtureSpec {
        profile: Profile::Small,
        seed: 5,
        until: "2026-11-28T12:00:00Z".parse().unwrap(),
    };
    env.seed(spec).await.unwrap();
    let admin = env.primary().admin();
    let mut newest = String::new();
    for _ in 0..2 {
        let backup = backup_database(env.binaries(), &env.source(), Some(&admin), env.store())
            .await
            .unwrap();
        newest = backup.manifest.dump.key;
    }

    // Section 3.2 step 1, verbatim, with the environment's endpoint and keys.
    let facts = env.connection_facts();
    let output = Command::new("sh")
        .arg("-c")
        .arg("aws s3 ls $BACKUP_BUCKET/daily/ --recursive | sort | tail -1 | awk '{print $4}'")
        .env("BACKUP_BUCKET", "s3://immoflowme-backups")
        .env("AWS_ENDPOINT_URL", &facts.s3_endpoint)
        .env("AWS_ACCESS_KEY_ID", &facts.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &facts.secret_key)
        .env("AWS_REGION", &facts.region)
        .env("NO_PROXY", "127.0.0.1")
        .output()
        .expect("sh runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("not found"),
        "this test runs the playbook's own `aws` command: install awscli (apt-get install awscli). {stderr}"
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        newest,
        "stderr: {stderr}"
    );
    assert!(
        env.store().list("incoming/").await.unwrap().is_empty(),
        "no staging object is left"
    );
    env.cleanup().await.unwrap();
}
