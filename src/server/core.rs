//! Push and pull, decided over a [`Tx`]: one storage transaction scoped to
//! one team. The caller commits the transaction after a successful call, so
//! a mutation's effects and the record that it was applied land together.

use std::sync::Arc;

use crate::merge::{Doc, Head, Limits, Located, OpOutcome, ThreadView, decide};
use crate::model::{Message, MessageId, ThreadId};
use crate::ops::{Effect, Op};
use crate::wire::{Change, ClientId, Cursor, MutationResult, MutationStatus, PullResponse, PushRequest, PushResponse};

crate::model::plain_id!(
    /// A team: every read and write is scoped by one.
    TeamId
);

/// A storage failure. The HTTP layer logs it and answers 500 (or 503 when
/// `transient`), never passing the details to the client.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("storage error: {message}")]
pub struct StoreError {
    pub message: String,
    /// Worth retrying (lock timeout, serialization failure, lost connection).
    pub transient: bool,
}

impl StoreError {
    pub fn new(message: impl Into<String>) -> Self {
        StoreError { message: message.into(), transient: false }
    }
}

/// One transaction on one team's data.
pub trait Tx {
    /// The last mutation id applied for `client`, 0 if none.
    fn last_mutation(&mut self, client: &ClientId) -> Result<u64, StoreError>;
    fn set_last_mutation(&mut self, client: &ClientId, id: u64) -> Result<(), StoreError>;
    /// Records the machine a client runs on (shown as messages' author on
    /// the web pages); the store may skip it.
    fn set_machine(&mut self, _client: &ClientId, _machine: &str) -> Result<(), StoreError> {
        Ok(())
    }
    /// A thread's version and head; None if it does not exist.
    fn thread_head(&mut self, t: &ThreadId) -> Result<Option<(u64, Head)>, StoreError>;
    fn message(&mut self, t: &ThreadId, id: &MessageId) -> Result<Option<Located>, StoreError>;
    /// Reads ahead, in one go, what [`Tx::message`] and [`Tx::tombstone`]
    /// will be asked about `ids` (the messages a mutation appends); the
    /// store may skip it.
    fn prefetch(&mut self, _t: &ThreadId, _ids: &[&MessageId]) -> Result<(), StoreError> {
        Ok(())
    }
    /// See [`ThreadView::tombstone`].
    fn tombstone(&mut self, t: &ThreadId, id: &MessageId) -> Result<Option<usize>, StoreError>;
    /// See [`ThreadView::scan_from`].
    fn scan_from(
        &mut self,
        t: &ThreadId,
        from: usize,
        keep: &mut dyn FnMut(&MessageId, Option<&MessageId>) -> bool,
    ) -> Result<usize, StoreError>;
    /// Applies `effect` to thread `t`, whose version becomes `version`, and
    /// appends it to the team's change log as `author`'s. Returns the new
    /// log sequence.
    fn write(&mut self, t: &ThreadId, version: u64, effect: &Effect, author: &ClientId) -> Result<u64, StoreError>;
    /// The sequence of the newest change, 0 if none.
    fn head_seq(&mut self) -> Result<u64, StoreError>;
    /// The oldest cursor the log can still serve (changes up to it were compacted away).
    fn log_floor(&mut self) -> Result<u64, StoreError>;
    /// Up to `limit` changes with seq > `after`, in order.
    fn changes_since(&mut self, after: u64, limit: usize) -> Result<Vec<Change>, StoreError>;
    /// Up to `limit` changes of one thread with version > `after_version`, in order.
    fn thread_changes(&mut self, t: &ThreadId, after_version: u64, limit: usize) -> Result<Vec<Change>, StoreError>;
    fn doc(&mut self, t: &ThreadId) -> Result<Option<Doc>, StoreError>;
    /// A message as stored, deleted or not (a delete keeps the content, so
    /// it can be brought back): the message and whether it is deleted.
    fn kept_message(&mut self, t: &ThreadId, id: &MessageId) -> Result<Option<(Arc<Message>, bool)>, StoreError>;
    /// Up to `limit` whole threads with ids greater than `after`, in id order.
    fn docs_after(&mut self, after: Option<&ThreadId>, limit: usize) -> Result<Vec<Doc>, StoreError>;
}

