//! `kubectl rollout restart | status | undo` for a Deployment, with
//! kubectl's semantics (playbook 5 step 4 and the decision matrix's "All
//! pods unhealthy: rollback deployment").
//!
//! - **restart**: a strategic merge patch setting the pod template
//!   annotation `kubectl.kubernetes.io/restartedAt` to now (RFC 3339);
//!   refused for a paused deployment, as kubectl does.
//! - **status**: kubectl's completion rules: the controller observed the
//!   newest generation; `updatedReplicas == spec.replicas`; no old replicas
//!   pending termination (`replicas == updatedReplicas`); `availableReplicas
//!   == updatedReplicas`. A `Progressing` condition with reason
//!   `ProgressDeadlineExceeded` fails at once. Polled until a timeout.
//! - **undo**: to the previous revision, read from the
//!   `deployment.kubernetes.io/revision` annotations of the ReplicaSets the
//!   deployment controls; the revision's pod template (without its
//!   `pod-template-hash` label) and its annotations are written back with
//!   the same JSON patch kubectl sends. Refused for a paused deployment, an
//!   error without a previous revision, skipped when the template already
//!   matches.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde::Serialize;
use serde_json::{Value, json};

use super::{K8sError, Result, Wait, api_error};

/// The pod-template annotation `kubectl rollout restart` sets.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
/// The ReplicaSet (and Deployment) annotation holding the revision.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// The label the controller adds to each ReplicaSet's template.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// Field manager of drillbook's patches.
pub const FIELD_MANAGER: &str = "drillbook";

/// Annotations kubectl never copies from a ReplicaSet onto the deployment
/// on rollback (kubectl's `annotationsToSkip`).
const ANNOTATIONS_TO_SKIP: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
];

/// A deployment by namespace and name.
#[derive(Clone)]
pub struct Rollout {
    client: Client,
    namespace: String,
    name: String,
}

impl std::fmt::Debug for Rollout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Rollout({}/{})", self.namespace, self.name)
    }
}

/// Where a rollout stands, by kubectl's rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "message")]
pub enum Progress {
    /// kubectl's "successfully rolled out".
    Complete(String),
    /// kubectl's "Waiting for ..." line.
    Waiting(String),
}

/// A finished rollout.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutDone {
    pub message: String,
    /// From the first poll to the rollout's completion.
    #[serde(with = "crate::serde_duration")]
    pub elapsed: Duration,
    pub polls: u32,
}

/// What `undo` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Undo {
    /// The revision that was current.
    pub from_revision: i64,
    /// The revision rolled back to.
    pub to_revision: i64,
    /// The current template already matched `to_revision`: nothing patched.
    pub skipped: bool,
}

