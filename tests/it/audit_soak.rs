//! The audit chain under concurrent writers, as production writes it: several
//! sessions insert at once, as the table owner and as the application role
//! (`SET ROLE immoflowme_app`, each for its own tenant under row-level
//! security), in transactions of 1 to 20 rows. `drillbook verify` (the
//! library suite and the binary) runs again and again during the writes and
//! once after; every run must be clean and the playbook's 4.1 must count 0.
//!
//! And the trigger survives drillbook's own backup and restore
//! (`pg_restore --no-owner --no-acl`): still SECURITY DEFINER with its fixed
//! search_path, owned by the restoring superuser, it keeps one chain.
//!
//! This is issue 11's rows 8 and 9: verify used to report "rows were
//! reordered" for ids drawn before the trigger's lock, and the trigger's head
//! lookup, run under the application role's RLS, forked the chain per tenant.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use drillbook::backup::backup_database;
use drillbook::env::EmbeddedEnvironment;
use drillbook::fixtures::{FixtureSpec, Profile};
use drillbook::integrity::{SuiteOptions, run_suite};
use drillbook::pg::ConnInfo;
use drillbook::playbook::AUDIT_HASH_CHAIN;
use drillbook::restore::{RestoreOptions, restore_database};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sqlx::{Connection, PgConnection};

use crate::common::{BIN, connect, exec};

/// Rows each writer inserts, in transactions of 1 to 20 rows.
const ROWS_PER_WRITER: usize = 100;

/// Verifications that must finish while the writers still write: each
/// writer holds its last transaction back until they have.
const VERIFY_RUNS_DURING: u64 = 3;

/// Who a writer session is.
#[derive(Debug, Clone, Copy)]
enum Writer {
    /// The table owner (the session user), rows for `tenant` (or none).
    Owner { tenant: Option<i64> },
    /// `SET ROLE immoflowme_app; SET app.tenant_id = tenant`.
    App { tenant: i64 },
}

/// One writer session: its rows in transactions of 1 to 20, holding each
/// transaction open a little between rows so that transactions overlap (one
/// that started earlier often commits later). The last transaction waits
/// until `verified` reaches [`VERIFY_RUNS_DURING`].
async fn write(target: ConnInfo, writer: Writer, seed: u64, verified: Arc<AtomicU64>) -> usize {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut conn = connect(&target).await;
    let tenant = match writer {
        Writer::Owner { tenant } => tenant,
        Writer::App { tenant } => {
            exec(
                &mut conn,
                &format!("SET ROLE immoflowme_app; SET app.tenant_id = '{tenant}'"),
            )
            .await;
            Some(tenant)
        }
    };
    let mut written = 0;
    while written < ROWS_PER_WRITER {
        let rows = rng.random_range(1..=20).min(ROWS_PER_WRITER - written);
        while written + rows == ROWS_PER_WRITER && verified.load(Ordering::SeqCst) < VERIFY_RUNS_DURING {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut tx = conn.begin().await.unwrap();
        for _ in 0..rows {
            written += 1;
            sqlx::query(
                "INSERT INTO audit_logs (tenant_id, actor, action, entity_type, entity_id, payload)
                 VALUES ($1, $2, 'invoice.updated', 'monthly_invoice', $3, $4)",
            )
            .bind(tenant)
            .bind(format!("soak:{writer:?}"))
            .bind(rng.random_range(1..1000).to_string())
            .bind(format!("{{\"seed\":{seed},\"n\":{written}}}"))
            .execute(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("{writer:?} insert: {e}"));
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..4))).await;
        }
        tx.commit().await.unwrap();
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..120))).await;
    }
    conn.close().await.unwrap();
    written
}

/// What one verification saw.
#[derive(Debug)]
struct Run {
    findings: usize,
    playbook_4_1: i64,
    shown: String,
}