/// A [`ThreadView`] of one thread inside a transaction, caching the head so a
/// batch of appends reads it once.
struct TxThread<'a, T: Tx + ?Sized> {
    tx: &'a mut T,
    thread: &'a ThreadId,
    author: &'a ClientId,
    head: Option<Option<(u64, Head)>>,
}

impl<T: Tx + ?Sized> TxThread<'_, T> {
    fn load(&mut self) -> Result<&mut Option<(u64, Head)>, StoreError> {
        if self.head.is_none() {
            self.head = Some(self.tx.thread_head(self.thread)?);
        }
        Ok(self.head.as_mut().expect("just loaded"))
    }

    fn version(&mut self) -> Result<u64, StoreError> {
        Ok(self.load()?.as_ref().map_or(0, |(v, _)| *v))
    }

    fn write(&mut self, effect: &Effect) -> Result<(), StoreError> {
        let version = self.version()? + 1;
        self.tx.write(self.thread, version, effect, self.author)?;
        let cached = self.load()?;
        match (effect, cached.as_mut()) {
            (Effect::Create { env, .. }, None) => {
                *cached = Some((version, Head { title: String::new(), env: env.clone(), len: 0, last: None }));
            }
            (Effect::Insert { index, message, .. }, Some((v, h))) => {
                if *index == h.len {
                    h.last = Some(message.id.clone());
                }
                h.len += 1;
                *v = version;
            }
            (Effect::Title { title }, Some((v, h))) => {
                h.title.clone_from(title);
                *v = version;
            }
            (Effect::Env { env }, Some((v, h))) => {
                h.env = env.clone();
                *v = version;
            }
            // Edits and deletes are rare: reload rather than mirror them.
            _ => self.head = None,
        }
        Ok(())
    }
}

impl<T: Tx + ?Sized> ThreadView for TxThread<'_, T> {
    type Error = StoreError;

    fn head(&mut self) -> Result<Option<Head>, StoreError> {
        Ok(self.load()?.as_ref().map(|(_, h)| h.clone()))
    }

    fn message(&mut self, id: &MessageId) -> Result<Option<Located>, StoreError> {
        self.tx.message(self.thread, id)
    }

    fn tombstone(&mut self, id: &MessageId) -> Result<Option<usize>, StoreError> {
        self.tx.tombstone(self.thread, id)
    }

    fn scan_from(
        &mut self,
        from: usize,
        keep: &mut dyn FnMut(&MessageId, Option<&MessageId>) -> bool,
    ) -> Result<usize, StoreError> {
        self.tx.scan_from(self.thread, from, keep)
    }
}

