//! Inputs from the thread files: what the shell read (a `.json` file whole, a
//! log's new records), what became of a write, and the operations they make.

use super::*;

impl SyncEngine {
    // ----- inputs: files --------------------------------------------------

    /// Where the shell reads a thread's file from: the stamp of the version
    /// last read or written (for a log, the offset to read on from).
    pub fn file_stamp(&self, id: &ThreadId) -> Option<Stamp> {
        self.threads.get(id).and_then(|t| t.file.stamp)
    }

    /// Logs to read whole once (see `FileState::verify`).
    pub fn to_verify(&self) -> Vec<(ThreadId, FileKind)> {
        self.threads.iter().filter(|(_, t)| t.file.verify).map(|(id, t)| (id.clone(), t.file.kind)).collect()
    }

    /// Whether a `.json` file with this stamp is worth parsing: not our own
    /// write coming back, nor the version already read.
    pub fn wants_read(&self, id: &ThreadId, stamp: &Stamp) -> bool {
        self.threads.get(id).is_none_or(|t| !t.file.known(stamp) || t.file.error.is_some())
    }

    /// Which messages a log already holds (for ids derived from content).
    pub fn file_has(&self, id: &ThreadId, message: &MessageId) -> bool {
        self.threads.get(id).is_some_and(|t| t.file.view.messages.contains_key(message))
    }

    /// A thread file was read. The thread must be loaded.
    pub fn file_read(&mut self, now: Time, id: &ThreadId, kind: FileKind, read: FileRead) {
        let t = self.tracked(now, id);
        if t.file.kind != kind && !matches!(read, FileRead::Gone) {
            if t.local.exists() || t.file.stamp.is_some() {
                let error = format!(
                    "{id}.{} was found, but this thread is kept in {id}.{}; remove one of them",
                    kind.extension(),
                    t.file.kind.extension()
                );
                t.file.error = Some(error);
                self.update_status(now);
                return;
            }
            t.file.kind = kind; // a new thread: the first file seen decides
        }
        match read {
            FileRead::Json { thread, stamp } => {
                let t = self.tracked(now, id);
                let was_bad = t.file.error.take().is_some();
                if t.file.known(&stamp) {
                    t.file.stamp = Some(stamp);
                    if was_bad {
                        self.to_write.insert(id.clone());
                    }
                } else {
                    t.file.stamp = Some(stamp);
                    t.snapshot = Some(thread);
                    // Debounced: rapid rewrites by an assistant become one change.
                    self.debounce.touch(now, id.clone());
                    self.poller.record_activity(now);
                }
            }
            FileRead::Seen { stamp } => {
                let t = self.tracked(now, id);
                if t.file.known(&stamp) {
                    t.file.stamp = Some(stamp);
                    if t.file.error.take().is_some() {
                        self.to_write.insert(id.clone());
                    }
                }
            }
            FileRead::Displaced { thread } => {
                self.absorb_snapshot(now, id);
                self.take_json(now, id, thread, false);
            }
            FileRead::Appended { records, stamp } => self.take_records(now, id, records, stamp),
            FileRead::Replayed { thread, stamp, superseded } => {
                self.take_replay(now, id, thread, stamp, superseded, true)
            }
            FileRead::Checked { thread, stamp, superseded } => {
                self.take_replay(now, id, thread, stamp, superseded, false)
            }
            FileRead::Invalid { error } => {
                // The last good state stays; nothing is written over the file
                // until it can be read again.
                self.tracked(now, id).file.error = Some(error);
            }
            FileRead::Gone => {
                self.debounce.take(id);
                let t = self.tracked(now, id);
                t.file.error = None;
                t.file.stamp = None;
                t.snapshot = None;
                if t.file.kind == FileKind::Native {
                    // An assistant's cleanup is not a deletion, nor an
                    // invitation to write the session back at once.
                    t.file.removed = true;
                }
                if t.file.kind.is_log() {
                    // A log written anew holds everything.
                    t.file.view = FileView::default();
                    t.file.superseded = 0;
                    t.file.changed.clear();
                }
                let save = self.threads[id].file_save(Vec::new(), true);
                self.actions.push_back(Action::Save(save));
            }
        }
        self.drive(now);
        self.update_status(now);
    }

