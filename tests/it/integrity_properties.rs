//! Property tests of the integrity checks.
//!
//! - On the pure-Rust model: generated valid ledgers produce no finding (no
//!   false positives); each corruption operator applied at a random place
//!   is reported by the check responsible for it, at the corrupted key (no
//!   false negatives).
//! - Differential: the SQL suite on a real PostgreSQL and the model agree
//!   finding for finding on the same generated ledger after the same
//!   corruption (applied by `drillbook::fault` to the database and by the
//!   model's operator to the model), in one shared cluster, one database per
//!   case.
//!
//! - Concurrent writers: valid chains whose ids run out of chain order (as
//!   ids drawn before the trigger's lock do) have no finding, in the model
//!   and in SQL; a row moved in time, what the ordering check once judged
//!   ids for, is still caught by another check at a known key.
//!
//! Failing seeds are kept in `proptest-regressions/integrity_properties.txt`
//! (committed) and replayed first.

use std::collections::BTreeSet;

use drillbook::env::EmbeddedEnvironment;
use drillbook::fault::{self, Disposable};
use drillbook::fixtures::{PROTECTED_TABLES, apply_schema, push_row};
use drillbook::integrity::model::{Ledger, Size};
use drillbook::integrity::suite::{SuiteOptions, run_suite};
use drillbook::integrity::{CheckName, Expected};
use drillbook::pg::ConnInfo;
use drillbook::playbook::PlaybookAnswers;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};
use sqlx::{Connection, PgConnection};

/// The committed seeds. proptest's default (`SourceParallel`) would put
/// them beside the test's source, under `tests/it/`, away from the
/// other seeds in `proptest-regressions/`.
/// `Direct` with a relative path depends on the working directory (and a
/// missing file is silently treated as "no seeds"), so the path is absolute.
const REGRESSIONS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/proptest-regressions/integrity_properties.txt"
);

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(REGRESSIONS))),
        ..Config::default()
    }
}

fn ledgers() -> impl Strategy<Value = Ledger> {
    (any::<u64>(), 1..=4i64, 1..=3i64, 1..=4i64, 1..=60i64).prop_map(
        |(seed, tenants, invoices_per_tenant, billing_runs, audit_rows)| {
            Ledger::sample(
                seed,
                Size {
                    tenants,
                    invoices_per_tenant,
                    billing_runs,
                    audit_rows,
                },
            )
        },
    )
}

/// A corruption, with its place as a fraction of the table (0..1000 per mille).
#[derive(Debug, Clone, Copy)]
enum Op {
    DeleteAudit(u16),
    TamperLine(u16, i64),
    TamperEntry(u16),
    Unbalance(u16, i64),
    Orphan(u16),
    DisableRls(u16),
    StuckRun(u16),
    TamperPayload(u16),
    Rehash(u16),
    ForgeGenesis(u16),
    NullHash(u16),
    TruncateTail(u16),
}

fn ops() -> impl Strategy<Value = Op> {
    let at = 0..1000u16;
    prop_oneof![
        at.clone().prop_map(Op::DeleteAudit),
        (at.clone(), 2..500_000i64).prop_map(|(a, d)| Op::TamperLine(a, d)),
        at.clone().prop_map(Op::TamperEntry),
        (at.clone(), 2..500_000i64).prop_map(|(a, c)| Op::Unbalance(a, c)),
        at.clone().prop_map(Op::Orphan),
        at.clone().prop_map(Op::DisableRls),
        at.clone().prop_map(Op::StuckRun),
        at.clone().prop_map(Op::TamperPayload),
        at.clone().prop_map(Op::Rehash),
        at.clone().prop_map(Op::ForgeGenesis),
        at.clone().prop_map(Op::NullHash),
        at.prop_map(Op::TruncateTail),
    ]
}

fn pick<T: Copy>(items: &[T], per_mille: u16) -> T {
    items[usize::from(per_mille) * items.len() / 1000]
}

