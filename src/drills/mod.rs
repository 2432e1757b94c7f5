//! The built-in drills, as library code: `drillbook run` ships them in the
//! binary, and each `drills/<name>.rs` test target is a one-line wrapper
//! around the same function. Every drill's `run` returns its judged
//! [`DrillSummary`] (its report already written); the test wrapper asserts
//! it passed. Setup failures still panic, as they did in the tests:
//! `drillbook run` catches the panic and reports the drill as failed.
//!
//! Cadences come from the schedule ([`crate::report::schedule::SCHEDULE`]),
//! keyed on the `drill_<name>` test binary.

pub mod all_pods_unhealthy;
pub mod complete_infrastructure_loss;
pub mod corruption_audit_chain;
pub mod corruption_ledger;
pub mod corruption_structure;
pub mod data_center_failure;
pub mod db_connection_exhaustion;
pub mod db_corruption_full;
pub mod db_corruption_physical;
pub mod db_corruption_single_table;
pub mod pod_crash;
pub mod rpo_streaming_replication;
pub mod rpo_wal_archiving;
mod steps;
pub mod traffic_switch;
mod workbench;

use std::path::PathBuf;

use futures::future::BoxFuture;

use crate::drill::{Drill, DrillSummary, Scenario};
use crate::env::Backend;
use crate::pg::{ConnInfo, PgBinaries};
use crate::report::schedule::{Cadence, cadence_of};

