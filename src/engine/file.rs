//! What the engine knows about each thread's file, and the rules for reading
//! and writing it. The shell reads and writes; everything it could get
//! wrong when an assistant writes the same file is decided here:
//!
//! - **Which read is a change, and from what.** A `.json` rewrite is diffed
//!   against the last version *someone else* wrote (`view`), never against
//!   what the sidecar wrote: a message the sidecar put into the file counts
//!   as deleted only once a version written by someone else has shown it and
//!   a later one drops it. So an assistant writing back an older read adds
//!   its own message and deletes nothing it never saw.
//! - **Our own writes coming back** (the watcher reports them) are
//!   recognised by the hash of what was written.
//! - **When a write may happen**: never while the file is unreadable (half
//!   written, not a regular file), and always with the version it expects
//!   to replace, so the shell can refuse a write that would overwrite
//!   someone else's.
//! - **What a `.jsonl` write appends**: records for exactly what changed.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::merge::Doc;
use crate::model::{ContentHash, MessageId, Thread, empty_object};
use crate::ops::Op;
use crate::threadlog::Record;

/// A short hash of bytes (a file's, or a log's tail): first 8 bytes of SHA-256.
pub fn hash64(bytes: &[u8]) -> u64 {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(bytes);
    u64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
}

/// How a thread's file is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    /// `<id>.json`: one JSON document, rewritten whole.
    Json,
    /// `<id>.jsonl`: an append-only log (see `threadlog`).
    Jsonl,
    /// An assistant's own session file (see `sources`): a log the sidecar
    /// only appends whole native lines to. It is never rewritten or
    /// compacted, and its order is its own: a line cannot say where it
    /// goes, so messages from elsewhere go at its end.
    Native,
}

impl FileKind {
    pub fn extension(self) -> &'static str {
        match self {
            FileKind::Json => "json",
            FileKind::Jsonl | FileKind::Native => "jsonl",
        }
    }

    /// Read by offset and written by appending.
    pub fn is_log(self) -> bool {
        matches!(self, FileKind::Jsonl | FileKind::Native)
    }
}

/// One version of a thread file as the shell saw it. `.json`: `hash` is of
/// the whole file. `.jsonl`: `len` is how far it has been read (the end of
/// the last complete line) and `hash` is of the bytes just before that, so
/// a log rewritten by someone else is noticed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub ino: u64,
    pub len: u64,
    pub mtime_ns: i64,
    pub hash: u64,
}

/// The file's side of a thread: for `.json` the last version someone else
/// wrote; for `.jsonl` what the log holds, the sidecar's records included.
#[derive(Clone, Debug, PartialEq)]
pub struct FileView {
    pub messages: HashMap<MessageId, ContentHash>,
    pub title: String,
    pub env: ContentHash,
    pub created: i64,
    /// Top-level fields threadsync does not sync (kept when rewriting).
    pub extra: Map<String, Value>,
}

impl Default for FileView {
    fn default() -> Self {
        FileView {
            messages: HashMap::new(),
            title: String::new(),
            env: ContentHash::of(&empty_object()),
            created: 0,
            extra: Map::new(),
        }
    }
}

impl FileView {
    pub fn of_thread(t: &Thread) -> Self {
        FileView {
            messages: t.messages.iter().map(|m| (m.id.clone(), m.content.hash())).collect(),
            title: t.title.clone(),
            env: ContentHash::of(&t.env),
            created: t.created,
            extra: t.extra.clone(),
        }
    }
}

/// What the engine knows of a thread's file.
#[derive(Clone, Debug)]
pub struct FileState {
    pub kind: FileKind,
    pub view: FileView,
    /// The file as last read or written (None: none seen yet).
    pub stamp: Option<Stamp>,
    /// `.json`: the hash of our last write; reading it back is not a change.
    pub own: Option<u64>,
    /// The file lags behind the thread: a write is due. For `.jsonl`,
    /// `changed` and `meta_changed` say what lags.
    pub dirty: bool,
    pub changed: BTreeSet<MessageId>,
    pub meta_changed: bool,
    /// A write was asked for and its result has not come back.
    pub writing: bool,
    /// Why the file cannot be used now; writes wait until a good read.
    pub error: Option<String>,
    /// `.jsonl`: records that a compaction would drop.
    pub superseded: u64,
    /// `.jsonl`: the order the log shows is not the thread's (only a
    /// rewrite can fix it).
    pub needs_compaction: bool,
    /// `.jsonl`: read the whole log once to check its order (after a
    /// restart that found work pending on it).
    pub verify: bool,
    /// A native file its owner removed (an assistant's cleanup, the user):
    /// the thread stays, here and everywhere, but its file is not written
    /// again until the user restores it.
    pub removed: bool,
}

