// Show Threads items (src/views.ts): each thread's source (the assistant of a
// session thread) and project, shown and filterable; none for threadsync's own.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { threadItem, threadOrigin, sourceName } = require('../../out/views.js');

const thread = (o) => ({ id: 'T-9', title: 'Fix the parser', version: 3, messageCount: 2, state: 'synced', ...o });

test('source names: the known assistants by name, an unknown one as sent, nothing for none', () => {
  assert.equal(sourceName('claude-code'), 'Claude Code');
  assert.equal(sourceName('codex'), 'Codex');
  assert.equal(sourceName('gemini'), 'Gemini');
  assert.equal(sourceName('aider'), 'aider');
  assert.equal(sourceName(undefined), undefined);
  assert.equal(sourceName(null), undefined);
  assert.equal(sourceName(''), undefined);
  assert.equal(sourceName('  '), undefined);
  assert.equal(sourceName(42), undefined);
  // not a lookup in Object.prototype
  assert.equal(sourceName('constructor'), 'constructor');
  assert.equal(sourceName('toString'), 'toString');
});

test('origin: source and project joined, either alone, nothing for threadsync’s own threads', () => {
  assert.equal(threadOrigin({ source: 'claude-code', project: 'team/api' }), 'Claude Code · team/api');
  assert.equal(threadOrigin({ source: 'codex', project: 'team/api/cli' }), 'Codex · team/api/cli');
  assert.equal(threadOrigin({ source: 'gemini', project: '~/notes' }), 'Gemini · ~/notes');
  assert.equal(threadOrigin({ source: 'gemini' }), 'Gemini');
  assert.equal(threadOrigin({ project: '~/notes' }), '~/notes');
  assert.equal(threadOrigin({}), undefined);
  assert.equal(threadOrigin({ source: null, project: null }), undefined);
  assert.equal(threadOrigin({ source: '', project: ' ' }), undefined);
  // one line in a Quick Pick row
  assert.equal(threadOrigin({ source: 'codex', project: 'team/\n api ' }), 'Codex · team/ api');
});

test('thread item: the origin leads the description; title, counts, state, id and version as before', () => {
  assert.deepEqual(threadItem(thread({ source: 'claude-code', project: 'team/api' })), {
    label: 'Fix the parser',
    description: 'Claude Code · team/api · 2 messages · synced',
    detail: 'T-9 · v3',
  });
  assert.equal(
    threadItem(thread({ source: 'codex', project: 'team/api/cli', messageCount: 1, state: 'pending' })).description,
    'Codex · team/api/cli · 1 message · pending',
  );
  assert.equal(threadItem(thread({ source: 'gemini' })).description, 'Gemini · 2 messages · synced');
  assert.equal(threadItem(thread({ project: '~/notes' })).description, '~/notes · 2 messages · synced');
  assert.equal(threadItem(thread({ title: '', source: 'codex', project: 'x' })).label, '(untitled) T-9');
});

test('thread item without source or project: no empty separators', () => {
  for (const t of [thread({}), thread({ source: undefined, project: undefined }), thread({ source: null, project: '' })]) {
    const item = threadItem(t);
    assert.deepEqual(item, { label: 'Fix the parser', description: '2 messages · synced', detail: 'T-9 · v3' });
    assert.doesNotMatch(item.description, /^ ·|· ·|· $/);
  }
});

test('typing the assistant or the project finds the thread (what matchOnDescription searches)', () => {
  const items = [
    thread({ id: 'T-1', title: 'Parser', source: 'claude-code', project: 'team/api' }),
    thread({ id: 'T-2', title: 'CLI flags', source: 'codex', project: 'team/api/cli' }),
    thread({ id: 'T-3', title: 'Reading list', source: 'gemini', project: '~/notes' }),
    thread({ id: 'T-4', title: 'Own thread' }),
  ].map(threadItem);
  // VS Code matches a filter as a case-insensitive substring of the label or the description.
  const find = (q) =>
    items
      .filter((i) => [i.label, i.description].some((s) => s.toLowerCase().includes(q.toLowerCase())))
      .map((i) => i.label);
  assert.deepEqual(find('claude code'), ['Parser']);
  assert.deepEqual(find('Codex'), ['CLI flags']);
  assert.deepEqual(find('gemini'), ['Reading list']);
  assert.deepEqual(find('team/api'), ['Parser', 'CLI flags']);
  assert.deepEqual(find('team/api/cli'), ['CLI flags']);
  assert.deepEqual(find('~/notes'), ['Reading list']);
});
