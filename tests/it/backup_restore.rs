//! Backup and restore against a real PostgreSQL and the embedded S3 server.
//!
//! Every way a backup in the bucket can be unusable is refused with its own
//! error variant, whose message names the problem and the way out, and the
//! refused restore leaves nothing behind: no database, no temp dir, no
//! object. Then the round trip that must work, including the playbook's own
//! way (`aws s3 ls ... | sort | tail -1`) of finding the newest dump.
//!
//! # Isolation
//! "Nothing left behind" is checked by listing the temp dir before and after
//! the call under test, which only means something if nothing else creates
//! or removes `drillbook-*` dirs meanwhile. So this binary points `tempfile`
//! (which the library uses for every cluster, S3 and restore dir) at a
//! directory of its own, `$TMPDIR/drillbook-test-<pid>` (other processes:
//! nextest's one-per-test, a developer's `drillbook env up`, cannot
//! interfere), and runs its tests one at a time (threads of `cargo test`
//! share the process).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use chrono::{DateTime, Utc};
use drillbook::backup::BackupReport;
use drillbook::env::{APP_DATABASE, EmbeddedEnvironment};
use drillbook::fixtures::{CRITICAL_TABLES, FixtureSpec, Profile, SeedSummary};
use drillbook::pg::table_facts;
use drillbook::pg::{Cluster, ClusterOptions, ConnInfo, PgError, quote_ident};
use drillbook::playbook::PlaybookAnswers;
use drillbook::restore::{
    BackupChoice, GrantsCheck, GrantsMode, RestoreError, RestoreOptions, RestoreReport, restore_database,
};
use drillbook::store::manifest::{BackupManifest, Grant};
use drillbook::store::{Store, layout};
use drillbook::workload::write_activity;
use sqlx::Connection;
use tokio::sync::{Mutex, MutexGuard};

use crate::common::{backup, connect, sha256_hex};

// ---------------------------------------------------------------------------
// 1. An empty bucket
// ---------------------------------------------------------------------------

#[tokio::test]
async fn restore_from_an_empty_bucket_says_to_take_a_backup() {
    let _serial = isolated().await;
    let env = EmbeddedEnvironment::start().await.unwrap();
    let server = env.primary().admin();

    let before = Leftovers::take(&env, &server).await;
    let err = restore(&env, &server, RestoreOptions::default()).await.unwrap_err();

    assert!(
        matches!(&err, RestoreError::NoBackups { location } if location == "s3://immoflowme-backups/"),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("s3://immoflowme-backups/daily/"),
        "names where it looked: {message}"
    );
    assert!(
        message.contains("drillbook backup"),
        "says how to get a backup: {message}"
    );
    Leftovers::take(&env, &server).await.assert_same_as(&before);
    env.cleanup().await.unwrap();
}

// ---------------------------------------------------------------------------
// 2. A dump whose sha256 does not match its manifest
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_dump_that_does_not_match_its_checksum_is_refused() {
    let _serial = isolated().await;
    let (env, _) = seeded_env().await;
    let backup = backup(&env).await;
    let dump = &backup.manifest.dump;

    // Same length, other bytes: the size check passes, only the hash can tell.
    let original = env.store().get_bytes(&dump.key).await.unwrap();
    let tampered: Vec<u8> = original.iter().map(|b| b ^ 0x5a).collect();
    assert_eq!(tampered.len() as u64, dump.bytes);
    let tampered_sha256 = sha256_hex(&tampered);
    env.store()
        .put_bytes(&dump.key, tampered, "application/octet-stream")
        .await
        .unwrap();
    assert_eq!(env.store().size_of(&dump.key).await.unwrap(), Some(dump.bytes));

    let server = env.primary().admin();
    let before = Leftovers::take(&env, &server).await;
    let err = restore(&env, &server, RestoreOptions::default()).await.unwrap_err();

    match &err {
        RestoreError::ChecksumMismatch {
            key, expected, actual, ..
        } => {
            assert_eq!(key, &dump.key);
            assert_eq!(expected, &dump.sha256);
            assert_eq!(actual, &tampered_sha256);
        }
        other => panic!("expected ChecksumMismatch, got {other:?}"),
    }
    let message = err.to_string();
    for part in [
        dump.key.as_str(),
        &dump.sha256,
        &tampered_sha256,
        "refusing to restore",
        "--backup <stamp>",
    ] {
        assert!(message.contains(part), "message lacks {part:?}: {message}");
    }
    assert_eq!(
        restore_databases(&server).await,
        Vec::<String>::new(),
        "a refused dump created no database"
    );
    Leftovers::take(&env, &server).await.assert_same_as(&before);
    env.cleanup().await.unwrap();
}

// ---------------------------------------------------------------------------
// 3. A truncated dump
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_truncated_dump_is_refused_before_download() {
    let _serial = isolated().await;
    let (env, _) = seeded_env().await;
    let backup = backup(&env).await;
    let dump = &backup.manifest.dump;

    let original = env.store().get_bytes(&dump.key).await.unwrap();
    let truncated = original[..original.len() / 2].to_vec();
    let short = truncated.len() as u64;
    env.store()
        .put_bytes(&dump.key, truncated, "application/octet-stream")
        .await
        .unwrap();

    let server = env.primary().admin();
    let before = Leftovers::take(&env, &server).await;
    let err = restore(&env, &server, RestoreOptions::default()).await.unwrap_err();

    assert!(
        matches!(&err, RestoreError::DumpSizeMismatch { key, expected, actual, .. }
            if key == &dump.key && *expected == dump.bytes && *actual == short),
        "{err:?}"
    );
    let message = err.to_string();
    for part in [
        dump.key.clone(),
        format!("is {short} bytes"),
        format!("manifest says {}", dump.bytes),
        "refusing to restore".to_owned(),
        "--backup <stamp>".to_owned(),
    ] {
        assert!(message.contains(&part), "message lacks {part:?}: {message}");
    }
    assert_eq!(restore_databases(&server).await, Vec::<String>::new());
    Leftovers::take(&env, &server).await.assert_same_as(&before);
    env.cleanup().await.unwrap();
}

