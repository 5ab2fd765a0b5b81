//! Pulling: long-polls or adaptive polls after the cursor, and applying the
//! server's changes and snapshots to the base and local views.

use super::*;

#[derive(Debug)]
pub(super) struct PullState {
    pub(super) inflight: Option<(ReqId, Time, bool)>,
    pub(super) next_at: Option<Time>,
    pub(super) backoff: Backoff,
    /// The first full sync has finished.
    pub(super) synced_once: bool,
    /// The next pull must not be held (a force sync waits for it; a retry
    /// shows the server is well again).
    pub(super) fresh: bool,
    /// Threads the first sync brought (for its progress report).
    pub(super) first_sync_threads: BTreeSet<ThreadId>,
    pub(super) first_sync_shown: bool,
}

impl SyncEngine {
    /// A pull was answered. Every thread a successful answer names must be
    /// loaded (see [`SyncEngine::pull_threads`]).
    pub fn handle_pull(&mut self, now: Time, req: ReqId, outcome: PullOutcome) {
        let Some((r, started, waited)) = self.pull.inflight else { return };
        if r != req {
            return;
        }
        self.pull.inflight = None;
        match outcome {
            PullOutcome::Ok(resp) => {
                self.on_reachable(now);
                self.server_error = None;
                self.pull.backoff.reset();
                let duration = now.saturating_since(started);
                let bytes = resp.changes.iter().map(|c| c.effect.size()).sum::<usize>()
                    + resp.snapshots.iter().map(Doc::size).sum::<usize>();
                let items = resp.changes.len() + resp.snapshots.len();
                if !waited {
                    self.record(SyncSample {
                        kind: SyncKind::Pull,
                        duration,
                        bytes: bytes as u64,
                        items,
                        conflicts: 0,
                    });
                }
                let up_to_date = resp.up_to_date;
                self.apply_pull(now, resp);
                if up_to_date {
                    if !self.pull.synced_once && self.pull.first_sync_shown {
                        let n = self.pull.first_sync_threads.len();
                        self.actions.push_back(Action::Progress {
                            token: "threadsync-first-sync".into(),
                            step: ProgressStep::End(format!("{n} threads")),
                        });
                    }
                    self.pull.synced_once = true;
                    self.pull.first_sync_threads.clear();
                    self.last_sync = Some(now);
                    for t in self.tickets.iter_mut() {
                        // A pull that began after the ticket's pushes landed confirms it.
                        if matches!(t.phase, TicketPhase::Pulling { since } if started >= since) {
                            t.phase = TicketPhase::Done;
                        }
                    }
                    // A force sync whose pushes landed after this pull began
                    // needs a pull of its own, now rather than at the next poll.
                    let ticket_waits = self.tickets.iter().any(|t| matches!(t.phase, TicketPhase::Pulling { .. }));
                    self.pull.next_at = Some(match self.cfg.poll {
                        _ if ticket_waits => now,
                        PollMode::LongPoll { .. } => now,
                        PollMode::Fixed(d) => now + d,
                        PollMode::Adaptive { .. } => now + self.poller.interval(now),
                    });
                } else {
                    self.pull.next_at = Some(now);
                }
            }
            PullOutcome::Refetch => {
                self.on_reachable(now);
                self.actions.push_back(Action::Warning("the server can no longer serve our cursor; refetching".into()));
                self.cursor = None;
                self.actions.push_back(Action::Save(Save::Cursor(None)));
                self.pull.next_at = Some(now);
            }
            PullOutcome::Failed(f) => {
                self.fail_tickets(&f.describe());
                match f.class() {
                    FailureClass::Unauthorized => self.set_unauthorized(&f),
                    _ if f.is_connectivity() => self.go_offline(now, &f),
                    class => {
                        // A 5xx/429 retries after a backoff (or Retry-After); any
                        // other answer does too, more slowly, as pulls change nothing.
                        let retry_after = match class {
                            FailureClass::Retryable { retry_after } => retry_after,
                            _ => Some(retry::RETRY_DELAYS[4]),
                        };
                        self.server_error = Some(f.describe());
                        self.monitor.record_failure();
                        self.pull.next_at = Some(now + self.pull.backoff.next_delay(&mut self.rng, retry_after));
                        // The retry answers at once, so the error clears as
                        // soon as the server is well (a held one would keep
                        // it on the statusline for minutes).
                        self.pull.fresh = true;
                    }
                }
            }
        }
        self.check_tickets(now);
        self.drive(now);
        self.update_status(now);
    }

