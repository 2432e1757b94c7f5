//! The Kubernetes code against a SCRIPTED API, not a cluster: no API server
//! can run on these machines, so each test plays the exact exchange a real
//! API server would have with drillbook (through `tower_test::mock` under a
//! real `kube::Client`). Every request is asserted (method, path, query,
//! patch content type, body) and answered with a realistic object: rollouts
//! that stall with `ProgressDeadlineExceeded`, ReplicaSet histories for
//! undo, a paused deployment, a 404. The same code runs against a real
//! cluster in the drills' cluster lane (`src/drills/pod_crash.rs`, ...).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use drillbook::k8s::istio::switch_traffic;
use drillbook::k8s::rollout::Rollout;
use drillbook::k8s::{K8sError, Wait};
use http::{Method, Request, Response};
use kube::client::Body;
use serde_json::{Value, json};

const NS: &str = "default";
const NAME: &str = "immoflowme";
const DEPLOYMENT_PATH: &str = "/apis/apps/v1/namespaces/default/deployments/immoflowme";
const RS_PATH: &str = "/apis/apps/v1/namespaces/default/replicasets";
const VS_PATH: &str = "/apis/networking.istio.io/v1/namespaces/default/virtualservices/immoflowme";

/// One expected request and the answer to play.
struct Exchange {
    method: Method,
    path: &'static str,
    query: Vec<(&'static str, String)>,
    content_type: Option<&'static str>,
    body: Option<Value>,
    status: u16,
    response: Value,
}

fn get(path: &'static str, response: Value) -> Exchange {
    Exchange {
        method: Method::GET,
        path,
        query: vec![],
        content_type: None,
        body: None,
        status: 200,
        response,
    }
}

fn patch(path: &'static str, content_type: &'static str, body: Value, response: Value) -> Exchange {
    Exchange {
        method: Method::PATCH,
        path,
        query: vec![("fieldManager", "drillbook".to_owned())],
        content_type: Some(content_type),
        body: Some(body),
        status: 200,
        response,
    }
}

/// A client whose API is `script`, and the task playing it; the task
/// returns how many exchanges ran and panics on any unexpected request.
fn scripted(script: Vec<Exchange>) -> (kube::Client, tokio::task::JoinHandle<usize>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let player = tokio::spawn(async move {
        let mut played = 0;
        for exchange in script {
            let (request, respond) = handle
                .next_request()
                .await
                .unwrap_or_else(|| panic!("expected {} {}, got no request", exchange.method, exchange.path));
            assert_eq!(request.method(), exchange.method, "request {played}: {}", request.uri());
            assert_eq!(request.uri().path(), exchange.path, "request {played}");
            let query: BTreeMap<String, String> = request
                .uri()
                .query()
                .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
                .unwrap_or_default();
            let expected: BTreeMap<String, String> = exchange
                .query
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect();
            assert_eq!(query, expected, "query of request {played}: {}", request.uri());
            let content_type = request
                .headers()
                .get(http::header::CONTENT_TYPE)
                .map(|v| v.to_str().unwrap().to_owned());
            if let Some(expected) = exchange.content_type {
                assert_eq!(
                    content_type.as_deref(),
                    Some(expected),
                    "content type of request {played}"
                );
            }
            let bytes = request.into_body().collect_bytes().await.unwrap();
            match &exchange.body {
                Some(expected) => {
                    let body: Value = serde_json::from_slice(&bytes).unwrap();
                    assert_eq!(&body, expected, "body of request {played}");
                }
                None => assert!(bytes.is_empty(), "request {played} has an unexpected body"),
            }
            let response = Response::builder()
                .status(exchange.status)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Body::from(serde_json::to_vec(&exchange.response).unwrap()))
                .unwrap();
            respond.send_response(response);
            played += 1;
        }
        played
    });
    (kube::Client::new(service, NS), player)
}

fn not_found(kind: &str, name: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": format!("{kind} \"{name}\" not found"), "reason": "NotFound",
           "details": {"name": name, "kind": kind}, "code": 404})
}

fn template(image: &str, hash: Option<&str>) -> Value {
    let mut labels = json!({"app": NAME});
    if let Some(hash) = hash {
        labels["pod-template-hash"] = json!(hash);
    }
    json!({"metadata": {"labels": labels},
           "spec": {"containers": [{"name": "app", "image": image}]}})
}