// ---------------------------------------------------------------------------
// 4. A truncated dump whose manifest was rewritten to match it
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_consistently_truncated_dump_fails_in_pg_restore_and_the_partial_database_is_dropped() {
    let _serial = isolated().await;
    let (env, _) = seeded_env().await;
    let backup = backup(&env).await;
    let store = env.store();

    // Keep the archive's header, table of contents and part of the data, so
    // pg_restore creates the schema and starts loading before it runs out.
    let original = store.get_bytes(&backup.manifest.dump.key).await.unwrap();
    let truncated = original[..original.len() * 3 / 4].to_vec();
    let mut manifest = backup.manifest.clone();
    manifest.dump.bytes = truncated.len() as u64;
    manifest.dump.sha256 = sha256_hex(&truncated);
    store
        .put_bytes(&manifest.dump.key, truncated, "application/octet-stream")
        .await
        .unwrap();
    store
        .put_bytes(&backup.manifest_key, manifest.to_json(), "application/json")
        .await
        .unwrap();

    let server = env.primary().admin();
    let before = Leftovers::take(&env, &server).await;
    let err = restore(&env, &server, RestoreOptions::default()).await.unwrap_err();

    let RestoreError::Restore { database, source } = &err else {
        panic!("expected RestoreError::Restore, got {err:?}")
    };
    assert!(database.starts_with("immoflowme_restore_"), "{database}");
    assert!(
        matches!(source, PgError::ProgramFailed { program, .. } if program == "pg_restore"),
        "the failure is pg_restore's: {source:?}"
    );
    let message = err.to_string();
    assert!(message.contains(database.as_str()), "names the database: {message}");
    assert!(
        message.contains("partial database was dropped"),
        "says what became of it: {message}"
    );
    // The error exists only after CREATE DATABASE succeeded; now it is gone.
    assert_eq!(
        restore_databases(&server).await,
        Vec::<String>::new(),
        "the half-restored {database} was dropped"
    );
    Leftovers::take(&env, &server).await.assert_same_as(&before);
    env.cleanup().await.unwrap();
}

// ---------------------------------------------------------------------------
// 5. A manifest that does not parse
// ---------------------------------------------------------------------------

#[tokio::test]
async fn an_unreadable_manifest_is_named() {
    let _serial = isolated().await;
    let env = EmbeddedEnvironment::start().await.unwrap();
    let backup = backup(&env).await;
    // A manifest cut short, as an interrupted upload by another tool would leave it.
    let json = backup.manifest.to_json();
    env.store()
        .put_bytes(
            &backup.manifest_key,
            json[..json.len() / 2].to_vec(),
            "application/json",
        )
        .await
        .unwrap();

    let server = env.primary().admin();
    let before = Leftovers::take(&env, &server).await;
    let err = restore(&env, &server, RestoreOptions::default()).await.unwrap_err();

    assert!(
        matches!(&err, RestoreError::ManifestUnreadable { key, reason, .. }
            if key == &backup.manifest_key && reason.contains("EOF")),
        "{err:?}"
    );
    let message = err.to_string();
    let full_key = format!("s3://immoflowme-backups/{}", backup.manifest_key);
    for part in [
        full_key.as_str(),
        "does not parse",
        "--backup <stamp>",
        "take a new backup",
    ] {
        assert!(message.contains(part), "message lacks {part:?}: {message}");
    }
    assert_eq!(restore_databases(&server).await, Vec::<String>::new());
    Leftovers::take(&env, &server).await.assert_same_as(&before);
    env.cleanup().await.unwrap();
}

// ---------------------------------------------------------------------------
// 6. Never restore over an existing database
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_restore_never_overwrites_an_existing_database() {
    let _serial = isolated().await;
    let (env, seeded) = seeded_env().await;
    let backup = backup(&env).await;
    // Make the source differ from the backup, so a restore over it would show.
    write_activity(&env.source(), 3).await.unwrap();
    let source_before = facts_of(&env.source()).await;
    let audit_before = count_rows(&env.source(), "audit_logs").await;
    assert_eq!(audit_before, seeded.rows_in("audit_logs").unwrap() + 3);
    assert_ne!(audit_before, backup.manifest.rows_in("audit_logs").unwrap());

    let server = env.primary().admin();
    let before = Leftovers::take(&env, &server).await;
    let options = RestoreOptions {
        target_database: Some(APP_DATABASE.to_owned()),
        ..RestoreOptions::default()
    };
    let err = restore(&env, &server, options).await.unwrap_err();

    assert!(
        matches!(&err, RestoreError::Postgres(PgError::DatabaseExists { database }) if database == APP_DATABASE),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("\"immoflowme\" already exists"),
        "names the database: {message}"
    );
    assert!(
        message.contains("never restores over an existing database"),
        "{message}"
    );
    assert_eq!(
        count_rows(&env.source(), "audit_logs").await,
        audit_before,
        "audit_logs untouched"
    );
    assert_eq!(facts_of(&env.source()).await, source_before, "every table untouched");
    Leftovers::take(&env, &server).await.assert_same_as(&before);
    env.cleanup().await.unwrap();
}

