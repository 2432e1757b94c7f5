//! `drillbook expire` (issue 13 item 5) through the real binary, against an
//! archiving server and the embedded S3: real dumps (`drillbook backup`),
//! real base backups (`drillbook basebackup`), real archived WAL.
//!
//! The property that matters: after expire, `drillbook check` still passes
//! (the kept base backup has every WAL segment from its start on), and only
//! what the plan names is gone. Also: `--dry-run` deletes nothing, a damaged
//! newest dump makes expire keep an older one that verifies, keeping nothing
//! is refused, and (crash lane, `--features failpoints`) expire killed with
//! SIGKILL after a backup's manifest and after the first WAL segment leaves
//! a bucket `check` passes on, which a re-run finishes (`expire::crash_*`,
//! run by the crash lane's filter).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use drillbook::env::{ArchivingEnvironment, EmbeddedS3};
use drillbook::fixtures::{FixtureSpec, Profile};
use drillbook::store::{Store, layout};
use drillbook::wal::switch_and_wait_archived;
use serde_json::Value;

use crate::common::{BIN, connect, exec, output_text};

const ARCHIVED_WITHIN: Duration = Duration::from_secs(60);

/// `drillbook <args>` with the store's endpoint and credentials, nothing
/// of the caller's environment standing in for a flag.
fn command(store: &Store, args: &[&str]) -> Command {
    let config = store.config();
    let (key, secret) = config.credentials.clone().expect("the embedded S3 has credentials");
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env("AWS_ACCESS_KEY_ID", key)
        .env("AWS_SECRET_ACCESS_KEY", secret.expose())
        .env("AWS_ENDPOINT_URL", config.endpoint.clone().expect("an endpoint"))
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("DRILL_PROGRESS", "off")
        .env_remove("DATABASE_URL")
        .env_remove("ADMIN_DATABASE_URL")
        .env_remove("BACKUP_BUCKET")
        .env_remove("FAILPOINTS");
    command
}

fn drillbook(store: &Store, args: &[&str]) -> Output {
    command(store, args).output().unwrap()
}

fn ok(out: Output) -> Output {
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    out
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", output_text(out)))
}

async fn keys(store: &Store) -> BTreeSet<String> {
    store.list("").await.unwrap().into_iter().map(|o| o.key).collect()
}

/// Stamps of `kind` among the plan's `kept` or `deleted` entries.
fn stamps(plan: &Value, list: &str, kind: &str) -> Vec<String> {
    plan[list]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .map(|e| e["stamp"].as_str().unwrap().to_owned())
        .collect()
}

/// Every key the plan deletes.
fn planned_keys(plan: &Value) -> BTreeSet<String> {
    plan["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|d| d["keys"].as_array().unwrap().iter())
        .map(|k| k.as_str().unwrap().to_owned())
        .collect()
}

/// The stamps of the dumps under `daily/`, oldest first.
async fn dumps(store: &Store) -> Vec<String> {
    let mut stamps: Vec<String> = keys(store)
        .await
        .iter()
        .filter_map(|k| layout::stamp_of_dump(k).map(str::to_owned))
        .collect();
    stamps.sort();
    stamps
}

/// The stamps of the base backups with a manifest, oldest first.
async fn base_backups(store: &Store) -> Vec<String> {
    drillbook::basebackup::list_base_backups(store)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.stamp)
        .collect()
}

/// An archiving server with a seeded ledger, `rounds` rounds of (base
/// backup, dump, a segment of changes archived), and an anchor: a bucket
/// `check` passes on, with something to expire.
struct Bucket {
    env: ArchivingEnvironment,
    store: Store,
    location: String,
}

