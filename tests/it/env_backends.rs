//! The `Environment` abstraction over real servers: the embedded backend
//! through it, the staging backend against an embedded environment posing
//! as staging (the guard refuses everything the drill did not create), and
//! the containers backend's one clear error when Docker is not reachable.

use drillbook::backup::backup_database;
use drillbook::env::config::check;
use drillbook::env::containers::{ContainerSettings, ContainersEnvironment};
use drillbook::env::{
    APP_DATABASE, Backend, EmbeddedEnvironment, EnvError, Environment, StagingConfig, StagingEnvironment,
};
use drillbook::fault::{self, Disposable};
use drillbook::fixtures::{FixtureSpec, Profile};
use drillbook::pg::ConnInfo;
use drillbook::restore::{RestoreOptions, restore_database};
use sqlx::{Connection, PgConnection};

use crate::common::BIN;

/// A drill.toml pointing at `server`, as a staging operator would write it.
pub(crate) fn staging_config(server: &EmbeddedEnvironment) -> StagingConfig {
    let facts = server.connection_facts();
    let text = format!(
        "[database]\nadmin_url = \"{}\"\nsource = \"{APP_DATABASE}\"\n\n[s3]\nbucket = \"s3://{}\"\nendpoint = \"{}\"\nregion = \"{}\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
        facts.admin_url, facts.bucket, facts.s3_endpoint, facts.region, facts.access_key, facts.secret_key
    );
    check(&text, |_| None).expect("the generated drill.toml is valid")
}

async fn databases(admin: &ConnInfo) -> Vec<String> {
    let mut conn = PgConnection::connect_with(&admin.connect_options()).await.unwrap();
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE NOT datistemplate ORDER BY 1")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    conn.close().await.unwrap();
    names
}

async fn audit_rows(target: &ConnInfo) -> i64 {
    let mut conn = PgConnection::connect_with(&target.connect_options()).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_logs")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    n
}

#[tokio::test]
async fn embedded_backend_through_the_environment() {
    let mut env = Environment::Embedded(EmbeddedEnvironment::start().await.unwrap());
    assert_eq!(env.backend(), Backend::Embedded);
    assert!(env.is_disposable());
    env.seed(FixtureSpec::ending_now(Profile::Small, 3)).await.unwrap();
    let source = env.source();
    assert!(env.owns(&source));
    let target = env.provision_restore_target().await.unwrap();
    assert!(
        target.database.starts_with("immoflowme_restore_"),
        "{}",
        target.database
    );
    assert_ne!(target.admin.port, env.admin().port, "a replacement is a new server");
    assert!(env.owns(&target.admin));
    // A server the environment does not own is refused even on a disposable backend.
    let stranger = ConnInfo {
        port: 1,
        ..source.clone()
    };
    let err = env.drop_database(&stranger).await.unwrap_err();
    assert!(matches!(err, EnvError::Guard(_)), "{err}");
    env.destroy_primary().await.unwrap();
    assert!(
        PgConnection::connect_with(&source.connect_options()).await.is_err(),
        "the primary is gone"
    );
    env.cleanup().await.unwrap();
}

