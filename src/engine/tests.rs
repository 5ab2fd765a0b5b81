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

// ===== 1. pending set, per-thread and overall status =======================

#[test]
fn status_is_emitted_right_after_start_and_settles_on_synced() {
    let mut h = Harness::new(EngineConfig::default());
    assert!(matches!(h.log.first(), Some((t, Action::Status(_))) if *t == T0), "first action: {:?}", h.log.first());
    h.run_for(secs(1));
    let (_, last) = h.statuses_since(0).pop().unwrap();
    assert_eq!(last.state, State::Synced);
    assert!(last.online);
    assert_eq!(last.pending, 0);
    assert_eq!(last.last_sync, Some(T0), "the first pull was answered at T0");
}

#[test]
fn a_sidecar_that_never_reached_the_server_is_not_shown_as_synced() {
    // No server answers: the first pull fails with a connection error.
    let mut h = Harness::new(EngineConfig::default());
    h.tick_until_action(secs(1), |a| matches!(a, Action::Pull { .. }));
    let first = h.statuses_since(0);
    assert!(!first.is_empty());
    for (_, s) in &first {
        assert_eq!(s.state, State::Syncing, "before any answer: {s:?}");
        assert!(!s.online, "before any answer: {s:?}");
    }
    let req = h.pull_req();
    h.answer_pull_with(req, PullOutcome::Failed(Failure::Network("connection refused".into())));
    h.tick(secs(1));
    let all = h.statuses_since(0);
    assert!(all.iter().all(|(_, s)| s.state != State::Synced && !s.online), "{all:?}");
    assert_eq!(all.last().unwrap().1.state, State::Offline);
}

#[test]
fn a_changed_thread_goes_pending_then_syncing_then_synced() {
    let mut h = Harness::synced(EngineConfig::default());
    let (t, m) = (h.now, h.mark());
    let id = tid("T-status");
    h.snapshot(file(&id, "hello", &[("m-1", json!("hi"))]));

    assert_eq!(h.client.engine.pending_threads(), BTreeSet::from([id.clone()]));
    assert_eq!(h.client.engine.thread_status(&id).unwrap().state, ThreadState::Pending);

    // Debounce (200 ms) then the batch window (100 ms).
    let (at, req, _) = h.next_push(secs(1));
    assert_eq!(at, t + ms(300));
    assert_eq!(h.client.engine.thread_status(&id).unwrap().state, ThreadState::Syncing);
    assert_eq!(h.client.engine.pending_threads(), BTreeSet::from([id.clone()]), "in flight still counts as pending");

    h.answer_push(req);
    let ts = h.client.engine.thread_status(&id).unwrap();
    assert_eq!(ts.state, ThreadState::Synced);
    assert_eq!(ts.last_sync, Some(t + ms(300)));
    assert!(h.client.engine.pending_threads().is_empty());
    h.tick(ms(200));

    let mut states: Vec<ThreadState> = h
        .find(m, |a| match a {
            Action::ThreadStatus(s) if s.thread_id == id => Some(s.state),
            _ => None,
        })
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    states.dedup();
    assert_eq!(states, [ThreadState::Pending, ThreadState::Syncing, ThreadState::Synced]);

    let overall: Vec<(Time, State, usize)> =
        h.statuses_since(m).into_iter().map(|(t, s)| (t, s.state, s.pending)).collect();
    assert_eq!(
        overall,
        [(t, State::Pending, 1), (t + ms(300), State::Syncing, 1), (t + ms(400), State::Synced, 0)],
        "leading edges at once, the synced state as the trailing edge"
    );
}

// ===== 2. debounce of file changes ==========================================

#[test]
fn rapid_rewrites_of_one_thread_become_one_push_with_the_final_content() {
    let mut h = Harness::synced(EngineConfig::default());
    let (t, m) = (h.now, h.mark());
    let id = tid("T-debounce");
    for (i, text) in ["a", "ab", "abc", "abcd"].into_iter().enumerate() {
        h.tick_until(t + ms(50 * i as u64));
        h.snapshot(file(&id, "draft", &[("m-1", json!(text))]));
    }
    h.tick(secs(2));

    let pushes = h.pushes_since(m);
    assert_eq!(pushes.len(), 1, "{pushes:#?}");
    // Last rewrite at t+150, quiet for 200 ms, then the 100 ms batch window.
    assert_eq!(pushes[0].0, t + ms(450));
    let body = &pushes[0].1;
    assert_eq!(mutations(body), [(1, id.clone())]);
    let appends: Vec<Value> = body.mutations[0]
        .ops
        .iter()
        .filter_map(|op| match op {
            Op::Append { message, .. } => message.content.value().cloned(),
            _ => None,
        })
        .collect();
    assert_eq!(appends, [json!("abcd")]);
    assert!(!body.mutations[0].ops.iter().any(|op| matches!(op, Op::Edit { .. })));

    h.answer_push(h.push_req());
    let server = h.server_doc(&id).unwrap();
    assert_eq!(contents(&server.thread), [json!("abcd")]);
    assert_eq!(server.thread.title, "draft");
}

#[test]
fn a_thread_rewritten_continuously_is_still_pushed_after_the_max_wait() {
    let mut h = Harness::synced(EngineConfig::default());
    let (t, m) = (h.now, h.mark());
    let id = tid("T-busy");
    // Rewritten every 100 ms for 3 s: never 200 ms of quiet.
    for i in 0..30u64 {
        h.tick_until(t + ms(100 * i));
        h.snapshot(file(&id, "busy", &[("m-1", json!("x".repeat(i as usize + 1)))]));
    }
    let pushes = h.pushes_since(m);
    assert!(!pushes.is_empty(), "never pushed while the file kept changing");
    // First touch at t: taken at t+2000 (what the file held since t+1900),
    // pushed when the batch window closes.
    assert_eq!(pushes[0].0, t + ms(2_100));
    let appended = pushes[0].1.mutations[0].ops.iter().find_map(|op| match op {
        Op::Append { message, .. } => message.content.value().cloned(),
        _ => None,
    });
    assert_eq!(appended, Some(json!("x".repeat(20))));
}

// ===== 3. throttled status notifications ==================================

#[test]
fn a_burst_of_changes_yields_one_leading_and_one_trailing_status() {
    let mut h = Harness::synced(EngineConfig::default());
    let (t, m) = (h.now, h.mark());
    for i in 0..4u64 {
        h.tick_until(t + ms(20 * i));
        h.create_thread(&format!("burst {i}"));
    }
    h.tick_until(t + ms(100));

    let in_window: Vec<(Time, Status)> = h.statuses_since(m).into_iter().filter(|(at, _)| *at <= t + ms(100)).collect();
    let seen: Vec<(Time, State, usize)> = in_window.iter().map(|(at, s)| (*at, s.state, s.pending)).collect();
    assert_eq!(
        seen,
        [(t, State::Pending, 1), (t + ms(100), State::Pending, 4)],
        "one leading status, one trailing status with the latest count"
    );
}

// ===== 4. batching ========================================================

#[test]
fn changes_to_several_threads_within_the_window_go_in_one_push() {
    let mut h = Harness::synced(EngineConfig::default());
    let (t, m) = (h.now, h.mark());
    let mut ids = Vec::new();
    for i in 0..3u64 {
        h.tick_until(t + ms(30 * i));
        ids.push(h.create_thread(&format!("thread {i}")));
    }
    h.tick(secs(1));

    let pushes = h.pushes_since(m);
    assert_eq!(pushes.len(), 1, "{pushes:#?}");
    assert_eq!(pushes[0].0, t + ms(100), "sent when the window of the first change closes");
    assert_eq!(mutations(&pushes[0].1), [(1, ids[0].clone()), (2, ids[1].clone()), (3, ids[2].clone())]);
}

