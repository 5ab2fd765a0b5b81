//! The client sync engine: every decision of the sync pipeline, none of the I/O.
//!
//! A [`SyncEngine`] is a state machine in the style of quinn-proto. Inputs
//! (`file_read`, `local_op`, `handle_push`, `handle_pull`, ...) take `now`;
//! [`SyncEngine::poll_timeout`] says when to call
//! [`SyncEngine::handle_timeout`]; [`SyncEngine::poll_action`] hands out what
//! to do (send a push, save a row, write a file, notify the editor) as
//! values. The engine never reads a clock, never touches a socket or a file,
//! and draws all randomness (jitter, ids) from a seeded generator, so a run
//! is a pure function of its inputs: the simulator replays any schedule
//! exactly.
//!
//! Per thread the engine keeps the server's state as last pulled (`base`)
//! and the local changes not yet confirmed, in three stages: `pending` (not
//! sent), `inflight` (sent, no answer yet) and `acked` (applied by the server,
//! not yet seen in a pull). What the user sees (`local`) is always `base`
//! with those changes replayed on top — a rebase — so when everything is
//! confirmed, `local == base ==` the server.
//!
//! The engine holds no message bodies (content is elided to its hash and
//! size; `state.rs`) and only the threads in use: the shell loads a thread
//! from the store before an input that touches it, and idle threads leave
//! memory. What the engine knows about each thread's file, and how it
//! decides what a read means and when to write, is in `file.rs`.

mod connectivity;
pub mod file;
mod file_inputs;
pub mod flow;
mod local;
pub mod monitor;
pub mod poller;
mod pull;
mod push;
mod queries;
pub mod retry;
pub mod state;
mod status;
mod tickets;
mod timers;
mod tracked;

use self::connectivity::*;
pub use self::file_inputs::json_stamp;
use self::file_inputs::*;
use self::local::*;
use self::pull::*;
use self::push::*;
use self::tickets::*;
pub use self::timers::{Timer, TimerTable};
use self::tracked::*;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::Value;

use crate::merge::{Conflict, ConflictInfo, Doc, Limits, OpOutcome, decide};
use crate::model::{Content, Message, MessageId, Thread, ThreadId};
use crate::ops::{Effect, Op};
use crate::threadlog::{self, Record};
use crate::time::Time;
use crate::wire::{ClientId, Cursor, Mutation, MutationStatus, OpResult, PullResponse, PushRequest, PushResponse};

use self::file::{FileKind, FileRead, FileState, FileView, FileWrite, Stamp, WriteResult};
use self::flow::{Debouncer, Throttle};
use self::monitor::{MetricsSnapshot, PerfMonitor, SyncKind, SyncSample};
use self::poller::AdaptivePoller;
use self::retry::{Backoff, Failure, FailureClass};
use self::state::FileSave;
pub use self::state::{BaseChange, Restored, Save, StoredThread};

/// How long a pull is held by default: minutes, so an idle sidecar asks
/// under once a minute (the server sends a byte every 20 s meanwhile, and
/// caps the hold at its own maximum, 300 s by default).
pub const LONG_POLL: Duration = Duration::from_secs(240);

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
    /// A change made when no push is out goes at once (leading edge); the
    /// changes made while one is out are collected in the window as usual.
    /// Saves a lone message the window's latency.
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
    /// Idle threads stay in memory (most recently used first) while they
    /// hold fewer messages than this in all; the rest live only in the store.
    pub resident_messages: usize,
    /// A `.jsonl` log is compacted once it holds more superseded records
    /// than this and than live messages.
    pub compact_after: u64,
    /// Tell the user once the server has been unreachable this long.
    pub offline_notice: Duration,
    /// The assistants (`env.source` of their threads) whose stores this
    /// machine syncs: their threads are written as native files.
    pub native_sources: Vec<String>,
    /// This machine's name, sent with pushes (the web pages show it as
    /// the author of its messages).
    pub machine: Option<String>,
}

