//! Pushing: the two lanes (fast and bulk), composing mutations from queued
//! operations (coalesced), sending them, and what the server's answer does.

use super::*;

/// One sequence of mutation ids. Two lanes (small, bulk) so that a large
/// upload never holds up small changes; each thread has at most one mutation
/// in flight across both, so a thread's changes still arrive in order.
#[derive(Debug)]
pub(super) struct Lane {
    pub(super) client: ClientId,
    pub(super) next_id: u64,
    /// Sent and not answered (or answered with a failure): resent unchanged.
    pub(super) outstanding: Vec<Mutation>,
    pub(super) inflight: Option<(ReqId, Time, usize)>,
    pub(super) retry_at: Option<Time>,
    pub(super) backoff: Backoff,
    /// After a 413, mutations go one at a time to find the one too large.
    pub(super) one_at_a_time: bool,
}

impl SyncEngine {
    pub fn handle_push(&mut self, now: Time, req: ReqId, outcome: Result<PushResponse, Failure>) {
        let Some(li) = self.lanes.iter().position(|l| l.inflight.is_some_and(|(r, _, _)| r == req)) else {
            return;
        };
        let (_, started, bytes) = self.lanes[li].inflight.take().expect("matched above");
        if self.uploads.remove(&req) {
            let end = if outcome.is_ok() { "uploaded" } else { "will retry" };
            self.actions.push_back(Action::Progress {
                token: format!("threadsync-push-{req}"),
                step: ProgressStep::End(end.into()),
            });
        }
        match outcome {
            Ok(resp) => self.push_succeeded(now, li, started, bytes, resp),
            Err(f) => self.push_failed(now, li, f),
        }
        self.check_tickets(now);
        self.drive(now);
        self.update_status(now);
    }

    // ----- pushing --------------------------------------------------------

    pub(super) fn schedule_batch(&mut self, now: Time) {
        if self.batch_at.is_some() {
            return;
        }
        // Nothing on the wire: the change goes now, however recent the last
        // push (a reply that follows a message closely must not wait out a
        // window); changes made while a push is out collect until the
        // window ends or it is answered.
        let quiet = self.lanes.iter().all(|l| l.inflight.is_none() && l.outstanding.is_empty());
        self.batch_at = Some(if self.cfg.flush_when_idle && quiet { now } else { now + self.cfg.batch_window });
    }

    /// Some thread has changes a push could carry now (not in flight, not
    /// held by a per-thread backoff: those wake the engine themselves).
    pub(super) fn has_sendable(&self, now: Time) -> bool {
        self.threads
            .values()
            .any(|t| !t.pending.is_empty() && t.inflight.is_none() && t.backoff_until.is_none_or(|at| at <= now))
    }

    pub(super) fn drive(&mut self, now: Time) {
        self.write_files();
        if self.unauthorized.is_some() {
            return;
        }
        if let Connectivity::Offline { probe_at, probe, .. } = &mut self.net {
            if probe.is_none() && *probe_at <= now {
                let req = self.next_req;
                self.next_req += 1;
                *probe = Some(req);
                self.actions.push_back(Action::Probe { req, timeout: self.cfg.request_timeout });
            }
            return;
        }
        // A thread whose backoff ended is sendable again.
        let mut released = false;
        for t in self.threads.values_mut() {
            if t.backoff_until.is_some_and(|at| at <= now) {
                t.backoff_until = None;
                released |= !t.pending.is_empty();
            }
        }
        if released {
            // It has waited long enough: no collection window on top.
            self.batch_at = Some(now);
        }
        if self.batch_at.is_some_and(|at| at <= now) {
            self.batch_at = None;
            for li in [FAST, BULK] {
                if self.lanes[li].inflight.is_none() && self.lanes[li].outstanding.is_empty() {
                    self.compose(now, li);
                }
            }
            // Left over because of batch limits: the next window takes them.
            // (Changes waiting for a busy lane go when its push is answered.)
            let idle_lane = self.lanes.iter().any(|l| l.inflight.is_none() && l.outstanding.is_empty());
            if idle_lane && self.has_sendable(now) {
                self.schedule_batch(now);
            }
        }
        for li in [FAST, BULK] {
            let lane = &self.lanes[li];
            if lane.inflight.is_none() && !lane.outstanding.is_empty() && lane.retry_at.is_none_or(|at| at <= now) {
                self.send(now, li);
            }
        }
        if self.pull.inflight.is_none() && self.pull.next_at.is_some_and(|at| at <= now) {
            self.send_pull(now);
        }
    }

