//! Prometheus metrics: every request counted and timed by route pattern
//! (never by raw path or token), and what the routes report.

use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::{ApiError, AppState};

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteOnly {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct StatusLabel {
    pub(super) status: String,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RouteLabels, Counter>,
    latency: Family<RouteOnly, Histogram>,
    pub(super) held: Gauge,
    pub(super) mutations: Family<StatusLabel, Counter>,
    pub(super) bytes_in: Counter,
    pub(super) bytes_out: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("threadsync");
        let requests = Family::<RouteLabels, Counter>::default();
        let latency = Family::<RouteOnly, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        let held = Gauge::default();
        let mutations = Family::<StatusLabel, Counter>::default();
        let (bytes_in, bytes_out) = (Counter::default(), Counter::default());
        registry.register("http_requests", "HTTP requests by route and status", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency (held pulls included)",
            latency.clone(),
        );
        registry.register("long_polls_held", "Pulls being held right now", held.clone());
        registry.register("push_mutations", "Pushed mutations by result", mutations.clone());
        registry.register("push_bytes", "Bytes of push bodies received (decompressed)", bytes_in.clone());
        registry.register("pull_bytes", "Bytes of pull answers sent (before compression)", bytes_out.clone());
        Metrics { registry, requests, latency, held, mutations, bytes_in, bytes_out }
    }
}

/// Counts and times every request (by route pattern, never by raw path or token).
pub(super) async fn record(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_string();
    let method = req.method().clone();
    let start = Instant::now();
    let resp = next.run(req).await;
    let took = start.elapsed();
    let status = resp.status().as_u16();
    s.metrics.requests.get_or_create(&RouteLabels { route: route.clone(), status }).inc();
    s.metrics.latency.get_or_create(&RouteOnly { route: route.clone() }).observe(took.as_secs_f64());
    tracing::debug!(%method, %route, status, ms = took.as_millis() as u64, "request");
    resp
}

/// Prometheus/OpenMetrics text: requests by route and status, their
/// latency, held pulls, pushed mutations by result, bytes in and out.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "meta",
    operation_id = "metrics",
    responses((
        status = 200,
        description = "The metrics, as OpenMetrics text (`application/openmetrics-text; version=1.0.0; charset=utf-8`).",
        body = String,
        content_type = "application/openmetrics-text",
    )),
)]
async fn metrics(State(s): State<AppState>) -> Response {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &s.metrics.registry).is_err() {
        return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "could not encode metrics")
            .into_response();
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}