/// The operator's concrete arguments on this ledger, so the model and the
/// database get exactly the same corruption.
#[derive(Debug, Clone)]
enum Concrete {
    DeleteAudit(i64),
    TamperLine(i64, i64),
    TamperEntry(i64, i64),
    Unbalance(i64, i64),
    Orphan(i64),
    DisableRls(&'static str),
    StuckRun(i64),
    TamperPayload(i64),
    Rehash(i64),
    ForgeGenesis(i64),
    NullHash(i64),
    TruncateTail(usize),
}

fn concrete(ledger: &Ledger, op: Op) -> Concrete {
    let chain: Vec<i64> = ledger.chain().iter().map(|r| r.id).collect();
    let live: Vec<i64> = ledger
        .invoice_lines
        .iter()
        .filter(|l| !l.deleted)
        .map(|l| l.id)
        .collect();
    match op {
        Op::DeleteAudit(at) => Concrete::DeleteAudit(pick(&chain, at)),
        Op::TamperLine(at, delta) => Concrete::TamperLine(pick(&live, at), delta),
        Op::TamperEntry(at) => {
            let ids: Vec<i64> = ledger.ledger_entries.iter().map(|e| e.id).collect();
            // Beyond the 10,000.00 threshold whatever the tenant's balance (at most 9,000.00).
            Concrete::TamperEntry(pick(&ids, at), 2_000_000)
        }
        Op::Unbalance(at, cents) => {
            let ids: Vec<i64> = ledger.invoices.iter().map(|i| i.id).collect();
            Concrete::Unbalance(pick(&ids, at), cents)
        }
        Op::Orphan(at) => Concrete::Orphan(pick(&live, at)),
        Op::DisableRls(at) => Concrete::DisableRls(pick(&PROTECTED_TABLES, at)),
        Op::StuckRun(at) => {
            let ids: Vec<i64> = ledger.billing_runs.iter().map(|r| r.run_id).collect();
            Concrete::StuckRun(pick(&ids, at))
        }
        Op::TamperPayload(at) => Concrete::TamperPayload(pick(&chain, at)),
        Op::Rehash(at) => Concrete::Rehash(pick(&chain, at)),
        // Not the first row: the first row's GENESIS is legitimate.
        Op::ForgeGenesis(at) if chain.len() > 1 => Concrete::ForgeGenesis(pick(&chain[1..], at)),
        Op::ForgeGenesis(_) => Concrete::TamperPayload(chain[0]),
        Op::NullHash(at) => Concrete::NullHash(pick(&chain, at)),
        Op::TruncateTail(at) => Concrete::TruncateTail(1 + usize::from(at) * chain.len() / 1000),
    }
}

fn apply_to_model(ledger: &mut Ledger, op: &Concrete) -> Vec<Expected> {
    match *op {
        Concrete::DeleteAudit(id) => ledger.delete_audit_rows(&[id]),
        Concrete::TamperLine(id, delta) => ledger.tamper_amount("invoice_lines", id, delta),
        Concrete::TamperEntry(id, delta) => ledger.tamper_amount("ledger_entries", id, delta),
        Concrete::Unbalance(id, cents) => ledger.unbalance_invoice(id, cents),
        Concrete::Orphan(id) => ledger.orphan_invoice_line(id),
        Concrete::DisableRls(table) => ledger.disable_rls(table),
        Concrete::StuckRun(id) => ledger.stuck_billing_run(id),
        Concrete::TamperPayload(id) => ledger.tamper_audit_payload(id),
        Concrete::Rehash(id) => ledger.tamper_and_rehash(id),
        Concrete::ForgeGenesis(id) => ledger.forge_genesis(id),
        Concrete::NullHash(id) => ledger.null_hash(id),
        Concrete::TruncateTail(n) => ledger.truncate_chain_tail(n),
    }
}

/// The check an operator must trip (at least).
fn responsible(op: &Concrete) -> CheckName {
    match op {
        Concrete::DeleteAudit(_) => CheckName::ChainLinks,
        Concrete::TamperLine(..) | Concrete::Unbalance(..) => CheckName::InvoiceBalance,
        Concrete::TamperEntry(..) => CheckName::LedgerConsistency,
        Concrete::Orphan(_) => CheckName::OrphanedInvoiceLines,
        Concrete::DisableRls(_) => CheckName::RlsEnabled,
        Concrete::StuckRun(_) => CheckName::BillingRuns,
        Concrete::TamperPayload(_) => CheckName::ChainContent,
        Concrete::Rehash(_) | Concrete::TruncateTail(_) => CheckName::ChainAnchor,
        Concrete::ForgeGenesis(_) => CheckName::ChainGenesis,
        Concrete::NullHash(_) => CheckName::ChainNullHash,
    }
}

#[test]
fn committed_regression_seeds_are_where_the_runner_reads_them() {
    // The runner replays every `cc <hex>` line of this file before new cases.
    let text = std::fs::read_to_string(REGRESSIONS).expect("the committed regression file exists");
    let seeds: Vec<&str> = text
        .lines()
        .filter_map(|line| line.split('#').next())
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    assert!(!seeds.is_empty(), "no seeds in {REGRESSIONS}");
    for seed in seeds {
        let hex = seed.strip_prefix("cc ").expect("a ChaCha seed line");
        assert!(hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()), "{seed}");
    }
    // And the configured persistence resolves to exactly this file.
    let persistence = config(1).failure_persistence.expect("persistence configured");
    assert_eq!(
        format!("{persistence:?}"),
        format!("{:?}", FileFailurePersistence::Direct(REGRESSIONS))
    );
}