impl EngineConfig {
    /// Whether a thread with this env goes into an assistant's store here.
    pub fn is_native(&self, env: &Value) -> bool {
        env.get("source").and_then(Value::as_str).is_some_and(|s| self.native_sources.iter().any(|n| n == s))
    }
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
            poll: PollMode::LongPoll { wait: LONG_POLL },
            request_timeout: Duration::from_secs(10),
            status_interval: Duration::from_millis(100),
            limits: Limits::default(),
            jitter: retry::DEFAULT_JITTER,
            resident_messages: 30_000,
            compact_after: 1_000,
            offline_notice: Duration::from_secs(300),
            native_sources: Vec::new(),
            machine: None,
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

/// What the engine asks the shell to do, in order. The shell applies the
/// `Save`s of one step in one transaction before it performs the rest.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Message content in `body` is elided: the shell loads it.
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
    /// Keep this in the state store (see `state.rs`).
    Save(Save),
    /// Write a thread file, then report with `file_written`. Content is elided.
    WriteFile {
        thread_id: ThreadId,
        write: FileWrite,
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
    /// Changes the server refused for good, undone locally (content elided;
    /// the shell keeps it, so a rollback never destroys anything).
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
    /// Something the user must act on or know (a refused token, a server
    /// unreachable for long), said once.
    Notify {
        error: bool,
        message: String,
    },
    /// Long work begins or ends (the first sync, a large upload).
    Progress {
        token: String,
        step: ProgressStep,
    },
    /// Something worth a log line (slow sync, malformed answer).
    Warning(String),
}

#[derive(Clone, Debug, PartialEq)]
pub enum ProgressStep {
    Begin(String),
    End(String),
}

/// A change made through the sidecar.
#[derive(Clone, Debug, PartialEq)]
pub enum LocalOp {
    CreateThread {
        title: String,
    },
    Append {
        role: String,
        content: Value,
    },
    SetTitle {
        title: String,
    },
    /// Brings a deleted message back: `message` (content loaded, as the
    /// store or the server kept it) is appended again under a new id, right
    /// where the deleted one was.
    Restore {
        message: Message,
    },
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

pub struct SyncEngine {
    cfg: EngineConfig,
    rng: ChaCha8Rng,
    lanes: [Lane; 2],
    /// The threads in memory (see "residency" in the module docs).
    threads: BTreeMap<ThreadId, Tracked>,
    /// Threads whose file may lag behind them.
    to_write: BTreeSet<ThreadId>,
    cursor: Option<Cursor>,
    pull: PullState,
    net: Connectivity,
    unauthorized: Option<String>,
    told_unauthorized: bool,
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
    /// Pushes large enough to show progress, by request.
    uploads: BTreeSet<ReqId>,
    actions: VecDeque<Action>,
}

const FAST: usize = 0;
const BULK: usize = 1;
/// Pushes larger than this show progress.
const LARGE_PUSH: usize = 1 << 20;
/// A write that failed is tried again after this long.
const WRITE_RETRY: Duration = Duration::from_secs(5);

impl SyncEngine {
    /// Starts an engine from what the store kept. `seed` drives jitter and ids.
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
            to_write: BTreeSet::new(),
            cursor: restored.cursor,
            pull: PullState {
                inflight: None,
                next_at: Some(now),
                backoff: Backoff::new(cfg.jitter),
                synced_once: false,
                fresh: false,
                first_sync_threads: BTreeSet::new(),
                first_sync_shown: false,
            },
            net: Connectivity::Online,
            unauthorized: None,
            told_unauthorized: false,
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
            next_seq: restored.next_seq.max(1),
            last_sync: None,
            uploads: BTreeSet::new(),
            actions: VecDeque::new(),
            cfg,
        };
        for stored in restored.threads {
            let id = stored.base.id().clone();
            e.install(now, &id, Some(stored), FileKind::Json);
        }
        e.schedule_batch(now);
        e.update_status(now);
        e
    }

    // ----- residency ------------------------------------------------------