    /// Builds the next batch of a lane from the threads' pending changes:
    /// oldest first, one mutation per thread (all its pending operations,
    /// coalesced), up to the adaptive thread and byte limits.
    pub(super) fn compose(&mut self, now: Time, li: usize) {
        let max_threads = self.monitor.batch_limit().min(self.cfg.max_batch_threads).max(1);
        let budget = self.monitor.byte_budget() as usize;
        let mut candidates: Vec<(u64, ThreadId, usize)> = self
            .threads
            .iter()
            .filter(|(_, t)| !t.pending.is_empty() && t.inflight.is_none())
            .filter(|(_, t)| t.backoff_until.is_none_or(|at| at <= now))
            .map(|(id, t)| (t.pending[0].seq, id.clone(), t.pending.iter().map(|p| p.op.size()).sum()))
            .filter(|(_, _, size)| (*size > self.cfg.bulk_threshold) == (li == BULK))
            .collect();
        candidates.sort();
        let mut bytes = 0;
        let mut chosen = Vec::new();
        for (_, id, size) in candidates {
            if chosen.len() >= max_threads || (!chosen.is_empty() && bytes + size > budget) {
                continue;
            }
            if self.lanes[li].one_at_a_time && !chosen.is_empty() {
                break;
            }
            bytes += size;
            chosen.push(id);
        }
        for id in chosen {
            let lane = &mut self.lanes[li];
            let t = self.threads.get_mut(&id).expect("candidate");
            t.backoff_until = None;
            let before: Vec<u64> = t.pending.iter().flat_map(PendingOp::seqs).collect();
            let ops = coalesce(std::mem::take(&mut t.pending));
            // Rows of merged operations stay (replaying them merges them
            // again); rows of operations coalescing dropped go.
            let still: BTreeSet<u64> = ops.iter().flat_map(PendingOp::seqs).collect();
            let dropped: Vec<u64> = before.into_iter().filter(|s| !still.contains(s)).collect();
            let mutation = lane.next_id;
            lane.next_id += 1;
            lane.outstanding.push(Mutation {
                id: mutation,
                thread_id: id.clone(),
                ops: ops.iter().map(|p| p.op.clone()).collect(),
            });
            t.inflight = Some(Inflight { mutation, ops });
            self.ops_done(&id, dropped);
        }
    }

    pub(super) fn send(&mut self, now: Time, li: usize) {
        let req = self.next_req;
        self.next_req += 1;
        let lane = &mut self.lanes[li];
        let take = if lane.one_at_a_time { 1 } else { lane.outstanding.len() };
        let body = PushRequest {
            client_id: lane.client.clone(),
            mutations: lane.outstanding[..take].to_vec(),
            machine: self.cfg.machine.clone(),
        };
        let bytes = body.mutations.iter().flat_map(|m| &m.ops).map(Op::size).sum();
        lane.inflight = Some((req, now, bytes));
        lane.retry_at = None;
        let timeout = self.cfg.request_timeout + Duration::from_millis((bytes / 10_000) as u64);
        if bytes > LARGE_PUSH {
            self.uploads.insert(req);
            self.actions.push_back(Action::Progress {
                token: format!("threadsync-push-{req}"),
                step: ProgressStep::Begin(format!("threadsync: uploading {:.1} MB", bytes as f64 / 1e6)),
            });
        }
        self.actions.push_back(Action::Push { req, body, timeout });
    }