#[test]
fn with_flush_when_idle_a_lone_change_goes_at_once_and_a_burst_still_batches() {
    let cfg = EngineConfig { flush_when_idle: true, ..EngineConfig::default() };
    let mut h = Harness::synced(cfg);
    let (t, m) = (h.now, h.mark());
    let first = h.create_thread("alone");
    h.tick(ms(1));
    let pushes = h.pushes_since(m);
    assert_eq!(pushes.len(), 1, "the leading edge: {pushes:#?}");
    assert_eq!(pushes[0].0, t, "no window for a change after a quiet spell");
    assert_eq!(mutations(&pushes[0].1), [(1, first)]);
    // Changes while that push is out wait, and then go together.
    let m2 = h.mark();
    let (second, third) = (h.create_thread("b"), h.create_thread("c"));
    h.tick(ms(500));
    assert!(h.pushes_since(m2).is_empty(), "nothing new while the lane is busy");
    let req = h.pushes[0].0;
    h.answer_push(req);
    let pushes = h.pushes_since(m2);
    assert_eq!(pushes.len(), 1);
    assert_eq!(mutations(&pushes[0].1), [(2, second), (3, third)]);
}

#[test]
fn more_than_fifty_threads_are_split_over_several_pushes() {
    let mut h = Harness::synced(EngineConfig::default());
    let (t, m) = (h.now, h.mark());
    let ids: Vec<ThreadId> = (0..120).map(|i| h.create_thread(&format!("n{i}"))).collect();
    h.tick(ms(100));
    let mut sizes = Vec::new();
    let mut all = Vec::new();
    // Each answer lets the next batch go at once.
    while let Some((req, body)) = h.pushes.first().cloned() {
        assert!(sizes.len() < 10);
        sizes.push(body.mutations.len());
        all.extend(mutations(&body));
        h.answer_push(req);
    }
    assert_eq!(sizes, [50, 50, 20]);
    assert!(h.pushes_since(m).iter().all(|(at, _)| *at == t + ms(100)));
    let want: Vec<(u64, ThreadId)> = ids.iter().cloned().enumerate().map(|(i, id)| (i as u64 + 1, id)).collect();
    assert_eq!(all, want, "oldest first, mutation ids consecutive across pushes");
    assert_eq!(h.pushes_since(m).len(), 3);
    assert_eq!(h.server_thread_count(), 120);
}

#[test]
fn a_second_change_to_a_queued_thread_merges_into_its_mutation() {
    let mut h = Harness::synced(EngineConfig::default());
    let id = h.create_thread("orig");
    h.run_for(secs(1));
    let m = h.mark();
    h.set_title(&id, "first");
    h.tick(ms(30));
    h.set_title(&id, "second");
    h.tick(secs(1));

    let pushes = h.pushes_since(m);
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].1.mutations.len(), 1);
    assert_eq!(pushes[0].1.mutations[0].ops, [Op::SetTitle { title: "second".into(), base: "orig".into() }]);
    h.answer_push(h.push_req());
    assert_eq!(h.server_doc(&id).unwrap().thread.title, "second");
}

#[test]
fn a_large_mutation_goes_on_the_bulk_client_and_does_not_hold_up_small_ones() {
    let cfg = EngineConfig { bulk_threshold: 10_000, ..EngineConfig::default() };
    let mut h = Harness::synced(cfg);
    let big = h.create_thread("big");
    let small = h.create_thread("small");
    h.run_for(secs(1));
    let [fast_client, bulk_client] = h.client.engine.client_ids().map(|c| c.clone());
    assert!(bulk_client.as_str().ends_with("-bulk"), "{bulk_client}");
    assert_eq!(bulk_client.as_str(), format!("{fast_client}-bulk"));

    let (t, m) = (h.now, h.mark());
    h.append(&big, json!("x".repeat(50_000)));
    h.append(&small, json!("hi"));
    h.tick(ms(100));

    // Both lanes go at once: two pushes outstanding together.
    assert_eq!(h.pushes.len(), 2, "{:?}", h.pushes);
    let pushes = h.pushes_since(m);
    assert!(pushes.iter().all(|(at, _)| *at == t + ms(100)));
    let bulk = pushes.iter().find(|(_, b)| b.client_id == bulk_client).expect("a bulk push").1.clone();
    let fast = pushes.iter().find(|(_, b)| b.client_id == fast_client).expect("a small push").1.clone();
    assert_eq!(mutations(&bulk), [(1, big.clone())], "the bulk client numbers its own mutations");
    assert_eq!(mutations(&fast)[0].1, small);

    // The small lane keeps moving while the large upload is still out.
    let fast_req = h.pushes.iter().find(|(_, b)| b.client_id == fast_client).unwrap().0;
    h.answer_push(fast_req);
    h.append(&small, json!("again"));
    let (_, _, next) = h.next_push(secs(1));
    assert_eq!(next.client_id, fast_client);
    assert_eq!(h.pushes.len(), 2, "the bulk push is still outstanding");

    h.run_for(secs(1));
    assert_eq!(contents(&h.server_doc(&big).unwrap().thread), [json!("x".repeat(50_000))]);
    assert_eq!(contents(&h.server_doc(&small).unwrap().thread), [json!("hi"), json!("again")]);
}

// ===== 5. retries, offline, unauthorized ==================================

#[test]
fn a_push_refused_with_503_is_retried_on_the_backoff_schedule_and_never_dropped() {
    let mut h = Harness::synced(EngineConfig::default());
    let id = h.create_thread("retry me");
    h.append(&id, json!("precious"));
    let (mut last, req, first) = h.next_push(secs(1));
    h.fail_push(req, http(503, "unavailable"));
    assert_eq!(h.client.engine.status().state, State::Error);

    let nominal = [1, 2, 5, 10, 30, 30, 30, 30];
    for (i, &s) in nominal.iter().enumerate() {
        let (at, req, body) = h.next_push(secs(60));
        assert_delay(at.saturating_since(last), secs(s), &format!("retry {}", i + 1));
        assert_eq!(body, first, "resent unchanged");
        last = at;
        if i + 1 < nominal.len() {
            h.fail_push(req, http(503, "unavailable"));
        } else {
            h.answer_push(req);
        }
    }
    h.run_for(secs(1));
    let server = h.server_doc(&id).unwrap();
    assert_eq!(contents(&server.thread), [json!("precious")]);
    assert_eq!(h.server_log().len(), 3, "create, title, append: each applied once");
    assert_eq!(h.client.engine.status().state, State::Synced);
    assert!(h.client.engine.is_idle());
}

#[test]
fn retry_after_of_a_429_is_honoured() {
    let mut h = Harness::synced(EngineConfig::default());
    h.create_thread("slow down");
    let (t, req, _) = h.next_push(secs(1));
    let f = Failure::Http { status: 429, retry_after: Some(secs(7)), message: "slow down".into() };
    h.fail_push(req, f);
    let (at, _, _) = h.next_push(secs(60));
    assert_eq!(at, t + secs(7));
}

#[test]
fn a_network_failure_goes_offline_and_probes_until_the_server_answers() {
    let mut h = Harness::synced(EngineConfig::default());
    let held = h.pull_req();
    let id = h.create_thread("offline");
    let (_, req, body) = h.next_push(secs(1));
    let m = h.mark();
    let t = h.now;
    h.fail_push(req, Failure::Network("connection refused".into()));

    let s = h.client.engine.status();
    assert_eq!(s.state, State::Offline);
    assert!(!s.online);
    assert!(s.message.unwrap().contains("connection refused"));
    assert_eq!(h.find(m, |a| matches!(a, Action::CancelPull { req } if *req == held).then_some(())).len(), 1);
    assert!(h.pulls.is_empty(), "the held pull was given up");

    // Probes, spaced by the backoff; nothing else goes out meanwhile.
    let (p1, i) = h.tick_until_action(secs(5), |a| matches!(a, Action::Probe { .. }));
    assert_delay(p1.saturating_since(t), secs(1), "first probe");
    let Action::Probe { req: probe, .. } = h.log[i].1 else { unreachable!() };
    h.answer_probe(probe, Err(Failure::Network("connection refused".into())));
    let (p2, i) = h.tick_until_action(secs(5), |a| matches!(a, Action::Probe { .. }));
    assert_delay(p2.saturating_since(p1), secs(2), "second probe");
    assert_eq!(h.requests_since(m), 2, "only probes while offline");

    // The server is back: the queue flushes at once.
    let Action::Probe { req: probe, .. } = h.log[i].1 else { unreachable!() };
    let m2 = h.mark();
    h.answer_probe(probe, Ok(()));
    let pushes = h.pushes_since(m2);
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0], (p2, body));
    assert_eq!(h.pulls_since(m2).len(), 1);
    assert!(h.client.engine.status().online);
    h.run_for(secs(1));
    assert_eq!(h.server_doc(&id).unwrap().thread.title, "offline");
}

