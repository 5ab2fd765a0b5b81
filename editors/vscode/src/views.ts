// Labels for the Quick Picks (threads, conflicts). Pure: no `vscode` import.

import type { Conflict, ConflictKind, ThreadSummary } from './protocol';

export type { Conflict, ThreadSummary };

export interface PickItem {
  label: string;
  description?: string;
  detail?: string;
}

/** One line, at most `max` characters: strings as they are, null as "(deleted)", the rest as JSON. */
export function preview(v: unknown, max = 120): string {
  let s: string;
  if (v === null || v === undefined) return '(deleted)';
  if (typeof v === 'string') s = v;
  else {
    try {
      s = JSON.stringify(v) ?? String(v);
    } catch {
      s = String(v);
    }
  }
  s = s.replace(/\s+/g, ' ').trim();
  if (s === '') return '(empty)';
  return s.length > max ? s.slice(0, max - 1) + '…' : s;
}

/** Full text of a conflict side, for a diff editor. */
export function fullText(v: unknown): string {
  if (v === null || v === undefined) return '';
  if (typeof v === 'string') return v;
  return JSON.stringify(v, null, 2) ?? String(v);
}

const KIND_LABELS: Record<ConflictKind, string> = {
  title: 'title changed on both sides',
  env: 'environment changed on both sides',
  content: 'message edited on both sides',
  'edit-delete': 'message edited here, deleted elsewhere',
  'delete-edit': 'message deleted here, edited elsewhere',
};

export function kindLabel(kind: ConflictKind): string {
  return KIND_LABELS[kind] ?? kind;
}

export function threadLabel(title: string | undefined, threadId: string): string {
  return title && title.trim() !== '' ? title : `(untitled) ${threadId}`;
}

/** Whether the two sides are worth a diff editor (long or multi-line or structured). */
export function wantsCompare(c: Conflict): boolean {
  const long = (v: unknown) => fullText(v).length > 80 || /\n/.test(fullText(v)) || (v !== null && typeof v === 'object');
  return c.kind !== 'title' || long(c.local) || long(c.remote);
}

/** First Quick Pick: one item per conflict. */
export function conflictItem(c: Conflict, titles: Map<string, string>): PickItem {
  return {
    label: threadLabel(titles.get(c.threadId), c.threadId),
    description: `${c.kind}: ${kindLabel(c.kind)}`,
    detail: `here: ${preview(c.local, 60)}  ·  server: ${preview(c.remote, 60)}`,
  };
}

export type Choice = 'local' | 'remote' | 'compare';

/** Second Quick Pick: keep local / keep remote (with previews), and Compare… when useful. */
export function choiceItems(c: Conflict): (PickItem & { choice: Choice })[] {
  const items: (PickItem & { choice: Choice })[] = [
    {
      label: '$(arrow-up) Keep local',
      description: 'this machine’s change wins everywhere',
      detail: preview(c.local, 200),
      choice: 'local',
    },
    {
      label: '$(cloud) Keep remote',
      description: 'the change the server saw first stays',
      detail: preview(c.remote, 200),
      choice: 'remote',
    },
  ];
  if (wantsCompare(c)) {
    items.push({
      label: '$(diff) Compare…',
      description: 'open local and remote side by side',
      detail: c.base !== undefined && c.base !== null ? `base: ${preview(c.base, 200)}` : undefined,
      choice: 'compare',
    });
  }
  return items;
}

/** The assistants a session thread can come from (`ThreadSummary.source`), by name. */
const SOURCE_NAMES: Record<string, string> = {
  'claude-code': 'Claude Code',
  codex: 'Codex',
  gemini: 'Gemini',
};

/** A string field as one trimmed line; undefined when absent, not a string, or blank. */
function oneLine(v: unknown): string | undefined {
  if (typeof v !== 'string') return undefined;
  const s = v.replace(/\s+/g, ' ').trim();
  return s === '' ? undefined : s;
}

/** A thread's source as a reader names it ("Claude Code" for `claude-code`); one we do not know, as sent. */
export function sourceName(source: unknown): string | undefined {
  const s = oneLine(source);
  if (s === undefined) return undefined;
  return Object.prototype.hasOwnProperty.call(SOURCE_NAMES, s) ? SOURCE_NAMES[s] : s;
}

/**
 * Where a thread comes from: "Claude Code · team/api", "Codex", "~/notes";
 * undefined for threadsync's own threads (neither source nor project).
 */
export function threadOrigin(t: Pick<ThreadSummary, 'source' | 'project'>): string | undefined {
  const parts = [sourceName(t.source), oneLine(t.project)].filter((p): p is string => p !== undefined);
  return parts.length > 0 ? parts.join(' · ') : undefined;
}

/**
 * Show Threads Quick Pick item: the origin (source, project) leads the
 * description, so typing "claude" or "team/api" filters the list
 * (matchOnDescription).
 */
export function threadItem(t: ThreadSummary): PickItem {
  const n = typeof t.messageCount === 'number' ? t.messageCount : 0;
  const origin = threadOrigin(t);
  const counts = `${n} ${n === 1 ? 'message' : 'messages'} · ${t.state ?? 'synced'}`;
  return {
    label: threadLabel(t.title, t.id),
    description: origin === undefined ? counts : `${origin} · ${counts}`,
    detail: `${t.id} · v${t.version}`,
  };
}
