//! In-memory models of a client's disk: [`MemState`], the reference state
//! store (the sidecar's SQLite database keeps exactly what it keeps), and
//! [`MemFiles`], thread files as bytes (read and written by the same rules
//! as real ones: the same parsers, the same expectations before a write).
//! The simulator and the engine tests run clients on them.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use crate::client::{LogSource, StateStore, ThreadFiles, WriteOutcome, Written, read_log, tail_hash};
use crate::engine::SyncEngine;
use crate::engine::file::{FileKind, FileRead, FileState, FileView, FileWrite, Stamp, hash64};
use crate::engine::state::{BaseChange, Bodies, Restored, Save, StoredOp, StoredThread, restored_file};
use crate::merge::{Conflict, Doc};
use crate::model::{ContentHash, MessageId, Thread, ThreadId, parse_thread_file};
use crate::ops::Op;
use crate::threadlog::{self, Own, ReadCtx};
use crate::time::Time;
use crate::wire::Cursor;

/// One thread's rows.
#[derive(Clone, Debug)]
struct MemThread {
    base: Doc,
    ops: BTreeMap<u64, Op>,
    file: FileState,
    last_sync: Option<Time>,
}

/// A client's state in memory, with the same contract as the sidecar's
/// database.
#[derive(Clone, Debug, Default)]
pub struct MemState {
    /// Transactions committed (each `apply`).
    pub commits: usize,
    threads: BTreeMap<ThreadId, MemThread>,
    bodies: HashMap<(ThreadId, MessageId, ContentHash), Value>,
    cursor: Option<Cursor>,
    conflicts: Vec<Conflict>,
}

impl Bodies for MemState {
    fn body(&self, thread: &ThreadId, id: &MessageId, hash: ContentHash) -> Option<Value> {
        self.bodies.get(&(thread.clone(), id.clone(), hash)).cloned()
    }
}

impl MemState {
    /// Loses every kept body (a state restored from elsewhere), for tests.
    pub fn forget_bodies(&mut self) {
        self.bodies.clear();
    }

    fn thread(&mut self, id: &ThreadId, kind: FileKind) -> &mut MemThread {
        self.threads.entry(id.clone()).or_insert_with(|| MemThread {
            base: Doc::empty(id.clone()),
            ops: BTreeMap::new(),
            file: FileState::new(kind),
            last_sync: None,
        })
    }

    fn apply_one(&mut self, s: &Save) {
        match s {
            Save::Body { thread, id, content } => {
                let v = content.value().expect("bodies are saved loaded").clone();
                self.bodies.insert((thread.clone(), id.clone(), content.hash()), v);
            }
            Save::Base { thread, change } => {
                let t = self.thread(thread, FileKind::Json);
                match change {
                    BaseChange::Replace { doc } => t.base = (**doc).clone(),
                    BaseChange::Effects { effects, version, .. } => {
                        for e in effects {
                            t.base.apply_effect(e).expect("the engine saves effects that apply");
                        }
                        assert_eq!(t.base.thread.v, *version, "saved effects reach the saved version");
                    }
                }
            }
            Save::Ops { thread, add, done } => {
                let t = self.thread(thread, FileKind::Json);
                for seq in done {
                    t.ops.remove(seq);
                }
                for (seq, op) in add {
                    // Stored as the database stores it, so both lose the same.
                    t.ops.insert(*seq, StoredOp::of(op).to_op().expect("round trip"));
                }
            }
            Save::File { thread, file } => {
                let t = self.thread(thread, file.kind);
                let f = &mut t.file;
                f.kind = file.kind;
                if file.replace {
                    f.view.messages.clear();
                }
                for (id, h) in &file.messages {
                    match h {
                        Some(h) => f.view.messages.insert(id.clone(), *h),
                        None => f.view.messages.remove(id),
                    };
                }
                f.view.title.clone_from(&file.title);
                f.view.env = file.env;
                f.view.created = file.created;
                f.view.extra.clone_from(&file.extra);
                f.stamp = file.stamp;
                f.own = file.own;
                f.dirty = file.dirty;
                f.superseded = file.superseded;
                f.removed = file.removed;
            }
            Save::Cursor(c) => self.cursor = c.clone(),
            Save::Conflicts(c) => {
                self.conflicts = c.iter().map(|c| self.load_conflict(c).expect("conflict bases are stored")).collect()
            }
        }
    }