#[test]
fn unauthorized_stops_all_requests_until_credentials_change() {
    let mut h = Harness::synced(EngineConfig::default());
    let held = h.pull_req();
    let id = h.create_thread("secret");
    let (_, req, body) = h.next_push(secs(1));
    let m = h.mark();
    h.fail_push(req, http(401, "bad token"));
    let s = h.client.engine.status();
    assert_eq!(s.state, State::Unauthorized);
    assert!(s.message.is_some());

    // More changes, ten minutes: no request at all.
    h.append(&id, json!("while unauthorized"));
    h.tick(secs(600));
    assert_eq!(h.requests_since(m), 0, "{:#?}", &h.log[m..]);

    let m2 = h.mark();
    let t = h.now;
    h.client.engine.credentials_changed(t);
    h.drain();
    assert_eq!(h.find(m2, |a| matches!(a, Action::CancelPull { req } if *req == held).then_some(())).len(), 1);
    let pushes = h.pushes_since(m2);
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0], (t, body), "the refused push goes again at once");
    assert_eq!(h.pulls_since(m2).len(), 1);
    h.run_for(secs(1));
    assert_eq!(contents(&h.server_doc(&id).unwrap().thread), [json!("while unauthorized")]);
    assert_ne!(h.client.engine.status().state, State::Unauthorized);
}

/// The notices the user gets (once each), decided by the engine on its
/// clock: a refused token, and a server unreachable for five minutes.
fn notices_since(h: &Harness, mark: usize) -> Vec<(Time, bool, String)> {
    h.find(mark, |a| match a {
        Action::Notify { error, message } => Some((*error, message.clone())),
        _ => None,
    })
    .into_iter()
    .map(|(t, (e, m))| (t, e, m))
    .collect()
}

#[test]
fn a_refused_token_is_told_once_until_the_token_changes() {
    let mut h = Harness::synced(EngineConfig::default());
    let id = h.create_thread("t");
    let (_, req, _) = h.next_push(secs(1));
    let m = h.mark();
    h.fail_push(req, http(401, "bad token"));
    // The pull refused too, and a force sync tried again: still told once.
    h.force_sync(None);
    if let Some((req, _)) = h.pushes.first().cloned() {
        h.fail_push(req, http(401, "bad token"));
    }
    h.tick(secs(60));
    let told = notices_since(&h, m);
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(told[0].1 && told[0].2.contains("refused our token"), "{told:?}");
    // A new token: told again if it is refused too.
    let m = h.mark();
    let t = h.now;
    h.client.engine.credentials_changed(t);
    h.drain();
    let (req, _) = h.pushes.first().cloned().expect("a new token: the push goes at once");
    h.fail_push(req, http(401, "still bad"));
    assert_eq!(notices_since(&h, m).len(), 1);
    let _ = id;
}

#[test]
fn a_server_unreachable_for_five_minutes_is_told_once_and_again_after_it_was_back() {
    let mut h = Harness::synced(EngineConfig::default());
    let id = h.create_thread("t");
    let (_, req, _) = h.next_push(secs(1));
    let m = h.mark();
    let down = h.now;
    h.fail_push(req, Failure::Network("connection refused".into()));
    // Probes keep failing.
    let fail_probes = |h: &mut Harness, until: Time| {
        while h.now < until {
            let next = h.client.engine.poll_timeout().unwrap();
            h.tick_until(next.min(until));
            for req in std::mem::take(&mut h.probes) {
                h.probes.push(req);
                h.answer_probe(req, Err(Failure::Network("connection refused".into())));
            }
        }
    };
    fail_probes(&mut h, down + secs(299));
    assert!(notices_since(&h, m).is_empty(), "not before five minutes");
    fail_probes(&mut h, down + secs(301));
    let told = notices_since(&h, m);
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(told[0].0, down + secs(300), "at five minutes, from the engine's own deadline");
    assert!(!told[0].1 && told[0].2.contains("unreachable for 5 minutes"), "{told:?}");
    fail_probes(&mut h, down + secs(900));
    assert_eq!(notices_since(&h, m).len(), 1, "once");
    // Back online, then offline again for five minutes: told again.
    let (_, i) = h.tick_until_action(secs(60), |a| matches!(a, Action::Probe { .. }));
    let Action::Probe { req, .. } = h.log[i].1 else { unreachable!() };
    h.answer_probe(req, Ok(()));
    h.run_for(secs(1));
    assert_eq!(h.client.engine.status().state, State::Synced);
    h.append(&id, json!("again"));
    let (_, req, _) = h.next_push(secs(1));
    let m = h.mark();
    let down = h.now;
    h.fail_push(req, Failure::Network("connection refused".into()));
    fail_probes(&mut h, down + secs(301));
    assert_eq!(notices_since(&h, m).len(), 1);
}

#[test]
fn the_first_sync_shows_progress_from_its_first_pull_to_catching_up() {
    // Threads on the server before this client first syncs.
    let mut other = Harness::synced(EngineConfig::default());
    for i in 0..3 {
        other.create_thread(&format!("t{i}"));
    }
    other.run_for(secs(1));
    let mut h = Harness::sharing(&other, 9);
    h.run_for(secs(1));
    let begin = h.find(0, |a| match a {
        Action::Progress { token, step: super::ProgressStep::Begin(title) } => Some((token.clone(), title.clone())),
        _ => None,
    });
    assert_eq!(begin.len(), 1, "shown when the first (snapshot) pull goes");
    assert!(begin[0].1.1.contains("first sync"));
    let end = h.find(0, |a| match a {
        Action::Progress { token, step: super::ProgressStep::End(msg) } => Some((token.clone(), msg.clone())),
        _ => None,
    });
    assert_eq!(end.len(), 1);
    assert_eq!(end[0].1, (begin[0].1.0.clone(), "3 threads".to_string()));
    // Later pulls show nothing.
    let m = h.mark();
    h.run_for(secs(60));
    assert!(h.find(m, |a| matches!(a, Action::Progress { .. }).then_some(())).is_empty());
}

#[test]
fn a_push_that_timed_out_after_the_server_applied_it_is_resent_and_applied_once() {
    let mut h = Harness::synced(EngineConfig::default());
    let id = h.create_thread("t");
    h.append(&id, json!("once"));
    let (_, req, body) = h.next_push(secs(1));
    // The server applied it; the answer never came (hand-crafted timeout).
    h.server_push(&body);
    h.fail_push(req, Failure::Timeout);
    assert_eq!(h.client.engine.status().state, State::Offline);
    let (_, i) = h.tick_until_action(secs(5), |a| matches!(a, Action::Probe { .. }));
    let Action::Probe { req: probe, .. } = h.log[i].1 else { unreachable!() };
    h.answer_probe(probe, Ok(()));
    let again = h.push_req();
    assert_eq!(h.pushes[0].1, body, "resent unchanged");
    let resp = h.answer_push(again);
    assert!(resp.results.iter().all(|r| r.status == MutationStatus::Duplicate), "{resp:?}");
    h.run_for(secs(1));
    assert_eq!(contents(&h.server_doc(&id).unwrap().thread), [json!("once")]);
    assert_eq!(h.server_log().len(), 3);
    h.assert_matches_server(&id);
    assert!(h.client.engine.is_idle());
}

