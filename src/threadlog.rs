//! The append-only thread log: `<threadsDir>/<threadId>.jsonl`.
//!
//! A header record, then one JSON record per line. Writers only ever append
//! whole lines, so two writers (an assistant and the sidecar) never
//! overwrite each other, and a reader that remembers its byte offset reads
//! only what is new. protocol.md ("Thread logs") documents the records.
//!
//! Reading a log is replaying it: [`Replay`] applies records in file order.
//! A message record may say which message it comes right after (`after`);
//! without it, it goes at the end. That is all a writer needs to express
//! any order the merge produces with appends alone (the sidecar writes
//! `after` for every message it adds).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::model::{Content, IdError, Message, MessageId, Thread, ThreadId, derive_key, empty_object};

/// One line of a thread log.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// The first line: the thread itself. `title` and `env` are the initial
    /// values; later records change them.
    Header {
        id: ThreadId,
        created: i64,
        title: String,
        env: Value,
        extra: Map<String, Value>,
    },
    /// A message. `after`: None — the record has no `after` (the message goes
    /// at the end); Some(None) — it is the first message; Some(Some(id)) — it
    /// comes right after message `id`. A message whose id is already in the
    /// thread replaces that message's content (as an edit would); one whose
    /// id was deleted brings it back (where `after` says, else where it was).
    Message {
        message: Arc<Message>,
        after: Option<Option<MessageId>>,
    },
    Edit {
        id: MessageId,
        content: Content,
    },
    Delete {
        id: MessageId,
    },
    Title {
        title: String,
    },
    Env {
        env: Value,
    },
}

/// Why a line is not a record.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LineError {
    #[error("line at byte {offset}: not valid JSON: {error}")]
    Json { offset: u64, error: String },
    #[error("line at byte {offset}: {error}")]
    Bad { offset: u64, error: String },
    #[error("the first line must be the thread header ({{\"type\":\"thread\",\"id\":…}})")]
    NoHeader,
    #[error("the header's \"id\" is {found:?} but the file's name says {expected:?}")]
    IdMismatch { expected: String, found: String },
}

/// Splits `bytes` into complete lines; returns them with their offsets
/// (starting at `start`) and how many bytes they take. A last line without
/// its newline is a write still in progress: it is left for the next read.
pub fn complete_lines(bytes: &[u8], start: u64) -> (Vec<(u64, &[u8])>, usize) {
    let Some(end) = bytes.iter().rposition(|&b| b == b'\n') else { return (Vec::new(), 0) };
    let mut lines = Vec::new();
    let mut at = 0;
    for line in bytes[..end].split(|&b| b == b'\n') {
        let offset = start + at as u64;
        at += line.len() + 1;
        let trimmed = line.strip_suffix(b"\r").unwrap_or(line);
        if trimmed.iter().all(u8::is_ascii_whitespace) {
            continue; // blank lines are allowed and mean nothing
        }
        lines.push((offset, trimmed));
    }
    (lines, end + 1)
}

fn text(map: &mut Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match map.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(format!("\"{key}\" must be a string, not {other}")),
    }
}

fn message_id(s: String) -> Result<MessageId, String> {
    MessageId::new(s).map_err(|e: IdError| format!("bad message id: {e}"))
}

