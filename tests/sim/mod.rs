//! A deterministic simulator: K sync engines and the server core on a virtual
//! clock, with seeded faults on the network, the server and the clients.
//!
//! Everything that happens is a function of the seed, so a failing seed
//! replays exactly (`SIM_SEED=<n> cargo test --test simulation replay -- --ignored`).

#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use threadsync::client::mem::{MemFiles, MemState};
use threadsync::client::{Client as Node, StepError};
use threadsync::engine::file::FileKind;
use threadsync::engine::retry::Failure;
use threadsync::engine::{Action, EngineConfig, LocalOp, PollMode, PullOutcome, ReqId, Restored, SyncEngine};
use threadsync::merge::{Doc, Limits};
use threadsync::model::{Message, MessageId, Thread, ThreadId};
use threadsync::server::store::MemStore;
use threadsync::server::{self, PullError, PullLimits, TeamId};
use threadsync::time::Time;
use threadsync::wire::{Cursor, PullResponse, PushRequest, PushResponse};

/// Fault probabilities, per request unless said otherwise.
#[derive(Clone, Debug)]
pub struct Faults {
    pub drop_request: f64,
    pub drop_response: f64,
    pub duplicate: f64,
    pub server_error: f64,
    pub too_many: f64,
    /// One-way network delay range, ms.
    pub delay: (u64, u64),
    /// Per second of virtual time: a client is partitioned / crashes, the
    /// server crashes.
    pub partition_rate: f64,
    pub client_crash_rate: f64,
    pub server_crash_rate: f64,
    /// A client crash may land between the actions of one step.
    pub torn_steps: bool,
    /// Per pull: the server compacts its log first (old cursors must refetch).
    pub compact: f64,
}

impl Faults {
    pub fn none() -> Self {
        Faults {
            drop_request: 0.0,
            drop_response: 0.0,
            duplicate: 0.0,
            server_error: 0.0,
            too_many: 0.0,
            delay: (1, 5),
            partition_rate: 0.0,
            client_crash_rate: 0.0,
            server_crash_rate: 0.0,
            torn_steps: false,
            compact: 0.0,
        }
    }

    pub fn random(rng: &mut ChaCha8Rng) -> Self {
        Faults {
            drop_request: rng.random_range(0.0..0.1),
            drop_response: rng.random_range(0.0..0.1),
            duplicate: rng.random_range(0.0..0.05),
            server_error: rng.random_range(0.0..0.08),
            too_many: rng.random_range(0.0..0.03),
            delay: (1, rng.random_range(2..400)),
            partition_rate: rng.random_range(0.0..0.03),
            client_crash_rate: rng.random_range(0.0..0.02),
            server_crash_rate: rng.random_range(0.0..0.01),
            torn_steps: true,
            compact: rng.random_range(0.0..0.02),
        }
    }
}

enum Req {
    Push(PushRequest),
    Pull { cursor: Option<Cursor>, wait: Option<Duration> },
    Probe,
}

enum Resp {
    Push(Result<PushResponse, Failure>),
    Pull(PullOutcome),
    Probe(Result<(), Failure>),
}

enum Event {
    /// A request reaches the server.
    Arrive {
        client: usize,
        epoch: u64,
        req_id: ReqId,
        req: Req,
        deadline: Time,
        replay: bool,
    },
    /// An answer (or the client's own timeout) reaches a client.
    Answer {
        client: usize,
        epoch: u64,
        req_id: ReqId,
        resp: Resp,
    },
    ServerUp,
    ClientRestart {
        client: usize,
    },
    Heal {
        client: usize,
    },
}

pub struct Client {
    /// The engine with its state store and thread files (the real sidecar's
    /// logic, on in-memory models). The store and files outlive a crash.
    pub node: Node<MemState, MemFiles>,
    pub up: bool,
    epoch: u64,
    partitioned: bool,
    /// Requests whose answers are ignored (cancelled pulls).
    cancelled: BTreeSet<ReqId>,
    pub sync_done: Vec<(u64, Result<(), String>)>,
    pub statuses: Vec<threadsync::engine::Status>,
    /// What the assistant last read of each `.json` thread: it may write
    /// back that older read later (with its new message).
    stale: BTreeMap<ThreadId, Thread>,
}

impl Client {
    pub fn partitioned_for_test(&mut self, on: bool) {
        self.partitioned = on;
    }
}

pub struct Sim {
    pub now: Time,
    pub rng: ChaCha8Rng,
    pub seed: u64,
    pub faults: Faults,
    pub cfg: EngineConfig,
    pub store: MemStore,
    pub team: TeamId,
    pub limits: Limits,
    /// Small by default, so that seeded runs exercise paging.
    pub pull_limits: PullLimits,
    server_up: bool,
    pub clients: Vec<Client>,
    queue: BinaryHeap<Reverse<(Time, u64)>>,
    events: BTreeMap<u64, Event>,
    next_event: u64,
    /// Pulls the server holds: (client, epoch, request, cursor, until).
    held: Vec<(usize, u64, ReqId, Option<Cursor>, Time)>,
    next_engine_seed: u64,
    // Bookkeeping for the invariants.
    pub must_survive: BTreeMap<MessageId, (usize, u64)>,
    pub written_by: BTreeMap<usize, Vec<MessageId>>,
    pub deleted: BTreeSet<MessageId>,
    pub rolled_back: BTreeSet<MessageId>,
    /// Messages of writes that land inside a client's own `.json` write
    /// (`MemFiles::interleaved`): they count once that write happened.
    pub interleaved: BTreeMap<(usize, ThreadId), Vec<MessageId>>,
    pub pushes: u64,
    /// Clients that crashed inside a step (between its commit, its file
    /// writes and its requests). Nothing exempts them from any check: the
    /// state database commits a step before its files are written.
    pub torn: BTreeSet<usize>,
    pub log: Vec<String>,
    counter: u64,
}

