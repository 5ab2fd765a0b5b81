//! `GET /v1/pull`: the team's changes after a cursor, held (long-poll)
//! when there are none yet; the `Hub` wakes held pulls.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use std::convert::Infallible;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::watch;

use super::{ApiError, AppState, QueryParams, Team, blocking};
use crate::server::core::{self, PullError, StoreError, TeamId};
use crate::server::store::StoreExt;
use crate::wire::{ClientId, Cursor, PullResponse};

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/v1/pull", get(pull))
}

/// Wakes held pulls: one watch channel per team carrying what its held
/// pulls have been told.
#[derive(Default)]
pub struct Hub {
    teams: Mutex<HashMap<TeamId, watch::Sender<Told>>>,
}

/// The newest log head announced for a team, and how many times every
/// pull was told to read again whatever the head (after notifications may
/// have been missed). Reads are shared between pulls told the same.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Told {
    head: u64,
    rereads: u64,
}

impl Told {
    /// The newest log head announced.
    pub fn head(&self) -> u64 {
        self.head
    }
}

impl Hub {
    pub fn subscribe(&self, team: &TeamId) -> watch::Receiver<Told> {
        let mut teams = self.teams.lock().unwrap_or_else(|e| e.into_inner());
        teams.entry(team.clone()).or_insert_with(|| watch::channel(Told::default()).0).subscribe()
    }

    pub fn notify(&self, team: &TeamId, head: u64) {
        let teams = self.teams.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = teams.get(team) {
            tx.send_if_modified(|t| {
                let newer = head > t.head;
                t.head = t.head.max(head);
                newer
            });
        }
    }

    /// Wakes every held pull (e.g. after missing notifications): each reads
    /// the store again.
    pub fn wake_all(&self) {
        let teams = self.teams.lock().unwrap_or_else(|e| e.into_inner());
        for tx in teams.values() {
            tx.send_modify(|t| t.rereads += 1);
        }
    }
}

#[derive(Deserialize)]
struct PullQuery {
    cursor: Option<String>,
    /// Seconds to hold the request when nothing is new (capped by the
    /// server's `max_wait`, 300 s by default).
    wait: Option<u64>,
    /// The pulling sidecar's client ids, comma-separated: inserts they
    /// pushed come back without the content they already have.
    clients: Option<String>,
}

/// Parses `clients=a,b` (at most a few: a sidecar has two).
fn client_ids(q: Option<&str>) -> Result<Vec<ClientId>, ApiError> {
    let Some(q) = q.filter(|q| !q.is_empty()) else { return Ok(Vec::new()) };
    let ids: Vec<&str> = q.split(',').collect();
    if ids.len() > 8 {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_request", "clients: at most 8 client ids"));
    }
    ids.into_iter()
        .map(|c| {
            ClientId::new(c).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("clients: {e}")))
        })
        .collect()
}

/// Marks a streamed answer: never compressed (a compressor would hold the
/// keep-alive spaces back).
#[derive(Clone, Copy)]
pub(super) struct Streamed;