impl Bucket {
    async fn start(rounds: usize) -> Self {
        let env = ArchivingEnvironment::start(Path::new(BIN), Duration::from_secs(60))
            .await
            .unwrap();
        drillbook::fixtures::seed(
            &env.source(),
            FixtureSpec {
                profile: Profile::Small,
                seed: 5,
                until: "2026-06-30T12:00:00Z".parse().unwrap(),
            },
        )
        .await
        .unwrap();
        let store = env.store().clone();
        let bucket = Self {
            location: store.config().location(),
            store,
            env,
        };
        for _ in 0..rounds {
            bucket.basebackup();
            bucket.backup();
            bucket.archive_a_segment().await;
        }
        bucket.anchor();
        bucket
    }

    fn basebackup(&self) {
        ok(drillbook(
            &self.store,
            &[
                "basebackup",
                "--admin-url",
                &self.env.admin().url(),
                "--bucket",
                &self.location,
            ],
        ));
    }

    fn backup(&self) {
        ok(drillbook(
            &self.store,
            &[
                "backup",
                "--database-url",
                &self.env.source().url(),
                "--admin-url",
                &self.env.admin().url(),
                "--bucket",
                &self.location,
            ],
        ));
    }

    fn anchor(&self) {
        ok(drillbook(
            &self.store,
            &[
                "anchor",
                "--database-url",
                &self.env.source().url(),
                "--bucket",
                &self.location,
            ],
        ));
    }

    async fn archive_a_segment(&self) {
        exec(&mut connect(&self.env.source()).await, "UPDATE tenants SET name = name").await;
        switch_and_wait_archived(&mut connect(&self.env.admin()).await, ARCHIVED_WITHIN)
            .await
            .unwrap();
    }

    /// `drillbook check --json`: its exit code and report.
    fn check(&self) -> (Option<i32>, Value) {
        let out = drillbook(&self.store, &["check", "--bucket", &self.location, "--json"]);
        let report = json(&out);
        (out.status.code(), report)
    }

