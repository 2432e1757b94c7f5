//! The decision matrix's "Single pod crash: auto-heal (K8s)": delete one
//! ready pod and measure how long until the controller has as many ready
//! pods as before, none of them the deleted one.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client, ResourceExt};
use serde::Serialize;

use super::{K8sError, Result, Wait, api_error};

/// What the auto-heal took.
#[derive(Debug, Clone, Serialize)]
pub struct AutoHeal {
    /// The pod that was deleted.
    pub deleted: String,
    /// Ready pods at the end, by name (the replacement among them).
    pub ready: Vec<String>,
    /// From the delete call's answer to all pods ready again.
    #[serde(with = "crate::serde_duration")]
    pub time_to_ready: Duration,
}

/// Whether a pod is Ready (condition `Ready` = `True`) and not being deleted.
pub fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|status| status.conditions.as_ref())
            .is_some_and(|conditions| conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Deletes the first ready pod (by name) matching `selector` and waits
/// until as many pods are ready as were before, without the deleted one.
///
/// # Errors
/// [`K8sError::NoPods`] when no pod is ready to begin with;
/// [`K8sError::AutoHealTimeout`] when the pods are not back in time; the
/// API error.
pub async fn delete_one_and_wait(client: Client, namespace: &str, selector: &str, wait: Wait) -> Result<AutoHeal> {
    let pods: Api<Pod> = Api::namespaced(client, namespace);
    let list_params = ListParams::default().labels(selector);
    let list = |action: &'static str| {
        let pods = pods.clone();
        let list_params = list_params.clone();
        async move {
            pods.list(&list_params)
                .await
                .map_err(api_error(format!("{action} pods `{selector}` in `{namespace}`")))
        }
    };
    let mut ready: Vec<Pod> = list("list").await?.items.into_iter().filter(is_ready).collect();
    ready.sort_by_key(|pod| pod.name_any());
    let victim = ready.first().ok_or_else(|| K8sError::NoPods {
        namespace: namespace.to_owned(),
        selector: selector.to_owned(),
    })?;
    let desired = ready.len();
    let deleted = victim.name_any();
    let deleted_uid = victim.uid();
    pods.delete(&deleted, &DeleteParams::default())
        .await
        .map_err(api_error(format!("delete pod `{namespace}/{deleted}`")))?;
    let started = Instant::now();
    tracing::info!(pod = %deleted, namespace, "pod deleted; waiting for auto-heal");
    loop {
        let now_ready: Vec<String> = list("watch")
            .await?
            .items
            .into_iter()
            .filter(|pod| is_ready(pod) && pod.uid() != deleted_uid)
            .map(|pod| pod.name_any())
            .collect();
        if now_ready.len() >= desired {
            return Ok(AutoHeal {
                deleted,
                ready: now_ready,
                time_to_ready: started.elapsed(),
            });
        }
        let remaining = wait.timeout.saturating_sub(started.elapsed());
        if remaining.is_zero() {
            return Err(K8sError::AutoHealTimeout {
                namespace: namespace.to_owned(),
                selector: selector.to_owned(),
                deleted,
                timeout: wait.timeout,
                ready: now_ready.len(),
                desired,
            });
        }
        tokio::time::sleep(wait.interval.min(remaining)).await;
    }
}