#[tokio::test]
async fn staging_guard_refuses_everything_the_drill_did_not_create() {
    // The "staging" servers: an embedded environment with data and a backup.
    let server = EmbeddedEnvironment::start().await.unwrap();
    server.seed(FixtureSpec::ending_now(Profile::Small, 5)).await.unwrap();
    let admin = server.primary().admin();
    let backup = backup_database(server.binaries(), &server.source(), Some(&admin), server.store())
        .await
        .unwrap();
    let before_databases = databases(&admin).await;
    let before_rows = audit_rows(&server.source()).await;
    let before_objects = server.store().list("").await.unwrap();

    let staging = StagingEnvironment::connect(staging_config(&server)).await.unwrap();
    let mut env = Environment::Staging(staging);
    assert_eq!(env.backend(), Backend::Staging);
    assert!(!env.is_disposable());
    let source = env.source();
    assert!(!env.owns(&source), "the staging source is never the drill's");

    // Every destructive call on what exists is refused, saying why.
    let err = env.seed(FixtureSpec::ending_now(Profile::Small, 1)).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("seeding the fixture ledger is not supported on the staging backend because"),
        "{err}"
    );
    let err = env.destroy_primary().await.unwrap_err();
    assert!(matches!(err, EnvError::Unsupported { .. }), "{err}");
    let err = env.provision_cluster().await.unwrap_err();
    assert!(matches!(err, EnvError::Unsupported { .. }), "{err}");
    let err = env.drop_database(&source).await.unwrap_err();
    assert!(matches!(err, EnvError::Guard(_)), "{err}");
    assert!(err.to_string().contains("refusing to drop database"), "{err}");
    let err = env.drop_database(&admin.with_database("postgres")).await.unwrap_err();
    assert!(matches!(err, EnvError::Guard(_)), "{err}");
    let err = env.delete_object(&backup.manifest.dump.key).await.unwrap_err();
    assert!(matches!(err, EnvError::Guard(_)), "{err}");
    let err = env.delete_object(&backup.manifest_key).await.unwrap_err();
    assert!(matches!(err, EnvError::Guard(_)), "{err}");
    let staging = env.staging().unwrap();
    assert!(staging.guard().allow_database("drop", &source).is_err());
    // Overwriting an existing object through the scratch path is refused too.
    let Environment::Staging(mut staging) = env else {
        unreachable!()
    };
    let err = staging
        .put_scratch_object(&backup.manifest_key, b"{}".to_vec())
        .await
        .unwrap_err();
    assert!(matches!(err, EnvError::Guard(_)), "{err}");
    let mut env = Environment::Staging(staging);
    // Code written for the embedded handle fails loudly, not elsewhere.
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| env.primary().admin()));
    let message = panicked.unwrap_err();
    let message = message.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        message.contains("not supported on the staging backend because"),
        "{message}"
    );

    // What the drill creates, it may damage and drop.
    let target = env.provision_restore_target().await.unwrap();
    assert_eq!(target.admin.port, admin.port, "staging restores go to the same server");
    let options = RestoreOptions {
        target_database: Some(target.database.clone()),
        ..RestoreOptions::default()
    };
    let restored = restore_database(env.binaries(), &target.admin, env.store(), &options)
        .await
        .unwrap();
    assert!(env.owns(&restored.target));
    let token = Disposable::restored_copy(&restored).unwrap();
    fault::tamper_amount(&token, "invoice_lines", 1, 500).await.unwrap();
    let Environment::Staging(mut staging) = env else {
        unreachable!()
    };
    staging
        .put_scratch_object("drills/scratch/probe", b"x".to_vec())
        .await
        .unwrap();
    staging.delete_object("drills/scratch/probe").await.unwrap();
    staging
        .put_scratch_object("drills/scratch/left", b"y".to_vec())
        .await
        .unwrap();
    Environment::Staging(staging).cleanup().await.unwrap();

    // Staging is exactly as it was: same databases, rows and objects.
    assert_eq!(databases(&admin).await, before_databases);
    assert_eq!(audit_rows(&server.source()).await, before_rows);
    let after_objects = server.store().list("").await.unwrap();
    let keys = |objects: &[drillbook::store::ObjectInfo]| objects.iter().map(|o| o.key.clone()).collect::<Vec<_>>();
    assert_eq!(keys(&after_objects), keys(&before_objects));
    server.cleanup().await.unwrap();
}

#[tokio::test]
async fn staging_panics_still_drop_the_restored_copy() {
    let server = EmbeddedEnvironment::start().await.unwrap();
    server.seed(FixtureSpec::ending_now(Profile::Small, 6)).await.unwrap();
    let admin = server.primary().admin();
    backup_database(server.binaries(), &server.source(), Some(&admin), server.store())
        .await
        .unwrap();
    let before = databases(&admin).await;
    let config = staging_config(&server);
    let drill = tokio::spawn(async move {
        let mut env = StagingEnvironment::connect(config).await.unwrap();
        let target = env.provision_restore_target().await.unwrap();
        let options = RestoreOptions {
            target_database: Some(target.database.clone()),
            ..RestoreOptions::default()
        };
        restore_database(env.binaries(), &target.admin, env.store(), &options)
            .await
            .unwrap();
        panic!("the drill fails after its restore");
    });
    assert!(drill.await.unwrap_err().is_panic());
    assert_eq!(databases(&admin).await, before, "Drop removed the restored copy");
    server.cleanup().await.unwrap();
}

