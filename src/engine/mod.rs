//! The client sync engine: every decision of the sync pipeline, none of the I/O.
//!
//! A [`SyncEngine`] is a state machine in the style of quinn-proto. Inputs
//! (`local_snapshot`, `local_op`, `handle_push`, `handle_pull`, ...) take
//! `now`; [`SyncEngine::poll_timeout`] says when to call
//! [`SyncEngine::handle_timeout`]; [`SyncEngine::poll_action`] hands out what
//! to do (send a push, write a file, notify the editor) as values. The engine
//! never reads a clock, never touches a socket or a file, and draws all
//! randomness (jitter, ids) from a seeded generator, so a run is a pure
//! function of its inputs: the simulator replays any schedule exactly.
//!
//! Per thread the engine keeps the server's state as last pulled (`base`)
//! and the local changes not yet confirmed, in three stages: `pending` (not
//! sent), `inflight` (sent, no answer yet) and `acked` (applied by the server,
//! not yet seen in a pull). What the user sees (`local`) is always `base`
//! with those changes replayed on top — a rebase — so when everything is
//! confirmed, `local == base ==` the server.

pub mod flow;
pub mod monitor;
pub mod poller;
pub mod retry;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::Value;

use crate::merge::{Conflict, ConflictInfo, Doc, Limits, OpOutcome};
use crate::model::{Message, MessageId, Thread, ThreadId};
use crate::ops::{Op, diff};
use crate::time::Time;
use crate::wire::{ClientId, Cursor, Mutation, MutationStatus, OpResult, PullResponse, PushRequest, PushResponse};

use self::flow::{Debouncer, Throttle};
use self::monitor::{MetricsSnapshot, PerfMonitor, SyncKind, SyncSample};
use self::poller::AdaptivePoller;
use self::retry::{Backoff, Failure, FailureClass};

/// How remote changes are fetched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PollMode {
    /// One pull always outstanding, held by the server up to `wait`.
    LongPoll { wait: Duration },
    /// Polls at an interval between `base` and `max`, faster when the user is
    /// active or the queue is deep (for servers that cannot hold requests).
    Adaptive { base: Duration, max: Duration },
    /// Polls at a fixed interval (the seed's 5 s; kept for comparison).
    Fixed(Duration),
}

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Quiet time after a thread file changes before it is read as a change.
    pub debounce: Duration,
    /// A file that keeps changing is still taken this long after its first change.
    pub debounce_max_wait: Duration,
    /// Collection window of a batch.
    pub batch_window: Duration,
    /// A change made when nothing was pushed for a whole window goes at once
    /// (leading edge); the changes after it are collected in the window as
    /// usual. Saves a lone message the window's latency.
    pub flush_when_idle: bool,
    /// At most this many threads per push (the monitor may lower it).
    pub max_batch_threads: usize,
    /// A mutation larger than this goes in the bulk lane, so that it never
    /// holds up small changes.
    pub bulk_threshold: usize,
    /// A thread whose change the server refused for good sends its next
    /// changes only after this long (the seed's per-thread RETRY_BACKOFF).
    pub thread_backoff: Duration,
    pub poll: PollMode,
    /// Request timeout for pushes and probes (a long-poll adds its wait).
    pub request_timeout: Duration,
    /// Status notifications are coalesced to one per this interval.
    pub status_interval: Duration,
    pub limits: Limits,
    pub jitter: f64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            debounce: Duration::from_millis(200),
            debounce_max_wait: Duration::from_secs(2),
            batch_window: Duration::from_millis(100),
            flush_when_idle: false,
            max_batch_threads: 50,
            bulk_threshold: 256 << 10,
            thread_backoff: Duration::from_secs(60),
            poll: PollMode::LongPoll { wait: Duration::from_secs(25) },
            request_timeout: Duration::from_secs(10),
            status_interval: Duration::from_millis(100),
            limits: Limits::default(),
            jitter: retry::DEFAULT_JITTER,
        }
    }
}

/// Identifies a request the engine asked for, so that a late answer to a
/// request the engine gave up on is recognised and ignored.
pub type ReqId = u64;

/// Where a change to a thread came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Origin {
    Local,
    Remote,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum State {
    Synced,
    Syncing,
    Pending,
    Offline,
    Error,
    Conflict,
    Unauthorized,
}

/// The overall status (`threadsync/status`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub state: State,
    /// Threads with changes not yet on the server.
    pub pending: usize,
    pub conflicts: usize,
    pub online: bool,
    pub last_sync: Option<Time>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ThreadState {
    Pending,
    Syncing,
    Synced,
    Conflict,
    Error,
}

/// One thread's status (`threadsync/threadStatus`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadStatus {
    pub thread_id: ThreadId,
    pub state: ThreadState,
    pub version: u64,
    pub last_sync: Option<Time>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A pull's outcome as the shell saw it.
#[derive(Clone, Debug, PartialEq)]
pub enum PullOutcome {
    Ok(PullResponse),
    /// The server can no longer serve the cursor: start over from a snapshot.
    Refetch,
    Failed(Failure),
}

/// What the engine asks the shell to do, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Push {
        req: ReqId,
        body: PushRequest,
        timeout: Duration,
    },
    /// `wait`: let the server hold the request until something changes.
    Pull {
        req: ReqId,
        cursor: Option<Cursor>,
        wait: Option<Duration>,
        timeout: Duration,
    },
    /// Abandon a pull (a force sync wants a fresh one); its answer is ignored.
    CancelPull {
        req: ReqId,
    },
    /// Connectivity check while offline (`GET /healthz`).
    Probe {
        req: ReqId,
        timeout: Duration,
    },
    /// Write the thread file (atomically), before any `SaveBase` after it.
    WriteThread {
        thread: Thread,
        origin: Origin,
    },
    /// Persist the server state of a thread (the base pending work is derived from).
    SaveBase {
        doc: Doc,
    },
    /// Persist a thread's changes that were sent but are not yet in its base,
    /// before the push that carries them. After a crash they are sent again
    /// (harmless: operations are idempotent), and a message deleted from the
    /// file meanwhile is deleted rather than brought back.
    SaveOutbox {
        thread_id: ThreadId,
        ops: Vec<Op>,
    },
    /// Persist the pull cursor, after the bases it covers.
    SaveCursor {
        cursor: Option<Cursor>,
    },
    SaveConflicts {
        conflicts: Vec<Conflict>,
    },
    Status(Status),
    ThreadStatus(ThreadStatus),
    ThreadUpdated {
        thread_id: ThreadId,
        version: u64,
        title: String,
        message_count: usize,
        origin: Origin,
    },
    /// Changes the server refused for good, undone locally.
    Rollback {
        thread_id: ThreadId,
        reason: String,
        ops: Vec<Op>,
    },
    /// A force sync finished.
    SyncDone {
        ticket: u64,
        result: Result<(), String>,
    },
    /// Something worth a log line (slow sync, malformed answer).
    Warning(String),
}