impl Sim {
    pub fn new(seed: u64, clients: usize, faults: Faults, cfg: EngineConfig) -> Self {
        let mut sim = Sim {
            now: Time::from_millis(1_700_000_000_000),
            rng: ChaCha8Rng::seed_from_u64(seed),
            seed,
            faults,
            cfg,
            store: MemStore::default(),
            team: TeamId::new("team").unwrap(),
            limits: Limits { max_message_bytes: 4096, ..Limits::default() },
            pull_limits: PullLimits { max_changes: 7, max_snapshots: 2, max_bytes: 6000 },
            server_up: true,
            clients: Vec::new(),
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            next_event: 0,
            held: Vec::new(),
            next_engine_seed: seed.wrapping_mul(1000),
            must_survive: BTreeMap::new(),
            written_by: BTreeMap::new(),
            deleted: BTreeSet::new(),
            rolled_back: BTreeSet::new(),
            interleaved: BTreeMap::new(),
            pushes: 0,
            torn: BTreeSet::new(),
            log: Vec::new(),
            counter: 0,
        };
        sim.cfg.limits = sim.limits;
        for _ in 0..clients {
            let idle = SyncEngine::new(sim.cfg.clone(), 0, sim.now, Restored::default());
            sim.clients.push(Client {
                node: Node::new(idle, MemState::default(), MemFiles::default()),
                up: false,
                epoch: 0,
                partitioned: false,
                cancelled: BTreeSet::new(),
                sync_done: Vec::new(),
                statuses: Vec::new(),
                stale: BTreeMap::new(),
            });
        }
        for c in 0..clients {
            sim.start_client(c);
        }
        sim
    }

    fn trace(&mut self, s: String) {
        if self.log.len() < 100_000 {
            self.log.push(format!("{:?} {s}", self.now));
        }
    }

    fn schedule(&mut self, at: Time, e: Event) {
        let id = self.next_event;
        self.next_event += 1;
        self.events.insert(id, e);
        self.queue.push(Reverse((at, id)));
    }

    fn start_client(&mut self, c: usize) {
        self.next_engine_seed += 1;
        let cl = &mut self.clients[c];
        let restored = cl.node.store.restore();
        cl.node.restart(SyncEngine::new(self.cfg.clone(), self.next_engine_seed, self.now, restored));
        cl.up = true;
        self.trace(format!("client {c} starts"));
        // Read the thread files, as the sidecar does at start.
        let now = self.now;
        let cl = &mut self.clients[c];
        cl.node.recover(now).expect("the memory store loads");
        for id in cl.node.files.ids() {
            let kind = cl.node.files.kind_of(&id).expect("listed");
            cl.node.file_changed(now, &id, kind).expect("the memory store loads");
        }
        self.pump(c);
    }

    fn crash_client(&mut self, c: usize) {
        self.trace(format!("client {c} crashes"));
        let cl = &mut self.clients[c];
        cl.up = false;
        cl.epoch += 1;
        cl.cancelled.clear();
        // What the dead engine still had to do is lost with it.
        while cl.node.engine.poll_action().is_some() {}
        self.held.retain(|h| h.0 != c);
        let at = self.now + Duration::from_millis(self.rng.random_range(100..5_000));
        self.schedule(at, Event::ClientRestart { client: c });
    }

    /// Runs what the client's engine asked for: the disk side through the
    /// client (one transaction per step, then the file writes), the rest
    /// here. With torn steps, the process may die at any point inside a
    /// step: what was done is on disk, the rest is lost. Returns whether the
    /// client is still up.
    pub fn pump(&mut self, c: usize) -> bool {
        if !self.clients[c].up {
            return false;
        }
        let now = self.now;
        let rate = if self.faults.torn_steps { self.faults.client_crash_rate / 50.0 } else { 0.0 };
        let (clients, rng) = (&mut self.clients, &mut self.rng);
        let r = clients[c].node.step(now, &mut |_| rate > 0.0 && rng.random_bool(rate));
        match r {
            Ok(out) => {
                for a in out.actions {
                    self.perform(c, a);
                }
                true
            }
            Err(StepError::Crashed) => {
                self.torn.insert(c);
                self.crash_client(c);
                false
            }
            Err(StepError::Store(e)) => panic!("the memory store failed: {e}"),
        }
    }

