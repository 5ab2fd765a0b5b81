//! The HTTP surface of `threadsync serve` (axum), by resource: `push`,
//! `pull` (with the long-poll `Hub`), `threads`; beside them the error type
//! (`error`), bearer auth (`auth`), request parsing (`extract`),
//! Prometheus metrics (`metrics`) and the OpenAPI document (`openapi`).
//! Every decision is `server::core`'s.
//!
//! Every error is JSON `{"code": …, "message": …}` with a 4xx/5xx status;
//! storage errors are logged and answered 500 (503 when worth retrying)
//! without details. Tokens are never logged.

mod auth;
mod error;
mod extract;
mod metrics;
mod openapi;
mod pull;
mod push;
mod threads;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::{Semaphore, watch};

use crate::merge::Limits;
use crate::server::core::{PullLimits, StoreError, TeamId};
use crate::server::store::Store;

pub use self::auth::Team;
pub use self::error::ApiError;
pub use self::extract::{JsonBody, PathIds, QueryParams};
pub use self::metrics::Metrics;
pub use self::openapi::{ERRORS, document as openapi_document};
pub use self::pull::Hub;

/// What a server is allowed to take.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Largest request body, after decompression.
    pub max_body: usize,
    pub limits: Limits,
    pub pull_limits: PullLimits,
    /// Longest a pull is held.
    pub max_wait: Duration,
    /// While a pull is held, a byte every this often (see `pull`).
    pub heartbeat: Duration,
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
    /// Changes of a team's log kept when it is compacted; a client whose
    /// cursor is older refetches.
    pub keep_changes: u64,
    /// How often the logs that grew are compacted.
    pub compact_every: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_body: 32 << 20,
            limits: Limits::default(),
            pull_limits: PullLimits::default(),
            max_wait: Duration::from_secs(300),
            heartbeat: Duration::from_secs(20),
            max_held: 20_000,
            max_pushes: 64,
            max_mutations: 1000,
            read_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            // A change row is small (bodies live with the messages): this
            // is a few tens of MB per busy team, and weeks of a team's work.
            keep_changes: 100_000,
            compact_every: Duration::from_secs(600),
        }
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
    /// Teams whose logs grew since they were last compacted.
    grown: Arc<Mutex<HashSet<TeamId>>>,
    reads: Arc<pull::SharedReads>,
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
            grown: Arc::default(),
            reads: Arc::default(),
        }
    }

    /// The teams whose logs grew since the last call.
    pub fn take_grown(&self) -> HashSet<TeamId> {
        std::mem::take(&mut *self.grown.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn log_grew(&self, team: &TeamId) {
        self.grown.lock().unwrap_or_else(|e| e.into_inner()).insert(team.clone());
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(push::routes())
        .merge(pull::routes())
        .merge(threads::routes())
        .merge(metrics::routes())
        .merge(openapi::routes())
        .merge(crate::server::web::routes())
        .route("/healthz", get(health))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route; see protocol.md") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not take that method")
        })
        .layer(middleware::from_fn_with_state(state.clone(), metrics::record))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; it was logged on the server")
                .into_response()
        }))
        .layer(tower_http::decompression::RequestDecompressionLayer::new())
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(state.cfg.read_timeout))
        .layer(middleware::from_fn_with_state(state.clone(), extract::admit_body))
        .layer(compression())
        .with_state(state)
}

/// Answers worth compressing: over a packet's worth (a push's answer is
/// not; it costs more CPU than it saves), at the fastest level (a pull of
/// whole threads still shrinks several times); never a streamed held pull.
fn compression() -> tower_http::compression::CompressionLayer<impl tower_http::compression::Predicate> {
    use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
    let not_streamed = |_: StatusCode,
                        _: axum::http::Version,
                        _: &axum::http::HeaderMap,
                        ext: &axum::http::Extensions| { ext.get::<pull::Streamed>().is_none() };
    tower_http::compression::CompressionLayer::new().quality(tower_http::CompressionLevel::Fastest).compress_when(
        SizeAbove::new(1400).and(NotForContentType::IMAGES).and(NotForContentType::SSE).and(not_streamed),
    )
}

/// Whether the server is up (the sidecar's connectivity probe).
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "meta",
    operation_id = "healthz",
    responses((status = 200, description = "The server is up.", body = openapi::Health, example = json!({"status": "ok"}))),
)]
async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Runs blocking storage work off the async threads.
pub(crate) async fn blocking<R: Send + 'static>(
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

/// Binds with a large listen backlog, so that a reconnect storm of thousands
/// of sidecars after a restart is not queued behind tokio's default of 128.
pub fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}
