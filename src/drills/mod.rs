//! The built-in drills, as library code, and their one registry.
//!
//! `drillbook run` ships them in the binary; the `drills` test binary
//! (`drills/main.rs`) runs each as a test. Every drill's `run` returns its
//! judged [`DrillSummary`] (its report already written), which the test
//! asserts passed, or the [`DrillError`] that stopped it: drills fail, they
//! do not panic. A step that fails (bringing up the environment, seeding,
//! a query) stops the drill with [`DrillError::Step`] naming the step; the
//! drill's JUnit report and history record say so
//! ([`Drill::conclude`]), the test fails printing the error's chain, and
//! `drillbook run` reports the drill as failed with that cause.
//!
//! Every drill creates its [`Drill`] first, so that even its setup failing
//! leaves a report, and records the properties the report reads through one
//! helper (`steps::record_setup`: backend, dataset profile, server version).
//! Every drill that seeds seeds `DRILL_PROFILE`'s dataset.
//!
//! [`for_each_drill!`](crate::for_each_drill) is the registry: each drill
//! once, with its scenario, cadence (playbook section 8), backends and lane.
//! Everything else derives from it: [`DRILLS`] (and so `drillbook run
//! --list`, `--cadence`, the backend selection), and the tests of
//! `drills/main.rs`, at `<cadence>::<backends>::<name>` so the nextest
//! profiles in `.config/nextest.toml` select them by path and need no edit
//! when a drill is added.
//!
//! Adding a drill: its file `src/drills/<name>.rs` with `pub async fn run()
//! -> Result<DrillSummary, DrillError>`, its `pub mod <name>;` below (kept outside the registry
//! macro so that `cargo fmt` still sees the file), and one registry line.

pub mod all_pods_unhealthy;
pub mod backup_verification;
pub mod complete_infrastructure_loss;
pub mod corruption_audit_chain;
pub mod corruption_ledger;
pub mod corruption_structure;
pub mod data_center_failure;
pub mod db_connection_exhaustion;
pub mod db_corruption_full;
pub mod db_corruption_physical;
pub mod db_corruption_single_table;
pub mod db_corruption_unknown_time;
pub mod pod_crash;
pub mod rpo_streaming_replication;
pub mod rpo_wal_archiving;
mod steps;
pub mod traffic_switch;
mod workbench;

use std::path::PathBuf;

use futures::future::BoxFuture;

use crate::drill::{Drill, DrillError, DrillSummary, Result, StepContext};
use crate::env::Backend;
use crate::pg::{ConnInfo, PgBinaries};
use crate::playbook::Scenario;
use crate::report::schedule::Cadence;

/// The registry of built-in drills, in the schedule's order: calls
/// `$callback! { <line>; ... }` with one line per drill:
///
/// ```text
/// name: Scenario, cadence, backends, lane [, runs_drillbook];
/// ```
///
/// - `name`: the drill's module in `src/drills/` and its test's name;
/// - `Scenario`: the decision-matrix row it measures ([`Scenario`] variant);
/// - `cadence`: `daily`, `weekly`, `monthly` or `quarterly` ([`Cadence`]);
/// - `backends`: `everywhere` (embedded, containers, staging) or
///   `own_servers` (embedded, containers: it kills, floods or reconfigures a
///   server, which staging never allows);
/// - `lane`: `local`, or `cluster` when it needs a Kubernetes cluster (its
///   test is `#[ignore]`d);
/// - `runs_drillbook`: the drill runs the `drillbook` binary (PostgreSQL
///   as `archive_command`/`restore_command`, or the drill itself, driving
///   the operator's command), so the test calls
///   `run_with(CARGO_BIN_EXE_drillbook)` (under `drillbook run` it is the
///   running executable).
///
/// A higher-order macro so that the library ([`DRILLS`]) and the test
/// binary (`drills/main.rs`) expand the same list.
#[macro_export]
macro_rules! for_each_drill {
    ($callback:ident) => {
        $callback! {
            // Full restore test, monthly.
            complete_infrastructure_loss: CompleteInfrastructureLoss, monthly, everywhere, local, runs_drillbook;
            db_corruption_full: DbCorruptionFull, monthly, own_servers, local, runs_drillbook;
            db_corruption_unknown_time: DbCorruptionFull, monthly, own_servers, local, runs_drillbook;
            db_corruption_single_table: DbCorruptionSingleTable, monthly, everywhere, local, runs_drillbook;
            db_connection_exhaustion: DbConnectionExhaustion, monthly, own_servers, local;
            // Failover drill, quarterly. The cluster drills act on a
            // Kubernetes deployment, whatever serves its database.
            data_center_failure: DataCenterFailure, quarterly, own_servers, local;
            rpo_streaming_replication: DataCenterFailure, quarterly, own_servers, local;
            traffic_switch: CompleteInfrastructureLoss, quarterly, everywhere, cluster;
            pod_crash: SinglePodCrash, quarterly, everywhere, cluster;
            all_pods_unhealthy: AllPodsUnhealthy, quarterly, everywhere, cluster;
            // Backup verification, weekly: `drillbook check` first.
            backup_verification: CompleteInfrastructureLoss, weekly, own_servers, local, runs_drillbook;
            rpo_wal_archiving: CompleteInfrastructureLoss, weekly, own_servers, local, runs_drillbook;
            db_corruption_physical: DbCorruptionFull, weekly, own_servers, local, runs_drillbook;
            corruption_ledger: DbCorruptionSingleTable, weekly, everywhere, local;
            corruption_structure: DbCorruptionFull, weekly, everywhere, local;
            // Audit chain validation, daily.
            corruption_audit_chain: DbCorruptionFull, daily, everywhere, local;
        }
    };
}