#[test]
fn a_pull_refused_with_503_is_retried_after_a_backoff_without_going_offline() {
    let mut h = Harness::synced(EngineConfig::default());
    let held = h.pull_req();
    let t = h.now;
    h.answer_pull_with(held, PullOutcome::Failed(http(503, "unavailable")));
    let s = h.client.engine.status();
    assert_eq!((s.state, s.online), (State::Error, true));
    assert!(s.message.unwrap().contains("503"));
    let (at, _) = h.tick_until_action(secs(5), |a| matches!(a, Action::Pull { .. }));
    assert_delay(at.saturating_since(t), secs(1), "pull retry");
    // The retry succeeds (and so do the long-polls after it): the error is over.
    h.run_for(secs(60));
    assert!(h.client.engine.metrics().failures == 1);
    let s = h.client.engine.status();
    assert_eq!((s.state, s.message), (State::Synced, None), "status still reports the old 503");
}

// ===== 6. permanent 4xx ====================================================

#[test]
fn a_change_refused_with_413_is_rolled_back_and_later_changes_still_go_through() {
    let mut h = Harness::synced(EngineConfig::default());
    let id = h.create_thread("t");
    h.run_for(secs(1));
    let m = h.mark();
    let refused = h.append(&id, json!("too large for the proxy")).message_id.unwrap();
    let (_, req, body) = h.next_push(secs(1));
    assert_eq!(mutations(&body), [(2, id.clone())]);
    let refusal = h.mark();
    h.fail_push(req, http(413, "payload too large"));

    let rollbacks = h.find(m, |a| match a {
        Action::Rollback { thread_id, reason, ops } => Some((thread_id.clone(), reason.clone(), ops.clone())),
        _ => None,
    });
    assert_eq!(rollbacks.len(), 1);
    let (_, (thread_id, reason, ops)) = &rollbacks[0];
    assert_eq!(thread_id, &id);
    assert!(reason.contains("413"), "{reason}");
    assert!(matches!(&ops[..], [Op::Append { message, .. }] if message.id == refused), "{ops:?}");
    assert!(h.client.engine.thread(&id).unwrap().position(&refused).is_none(), "the local view no longer has it");
    let written = h.file_of(&id);
    assert!(written.position(&refused).is_none(), "the file was rewritten without it");
    assert!(written.messages.is_empty());
    let rewrites =
        h.find(refusal, |a| matches!(a, Action::WriteFile { thread_id, .. } if *thread_id == id).then_some(()));
    assert_eq!(rewrites.len(), 1, "the file is written once after the refusal");

    // A change to another thread goes at once, under the id the server
    // never recorded: no gap.
    let t = h.now;
    let other = h.create_thread("other");
    let (at, req, body) = h.next_push(secs(1));
    assert_eq!(at, t + ms(100));
    assert_eq!(mutations(&body), [(2, other.clone())]);
    let resp = h.answer_push(req);
    assert_eq!(resp.results[0].status, MutationStatus::Applied);

    // The refused thread's next change waits out the per-thread backoff
    // (so a rewrite of the same content cannot become a push loop).
    let m2 = h.mark();
    h.append(&id, json!("small"));
    let (at, req, body) = h.next_push(secs(120));
    assert_eq!(at, t + h.cfg.thread_backoff);
    assert_eq!(mutations(&body), [(3, id.clone())]);
    let resp = h.answer_push(req);
    assert_eq!(resp.results[0].status, MutationStatus::Applied);
    assert!(h.warnings_since(m2).is_empty(), "{:?}", h.warnings_since(m2));
    h.run_for(secs(1));
    assert_eq!(contents(&h.server_doc(&id).unwrap().thread), [json!("small")]);
    h.assert_matches_server(&id);
    h.assert_matches_server(&other);
}

#[test]
fn a_thread_held_after_a_refusal_does_not_make_the_engine_spin_while_the_lane_is_busy() {
    let mut h = Harness::synced(EngineConfig::default());
    let a = h.create_thread("a");
    let b = h.create_thread("b");
    h.run_for(secs(1));
    h.append(&a, json!("refused"));
    let (refused_at, req, _) = h.next_push(secs(1));
    h.fail_push(req, http(413, "payload too large"));
    // Shortly before a's backoff ends, a and b change; b's push is slow to
    // answer, so the small lane is busy when a's backoff runs out.
    h.tick_until(refused_at + h.cfg.thread_backoff - secs(1));
    h.append(&a, json!("retry"));
    h.append(&b, json!("slow"));
    let (_, slow, body) = h.next_push(secs(1));
    assert_eq!(mutations(&body).iter().map(|(_, t)| t.clone()).collect::<Vec<_>>(), std::slice::from_ref(&b));
    // Past the end of the backoff, with the push still out: every deadline
    // the engine names must be in the future once it has handled `now`.
    let end = refused_at + h.cfg.thread_backoff + secs(2);
    while let Some(due) = h.client.engine.poll_timeout().filter(|&d| d <= end) {
        let now = h.now.max(due);
        h.now = now;
        h.client.engine.handle_timeout(now);
        h.drain();
        let next = h.client.engine.poll_timeout();
        assert!(next.is_none_or(|n| n > now), "handled {now:?}, yet the engine asks to be woken at {next:?}");
    }
    h.now = end;
    h.answer_push(slow);
    h.run_for(secs(1));
    assert_eq!(contents(&h.server_doc(&a).unwrap().thread), [json!("retry")]);
    assert_eq!(contents(&h.server_doc(&b).unwrap().thread), [json!("slow")]);
}

#[test]
fn a_413_on_a_batch_finds_and_rolls_back_only_the_offending_mutation() {
    let mut h = Harness::synced(EngineConfig::default());
    let a = h.create_thread("a");
    let b = h.create_thread("b");
    let c = h.create_thread("c");
    h.run_for(secs(1));
    let m = h.mark();
    h.append(&a, json!("for a"));
    h.append(&b, json!("too big for the proxy"));
    h.append(&c, json!("for c"));
    h.tick(ms(100));
    // A proxy refuses any request carrying thread b (hand-crafted 413);
    // everything else reaches the server core.
    let mut sent = Vec::new();
    while let Some((req, body)) = h.pushes.first().cloned() {
        sent.push(mutations(&body));
        assert!(sent.len() < 10, "{sent:?}");
        if body.mutations.iter().any(|m| m.thread_id == b) {
            h.fail_push(req, http(413, "payload too large"));
        } else {
            let resp = h.answer_push(req);
            assert!(resp.results.iter().all(|r| r.status == MutationStatus::Applied), "{resp:?}");
        }
    }
    assert_eq!(
        sent,
        [
            vec![(4, a.clone()), (5, b.clone()), (6, c.clone())],
            vec![(4, a.clone())],
            vec![(5, b.clone())],
            vec![(5, c.clone())],
        ]
    );
    let rolled: Vec<ThreadId> = h
        .find(m, |x| match x {
            Action::Rollback { thread_id, .. } => Some(thread_id.clone()),
            _ => None,
        })
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    assert_eq!(rolled, std::slice::from_ref(&b));
    h.run_for(secs(1));
    assert_eq!(contents(&h.server_doc(&a).unwrap().thread), [json!("for a")]);
    assert!(contents(&h.server_doc(&b).unwrap().thread).is_empty());
    assert_eq!(contents(&h.server_doc(&c).unwrap().thread), [json!("for c")]);
    for id in [&a, &b, &c] {
        h.assert_matches_server(id);
    }
}

// ===== 7. an item the server rejects =======================================

