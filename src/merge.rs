//! The three-way merge: applying operations to a thread deterministically.
//!
//! The server applies every client's operations, in the order they reach it,
//! with [`Doc::apply`]; a client predicts the same result by applying its
//! pending operations to the server's state with the same function (a rebase,
//! Replicache-style). Because every replica ends on the server's state, they
//! converge; because the rules below never look at clocks or at who is
//! "local", the prediction matches what the server will do.
//!
//! Placement of appends: every message remembers the message it was written
//! after (its anchor). A new message goes right after the run of messages that
//! descend from its anchor. So a client's run of messages stays contiguous and
//! in order however it interleaves with another client's, and a message that
//! reaches the server later goes after concurrent ones that arrived earlier.
//!
//! Concurrent changes to one field (title, env, a message's content, an edit
//! against a delete): the change the server saw first stays, and the later one
//! becomes a [`Conflict`] record so the user can pick the other side.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{Content, ContentHash, Message, MessageId, Thread, ThreadId};
use crate::ops::{Effect, Op, diff};

/// Size limits the server enforces (and a client checks before it sends).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_message_bytes: usize,
    pub max_title_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_message_bytes: 16 << 20, max_title_bytes: 4096 }
    }
}

/// A thread plus what placement needs: each message's anchor, and the
/// order of all messages ever appended, deleted ones included (tombstones).
/// `thread.v == 0` means the thread has not been created (on the server) yet.
///
/// Deleted messages keep their place in `seq`, so that a message written
/// after one that was deleted meanwhile still lands where its writer saw it,
/// and a replayed append of a deleted message (from a client that crashed
/// before it learnt of the delete) does not bring it back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Doc {
    /// The visible thread: `seq` without the deleted ids.
    pub thread: Thread,
    /// message id -> the message it was appended after (tombstones too).
    #[serde(default)]
    pub after: HashMap<MessageId, Option<MessageId>>,
    /// Every message id in order, deleted ones included.
    #[serde(default)]
    pub seq: Vec<MessageId>,
    #[serde(default, skip_serializing_if = "HashSet::is_empty")]
    pub deleted: HashSet<MessageId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConflictKind {
    /// Both sides set the title.
    Title,
    /// Both sides set env.
    Env,
    /// Both sides edited a message's content.
    Content,
    /// This side edited a message the other side deleted.
    EditDelete,
    /// This side deleted a message the other side edited.
    DeleteEdit,
}

/// What the server reports for an operation it did not apply because the
/// field had changed since the operation's base.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConflictInfo {
    pub kind: ConflictKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<MessageId>,
    /// The value the refused operation wanted (null: delete).
    pub local: Value,
    /// The value the thread keeps (null: the message is gone).
    pub remote: Value,
}

/// A conflict as users see it (`threadsync/listConflicts`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Conflict {
    pub id: String,
    pub thread_id: ThreadId,
    pub kind: ConflictKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<MessageId>,
    /// The value both sides started from. For a message conflict it is the
    /// message's content, elided inside the engine until the shell loads it.
    pub base: Content,
    pub local: Value,
    pub remote: Value,
    /// For message conflicts: the message as it was at the base, so that
    /// choosing an edit of a message deleted elsewhere can bring it back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_message: Option<Arc<Message>>,
}