/// Parses one line. Messages without an id get a derived one from `ids`.
pub fn parse_line(line: &[u8], offset: u64, thread: &ThreadId, ids: &mut IdDeriver<'_>) -> Result<Record, LineError> {
    let bad = |error: String| LineError::Bad { offset, error };
    let value: Value = serde_json::from_slice(line).map_err(|e| LineError::Json { offset, error: e.to_string() })?;
    let Value::Object(mut map) = value else { return Err(bad("a record must be a JSON object".into())) };
    let kind = text(&mut map, "type").map_err(bad)?.ok_or_else(|| bad("a record needs a \"type\"".into()))?;
    match kind.as_str() {
        "thread" => {
            let id = text(&mut map, "id").map_err(bad)?.ok_or_else(|| bad("the header needs an \"id\"".into()))?;
            if id != thread.as_str() {
                return Err(LineError::IdMismatch { expected: thread.to_string(), found: id });
            }
            let created = match map.remove("created") {
                None | Some(Value::Null) => 0,
                Some(v) => v.as_i64().ok_or_else(|| bad(format!("\"created\" must be an integer, not {v}")))?,
            };
            let title = text(&mut map, "title").map_err(bad)?.unwrap_or_default();
            let env = map.remove("env").unwrap_or_else(empty_object);
            Ok(Record::Header { id: thread.clone(), created, title, env, extra: map })
        }
        "message" => {
            let after = match map.remove("after") {
                None => None,
                Some(Value::Null) => Some(None),
                Some(Value::String(s)) => Some(Some(message_id(s).map_err(bad)?)),
                Some(other) => return Err(bad(format!("\"after\" must be a message id or null, not {other}"))),
            };
            let role = text(&mut map, "role").map_err(bad)?.ok_or_else(|| bad("a message needs a \"role\"".into()))?;
            let content = map.remove("content").ok_or_else(|| bad("a message needs \"content\"".into()))?;
            let timestamp = match map.remove("timestamp") {
                None | Some(Value::Null) => 0,
                Some(v) => v.as_i64().ok_or_else(|| bad(format!("\"timestamp\" must be an integer, not {v}")))?,
            };
            let id = match text(&mut map, "id").map_err(bad)? {
                Some(id) => message_id(id).map_err(bad)?,
                None => ids.derive(thread, &role, timestamp, &content),
            };
            let message = Message { id, role, content: Content::new(content), timestamp, extra: map };
            Ok(Record::Message { message: Arc::new(message), after })
        }
        "edit" => {
            let id = text(&mut map, "id").map_err(bad)?.ok_or_else(|| bad("an edit needs an \"id\"".into()))?;
            let content = map.remove("content").ok_or_else(|| bad("an edit needs \"content\"".into()))?;
            Ok(Record::Edit { id: message_id(id).map_err(bad)?, content: Content::new(content) })
        }
        "delete" => {
            let id = text(&mut map, "id").map_err(bad)?.ok_or_else(|| bad("a delete needs an \"id\"".into()))?;
            Ok(Record::Delete { id: message_id(id).map_err(bad)? })
        }
        "title" => Ok(Record::Title {
            title: text(&mut map, "title").map_err(bad)?.ok_or_else(|| bad("needs a \"title\"".into()))?,
        }),
        "env" => Ok(Record::Env { env: map.remove("env").ok_or_else(|| bad("needs an \"env\"".into()))? }),
        other => Err(bad(format!("unknown record type {other:?}"))),
    }
}

/// Gives messages without an id a stable one: `m-d<hash>` of the thread id,
/// role, timestamp and content (as for `.json` files), with `-2`, `-3`, … for
/// repeats. `known` says which ids the log already holds, so that an
/// incremental read numbers repeats exactly as a read of the whole file would.
/// How often a line occurs in a file's first bytes.
pub type LineCount<'a> = dyn Fn(&[u8]) -> usize + 'a;

pub struct IdDeriver<'a> {
    known: &'a dyn Fn(&MessageId) -> bool,
    taken: HashSet<MessageId>,
    /// For [`IdDeriver::derive_line`]: how often a line occurs in the file
    /// before the bytes being read, and how often it occurred in them so far.
    before: Option<&'a LineCount<'a>>,
    lines: HashMap<u64, usize>,
}

impl<'a> IdDeriver<'a> {
    pub fn new(known: &'a dyn Fn(&MessageId) -> bool) -> Self {
        IdDeriver { known, taken: HashSet::new(), before: None, lines: HashMap::new() }
    }

    /// A deriver for a read that starts after the file's first bytes:
    /// `before(line)` counts that exact line in them.
    pub fn reading_on(known: &'a dyn Fn(&MessageId) -> bool, before: &'a LineCount<'a>) -> Self {
        IdDeriver { before: Some(before), ..IdDeriver::new(known) }
    }

    /// The id of a line that has none, by the line itself: the same key as
    /// [`IdDeriver::derive`], numbered `-2`, `-3`, … by the line's
    /// occurrence in the file. Unlike `derive` it does not skip ids the
    /// file is known to hold: a line read again (one we appended, read back)
    /// is the message it was. Only a line whose first id is known costs a
    /// look at the bytes before (a repeat is rare: a bookkeeping record).
    pub(crate) fn derive_line(
        &mut self,
        thread: &ThreadId,
        role: &str,
        timestamp: i64,
        content: &Value,
        raw: &[u8],
    ) -> MessageId {
        let key = derive_key(thread, role, timestamp, content);
        let first = MessageId::new(format!("m-d{key:016x}")).expect("derived ids are valid");
        let line = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            raw.hash(&mut h);
            h.finish()
        };
        let n = match self.lines.get(&line) {
            Some(n) => *n,
            None => match self.before {
                Some(count) if (self.known)(&first) => count(raw),
                _ => 0,
            },
        };
        self.lines.insert(line, n + 1);
        if n == 0 { first } else { MessageId::new(format!("m-d{key:016x}-{}", n + 1)).expect("derived ids are valid") }
    }

    pub(crate) fn derive(&mut self, thread: &ThreadId, role: &str, timestamp: i64, content: &Value) -> MessageId {
        let key = derive_key(thread, role, timestamp, content);
        for n in 1.. {
            let id = if n == 1 { format!("m-d{key:016x}") } else { format!("m-d{key:016x}-{n}") };
            let id = MessageId::new(id).expect("derived ids are valid");
            if !(self.known)(&id) && self.taken.insert(id.clone()) {
                return id;
            }
        }
        unreachable!()
    }
}