    fn expire(&self, extra: &[&str]) -> Output {
        let args = [&["expire", "--bucket", &self.location], extra].concat();
        drillbook(&self.store, &args)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expire_deletes_exactly_the_old_backups_and_wal_and_check_still_passes() {
    let bucket = Bucket::start(3).await;
    let store = &bucket.store;
    let (code, report) = bucket.check();
    assert_eq!(code, Some(0), "healthy before: {report:#}");
    let dumps_before = dumps(store).await;
    let bases_before = base_backups(store).await;
    assert_eq!((dumps_before.len(), bases_before.len()), (3, 3));
    let before = keys(store).await;

    // --dry-run: the plan, and nothing deleted.
    let out = ok(bucket.expire(&["--keep-daily", "1", "--keep-base", "1", "--dry-run", "--json"]));
    let dry = json(&out);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(keys(store).await, before, "a dry run deletes nothing");
    assert_eq!(stamps(&dry, "kept", "daily"), [dumps_before[2].clone()]);
    assert_eq!(stamps(&dry, "deleted", "daily"), dumps_before[..2]);
    assert_eq!(stamps(&dry, "kept", "base"), [bases_before[2].clone()]);
    assert_eq!(stamps(&dry, "deleted", "base"), bases_before[..2], "oldest first");

    // Exactly the old ones: their dumps, manifests, roles, tars; WAL before
    // the kept base backup's start segment; nothing under anchors/ or check/.
    let kept_base = drillbook::basebackup::list_base_backups(store)
        .await
        .unwrap()
        .pop()
        .unwrap();
    let first_needed = drillbook::wal::segment_name(
        kept_base.timeline,
        drillbook::wal::parse_lsn(&kept_base.start_lsn).unwrap(),
        16 << 20,
    );
    let planned = planned_keys(&dry);
    let mut expected: BTreeSet<String> = BTreeSet::new();
    for stamp in &dumps_before[..2] {
        expected.extend(before.iter().filter(|k| k.contains(&format!("/{stamp}/"))).cloned());
    }
    for stamp in &bases_before[..2] {
        expected.extend(
            before
                .iter()
                .filter(|k| k.starts_with(&format!("base/{stamp}/")))
                .cloned(),
        );
    }
    let old_wal: BTreeSet<String> = before
        .iter()
        .filter(|k| k.starts_with("wal/") && !k.ends_with(".history"))
        .filter(|k| k.rsplit('/').next().unwrap()[..24] < *first_needed)
        .cloned()
        .collect();
    assert!(
        !old_wal.is_empty(),
        "three rounds archived WAL before the newest base backup"
    );
    expected.extend(old_wal);
    assert_eq!(planned, expected, "the plan deletes exactly the old ones");
    let wal_entry = dry["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["kind"] == "wal")
        .unwrap();
    assert!(
        wal_entry["reason"].as_str().unwrap().contains(&kept_base.stamp),
        "{wal_entry:#}"
    );
    let freed: u64 = store
        .list("")
        .await
        .unwrap()
        .iter()
        .filter(|o| planned.contains(&o.key))
        .map(|o| o.size)
        .sum();
    assert_eq!(dry["bytes_freed"].as_u64(), Some(freed));

    // The real run: the same plan, carried out; the key property holds.
    let started = Instant::now();
    let out = ok(bucket.expire(&["--keep-daily", "1", "--keep-base", "1", "--json"]));
    let took = started.elapsed();
    let done = json(&out);
    assert_eq!(planned_keys(&done), planned, "the run does what the dry run said");
    assert_eq!(done["deleted_objects"].as_u64(), Some(planned.len() as u64));
    let after = keys(store).await;
    let expected_after: BTreeSet<String> = before.difference(&planned).cloned().collect();
    assert_eq!(after, expected_after, "only what the plan named is gone");
    assert!(after.iter().any(|k| k.starts_with("anchors/")), "anchors stay");
    assert!(after.iter().any(|k| k.starts_with("check/")), "check state stays");
    assert!(
        after.iter().any(|k| k.ends_with(&first_needed)),
        "the kept base backup's first segment stays"
    );
    let (code, report) = bucket.check();
    assert_eq!(code, Some(0), "check passes after expire: {report:#}");
    eprintln!(
        "expire deleted {} objects ({} bytes) in {took:?}",
        planned.len(),
        done["bytes_freed"]
    );

    // A re-run finds nothing more to do.
    let again = json(&ok(bucket.expire(&["--keep-daily", "1", "--keep-base", "1", "--json"])));
    assert_eq!(again["deleted"], serde_json::json!([]), "{again:#}");

    // The newest dump damaged (its size no longer the manifest's): expire
    // keeps it (it counts) and the newest one that verifies, and says so.
    bucket.backup();
    bucket.backup();
    bucket.anchor();
    let three = dumps(store).await;
    assert_eq!(three.len(), 3);
    let newest = layout::dump_key(&three[2], "immoflowme");
    let mut bytes = store.get_bytes(&newest).await.unwrap();
    bytes.truncate(bytes.len() - 100);
    store
        .put_bytes(&newest, bytes, "application/octet-stream")
        .await
        .unwrap();
    let out = ok(bucket.expire(&["--keep-daily", "1", "--keep-base", "1"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("the newest that does"), "{}", output_text(&out));
    assert!(
        text.lines()
            .any(|l| l.contains("delete") && l.contains("daily") && l.contains(&three[0])),
        "the oldest goes, one line with its reason: {}",
        output_text(&out)
    );
    assert_eq!(
        dumps(store).await,
        three[1..],
        "the damaged newest and the newest verifying one stay"
    );

    bucket.env.cleanup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expire_refuses_keeping_nothing_and_a_missing_bucket() {
    let s3 = EmbeddedS3::start().unwrap();
    let store = Store::connect(s3.config("expire-refusals")).await;
    store.ensure_bucket().await.unwrap();
    store
        .put_bytes(
            &layout::dump_key("20260601T020000.000Z", "immoflowme"),
            vec![1; 10],
            "application/octet-stream",
        )
        .await
        .unwrap();
    let before = keys(&store).await;
    for (flags, named) in [
        (["--keep-daily", "0", "--keep-base", "2"], "--keep-daily 0"),
        (["--keep-daily", "7", "--keep-base", "0"], "--keep-base 0"),
    ] {
        let out = drillbook(
            &store,
            &[&["expire", "--bucket", "s3://expire-refusals"][..], &flags].concat(),
        );
        assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(named) && stderr.contains("keeping nothing is deleting"),
            "{}",
            output_text(&out)
        );
    }
    let out = drillbook(
        &store,
        &[
            "expire",
            "--bucket",
            "s3://no-such-bucket",
            "--keep-daily",
            "1",
            "--keep-base",
            "1",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not exist"),
        "{}",
        output_text(&out)
    );
    assert_eq!(keys(&store).await, before, "refusals delete nothing");
}

/// SIGKILL at a crash point: after the first expired backup's manifest
/// (its data still there), then after the first WAL segment. Each time the
/// bucket passes `check`, and a re-run finishes the job.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_expire_killed_partway_leaves_a_consistent_bucket_a_rerun_finishes() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let bucket = Bucket::start(3).await;
    let store = &bucket.store;
    let dumps_before = dumps(store).await;
    let bases_before = base_backups(store).await;
    let retention = ["--keep-daily", "1", "--keep-base", "1"];

    let killed_at = |point: &str| {
        let args = [&["expire", "--bucket", bucket.location.as_str()][..], &retention].concat();
        let mut child = command(store, &args)
            .env("FAILPOINTS", format!("{point}=return"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let wanted = format!("drillbook: failpoint {point} reached");
        let mut seen = String::new();
        for line in BufReader::new(child.stderr.take().unwrap()).lines() {
            let line = line.unwrap();
            seen.push_str(&line);
            seen.push('\n');
            if line == wanted {
                break;
            }
        }
        // SAFETY: kill(2) with SIGKILL on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let status = child.wait().unwrap();
        assert!(seen.contains(&wanted), "expire never reached {point}: {seen}");
        assert_eq!(status.code(), None, "killed by the signal: {seen}");
    };

    // Held after the oldest dump's manifest: it no longer counts, its dump is still there.
    killed_at("expire::after_manifest");
    let after = keys(store).await;
    let oldest = &dumps_before[0];
    assert!(
        !after.contains(&layout::manifest_key(oldest)),
        "its manifest went first"
    );
    assert!(
        after.contains(&layout::dump_key(oldest, "immoflowme")),
        "its dump is still there"
    );
    let (code, report) = bucket.check();
    assert_eq!(code, Some(0), "consistent after a kill after a manifest: {report:#}");

    // Held after the first WAL segment: the old base backups are gone, some WAL too.
    let wal_before = store.list("wal/").await.unwrap().len();
    killed_at("expire::after_wal");
    assert_eq!(
        base_backups(store).await,
        bases_before[2..],
        "the base backups went before the WAL"
    );
    assert_eq!(
        dumps(store).await,
        dumps_before[2..],
        "the daily leftover of the first kill went"
    );
    let wal_now = store.list("wal/").await.unwrap().len();
    assert_eq!(wal_now, wal_before - 1, "held after exactly one WAL object");
    let (code, report) = bucket.check();
    assert_eq!(code, Some(0), "consistent after a kill in the WAL: {report:#}");

    // A re-run finishes: the old base backups' WAL goes, then nothing is left to do.
    let rest = json(&ok(bucket.expire(&[&retention[..], &["--json"]].concat())));
    assert!(
        rest["deleted"].as_array().unwrap().iter().any(|d| d["kind"] == "wal"),
        "the re-run deletes the rest of the old WAL: {rest:#}"
    );
    let done = json(&ok(bucket.expire(&[&retention[..], &["--json"]].concat())));
    assert_eq!(done["deleted"], serde_json::json!([]), "{done:#}");
    let (code, report) = bucket.check();
    assert_eq!(code, Some(0), "{report:#}");

    bucket.env.cleanup().await.unwrap();
}