#[test]
fn an_item_the_server_rejects_is_rolled_back_and_the_rest_of_the_push_applies() {
    // The engine allows 1 MiB messages, the server only 1000 bytes.
    let cfg =
        EngineConfig { limits: Limits { max_message_bytes: 1 << 20, ..Limits::default() }, ..EngineConfig::default() };
    let mut h = Harness::new(cfg);
    h.server_limits = Limits { max_message_bytes: 1000, ..Limits::default() };
    h.run_for(secs(1));
    let id = h.create_thread("t");
    h.run_for(secs(1));

    let m = h.mark();
    let small = h.append(&id, json!("short")).message_id.unwrap();
    let big = h.append(&id, json!("x".repeat(5000))).message_id.unwrap();
    h.set_title(&id, "renamed");
    let (_, req, body) = h.next_push(secs(1));
    assert_eq!(body.mutations.len(), 1);
    assert_eq!(body.mutations[0].ops.len(), 3);
    let resp = h.answer_push(req);
    assert_eq!(resp.results[0].status, MutationStatus::Rejected);

    let rollbacks = h.find(m, |a| match a {
        Action::Rollback { thread_id, reason, ops } => Some((thread_id.clone(), reason.clone(), ops.clone())),
        _ => None,
    });
    assert_eq!(rollbacks.len(), 1, "{rollbacks:?}");
    let (_, (thread_id, reason, ops)) = &rollbacks[0];
    assert_eq!(thread_id, &id);
    assert!(reason.contains("the limit is 1000 bytes"), "{reason}");
    assert!(matches!(&ops[..], [Op::Append { message, .. }] if message.id == big), "{ops:?}");

    let local = h.client.engine.thread(&id).unwrap();
    assert_eq!(local.messages.iter().map(|m| m.id.clone()).collect::<Vec<_>>(), std::slice::from_ref(&small));
    assert_eq!(local.title, "renamed");
    let file = h.file_of(&id);
    assert!(file.position(&big).is_none() && file.position(&small).is_some() && file.title == "renamed");

    h.run_for(secs(1));
    let server = h.server_doc(&id).unwrap();
    assert_eq!(contents(&server.thread), [json!("short")]);
    assert_eq!(server.thread.title, "renamed");
    h.assert_matches_server(&id);
}

// ===== 8. polling ===========================================================

#[test]
fn an_idle_adaptive_engine_pulls_every_minute() {
    let cfg = EngineConfig { poll: PollMode::Adaptive { base: secs(5), max: secs(60) }, ..EngineConfig::default() };
    let mut h = Harness::new(cfg);
    h.run_for(secs(300));
    let times: Vec<Time> = h
        .pulls_since(0)
        .into_iter()
        .map(|(t, _, w)| {
            assert_eq!(w, None, "adaptive polling never asks the server to hold");
            t
        })
        .collect();
    let want: Vec<Time> = (0..=5).map(|i| T0 + secs(60 * i)).collect();
    assert_eq!(times, want);
}

#[test]
fn an_active_adaptive_engine_pulls_sooner() {
    let cfg = EngineConfig { poll: PollMode::Adaptive { base: secs(5), max: secs(60) }, ..EngineConfig::default() };
    let mut h = Harness::new(cfg);
    h.run_for(secs(90));
    let (t, m) = (h.now, h.mark());
    let id = h.create_thread("busy");
    for i in 0..4 {
        h.append(&id, json!(format!("message {i}")));
    }
    h.run_for(secs(60));
    let times: Vec<Time> = h.pulls_since(m).into_iter().map(|(t, _, _)| t).collect();
    assert!(times.len() >= 3, "{times:?}");
    assert_eq!(times[0], t + ms(100), "a pull right after the push confirms it");
    let gap = times[1].saturating_since(times[0]);
    assert!(gap >= secs(5) && gap <= secs(15), "next pull after {gap:?}");
}

#[test]
fn fixed_polling_pulls_exactly_every_five_seconds() {
    let cfg = EngineConfig { poll: PollMode::Fixed(secs(5)), ..EngineConfig::default() };
    let mut h = Harness::new(cfg);
    h.run_for(secs(30));
    let times: Vec<Time> = h.pulls_since(0).into_iter().map(|(t, _, _)| t).collect();
    let want: Vec<Time> = (0..=6).map(|i| T0 + secs(5 * i)).collect();
    assert_eq!(times, want);
}

#[test]
fn long_polling_keeps_exactly_one_pull_outstanding() {
    let mut h = Harness::new(EngineConfig::default());
    h.run_for(secs(1));
    let id = h.create_thread("lp");
    for i in 0..12 {
        h.run_for(secs(7));
        h.append(&id, json!(format!("m{i}")));
        if i % 3 == 0 {
            h.force_sync(None);
        }
    }
    h.run_for(secs(60));
    assert_eq!(h.max_pulls, 1, "never two pulls outstanding");
    assert_eq!(h.pulls.len(), 1, "one pull is always outstanding");
    let pulls = h.pulls_since(0);
    assert!(pulls.len() > 10, "{}", pulls.len());
    assert_eq!(pulls[0].2, None, "the first sync is not held");
    // Every other pull is held, but the one confirming each of the 4 force
    // syncs (held, it would keep the force sync waiting up to 25 s).
    let unheld: Vec<_> = pulls[1..].iter().filter(|(_, _, wait)| *wait != Some(crate::engine::LONG_POLL)).collect();
    assert!(unheld.iter().all(|(_, _, wait)| wait.is_none()), "{unheld:?}");
    assert_eq!(unheld.len(), 4, "{unheld:?}");
    assert_eq!(contents(&h.server_doc(&id).unwrap().thread).len(), 12);
}

// ===== 9. optimistic local operations ========================================

#[test]
fn a_local_append_is_written_at_once_and_confirmed_by_the_push() {
    let mut h = Harness::synced(EngineConfig::default());
    let id = h.create_thread("t");
    h.run_for(secs(1));
    let before = h.client.engine.thread(&id).unwrap().v;
    let (t, m) = (h.now, h.mark());
    let r = h.append(&id, json!("hello"));
    let mid = r.message_id.clone().unwrap();
    assert_eq!(r.thread_id, id);
    assert_eq!(r.version, before + 1);

    let updated = h.find(m, |a| match a {
        Action::ThreadUpdated { thread_id, version, message_count, origin, .. } if thread_id == &id => {
            Some((*version, *message_count, *origin))
        }
        _ => None,
    });
    assert_eq!(updated, [(t, (r.version, 1, Origin::Local))]);
    let writes = h.find(m, |a| match a {
        Action::WriteFile { thread_id, write } if *thread_id == id => Some(write.clone()),
        _ => None,
    });
    assert_eq!(writes.len(), 1, "{writes:?}");
    let (at, write) = &writes[0];
    assert_eq!(*at, t);
    // A thread made here is a log: the message is appended to it.
    assert!(matches!(write, FileWrite::Append { records, .. } if records.len() == 1), "{write:?}");
    let f = h.file_of(&id);
    assert_eq!(f.messages.iter().map(|m| m.id.clone()).collect::<Vec<_>>(), std::slice::from_ref(&mid));
    assert_eq!(f.messages[0].content.value(), Some(&json!("hello")));
    assert_eq!(h.client.engine.thread_status(&id).unwrap().state, ThreadState::Pending);

    h.run_for(secs(1));
    assert_eq!(h.client.engine.thread_status(&id).unwrap().state, ThreadState::Synced);
    assert!(h.client.engine.is_idle());
    let server = h.server_doc(&id).unwrap();
    assert_eq!(server.get(&mid).and_then(|m| m.content.value().cloned()), Some(json!("hello")));
    h.assert_matches_server(&id);
}

// ===== 10. conflicts ========================================================

/// Two clients on one server that both saw thread "orig"; both retitle it,
/// `a` first. Returns (a, b, thread).
fn concurrent_titles() -> (Harness, Harness, ThreadId) {
    let mut a = Harness::synced(EngineConfig::default());
    let mut b = Harness::sharing(&a, 2);
    b.run_for(secs(1));
    let id = a.create_thread("orig");
    a.run_for(secs(1));
    b.run_for(secs(1));
    assert_eq!(b.client.engine.thread(&id).map(|t| t.title.as_str()), Some("orig"));

    a.set_title(&id, "from a");
    b.set_title(&id, "from b");
    a.run_for(secs(1));
    // b pushes before it pulls a's change.
    let (_, req, _) = b.next_push(secs(1));
    b.answer_push(req);
    (a, b, id)
}

