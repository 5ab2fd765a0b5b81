//! Behaviour tests of the sync engine: a real [`SyncEngine`] on a virtual
//! clock, answered by the real server core (`server::push` / `server::pull`
//! over a [`MemStore`]) unless a test injects a specific failure by hand.
//!
//! The [`Harness`] plays the shell: it performs the engine's actions (saves
//! and file writes through a [`Client`] over an in-memory state store and
//! thread files, requests kept as outstanding until the test answers them),
//! records every action with the time it appeared, and
//! offers two ways to move time: `tick_*` fires only the engine's own timers
//! (nothing is answered: the test decides), `run_*` is a perfect zero-latency
//! network in front of the server core (held long-polls are answered when the
//! team's log moves or their wait runs out, like the real server).

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::file::{FileKind, FileWrite};
use super::retry::Failure;
use super::{Action, Choice, EngineConfig, LocalOp, LocalResult, Origin, PollMode, PullOutcome, ReqId, Restored};
use super::{Save, State, Status, SyncEngine, ThreadState};
use crate::client::mem::{MemFiles, MemState};
use crate::client::{Client, StepError};
use crate::engine::state::Bodies;
use crate::merge::{ConflictKind, Doc, Limits};
use crate::model::{ContentHash, Message, MessageId, Thread, ThreadId};
use crate::ops::{Effect, Op};
use crate::server::store::MemStore;
use crate::server::{self, PullError, PullLimits, TeamId, Tx};
use crate::time::Time;
use crate::wire::{Cursor, MutationStatus, PullResponse, PushRequest, PushResponse};

mod failures;
mod file_changes;
mod local;
mod monitor;
mod pull;
mod push;
mod recovery;
mod status;
mod tickets;
mod timers;

// ===== harness ============================================================

const T0: Time = Time(1_700_000_000_000);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn tid(s: &str) -> ThreadId {
    ThreadId::new(s).unwrap()
}

/// A thread file as an assistant would write it: messages are (id, content).
fn file(id: &ThreadId, title: &str, messages: &[(&str, Value)]) -> Thread {
    let mut t = Thread::new(id.clone(), 1);
    t.title = title.to_string();
    t.messages = messages
        .iter()
        .map(|(mid, content)| {
            Arc::new(Message {
                id: MessageId::new(*mid).unwrap(),
                role: "assistant".into(),
                content: content.clone().into(),
                timestamp: 0,
                extra: Default::default(),
            })
        })
        .collect();
    t
}

/// The contents of a thread whose content is loaded.
fn contents(t: &Thread) -> Vec<Value> {
    t.messages.iter().map(|m| m.content.value().expect("content loaded").clone()).collect()
}

fn http(status: u16, message: &str) -> Failure {
    Failure::Http { status, retry_after: None, message: message.into() }
}

#[derive(Clone, Debug)]
struct OutPull {
    req: ReqId,
    cursor: Option<Cursor>,
    wait: Option<Duration>,
    sent: Time,
}

struct Harness {
    /// The engine with its state store and thread files, in memory.
    client: Client<MemState, MemFiles>,
    cfg: EngineConfig,
    store: Rc<RefCell<MemStore>>,
    team: TeamId,
    /// What the server enforces (may differ from `cfg.limits`).
    server_limits: Limits,
    now: Time,
    /// Every action the engine produced (saves and file writes included),
    /// with the time it was performed.
    log: Vec<(Time, Action)>,
    /// Requests sent and not yet answered (or cancelled).
    pushes: Vec<(ReqId, PushRequest)>,
    pulls: Vec<OutPull>,
    probes: Vec<ReqId>,
    /// Most pulls ever outstanding at once.
    max_pulls: usize,
    /// Crash simulation: the client dies at the first `StepPoint` once
    /// `points` has reached this (`h.points + k`: k more points pass): what
    /// was done is on disk, nothing after it happens, until `restart`.
    crash_at: Option<usize>,
    /// `StepPoint`s the client has passed (restarts included).
    points: usize,
    crashed: bool,
}

impl Harness {
    fn new(cfg: EngineConfig) -> Self {
        Self::with_store(cfg, 1, Rc::new(RefCell::new(MemStore::default())), T0)
    }

