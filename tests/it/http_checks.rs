//! The HTTP checks against a real local server (axum on 127.0.0.1) that can
//! be made unhealthy, slow or to answer 5xx, and a local
//! Prometheus-compatible `/api/v1/query`.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use drillbook::http::{ERROR_RATE_QUERY, HttpChecker, HttpError, RetryPolicy, WatchOptions, check_dns};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Healthy,
    Unhealthy,
    Slow,
}

#[derive(Default)]
struct App {
    mode: Mutex<Option<Mode>>,
    /// Health requests answered 503 before turning healthy.
    failures_left: Mutex<u32>,
    flushes: Mutex<u32>,
    /// Prometheus: the values to answer, one per query (last one repeats).
    rates: Mutex<VecDeque<Option<f64>>>,
    queries: Mutex<Vec<String>>,
}

impl App {
    fn mode(&self) -> Mode {
        self.mode.lock().unwrap().unwrap_or(Mode::Healthy)
    }
}

async fn health(State(app): State<Arc<App>>) -> (StatusCode, &'static str) {
    match app.mode() {
        Mode::Slow => tokio::time::sleep(Duration::from_secs(5)).await,
        Mode::Unhealthy => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"status":"down","db":"unreachable"}"#,
            );
        }
        Mode::Healthy => {}
    }
    let mut left = app.failures_left.lock().unwrap();
    if *left > 0 {
        *left -= 1;
        return (StatusCode::INTERNAL_SERVER_ERROR, "starting");
    }
    (StatusCode::OK, r#"{"status":"ok"}"#)
}

async fn metrics(State(app): State<Arc<App>>) -> (StatusCode, &'static str) {
    match app.mode() {
        Mode::Unhealthy => (StatusCode::OK, ""),
        _ => (
            StatusCode::OK,
            "# HELP http_requests_total Requests.\nhttp_requests_total{status=\"200\"} 12\n",
        ),
    }
}

async fn flush(State(app): State<Arc<App>>) -> StatusCode {
    *app.flushes.lock().unwrap() += 1;
    StatusCode::NO_CONTENT
}