#[test]
fn concurrent_titles_make_a_conflict_for_the_later_writer() {
    let (_a, b, id) = concurrent_titles();
    // As the user sees them (bases loaded).
    let conflicts = b.client.conflicts().unwrap();
    assert_eq!(conflicts.len(), 1);
    let c = &conflicts[0];
    assert_eq!(c.thread_id, id);
    assert_eq!(c.kind, ConflictKind::Title);
    assert_eq!((c.base.value(), &c.local, &c.remote), (Some(&json!("orig")), &json!("from b"), &json!("from a")));
    assert_eq!(b.client.engine.status().state, State::Conflict);
    assert_eq!(b.client.engine.status().conflicts, 1);
    assert_eq!(b.client.engine.thread_status(&id).unwrap().state, ThreadState::Conflict);
    let saved = b.find(0, |x| match x {
        Action::Save(Save::Conflicts(conflicts)) => Some(conflicts.clone()),
        _ => None,
    });
    assert_eq!(saved.last().map(|(_, c)| c.clone()), Some(conflicts.clone()));
    assert_eq!(b.client.store.conflicts(), conflicts);
    assert_eq!(b.server_doc(&id).unwrap().thread.title, "from a", "the first write stays");
}

#[test]
fn choosing_local_makes_the_refused_title_win_everywhere() {
    let (mut a, mut b, id) = concurrent_titles();
    b.run_for(secs(1));
    assert_eq!(b.client.engine.thread(&id).unwrap().title, "from a");
    let cid = b.client.engine.conflicts()[0].id.clone();
    b.client.resolve_conflict(b.now, &cid, Choice::Local).unwrap();
    b.drain();
    assert!(b.client.engine.conflicts().is_empty());
    assert_eq!(b.client.engine.thread(&id).unwrap().title, "from b", "applied locally at once");
    b.run_for(secs(1));
    assert_eq!(b.server_doc(&id).unwrap().thread.title, "from b");
    a.now = b.now;
    a.run_for(secs(1));
    assert_eq!(a.client.engine.thread(&id).unwrap().title, "from b");
    a.assert_matches_server(&id);
    b.assert_matches_server(&id);
    assert_eq!(b.client.engine.status().state, State::Synced);
}

#[test]
fn choosing_remote_only_removes_the_conflict() {
    let (_a, mut b, id) = concurrent_titles();
    b.run_for(secs(1));
    let m = b.mark();
    let cid = b.client.engine.conflicts()[0].id.clone();
    b.client.resolve_conflict(b.now, &cid, Choice::Remote).unwrap();
    b.drain();
    assert!(b.client.engine.conflicts().is_empty());
    assert!(b.client.store.conflicts().is_empty());
    assert!(
        b.find(m, |x| matches!(x, Action::Save(Save::Conflicts(conflicts)) if conflicts.is_empty()).then_some(()))
            .len()
            == 1
    );
    b.run_for(secs(1));
    assert!(b.pushes_since(m).is_empty(), "nothing to send");
    assert_eq!(b.client.engine.thread(&id).unwrap().title, "from a");
    assert_eq!(b.client.engine.status().state, State::Synced);
    assert!(b.client.resolve_conflict(b.now, &cid, Choice::Remote).is_err(), "already resolved");
}

// ===== 11. force sync =======================================================

#[test]
fn force_sync_skips_the_windows_and_reports_done_after_push_and_pull() {
    let mut h = Harness::synced(EngineConfig::default());
    let held = h.pull_req();
    let (t, m) = (h.now, h.mark());
    let id = tid("T-force");
    h.snapshot(file(&id, "now please", &[("m-1", json!("sync me"))]));
    let ticket = h.force_sync(None);

    let pushes = h.pushes_since(m);
    assert_eq!(pushes.len(), 1, "no debounce, no batch window");
    assert_eq!(pushes[0].0, t);
    assert_eq!(mutations(&pushes[0].1), [(1, id.clone())]);
    let done = |h: &Harness| {
        h.find(m, |a| match a {
            Action::SyncDone { ticket, result } => Some((*ticket, result.clone())),
            _ => None,
        })
    };
    assert!(done(&h).is_empty());

    h.tick(ms(40));
    let m2 = h.mark();
    h.answer_push(h.push_req());
    assert!(done(&h).is_empty(), "the push alone does not finish it");
    // The held long-poll began before the push: a fresh pull replaces it.
    assert_eq!(h.find(m2, |a| matches!(a, Action::CancelPull { req } if *req == held).then_some(())).len(), 1);
    let fresh = h.pull_req();
    assert_ne!(fresh, held);
    h.answer_pull(fresh);
    assert_eq!(done(&h), [(t + ms(40), (ticket, Ok(())))]);
    h.assert_matches_server(&id);
    // The editor's status is current when the sync is reported done (not one
    // status interval later): the last status before SyncDone says synced.
    let at = h.log.iter().rposition(|(_, a)| matches!(a, Action::SyncDone { .. })).unwrap();
    let before = h.log[..at].iter().rev().find_map(|(_, a)| match a {
        Action::Status(s) => Some(s.clone()),
        _ => None,
    });
    assert_eq!(before, Some(h.client.engine.status()));
    assert_eq!(h.client.engine.status().state, State::Synced);
}

#[test]
fn force_sync_cancels_a_held_long_poll_and_pulls_fresh() {
    let mut h = Harness::synced(EngineConfig::default());
    let held = h.pull_req();
    let (t, m) = (h.now, h.mark());
    let ticket = h.force_sync(None);
    assert_eq!(h.find(m, |a| matches!(a, Action::CancelPull { req } if *req == held).then_some(())), [(t, ())]);
    let pulls = h.pulls_since(m);
    assert_eq!(pulls.len(), 1);
    assert_eq!(pulls[0].0, t);
    // Nothing changed on the server: it answers when the pull's wait (if
    // any) runs out. A sync the user asked for should not wait for that.
    h.run_for(secs(2));
    let done = h.find(m, |a| match a {
        Action::SyncDone { ticket, result } => Some((*ticket, result.clone())),
        _ => None,
    });
    assert_eq!(done.len(), 1, "no SyncDone within 2 s; fresh pull: {:?}", pulls[0]);
    assert_eq!(done[0].1, (ticket, Ok(())));
}

#[test]
fn force_sync_with_fixed_polling_pulls_again_when_the_pull_in_flight_predates_the_push() {
    // The pull that a first push's answer starts is still out when the last
    // push lands: it cannot confirm that push, so a new one must follow now,
    // not at the next poll 10 minutes later.
    let cfg = EngineConfig { flush_when_idle: true, poll: PollMode::Fixed(secs(600)), ..EngineConfig::default() };
    let mut h = Harness::synced(cfg);
    let m = h.mark();
    let id = h.create_thread("first");
    // The leading edge: pushed at once (by the change itself or a timer due now).
    h.tick(ms(0));
    assert_eq!(h.pushes_since(m).len(), 1);
    let first = h.push_req();
    h.append(&id, json!("second"));
    let ticket = h.force_sync(None);
    h.answer_push(first);
    let pull = h.pull_req();
    let second = h.push_req();
    h.tick(ms(10));
    h.answer_push(second);
    h.answer_pull(pull);
    h.run_for(secs(2));
    let done = h.find(m, |a| match a {
        Action::SyncDone { ticket, result } => Some((*ticket, result.clone())),
        _ => None,
    });
    assert_eq!(done.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>(), [(ticket, Ok(()))]);
    h.assert_matches_server(&id);
}