fn deployment(generation: i64, status: Value, paused: bool, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": NAME, "namespace": NS, "uid": "dep-uid", "generation": generation,
                     "resourceVersion": "100",
                     "annotations": {"deployment.kubernetes.io/revision": "3",
                                     "kubectl.kubernetes.io/last-applied-configuration": "{}"}},
        "spec": {"replicas": 3, "paused": paused, "selector": {"matchLabels": {"app": NAME}},
                 "template": template(image, None)},
        "status": status,
    })
}

fn done(generation: i64) -> Value {
    json!({"observedGeneration": generation, "replicas": 3, "updatedReplicas": 3,
           "readyReplicas": 3, "availableReplicas": 3})
}

fn replica_set(revision: i64, image: &str, owner_uid: &str, extra: Value) -> Value {
    let hash = format!("hash{revision}");
    let mut annotations = json!({"deployment.kubernetes.io/revision": revision.to_string(),
                                 "deployment.kubernetes.io/desired-replicas": "3"});
    for (k, v) in extra.as_object().unwrap() {
        annotations[k] = v.clone();
    }
    json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": format!("{NAME}-{hash}"), "namespace": NS, "annotations": annotations,
                     "labels": {"app": NAME, "pod-template-hash": hash},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME,
                                          "uid": owner_uid, "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": NAME, "pod-template-hash": hash}},
                 "template": template(image, Some(&hash))},
    })
}

fn rs_list(items: Vec<Value>) -> Exchange {
    let mut exchange = get(
        RS_PATH,
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSetList", "metadata": {"resourceVersion": "7"}, "items": items}),
    );
    exchange.query = vec![("labelSelector", format!("app={NAME}"))];
    exchange
}

async fn finish(player: tokio::task::JoinHandle<usize>, expected: usize) {
    assert_eq!(player.await.expect("the scripted API found a wrong request"), expected);
}

// --- rollout restart ----------------------------------------------------------

#[tokio::test]
async fn restart_sends_kubectls_strategic_merge_patch() {
    let at = Utc.with_ymd_and_hms(2026, 3, 1, 12, 30, 5).unwrap();
    let (client, player) = scripted(vec![
        get(DEPLOYMENT_PATH, deployment(3, done(3), false, "immoflowme:v3")),
        patch(
            DEPLOYMENT_PATH,
            "application/strategic-merge-patch+json",
            json!({"spec": {"template": {"metadata": {"annotations":
                {"kubectl.kubernetes.io/restartedAt": "2026-03-01T12:30:05Z"}}}}}),
            deployment(4, done(3), false, "immoflowme:v3"),
        ),
    ]);
    let patched = Rollout::new(client, NS, NAME).restart(at).await.unwrap();
    assert_eq!(patched.metadata.generation, Some(4));
    finish(player, 2).await;
}

#[tokio::test]
async fn restart_of_a_missing_deployment_names_it() {
    let mut missing = get(DEPLOYMENT_PATH, not_found("deployments.apps", NAME));
    missing.status = 404;
    let (client, player) = scripted(vec![missing]);
    let err = Rollout::new(client, NS, NAME).restart(Utc::now()).await.unwrap_err();
    assert!(matches!(&err, K8sError::DeploymentNotFound { namespace, name } if namespace == NS && name == NAME));
    assert!(
        err.to_string().contains("deployment `default/immoflowme` not found"),
        "{err}"
    );
    finish(player, 1).await;
}

// --- rollout status -----------------------------------------------------------

#[tokio::test]
async fn status_waits_for_kubectls_completion_rules() {
    let (client, player) = scripted(vec![
        // Generation not yet observed.
        get(DEPLOYMENT_PATH, deployment(4, done(3), false, "v4")),
        // 1 of 3 updated.
        get(
            DEPLOYMENT_PATH,
            deployment(
                4,
                json!({"observedGeneration": 4, "replicas": 4, "updatedReplicas": 1, "availableReplicas": 3}),
                false,
                "v4",
            ),
        ),
        // All updated, one old pending termination.
        get(
            DEPLOYMENT_PATH,
            deployment(
                4,
                json!({"observedGeneration": 4, "replicas": 4, "updatedReplicas": 3, "availableReplicas": 3}),
                false,
                "v4",
            ),
        ),
        // Old gone, 2 of 3 available.
        get(
            DEPLOYMENT_PATH,
            deployment(
                4,
                json!({"observedGeneration": 4, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 2}),
                false,
                "v4",
            ),
        ),
        get(DEPLOYMENT_PATH, deployment(4, done(4), false, "v4")),
    ]);
    let wait = Wait::new(Duration::from_secs(30)).every(Duration::from_millis(5));
    let done = Rollout::new(client, NS, NAME).wait_complete(wait).await.unwrap();
    assert_eq!(done.polls, 5);
    assert_eq!(done.message, "deployment \"immoflowme\" successfully rolled out");
    finish(player, 5).await;
}

