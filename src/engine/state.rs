//! What the engine asks to be kept, row by row, and what it gets back.
//!
//! The engine's persistence actions ([`Save`]) describe changes the size of
//! the change — one message's placement, one operation, one file-view entry
//! — so a 1 KB append to a 20 MB thread writes about 1 KB. A thread at rest
//! lives only in the store: the shell loads it ([`StoredThread`]) before an
//! input that touches it, and the engine drops it from memory once it is
//! idle. Message bodies never enter the engine: [`Save::Body`] hands them to
//! the store, and everything the engine keeps refers to content by hash.
//!
//! `client::mem::MemState` is the reference implementation: the simulator
//! and the engine tests keep a client's state in it; the sidecar's SQLite
//! database (`lsp/state.rs`) implements the same contract.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::engine::file::{FileKind, FileState, Stamp};
use crate::merge::{Conflict, Doc};
use crate::model::{Content, ContentHash, Message, MessageId, Thread, ThreadId};
use crate::ops::{Effect, Op};
use crate::time::Time;
use crate::wire::Cursor;

/// For an insert that does not go at the end of a thread: the ids of the
/// entries it lands between (tombstones count), so a store can place it
/// without renumbering the thread.
pub type Between = Option<(Option<MessageId>, MessageId)>;

/// A change to a thread's base (the server's state as last pulled).
#[derive(Clone, Debug, PartialEq)]
pub enum BaseChange {
    /// These effects, in order, applied to the base; it is now at
    /// `version`. `between[i]` places `effects[i]`.
    Effects { effects: Vec<Effect>, between: Vec<Between>, version: u64 },
    /// The whole base replaced by a snapshot from the server.
    Replace { doc: Box<Doc> },
}

/// What the engine knows of a thread's file, as persisted. `messages` is a
/// delta of the view (Some: set, None: removed) unless `replace`.
#[derive(Clone, Debug, PartialEq)]
pub struct FileSave {
    pub kind: FileKind,
    pub messages: Vec<(MessageId, Option<ContentHash>)>,
    pub replace: bool,
    pub title: String,
    pub env: ContentHash,
    pub created: i64,
    pub extra: Map<String, Value>,
    pub stamp: Option<Stamp>,
    pub own: Option<u64>,
    pub dirty: bool,
    pub superseded: u64,
    pub removed: bool,
}

/// A persistence action. The shell applies all of one engine step's in one
/// transaction, before it performs the step's other actions.
#[derive(Clone, Debug, PartialEq)]
pub enum Save {
    /// Keep a message body (content loaded). Idempotent.
    Body {
        thread: ThreadId,
        id: MessageId,
        content: Content,
    },
    Base {
        thread: ThreadId,
        change: BaseChange,
    },
    /// Operations not yet confirmed: added (with their sequence numbers),
    /// and the ones now done (confirmed, refused or superseded).
    Ops {
        thread: ThreadId,
        add: Vec<(u64, Op)>,
        done: Vec<u64>,
    },
    File {
        thread: ThreadId,
        file: FileSave,
    },
    Cursor(Option<Cursor>),
    /// The whole list (conflicts are few). Elided bases are loaded by the shell.
    Conflicts(Vec<Conflict>),
}

/// A thread as loaded from the store.
#[derive(Clone, Debug)]
pub struct StoredThread {
    pub base: Doc,
    pub ops: Vec<(u64, Op)>,
    pub file: FileState,
    pub last_sync: Option<Time>,
}

/// What a restarting engine starts from: the threads with work left (ops,
/// a file that lags, a file error), the cursor and the conflicts.
#[derive(Clone, Debug, Default)]
pub struct Restored {
    pub threads: Vec<StoredThread>,
    pub cursor: Option<Cursor>,
    pub conflicts: Vec<Conflict>,
    /// One more than the largest operation sequence number stored.
    pub next_seq: u64,
}

/// An operation as stored: message content replaced by its hash and size.
/// (Bodies are stored once, in the body table.)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredOp(Value);

fn elided_json(c: &Content) -> Value {
    serde_json::json!({ "$hash": String::from(c.hash()), "$size": c.size() })
}

fn elided_from(v: &Value) -> Option<Content> {
    let hash = ContentHash::try_from(v.get("$hash")?.as_str()?.to_string()).ok()?;
    Some(Content::elided_of(hash, v.get("$size")?.as_u64()? as usize))
}

impl StoredOp {
    pub fn of(op: &Op) -> StoredOp {
        let mut v = match op {
            Op::Append { message, after, follows } => {
                let m = Message { content: Content::new(Value::Null), ..(**message).clone() };
                let mut m = serde_json::to_value(m).expect("serialises");
                m["content"] = elided_json(&message.content);
                serde_json::json!({ "op": "append", "message": m, "after": after, "follows": follows })
            }
            Op::Restore { message, of } => {
                let m = Message { content: Content::new(Value::Null), ..(**message).clone() };
                let mut m = serde_json::to_value(m).expect("serialises");
                m["content"] = elided_json(&message.content);
                serde_json::json!({ "op": "restore", "message": m, "of": of })
            }
            Op::Edit { id, content, base } => {
                serde_json::json!({ "op": "edit", "id": id, "content": elided_json(content), "base": base })
            }
            other => serde_json::to_value(other).expect("an op without content serialises"),
        };
        if let Value::Object(m) = &mut v {
            m.retain(|_, x| !x.is_null());
        }
        StoredOp(v)
    }

