// Generated from src/lsp/protocol.rs; do not edit. Regenerate with
//   THREADSYNC_BLESS=1 cargo test --test tidy
// (the same test fails while this file is out of date).

/**
 * `threadsync/status` params and `threadsync/getStatus` result.
 */
export type SyncStatus = {
  state: SyncState,
  /**
   * Threads with changes not yet on the server.
   */
  pending: number,
  conflicts: number,
  /**
   * The server has answered (and has not stopped answering since).
   */
  online: boolean,
  /**
   * RFC 3339, or null when nothing was ever synced.
   */
  lastSync: string | null,
  message?: string,
};

/**
 * The overall state; what a statusline shows.
 */
export type SyncState = "synced" | "syncing" | "pending" | "offline" | "error" | "conflict" | "unauthorized";

/**
 * `threadsync/threadStatus` params.
 */
export type ThreadStatusParams = {
  threadId: string,
  state: ThreadState,
  version: number,
  /**
   * RFC 3339, or null.
   */
  lastSync: string | null,
  /**
   * Why the thread file could not be read.
   */
  error?: string,
};

/**
 * One thread's state.
 */
export type ThreadState = "pending" | "syncing" | "synced" | "conflict" | "error";

/**
 * `threadsync/threadUpdated` params.
 */
export type ThreadUpdatedParams = {
  threadId: string,
  version: number,
  title: string,
  messageCount: number,
  origin: Origin,
};

/**
 * Where a change to a thread came from.
 */
export type Origin = "local" | "remote";

/**
 * `threadsync/rollback` params.
 */
export type RollbackParams = {
  threadId: string,
  reason: string,
};

/**
 * The params of a request that takes none: `{}` by convention, though
 * anything is accepted (and ignored).
 */
export type NoParams = Record<string, never>;

export type ListThreadsResult = {
  threads: Array<ThreadSummary>,
};

/**
 * An item of `threadsync/listThreads`.
 */
export type ThreadSummary = {
  id: string,
  title: string,
  version: number,
  messageCount: number,
  state: ThreadState,
  /**
   * The assistant whose session this is (`claude-code`, `codex`,
   * `gemini`); absent for threadsync's own threads.
   */
  source?: string,
  /**
   * The session's project, short (`team/api`, `team/api/cli`, `~/notes`).
   */
  project?: string,
};

/**
 * The params of the requests about one thread.
 */
export type ThreadParams = {
  threadId: string,
};

/**
 * A thread as in its file (protocol.md, "Thread files"), unknown fields
 * included.
 */
export type ThreadFile = Record<string, unknown>;

/**
 * `threadsync/createThread` params (may be null).
 */
export type CreateThreadParams = {
  title?: string,
};

export type CreateThreadResult = {
  threadId: string,
};

export type AppendMessageParams = {
  threadId: string,
  role: string,
  /**
   * A string or any JSON (content blocks).
   */
  content: unknown,
};

/**
 * A message added (`appendMessage`) or brought back (`restoreMessage`),
 * and the thread's version after it.
 */
export type MessageResult = {
  messageId: string | null,
  version: number,
};

export type SetTitleParams = {
  threadId: string,
  title: string,
};

export type VersionResult = {
  version: number,
};

export type ListConflictsResult = {
  conflicts: Array<Conflict>,
};

/**
 * An item of `threadsync/listConflicts` (protocol.md, "Conflicts").
 */
export type Conflict = {
  id: string,
  threadId: string,
  kind: ConflictKind,
  /**
   * For message conflicts.
   */
  messageId?: string,
  /**
   * The value both sides started from.
   */
  base: unknown,
  /**
   * The value the refused change wanted (null: delete).
   */
  local: unknown,
  /**
   * The value the thread keeps (null: the message is gone).
   */
  remote: unknown,
  /**
   * For message conflicts: the message as it was at the base.
   */
  baseMessage?: unknown,
};

/**
 * What both sides changed (protocol.md, "Conflicts").
 */
export type ConflictKind = "title" | "env" | "content" | "edit-delete" | "delete-edit";

export type RestoreMessageParams = {
  threadId: string,
  messageId: string,
};

export type MetricsResult = {
  sync: SyncMetrics,
  pendingThreads: number,
};

/**
 * Counters and timings of the sync pipeline.
 */
export type SyncMetrics = {
  pushes: number,
  pulls: number,
  failures: number,
  itemsPushed: number,
  bytesPushed: number,
  bytesPulled: number,
  conflicts: number,
  conflictRate: number,
  syncP50Ms: number | null,
  syncP95Ms: number | null,
  slowSyncs: number,
  batchLimit: number,
  byteBudget: number,
  avgBatchSize: number,
};

/**
 * `threadsync.forceSync` arguments: `[]` syncs everything, `[threadId]`
 * that thread.
 */
export type ForceSyncArgs = [] | [threadId: string];

/**
 * What a command answers once it is done.
 */
export type CommandDone = {
  ok: boolean,
};

/**
 * The one argument of `threadsync.resolveConflict`.
 */
export type ResolveConflictArg = {
  conflictId: string,
  choose: Side,
};

/**
 * Which side of a conflict to keep.
 */
export type Side = "local" | "remote";

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
  restoreMessage: 'threadsync/restoreMessage',
  metrics: 'threadsync/metrics',
} as const;

/** `workspace/executeCommand` commands. */
export const SidecarCommands = {
  forceSync: 'threadsync.forceSync',
  resolveConflict: 'threadsync.resolveConflict',
} as const;

/** The error code of a request the sync engine cannot serve. */
export const ENGINE_ERROR = -32001;

/** The params of each notification. */
export type NotificationParams = {
  'threadsync/status': SyncStatus;
  'threadsync/threadStatus': ThreadStatusParams;
  'threadsync/threadUpdated': ThreadUpdatedParams;
  'threadsync/rollback': RollbackParams;
};

/** The params and result of each request. */
export type RequestTypes = {
  'threadsync/getStatus': { params: NoParams; result: SyncStatus };
  'threadsync/listThreads': { params: NoParams; result: ListThreadsResult };
  'threadsync/getThread': { params: ThreadParams; result: ThreadFile };
  'threadsync/createThread': { params: CreateThreadParams | null; result: CreateThreadResult };
  'threadsync/appendMessage': { params: AppendMessageParams; result: MessageResult };
  'threadsync/setTitle': { params: SetTitleParams; result: VersionResult };
  'threadsync/listConflicts': { params: NoParams; result: ListConflictsResult };
  'threadsync/restoreMessage': { params: RestoreMessageParams; result: MessageResult };
  'threadsync/metrics': { params: NoParams; result: MetricsResult };
};

/** The arguments and result of each command. */
export type CommandTypes = {
  'threadsync.forceSync': { arguments: ForceSyncArgs; result: CommandDone };
  'threadsync.resolveConflict': { arguments: [ResolveConflictArg]; result: CommandDone };
};