    fn with_store(cfg: EngineConfig, seed: u64, store: Rc<RefCell<MemStore>>, now: Time) -> Self {
        let engine = SyncEngine::new(cfg.clone(), seed, now, Restored::default());
        let mut client = Client::new(engine, MemState::default(), MemFiles::default());
        client.record = true;
        let mut h = Harness {
            client,
            cfg,
            store,
            team: TeamId::new("team").unwrap(),
            server_limits: Limits::default(),
            now,
            log: Vec::new(),
            pushes: Vec::new(),
            pulls: Vec::new(),
            probes: Vec::new(),
            max_pulls: 0,
            crash_at: None,
            points: 0,
            crashed: false,
        };
        h.drain();
        h
    }

    /// A second client on the same server (and the same clock reading).
    fn sharing(other: &Harness, seed: u64) -> Self {
        let mut h = Self::with_store(other.cfg.clone(), seed, other.store.clone(), other.now);
        h.server_limits = other.server_limits;
        h
    }

    /// Started, first sync done over a perfect network, quiet.
    fn synced(cfg: EngineConfig) -> Self {
        let mut h = Self::new(cfg);
        h.run_for(secs(1));
        h
    }

    /// Drops the engine and starts a new one from what the store kept, then
    /// reads the thread files (as the sidecar does at start). Requests the
    /// old engine had out are forgotten (their answers would be ignored).
    fn restart(&mut self, seed: u64) {
        let restored = self.client.store.restore();
        self.client.restart(SyncEngine::new(self.cfg.clone(), seed, self.now, restored));
        self.pushes.clear();
        self.pulls.clear();
        self.probes.clear();
        self.crash_at = None;
        self.crashed = false;
        self.client.recover(self.now).unwrap();
        for id in self.client.files.ids() {
            let kind = self.client.files.kind_of(&id).expect("listed");
            self.client.file_changed(self.now, &id, kind).unwrap();
        }
        self.drain();
    }

    /// Performs the engine's actions: the disk side through the client, the
    /// requests kept as outstanding.
    fn drain(&mut self) {
        if self.crashed {
            // A dead client does nothing.
            while self.client.engine.poll_action().is_some() {}
            return;
        }
        let (crash_at, mut points) = (self.crash_at, self.points);
        let r = self.client.step(self.now, &mut |_| {
            points += 1;
            crash_at.is_some_and(|k| points > k)
        });
        self.points = points;
        let out = match r {
            Ok(out) => out,
            Err(StepError::Crashed) => {
                self.crashed = true;
                while self.client.engine.poll_action().is_some() {}
                return;
            }
            Err(StepError::Store(e)) => panic!("the memory store failed: {e}"),
        };
        for a in out.performed {
            self.log.push((self.now, a));
        }
        for mut a in out.actions {
            if let Action::Push { body, .. } = &mut a {
                // What goes on the wire: content loaded, as the shell does.
                *body = self.client.load_push(body).expect("a push's bodies are in the store");
            }
            match &a {
                Action::Push { req, body, .. } => self.pushes.push((*req, body.clone())),
                Action::Pull { req, cursor, wait, .. } => {
                    self.pulls.push(OutPull { req: *req, cursor: cursor.clone(), wait: *wait, sent: self.now });
                }
                Action::CancelPull { req } => self.pulls.retain(|p| p.req != *req),
                Action::Probe { req, .. } => self.probes.push(*req),
                _ => {}
            }
            self.max_pulls = self.max_pulls.max(self.pulls.len());
            self.log.push((self.now, a));
        }
    }

    // ----- local changes -------------------------------------------------

    fn create_thread(&mut self, title: &str) -> ThreadId {
        let r = self.client.local_op(self.now, None, LocalOp::CreateThread { title: title.into() }).unwrap();
        self.drain();
        r.thread_id
    }

    fn append(&mut self, id: &ThreadId, content: Value) -> LocalResult {
        let r = self.client.local_op(self.now, Some(id), LocalOp::Append { role: "user".into(), content }).unwrap();
        self.drain();
        r
    }

