// What the status bar item shows for a sidecar status. Pure: no `vscode`
// import, so it runs under `node --test` (test/unit/status.test.mjs).

import type { SyncState, SyncStatus } from './protocol';

export type { SyncStatus };

/** The extension's command ids (contributed in package.json). */
export const Commands = {
  forceSync: 'threadsync.client.forceSync',
  resolveConflict: 'threadsync.client.resolveConflict',
  showThreads: 'threadsync.client.showThreads',
  showLog: 'threadsync.client.showLog',
  restart: 'threadsync.client.restart',
  setToken: 'threadsync.client.setToken',
} as const;

export type Background = 'statusBarItem.warningBackground' | 'statusBarItem.errorBackground';

export interface Presentation {
  /** Status bar text, with codicons (`$(name)`). */
  text: string;
  /** Markdown tooltip (user-supplied parts are escaped). */
  tooltip: string;
  /** Command id run when the item is clicked. */
  command: string;
  /** Theme color id for the item's background, if any. */
  background?: Background;
  /** Plain-text label for screen readers. */
  accessibility: string;
}

/** How the extension's client is doing, when there is no status to show. */
export type ClientPhase = 'starting' | 'running' | 'stopped';

export function plural(n: number, one: string, many = one + 's'): string {
  return `${n} ${n === 1 ? one : many}`;
}

/** "just now", "5 seconds ago", "1 minute ago", "3 hours ago", "2 days ago". */
export function relativeTime(then: Date, now: Date): string {
  const s = Math.floor((now.getTime() - then.getTime()) / 1000);
  if (!Number.isFinite(s)) return 'unknown';
  if (s < 5) return 'just now';
  if (s < 60) return `${plural(s, 'second')} ago`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${plural(m, 'minute')} ago`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${plural(h, 'hour')} ago`;
  return `${plural(Math.floor(h / 24), 'day')} ago`;
}

/** "2024-11-24 15:33:20 UTC" (deterministic whatever the machine's zone). */
export function absoluteTime(d: Date): string {
  return d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
}

/** "never", or "5 minutes ago (2024-11-24 15:33:20 UTC)". */
export function lastSyncText(lastSync: string | null | undefined, now: Date): string {
  if (lastSync === null || lastSync === undefined || lastSync === '') return 'never';
  const d = new Date(lastSync);
  if (Number.isNaN(d.getTime())) return lastSync;
  return `${relativeTime(d, now)} (${absoluteTime(d)})`;
}

/** Escapes text for a MarkdownString (no links, no HTML, no codicons). */
export function escapeMarkdown(s: string): string {
  return s
    .split(/\r?\n/)
    .map((line) =>
      line
        .replace(/[\\`*_[\]<>|~]/g, (c) => '\\' + c)
        // Block syntax only counts at the start of a line.
        .replace(/^(\s*)([#+=-]|\d+[.)])/, (_m, sp: string, mark: string) => sp + mark.replace(/([#+=.)-])$/, '\\$1')),
    )
    .join('  \n');
}

const STATE_LABELS: Record<SyncState, string> = {
  synced: 'Synced',
  syncing: 'Syncing',
  pending: 'Changes pending',
  offline: 'Offline',
  conflict: 'Conflict',
  error: 'Error',
  unauthorized: 'Unauthorized',
};

function count(n: unknown): number {
  return typeof n === 'number' && Number.isFinite(n) && n > 0 ? Math.floor(n) : 0;
}

/** The sidecar reports `online: false` until the server first answers, and when it stops answering. */
function reachability(status: SyncStatus): string {
  if (status.online) return '';
  return status.state === 'syncing' ? ' (connecting to the server)' : ' (server not reachable)';
}

/** The click action for a status (see README: "Status bar"). */
export function clickCommand(status: SyncStatus | undefined): string {
  if (!status) return Commands.restart;
  if (status.state === 'unauthorized') return Commands.setToken;
  if (count(status.conflicts) > 0) return Commands.resolveConflict;
  return Commands.forceSync;
}

const CLICK_HINTS: Record<string, string> = {
  [Commands.restart]: 'Click to restart the sidecar.',
  [Commands.setToken]: 'Click to set the token.',
  [Commands.resolveConflict]: 'Click to resolve conflicts.',
  [Commands.forceSync]: 'Click to sync now.',
  [Commands.showLog]: 'Click to show the log.',
};

/**
 * What the status bar item shows. `status` undefined means no sidecar is
 * running (`phase` says whether one is starting; default: stopped).
 */
export function present(status: SyncStatus | undefined, now: Date, phase: ClientPhase = 'stopped'): Presentation {
  if (!status) {
    if (phase === 'starting' || phase === 'running') {
      return {
        text: '$(loading~spin) ThreadSync',
        tooltip: '**ThreadSync**: starting the sidecar…',
        command: Commands.showLog,
        accessibility: 'ThreadSync: starting',
      };
    }
    return {
      text: '$(circle-slash) ThreadSync stopped',
      tooltip: '**ThreadSync**: the sidecar is not running.\n\n' + CLICK_HINTS[Commands.restart],
      command: Commands.restart,
      background: 'statusBarItem.errorBackground',
      accessibility: 'ThreadSync stopped',
    };
  }

  const pending = count(status.pending);
  const conflicts = count(status.conflicts);
  let text: string;
  let background: Background | undefined;
  switch (status.state) {
    case 'synced':
      text = '$(check) Synced';
      break;
    case 'syncing':
      text = '$(sync~spin) Syncing';
      break;
    case 'pending':
      text = `$(cloud-upload) ${pending} pending`;
      break;
    case 'offline':
      text = pending > 0 ? `$(debug-disconnect) Offline, ${pending} pending` : '$(debug-disconnect) Offline';
      break;
    case 'conflict':
      text = `$(warning) ${plural(Math.max(conflicts, 1), 'conflict')}`;
      background = 'statusBarItem.warningBackground';
      break;
    case 'unauthorized':
      text = '$(key) Unauthorized';
      background = 'statusBarItem.errorBackground';
      break;
    case 'error':
      text = '$(error) Sync error';
      background = 'statusBarItem.errorBackground';
      break;
    default:
      text = `$(question) ThreadSync: ${String(status.state).replace(/\$\(/g, '(')}`;
  }

  const command = clickCommand(status);
  const label = STATE_LABELS[status.state] ?? String(status.state);
  const lines = [
    `**ThreadSync**: ${escapeMarkdown(label)}${reachability(status)}`,
    '',
    `Pending: ${plural(pending, 'thread')} with changes not on the server  `,
    `Conflicts: ${conflicts}  `,
    `Last sync: ${escapeMarkdown(lastSyncText(status.lastSync, now))}`,
  ];
  if (status.message) lines.push('', escapeMarkdown(status.message));
  lines.push('', CLICK_HINTS[command] ?? '');
  const accessibility = `ThreadSync: ${label}${pending ? `, ${plural(pending, 'thread')} pending` : ''}${
    conflicts ? `, ${plural(conflicts, 'conflict')}` : ''
  }`;
  return { text, tooltip: lines.join('\n'), command, background, accessibility };
}
