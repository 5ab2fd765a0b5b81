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

pub mod file;
pub mod flow;
pub mod monitor;
pub mod poller;
pub mod retry;
pub mod state;

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

/// An operation waiting for the server, with what it was based on (to fill
/// in a conflict's base side).
#[derive(Clone, Debug)]
struct PendingOp {
    op: Op,
    seq: u64,
    /// Sequence numbers of operations merged into this one (`coalesce`).
    absorbed: Vec<u64>,
    prior: Content,
    prior_message: Option<Arc<Message>>,
    /// The server may already have applied it (restored from the store, or
    /// sent under a client id the server forgot): never coalesced away.
    maybe_sent: bool,
}

impl PendingOp {
    fn seqs(&self) -> impl Iterator<Item = u64> + '_ {
        std::iter::once(self.seq).chain(self.absorbed.iter().copied())
    }
}

#[derive(Clone, Debug)]
struct Inflight {
    mutation: u64,
    ops: Vec<PendingOp>,
}

/// A write the shell was asked for and has not reported on.
#[derive(Debug)]
enum PendingWrite {
    Json,
    Records(Vec<Record>),
    Whole(Box<FileView>),
}

#[derive(Debug)]
struct Tracked {
    base: Doc,
    local: Doc,
    file: FileState,
    /// A `.json` read waiting out its debounce (the whole thread, loaded).
    snapshot: Option<Thread>,
    write: Option<PendingWrite>,
    /// A write failed; try again at this time.
    write_retry: Option<Time>,
    /// Applied by the server at the given version, not yet in `base`.
    acked: Vec<(u64, PendingOp)>,
    inflight: Option<Inflight>,
    pending: Vec<PendingOp>,
    backoff_until: Option<Time>,
    last_sync: Option<Time>,
    /// Last input that touched it (which idle threads stay in memory).
    touched: Time,
    /// `local` is `base` plus our own appends at its end, nothing else: a
    /// pull that only confirms them leaves the view as it is.
    aligned: bool,
}