    /// A write the engine asked for has been performed (or refused).
    pub fn file_written(&mut self, now: Time, id: &ThreadId, result: WriteResult) {
        let t = self.tracked(now, id);
        let Some(write) = t.write.take() else { return };
        match result {
            WriteResult::Written(stamp) => {
                t.file.stamp = Some(stamp);
                t.write_retry = None;
                let mut delta = Vec::new();
                let mut replace = false;
                match write {
                    PendingWrite::Json => {
                        t.file.own = Some(stamp.hash);
                        t.file.needs_compaction = false;
                    }
                    PendingWrite::Records(records) => {
                        for r in &records {
                            file::apply_record(&mut t.file.view, r);
                            if let Some(id) = record_id(r) {
                                delta.push((id.clone(), t.file.view.messages.get(id).copied()));
                            }
                        }
                        t.file.superseded +=
                            records.iter().filter(|r| !matches!(r, Record::Message { .. })).count() as u64;
                    }
                    PendingWrite::Whole(view) => {
                        t.file.view = *view;
                        t.file.superseded = 0;
                        t.file.needs_compaction = false;
                        replace = true;
                        delta = t.file.view.messages.iter().map(|(k, v)| (k.clone(), Some(*v))).collect();
                        delta.sort();
                    }
                }
                // The shell performs a step's writes before any other input:
                // the file now shows the thread as it is.
                t.file.dirty = false;
                t.file.changed.clear();
                t.file.meta_changed = false;
                let save = t.file_save(delta, replace);
                self.actions.push_back(Action::Save(save));
            }
            WriteResult::Changed => {
                // Someone else wrote it: the shell reads it now, and the
                // engine writes the merged thread after that.
                self.to_write.insert(id.clone());
            }
            WriteResult::Failed(e) => {
                t.write_retry = Some(now + WRITE_RETRY);
                self.actions.push_back(Action::Warning(format!("cannot write the file of {id}: {e}")));
            }
        }
        self.drive(now);
        self.update_status(now);
    }

    /// A `.json` file's content becomes operations: what changed from the
    /// last version someone else wrote, applied to the current view.
    ///
    /// `seen`: the writer will go on from this version. Not so for a version
    /// our write displaced: its writer next reads what we put in its place,
    /// so what it added is taken in but not counted as shown (else the next
    /// version, made from ours, would delete it). Nor does a displaced
    /// version delete anything: what its writer had read is unknown, and a
    /// deletion it meant comes again with its next version, read as usual.
    pub(super) fn take_json(&mut self, now: Time, id: &ThreadId, file: Thread, seen: bool) {
        let t = self.tracked(now, id);
        t.file.error = None;
        let ops = file::diff_file(&t.file.view, &file, &t.local, seen);
        let deletes = ops.iter().filter(|o| matches!(o, Op::Delete { .. })).count();
        if deletes > 0 {
            // Worth a log line: these go for everyone.
            let shown = t.file.view.messages.len();
            self.actions.push_back(Action::Warning(format!(
                "{id}: the file no longer has {deletes} of the {shown} message(s) its writer had shown; deleting them"
            )));
        }
        self.take_ops(now, id, ops);
        let t = self.threads.get_mut(id).expect("tracked");
        let delta = if seen {
            let old = std::mem::replace(&mut t.file.view, FileView::of_thread(&file));
            view_delta(&old.messages, &t.file.view.messages)
        } else {
            Vec::new()
        };
        // The file needs writing when it differs from what the merge keeps
        // (ids filled in, reordered or refused messages, newer messages).
        if t.local.exists() && !same_content(&t.local.thread, &file) {
            t.file.dirty = true;
            self.to_write.insert(id.clone());
        }
        let save = self.threads[id].file_save(delta, false);
        self.actions.push_back(Action::Save(save));
    }

