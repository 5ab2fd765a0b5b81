// Status bar presentation (src/status.ts): every state, counts, times, tooltips, click actions.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { present, relativeTime, lastSyncText, escapeMarkdown, clickCommand, Commands } = require('../../out/status.js');

const NOW = new Date('2024-11-24T15:40:00Z');
const base = { state: 'synced', pending: 0, conflicts: 0, online: true, lastSync: '2024-11-24T15:35:00Z' };
const st = (o) => ({ ...base, ...o });

test('synced: check icon, force sync on click, no background', () => {
  const p = present(st({}), NOW);
  assert.equal(p.text, '$(check) Synced');
  assert.equal(p.command, Commands.forceSync);
  assert.equal(p.command, 'threadsync.client.forceSync');
  assert.equal(p.background, undefined);
  assert.match(p.tooltip, /\*\*ThreadSync\*\*: Synced/);
  assert.match(p.tooltip, /Last sync: 5 minutes ago \(2024-11-24 15:35:00 UTC\)/);
  assert.match(p.tooltip, /Pending: 0 threads/);
  assert.match(p.tooltip, /Conflicts: 0/);
  assert.match(p.tooltip, /Click to sync now/);
});

test('syncing: spinning sync icon', () => {
  const p = present(st({ state: 'syncing', pending: 2 }), NOW);
  assert.equal(p.text, '$(sync~spin) Syncing');
  assert.equal(p.command, Commands.forceSync);
  assert.match(p.tooltip, /Syncing/);
});

test('pending: count in the text, singular and plural in the tooltip', () => {
  const one = present(st({ state: 'pending', pending: 1 }), NOW);
  assert.equal(one.text, '$(cloud-upload) 1 pending');
  assert.match(one.tooltip, /Pending: 1 thread with/);
  assert.equal(one.accessibility, 'ThreadSync: Changes pending, 1 thread pending');
  const three = present(st({ state: 'pending', pending: 3 }), NOW);
  assert.equal(three.text, '$(cloud-upload) 3 pending');
  assert.match(three.tooltip, /Pending: 3 threads with/);
  assert.equal(three.command, Commands.forceSync);
});

test('syncing before the server first answered says it is connecting, not unreachable', () => {
  const p = present(st({ state: 'syncing', online: false, message: 'connecting' }), NOW);
  assert.equal(p.text, '$(sync~spin) Syncing');
  assert.match(p.tooltip, /Syncing \(connecting to the server\)/);
  assert.doesNotMatch(p.tooltip, /not reachable/);
});

test('offline: with and without pending changes', () => {
  const p = present(st({ state: 'offline', online: false, pending: 2, message: 'server unreachable: connection refused' }), NOW);
  assert.equal(p.text, '$(debug-disconnect) Offline, 2 pending');
  assert.match(p.tooltip, /Offline \(server not reachable\)/);
  assert.match(p.tooltip, /server unreachable: connection refused/);
  assert.equal(p.command, Commands.forceSync);
  const q = present(st({ state: 'offline', online: false, pending: 0 }), NOW);
  assert.equal(q.text, '$(debug-disconnect) Offline');
});

test('conflict: warning icon and background, singular/plural, click resolves', () => {
  const one = present(st({ state: 'conflict', conflicts: 1 }), NOW);
  assert.equal(one.text, '$(warning) 1 conflict');
  assert.equal(one.background, 'statusBarItem.warningBackground');
  assert.equal(one.command, Commands.resolveConflict);
  assert.match(one.tooltip, /Conflicts: 1/);
  assert.match(one.tooltip, /Click to resolve conflicts/);
  const two = present(st({ state: 'conflict', conflicts: 2 }), NOW);
  assert.equal(two.text, '$(warning) 2 conflicts');
});

test('conflicts count wins the click even in other states (offline with conflicts)', () => {
  const p = present(st({ state: 'offline', online: false, conflicts: 1, pending: 1 }), NOW);
  assert.equal(p.command, Commands.resolveConflict);
  assert.equal(p.text, '$(debug-disconnect) Offline, 1 pending');
});

