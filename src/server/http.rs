//! The HTTP surface of `threadsync serve` (axum). Routes, errors, auth,
//! long-polls and metrics; every decision is `server::core`'s.
//!
//! Every error is JSON `{"code": …, "message": …}` with a 4xx/5xx status;
//! storage errors are logged and answered 500 (503 when worth retrying)
//! without details. Tokens are never logged.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Semaphore, watch};

use crate::merge::Limits;
use crate::model::ThreadId;
use crate::server::core::{self, PullError, PullLimits, StoreError, TeamId};
use crate::server::store::{Store, StoreExt, token_hash};
use crate::wire::{Cursor, MutationStatus, PushRequest};

/// What a server is allowed to take.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Largest request body, after decompression.
    pub max_body: usize,
    pub limits: Limits,
    pub pull_limits: PullLimits,
    /// Longest a pull is held.
    pub max_wait: Duration,
    /// Pulls held at once before new ones are turned away (429).
    pub max_held: usize,
    /// Pushes applied at once before new ones are turned away (429).
    pub max_pushes: usize,
    /// Most mutations in one push.
    pub max_mutations: usize,
    /// Longest a client may take to send a request's headers, or between
    /// two pieces of its body.
    pub read_timeout: Duration,
    /// Longest a shutdown waits for the requests in flight.
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_body: 32 << 20,
            limits: Limits::default(),
            pull_limits: PullLimits::default(),
            max_wait: Duration::from_secs(25),
            max_held: 20_000,
            max_pushes: 64,
            max_mutations: 1000,
            read_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Wakes held pulls: one watch channel per team carrying its log head.
#[derive(Default)]
pub struct Hub {
    teams: Mutex<HashMap<TeamId, watch::Sender<u64>>>,
}

impl Hub {
    pub fn subscribe(&self, team: &TeamId) -> watch::Receiver<u64> {
        let mut teams = self.teams.lock().unwrap_or_else(|e| e.into_inner());
        teams.entry(team.clone()).or_insert_with(|| watch::channel(0).0).subscribe()
    }

    pub fn notify(&self, team: &TeamId, head: u64) {
        let teams = self.teams.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = teams.get(team) {
            tx.send_if_modified(|h| {
                let newer = head > *h;
                *h = (*h).max(head);
                newer
            });
        }
    }

    /// Wakes every held pull (e.g. after missing notifications): each re-reads.
    pub fn wake_all(&self) {
        let teams = self.teams.lock().unwrap_or_else(|e| e.into_inner());
        for tx in teams.values() {
            tx.send_modify(|_| {});
        }
    }
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
struct StatusLabel {
    status: String,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RouteLabels, Counter>,
    latency: Family<RouteOnly, Histogram>,
    held: Gauge,
    mutations: Family<StatusLabel, Counter>,
    bytes_in: Counter,
    bytes_out: Counter,
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

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub hub: Arc<Hub>,
    pub cfg: Arc<ServerConfig>,
    pub metrics: Arc<Metrics>,
    /// Flips to true when the server shuts down: held pulls answer at once.
    pub shutdown: watch::Receiver<bool>,
    pushes: Arc<Semaphore>,
    held: Arc<AtomicUsize>,
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, cfg: ServerConfig, shutdown: watch::Receiver<bool>) -> Self {
        AppState {
            store,
            hub: Arc::new(Hub::default()),
            pushes: Arc::new(Semaphore::new(cfg.max_pushes)),
            cfg: Arc::new(cfg),
            metrics: Arc::new(Metrics::default()),
            shutdown,
            held: Arc::new(AtomicUsize::new(0)),
        }
    }
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), retry_after: None }
    }

    fn busy(message: impl Into<String>) -> Self {
        ApiError { retry_after: Some(1), ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "overloaded", message) }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "storage failed");
        if e.transient {
            ApiError {
                retry_after: Some(1),
                ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "storage is busy; retry")
            }
        } else {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; it was logged on the server")
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "code": self.code, "message": self.message });
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