/// One built-in drill.
#[derive(Debug, Clone, Copy)]
pub struct BuiltinDrill {
    /// The drill's name and module: `complete_infrastructure_loss`.
    pub name: &'static str,
    /// How often the playbook runs it (section 8).
    pub cadence: Cadence,
    /// The decision-matrix row it measures.
    pub scenario: Scenario,
    /// Whether it needs a Kubernetes cluster (`DRILL_KUBE_CONTEXT`).
    pub needs_cluster: bool,
    /// The backends (`DRILL_ENV`) it runs on; on any other it fails with
    /// `EnvError::Unsupported` saying why.
    pub backends: &'static [Backend],
    /// Its test in the `drills` test binary:
    /// `monthly::everywhere::complete_infrastructure_loss`.
    pub test: &'static str,
    /// Runs the drill and returns its judged summary, or the error that
    /// stopped it (its report written either way).
    pub run: Run,
}

impl BuiltinDrill {
    pub fn runs_on(&self, backend: Backend) -> bool {
        self.backends.contains(&backend)
    }
}

/// Every backend: the drill uses only what [`crate::env::Environment`]
/// offers everywhere (on staging: restored copies, never the source).
const EVERYWHERE: &[Backend] = &[Backend::Embedded, Backend::Containers, Backend::Staging];
/// Backends whose servers are the drill's own: the drill kills, floods or
/// reconfigures a server, which staging never allows.
const OWN_SERVERS: &[Backend] = &[Backend::Embedded, Backend::Containers];
type Run = fn() -> BoxFuture<'static, Result<DrillSummary>>;

/// The registry's words as values (the test binary reads the same words as
/// module names).
macro_rules! registry_value {
    (cadence daily) => {
        Cadence::Daily
    };
    (cadence weekly) => {
        Cadence::Weekly
    };
    (cadence monthly) => {
        Cadence::Monthly
    };
    (cadence quarterly) => {
        Cadence::Quarterly
    };
    (backends everywhere) => {
        EVERYWHERE
    };
    (backends own_servers) => {
        OWN_SERVERS
    };
    (lane local) => {
        false
    };
    (lane cluster) => {
        true
    };
}

macro_rules! builtin_drills {
    ($($name:ident: $scenario:ident, $cadence:ident, $backends:ident, $lane:ident $(, $flag:ident)?;)*) => {
        /// Every built-in drill, in the schedule's order.
        pub const DRILLS: &[BuiltinDrill] = &[$(
            BuiltinDrill {
                name: stringify!($name),
                cadence: registry_value!(cadence $cadence),
                scenario: Scenario::$scenario,
                needs_cluster: registry_value!(lane $lane),
                backends: registry_value!(backends $backends),
                test: concat!(stringify!($cadence), "::", stringify!($backends), "::", stringify!($name)),
                run: || Box::pin($name::run()),
            },
        )*];
    };
}

for_each_drill!(builtin_drills);

/// Every built-in drill, in the schedule's order ([`DRILLS`]).
pub fn all() -> &'static [BuiltinDrill] {
    DRILLS
}

/// The drills that run on `backend`, in the schedule's order.
pub fn runnable_on(backend: Backend) -> impl Iterator<Item = BuiltinDrill> {
    DRILLS.iter().copied().filter(move |drill| drill.runs_on(backend))
}

/// The drills of `cadence`, in the schedule's order.
pub fn of_cadence(cadence: Cadence) -> impl Iterator<Item = BuiltinDrill> {
    DRILLS.iter().copied().filter(move |drill| drill.cadence == cadence)
}

/// The built-in drill named `name` (`complete_infrastructure_loss`, or the
/// former test binary's name `drill_complete_infrastructure_loss`).
pub fn find(name: &str) -> Option<BuiltinDrill> {
    let name = name.trim();
    let name = name.strip_prefix("drill_").unwrap_or(name);
    DRILLS.iter().copied().find(|drill| drill.name == name)
}

