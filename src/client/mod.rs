//! A client machine's local side: the sync engine, its state store and its
//! thread files, put together.
//!
//! [`Client`] performs everything the engine asks of the disk — the saves of
//! a step in one transaction, then the file writes, whose results (and the
//! reads that follow a refused write) go straight back to the engine — and
//! hands back the rest (requests, notifications) in order. Before an input
//! that touches a thread not in memory it loads that thread.
//!
//! The sidecar drives it with its SQLite database and the real files
//! (`lsp/`); the simulator and the engine tests with the in-memory models in
//! [`mem`]. So the logic between the engine and the disk exists once.

pub mod mem;

use std::sync::Arc;

use serde_json::Value;

use crate::engine::file::{FileKind, FileRead, FileWrite, Stamp, WriteResult};
use crate::engine::state::{Bodies, Save, StoredThread};
use crate::engine::{Action, LocalOp, LocalResult, PullOutcome, ReqId, SyncEngine};
use crate::merge::Conflict;
use crate::model::{Message, MessageId, ThreadId};
use crate::ops::Effect;
use crate::threadlog::{self, IdDeriver, LineError, LogFormat, ReadCtx, Record};
use crate::time::Time;
use crate::wire::{Mutation, PullResponse, PushRequest};

/// Where the engine's saves go.
pub trait StateStore: Bodies {
    fn load(&self, id: &ThreadId) -> Result<Option<StoredThread>, String>;
    /// One step's saves, in one transaction. `intents`: hashes of `.json`
    /// files about to be written, recorded as our own.
    fn apply(&mut self, saves: &[Save], intents: &[(ThreadId, u64)]) -> Result<(), String>;
}

/// How a file write went.
#[derive(Debug, Clone, PartialEq)]
pub enum Written {
    Ok(Stamp),
    /// The file is not what the write expected: nothing was written.
    Changed,
    /// A line is still being written to the log: try again shortly.
    Busy,
    NotRegular(String),
    Failed(String),
}

/// Something the shell must come back to after a write (real files only).
#[derive(Debug, Clone, PartialEq)]
pub enum FollowUp {
    /// What a `.json` write displaced, to look at again (a writer may still
    /// be writing into it).
    Displaced { thread: ThreadId, path: std::path::PathBuf, expected: Option<u64> },
    /// The old file of a compacted log, to copy late appends from.
    OldLog { log: std::path::PathBuf, old: std::path::PathBuf, from: u64 },
}

/// A write's outcome: how it went, a displaced version someone else wrote
/// (to take in), and what to look at later.
pub struct WriteOutcome {
    pub written: Written,
    pub displaced: Option<FileRead>,
    pub follow_up: Option<FollowUp>,
}

/// The thread files.
pub trait ThreadFiles {
    /// Reads a thread's file for the engine; None: nothing to take in.
    fn read(&mut self, id: &ThreadId, kind: FileKind, engine: &SyncEngine) -> Option<FileRead>;
    fn write(&mut self, id: &ThreadId, kind: FileKind, write: &FileWrite, bytes: Vec<u8>) -> WriteOutcome;
    /// Log records as the bytes a file of this kind holds (threadsync's own
    /// lines, or an assistant's native ones).
    fn render(&self, id: &ThreadId, kind: FileKind, records: &[Record]) -> Result<Vec<u8>, String> {
        let _ = (id, kind);
        threadlog::render(records).map_err(|e| e.to_string())
    }
    /// Versions our writes displaced that a crash kept us from taking in
    /// (they are still on disk): taken in again at start.
    fn leftovers(&mut self) -> Vec<(ThreadId, FileRead)>;
    /// A log read whole, to check it (`FileRead::Checked`).
    fn check_log(&mut self, id: &ThreadId, kind: FileKind) -> Option<FileRead>;
    /// What was taken in so far is committed: displaced versions may go.
    fn settled(&mut self);
}

/// A point inside a step where a process can die (the simulator crashes
/// clients there).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepPoint {
    BeforeCommit,
    BeforeWrite,
    BeforeAction,
}

/// The client was stopped inside a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crashed;

/// What a step leaves for the shell.
#[derive(Default)]
pub struct StepOut {
    pub actions: Vec<Action>,
    pub follow_ups: Vec<FollowUp>,
    /// With `Client::record`: the saves and writes performed, in order.
    pub performed: Vec<Action>,
}