// ---------------------------------------------------------------------------
// 7. Round trip
// ---------------------------------------------------------------------------

#[tokio::test]
async fn round_trip_restores_what_the_manifest_says_and_the_playbook_finds_the_dump() {
    let _serial = isolated().await;
    let (mut env, seeded) = seeded_env().await;
    let backup = backup(&env).await;
    let manifest = &backup.manifest;
    for (table, rows) in &seeded.rows {
        assert_eq!(manifest.rows_in(table), Some(*rows), "manifest of {table}");
    }

    // The playbook's 3.2 step 1, on the bucket's listing.
    assert_eq!(playbook_latest_backup(env.store()).await, manifest.dump.key);
    let daily: BTreeSet<String> = env
        .store()
        .list(layout::DAILY)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    let stamp = &manifest.stamp;
    // Nothing but the dump under daily/: anything else there could sort last.
    assert_eq!(daily, [layout::dump_key(stamp, APP_DATABASE)].into());
    let side_files: BTreeSet<String> = env
        .store()
        .list(layout::MANIFESTS)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(
        side_files,
        [layout::roles_key(stamp), layout::manifest_key(stamp)].into()
    );
    assert_eq!(
        env.store().list(layout::INCOMING).await.unwrap(),
        vec![],
        "no incoming/ object remains"
    );

    let replacement = env.provision_cluster().await.unwrap();
    let restored = restore(&env, &replacement, RestoreOptions::default()).await.unwrap();
    assert_eq!(&restored.manifest, manifest);
    assert_eq!(
        restored_counts(&restored.target, manifest).await,
        manifest_counts(manifest)
    );
    let head = manifest.audit_chain_head.as_ref().expect("audit_logs exists");
    assert_eq!(
        head.id,
        seeded.rows_in("audit_logs").unwrap() as i64,
        "the last generated row heads the chain"
    );
    assert_eq!(chain_head(&restored.target).await, (head.id, head.hash.clone()));
    env.cleanup().await.unwrap();
}

#[tokio::test]
async fn a_backup_taken_while_writes_continue_restores_exactly_its_manifest() {
    let _serial = isolated().await;
    let (mut env, seeded) = seeded_env().await;
    let source = env.source();

    // Writes before, during and after the backup's snapshot.
    let backup_done = AtomicBool::new(false);
    let written = AtomicUsize::new(0);
    let writer = async {
        while !backup_done.load(Ordering::SeqCst) {
            write_activity(&source, 5).await.unwrap();
            written.fetch_add(5, Ordering::SeqCst);
        }
    };
    let backing_up = async {
        let report = backup(&env).await;
        backup_done.store(true, Ordering::SeqCst);
        report
    };
    let ((), backup) = tokio::join!(writer, backing_up);
    let manifest = &backup.manifest;
    let written = written.load(Ordering::SeqCst) as u64;

    let seeded_audit = seeded.rows_in("audit_logs").unwrap();
    let seeded_ledger = seeded.rows_in("ledger_entries").unwrap();
    let (backed_audit, backed_ledger) = (
        manifest.rows_in("audit_logs").unwrap(),
        manifest.rows_in("ledger_entries").unwrap(),
    );
    let final_audit = count_rows(&source, "audit_logs").await;
    assert_eq!(final_audit, seeded_audit + written);
    assert!(
        backed_audit < final_audit,
        "writes went on after the snapshot ({backed_audit} of {final_audit})"
    );
    // Each write commits one audit row and one ledger entry together: a
    // manifest read from one snapshot sees both or neither.
    assert_eq!(
        backed_audit - seeded_audit,
        backed_ledger - seeded_ledger,
        "the manifest is one snapshot"
    );

    let replacement = env.provision_cluster().await.unwrap();
    let restored = restore(&env, &replacement, RestoreOptions::default()).await.unwrap();
    assert_eq!(restored.manifest.stamp, manifest.stamp);
    assert_eq!(
        restored_counts(&restored.target, manifest).await,
        manifest_counts(manifest)
    );
    let head = manifest.audit_chain_head.as_ref().expect("audit_logs exists");
    assert_eq!(chain_head(&restored.target).await, (head.id, head.hash.clone()));
    let answers = PlaybookAnswers::collect(&restored.target).await.unwrap();
    assert_eq!(answers.broken_links, 0, "4.1 on the restored chain");
    env.cleanup().await.unwrap();
}

// ---------------------------------------------------------------------------
// 8. A port already taken
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_cluster_on_a_taken_port_is_refused_and_leaves_nothing() {
    let _serial = isolated().await;
    let env = EmbeddedEnvironment::start().await.unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();

    let before = scratch_entries();
    assert!(
        before.iter().any(|d| d.starts_with("drillbook-pg-")),
        "the listing sees clusters: {before:?}"
    );
    let options = ClusterOptions {
        port: Some(port),
        ..ClusterOptions::default()
    };
    let err = Cluster::start(env.binaries(), options.clone()).await.unwrap_err();

    assert!(matches!(err, PgError::PortInUse { port: p } if p == port), "{err:?}");
    let message = err.to_string();
    for part in [
        format!("port {port}"),
        "already in use".to_owned(),
        "omit the port".to_owned(),
    ] {
        assert!(message.contains(&part), "message lacks {part:?}: {message}");
    }
    assert_eq!(scratch_entries(), before, "no drillbook-pg-* dir left behind");

    // The port, once free, works: the refusal was about the port alone.
    drop(listener);
    let cluster = Cluster::start(env.binaries(), options).await.unwrap();
    assert_eq!(cluster.port(), port);
    cluster.cleanup().await.unwrap();
    assert_eq!(scratch_entries(), before);
    env.cleanup().await.unwrap();
}