#[tokio::test]
async fn a_stalled_rollout_fails_with_progress_deadline_exceeded() {
    let stalled = json!({"observedGeneration": 4, "replicas": 4, "updatedReplicas": 1, "availableReplicas": 3,
        "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                        "message": "ReplicaSet \"immoflowme-hash4\" has timed out progressing."}]});
    let (client, player) = scripted(vec![
        get(
            DEPLOYMENT_PATH,
            deployment(
                4,
                json!({"observedGeneration": 4, "replicas": 4, "updatedReplicas": 1, "availableReplicas": 3}),
                false,
                "v4",
            ),
        ),
        get(DEPLOYMENT_PATH, deployment(4, stalled, false, "v4")),
    ]);
    let wait = Wait::new(Duration::from_secs(30)).every(Duration::from_millis(5));
    let err = Rollout::new(client, NS, NAME).wait_complete(wait).await.unwrap_err();
    assert!(
        matches!(&err, K8sError::RolloutStalled { message, .. } if message.contains("timed out progressing")),
        "{err}"
    );
    assert!(err.to_string().contains("rollout undo"), "says what to do: {err}");
    finish(player, 2).await;
}

#[tokio::test]
async fn a_rollout_that_never_completes_times_out_with_the_last_status() {
    let waiting = json!({"observedGeneration": 4, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 1});
    let script = (0..200)
        .map(|_| get(DEPLOYMENT_PATH, deployment(4, waiting.clone(), false, "v4")))
        .collect();
    let (client, player) = scripted(script);
    let wait = Wait::new(Duration::from_millis(100)).every(Duration::from_millis(10));
    let err = Rollout::new(client, NS, NAME).wait_complete(wait).await.unwrap_err();
    assert!(
        matches!(&err, K8sError::RolloutTimeout { last, .. } if last.contains("1 of 3 updated replicas are available")),
        "{err}"
    );
    player.abort();
}

// --- rollout undo -------------------------------------------------------------

