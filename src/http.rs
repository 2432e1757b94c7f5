//! HTTP side of recovery (playbook sections 5 and 6): health and smoke
//! checks, the cache flush, the 5xx error-rate watch against Prometheus and
//! the DNS check.
//!
//! # Guarantees
//! Every call has a deadline: an endpoint that does not answer, answers
//! slowly or answers with an error status is retried until the deadline and
//! then reported with its URL, the number of attempts and the last error.
//! Nothing here waits longer than the deadline it was given (plus one
//! attempt's connect at most, which the attempt timeout also bounds).
//!
//! # Caveats
//! The client speaks HTTP/1.1, plain or TLS (rustls with the system's root
//! certificates; without a CA bundle on the machine only `http://` works and
//! `https://` fails with a TLS error naming the URL). It does not use
//! `HTTP_PROXY`.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;

/// The playbook's 6.1 error-rate PromQL, verbatim: the share of requests
/// answered with a 5xx over the last minute.
pub const ERROR_RATE_QUERY: &str =
    r#"sum(rate(http_requests_total{status=~"5.."}[1m]))/sum(rate(http_requests_total[1m]))"#;

/// The playbook's 6.3 smoke paths, in its order.
pub const SMOKE_PATHS: [&str; 3] = ["/health", "/api/health", "/metrics"];

/// The playbook's 5 step 2 cache-flush path (`POST`).
pub const CACHE_FLUSH_PATH: &str = "/api/admin/cache/flush";

/// Why a check failed or could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    #[error("failed to parse URL `{url}` (give an absolute http:// or https:// URL)")]
    InvalidUrl {
        url: String,
        #[source]
        source: url::ParseError,
    },
    #[error(
        "failed to get a healthy answer from {method} {url} within {deadline:?} ({attempts} attempts); \
         last error: {last_error} (check that the service runs and is reachable from here, or raise the deadline)"
    )]
    DeadlineExceeded {
        method: String,
        url: String,
        deadline: Duration,
        attempts: u32,
        last_error: String,
    },
    #[error("failed to query Prometheus at {url}: {reason} (check the Prometheus URL and the query)")]
    Prometheus { url: String, reason: String },
    #[error(
        "5xx error rate {rate:.4} exceeded the threshold {threshold:.4} after {after:?} of the watch \
         (query `{query}`); roll the traffic switch back and look at the failing requests"
    )]
    ErrorRateAboveThreshold {
        query: String,
        rate: f64,
        threshold: f64,
        after: Duration,
    },
    #[error(
        "failed to see any traffic in {samples} Prometheus samples over {window:?} (query `{query}` returned no \
         data): metrics are not flowing from the switched service; check its /metrics and the scrape config"
    )]
    NoTraffic {
        query: String,
        samples: usize,
        window: Duration,
    },
    #[error("failed to resolve `{name}` within {deadline:?}: {reason} (check the DNS record and the resolver)")]
    DnsLookup {
        name: String,
        deadline: Duration,
        reason: String,
    },
    #[error(
        "`{name}` resolves to {actual:?}, expected only addresses from {expected:?} \
         (DNS has not propagated yet, or the record points to the wrong environment)"
    )]
    DnsMismatch {
        name: String,
        expected: Vec<IpAddr>,
        actual: Vec<IpAddr>,
    },
}

pub type Result<T, E = HttpError> = std::result::Result<T, E>;

/// How long to keep trying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Give up after this long, from the first attempt.
    pub deadline: Duration,
    /// One attempt (connect, headers and body) at most this long.
    pub attempt_timeout: Duration,
    /// Pause between attempts.
    pub interval: Duration,
}

impl Default for RetryPolicy {
    /// 60 s overall, 5 s per attempt, 1 s apart.
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(60),
            attempt_timeout: Duration::from_secs(5),
            interval: Duration::from_secs(1),
        }
    }
}

/// One successful answer.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    pub method: String,
    pub url: String,
    pub status: u16,
    /// Attempts made, the successful one included.
    pub attempts: u32,
    /// From the first attempt to the answer.
    #[serde(with = "crate::serde_duration")]
    pub elapsed: Duration,
    /// The response body (health payloads and metrics are small; at most
    /// [`MAX_BODY`] bytes are kept).
    #[serde(skip)]
    pub body: Bytes,
}