// ---------------------------------------------------------------------------
// 9. Two backups
// ---------------------------------------------------------------------------

#[tokio::test]
async fn the_newest_backup_is_restored_unless_a_stamp_is_named() {
    let _serial = isolated().await;
    let (env, _) = seeded_env().await;
    let older = backup(&env).await.manifest;
    write_activity(&env.source(), 3).await.unwrap();
    let newer = backup(&env).await.manifest;
    assert!(older.stamp < newer.stamp, "{} then {}", older.stamp, newer.stamp);
    let (older_audit, newer_audit) = (
        older.rows_in("audit_logs").unwrap(),
        newer.rows_in("audit_logs").unwrap(),
    );
    assert_eq!(newer_audit, older_audit + 3);
    // The playbook's own listing agrees on which is newest.
    assert_eq!(playbook_latest_backup(env.store()).await, newer.dump.key);

    // Explicit names: two restores within one second would get the same default name.
    let server = env.primary().admin();
    let named = |name: &str, backup| RestoreOptions {
        backup,
        target_database: Some(name.to_owned()),
        ..RestoreOptions::default()
    };
    let newest = restore(&env, &server, named("immoflowme_restore_newest", BackupChoice::Newest))
        .await
        .unwrap();
    assert_eq!(newest.manifest.stamp, newer.stamp);
    assert_eq!(count_rows(&newest.target, "audit_logs").await, newer_audit);

    let chosen = BackupChoice::Stamp(older.stamp.clone());
    let picked = restore(&env, &server, named("immoflowme_restore_older", chosen))
        .await
        .unwrap();
    assert_eq!(picked.manifest.stamp, older.stamp);
    assert_eq!(count_rows(&picked.target, "audit_logs").await, older_audit);

    let before = Leftovers::take(&env, &server).await;
    let unknown = "20000101T000000.000Z";
    let err = restore(
        &env,
        &server,
        named("immoflowme_restore_unknown", BackupChoice::Stamp(unknown.to_owned())),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, RestoreError::NoSuchBackup { stamp, available, .. }
            if stamp == unknown && available == &[older.stamp.clone(), newer.stamp.clone()]),
        "{err:?}"
    );
    let message = err.to_string();
    let listing = format!("available: {}, {}", older.stamp, newer.stamp);
    for part in [unknown, "s3://immoflowme-backups/daily/", listing.as_str()] {
        assert!(message.contains(part), "message lacks {part:?}: {message}");
    }
    Leftovers::take(&env, &server).await.assert_same_as(&before);
    assert_eq!(
        restore_databases(&server).await,
        ["immoflowme_restore_newest", "immoflowme_restore_older"]
    );
    env.cleanup().await.unwrap();
}

// ---------------------------------------------------------------------------
// 9b. The newest dump without its manifest (issue 11, row 5)
// ---------------------------------------------------------------------------