#[tokio::test]
async fn undo_rolls_back_to_the_previous_revision_like_kubectl() {
    let history = vec![
        replica_set(1, "immoflowme:v1", "dep-uid", json!({})),
        replica_set(3, "immoflowme:v3", "dep-uid", json!({"app.example/change-cause": "v3"})),
        replica_set(2, "immoflowme:v2", "dep-uid", json!({"app.example/change-cause": "v2"})),
        // Same labels, other owner: not this deployment's history.
        replica_set(9, "other:v9", "someone-else", json!({})),
    ];
    let (client, player) = scripted(vec![
        get(DEPLOYMENT_PATH, deployment(3, done(3), false, "immoflowme:v3")),
        rs_list(history),
        patch(
            DEPLOYMENT_PATH,
            "application/json-patch+json",
            json!([
                {"op": "replace", "path": "/spec/template", "value": template("immoflowme:v2", None)},
                {"op": "replace", "path": "/metadata/annotations", "value": {
                    "app.example/change-cause": "v2",
                    "deployment.kubernetes.io/revision": "3",
                    "kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            ]),
            deployment(4, done(3), false, "immoflowme:v2"),
        ),
    ]);
    let undo = Rollout::new(client, NS, NAME).undo().await.unwrap();
    assert_eq!((undo.from_revision, undo.to_revision, undo.skipped), (3, 2, false));
    finish(player, 3).await;
}

#[tokio::test]
async fn undo_of_a_paused_deployment_is_refused_before_anything_is_read_or_patched() {
    let (client, player) = scripted(vec![get(DEPLOYMENT_PATH, deployment(3, done(3), true, "v3"))]);
    let err = Rollout::new(client, NS, NAME).undo().await.unwrap_err();
    assert!(
        matches!(
            &err,
            K8sError::Paused {
                action: "roll back",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("kubectl rollout resume deployment/immoflowme -n default"),
        "{err}"
    );
    finish(player, 1).await;
}

#[tokio::test]
async fn undo_without_a_previous_revision_is_an_error() {
    let (client, player) = scripted(vec![
        get(DEPLOYMENT_PATH, deployment(1, done(1), false, "immoflowme:v1")),
        rs_list(vec![replica_set(1, "immoflowme:v1", "dep-uid", json!({}))]),
    ]);
    let err = Rollout::new(client, NS, NAME).undo().await.unwrap_err();
    assert!(
        matches!(&err, K8sError::NoPreviousRevision { revisions, .. } if revisions == &[1]),
        "{err}"
    );
    finish(player, 2).await;
}

#[tokio::test]
async fn undo_is_skipped_when_the_template_already_matches() {
    let (client, player) = scripted(vec![
        get(DEPLOYMENT_PATH, deployment(3, done(3), false, "immoflowme:v2")),
        rs_list(vec![
            replica_set(2, "immoflowme:v2", "dep-uid", json!({})),
            replica_set(3, "immoflowme:v3", "dep-uid", json!({})),
        ]),
    ]);
    let undo = Rollout::new(client, NS, NAME).undo().await.unwrap();
    assert!(undo.skipped, "{undo:?}");
    finish(player, 2).await;
}

#[tokio::test]
async fn undo_of_a_missing_deployment_names_it() {
    let mut missing = get(DEPLOYMENT_PATH, not_found("deployments.apps", NAME));
    missing.status = 404;
    let (client, player) = scripted(vec![missing]);
    let err = Rollout::new(client, NS, NAME).undo().await.unwrap_err();
    assert!(matches!(err, K8sError::DeploymentNotFound { .. }), "{err}");
    finish(player, 1).await;
}

// --- Istio traffic switch -----------------------------------------------------

fn virtual_service(http: Value) -> Value {
    json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
           "metadata": {"name": NAME, "namespace": NS, "resourceVersion": "42"},
           "spec": {"hosts": [NAME], "http": http}})
}

fn blue_live() -> Value {
    json!([{
        "match": [{"uri": {"prefix": "/"}}],
        "retries": {"attempts": 3},
        "route": [
            {"destination": {"host": NAME, "subset": "blue"}, "weight": 100},
            {"destination": {"host": NAME, "subset": "green"}, "weight": 0},
        ],
    }])
}

#[tokio::test]
async fn switch_to_green_merge_patches_the_weights_and_revert_puts_blue_back() {
    let green_live = json!([{
        "match": [{"uri": {"prefix": "/"}}],
        "retries": {"attempts": 3},
        "route": [
            {"destination": {"host": NAME, "subset": "blue"}, "weight": 0},
            {"destination": {"host": NAME, "subset": "green"}, "weight": 100},
        ],
    }]);
    let (client, player) = scripted(vec![
        get(VS_PATH, virtual_service(blue_live())),
        patch(
            VS_PATH,
            "application/merge-patch+json",
            json!({"metadata": {"resourceVersion": "42"}, "spec": {"http": green_live}}),
            virtual_service(green_live.clone()),
        ),
        patch(
            VS_PATH,
            "application/merge-patch+json",
            json!({"spec": {"http": blue_live()}}),
            virtual_service(blue_live()),
        ),
    ]);
    let switch = switch_traffic(client.clone(), NS, NAME, "green").await.unwrap();
    assert_eq!(switch.previous_http, blue_live());
    assert_eq!(switch.http, green_live);
    switch.revert(client).await.unwrap();
    finish(player, 3).await;
}

#[tokio::test]
async fn a_subset_missing_from_the_routes_is_refused_without_patching() {
    let (client, player) = scripted(vec![get(VS_PATH, virtual_service(blue_live()))]);
    let err = switch_traffic(client, NS, NAME, "purple").await.unwrap_err();
    assert!(
        matches!(&err, K8sError::SubsetNotFound { subset, available, .. }
            if subset == "purple" && available == &["blue", "green"]),
        "{err}"
    );
    assert!(
        err.to_string().contains("no route destination with subset `purple`"),
        "{err}"
    );
    // Only the GET was played: had a patch been sent, the mock would have
    // had no answer for it and the switch would have failed differently.
    finish(player, 1).await;
}

#[tokio::test]
async fn a_missing_virtual_service_names_it() {
    let mut missing = get(VS_PATH, not_found("virtualservices.networking.istio.io", NAME));
    missing.status = 404;
    let (client, player) = scripted(vec![missing]);
    let err = switch_traffic(client, NS, NAME, "green").await.unwrap_err();
    assert!(matches!(err, K8sError::VirtualServiceNotFound { .. }), "{err}");
    finish(player, 1).await;
}