/// The dataset size drills seed: `DRILL_PROFILE=small|medium|large`, small by default.
///
/// # Errors
/// [`DrillError::Step`] on any other value, naming the choices.
fn drill_profile() -> Result<crate::fixtures::Profile> {
    use crate::fixtures::Profile;
    match std::env::var("DRILL_PROFILE").as_deref() {
        Err(_) | Ok("") | Ok("small") => Ok(Profile::Small),
        Ok("medium") => Ok(Profile::Medium),
        Ok("large") => Ok(Profile::Large),
        Ok(other) => Err(DrillError::step(
            "read DRILL_PROFILE",
            format!("DRILL_PROFILE={other:?} is not a profile; use small, medium or large"),
        )),
    }
}

/// A setting of the cluster drills (`DRILL_KUBE_NAMESPACE`, ...), or its default.
fn cluster_setting(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// The Kubernetes cluster a cluster drill acts on ([`crate::env::cluster_target`]:
/// `drill.toml` on staging, `DRILL_KUBE_CONTEXT` elsewhere).
///
/// # Errors
/// [`DrillError::Step`] without a kube context, or when the cluster cannot
/// be reached: a cluster drill never passes without a cluster.
async fn kube_cluster() -> Result<kube::Client> {
    const STEP: &str = "connect to the Kubernetes cluster";
    let target = crate::env::cluster_target().step(STEP)?;
    let context = target.kube_context.ok_or_else(|| {
        DrillError::step(
            STEP,
            format!(
                "{} is not set (nor [kube] context in drill.toml on staging): this drill needs a Kubernetes \
                 cluster (a staging kube context or K3s) and never passes without one",
                crate::k8s::KUBE_CONTEXT_VAR
            ),
        )
    })?;
    crate::k8s::connect(Some(&context)).await.step(STEP)
}

/// Records the backend a cluster drill runs on: `DRILL_ENV`'s (it acts on
/// a Kubernetes deployment, whatever serves its database; no dataset, no
/// server of its own).
///
/// # Errors
/// [`DrillError::Step`] when `DRILL_ENV` names no backend.
fn record_cluster_backend(drill: &mut Drill) -> Result<()> {
    let backend = Backend::from_env().step("read DRILL_ENV")?;
    drill.set_backend(backend);
    Ok(())
}

/// The `drillbook` binary the PITR drills give PostgreSQL as
/// `archive_command`/`restore_command`: the running executable (under
/// `drillbook run`, that is `drillbook` itself).
fn program() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("drillbook"))
}

/// What a drill needs to resume backups after recovery: the binaries, the
/// admin connection of the recovered server, and the S3 store.
type Resume<'a> = (&'a PgBinaries, &'a ConnInfo, &'a crate::store::Store);

