// The sidecar's custom LSP surface, as the extension uses it (protocol.md,
// "The sidecar"; interface.md). Names and wire types only — pure, no
// `vscode` import — so the unit and RPC tests use the same names.

/** `threadsync/status` params and `threadsync/getStatus` result. */
export interface SyncStatus {
  state: string;
  pending: number;
  conflicts: number;
  online: boolean;
  /** RFC 3339, or null when nothing was ever synced. */
  lastSync: string | null;
  message?: string;
}

/** An item of `threadsync/listThreads`. */
export interface ThreadSummary {
  id: string;
  title: string;
  version: number;
  messageCount: number;
  state?: string | null;
}

/** An item of `threadsync/listConflicts`. */
export interface Conflict {
  id: string;
  threadId: string;
  kind: string;
  base: unknown;
  local: unknown;
  remote: unknown;
  messageId?: string;
  baseMessage?: unknown;
}

export interface ThreadUpdated {
  threadId: string;
  version: number;
  title: string;
  messageCount: number;
  origin: 'local' | 'remote';
}

export interface ThreadStatus {
  threadId: string;
  state: string;
  version: number;
  lastSync: string | null;
  error?: string;
}

export interface Rollback {
  threadId: string;
  reason: string;
}

/** Notifications, sidecar → editor. */
export const Notifications = {
  status: 'threadsync/status',
  threadStatus: 'threadsync/threadStatus',
  threadUpdated: 'threadsync/threadUpdated',
  rollback: 'threadsync/rollback',
} as const;

/** Requests, editor → sidecar. */
export const Requests = {
  getStatus: 'threadsync/getStatus',
  listThreads: 'threadsync/listThreads',
  getThread: 'threadsync/getThread',
  createThread: 'threadsync/createThread',
  appendMessage: 'threadsync/appendMessage',
  setTitle: 'threadsync/setTitle',
  listConflicts: 'threadsync/listConflicts',
  metrics: 'threadsync/metrics',
} as const;

/** `workspace/executeCommand` commands the sidecar advertises. */
export const SidecarCommands = {
  forceSync: 'threadsync.forceSync',
  resolveConflict: 'threadsync.resolveConflict',
} as const;

/** The sidecar's "engine not running / sync failed" error code. */
export const ENGINE_ERROR = -32001;