impl Probe {
    /// The body as text, lossy.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Bodies longer than this are cut.
pub const MAX_BODY: usize = 1 << 20;

/// An HTTP client with a retry policy.
#[derive(Debug, Clone)]
pub struct HttpChecker {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    policy: RetryPolicy,
}

impl HttpChecker {
    pub fn new(policy: RetryPolicy) -> Self {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = match HttpsConnectorBuilder::new().with_provider_and_native_roots(Arc::clone(&provider)) {
            Ok(builder) => builder,
            Err(error) => {
                // No CA bundle: plain HTTP still works, HTTPS fails per request.
                tracing::warn!(%error, "no system root certificates; https:// checks will fail");
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .expect("the aws-lc-rs provider supports the default protocol versions")
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth();
                HttpsConnectorBuilder::new().with_tls_config(config)
            }
        };
        let connector = builder.https_or_http().enable_http1().build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Self { client, policy }
    }

    pub fn policy(&self) -> RetryPolicy {
        self.policy
    }

    /// `GET url` until it answers 2xx (the playbook's `curl -f`).
    ///
    /// # Errors
    /// [`HttpError::DeadlineExceeded`] with the URL and the last error
    /// (connection refused, timeout, or the status and body) when no
    /// attempt succeeded before the deadline.
    pub async fn get_ok(&self, url: &str) -> Result<Probe> {
        self.request_ok(Method::GET, url, Bytes::new()).await
    }

    /// `GET <base>/health`, `/api/health` and `/metrics` (playbook 6.3), each
    /// until 2xx; `/metrics` must also have a non-empty body ("metrics are
    /// flowing").
    ///
    /// # Errors
    /// The first path that fails, as [`HttpError::DeadlineExceeded`].
    pub async fn smoke(&self, base_url: &str) -> Result<Vec<Probe>> {
        let mut probes = Vec::with_capacity(SMOKE_PATHS.len());
        for path in SMOKE_PATHS {
            let url = join(base_url, path)?;
            let probe = if path == "/metrics" {
                self.request(Method::GET, &url, Bytes::new(), |status, body| {
                    if !status.is_success() {
                        Err(status_error(status, body))
                    } else if body.iter().all(u8::is_ascii_whitespace) {
                        Err(format!("status {status} with an empty body: no metrics are exported"))
                    } else {
                        Ok(())
                    }
                })
                .await?
            } else {
                self.get_ok(&url).await?
            };
            probes.push(probe);
        }
        Ok(probes)
    }

    /// `POST <base>/api/admin/cache/flush` (playbook 5 step 2) until 2xx.
    ///
    /// # Errors
    /// As [`Self::get_ok`].
    pub async fn flush_cache(&self, base_url: &str) -> Result<Probe> {
        let url = join(base_url, CACHE_FLUSH_PATH)?;
        self.request_ok(Method::POST, &url, Bytes::new()).await
    }

    /// Any method, retried until 2xx.
    ///
    /// # Errors
    /// As [`Self::get_ok`].
    pub async fn request_ok(&self, method: Method, url: &str, body: Bytes) -> Result<Probe> {
        self.request(method, url, body, |status, body| {
            if status.is_success() {
                Ok(())
            } else {
                Err(status_error(status, body))
            }
        })
        .await
    }

    async fn request(
        &self,
        method: Method,
        url: &str,
        body: Bytes,
        accept: impl Fn(StatusCode, &[u8]) -> std::result::Result<(), String>,
    ) -> Result<Probe> {
        let parsed = url::Url::parse(url).map_err(|source| HttpError::InvalidUrl {
            url: url.to_owned(),
            source,
        })?;
        let started = Instant::now();
        let mut attempts = 0;
        let mut last_error;
        loop {
            attempts += 1;
            let remaining = self.policy.deadline.saturating_sub(started.elapsed());
            let budget = self.policy.attempt_timeout.min(remaining);
            let outcome = tokio::time::timeout(budget, self.once(&method, parsed.as_str(), body.clone())).await;
            last_error = match outcome {
                Err(_) => format!("no answer within {budget:?}"),
                Ok(Err(error)) => error,
                Ok(Ok((status, bytes))) => match accept(status, &bytes) {
                    Ok(()) => {
                        return Ok(Probe {
                            method: method.to_string(),
                            url: url.to_owned(),
                            status: status.as_u16(),
                            attempts,
                            elapsed: started.elapsed(),
                            body: bytes,
                        });
                    }
                    Err(reason) => reason,
                },
            };
            tracing::debug!(%url, attempts, %last_error, "HTTP check attempt failed");
            let remaining = self.policy.deadline.saturating_sub(started.elapsed());
            if remaining.is_zero() {
                break;
            }
            tokio::time::sleep(self.policy.interval.min(remaining)).await;
            if started.elapsed() >= self.policy.deadline {
                break;
            }
        }
        Err(HttpError::DeadlineExceeded {
            method: method.to_string(),
            url: url.to_owned(),
            deadline: self.policy.deadline,
            attempts,
            last_error,
        })
    }