    fn set_title(&mut self, id: &ThreadId, title: &str) {
        self.client.local_op(self.now, Some(id), LocalOp::SetTitle { title: title.into() }).unwrap();
        self.drain();
    }

    /// An assistant writes the thread's file to hold `thread` (a `.json`
    /// rewrite, or records appended to a log) and the watcher reports it.
    fn snapshot(&mut self, thread: Thread) {
        let id = thread.id.clone();
        self.client.files.assistant_write(&thread);
        let kind = self.client.files.kind_of(&id).expect("just written");
        if !self.crashed {
            self.client.file_changed(self.now, &id, kind).unwrap();
        }
        self.drain();
    }

    /// What a thread's file holds, as a reader sees it.
    fn file_of(&self, id: &ThreadId) -> Thread {
        self.client.files.thread(id).unwrap_or_else(|| panic!("no readable file for {id}"))
    }

    /// The thread as the user sees it, content loaded.
    fn view(&self, id: &ThreadId) -> Thread {
        let t = self.client.engine.thread(id).unwrap_or_else(|| panic!("{id} is not in memory"));
        self.client.store.load_thread(t).unwrap()
    }

    fn force_sync(&mut self, thread: Option<ThreadId>) -> u64 {
        let ticket = self.client.engine.force_sync(self.now, thread);
        self.drain();
        ticket
    }

    // ----- time: engine timers only ----------------------------------------

    /// Fires the engine's next timer if it is due by `limit`.
    fn step(&mut self, limit: Time) -> bool {
        match self.client.engine.poll_timeout() {
            Some(due) if due <= limit => {
                self.now = self.now.max(due);
                self.client.engine.handle_timeout(self.now);
                self.drain();
                true
            }
            _ => false,
        }
    }

    /// Fires every engine timer up to `t`; answers nothing.
    fn tick_until(&mut self, t: Time) {
        let mut spins = 0;
        let mut last = self.now;
        while self.step(t) {
            spins = if self.now == last { spins + 1 } else { 0 };
            last = self.now;
            assert!(spins < 10_000, "the engine asks for a timeout at {last:?} over and over");
        }
        self.now = self.now.max(t);
    }

    fn tick(&mut self, d: Duration) {
        self.tick_until(self.now + d);
    }

    /// Fires engine timers (answering nothing) until an action matching
    /// `pred` appears, at most `within` from now; returns its time and index.
    fn tick_until_action(&mut self, within: Duration, pred: impl Fn(&Action) -> bool) -> (Time, usize) {
        let limit = self.now + within;
        let mut from = self.log.len();
        loop {
            if let Some(i) = (from..self.log.len()).find(|&i| pred(&self.log[i].1)) {
                return (self.log[i].0, i);
            }
            from = self.log.len();
            assert!(
                self.step(limit),
                "no such action by {limit:?}; log since: {:#?}",
                &self.log[from.saturating_sub(5)..]
            );
        }
    }

    /// Ticks until the engine sends a push (one sent before the call, e.g.
    /// right after an answer, is not looked at).
    fn next_push(&mut self, within: Duration) -> (Time, ReqId, PushRequest) {
        let (t, i) = self.tick_until_action(within, |a| matches!(a, Action::Push { .. }));
        let Action::Push { req, body, .. } = &self.log[i].1 else { unreachable!() };
        (t, *req, body.clone())
    }

    // ----- the server ------------------------------------------------------

    fn server_push(&self, body: &PushRequest) -> PushResponse {
        let mut store = self.store.borrow_mut();
        server::push(store.tx(&self.team), body, &self.server_limits).expect("the memory store never fails")
    }

    fn server_pull(&self, cursor: Option<&Cursor>) -> PullOutcome {
        let mut store = self.store.borrow_mut();
        match server::pull(store.tx(&self.team), cursor, &PullLimits::default()) {
            Ok(r) => PullOutcome::Ok(r),
            Err(PullError::Refetch { .. }) => PullOutcome::Refetch,
            Err(PullError::Store(e)) => panic!("memory store failed: {e}"),
        }
    }

    fn server_head(&self) -> u64 {
        self.store.borrow_mut().tx(&self.team).head_seq().unwrap()
    }