/// One built-in drill.
#[derive(Debug, Clone, Copy)]
pub struct BuiltinDrill {
    /// The test function's name: `complete_infrastructure_loss` (the test
    /// binary is `drill_<name>`).
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
    /// Runs the drill and returns its judged summary.
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
type Run = fn() -> BoxFuture<'static, DrillSummary>;

/// `(name, scenario, needs_cluster, backends, run)`, in the schedule's order.
type Entry = (&'static str, Scenario, bool, &'static [Backend], Run);

const DRILLS: &[Entry] = &[
    (
        "complete_infrastructure_loss",
        Scenario::CompleteInfrastructureLoss,
        false,
        EVERYWHERE,
        || Box::pin(complete_infrastructure_loss::run()),
    ),
    (
        "db_corruption_full",
        Scenario::DbCorruptionFull,
        false,
        OWN_SERVERS,
        || Box::pin(db_corruption_full::run()),
    ),
    (
        "db_corruption_single_table",
        Scenario::DbCorruptionSingleTable,
        false,
        EVERYWHERE,
        || Box::pin(db_corruption_single_table::run()),
    ),
    (
        "db_connection_exhaustion",
        Scenario::DbConnectionExhaustion,
        false,
        OWN_SERVERS,
        || Box::pin(db_connection_exhaustion::run()),
    ),
    (
        "data_center_failure",
        Scenario::DataCenterFailure,
        false,
        OWN_SERVERS,
        || Box::pin(data_center_failure::run()),
    ),
    (
        "rpo_streaming_replication",
        Scenario::DataCenterFailure,
        false,
        OWN_SERVERS,
        || Box::pin(rpo_streaming_replication::run()),
    ),
    // The cluster drills act on a Kubernetes deployment, whatever serves its database.
    (
        "traffic_switch",
        Scenario::CompleteInfrastructureLoss,
        true,
        EVERYWHERE,
        || Box::pin(traffic_switch::run()),
    ),
    ("pod_crash", Scenario::SinglePodCrash, true, EVERYWHERE, || {
        Box::pin(pod_crash::run())
    }),
    (
        "all_pods_unhealthy",
        Scenario::AllPodsUnhealthy,
        true,
        EVERYWHERE,
        || Box::pin(all_pods_unhealthy::run()),
    ),
    (
        "rpo_wal_archiving",
        Scenario::CompleteInfrastructureLoss,
        false,
        OWN_SERVERS,
        || Box::pin(rpo_wal_archiving::run()),
    ),
    (
        "db_corruption_physical",
        Scenario::DbCorruptionFull,
        false,
        OWN_SERVERS,
        || Box::pin(db_corruption_physical::run()),
    ),
    (
        "corruption_ledger",
        Scenario::DbCorruptionSingleTable,
        false,
        EVERYWHERE,
        || Box::pin(corruption_ledger::run()),
    ),
    (
        "corruption_structure",
        Scenario::DbCorruptionFull,
        false,
        EVERYWHERE,
        || Box::pin(corruption_structure::run()),
    ),
    (
        "corruption_audit_chain",
        Scenario::DbCorruptionFull,
        false,
        EVERYWHERE,
        || Box::pin(corruption_audit_chain::run()),
    ),
];

/// Every built-in drill, in the schedule's order.
///
/// # Panics
/// When a drill has no row in the schedule (a unit test keeps them equal).
pub fn all() -> Vec<BuiltinDrill> {
    DRILLS
        .iter()
        .map(|&(name, scenario, needs_cluster, backends, run)| BuiltinDrill {
            name,
            cadence: cadence_of(name)
                .unwrap_or_else(|| panic!("drill `{name}` has no row in report::schedule::SCHEDULE")),
            scenario,
            needs_cluster,
            backends,
            run,
        })
        .collect()
}

/// The drills that run on `backend`, in the schedule's order.
pub fn runnable_on(backend: Backend) -> impl Iterator<Item = BuiltinDrill> {
    all().into_iter().filter(move |drill| drill.runs_on(backend))
}

/// The nextest filterset selecting the drill binaries that run on `backend`
/// and need no cluster: the `default-filter` of the `drill-<backend>`
/// profile in `.config/nextest.toml` (a unit test keeps them equal).
pub fn nextest_filter(backend: Backend) -> String {
    runnable_on(backend)
        .filter(|drill| !drill.needs_cluster)
        .map(|drill| format!("binary(=drill_{})", drill.name))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// The built-in drill named `name` (`complete_infrastructure_loss`, or the
/// binary's name `drill_complete_infrastructure_loss`).
pub fn find(name: &str) -> Option<BuiltinDrill> {
    let name = name.trim();
    let name = name.strip_prefix("drill_").unwrap_or(name);
    all().into_iter().find(|drill| drill.name == name)
}

/// The dataset size drills seed: `DRILL_PROFILE=small|medium|large`, small by default.
///
/// # Panics
/// On any other value, naming the choices.
fn drill_profile() -> crate::fixtures::Profile {
    use crate::fixtures::Profile;
    match std::env::var("DRILL_PROFILE").as_deref() {
        Err(_) | Ok("") | Ok("small") => Profile::Small,
        Ok("medium") => Profile::Medium,
        Ok("large") => Profile::Large,
        Ok(other) => panic!("DRILL_PROFILE={other:?} is not a profile; use small, medium or large"),
    }
}

/// A setting of the cluster drills (`DRILL_KUBE_NAMESPACE`, ...), or its default.
fn cluster_setting(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// The Kubernetes cluster a cluster drill acts on ([`crate::env::cluster_target`]:
/// `drill.toml` on staging, `DRILL_KUBE_CONTEXT` elsewhere).
///
/// # Panics
/// Without a kube context, or when the cluster cannot be reached: a cluster
/// drill never passes without a cluster.
async fn kube_cluster() -> kube::Client {
    let target = crate::env::cluster_target().unwrap_or_else(|e| panic!("{e}"));
    let context = target.kube_context.unwrap_or_else(|| {
        panic!(
            "{} is not set (nor [kube] context in drill.toml on staging): this drill needs a Kubernetes cluster (a \
             staging kube context or K3s) and never passes without one",
            crate::k8s::KUBE_CONTEXT_VAR
        )
    });
    crate::k8s::connect(Some(&context))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
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
/// # Panics
/// When the backup or the checklist cannot run, as the drills' other setup steps do.
async fn post_recovery_checklist(drill: &mut Drill, recovered: &ConnInfo, resume: Option<Resume<'_>>) {
    let recovered_at = drill.summary().verified_at.expect("call after drill.verified()");
    let store = match resume {
        Some((bins, admin, store)) => {
            drill
                .phase(
                    "resume backups: first backup after recovery",
                    crate::backup::backup_database(bins, recovered, Some(admin), store),
                )
                .await
                .unwrap();
            Some(store)
        }
        None => None,
    };
    let checklist = crate::checklist::record_after_recovery(drill, recovered, store, recovered_at)
        .await
        .unwrap();
    drill.check(
        "post-recovery checklist has no failed item",
        checklist.passed(),
        "playbook section 7",
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::schedule::SCHEDULE;

    #[test]
    fn every_scheduled_drill_is_built_in_and_back() {
        let names: Vec<String> = all().iter().map(|d| format!("drill_{}", d.name)).collect();
        let scheduled: Vec<String> = SCHEDULE.iter().map(|(name, _)| (*name).to_owned()).collect();
        assert_eq!(names, scheduled);
    }

    #[test]
    fn find_accepts_both_spellings() {
        assert_eq!(find("pod_crash").map(|d| d.name), Some("pod_crash"));
        assert_eq!(find("drill_pod_crash").map(|d| d.cadence), Some(Cadence::Quarterly));
        assert!(find("no_such_drill").is_none());
    }

    #[test]
    fn backend_profiles_select_exactly_the_registry() {
        const NEXTEST_TOML: &str = include_str!("../../.config/nextest.toml");
        for backend in [Backend::Containers, Backend::Staging] {
            let header = format!("[profile.drill-{}]", backend.name());
            let filter = NEXTEST_TOML
                .lines()
                .map(str::trim)
                .skip_while(|line| *line != header)
                .skip(1)
                .take_while(|line| !line.starts_with('['))
                .find_map(|line| line.strip_prefix("default-filter"))
                .map(|rest| {
                    rest.trim_start()
                        .trim_start_matches('=')
                        .trim()
                        .trim_matches('"')
                        .to_owned()
                })
                .unwrap_or_else(|| panic!("{header} with a default-filter missing from .config/nextest.toml"));
            assert_eq!(
                filter,
                nextest_filter(backend),
                "{header} default-filter differs from the registry; copy drills::nextest_filter"
            );
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
        let cluster: Vec<_> = all().into_iter().filter(|d| d.needs_cluster).map(|d| d.name).collect();
        assert_eq!(cluster, ["traffic_switch", "pod_crash", "all_pods_unhealthy"]);
    }
}
