//! The types that cross the network between sidecar and server, as JSON.
//! protocol.md documents every field; the HTTP layer only adds routes.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::merge::{ConflictInfo, Doc, OpOutcome};
use crate::model::{Content, ContentHash, Message, ThreadId};
use crate::ops::{Effect, Op};

crate::model::plain_id!(
    /// Names a client for exactly-once delivery: the server remembers the
    /// last mutation id it applied per client id.
    ClientId
);

/// One client's change to one thread. Mutation ids of a client increase by
/// one from 1; the server applies each exactly once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Mutation {
    #[schema(minimum = 1)]
    pub id: u64,
    pub thread_id: ThreadId,
    pub ops: Vec<Op>,
}

/// Longest machine name a push may carry.
pub const MAX_MACHINE_NAME: usize = 128;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PushRequest {
    pub client_id: ClientId,
    pub mutations: Vec<Mutation>,
    /// The name of the machine the client runs on (its host name), shown
    /// as the author of its messages on the web pages. Optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum MutationStatus {
    /// Every operation applied (or was already so).
    Applied,
    /// This mutation id was applied before; nothing was done again.
    Duplicate,
    /// Some operation was refused because the thread changed since its base;
    /// the others applied. See `ops`.
    Conflict,
    /// Some operation was refused for good (e.g. too large); the others
    /// applied. See `ops` and `reason`.
    Rejected,
    /// The mutation id skips ids the server never saw; nothing was done and
    /// no later mutation of this client is taken in this request.
    Gap,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MutationResult {
    pub id: u64,
    pub thread_id: ThreadId,
    pub status: MutationStatus,
    /// The thread's version after this mutation (for a duplicate: now).
    pub version: u64,
    /// One outcome per operation, in order (empty for duplicate and gap).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ops: Vec<OpResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What became of one pushed operation. Unlike [`OpOutcome`] it does not echo
/// the effect: the pusher has the content, and others get it by pulling.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "result", rename_all = "camelCase")]
pub enum OpResult {
    Applied,
    Unchanged,
    Conflict { conflict: ConflictInfo },
    Rejected { reason: String },
}

impl From<OpOutcome> for OpResult {
    fn from(o: OpOutcome) -> Self {
        match o {
            OpOutcome::Applied { .. } => OpResult::Applied,
            OpOutcome::Unchanged => OpResult::Unchanged,
            OpOutcome::Conflict { conflict } => OpResult::Conflict { conflict },
            OpOutcome::Rejected { reason } => OpResult::Rejected { reason },
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PushResponse {
    pub results: Vec<MutationResult>,
    /// The team's change-log head after this push.
    pub cursor: Cursor,
}

/// One entry of a team's change log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    pub seq: u64,
    pub thread_id: ThreadId,
    /// The thread's version once this effect is applied.
    pub version: u64,
    #[serde(flatten)]
    pub effect: Effect,
    /// The client whose push made this change, as the server keeps it;
    /// never sent.
    #[serde(skip)]
    pub author: Option<ClientId>,
    /// On an insert pulled back by the client that pushed it (the pull
    /// named it in `clients`): the message's content is sent as null, and
    /// this is the content it stands for, which that client already has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elided: Option<ElidedContent>,
}

/// Content left out of a change: its hash and size (see [`Change::elided`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ElidedContent {
    pub hash: ContentHash,
    pub size: usize,
}

impl Change {
    pub fn new(seq: u64, thread_id: ThreadId, version: u64, effect: Effect) -> Change {
        Change { seq, thread_id, version, effect, author: None, elided: None }
    }

    /// This change as its author pulls it back, if that differs from what
    /// everyone else gets: an insert without its content.
    pub fn for_author(&self) -> Option<Change> {
        let Effect::Insert { index, after, message } = &self.effect else { return None };
        let value = message.content.value()?;
        if value.is_null() {
            return None;
        }
        let elided = ElidedContent { hash: message.content.hash(), size: message.content.size() };
        let message = Arc::new(Message { content: Content::new(serde_json::Value::Null), ..(**message).clone() });
        Some(Change {
            effect: Effect::Insert { index: *index, after: after.clone(), message },
            elided: Some(elided),
            ..self.clone()
        })
    }

    /// Undoes [`Change::for_author`] on arrival: the content becomes known
    /// by its hash alone, to be found among the client's own bodies.
    pub fn take_elided(&mut self) {
        if let (Some(e), Effect::Insert { message, .. }) = (self.elided.take(), &mut self.effect) {
            Arc::make_mut(message).content = Content::elided_of(e.hash, e.size);
        }
    }
}

/// Where a pull resumes. `Log(n)`: after change n of the team's log.
/// `Snapshot`: paging through whole threads (a first sync, or a refetch),
/// after which the log is read from `head`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Cursor {
    Log(u64),
    Snapshot { head: u64, after: Option<ThreadId> },
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cursor::Log(n) => write!(f, "{n}"),
            Cursor::Snapshot { head, after: None } => write!(f, "s{head}"),
            Cursor::Snapshot { head, after: Some(t) } => write!(f, "s{head}.{t}"),
        }
    }
}

impl FromStr for Cursor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a cursor this server issued");
        if let Some(rest) = s.strip_prefix('s') {
            let (head, after) = match rest.split_once('.') {
                Some((h, a)) => (h, Some(ThreadId::new(a).map_err(|_| bad())?)),
                None => (rest, None),
            };
            return Ok(Cursor::Snapshot { head: head.parse().map_err(|_| bad())?, after });
        }
        s.parse().map(Cursor::Log).map_err(|_| bad())
    }
}

impl Serialize for Cursor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cursor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PullResponse {
    /// Whole threads (snapshot paging only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<Doc>,
    /// Log entries after the request's cursor, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<Change>,
    /// Where the next pull resumes.
    pub cursor: Cursor,
    /// True when this response reaches the head of the log: nothing more to
    /// fetch right now.
    pub up_to_date: bool,
}

impl PullResponse {
    /// This answer as a client with these ids reads it: its own inserts
    /// without their content, known by hash (what the HTTP layer's
    /// `clients=` and [`Change::take_elided`] do between them). For servers
    /// in memory (tests, the simulator).
    pub fn as_read_by(mut self, clients: &[&ClientId]) -> PullResponse {
        for c in &mut self.changes {
            if c.author.as_ref().is_some_and(|a| clients.contains(&a))
                && let Some(mut own) = c.for_author()
            {
                own.take_elided();
                *c = own;
            }
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        for c in [
            Cursor::Log(0),
            Cursor::Log(42),
            Cursor::Snapshot { head: 7, after: None },
            Cursor::Snapshot { head: 7, after: Some(ThreadId::new("T-1").unwrap()) },
        ] {
            assert_eq!(c.to_string().parse::<Cursor>().unwrap(), c);
        }
        for bad in ["", "x", "-1", "s", "s1.../etc", "1.5"] {
            assert!(bad.parse::<Cursor>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn client_ids_are_validated() {
        assert!(ClientId::new("c-01J").is_ok());
        assert!(serde_json::from_str::<ClientId>("\"a b\"").is_err());
    }
}