#[test]
fn valid_ledgers_have_no_findings() {
    let mut runner = TestRunner::new(config(256));
    runner
        .run(&ledgers(), |ledger| {
            let anchor = ledger.anchor();
            prop_assert_eq!(ledger.check_all(None).unwrap(), vec![]);
            prop_assert_eq!(ledger.check_all(anchor.as_ref()).unwrap(), vec![]);
            Ok(())
        })
        .unwrap();
}

/// Ledgers whose chain concurrent writers wrote: ids out of chain order,
/// some ties the ids order as the chain links them.
fn concurrent_ledgers() -> impl Strategy<Value = Ledger> {
    (ledgers(), any::<u64>()).prop_map(|(mut ledger, seed)| {
        ledger.as_written_concurrently(seed);
        ledger
    })
}

#[test]
fn valid_chains_written_concurrently_have_no_findings() {
    let mut runner = TestRunner::new(config(256));
    runner
        .run(&concurrent_ledgers(), |ledger| {
            let anchor = ledger.anchor();
            prop_assert_eq!(ledger.check_all(None).unwrap(), vec![]);
            prop_assert_eq!(ledger.check_all(anchor.as_ref()).unwrap(), vec![]);
            Ok(())
        })
        .unwrap();
}

/// A row moved in time: which row (per mille of the chain), to which row's
/// time (per mille), how many microseconds off it (-1, 0 = a tie, +1), and
/// whether its hash is recomputed.
#[derive(Debug, Clone, Copy)]
struct Move {
    row: u16,
    to: u16,
    offset: i64,
    rehash: bool,
}

fn moves() -> impl Strategy<Value = Move> {
    (0..1000u16, 0..1000u16, -1..=1i64, any::<bool>()).prop_map(|(row, to, offset, rehash)| Move {
        row,
        to,
        offset,
        rehash,
    })
}

/// The moved row's id, its new time and whether it is re-hashed, on this
/// ledger. A one-row chain is not re-hashed: rewritten whole, it is another
/// chain to the anchor ([`drillbook::integrity::chain::AnchorMismatch`]).
fn concrete_move(ledger: &Ledger, m: Move) -> (i64, chrono::DateTime<chrono::Utc>, bool) {
    let chain = ledger.chain();
    let to = pick(&chain, m.to).created_at + chrono::Duration::microseconds(m.offset);
    (pick(&chain, m.row).id, to, m.rehash && chain.len() > 1)
}