/// Runs blocking storage work off the async threads.
async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> Result<R, StoreError> + Send + 'static,
) -> Result<R, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => {
            tracing::error!(error = %e, "storage task failed");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error; it was logged on the server",
            ))
        }
    }
}

/// The team of the request's bearer token.
pub struct Team(pub TeamId);

impl FromRequestParts<AppState> for Team {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(unauthorized("missing bearer token (Authorization: Bearer <token>)"));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() <= 256)
            .ok_or_else(|| unauthorized("malformed Authorization header; expected \"Bearer <token>\""))?;
        let hash = token_hash(token);
        let store = state.store.clone();
        match blocking(move || store.team_for_token(&hash)).await? {
            Some(team) => Ok(Team(team)),
            None => Err(unauthorized("the token is not valid (unknown or revoked)")),
        }
    }
}

/// Query parameters; a malformed one is the protocol's JSON error.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(q)) => Ok(QueryParams(q)),
            Err(e) => Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text())),
        }
    }
}

/// Path segments; one that is not UTF-8 cannot be an id.
pub struct PathIds<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for PathIds<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(p)) => Ok(PathIds(p)),
            Err(e) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_thread_id",
                format!("bad id in the path: {}", e.body_text()),
            )),
        }
    }
}

/// The content codings a request body may use (`identity` is none).
const CODINGS: [&str; 2] = ["gzip", "zstd"];

/// Refuses at once a body declared larger than the limit (the client
/// would otherwise send all of it first), and reads content codings case-
/// insensitively, as HTTP says (`GZIP` is `gzip`).
async fn admit_body(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > s.cfg.max_body as u64) {
        let mut resp = ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the request body is larger than the server's limit of {} bytes", s.cfg.max_body),
        )
        .into_response();
        // The rest of the body is not read: the connection cannot be reused.
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        return resp;
    }
    if let Some(v) = req.headers().get(header::CONTENT_ENCODING) {
        let coding = v.to_str().unwrap_or("?").trim().to_ascii_lowercase();
        if coding.is_empty() || coding == "identity" {
            req.headers_mut().remove(header::CONTENT_ENCODING);
        } else if let Some(c) = CODINGS.iter().find(|c| **c == coding) {
            req.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static(c));
        } else {
            return ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_encoding",
                format!("Content-Encoding {coding:?} is not supported; send gzip, zstd or none"),
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// A JSON body, read up to the configured limit (after decompression).
pub struct JsonBody<T>(pub T, pub usize);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let limit = state.cfg.max_body;
        let bytes = axum::body::to_bytes(req.into_body(), limit).await.map_err(|e| {
            // Besides the limit, reading fails only on a broken body stream
            // (or a compressed body that does not decompress).
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            let (mut too_large, mut stalled) = (false, false);
            while let Some(err) = source {
                too_large |= err.is::<http_body_util::LengthLimitError>();
                stalled |= err.is::<tower_http::timeout::TimeoutError>();
                source = err.source();
            }
            if stalled {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "timeout",
                    format!("the request body stalled for longer than {:?}", state.cfg.read_timeout),
                )
            } else if too_large {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("the request body is larger than the server's limit of {limit} bytes"),
                )
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_body", format!("could not read the request body: {e}"))
            }
        })?;
        let value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("invalid request body: {e}")))?;
        Ok(JsonBody(value, bytes.len()))
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/push", post(push))
        .route("/v1/pull", get(pull))
        .route("/v1/threads/{id}", get(thread))
        .route("/v1/threads/{id}/messages/{message}", get(kept_message))
        .route("/healthz", get(health))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route; see protocol.md") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not take that method")
        })
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; it was logged on the server")
                .into_response()
        }))
        .layer(tower_http::decompression::RequestDecompressionLayer::new())
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(state.cfg.read_timeout))
        .layer(middleware::from_fn_with_state(state.clone(), admit_body))
        .layer(tower_http::compression::CompressionLayer::new())
        .with_state(state)
}