impl Conflict {
    /// The operation that makes this conflict's local side win, applied on
    /// top of `current` (the thread as it is now).
    pub fn choose_local(&self, current: &Doc) -> Option<Op> {
        match self.kind {
            ConflictKind::Title => {
                let title = self.local.as_str()?.to_string();
                (current.thread.title != title).then(|| Op::SetTitle { title, base: current.thread.title.clone() })
            }
            ConflictKind::Env => (current.thread.env != self.local)
                .then(|| Op::SetEnv { env: self.local.clone(), base: ContentHash::of(&current.thread.env) }),
            ConflictKind::Content | ConflictKind::EditDelete => {
                let id = self.message_id.clone()?;
                match current.get(&id) {
                    Some(m) if m.content == self.local => None,
                    Some(m) => Some(Op::Edit { id, content: Content::new(self.local.clone()), base: m.content.hash() }),
                    // The message is gone: bring it back, under a new id (its
                    // old one stays deleted), with the edited content.
                    None => {
                        let base = self.base_message.as_deref()?;
                        let mut new_id: String = base.id.as_str().chars().take(crate::model::MAX_ID_LEN - 9).collect();
                        new_id.push_str(".restored");
                        let id = MessageId::new(new_id).ok()?;
                        let message = Message { id, content: Content::new(self.local.clone()), ..base.clone() };
                        let after = current.thread.messages.last().map(|m| m.id.clone());
                        Some(Op::Append { message: Arc::new(message), after, follows: None })
                    }
                }
            }
            ConflictKind::DeleteEdit => {
                let id = self.message_id.clone()?;
                let m = current.get(&id)?;
                Some(Op::Delete { id, base: m.content.hash() })
            }
        }
    }
}

/// What applying one operation did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "camelCase")]
pub enum OpOutcome {
    Applied {
        effect: Effect,
    },
    /// Already so (a replayed append, an edit to the same content): nothing to do.
    Unchanged,
    Conflict {
        conflict: ConflictInfo,
    },
    Rejected {
        reason: String,
    },
}

impl Doc {
    /// A thread that does not exist yet.
    pub fn empty(id: ThreadId) -> Self {
        Doc { thread: Thread::new(id, 0), after: HashMap::new(), seq: Vec::new(), deleted: HashSet::new() }
    }

    /// A doc for a thread whose messages were written one after another.
    pub fn from_thread(thread: Thread) -> Self {
        let mut after = HashMap::with_capacity(thread.messages.len());
        let mut prev = None;
        for m in &thread.messages {
            after.insert(m.id.clone(), prev.replace(m.id.clone()));
        }
        let seq = thread.messages.iter().map(|m| m.id.clone()).collect();
        Doc { thread, after, seq, deleted: HashSet::new() }
    }

    /// Approximate bytes on the wire, for page budgets and metrics.
    pub fn size(&self) -> usize {
        256 + self.thread.messages.iter().map(|m| 64 + m.content.size()).sum::<usize>()
    }

    pub fn exists(&self) -> bool {
        self.thread.v > 0
    }

    pub fn id(&self) -> &ThreadId {
        &self.thread.id
    }

    pub fn get(&self, id: &MessageId) -> Option<&Arc<Message>> {
        if !self.after.contains_key(id) || self.deleted.contains(id) {
            return None;
        }
        self.thread.position(id).map(|i| &self.thread.messages[i])
    }

    /// Where a message appended after `after` goes; see [`insert_index`].
    pub fn insert_index(&self, after: Option<&MessageId>) -> usize {
        let mut view = self;
        match insert_index(&mut view, after) {
            Ok(i) => i,
            Err(never) => match never {},
        }
    }

    /// Applies one operation; see [`decide`].
    pub fn apply(&mut self, op: &Op, limits: &Limits) -> OpOutcome {
        let mut view = &*self;
        let outcome = match decide(&mut view, op, limits) {
            Ok(o) => o,
            Err(never) => match never {},
        };
        if let OpOutcome::Applied { effect } = &outcome {
            self.apply_effect(effect).expect("decide() only yields effects that apply");
        }
        outcome
    }