#[tokio::test]
async fn containers_without_docker_is_one_clear_error() {
    let dead = tempfile::tempdir().unwrap();
    let socket = dead.path().join("docker.sock");
    // A socket file nobody listens on: what a stopped daemon leaves behind.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let settings =
        ContainerSettings::from_lookup(|var| (var == "DOCKER_HOST").then(|| format!("unix://{}", socket.display())))
            .unwrap();
    let err = ContainersEnvironment::start_with(settings).await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, EnvError::DockerUnavailable { .. }), "{message}");
    assert!(message.contains(&socket.display().to_string()), "{message}");
    assert!(message.contains("dockerd"), "says how to start it: {message}");
    assert!(
        message.contains("DRILL_ENV=embedded"),
        "names the alternative: {message}"
    );
}

/// The containers lane: needs a Docker daemon and the images from
/// `ci/images/build.sh`. Run with `cargo nextest run --run-ignored only -E 'test(containers_)'`.
#[tokio::test]
#[ignore = "needs Docker and the images built by ci/images/build.sh"]
async fn containers_backend_end_to_end() {
    let labelled = || {
        let out = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter", "label=drillbook=drill"])
            .output()
            .expect("docker CLI");
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    let before = labelled();
    let mut env = Environment::Containers(ContainersEnvironment::start().await.unwrap());
    assert_eq!(env.backend(), Backend::Containers);
    assert_eq!(labelled(), before + 2, "a Postgres and an S3 container");
    env.seed(FixtureSpec::ending_now(Profile::Small, 4)).await.unwrap();
    let source = env.source();
    let backup = backup_database(env.binaries(), &source, Some(&env.admin()), env.store())
        .await
        .unwrap();
    env.destroy_primary().await.unwrap();
    assert_eq!(labelled(), before + 1, "the primary's container is gone");
    assert!(PgConnection::connect_with(&source.connect_options()).await.is_err());
    let target = env.provision_restore_target().await.unwrap();
    let options = RestoreOptions {
        target_database: Some(target.database.clone()),
        ..RestoreOptions::default()
    };
    let restored = restore_database(env.binaries(), &target.admin, env.store(), &options)
        .await
        .unwrap();
    assert_eq!(restored.manifest.stamp, backup.manifest.stamp);
    assert_eq!(
        audit_rows(&restored.target).await as u64,
        backup.manifest.rows_in("audit_logs").unwrap()
    );
    // Code written for the embedded handle fails loudly here too.
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| env.primary().port()));
    assert!(panicked.is_err());
    env.cleanup().await.unwrap();
    assert_eq!(labelled(), before, "every container removed");
}

/// The owner labels of every container drillbook labelled with one.
fn owner_labels() -> Vec<String> {
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            "label=drillbook.owner",
            "--format",
            "{{.Label \"drillbook.owner\"}}",
        ])
        .output()
        .expect("docker CLI");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
