//! Playbook 6.1: the blue/green traffic switch on an Istio
//! `networking.istio.io/v1` `VirtualService`, as a merge patch.
//!
//! The playbook's `kubectl patch ... --type merge` replaces `spec.http` with
//! a single route to the new subset. This sends the whole `spec.http` back
//! with only the weights changed: 100 to the chosen subset, 0 to the others
//! of each route. Matches, retries and timeouts stay; the old subset stays
//! listed (weight 0), so [`TrafficSwitch::revert`] can put the previous
//! routes back exactly. The patch carries the `resourceVersion` read, so a
//! concurrent change makes it fail (409) instead of being overwritten.
//!
//! # Errors
//! A subset that no route destination names is refused before anything is
//! patched: switching to it would send traffic nowhere.

use std::collections::BTreeSet;

use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Api, Client};
use serde::Serialize;
use serde_json::{Value, json};

use super::rollout::FIELD_MANAGER;
use super::{K8sError, Result, api_error, is_not_found};

/// `networking.istio.io/v1`, kind `VirtualService`, plural `virtualservices`.
pub fn virtual_service_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService"),
        "virtualservices",
    )
}

/// A switch that happened, with what to put back.
#[derive(Debug, Clone, Serialize)]
pub struct TrafficSwitch {
    pub namespace: String,
    pub name: String,
    pub subset: String,
    /// `spec.http` before the switch.
    pub previous_http: Value,
    /// `spec.http` after the switch.
    pub http: Value,
}

/// Every destination subset named in `spec.http[*].route[*]`.
pub fn subsets(http: &Value) -> BTreeSet<String> {
    routes(http)
        .filter_map(|route| route.pointer("/destination/subset").and_then(Value::as_str))
        .map(str::to_owned)
        .collect()
}

fn routes(http: &Value) -> impl Iterator<Item = &Value> {
    http.as_array()
        .into_iter()
        .flatten()
        .filter_map(|rule| rule.get("route").and_then(Value::as_array))
        .flatten()
}

/// `http` with every route's weights set: 100 to `subset`, 0 to the rest.
/// HTTP rules that do not name `subset` are left alone.
pub fn weights_to(http: &Value, subset: &str) -> Value {
    let mut http = http.clone();
    for rule in http.as_array_mut().into_iter().flatten() {
        let Some(route) = rule.get_mut("route").and_then(Value::as_array_mut) else {
            continue;
        };
        let names_subset = route
            .iter()
            .any(|r| r.pointer("/destination/subset").and_then(Value::as_str) == Some(subset));
        if !names_subset {
            continue;
        }
        for destination in route.iter_mut() {
            let weight = if destination.pointer("/destination/subset").and_then(Value::as_str) == Some(subset) {
                100
            } else {
                0
            };
            destination["weight"] = json!(weight);
        }
    }
    http
}

/// Sends all traffic of `namespace/name` to `subset` (playbook 6.1).
///
/// # Errors
/// [`K8sError::VirtualServiceNotFound`]; [`K8sError::SubsetNotFound`]
/// (nothing patched); the API error (409 when the object changed meanwhile).
pub async fn switch_traffic(client: Client, namespace: &str, name: &str, subset: &str) -> Result<TrafficSwitch> {
    let api: Api<DynamicObject> = Api::namespaced_with(client, namespace, &virtual_service_resource());
    let not_found = || K8sError::VirtualServiceNotFound {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    };
    let current = api
        .get_opt(name)
        .await
        .map_err(api_error(format!("get VirtualService `{namespace}/{name}`")))?
        .ok_or_else(not_found)?;
    let previous_http = current.data.pointer("/spec/http").cloned().unwrap_or(Value::Null);
    let available = subsets(&previous_http);
    if !available.contains(subset) {
        return Err(K8sError::SubsetNotFound {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            subset: subset.to_owned(),
            available: available.into_iter().collect(),
        });
    }
    let http = weights_to(&previous_http, subset);
    patch_http(
        &api,
        namespace,
        name,
        current.metadata.resource_version.as_deref(),
        &http,
    )
    .await?;
    tracing::info!(namespace, name, subset, "traffic switched");
    Ok(TrafficSwitch {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        subset: subset.to_owned(),
        previous_http,
        http,
    })
}

impl TrafficSwitch {
    /// Puts the routes back as they were before the switch.
    ///
    /// # Errors
    /// [`K8sError::VirtualServiceNotFound`]; the API error.
    pub async fn revert(&self, client: Client) -> Result<()> {
        let api: Api<DynamicObject> = Api::namespaced_with(client, &self.namespace, &virtual_service_resource());
        patch_http(&api, &self.namespace, &self.name, None, &self.previous_http).await
    }
}

async fn patch_http(
    api: &Api<DynamicObject>,
    namespace: &str,
    name: &str,
    resource_version: Option<&str>,
    http: &Value,
) -> Result<()> {
    let mut patch = json!({"spec": {"http": http}});
    if let Some(version) = resource_version {
        patch["metadata"] = json!({"resourceVersion": version});
    }
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    match api.patch(name, &params, &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Err(K8sError::VirtualServiceNotFound {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }),
        Err(e) => Err(api_error(format!("patch VirtualService `{namespace}/{name}`"))(e)),
    }
}