    /// Applies an effect from the server's change log and bumps the version.
    pub fn apply_effect(&mut self, effect: &Effect) -> Result<(), String> {
        let t = &mut self.thread;
        match effect {
            Effect::Create { created, env } => {
                if t.v > 0 {
                    return Err(format!("thread {} already exists", t.id));
                }
                t.created = *created;
                t.env = env.clone();
            }
            Effect::Insert { index, after, message } => {
                if *index > self.seq.len() {
                    return Err(format!("insert at {index} past the end ({})", self.seq.len()));
                }
                if self.after.contains_key(&message.id) {
                    return Err(format!("message {} is already there", message.id));
                }
                // Appends at the end are the common case; a mid-thread insert
                // counts the visible messages before it.
                let visible = if *index == self.seq.len() {
                    t.messages.len()
                } else {
                    self.seq[..*index].iter().filter(|id| !self.deleted.contains(*id)).count()
                };
                self.seq.insert(*index, message.id.clone());
                t.messages.insert(visible, message.clone());
                self.after.insert(message.id.clone(), after.clone());
            }
            Effect::Edit { id, content } => {
                let i = t.position(id).ok_or_else(|| format!("no message {id} to edit"))?;
                Arc::make_mut(&mut t.messages[i]).content = content.clone();
            }
            Effect::Delete { id } => {
                let i = t.position(id).ok_or_else(|| format!("no message {id} to delete"))?;
                t.messages.remove(i);
                self.deleted.insert(id.clone());
            }
            Effect::Title { title } => t.title.clone_from(title),
            Effect::Env { env } => t.env = env.clone(),
        }
        t.v += 1;
        Ok(())
    }
}

/// What deciding an operation needs to know about a thread. The in-memory
/// [`Doc`] is one; the server's storage is another, so that a push reads only
/// the rows it touches rather than the whole thread.
pub trait ThreadView {
    type Error;
    /// The thread's title, env, message count and last message; None if the
    /// thread does not exist.
    fn head(&mut self) -> Result<Option<Head>, Self::Error>;
    /// A message with its position and anchor.
    fn message(&mut self, id: &MessageId) -> Result<Option<Located>, Self::Error>;
    /// Where a deleted message's tombstone sits, if this id was deleted.
    fn tombstone(&mut self, id: &MessageId) -> Result<Option<usize>, Self::Error>;
    /// Visits the ids and anchors of the messages (tombstones included) from
    /// position `from` on, in order, while `keep` returns true; returns how
    /// many it kept.
    fn scan_from(
        &mut self,
        from: usize,
        keep: &mut dyn FnMut(&MessageId, Option<&MessageId>) -> bool,
    ) -> Result<usize, Self::Error>;
}

/// A thread's scalar fields, as an operation needs them. `len` and `last`
/// count tombstones: they are about placement.
#[derive(Clone, Debug, PartialEq)]
pub struct Head {
    pub title: String,
    pub env: Value,
    pub len: usize,
    pub last: Option<MessageId>,
}

/// A message and where it sits (`index` counts tombstones).
#[derive(Clone, Debug, PartialEq)]
pub struct Located {
    pub index: usize,
    pub after: Option<MessageId>,
    pub message: Arc<Message>,
}

impl ThreadView for &Doc {
    type Error = std::convert::Infallible;

    fn head(&mut self) -> Result<Option<Head>, Self::Error> {
        let t = &self.thread;
        Ok(self.exists().then(|| Head {
            title: t.title.clone(),
            env: t.env.clone(),
            len: self.seq.len(),
            last: self.seq.last().cloned(),
        }))
    }

    fn message(&mut self, id: &MessageId) -> Result<Option<Located>, Self::Error> {
        let (Some(after), Some(message)) = (self.after.get(id), self.get(id)) else { return Ok(None) };
        let index = self.seq.iter().rposition(|s| s == id).expect("visible messages are in seq");
        Ok(Some(Located { index, after: after.clone(), message: message.clone() }))
    }

    fn tombstone(&mut self, id: &MessageId) -> Result<Option<usize>, Self::Error> {
        if !self.deleted.contains(id) {
            return Ok(None);
        }
        Ok(self.seq.iter().rposition(|s| s == id))
    }

    fn scan_from(
        &mut self,
        from: usize,
        keep: &mut dyn FnMut(&MessageId, Option<&MessageId>) -> bool,
    ) -> Result<usize, Self::Error> {
        let mut n = 0;
        for id in self.seq.iter().skip(from) {
            if !keep(id, self.after.get(id).and_then(|a| a.as_ref())) {
                break;
            }
            n += 1;
        }
        Ok(n)
    }
}