/// Playbook section 7, after `drill.verified()`: with `resume`, a first
/// backup of the recovered database to S3 (the schedule resumed), then the
/// post-recovery checklist on `recovered` ([`crate::checklist::record_after_recovery`];
/// without `resume` its backup item is not applicable) and the check that
/// no item failed.
///
/// # Errors
/// [`DrillError::Step`] when the backup or the checklist cannot run, or
/// when called before `drill.verified()`.
async fn post_recovery_checklist(drill: &mut Drill, recovered: &ConnInfo, resume: Option<Resume<'_>>) -> Result<()> {
    let recovered_at = drill
        .summary()
        .verified_at
        .step("read when the system was verified healthy")?;
    let store = match resume {
        Some((bins, admin, store)) => {
            drill
                .data_step(
                    "resume backups: first backup after recovery",
                    crate::backup::backup_database(bins, recovered, Some(admin), store),
                    |backup| [crate::drill::Moved::bytes(backup.manifest.dump.bytes)],
                )
                .await?;
            Some(store)
        }
        None => None,
    };
    let checklist = crate::checklist::record_after_recovery(drill, recovered, store, recovered_at)
        .await
        .step("record the post-recovery checklist (playbook section 7)")?;
    drill.check(
        "post-recovery checklist has no failed item",
        checklist.passed(),
        "playbook section 7",
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_drill_is_registered_once_and_every_cadence_has_drills() {
        let mut names: Vec<_> = DRILLS.iter().map(|d| d.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "a drill is registered twice");
        for cadence in Cadence::ALL {
            assert!(of_cadence(cadence).next().is_some(), "{cadence} has no drills");
        }
    }

    #[test]
    fn every_drill_file_is_registered() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/drills");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter_map(|file| file.strip_suffix(".rs").map(str::to_owned))
            .filter(|module| !["mod", "steps", "workbench"].contains(&module.as_str()))
            .collect();
        files.sort_unstable();
        let mut registered: Vec<_> = DRILLS.iter().map(|d| d.name.to_owned()).collect();
        registered.sort_unstable();
        assert_eq!(
            files, registered,
            "every src/drills/<name>.rs is a drill with one line in for_each_drill!"
        );
    }

    #[test]
    fn find_accepts_both_spellings() {
        assert_eq!(find("pod_crash").map(|d| d.name), Some("pod_crash"));
        assert_eq!(find("drill_pod_crash").map(|d| d.cadence), Some(Cadence::Quarterly));
        assert!(find("no_such_drill").is_none());
    }

    /// The playbook's schedule (section 8) for the drills it names; a new
    /// drill's cadence is its own registry line's business.
    #[test]
    fn cadences_follow_the_playbooks_schedule() {
        use Cadence::*;
        for (name, cadence) in [
            ("complete_infrastructure_loss", Monthly),
            ("db_corruption_full", Monthly),
            ("db_corruption_single_table", Monthly),
            ("db_connection_exhaustion", Monthly),
            ("data_center_failure", Quarterly),
            ("rpo_streaming_replication", Quarterly),
            ("traffic_switch", Quarterly),
            ("pod_crash", Quarterly),
            ("all_pods_unhealthy", Quarterly),
            ("backup_verification", Weekly),
            ("rpo_wal_archiving", Weekly),
            ("db_corruption_physical", Weekly),
            ("corruption_ledger", Weekly),
            ("corruption_structure", Weekly),
            ("corruption_audit_chain", Daily),
        ] {
            assert_eq!(find(name).map(|d| d.cadence), Some(cadence), "{name}");
        }
    }

    #[test]
    fn every_drill_runs_embedded_and_staging_never_hosts_destruction() {
        for drill in all() {
            assert!(drill.runs_on(Backend::Embedded), "{}", drill.name);
        }
        let staging: Vec<_> = runnable_on(Backend::Staging)
            .filter(|d| !d.needs_cluster)
            .map(|d| d.name)
            .collect();
        assert_eq!(
            staging,
            [
                "complete_infrastructure_loss",
                "db_corruption_single_table",
                "corruption_ledger",
                "corruption_structure",
                "corruption_audit_chain"
            ]
        );
    }

    #[test]
    fn cluster_drills_are_the_kubernetes_ones() {
        let cluster: Vec<_> = all().iter().filter(|d| d.needs_cluster).map(|d| d.name).collect();
        assert_eq!(cluster, ["traffic_switch", "pod_crash", "all_pods_unhealthy"]);
    }

    /// The path of a drill's test says what the static nextest filters
    /// select on: its cadence first, then `everywhere` exactly when it runs
    /// on staging. Containers run every drill.
    #[test]
    fn test_paths_carry_cadence_and_backends() {
        for drill in all() {
            let segments: Vec<_> = drill.test.split("::").collect();
            assert_eq!(segments.len(), 3, "{}", drill.test);
            assert_eq!(segments[0], drill.cadence.as_str(), "{}", drill.test);
            assert_eq!(
                segments[1] == "everywhere",
                drill.runs_on(Backend::Staging),
                "{}",
                drill.test
            );
            assert_eq!(segments[2], drill.name);
            assert!(drill.runs_on(Backend::Containers), "{}", drill.name);
        }
    }

    /// `.config/nextest.toml`, parsed: the drill profiles select by test path
    /// (see [`test_paths_carry_cadence_and_backends`]), so they name no drill.
    #[test]
    fn nextest_profiles_select_drills_by_path() {
        let config: toml::Table = include_str!("../../.config/nextest.toml").parse().unwrap();
        let profile = |name: &str| -> &toml::Table {
            config["profile"]
                .get(name)
                .and_then(toml::Value::as_table)
                .unwrap_or_else(|| panic!("[profile.{name}] missing from .config/nextest.toml"))
        };
        let filter = |name: &str| profile(name).get("default-filter").and_then(toml::Value::as_str);
        let inherits = |name: &str| profile(name).get("inherits").and_then(toml::Value::as_str);
        assert_eq!(filter("default"), Some("not binary(drills)"));
        assert_eq!(filter("drill"), Some("binary(drills)"));
        for cadence in Cadence::ALL {
            let name = cadence.nextest_profile();
            assert_eq!(inherits(&name), Some("drill"), "{name}");
            let expected = format!("binary(drills) & test(/^{cadence}::/)");
            assert_eq!(filter(&name), Some(expected.as_str()), "{name}");
        }
        for backend in [Backend::Containers, Backend::Staging] {
            let name = format!("drill-{}", backend.name());
            assert_eq!(inherits(&name), Some("drill"), "{name}");
        }
        assert_eq!(filter("drill-containers"), Some("binary(drills)"));
        assert_eq!(filter("drill-staging"), Some("binary(drills) & test(/::everywhere::/)"));
    }
}