    fn perform(&mut self, c: usize, action: Action) {
        let epoch = self.clients[c].epoch;
        match &action {
            Action::Push { req, body, .. } => self
                .trace(format!("client {c} push #{req} {:?}", body.mutations.iter().map(|m| m.id).collect::<Vec<_>>())),
            Action::Pull { req, cursor, wait, .. } => {
                self.trace(format!("client {c} pull #{req} from {cursor:?} wait {wait:?}"))
            }
            Action::Probe { req, .. } => self.trace(format!("client {c} probe #{req}")),
            Action::CancelPull { req } => self.trace(format!("client {c} cancels #{req}")),
            _ => {}
        }
        match action {
            Action::Push { req, body, timeout } => {
                // What leaves the machine carries the content, loaded from the store.
                let body = self.clients[c].node.load_push(&body).expect("bodies are stored before a push");
                self.send(c, epoch, req, Req::Push(body), timeout)
            }
            Action::Pull { req, cursor, wait, timeout } => {
                self.send(c, epoch, req, Req::Pull { cursor, wait }, timeout)
            }
            Action::Probe { req, timeout } => self.send(c, epoch, req, Req::Probe, timeout),
            Action::CancelPull { req } => {
                self.clients[c].cancelled.insert(req);
                self.held.retain(|h| !(h.0 == c && h.2 == req));
            }
            Action::Rollback { ops, reason, .. } => {
                self.trace(format!("client {c} rollback: {reason}"));
                for op in ops {
                    if let threadsync::ops::Op::Append { message, .. } = op {
                        self.rolled_back.insert(message.id.clone());
                    }
                }
            }
            Action::SyncDone { ticket, result } => self.clients[c].sync_done.push((ticket, result)),
            Action::Status(s) => self.clients[c].statuses.push(s),
            Action::Warning(w) => self.trace(format!("client {c} warning: {w}")),
            Action::Save(_) | Action::WriteFile { .. } => unreachable!("the client performs them"),
            Action::ThreadStatus(_)
            | Action::ThreadUpdated { .. }
            | Action::Notify { .. }
            | Action::Progress { .. } => {}
        }
    }

    fn delay(&mut self) -> Duration {
        Duration::from_millis(self.rng.random_range(self.faults.delay.0..=self.faults.delay.1))
    }

    fn send(&mut self, c: usize, epoch: u64, req_id: ReqId, req: Req, timeout: Duration) {
        let deadline = self.now + timeout;
        let fail = |f: Failure, req: &Req| match req {
            Req::Push(_) => Resp::Push(Err(f)),
            Req::Pull { .. } => Resp::Pull(PullOutcome::Failed(f)),
            Req::Probe => Resp::Probe(Err(f)),
        };
        if self.clients[c].partitioned || !self.server_up {
            // Half the time the connection is refused at once, else it hangs.
            let (at, f) = if self.rng.random_bool(0.5) {
                (self.now + self.delay(), Failure::Network("connection refused".into()))
            } else {
                (deadline, Failure::Timeout)
            };
            let resp = fail(f, &req);
            self.schedule(at, Event::Answer { client: c, epoch, req_id, resp });
            return;
        }
        if self.rng.random_bool(self.faults.drop_request) {
            let resp = fail(Failure::Timeout, &req);
            self.schedule(deadline, Event::Answer { client: c, epoch, req_id, resp });
            return;
        }
        if !matches!(req, Req::Probe) {
            if self.rng.random_bool(self.faults.server_error) {
                let f = Failure::Http { status: 503, retry_after: None, message: "unavailable".into() };
                let at = self.now + self.delay();
                self.schedule(at, Event::Answer { client: c, epoch, req_id, resp: fail(f, &req) });
                return;
            }
            if self.rng.random_bool(self.faults.too_many) {
                let f = Failure::Http {
                    status: 429,
                    retry_after: Some(Duration::from_secs(3)),
                    message: "slow down".into(),
                };
                let at = self.now + self.delay();
                self.schedule(at, Event::Answer { client: c, epoch, req_id, resp: fail(f, &req) });
                return;
            }
        }
        if let Req::Push(body) = &req
            && self.rng.random_bool(self.faults.duplicate)
        {
            // The same bytes arrive twice (a proxy retried them).
            let at = self.now + self.delay() + self.delay();
            let dup = Req::Push(body.clone());
            self.schedule(at, Event::Arrive { client: c, epoch, req_id, req: dup, deadline, replay: true });
        }
        let at = self.now + self.delay();
        self.schedule(at, Event::Arrive { client: c, epoch, req_id, req, deadline, replay: false });
    }

    fn answer(&mut self, c: usize, epoch: u64, req_id: ReqId, resp: Resp, deadline: Time) {
        let lost = self.rng.random_bool(self.faults.drop_response);
        let at = self.now + self.delay();
        if lost || at > deadline {
            let f = Failure::Timeout;
            let resp = match resp {
                Resp::Push(_) => Resp::Push(Err(f)),
                Resp::Pull(_) => Resp::Pull(PullOutcome::Failed(f)),
                Resp::Probe(_) => Resp::Probe(Err(f)),
            };
            self.schedule(deadline, Event::Answer { client: c, epoch, req_id, resp });
        } else {
            self.schedule(at, Event::Answer { client: c, epoch, req_id, resp });
        }
    }

    fn server_pull(&mut self, cursor: Option<&Cursor>) -> PullOutcome {
        if self.rng.random_bool(self.faults.compact) {
            let team = self.team.clone();
            self.store.compact(&team, 3);
        }
        match server::pull(self.store.tx(&self.team), cursor, &self.pull_limits) {
            Ok(r) => PullOutcome::Ok(r),
            Err(PullError::Refetch { .. }) => PullOutcome::Refetch,
            Err(PullError::Store(e)) => panic!("memory store failed: {e}"),
        }
    }