#[ignore = "needs Docker and the images built by ci/images/build.sh"]
async fn containers_of_a_killed_process_are_reaped() {
    const CHILD: &str = "DRILLBOOK_CONTAINERS_CHILD";
    if std::env::var_os(CHILD).is_some() {
        let env = ContainersEnvironment::start().await.unwrap();
        println!("ready {}", env.admin().port);
        tokio::time::sleep(std::time::Duration::from_secs(600)).await;
        return;
    }
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            &crate::common::test_name(module_path!(), "containers_of_a_killed_process_are_reaped"),
            "--include-ignored",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .env_remove("DRILL_KEEP")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let ready = std::io::BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .any(|line| line.starts_with("ready "));
    assert!(ready, "the child started its environment");
    let pid = child.id();
    // nextest's timeout does this: no Drop, no cleanup.
    child.kill().unwrap();
    child.wait().unwrap();
    let of_child = || {
        owner_labels()
            .into_iter()
            .filter(|label| label.split(' ').nth(1) == Some(&pid.to_string()))
            .count()
    };
    assert_eq!(of_child(), 2, "the killed process left its Postgres and S3 containers");

    let networks = || {
        let out = std::process::Command::new("docker")
            .args(["network", "ls", "-q", "--filter", "name=drillbook-"])
            .output()
            .expect("docker CLI");
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    let networks_before = networks();
    let reaped = drillbook::env::containers::reap_orphans().await;
    assert_eq!(reaped.len(), 2, "{reaped:?}");
    assert_eq!(of_child(), 0, "both removed");
    assert_eq!(networks(), networks_before - 1, "and their network");
    // This process is alive: an environment of its own survives a reaping.
    let mine = ContainersEnvironment::start().await.unwrap();
    assert!(drillbook::env::containers::reap_orphans().await.is_empty());
    mine.cleanup().await.unwrap();
}

/// `drillbook <args>` configured as PostgreSQL's archive commands are: only
/// through the environment (BACKUP_BUCKET, AWS_ENDPOINT_URL, credentials).
fn drillbook_at(config: &drillbook::store::S3Config, args: &[&str]) -> std::process::Output {
    std::process::Command::new(BIN)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(drillbook::wal::server_env(config))
        .env("DRILL_PROGRESS", "off")
        .output()
        .expect("run drillbook")
}

fn no_such_bucket_code<E: aws_sdk_s3::error::ProvideErrorMetadata>(result: Result<impl std::fmt::Debug, E>) -> String {
    let err = result.expect_err("a request into a missing bucket must fail");
    err.code().unwrap_or("<no code>").to_owned()
}

/// Every object request into a missing bucket is NoSuchBucket, as on AWS;
/// nothing creates the bucket; `wal-fetch` takes it as fatal (126), not as
/// the end of the archive (1); `backup` and `restore` refuse it (2) naming
/// the bucket. `existing` is the environment's own bucket, `source` its
/// application database.
async fn a_missing_bucket_is_never_created_nor_taken_for_an_empty_one(
    existing: &drillbook::store::Store,
    source: &ConnInfo,
) {
    use drillbook::store::{S3Config, Store, StoreError};
    let bucket = format!("no-such-bucket-{}", std::process::id());
    let missing_config = S3Config {
        bucket: bucket.clone(),
        ..existing.config().clone()
    };
    let missing = Store::connect(missing_config.clone()).await;
    let client = missing.client();
    existing
        .put_bytes("probe/source", b"probe".to_vec(), "text/plain")
        .await
        .unwrap();

    let put = client
        .put_object()
        .bucket(&bucket)
        .key("daily/x")
        .body(b"x".to_vec().into())
        .send()
        .await;
    assert_eq!(no_such_bucket_code(put), "NoSuchBucket", "PutObject");
    let list2 = client.list_objects_v2().bucket(&bucket).send().await;
    assert_eq!(no_such_bucket_code(list2), "NoSuchBucket", "ListObjectsV2");
    let list1 = client.list_objects().bucket(&bucket).send().await;
    assert_eq!(no_such_bucket_code(list1), "NoSuchBucket", "ListObjects");
    let multipart = client
        .create_multipart_upload()
        .bucket(&bucket)
        .key("daily/x")
        .send()
        .await;
    assert_eq!(no_such_bucket_code(multipart), "NoSuchBucket", "CreateMultipartUpload");
    let source_key = format!("{}/{}probe/source", existing.config().bucket, existing.config().prefix);
    let copy = client
        .copy_object()
        .bucket(&bucket)
        .key("daily/x")
        .copy_source(source_key)
        .send()
        .await;
    assert_eq!(no_such_bucket_code(copy), "NoSuchBucket", "CopyObject");
    let get = client.get_object().bucket(&bucket).key("daily/x").send().await;
    assert_eq!(no_such_bucket_code(get), "NoSuchBucket", "GetObject");
    // HEAD responses have no body: S3 answers a bare 404 for a missing bucket too.
    assert!(
        client
            .head_object()
            .bucket(&bucket)
            .key("daily/x")
            .send()
            .await
            .is_err()
    );

    // The library names it for what it is, whichever request found it.
    for err in [
        missing.size_of("daily/x").await.unwrap_err(),
        missing.get_bytes("daily/x").await.unwrap_err(),
        missing.list("daily/").await.unwrap_err(),
        missing
            .put_bytes("daily/x", b"x".to_vec(), "text/plain")
            .await
            .unwrap_err(),
        missing.require_bucket().await.unwrap_err(),
    ] {
        assert!(matches!(err, StoreError::NoSuchBucket { .. }), "{err}");
        assert!(err.to_string().contains(&bucket), "{err}");
    }
    existing.require_bucket().await.unwrap();
    assert_eq!(
        existing.size_of("probe/absent").await.unwrap(),
        None,
        "a missing key is still None"
    );

    let dest = tempfile::tempdir().unwrap();
    let dest = dest.path().join("RECOVERYXLOG");
    let dest = dest.to_str().unwrap();
    let segment = "000000010000000000000042";
    let fetched = drillbook_at(&missing_config, &["wal-fetch", segment, dest]);
    let stderr = String::from_utf8_lossy(&fetched.stderr);
    assert_eq!(fetched.status.code(), Some(126), "a missing bucket is fatal: {stderr}");
    assert!(
        stderr.contains(&bucket) && stderr.contains("does not exist"),
        "{stderr}"
    );
    // The contrast: a missing key in an existing bucket is the archive's end.
    let end = drillbook_at(existing.config(), &["wal-fetch", segment, dest]);
    assert_eq!(end.status.code(), Some(1), "{}", String::from_utf8_lossy(&end.stderr));

    let wal_dir = tempfile::tempdir().unwrap();
    let wal = wal_dir.path().join(segment);
    std::fs::write(&wal, vec![0u8; 8192]).unwrap();
    let pushed = drillbook_at(&missing_config, &["wal-push", wal.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&pushed.stderr);
    assert_eq!(pushed.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&bucket), "{stderr}");

    let url = source.url();
    let backup = drillbook_at(&missing_config, &["backup", "--database-url", &url]);
    let restore = drillbook_at(
        &missing_config,
        &["restore", "--admin-url", &source.with_database("postgres").url()],
    );
    for (command, out) in [("backup", backup), ("restore", restore)] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        assert!(
            stderr.contains(&format!("bucket \"{bucket}\" does not exist")) && stderr.contains("aws s3 mb"),
            "{command} names the bucket and what to do: {stderr}"
        );
        assert!(
            !stderr.contains("caused by"),
            "{command}: one clear line, no SDK dump: {stderr}"
        );
    }

    // Nothing above created it.
    let head = client.head_bucket().bucket(&bucket).send().await;
    assert!(head.is_err(), "the missing bucket was created: {head:?}");
    existing.delete("probe/source").await.unwrap();
}

#[tokio::test]
async fn embedded_s3_answers_no_such_bucket_as_s3_does() {
    let env = EmbeddedEnvironment::start().await.unwrap();
    a_missing_bucket_is_never_created_nor_taken_for_an_empty_one(env.store(), &env.source()).await;
    let buckets: Vec<_> = std::fs::read_dir(env.s3().root())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with('.'))
        .collect();
    assert_eq!(
        buckets,
        vec![drillbook::env::BACKUP_BUCKET.to_owned()],
        "no bucket dir created"
    );
    env.cleanup().await.unwrap();
}

/// The same against moto, the containers lane's S3.
#[tokio::test]
#[ignore = "needs Docker and the images built by ci/images/build.sh"]
async fn containers_s3_answers_no_such_bucket_as_s3_does() {
    let env = ContainersEnvironment::start().await.unwrap();
    a_missing_bucket_is_never_created_nor_taken_for_an_empty_one(env.store(), &env.source()).await;
    env.cleanup().await.unwrap();
}