    async fn once(&self, method: &Method, url: &str, body: Bytes) -> std::result::Result<(StatusCode, Bytes), String> {
        let request = Request::builder()
            .method(method.clone())
            .uri(url)
            .header(http::header::USER_AGENT, "drillbook")
            .body(Full::new(body))
            .map_err(|e| format!("invalid request: {e}"))?;
        let response = self.client.request(request).await.map_err(|e| chain(&e))?;
        let status = response.status();
        let limited = http_body_util::Limited::new(response.into_body(), MAX_BODY);
        let bytes = limited
            .collect()
            .await
            .map_err(|e| format!("failed to read the body: {e}"))?
            .to_bytes();
        Ok((status, bytes))
    }

    /// Runs one PromQL instant query (`/api/v1/query`) and returns its value:
    /// the first sample of a vector, or a scalar. `None` when the result is
    /// empty or `NaN` (no requests in the window: 0/0).
    ///
    /// # Errors
    /// [`HttpError::DeadlineExceeded`] when Prometheus does not answer,
    /// [`HttpError::Prometheus`] when it answers with an error or a shape
    /// this does not read.
    pub async fn prometheus_query(&self, prometheus_url: &str, query: &str) -> Result<Option<f64>> {
        let mut url =
            url::Url::parse(&join(prometheus_url, "/api/v1/query")?).map_err(|source| HttpError::InvalidUrl {
                url: prometheus_url.to_owned(),
                source,
            })?;
        url.query_pairs_mut().append_pair("query", query);
        let probe = self.get_ok(url.as_str()).await?;
        parse_prometheus(&probe.body).map_err(|reason| HttpError::Prometheus {
            url: url.to_string(),
            reason,
        })
    }

    /// Watches the 5xx error rate ([`ERROR_RATE_QUERY`] unless `options`
    /// says otherwise) for `options.window`, one sample every
    /// `options.interval` (the playbook: `watch -n 5` for 15 minutes).
    ///
    /// # Errors
    /// [`HttpError::ErrorRateAboveThreshold`] at the first sample above the
    /// threshold (without waiting for the window to end);
    /// [`HttpError::NoTraffic`] when `require_traffic` and no sample had
    /// data; query errors as [`Self::prometheus_query`].
    pub async fn watch_error_rate(&self, prometheus_url: &str, options: &WatchOptions) -> Result<ErrorRateWatch> {
        let started = Instant::now();
        let mut samples = Vec::new();
        loop {
            let value = self.prometheus_query(prometheus_url, &options.query).await?;
            let after = started.elapsed();
            samples.push(Sample { after, rate: value });
            if let Some(rate) = value
                && rate > options.threshold
            {
                return Err(HttpError::ErrorRateAboveThreshold {
                    query: options.query.clone(),
                    rate,
                    threshold: options.threshold,
                    after,
                });
            }
            if started.elapsed() + options.interval > options.window {
                break;
            }
            tokio::time::sleep(options.interval).await;
        }
        if options.require_traffic && samples.iter().all(|s| s.rate.is_none()) {
            return Err(HttpError::NoTraffic {
                query: options.query.clone(),
                samples: samples.len(),
                window: options.window,
            });
        }
        let max_rate = samples
            .iter()
            .filter_map(|s| s.rate)
            .fold(None, |max: Option<f64>, rate| Some(max.map_or(rate, |m| m.max(rate))));
        Ok(ErrorRateWatch {
            query: options.query.clone(),
            threshold: options.threshold,
            window: options.window,
            max_rate,
            samples,
        })
    }
}

impl Default for HttpChecker {
    fn default() -> Self {
        Self::new(RetryPolicy::default())
    }
}

/// How to watch the error rate after a switch.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchOptions {
    pub query: String,
    /// Fail when a sample is above this share (0.01 = 1 % of requests 5xx).
    pub threshold: f64,
    /// How long to watch (the playbook: 15 minutes).
    pub window: Duration,
    /// Between samples (the playbook: 5 s).
    pub interval: Duration,
    /// Fail when no sample had data (nothing measured is not "no errors").
    pub require_traffic: bool,
}