    fn arrive(&mut self, c: usize, epoch: u64, req_id: ReqId, req: Req, deadline: Time, replay: bool) {
        if !self.server_up {
            if !replay {
                let resp = match req {
                    Req::Push(_) => Resp::Push(Err(Failure::Network("connection reset".into()))),
                    Req::Pull { .. } => Resp::Pull(PullOutcome::Failed(Failure::Network("connection reset".into()))),
                    Req::Probe => Resp::Probe(Err(Failure::Network("connection reset".into()))),
                };
                self.schedule(self.now, Event::Answer { client: c, epoch, req_id, resp });
            }
            return;
        }
        match req {
            Req::Probe => self.answer(c, epoch, req_id, Resp::Probe(Ok(())), deadline),
            Req::Push(body) => {
                let before = server::Tx::head_seq(self.store.tx(&self.team)).unwrap();
                let resp = server::push(self.store.tx(&self.team), &body, &self.limits).expect("memory store");
                self.pushes += 1;
                self.trace(format!(
                    "server push from {} {:?}: {:?}",
                    body.client_id,
                    body.mutations
                        .iter()
                        .map(|m| (
                            m.id,
                            m.thread_id.as_str(),
                            m.ops
                                .iter()
                                .map(|o| match o {
                                    threadsync::ops::Op::Append { message, after, follows } => format!(
                                        "+{}@{}{}",
                                        message.id,
                                        after.as_ref().map_or("-", |a| a.as_str()),
                                        follows.as_ref().map_or(String::new(), |f| format!("^{f}"))
                                    ),
                                    threadsync::ops::Op::Delete { id, .. } => format!("-{id}"),
                                    threadsync::ops::Op::Edit { id, .. } => format!("~{id}"),
                                    other => format!("{other:?}").chars().take(30).collect(),
                                })
                                .collect::<Vec<_>>()
                        ))
                        .collect::<Vec<_>>(),
                    resp.results.iter().map(|r| r.status).collect::<Vec<_>>()
                ));
                if std::env::var("SIM_DEBUG_THREAD").is_ok() {
                    let want = std::env::var("SIM_DEBUG_THREAD").unwrap();
                    let line = self.store.threads(&self.team).find(|d| d.id().as_str() == want).map(|d| {
                        format!(
                            "  server {want}: {:?}",
                            d.seq
                                .iter()
                                .map(|i| if d.deleted.contains(i) { format!("x{i}") } else { i.to_string() })
                                .collect::<Vec<_>>()
                        )
                    });
                    if let Some(line) = line {
                        self.trace(line);
                    }
                }
                if !replay {
                    self.answer(c, epoch, req_id, Resp::Push(Ok(resp)), deadline);
                }
                let after = server::Tx::head_seq(self.store.tx(&self.team)).unwrap();
                if after != before {
                    self.wake_held();
                }
            }
            Req::Pull { cursor, wait } => {
                let out = self.server_pull(cursor.as_ref());
                let idle = matches!(&out, PullOutcome::Ok(r) if r.changes.is_empty() && r.snapshots.is_empty() && r.up_to_date);
                match wait {
                    Some(w) if idle => {
                        let until = (self.now + w).min(deadline);
                        self.held.push((c, epoch, req_id, cursor, until));
                    }
                    _ => self.answer(c, epoch, req_id, Resp::Pull(out), deadline),
                }
            }
        }
    }

    /// Answers held pulls: the team's log moved.
    fn wake_held(&mut self) {
        let held = std::mem::take(&mut self.held);
        for (c, epoch, req_id, cursor, until) in held {
            let out = self.server_pull(cursor.as_ref());
            self.answer(c, epoch, req_id, Resp::Pull(out), until + Duration::from_secs(10));
        }
    }

    fn expire_held(&mut self) {
        let now = self.now;
        let (due, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held).into_iter().partition(|h| h.4 <= now);
        self.held = keep;
        for (c, epoch, req_id, cursor, _) in due {
            let out = self.server_pull(cursor.as_ref());
            self.answer(c, epoch, req_id, Resp::Pull(out), now + Duration::from_secs(10));
        }
    }

    fn deliver(&mut self, c: usize, epoch: u64, req_id: ReqId, resp: Resp) {
        if self.clients[c].epoch != epoch || self.clients[c].cancelled.remove(&req_id) {
            return;
        }
        let now = self.now;
        let what = match &resp {
            Resp::Push(Ok(_)) | Resp::Probe(Ok(_)) => "ok".to_string(),
            Resp::Pull(PullOutcome::Ok(r)) => {
                format!("ok {} changes to {}", r.changes.len() + r.snapshots.len(), r.cursor)
            }
            Resp::Pull(PullOutcome::Refetch) => "refetch".into(),
            Resp::Push(Err(f)) | Resp::Probe(Err(f)) | Resp::Pull(PullOutcome::Failed(f)) => f.describe(),
        };
        self.trace(format!("client {c} gets #{req_id}: {what}"));
        if !self.clients[c].up {
            return;
        }
        let resp = match resp {
            Resp::Pull(PullOutcome::Ok(r)) => Resp::Pull(PullOutcome::Ok(self.as_author_gets(c, r))),
            other => other,
        };
        let cl = &mut self.clients[c];
        match resp {
            Resp::Push(r) => cl.node.engine.handle_push(now, req_id, r),
            Resp::Pull(r) => cl.node.handle_pull(now, req_id, r),
            Resp::Probe(r) => cl.node.engine.handle_probe(now, req_id, r),
        }
        self.pump(c);
    }