impl FileState {
    pub fn new(kind: FileKind) -> Self {
        FileState {
            kind,
            view: FileView::default(),
            stamp: None,
            own: None,
            dirty: false,
            changed: BTreeSet::new(),
            meta_changed: false,
            writing: false,
            error: None,
            superseded: 0,
            needs_compaction: false,
            verify: false,
            removed: false,
        }
    }

    pub fn lags(&self) -> bool {
        self.dirty || !self.changed.is_empty() || self.meta_changed || self.needs_compaction
    }

    /// Whether a read with this stamp can be skipped: our own write coming
    /// back, or the version already read.
    pub fn known(&self, stamp: &Stamp) -> bool {
        match self.kind {
            FileKind::Json => self.stamp.is_some_and(|s| s.hash == stamp.hash) || self.own == Some(stamp.hash),
            FileKind::Jsonl | FileKind::Native => self.stamp.is_some_and(|s| s.ino == stamp.ino && s.len == stamp.len),
        }
    }

    /// Marks that the thread changed in a way the file does not show yet.
    pub fn touch(&mut self, id: Option<&MessageId>) {
        self.dirty = true;
        match id {
            Some(id) => {
                self.changed.insert(id.clone());
            }
            None => self.meta_changed = true,
        }
    }
}

/// A read of a thread file, as the shell hands it over.
#[derive(Clone, Debug)]
pub enum FileRead {
    /// A whole `.json` file, parsed.
    Json { thread: Thread, stamp: Stamp },
    /// The version of a `.json` file that our write displaced (someone wrote
    /// it between our check and our rename): taken in like any other read,
    /// but the file now holds our write.
    Displaced { thread: Thread },
    /// Records appended to a `.jsonl` file since the engine's stamp.
    Appended { records: Vec<Record>, stamp: Stamp },
    /// A `.jsonl` file read whole: the first time, or after someone else
    /// rewrote it. `superseded`: records a compaction would drop.
    Replayed { thread: Thread, stamp: Stamp, superseded: u64 },
    /// A log read whole only to check it against what the engine knows
    /// (after a restart): what it holds and in what order; no changes are
    /// taken from it (its new records were read as usual).
    Checked { thread: Thread, stamp: Stamp, superseded: u64 },
    /// A `.json` file the engine already knows (its own write coming back,
    /// or the version last read), not parsed: only where it now stands.
    Seen { stamp: Stamp },
    /// The file cannot be used (half written, not a regular file, …).
    Invalid { error: String },
    /// The file is gone. Deleting a thread file does not delete the thread.
    Gone,
}

/// What the shell reports after a write.
#[derive(Clone, Debug, PartialEq)]
pub enum WriteResult {
    Written(Stamp),
    /// The file was not what the write expected (someone else wrote it):
    /// nothing was written; a read of the file follows.
    Changed,
    Failed(String),
}

/// A write the engine asks for. Content is elided: the shell loads it.
#[derive(Clone, Debug, PartialEq)]
pub enum FileWrite {
    /// Replace a `.json` file, if it still is `expect` (None: it must not exist).
    Json { thread: Thread, expect: Option<Stamp> },
    /// Create a `.jsonl` file holding these records; it must not exist.
    Create { records: Vec<Record> },
    /// Append these records to a `.jsonl` file that must still end at `expect`.
    Append { records: Vec<Record>, expect: Stamp },
    /// Rewrite a `.jsonl` file in compact form (header, then every message
    /// in order); whatever others appended since `expect` is read back.
    Compact { thread: Thread, expect: Stamp },
}