async fn prometheus(
    State(app): State<Arc<App>>,
    Query(params): Query<std::collections::HashMap<String, String>>,
) -> String {
    app.queries
        .lock()
        .unwrap()
        .push(params.get("query").cloned().unwrap_or_default());
    let mut rates = app.rates.lock().unwrap();
    let rate = if rates.len() > 1 {
        rates.pop_front().unwrap()
    } else {
        rates.front().copied().flatten()
    };
    let result = match rate {
        None => "[]".to_owned(),
        Some(rate) => format!(r#"[{{"metric":{{}},"value":[1767225600.0,"{rate}"]}}]"#),
    };
    format!(r#"{{"status":"success","data":{{"resultType":"vector","result":{result}}}}}"#)
}

async fn serve() -> (String, Arc<App>) {
    let app = Arc::new(App::default());
    let router = Router::new()
        .route("/health", get(health))
        .route("/api/health", get(health))
        .route("/metrics", get(metrics))
        .route("/api/admin/cache/flush", post(flush))
        .route("/api/v1/query", get(prometheus))
        .with_state(Arc::clone(&app));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (format!("http://{address}"), app)
}

fn quick(deadline_ms: u64) -> HttpChecker {
    HttpChecker::new(RetryPolicy {
        deadline: Duration::from_millis(deadline_ms),
        attempt_timeout: Duration::from_millis(200),
        interval: Duration::from_millis(20),
    })
}

#[tokio::test]
async fn smoke_checks_the_playbooks_three_paths() {
    let (base, _app) = serve().await;
    let probes = quick(2_000).smoke(&base).await.unwrap();
    let paths: Vec<_> = probes
        .iter()
        .map(|p| p.url.trim_start_matches(&base).to_owned())
        .collect();
    assert_eq!(paths, ["/health", "/api/health", "/metrics"]);
    assert!(probes.iter().all(|p| p.status == 200 && p.attempts == 1));
    assert!(probes[2].text().contains("http_requests_total"));
}

#[tokio::test]
async fn a_service_that_is_still_starting_is_retried_until_healthy() {
    let (base, app) = serve().await;
    *app.failures_left.lock().unwrap() = 3;
    let probe = quick(5_000).get_ok(&format!("{base}/health")).await.unwrap();
    assert_eq!(probe.attempts, 4);
    assert_eq!(probe.text(), r#"{"status":"ok"}"#);
}

#[tokio::test]
async fn an_unhealthy_service_fails_with_the_url_and_its_last_answer() {
    let (base, app) = serve().await;
    *app.mode.lock().unwrap() = Some(Mode::Unhealthy);
    let err = quick(300).get_ok(&format!("{base}/api/health")).await.unwrap_err();
    let HttpError::DeadlineExceeded {
        url,
        attempts,
        last_error,
        ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(url, &format!("{base}/api/health"));
    assert!(*attempts > 1, "retried: {err}");
    assert!(
        last_error.contains("503") && last_error.contains("unreachable"),
        "{err}"
    );
}

#[tokio::test]
async fn smoke_stops_at_the_first_failing_path_and_names_it() {
    let (base, app) = serve().await;
    // /health and /api/health answer 503 in this mode too: check /metrics alone.
    *app.mode.lock().unwrap() = Some(Mode::Unhealthy);
    let err = quick(200).smoke(&base).await.unwrap_err();
    assert!(
        err.to_string().contains("/health"),
        "the first failing path is named: {err}"
    );
}

#[tokio::test]
async fn a_slow_service_fails_at_the_deadline_not_later() {
    let (base, app) = serve().await;
    *app.mode.lock().unwrap() = Some(Mode::Slow);
    let started = Instant::now();
    let err = quick(500).get_ok(&format!("{base}/health")).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        matches!(&err, HttpError::DeadlineExceeded { last_error, .. } if last_error.contains("no answer within")),
        "{err}"
    );
    // The server would answer after 5 s: giving up well before is the point.
    assert!(elapsed < Duration::from_secs(4), "waited {elapsed:?}");
}

#[tokio::test]
async fn an_unreachable_endpoint_fails_with_the_url_and_the_last_error_after_its_deadline() {
    // A port that was free a moment ago: nothing listens there.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/health");
    let started = Instant::now();
    let err = quick(400).get_ok(&url).await.unwrap_err();
    let elapsed = started.elapsed();
    let message = err.to_string();
    assert!(message.contains(&url), "names the URL: {message}");
    assert!(
        message.to_lowercase().contains("refused"),
        "names the last error: {message}"
    );
    assert!(
        elapsed >= Duration::from_millis(400),
        "tried until the deadline: {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(3), "did not hang: {elapsed:?}");
}

#[tokio::test]
async fn cache_flush_posts_once() {
    let (base, app) = serve().await;
    let probe = quick(2_000).flush_cache(&base).await.unwrap();
    assert_eq!((probe.method.as_str(), probe.status), ("POST", 204));
    assert_eq!(*app.flushes.lock().unwrap(), 1);
}

fn watch(threshold: f64) -> WatchOptions {
    WatchOptions {
        threshold,
        window: Duration::from_millis(300),
        interval: Duration::from_millis(50),
        ..WatchOptions::default()
    }
}

#[tokio::test]
async fn the_error_rate_watch_sends_the_playbooks_promql_and_passes_under_the_threshold() {
    let (base, app) = serve().await;
    *app.rates.lock().unwrap() = VecDeque::from([Some(0.001), Some(0.004), Some(0.002)]);
    let result = quick(2_000).watch_error_rate(&base, &watch(0.01)).await.unwrap();
    assert!(result.samples.len() >= 3, "{result:?}");
    assert_eq!(result.max_rate, Some(0.004));
    let queries = app.queries.lock().unwrap();
    assert!(queries.iter().all(|q| q == ERROR_RATE_QUERY), "{queries:?}");
    assert_eq!(
        ERROR_RATE_QUERY,
        r#"sum(rate(http_requests_total{status=~"5.."}[1m]))/sum(rate(http_requests_total[1m]))"#
    );
}

#[tokio::test]
async fn the_error_rate_watch_fails_above_the_threshold() {
    let (base, app) = serve().await;
    *app.rates.lock().unwrap() = VecDeque::from([Some(0.0), Some(0.25)]);
    let err = quick(2_000).watch_error_rate(&base, &watch(0.01)).await.unwrap_err();
    assert!(
        matches!(err, HttpError::ErrorRateAboveThreshold { rate, .. } if rate == 0.25),
        "{err}"
    );
}

#[tokio::test]
async fn no_traffic_is_not_a_passing_watch() {
    let (base, app) = serve().await;
    *app.rates.lock().unwrap() = VecDeque::from([None]);
    let err = quick(2_000).watch_error_rate(&base, &watch(0.01)).await.unwrap_err();
    assert!(matches!(err, HttpError::NoTraffic { .. }), "{err}");
}

#[tokio::test]
async fn dns_check_accepts_expected_addresses_and_refuses_others() {
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let found = check_dns("127.0.0.1", &[loopback], Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(found, [loopback]);
    let other = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7));
    let err = check_dns("127.0.0.1", &[other], Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, HttpError::DnsMismatch { actual, .. } if actual == &[loopback]),
        "{err}"
    );
}