/// Counts and times every request (by route pattern, never by raw path or token).
async fn record(State(s): State<AppState>, req: Request, next: Next) -> Response {
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

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn metrics(State(s): State<AppState>) -> Response {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &s.metrics.registry).is_err() {
        return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "could not encode metrics")
            .into_response();
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}

async fn push(
    State(s): State<AppState>,
    Team(team): Team,
    JsonBody(req, size): JsonBody<PushRequest>,
) -> Result<Response, ApiError> {
    if req.mutations.len() > s.cfg.max_mutations {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_mutations",
            format!("{} mutations in one push; the limit is {}", req.mutations.len(), s.cfg.max_mutations),
        ));
    }
    if let Some(m) = req.mutations.iter().find(|m| m.id == 0) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("mutation ids start at 1 (thread {})", m.thread_id),
        ));
    }
    let Ok(_permit) = tokio::time::timeout(Duration::from_secs(2), s.pushes.clone().acquire_owned()).await else {
        return Err(ApiError::busy("too many pushes at once; retry shortly"));
    };
    s.metrics.bytes_in.inc_by(size as u64);
    let (store, limits, t) = (s.store.clone(), s.cfg.limits, team.clone());
    let (resp, head) = blocking(move || store.run(&t, true, |tx| core::push(tx, &req, &limits))).await?;
    if let Some(head) = head {
        s.hub.notify(&team, head);
    }
    for r in &resp.results {
        let status = match r.status {
            MutationStatus::Applied => "applied",
            MutationStatus::Duplicate => "duplicate",
            MutationStatus::Conflict => "conflict",
            MutationStatus::Rejected => "rejected",
            MutationStatus::Gap => "gap",
        };
        s.metrics.mutations.get_or_create(&StatusLabel { status: status.into() }).inc();
    }
    Ok(Json(resp).into_response())
}

#[derive(Deserialize)]
struct PullQuery {
    cursor: Option<String>,
    /// Seconds to hold the request when nothing is new (capped at 25).
    wait: Option<u64>,
}

/// Decrements the held-pull count however the handler ends.
struct Held<'a>(&'a AppState);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::Relaxed);
        self.0.metrics.held.dec();
    }
}

async fn pull(
    State(s): State<AppState>,
    Team(team): Team,
    QueryParams(q): QueryParams<PullQuery>,
) -> Result<Response, ApiError> {
    let cursor = match q.cursor.as_deref().filter(|c| !c.is_empty()) {
        Some(c) => Some(c.parse::<Cursor>().map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_cursor", e))?),
        None => None,
    };
    let wait = Duration::from_secs(q.wait.unwrap_or(0)).min(s.cfg.max_wait);
    let deadline = tokio::time::Instant::now() + wait;
    // Subscribe before reading, so a change between the read and the wait
    // still wakes us.
    let mut changes = s.hub.subscribe(&team);
    changes.borrow_and_update();
    let mut shutdown = s.shutdown.clone();
    let mut held: Option<Held> = None;
    loop {
        let (store, lim, t, c) = (s.store.clone(), s.cfg.pull_limits, team.clone(), cursor.clone());
        let answer = blocking(move || Ok(store.run(&t, false, |tx| Ok(core::pull(tx, c.as_ref(), &lim)))?.0)).await?;
        let resp = match answer {
            Ok(r) => r,
            Err(PullError::Refetch { cursor, why }) => {
                return Err(ApiError::new(
                    StatusCode::GONE,
                    "refetch",
                    format!("cursor {cursor} can no longer be served ({why}); pull again without a cursor"),
                ));
            }
            Err(PullError::Store(e)) => return Err(e.into()),
        };
        let idle = resp.changes.is_empty() && resp.snapshots.is_empty() && resp.up_to_date;
        if !idle || tokio::time::Instant::now() >= deadline || *shutdown.borrow() {
            let body = serde_json::to_vec(&resp).map_err(|e| StoreError::new(e.to_string()))?;
            s.metrics.bytes_out.inc_by(body.len() as u64);
            return Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response());
        }
        if held.is_none() {
            if s.held.fetch_add(1, Ordering::Relaxed) >= s.cfg.max_held {
                s.held.fetch_sub(1, Ordering::Relaxed);
                return Err(ApiError::busy("too many held pulls; retry shortly"));
            }
            s.metrics.held.inc();
            held = Some(Held(&s));
        }
        tokio::select! {
            _ = changes.changed() => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = shutdown.changed() => {}
        }
    }
}