    pub(super) fn take_records(&mut self, now: Time, id: &ThreadId, records: Vec<Record>, stamp: Stamp) {
        let t = self.tracked(now, id);
        t.file.error = None;
        t.file.removed = false;
        t.file.stamp = Some(stamp);
        let mut ops = Vec::new();
        let mut delta = Vec::new();
        let mut header = None;
        // What a line without `after` follows: the log's last visible
        // message. The log shows its messages in the view's order (that is
        // what the sidecar's records keep), so that is the view's last
        // message the log holds.
        let visible_end = |t: &Tracked| -> Option<MessageId> {
            let in_log = |m: &&Arc<Message>| t.file.view.messages.contains_key(&m.id);
            t.local.thread.messages.iter().rev().find(in_log).map(|m| m.id.clone())
        };
        let mut end = visible_end(t);
        for r in &records {
            if let Record::Header { created, env, .. } = r
                && !t.local.exists()
            {
                header = Some((*created, env.clone()));
            }
            ops.extend(file::record_ops(&t.file.view, r, &end));
            file::apply_record(&mut t.file.view, r);
            match r {
                Record::Message { message, after } if after.is_none() || after.as_ref() == Some(&end) => {
                    end = Some(message.id.clone());
                }
                Record::Delete { id } if end.as_ref() == Some(id) => end = visible_end(t),
                _ => {}
            }
            if !matches!(r, Record::Message { after: None, .. } | Record::Header { .. }) {
                t.file.superseded += 1;
            }
            if let Some(mid) = record_id(r) {
                delta.push((mid.clone(), t.file.view.messages.get(mid).copied()));
            }
        }
        if let Some((created, env)) = header {
            let mut thread = Thread::new(id.clone(), created);
            thread.env = env;
            thread.title = t.file.view.title.clone();
            ops.splice(0..0, file::diff_file(&FileView::default(), &thread, &t.local, false));
        }
        let touched: Vec<MessageId> = delta.iter().map(|(m, _)| m.clone()).collect();
        self.take_ops(now, id, ops);
        // What the merge kept differently from the log (a refused or
        // conflicting change) is written back.
        let t = self.threads.get_mut(id).expect("tracked");
        for mid in touched {
            if t.local.get(&mid).map(|m| m.content.hash()) != t.file.view.messages.get(&mid).copied() {
                t.file.touch(Some(&mid));
            }
        }
        if t.local.thread.title != t.file.view.title
            || crate::model::ContentHash::of(&t.local.thread.env) != t.file.view.env
        {
            t.file.touch(None);
        }
        if t.file.lags() {
            self.to_write.insert(id.clone());
        }
        self.maybe_compact(id);
        let save = self.threads[id].file_save(delta, false);
        self.actions.push_back(Action::Save(save));
    }

    /// A log read whole: its messages are taken in (a log deletes by record,
    /// never by omission; `take` false: only checked), and whatever the
    /// thread has that the log lacks, or has differently, is written to it.
    pub(super) fn take_replay(
        &mut self,
        now: Time,
        id: &ThreadId,
        file: Thread,
        stamp: Stamp,
        superseded: u64,
        take: bool,
    ) {
        let t = self.tracked(now, id);
        t.file.error = None;
        t.file.removed = false; // the file is back
        t.file.verify = false;
        t.file.stamp = Some(stamp);
        t.file.superseded = superseded;
        if take {
            let ops = file::diff_file(&t.file.view, &file, &t.local, false);
            self.take_ops(now, id, ops);
        }
        let t = self.threads.get_mut(id).expect("tracked");
        let old = std::mem::replace(&mut t.file.view, FileView::of_thread(&file));
        let delta = view_delta(&old.messages, &t.file.view.messages);
        // What the log shows that the thread no longer has (deleted while
        // the log lagged behind) is among them: a delete record each.
        let lagging = t.file_lag();
        for m in &lagging {
            t.file.touch(Some(m));
        }
        // The messages both hold must be in the same order, or only a
        // rewrite shows the thread's.
        let ours: Vec<&MessageId> =
            t.local.thread.messages.iter().map(|m| &m.id).filter(|m| t.file.view.messages.contains_key(*m)).collect();
        let logs: Vec<&MessageId> = file.messages.iter().map(|m| &m.id).filter(|m| t.local.get(m).is_some()).collect();
        // (A native file's order is its own: nothing to straighten.)
        if ours != logs && t.file.kind == FileKind::Jsonl {
            t.file.needs_compaction = true;
            t.file.dirty = true;
        }
        if t.local.exists() && (t.local.thread.title != file.title || t.local.thread.env != file.env) {
            t.file.touch(None);
        }
        if t.file.lags() {
            self.to_write.insert(id.clone());
        }
        self.maybe_compact(id);
        // `delta` holds every entry that changed: not a replacement.
        let save = self.threads[id].file_save(delta, false);
        self.actions.push_back(Action::Save(save));
    }