/// Where a message appended after `after` goes: past the end of the run of
/// messages (tombstones included) that descend from the anchor; no anchor,
/// or one never seen here, means the end of the thread. The work is the
/// length of that run — the part of the thread the writer had not seen — not
/// the length of the thread.
///
/// Why this keeps a writer's messages in order: positions of existing
/// entries never change relative to each other (deletes leave tombstones),
/// and a run is a contiguous subtree, so anything the writer saw after the
/// anchor's run is still after it here.
pub fn insert_index<V: ThreadView>(v: &mut V, after: Option<&MessageId>) -> Result<usize, V::Error> {
    let len = v.head()?.map_or(0, |h| h.len);
    let Some(anchor) = after else { return Ok(len) };
    let index = match v.message(anchor)? {
        Some(at) => at.index,
        None => match v.tombstone(anchor)? {
            Some(index) => index,
            None => return Ok(len),
        },
    };
    if index + 1 == len {
        return Ok(len);
    }
    let mut run: HashSet<MessageId> = HashSet::from([anchor.clone()]);
    let n = v.scan_from(index + 1, &mut |id, parent| match parent {
        Some(p) if run.contains(p) => {
            run.insert(id.clone());
            true
        }
        _ => false,
    })?;
    Ok(index + 1 + n)
}

/// Decides what one operation does to a thread. Deterministic: the result
/// depends only on the thread and the operation, never on who sent it.
pub fn decide<V: ThreadView>(v: &mut V, op: &Op, limits: &Limits) -> Result<OpOutcome, V::Error> {
    let conflict = |kind, message_id: Option<&MessageId>, local: Value, remote: Value| OpOutcome::Conflict {
        conflict: ConflictInfo { kind, message_id: message_id.cloned(), local, remote },
    };
    let applied = |effect| OpOutcome::Applied { effect };
    let too_big = |what: String, size: usize| OpOutcome::Rejected {
        reason: format!("{what} is {size} bytes; the limit is {} bytes", limits.max_message_bytes),
    };
    let Some(head) = v.head()? else {
        return Ok(match op {
            Op::Create { created, env } => applied(Effect::Create { created: *created, env: env.clone() }),
            _ => OpOutcome::Rejected { reason: "the thread does not exist".into() },
        });
    };
    Ok(match op {
        Op::Create { .. } => OpOutcome::Unchanged,
        Op::Append { message, after, follows } => {
            if v.message(&message.id)?.is_some() || v.tombstone(&message.id)?.is_some() {
                return Ok(OpOutcome::Unchanged);
            }
            let size = message.content.size();
            if size > limits.max_message_bytes {
                return Ok(too_big(format!("message {}", message.id), size));
            }
            let place = |v: &mut V, a: Option<&MessageId>| match a {
                Some(a) if head.last.as_ref() == Some(a) => Ok(head.len),
                _ => insert_index(v, a),
            };
            let mut index = place(v, after.as_ref())?;
            let mut anchor = after;
            // Never before the writer's own previous message.
            if let Some(f) = follows.as_ref().filter(|f| Some(*f) != after.as_ref()) {
                let behind = place(v, Some(f))?;
                if behind > index {
                    index = behind;
                    anchor = follows;
                }
            }
            applied(Effect::Insert { index, after: anchor.clone(), message: message.clone() })
        }
        Op::Restore { message, of } => {
            if v.message(&message.id)?.is_some() || v.tombstone(&message.id)?.is_some() {
                return Ok(OpOutcome::Unchanged);
            }
            let size = message.content.size();
            if size > limits.max_message_bytes {
                return Ok(too_big(format!("message {}", message.id), size));
            }
            match v.tombstone(of)? {
                Some(index) => {
                    applied(Effect::Insert { index: index + 1, after: Some(of.clone()), message: message.clone() })
                }
                None => OpOutcome::Rejected { reason: format!("message {of} is not deleted; nothing to restore") },
            }
        }
        Op::Edit { id, content, base } => match v.message(id)? {
            None => conflict(ConflictKind::EditDelete, Some(id), content.value_or_null(), Value::Null),
            Some(m) if &m.message.content == content => OpOutcome::Unchanged,
            Some(m) if m.message.content.hash() != *base => {
                conflict(ConflictKind::Content, Some(id), content.value_or_null(), m.message.content.value_or_null())
            }
            Some(_) if content.size() > limits.max_message_bytes => too_big(format!("message {id}"), content.size()),
            Some(_) => applied(Effect::Edit { id: id.clone(), content: content.clone() }),
        },
        Op::Delete { id, base } => match v.message(id)? {
            None => OpOutcome::Unchanged,
            Some(m) if m.message.content.hash() != *base => {
                conflict(ConflictKind::DeleteEdit, Some(id), Value::Null, m.message.content.value_or_null())
            }
            Some(_) => applied(Effect::Delete { id: id.clone() }),
        },
        Op::SetTitle { title, base } => {
            if &head.title == title {
                OpOutcome::Unchanged
            } else if title.len() > limits.max_title_bytes {
                OpOutcome::Rejected {
                    reason: format!("title is {} bytes; the limit is {} bytes", title.len(), limits.max_title_bytes),
                }
            } else if &head.title != base {
                conflict(ConflictKind::Title, None, Value::String(title.clone()), Value::String(head.title))
            } else {
                applied(Effect::Title { title: title.clone() })
            }
        }
        Op::SetEnv { env, base } => {
            if &head.env == env {
                OpOutcome::Unchanged
            } else if ContentHash::of(&head.env) != *base {
                conflict(ConflictKind::Env, None, env.clone(), head.env)
            } else {
                applied(Effect::Env { env: env.clone() })
            }
        }
    })
}

