//! Kubernetes side of recovery (playbook sections 2, 5 step 4 and 6.1):
//! rollout restart / status / undo with kubectl's semantics, pod deletion
//! with the time to auto-heal measured, and the Istio `VirtualService`
//! blue/green switch.
//!
//! One concept per file: [`rollout`] (restart, status, undo), [`pods`]
//! (auto-heal), [`istio`] (traffic switch).
//!
//! Everything takes a [`kube::Client`]: [`connect`] builds one from the
//! kubeconfig (a named context, as `DRILL_KUBE_CONTEXT`); the tests build
//! one over a scripted API (`tower_test::mock`) that asserts each request.
//!
//! # Guarantees
//! Every wait has a timeout and polls (no watch streams to hang); every
//! error names the object (`namespace/name`) and what to do.

pub mod istio;
pub mod pods;
pub mod rollout;

use std::time::Duration;

/// The kube context drills use, from `DRILL_KUBE_CONTEXT`.
pub const KUBE_CONTEXT_VAR: &str = "DRILL_KUBE_CONTEXT";

/// Why a Kubernetes operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum K8sError {
    #[error(
        "failed to load the kubeconfig{} (set KUBECONFIG or {KUBE_CONTEXT_VAR} to a cluster you may drill on: \
         staging, or a K3s in containers)",
        context.as_deref().map(|c| format!(" for context `{c}`")).unwrap_or_default()
    )]
    Config {
        context: Option<String>,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("failed to build a Kubernetes client from the kubeconfig")]
    Client {
        #[source]
        source: kube::Error,
    },
    #[error("deployment `{namespace}/{name}` not found (check the name, the namespace and the kube context)")]
    DeploymentNotFound { namespace: String, name: String },
    #[error(
        "failed to {action} deployment `{namespace}/{name}`: it is paused; resume it first with \
         `kubectl rollout resume deployment/{name} -n {namespace}`"
    )]
    Paused {
        namespace: String,
        name: String,
        action: &'static str,
    },
    #[error(
        "failed to roll back deployment `{namespace}/{name}`: no previous revision in its ReplicaSets \
         (revisions found: {revisions:?}); there is nothing to roll back to, fix forward instead"
    )]
    NoPreviousRevision {
        namespace: String,
        name: String,
        revisions: Vec<i64>,
    },
    #[error(
        "deployment `{namespace}/{name}` exceeded its progress deadline: {message} \
         (roll back with `rollout undo`, then look at the new pods' events)"
    )]
    RolloutStalled {
        namespace: String,
        name: String,
        message: String,
    },
    #[error(
        "failed to see deployment `{namespace}/{name}` roll out within {timeout:?}; last status: {last} \
         (raise the timeout or look at the pods' events)"
    )]
    RolloutTimeout {
        namespace: String,
        name: String,
        timeout: Duration,
        last: String,
    },
    #[error(
        "failed to see {desired} ready pods of `{namespace}/{selector}` within {timeout:?} after deleting \
         `{deleted}` ({ready} ready); auto-heal did not happen, look at the ReplicaSet's events"
    )]
    AutoHealTimeout {
        namespace: String,
        selector: String,
        deleted: String,
        timeout: Duration,
        ready: usize,
        desired: usize,
    },
    #[error("no pod matches `{selector}` in namespace `{namespace}` (check the label selector)")]
    NoPods { namespace: String, selector: String },
    #[error(
        "VirtualService `{namespace}/{name}` not found (check the name, the namespace and that Istio is installed)"
    )]
    VirtualServiceNotFound { namespace: String, name: String },
    #[error(
        "VirtualService `{namespace}/{name}` has no route destination with subset `{subset}` \
         (its subsets: {available:?}); add it to the routes with weight 0 first, or pick one of these"
    )]
    SubsetNotFound {
        namespace: String,
        name: String,
        subset: String,
        available: Vec<String>,
    },
    #[error("failed to read {what}: {reason}")]
    Malformed { what: String, reason: String },
    #[error("failed to {action} (Kubernetes API)")]
    Api {
        action: String,
        #[source]
        source: kube::Error,
    },
}

pub type Result<T, E = K8sError> = std::result::Result<T, E>;

/// A client from the kubeconfig (`KUBECONFIG` or `~/.kube/config`), for
/// `context` or the current one.
///
/// # Errors
/// [`K8sError::Config`] when there is no kubeconfig or no such context.
pub async fn connect(context: Option<&str>) -> Result<kube::Client> {
    let options = kube::config::KubeConfigOptions {
        context: context.map(str::to_owned),
        ..Default::default()
    };
    let config = kube::Config::from_kubeconfig(&options)
        .await
        .map_err(|source| K8sError::Config {
            context: context.map(str::to_owned),
            source,
        })?;
    kube::Client::try_from(config).map_err(|source| K8sError::Client { source })
}

/// The object behind a 404, or the error.
pub(crate) fn api_error(action: impl Into<String>) -> impl FnOnce(kube::Error) -> K8sError {
    let action = action.into();
    move |source| K8sError::Api { action, source }
}

/// Whether a kube error is the API's 404.
pub(crate) fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

/// How often waits poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    pub timeout: Duration,
    pub interval: Duration,
}

impl Wait {
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            interval: Duration::from_secs(2),
        }
    }

    pub fn every(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }
}