    // ----- pulling --------------------------------------------------------

    pub(super) fn send_pull(&mut self, now: Time) {
        let req = self.next_req;
        self.next_req += 1;
        // Hold the request only once the first full sync is done and the
        // server has nothing more for us right away.
        let held = self.pull.synced_once
            && !std::mem::take(&mut self.pull.fresh)
            && matches!(self.cursor, Some(Cursor::Log(_)));
        let wait = match self.cfg.poll {
            PollMode::LongPoll { wait } if held => Some(wait),
            _ => None,
        };
        let timeout = self.cfg.request_timeout + wait.unwrap_or_default();
        self.pull.inflight = Some((req, now, wait.is_some()));
        self.pull.next_at = None;
        // A first sync pages through whole threads: show it.
        if !self.pull.synced_once && !self.pull.first_sync_shown && !matches!(self.cursor, Some(Cursor::Log(_))) {
            self.pull.first_sync_shown = true;
            self.actions.push_back(Action::Progress {
                token: "threadsync-first-sync".into(),
                step: ProgressStep::Begin("threadsync: first sync".into()),
            });
        }
        self.actions.push_back(Action::Pull { req, cursor: self.cursor.clone(), wait, timeout });
    }

    pub(super) fn apply_pull(&mut self, now: Time, resp: PullResponse) {
        let mut touched: BTreeSet<ThreadId> = BTreeSet::new();
        // Per thread: the base's length before this pull, and its effects
        // (with where a mid-thread insert lands).
        let mut effects: BTreeMap<ThreadId, (usize, Vec<Effect>)> = BTreeMap::new();
        let mut between: BTreeMap<ThreadId, Vec<state::Between>> = BTreeMap::new();
        let mut replaced: BTreeSet<ThreadId> = BTreeSet::new();
        let mut saves = Vec::new();
        for doc in resp.snapshots {
            let id = doc.id().clone();
            if !self.pull.synced_once {
                self.pull.first_sync_threads.insert(id.clone());
            }
            let t = self.threads.get_mut(&id).expect("the shell loads the threads a pull names");
            if doc.thread.v >= t.base.thread.v {
                let doc = keep_doc_bodies(&doc, &t.local, &mut saves);
                saves.push(Save::Base {
                    thread: id.clone(),
                    change: BaseChange::Replace { doc: Box::new(doc.clone()) },
                });
                t.base = doc;
                effects.remove(&id);
                between.remove(&id);
                replaced.insert(id.clone());
            }
            touched.insert(id);
        }
        let mut broken = None;
        for c in resp.changes {
            if !self.pull.synced_once {
                self.pull.first_sync_threads.insert(c.thread_id.clone());
            }
            let t = self.threads.get_mut(&c.thread_id).expect("the shell loads the threads a pull names");
            if c.version <= t.base.thread.v {
                continue;
            }
            let effect = keep_effect_body(&c.thread_id, c.effect, &t.local, &mut saves);
            let len = t.base.seq.len();
            let place = match &effect {
                Effect::Insert { index, .. } if *index < len => {
                    Some((index.checked_sub(1).map(|i| t.base.seq[i].clone()), t.base.seq[*index].clone()))
                }
                _ => None,
            };
            let applied = if c.version == t.base.thread.v + 1 {
                t.base.apply_effect(&effect)
            } else {
                Err(format!("expected version {} of {}, got {}", t.base.thread.v + 1, c.thread_id, c.version))
            };
            if let Err(e) = applied {
                broken = Some(e);
                break;
            }
            effects.entry(c.thread_id.clone()).or_insert_with(|| (len, Vec::new())).1.push(effect);
            between.entry(c.thread_id.clone()).or_default().push(place);
            touched.insert(c.thread_id);
        }
        self.actions.extend(saves.into_iter().map(Action::Save));
        for (id, (_, list)) in &effects {
            let version = self.threads[id].base.thread.v;
            let between = between.remove(id).unwrap_or_default();
            let change = BaseChange::Effects { effects: list.clone(), between, version };
            self.actions.push_back(Action::Save(Save::Base { thread: id.clone(), change }));
        }
        for id in &touched {
            let t = &self.threads[id];
            // Decide how the view follows before confirmed changes leave the queue.
            let had_ops = !t.acked.is_empty() || !t.pending.is_empty() || t.inflight.is_some();
            let path = match effects.get(id) {
                _ if replaced.contains(id) => Follow::Rebase,
                Some((_, list)) if !had_ops => Follow::Forward(list.clone()),
                Some((len, list)) if confirms_own(t, *len, list) => Follow::Keep,
                _ => Follow::Rebase,
            };
            let t = self.threads.get_mut(id).expect("touched");
            t.touched = now;
            t.last_sync = Some(now);
            let v = t.base.thread.v;
            let mut done = Vec::new();
            t.acked.retain(|(version, p)| {
                let keep = *version > v;
                if !keep {
                    done.extend(p.seqs());
                }
                keep
            });
            self.ops_done(id, done);
            match path {
                // Nothing was unconfirmed: the view is the base, moved the same way.
                Follow::Forward(list) => {
                    self.fast_forward(id, &list);
                    self.actions.push_back(updated(&self.threads[id].local.thread, Origin::Remote));
                }
                // Only our own appends came back, where the view has them.
                Follow::Keep => {}
                Follow::Rebase => self.rebase(now, id, Origin::Remote),
            }
        }
        let cursor = if let Some(e) = broken {
            // Our copy disagrees with the log: start over from a snapshot.
            self.actions.push_back(Action::Warning(format!("out of step with the server ({e}); refetching")));
            None
        } else {
            Some(resp.cursor)
        };
        if cursor != self.cursor {
            self.cursor = cursor;
            self.actions.push_back(Action::Save(Save::Cursor(self.cursor.clone())));
        }
    }
}