    fn server_doc(&self, id: &ThreadId) -> Option<Doc> {
        self.store.borrow_mut().tx(&self.team).doc(id).unwrap()
    }

    fn server_thread_count(&self) -> usize {
        self.store.borrow().threads(&self.team).count()
    }

    /// Every change in the server's log (seq > 0).
    fn server_log(&self) -> Vec<crate::wire::Change> {
        self.store.borrow_mut().tx(&self.team).changes_since(0, usize::MAX).unwrap()
    }

    // ----- answering requests ----------------------------------------------

    fn take_push(&mut self, req: ReqId) -> PushRequest {
        let i =
            self.pushes.iter().position(|(r, _)| *r == req).unwrap_or_else(|| panic!("push #{req} is not outstanding"));
        self.pushes.remove(i).1
    }

    /// The only outstanding push.
    fn push_req(&self) -> ReqId {
        assert_eq!(self.pushes.len(), 1, "outstanding pushes: {:?}", self.pushes);
        self.pushes[0].0
    }

    /// The only outstanding pull.
    fn pull_req(&self) -> ReqId {
        assert_eq!(self.pulls.len(), 1, "outstanding pulls: {:?}", self.pulls);
        self.pulls[0].req
    }

    /// The server core applies the push; the engine gets its answer.
    fn answer_push(&mut self, req: ReqId) -> PushResponse {
        let body = self.take_push(req);
        let resp = self.server_push(&body);
        self.client.engine.handle_push(self.now, req, Ok(resp.clone()));
        self.drain();
        resp
    }

    /// Hand-crafted failure: the server never saw the push.
    fn fail_push(&mut self, req: ReqId, f: Failure) {
        self.take_push(req);
        self.client.engine.handle_push(self.now, req, Err(f));
        self.drain();
    }

    fn take_pull(&mut self, req: ReqId) -> OutPull {
        let i =
            self.pulls.iter().position(|p| p.req == req).unwrap_or_else(|| panic!("pull #{req} is not outstanding"));
        self.pulls.remove(i)
    }

    fn answer_pull(&mut self, req: ReqId) {
        let p = self.take_pull(req);
        let out = self.server_pull(p.cursor.as_ref());
        let out = match out {
            PullOutcome::Ok(r) => PullOutcome::Ok(self.as_read(r)),
            other => other,
        };
        self.client.handle_pull(self.now, req, out);
        self.drain();
    }

    /// A pull answer as the sidecar reads it: our own inserts come without
    /// their content, which we have — or, missing, fetch from the server.
    fn as_read(&mut self, r: PullResponse) -> PullResponse {
        let mut r = r.as_read_by(&self.client.engine.client_ids());
        let fetched: Vec<_> = self
            .client
            .missing_bodies(&r)
            .into_iter()
            .map(|(t, id)| {
                let mut store = self.store.borrow_mut();
                let (m, _) = store.tx(&self.team).kept_message(&t, &id).unwrap().expect("the server kept it");
                (t, (*m).clone())
            })
            .collect();
        self.client.fill_bodies(&mut r, &fetched).unwrap();
        r
    }

    /// Answers a pull with a hand-crafted outcome.
    fn answer_pull_with(&mut self, req: ReqId, out: PullOutcome) {
        self.take_pull(req);
        self.client.handle_pull(self.now, req, out);
        self.drain();
    }

    fn answer_probe(&mut self, req: ReqId, outcome: Result<(), Failure>) {
        let i = self.probes.iter().position(|r| *r == req).expect("probe outstanding");
        self.probes.remove(i);
        self.client.engine.handle_probe(self.now, req, outcome);
        self.drain();
    }

    // ----- time: a perfect network -----------------------------------------

    /// Answers everything the server would answer right now: pushes, probes,
    /// pulls without a wait, and held pulls once the log moved past their
    /// cursor or their wait ran out.
    fn serve(&mut self) {
        loop {
            if let Some(&(req, _)) = self.pushes.first() {
                self.answer_push(req);
                continue;
            }
            if let Some(&req) = self.probes.first() {
                self.answer_probe(req, Ok(()));
                continue;
            }
            let head = self.server_head();
            let now = self.now;
            let ready = self.pulls.iter().find(|p| match (p.wait, &p.cursor) {
                (None, _) => true,
                (Some(w), Some(Cursor::Log(seq))) => head > *seq || now >= p.sent + w,
                (Some(_), _) => true,
            });
            if let Some(p) = ready {
                let req = p.req;
                self.answer_pull(req);
                continue;
            }
            break;
        }
    }

