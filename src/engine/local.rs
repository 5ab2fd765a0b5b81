//! Local changes: operations from the editor and the files, applied to the
//! local view and queued; rebasing on the server's changes; file writes.

use super::*;

impl SyncEngine {
    /// For tests and the simulator: an assistant rewrote a `.json` file.
    pub fn local_snapshot(&mut self, now: Time, thread: Thread) {
        let id = thread.id.clone();
        if !self.threads.contains_key(&id) {
            self.load(now, &id, None);
            self.threads.get_mut(&id).expect("loaded").file.kind = FileKind::Json;
        }
        let stamp = json_stamp(&thread);
        self.file_read(now, &id, FileKind::Json, FileRead::Json { thread, stamp });
    }

    /// A change made through the sidecar: applied locally at once
    /// (optimistic), synced in the background, rolled back if refused. A
    /// thread it names must be loaded.
    pub fn local_op(&mut self, now: Time, thread: Option<&ThreadId>, op: LocalOp) -> Result<LocalResult, String> {
        if let Some(id) = thread {
            if !self.threads.contains_key(id) {
                return Err(format!("no thread {id}"));
            }
            self.absorb_snapshot(now, id);
        }
        let (id, ops, message_id) = match (&op, thread) {
            (LocalOp::CreateThread { title }, _) => {
                let id = ThreadId::generate(now.as_millis(), self.rng.random());
                let mut ops = vec![Op::Create { created: now.as_millis() as i64, env: crate::model::empty_object() }];
                if !title.is_empty() {
                    ops.push(Op::SetTitle { title: title.clone(), base: String::new() });
                }
                // Threads made here are logs: every later change is an append.
                self.threads.insert(id.clone(), Tracked::new(Doc::empty(id.clone()), FileKind::Jsonl, now));
                (id, ops, None)
            }
            (_, None) => return Err("threadId is required".into()),
            (_, Some(id)) if !self.threads.get(id).is_some_and(|t| t.local.exists()) => {
                return Err(format!("no thread {id}"));
            }
            (LocalOp::Append { role, content }, Some(id)) => {
                let t = &self.threads[id];
                let mid = MessageId::generate(now.as_millis(), self.rng.random());
                let message = Message {
                    id: mid.clone(),
                    role: role.clone(),
                    content: Content::new(content.clone()),
                    timestamp: now.as_millis() as i64,
                    extra: Default::default(),
                };
                let after = t.local.thread.messages.last().map(|m| m.id.clone());
                (id.clone(), vec![Op::Append { message: Arc::new(message), after, follows: None }], Some(mid))
            }
            (LocalOp::SetTitle { title }, Some(id)) => {
                let base = self.threads[id].local.thread.title.clone();
                (id.clone(), vec![Op::SetTitle { title: title.clone(), base }], None)
            }
            (LocalOp::Restore { message }, Some(id)) => {
                let from = message.id.clone();
                if self.is_deleted(id, &from) != Some(true) {
                    return Err(format!("message {from} of {id} is not deleted"));
                }
                // Its old id stays deleted (appends are idempotent by id).
                let mid = MessageId::generate(now.as_millis(), self.rng.random());
                let mut m = message.clone();
                m.id = mid.clone();
                m.extra.insert("restoredFrom".into(), Value::String(from.to_string()));
                (id.clone(), vec![Op::Restore { message: Arc::new(m), of: from }], Some(mid))
            }
        };
        // Refuse what the server would refuse, before anything is written.
        let local = &self.threads[&id].local;
        let refused = if ops.len() == 1 {
            match decide(&mut &*local, &ops[0], &self.cfg.limits).expect("infallible") {
                OpOutcome::Rejected { reason } => Some(reason),
                _ => None,
            }
        } else {
            let mut probe = local.clone();
            ops.iter().find_map(|op| match probe.apply(op, &self.cfg.limits) {
                OpOutcome::Rejected { reason } => Some(reason),
                _ => None,
            })
        };
        if let Some(reason) = refused {
            if matches!(op, LocalOp::CreateThread { .. }) {
                self.threads.remove(&id);
            }
            return Err(reason);
        }
        self.threads.get_mut(&id).expect("tracked").touched = now;
        self.poller.record_activity(now);
        self.add_ops(now, &id, ops, true);
        let version = self.threads[&id].local.thread.v;
        self.schedule_batch(now);
        self.drive(now);
        self.update_status(now);
        Ok(LocalResult { thread_id: id, message_id, version })
    }