#[derive(Deserialize)]
struct ThreadQuery {
    /// Only the changes after this version.
    from: Option<u64>,
}

async fn thread(
    State(s): State<AppState>,
    Team(team): Team,
    PathIds(id): PathIds<String>,
    QueryParams(q): QueryParams<ThreadQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = ThreadId::new(id)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_thread_id", format!("bad thread id: {e}")))?;
    let (store, t, tid) = (s.store.clone(), team.clone(), id.clone());
    let limit = s.cfg.pull_limits.max_changes;
    let found = blocking(move || {
        let found = store.run(&t, false, |tx| {
            Ok(match tx.doc(&tid)? {
                None => None,
                Some(doc) => {
                    let changes = match q.from {
                        Some(v) if v < doc.thread.v => Some(tx.thread_changes(&tid, v, limit)?),
                        Some(_) => Some(Vec::new()),
                        None => None,
                    };
                    Some((doc, changes))
                }
            })
        })?;
        Ok(found.0)
    })
    .await?;
    // Another team's thread answers exactly like a missing one.
    let Some((doc, changes)) = found else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no thread {id}")));
    };
    let etag = format!("\"v{}\"", doc.thread.v);
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
    {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    let body = match changes {
        None => serde_json::to_vec(&doc.thread),
        Some(changes) => {
            let from = q.from.unwrap_or(0);
            if changes.first().is_some_and(|c| c.version != from + 1) || (changes.is_empty() && from < doc.thread.v) {
                return Err(ApiError::new(
                    StatusCode::GONE,
                    "refetch",
                    format!("changes after version {from} are no longer kept; fetch the whole thread"),
                ));
            }
            serde_json::to_vec(&serde_json::json!({ "threadId": id, "version": doc.thread.v, "changes": changes }))
        }
    }
    .map_err(|e| StoreError::new(e.to_string()))?;
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (header::ETAG, HeaderValue::from_str(&etag).unwrap()),
        ],
        Body::from(body),
    )
        .into_response())
}

/// One message as the server keeps it, deleted or not (what a client needs
/// to bring a deleted message back).
async fn kept_message(
    State(s): State<AppState>,
    Team(team): Team,
    PathIds((id, message)): PathIds<(String, String)>,
) -> Result<Response, ApiError> {
    let id = ThreadId::new(id)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_thread_id", format!("bad thread id: {e}")))?;
    let mid = crate::model::MessageId::new(message)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("bad message id: {e}")))?;
    let (store, t, tid, m) = (s.store.clone(), team.clone(), id.clone(), mid.clone());
    let found = blocking(move || Ok(store.run(&t, false, |tx| tx.kept_message(&tid, &m))?.0)).await?;
    // Another team's thread answers exactly like a missing one.
    let Some((message, deleted)) = found else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no message {mid} in thread {id}")));
    };
    Ok(Json(serde_json::json!({ "threadId": id, "message": message, "deleted": deleted })).into_response())
}

/// Binds with a large listen backlog, so that a reconnect storm of thousands
/// of sidecars after a restart is not queued behind tokio's default of 128.
pub fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}