    pub(super) fn push_succeeded(&mut self, now: Time, li: usize, started: Time, bytes: usize, resp: PushResponse) {
        self.on_reachable(now);
        self.server_error = None;
        let lane = &mut self.lanes[li];
        lane.backoff.reset();
        let sent = if lane.one_at_a_time { 1 } else { lane.outstanding.len() };
        let sent: Vec<Mutation> = lane.outstanding.drain(..sent.min(lane.outstanding.len())).collect();
        if lane.outstanding.is_empty() {
            lane.one_at_a_time = false;
        }
        let mut conflicts = 0;
        let mut gap = false;
        for m in &sent {
            let Some(r) = resp.results.iter().find(|r| r.id == m.id) else {
                // The server answered without this mutation: treat as a gap.
                gap = true;
                continue;
            };
            let t = self.threads.get_mut(&m.thread_id).expect("sent threads are tracked");
            let Some(inflight) = t.inflight.take() else { continue };
            let mut dropped = false;
            let mut done = Vec::new();
            match r.status {
                MutationStatus::Gap => {
                    gap = true;
                    // Back to the front of the queue, to go again under a new client id.
                    let mut ops = inflight.ops;
                    ops.iter_mut().for_each(|p| p.maybe_sent = true);
                    ops.append(&mut t.pending);
                    t.pending = ops;
                }
                MutationStatus::Duplicate => {
                    // Confirmed already if a pull overtook this answer.
                    if r.version > t.base.thread.v {
                        t.acked.extend(inflight.ops.into_iter().map(|p| (r.version, p)));
                    } else {
                        done.extend(inflight.ops.iter().flat_map(PendingOp::seqs));
                    }
                    t.last_sync = Some(now);
                }
                _ => {
                    let mut refused = Vec::new();
                    let mut reasons = Vec::new();
                    for (i, p) in inflight.ops.into_iter().enumerate() {
                        match r.ops.get(i) {
                            Some(OpResult::Conflict { conflict }) => {
                                conflicts += 1;
                                dropped = true;
                                done.extend(p.seqs());
                                let c = make_conflict(&mut self.rng, now, &m.thread_id, conflict.clone(), &p);
                                self.conflicts.push(c);
                            }
                            Some(OpResult::Rejected { reason }) => {
                                dropped = true;
                                done.extend(p.seqs());
                                reasons.push(reason.clone());
                                refused.push(p.op);
                            }
                            _ if r.version > t.base.thread.v => t.acked.push((r.version, p)),
                            _ => done.extend(p.seqs()),
                        }
                    }
                    t.last_sync = Some(now);
                    if !refused.is_empty() {
                        // Refused for good: hold this thread's next changes a
                        // while, so an assistant rewriting the same refused
                        // content does not turn into a push loop.
                        t.backoff_until = Some(now + self.cfg.thread_backoff);
                        self.actions.push_back(Action::Rollback {
                            thread_id: m.thread_id.clone(),
                            reason: reasons.join("; "),
                            ops: refused,
                        });
                    }
                }
            }
            self.ops_done(&m.thread_id, done);
            // Dropping refused or conflicting changes changes what the user sees.
            if dropped {
                self.rebase(now, &m.thread_id, Origin::Remote);
            }
        }
        if conflicts > 0 {
            self.actions.push_back(Action::Save(Save::Conflicts(self.conflicts.clone())));
        }
        if gap {
            // The server lost track of this client's ids (e.g. restored from a
            // backup): continue under a fresh client id. Operations are
            // idempotent, so resending what may have applied is harmless.
            let lane = &mut self.lanes[li];
            let fresh = ulid::Ulid::from_parts(now.as_millis(), self.rng.random());
            lane.client = ClientId::new(format!("c-{fresh}{}", if li == BULK { "-bulk" } else { "" })).expect("valid");
            lane.next_id = 1;
            for m in std::mem::take(&mut lane.outstanding) {
                if let Some(t) = self.threads.get_mut(&m.thread_id)
                    && let Some(i) = t.inflight.take()
                {
                    let mut ops = i.ops;
                    ops.iter_mut().for_each(|p| p.maybe_sent = true);
                    ops.append(&mut t.pending);
                    t.pending = ops;
                }
            }
            self.actions.push_back(Action::Warning("the server did not know our mutation ids; resending".into()));
        }
        let items = sent.len();
        let duration = now.saturating_since(started);
        self.record(SyncSample { kind: SyncKind::Push, duration, bytes: bytes as u64, items, conflicts });
        self.last_sync = Some(now);
        if self.has_sendable(now) {
            self.batch_at = Some(now);
        }
        // Without a held pull, fetch the result now so it is confirmed promptly.
        if !matches!(self.cfg.poll, PollMode::LongPoll { .. }) {
            self.pull.next_at = Some(now);
        }
    }