/// The result of a three-way merge.
#[derive(Clone, Debug, PartialEq)]
pub struct Merged {
    pub doc: Doc,
    /// The base side of each conflict is filled in from `base`.
    pub conflicts: Vec<(ConflictInfo, Content)>,
    /// Operations refused outright (e.g. too large), with the reason.
    pub rejected: Vec<(Op, String)>,
}

/// Three-way merge of a thread: the changes from `base` to `local`, rebased
/// onto `remote`. This is what the server will end up with once `local`'s
/// changes reach it, provided nothing else reaches it first.
pub fn merge(base: &Doc, local: &Thread, remote: &Doc, limits: &Limits) -> Merged {
    let mut doc = remote.clone();
    let mut conflicts = Vec::new();
    let mut rejected = Vec::new();
    for op in diff(base, local) {
        match doc.apply(&op, limits) {
            OpOutcome::Conflict { conflict } => {
                let b = base_value(base, &conflict);
                conflicts.push((conflict, b));
            }
            OpOutcome::Rejected { reason } => rejected.push((op, reason)),
            OpOutcome::Applied { .. } | OpOutcome::Unchanged => {}
        }
    }
    Merged { doc, conflicts, rejected }
}

/// The base side of a conflict, as the client saw it when it made the change.
pub fn base_value(base: &Doc, c: &ConflictInfo) -> Content {
    match (c.kind, &c.message_id) {
        (ConflictKind::Title, _) => Content::new(Value::String(base.thread.title.clone())),
        (ConflictKind::Env, _) => Content::new(base.thread.env.clone()),
        (_, Some(id)) => base.get(id).map_or_else(|| Content::new(Value::Null), |m| m.content.clone()),
        (_, None) => Content::new(Value::Null),
    }
}

impl Conflict {
    /// A user-facing conflict from what the server reported and the base the
    /// client had when it made the refused change.
    pub fn new(id: String, thread_id: ThreadId, info: ConflictInfo, base: &Doc) -> Self {
        let base_message = info.message_id.as_ref().and_then(|m| base.get(m).cloned());
        Conflict {
            id,
            thread_id,
            kind: info.kind,
            base: base_value(base, &info),
            message_id: info.message_id,
            local: info.local,
            remote: info.remote,
            base_message,
        }
    }
}

#[cfg(test)]
mod tests;