#[test]
fn force_sync_reports_a_network_failure() {
    let mut h = Harness::synced(EngineConfig::default());
    let m = h.mark();
    h.create_thread("unlucky");
    let ticket = h.force_sync(None);
    let req = h.push_req();
    h.fail_push(req, Failure::Network("connection reset".into()));
    let done = h.find(m, |a| match a {
        Action::SyncDone { ticket, result } => Some((*ticket, result.clone())),
        _ => None,
    });
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].1.0, ticket);
    let err = done[0].1.1.clone().unwrap_err();
    assert!(err.contains("connection reset"), "{err}");
}

// ===== 12. crash recovery ===================================================

#[derive(Clone, Copy, Debug)]
enum CrashPoint {
    /// Changes written to the file, not yet sent.
    BeforePush,
    /// Push sent, lost on the way.
    PushLost,
    /// The server applied the push, the answer was lost.
    AnswerLost,
    /// Push answered, not yet seen in a pull.
    BeforePull,
}

#[test]
fn after_a_crash_pending_work_is_rederived_and_reaches_the_server_exactly_once() {
    for point in [CrashPoint::BeforePush, CrashPoint::PushLost, CrashPoint::AnswerLost, CrashPoint::BeforePull] {
        let mut h = Harness::synced(EngineConfig::default());
        let id = h.create_thread("t");
        h.run_for(secs(1));
        let one = h.append(&id, json!("one")).message_id.unwrap();
        let two = h.append(&id, json!("two")).message_id.unwrap();
        match point {
            CrashPoint::BeforePush => h.tick(ms(50)),
            CrashPoint::PushLost => {
                h.next_push(secs(1));
            }
            CrashPoint::AnswerLost => {
                let (_, _, body) = h.next_push(secs(1));
                h.server_push(&body);
            }
            CrashPoint::BeforePull => {
                let (_, req, _) = h.next_push(secs(1));
                h.answer_push(req);
            }
        }
        let file = h.file_of(&id);
        assert!(file.position(&one).is_some() && file.position(&two).is_some(), "{point:?}: written before the crash");

        h.tick(secs(1));
        h.restart(100);
        h.run_for(secs(5));
        let server = h.server_doc(&id).unwrap();
        let ids: Vec<MessageId> = server.thread.messages.iter().map(|m| m.id.clone()).collect();
        assert_eq!(ids, [one.clone(), two.clone()], "{point:?}");
        let inserts = h.server_log().iter().filter(|c| matches!(c.effect, Effect::Insert { .. })).count();
        assert_eq!(inserts, 2, "{point:?}: each message inserted once");
        h.assert_matches_server(&id);
        assert!(h.client.engine.is_idle(), "{point:?}");
    }
}

#[test]
fn a_message_sent_before_a_crash_and_deleted_from_the_file_meanwhile_stays_deleted() {
    // `applied`: whether the lost push had reached the server. A `.jsonl`
    // thread (made here, the message appended here) and a `.json` one (the
    // message written by an assistant, so a rewrite without it is a delete).
    for kind in [FileKind::Jsonl, FileKind::Json] {
        for applied in [false, true] {
            let mut h = Harness::synced(EngineConfig::default());
            let (id, gone) = if kind == FileKind::Jsonl {
                let id = h.create_thread("t");
                h.append(&id, json!("keep"));
                h.run_for(secs(1));
                (id.clone(), h.append(&id, json!("delete me")).message_id.unwrap())
            } else {
                let id = tid("T-json");
                h.snapshot(file(&id, "t", &[("m-keep", json!("keep"))]));
                h.run_for(secs(1));
                h.snapshot(file(&id, "t", &[("m-keep", json!("keep")), ("m-gone", json!("delete me"))]));
                (id, MessageId::new("m-gone").unwrap())
            };
            assert_eq!(h.client.files.kind_of(&id), Some(kind));
            let (_, _, body) = h.next_push(secs(1));
            if applied {
                h.server_push(&body);
            }
            assert_eq!(h.client.store.ops(&id).len(), 1, "{kind:?}: saved before the push");
            // Crash; while the sidecar is down the user deletes the message.
            h.crashed = true;
            let mut f = h.file_of(&id);
            f.messages.retain(|m| m.id != gone);
            h.client.files.assistant_write(&f);
            h.tick(secs(1));
            h.restart(100);
            h.run_for(secs(5));

            let server = h.server_doc(&id).unwrap();
            assert_eq!(contents(&server.thread), [json!("keep")], "{kind:?}, applied before the crash: {applied}");
            assert!(
                h.file_of(&id).position(&gone).is_none(),
                "{kind:?}: brought back into the file (applied: {applied})"
            );
            h.assert_matches_server(&id);
        }
    }
}

#[test]
fn a_change_costs_two_transactions_and_the_files_new_stamp_rides_with_the_second() {
    // The change itself, then the server's answer; what the client learnt
    // about its own write goes in with the answer (a crash before that is
    // covered by the crash-at-every-point test below).
    let mut h = Harness::synced(EngineConfig::default());
    let id = h.create_thread("t");
    h.run_for(secs(1));
    let before = h.client.store.commits;
    let m = h.append(&id, json!("one")).message_id.unwrap();
    assert_eq!(h.client.store.commits, before + 1, "the change alone, before the answer");
    h.run_for(secs(2));
    assert!(h.client.engine.is_idle());
    assert_eq!(h.client.store.commits, before + 2);
    let stored = h.client.store.stored(&id).unwrap();
    assert!(stored.file.view.messages.contains_key(&m), "the file is known to hold the message");
    assert!(stored.ops.is_empty(), "confirmed");
}

#[test]
fn a_crash_after_any_action_loses_nothing_that_was_written_and_duplicates_nothing() {
    // The scenario, replayed with the crash at each point of the client's
    // steps in turn (before a commit, a file write or another action).
    let scenario = |crash_at: Option<usize>| -> (Harness, ThreadId, usize) {
        let mut h = Harness::synced(EngineConfig::default());
        let id = h.create_thread("t");
        h.run_for(secs(1));
        let start = h.points;
        if let Some(k) = crash_at {
            h.crash_at = Some(start + k);
        }
        h.append(&id, json!("one"));
        h.run_for(secs(2));
        // An assistant adds a message to the file as it reads it (it goes on
        // writing while the sidecar is dead).
        h.snapshot({
            let mut f = h.file_of(&id);
            f.messages.push(file(&id, "", &[("m-file", json!("from the file"))]).messages[0].clone());
            f
        });
        h.run_for(secs(2));
        h.append(&id, json!("two"));
        h.run_for(secs(2));
        let len = h.points - start;
        (h, id, len)
    };
    let (_, _, total) = scenario(None);
    assert!(total > 20, "{total}");
    for k in 0..=total {
        let (mut h, id, _) = scenario(Some(k));
        assert_eq!(h.crashed, k < total, "crash at point {k} of {total}");
        let texts = |t: &Thread| contents(t).iter().map(Value::to_string).collect::<Vec<String>>();
        // What must survive: what the file shows, what the store kept to
        // send, and what the server already has.
        let on_disk: BTreeSet<String> =
            h.client.files.thread(&id).map(|f| texts(&f).into_iter().collect()).unwrap_or_default();
        let stored: BTreeSet<String> = h
            .client
            .store
            .ops(&id)
            .iter()
            .filter_map(|op| match op {
                Op::Append { message, .. } => Some(h.client.store.load_message(&id, message).unwrap()),
                _ => None,
            })
            .map(|m| m.content.value().unwrap().to_string())
            .collect();
        let confirmed: BTreeSet<String> = texts(&h.server_doc(&id).unwrap().thread).into_iter().collect();
        h.tick(secs(1));
        h.restart(100 + k as u64);
        h.run_for(secs(10));
        let server = texts(&h.server_doc(&id).unwrap().thread);
        let unique: BTreeSet<String> = server.iter().cloned().collect();
        assert_eq!(unique.len(), server.len(), "crash at point {k}: duplicated {server:?}");
        assert!(on_disk.is_subset(&unique), "crash at point {k}: on disk {on_disk:?}, server {server:?}");
        assert!(stored.is_subset(&unique), "crash at point {k}: stored {stored:?}, server {server:?}");
        assert!(confirmed.is_subset(&unique), "crash at point {k}: on the server {confirmed:?}, then {server:?}");
        assert!(
            !h.server_log().iter().any(|c| matches!(c.effect, Effect::Delete { .. })),
            "crash at point {k}: a delete"
        );
        h.assert_matches_server(&id);
        assert!(h.client.engine.is_idle(), "crash at point {k}");
    }
}