/// What a reader knows of the thread it reads a log into.
#[derive(Clone, Debug, Default)]
pub struct ReadCtx {
    /// The thread has a title (a first prompt does not rename it).
    pub titled: bool,
    /// The thread's env (None: the thread is new).
    pub env: Option<Value>,
}

/// The format of a log file: threadsync's own ([`Own`]) or an assistant's
/// (`sources::NativeLog`). The reading rules (`client::read_log`: offsets,
/// torn lines, stamps) are the same for all.
pub trait LogFormat {
    /// One complete line as records.
    fn parse_line(
        &self,
        line: &[u8],
        offset: u64,
        thread: &ThreadId,
        ids: &mut IdDeriver<'_>,
        ctx: &mut ReadCtx,
    ) -> Result<Vec<Record>, LineError>;
    /// A whole file: the thread its lines add up to, the lines skipped, and
    /// the bytes used (a torn last line is not).
    fn replay(&self, bytes: &[u8], id: &ThreadId) -> Result<(Replay, Vec<LineError>, usize), LineError>;
    /// Records as lines. Content must be loaded.
    fn render(&self, records: &[Record]) -> Result<Vec<u8>, serde_json::Error>;
    /// Of these complete lines, the first that must wait for more of the
    /// file (a tool call whose result is not written yet); None: all of
    /// them can be taken now.
    fn hold(&self, lines: &[(u64, &[u8])]) -> Option<usize> {
        let _ = lines;
        None
    }
    /// Another program's file: only appended to, never rewritten or
    /// compacted, and its order is its own (it has no `after`).
    fn native(&self) -> bool {
        false
    }
}

/// threadsync's own log format.
pub struct Own;

impl LogFormat for Own {
    fn parse_line(
        &self,
        line: &[u8],
        offset: u64,
        thread: &ThreadId,
        ids: &mut IdDeriver<'_>,
        _: &mut ReadCtx,
    ) -> Result<Vec<Record>, LineError> {
        parse_line(line, offset, thread, ids).map(|r| vec![r])
    }
    fn replay(&self, bytes: &[u8], id: &ThreadId) -> Result<(Replay, Vec<LineError>, usize), LineError> {
        replay(bytes, id)
    }
    fn render(&self, records: &[Record]) -> Result<Vec<u8>, serde_json::Error> {
        render(records)
    }
}