    pub fn to_op(&self) -> Result<Op, String> {
        let v = &self.0;
        let bad = || format!("unreadable stored operation {v}");
        match v.get("op").and_then(Value::as_str) {
            Some("append") => {
                let mut m = v.get("message").cloned().ok_or_else(bad)?;
                let content = elided_from(&m["content"]).ok_or_else(bad)?;
                m["content"] = Value::Null;
                let mut message: Message = serde_json::from_value(m).map_err(|e| e.to_string())?;
                message.content = content;
                let id = |k: &str| -> Result<Option<MessageId>, String> {
                    v.get(k)
                        .filter(|x| !x.is_null())
                        .map(|x| serde_json::from_value(x.clone()))
                        .transpose()
                        .map_err(|e| e.to_string())
                };
                Ok(Op::Append { message: Arc::new(message), after: id("after")?, follows: id("follows")? })
            }
            Some("restore") => {
                let mut m = v.get("message").cloned().ok_or_else(bad)?;
                let content = elided_from(&m["content"]).ok_or_else(bad)?;
                m["content"] = Value::Null;
                let mut message: Message = serde_json::from_value(m).map_err(|e| e.to_string())?;
                message.content = content;
                let of = serde_json::from_value(v["of"].clone()).map_err(|e| e.to_string())?;
                Ok(Op::Restore { message: Arc::new(message), of })
            }
            Some("edit") => Ok(Op::Edit {
                id: serde_json::from_value(v["id"].clone()).map_err(|e| e.to_string())?,
                content: elided_from(&v["content"]).ok_or_else(bad)?,
                base: serde_json::from_value(v["base"].clone()).map_err(|e| e.to_string())?,
            }),
            _ => serde_json::from_value(v.clone()).map_err(|e| e.to_string()),
        }
    }

    pub fn json(&self) -> &Value {
        &self.0
    }

    pub fn from_json(v: Value) -> StoredOp {
        StoredOp(v)
    }
}

/// Loads elided content back: what the shell does before a push, a file
/// write or an answer to the editor.
pub trait Bodies {
    fn body(&self, thread: &ThreadId, id: &MessageId, hash: ContentHash) -> Option<Value>;

    /// Whether [`Bodies::body`] would find it (without reading it).
    fn has_body(&self, thread: &ThreadId, id: &MessageId, hash: ContentHash) -> bool {
        self.body(thread, id, hash).is_some()
    }

    fn load_content(&self, thread: &ThreadId, id: &MessageId, c: &Content) -> Result<Content, String> {
        if !c.is_elided() {
            return Ok(c.clone());
        }
        self.body(thread, id, c.hash())
            .map(Content::new)
            .ok_or_else(|| format!("the body of message {id} of {thread} ({:?}) is missing from the state", c.hash()))
    }

    fn load_message(&self, thread: &ThreadId, m: &Arc<Message>) -> Result<Arc<Message>, String> {
        if !m.content.is_elided() {
            return Ok(m.clone());
        }
        let content = self.load_content(thread, &m.id, &m.content)?;
        Ok(Arc::new(Message { content, ..(**m).clone() }))
    }

    fn load_thread(&self, t: &Thread) -> Result<Thread, String> {
        let messages = t.messages.iter().map(|m| self.load_message(&t.id, m)).collect::<Result<_, _>>()?;
        Ok(Thread { messages, ..t.clone() })
    }

    fn load_op(&self, thread: &ThreadId, op: &Op) -> Result<Op, String> {
        Ok(match op {
            Op::Append { message, after, follows } => Op::Append {
                message: self.load_message(thread, message)?,
                after: after.clone(),
                follows: follows.clone(),
            },
            Op::Restore { message, of } => Op::Restore { message: self.load_message(thread, message)?, of: of.clone() },
            Op::Edit { id, content, base } => {
                Op::Edit { id: id.clone(), content: self.load_content(thread, id, content)?, base: *base }
            }
            other => other.clone(),
        })
    }

    fn load_conflict(&self, c: &Conflict) -> Result<Conflict, String> {
        let mut c = c.clone();
        if let Some(id) = &c.message_id {
            c.base = self.load_content(&c.thread_id, id, &c.base)?;
            if let Some(m) = &c.base_message {
                c.base_message = Some(self.load_message(&c.thread_id, m)?);
            }
        }
        Ok(c)
    }
}

/// A file state as it comes back from storage: what only lives in memory
/// (a write in flight, what lags in a log) starts over, and a file marked
/// dirty is compared again with the thread as a whole.
pub fn restored_file(f: &FileState) -> FileState {
    let mut r = FileState::new(f.kind);
    r.view = f.view.clone();
    r.stamp = f.stamp;
    r.own = f.own;
    r.dirty = f.dirty;
    r.superseded = f.superseded;
    r.removed = f.removed;
    r
}