#[test]
fn a_row_moved_in_time_is_caught_without_judging_ids() {
    let mut runner = TestRunner::new(config(512));
    runner
        .run(&(concurrent_ledgers(), moves()), |(mut ledger, m)| {
            let anchor = ledger.anchor();
            let (id, to, rehash) = concrete_move(&ledger, m);
            let before = ledger.clone();
            let expected = ledger.move_audit_row(id, to, rehash);
            let findings = ledger.check_all(anchor.as_ref()).unwrap();
            // Every move that changed the chain is caught, at the key the
            // operator names, by a check other than chain_ordering.
            prop_assert_eq!(expected.is_empty(), ledger == before, "{:?} {:?}", m, expected);
            for want in &expected {
                prop_assert!(want.check != CheckName::ChainOrdering);
                prop_assert!(
                    findings.iter().any(|f| want.matches(f)),
                    "{m:?}: expected {want:?}, found {findings:#?}"
                );
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn an_empty_chain_is_only_an_empty_critical_table() {
    let ledger = Ledger::sample(
        7,
        Size {
            tenants: 2,
            invoices_per_tenant: 2,
            billing_runs: 2,
            audit_rows: 0,
        },
    );
    let findings = ledger.check_all(None).unwrap();
    let keys: Vec<_> = findings.iter().map(|f| (f.check, f.table.as_str())).collect();
    assert_eq!(keys, vec![(CheckName::CriticalTablesPresent, "audit_logs")]);
}

#[test]
fn every_corruption_is_found_where_it_was_made() {
    let mut runner = TestRunner::new(config(512));
    runner
        .run(&(ledgers(), ops()), |(mut ledger, op)| {
            let anchor = ledger.anchor();
            let op = concrete(&ledger, op);
            let expected = apply_to_model(&mut ledger, &op);
            let findings = ledger.check_all(anchor.as_ref()).unwrap();
            if expected.is_empty() {
                // Only a deleted newest row leaves nothing in the database to
                // see: the anchor must.
                prop_assert!(matches!(op, Concrete::DeleteAudit(_)), "{op:?} promised no finding");
                prop_assert!(
                    findings.iter().any(|f| f.check == CheckName::ChainAnchor),
                    "{op:?}: no chain_anchor finding in {findings:#?}"
                );
            } else {
                let check = responsible(&op);
                prop_assert!(
                    expected.iter().any(|e| e.check == check)
                        || (check == CheckName::ChainLinks
                            && expected.iter().any(|e| e.check == CheckName::ChainGenesis)),
                    "{op:?}: {check} not among the expected findings {expected:?}"
                );
            }
            for want in &expected {
                prop_assert!(
                    findings.iter().any(|f| want.matches(f)),
                    "{op:?}: expected {want:?}, found {findings:#?}"
                );
            }
            Ok(())
        })
        .unwrap();
}

// ---------------------------------------------------------------------------
// Differential: SQL suite vs model.

fn ts(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string()
}

fn cents(amount: i64) -> String {
    format!(
        "{}{}.{:02}",
        if amount < 0 { "-" } else { "" },
        amount.abs() / 100,
        amount.abs() % 100
    )
}

async fn copy(conn: &mut PgConnection, table: &str, columns: &str, rows: Vec<Vec<Option<String>>>) {
    let mut data = Vec::new();
    for row in &rows {
        let fields: Vec<Option<&str>> = row.iter().map(|f| f.as_deref()).collect();
        push_row(&mut data, &fields);
    }
    let statement = format!("COPY {table} ({columns}) FROM STDIN");
    let mut sink = conn.copy_in_raw(&statement).await.unwrap();
    sink.send(data).await.unwrap();
    sink.finish().await.unwrap();
}

/// Creates `database` on the shared cluster with the fixture schema and the
/// model's rows, hashes as the model has them (triggers off for the load).
async fn load(admin: &ConnInfo, database: &str, ledger: &Ledger) -> ConnInfo {
    drillbook::pg::create_database(admin, database).await.unwrap();
    let target = admin.with_database(database);
    let mut conn = PgConnection::connect_with(&target.connect_options()).await.unwrap();
    apply_schema(&mut conn).await.unwrap();
    sqlx::raw_sql("SET session_replication_role = replica")
        .execute(&mut conn)
        .await
        .unwrap();
    let s = |v: i64| Some(v.to_string());
    let at = "2026-01-01 00:00:00+00".to_owned();
    copy(
        &mut conn,
        "tenants",
        "id, name, email, created_at",
        ledger
            .tenants
            .iter()
            .map(|t| {
                vec![
                    s(t.id),
                    Some(format!("Tenant {}", t.id)),
                    Some(format!("t{}@x", t.id)),
                    Some(ts(t.created_at)),
                ]
            })
            .collect(),
    )
    .await;
    copy(
        &mut conn,
        "monthly_invoices",
        "id, tenant_id, period, total, status, created_at",
        ledger
            .invoices
            .iter()
            .map(|i| {
                let status = if i.paid { "paid" } else { "open" };
                vec![
                    s(i.id),
                    s(i.tenant_id),
                    Some("2026-01-01".into()),
                    Some(cents(i.total_cents)),
                    Some(status.into()),
                    Some(ts(i.created_at)),
                ]
            })
            .collect(),
    )
    .await;
    copy(
        &mut conn,
        "invoice_lines",
        "id, invoice_id, line_type, amount, description, deleted_at, created_at",
        ledger
            .invoice_lines
            .iter()
            .map(|l| {
                vec![
                    s(l.id),
                    s(l.invoice_id),
                    Some(l.line_type.as_str().into()),
                    Some(cents(l.amount_cents)),
                    Some("line".into()),
                    l.deleted.then(|| at.clone()),
                    Some(at.clone()),
                ]
            })
            .collect(),
    )
    .await;
    copy(
        &mut conn,
        "ledger_entries",
        "id, tenant_id, type, amount, reference, created_at",
        ledger
            .ledger_entries
            .iter()
            .map(|e| {
                vec![
                    s(e.id),
                    s(e.tenant_id),
                    Some(e.kind.as_str().into()),
                    Some(cents(e.amount_cents)),
                    Some("ref".into()),
                    Some(at.clone()),
                ]
            })
            .collect(),
    )
    .await;
    copy(
        &mut conn,
        "payments",
        "id, tenant_id, invoice_id, amount, method, paid_at, created_at",
        ledger
            .payments
            .iter()
            .map(|p| {
                vec![
                    s(p.id),
                    s(p.tenant_id),
                    s(p.invoice_id),
                    Some(cents(p.amount_cents)),
                    Some("sepa".into()),
                    Some(at.clone()),
                    Some(at.clone()),
                ]
            })
            .collect(),
    )
    .await;
    copy(
        &mut conn,
        "billing_runs",
        "run_id, period, status, expected_lines, created_at",
        ledger
            .billing_runs
            .iter()
            .map(|r| {
                vec![
                    s(r.run_id),
                    Some("2026-01-01".into()),
                    Some(r.status.clone()),
                    Some("1".into()),
                    Some(ts(r.created_at)),
                ]
            })
            .collect(),
    )
    .await;
    copy(
        &mut conn,
        "audit_logs",
        "id, created_at, tenant_id, actor, action, entity_type, entity_id, payload, previous_hash, hash",
        ledger
            .audit_logs
            .iter()
            .map(|r| {
                vec![
                    s(r.id),
                    Some(ts(r.created_at)),
                    r.tenant_id.map(|t| t.to_string()),
                    Some(r.actor.clone()),
                    Some(r.action.clone()),
                    Some(r.entity_type.clone()),
                    Some(r.entity_id.clone()),
                    Some(r.payload.clone()),
                    Some(r.previous_hash.clone()),
                    r.hash.clone(),
                ]
            })
            .collect(),
    )
    .await;
    for table in PROTECTED_TABLES.iter().filter(|t| !ledger.rls_enabled.contains(**t)) {
        let sql = format!("ALTER TABLE {table} DISABLE ROW LEVEL SECURITY");
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    conn.close().await.unwrap();
    target
}

async fn apply_to_database(d: &Disposable, op: &Concrete) -> Vec<Expected> {
    let injected = match *op {
        Concrete::DeleteAudit(id) => fault::delete_rows(d, "audit_logs", &[id]).await,
        Concrete::TamperLine(id, delta) => fault::tamper_amount(d, "invoice_lines", id, delta).await,
        Concrete::TamperEntry(id, delta) => fault::tamper_amount(d, "ledger_entries", id, delta).await,
        Concrete::Unbalance(id, cents) => fault::unbalance_invoice(d, id, cents).await,
        Concrete::Orphan(id) => fault::orphan_invoice_line(d, id).await,
        Concrete::DisableRls(table) => fault::disable_rls(d, table).await,
        Concrete::StuckRun(id) => fault::stuck_billing_run(d, id).await,
        Concrete::TamperPayload(id) => fault::tamper_audit_payload(d, id).await,
        Concrete::Rehash(id) => fault::tamper_and_rehash(d, id).await,
        Concrete::ForgeGenesis(id) => fault::forge_genesis(d, id).await,
        Concrete::NullHash(id) => fault::null_hash(d, id).await,
        Concrete::TruncateTail(n) => fault::truncate_chain_tail(d, n as i64).await,
    };
    injected.unwrap().expect
}

type Key = (CheckName, String, Option<String>);

fn keys(findings: &[drillbook::integrity::Finding]) -> BTreeSet<Key> {
    findings
        .iter()
        .map(|f| (f.check, f.table.clone(), f.key.clone()))
        .collect()
}

#[test]
fn sql_suite_and_model_agree_finding_for_finding() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = rt.block_on(EmbeddedEnvironment::start()).unwrap();
    let admin = env.primary().admin();
    let case = std::sync::atomic::AtomicU32::new(0);
    let mut runner = TestRunner::new(config(24));
    let outcome = runner.run(&(ledgers(), ops()), |(mut ledger, op)| {
        let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let database = format!("differential_{n}");
        let target = rt.block_on(load(&admin, &database, &ledger));
        let anchor = ledger.anchor();
        let op = concrete(&ledger, op);
        let d = Disposable::embedded(&env, &target).unwrap();
        let db_expected: BTreeSet<Expected> = rt.block_on(apply_to_database(&d, &op)).into_iter().collect();
        let model_expected: BTreeSet<Expected> = apply_to_model(&mut ledger, &op).into_iter().collect();

        let options = SuiteOptions {
            anchor: anchor.clone(),
            ..SuiteOptions::default()
        };
        let report = rt.block_on(run_suite(&target, &options)).unwrap();
        let model = ledger.check_all(anchor.as_ref()).unwrap();
        prop_assert_eq!(keys(&report.findings), keys(&model), "{:?}", op);
        prop_assert!(report.incomplete().is_empty(), "{:?}", report.incomplete());

        // The playbook's verbatim queries agree with the model's 4.1-4.5 too.
        let answers = rt.block_on(PlaybookAnswers::collect(&target)).unwrap();
        let count = |check| model.iter().filter(|f| f.check == check).count() as i64;
        prop_assert_eq!(answers.broken_links, count(CheckName::ChainLinks));
        let column = |rows: &[drillbook::playbook::TextRow]| -> BTreeSet<String> {
            rows.iter().filter_map(|r| r[0].1.clone()).collect()
        };
        let model_keys = |check| -> BTreeSet<String> {
            model
                .iter()
                .filter(|f| f.check == check)
                .filter_map(|f| f.key.clone())
                .collect()
        };
        prop_assert_eq!(
            column(&answers.unfinished_billing_runs),
            model_keys(CheckName::BillingRuns)
        );
        prop_assert_eq!(
            column(&answers.unbalanced_invoices),
            model_keys(CheckName::InvoiceBalance)
        );
        prop_assert_eq!(
            column(&answers.ledger_imbalances),
            model_keys(CheckName::LedgerConsistency)
        );
        let orphans: Vec<i64> = answers.orphans.iter().map(|(_, n)| *n).collect();
        prop_assert_eq!(
            orphans,
            vec![
                count(CheckName::OrphanedInvoiceLines),
                count(CheckName::OrphanedLedgerEntries)
            ]
        );

        // What fault.rs promises is what the model's operator promises.
        prop_assert_eq!(db_expected, model_expected, "{:?}", op);
        Ok(())
    });
    rt.block_on(env.cleanup()).unwrap();
    outcome.unwrap();
}

#[test]
fn sql_suite_and_model_agree_on_concurrent_chains_and_moved_rows() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = rt.block_on(EmbeddedEnvironment::start()).unwrap();
    let admin = env.primary().admin();
    let case = std::sync::atomic::AtomicU32::new(0);
    let mut runner = TestRunner::new(config(12));
    let outcome = runner.run(&(concurrent_ledgers(), moves()), |(mut ledger, m)| {
        let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let target = rt.block_on(load(&admin, &format!("concurrent_{n}"), &ledger));
        let anchor = ledger.anchor();
        let options = SuiteOptions {
            anchor: anchor.clone(),
            ..SuiteOptions::default()
        };

        // Valid as written: verify and the playbook's 4.1 see nothing.
        let report = rt.block_on(run_suite(&target, &options)).unwrap();
        prop_assert!(report.is_clean(), "{}", report.human(false));
        let answers = rt.block_on(PlaybookAnswers::collect(&target)).unwrap();
        prop_assert_eq!(answers.broken_links, 0);

        let (id, to, rehash) = concrete_move(&ledger, m);
        let d = Disposable::embedded(&env, &target).unwrap();
        let injected = rt.block_on(fault::move_audit_row(&d, id, to, rehash)).unwrap();
        let model_expected = ledger.move_audit_row(id, to, rehash);
        prop_assert_eq!(&injected.expect, &model_expected, "{:?}", m);

        let report = rt.block_on(run_suite(&target, &options)).unwrap();
        let model = ledger.check_all(anchor.as_ref()).unwrap();
        prop_assert_eq!(keys(&report.findings), keys(&model), "{:?}", m);
        let answers = rt.block_on(PlaybookAnswers::collect(&target)).unwrap();
        let links = model.iter().filter(|f| f.check == CheckName::ChainLinks).count() as i64;
        prop_assert_eq!(answers.broken_links, links);
        Ok(())
    });
    rt.block_on(env.cleanup()).unwrap();
    outcome.unwrap();
}

#[test]
fn operators_refuse_a_database_the_environment_does_not_own() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let env = EmbeddedEnvironment::start().await.unwrap();
        let other = EmbeddedEnvironment::start().await.unwrap();
        // A real, reachable database, but not this environment's.
        let foreign = other.source();
        let err = Disposable::embedded(&env, &foreign).unwrap_err();
        let message = err.to_string();
        assert!(message.starts_with("refusing to inject an incident"), "{message}");
        assert!(
            !message.contains(foreign.password.expose()),
            "password leaked: {message}"
        );
        // A typed URL to the same host on another port is refused too.
        let mut elsewhere = env.source();
        elsewhere.port = elsewhere.port.wrapping_add(1);
        assert!(Disposable::embedded(&env, &elsewhere).is_err());
        // Its own database is accepted.
        let own = Disposable::embedded(&env, &env.source()).unwrap();
        assert_eq!(own.target(), &env.source());
        other.cleanup().await.unwrap();
        env.cleanup().await.unwrap();
    });
}