/// How a thread's view follows a pull.
pub(super) enum Follow {
    Forward(Vec<Effect>),
    Keep,
    Rebase,
}

/// The pull's effects on a thread (`len`: its base's length before them)
/// are exactly its oldest unconfirmed appends, landing at the end of the
/// base in order — where the view already has them.
pub(super) fn confirms_own(t: &Tracked, len: usize, effects: &[Effect]) -> bool {
    if !t.aligned {
        return false;
    }
    let mut own = t.all_ops().map(|p| &p.op);
    effects.iter().enumerate().all(|(j, e)| {
        let (Effect::Insert { index, message, .. }, Some(Op::Append { message: m, .. })) = (e, own.next()) else {
            return false;
        };
        message.id == m.id && *index == len + j && t.local.seq.get(len + j) == Some(&m.id)
    })
}

/// An effect from the server, elided; its body is stored unless the view
/// already has that very content (our own change coming back).
pub(super) fn keep_effect_body(thread: &ThreadId, e: Effect, local: &Doc, saves: &mut Vec<Save>) -> Effect {
    let known = |id: &MessageId, c: &Content| local.get(id).is_some_and(|m| m.content.hash() == c.hash());
    match e {
        Effect::Insert { index, after, message } => {
            if !message.content.is_elided() && !known(&message.id, &message.content) {
                saves.push(Save::Body {
                    thread: thread.clone(),
                    id: message.id.clone(),
                    content: message.content.clone(),
                });
            }
            Effect::Insert { index, after, message: Arc::new(message.elided()) }
        }
        Effect::Edit { id, content } => {
            if !content.is_elided() && !known(&id, &content) {
                saves.push(Save::Body { thread: thread.clone(), id: id.clone(), content: content.clone() });
            }
            Effect::Edit { id, content: content.elided() }
        }
        other => other,
    }
}

/// A snapshot from the server, elided, its bodies stored.
pub(super) fn keep_doc_bodies(doc: &Doc, local: &Doc, saves: &mut Vec<Save>) -> Doc {
    let mut doc = doc.clone();
    let id = doc.id().clone();
    for m in &mut doc.thread.messages {
        if m.content.is_elided() {
            continue;
        }
        if local.get(&m.id).is_none_or(|x| x.content.hash() != m.content.hash()) {
            saves.push(Save::Body { thread: id.clone(), id: m.id.clone(), content: m.content.clone() });
        }
        *m = Arc::new(m.elided());
    }
    doc
}