/// Applies a push exactly once per (client id, mutation id).
///
/// Mutation ids must follow the client's last applied id without gaps: a
/// replay (id <= last) answers `duplicate` with no effect, and a gap stops
/// the push there. An operation refused for good is reported and does not
/// stop the operations or mutations after it.
pub fn push<T: Tx + ?Sized>(tx: &mut T, req: &PushRequest, limits: &Limits) -> Result<PushResponse, StoreError> {
    let client = &req.client_id;
    let start = tx.last_mutation(client)?;
    let mut last = start;
    let mut results = Vec::with_capacity(req.mutations.len());
    let mut gap = false;
    for m in &req.mutations {
        if gap || m.id > last + 1 {
            gap = true;
            results.push(MutationResult {
                id: m.id,
                thread_id: m.thread_id.clone(),
                status: MutationStatus::Gap,
                version: 0,
                ops: Vec::new(),
                reason: Some(format!("expected mutation {} of client {client} next, got {}", last + 1, m.id)),
            });
            continue;
        }
        if m.id <= last {
            let version = tx.thread_head(&m.thread_id)?.map_or(0, |(v, _)| v);
            results.push(MutationResult {
                id: m.id,
                thread_id: m.thread_id.clone(),
                status: MutationStatus::Duplicate,
                version,
                ops: Vec::new(),
                reason: None,
            });
            continue;
        }
        let appended: Vec<&MessageId> = m
            .ops
            .iter()
            .filter_map(|op| match op {
                Op::Append { message, .. } | Op::Restore { message, .. } => Some(&message.id),
                _ => None,
            })
            .collect();
        if appended.len() > 1 {
            tx.prefetch(&m.thread_id, &appended)?;
        }
        let mut view = TxThread { tx: &mut *tx, thread: &m.thread_id, author: client, head: None };
        let mut status = MutationStatus::Applied;
        let mut reason = None;
        let mut outcomes = Vec::with_capacity(m.ops.len());
        for op in &m.ops {
            let outcome = decide(&mut view, op, limits)?;
            match &outcome {
                OpOutcome::Applied { effect } => view.write(effect)?,
                OpOutcome::Conflict { .. } if status == MutationStatus::Applied => status = MutationStatus::Conflict,
                OpOutcome::Rejected { reason: r } => {
                    status = MutationStatus::Rejected;
                    reason.get_or_insert_with(|| r.clone());
                }
                _ => {}
            }
            outcomes.push(outcome.into());
        }
        let version = view.version()?;
        last = m.id;
        results.push(MutationResult {
            id: m.id,
            thread_id: m.thread_id.clone(),
            status,
            version,
            ops: outcomes,
            reason,
        });
    }
    if last != start {
        tx.set_last_mutation(client, last)?;
        if let Some(machine) = &req.machine {
            tx.set_machine(client, machine)?;
        }
    }
    Ok(PushResponse { results, cursor: Cursor::Log(tx.head_seq()?) })
}

/// How much one pull answers at most.
#[derive(Clone, Copy, Debug)]
pub struct PullLimits {
    pub max_changes: usize,
    pub max_snapshots: usize,
    /// Approximate response size; at least one entry is always sent.
    pub max_bytes: usize,
}