/// The operations that turn `view` (what the writer of `file` started
/// from) into `file`, to be applied on top of `current`.
///
/// New messages become appends anchored to their predecessor in the file;
/// content that differs from the view becomes an edit based on the view's
/// hash; a message the view holds and the file does not becomes a delete —
/// unless `deletes` is false (logs delete by record, not by omission).
pub fn diff_file(view: &FileView, file: &Thread, current: &Doc, deletes: bool) -> Vec<Op> {
    let mut ops = Vec::new();
    if !current.exists() {
        ops.push(Op::Create { created: file.created, env: file.env.clone() });
        if !file.title.is_empty() {
            ops.push(Op::SetTitle { title: file.title.clone(), base: String::new() });
        }
    } else {
        if file.title != view.title {
            ops.push(Op::SetTitle { title: file.title.clone(), base: view.title.clone() });
        }
        if ContentHash::of(&file.env) != view.env {
            ops.push(Op::SetEnv { env: file.env.clone(), base: view.env });
        }
    }
    let mut appends = Vec::new();
    let mut prev: Option<MessageId> = None;
    let mut in_file = std::collections::HashSet::with_capacity(file.messages.len());
    for m in &file.messages {
        in_file.insert(&m.id);
        match view.messages.get(&m.id) {
            None => appends.push(Op::Append { message: m.clone(), after: prev.clone(), follows: None }),
            Some(h) if *h != m.content.hash() => {
                ops.push(Op::Edit { id: m.id.clone(), content: m.content.clone(), base: *h })
            }
            Some(_) => {}
        }
        prev = Some(m.id.clone());
    }
    if deletes {
        let mut gone: Vec<(&MessageId, &ContentHash)> =
            view.messages.iter().filter(|(id, _)| !in_file.contains(id)).collect();
        gone.sort(); // HashMap order is not deterministic; the engine's output must be
        ops.extend(gone.into_iter().map(|(id, h)| Op::Delete { id: id.clone(), base: *h }));
    }
    ops.extend(appends);
    ops
}

/// The operations a record appended to a log stands for. `end`: the log's
/// last visible message, which a record without `after` follows.
pub fn record_ops(view: &FileView, r: &Record, end: &Option<MessageId>) -> Vec<Op> {
    match r {
        Record::Header { .. } => Vec::new(),
        Record::Message { message, after } => match view.messages.get(&message.id) {
            None => {
                let after = match after {
                    Some(a) => a.clone(),
                    None => end.clone(),
                };
                vec![Op::Append { message: message.clone(), after, follows: None }]
            }
            Some(h) if *h != message.content.hash() => {
                vec![Op::Edit { id: message.id.clone(), content: message.content.clone(), base: *h }]
            }
            Some(_) => Vec::new(),
        },
        Record::Edit { id, content } => match view.messages.get(id) {
            Some(h) if *h != content.hash() => vec![Op::Edit { id: id.clone(), content: content.clone(), base: *h }],
            _ => Vec::new(),
        },
        Record::Delete { id } => match view.messages.get(id) {
            Some(h) => vec![Op::Delete { id: id.clone(), base: *h }],
            None => Vec::new(),
        },
        Record::Title { title } if *title != view.title => {
            vec![Op::SetTitle { title: title.clone(), base: view.title.clone() }]
        }
        Record::Env { env } if ContentHash::of(env) != view.env => {
            vec![Op::SetEnv { env: env.clone(), base: view.env }]
        }
        Record::Title { .. } | Record::Env { .. } => Vec::new(),
    }
}

/// Updates a log's view with one record read from (or written to) it.
pub fn apply_record(view: &mut FileView, r: &Record) {
    match r {
        Record::Header { created, title, env, extra, .. } => {
            view.created = *created;
            view.title.clone_from(title);
            view.env = ContentHash::of(env);
            view.extra.clone_from(extra);
        }
        Record::Message { message, .. } => {
            view.messages.insert(message.id.clone(), message.content.hash());
        }
        Record::Edit { id, content } => {
            if let Some(h) = view.messages.get_mut(id) {
                *h = content.hash();
            }
        }
        Record::Delete { id } => {
            view.messages.remove(id);
        }
        Record::Title { title } => view.title.clone_from(title),
        Record::Env { env } => view.env = ContentHash::of(env),
    }
}