test('unauthorized: key icon, error background, click sets the token', () => {
  const p = present(st({ state: 'unauthorized', online: true, conflicts: 2, message: 'the server refused the token (401)' }), NOW);
  assert.equal(p.text, '$(key) Unauthorized');
  assert.equal(p.background, 'statusBarItem.errorBackground');
  assert.equal(p.command, Commands.setToken);
  assert.match(p.tooltip, /the server refused the token \(401\)/);
  assert.match(p.tooltip, /Click to set the token/);
});

test('error: error icon and the message in the tooltip', () => {
  const p = present(st({ state: 'error', message: 'thread T-1: invalid JSON at line 3' }), NOW);
  assert.equal(p.text, '$(error) Sync error');
  assert.equal(p.background, 'statusBarItem.errorBackground');
  assert.equal(p.command, Commands.forceSync);
  assert.match(p.tooltip, /thread T-1: invalid JSON at line 3/);
});

test('stopped / undefined status: circle-slash, click restarts', () => {
  for (const p of [present(undefined, NOW), present(undefined, NOW, 'stopped')]) {
    assert.equal(p.text, '$(circle-slash) ThreadSync stopped');
    assert.equal(p.command, Commands.restart);
    assert.equal(p.command, 'threadsync.client.restart');
    assert.match(p.tooltip, /not running/);
  }
  assert.equal(clickCommand(undefined), Commands.restart);
});

test('starting: spinner, click shows the log', () => {
  const p = present(undefined, NOW, 'starting');
  assert.equal(p.text, '$(loading~spin) ThreadSync');
  assert.equal(p.command, Commands.showLog);
});

test('unknown state is shown, not hidden, and cannot inject codicons', () => {
  const p = present(st({ state: 'weird$(x)' }), NOW);
  assert.equal(p.text, '$(question) ThreadSync: weird(x)');
});

test('lastSync null → never; set → relative and absolute', () => {
  assert.match(present(st({ lastSync: null }), NOW).tooltip, /Last sync: never/);
  assert.equal(lastSyncText(null, NOW), 'never');
  assert.equal(lastSyncText(undefined, NOW), 'never');
  assert.equal(lastSyncText('2024-11-24T15:39:58Z', NOW), 'just now (2024-11-24 15:39:58 UTC)');
  assert.equal(lastSyncText('2024-11-24T15:39:30.250Z', NOW), '29 seconds ago (2024-11-24 15:39:30 UTC)');
  assert.equal(lastSyncText('2024-11-24T15:39:00+00:00', NOW), '1 minute ago (2024-11-24 15:39:00 UTC)');
  assert.equal(lastSyncText('2024-11-24T13:40:00Z', NOW), '2 hours ago (2024-11-24 13:40:00 UTC)');
  assert.equal(lastSyncText('2024-11-23T15:40:00Z', NOW), '1 day ago (2024-11-23 15:40:00 UTC)');
  assert.equal(lastSyncText('2024-11-24T16:40:00+01:00', NOW), 'just now (2024-11-24 15:40:00 UTC)');
  assert.equal(lastSyncText('not a date', NOW), 'not a date');
});

test('relativeTime: future times (clock skew) are "just now"', () => {
  assert.equal(relativeTime(new Date('2024-11-24T15:45:00Z'), NOW), 'just now');
  assert.equal(relativeTime(new Date('2024-11-24T15:38:00Z'), NOW), '2 minutes ago');
});

test('message is shown in the tooltip, markdown-escaped', () => {
  const p = present(st({ message: 'another editor window is syncing these threads' }), NOW);
  assert.match(p.tooltip, /another editor window is syncing these threads/);
  const q = present(st({ message: '[click](command:evil) *bold* <b>' }), NOW);
  assert.ok(!q.tooltip.includes('[click](command:evil)'));
  assert.match(q.tooltip, /\\\[click\\\]\(command:evil\) \\\*bold\\\* \\<b\\>/);
  assert.equal(escapeMarkdown('a_b'), 'a\\_b');
  assert.equal(escapeMarkdown('# not a heading\n- not a list\n1. nor this'), '\\# not a heading  \n\\- not a list  \n1\\. nor this');
  const none = present(st({}), NOW);
  assert.ok(!/undefined/.test(none.tooltip));
});

test('odd numbers from the wire are treated as 0', () => {
  const p = present(st({ state: 'pending', pending: null }), NOW);
  assert.equal(p.text, '$(cloud-upload) 0 pending');
  assert.equal(present(st({ conflicts: -1 }), NOW).command, Commands.forceSync);
});
