//! Status: the overall and per-thread states the statusline shows,
//! throttled, leading and trailing edges.

use super::*;

impl SyncEngine {
    // ----- status -----------------------------------------------------------

    pub(super) fn compute_thread_status(&self, t: &Tracked) -> ThreadStatus {
        let id = &t.base.thread.id;
        let state = if t.file.error.is_some() {
            ThreadState::Error
        } else if self.conflicts.iter().any(|c| &c.thread_id == id) {
            ThreadState::Conflict
        } else if t.inflight.is_some() {
            ThreadState::Syncing
        } else if !t.pending.is_empty() || t.snapshot.is_some() {
            ThreadState::Pending
        } else {
            ThreadState::Synced
        };
        ThreadStatus {
            thread_id: id.clone(),
            state,
            version: t.local.thread.v,
            last_sync: t.last_sync,
            error: t.file.error.clone(),
        }
    }

    pub(super) fn compute_status(&self) -> Status {
        let pending = self.threads.values().filter(|t| t.unsent_or_inflight()).count();
        let conflicts = self.conflicts.len();
        // Online means "reached the server": until the first answer arrives we
        // do not know, and a statusline must not show a tick for a sidecar that
        // has never synced (it stays `syncing` until the first catch-up ends).
        let online = matches!(self.net, Connectivity::Online) && self.last_sync.is_some();
        let file_error =
            self.threads.values().find_map(|t| t.file.error.as_ref().map(|e| format!("{}: {e}", t.base.thread.id)));
        let pushing = self.lanes.iter().any(|l| l.inflight.is_some());
        let pulling = self.pull.inflight.is_some_and(|(_, _, waited)| !waited);
        let (state, message) = if let Some(why) = &self.unauthorized {
            (State::Unauthorized, Some(format!("the server refused our token ({why}); set a valid token")))
        } else if let Connectivity::Offline { reason, .. } = &self.net {
            (State::Offline, Some(reason.clone()))
        } else if conflicts > 0 {
            (State::Conflict, Some(format!("{conflicts} conflict(s) to resolve")))
        } else if let Some(e) = file_error.or_else(|| self.server_error.clone()) {
            (State::Error, Some(e))
        } else if !self.pull.synced_once {
            (State::Syncing, Some(if pulling { "first sync" } else { "connecting" }.to_string()))
        } else if pushing {
            (State::Syncing, None)
        } else if pending > 0 {
            (State::Pending, None)
        } else {
            (State::Synced, None)
        };
        Status { state, pending, conflicts, online, last_sync: self.last_sync, message }
    }

    /// Emits per-thread status changes at once, and the overall status
    /// through the throttle (leading edge now, trailing edge coalesced).
    /// Then lets idle threads go.
    pub(super) fn update_status(&mut self, now: Time) {
        let ids: Vec<ThreadId> = self.threads.keys().cloned().collect();
        for id in ids {
            let s = self.compute_thread_status(&self.threads[&id]);
            if self.thread_status_sent.get(&id) != Some(&s) {
                self.thread_status_sent.insert(id, s.clone());
                self.actions.push_back(Action::ThreadStatus(s));
            }
        }
        self.poller.set_queue_depth(self.threads.values().filter(|t| t.unsent_or_inflight()).count());
        // A file that lags is either being written, waiting for something
        // that will queue it again, or queued.
        debug_assert!(
            self.threads.iter().all(|(id, t)| !t.file.lags()
                || !t.local.exists()
                || t.write.is_some()
                || t.write_retry.is_some()
                || t.file.error.is_some()
                || t.snapshot.is_some()
                || self.to_write.contains(id)),
            "a lagging file is not queued for writing: {:?}",
            self.busy()
        );
        let s = self.compute_status();
        if self.status_sent.as_ref() != Some(&s) && self.status_throttle.on_event(now) {
            self.emit_status();
        }
        self.evict();
    }

    pub(super) fn emit_status(&mut self) {
        let s = self.compute_status();
        if self.status_sent.as_ref() != Some(&s) {
            self.status_sent = Some(s.clone());
            self.actions.push_back(Action::Status(s));
        }
    }
}