/// The records that bring a log showing `view` up to `local`, for the
/// messages in `changed` (and title and env when `meta`). New messages are
/// written right after their predecessor in `local`, in `local`'s order.
pub fn log_records(view: &FileView, local: &Doc, changed: &BTreeSet<MessageId>, meta: bool) -> Vec<Record> {
    let mut out = Vec::new();
    let t = &local.thread;
    if meta {
        if t.title != view.title {
            out.push(Record::Title { title: t.title.clone() });
        }
        if ContentHash::of(&t.env) != view.env {
            out.push(Record::Env { env: t.env.clone() });
        }
    }
    let mut inserts: Vec<(usize, Arc<crate::model::Message>)> = Vec::new();
    for id in changed {
        match (local.get(id), view.messages.get(id)) {
            (Some(m), None) => {
                let at = t.position(id).expect("visible");
                inserts.push((at, m.clone()));
            }
            (Some(m), Some(h)) if m.content.hash() != *h => {
                out.push(Record::Edit { id: id.clone(), content: m.content.clone() })
            }
            (None, Some(_)) => out.push(Record::Delete { id: id.clone() }),
            _ => {}
        }
    }
    inserts.sort_by_key(|(at, _)| *at);
    for (at, m) in inserts {
        let after = at.checked_sub(1).map(|i| t.messages[i].id.clone());
        out.push(Record::Message { message: m, after: Some(after) });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Content, Message, ThreadId};
    use serde_json::json;

    fn thread(ids: &[(&str, &str)]) -> Thread {
        let mut t = Thread::new(ThreadId::new("T").unwrap(), 1);
        t.messages = ids
            .iter()
            .map(|(id, c)| {
                Arc::new(Message {
                    id: MessageId::new(*id).unwrap(),
                    role: "user".into(),
                    content: Content::new(json!(c)),
                    timestamp: 0,
                    extra: Default::default(),
                })
            })
            .collect();
        t
    }

    fn names(ops: &[Op]) -> Vec<String> {
        ops.iter()
            .map(|o| match o {
                Op::Append { message, after, .. } => {
                    format!("+{}@{}", message.id, after.as_ref().map_or("-", |a| a.as_str()))
                }
                Op::Edit { id, .. } => format!("~{id}"),
                Op::Delete { id, .. } => format!("-{id}"),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_rewrite_is_diffed_against_the_writers_last_version_only() {
        // The assistant last wrote [a]; the sidecar then wrote [a, p] (a
        // pulled message); the assistant writes back its older read plus x.
        let seen = FileView::of_thread(&thread(&[("a", "a")]));
        let mut current = Doc::from_thread(thread(&[("a", "a"), ("p", "p")]));
        current.thread.v = 3;
        let ops = diff_file(&seen, &thread(&[("a", "a"), ("x", "x")]), &current, true);
        assert_eq!(names(&ops), ["+x@a"], "p was never seen by this writer: not a delete");
        // A later version that shows p, then one that drops it: that is a delete.
        let seen = FileView::of_thread(&thread(&[("a", "a"), ("p", "p")]));
        let ops = diff_file(&seen, &thread(&[("a", "a")]), &current, true);
        assert_eq!(names(&ops), ["-p"]);
        // Edits are based on what the writer saw.
        let ops = diff_file(&seen, &thread(&[("a", "a2"), ("p", "p")]), &current, true);
        assert_eq!(names(&ops), ["~a"]);
        // Logs delete by record only.
        assert!(diff_file(&seen, &thread(&[("a", "a")]), &current, false).is_empty());
    }

    #[test]
    fn log_records_put_new_messages_right_after_their_predecessor() {
        let mut local = Doc::from_thread(thread(&[("a", "a"), ("r", "r"), ("b", "b2"), ("c", "c")]));
        local.thread.v = 5;
        let view = FileView::of_thread(&thread(&[("a", "a"), ("b", "b"), ("gone", "g")]));
        let changed: BTreeSet<MessageId> =
            ["c", "r", "b", "gone"].iter().map(|s| MessageId::new(*s).unwrap()).collect();
        let recs = log_records(&view, &local, &changed, false);
        let shown: Vec<String> = recs
            .iter()
            .map(|r| match r {
                Record::Message { message, after } => {
                    format!("+{}@{}", message.id, after.clone().flatten().map_or("-".into(), |a| a.to_string()))
                }
                Record::Edit { id, .. } => format!("~{id}"),
                Record::Delete { id } => format!("-{id}"),
                _ => "?".into(),
            })
            .collect();
        assert_eq!(shown, ["~b", "-gone", "+r@a", "+c@b"]);
    }
}