    /// A pull answer as client `c` gets it over HTTP: its own inserts
    /// without their content (the server's `clients=`), which the sidecar
    /// finds in its state or, missing there, fetches from the server.
    fn as_author_gets(&mut self, c: usize, r: PullResponse) -> PullResponse {
        let node = &self.clients[c].node;
        let mut r = r.as_read_by(&node.engine.client_ids());
        let missing = node.missing_bodies(&r);
        let mut fetched = Vec::new();
        for (t, id) in missing {
            let (m, _) =
                server::Tx::kept_message(self.store.tx(&self.team), &t, &id).unwrap().expect("the server kept it");
            fetched.push((t, (*m).clone()));
        }
        self.clients[c].node.fill_bodies(&mut r, &fetched).unwrap();
        r
    }

    /// The next time anything happens.
    fn next_time(&self) -> Option<Time> {
        let mut t = self.queue.peek().map(|Reverse((at, _))| *at);
        if let Some(at) = self.held.iter().map(|h| h.4).min() {
            t = Some(t.map_or(at, |t| t.min(at)));
        }
        for c in &self.clients {
            if let Some(at) = c.up.then(|| c.node.engine.poll_timeout()).flatten() {
                t = Some(t.map_or(at, |t| t.min(at)));
            }
        }
        t
    }

    /// Advances virtual time to `until`, processing everything on the way.
    pub fn run_until(&mut self, until: Time) {
        while let Some(t) = self.next_time() {
            if t > until {
                break;
            }
            self.step_to(t);
        }
        self.now = self.now.max(until);
    }

    fn step_to(&mut self, t: Time) {
        let elapsed = t.saturating_since(self.now).as_secs_f64();
        self.now = self.now.max(t);
        self.random_faults(elapsed);
        self.expire_held();
        while let Some(Reverse((at, id))) = self.queue.peek().copied() {
            if at > self.now {
                break;
            }
            self.queue.pop();
            let Some(event) = self.events.remove(&id) else { continue };
            match event {
                Event::Arrive { client, epoch, req_id, req, deadline, replay } => {
                    self.arrive(client, epoch, req_id, req, deadline, replay)
                }
                Event::Answer { client, epoch, req_id, resp } => self.deliver(client, epoch, req_id, resp),
                Event::ServerUp => {
                    self.trace("server up".into());
                    self.server_up = true;
                }
                Event::ClientRestart { client } => {
                    if !self.clients[client].up {
                        self.start_client(client);
                    }
                }
                Event::Heal { client } => self.clients[client].partitioned = false,
            }
        }
        for c in 0..self.clients.len() {
            let now = self.now;
            let cl = &mut self.clients[c];
            if cl.up && cl.node.engine.poll_timeout().is_some_and(|at| at <= now) {
                cl.node.engine.handle_timeout(now);
                self.pump(c);
            }
        }
    }

    fn random_faults(&mut self, elapsed: f64) {
        if elapsed <= 0.0 {
            return;
        }
        for c in 0..self.clients.len() {
            if !self.clients[c].partitioned && self.rng.random_bool((self.faults.partition_rate * elapsed).min(1.0)) {
                self.trace(format!("client {c} partitioned"));
                self.clients[c].partitioned = true;
                let at = self.now + Duration::from_millis(self.rng.random_range(1_000..60_000));
                self.schedule(at, Event::Heal { client: c });
            }
            if self.clients[c].up && self.rng.random_bool((self.faults.client_crash_rate * elapsed).min(1.0)) {
                self.crash_client(c);
            }
        }
        if self.server_up && self.rng.random_bool((self.faults.server_crash_rate * elapsed).min(1.0)) {
            self.trace("server crashes".into());
            self.server_up = false;
            // Held requests and answers not yet sent die with the process.
            for (c, epoch, req_id, _, _) in std::mem::take(&mut self.held) {
                let resp = Resp::Pull(PullOutcome::Failed(Failure::Network("connection reset".into())));
                self.schedule(self.now, Event::Answer { client: c, epoch, req_id, resp });
            }
            let at = self.now + Duration::from_millis(self.rng.random_range(500..20_000));
            self.schedule(at, Event::ServerUp);
        }
    }

    /// Stops all faults and lets the system settle.
    pub fn heal(&mut self) {
        self.faults = Faults { delay: self.faults.delay, ..Faults::none() };
        for c in 0..self.clients.len() {
            self.clients[c].partitioned = false;
            if !self.clients[c].up {
                self.start_client(c);
            }
        }
        if !self.server_up {
            self.server_up = true;
        }
    }

    // ----- workload -------------------------------------------------------

    pub fn unique(&mut self, c: usize) -> String {
        self.counter += 1;
        format!("c{c}-n{}", self.counter)
    }

    fn node(&mut self, c: usize) -> Option<&mut Node<MemState, MemFiles>> {
        let cl = &mut self.clients[c];
        cl.up.then_some(&mut cl.node)
    }

    /// An append made through the sidecar. Counts as acknowledged only if
    /// the whole step (the stored operation and the file) was done.
    pub fn sidecar_append(&mut self, c: usize, thread: &ThreadId, content: Value) -> Option<MessageId> {
        let now = self.now;
        let r = self.node(c)?.local_op(now, Some(thread), LocalOp::Append { role: "user".into(), content }).ok()?;
        let id = r.message_id.expect("appends return an id");
        self.trace(format!("client {c} appends {id} to {thread}"));
        self.written_by.entry(c).or_default().push(id.clone());
        if self.pump(c) {
            self.must_survive.insert(id.clone(), (c, self.now.as_millis()));
        }
        Some(id)
    }