    pub(super) fn maybe_compact(&mut self, id: &ThreadId) {
        let t = self.threads.get_mut(id).expect("tracked");
        if t.file.kind == FileKind::Jsonl
            && t.file.superseded > self.cfg.compact_after
            && t.file.superseded > t.local.thread.messages.len() as u64
        {
            t.file.needs_compaction = true;
            self.to_write.insert(id.clone());
        }
    }

    /// Operations read from a file: rejected locally when the server would
    /// refuse them for good (reported, and the file rewritten without them),
    /// dropped when the view already is so, the rest queued. They came from
    /// the file, so it already shows them.
    pub(super) fn take_ops(&mut self, now: Time, id: &ThreadId, ops: Vec<Op>) {
        let t = &self.threads[id];
        let mut probe: Option<Doc> = None;
        let mut ok = Vec::new();
        let mut refused = Vec::new();
        for op in ops {
            // Usually one operation: decide on the view itself, no copy.
            let outcome = match &mut probe {
                Some(p) => p.apply(&op, &self.cfg.limits),
                None if ok.is_empty() && refused.is_empty() => {
                    decide(&mut &t.local, &op, &self.cfg.limits).expect("infallible")
                }
                None => {
                    let mut p = t.local.clone();
                    for o in &ok {
                        p.apply(o, &self.cfg.limits);
                    }
                    let out = p.apply(&op, &self.cfg.limits);
                    probe = Some(p);
                    out
                }
            };
            match outcome {
                OpOutcome::Rejected { reason } => refused.push((op, reason)),
                // Already so in the view (a message the file shows that the
                // thread has, content it already has): nothing to send, and
                // it must not count as the writer's latest append.
                OpOutcome::Unchanged => {}
                _ => ok.push(op),
            }
        }
        if !ok.is_empty() {
            self.add_ops(now, id, ok, false);
        }
        let t = self.threads.get_mut(id).expect("tracked");
        for (op, reason) in refused {
            if let Op::Append { message, .. } = &op {
                t.file.touch(Some(&message.id));
            }
            self.to_write.insert(id.clone());
            let op = elide_op(&op);
            self.actions.push_back(Action::Rollback { thread_id: id.clone(), reason, ops: vec![op] });
        }
        self.schedule_batch(now);
    }
}

/// Same title, env and messages (the version and unsynced fields aside).
pub(super) fn same_content(a: &Thread, b: &Thread) -> bool {
    a.title == b.title && a.env == b.env && a.messages == b.messages && a.created == b.created
}

/// The message a record is about.
pub(super) fn record_id(r: &Record) -> Option<&MessageId> {
    match r {
        Record::Message { message, .. } => Some(&message.id),
        Record::Edit { id, .. } | Record::Delete { id } => Some(id),
        _ => None,
    }
}

/// The entries of a file view that changed from `old` to `new`.
pub(super) fn view_delta(
    old: &HashMap<MessageId, crate::model::ContentHash>,
    new: &HashMap<MessageId, crate::model::ContentHash>,
) -> Vec<(MessageId, Option<crate::model::ContentHash>)> {
    let mut out: Vec<_> = new
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), Some(*v)))
        .chain(old.keys().filter(|k| !new.contains_key(*k)).map(|k| (k.clone(), None)))
        .collect();
    out.sort();
    out
}

/// A stamp for a thread handed over in memory (tests and the simulator):
/// the hash of its serialised form.
pub fn json_stamp(t: &Thread) -> Stamp {
    let bytes = serde_json::to_vec(t).unwrap_or_default();
    Stamp { ino: 0, len: bytes.len() as u64, mtime_ns: 0, hash: file::hash64(&bytes) }
}
