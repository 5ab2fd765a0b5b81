//! Queries: read-only views of the engine's state for the shell and tests.

use super::*;

impl SyncEngine {
    // ----- queries --------------------------------------------------------

    pub fn status(&self) -> Status {
        self.compute_status()
    }

    /// A loaded thread as the user sees it (content elided).
    pub fn thread(&self, id: &ThreadId) -> Option<&Thread> {
        self.threads.get(id).filter(|t| t.local.exists()).map(|t| &t.local.thread)
    }

    /// A loaded thread as its file shows it: the view plus the file's own
    /// fields (content elided).
    pub fn file_thread(&self, id: &ThreadId) -> Option<Thread> {
        let t = self.threads.get(id).filter(|t| t.local.exists())?;
        let mut thread = t.local.thread.clone();
        thread.extra = t.file.view.extra.clone();
        Some(thread)
    }

    pub fn base(&self, id: &ThreadId) -> Option<&Doc> {
        self.threads.get(id).map(|t| &t.base)
    }

    /// The threads in memory (the rest are in the store).
    pub fn thread_ids(&self) -> impl Iterator<Item = &ThreadId> {
        self.threads.iter().filter(|(_, t)| t.local.exists()).map(|(id, _)| id)
    }

    pub fn thread_status(&self, id: &ThreadId) -> Option<ThreadStatus> {
        self.threads.get(id).map(|t| self.compute_thread_status(t))
    }

    /// Threads with changes not yet on the server (seed: observePendingItems).
    pub fn pending_threads(&self) -> BTreeSet<ThreadId> {
        self.threads.iter().filter(|(_, t)| t.unsent_or_inflight()).map(|(id, _)| id.clone()).collect()
    }

    pub fn conflicts(&self) -> &[Conflict] {
        &self.conflicts
    }

    pub fn cursor(&self) -> Option<&Cursor> {
        self.cursor.as_ref()
    }

    pub fn metrics(&self) -> MetricsSnapshot {
        self.monitor.snapshot()
    }

    /// The client ids of the two lanes (for logs and tests).
    pub fn client_ids(&self) -> [&ClientId; 2] {
        [&self.lanes[0].client, &self.lanes[1].client]
    }

    /// True when nothing is waiting to be sent, confirmed or written.
    pub fn is_idle(&self) -> bool {
        self.debounce.is_empty()
            && self.threads.values().all(|t| {
                t.pending.is_empty()
                    && t.inflight.is_none()
                    && t.acked.is_empty()
                    && t.write.is_none()
                    && (!t.file.lags() || t.file.error.is_some())
            })
            && self.lanes.iter().all(|l| l.outstanding.is_empty())
    }

    /// Whether a loaded thread's message is deleted (Some(true)), there
    /// (Some(false)), or unknown (None).
    pub fn is_deleted(&self, id: &ThreadId, message: &MessageId) -> Option<bool> {
        let t = self.threads.get(id)?;
        if t.local.get(message).is_some() {
            Some(false)
        } else if t.local.deleted.contains(message) {
            Some(true)
        } else {
            None
        }
    }

    /// What the engine knows of a thread's file (diagnostics and tests).
    pub fn file_state(&self, id: &ThreadId) -> Option<&FileState> {
        self.threads.get(id).map(|t| &t.file)
    }

    /// What keeps each busy thread from being idle (diagnostics).
    pub fn busy(&self) -> Vec<String> {
        self.threads
            .iter()
            .filter(|(_, t)| !t.idle())
            .map(|(id, t)| {
                format!(
                    "{id}: pending {} inflight {} acked {} snapshot {} write {:?} retry {:?} error {:?} lags {} (dirty {} changed {} meta {} compact {}) stamp {:?} queued {}",
                    t.pending.len(),
                    t.inflight.is_some(),
                    t.acked.len(),
                    t.snapshot.is_some(),
                    t.write.is_some(),
                    t.write_retry,
                    t.file.error,
                    t.file.lags(),
                    t.file.dirty,
                    t.file.changed.len(),
                    t.file.meta_changed,
                    t.file.needs_compaction,
                    t.file.stamp.map(|s| (s.ino, s.len)),
                    self.to_write.contains(id),
                )
            })
            .collect()
    }

    /// How many threads are in memory.
    pub fn resident_count(&self) -> usize {
        self.threads.len()
    }
}