    pub fn sidecar_create(&mut self, c: usize, title: &str) -> Option<ThreadId> {
        let now = self.now;
        let r = self.node(c)?.local_op(now, None, LocalOp::CreateThread { title: title.into() }).ok()?;
        self.pump(c);
        Some(r.thread_id)
    }

    pub fn sidecar_title(&mut self, c: usize, thread: &ThreadId, title: &str) {
        let now = self.now;
        if let Some(n) = self.node(c) {
            let _ = n.local_op(now, Some(thread), LocalOp::SetTitle { title: title.into() });
            self.pump(c);
        }
    }

    /// An assistant writes a thread's file to hold `thread` (rewriting a
    /// `.json` file, or appending records to a log); the watcher reports it.
    pub fn file_edit(&mut self, c: usize, thread: Thread) {
        self.trace(format!(
            "client {c} file {}: {:?} {:?}",
            thread.id,
            thread.title,
            thread.messages.iter().map(|m| m.id.as_str()).collect::<Vec<_>>()
        ));
        let now = self.now;
        let cl = &mut self.clients[c];
        cl.node.files.assistant_write(&thread);
        if cl.node.files.kind_of(&thread.id) == Some(FileKind::Json) {
            cl.stale.insert(thread.id.clone(), thread.clone());
        }
        self.notice(c, &thread.id, now);
    }

    /// The watcher reports a thread file.
    fn notice(&mut self, c: usize, id: &ThreadId, now: Time) {
        let cl = &mut self.clients[c];
        if !cl.up {
            return;
        }
        if let Some(kind) = cl.node.files.kind_of(id) {
            cl.node.file_changed(now, id, kind).expect("the memory store loads");
            self.pump(c);
        }
    }

    pub fn file(&self, c: usize, id: &ThreadId) -> Option<Thread> {
        self.clients[c].node.files.thread(id)
    }

    /// A new assistant message of client `c`, which must survive. `in_order`:
    /// written after everything this machine wrote before (not so for an
    /// answer to an older read: it belongs after what its writer had read).
    fn assistant_message(&mut self, c: usize, in_order: bool) -> Arc<Message> {
        let text = self.unique(c);
        let id = MessageId::new(format!("f-{text}")).unwrap();
        if in_order {
            self.written_by.entry(c).or_default().push(id.clone());
        }
        self.must_survive.insert(id.clone(), (c, self.now.as_millis()));
        Arc::new(Message {
            id,
            role: "assistant".into(),
            content: json!(text).into(),
            timestamp: 9,
            extra: serde_json::Map::from_iter([("model".to_string(), json!("m2"))]),
        })
    }