    fn run_until(&mut self, end: Time) {
        let mut spins = 0;
        let mut last = self.now;
        loop {
            self.serve();
            let timer = self.client.engine.poll_timeout();
            let held = self.pulls.iter().filter_map(|p| p.wait.map(|w| p.sent + w)).min();
            let Some(next) = [timer, held].into_iter().flatten().min().filter(|&t| t <= end) else { break };
            self.now = self.now.max(next);
            if timer.is_some_and(|t| t <= self.now) {
                self.client.engine.handle_timeout(self.now);
                self.drain();
            }
            spins = if self.now == last { spins + 1 } else { 0 };
            last = self.now;
            assert!(spins < 10_000, "the engine spins at {last:?}");
        }
        self.now = self.now.max(end);
    }

    fn run_for(&mut self, d: Duration) {
        self.run_until(self.now + d);
    }

    // ----- what happened -----------------------------------------------------

    fn mark(&self) -> usize {
        self.log.len()
    }

    /// Picks actions out of the log from `mark` on, with their times.
    fn find<T>(&self, mark: usize, f: impl Fn(&Action) -> Option<T>) -> Vec<(Time, T)> {
        self.log[mark..].iter().filter_map(|(t, a)| f(a).map(|x| (*t, x))).collect()
    }

    fn pushes_since(&self, mark: usize) -> Vec<(Time, PushRequest)> {
        self.find(mark, |a| match a {
            Action::Push { body, .. } => Some(body.clone()),
            _ => None,
        })
    }

    fn pulls_since(&self, mark: usize) -> Vec<(Time, Option<Cursor>, Option<Duration>)> {
        self.find(mark, |a| match a {
            Action::Pull { cursor, wait, .. } => Some((cursor.clone(), *wait)),
            _ => None,
        })
        .into_iter()
        .map(|(t, (c, w))| (t, c, w))
        .collect()
    }

    fn statuses_since(&self, mark: usize) -> Vec<(Time, Status)> {
        self.find(mark, |a| match a {
            Action::Status(s) => Some(s.clone()),
            _ => None,
        })
    }

    fn requests_since(&self, mark: usize) -> usize {
        self.find(mark, |a| matches!(a, Action::Push { .. } | Action::Pull { .. } | Action::Probe { .. }).then_some(()))
            .len()
    }

    fn warnings_since(&self, mark: usize) -> Vec<String> {
        self.find(mark, |a| match a {
            Action::Warning(w) => Some(w.clone()),
            _ => None,
        })
        .into_iter()
        .map(|(_, w)| w)
        .collect()
    }

    /// The engine's view of a thread equals the server's.
    fn assert_matches_server(&self, id: &ThreadId) {
        let server = self.server_doc(id).expect("thread on the server");
        assert_eq!(self.client.engine.base(id), Some(&server), "base of {id}");
        assert_eq!(self.client.engine.thread(id), Some(&server.thread), "local view of {id}");
        // What the store keeps is what the engine has.
        assert_eq!(self.client.store.base(id), Some(&server), "stored base of {id}");
        // The file shows it too.
        let f = self.file_of(id);
        assert_eq!((&f.title, &f.messages), (&server.thread.title, &server.thread.messages), "file of {id}");
    }
}

/// The (mutation id, thread) pairs of a push.
fn mutations(body: &PushRequest) -> Vec<(u64, ThreadId)> {
    body.mutations.iter().map(|m| (m.id, m.thread_id.clone())).collect()
}

fn assert_delay(got: Duration, nominal: Duration, what: &str) {
    let lo = nominal.mul_f64(0.75);
    let hi = nominal.mul_f64(1.25);
    assert!(lo <= got && got <= hi, "{what}: {got:?} is not within 25% of {nominal:?}");
}