/// A change made through the sidecar.
#[derive(Clone, Debug, PartialEq)]
pub enum LocalOp {
    CreateThread { title: String },
    Append { role: String, content: Value },
    SetTitle { title: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalResult {
    pub thread_id: ThreadId,
    pub message_id: Option<MessageId>,
    pub version: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    Local,
    Remote,
}

/// What survives a restart: the thread files, the saved bases and outboxes,
/// the cursor and the conflicts. Pending work is the outbox plus whatever
/// the files hold beyond base + outbox.
#[derive(Clone, Debug, Default)]
pub struct Restored {
    pub bases: Vec<Doc>,
    pub outboxes: Vec<(ThreadId, Vec<Op>)>,
    pub files: Vec<Thread>,
    pub cursor: Option<Cursor>,
    pub conflicts: Vec<Conflict>,
}

/// An operation waiting for the server, with what it was based on (to fill
/// in a conflict's base side).
#[derive(Clone, Debug)]
struct PendingOp {
    op: Op,
    seq: u64,
    prior: Value,
    prior_message: Option<Arc<Message>>,
    /// The server may already have applied it (restored from the outbox, or
    /// sent under a client id the server forgot): never coalesced away.
    maybe_sent: bool,
}

#[derive(Clone, Debug)]
struct Inflight {
    mutation: u64,
    ops: Vec<PendingOp>,
}

#[derive(Debug)]
struct Tracked {
    base: Doc,
    local: Doc,
    /// Fields of the file that are not synced (kept as the file has them).
    extra: serde_json::Map<String, Value>,
    snapshot: Option<Thread>,
    /// What the file held before the snapshot's writer changed it, when the
    /// shell knows (see `local_snapshot_from`).
    snapshot_base: Option<Thread>,
    /// Applied by the server at the given version, not yet in `base`.
    acked: Vec<(u64, PendingOp)>,
    inflight: Option<Inflight>,
    pending: Vec<PendingOp>,
    backoff_until: Option<Time>,
    error: Option<String>,
    last_sync: Option<Time>,
}

impl Tracked {
    fn new(base: Doc) -> Self {
        Tracked {
            local: base.clone(),
            base,
            extra: Default::default(),
            snapshot: None,
            snapshot_base: None,
            acked: Vec::new(),
            inflight: None,
            pending: Vec::new(),
            backoff_until: None,
            error: None,
            last_sync: None,
        }
    }

    fn unsent_or_inflight(&self) -> bool {
        !self.pending.is_empty() || self.inflight.is_some() || self.snapshot.is_some()
    }

    fn all_ops(&self) -> impl DoubleEndedIterator<Item = &PendingOp> {
        self.acked
            .iter()
            .map(|(_, p)| p)
            .chain(self.inflight.iter().flat_map(|i| i.ops.iter()))
            .chain(self.pending.iter())
    }
}

/// One sequence of mutation ids. Two lanes (small, bulk) so that a large
/// upload never holds up small changes; each thread has at most one mutation
/// in flight across both, so a thread's changes still arrive in order.
#[derive(Debug)]
struct Lane {
    client: ClientId,
    next_id: u64,
    /// Sent and not answered (or answered with a failure): resent unchanged.
    outstanding: Vec<Mutation>,
    inflight: Option<(ReqId, Time, usize)>,
    retry_at: Option<Time>,
    backoff: Backoff,
    /// After a 413, mutations go one at a time to find the one too large.
    one_at_a_time: bool,
}

#[derive(Debug)]
struct PullState {
    inflight: Option<(ReqId, Time, bool)>,
    next_at: Option<Time>,
    backoff: Backoff,
    /// The first full sync has finished.
    synced_once: bool,
    /// The next pull must not be held (a force sync waits for it).
    fresh: bool,
}

#[derive(Debug)]
enum Connectivity {
    Online,
    Offline { probe_at: Time, probe: Option<ReqId>, backoff: Backoff, reason: String },
}

#[derive(Debug)]
struct Ticket {
    id: u64,
    thread: Option<ThreadId>,
    /// Operations up to this sequence must be on the server.
    upto: u64,
    phase: TicketPhase,
}

#[derive(Debug, PartialEq)]
enum TicketPhase {
    /// Waiting for the ticket's changes to be answered by the server.
    Pushing,
    /// Waiting for a pull that started at or after this time to finish.
    Pulling {
        since: Time,
    },
    Done,
}

pub struct SyncEngine {
    cfg: EngineConfig,
    rng: ChaCha8Rng,
    lanes: [Lane; 2],
    threads: BTreeMap<ThreadId, Tracked>,
    cursor: Option<Cursor>,
    pull: PullState,
    net: Connectivity,
    unauthorized: Option<String>,
    server_error: Option<String>,
    debounce: Debouncer<ThreadId>,
    batch_at: Option<Time>,
    conflicts: Vec<Conflict>,
    monitor: PerfMonitor,
    poller: AdaptivePoller,
    status_throttle: Throttle,
    status_sent: Option<Status>,
    thread_status_sent: BTreeMap<ThreadId, ThreadStatus>,
    tickets: Vec<Ticket>,
    next_ticket: u64,
    next_req: ReqId,
    next_seq: u64,
    last_sync: Option<Time>,
    /// When the last push was sent (for the idle leading edge).
    last_push: Option<Time>,
    actions: VecDeque<Action>,
}

const FAST: usize = 0;
const BULK: usize = 1;

impl SyncEngine {
    /// Starts an engine from what was on disk. `seed` drives jitter and ids.
    pub fn new(cfg: EngineConfig, seed: u64, now: Time, restored: Restored) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let client = ulid::Ulid::from_parts(now.as_millis(), rng.random()).to_string();
        let lane = |suffix: &str| Lane {
            client: ClientId::new(format!("c-{client}{suffix}")).expect("ULIDs are valid ids"),
            next_id: 1,
            outstanding: Vec::new(),
            inflight: None,
            retry_at: None,
            backoff: Backoff::new(cfg.jitter),
            one_at_a_time: false,
        };
        let poller = match cfg.poll {
            PollMode::Adaptive { base, max } => AdaptivePoller::new(base, max),
            _ => AdaptivePoller::default(),
        };
        let mut e = SyncEngine {
            lanes: [lane(""), lane("-bulk")],
            rng,
            threads: BTreeMap::new(),
            cursor: restored.cursor,
            pull: PullState {
                inflight: None,
                next_at: Some(now),
                backoff: Backoff::new(cfg.jitter),
                synced_once: false,
                fresh: false,
            },
            net: Connectivity::Online,
            unauthorized: None,
            server_error: None,
            debounce: Debouncer::new(cfg.debounce, cfg.debounce_max_wait),
            batch_at: None,
            conflicts: restored.conflicts,
            monitor: PerfMonitor::default(),
            poller,
            status_throttle: Throttle::new(cfg.status_interval),
            status_sent: None,
            thread_status_sent: BTreeMap::new(),
            tickets: Vec::new(),
            next_ticket: 1,
            next_req: 1,
            next_seq: 1,
            last_sync: None,
            last_push: None,
            actions: VecDeque::new(),
            cfg,
        };
        for base in restored.bases {
            e.threads.insert(base.id().clone(), Tracked::new(base));
        }
        for (id, ops) in restored.outboxes {
            e.threads.entry(id.clone()).or_insert_with(|| Tracked::new(Doc::empty(id.clone())));
            e.add_ops(now, &id, ops);
            for p in &mut e.threads.get_mut(&id).expect("just added").pending {
                p.maybe_sent = true;
            }
        }
        // Pending work is whatever the files hold beyond the saved bases.
        for file in restored.files {
            e.take_snapshot(now, file, None);
        }
        e.schedule_batch(now);
        e.update_status(now);
        e
    }

    // ----- inputs -------------------------------------------------------

    /// A thread file changed (already parsed). Debounced: rapid rewrites by an
    /// assistant become one change.
    pub fn local_snapshot(&mut self, now: Time, thread: Thread) {
        self.local_snapshot_from(now, thread, None);
    }

    /// Like `local_snapshot`, naming what the file held before it was
    /// rewritten (`based_on`). The change is then `diff(based_on, file)`
    /// rebased onto the current view, so a file rewritten from a version
    /// that lacked newer remote messages does not delete them.
    pub fn local_snapshot_from(&mut self, now: Time, thread: Thread, based_on: Option<Thread>) {
        let id = thread.id.clone();
        let t = self.threads.entry(id.clone()).or_insert_with(|| Tracked::new(Doc::empty(id.clone())));
        t.snapshot = Some(thread);
        // Debounced rewrites: the earliest base is the one the burst started from.
        if t.snapshot_base.is_none() {
            t.snapshot_base = based_on;
        }
        t.error = None;
        self.debounce.touch(now, id);
        self.poller.record_activity(now);
        self.update_status(now);
    }

    /// A thread file could not be read; the last good state is kept and the
    /// file is read again when it changes.
    pub fn local_error(&mut self, now: Time, id: ThreadId, error: String) {
        let t = self.threads.entry(id.clone()).or_insert_with(|| Tracked::new(Doc::empty(id.clone())));
        t.error = Some(error);
        self.update_status(now);
    }

    /// A change made through the sidecar: applied locally at once
    /// (optimistic), synced in the background, rolled back if refused.
    pub fn local_op(&mut self, now: Time, thread: Option<&ThreadId>, op: LocalOp) -> Result<LocalResult, String> {
        if let Some(id) = thread {
            self.absorb_snapshot(now, id);
        }
        let (id, ops, message_id) = match (&op, thread) {
            (LocalOp::CreateThread { title }, _) => {
                let id = ThreadId::generate(now.as_millis(), self.rng.random());
                let mut ops = vec![Op::Create { created: now.as_millis() as i64, env: crate::model::empty_object() }];
                if !title.is_empty() {
                    ops.push(Op::SetTitle { title: title.clone(), base: String::new() });
                }
                self.threads.insert(id.clone(), Tracked::new(Doc::empty(id.clone())));
                (id, ops, None)
            }
            (_, None) => return Err("threadId is required".into()),
            (_, Some(id)) if !self.threads.get(id).is_some_and(|t| t.local.exists()) => {
                return Err(format!("no thread {id}"));
            }
            (LocalOp::Append { role, content }, Some(id)) => {
                let t = &self.threads[id];
                let mid = MessageId::generate(now.as_millis(), self.rng.random());
                let message = Message {
                    id: mid.clone(),
                    role: role.clone(),
                    content: content.clone(),
                    timestamp: now.as_millis() as i64,
                    extra: Default::default(),
                };
                let after = t.local.thread.messages.last().map(|m| m.id.clone());
                (id.clone(), vec![Op::Append { message: Arc::new(message), after, follows: None }], Some(mid))
            }
            (LocalOp::SetTitle { title }, Some(id)) => {
                let base = self.threads[id].local.thread.title.clone();
                (id.clone(), vec![Op::SetTitle { title: title.clone(), base }], None)
            }
        };
        // Refuse what the server would refuse, before anything is written.
        let mut probe = self.threads[&id].local.clone();
        for op in &ops {
            if let OpOutcome::Rejected { reason } = probe.apply(op, &self.cfg.limits) {
                if matches!(op, Op::Create { .. }) {
                    self.threads.remove(&id);
                }
                return Err(reason);
            }
        }
        self.poller.record_activity(now);
        self.add_ops(now, &id, ops);
        let version = self.threads[&id].local.thread.v;
        self.write_local(&id, Origin::Local);
        self.schedule_batch(now);
        self.update_status(now);
        Ok(LocalResult { thread_id: id, message_id, version })
    }

    /// Sync now: skip the debounce and batching windows and any backoff. A
    /// `SyncDone` with the returned ticket follows when the changes made so
    /// far are on the server and a pull after them has finished, or when an
    /// attempt failed.
    pub fn force_sync(&mut self, now: Time, thread: Option<ThreadId>) -> u64 {
        match &thread {
            Some(id) => {
                if self.debounce.take(id) {
                    self.flush_snapshot(now, id);
                }
            }
            None => {
                for id in self.debounce.take_all() {
                    self.flush_snapshot(now, &id);
                }
            }
        }
        let id = self.next_ticket;
        self.next_ticket += 1;
        self.tickets.push(Ticket { id, thread: thread.clone(), upto: self.next_seq - 1, phase: TicketPhase::Pushing });
        // Bypass every wait.
        self.unauthorized = None;
        if let Connectivity::Offline { .. } = self.net {
            self.net = Connectivity::Online;
        }
        for t in self.threads.values_mut() {
            if thread.as_ref().is_none_or(|id| id == &t.base.thread.id) {
                t.backoff_until = None;
            }
        }
        for lane in &mut self.lanes {
            lane.retry_at = lane.retry_at.map(|_| now);
        }
        self.pull.backoff.reset();
        self.batch_at = Some(now);
        self.check_tickets(now);
        self.drive(now);
        self.update_status(now);
        id
    }

    /// Resolves a conflict: `Remote` keeps what the thread has; `Local` makes
    /// the refused side win everywhere.
    pub fn resolve_conflict(&mut self, now: Time, conflict_id: &str, choose: Choice) -> Result<(), String> {
        let i = self
            .conflicts
            .iter()
            .position(|c| c.id == conflict_id)
            .ok_or_else(|| format!("no conflict {conflict_id}"))?;
        let c = self.conflicts.remove(i);
        self.absorb_snapshot(now, &c.thread_id);
        if choose == Choice::Local
            && let Some(t) = self.threads.get(&c.thread_id)
            && let Some(op) = c.choose_local(&t.local)
        {
            self.add_ops(now, &c.thread_id, vec![op]);
            self.write_local(&c.thread_id, Origin::Local);
            self.schedule_batch(now);
        }
        self.actions.push_back(Action::SaveConflicts { conflicts: self.conflicts.clone() });
        self.update_status(now);
        Ok(())
    }

    /// The server URL or token changed: try again at once.
    pub fn credentials_changed(&mut self, now: Time) {
        self.unauthorized = None;
        self.net = Connectivity::Online;
        for lane in &mut self.lanes {
            lane.backoff.reset();
            lane.retry_at = lane.retry_at.map(|_| now);
        }
        if let Some((req, _, _)) = self.pull.inflight.take() {
            self.actions.push_back(Action::CancelPull { req });
        }
        self.pull.next_at = Some(now);
        self.batch_at = Some(now);
        self.drive(now);
        self.update_status(now);
    }

    pub fn handle_push(&mut self, now: Time, req: ReqId, outcome: Result<PushResponse, Failure>) {
        let Some(li) = self.lanes.iter().position(|l| l.inflight.is_some_and(|(r, _, _)| r == req)) else {
            return;
        };
        let (_, started, bytes) = self.lanes[li].inflight.take().expect("matched above");
        match outcome {
            Ok(resp) => self.push_succeeded(now, li, started, bytes, resp),
            Err(f) => self.push_failed(now, li, f),
        }
        self.check_tickets(now);
        self.drive(now);
        self.update_status(now);
    }

    pub fn handle_pull(&mut self, now: Time, req: ReqId, outcome: PullOutcome) {
        let Some((r, started, waited)) = self.pull.inflight else { return };
        if r != req {
            return;
        }
        self.pull.inflight = None;
        match outcome {
            PullOutcome::Ok(resp) => {
                self.on_reachable(now);
                self.server_error = None;
                self.pull.backoff.reset();
                let duration = now.saturating_since(started);
                let bytes = resp.changes.iter().map(|c| c.effect.size()).sum::<usize>()
                    + resp.snapshots.iter().map(Doc::size).sum::<usize>();
                let items = resp.changes.len() + resp.snapshots.len();
                if !waited {
                    self.record(SyncSample {
                        kind: SyncKind::Pull,
                        duration,
                        bytes: bytes as u64,
                        items,
                        conflicts: 0,
                    });
                }
                let up_to_date = resp.up_to_date;
                self.apply_pull(now, resp);
                if up_to_date {
                    self.pull.synced_once = true;
                    self.last_sync = Some(now);
                    for t in self.tickets.iter_mut() {
                        // A pull that began after the ticket's pushes landed confirms it.
                        if matches!(t.phase, TicketPhase::Pulling { since } if started >= since) {
                            t.phase = TicketPhase::Done;
                        }
                    }
                    // A force sync whose pushes landed after this pull began
                    // needs a pull of its own, now rather than at the next poll.
                    let ticket_waits = self.tickets.iter().any(|t| matches!(t.phase, TicketPhase::Pulling { .. }));
                    self.pull.next_at = Some(match self.cfg.poll {
                        _ if ticket_waits => now,
                        PollMode::LongPoll { .. } => now,
                        PollMode::Fixed(d) => now + d,
                        PollMode::Adaptive { .. } => now + self.poller.interval(now),
                    });
                } else {
                    self.pull.next_at = Some(now);
                }
            }
            PullOutcome::Refetch => {
                self.on_reachable(now);
                self.actions.push_back(Action::Warning("the server can no longer serve our cursor; refetching".into()));
                self.cursor = None;
                self.actions.push_back(Action::SaveCursor { cursor: None });
                self.pull.next_at = Some(now);
            }
            PullOutcome::Failed(f) => {
                self.fail_tickets(&f.describe());
                match f.class() {
                    FailureClass::Unauthorized => self.set_unauthorized(&f),
                    _ if f.is_connectivity() => self.go_offline(now, &f),
                    class => {
                        // A 5xx/429 retries after a backoff (or Retry-After); any
                        // other answer does too, more slowly, as pulls change nothing.
                        let retry_after = match class {
                            FailureClass::Retryable { retry_after } => retry_after,
                            _ => Some(retry::RETRY_DELAYS[4]),
                        };
                        self.server_error = Some(f.describe());
                        self.monitor.record_failure();
                        self.pull.next_at = Some(now + self.pull.backoff.next_delay(&mut self.rng, retry_after));
                    }
                }
            }
        }
        self.check_tickets(now);
        self.drive(now);
        self.update_status(now);
    }

    pub fn handle_probe(&mut self, now: Time, req: ReqId, outcome: Result<(), Failure>) {
        let Connectivity::Offline { probe, .. } = &mut self.net else { return };
        if *probe != Some(req) {
            return;
        }
        *probe = None;
        match outcome {
            Ok(()) => self.on_reachable(now),
            Err(f) => {
                if let Connectivity::Offline { probe_at, backoff, reason, .. } = &mut self.net {
                    *probe_at = now + backoff.next_delay(&mut self.rng, None);
                    *reason = f.describe();
                }
            }
        }
        self.drive(now);
        self.update_status(now);
    }

    pub fn handle_timeout(&mut self, now: Time) {
        for id in self.debounce.take_due(now) {
            self.flush_snapshot(now, &id);
        }
        if self.status_throttle.poll(now) {
            self.emit_status();
        }
        self.drive(now);
        self.update_status(now);
    }

    /// When the engine next needs `handle_timeout`.
    pub fn poll_timeout(&self) -> Option<Time> {
        let mut t: Option<Time> = None;
        let mut consider = |x: Option<Time>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        consider(self.debounce.deadline());
        consider(self.status_throttle.deadline());
        if self.unauthorized.is_none() {
            match &self.net {
                Connectivity::Online => {
                    consider(self.batch_at.filter(|at| self.has_sendable(*at)));
                    for lane in &self.lanes {
                        if lane.inflight.is_none() && !lane.outstanding.is_empty() {
                            consider(lane.retry_at);
                        }
                    }
                    if self.pull.inflight.is_none() {
                        consider(self.pull.next_at);
                    }
                    // Threads in per-thread backoff become sendable later.
                    consider(
                        self.threads.values().filter(|t| !t.pending.is_empty()).filter_map(|t| t.backoff_until).min(),
                    );
                }
                Connectivity::Offline { probe_at, probe: None, .. } => consider(Some(*probe_at)),
                Connectivity::Offline { .. } => {}
            }
        }
        t
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    // ----- queries --------------------------------------------------------

    pub fn status(&self) -> Status {
        self.compute_status()
    }

    pub fn thread(&self, id: &ThreadId) -> Option<&Thread> {
        self.threads.get(id).filter(|t| t.local.exists()).map(|t| &t.local.thread)
    }

    pub fn base(&self, id: &ThreadId) -> Option<&Doc> {
        self.threads.get(id).map(|t| &t.base)
    }

    pub fn thread_ids(&self) -> impl Iterator<Item = &ThreadId> {
        self.threads.iter().filter(|(_, t)| t.local.exists()).map(|(id, _)| id)
    }

    pub fn thread_status(&self, id: &ThreadId) -> Option<ThreadStatus> {
        self.threads.get(id).map(|t| self.compute_thread_status(t))
    }

    /// Threads with changes not yet on the server (seed: observePendingItems).
    pub fn pending_threads(&self) -> BTreeSet<ThreadId> {
        self.threads.iter().filter(|(_, t)| t.unsent_or_inflight()).map(|(id, _)| id.clone()).collect()
    }

    pub fn conflicts(&self) -> &[Conflict] {
        &self.conflicts
    }

    pub fn cursor(&self) -> Option<&Cursor> {
        self.cursor.as_ref()
    }

    pub fn metrics(&self) -> MetricsSnapshot {
        self.monitor.snapshot()
    }

    /// The client ids of the two lanes (for logs and tests).
    pub fn client_ids(&self) -> [&ClientId; 2] {
        [&self.lanes[0].client, &self.lanes[1].client]
    }

    /// True when nothing is waiting to be sent or confirmed.
    pub fn is_idle(&self) -> bool {
        self.debounce.is_empty()
            && self.threads.values().all(|t| t.pending.is_empty() && t.inflight.is_none() && t.acked.is_empty())
            && self.lanes.iter().all(|l| l.outstanding.is_empty())
    }

    // ----- local changes --------------------------------------------------

    /// A file change still in its debounce window becomes operations now:
    /// the engine is about to rewrite the file, which would overwrite it.
    fn absorb_snapshot(&mut self, now: Time, id: &ThreadId) {
        if self.threads.get(id).is_some_and(|t| t.snapshot.is_some()) {
            self.debounce.take(id);
            self.flush_snapshot(now, id);
        }
    }

    fn flush_snapshot(&mut self, now: Time, id: &ThreadId) {
        let Some(t) = self.threads.get_mut(id) else { return };
        let Some(snapshot) = t.snapshot.take() else { return };
        let base = t.snapshot_base.take();
        self.take_snapshot(now, snapshot, base);
        self.schedule_batch(now);
    }

    /// Turns a file's content into operations: what changed from the
    /// version it was written from (`base`, else the current view), applied
    /// to the current view.
    fn take_snapshot(&mut self, now: Time, file: Thread, base: Option<Thread>) {
        let id = file.id.clone();
        let t = self.threads.entry(id.clone()).or_insert_with(|| Tracked::new(Doc::empty(id.clone())));
        t.extra = file.extra.clone();
        let ops = match base.filter(|b| b.id == id && t.local.exists()) {
            Some(mut b) => {
                // A base that exists, so the diff is about messages, not creation.
                b.v = b.v.max(1);
                diff(&Doc::from_thread(b), &file)
            }
            None => diff(&t.local, &file),
        };
        // Reject locally what the server would refuse for good, keeping the
        // rest; the file is rewritten without it and the change reported.
        let mut probe = t.local.clone();
        let mut ok = Vec::new();
        let mut refused = Vec::new();
        for op in ops {
            match probe.apply(&op, &self.cfg.limits) {
                OpOutcome::Rejected { reason } => refused.push((op, reason)),
                _ => ok.push(op),
            }
        }
        if !ok.is_empty() {
            self.add_ops(now, &id, ok);
        }
        for (op, reason) in refused {
            self.actions.push_back(Action::Rollback { thread_id: id.clone(), reason, ops: vec![op] });
        }
        // Normalise the file when it differs from what the merge keeps (ids
        // filled in, reordered or refused messages, a stale version).
        let t = &self.threads[&id];
        if t.local.exists() && !same_content(&t.local.thread, &file) {
            self.write_local(&id, Origin::Local);
        }
        self.update_status(now);
    }

    fn add_ops(&mut self, now: Time, id: &ThreadId, ops: Vec<Op>) {
        let t = self.threads.get_mut(id).expect("caller ensured the thread is tracked");
        // The writer's last append not yet confirmed: new appends follow it.
        let mut last_own = t.all_ops().rev().find_map(|p| match &p.op {
            Op::Append { message, .. } => Some(message.id.clone()),
            _ => None,
        });
        for mut op in ops {
            if let Op::Append { message, follows, .. } = &mut op {
                if follows.is_none() {
                    follows.clone_from(&last_own);
                }
                last_own = Some(message.id.clone());
            }
            let (prior, prior_message) = prior_of(&t.local, &op);
            t.local.apply(&op, &self.cfg.limits);
            t.pending.push(PendingOp { op, seq: self.next_seq, prior, prior_message, maybe_sent: false });
            self.next_seq += 1;
        }
        self.poller.record_activity(now);
        let t = &self.threads[id];
        self.actions.push_back(updated(&t.local.thread, Origin::Local));
    }

    fn save_outbox(&mut self, id: &ThreadId) {
        let t = &self.threads[id];
        let ops = t
            .acked
            .iter()
            .map(|(_, p)| p)
            .chain(t.inflight.iter().flat_map(|i| &i.ops))
            .map(|p| p.op.clone())
            .collect();
        self.actions.push_back(Action::SaveOutbox { thread_id: id.clone(), ops });
    }

    fn write_local(&mut self, id: &ThreadId, origin: Origin) {
        let t = &self.threads[id];
        let mut thread = t.local.thread.clone();
        thread.extra = t.extra.clone();
        self.actions.push_back(Action::WriteThread { thread, origin });
    }

    /// Recomputes `local` as `base` plus every unconfirmed change, and writes
    /// the file when that changed what the user sees.
    fn rebase(&mut self, now: Time, id: &ThreadId, origin: Origin) {
        self.absorb_snapshot(now, id);
        let limits = self.cfg.limits;
        let t = self.threads.get_mut(id).expect("tracked");
        let mut local = t.base.clone();
        for p in t.all_ops() {
            local.apply(&p.op, &limits);
        }
        if local == t.local {
            return;
        }
        let changed_content = !same_content(&local.thread, &t.local.thread);
        t.local = local;
        if changed_content {
            self.actions.push_back(updated(&self.threads[id].local.thread, origin));
            self.write_local(id, origin);
        }
    }

    // ----- pushing --------------------------------------------------------

    fn schedule_batch(&mut self, now: Time) {
        if self.batch_at.is_some() {
            return;
        }
        let quiet = self.lanes.iter().all(|l| l.inflight.is_none() && l.outstanding.is_empty())
            && self.last_push.is_none_or(|t| now.saturating_since(t) >= self.cfg.batch_window);
        self.batch_at = Some(if self.cfg.flush_when_idle && quiet { now } else { now + self.cfg.batch_window });
    }

    /// Some thread has changes a push could carry now (not in flight, not
    /// held by a per-thread backoff: those wake the engine themselves).
    fn has_sendable(&self, now: Time) -> bool {
        self.threads
            .values()
            .any(|t| !t.pending.is_empty() && t.inflight.is_none() && t.backoff_until.is_none_or(|at| at <= now))
    }

    fn drive(&mut self, now: Time) {
        if self.unauthorized.is_some() {
            return;
        }
        if let Connectivity::Offline { probe_at, probe, .. } = &mut self.net {
            if probe.is_none() && *probe_at <= now {
                let req = self.next_req;
                self.next_req += 1;
                *probe = Some(req);
                self.actions.push_back(Action::Probe { req, timeout: self.cfg.request_timeout });
            }
            return;
        }
        // A thread whose backoff ended is sendable again.
        let mut released = false;
        for t in self.threads.values_mut() {
            if t.backoff_until.is_some_and(|at| at <= now) {
                t.backoff_until = None;
                released |= !t.pending.is_empty();
            }
        }
        if released {
            // It has waited long enough: no collection window on top.
            self.batch_at = Some(now);
        }
        if self.batch_at.is_some_and(|at| at <= now) {
            self.batch_at = None;
            for li in [FAST, BULK] {
                if self.lanes[li].inflight.is_none() && self.lanes[li].outstanding.is_empty() {
                    self.compose(now, li);
                }
            }
            // Left over because of batch limits: the next window takes them.
            // (Changes waiting for a busy lane go when its push is answered.)
            let idle_lane = self.lanes.iter().any(|l| l.inflight.is_none() && l.outstanding.is_empty());
            if idle_lane && self.has_sendable(now) {
                self.schedule_batch(now);
            }
        }
        for li in [FAST, BULK] {
            let lane = &self.lanes[li];
            if lane.inflight.is_none() && !lane.outstanding.is_empty() && lane.retry_at.is_none_or(|at| at <= now) {
                self.send(now, li);
            }
        }
        if self.pull.inflight.is_none() && self.pull.next_at.is_some_and(|at| at <= now) {
            self.send_pull(now);
        }
    }

    /// Builds the next batch of a lane from the threads' pending changes:
    /// oldest first, one mutation per thread (all its pending operations,
    /// coalesced), up to the adaptive thread and byte limits.
    fn compose(&mut self, now: Time, li: usize) {
        let max_threads = self.monitor.batch_limit().min(self.cfg.max_batch_threads).max(1);
        let budget = self.monitor.byte_budget() as usize;
        let mut candidates: Vec<(u64, ThreadId, usize)> = self
            .threads
            .iter()
            .filter(|(_, t)| !t.pending.is_empty() && t.inflight.is_none())
            .filter(|(_, t)| t.backoff_until.is_none_or(|at| at <= now))
            .map(|(id, t)| (t.pending[0].seq, id.clone(), t.pending.iter().map(|p| p.op.size()).sum()))
            .filter(|(_, _, size)| (*size > self.cfg.bulk_threshold) == (li == BULK))
            .collect();
        candidates.sort();
        let mut bytes = 0;
        let mut chosen = Vec::new();
        for (_, id, size) in candidates {
            if chosen.len() >= max_threads || (!chosen.is_empty() && bytes + size > budget) {
                continue;
            }
            if self.lanes[li].one_at_a_time && !chosen.is_empty() {
                break;
            }
            bytes += size;
            chosen.push(id);
        }
        for id in chosen {
            let lane = &mut self.lanes[li];
            let t = self.threads.get_mut(&id).expect("candidate");
            t.backoff_until = None;
            let ops = coalesce(std::mem::take(&mut t.pending));
            let mutation = lane.next_id;
            lane.next_id += 1;
            lane.outstanding.push(Mutation {
                id: mutation,
                thread_id: id.clone(),
                ops: ops.iter().map(|p| p.op.clone()).collect(),
            });
            t.inflight = Some(Inflight { mutation, ops });
            self.save_outbox(&id);
        }
    }

    fn send(&mut self, now: Time, li: usize) {
        self.last_push = Some(now);
        let req = self.next_req;
        self.next_req += 1;
        let lane = &mut self.lanes[li];
        let take = if lane.one_at_a_time { 1 } else { lane.outstanding.len() };
        let body = PushRequest { client_id: lane.client.clone(), mutations: lane.outstanding[..take].to_vec() };
        let bytes = body.mutations.iter().flat_map(|m| &m.ops).map(Op::size).sum();
        lane.inflight = Some((req, now, bytes));
        lane.retry_at = None;
        let timeout = self.cfg.request_timeout + Duration::from_millis((bytes / 10_000) as u64);
        self.actions.push_back(Action::Push { req, body, timeout });
    }

    fn push_succeeded(&mut self, now: Time, li: usize, started: Time, bytes: usize, resp: PushResponse) {
        self.on_reachable(now);
        self.server_error = None;
        let lane = &mut self.lanes[li];
        lane.backoff.reset();
        let sent = if lane.one_at_a_time { 1 } else { lane.outstanding.len() };
        let sent: Vec<Mutation> = lane.outstanding.drain(..sent.min(lane.outstanding.len())).collect();
        if lane.outstanding.is_empty() {
            lane.one_at_a_time = false;
        }
        let mut conflicts = 0;
        let mut gap = false;
        for m in &sent {
            let Some(r) = resp.results.iter().find(|r| r.id == m.id) else {
                // The server answered without this mutation: treat as a gap.
                gap = true;
                continue;
            };
            let t = self.threads.get_mut(&m.thread_id).expect("sent threads are tracked");
            let Some(inflight) = t.inflight.take() else { continue };
            match r.status {
                MutationStatus::Gap => {
                    gap = true;
                    // Back to the front of the queue, to go again under a new client id.
                    let mut ops = inflight.ops;
                    ops.iter_mut().for_each(|p| p.maybe_sent = true);
                    ops.append(&mut t.pending);
                    t.pending = ops;
                }
                MutationStatus::Duplicate => {
                    // Confirmed already if a pull overtook this answer.
                    if r.version > t.base.thread.v {
                        t.acked.extend(inflight.ops.into_iter().map(|p| (r.version, p)));
                    }
                    t.last_sync = Some(now);
                }
                _ => {
                    let mut refused = Vec::new();
                    let mut reasons = Vec::new();
                    for (i, p) in inflight.ops.into_iter().enumerate() {
                        match r.ops.get(i) {
                            Some(OpResult::Conflict { conflict }) => {
                                conflicts += 1;
                                let c = make_conflict(&mut self.rng, now, &m.thread_id, conflict.clone(), &p);
                                self.conflicts.push(c);
                            }
                            Some(OpResult::Rejected { reason }) => {
                                reasons.push(reason.clone());
                                refused.push(p.op);
                            }
                            _ if r.version > t.base.thread.v => t.acked.push((r.version, p)),
                            _ => {}
                        }
                    }
                    t.last_sync = Some(now);
                    if !refused.is_empty() {
                        // Refused for good: hold this thread's next changes a
                        // while, so an assistant rewriting the same refused
                        // content does not turn into a push loop.
                        t.backoff_until = Some(now + self.cfg.thread_backoff);
                        self.actions.push_back(Action::Rollback {
                            thread_id: m.thread_id.clone(),
                            reason: reasons.join("; "),
                            ops: refused,
                        });
                    }
                }
            }
            // Dropping refused or conflicting changes can change what the user sees.
            self.rebase(now, &m.thread_id, Origin::Remote);
            self.save_outbox(&m.thread_id);
        }
        if conflicts > 0 {
            self.actions.push_back(Action::SaveConflicts { conflicts: self.conflicts.clone() });
        }
        if gap {
            // The server lost track of this client's ids (e.g. restored from a
            // backup): continue under a fresh client id. Operations are
            // idempotent, so resending what may have applied is harmless.
            let lane = &mut self.lanes[li];
            let fresh = ulid::Ulid::from_parts(now.as_millis(), self.rng.random());
            lane.client = ClientId::new(format!("c-{fresh}{}", if li == BULK { "-bulk" } else { "" })).expect("valid");
            lane.next_id = 1;
            for m in std::mem::take(&mut lane.outstanding) {
                if let Some(t) = self.threads.get_mut(&m.thread_id)
                    && let Some(i) = t.inflight.take()
                {
                    let mut ops = i.ops;
                    ops.iter_mut().for_each(|p| p.maybe_sent = true);
                    ops.append(&mut t.pending);
                    t.pending = ops;
                }
                self.save_outbox(&m.thread_id);
            }
            self.actions.push_back(Action::Warning("the server did not know our mutation ids; resending".into()));
        }
        let items = sent.len();
        let duration = now.saturating_since(started);
        self.record(SyncSample { kind: SyncKind::Push, duration, bytes: bytes as u64, items, conflicts });
        self.last_sync = Some(now);
        if self.has_sendable(now) {
            self.batch_at = Some(now);
        }
        // Without a held pull, fetch the result now so it is confirmed promptly.
        if !matches!(self.cfg.poll, PollMode::LongPoll { .. }) {
            self.pull.next_at = Some(now);
        }
    }

    fn push_failed(&mut self, now: Time, li: usize, f: Failure) {
        self.monitor.record_failure();
        self.fail_tickets(&f.describe());
        match f.class() {
            FailureClass::Unauthorized => self.set_unauthorized(&f),
            _ if f.is_connectivity() => self.go_offline(now, &f),
            FailureClass::Retryable { retry_after } => {
                self.server_error = Some(f.describe());
                let lane = &mut self.lanes[li];
                lane.retry_at = Some(now + lane.backoff.next_delay(&mut self.rng, retry_after));
            }
            FailureClass::Permanent => {
                // The server took none of it. Find the offending mutation by
                // sending one at a time; a single one refused is rolled back,
                // and its id is reused (the server never recorded it).
                let lane = &mut self.lanes[li];
                if !lane.one_at_a_time && lane.outstanding.len() > 1 {
                    lane.one_at_a_time = true;
                    lane.retry_at = Some(now);
                    return;
                }
                let m = lane.outstanding.remove(0);
                for (k, later) in lane.outstanding.iter_mut().enumerate() {
                    later.id = m.id + k as u64;
                    if let Some(t) = self.threads.get_mut(&later.thread_id)
                        && let Some(i) = t.inflight.as_mut()
                    {
                        i.mutation = later.id;
                    }
                }
                lane.next_id = m.id + lane.outstanding.len() as u64;
                if lane.outstanding.is_empty() {
                    lane.one_at_a_time = false;
                }
                lane.retry_at = Some(now);
                if let Some(t) = self.threads.get_mut(&m.thread_id) {
                    t.inflight = None;
                    t.backoff_until = Some(now + self.cfg.thread_backoff);
                }
                self.actions.push_back(Action::Rollback {
                    thread_id: m.thread_id.clone(),
                    reason: f.describe(),
                    ops: m.ops,
                });
                self.rebase(now, &m.thread_id, Origin::Remote);
                self.save_outbox(&m.thread_id);
            }
        }
    }

    // ----- pulling --------------------------------------------------------

    fn send_pull(&mut self, now: Time) {
        let req = self.next_req;
        self.next_req += 1;
        // Hold the request only once the first full sync is done and the
        // server has nothing more for us right away.
        let held = self.pull.synced_once
            && !std::mem::take(&mut self.pull.fresh)
            && matches!(self.cursor, Some(Cursor::Log(_)));
        let wait = match self.cfg.poll {
            PollMode::LongPoll { wait } if held => Some(wait),
            _ => None,
        };
        let timeout = self.cfg.request_timeout + wait.unwrap_or_default();
        self.pull.inflight = Some((req, now, wait.is_some()));
        self.pull.next_at = None;
        self.actions.push_back(Action::Pull { req, cursor: self.cursor.clone(), wait, timeout });
    }

    fn apply_pull(&mut self, now: Time, resp: PullResponse) {
        let mut touched: BTreeSet<ThreadId> = BTreeSet::new();
        for doc in resp.snapshots {
            let id = doc.id().clone();
            let t = self.threads.entry(id.clone()).or_insert_with(|| Tracked::new(Doc::empty(id.clone())));
            if doc.thread.v >= t.base.thread.v {
                t.base = doc;
            }
            touched.insert(id);
        }
        let mut broken = None;
        for c in resp.changes {
            let t = self
                .threads
                .entry(c.thread_id.clone())
                .or_insert_with(|| Tracked::new(Doc::empty(c.thread_id.clone())));
            if c.version <= t.base.thread.v {
                continue;
            }
            let applied = if c.version == t.base.thread.v + 1 {
                t.base.apply_effect(&c.effect)
            } else {
                Err(format!("expected version {} of {}, got {}", t.base.thread.v + 1, c.thread_id, c.version))
            };
            if let Err(e) = applied {
                broken = Some(e);
                break;
            }
            touched.insert(c.thread_id);
        }
        for id in &touched {
            let t = self.threads.get_mut(id).expect("touched");
            let v = t.base.thread.v;
            t.acked.retain(|(version, _)| *version > v);
            t.last_sync = Some(now);
            self.rebase(now, id, Origin::Remote);
            // The file (with the new state) is written before the base, so a
            // crash in between re-derives idempotent operations, never deletes.
            self.actions.push_back(Action::SaveBase { doc: self.threads[id].base.clone() });
            self.save_outbox(id);
        }
        if let Some(e) = broken {
            // Our copy disagrees with the log: start over from a snapshot.
            self.actions.push_back(Action::Warning(format!("out of step with the server ({e}); refetching")));
            self.cursor = None;
        } else {
            self.cursor = Some(resp.cursor);
        }
        self.actions.push_back(Action::SaveCursor { cursor: self.cursor.clone() });
    }

    // ----- connectivity and failures --------------------------------------

    fn on_reachable(&mut self, now: Time) {
        if let Connectivity::Offline { .. } = self.net {
            self.net = Connectivity::Online;
            // Back online: flush everything now.
            for lane in &mut self.lanes {
                lane.backoff.reset();
                if !lane.outstanding.is_empty() {
                    lane.retry_at = Some(now);
                }
            }
            self.batch_at = Some(now);
            if self.pull.inflight.is_none() {
                self.pull.next_at = Some(now);
            }
        }
    }

    fn go_offline(&mut self, now: Time, f: &Failure) {
        self.monitor.record_failure();
        match &mut self.net {
            Connectivity::Online => {
                let mut backoff = Backoff::new(self.cfg.jitter);
                let delay = backoff.next_delay(&mut self.rng, None);
                self.net = Connectivity::Offline { probe_at: now + delay, probe: None, backoff, reason: f.describe() };
                // A held pull would only fail too.
                if let Some((req, _, _)) = self.pull.inflight.take() {
                    self.actions.push_back(Action::CancelPull { req });
                }
                self.pull.next_at = Some(now);
            }
            Connectivity::Offline { reason, .. } => *reason = f.describe(),
        }
    }

    fn set_unauthorized(&mut self, f: &Failure) {
        self.unauthorized = Some(f.describe());
        self.pull.next_at = Some(Time::ZERO);
        for lane in &mut self.lanes {
            lane.retry_at = Some(Time::ZERO);
        }
    }

    fn record(&mut self, s: SyncSample) {
        if let Some(slow) = self.monitor.record(s) {
            self.actions.push_back(Action::Warning(format!(
                "slow sync: {} ms (p95 {} ms)",
                slow.duration.as_millis(),
                slow.p95.as_millis()
            )));
        }
    }

    // ----- force-sync tickets ---------------------------------------------

    fn check_tickets(&mut self, now: Time) {
        let mut need_pull = false;
        let mut done = Vec::new();
        for (i, ticket) in self.tickets.iter_mut().enumerate() {
            if ticket.phase == TicketPhase::Pushing {
                let waiting =
                    self.threads.iter().filter(|(id, _)| ticket.thread.as_ref().is_none_or(|t| t == *id)).any(
                        |(_, t)| {
                            t.snapshot.is_some()
                                || t.pending.iter().any(|p| p.seq <= ticket.upto)
                                || t.inflight.as_ref().is_some_and(|i| i.ops.iter().any(|p| p.seq <= ticket.upto))
                        },
                    );
                if !waiting {
                    ticket.phase = TicketPhase::Pulling { since: now };
                    need_pull = true;
                }
            } else if ticket.phase == TicketPhase::Done {
                done.push(i);
            }
        }
        if !done.is_empty() {
            // Whoever waited for this sync reads the status next: make it
            // current now rather than at the throttle's trailing edge.
            self.emit_status();
        }
        for i in done.into_iter().rev() {
            let t = self.tickets.remove(i);
            self.actions.push_back(Action::SyncDone { ticket: t.id, result: Ok(()) });
        }
        if need_pull {
            self.pull.fresh = true;
            // A held long-poll began before our changes; ask again now.
            match self.pull.inflight {
                Some((req, started, true)) if started <= now => {
                    self.pull.inflight = None;
                    self.actions.push_back(Action::CancelPull { req });
                    self.pull.next_at = Some(now);
                }
                Some(_) => {}
                None => self.pull.next_at = Some(now),
            }
        }
    }

    fn fail_tickets(&mut self, reason: &str) {
        for t in self.tickets.drain(..) {
            self.actions.push_back(Action::SyncDone { ticket: t.id, result: Err(reason.to_string()) });
        }
    }

    // ----- status -----------------------------------------------------------

    fn compute_thread_status(&self, t: &Tracked) -> ThreadStatus {
        let id = &t.base.thread.id;
        let state = if t.error.is_some() {
            ThreadState::Error
        } else if self.conflicts.iter().any(|c| &c.thread_id == id) {
            ThreadState::Conflict
        } else if t.inflight.is_some() {
            ThreadState::Syncing
        } else if !t.pending.is_empty() || t.snapshot.is_some() {
            ThreadState::Pending
        } else {
            ThreadState::Synced
        };
        ThreadStatus {
            thread_id: id.clone(),
            state,
            version: t.local.thread.v,
            last_sync: t.last_sync,
            error: t.error.clone(),
        }
    }

    fn compute_status(&self) -> Status {
        let pending = self.threads.values().filter(|t| t.unsent_or_inflight()).count();
        let conflicts = self.conflicts.len();
        // Online means "reached the server": until the first answer arrives we
        // do not know, and a statusline must not show a tick for a sidecar that
        // has never synced (it stays `syncing` until the first catch-up ends).
        let online = matches!(self.net, Connectivity::Online) && self.last_sync.is_some();
        let file_error =
            self.threads.values().find_map(|t| t.error.as_ref().map(|e| format!("{}: {e}", t.base.thread.id)));
        let pushing = self.lanes.iter().any(|l| l.inflight.is_some());
        let pulling = self.pull.inflight.is_some_and(|(_, _, waited)| !waited);
        let (state, message) = if let Some(why) = &self.unauthorized {
            (State::Unauthorized, Some(format!("the server refused our token ({why}); set a valid token")))
        } else if let Connectivity::Offline { reason, .. } = &self.net {
            (State::Offline, Some(reason.clone()))
        } else if conflicts > 0 {
            (State::Conflict, Some(format!("{conflicts} conflict(s) to resolve")))
        } else if let Some(e) = file_error.or_else(|| self.server_error.clone()) {
            (State::Error, Some(e))
        } else if !self.pull.synced_once {
            (State::Syncing, Some(if pulling { "first sync" } else { "connecting" }.to_string()))
        } else if pushing {
            (State::Syncing, None)
        } else if pending > 0 {
            (State::Pending, None)
        } else {
            (State::Synced, None)
        };
        Status { state, pending, conflicts, online, last_sync: self.last_sync, message }
    }

    /// Emits per-thread status changes at once, and the overall status
    /// through the throttle (leading edge now, trailing edge coalesced).
    fn update_status(&mut self, now: Time) {
        let ids: Vec<ThreadId> = self.threads.keys().cloned().collect();
        for id in ids {
            let s = self.compute_thread_status(&self.threads[&id]);
            if self.thread_status_sent.get(&id) != Some(&s) {
                self.thread_status_sent.insert(id, s.clone());
                self.actions.push_back(Action::ThreadStatus(s));
            }
        }
        self.poller.set_queue_depth(self.threads.values().filter(|t| t.unsent_or_inflight()).count());
        let s = self.compute_status();
        if self.status_sent.as_ref() != Some(&s) && self.status_throttle.on_event(now) {
            self.emit_status();
        }
    }

    fn emit_status(&mut self) {
        let s = self.compute_status();
        if self.status_sent.as_ref() != Some(&s) {
            self.status_sent = Some(s.clone());
            self.actions.push_back(Action::Status(s));
        }
    }
}

fn updated(t: &Thread, origin: Origin) -> Action {
    Action::ThreadUpdated {
        thread_id: t.id.clone(),
        version: t.v,
        title: t.title.clone(),
        message_count: t.messages.len(),
        origin,
    }
}

/// Same title, env and messages (the version and unsynced fields aside).
fn same_content(a: &Thread, b: &Thread) -> bool {
    a.title == b.title && a.env == b.env && a.messages == b.messages && a.created == b.created
}

fn prior_of(local: &Doc, op: &Op) -> (Value, Option<Arc<Message>>) {
    match op {
        Op::SetTitle { base, .. } => (Value::String(base.clone()), None),
        Op::SetEnv { .. } => (local.thread.env.clone(), None),
        Op::Edit { id, .. } | Op::Delete { id, .. } => {
            let m = local.get(id).cloned();
            (m.as_ref().map_or(Value::Null, |m| m.content.clone()), m)
        }
        Op::Create { .. } | Op::Append { .. } => (Value::Null, None),
    }
}

fn make_conflict(rng: &mut ChaCha8Rng, now: Time, thread: &ThreadId, info: ConflictInfo, p: &PendingOp) -> Conflict {
    Conflict {
        id: format!("c-{}", ulid::Ulid::from_parts(now.as_millis(), rng.random())),
        thread_id: thread.clone(),
        kind: info.kind,
        message_id: info.message_id,
        base: p.prior.clone(),
        local: info.local,
        remote: info.remote,
        base_message: p.prior_message.clone(),
    }
}

/// Merges a thread's queued operations into fewer: repeated title or env
/// sets become one, edits of a message appended in the same batch fold into
/// the append, and a message appended and deleted before it was sent is
/// never sent at all.
fn coalesce(ops: Vec<PendingOp>) -> Vec<PendingOp> {
    let mut out: Vec<PendingOp> = Vec::with_capacity(ops.len());
    for p in ops {
        match &p.op {
            Op::SetTitle { title, .. } => {
                if let Some(prev) = out.iter_mut().rev().find(|q| matches!(q.op, Op::SetTitle { .. })) {
                    if let Op::SetTitle { title: t, .. } = &mut prev.op {
                        t.clone_from(title);
                    }
                    continue;
                }
            }
            Op::SetEnv { env, .. } => {
                if let Some(prev) = out.iter_mut().rev().find(|q| matches!(q.op, Op::SetEnv { .. })) {
                    if let Op::SetEnv { env: e, .. } = &mut prev.op {
                        e.clone_from(env);
                    }
                    continue;
                }
            }
            Op::Edit { id, content, .. } => {
                // Into an append of the same message, or an earlier edit of it
                // (which keeps its base: the content before the batch).
                let earlier = out.iter_mut().rev().filter(|q| !q.maybe_sent).find(|q| match &q.op {
                    Op::Append { message, .. } => &message.id == id,
                    Op::Edit { id: e, .. } => e == id,
                    _ => false,
                });
                match earlier.map(|q| &mut q.op) {
                    Some(Op::Append { message, .. }) => {
                        Arc::make_mut(message).content = content.clone();
                        continue;
                    }
                    Some(Op::Edit { content: c, .. }) => {
                        c.clone_from(content);
                        continue;
                    }
                    _ => {}
                }
            }
            Op::Delete { id, .. } => {
                let appended = out
                    .iter()
                    .position(|q| !q.maybe_sent && matches!(&q.op, Op::Append { message, .. } if &message.id == id));
                // Only when nothing queued after it was anchored to it.
                let anchored = out.iter().any(|q| matches!(&q.op, Op::Append { after: Some(a), .. } if a == id));
                if let (Some(i), false) = (appended, anchored) {
                    out.remove(i);
                    continue;
                }
            }
            Op::Create { .. } | Op::Append { .. } => {}
        }
        out.push(p);
    }
    out
}

#[cfg(test)]
mod tests;