pub struct Client<S, F> {
    pub engine: SyncEngine,
    pub store: S,
    pub files: F,
    /// Keep a copy of every save and write performed (tests look at them).
    pub record: bool,
    /// What a step learnt about thread files and nothing else (a file's new
    /// stamp and what it is known to hold, as after our own write), not
    /// committed yet: it goes in with the next transaction, before a thread
    /// is loaded from the store, or when the sidecar settles. Losing it is a
    /// crash before it was saved, which recovery handles (the file is read
    /// again from the older stamp and what it shows recognised); no network
    /// effect depends on it. It saves a transaction per change.
    deferred: Vec<Save>,
}

impl<S: StateStore, F: ThreadFiles> Client<S, F> {
    pub fn new(engine: SyncEngine, store: S, files: F) -> Self {
        Client { engine, store, files, record: false, deferred: Vec::new() }
    }

    /// A new process on the same disk: the engine starts from what the
    /// store kept, and whatever was not committed is gone.
    pub fn restart(&mut self, engine: SyncEngine) {
        self.engine = engine;
        self.deferred.clear();
    }

    /// Loads the threads not in memory. A thread the store cannot load is
    /// left out (never taken for a new one) and the error returned.
    pub fn ensure_loaded<'a>(&mut self, now: Time, ids: impl IntoIterator<Item = &'a ThreadId>) -> Result<(), String> {
        let mut error = Ok(());
        let missing = self.engine.missing(ids);
        if !missing.is_empty() {
            // What the store hands back must include what it was told.
            self.flush()?;
        }
        for id in missing {
            match self.store.load(&id) {
                Ok(stored) => self.engine.load(now, &id, stored),
                Err(e) => error = Err(format!("cannot load {id}: {e}")),
            }
        }
        error
    }

    /// Takes in what a crash left behind: versions of `.json` files that
    /// our writes displaced and that were not taken in yet.
    pub fn recover(&mut self, now: Time) -> Result<(), String> {
        for (id, read) in self.files.leftovers() {
            self.ensure_loaded(now, [&id])?;
            self.engine.file_read(now, &id, FileKind::Json, read);
        }
        // Logs with work pending at the crash: what is new is read as
        // usual, then the whole log is checked once.
        for (id, kind) in self.engine.to_verify() {
            self.file_changed(now, &id, kind)?;
            if let Some(read) = self.files.check_log(&id, kind) {
                self.engine.file_read(now, &id, kind, read);
            }
        }
        Ok(())
    }

    /// A thread file changed (or may have): read what the engine needs.
    pub fn file_changed(&mut self, now: Time, id: &ThreadId, kind: FileKind) -> Result<(), String> {
        self.ensure_loaded(now, [id])?;
        if let Some(read) = self.files.read(id, kind, &self.engine) {
            self.engine.file_read(now, id, kind, read);
        }
        Ok(())
    }

    pub fn local_op(&mut self, now: Time, thread: Option<&ThreadId>, op: LocalOp) -> Result<LocalResult, String> {
        if let Some(id) = thread {
            self.ensure_loaded(now, [id])?;
        }
        self.engine.local_op(now, thread, op)
    }

    pub fn handle_pull(&mut self, now: Time, req: ReqId, outcome: PullOutcome) {
        if let PullOutcome::Ok(resp) = &outcome {
            let ids: Vec<ThreadId> = SyncEngine::pull_threads(resp).cloned().collect();
            if let Err(e) = self.ensure_loaded(now, &ids) {
                // Taking the answer without that thread would corrupt it:
                // drop the answer; the pull is retried.
                self.engine.handle_pull(
                    now,
                    req,
                    PullOutcome::Failed(crate::engine::retry::Failure::Http {
                        status: 500,
                        retry_after: None,
                        message: e,
                    }),
                );
                return;
            }
        }
        self.engine.handle_pull(now, req, outcome);
    }

    /// The messages of `resp` that came back without their content (our
    /// own inserts) and whose content this machine does not have after all
    /// (a kept body lost): the shell fetches them from the server and hands
    /// them to [`Client::fill_bodies`] before handing the answer on.
    pub fn missing_bodies(&self, resp: &PullResponse) -> Vec<(ThreadId, MessageId)> {
        resp.changes
            .iter()
            .filter_map(|c| match &c.effect {
                Effect::Insert { message, .. }
                    if message.content.is_elided()
                        && !self.store.has_body(&c.thread_id, &message.id, message.content.hash()) =>
                {
                    Some((c.thread_id.clone(), message.id.clone()))
                }
                _ => None,
            })
            .collect()
    }

    /// Keeps the content fetched for [`Client::missing_bodies`] and puts it
    /// into `resp`. The server's copy may be newer than the insert (edited
    /// since): the edit that follows in the log agrees with it.
    pub fn fill_bodies(&mut self, resp: &mut PullResponse, fetched: &[(ThreadId, Message)]) -> Result<(), String> {
        let saves: Vec<Save> = fetched
            .iter()
            .map(|(t, m)| Save::Body { thread: t.clone(), id: m.id.clone(), content: m.content.clone() })
            .collect();
        if saves.is_empty() {
            return Ok(());
        }
        self.store.apply(&saves, &[])?;
        for c in &mut resp.changes {
            if let Effect::Insert { message, .. } = &mut c.effect
                && message.content.is_elided()
                && let Some((_, m)) = fetched.iter().find(|(t, m)| t == &c.thread_id && m.id == message.id)
            {
                Arc::make_mut(message).content = m.content.clone();
            }
        }
        Ok(())
    }

    pub fn resolve_conflict(&mut self, now: Time, id: &str, choose: crate::engine::Choice) -> Result<(), String> {
        if let Some(c) = self.engine.conflicts().iter().find(|c| c.id == id) {
            let t = c.thread_id.clone();
            self.ensure_loaded(now, [&t])?;
        }
        self.engine.resolve_conflict(now, id, choose)
    }

    /// Performs the disk side of everything the engine asked: per step, its
    /// saves in one transaction, then its file writes (feeding the results
    /// back), until nothing is left; returns the other actions in order.
    /// `crash` may stop it at any point, as a `kill -9` would.
    pub fn step(&mut self, now: Time, crash: &mut dyn FnMut(StepPoint) -> bool) -> Result<StepOut, StepError> {
        let mut out = StepOut::default();
        // A file someone keeps rewriting refuses our writes each time; past
        // this many tries in one step the write waits (and is retried later).
        let mut tries: std::collections::HashMap<ThreadId, u32> = std::collections::HashMap::new();
        loop {
            let mut saves = Vec::new();
            let mut rest = Vec::new();
            while let Some(a) = self.engine.poll_action() {
                match a {
                    Action::Save(s) => saves.push(s),
                    other => rest.push(other),
                }
            }
            if saves.is_empty() && rest.is_empty() {
                // Everything taken in is committed (or deferred).
                self.files.settled();
                return Ok(out);
            }
            if rest.is_empty() && saves.iter().all(|s| matches!(s, Save::File { .. })) {
                self.deferred.append(&mut saves);
                continue;
            }
            // Writes are prepared (bodies loaded) before the commit, so a
            // `.json` write's hash is recorded with the step.
            let mut prepared = Vec::new();
            let mut intents = Vec::new();
            for a in &rest {
                if let Action::WriteFile { thread_id, write } = a {
                    let kind = self.engine.file_state(thread_id).map_or(FileKind::Jsonl, |f| f.kind);
                    let bodies = PendingBodies { saves: &saves, store: &self.store };
                    let p = prepare(&bodies, &self.files, kind, thread_id, write);
                    if let (Ok(bytes), FileWrite::Json { .. }) = (&p, write) {
                        intents.push((thread_id.clone(), crate::engine::file::hash64(bytes)));
                    }
                    prepared.push(p);
                }
            }
            if crash(StepPoint::BeforeCommit) {
                return Err(StepError::Crashed);
            }
            if !saves.is_empty() || !intents.is_empty() {
                let mut all = std::mem::take(&mut self.deferred);
                all.append(&mut saves);
                saves = all;
                self.store.apply(&saves, &intents).map_err(StepError::Store)?;
            }
            if self.record {
                out.performed.extend(saves.into_iter().map(Action::Save));
            }
            let mut prepared = prepared.into_iter();
            for a in rest {
                if let Action::WriteFile { thread_id, write } = a {
                    if crash(StepPoint::BeforeWrite) {
                        return Err(StepError::Crashed);
                    }
                    let mut p = prepared.next().expect("one per write");
                    let n = tries.entry(thread_id.clone()).or_default();
                    *n += 1;
                    if *n > MAX_TRIES {
                        p = Err("the file keeps changing under our writes".into());
                    }
                    if let Some(f) = self.write(now, &thread_id, &write, p) {
                        out.follow_ups.push(f);
                    }
                    if self.record {
                        out.performed.push(Action::WriteFile { thread_id, write });
                    }
                } else {
                    if crash(StepPoint::BeforeAction) {
                        return Err(StepError::Crashed);
                    }
                    out.actions.push(a);
                }
            }
        }
    }

    fn write(
        &mut self,
        now: Time,
        id: &ThreadId,
        write: &FileWrite,
        bytes: Result<Vec<u8>, String>,
    ) -> Option<FollowUp> {
        let bytes = match bytes {
            Ok(b) => b,
            Err(e) => {
                self.engine.file_written(now, id, WriteResult::Failed(e));
                return None;
            }
        };
        let kind = match write {
            FileWrite::Json { .. } => FileKind::Json,
            _ => self.engine.file_state(id).map_or(FileKind::Jsonl, |f| f.kind),
        };
        let WriteOutcome { written, displaced, follow_up } = self.files.write(id, kind, write, bytes);
        match written {
            Written::Ok(stamp) => {
                self.engine.file_written(now, id, WriteResult::Written(stamp));
                if let Some(d) = displaced {
                    self.engine.file_read(now, id, kind, d);
                }
                if kind.is_log() {
                    // Lines someone appended in the same instant, if any.
                    let _ = self.file_changed(now, id, kind);
                }
            }
            Written::Changed => {
                self.engine.file_written(now, id, WriteResult::Changed);
                let _ = self.file_changed(now, id, kind);
            }
            Written::Busy => {
                self.engine.file_written(now, id, WriteResult::Failed("a line is still being written".into()))
            }
            Written::NotRegular(e) => {
                self.engine.file_written(now, id, WriteResult::Changed);
                self.engine.file_read(now, id, kind, FileRead::Invalid { error: e });
            }
            Written::Failed(e) => self.engine.file_written(now, id, WriteResult::Failed(e)),
        }
        follow_up
    }

    /// Commits what steps deferred (when the sidecar goes quiet).
    pub fn flush(&mut self) -> Result<(), String> {
        if self.deferred.is_empty() {
            return Ok(());
        }
        let saves = std::mem::take(&mut self.deferred);
        self.store.apply(&saves, &[])
    }

    /// A push with its content loaded.
    pub fn load_push(&self, body: &PushRequest) -> Result<PushRequest, String> {
        let mutations = body
            .mutations
            .iter()
            .map(|m| {
                let ops = m.ops.iter().map(|op| self.store.load_op(&m.thread_id, op)).collect::<Result<_, _>>()?;
                Ok(Mutation { id: m.id, thread_id: m.thread_id.clone(), ops })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(PushRequest { client_id: body.client_id.clone(), mutations, machine: body.machine.clone() })
    }

    /// A thread as the user sees it, content loaded (`threadsync/getThread`).
    pub fn thread_value(&mut self, now: Time, id: &ThreadId) -> Result<Value, String> {
        self.ensure_loaded(now, [id])?;
        let t = self.engine.thread(id).ok_or_else(|| format!("no thread {id}"))?;
        let t = self.store.load_thread(t)?;
        serde_json::to_value(t).map_err(|e| e.to_string())
    }

    pub fn conflicts(&self) -> Result<Vec<Conflict>, String> {
        self.engine.conflicts().iter().map(|c| self.store.load_conflict(c)).collect()
    }
}

/// Writes of one thread in one step before it is put off.
const MAX_TRIES: u32 = 16;

/// Why a step stopped.
#[derive(Debug, Clone, PartialEq)]
pub enum StepError {
    Crashed,
    /// The state could not be saved: nothing else of the step happened.
    Store(String),
}

/// The bytes of a write, content loaded.
fn prepare(
    bodies: &impl Bodies,
    files: &impl ThreadFiles,
    kind: FileKind,
    id: &ThreadId,
    write: &FileWrite,
) -> Result<Vec<u8>, String> {
    match write {
        FileWrite::Json { thread, .. } => {
            let thread = bodies.load_thread(thread)?;
            let mut bytes = serde_json::to_vec_pretty(&thread).map_err(|e| e.to_string())?;
            bytes.push(b'\n');
            Ok(bytes)
        }
        FileWrite::Create { records } | FileWrite::Append { records, .. } => {
            let records = records.iter().map(|r| load_record(bodies, id, r)).collect::<Result<Vec<_>, _>>()?;
            files.render(id, kind, &records)
        }
        FileWrite::Compact { thread, .. } => {
            let thread = bodies.load_thread(thread)?;
            threadlog::render(&threadlog::compacted(&thread)).map_err(|e| e.to_string())
        }
    }
}

fn load_record(b: &impl Bodies, thread: &ThreadId, r: &Record) -> Result<Record, String> {
    Ok(match r {
        Record::Message { message, after } => {
            Record::Message { message: b.load_message(thread, message)?, after: after.clone() }
        }
        Record::Edit { id, content } => Record::Edit { id: id.clone(), content: b.load_content(thread, id, content)? },
        other => other.clone(),
    })
}

/// Bodies from the store, or from the saves of the step being committed.
struct PendingBodies<'a, S> {
    saves: &'a [Save],
    store: &'a S,
}