    /// Resolves a conflict: `Remote` keeps what the thread has; `Local` makes
    /// the refused side win everywhere.
    pub fn resolve_conflict(&mut self, now: Time, conflict_id: &str, choose: Choice) -> Result<(), String> {
        let i = self
            .conflicts
            .iter()
            .position(|c| c.id == conflict_id)
            .ok_or_else(|| format!("no conflict {conflict_id}"))?;
        let c = self.conflicts.remove(i);
        if self.threads.contains_key(&c.thread_id) {
            self.absorb_snapshot(now, &c.thread_id);
        }
        if choose == Choice::Local
            && let Some(t) = self.threads.get(&c.thread_id)
            && let Some(op) = c.choose_local(&t.local)
        {
            self.add_ops(now, &c.thread_id, vec![op], true);
            self.schedule_batch(now);
        }
        self.actions.push_back(Action::Save(Save::Conflicts(self.conflicts.clone())));
        self.drive(now);
        self.update_status(now);
        Ok(())
    }

    // ----- local changes --------------------------------------------------

    /// A file change still in its debounce window becomes operations now:
    /// the engine is about to change the thread, and must not write over it.
    pub(super) fn absorb_snapshot(&mut self, now: Time, id: &ThreadId) {
        if self.threads.get(id).is_some_and(|t| t.snapshot.is_some()) {
            self.debounce.take(id);
            self.flush_snapshot(now, id);
        }
    }

    pub(super) fn flush_snapshot(&mut self, now: Time, id: &ThreadId) {
        let Some(t) = self.threads.get_mut(id) else { return };
        let Some(snapshot) = t.snapshot.take() else { return };
        self.take_json(now, id, snapshot, true);
        self.schedule_batch(now);
    }

    /// Queues operations and applies them to the view. Content enters the
    /// store here and leaves the engine. `to_file`: the change did not come
    /// from the file, so the file must show it.
    pub(super) fn add_ops(&mut self, now: Time, id: &ThreadId, ops: Vec<Op>, to_file: bool) {
        let mut saves = Vec::new();
        let mut stored = Vec::new();
        let t = self.threads.get_mut(id).expect("caller ensured the thread is tracked");
        // The writer's last append not yet confirmed: new appends follow it.
        let mut last_own = t.all_ops().rev().find_map(|p| match &p.op {
            Op::Append { message, .. } => Some(message.id.clone()),
            _ => None,
        });
        for op in ops {
            let mut op = keep_bodies(id, op, &mut saves);
            if let Op::Append { message, follows, .. } = &mut op {
                if follows.is_none() {
                    follows.clone_from(&last_own);
                }
                last_own = Some(message.id.clone());
            }
            if to_file {
                match &op {
                    Op::Append { message, .. } | Op::Restore { message, .. } => t.file.touch(Some(&message.id)),
                    Op::Edit { id: m, .. } | Op::Delete { id: m, .. } => t.file.touch(Some(m)),
                    Op::Create { .. } | Op::SetTitle { .. } | Op::SetEnv { .. } => t.file.touch(None),
                }
            }
            let (prior, prior_message) = prior_of(&t.local, &op);
            let len = t.local.seq.len();
            t.local.apply(&op, &self.cfg.limits);
            t.aligned &= lands_at_end(&t.local, &op, len);
            stored.push((self.next_seq, op.clone()));
            t.pending.push(PendingOp {
                op,
                seq: self.next_seq,
                absorbed: Vec::new(),
                prior,
                prior_message,
                maybe_sent: false,
            });
            self.next_seq += 1;
        }
        if t.file.lags() {
            self.to_write.insert(id.clone());
        }
        self.poller.record_activity(now);
        self.actions.extend(saves.into_iter().map(Action::Save));
        self.actions.push_back(Action::Save(Save::Ops { thread: id.clone(), add: stored, done: Vec::new() }));
        let t = &self.threads[id];
        self.actions.push_back(updated(&t.local.thread, Origin::Local));
    }

    /// Operations that left the queue for good (confirmed, refused, or
    /// merged away): their rows go.
    pub(super) fn ops_done(&mut self, id: &ThreadId, done: Vec<u64>) {
        if !done.is_empty() {
            self.actions.push_back(Action::Save(Save::Ops { thread: id.clone(), add: Vec::new(), done }));
        }
    }

    /// Recomputes `local` as `base` plus every unconfirmed change, and marks
    /// what the file must show differently.
    pub(super) fn rebase(&mut self, now: Time, id: &ThreadId, origin: Origin) {
        let limits = self.cfg.limits;
        let t = self.threads.get_mut(id).expect("tracked");
        t.touched = now;
        let mut local = t.base.clone();
        let mut aligned = true;
        for p in t.all_ops() {
            let len = local.seq.len();
            local.apply(&p.op, &limits);
            aligned &= lands_at_end(&local, &p.op, len);
        }
        t.aligned = aligned;
        if local == t.local {
            return;
        }
        let old = std::mem::replace(&mut t.local, local);
        let changed_content = !same_content(&old.thread, &t.local.thread);
        if changed_content {
            mark_changes(&mut t.file, &old, &t.local);
            if t.file.lags() {
                self.to_write.insert(id.clone());
            }
            self.actions.push_back(updated(&self.threads[id].local.thread, origin));
        }
    }