impl Rollout {
    pub fn new(client: Client, namespace: &str, name: &str) -> Self {
        Self {
            client,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The deployment.
    ///
    /// # Errors
    /// [`K8sError::DeploymentNotFound`], or the API error.
    pub async fn get(&self) -> Result<Deployment> {
        self.deployments()
            .get_opt(&self.name)
            .await
            .map_err(api_error(format!("get deployment `{}/{}`", self.namespace, self.name)))?
            .ok_or_else(|| self.not_found())
    }

    fn not_found(&self) -> K8sError {
        K8sError::DeploymentNotFound {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    /// `kubectl rollout restart deployment/<name>`, stamped `at`.
    ///
    /// # Errors
    /// Not found, paused, or the API error.
    pub async fn restart(&self, at: DateTime<Utc>) -> Result<Deployment> {
        let deployment = self.get().await?;
        if is_paused(&deployment) {
            return Err(self.paused("restart"));
        }
        let patch = restart_patch(at);
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        self.deployments()
            .patch(&self.name, &params, &Patch::Strategic(&patch))
            .await
            .map_err(|e| self.map_api(e, "restart"))
    }

    fn paused(&self, action: &'static str) -> K8sError {
        K8sError::Paused {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            action,
        }
    }

    fn map_api(&self, error: kube::Error, action: &str) -> K8sError {
        if super::is_not_found(&error) {
            return self.not_found();
        }
        api_error(format!("{action} deployment `{}/{}`", self.namespace, self.name))(error)
    }

    /// `kubectl rollout status --timeout=<wait.timeout>`: polls until the
    /// rollout completes.
    ///
    /// # Errors
    /// [`K8sError::RolloutStalled`] as soon as the deployment reports
    /// `ProgressDeadlineExceeded`; [`K8sError::RolloutTimeout`] with the last
    /// status line after the timeout; not found; the API error.
    pub async fn wait_complete(&self, wait: Wait) -> Result<RolloutDone> {
        let started = Instant::now();
        let mut polls = 0;
        loop {
            polls += 1;
            let deployment = self.get().await?;
            match progress(&deployment)? {
                Progress::Complete(message) => {
                    return Ok(RolloutDone {
                        message,
                        elapsed: started.elapsed(),
                        polls,
                    });
                }
                Progress::Waiting(last) => {
                    let remaining = wait.timeout.saturating_sub(started.elapsed());
                    if remaining.is_zero() {
                        return Err(K8sError::RolloutTimeout {
                            namespace: self.namespace.clone(),
                            name: self.name.clone(),
                            timeout: wait.timeout,
                            last,
                        });
                    }
                    tracing::debug!(deployment = %self.name, %last, "rollout in progress");
                    tokio::time::sleep(wait.interval.min(remaining)).await;
                }
            }
        }
    }

    /// The ReplicaSets this deployment controls (selector + controller
    /// owner reference), with their revisions, oldest first.
    ///
    /// # Errors
    /// The API error; a ReplicaSet without a numeric revision annotation.
    pub async fn history(&self, deployment: &Deployment) -> Result<Vec<(i64, ReplicaSet)>> {
        let uid = deployment.metadata.uid.clone().unwrap_or_default();
        let selector = deployment
            .spec
            .as_ref()
            .and_then(|spec| spec.selector.match_labels.as_ref())
            .map(|labels| {
                labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        let sets: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &self.namespace);
        let list = sets
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| self.map_api(e, "list the ReplicaSets of"))?;
        let mut owned = Vec::new();
        for rs in list.items {
            let controlled = rs
                .owner_references()
                .iter()
                .any(|owner| owner.controller == Some(true) && owner.uid == uid);
            if !controlled {
                continue;
            }
            let revision = revision_of(&rs.annotations().clone(), &format!("ReplicaSet `{}`", rs.name_any()))?;
            owned.push((revision, rs));
        }
        owned.sort_by_key(|(revision, _)| *revision);
        Ok(owned)
    }

    /// `kubectl rollout undo deployment/<name>`: back to the previous revision.
    ///
    /// # Errors
    /// [`K8sError::Paused`], [`K8sError::NoPreviousRevision`], not found, the
    /// API error.
    pub async fn undo(&self) -> Result<Undo> {
        let deployment = self.get().await?;
        if is_paused(&deployment) {
            return Err(self.paused("roll back"));
        }
        let history = self.history(&deployment).await?;
        let revisions: Vec<i64> = history.iter().map(|(revision, _)| *revision).collect();
        if history.len() < 2 {
            return Err(K8sError::NoPreviousRevision {
                namespace: self.namespace.clone(),
                name: self.name.clone(),
                revisions,
            });
        }
        let from_revision = history[history.len() - 1].0;
        let (to_revision, target) = &history[history.len() - 2];
        let mut template = serde_json::to_value(
            target
                .spec
                .as_ref()
                .and_then(|spec| spec.template.clone())
                .unwrap_or_default(),
        )
        .map_err(|e| malformed(format!("the template of revision {to_revision}"), e))?;
        if let Some(labels) = template.pointer_mut("/metadata/labels").and_then(Value::as_object_mut) {
            labels.remove(POD_TEMPLATE_HASH);
        }
        let current = serde_json::to_value(deployment.spec.as_ref().map(|spec| spec.template.clone()))
            .map_err(|e| malformed("the deployment's template", e))?;
        if without_hash(&current) == template {
            return Ok(Undo {
                from_revision,
                to_revision: *to_revision,
                skipped: true,
            });
        }
        let annotations = rollback_annotations(deployment.annotations(), target.annotations());
        let patch = json!([
            {"op": "replace", "path": "/spec/template", "value": template},
            {"op": "replace", "path": "/metadata/annotations", "value": annotations},
        ]);
        // kube's `Patch::Json` needs the `jsonpatch` feature; the request is
        // the same one kubectl sends, built by hand.
        let uri = format!(
            "/apis/apps/v1/namespaces/{}/deployments/{}?fieldManager={FIELD_MANAGER}",
            self.namespace, self.name
        );
        let request = http::Request::patch(uri)
            .header(http::header::CONTENT_TYPE, "application/json-patch+json")
            .body(serde_json::to_vec(&patch).expect("a JSON value serialises"))
            .expect("static request parts are valid");
        self.client
            .request::<Deployment>(request)
            .await
            .map_err(|e| self.map_api(e, "roll back"))?;
        Ok(Undo {
            from_revision,
            to_revision: *to_revision,
            skipped: false,
        })
    }
}

/// The strategic merge patch of `kubectl rollout restart`.
pub fn restart_patch(at: DateTime<Utc>) -> Value {
    let stamp = at.to_rfc3339_opts(SecondsFormat::Secs, true);
    json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}})
}

/// kubectl's `DeploymentStatusViewer`, as a pure function.
///
/// # Errors
/// [`K8sError::RolloutStalled`] when the `Progressing` condition's reason
/// is `ProgressDeadlineExceeded`.
pub fn progress(deployment: &Deployment) -> Result<Progress> {
    let name = deployment.name_any();
    let namespace = deployment.namespace().unwrap_or_default();
    let generation = deployment.metadata.generation.unwrap_or(0);
    let status = deployment.status.clone().unwrap_or_default();
    if generation > status.observed_generation.unwrap_or(0) {
        return Ok(Progress::Waiting(
            "Waiting for deployment spec update to be observed...".to_owned(),
        ));
    }
    let stalled = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded"));
    if let Some(condition) = stalled {
        return Err(K8sError::RolloutStalled {
            namespace,
            name,
            message: condition.message.clone().unwrap_or_default(),
        });
    }
    let updated = status.updated_replicas.unwrap_or(0);
    let replicas = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if let Some(desired) = deployment.spec.as_ref().and_then(|spec| spec.replicas)
        && updated < desired
    {
        return Ok(Progress::Waiting(format!(
            "Waiting for deployment {name:?} rollout to finish: {updated} out of {desired} new replicas have been updated..."
        )));
    }
    if replicas > updated {
        return Ok(Progress::Waiting(format!(
            "Waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination...",
            replicas - updated
        )));
    }
    if available < updated {
        return Ok(Progress::Waiting(format!(
            "Waiting for deployment {name:?} rollout to finish: {available} of {updated} updated replicas are available..."
        )));
    }
    Ok(Progress::Complete(format!(
        "deployment {name:?} successfully rolled out"
    )))
}

fn is_paused(deployment: &Deployment) -> bool {
    deployment.spec.as_ref().and_then(|spec| spec.paused).unwrap_or(false)
}

fn revision_of(annotations: &BTreeMap<String, String>, what: &str) -> Result<i64> {
    let text = annotations.get(REVISION).ok_or_else(|| K8sError::Malformed {
        what: what.to_owned(),
        reason: format!("no `{REVISION}` annotation"),
    })?;
    text.parse().map_err(|_| K8sError::Malformed {
        what: what.to_owned(),
        reason: format!("`{REVISION}` is {text:?}, not a number"),
    })
}

/// kubectl's rule: keep the deployment's own skipped annotations, take every
/// other annotation from the revision's ReplicaSet.
fn rollback_annotations(
    deployment: &BTreeMap<String, String>,
    replica_set: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut annotations: BTreeMap<String, String> = deployment
        .iter()
        .filter(|(key, _)| ANNOTATIONS_TO_SKIP.contains(&key.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (key, value) in replica_set {
        if !ANNOTATIONS_TO_SKIP.contains(&key.as_str()) {
            annotations.insert(key.clone(), value.clone());
        }
    }
    annotations
}

fn without_hash(template: &Value) -> Value {
    let mut template = template.clone();
    if let Some(labels) = template.pointer_mut("/metadata/labels").and_then(Value::as_object_mut) {
        labels.remove(POD_TEMPLATE_HASH);
    }
    template
}

fn malformed(what: impl Into<String>, error: serde_json::Error) -> K8sError {
    K8sError::Malformed {
        what: what.into(),
        reason: error.to_string(),
    }
}
