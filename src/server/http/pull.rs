//! `GET /v1/pull`: the team's changes after a cursor, held (long-poll)
//! when there are none yet; the `Hub` wakes held pulls.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use tokio::sync::watch;

use super::{ApiError, AppState, QueryParams, Team, blocking};
use crate::server::core::{self, PullError, StoreError, TeamId};
use crate::server::store::StoreExt;
use crate::wire::Cursor;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/v1/pull", get(pull))
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