    /// The base moved by `effects` and nothing is unconfirmed: the same
    /// effects move the view, at the cost of the change.
    pub(super) fn fast_forward(&mut self, id: &ThreadId, effects: &[Effect]) {
        let t = self.threads.get_mut(id).expect("tracked");
        t.aligned = true;
        for e in effects {
            if t.local.apply_effect(e).is_err() {
                // Cannot happen while local == base; recover the slow way.
                t.local = t.base.clone();
                t.file.dirty = true;
                t.file.needs_compaction = true;
                break;
            }
            match e {
                Effect::Insert { message, .. } => t.file.touch(Some(&message.id)),
                Effect::Edit { id, .. } | Effect::Delete { id } => t.file.touch(Some(id)),
                Effect::Create { .. } | Effect::Title { .. } | Effect::Env { .. } => t.file.touch(None),
            }
        }
        if t.file.lags() {
            self.to_write.insert(id.clone());
        }
    }

    /// Puts a thread's file back (after its owner removed it, e.g. an
    /// assistant's 30-day cleanup): written anew, whole, where the file of
    /// such a thread goes. The thread must be loaded and its file absent.
    pub fn restore_file(&mut self, now: Time, id: &ThreadId) -> Result<(), String> {
        let t = self.threads.get_mut(id).filter(|t| t.local.exists()).ok_or_else(|| format!("no thread {id}"))?;
        if t.file.stamp.is_some() && !t.file.removed {
            return Err(format!("{id} has its file; nothing to restore"));
        }
        t.file.removed = false;
        t.file.stamp = None;
        t.file.error = None;
        t.file.view = FileView::default();
        t.file.dirty = true;
        self.to_write.insert(id.clone());
        let save = self.threads[id].file_save(Vec::new(), true);
        self.actions.push_back(Action::Save(save));
        self.drive(now);
        Ok(())
    }

    /// Asks for the writes of threads whose file lags behind them. A thread
    /// whose file cannot be written now (a write in flight, an unreadable
    /// file, an assistant's change waiting out its debounce) stays queued.
    pub(super) fn write_files(&mut self) {
        let queued: Vec<ThreadId> = self.to_write.iter().cloned().collect();
        for id in queued {
            let Some(t) = self.threads.get_mut(&id) else {
                self.to_write.remove(&id);
                continue;
            };
            if !t.file.lags() || !t.local.exists() {
                self.to_write.remove(&id);
                continue;
            }
            if t.write.is_some() || t.file.error.is_some() || t.snapshot.is_some() || t.write_retry.is_some() {
                continue;
            }
            if t.file.removed {
                // Kept on the server; written again when restored.
                self.to_write.remove(&id);
                continue;
            }
            // A thread new to this machine from an assistant this machine
            // syncs goes into that assistant's store, where it resumes it.
            if t.file.kind == FileKind::Jsonl && t.file.stamp.is_none() && self.cfg.is_native(&t.local.thread.env) {
                t.file.kind = FileKind::Native;
            }
            if t.file.kind == FileKind::Native {
                t.file.needs_compaction = false; // appended to only
            }
            self.to_write.remove(&id);
            // The whole thread only for a whole-file write: an append costs
            // the size of the change.
            let whole = |t: &Tracked| {
                let mut thread = t.local.thread.clone();
                thread.extra = t.file.view.extra.clone();
                thread
            };
            let (write, pending) = match (t.file.kind, t.file.stamp) {
                (FileKind::Json, expect) => (FileWrite::Json { thread: whole(t), expect }, PendingWrite::Json),
                (FileKind::Jsonl | FileKind::Native, None) => {
                    let thread = whole(t);
                    let view = FileView::of_thread(&thread);
                    (FileWrite::Create { records: threadlog::compacted(&thread) }, PendingWrite::Whole(Box::new(view)))
                }
                (FileKind::Jsonl, Some(expect)) if t.file.needs_compaction => {
                    let thread = whole(t);
                    let view = FileView::of_thread(&thread);
                    (FileWrite::Compact { thread, expect }, PendingWrite::Whole(Box::new(view)))
                }
                (FileKind::Jsonl | FileKind::Native, Some(expect)) => {
                    let records = file::log_records(&t.file.view, &t.local, &t.file.changed, t.file.meta_changed);
                    if records.is_empty() {
                        t.file.dirty = false;
                        t.file.changed.clear();
                        t.file.meta_changed = false;
                        continue;
                    }
                    (FileWrite::Append { records: records.clone(), expect }, PendingWrite::Records(records))
                }
            };
            t.write = Some(pending);
            // Saved as lagging first: a crash before the write leaves the
            // thread marked, and the restarted sidecar writes it.
            let save = t.file_save(Vec::new(), false);
            self.actions.push_back(Action::Save(save));
            self.actions.push_back(Action::WriteFile { thread_id: id, write });
        }
    }
}