/// Renders records as lines, each ending in `\n`. Content must be loaded.
pub fn render(records: &[Record]) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::new();
    for r in records {
        let mut map = Map::new();
        let mut put = |k: &str, v: Value| {
            map.insert(k.to_string(), v);
        };
        match r {
            Record::Header { id, created, title, env, extra } => {
                put("type", "thread".into());
                put("id", id.as_str().into());
                put("created", (*created).into());
                put("title", title.as_str().into());
                put("env", env.clone());
                for (k, v) in extra {
                    map.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
            Record::Message { message, after } => {
                put("type", "message".into());
                put("id", message.id.as_str().into());
                if let Some(after) = after {
                    put("after", after.as_ref().map_or(Value::Null, |a| a.as_str().into()));
                }
                put("role", message.role.as_str().into());
                put("content", serde_json::to_value(&message.content)?);
                put("timestamp", message.timestamp.into());
                for (k, v) in &message.extra {
                    map.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
            Record::Edit { id, content } => {
                put("type", "edit".into());
                put("id", id.as_str().into());
                put("content", serde_json::to_value(content)?);
            }
            Record::Delete { id } => {
                put("type", "delete".into());
                put("id", id.as_str().into());
            }
            Record::Title { title } => {
                put("type", "title".into());
                put("title", title.as_str().into());
            }
            Record::Env { env } => {
                put("type", "env".into());
                put("env", env.clone());
            }
        }
        serde_json::to_writer(&mut out, &map)?;
        out.push(b'\n');
    }
    Ok(out)
}

/// A thread log being replayed: the thread its records add up to.
///
/// Deleted messages keep their place (as tombstones) so that a record
/// written `after` one of them still lands where its writer meant.
#[derive(Clone, Debug)]
pub struct Replay {
    pub id: ThreadId,
    pub header: bool,
    pub created: i64,
    pub title: String,
    pub env: Value,
    pub extra: Map<String, Value>,
    /// Every message id in order, tombstones included.
    order: Vec<MessageId>,
    messages: HashMap<MessageId, Arc<Message>>,
    deleted: HashSet<MessageId>,
    /// Records that changed or removed something already written: what a
    /// compaction would save.
    pub superseded: usize,
}

impl Replay {
    pub fn new(id: ThreadId) -> Self {
        Replay {
            id,
            header: false,
            created: 0,
            title: String::new(),
            env: empty_object(),
            extra: Map::new(),
            order: Vec::new(),
            messages: HashMap::new(),
            deleted: HashSet::new(),
            superseded: 0,
        }
    }

    pub fn contains(&self, id: &MessageId) -> bool {
        self.messages.contains_key(id) || self.deleted.contains(id)
    }

    /// Applies one record. The header must come first.
    pub fn apply(&mut self, r: Record) -> Result<(), LineError> {
        if !self.header && !matches!(r, Record::Header { .. }) {
            return Err(LineError::NoHeader);
        }
        match r {
            Record::Header { created, title, env, extra, .. } => {
                if self.header {
                    self.superseded += 1; // a second header restates the thread; its fields win
                }
                self.header = true;
                self.created = created;
                self.title = title;
                self.env = env;
                self.extra = extra;
            }
            Record::Message { message, after } => {
                let id = message.id.clone();
                if self.deleted.remove(&id) {
                    // Brought back: where `after` says, else where it was.
                    self.superseded += 1;
                    if let Some(after) = &after {
                        self.order.retain(|x| x != &id);
                        let at = match after {
                            None => 0,
                            Some(a) => self.order.iter().rposition(|x| x == a).map_or(self.order.len(), |i| i + 1),
                        };
                        self.order.insert(at, id.clone());
                    }
                    self.messages.insert(id, message);
                } else if let Some(old) = self.messages.get_mut(&id) {
                    self.superseded += 1;
                    if old.content != message.content {
                        Arc::make_mut(old).content = message.content.clone();
                    }
                } else {
                    let at = match &after {
                        Some(None) => 0,
                        Some(Some(a)) => self.order.iter().rposition(|x| x == a).map_or(self.order.len(), |i| i + 1),
                        None => self.order.len(),
                    };
                    if at != self.order.len() {
                        self.superseded += 1; // out of file order: a compaction would straighten it
                    }
                    self.order.insert(at, id.clone());
                    self.messages.insert(id, message);
                }
            }
            Record::Edit { id, content } => {
                self.superseded += 1;
                if let Some(m) = self.messages.get_mut(&id) {
                    Arc::make_mut(m).content = content;
                }
            }
            Record::Delete { id } => {
                self.superseded += 1;
                if self.messages.remove(&id).is_some() {
                    self.deleted.insert(id);
                }
            }
            Record::Title { title } => {
                self.superseded += 1;
                self.title = title;
            }
            Record::Env { env } => {
                self.superseded += 1;
                self.env = env;
            }
        }
        Ok(())
    }

    /// The thread as a `.json` file would hold it.
    pub fn thread(&self) -> Thread {
        let mut t = Thread::new(self.id.clone(), self.created);
        t.title = self.title.clone();
        t.env = self.env.clone();
        t.extra = self.extra.clone();
        t.messages = self.order.iter().filter_map(|id| self.messages.get(id).cloned()).collect();
        t
    }
}

/// Reads a whole log. Lines that are not records are reported and skipped;
/// a log without its header is an error.
pub fn replay(bytes: &[u8], id: &ThreadId) -> Result<(Replay, Vec<LineError>, usize), LineError> {
    let (lines, consumed) = complete_lines(bytes, 0);
    let mut r = Replay::new(id.clone());
    let mut errors = Vec::new();
    let known = |_: &MessageId| false;
    let mut ids = IdDeriver::new(&known);
    for (offset, line) in lines {
        match parse_line(line, offset, id, &mut ids) {
            Ok(rec) => r.apply(rec)?,
            Err(e @ (LineError::IdMismatch { .. } | LineError::NoHeader)) => return Err(e),
            Err(e) if !r.header => {
                return Err(if matches!(e, LineError::Json { .. }) { e } else { LineError::NoHeader });
            }
            Err(e) => errors.push(e),
        }
    }
    Ok((r, errors, consumed))
}

/// The records of a compacted log: the header and the messages in order.
pub fn compacted(t: &Thread) -> Vec<Record> {
    let mut out = vec![Record::Header {
        id: t.id.clone(),
        created: t.created,
        title: t.title.clone(),
        env: t.env.clone(),
        extra: t.extra.clone(),
    }];
    out.extend(t.messages.iter().map(|m| Record::Message { message: m.clone(), after: None }));
    out
}

#[cfg(test)]
mod tests;