    /// One random user or assistant action on client `c`.
    pub fn random_action(&mut self, c: usize, threads: &[ThreadId]) {
        if !self.clients[c].up {
            return;
        }
        let t = threads[self.rng.random_range(0..threads.len())].clone();
        let roll = self.rng.random_range(0..100);
        let known = self.file(c, &t).filter(|f| f.v > 0 || !f.messages.is_empty() || !f.title.is_empty());
        match (roll, known) {
            (0..40, Some(_)) => {
                let content = json!(self.unique(c));
                self.sidecar_append(c, &t, content);
            }
            (40..65, Some(mut f)) => {
                // The assistant appends one or two messages, sometimes without ids.
                for _ in 0..self.rng.random_range(1..=2) {
                    let text = self.unique(c);
                    let with_id = self.rng.random_bool(0.7);
                    let id = if with_id {
                        MessageId::new(format!("f-{text}")).unwrap()
                    } else {
                        // What parse_thread_file derives for a message without an id.
                        let raw = json!({"id": t.as_str(), "messages": [{"role": "assistant", "content": text, "timestamp": 7}]});
                        let parsed = threadsync::model::parse_thread_file(raw.to_string().as_bytes(), &t).unwrap();
                        parsed.messages[0].id.clone()
                    };
                    self.written_by.entry(c).or_default().push(id.clone());
                    self.must_survive.insert(id.clone(), (c, self.now.as_millis()));
                    f.messages.push(Arc::new(Message {
                        id,
                        role: "assistant".into(),
                        content: json!(text).into(),
                        timestamp: 7,
                        extra: serde_json::Map::from_iter([("model".to_string(), json!("m1"))]),
                    }));
                }
                self.file_edit(c, f);
            }
            (65..75, Some(mut f)) if !f.messages.is_empty() => {
                let i = self.rng.random_range(0..f.messages.len());
                let text = self.unique(c);
                Arc::make_mut(&mut f.messages[i]).content = json!(format!("edited {text}")).into();
                self.file_edit(c, f);
            }
            (75..79, Some(mut f)) if !f.messages.is_empty() => {
                let i = self.rng.random_range(0..f.messages.len());
                let gone = f.messages.remove(i);
                self.deleted.insert(gone.id.clone());
                self.file_edit(c, f);
            }
            (79..86, Some(_)) => {
                let title = self.unique(c);
                self.sidecar_title(c, &t, &title);
            }
            (86..90, Some(mut f)) => {
                f.title = format!("file title {}", self.unique(c));
                self.file_edit(c, f);
            }
            (90..92, Some(_)) => {
                // Too large: refused locally, rolled back, reported.
                let big = json!("x".repeat(5000));
                let now = self.now;
                if let Some(n) = self.node(c) {
                    let r = n.local_op(now, Some(&t), LocalOp::Append { role: "user".into(), content: big });
                    assert!(r.is_err(), "an oversized append must be refused");
                }
            }
            (92..94, Some(_)) => {
                let now = self.now;
                if let Some(n) = self.node(c) {
                    n.engine.force_sync(now, None);
                }
                self.pump(c);
            }
            (94..97, Some(f)) if self.clients[c].node.files.kind_of(&t) == Some(FileKind::Json) => {
                // The assistant writes back what it read some time ago, plus
                // its answer: whatever reached the file since is not deleted.
                let mut older = self.clients[c].stale.get(&t).cloned().unwrap_or(f);
                let m = self.assistant_message(c, false);
                self.trace(format!("client {c} rewrites {t} from an older read with {}", m.id));
                older.messages.push(m);
                self.file_edit(c, older);
            }
            (97..99, Some(mut f)) if self.clients[c].node.files.kind_of(&t) == Some(FileKind::Json) => {
                // The assistant writes in place: half a file first (the
                // sidecar may read it), or its write lands inside the
                // sidecar's own write of this thread.
                let half = self.rng.random_bool(0.5);
                // A write inside the sidecar's own is concurrent with it: no order.
                let m = self.assistant_message(c, half);
                f.messages.push(m.clone());
                let bytes = serde_json::to_vec_pretty(&f).unwrap();
                if half {
                    self.trace(format!("client {c} half-writes {t} with {}", m.id));
                    let now = self.now;
                    self.clients[c].node.files.write_in_place(&t, FileKind::Json, bytes[..bytes.len() / 2].to_vec());
                    self.notice(c, &t, now);
                    self.clients[c].node.files.write_in_place(&t, FileKind::Json, bytes);
                    self.clients[c].stale.insert(t.clone(), f);
                    self.notice(c, &t, now);
                } else {
                    // Sometimes made from an older read: a displaced version
                    // may lack what was shown since, and must delete nothing.
                    let bytes = match self.clients[c].stale.get(&t).filter(|_| self.rng.random_bool(0.5)) {
                        Some(older) => {
                            let mut older = older.clone();
                            older.messages.push(m.clone());
                            serde_json::to_vec_pretty(&older).unwrap()
                        }
                        None => bytes,
                    };
                    self.trace(format!("client {c} writes {t} inside the sidecar's next write, with {}", m.id));
                    self.clients[c].node.files.interleaved.insert(t.clone(), bytes);
                    self.interleaved.entry((c, t.clone())).or_default().push(m.id.clone());
                    // Whatever the sidecar writes next lands on it.
                    let a = self.unique(c);
                    self.sidecar_append(c, &t, json!(a));
                }
            }
            (_, None) => {
                // This client has not seen the thread yet: create it from a file.
                let mut f = Thread::new(t.clone(), self.now.as_millis() as i64);
                f.title = format!("created by {c}");
                let text = self.unique(c);
                let id = MessageId::new(format!("f-{text}")).unwrap();
                self.written_by.entry(c).or_default().push(id.clone());
                self.must_survive.insert(id.clone(), (c, self.now.as_millis()));
                f.messages.push(Arc::new(Message {
                    id,
                    role: "user".into(),
                    content: json!(text).into(),
                    timestamp: 1,
                    extra: Default::default(),
                }));
                self.file_edit(c, f);
            }
            _ => {}
        }
    }

    // ----- checks -----------------------------------------------------------

    /// Runs until every client is idle and has pulled the server's head, or
    /// fails after `limit` of virtual time.
    pub fn settle(&mut self, limit: Duration) -> Result<(), String> {
        let end = self.now + limit;
        loop {
            if self.settled() {
                return Ok(());
            }
            if self.now >= end {
                return Err(format!("did not settle within {limit:?}: {}", self.describe()));
            }
            let step = self.now + Duration::from_millis(500);
            self.run_until(step.min(end));
        }
    }

    pub fn settled(&mut self) -> bool {
        let head = Cursor::Log(server::Tx::head_seq(self.store.tx(&self.team)).unwrap());
        self.clients.iter().all(|c| {
            let e = &c.node.engine;
            c.up && e.is_idle() && e.cursor() == Some(&head) && e.pending_threads().is_empty()
        })
    }

    pub fn describe(&mut self) -> String {
        let head = server::Tx::head_seq(self.store.tx(&self.team)).unwrap();
        let mut s = format!("server head {head}; ");
        for (i, c) in self.clients.iter().enumerate() {
            match c.up.then_some(&c.node.engine) {
                Some(e) => {
                    s += &format!(
                        "client {i}: idle={} busy={:?} cursor={:?} pending={:?} status={:?}; ",
                        e.is_idle(),
                        e.busy(),
                        e.cursor(),
                        e.pending_threads(),
                        e.status()
                    )
                }
                None => s += &format!("client {i}: down; "),
            }
        }
        s
    }