    pub fn stored(&self, id: &ThreadId) -> Option<StoredThread> {
        let t = self.threads.get(id)?;
        Some(StoredThread {
            base: t.base.clone(),
            ops: t.ops.iter().map(|(s, o)| (*s, o.clone())).collect(),
            file: restored_file(&t.file),
            last_sync: t.last_sync,
        })
    }

    pub fn restore(&self) -> Restored {
        let threads = self
            .threads
            .keys()
            .filter_map(|id| self.stored(id))
            .filter(|t| !t.ops.is_empty() || t.file.dirty)
            .collect();
        let next_seq = self.threads.values().flat_map(|t| t.ops.keys()).max().map_or(1, |m| m + 1);
        Restored { threads, cursor: self.cursor.clone(), conflicts: self.conflicts.clone(), next_seq }
    }

    /// The conflicts as stored (bases loaded).
    pub fn conflicts(&self) -> &[Conflict] {
        &self.conflicts
    }

    /// The unconfirmed operations stored for a thread.
    pub fn ops(&self, id: &ThreadId) -> Vec<Op> {
        self.threads.get(id).map(|t| t.ops.values().cloned().collect()).unwrap_or_default()
    }

    pub fn cursor(&self) -> Option<&Cursor> {
        self.cursor.as_ref()
    }

    pub fn thread_ids(&self) -> impl Iterator<Item = &ThreadId> {
        self.threads.keys()
    }

    /// The base as stored (tests compare it with the engine's).
    pub fn base(&self, id: &ThreadId) -> Option<&Doc> {
        self.threads.get(id).map(|t| &t.base)
    }

    pub fn file_view(&self, id: &ThreadId) -> Option<&FileView> {
        self.threads.get(id).map(|t| &t.file.view)
    }
}

impl StateStore for MemState {
    fn load(&self, id: &ThreadId) -> Result<Option<StoredThread>, String> {
        Ok(self.stored(id))
    }

    fn apply(&mut self, saves: &[Save], intents: &[(ThreadId, u64)]) -> Result<(), String> {
        self.commits += 1;
        for s in saves {
            self.apply_one(s);
        }
        for (id, h) in intents {
            self.thread(id, FileKind::Json).file.own = Some(*h);
        }
        Ok(())
    }
}

/// One file.
#[derive(Clone, Debug)]
struct MemFile {
    bytes: Vec<u8>,
    ino: u64,
}

/// Thread files in memory. Other writers (assistants) use the methods
/// below; the client reads and writes through [`ThreadFiles`].
#[derive(Clone, Debug, Default)]
pub struct MemFiles {
    files: BTreeMap<(ThreadId, Kind), MemFile>,
    next_ino: u64,
    /// Writes by someone else that land inside the client's next write of
    /// that thread, between its check and its rename (the race an exchange
    /// must survive).
    pub interleaved: BTreeMap<ThreadId, Vec<u8>>,
    /// Versions an exchange displaced, on disk until what was taken in from
    /// them is committed.
    displaced: Vec<(ThreadId, Vec<u8>)>,
}

/// `FileKind` with an order, for the map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Json,
    Jsonl,
}

fn kind(k: FileKind) -> Kind {
    match k {
        FileKind::Json => Kind::Json,
        FileKind::Jsonl | FileKind::Native => Kind::Jsonl,
    }
}

struct Src<'a>(&'a MemFile);

impl LogSource for Src<'_> {
    fn ino(&self) -> u64 {
        self.0.ino
    }
    fn size(&self) -> u64 {
        self.0.bytes.len() as u64
    }
    fn mtime_ns(&self) -> i64 {
        0
    }
    fn read_at(&mut self, start: u64, len: u64) -> std::io::Result<Vec<u8>> {
        let (s, e) = (start as usize, (start + len) as usize);
        self.0.bytes.get(s..e).map(<[u8]>::to_vec).ok_or_else(|| std::io::Error::other("past the end"))
    }
}

impl MemFiles {
    fn ino(&mut self) -> u64 {
        self.next_ino += 1;
        self.next_ino
    }

    /// Which layout a thread's file has, if it has one.
    pub fn kind_of(&self, id: &ThreadId) -> Option<FileKind> {
        if self.files.contains_key(&(id.clone(), Kind::Jsonl)) {
            Some(FileKind::Jsonl)
        } else if self.files.contains_key(&(id.clone(), Kind::Json)) {
            Some(FileKind::Json)
        } else {
            None
        }
    }