impl Tracked {
    fn new(base: Doc, kind: FileKind, now: Time) -> Self {
        Tracked {
            local: base.clone(),
            base,
            file: FileState::new(kind),
            snapshot: None,
            write: None,
            write_retry: None,
            acked: Vec::new(),
            inflight: None,
            pending: Vec::new(),
            backoff_until: None,
            last_sync: None,
            touched: now,
            aligned: true,
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

    /// Nothing about it waits for anything: it may leave memory.
    fn idle(&self) -> bool {
        self.acked.is_empty()
            && self.inflight.is_none()
            && self.pending.is_empty()
            && self.snapshot.is_none()
            && self.write.is_none()
            && self.write_retry.is_none()
            && self.backoff_until.is_none()
            && self.file.error.is_none()
            && !self.file.lags()
    }

    fn file_save(&self, messages: Vec<(MessageId, Option<crate::model::ContentHash>)>, replace: bool) -> Save {
        let f = &self.file;
        Save::File {
            thread: self.base.id().clone(),
            file: FileSave {
                kind: f.kind,
                messages,
                replace,
                title: f.view.title.clone(),
                env: f.view.env,
                created: f.view.created,
                extra: f.view.extra.clone(),
                stamp: f.stamp,
                own: f.own,
                dirty: f.lags(),
                superseded: f.superseded,
            },
        }
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
    /// The next pull must not be held (a force sync waits for it; a retry
    /// shows the server is well again).
    fresh: bool,
    /// Threads the first sync brought (for its progress report).
    first_sync_threads: BTreeSet<ThreadId>,
    first_sync_shown: bool,
}

#[derive(Debug)]
enum Connectivity {
    Online,
    Offline { probe_at: Time, probe: Option<ReqId>, backoff: Backoff, reason: String, since: Time, told: bool },
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
        if t.file.kind == FileKind::Jsonl && (t.file.dirty || !t.pending.is_empty()) {
            t.file.verify = true;
        }
        if t.file.dirty && t.file.kind == FileKind::Jsonl {
            // What lags was only in memory: compare the thread with the log.
            let view = &t.file.view;
            let mut changed: BTreeSet<MessageId> = t
                .local
                .thread
                .messages
                .iter()
                .filter(|m| view.messages.get(&m.id) != Some(&m.content.hash()))
                .map(|m| m.id.clone())
                .collect();
            changed.extend(view.messages.keys().filter(|id| t.local.get(id).is_none()).cloned());
            t.file.changed = changed;
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

    // ----- inputs: files --------------------------------------------------

    /// Where the shell reads a thread's file from: the stamp of the version
    /// last read or written (for a log, the offset to read on from).
    pub fn file_stamp(&self, id: &ThreadId) -> Option<Stamp> {
        self.threads.get(id).and_then(|t| t.file.stamp)
    }

    /// Logs to read whole once (see `FileState::verify`).
    pub fn to_verify(&self) -> Vec<(ThreadId, FileKind)> {
        self.threads.iter().filter(|(_, t)| t.file.verify).map(|(id, t)| (id.clone(), t.file.kind)).collect()
    }

    /// Whether a `.json` file with this stamp is worth parsing: not our own
    /// write coming back, nor the version already read.
    pub fn wants_read(&self, id: &ThreadId, stamp: &Stamp) -> bool {
        self.threads.get(id).is_none_or(|t| !t.file.known(stamp) || t.file.error.is_some())
    }

    /// Which messages a log already holds (for ids derived from content).
    pub fn file_has(&self, id: &ThreadId, message: &MessageId) -> bool {
        self.threads.get(id).is_some_and(|t| t.file.view.messages.contains_key(message))
    }

    /// A thread file was read. The thread must be loaded.
    pub fn file_read(&mut self, now: Time, id: &ThreadId, kind: FileKind, read: FileRead) {
        let t = self.tracked(now, id);
        if t.file.kind != kind && !matches!(read, FileRead::Gone) {
            if t.local.exists() || t.file.stamp.is_some() {
                let error = format!(
                    "{id}.{} was found, but this thread is kept in {id}.{}; remove one of them",
                    kind.extension(),
                    t.file.kind.extension()
                );
                t.file.error = Some(error);
                self.update_status(now);
                return;
            }
            t.file.kind = kind; // a new thread: the first file seen decides
        }
        match read {
            FileRead::Json { thread, stamp } => {
                let t = self.tracked(now, id);
                let was_bad = t.file.error.take().is_some();
                if t.file.known(&stamp) {
                    t.file.stamp = Some(stamp);
                    if was_bad {
                        self.to_write.insert(id.clone());
                    }
                } else {
                    t.file.stamp = Some(stamp);
                    t.snapshot = Some(thread);
                    // Debounced: rapid rewrites by an assistant become one change.
                    self.debounce.touch(now, id.clone());
                    self.poller.record_activity(now);
                }
            }
            FileRead::Seen { stamp } => {
                let t = self.tracked(now, id);
                if t.file.known(&stamp) {
                    t.file.stamp = Some(stamp);
                    if t.file.error.take().is_some() {
                        self.to_write.insert(id.clone());
                    }
                }
            }
            FileRead::Displaced { thread } => {
                self.absorb_snapshot(now, id);
                self.take_json(now, id, thread, false);
            }
            FileRead::Appended { records, stamp } => self.take_records(now, id, records, stamp),
            FileRead::Replayed { thread, stamp, superseded } => {
                self.take_replay(now, id, thread, stamp, superseded, true)
            }
            FileRead::Checked { thread, stamp, superseded } => {
                self.take_replay(now, id, thread, stamp, superseded, false)
            }
            FileRead::Invalid { error } => {
                // The last good state stays; nothing is written over the file
                // until it can be read again.
                self.tracked(now, id).file.error = Some(error);
            }
            FileRead::Gone => {
                self.debounce.take(id);
                let t = self.tracked(now, id);
                t.file.error = None;
                t.file.stamp = None;
                t.snapshot = None;
                if t.file.kind == FileKind::Jsonl {
                    // A log written anew holds everything.
                    t.file.view = FileView::default();
                    t.file.superseded = 0;
                    t.file.changed.clear();
                }
                let save = self.threads[id].file_save(Vec::new(), true);
                self.actions.push_back(Action::Save(save));
            }
        }
        self.drive(now);
        self.update_status(now);
    }

    /// A write the engine asked for has been performed (or refused).
    pub fn file_written(&mut self, now: Time, id: &ThreadId, result: WriteResult) {
        let t = self.tracked(now, id);
        let Some(write) = t.write.take() else { return };
        match result {
            WriteResult::Written(stamp) => {
                t.file.stamp = Some(stamp);
                t.write_retry = None;
                let mut delta = Vec::new();
                let mut replace = false;
                match write {
                    PendingWrite::Json => {
                        t.file.own = Some(stamp.hash);
                        t.file.needs_compaction = false;
                    }
                    PendingWrite::Records(records) => {
                        for r in &records {
                            file::apply_record(&mut t.file.view, r);
                            if let Some(id) = record_id(r) {
                                delta.push((id.clone(), t.file.view.messages.get(id).copied()));
                            }
                        }
                        t.file.superseded +=
                            records.iter().filter(|r| !matches!(r, Record::Message { .. })).count() as u64;
                    }
                    PendingWrite::Whole(view) => {
                        t.file.view = *view;
                        t.file.superseded = 0;
                        t.file.needs_compaction = false;
                        replace = true;
                        delta = t.file.view.messages.iter().map(|(k, v)| (k.clone(), Some(*v))).collect();
                        delta.sort();
                    }
                }
                // The shell performs a step's writes before any other input:
                // the file now shows the thread as it is.
                t.file.dirty = false;
                t.file.changed.clear();
                t.file.meta_changed = false;
                let save = t.file_save(delta, replace);
                self.actions.push_back(Action::Save(save));
            }
            WriteResult::Changed => {
                // Someone else wrote it: the shell reads it now, and the
                // engine writes the merged thread after that.
                self.to_write.insert(id.clone());
            }
            WriteResult::Failed(e) => {
                t.write_retry = Some(now + WRITE_RETRY);
                self.actions.push_back(Action::Warning(format!("cannot write the file of {id}: {e}")));
            }
        }
        self.drive(now);
        self.update_status(now);
    }

    /// A `.json` file's content becomes operations: what changed from the
    /// last version someone else wrote, applied to the current view.
    ///
    /// `seen`: the writer will go on from this version. Not so for a version
    /// our write displaced: its writer next reads what we put in its place,
    /// so what it added is taken in but not counted as shown (else the next
    /// version, made from ours, would delete it). Nor does a displaced
    /// version delete anything: what its writer had read is unknown, and a
    /// deletion it meant comes again with its next version, read as usual.
    fn take_json(&mut self, now: Time, id: &ThreadId, file: Thread, seen: bool) {
        let t = self.tracked(now, id);
        t.file.error = None;
        let ops = file::diff_file(&t.file.view, &file, &t.local, seen);
        let deletes = ops.iter().filter(|o| matches!(o, Op::Delete { .. })).count();
        if deletes > 0 {
            // Worth a log line: these go for everyone.
            let shown = t.file.view.messages.len();
            self.actions.push_back(Action::Warning(format!(
                "{id}: the file no longer has {deletes} of the {shown} message(s) its writer had shown; deleting them"
            )));
        }
        self.take_ops(now, id, ops);
        let t = self.threads.get_mut(id).expect("tracked");
        let delta = if seen {
            let old = std::mem::replace(&mut t.file.view, FileView::of_thread(&file));
            view_delta(&old.messages, &t.file.view.messages)
        } else {
            Vec::new()
        };
        // The file needs writing when it differs from what the merge keeps
        // (ids filled in, reordered or refused messages, newer messages).
        if t.local.exists() && !same_content(&t.local.thread, &file) {
            t.file.dirty = true;
            self.to_write.insert(id.clone());
        }
        let save = self.threads[id].file_save(delta, false);
        self.actions.push_back(Action::Save(save));
    }

    fn take_records(&mut self, now: Time, id: &ThreadId, records: Vec<Record>, stamp: Stamp) {
        let t = self.tracked(now, id);
        t.file.error = None;
        t.file.stamp = Some(stamp);
        let mut ops = Vec::new();
        let mut delta = Vec::new();
        let mut header = None;
        // What a line without `after` follows: the log's last visible
        // message. The log shows its messages in the view's order (that is
        // what the sidecar's records keep), so that is the view's last
        // message the log holds.
        let visible_end = |t: &Tracked| -> Option<MessageId> {
            let in_log = |m: &&Arc<Message>| t.file.view.messages.contains_key(&m.id);
            t.local.thread.messages.iter().rev().find(in_log).map(|m| m.id.clone())
        };
        let mut end = visible_end(t);
        for r in &records {
            if let Record::Header { created, env, .. } = r
                && !t.local.exists()
            {
                header = Some((*created, env.clone()));
            }
            ops.extend(file::record_ops(&t.file.view, r, &end));
            file::apply_record(&mut t.file.view, r);
            match r {
                Record::Message { message, after } if after.is_none() || after.as_ref() == Some(&end) => {
                    end = Some(message.id.clone());
                }
                Record::Delete { id } if end.as_ref() == Some(id) => end = visible_end(t),
                _ => {}
            }
            if !matches!(r, Record::Message { after: None, .. } | Record::Header { .. }) {
                t.file.superseded += 1;
            }
            if let Some(mid) = record_id(r) {
                delta.push((mid.clone(), t.file.view.messages.get(mid).copied()));
            }
        }
        if let Some((created, env)) = header {
            let mut thread = Thread::new(id.clone(), created);
            thread.env = env;
            thread.title = t.file.view.title.clone();
            ops.splice(0..0, file::diff_file(&FileView::default(), &thread, &t.local, false));
        }
        let touched: Vec<MessageId> = delta.iter().map(|(m, _)| m.clone()).collect();
        self.take_ops(now, id, ops);
        // What the merge kept differently from the log (a refused or
        // conflicting change) is written back.
        let t = self.threads.get_mut(id).expect("tracked");
        for mid in touched {
            if t.local.get(&mid).map(|m| m.content.hash()) != t.file.view.messages.get(&mid).copied() {
                t.file.touch(Some(&mid));
            }
        }
        if t.local.thread.title != t.file.view.title
            || crate::model::ContentHash::of(&t.local.thread.env) != t.file.view.env
        {
            t.file.touch(None);
        }
        if t.file.lags() {
            self.to_write.insert(id.clone());
        }
        self.maybe_compact(id);
        let save = self.threads[id].file_save(delta, false);
        self.actions.push_back(Action::Save(save));
    }

    /// A log read whole: its messages are taken in (a log deletes by record,
    /// never by omission; `take` false: only checked), and whatever the
    /// thread has that the log lacks, or has differently, is written to it.
    fn take_replay(&mut self, now: Time, id: &ThreadId, file: Thread, stamp: Stamp, superseded: u64, take: bool) {
        let t = self.tracked(now, id);
        t.file.error = None;
        t.file.verify = false;
        t.file.stamp = Some(stamp);
        t.file.superseded = superseded;
        if take {
            let ops = file::diff_file(&t.file.view, &file, &t.local, false);
            self.take_ops(now, id, ops);
        }
        let t = self.threads.get_mut(id).expect("tracked");
        let old = std::mem::replace(&mut t.file.view, FileView::of_thread(&file));
        let delta = view_delta(&old.messages, &t.file.view.messages);
        let view = &t.file.view;
        let mut lagging: Vec<MessageId> = t
            .local
            .thread
            .messages
            .iter()
            .filter(|m| view.messages.get(&m.id) != Some(&m.content.hash()))
            .map(|m| m.id.clone())
            .collect();
        // And what the log shows that the thread no longer has (deleted
        // while the log lagged behind): a delete record each.
        lagging.extend(view.messages.keys().filter(|m| t.local.get(m).is_none()).cloned());
        for m in &lagging {
            t.file.touch(Some(m));
        }
        // The messages both hold must be in the same order, or only a
        // rewrite shows the thread's.
        let ours: Vec<&MessageId> =
            t.local.thread.messages.iter().map(|m| &m.id).filter(|m| t.file.view.messages.contains_key(*m)).collect();
        let logs: Vec<&MessageId> = file.messages.iter().map(|m| &m.id).filter(|m| t.local.get(m).is_some()).collect();
        if ours != logs {
            t.file.needs_compaction = true;
            t.file.dirty = true;
        }
        if t.local.exists() && (t.local.thread.title != file.title || t.local.thread.env != file.env) {
            t.file.touch(None);
        }
        if t.file.lags() {
            self.to_write.insert(id.clone());
        }
        self.maybe_compact(id);
        // `delta` holds every entry that changed: not a replacement.
        let save = self.threads[id].file_save(delta, false);
        self.actions.push_back(Action::Save(save));
    }

    fn maybe_compact(&mut self, id: &ThreadId) {
        let t = self.threads.get_mut(id).expect("tracked");
        if t.file.kind == FileKind::Jsonl
            && t.file.superseded > self.cfg.compact_after
            && t.file.superseded > t.local.thread.messages.len() as u64
        {
            t.file.needs_compaction = true;
            self.to_write.insert(id.clone());
        }
    }

    /// Operations read from a file: rejected locally when the server would
    /// refuse them for good (reported, and the file rewritten without them),
    /// dropped when the view already is so, the rest queued. They came from
    /// the file, so it already shows them.
    fn take_ops(&mut self, now: Time, id: &ThreadId, ops: Vec<Op>) {
        let t = &self.threads[id];
        let mut probe: Option<Doc> = None;
        let mut ok = Vec::new();
        let mut refused = Vec::new();
        for op in ops {
            // Usually one operation: decide on the view itself, no copy.
            let outcome = match &mut probe {
                Some(p) => p.apply(&op, &self.cfg.limits),
                None if ok.is_empty() && refused.is_empty() => {
                    decide(&mut &t.local, &op, &self.cfg.limits).expect("infallible")
                }
                None => {
                    let mut p = t.local.clone();
                    for o in &ok {
                        p.apply(o, &self.cfg.limits);
                    }
                    let out = p.apply(&op, &self.cfg.limits);
                    probe = Some(p);
                    out
                }
            };
            match outcome {
                OpOutcome::Rejected { reason } => refused.push((op, reason)),
                // Already so in the view (a message the file shows that the
                // thread has, content it already has): nothing to send, and
                // it must not count as the writer's latest append.
                OpOutcome::Unchanged => {}
                _ => ok.push(op),
            }
        }
        if !ok.is_empty() {
            self.add_ops(now, id, ok, false);
        }
        let t = self.threads.get_mut(id).expect("tracked");
        for (op, reason) in refused {
            if let Op::Append { message, .. } = &op {
                t.file.touch(Some(&message.id));
            }
            self.to_write.insert(id.clone());
            let op = elide_op(&op);
            self.actions.push_back(Action::Rollback { thread_id: id.clone(), reason, ops: vec![op] });
        }
        self.schedule_batch(now);
    }

    /// For tests and the simulator: an assistant rewrote a `.json` file.
    pub fn local_snapshot(&mut self, now: Time, thread: Thread) {
        let id = thread.id.clone();
        if !self.threads.contains_key(&id) {
            self.load(now, &id, None);
            self.threads.get_mut(&id).expect("loaded").file.kind = FileKind::Json;
        }
        let stamp = json_stamp(&thread);
        self.file_read(now, &id, FileKind::Json, FileRead::Json { thread, stamp });
    }

    /// A change made through the sidecar: applied locally at once
    /// (optimistic), synced in the background, rolled back if refused. A
    /// thread it names must be loaded.
    pub fn local_op(&mut self, now: Time, thread: Option<&ThreadId>, op: LocalOp) -> Result<LocalResult, String> {
        if let Some(id) = thread {
            if !self.threads.contains_key(id) {
                return Err(format!("no thread {id}"));
            }
            self.absorb_snapshot(now, id);
        }
        let (id, ops, message_id) = match (&op, thread) {
            (LocalOp::CreateThread { title }, _) => {
                let id = ThreadId::generate(now.as_millis(), self.rng.random());
                let mut ops = vec![Op::Create { created: now.as_millis() as i64, env: crate::model::empty_object() }];
                if !title.is_empty() {
                    ops.push(Op::SetTitle { title: title.clone(), base: String::new() });
                }
                // Threads made here are logs: every later change is an append.
                self.threads.insert(id.clone(), Tracked::new(Doc::empty(id.clone()), FileKind::Jsonl, now));
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
                    content: Content::new(content.clone()),
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
            (LocalOp::Restore { message }, Some(id)) => {
                let from = message.id.clone();
                if self.is_deleted(id, &from) != Some(true) {
                    return Err(format!("message {from} of {id} is not deleted"));
                }
                // Its old id stays deleted (appends are idempotent by id).
                let mid = MessageId::generate(now.as_millis(), self.rng.random());
                let mut m = message.clone();
                m.id = mid.clone();
                m.extra.insert("restoredFrom".into(), Value::String(from.to_string()));
                (id.clone(), vec![Op::Restore { message: Arc::new(m), of: from }], Some(mid))
            }
        };
        // Refuse what the server would refuse, before anything is written.
        let local = &self.threads[&id].local;
        let refused = if ops.len() == 1 {
            match decide(&mut &*local, &ops[0], &self.cfg.limits).expect("infallible") {
                OpOutcome::Rejected { reason } => Some(reason),
                _ => None,
            }
        } else {
            let mut probe = local.clone();
            ops.iter().find_map(|op| match probe.apply(op, &self.cfg.limits) {
                OpOutcome::Rejected { reason } => Some(reason),
                _ => None,
            })
        };
        if let Some(reason) = refused {
            if matches!(op, LocalOp::CreateThread { .. }) {
                self.threads.remove(&id);
            }
            return Err(reason);
        }
        self.threads.get_mut(&id).expect("tracked").touched = now;
        self.poller.record_activity(now);
        self.add_ops(now, &id, ops, true);
        let version = self.threads[&id].local.thread.v;
        self.schedule_batch(now);
        self.drive(now);
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
        for (tid, t) in self.threads.iter_mut() {
            if thread.as_ref().is_none_or(|id| id == tid) {
                t.backoff_until = None;
                if t.write_retry.take().is_some() {
                    self.to_write.insert(tid.clone());
                }
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
        if self.threads.contains_key(&c.thread_id) {
            self.absorb_snapshot(now, &c.thread_id);
        }
        if choose == Choice::Local
            && let Some(t) = self.threads.get(&c.thread_id)
            && let Some(op) = c.choose_local(&t.local)
        {
            self.add_ops(now, &c.thread_id, vec![op], true);
            self.schedule_batch(now);
        }
        self.actions.push_back(Action::Save(Save::Conflicts(self.conflicts.clone())));
        self.drive(now);
        self.update_status(now);
        Ok(())
    }

    /// The server URL or token changed: try again at once.
    pub fn credentials_changed(&mut self, now: Time) {
        self.unauthorized = None;
        self.told_unauthorized = false;
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
        if self.uploads.remove(&req) {
            let end = if outcome.is_ok() { "uploaded" } else { "will retry" };
            self.actions.push_back(Action::Progress {
                token: format!("threadsync-push-{req}"),
                step: ProgressStep::End(end.into()),
            });
        }
        match outcome {
            Ok(resp) => self.push_succeeded(now, li, started, bytes, resp),
            Err(f) => self.push_failed(now, li, f),
        }
        self.check_tickets(now);
        self.drive(now);
        self.update_status(now);
    }

    /// A pull was answered. Every thread a successful answer names must be
    /// loaded (see [`SyncEngine::pull_threads`]).
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
                    if !self.pull.synced_once && self.pull.first_sync_shown {
                        let n = self.pull.first_sync_threads.len();
                        self.actions.push_back(Action::Progress {
                            token: "threadsync-first-sync".into(),
                            step: ProgressStep::End(format!("{n} threads")),
                        });
                    }
                    self.pull.synced_once = true;
                    self.pull.first_sync_threads.clear();
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
                self.actions.push_back(Action::Save(Save::Cursor(None)));
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
                        // The retry answers at once, so the error clears as
                        // soon as the server is well (a held one would keep
                        // it on the statusline for minutes).
                        self.pull.fresh = true;
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
        for (id, t) in self.threads.iter_mut() {
            if t.write_retry.is_some_and(|at| at <= now) {
                t.write_retry = None;
                self.to_write.insert(id.clone());
            }
        }
        if let Connectivity::Offline { since, told, .. } = &mut self.net
            && !*told
            && now >= *since + self.cfg.offline_notice
        {
            *told = true;
            let minutes = self.cfg.offline_notice.as_secs().div_ceil(60);
            self.actions.push_back(Action::Notify {
                error: false,
                message: format!(
                    "threadsync: the sync server has been unreachable for {minutes} minutes; changes are kept and will sync when it is back"
                ),
            });
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
        consider(self.threads.values().filter_map(|t| t.write_retry).min());
        if let Connectivity::Offline { since, told: false, .. } = &self.net {
            consider(Some(*since + self.cfg.offline_notice));
        }
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

    /// A loaded thread as the user sees it (content elided).
    pub fn thread(&self, id: &ThreadId) -> Option<&Thread> {
        self.threads.get(id).filter(|t| t.local.exists()).map(|t| &t.local.thread)
    }

    /// A loaded thread as its file shows it: the view plus the file's own
    /// fields (content elided).
    pub fn file_thread(&self, id: &ThreadId) -> Option<Thread> {
        let t = self.threads.get(id).filter(|t| t.local.exists())?;
        let mut thread = t.local.thread.clone();
        thread.extra = t.file.view.extra.clone();
        Some(thread)
    }

    pub fn base(&self, id: &ThreadId) -> Option<&Doc> {
        self.threads.get(id).map(|t| &t.base)
    }

    /// The threads in memory (the rest are in the store).
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

    /// True when nothing is waiting to be sent, confirmed or written.
    pub fn is_idle(&self) -> bool {
        self.debounce.is_empty()
            && self.threads.values().all(|t| {
                t.pending.is_empty()
                    && t.inflight.is_none()
                    && t.acked.is_empty()
                    && t.write.is_none()
                    && (!t.file.lags() || t.file.error.is_some())
            })
            && self.lanes.iter().all(|l| l.outstanding.is_empty())
    }

    /// Whether a loaded thread's message is deleted (Some(true)), there
    /// (Some(false)), or unknown (None).
    pub fn is_deleted(&self, id: &ThreadId, message: &MessageId) -> Option<bool> {
        let t = self.threads.get(id)?;
        if t.local.get(message).is_some() {
            Some(false)
        } else if t.local.deleted.contains(message) {
            Some(true)
        } else {
            None
        }
    }

    /// What the engine knows of a thread's file (diagnostics and tests).
    pub fn file_state(&self, id: &ThreadId) -> Option<&FileState> {
        self.threads.get(id).map(|t| &t.file)
    }

    /// What keeps each busy thread from being idle (diagnostics).
    pub fn busy(&self) -> Vec<String> {
        self.threads
            .iter()
            .filter(|(_, t)| !t.idle())
            .map(|(id, t)| {
                format!(
                    "{id}: pending {} inflight {} acked {} snapshot {} write {:?} retry {:?} error {:?} lags {} (dirty {} changed {} meta {} compact {}) stamp {:?} queued {}",
                    t.pending.len(),
                    t.inflight.is_some(),
                    t.acked.len(),
                    t.snapshot.is_some(),
                    t.write.is_some(),
                    t.write_retry,
                    t.file.error,
                    t.file.lags(),
                    t.file.dirty,
                    t.file.changed.len(),
                    t.file.meta_changed,
                    t.file.needs_compaction,
                    t.file.stamp.map(|s| (s.ino, s.len)),
                    self.to_write.contains(id),
                )
            })
            .collect()
    }

    /// How many threads are in memory.
    pub fn resident_count(&self) -> usize {
        self.threads.len()
    }

    // ----- local changes --------------------------------------------------

    /// A file change still in its debounce window becomes operations now:
    /// the engine is about to change the thread, and must not write over it.
    fn absorb_snapshot(&mut self, now: Time, id: &ThreadId) {
        if self.threads.get(id).is_some_and(|t| t.snapshot.is_some()) {
            self.debounce.take(id);
            self.flush_snapshot(now, id);
        }
    }

    fn flush_snapshot(&mut self, now: Time, id: &ThreadId) {
        let Some(t) = self.threads.get_mut(id) else { return };
        let Some(snapshot) = t.snapshot.take() else { return };
        self.take_json(now, id, snapshot, true);
        self.schedule_batch(now);
    }

    /// Queues operations and applies them to the view. Content enters the
    /// store here and leaves the engine. `to_file`: the change did not come
    /// from the file, so the file must show it.
    fn add_ops(&mut self, now: Time, id: &ThreadId, ops: Vec<Op>, to_file: bool) {
        let mut saves = Vec::new();
        let mut stored = Vec::new();
        let t = self.threads.get_mut(id).expect("caller ensured the thread is tracked");
        // The writer's last append not yet confirmed: new appends follow it.
        let mut last_own = t.all_ops().rev().find_map(|p| match &p.op {
            Op::Append { message, .. } => Some(message.id.clone()),
            _ => None,
        });
        for op in ops {
            let mut op = keep_bodies(id, op, &mut saves);
            if let Op::Append { message, follows, .. } = &mut op {
                if follows.is_none() {
                    follows.clone_from(&last_own);
                }
                last_own = Some(message.id.clone());
            }
            if to_file {
                match &op {
                    Op::Append { message, .. } | Op::Restore { message, .. } => t.file.touch(Some(&message.id)),
                    Op::Edit { id: m, .. } | Op::Delete { id: m, .. } => t.file.touch(Some(m)),
                    Op::Create { .. } | Op::SetTitle { .. } | Op::SetEnv { .. } => t.file.touch(None),
                }
            }
            let (prior, prior_message) = prior_of(&t.local, &op);
            let len = t.local.seq.len();
            t.local.apply(&op, &self.cfg.limits);
            t.aligned &= lands_at_end(&t.local, &op, len);
            stored.push((self.next_seq, op.clone()));
            t.pending.push(PendingOp {
                op,
                seq: self.next_seq,
                absorbed: Vec::new(),
                prior,
                prior_message,
                maybe_sent: false,
            });
            self.next_seq += 1;
        }
        if t.file.lags() {
            self.to_write.insert(id.clone());
        }
        self.poller.record_activity(now);
        self.actions.extend(saves.into_iter().map(Action::Save));
        self.actions.push_back(Action::Save(Save::Ops { thread: id.clone(), add: stored, done: Vec::new() }));
        let t = &self.threads[id];
        self.actions.push_back(updated(&t.local.thread, Origin::Local));
    }

    /// Operations that left the queue for good (confirmed, refused, or
    /// merged away): their rows go.
    fn ops_done(&mut self, id: &ThreadId, done: Vec<u64>) {
        if !done.is_empty() {
            self.actions.push_back(Action::Save(Save::Ops { thread: id.clone(), add: Vec::new(), done }));
        }
    }

    /// Recomputes `local` as `base` plus every unconfirmed change, and marks
    /// what the file must show differently.
    fn rebase(&mut self, now: Time, id: &ThreadId, origin: Origin) {
        let limits = self.cfg.limits;
        let t = self.threads.get_mut(id).expect("tracked");
        t.touched = now;
        let mut local = t.base.clone();
        let mut aligned = true;
        for p in t.all_ops() {
            let len = local.seq.len();
            local.apply(&p.op, &limits);
            aligned &= lands_at_end(&local, &p.op, len);
        }
        t.aligned = aligned;
        if local == t.local {
            return;
        }
        let old = std::mem::replace(&mut t.local, local);
        let changed_content = !same_content(&old.thread, &t.local.thread);
        if changed_content {
            mark_changes(&mut t.file, &old, &t.local);
            if t.file.lags() {
                self.to_write.insert(id.clone());
            }
            self.actions.push_back(updated(&self.threads[id].local.thread, origin));
        }
    }

    /// The base moved by `effects` and nothing is unconfirmed: the same
    /// effects move the view, at the cost of the change.
    fn fast_forward(&mut self, id: &ThreadId, effects: &[Effect]) {
        let t = self.threads.get_mut(id).expect("tracked");
        t.aligned = true;
        for e in effects {
            if t.local.apply_effect(e).is_err() {
                // Cannot happen while local == base; recover the slow way.
                t.local = t.base.clone();
                t.file.dirty = true;
                t.file.needs_compaction = true;
                break;
            }
            match e {
                Effect::Insert { message, .. } => t.file.touch(Some(&message.id)),
                Effect::Edit { id, .. } | Effect::Delete { id } => t.file.touch(Some(id)),
                Effect::Create { .. } | Effect::Title { .. } | Effect::Env { .. } => t.file.touch(None),
            }
        }
        if t.file.lags() {
            self.to_write.insert(id.clone());
        }
    }

    /// Asks for the writes of threads whose file lags behind them. A thread
    /// whose file cannot be written now (a write in flight, an unreadable
    /// file, an assistant's change waiting out its debounce) stays queued.
    fn write_files(&mut self) {
        let queued: Vec<ThreadId> = self.to_write.iter().cloned().collect();
        for id in queued {
            let Some(t) = self.threads.get_mut(&id) else {
                self.to_write.remove(&id);
                continue;
            };
            if !t.file.lags() || !t.local.exists() {
                self.to_write.remove(&id);
                continue;
            }
            if t.write.is_some() || t.file.error.is_some() || t.snapshot.is_some() || t.write_retry.is_some() {
                continue;
            }
            self.to_write.remove(&id);
            // The whole thread only for a whole-file write: an append costs
            // the size of the change.
            let whole = |t: &Tracked| {
                let mut thread = t.local.thread.clone();
                thread.extra = t.file.view.extra.clone();
                thread
            };
            let (write, pending) = match (t.file.kind, t.file.stamp) {
                (FileKind::Json, expect) => (FileWrite::Json { thread: whole(t), expect }, PendingWrite::Json),
                (FileKind::Jsonl, None) => {
                    let thread = whole(t);
                    let view = FileView::of_thread(&thread);
                    (FileWrite::Create { records: threadlog::compacted(&thread) }, PendingWrite::Whole(Box::new(view)))
                }
                (FileKind::Jsonl, Some(expect)) if t.file.needs_compaction => {
                    let thread = whole(t);
                    let view = FileView::of_thread(&thread);
                    (FileWrite::Compact { thread, expect }, PendingWrite::Whole(Box::new(view)))
                }
                (FileKind::Jsonl, Some(expect)) => {
                    let records = file::log_records(&t.file.view, &t.local, &t.file.changed, t.file.meta_changed);
                    if records.is_empty() {
                        t.file.dirty = false;
                        t.file.changed.clear();
                        t.file.meta_changed = false;
                        continue;
                    }
                    (FileWrite::Append { records: records.clone(), expect }, PendingWrite::Records(records))
                }
            };
            t.write = Some(pending);
            // Saved as lagging first: a crash before the write leaves the
            // thread marked, and the restarted sidecar writes it.
            let save = t.file_save(Vec::new(), false);
            self.actions.push_back(Action::Save(save));
            self.actions.push_back(Action::WriteFile { thread_id: id, write });
        }
    }

    // ----- pushing --------------------------------------------------------

    fn schedule_batch(&mut self, now: Time) {
        if self.batch_at.is_some() {
            return;
        }
        // Nothing on the wire: the change goes now, however recent the last
        // push (a reply that follows a message closely must not wait out a
        // window); changes made while a push is out collect until the
        // window ends or it is answered.
        let quiet = self.lanes.iter().all(|l| l.inflight.is_none() && l.outstanding.is_empty());
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
        self.write_files();
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
            let before: Vec<u64> = t.pending.iter().flat_map(PendingOp::seqs).collect();
            let ops = coalesce(std::mem::take(&mut t.pending));
            // Rows of merged operations stay (replaying them merges them
            // again); rows of operations coalescing dropped go.
            let still: BTreeSet<u64> = ops.iter().flat_map(PendingOp::seqs).collect();
            let dropped: Vec<u64> = before.into_iter().filter(|s| !still.contains(s)).collect();
            let mutation = lane.next_id;
            lane.next_id += 1;
            lane.outstanding.push(Mutation {
                id: mutation,
                thread_id: id.clone(),
                ops: ops.iter().map(|p| p.op.clone()).collect(),
            });
            t.inflight = Some(Inflight { mutation, ops });
            self.ops_done(&id, dropped);
        }
    }

    fn send(&mut self, now: Time, li: usize) {
        let req = self.next_req;
        self.next_req += 1;
        let lane = &mut self.lanes[li];
        let take = if lane.one_at_a_time { 1 } else { lane.outstanding.len() };
        let body = PushRequest { client_id: lane.client.clone(), mutations: lane.outstanding[..take].to_vec() };
        let bytes = body.mutations.iter().flat_map(|m| &m.ops).map(Op::size).sum();
        lane.inflight = Some((req, now, bytes));
        lane.retry_at = None;
        let timeout = self.cfg.request_timeout + Duration::from_millis((bytes / 10_000) as u64);
        if bytes > LARGE_PUSH {
            self.uploads.insert(req);
            self.actions.push_back(Action::Progress {
                token: format!("threadsync-push-{req}"),
                step: ProgressStep::Begin(format!("threadsync: uploading {:.1} MB", bytes as f64 / 1e6)),
            });
        }
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
            let mut dropped = false;
            let mut done = Vec::new();
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
                    } else {
                        done.extend(inflight.ops.iter().flat_map(PendingOp::seqs));
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
                                dropped = true;
                                done.extend(p.seqs());
                                let c = make_conflict(&mut self.rng, now, &m.thread_id, conflict.clone(), &p);
                                self.conflicts.push(c);
                            }
                            Some(OpResult::Rejected { reason }) => {
                                dropped = true;
                                done.extend(p.seqs());
                                reasons.push(reason.clone());
                                refused.push(p.op);
                            }
                            _ if r.version > t.base.thread.v => t.acked.push((r.version, p)),
                            _ => done.extend(p.seqs()),
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
            self.ops_done(&m.thread_id, done);
            // Dropping refused or conflicting changes changes what the user sees.
            if dropped {
                self.rebase(now, &m.thread_id, Origin::Remote);
            }
        }
        if conflicts > 0 {
            self.actions.push_back(Action::Save(Save::Conflicts(self.conflicts.clone())));
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
                let mut done = Vec::new();
                if let Some(t) = self.threads.get_mut(&m.thread_id) {
                    if let Some(i) = t.inflight.take() {
                        done.extend(i.ops.iter().flat_map(PendingOp::seqs));
                    }
                    t.backoff_until = Some(now + self.cfg.thread_backoff);
                }
                self.actions.push_back(Action::Rollback {
                    thread_id: m.thread_id.clone(),
                    reason: f.describe(),
                    ops: m.ops,
                });
                self.ops_done(&m.thread_id, done);
                self.rebase(now, &m.thread_id, Origin::Remote);
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
        // A first sync pages through whole threads: show it.
        if !self.pull.synced_once && !self.pull.first_sync_shown && !matches!(self.cursor, Some(Cursor::Log(_))) {
            self.pull.first_sync_shown = true;
            self.actions.push_back(Action::Progress {
                token: "threadsync-first-sync".into(),
                step: ProgressStep::Begin("threadsync: first sync".into()),
            });
        }
        self.actions.push_back(Action::Pull { req, cursor: self.cursor.clone(), wait, timeout });
    }

    fn apply_pull(&mut self, now: Time, resp: PullResponse) {
        let mut touched: BTreeSet<ThreadId> = BTreeSet::new();
        // Per thread: the base's length before this pull, and its effects
        // (with where a mid-thread insert lands).
        let mut effects: BTreeMap<ThreadId, (usize, Vec<Effect>)> = BTreeMap::new();
        let mut between: BTreeMap<ThreadId, Vec<state::Between>> = BTreeMap::new();
        let mut replaced: BTreeSet<ThreadId> = BTreeSet::new();
        let mut saves = Vec::new();
        for doc in resp.snapshots {
            let id = doc.id().clone();
            if !self.pull.synced_once {
                self.pull.first_sync_threads.insert(id.clone());
            }
            let t = self.threads.get_mut(&id).expect("the shell loads the threads a pull names");
            if doc.thread.v >= t.base.thread.v {
                let doc = keep_doc_bodies(&doc, &t.local, &mut saves);
                saves.push(Save::Base {
                    thread: id.clone(),
                    change: BaseChange::Replace { doc: Box::new(doc.clone()) },
                });
                t.base = doc;
                effects.remove(&id);
                between.remove(&id);
                replaced.insert(id.clone());
            }
            touched.insert(id);
        }
        let mut broken = None;
        for c in resp.changes {
            if !self.pull.synced_once {
                self.pull.first_sync_threads.insert(c.thread_id.clone());
            }
            let t = self.threads.get_mut(&c.thread_id).expect("the shell loads the threads a pull names");
            if c.version <= t.base.thread.v {
                continue;
            }
            let effect = keep_effect_body(&c.thread_id, c.effect, &t.local, &mut saves);
            let len = t.base.seq.len();
            let place = match &effect {
                Effect::Insert { index, .. } if *index < len => {
                    Some((index.checked_sub(1).map(|i| t.base.seq[i].clone()), t.base.seq[*index].clone()))
                }
                _ => None,
            };
            let applied = if c.version == t.base.thread.v + 1 {
                t.base.apply_effect(&effect)
            } else {
                Err(format!("expected version {} of {}, got {}", t.base.thread.v + 1, c.thread_id, c.version))
            };
            if let Err(e) = applied {
                broken = Some(e);
                break;
            }
            effects.entry(c.thread_id.clone()).or_insert_with(|| (len, Vec::new())).1.push(effect);
            between.entry(c.thread_id.clone()).or_default().push(place);
            touched.insert(c.thread_id);
        }
        self.actions.extend(saves.into_iter().map(Action::Save));
        for (id, (_, list)) in &effects {
            let version = self.threads[id].base.thread.v;
            let between = between.remove(id).unwrap_or_default();
            let change = BaseChange::Effects { effects: list.clone(), between, version };
            self.actions.push_back(Action::Save(Save::Base { thread: id.clone(), change }));
        }
        for id in &touched {
            let t = &self.threads[id];
            // Decide how the view follows before confirmed changes leave the queue.
            let had_ops = !t.acked.is_empty() || !t.pending.is_empty() || t.inflight.is_some();
            let path = match effects.get(id) {
                _ if replaced.contains(id) => Follow::Rebase,
                Some((_, list)) if !had_ops => Follow::Forward(list.clone()),
                Some((len, list)) if confirms_own(t, *len, list) => Follow::Keep,
                _ => Follow::Rebase,
            };
            let t = self.threads.get_mut(id).expect("touched");
            t.touched = now;
            t.last_sync = Some(now);
            let v = t.base.thread.v;
            let mut done = Vec::new();
            t.acked.retain(|(version, p)| {
                let keep = *version > v;
                if !keep {
                    done.extend(p.seqs());
                }
                keep
            });
            self.ops_done(id, done);
            match path {
                // Nothing was unconfirmed: the view is the base, moved the same way.
                Follow::Forward(list) => {
                    self.fast_forward(id, &list);
                    self.actions.push_back(updated(&self.threads[id].local.thread, Origin::Remote));
                }
                // Only our own appends came back, where the view has them.
                Follow::Keep => {}
                Follow::Rebase => self.rebase(now, id, Origin::Remote),
            }
        }
        let cursor = if let Some(e) = broken {
            // Our copy disagrees with the log: start over from a snapshot.
            self.actions.push_back(Action::Warning(format!("out of step with the server ({e}); refetching")));
            None
        } else {
            Some(resp.cursor)
        };
        if cursor != self.cursor {
            self.cursor = cursor;
            self.actions.push_back(Action::Save(Save::Cursor(self.cursor.clone())));
        }
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
                self.net = Connectivity::Offline {
                    probe_at: now + delay,
                    probe: None,
                    backoff,
                    reason: f.describe(),
                    since: now,
                    told: false,
                };
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
        let why = f.describe();
        if !self.told_unauthorized {
            // Said once per token: the statusline keeps saying it after.
            self.told_unauthorized = true;
            self.actions.push_back(Action::Notify {
                error: true,
                message: format!("threadsync: the server refused our token ({why}); set a valid token"),
            });
        }
        self.unauthorized = Some(why);
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
        let state = if t.file.error.is_some() {
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
            error: t.file.error.clone(),
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
            self.threads.values().find_map(|t| t.file.error.as_ref().map(|e| format!("{}: {e}", t.base.thread.id)));
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
    /// Then lets idle threads go.
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
        // A file that lags is either being written, waiting for something
        // that will queue it again, or queued.
        debug_assert!(
            self.threads.iter().all(|(id, t)| !t.file.lags()
                || !t.local.exists()
                || t.write.is_some()
                || t.write_retry.is_some()
                || t.file.error.is_some()
                || t.snapshot.is_some()
                || self.to_write.contains(id)),
            "a lagging file is not queued for writing: {:?}",
            self.busy()
        );
        let s = self.compute_status();
        if self.status_sent.as_ref() != Some(&s) && self.status_throttle.on_event(now) {
            self.emit_status();
        }
        self.evict();
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

/// The message a record is about.
fn record_id(r: &Record) -> Option<&MessageId> {
    match r {
        Record::Message { message, .. } => Some(&message.id),
        Record::Edit { id, .. } | Record::Delete { id } => Some(id),
        _ => None,
    }
}

/// The entries of a file view that changed from `old` to `new`.
fn view_delta(
    old: &HashMap<MessageId, crate::model::ContentHash>,
    new: &HashMap<MessageId, crate::model::ContentHash>,
) -> Vec<(MessageId, Option<crate::model::ContentHash>)> {
    let mut out: Vec<_> = new
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), Some(*v)))
        .chain(old.keys().filter(|k| !new.contains_key(*k)).map(|k| (k.clone(), None)))
        .collect();
    out.sort();
    out
}

/// Marks in `file` what differs between two versions of the view: changed
/// or removed messages, title and env, and an order a log cannot show by
/// appending.
fn mark_changes(file: &mut FileState, old: &Doc, new: &Doc) {
    let before: HashMap<&MessageId, (usize, crate::model::ContentHash)> =
        old.thread.messages.iter().enumerate().map(|(i, m)| (&m.id, (i, m.content.hash()))).collect();
    let mut last_common = None;
    let mut seen: HashSet<&MessageId> = HashSet::with_capacity(new.thread.messages.len());
    for m in &new.thread.messages {
        seen.insert(&m.id);
        match before.get(&m.id) {
            Some((i, h)) => {
                if *h != m.content.hash() {
                    file.touch(Some(&m.id));
                }
                // Messages both versions hold must keep their relative order
                // for a log to show the new one by appending.
                if last_common.is_some_and(|l| *i < l) && file.kind == FileKind::Jsonl {
                    file.needs_compaction = true;
                    file.dirty = true;
                }
                last_common = Some(*i);
            }
            None => file.touch(Some(&m.id)),
        }
    }
    for m in &old.thread.messages {
        if !seen.contains(&m.id) {
            file.touch(Some(&m.id));
        }
    }
    if old.thread.title != new.thread.title || old.thread.env != new.thread.env {
        file.touch(None);
    }
    if file.kind == FileKind::Json {
        file.changed.clear();
        file.meta_changed = false;
        file.dirty = true;
    }
}

/// How a thread's view follows a pull.
enum Follow {
    Forward(Vec<Effect>),
    Keep,
    Rebase,
}

/// The pull's effects on a thread (`len`: its base's length before them)
/// are exactly its oldest unconfirmed appends, landing at the end of the
/// base in order — where the view already has them.
fn confirms_own(t: &Tracked, len: usize, effects: &[Effect]) -> bool {
    if !t.aligned {
        return false;
    }
    let mut own = t.all_ops().map(|p| &p.op);
    effects.iter().enumerate().all(|(j, e)| {
        let (Effect::Insert { index, message, .. }, Some(Op::Append { message: m, .. })) = (e, own.next()) else {
            return false;
        };
        message.id == m.id && *index == len + j && t.local.seq.get(len + j) == Some(&m.id)
    })
}

/// After `op` was applied to `local` (which had `len` entries): it was an
/// append that landed at the end, or an append of a message already there.
fn lands_at_end(local: &Doc, op: &Op, len: usize) -> bool {
    match op {
        Op::Append { message, .. } => {
            local.seq.len() == len || (local.seq.len() == len + 1 && local.seq.last() == Some(&message.id))
        }
        _ => false,
    }
}

fn prior_of(local: &Doc, op: &Op) -> (Content, Option<Arc<Message>>) {
    match op {
        Op::SetTitle { base, .. } => (Content::new(Value::String(base.clone())), None),
        Op::SetEnv { .. } => (Content::new(local.thread.env.clone()), None),
        Op::Edit { id, .. } | Op::Delete { id, .. } => {
            let m = local.get(id).cloned();
            (m.as_ref().map_or_else(|| Content::new(Value::Null), |m| m.content.clone()), m)
        }
        Op::Create { .. } | Op::Append { .. } | Op::Restore { .. } => (Content::new(Value::Null), None),
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

/// An operation with its content elided (what the engine keeps).
fn elide_op(op: &Op) -> Op {
    match op {
        Op::Append { message, after, follows } if !message.content.is_elided() => {
            Op::Append { message: Arc::new(message.elided()), after: after.clone(), follows: follows.clone() }
        }
        Op::Restore { message, of } if !message.content.is_elided() => {
            Op::Restore { message: Arc::new(message.elided()), of: of.clone() }
        }
        Op::Edit { id, content, base } if !content.is_elided() => {
            Op::Edit { id: id.clone(), content: content.elided(), base: *base }
        }
        other => other.clone(),
    }
}

/// Hands loaded content in `op` to the store and returns the op elided.
fn keep_bodies(thread: &ThreadId, op: Op, saves: &mut Vec<Save>) -> Op {
    match &op {
        Op::Append { message, .. } | Op::Restore { message, .. } if !message.content.is_elided() => {
            saves.push(Save::Body { thread: thread.clone(), id: message.id.clone(), content: message.content.clone() })
        }
        Op::Edit { id, content, .. } if !content.is_elided() => {
            saves.push(Save::Body { thread: thread.clone(), id: id.clone(), content: content.clone() })
        }
        _ => {}
    }
    elide_op(&op)
}

/// An effect from the server, elided; its body is stored unless the view
/// already has that very content (our own change coming back).
fn keep_effect_body(thread: &ThreadId, e: Effect, local: &Doc, saves: &mut Vec<Save>) -> Effect {
    let known = |id: &MessageId, c: &Content| local.get(id).is_some_and(|m| m.content.hash() == c.hash());
    match e {
        Effect::Insert { index, after, message } => {
            if !message.content.is_elided() && !known(&message.id, &message.content) {
                saves.push(Save::Body {
                    thread: thread.clone(),
                    id: message.id.clone(),
                    content: message.content.clone(),
                });
            }
            Effect::Insert { index, after, message: Arc::new(message.elided()) }
        }
        Effect::Edit { id, content } => {
            if !content.is_elided() && !known(&id, &content) {
                saves.push(Save::Body { thread: thread.clone(), id: id.clone(), content: content.clone() });
            }
            Effect::Edit { id, content: content.elided() }
        }
        other => other,
    }
}

/// A snapshot from the server, elided, its bodies stored.
fn keep_doc_bodies(doc: &Doc, local: &Doc, saves: &mut Vec<Save>) -> Doc {
    let mut doc = doc.clone();
    let id = doc.id().clone();
    for m in &mut doc.thread.messages {
        if m.content.is_elided() {
            continue;
        }
        if local.get(&m.id).is_none_or(|x| x.content.hash() != m.content.hash()) {
            saves.push(Save::Body { thread: id.clone(), id: m.id.clone(), content: m.content.clone() });
        }
        *m = Arc::new(m.elided());
    }
    doc
}

/// A stamp for a thread handed over in memory (tests and the simulator):
/// the hash of its serialised form.
pub fn json_stamp(t: &Thread) -> Stamp {
    let bytes = serde_json::to_vec(t).unwrap_or_default();
    Stamp { ino: 0, len: bytes.len() as u64, mtime_ns: 0, hash: file::hash64(&bytes) }
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
                if let Some(prev) = out.iter_mut().rev().find(|q| matches!(q.op, Op::SetTitle { .. }) && !q.maybe_sent)
                {
                    if let Op::SetTitle { title: t, .. } = &mut prev.op {
                        t.clone_from(title);
                    }
                    prev.absorbed.extend(p.seqs());
                    continue;
                }
            }
            Op::SetEnv { env, .. } => {
                if let Some(prev) = out.iter_mut().rev().find(|q| matches!(q.op, Op::SetEnv { .. }) && !q.maybe_sent) {
                    if let Op::SetEnv { env: e, .. } = &mut prev.op {
                        e.clone_from(env);
                    }
                    prev.absorbed.extend(p.seqs());
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
                if let Some(q) = earlier {
                    match &mut q.op {
                        Op::Append { message, .. } => Arc::make_mut(message).content = content.clone(),
                        Op::Edit { content: c, .. } => c.clone_from(content),
                        _ => unreachable!("filtered above"),
                    }
                    q.absorbed.extend(p.seqs());
                    continue;
                }
            }
            Op::Delete { id, .. } => {
                let appended = out
                    .iter()
                    .position(|q| !q.maybe_sent && matches!(&q.op, Op::Append { message, .. } if &message.id == id));
                // Only when nothing queued after it was anchored to it.
                let anchored = out.iter().any(|q| matches!(&q.op, Op::Append { after: Some(a), .. } if a == id));
                if let (Some(i), false) = (appended, anchored) {
                    // Neither is sent; both rows go (`compose` sees them missing).
                    out.remove(i);
                    continue;
                }
            }
            Op::Create { .. } | Op::Append { .. } | Op::Restore { .. } => {}
        }
        out.push(p);
    }
    out
}

#[cfg(test)]
mod tests;
