//! `threadsync serve`: open the store, bind, serve until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::watch;

use crate::server::core::{StoreError, TeamId};
use crate::server::http::{self, AppState, Hub, ServerConfig};
use crate::server::postgres::{self, PgStore};
use crate::server::sqlite::SqliteStore;
use crate::server::store::Store;

/// Where the data lives, from `--db`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DbUrl {
    Sqlite(PathBuf),
    Postgres(String),
}

impl DbUrl {
    /// `sqlite://PATH`, a plain path, or `postgres://…` / `postgresql://…`.
    pub fn parse(s: &str) -> Result<DbUrl, String> {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(DbUrl::Postgres(s.to_string()));
        }
        let path = s.strip_prefix("sqlite://").unwrap_or(s);
        if path.is_empty() || s.contains("://") && !s.starts_with("sqlite://") {
            return Err(format!("{s:?} is not a database URL: use sqlite://PATH or postgres://…"));
        }
        Ok(DbUrl::Sqlite(PathBuf::from(path)))
    }

    /// The embedded default: `threadsync.db` in the user's data directory.
    pub fn default_sqlite() -> DbUrl {
        let base = std::env::var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
            .unwrap_or_else(|| PathBuf::from("."));
        DbUrl::Sqlite(base.join("threadsync").join("threadsync.db"))
    }

    pub fn open(&self) -> Result<Arc<dyn Store>, StoreError> {
        Ok(match self {
            DbUrl::Sqlite(p) => Arc::new(SqliteStore::open(p)?),
            DbUrl::Postgres(url) => Arc::new(PgStore::open(url)?),
        })
    }

    /// For logs: never the password.
    pub fn redacted(&self) -> String {
        match self {
            DbUrl::Sqlite(p) => format!("sqlite://{}", p.display()),
            DbUrl::Postgres(url) => match url.split_once('@') {
                Some((scheme_user, rest)) => {
                    let user = scheme_user.rsplit_once(':').map_or(scheme_user, |(u, _)| u);
                    format!("{user}@{rest}")
                }
                None => url.clone(),
            },
        }
    }
}

/// Serves until SIGTERM or Ctrl-C, then stops accepting, answers held
/// pulls, and finishes the requests in flight.
pub async fn serve(listen: SocketAddr, db: DbUrl, cfg: ServerConfig) -> Result<(), String> {
    let store = {
        let db = db.clone();
        tokio::task::spawn_blocking(move || db.open()).await.map_err(|e| e.to_string())?
    }
    .map_err(|e| format!("cannot open {}: {e}", db.redacted()))?;
    let listener = http::bind(listen).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let state = AppState::new(store, cfg, stop_rx);
    if let DbUrl::Postgres(url) = &db {
        tokio::spawn(listen_for_changes(url.clone(), state.hub.clone()));
    }
    let (read_timeout, grace) = (state.cfg.read_timeout, state.cfg.shutdown_grace);
    tokio::spawn(compact_logs(state.clone()));
    let app = http::router(state);
    tracing::info!(addr = %listener.local_addr().map_err(|e| e.to_string())?, db = %db.redacted(), "threadsync serve listening");
    let stopping = async move {
        shutdown_signal().await;
        tracing::info!("shutting down: answering held pulls, finishing requests in flight");
        let _ = stop_tx.send(true);
    };
    serve_connections(listener, app, read_timeout, grace, stopping).await;
    Ok(())
}

/// Every `compact_every`, compacts the logs that grew to their newest
/// `keep_changes` (a client behind that point gets `410 refetch`). Runs for
/// the life of the process; a failure is logged and tried again next time.
async fn compact_logs(state: AppState) {
    let mut every = tokio::time::interval(state.cfg.compact_every);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        every.tick().await;
        for team in state.take_grown() {
            let (store, keep) = (state.store.clone(), state.cfg.keep_changes);
            match tokio::task::spawn_blocking(move || store.compact(&team, keep)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot compact a team's change log"),
                Err(e) => tracing::warn!(error = %e, "the compaction task failed"),
            }
        }
    }
}

/// Accepts connections until `stopping`, then lets the requests in flight
/// finish for at most `grace` and cuts what is left: a client that went
/// silent mid-request never holds a shutdown up. A connection must send a
/// request's headers within `read_timeout` (also the longest an idle
/// keep-alive connection is kept), so half-open connections do not pile up.
async fn serve_connections(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    read_timeout: Duration,
    grace: Duration,
    stopping: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1.timer(TokioTimer::new()).header_read_timeout(read_timeout);
    let mut stopping = std::pin::pin!(stopping);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, usually: wait for some to close.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut stopping => break,
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let conn = graceful.watch(http1.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(
            grace_secs = grace.as_secs_f64(),
            "requests still in flight after the shutdown grace; closing them"
        );
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// Turns `NOTIFY threadsync, '<team>:<head>'` from any server into wake-ups
/// of the pulls this server holds. Reconnects forever; after a reconnect it
/// wakes every held pull, since notifications may have been missed.
async fn listen_for_changes(url: String, hub: Arc<Hub>) {
    loop {
        match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
            Ok((client, mut conn)) => {
                let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
                let sql = format!("LISTEN {}", postgres::CHANNEL);
                let listen = client.batch_execute(&sql);
                // The connection must be driven for LISTEN to complete.
                let mut listen = std::pin::pin!(listen);
                let ok = loop {
                    tokio::select! {
                        r = &mut listen => break r.is_ok(),
                        m = messages.next() => if m.is_none() { break false },
                    }
                };
                if ok {
                    hub.wake_all();
                    while let Some(msg) = messages.next().await {
                        match msg {
                            Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                                if let Some((team, head)) = n.payload().rsplit_once(':')
                                    && let (Ok(team), Ok(head)) = (TeamId::new(team), head.parse())
                                {
                                    hub.notify(&team, head);
                                }
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "change listener lost its connection");
                                break;
                            }
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "change listener cannot connect; retrying"),
        }
        hub.wake_all();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