    pub(super) fn push_failed(&mut self, now: Time, li: usize, f: Failure) {
        self.monitor.record_failure();
        self.fail_tickets(&f.describe());
        match f.class() {
            FailureClass::Unauthorized => self.set_unauthorized(&f),
            _ if f.is_connectivity() => self.go_offline(now, &f),
            FailureClass::Retryable { retry_after } => {
                self.server_error = Some(f.describe());
                let lane = &mut self.lanes[li];
                lane.retry_at = Some(now + lane.backoff.next_delay(&mut self.rng, retry_after));
            }
            FailureClass::Permanent => {
                // The server took none of it. Find the offending mutation by
                // sending one at a time; a single one refused is rolled back,
                // and its id is reused (the server never recorded it).
                let lane = &mut self.lanes[li];
                if !lane.one_at_a_time && lane.outstanding.len() > 1 {
                    lane.one_at_a_time = true;
                    lane.retry_at = Some(now);
                    return;
                }
                let m = lane.outstanding.remove(0);
                for (k, later) in lane.outstanding.iter_mut().enumerate() {
                    later.id = m.id + k as u64;
                    if let Some(t) = self.threads.get_mut(&later.thread_id)
                        && let Some(i) = t.inflight.as_mut()
                    {
                        i.mutation = later.id;
                    }
                }
                lane.next_id = m.id + lane.outstanding.len() as u64;
                if lane.outstanding.is_empty() {
                    lane.one_at_a_time = false;
                }
                lane.retry_at = Some(now);
                let mut done = Vec::new();
                if let Some(t) = self.threads.get_mut(&m.thread_id) {
                    if let Some(i) = t.inflight.take() {
                        done.extend(i.ops.iter().flat_map(PendingOp::seqs));
                    }
                    t.backoff_until = Some(now + self.cfg.thread_backoff);
                }
                self.actions.push_back(Action::Rollback {
                    thread_id: m.thread_id.clone(),
                    reason: f.describe(),
                    ops: m.ops,
                });
                self.ops_done(&m.thread_id, done);
                self.rebase(now, &m.thread_id, Origin::Remote);
            }
        }
    }
}

pub(super) fn make_conflict(
    rng: &mut ChaCha8Rng,
    now: Time,
    thread: &ThreadId,
    info: ConflictInfo,
    p: &PendingOp,
) -> Conflict {
    Conflict {
        id: format!("c-{}", ulid::Ulid::from_parts(now.as_millis(), rng.random())),
        thread_id: thread.clone(),
        kind: info.kind,
        message_id: info.message_id,
        base: p.prior.clone(),
        local: info.local,
        remote: info.remote,
        base_message: p.prior_message.clone(),
    }
}

/// Merges a thread's queued operations into fewer: repeated title or env
/// sets become one, edits of a message appended in the same batch fold into
/// the append, and a message appended and deleted before it was sent is
/// never sent at all.
pub(super) fn coalesce(ops: Vec<PendingOp>) -> Vec<PendingOp> {
    let mut out: Vec<PendingOp> = Vec::with_capacity(ops.len());
    for p in ops {
        match &p.op {
            Op::SetTitle { title, .. } => {
                if let Some(prev) = out.iter_mut().rev().find(|q| matches!(q.op, Op::SetTitle { .. }) && !q.maybe_sent)
                {
                    if let Op::SetTitle { title: t, .. } = &mut prev.op {
                        t.clone_from(title);
                    }
                    prev.absorbed.extend(p.seqs());
                    continue;
                }
            }
            Op::SetEnv { env, .. } => {
                if let Some(prev) = out.iter_mut().rev().find(|q| matches!(q.op, Op::SetEnv { .. }) && !q.maybe_sent) {
                    if let Op::SetEnv { env: e, .. } = &mut prev.op {
                        e.clone_from(env);
                    }
                    prev.absorbed.extend(p.seqs());
                    continue;
                }
            }
            Op::Edit { id, content, .. } => {
                // Into an append of the same message, or an earlier edit of it
                // (which keeps its base: the content before the batch).
                let earlier = out.iter_mut().rev().filter(|q| !q.maybe_sent).find(|q| match &q.op {
                    Op::Append { message, .. } => &message.id == id,
                    Op::Edit { id: e, .. } => e == id,
                    _ => false,
                });
                if let Some(q) = earlier {
                    match &mut q.op {
                        Op::Append { message, .. } => Arc::make_mut(message).content = content.clone(),
                        Op::Edit { content: c, .. } => c.clone_from(content),
                        _ => unreachable!("filtered above"),
                    }
                    q.absorbed.extend(p.seqs());
                    continue;
                }
            }
            Op::Delete { id, .. } => {
                let appended = out
                    .iter()
                    .position(|q| !q.maybe_sent && matches!(&q.op, Op::Append { message, .. } if &message.id == id));
                // Only when nothing queued after it was anchored to it.
                let anchored = out.iter().any(|q| matches!(&q.op, Op::Append { after: Some(a), .. } if a == id));
                if let (Some(i), false) = (appended, anchored) {
                    // Neither is sent; both rows go (`compose` sees them missing).
                    out.remove(i);
                    continue;
                }
            }
            Op::Create { .. } | Op::Append { .. } | Op::Restore { .. } => {}
        }
        out.push(p);
    }
    out
}
