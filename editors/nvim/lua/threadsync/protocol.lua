-- Generated from src/lsp/protocol.rs; do not edit. Regenerate with
--   THREADSYNC_BLESS=1 cargo test --test tidy
-- (the same test fails while this file is out of date).
-- The sidecar's method names (protocol.md, "The sidecar").
return {
  notifications = {
    status = 'threadsync/status',
    threadStatus = 'threadsync/threadStatus',
    threadUpdated = 'threadsync/threadUpdated',
    rollback = 'threadsync/rollback',
  },
  requests = {
    getStatus = 'threadsync/getStatus',
    listThreads = 'threadsync/listThreads',
    getThread = 'threadsync/getThread',
    createThread = 'threadsync/createThread',
    appendMessage = 'threadsync/appendMessage',
    setTitle = 'threadsync/setTitle',
    listConflicts = 'threadsync/listConflicts',
    restoreMessage = 'threadsync/restoreMessage',
    metrics = 'threadsync/metrics',
  },
  commands = {
    forceSync = 'threadsync.forceSync',
    resolveConflict = 'threadsync.resolveConflict',
  },
}