#[tokio::test]
async fn the_newest_dump_without_a_manifest_is_refused_never_swapped_for_an_older_backup() {
    let _serial = isolated().await;
    let (env, _) = seeded_env().await;
    let older = backup(&env).await.manifest;
    write_activity(&env.source(), 3).await.unwrap();
    let newer = backup(&env).await;
    env.store().delete(&newer.manifest_key).await.unwrap();
    // The playbook's listing still shows the newer dump.
    assert_eq!(playbook_latest_backup(env.store()).await, newer.manifest.dump.key);

    let server = env.primary().admin();
    let before = Leftovers::take(&env, &server).await;
    let err = restore(&env, &server, RestoreOptions::default()).await.unwrap_err();
    let RestoreError::ManifestMissing {
        dump, newest_described, ..
    } = &err
    else {
        panic!("expected ManifestMissing, got {err:?}")
    };
    assert_eq!(dump, &newer.manifest.dump.key);
    assert_eq!(newest_described.as_deref(), Some(older.stamp.as_str()));
    let message = err.to_string();
    for part in [
        newer.manifest.dump.key.as_str(),
        older.stamp.as_str(),
        "older",
        "--backup",
        "--accept-unverified",
    ] {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
    Leftovers::take(&env, &server).await.assert_same_as(&before);

    // On the operator's explicit word, the newer dump itself, unverified.
    let options = RestoreOptions {
        target_database: Some("immoflowme_restore_unverified".into()),
        ..RestoreOptions::default()
    };
    let report = drillbook::restore::restore_unverified_dump(env.binaries(), &server, env.store(), &options)
        .await
        .unwrap();
    assert!(!report.verified);
    assert_eq!(report.dump, newer.manifest.dump.key);
    assert_eq!(
        count_rows(&report.target, "audit_logs").await,
        newer.manifest.rows_in("audit_logs").unwrap(),
        "the newer dump's data, not the older backup's"
    );
    env.cleanup().await.unwrap();
}

// ---------------------------------------------------------------------------
// 10. A manifest that lists fewer tables than it must (issue 11, row 6)
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_manifest_without_every_critical_table_is_refused_before_download() {
    let _serial = isolated().await;
    let (env, _) = seeded_env().await;
    let backup = backup(&env).await;
    let server = env.primary().admin();

    let cases: [(&str, Vec<&str>); 2] = [
        ("no tables", CRITICAL_TABLES.to_vec()),
        ("payments left out", vec!["payments"]),
    ];
    for (case, missing) in cases {
        tamper_manifest(&env, &backup, |m| {
            for table in &missing {
                m.tables.remove(&format!("public.{table}"));
            }
            if missing.len() == CRITICAL_TABLES.len() {
                m.tables.clear();
            }
        })
        .await;
        let before = Leftovers::take(&env, &server).await;
        let err = restore(&env, &server, RestoreOptions::default()).await.unwrap_err();
        let mut expected: Vec<String> = missing.iter().map(|t| (*t).to_owned()).collect();
        expected.sort_by_key(|t| CRITICAL_TABLES.iter().position(|c| c == t));
        assert!(
            matches!(&err, RestoreError::ManifestIncomplete { key, missing, .. }
                if key == &backup.manifest_key && missing == &expected),
            "{case}: {err:?}"
        );
        let message = err.to_string();
        for part in [
            expected.join(", ").as_str(),
            backup.manifest_key.as_str(),
            "critical table",
            "--backup <stamp>",
            "Nothing was downloaded or created",
        ] {
            assert!(message.contains(part), "{case}: message lacks {part:?}: {message}");
        }
        Leftovers::take(&env, &server).await.assert_same_as(&before);
    }
    env.cleanup().await.unwrap();
}

// ---------------------------------------------------------------------------
// 11. A manifest whose facts the restored database does not match (row 6)
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_restore_that_differs_from_its_manifest_is_dropped_and_named() {
    let _serial = isolated().await;
    let (env, _) = seeded_env().await;
    let backup = backup(&env).await;
    let server = env.primary().admin();
    let original = backup.manifest.clone();
    assert!(original.anchor.is_some() && original.audit_chain_head.is_some());
    assert!(original.grants.as_ref().is_some_and(|g| !g.is_empty()));

    type Tamper = Box<dyn Fn(&mut BackupManifest)>;
    type Expected = Box<dyn Fn(&RestoreError) -> bool>;
    let zeros = "0".repeat(64);
    let cases: Vec<(&str, Tamper, Expected, Vec<String>)> = vec![
        (
            "a non-critical table left out",
            Box::new(|m| {
                m.tables.remove("public.ledger_entries");
            }),
            Box::new(|e| matches!(e, RestoreError::TableNotInManifest { table } if table == "public.ledger_entries")),
            vec!["public.ledger_entries".to_owned(), "does not list".to_owned()],
        ),
        (
            "a fingerprint",
            Box::new({
                let zeros = zeros.clone();
                move |m| {
                    m.tables.get_mut("public.invoice_lines").unwrap().fingerprint = Some(zeros.clone());
                }
            }),
            Box::new(
                |e| matches!(e, RestoreError::FingerprintMismatch { table, .. } if table == "public.invoice_lines"),
            ),
            vec![
                "public.invoice_lines".to_owned(),
                zeros.clone(),
                original.tables["public.invoice_lines"].fingerprint.clone().unwrap(),
                "content fingerprint".to_owned(),
            ],
        ),
        (
            "the head hash",
            Box::new({
                let zeros = zeros.clone();
                move |m| m.audit_chain_head.as_mut().unwrap().hash = Some(zeros.clone())
            }),
            Box::new(|e| matches!(e, RestoreError::AuditChainMismatch { what, .. } if what == "head")),
            vec!["audit chain head".to_owned(), zeros.clone()],
        ),
        (
            "the anchor",
            Box::new(|m| m.anchor.as_mut().unwrap().rows += 1),
            Box::new(|e| matches!(e, RestoreError::AuditChainMismatch { what, .. } if what == "anchor")),
            vec![
                "audit chain anchor".to_owned(),
                format!("{} rows", original.anchor.as_ref().unwrap().rows + 1),
            ],
        ),
        (
            "a grant on a relation the dump does not have",
            Box::new(|m| {
                m.grants.as_mut().unwrap().push(Grant {
                    table: "no_such_table".to_owned(),
                    grantee: "immoflowme_app".to_owned(),
                    privilege: "SELECT".to_owned(),
                })
            }),
            Box::new(
                |e| matches!(e, RestoreError::GrantsMissing { missing } if missing == &["SELECT on no_such_table to immoflowme_app"]),
            ),
            vec!["cannot read what it could at backup time".to_owned()],
        ),
    ];
    for (case, tamper, is_expected, parts) in cases {
        let mut manifest = original.clone();
        tamper(&mut manifest);
        env.store()
            .put_bytes(&backup.manifest_key, manifest.to_json(), "application/json")
            .await
            .unwrap();
        let before = Leftovers::take(&env, &server).await;
        let err = restore(&env, &server, RestoreOptions::default()).await.unwrap_err();
        assert!(is_expected(&err), "{case}: {err:?}");
        let message = err.to_string();
        for part in parts.iter().map(String::as_str).chain(["restore was dropped"]) {
            assert!(message.contains(part), "{case}: message lacks {part:?}: {message}");
        }
        assert_eq!(restore_databases(&server).await, Vec::<String>::new(), "{case}");
        Leftovers::take(&env, &server).await.assert_same_as(&before);
    }
    env.cleanup().await.unwrap();
}

// ---------------------------------------------------------------------------
// 12. An existing target database is refused before the download (row 7)
// ---------------------------------------------------------------------------

#[tokio::test]
async fn an_existing_target_database_is_refused_before_the_download() {
    let _serial = isolated().await;
    let (env, _) = seeded_env().await;
    let backup = backup(&env).await;
    let dump = &backup.manifest.dump;
    // Same size, other bytes: downloading it would end in ChecksumMismatch,
    // so only a refusal before the download gives DatabaseExists.
    let original = env.store().get_bytes(&dump.key).await.unwrap();
    let garbage: Vec<u8> = original.iter().map(|b| b ^ 0xff).collect();
    env.store()
        .put_bytes(&dump.key, garbage, "application/octet-stream")
        .await
        .unwrap();

    let server = env.primary().admin();
    let before = Leftovers::take(&env, &server).await;
    let options = RestoreOptions {
        target_database: Some(APP_DATABASE.to_owned()),
        ..RestoreOptions::default()
    };
    let err = restore(&env, &server, options).await.unwrap_err();
    assert!(
        matches!(&err, RestoreError::Postgres(PgError::DatabaseExists { database }) if database == APP_DATABASE),
        "refused before downloading: {err:?}"
    );
    Leftovers::take(&env, &server).await.assert_same_as(&before);
    env.cleanup().await.unwrap();
}

// ---------------------------------------------------------------------------
// 13. Grants: the application role can work on the restored database (row 11)
// ---------------------------------------------------------------------------

#[tokio::test]
async fn the_application_role_can_read_the_restore_unless_restored_bare() {
    let _serial = isolated().await;
    let (env, _) = seeded_env().await;
    let backup = backup(&env).await;
    let server = env.primary().admin();
    let named = |name: &str, grants| RestoreOptions {
        target_database: Some(name.to_owned()),
        grants,
        ..RestoreOptions::default()
    };

    // Default: the grants recorded at backup are re-applied and checked.
    let restored = restore(&env, &server, named("immoflowme_restore_grants", GrantsMode::Reapply))
        .await
        .unwrap();
    assert_eq!(app_reads_invoice_lines(&restored.target).await, Ok(true));
    let verification = &restored.verification;
    assert_eq!(verification.tables, backup.manifest.tables.len());
    assert_eq!(
        verification.rows,
        backup.manifest.tables.values().map(|t| t.rows).sum::<u64>()
    );
    let critical: Vec<String> = CRITICAL_TABLES.iter().map(|t| format!("public.{t}")).collect();
    let mut fingerprinted = verification.fingerprints.clone();
    fingerprinted.sort();
    let mut expected = critical.clone();
    expected.sort();
    assert_eq!(fingerprinted, expected);
    assert_eq!(verification.audit_chain_head, backup.manifest.audit_chain_head);
    assert!(verification.anchor_compared);
    assert!(
        matches!(&verification.grants, GrantsCheck::Restored { roles, skipped_roles, .. }
            if roles == &["immoflowme_app"] && skipped_roles.is_empty()),
        "{:?}",
        verification.grants
    );
    let json = serde_json::to_value(&restored).unwrap();
    assert_eq!(json["verification"]["grants"]["status"], "restored", "{json}");
    assert_eq!(json["verification"]["fingerprints"].as_array().unwrap().len(), 5);

    // Bare, as the playbook's --no-acl: the role lacks them and the report says so.
    let bare = restore(&env, &server, named("immoflowme_restore_bare", GrantsMode::Bare))
        .await
        .unwrap();
    assert!(
        matches!(&bare.verification.grants, GrantsCheck::NotRestored { roles, missing }
            if roles == &["immoflowme_app"] && *missing == backup.manifest.grants.as_ref().unwrap().len()),
        "{:?}",
        bare.verification.grants
    );
    let lines = bare.verification.lines().join("\n");
    assert!(lines.contains("grants: NOT restored"), "{lines}");
    assert!(lines.contains("immoflowme_app lack"), "{lines}");
    let denied = app_reads_invoice_lines(&bare.target).await.unwrap_err();
    assert!(denied.contains("permission denied"), "{denied}");

    // An older manifest without grants: restored, and the report says grants were not compared.
    tamper_manifest(&env, &backup, |m| m.grants = None).await;
    let older = restore(&env, &server, named("immoflowme_restore_older", GrantsMode::Reapply))
        .await
        .unwrap();
    assert_eq!(older.verification.grants, GrantsCheck::NotRecorded);
    let lines = older.verification.lines().join("\n");
    assert!(lines.contains("grants: not compared"), "{lines}");
    env.cleanup().await.unwrap();
}

/// As the application does: `SET ROLE immoflowme_app`, one tenant, and a
/// read of a protected table. `Ok(true)` when it sees rows, `Err` with the
/// server's message when refused.
async fn app_reads_invoice_lines(target: &ConnInfo) -> Result<bool, String> {
    let mut conn = connect(target).await;
    let tenant: i64 = sqlx::query_scalar(
        "SELECT mi.tenant_id FROM invoice_lines il JOIN monthly_invoices mi ON mi.id = il.invoice_id LIMIT 1",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET ROLE immoflowme_app; SET app.tenant_id = '{tenant}'"
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    let seen: Result<i64, _> = sqlx::query_scalar("SELECT count(*) FROM invoice_lines")
        .fetch_one(&mut conn)
        .await;
    conn.close().await.unwrap();
    seen.map(|n| n > 0).map_err(|e| e.to_string())
}

/// Rewrites the backup's manifest in the store.
async fn tamper_manifest(env: &EmbeddedEnvironment, backup: &BackupReport, change: impl FnOnce(&mut BackupManifest)) {
    let mut manifest = backup.manifest.clone();
    change(&mut manifest);
    env.store()
        .put_bytes(&backup.manifest_key, manifest.to_json(), "application/json")
        .await
        .unwrap();
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Takes this binary's turn and makes sure its temp dir is in place; the
/// turn ends by removing that dir if the test left it empty (as it must).
async fn isolated() -> Turn {
    static SERIAL: Mutex<()> = Mutex::const_new(());
    let serial = SERIAL.lock().await;
    std::fs::create_dir_all(scratch_dir()).unwrap();
    Turn { _serial: serial }
}

/// One test's turn ([`isolated`]).
struct Turn {
    _serial: MutexGuard<'static, ()>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        // Fails, and keeps it, when not empty (DRILL_KEEP=1 left something to inspect).
        let _ = std::fs::remove_dir(scratch_dir());
    }
}

/// `$TMPDIR/drillbook-test-<pid>`: where every temp dir of this process goes.
fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = std::env::temp_dir();
        // Empty dirs of earlier runs; kept ones (DRILL_KEEP=1) are not empty.
        for entry in std::fs::read_dir(&base).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("drillbook-test-")
                && !Path::new("/proc").join(pid).exists()
            {
                let _ = std::fs::remove_dir(entry.path());
            }
        }
        let dir = base.join(format!("drillbook-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        tempfile::env::override_temp_dir(&dir).expect("nothing else sets tempfile's temp dir");
        dir
    })
}