pub(super) fn updated(t: &Thread, origin: Origin) -> Action {
    Action::ThreadUpdated {
        thread_id: t.id.clone(),
        version: t.v,
        title: t.title.clone(),
        message_count: t.messages.len(),
        origin,
    }
}

/// Marks in `file` what differs between two versions of the view: changed
/// or removed messages, title and env, and an order a log cannot show by
/// appending.
pub(super) fn mark_changes(file: &mut FileState, old: &Doc, new: &Doc) {
    let before: HashMap<&MessageId, (usize, crate::model::ContentHash)> =
        old.thread.messages.iter().enumerate().map(|(i, m)| (&m.id, (i, m.content.hash()))).collect();
    let mut last_common = None;
    let mut seen: HashSet<&MessageId> = HashSet::with_capacity(new.thread.messages.len());
    for m in &new.thread.messages {
        seen.insert(&m.id);
        match before.get(&m.id) {
            Some((i, h)) => {
                if *h != m.content.hash() {
                    file.touch(Some(&m.id));
                }
                // Messages both versions hold must keep their relative order
                // for a log to show the new one by appending.
                if last_common.is_some_and(|l| *i < l) && file.kind == FileKind::Jsonl {
                    file.needs_compaction = true;
                    file.dirty = true;
                }
                last_common = Some(*i);
            }
            None => file.touch(Some(&m.id)),
        }
    }
    for m in &old.thread.messages {
        if !seen.contains(&m.id) {
            file.touch(Some(&m.id));
        }
    }
    if old.thread.title != new.thread.title || old.thread.env != new.thread.env {
        file.touch(None);
    }
    if file.kind == FileKind::Json {
        file.changed.clear();
        file.meta_changed = false;
        file.dirty = true;
    }
}

/// After `op` was applied to `local` (which had `len` entries): it was an
/// append that landed at the end, or an append of a message already there.
pub(super) fn lands_at_end(local: &Doc, op: &Op, len: usize) -> bool {
    match op {
        Op::Append { message, .. } => {
            local.seq.len() == len || (local.seq.len() == len + 1 && local.seq.last() == Some(&message.id))
        }
        _ => false,
    }
}

pub(super) fn prior_of(local: &Doc, op: &Op) -> (Content, Option<Arc<Message>>) {
    match op {
        Op::SetTitle { base, .. } => (Content::new(Value::String(base.clone())), None),
        Op::SetEnv { .. } => (Content::new(local.thread.env.clone()), None),
        Op::Edit { id, .. } | Op::Delete { id, .. } => {
            let m = local.get(id).cloned();
            (m.as_ref().map_or_else(|| Content::new(Value::Null), |m| m.content.clone()), m)
        }
        Op::Create { .. } | Op::Append { .. } | Op::Restore { .. } => (Content::new(Value::Null), None),
    }
}

/// An operation with its content elided (what the engine keeps).
pub(super) fn elide_op(op: &Op) -> Op {
    match op {
        Op::Append { message, after, follows } if !message.content.is_elided() => {
            Op::Append { message: Arc::new(message.elided()), after: after.clone(), follows: follows.clone() }
        }
        Op::Restore { message, of } if !message.content.is_elided() => {
            Op::Restore { message: Arc::new(message.elided()), of: of.clone() }
        }
        Op::Edit { id, content, base } if !content.is_elided() => {
            Op::Edit { id: id.clone(), content: content.elided(), base: *base }
        }
        other => other.clone(),
    }
}

/// Hands loaded content in `op` to the store and returns the op elided.
pub(super) fn keep_bodies(thread: &ThreadId, op: Op, saves: &mut Vec<Save>) -> Op {
    match &op {
        Op::Append { message, .. } | Op::Restore { message, .. } if !message.content.is_elided() => {
            saves.push(Save::Body { thread: thread.clone(), id: message.id.clone(), content: message.content.clone() })
        }
        Op::Edit { id, content, .. } if !content.is_elided() => {
            saves.push(Save::Body { thread: thread.clone(), id: id.clone(), content: content.clone() })
        }
        _ => {}
    }
    elide_op(&op)
}