impl Default for WatchOptions {
    /// The playbook's query, 1 % threshold, 15 minutes, every 5 s, traffic required.
    fn default() -> Self {
        Self {
            query: ERROR_RATE_QUERY.to_owned(),
            threshold: 0.01,
            window: Duration::from_secs(15 * 60),
            interval: Duration::from_secs(5),
            require_traffic: true,
        }
    }
}

/// One Prometheus sample of the watch.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    #[serde(with = "crate::serde_duration")]
    pub after: Duration,
    /// `None`: no data (no traffic).
    pub rate: Option<f64>,
}

/// A watch that stayed under its threshold.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorRateWatch {
    pub query: String,
    pub threshold: f64,
    #[serde(with = "crate::serde_duration")]
    pub window: Duration,
    pub max_rate: Option<f64>,
    pub samples: Vec<Sample>,
}

/// Resolves `name` (the playbook's 6.2 `dig +short`) and checks that it
/// resolves to at least one address and only to addresses in `expected`.
/// Returns the resolved addresses, sorted.
///
/// # Errors
/// [`HttpError::DnsLookup`] when the name does not resolve within
/// `deadline`; [`HttpError::DnsMismatch`] when an address is not expected.
pub async fn check_dns(name: &str, expected: &[IpAddr], deadline: Duration) -> Result<Vec<IpAddr>> {
    let lookup = tokio::time::timeout(deadline, tokio::net::lookup_host((name, 0))).await;
    let addresses: BTreeSet<IpAddr> = match lookup {
        Err(_) => {
            return Err(HttpError::DnsLookup {
                name: name.to_owned(),
                deadline,
                reason: "no answer".to_owned(),
            });
        }
        Ok(Err(error)) => {
            return Err(HttpError::DnsLookup {
                name: name.to_owned(),
                deadline,
                reason: error.to_string(),
            });
        }
        Ok(Ok(found)) => found.map(|socket| socket.ip()).collect(),
    };
    let actual: Vec<IpAddr> = addresses.into_iter().collect();
    if actual.is_empty() || actual.iter().any(|ip| !expected.contains(ip)) {
        return Err(HttpError::DnsMismatch {
            name: name.to_owned(),
            expected: expected.to_vec(),
            actual,
        });
    }
    Ok(actual)
}

/// Reads `/api/v1/query`'s JSON: `{"status":"success","data":{"resultType":
/// "vector","result":[{"metric":{},"value":[<ts>,"<value>"]}]}}` (or a
/// `scalar` result `[<ts>,"<value>"]`).
fn parse_prometheus(body: &[u8]) -> std::result::Result<Option<f64>, String> {
    let json: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON: {e}"))?;
    if json["status"] != "success" {
        let error = json["error"].as_str().unwrap_or("no error message");
        return Err(format!("status {:?}: {error}", json["status"]));
    }
    let data = &json["data"];
    let pair = match data["resultType"].as_str() {
        Some("vector") => match data["result"].as_array() {
            Some(samples) if samples.is_empty() => return Ok(None),
            Some(samples) => &samples[0]["value"],
            None => return Err("vector result is not a list".to_owned()),
        },
        Some("scalar") => &data["result"],
        other => return Err(format!("unsupported result type {other:?} (expected vector or scalar)")),
    };
    let text = pair[1]
        .as_str()
        .ok_or_else(|| format!("sample {pair} has no value string"))?;
    let value: f64 = text
        .parse()
        .map_err(|_| format!("sample value {text:?} is not a number"))?;
    Ok(if value.is_nan() { None } else { Some(value) })
}

fn join(base: &str, path: &str) -> Result<String> {
    url::Url::parse(base).map_err(|source| HttpError::InvalidUrl {
        url: base.to_owned(),
        source,
    })?;
    Ok(format!("{}{path}", base.trim_end_matches('/')))
}

fn status_error(status: StatusCode, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    format!("status {status}: {}", text.trim())
}

/// The error and its causes on one line (hyper's top-level message alone
/// says only "client error (Connect)").
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vector_scalar_empty_and_nan() {
        let vector =
            br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1.5,"0.25"]}]}}"#;
        assert_eq!(parse_prometheus(vector), Ok(Some(0.25)));
        let scalar = br#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"0.5"]}}"#;
        assert_eq!(parse_prometheus(scalar), Ok(Some(0.5)));
        let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(parse_prometheus(empty), Ok(None));
        let nan =
            br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1.5,"NaN"]}]}}"#;
        assert_eq!(parse_prometheus(nan), Ok(None));
        let error = br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert!(parse_prometheus(error).unwrap_err().contains("parse error"));
    }
}