/// The team's changes after a cursor (or, without one, its threads whole),
/// held up to `wait` seconds while there are none.
#[utoipa::path(
    get,
    path = "/v1/pull",
    tag = "sync",
    operation_id = "pull",
    security(("bearer" = [])),
    params(
        ("cursor" = Option<Cursor>, Query,
            description = "Where to resume (a previous answer's `cursor`); omitted or empty: first sync (snapshots)."),
        ("wait" = Option<u64>, Query, minimum = 0,
            description = "Seconds to hold the request while nothing is new (capped by the server's `--max-wait`, \
                           300 s by default)."),
        ("clients" = Option<String>, Query, pattern = "^([A-Za-z0-9_-]{1,128}(,[A-Za-z0-9_-]{1,128}){0,7})?$",
            description = "Up to 8 client ids, comma-separated: the puller's own; inserts they pushed come back \
                           without their content (`elided`)."),
    ),
    responses((
        status = 200,
        description = "Changes after the cursor, or snapshots; an idle pull: no changes, the same cursor and \
                       `upToDate: true`. A pull held past the heartbeat is streamed: the 200 is sent at once, then \
                       a space every heartbeat, then the JSON (which may be the error that ended it).",
        body = super::openapi::PullAnswer,
        links(
            ("NextPull" = (
                operation_id = "pull",
                parameters(("cursor" = "$response.body#/cursor")),
                description = "The next page, or what changes next."
            )),
            ("GetSnapshotThread" = (
                operation_id = "getThread",
                parameters(("threadId" = "$response.body#/snapshots/0/thread/id")),
                description = "The first snapshot's thread."
            )),
            ("GetChangedThread" = (
                operation_id = "getThread",
                parameters(("threadId" = "$response.body#/changes/0/threadId")),
                description = "The thread of the first change."
            )),
        ),
    )),
)]
async fn pull(
    State(s): State<AppState>,
    Team(team): Team,
    QueryParams(q): QueryParams<PullQuery>,
) -> Result<Response, ApiError> {
    let cursor = match q.cursor.as_deref().filter(|c| !c.is_empty()) {
        Some(c) => Some(c.parse::<Cursor>().map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_cursor", e))?),
        None => None,
    };
    let clients = client_ids(q.clients.as_deref())?;
    let wait = Duration::from_secs(q.wait.unwrap_or(0)).min(s.cfg.max_wait);
    let heartbeat = s.cfg.heartbeat;
    let mut hold = Hold::new(s, team, cursor, clients, tokio::time::Instant::now() + wait);
    let first = (tokio::time::Instant::now() + heartbeat).min(hold.deadline);
    if let Some(body) = hold.until(first).await? {
        return Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response());
    }
    // Held past a heartbeat: the answer is streamed from here, a space every
    // heartbeat (JSON allows leading whitespace) so that proxies and NATs
    // do not close a connection that looks idle, then the answer. A failure
    // from now on is the JSON error in a 200 body.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(2);
    tokio::spawn(async move {
        loop {
            if tx.send(Bytes::from_static(b" ")).await.is_err() {
                return;
            }
            let next = (tokio::time::Instant::now() + heartbeat).min(hold.deadline);
            let end = tokio::select! {
                r = hold.until(next) => r,
                _ = tx.closed() => return,
            };
            match end {
                Ok(None) => {}
                Ok(Some(body)) => {
                    let _ = tx.send(body).await;
                    return;
                }
                Err(e) => {
                    let _ = tx.send(e.body()).await;
                    return;
                }
            }
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|b| b.map(Ok::<_, Infallible>)));
    let mut resp = ([(header::CONTENT_TYPE, "application/json")], Body::from_stream(stream)).into_response();
    resp.extensions_mut().insert(Streamed);
    Ok(resp)
}

/// What a read of the log answers a pull (the same for every pull of the
/// team at that cursor and head, but for the authors of its inserts).
#[derive(Clone)]
enum Answer {
    Body { idle: bool, body: Bytes, own: Option<Arc<OwnParts>> },
    Refetch(String),
}

/// A log answer in pieces, to leave the content of a client's own inserts
/// out of the answer it gets.
struct OwnParts {
    /// Per change: its author, and the change as its author gets it (None:
    /// as everyone gets it).
    changes: Vec<(Option<ClientId>, Bytes, Option<Bytes>)>,
    /// What follows the changes: `,"cursor":…}`.
    tail: Bytes,
}

impl OwnParts {
    /// A log answer serialised once in pieces, and whole as most pulls get it.
    fn build(resp: &PullResponse) -> Result<(Bytes, Option<Arc<OwnParts>>), serde_json::Error> {
        if resp.changes.is_empty() || !resp.snapshots.is_empty() {
            return Ok((serde_json::to_vec(resp)?.into(), None));
        }
        let mut changes = Vec::with_capacity(resp.changes.len());
        let mut any_own = false;
        for c in &resp.changes {
            let full = Bytes::from(serde_json::to_vec(c)?);
            let own = match (&c.author, c.for_author()) {
                (Some(_), Some(o)) => Some(Bytes::from(serde_json::to_vec(&o)?)),
                _ => None,
            };
            any_own |= own.is_some();
            changes.push((c.author.clone(), full, own));
        }
        let rest = serde_json::to_vec(&PullResponse { changes: Vec::new(), snapshots: Vec::new(), ..resp.clone() })?;
        let mut tail = b",".to_vec();
        tail.extend_from_slice(&rest[1..]);
        let parts = OwnParts { changes, tail: tail.into() };
        let full = parts.assemble(&[]);
        Ok((full, any_own.then(|| Arc::new(parts))))
    }

    /// The answer as the client with these ids gets it.
    fn assemble(&self, clients: &[ClientId]) -> Bytes {
        let size = self.changes.iter().map(|(_, f, _)| f.len() + 1).sum::<usize>() + self.tail.len() + 16;
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(b"{\"changes\":[");
        for (i, (author, full, own)) in self.changes.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let mine = author.as_ref().is_some_and(|a| clients.contains(a));
            out.extend_from_slice(match (mine, own) {
                (true, Some(own)) => own,
                _ => full,
            });
        }
        out.push(b']');
        out.extend_from_slice(&self.tail);
        out.into()
    }

    fn mentions(&self, clients: &[ClientId]) -> bool {
        self.changes.iter().any(|(a, _, own)| own.is_some() && a.as_ref().is_some_and(|a| clients.contains(a)))
    }
}

/// Whose reads are shared: one team at one cursor.
type ReadKey = (TeamId, Option<Cursor>);

/// One read of a team's log at one cursor, as of one head, shared.
struct Slot {
    told: Told,
    answer: tokio::sync::OnceCell<Answer>,
}