    /// The invariants every run must end with.
    pub fn check(&mut self) -> Result<(), String> {
        let server: BTreeMap<ThreadId, Doc> =
            self.store.threads(&self.team).map(|d| (d.id().clone(), d.clone())).collect();
        // Converged: every client's view, stored base and file equal the
        // server's. (Threads at rest live only in the store: load them.)
        let now = self.now;
        for (i, c) in self.clients.iter_mut().enumerate() {
            if !c.up {
                return Err(format!("client {i} is down"));
            }
            // The run ends quiet, and a quiet sidecar commits what its steps
            // deferred (`Client::flush`, as `settle` does).
            c.node.flush().map_err(|e| format!("client {i}: {e}"))?;
            let server_ids: BTreeSet<&ThreadId> = server.keys().collect();
            let stored: BTreeSet<&ThreadId> =
                c.node.store.thread_ids().filter(|id| c.node.store.base(id).is_some_and(|b| b.exists())).collect();
            if stored != server_ids {
                return Err(format!("client {i} stores threads {stored:?}, server {server_ids:?}"));
            }
            for (id, doc) in &server {
                c.node.ensure_loaded(now, [id]).map_err(|e| format!("client {i}: {e}"))?;
                let e = &c.node.engine;
                let local = e.thread(id).ok_or(format!("client {i} has no view of {id}"))?;
                let file = c.node.files.thread(id).ok_or(format!("client {i} has no readable file for {id}"))?;
                let base = c.node.store.base(id).expect("stored");
                // What the store keeps of the file is what the engine knows.
                if let (Some(stored), Some(fs)) = (c.node.store.file_view(id), e.file_state(id))
                    && stored.messages != fs.view.messages
                {
                    return Err(format!("client {i}'s stored view of the file of {id} differs from its engine's"));
                }
                for (what, t) in [("view", local), ("file", &file), ("stored base", &base.thread)] {
                    if t.messages != doc.thread.messages || t.title != doc.thread.title || t.env != doc.thread.env {
                        let f = e
                            .file_state(id)
                            .map(|f| (f.kind, f.stamp, f.own, f.dirty, f.error.clone(), f.changed.len()));
                        let on_disk = c.node.files.bytes(id, FileKind::Json).map(threadsync::engine::file::hash64);
                        if std::env::var("SIM_DUMP").is_ok() {
                            if let Some(fs) = e.file_state(id) {
                                let in_file: Vec<&str> = file
                                    .messages
                                    .iter()
                                    .map(|m| m.id.as_str())
                                    .filter(|m| !fs.view.messages.keys().any(|k| k.as_str() == *m))
                                    .collect();
                                let in_view_not_local: Vec<&str> = fs
                                    .view
                                    .messages
                                    .keys()
                                    .map(|k| k.as_str())
                                    .filter(|k| !local.messages.iter().any(|m| m.id.as_str() == *k))
                                    .collect();
                                eprintln!(
                                    "file ids not in view: {in_file:?}; view ids not in the view of the thread: {in_view_not_local:?}"
                                );
                            }
                            if let Some(b) = c.node.files.bytes(id, FileKind::Jsonl) {
                                eprintln!("--- client {i} {id}.jsonl ---\n{}", String::from_utf8_lossy(b));
                            }
                        }
                        return Err(format!(
                            "client {i}'s {what} of {id} differs from the server's (file state {f:?}, json on disk {on_disk:?}):\n  client: {:?} {:?}\n  server: {:?} {:?}",
                            t.title,
                            t.messages.iter().map(|m| (m.id.as_str(), format!("{:?}", m.content))).collect::<Vec<_>>(),
                            doc.thread.title,
                            doc.thread
                                .messages
                                .iter()
                                .map(|m| (m.id.as_str(), format!("{:?}", m.content)))
                                .collect::<Vec<_>>(),
                        ));
                    }
                }
            }
        }
        // Writes that were to land inside a sidecar write that never came
        // did not happen.
        for ((c, t), ids) in &self.interleaved {
            if self.clients[*c].node.files.interleaved.contains_key(t) {
                for m in ids {
                    self.must_survive.remove(m);
                }
            }
        }
        // Nothing lost, nothing duplicated, every writer's order kept.
        let mut position: BTreeMap<MessageId, (ThreadId, usize)> = BTreeMap::new();
        let mut contents = BTreeSet::new();
        for (id, doc) in &server {
            for (i, m) in doc.thread.messages.iter().enumerate() {
                if position.insert(m.id.clone(), (id.clone(), i)).is_some() {
                    return Err(format!("message {} appears twice", m.id));
                }
                if !contents.insert(format!("{:?}", m.content)) {
                    return Err(format!("content {:?} appears twice", m.content));
                }
            }
        }
        for (m, (c, at)) in &self.must_survive {
            if !position.contains_key(m) && !self.deleted.contains(m) && !self.rolled_back.contains(m) {
                return Err(format!("message {m} written by client {c} at {at} was lost"));
            }
        }
        for (c, written) in &self.written_by {
            let mut last: BTreeMap<&ThreadId, (usize, &MessageId)> = BTreeMap::new();
            for m in written {
                // A message someone deleted can come back through a
                // delete-edit conflict; its place then says nothing about order.
                if self.deleted.contains(m) {
                    continue;
                }
                if let Some((t, p)) = position.get(m) {
                    if let Some((prev, prev_id)) = last.get(t)
                        && p < prev
                    {
                        return Err(format!(
                            "client {c}'s message {m} (at {p}) is out of its writer's order in {t}: \
                                 it was written after {prev_id} (at {prev}); server order: {:?}",
                            server[t].thread.messages.iter().map(|m| m.id.as_str()).collect::<Vec<_>>()
                        ));
                    }
                    last.insert(t, (*p, m));
                }
            }
        }
        Ok(())
    }
}

pub fn thread_ids(n: usize) -> Vec<ThreadId> {
    (0..n).map(|i| ThreadId::new(format!("T-sim{i}")).unwrap()).collect()
}

pub fn config(poll: PollMode) -> EngineConfig {
    EngineConfig { poll, ..EngineConfig::default() }
}