    pub fn ids(&self) -> Vec<ThreadId> {
        let mut v: Vec<ThreadId> = self.files.keys().map(|(id, _)| id.clone()).collect();
        v.dedup();
        v
    }

    /// The thread a file holds, as a reader would see it (None: no file, or
    /// not readable).
    pub fn thread(&self, id: &ThreadId) -> Option<Thread> {
        match self.kind_of(id)? {
            FileKind::Json => parse_thread_file(&self.files[&(id.clone(), Kind::Json)].bytes, id).ok(),
            FileKind::Jsonl | FileKind::Native => {
                let f = &self.files[&(id.clone(), Kind::Jsonl)];
                threadlog::replay(&f.bytes, id).ok().map(|(r, _, _)| r.thread())
            }
        }
    }

    pub fn bytes(&self, id: &ThreadId, k: FileKind) -> Option<&[u8]> {
        self.files.get(&(id.clone(), kind(k))).map(|f| f.bytes.as_slice())
    }

    /// Someone else replaces a `.json` file (a rename: a new inode).
    pub fn write_json(&mut self, t: &Thread) {
        let bytes = serde_json::to_vec_pretty(t).expect("serialises");
        let ino = self.ino();
        self.files.insert((t.id.clone(), Kind::Json), MemFile { bytes, ino });
    }

    /// Someone else writes bytes in place (the same inode), maybe half a file.
    pub fn write_in_place(&mut self, id: &ThreadId, k: FileKind, bytes: Vec<u8>) {
        let ino = match self.files.get(&(id.clone(), kind(k))) {
            Some(f) => f.ino,
            None => self.ino(),
        };
        self.files.insert((id.clone(), kind(k)), MemFile { bytes, ino });
    }

    /// Someone else appends to a log.
    pub fn append(&mut self, id: &ThreadId, bytes: &[u8]) {
        let ino = self.ino();
        let f = self.files.entry((id.clone(), Kind::Jsonl)).or_insert(MemFile { bytes: Vec::new(), ino });
        f.bytes.extend_from_slice(bytes);
    }

    /// Another writer (an assistant) makes the file hold `t`: a `.json` file
    /// is rewritten by rename; a log gets the records that take it there.
    pub fn assistant_write(&mut self, t: &Thread) {
        if self.kind_of(&t.id) != Some(FileKind::Jsonl) {
            return self.write_json(t);
        }
        let cur = self.thread(&t.id).unwrap_or_else(|| Thread::new(t.id.clone(), t.created));
        let mut records = Vec::new();
        if cur.title != t.title {
            records.push(threadlog::Record::Title { title: t.title.clone() });
        }
        if cur.env != t.env {
            records.push(threadlog::Record::Env { env: t.env.clone() });
        }
        for m in &cur.messages {
            match t.messages.iter().find(|x| x.id == m.id) {
                None => records.push(threadlog::Record::Delete { id: m.id.clone() }),
                Some(x) if x.content != m.content => {
                    records.push(threadlog::Record::Edit { id: m.id.clone(), content: x.content.clone() })
                }
                Some(_) => {}
            }
        }
        let mut last = cur.messages.last().map(|m| m.id.clone());
        for (i, m) in t.messages.iter().enumerate() {
            if cur.messages.iter().any(|x| x.id == m.id) {
                continue;
            }
            let pred = i.checked_sub(1).map(|p| t.messages[p].id.clone());
            // At the end, a plain append; elsewhere, say where.
            let at_end = pred == last;
            let after = if at_end { None } else { Some(pred) };
            records.push(threadlog::Record::Message { message: m.clone(), after });
            if at_end {
                last = Some(m.id.clone());
            }
        }
        let bytes = threadlog::render(&records).expect("another writer's content is loaded");
        self.append(&t.id, &bytes);
    }

    pub fn remove(&mut self, id: &ThreadId, k: FileKind) {
        self.files.remove(&(id.clone(), kind(k)));
    }
}