impl Default for PullLimits {
    fn default() -> Self {
        PullLimits { max_changes: 1000, max_snapshots: 100, max_bytes: 4 << 20 }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PullError {
    /// The cursor is older than the log keeps, or newer than the log (the
    /// server's data was replaced): the client must start over from a
    /// snapshot, keeping its pending changes.
    #[error("cursor {cursor} cannot be served ({why}); pull again without a cursor")]
    Refetch { cursor: String, why: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Changes since `cursor` (deltas only), or whole threads when there is no
/// cursor (first sync) or a snapshot is being paged.
pub fn pull<T: Tx + ?Sized>(tx: &mut T, cursor: Option<&Cursor>, lim: &PullLimits) -> Result<PullResponse, PullError> {
    let head = tx.head_seq()?;
    let (snapshot_head, after) = match cursor {
        Some(Cursor::Log(seq)) => return pull_log(tx, *seq, head, lim),
        Some(Cursor::Snapshot { head: h, after }) => {
            if *h > head {
                return Err(PullError::Refetch {
                    cursor: cursor.unwrap().to_string(),
                    why: "it is ahead of the log".into(),
                });
            }
            (*h, after.as_ref())
        }
        None => (head, None),
    };
    let mut docs = tx.docs_after(after, lim.max_snapshots.max(1))?;
    let complete = docs.len() < lim.max_snapshots.max(1);
    let mut bytes = 0;
    let keep = docs
        .iter()
        .take_while(|d| {
            bytes += d.size();
            bytes <= lim.max_bytes
        })
        .count()
        .max(1);
    let trimmed = keep < docs.len();
    docs.truncate(keep);
    let cursor = if complete && !trimmed {
        Cursor::Log(snapshot_head)
    } else {
        Cursor::Snapshot { head: snapshot_head, after: docs.last().map(|d| d.id().clone()) }
    };
    let up_to_date = cursor == Cursor::Log(head);
    Ok(PullResponse { snapshots: docs, changes: Vec::new(), cursor, up_to_date })
}

fn pull_log<T: Tx + ?Sized>(tx: &mut T, seq: u64, head: u64, lim: &PullLimits) -> Result<PullResponse, PullError> {
    if seq > head {
        return Err(PullError::Refetch { cursor: seq.to_string(), why: "it is ahead of the log".into() });
    }
    let floor = tx.log_floor()?;
    if seq < floor {
        return Err(PullError::Refetch {
            cursor: seq.to_string(),
            why: format!("changes up to {floor} were compacted"),
        });
    }
    let mut changes = tx.changes_since(seq, lim.max_changes.max(1))?;
    let mut bytes = 0;
    let keep = changes
        .iter()
        .take_while(|c| {
            bytes += c.effect.size();
            bytes <= lim.max_bytes
        })
        .count()
        .max(1)
        .min(changes.len());
    changes.truncate(keep);
    let cursor = Cursor::Log(changes.last().map_or(seq, |c| c.seq));
    let up_to_date = cursor == Cursor::Log(head);
    Ok(PullResponse { snapshots: Vec::new(), changes, cursor, up_to_date })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::model::Message;
    use crate::server::store::MemStore;
    use crate::wire::Mutation;

    fn team(s: &str) -> TeamId {
        TeamId::new(s).unwrap()
    }

    fn tid(s: &str) -> ThreadId {
        ThreadId::new(s).unwrap()
    }

    fn append(id: &str, after: Option<&str>, content: serde_json::Value) -> Op {
        Op::Append {
            message: Arc::new(Message {
                id: MessageId::new(id).unwrap(),
                role: "user".into(),
                content: content.into(),
                timestamp: 0,
                extra: Default::default(),
            }),
            after: after.map(|a| MessageId::new(a).unwrap()),
            follows: None,
        }
    }

    fn create() -> Op {
        Op::Create { created: 1, env: json!({}) }
    }

    fn req(client: &str, muts: Vec<(u64, &str, Vec<Op>)>) -> PushRequest {
        PushRequest {
            client_id: ClientId::new(client).unwrap(),
            mutations: muts.into_iter().map(|(id, t, ops)| Mutation { id, thread_id: tid(t), ops }).collect(),
            machine: None,
        }
    }

    fn statuses(r: &PushResponse) -> Vec<MutationStatus> {
        r.results.iter().map(|r| r.status).collect()
    }

    fn messages(store: &mut MemStore, team: &TeamId, t: &str) -> Vec<String> {
        store
            .tx(team)
            .doc(&tid(t))
            .unwrap()
            .map_or(vec![], |d| d.thread.messages.iter().map(|m| m.id.to_string()).collect())
    }

    #[test]
    fn the_same_batch_three_times_leaves_one_copy() {
        let mut store = MemStore::default();
        let a = team("a");
        let batch = req(
            "c1",
            vec![
                (1, "T1", vec![create(), append("m1", None, json!("hi"))]),
                (2, "T1", vec![append("m2", Some("m1"), json!("yo"))]),
            ],
        );
        let first = push(store.tx(&a), &batch, &Limits::default()).unwrap();
        assert_eq!(statuses(&first), [MutationStatus::Applied, MutationStatus::Applied]);
        for _ in 0..2 {
            let again = push(store.tx(&a), &batch, &Limits::default()).unwrap();
            assert_eq!(statuses(&again), [MutationStatus::Duplicate, MutationStatus::Duplicate]);
            assert_eq!(again.results[1].version, first.results[1].version, "a duplicate reports the current version");
        }
        assert_eq!(messages(&mut store, &a, "T1"), ["m1", "m2"]);
        assert_eq!(store.tx(&a).head_seq().unwrap(), 3, "one log entry per effect, none for replays");
    }

    #[test]
    fn a_lost_response_retried_with_more_mutations_applies_only_the_new_ones() {
        let mut store = MemStore::default();
        let a = team("a");
        let first = req("c1", vec![(1, "T1", vec![create(), append("m1", None, json!(1))])]);
        push(store.tx(&a), &first, &Limits::default()).unwrap();
        // The client never saw the answer; it resends mutation 1 with 2 after it.
        let retry = req(
            "c1",
            vec![
                (1, "T1", vec![create(), append("m1", None, json!(1))]),
                (2, "T1", vec![append("m2", Some("m1"), json!(2))]),
            ],
        );
        let r = push(store.tx(&a), &retry, &Limits::default()).unwrap();
        assert_eq!(statuses(&r), [MutationStatus::Duplicate, MutationStatus::Applied]);
        assert_eq!(messages(&mut store, &a, "T1"), ["m1", "m2"]);
    }

    #[test]
    fn gaps_are_refused_and_stop_the_push_there() {
        let mut store = MemStore::default();
        let a = team("a");
        let r = push(store.tx(&a), &req("c1", vec![(2, "T1", vec![create()]), (3, "T1", vec![])]), &Limits::default())
            .unwrap();
        assert_eq!(statuses(&r), [MutationStatus::Gap, MutationStatus::Gap]);
        assert!(r.results[0].reason.as_deref().unwrap().contains("expected mutation 1"));
        assert!(store.tx(&a).doc(&tid("T1")).unwrap().is_none(), "nothing applied");
        assert_eq!(store.tx(&a).last_mutation(&ClientId::new("c1").unwrap()).unwrap(), 0);
    }

    #[test]
    fn a_rejected_item_does_not_block_the_items_after_it() {
        let mut store = MemStore::default();
        let a = team("a");
        let limits = Limits { max_message_bytes: 10, ..Limits::default() };
        let r = push(
            store.tx(&a),
            &req(
                "c1",
                vec![
                    (
                        1,
                        "T1",
                        vec![create(), append("big", None, json!("x".repeat(100))), append("ok", None, json!("s"))],
                    ),
                    (2, "T2", vec![append("orphan", None, json!("s"))]),
                    (3, "T3", vec![create(), append("fine", None, json!("s"))]),
                ],
            ),
            &limits,
        )
        .unwrap();
        assert_eq!(statuses(&r), [MutationStatus::Rejected, MutationStatus::Rejected, MutationStatus::Applied]);
        assert!(r.results[0].reason.as_deref().unwrap().contains("limit is 10 bytes"));
        assert_eq!(r.results[0].ops[2], crate::wire::OpResult::Applied, "the op after the refused one applied");
        assert_eq!(messages(&mut store, &a, "T1"), ["ok"]);
        assert_eq!(messages(&mut store, &a, "T3"), ["fine"]);
    }

    #[test]
    fn teams_are_isolated_even_with_the_same_thread_id() {
        let mut store = MemStore::default();
        let (a, b) = (team("a"), team("b"));
        push(
            store.tx(&a),
            &req("c1", vec![(1, "T1", vec![create(), append("secret", None, json!("a's"))])]),
            &Limits::default(),
        )
        .unwrap();
        // Team b sees nothing of team a's thread...
        assert!(store.tx(&b).doc(&tid("T1")).unwrap().is_none());
        let pulled = pull(store.tx(&b), None, &PullLimits::default()).unwrap();
        assert!(pulled.snapshots.is_empty() && pulled.changes.is_empty());
        // ...and its push to the same id makes its own thread, leaving a's alone.
        let r =
            push(store.tx(&b), &req("c1", vec![(1, "T1", vec![append("x", None, json!("b's"))])]), &Limits::default())
                .unwrap();
        assert_eq!(statuses(&r), [MutationStatus::Rejected], "no such thread in team b");
        assert_eq!(messages(&mut store, &a, "T1"), ["secret"]);
    }

    #[test]
    fn pull_pages_deltas_and_marks_the_head() {
        let mut store = MemStore::default();
        let a = team("a");
        let mut ops = vec![create()];
        let mut prev: Option<String> = None;
        for i in 0..5 {
            let id = format!("m{i}");
            ops.push(append(&id, prev.as_deref(), json!("x".repeat(1000))));
            prev = Some(id);
        }
        push(store.tx(&a), &req("c1", vec![(1, "T1", ops)]), &Limits::default()).unwrap();
        let lim = PullLimits { max_changes: 4, ..PullLimits::default() };
        let first = pull(store.tx(&a), Some(&Cursor::Log(0)), &lim).unwrap();
        assert_eq!(first.changes.len(), 4);
        assert!(!first.up_to_date);
        let second = pull(store.tx(&a), Some(&first.cursor), &lim).unwrap();
        assert_eq!(second.changes.len(), 2);
        assert!(second.up_to_date);
        assert_eq!(second.cursor, Cursor::Log(6));
        // Nothing new: an explicit up-to-date answer with the same cursor.
        let idle = pull(store.tx(&a), Some(&second.cursor), &lim).unwrap();
        assert!(idle.changes.is_empty() && idle.up_to_date && idle.cursor == Cursor::Log(6));
        // A 1 KB append to a big thread costs about 1 KB, not the thread.
        push(
            store.tx(&a),
            &req("c1", vec![(2, "T1", vec![append("new", Some("m4"), json!("y".repeat(1000)))])]),
            &Limits::default(),
        )
        .unwrap();
        let delta = pull(store.tx(&a), Some(&idle.cursor), &lim).unwrap();
        let bytes = serde_json::to_vec(&delta).unwrap().len();
        assert!(bytes < 1500, "delta pull is {bytes} bytes");
    }

    #[test]
    fn a_byte_budget_limits_a_page_but_always_sends_one() {
        let mut store = MemStore::default();
        let a = team("a");
        push(
            store.tx(&a),
            &req(
                "c1",
                vec![(
                    1,
                    "T1",
                    vec![create(), append("a", None, json!("x".repeat(5000))), append("b", Some("a"), json!("y"))],
                )],
            ),
            &Limits::default(),
        )
        .unwrap();
        let lim = PullLimits { max_bytes: 100, ..PullLimits::default() };
        let p = pull(store.tx(&a), Some(&Cursor::Log(1)), &lim).unwrap();
        assert_eq!(p.changes.len(), 1, "one oversized change still goes");
    }

    #[test]
    fn compacted_or_future_cursors_ask_for_a_refetch_and_snapshots_page() {
        let mut store = MemStore::default();
        let a = team("a");
        for (i, t) in ["T1", "T2", "T3"].iter().enumerate() {
            push(
                store.tx(&a),
                &req("c1", vec![(i as u64 + 1, t, vec![create(), append("m", None, json!(t))])]),
                &Limits::default(),
            )
            .unwrap();
        }
        store.compact(&a, 2);
        assert!(matches!(
            pull(store.tx(&a), Some(&Cursor::Log(1)), &PullLimits::default()),
            Err(PullError::Refetch { .. })
        ));
        assert!(matches!(
            pull(store.tx(&a), Some(&Cursor::Log(99)), &PullLimits::default()),
            Err(PullError::Refetch { .. })
        ));
        // Start over from snapshots, two threads a page.
        let lim = PullLimits { max_snapshots: 2, ..PullLimits::default() };
        let p1 = pull(store.tx(&a), None, &lim).unwrap();
        assert_eq!(p1.snapshots.iter().map(|d| d.id().to_string()).collect::<Vec<_>>(), ["T1", "T2"]);
        assert!(!p1.up_to_date);
        let p2 = pull(store.tx(&a), Some(&p1.cursor), &lim).unwrap();
        assert_eq!(p2.snapshots.len(), 1);
        assert_eq!(p2.cursor, Cursor::Log(6));
        assert!(p2.up_to_date);
    }
}
