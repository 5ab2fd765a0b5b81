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

/** Show Threads Quick Pick item. */
export function threadItem(t: ThreadSummary): PickItem {
  const n = typeof t.messageCount === 'number' ? t.messageCount : 0;
  return {
    label: threadLabel(t.title, t.id),
    description: `${n} ${n === 1 ? 'message' : 'messages'} · ${t.state ?? 'synced'}`,
    detail: `${t.id} · v${t.version}`,
  };
}