/// Pulls of one team at one cursor that one push wakes share one read of
/// the store and one serialised answer (as a CDN collapses requests): the
/// answer depends only on the team, the cursor and the log's head, and a
/// read shared by pulls told the same began after they were told. A slot
/// lives while a pull that read through it is held.
#[derive(Default)]
pub(super) struct SharedReads {
    slots: Mutex<HashMap<ReadKey, Weak<Slot>>>,
    /// The map's size after the last sweep of dead slots.
    swept: std::sync::atomic::AtomicUsize,
}

impl SharedReads {
    fn slot(&self, team: &TeamId, cursor: &Option<Cursor>, told: Told) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let key = (team.clone(), cursor.clone());
        if let Some(slot) = slots.get(&key).and_then(Weak::upgrade)
            && slot.told == told
        {
            return slot;
        }
        let slot = Arc::new(Slot { told, answer: tokio::sync::OnceCell::new() });
        slots.insert(key, Arc::downgrade(&slot));
        if slots.len() > 2 * self.swept.load(Ordering::Relaxed).max(64) {
            slots.retain(|_, w| w.strong_count() > 0);
            self.swept.store(slots.len(), Ordering::Relaxed);
        }
        slot
    }
}

/// A pull being held: re-read whenever the team's log moves, until there
/// is something to say, the deadline, or shutdown.
struct Hold {
    s: AppState,
    team: TeamId,
    cursor: Option<Cursor>,
    /// The pulling sidecar's client ids (see [`OwnParts`]).
    clients: Vec<ClientId>,
    deadline: tokio::time::Instant,
    changes: watch::Receiver<Told>,
    shutdown: watch::Receiver<bool>,
    held: Option<Held>,
    /// The read this pull last used, kept for the pulls woken with it.
    read: Option<Arc<Slot>>,
}

impl Hold {
    fn new(
        s: AppState,
        team: TeamId,
        cursor: Option<Cursor>,
        clients: Vec<ClientId>,
        deadline: tokio::time::Instant,
    ) -> Self {
        // Subscribe before the first read, so a change between a read and
        // the wait still wakes us.
        let changes = s.hub.subscribe(&team);
        let shutdown = s.shutdown.clone();
        Hold { s, team, cursor, clients, deadline, changes, shutdown, held: None, read: None }
    }

    /// The answer's body, or None when `at` came with nothing to say.
    async fn until(&mut self, at: tokio::time::Instant) -> Result<Option<Bytes>, ApiError> {
        loop {
            let s = &self.s;
            let told = *self.changes.borrow_and_update();
            let slot = s.reads.slot(&self.team, &self.cursor, told);
            let answer = slot.answer.get_or_try_init(|| self.read()).await?.clone();
            self.read = Some(slot);
            let (idle, body) = match answer {
                Answer::Body { idle, own: Some(own), .. } if own.mentions(&self.clients) => {
                    (idle, own.assemble(&self.clients))
                }
                Answer::Body { idle, body, .. } => (idle, body),
                Answer::Refetch(message) => return Err(ApiError::new(StatusCode::GONE, "refetch", message)),
            };
            let now = tokio::time::Instant::now();
            if !idle || now >= self.deadline || *self.shutdown.borrow() {
                s.metrics.bytes_out.inc_by(body.len() as u64);
                return Ok(Some(body));
            }
            if now >= at {
                return Ok(None);
            }
            if self.held.is_none() {
                if s.held.fetch_add(1, Ordering::Relaxed) >= s.cfg.max_held {
                    s.held.fetch_sub(1, Ordering::Relaxed);
                    return Err(ApiError::busy("too many held pulls; retry shortly"));
                }
                s.metrics.held.inc();
                self.held = Some(Held(s.clone()));
            }
            tokio::select! {
                _ = self.changes.changed() => {}
                _ = tokio::time::sleep_until(at.min(self.deadline)) => {}
                _ = self.shutdown.changed() => {}
            }
        }
    }
}

impl Hold {
    /// Reads the log for this pull's team and cursor.
    async fn read(&self) -> Result<Answer, ApiError> {
        let s = &self.s;
        let (store, lim, t, c) = (s.store.clone(), s.cfg.pull_limits, self.team.clone(), self.cursor.clone());
        let answer = blocking(move || Ok(store.run(&t, false, |tx| Ok(core::pull(tx, c.as_ref(), &lim)))?.0)).await?;
        match answer {
            Ok(resp) => {
                let idle = resp.changes.is_empty() && resp.snapshots.is_empty() && resp.up_to_date;
                let (body, own) = OwnParts::build(&resp).map_err(|e| StoreError::new(e.to_string()))?;
                Ok(Answer::Body { idle, body, own })
            }
            Err(PullError::Refetch { cursor, why }) => Ok(Answer::Refetch(format!(
                "cursor {cursor} can no longer be served ({why}); pull again without a cursor"
            ))),
            Err(PullError::Store(e)) => Err(e.into()),
        }
    }
}

/// Counts a held pull for as long as it is held.
struct Held(AppState);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::Relaxed);
        self.0.metrics.held.dec();
    }
}