/// Names in the scratch dir: clusters, S3 data, restore downloads.
fn scratch_entries() -> BTreeSet<String> {
    std::fs::read_dir(scratch_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// What a refused operation must not change.
#[derive(Debug, PartialEq)]
struct Leftovers {
    /// Temp dirs (`drillbook-restore-*`, `drillbook-pg-*`, ...).
    dirs: BTreeSet<String>,
    /// Every database on the restore's target server.
    databases: Vec<String>,
    /// Every object in the bucket, with size and time.
    objects: Vec<(String, u64, Option<DateTime<Utc>>)>,
}

impl Leftovers {
    async fn take(env: &EmbeddedEnvironment, server: &ConnInfo) -> Self {
        let mut conn = connect(server).await;
        let databases = sqlx::query_scalar("SELECT datname FROM pg_database ORDER BY 1")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        let mut objects: Vec<_> = env
            .store()
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|o| (o.key, o.size, o.last_modified))
            .collect();
        objects.sort();
        let dirs = scratch_entries();
        for library_dir in ["drillbook-pg-", "drillbook-s3-"] {
            assert!(
                dirs.iter().any(|d| d.starts_with(library_dir)),
                "the listing sees the library's dirs: {dirs:?}"
            );
        }
        Self {
            dirs,
            databases,
            objects,
        }
    }

    fn assert_same_as(&self, before: &Self) {
        let new_dirs: Vec<_> = self.dirs.difference(&before.dirs).collect();
        assert!(new_dirs.is_empty(), "temp dirs left behind: {new_dirs:?}");
        assert_eq!(self, before, "databases or objects changed");
    }
}

fn fixture() -> FixtureSpec {
    // Ending now: rows the workload appends must sort after the fixture's.
    FixtureSpec::ending_now(Profile::Small, 42)
}

async fn seeded_env() -> (EmbeddedEnvironment, SeedSummary) {
    let env = EmbeddedEnvironment::start().await.unwrap();
    let seeded = env.seed(fixture()).await.unwrap();
    (env, seeded)
}

async fn restore(
    env: &EmbeddedEnvironment,
    server: &ConnInfo,
    options: RestoreOptions,
) -> Result<RestoreReport, RestoreError> {
    restore_database(env.binaries(), server, env.store(), &options).await
}

/// The playbook's 3.2 step 1:
/// `aws s3 ls $BACKUP_BUCKET/daily/ --recursive | sort | tail -1 | awk '{print $4}'`.
/// `aws s3 ls` prints `<date> <time> <size, right-aligned> <key>`; the sort is
/// by time, then by the line's text as `sort` sees it.
async fn playbook_latest_backup(store: &Store) -> String {
    let mut lines: Vec<(Option<DateTime<Utc>>, String)> = store
        .list(layout::DAILY)
        .await
        .unwrap()
        .into_iter()
        .map(|object| {
            let shown = object
                .last_modified
                .map_or("".to_owned(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string());
            (
                object.last_modified,
                format!("{shown} {:>10} {}", object.size, object.key),
            )
        })
        .collect();
    assert!(!lines.is_empty(), "nothing under daily/");
    let mut text_only: Vec<String> = lines.iter().map(|(_, line)| line.clone()).collect();
    lines.sort();
    text_only.sort();
    let last = &lines.last().unwrap().1;
    // What `sort` alone (second resolution) picks must be the same object.
    assert_eq!(
        text_only.last().unwrap(),
        last,
        "`sort` on the text agrees with LastModified order"
    );
    last.split_whitespace()
        .nth(3)
        .expect("aws s3 ls lines have four fields")
        .to_owned()
}

/// Databases a restore created (`immoflowme_restore_%`).
async fn restore_databases(server: &ConnInfo) -> Vec<String> {
    let mut conn = connect(server).await;
    let names =
        sqlx::query_scalar(r"SELECT datname FROM pg_database WHERE datname LIKE 'immoflowme\_restore\_%' ORDER BY 1")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    conn.close().await.unwrap();
    names
}

async fn count_rows(target: &ConnInfo, table: &str) -> u64 {
    let mut conn = connect(target).await;
    let sql = format!("SELECT count(*) FROM {}", quote_ident(table));
    let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    count as u64
}

async fn facts_of(target: &ConnInfo) -> Vec<(String, u64)> {
    let mut conn = connect(target).await;
    let facts = table_facts(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    facts.into_iter().map(|(table, facts)| (table, facts.rows)).collect()
}

fn manifest_counts(manifest: &BackupManifest) -> Vec<(String, u64)> {
    assert!(!manifest.tables.is_empty());
    manifest
        .tables
        .iter()
        .map(|(table, facts)| (table.clone(), facts.rows))
        .collect()
}

/// `count(*)` of every table the manifest names, counted here rather than
/// through the library that wrote the manifest.
async fn restored_counts(target: &ConnInfo, manifest: &BackupManifest) -> Vec<(String, u64)> {
    let mut conn = connect(target).await;
    let mut counts = Vec::new();
    for table in manifest.tables.keys() {
        let (schema, name) = table.split_once('.').expect("schema.table");
        let sql = format!("SELECT count(*) FROM {}.{}", quote_ident(schema), quote_ident(name));
        let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut conn)
            .await
            .unwrap();
        counts.push((table.clone(), count as u64));
    }
    conn.close().await.unwrap();
    counts
}

/// The last `audit_logs` row in chain order: `(id, hash)`.
async fn chain_head(target: &ConnInfo) -> (i64, Option<String>) {
    let mut conn = connect(target).await;
    let head = sqlx::query_as("SELECT id, hash FROM audit_logs ORDER BY created_at DESC, id DESC LIMIT 1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    head
}

/// The write order of issue 15: a dump staged as a multipart upload at its
/// `daily/` key lists nowhere and reads as missing until published; a dead
/// backup's staged dump (its upload recorded under `incoming/`) is aborted
/// by the next sweep with the rest of its leftovers; published, the dump
/// appears whole with the SHA-256 staging computed.
#[tokio::test]
async fn a_staged_dump_is_invisible_until_published_and_a_dead_backups_is_aborted() {
    use drillbook::backup::sweep_leftovers;

    let s3 = drillbook::env::EmbeddedS3::start().unwrap();
    let store = Store::connect(s3.config("staged-dumps")).await;
    store.ensure_bucket().await.unwrap();
    let unfinished = || {
        std::fs::read_dir(s3.root())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".upload-")
            })
            .count()
    };
    // Two parts and a bit: the parts upload while the next is read.
    let bytes: Vec<u8> = (0..(2 * drillbook::store::PART_SIZE + 1000))
        .map(|i| (i % 251) as u8)
        .collect();

    // A dead backup: owner gone, upload recorded, manifest written, never published.
    let dead = layout::stamp(Utc::now() - chrono::Duration::seconds(5));
    let upload = store.begin_upload(&layout::dump_key(&dead, "db")).await.unwrap();
    let staged = store.stage(&upload, &mut &bytes[..]).await.unwrap();
    assert_eq!(staged.transfer.sha256, sha256_hex(&bytes));
    store
        .put_bytes(&layout::incoming_upload_key(&dead), upload.to_record(), "text/plain")
        .await
        .unwrap();
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    // A pid above the kernel's limit: its process is known to be gone.
    let gone = format!("{} 4194305 1", boot.trim());
    store
        .put_bytes(&layout::incoming_owner_key(&dead), gone.into_bytes(), "text/plain")
        .await
        .unwrap();
    store
        .put_bytes(&layout::manifest_key(&dead), b"{}".to_vec(), "application/json")
        .await
        .unwrap();
    assert_eq!(store.list(layout::DAILY).await.unwrap(), vec![], "a staged dump listed");
    assert!(matches!(
        store.get_bytes(&upload.key).await,
        Err(drillbook::store::StoreError::NotFound { .. })
    ));
    assert_eq!(unfinished(), 1);
    // The embedded server cannot list uploads; the sweep goes by the record.
    assert_eq!(store.list_uploads(layout::DAILY).await.unwrap(), None);

    let sweep = sweep_leftovers(&store, false).await.unwrap();
    assert_eq!(sweep.removed, vec![dead.clone()]);
    assert_eq!(unfinished(), 0, "the dead backup's upload was not aborted");
    for prefix in [layout::INCOMING, layout::MANIFESTS, layout::DAILY] {
        assert_eq!(store.list(prefix).await.unwrap(), vec![], "{prefix} left");
    }

    // Published: whole, at once, with the staged SHA-256.
    let live = layout::stamp(Utc::now());
    let upload = store.begin_upload(&layout::dump_key(&live, "db")).await.unwrap();
    let staged = store.stage(&upload, &mut &bytes[..]).await.unwrap();
    let sha256 = staged.transfer.sha256.clone();
    store.publish(&upload, staged).await.unwrap();
    let listed = store.list(layout::DAILY).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].size, bytes.len() as u64);
    assert_eq!(sha256_hex(&store.get_bytes(&upload.key).await.unwrap()), sha256);
    // Aborting what is published already is no error (a sweep after a lost answer).
    store.abort_upload(&upload).await.unwrap();
    assert_eq!(unfinished(), 0);
    s3.cleanup();
}