impl ThreadFiles for MemFiles {
    fn read(&mut self, id: &ThreadId, k: FileKind, engine: &SyncEngine) -> Option<FileRead> {
        let Some(f) = self.files.get(&(id.clone(), kind(k))) else { return Some(FileRead::Gone) };
        match k {
            FileKind::Json => {
                let stamp = Stamp { ino: f.ino, len: f.bytes.len() as u64, mtime_ns: 0, hash: hash64(&f.bytes) };
                if !engine.wants_read(id, &stamp) {
                    return Some(FileRead::Seen { stamp });
                }
                Some(match parse_thread_file(&f.bytes, id) {
                    Ok(thread) => FileRead::Json { thread, stamp },
                    Err(e) => FileRead::Invalid { error: e.to_string() },
                })
            }
            FileKind::Jsonl | FileKind::Native => {
                let known = |m: &MessageId| engine.file_has(id, m);
                read_log(&mut Src(f), id, engine.file_stamp(id), &known, &Own, ReadCtx::default())
            }
        }
    }

    fn write(&mut self, id: &ThreadId, _: FileKind, write: &FileWrite, bytes: Vec<u8>) -> WriteOutcome {
        let done = |written| WriteOutcome { written, displaced: None, follow_up: None };
        match write {
            FileWrite::Json { expect, .. } => {
                let key = (id.clone(), Kind::Json);
                let current = self.files.get(&key).map(|f| hash64(&f.bytes));
                if current != expect.map(|s| s.hash) {
                    return done(Written::Changed);
                }
                // Someone's write landing after the check: the exchange
                // displaces it, and it comes back to be taken in.
                let displaced = self.interleaved.remove(id).and_then(|theirs| {
                    let t = parse_thread_file(&theirs, id).ok()?;
                    self.displaced.push((id.clone(), theirs));
                    Some(FileRead::Displaced { thread: t })
                });
                let ino = self.ino();
                let stamp = Stamp { ino, len: bytes.len() as u64, mtime_ns: 0, hash: hash64(&bytes) };
                self.files.insert(key, MemFile { bytes, ino });
                WriteOutcome { written: Written::Ok(stamp), displaced, follow_up: None }
            }
            FileWrite::Create { .. } => {
                let key = (id.clone(), Kind::Jsonl);
                if self.files.contains_key(&key) {
                    return done(Written::Changed);
                }
                let ino = self.ino();
                let f = MemFile { bytes, ino };
                let len = f.bytes.len() as u64;
                let stamp = Stamp { ino, len, mtime_ns: 0, hash: tail_hash(&mut Src(&f), len).unwrap_or(0) };
                self.files.insert(key, f);
                done(Written::Ok(stamp))
            }
            FileWrite::Append { expect, .. } | FileWrite::Compact { expect, .. } => {
                let key = (id.clone(), Kind::Jsonl);
                let Some(f) = self.files.get_mut(&key) else { return done(Written::Changed) };
                let len = f.bytes.len() as u64;
                if f.ino != expect.ino || len < expect.len || tail_hash(&mut Src(f), expect.len) != Some(expect.hash) {
                    return done(Written::Changed);
                }
                if len > expect.len {
                    let torn = !f.bytes[expect.len as usize..].contains(&b'\n');
                    return done(if torn { Written::Busy } else { Written::Changed });
                }
                if matches!(write, FileWrite::Compact { .. }) {
                    f.bytes = bytes;
                    f.ino += 1_000_000; // a new file took its place
                } else {
                    f.bytes.extend_from_slice(&bytes);
                }
                let end = f.bytes.len() as u64;
                let stamp = Stamp { ino: f.ino, len: end, mtime_ns: 0, hash: tail_hash(&mut Src(f), end).unwrap_or(0) };
                done(Written::Ok(stamp))
            }
        }
    }

    fn leftovers(&mut self) -> Vec<(ThreadId, FileRead)> {
        self.displaced
            .iter()
            .filter_map(|(id, bytes)| {
                let thread = parse_thread_file(bytes, id).ok()?;
                Some((id.clone(), FileRead::Displaced { thread }))
            })
            .collect()
    }

    fn settled(&mut self) {
        self.displaced.clear();
    }

    fn check_log(&mut self, id: &ThreadId, _: FileKind) -> Option<FileRead> {
        let f = self.files.get(&(id.clone(), Kind::Jsonl))?;
        match read_log(&mut Src(f), id, None, &|_| false, &Own, ReadCtx::default())? {
            FileRead::Replayed { thread, stamp, superseded } => Some(FileRead::Checked { thread, stamp, superseded }),
            _ => None,
        }
    }
}
