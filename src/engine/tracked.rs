//! What the engine keeps per thread: the base and local views, the
//! operations not yet confirmed, the one in flight, the file's state.

use super::*;

/// An operation waiting for the server, with what it was based on (to fill
/// in a conflict's base side).
#[derive(Clone, Debug)]
pub(super) struct PendingOp {
    pub(super) op: Op,
    pub(super) seq: u64,
    /// Sequence numbers of operations merged into this one (`coalesce`).
    pub(super) absorbed: Vec<u64>,
    pub(super) prior: Content,
    pub(super) prior_message: Option<Arc<Message>>,
    /// The server may already have applied it (restored from the store, or
    /// sent under a client id the server forgot): never coalesced away.
    pub(super) maybe_sent: bool,
}

impl PendingOp {
    pub(super) fn seqs(&self) -> impl Iterator<Item = u64> + '_ {
        std::iter::once(self.seq).chain(self.absorbed.iter().copied())
    }
}

#[derive(Clone, Debug)]
pub(super) struct Inflight {
    pub(super) mutation: u64,
    pub(super) ops: Vec<PendingOp>,
}

/// A write the shell was asked for and has not reported on.
#[derive(Debug)]
pub(super) enum PendingWrite {
    Json,
    Records(Vec<Record>),
    Whole(Box<FileView>),
}

#[derive(Debug)]
pub(super) struct Tracked {
    pub(super) base: Doc,
    pub(super) local: Doc,
    pub(super) file: FileState,
    /// A `.json` read waiting out its debounce (the whole thread, loaded).
    pub(super) snapshot: Option<Thread>,
    pub(super) write: Option<PendingWrite>,
    /// A write failed; try again at this time.
    pub(super) write_retry: Option<Time>,
    /// Applied by the server at the given version, not yet in `base`.
    pub(super) acked: Vec<(u64, PendingOp)>,
    pub(super) inflight: Option<Inflight>,
    pub(super) pending: Vec<PendingOp>,
    pub(super) backoff_until: Option<Time>,
    pub(super) last_sync: Option<Time>,
    /// Last input that touched it (which idle threads stay in memory).
    pub(super) touched: Time,
    /// `local` is `base` plus our own appends at its end, nothing else: a
    /// pull that only confirms them leaves the view as it is.
    pub(super) aligned: bool,
}

impl Tracked {
    /// The messages the file does not show as the thread has them: missing
    /// or different there, or there though the thread no longer has them.
    pub(super) fn file_lag(&self) -> Vec<MessageId> {
        let view = &self.file.view;
        let mut lag: Vec<MessageId> = (self.local.thread.messages.iter())
            .filter(|m| view.messages.get(&m.id) != Some(&m.content.hash()))
            .map(|m| m.id.clone())
            .collect();
        lag.extend(view.messages.keys().filter(|id| self.local.get(id).is_none()).cloned());
        lag
    }

    pub(super) fn new(base: Doc, kind: FileKind, now: Time) -> Self {
        Tracked {
            local: base.clone(),
            base,
            file: FileState::new(kind),
            snapshot: None,
            write: None,
            write_retry: None,
            acked: Vec::new(),
            inflight: None,
            pending: Vec::new(),
            backoff_until: None,
            last_sync: None,
            touched: now,
            aligned: true,
        }
    }

    pub(super) fn unsent_or_inflight(&self) -> bool {
        !self.pending.is_empty() || self.inflight.is_some() || self.snapshot.is_some()
    }

    pub(super) fn all_ops(&self) -> impl DoubleEndedIterator<Item = &PendingOp> {
        self.acked
            .iter()
            .map(|(_, p)| p)
            .chain(self.inflight.iter().flat_map(|i| i.ops.iter()))
            .chain(self.pending.iter())
    }

    /// Nothing about it waits for anything: it may leave memory.
    pub(super) fn idle(&self) -> bool {
        self.acked.is_empty()
            && self.inflight.is_none()
            && self.pending.is_empty()
            && self.snapshot.is_none()
            && self.write.is_none()
            && self.write_retry.is_none()
            && self.backoff_until.is_none()
            && self.file.error.is_none()
            && !self.file.lags()
    }

    pub(super) fn file_save(
        &self,
        messages: Vec<(MessageId, Option<crate::model::ContentHash>)>,
        replace: bool,
    ) -> Save {
        let f = &self.file;
        Save::File {
            thread: self.base.id().clone(),
            file: FileSave {
                kind: f.kind,
                messages,
                replace,
                title: f.view.title.clone(),
                env: f.view.env,
                created: f.view.created,
                extra: f.view.extra.clone(),
                stamp: f.stamp,
                own: f.own,
                dirty: f.lags(),
                superseded: f.superseded,
                removed: f.removed,
            },
        }
    }
}