    /// Whether a thread is in memory. Before an input that touches a thread
    /// (`file_read`, `local_op`, a pull naming it) the shell loads the ones
    /// that are not, with [`SyncEngine::load`].
    pub fn is_resident(&self, id: &ThreadId) -> bool {
        self.threads.contains_key(id)
    }

    /// Of these threads, the ones the shell must load first.
    pub fn missing<'a>(&self, ids: impl IntoIterator<Item = &'a ThreadId>) -> Vec<ThreadId> {
        let mut out: Vec<ThreadId> = ids.into_iter().filter(|id| !self.threads.contains_key(*id)).cloned().collect();
        out.sort();
        out.dedup();
        out
    }

    /// The threads a pull answer names.
    pub fn pull_threads(resp: &PullResponse) -> impl Iterator<Item = &ThreadId> {
        resp.snapshots.iter().map(|d| d.id()).chain(resp.changes.iter().map(|c| &c.thread_id))
    }

    /// Brings a thread into memory: what the store holds (None: nothing —
    /// a thread this machine has never seen).
    pub fn load(&mut self, now: Time, id: &ThreadId, stored: Option<StoredThread>) {
        if !self.threads.contains_key(id) {
            self.install(now, id, stored, FileKind::Jsonl);
        }
    }

    fn install(&mut self, now: Time, id: &ThreadId, stored: Option<StoredThread>, kind: FileKind) {
        let Some(stored) = stored else {
            self.threads.insert(id.clone(), Tracked::new(Doc::empty(id.clone()), kind, now));
            return;
        };
        let mut t = Tracked::new(stored.base, stored.file.kind, now);
        t.file = stored.file;
        t.last_sync = stored.last_sync;
        for (seq, op) in stored.ops {
            let (prior, prior_message) = prior_of(&t.local, &op);
            let len = t.local.seq.len();
            t.local.apply(&op, &self.cfg.limits);
            t.aligned &= lands_at_end(&t.local, &op, len);
            t.pending.push(PendingOp { op, seq, absorbed: Vec::new(), prior, prior_message, maybe_sent: true });
            self.next_seq = self.next_seq.max(seq + 1);
        }
        // The view just recomputed may order messages differently from the
        // log written before the restart (its order lived in memory): the
        // log is read whole once and compared.
        if t.file.kind.is_log() && (t.file.dirty || !t.pending.is_empty()) {
            t.file.verify = true;
        }
        if t.file.dirty && t.file.kind.is_log() {
            // What lags was only in memory: compare the thread with the log.
            t.file.changed = t.file_lag().into_iter().collect();
            t.file.meta_changed = true;
        }
        if t.file.lags() {
            self.to_write.insert(id.clone());
        }
        self.threads.insert(id.clone(), t);
    }

    fn tracked(&mut self, now: Time, id: &ThreadId) -> &mut Tracked {
        let t = self.threads.get_mut(id).expect("the shell loads a thread before an input that touches it");
        t.touched = now;
        t
    }

    /// Lets idle threads leave memory, least recently used first, once the
    /// idle ones hold more messages than the budget.
    fn evict(&mut self) {
        let mut idle: Vec<(Time, usize, ThreadId)> = self
            .threads
            .iter()
            .filter(|(id, t)| {
                t.idle() && !self.debounce.is_waiting(id) && !self.conflicts.iter().any(|c| &c.thread_id == *id)
            })
            .map(|(id, t)| (t.touched, t.base.seq.len() + t.local.seq.len(), id.clone()))
            .collect();
        idle.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.2.cmp(&b.2)));
        let mut kept = 0;
        // The thread used last stays whatever its size: a long session the
        // user (or an assistant) is working in must not reload per change.
        for (i, (_, size, id)) in idle.into_iter().enumerate() {
            kept += size;
            if kept > self.cfg.resident_messages && i > 0 {
                self.threads.remove(&id);
                self.thread_status_sent.remove(&id);
                self.to_write.remove(&id);
            }
        }
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }
}

#[cfg(test)]
mod tests;
