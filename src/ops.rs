//! Changes as operations, and `diff`, which derives them from two snapshots.
//!
//! An [`Op`] is what a client asks for and carries what it was based on, so
//! that the server can tell a concurrent change from a stale one. An
//! [`Effect`] is what the server did; it is exact (an insert carries its
//! index), so replaying the change log reproduces the server's thread.

use std::collections::HashSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::merge::Doc;
use crate::model::{Content, ContentHash, Message, MessageId, Thread, json_size};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Op {
    /// Creates the thread; a no-op if it exists.
    Create {
        created: i64,
        env: Value,
    },
    /// Appends a message after `after`, the message that preceded it where it
    /// was written (None: it was the first), and after `follows`, the
    /// writer's previous append to this thread if that is not yet confirmed
    /// (its place in the writer's view was only a prediction). Placement
    /// rule: `merge::insert_index`.
    Append {
        message: Arc<Message>,
        after: Option<MessageId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        follows: Option<MessageId>,
    },
    /// Brings a deleted message back: a copy (`message`, under a new id)
    /// goes right after the deleted one's tombstone `of`, where it was.
    Restore {
        message: Arc<Message>,
        of: MessageId,
    },
    Edit {
        id: MessageId,
        content: Content,
        base: ContentHash,
    },
    Delete {
        id: MessageId,
        base: ContentHash,
    },
    SetTitle {
        title: String,
        base: String,
    },
    SetEnv {
        env: Value,
        base: ContentHash,
    },
}

impl Op {
    /// Approximate bytes on the wire, for batch budgets.
    pub fn size(&self) -> usize {
        64 + match self {
            Op::Create { env, .. } | Op::SetEnv { env, .. } => json_size(env),
            Op::Append { message, .. } | Op::Restore { message, .. } => {
                message.content.size() + message.role.len() + message.id.as_str().len()
            }
            Op::Edit { content, .. } => content.size(),
            Op::Delete { .. } => 0,
            Op::SetTitle { title, base } => title.len() + base.len(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "effect", rename_all = "camelCase")]
pub enum Effect {
    Create { created: i64, env: Value },
    Insert { index: usize, after: Option<MessageId>, message: Arc<Message> },
    Edit { id: MessageId, content: Content },
    Delete { id: MessageId },
    Title { title: String },
    Env { env: Value },
}

impl Effect {
    /// Approximate bytes on the wire, for page budgets and metrics.
    pub fn size(&self) -> usize {
        64 + match self {
            Effect::Insert { message, .. } => message.content.size(),
            Effect::Edit { content, .. } => content.size(),
            Effect::Create { env, .. } | Effect::Env { env } => json_size(env),
            Effect::Title { title } => title.len(),
            Effect::Delete { .. } => 0,
        }
    }
}

/// The operations that turn `base` into `local`.
///
/// Only what the model can express is derived: new messages become appends
/// (anchored to their predecessor in `local`), changed content becomes edits,
/// missing messages become deletes, and title and env changes become sets.
/// Reordering existing messages is not a change: the server's order wins.
pub fn diff(base: &Doc, local: &Thread) -> Vec<Op> {
    let b = &base.thread;
    let mut ops = Vec::new();
    if !base.exists() {
        ops.push(Op::Create { created: local.created, env: local.env.clone() });
        if !local.title.is_empty() {
            ops.push(Op::SetTitle { title: local.title.clone(), base: String::new() });
        }
    } else {
        if local.title != b.title {
            ops.push(Op::SetTitle { title: local.title.clone(), base: b.title.clone() });
        }
        if local.env != b.env {
            ops.push(Op::SetEnv { env: local.env.clone(), base: ContentHash::of(&b.env) });
        }
    }

    // Fast path for the common case: `local` is `base` plus messages at the end.
    let common = b.messages.iter().zip(&local.messages).take_while(|(x, y)| Arc::ptr_eq(x, y) || x == y).count();
    let (base_rest, local_rest) = (&b.messages[common..], &local.messages[common..]);

    let local_ids: HashSet<&MessageId> = local_rest.iter().map(|m| &m.id).collect();
    let mut appends = Vec::new();
    let mut prev = common.checked_sub(1).map(|i| local.messages[i].id.clone());
    for m in local_rest {
        match base.get(&m.id) {
            None => appends.push(Op::Append { message: m.clone(), after: prev.clone(), follows: None }),
            Some(old) if old.content != m.content => {
                ops.push(Op::Edit { id: m.id.clone(), content: m.content.clone(), base: old.content.hash() })
            }
            Some(_) => {}
        }
        prev = Some(m.id.clone());
    }
    for m in base_rest {
        if !local_ids.contains(&m.id) {
            ops.push(Op::Delete { id: m.id.clone(), base: m.content.hash() });
        }
    }
    ops.extend(appends);
    ops
}