impl<S: Bodies> Bodies for PendingBodies<'_, S> {
    fn body(&self, thread: &ThreadId, id: &MessageId, hash: crate::model::ContentHash) -> Option<Value> {
        for s in self.saves.iter().rev() {
            if let Save::Body { thread: t, id: i, content } = s
                && t == thread
                && i == id
                && content.hash() == hash
            {
                return content.value().cloned();
            }
        }
        self.store.body(thread, id, hash)
    }
}

/// A log file as a reader sees it.
pub trait LogSource {
    fn ino(&self) -> u64;
    fn size(&self) -> u64;
    fn mtime_ns(&self) -> i64;
    fn read_at(&mut self, start: u64, len: u64) -> std::io::Result<Vec<u8>>;
}

/// How many bytes before a log's read offset its stamp covers.
pub const TAIL: u64 = 64;

pub fn tail_hash(src: &mut dyn LogSource, len: u64) -> Option<u64> {
    let start = len.saturating_sub(TAIL);
    src.read_at(start, len - start).ok().map(|b| crate::engine::file::hash64(&b))
}

fn stamp(src: &mut dyn LogSource, len: u64) -> Stamp {
    Stamp { ino: src.ino(), len, mtime_ns: src.mtime_ns(), hash: tail_hash(src, len).unwrap_or(0) }
}