/// The suite `drillbook verify` runs, and the playbook's 4.1 verbatim.
async fn verify(target: &ConnInfo) -> Run {
    let report = run_suite(target, &SuiteOptions::default()).await.unwrap();
    let mut conn = connect(target).await;
    let chain = AUDIT_HASH_CHAIN.run(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    let playbook_4_1 = chain[0][0].1.as_deref().unwrap().parse().unwrap();
    Run {
        findings: report.findings.len(),
        playbook_4_1,
        shown: report.human(false),
    }
}

/// `drillbook verify --database-url`, the binary: its exit code and output.
async fn verify_binary(target: &ConnInfo) -> (Option<i32>, String) {
    let url = target.url();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(BIN)
            .args(["verify", "--database-url", &url])
            .env_remove("DATABASE_URL")
            .output()
            .unwrap();
        let shown = format!(
            "stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), shown)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verify_stays_clean_while_owner_and_tenants_write_concurrently() {
    let started = Instant::now();
    let env = EmbeddedEnvironment::start().await.unwrap();
    env.seed(FixtureSpec {
        profile: Profile::Small,
        seed: 11,
        until: "2026-06-30T12:00:00Z".parse().unwrap(),
    })
    .await
    .unwrap();
    let target = env.source();
    let mut conn = connect(&target).await;
    let tenants: Vec<i64> = sqlx::query_scalar("SELECT id FROM tenants ORDER BY id LIMIT 4")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let rows_before: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_logs")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    assert_eq!(tenants.len(), 4, "the fixture has at least 4 tenants");

    let writers = [
        Writer::Owner { tenant: None },
        Writer::Owner {
            tenant: Some(tenants[0]),
        },
        Writer::App { tenant: tenants[0] },
        Writer::App { tenant: tenants[1] },
        Writer::App { tenant: tenants[2] },
        Writer::App { tenant: tenants[3] },
    ];
    let done = Arc::new(AtomicBool::new(false));
    let verified_during = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = writers
        .iter()
        .enumerate()
        .map(|(i, writer)| {
            tokio::spawn(write(
                target.clone(),
                *writer,
                1_000 + i as u64,
                verified_during.clone(),
            ))
        })
        .collect();

    // Verify while the writers write: the library suite in a loop, and the
    // binary once alongside it.
    let watcher = {
        let (target, done, verified_during) = (target.clone(), done.clone(), verified_during.clone());
        tokio::spawn(async move {
            let mut runs = Vec::new();
            while !done.load(Ordering::SeqCst) {
                let run = verify(&target).await;
                if !done.load(Ordering::SeqCst) {
                    verified_during.fetch_add(1, Ordering::SeqCst);
                }
                runs.push(run);
            }
            runs
        })
    };
    let binary_during = verify_binary(&target).await;
    let writes_running = !handles.iter().all(|h| h.is_finished());
    let mut inserted = 0;
    for handle in handles {
        inserted += handle.await.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let mut runs = watcher.await.unwrap();
    let during = verified_during.load(Ordering::SeqCst);

    runs.push(verify(&target).await);
    let binary_after = verify_binary(&target).await;

    let mut conn = connect(&target).await;
    let rows_after: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_logs")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();

    let findings: usize = runs.iter().map(|r| r.findings).sum();
    let broken: i64 = runs.iter().map(|r| r.playbook_4_1).sum();
    println!(
        "audit soak: {} sessions ({} owner, {} immoflowme_app), {} tenants, {inserted} rows inserted \
         ({rows_before} -> {rows_after}), {} suite runs ({during} during the writes, 1 after), binary verify \
         exit {:?} during (writes still running after it: {writes_running}) and {:?} after, {findings} findings, \
         4.1 broken links {broken}, {:.1}s",
        writers.len(),
        writers.iter().filter(|w| matches!(w, Writer::Owner { .. })).count(),
        writers.iter().filter(|w| matches!(w, Writer::App { .. })).count(),
        tenants.len(),
        runs.len(),
        binary_during.0,
        binary_after.0,
        started.elapsed().as_secs_f64(),
    );

    assert_eq!(inserted, writers.len() * ROWS_PER_WRITER);
    assert_eq!(rows_after - rows_before, inserted as i64);
    assert!(
        during >= VERIFY_RUNS_DURING,
        "only {during} verifications ran during the writes"
    );
    for (i, run) in runs.iter().enumerate() {
        assert_eq!(
            (run.findings, run.playbook_4_1),
            (0, 0),
            "verification {i} of {}:\n{}",
            runs.len(),
            run.shown
        );
    }
    assert_eq!(
        binary_during.0,
        Some(0),
        "verify during the writes: {}",
        binary_during.1
    );
    assert_eq!(binary_after.0, Some(0), "verify after the writes: {}", binary_after.1);
    env.cleanup().await.unwrap();
}

/// The newest audit row's tenant, and another tenant.
async fn newest_and_other_tenant(conn: &mut PgConnection) -> (i64, i64) {
    sqlx::query_as(
        "WITH newest AS (SELECT tenant_id FROM audit_logs WHERE tenant_id IS NOT NULL
                         ORDER BY created_at DESC, id DESC LIMIT 1)
         SELECT n.tenant_id, (SELECT min(t.id) FROM tenants t WHERE t.id <> n.tenant_id) FROM newest n",
    )
    .fetch_one(conn)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_restored_trigger_keeps_one_chain_for_every_tenant() {
    let env = EmbeddedEnvironment::start().await.unwrap();
    env.seed(FixtureSpec {
        profile: Profile::Small,
        seed: 12,
        until: "2026-06-30T12:00:00Z".parse().unwrap(),
    })
    .await
    .unwrap();
    let (source, admin) = (env.source(), env.primary().admin());
    backup_database(env.binaries(), &source, Some(&admin), env.store())
        .await
        .unwrap();
    let restored = restore_database(env.binaries(), &admin, env.store(), &RestoreOptions::default())
        .await
        .unwrap();
    let target = restored.target.clone();
    let mut conn = connect(&target).await;

    // What came back: a definer function with its search_path, owned by a
    // role RLS does not apply to (the restoring superuser, or the owner).
    let (definer, config, bypasses_rls): (bool, Option<Vec<String>>, bool) = sqlx::query_as(
        "SELECT p.prosecdef, p.proconfig, r.rolsuper OR r.rolbypassrls OR r.oid = c.relowner
         FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner, pg_class c
         WHERE p.proname = 'audit_logs_chain' AND c.relname = 'audit_logs'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    // --no-acl dropped the application's grants: given back, as after a
    // restore. Then a tenant writes while the newest row is another's.
    exec(&mut conn, "GRANT SELECT, INSERT ON audit_logs TO immoflowme_app").await;
    let (newest, other) = newest_and_other_tenant(&mut conn).await;
    exec(
        &mut conn,
        &format!(
            "SET ROLE immoflowme_app; SET app.tenant_id = '{other}';
             INSERT INTO audit_logs (tenant_id, actor, action, entity_type, entity_id, payload)
               VALUES ({other}, 'restored', 'invoice.paid', 'monthly_invoice', '1', '{{}}');
             INSERT INTO audit_logs (tenant_id, actor, action, entity_type, entity_id, payload)
               VALUES ({other}, 'restored', 'invoice.paid', 'monthly_invoice', '2', '{{}}');
             RESET ROLE;"
        ),
    )
    .await;
    let chain = AUDIT_HASH_CHAIN.run(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    assert_ne!(newest, other);
    assert_eq!(chain[0][0].1.as_deref(), Some("0"), "4.1 after tenant {other} wrote");
    let report = run_suite(&target, &SuiteOptions::default()).await.unwrap();
    assert!(report.is_clean(), "{}", report.human(false));
    assert!(definer, "the restored trigger function is not SECURITY DEFINER");
    assert_eq!(config, Some(vec!["search_path=pg_catalog, pg_temp".to_owned()]));
    assert!(bypasses_rls, "the restored trigger function's owner is subject to RLS");
    env.cleanup().await.unwrap();
}