// ===== 13. performance monitor ===============================================

#[test]
fn metrics_count_pushes_and_a_slow_push_warns_once_there_is_history() {
    let mut h = Harness::synced(EngineConfig::default());
    let id = h.create_thread("perf");
    let m = h.mark();
    let mut bytes = 0u64;
    let mut items = 0u64;
    // Push n answered after `latency`.
    let mut push = |h: &mut Harness, i: usize, latency: Duration| {
        if i > 0 {
            h.append(&id, json!(format!("message {i}")));
        }
        let (_, req, body) = h.next_push(secs(1));
        bytes += body.mutations.iter().flat_map(|m| &m.ops).map(Op::size).sum::<usize>() as u64;
        items += body.mutations.len() as u64;
        h.tick(latency);
        h.answer_push(req);
        h.run_for(secs(1));
    };
    for i in 0..25 {
        // One slow push early on: not enough history to call it slow.
        let latency = if i == 2 { ms(1_500) } else { ms(200) };
        push(&mut h, i, latency);
    }
    assert!(h.warnings_since(m).is_empty(), "{:?}", h.warnings_since(m));
    let s = h.client.engine.metrics();
    assert_eq!(s.pushes, 25);
    assert_eq!(s.pulls, 1, "held long-polls are not timed");
    assert_eq!(s.sync_p50_ms, Some(200));
    assert_eq!(s.sync_p95_ms, Some(200));
    assert_eq!(s.slow_syncs, 0);

    push(&mut h, 25, ms(5_000));
    let warnings = h.warnings_since(m);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("slow sync") && warnings[0].contains("5000 ms"), "{}", warnings[0]);
    let s = h.client.engine.metrics();
    assert_eq!((s.pushes, s.items_pushed, s.bytes_pushed), (26, items, bytes));
    assert_eq!(s.slow_syncs, 1);
    assert_eq!(s.failures, 0);
}

// ===== 14. refetch ==========================================================

#[test]
fn a_refetch_answer_restarts_from_a_snapshot_and_ends_equal_to_the_server() {
    let mut h = Harness::synced(EngineConfig::default());
    let mine = h.create_thread("mine");
    h.append(&mine, json!("local"));
    h.run_for(secs(1));
    let held = h.pull_req();

    // Meanwhile another client writes, and the server compacts its log.
    let mut other = Harness::sharing(&h, 7);
    other.run_for(secs(1));
    let theirs = other.create_thread("theirs");
    other.append(&theirs, json!("remote"));
    other.set_title(&mine, "renamed elsewhere");
    other.run_for(secs(1));
    h.store.borrow_mut().compact(&h.team, 0);

    let m = h.mark();
    h.answer_pull_with(held, PullOutcome::Refetch);
    let pulls = h.pulls_since(m);
    assert_eq!(pulls.len(), 1);
    assert_eq!((pulls[0].0, &pulls[0].1, pulls[0].2), (h.now, &None, None), "from scratch, not held");
    assert!(h.find(m, |a| matches!(a, Action::Save(Save::Cursor(None))).then_some(())).len() == 1);
    assert_eq!(h.warnings_since(m).len(), 1);

    h.run_for(secs(1));
    h.assert_matches_server(&mine);
    h.assert_matches_server(&theirs);
    assert_eq!(h.client.engine.thread(&mine).unwrap().title, "renamed elsewhere");
    assert_eq!(contents(&h.view(&theirs)), [json!("remote")]);
    assert_eq!(h.client.engine.cursor(), Some(&Cursor::Log(h.server_head())));
}

// ===== file rewrites racing remote changes ===================================

/// An assistant rewrote its `.json` file from a version it had read before a
/// message arrived from elsewhere (and the sidecar wrote it into the file):
/// the rewrite adds the assistant's message and deletes nothing, the engine
/// telling by itself that the assistant never saw the remote message.
#[test]
fn a_file_rewritten_from_an_older_version_does_not_delete_newer_remote_messages() {
    let mut a = Harness::synced(EngineConfig::default());
    let id = tid("T-race");
    a.snapshot(file(&id, "race", &[("m-first", json!("first"))]));
    a.run_for(secs(2));
    assert_eq!(a.client.files.kind_of(&id), Some(FileKind::Json));
    a.assert_matches_server(&id);
    // The assistant reads its file.
    let seen_by_assistant = a.file_of(&id);
    // Another client appends; A pulls it and writes it into the file.
    let mut b = Harness::sharing(&a, 77);
    b.run_for(secs(2));
    b.append(&id, json!("from elsewhere"));
    b.run_for(secs(2));
    a.now = b.now;
    a.run_for(secs(2));
    assert_eq!(contents(&a.view(&id)), [json!("first"), json!("from elsewhere")]);
    assert_eq!(contents(&a.file_of(&id)), [json!("first"), json!("from elsewhere")], "the sidecar wrote it");
    // The assistant writes back what it had read, plus its answer.
    let mut rewritten = seen_by_assistant.clone();
    rewritten.messages.push(Arc::new(Message {
        id: MessageId::new("m-assistant").unwrap(),
        role: "assistant".into(),
        content: json!("the assistant's answer").into(),
        timestamp: 0,
        extra: Default::default(),
    }));
    a.snapshot(rewritten);
    a.run_for(secs(3));
    let want = [json!("first"), json!("from elsewhere"), json!("the assistant's answer")];
    assert_eq!(contents(&a.view(&id)), want);
    assert_eq!(contents(&a.server_doc(&id).unwrap().thread), want);
    assert_eq!(contents(&a.file_of(&id)), want, "the file shows the remote message again");
    assert!(!a.server_log().iter().any(|c| matches!(c.effect, Effect::Delete { .. })), "a delete reached the server");
    a.assert_matches_server(&id);
}

// ===== our own changes, pulled back =========================================

/// Our own inserts come back from the server without their content (we have
/// it); a body lost from the store after all is fetched from the server and
/// kept, so the file still gets the content.
#[test]
fn our_inserts_come_back_without_content_and_a_lost_body_is_fetched() {
    let mut h = Harness::synced(EngineConfig::default());
    let id = h.create_thread("own");
    h.append(&id, json!("x".repeat(5000)));
    let (_, req, _) = h.next_push(secs(1));
    h.answer_push(req);
    // What the server would answer us now: the insert, without its content.
    let PullOutcome::Ok(r) = h.server_pull(Some(&Cursor::Log(0))) else { panic!("pull failed") };
    let r = r.as_read_by(&h.client.engine.client_ids());
    let insert = r.changes.iter().find_map(|c| match &c.effect {
        Effect::Insert { message, .. } => Some(message.clone()),
        _ => None,
    });
    assert!(insert.expect("our insert is in the log").content.is_elided());
    assert!(h.client.missing_bodies(&r).is_empty(), "we have the body");

    // The body is lost before the pull answers; the answer brings it back
    // through a fetch.
    h.client.store.forget_bodies();
    h.run_for(secs(5));
    let first = h.file_of(&id).messages[0].id.clone();
    assert!(h.client.store.has_body(&id, &first, ContentHash::of(&json!("x".repeat(5000)))), "fetched and kept");
    // A write that needs it finds it.
    h.append(&id, json!("second"));
    h.run_for(secs(5));
    assert_eq!(contents(&h.file_of(&id)), [json!("x".repeat(5000)), json!("second")]);
}