/// Reads what is new in a log since `from` (the engine's stamp): the records
/// appended, or the whole log replayed when it is new to the engine or was
/// rewritten by someone else. None: nothing new yet (or only a line still
/// being written). `known`: the ids the log already holds; `format`: its
/// lines' format; `ctx`: what the reader knows of the thread.
pub fn read_log(
    src: &mut dyn LogSource,
    id: &ThreadId,
    from: Option<Stamp>,
    known: &dyn Fn(&MessageId) -> bool,
    format: &dyn LogFormat,
    mut ctx: ReadCtx,
) -> Option<FileRead> {
    let size = src.size();
    let continues =
        from.is_some_and(|s| s.ino == src.ino() && s.len <= size && s.len > 0 && tail_hash(src, s.len) == Some(s.hash));
    if !continues {
        let bytes = match src.read_at(0, size) {
            Ok(b) => b,
            Err(e) => return Some(FileRead::Invalid { error: format!("cannot read it: {e}") }),
        };
        if threadlog::complete_lines(&bytes, 0).0.is_empty() {
            return None; // not even a whole header yet
        }
        return Some(match format.replay(&bytes, id) {
            Ok((replay, errors, used)) => {
                for e in &errors {
                    tracing::warn!(thread = %id, "{e}; the line is skipped");
                }
                FileRead::Replayed {
                    thread: replay.thread(),
                    stamp: stamp(src, used as u64),
                    superseded: replay.superseded as u64,
                }
            }
            Err(e) => FileRead::Invalid { error: e.to_string() },
        });
    }
    let from = from.expect("continues");
    if size == from.len {
        return None;
    }
    let bytes = src.read_at(from.len, size - from.len).ok()?;
    let (mut lines, mut used) = threadlog::complete_lines(&bytes, from.len);
    if let Some(i) = format.hold(&lines) {
        // A tool call waits for its result: both go together.
        used = (lines[i].0 - from.len) as usize;
        lines.truncate(i);
    }
    if used == 0 {
        return None; // a line is still being written
    }
    // How often a line occurs before `from` (read once, and only when a
    // line that may repeat an earlier one turns up).
    let prefix: std::cell::OnceCell<Vec<u8>> = std::cell::OnceCell::new();
    let src = std::cell::RefCell::new(src);
    let before = |line: &[u8]| -> usize {
        let bytes = prefix.get_or_init(|| src.borrow_mut().read_at(0, from.len).unwrap_or_default());
        threadlog::complete_lines(bytes, 0).0.iter().filter(|(_, l)| *l == line).count()
    };
    let mut ids = IdDeriver::reading_on(known, &before);
    let mut records = Vec::with_capacity(lines.len());
    for (offset, line) in lines {
        match format.parse_line(line, offset, id, &mut ids, &mut ctx) {
            Ok(r) => records.extend(r),
            Err(e @ LineError::IdMismatch { .. }) => return Some(FileRead::Invalid { error: e.to_string() }),
            Err(e) => tracing::warn!(thread = %id, "{e}; the line is skipped"),
        }
    }
    drop(ids);
    let end = from.len + used as u64;
    Some(FileRead::Appended { records, stamp: stamp(src.into_inner(), end) })
}
