// The JSON-RPC conversation the extension has with the real sidecar:
// real `threadsync serve` (temp SQLite) + real `threadsync lsp` processes,
// the extension's own initializationOptions / didChangeConfiguration builders.
// Steps run in order and share state (one sync story); every wait is bounded.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { BIN, Server, Sidecar, tempDir, waitFor, killAll, freePort } from './harness.mjs';
import { createRequire } from 'node:module';

const { threadItem } = createRequire(import.meta.url)('../../out/views.js');

const FORCE_SYNC = 'threadsync.forceSync';

// A thread made through the sidecar is an append-only log (protocol.md,
// "Thread logs"): a header line, then records. Replays it the documented way.
function readLog(file) {
  const t = { messages: [] };
  const order = [];
  const byId = new Map();
  const deleted = new Set();
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    const r = JSON.parse(line);
    if (r.type === 'thread') Object.assign(t, { id: r.id, title: r.title, created: r.created, env: r.env });
    else if (r.type === 'title') t.title = r.title;
    else if (r.type === 'env') t.env = r.env;
    else if (r.type === 'edit' && byId.has(r.id)) byId.get(r.id).content = r.content;
    else if (r.type === 'delete' && byId.has(r.id)) deleted.add(r.id);
    else if (r.type === 'message') {
      const { type, after, ...m } = r;
      if (byId.has(m.id) && !deleted.has(m.id)) {
        byId.get(m.id).content = m.content;
        continue;
      }
      deleted.delete(m.id);
      const at = after === undefined ? order.length : after === null ? 0 : order.lastIndexOf(after) + 1 || order.length;
      if (order.includes(m.id)) order.splice(order.indexOf(m.id), 1);
      order.splice(at, 0, m.id);
      byId.set(m.id, m);
    }
  }
  t.messages = order.filter((id) => !deleted.has(id)).map((id) => byId.get(id));
  return t;
}
const RESOLVE = 'threadsync.resolveConflict';

describe('sidecar conversation (real threadsync serve + lsp)', { timeout: 180_000 }, () => {
  let dir, server, token, a, b;
  let threadId;
  const extra = [];

  before(async () => {
    assert.ok(fs.existsSync(BIN), `threadsync binary not found at ${BIN} (set THREADSYNC_BIN or run cargo build)`);
    dir = tempDir();
    server = await Server.start(dir);
    token = await server.token('t1');
    assert.match(token, /^\S{16,}$/, 'token create prints one token');
  });

  after(async () => {
    for (const sc of [a, b, ...extra]) {
      if (!sc) continue;
      if (process.env.THREADSYNC_TEST_VERBOSE) process.stderr.write(`--- ${sc.name} stderr ---\n${sc.stderr}\n`);
      sc.cleanup();
    }
    if (server) await server.stop();
    killAll();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('initialize: advertises the two commands; a status follows initialized; getStatus answers it', async () => {
    // The token comes from the secret store (preferred over the plain setting).
    a = await Sidecar.start('A', { serverUrl: server.url, token: 'plain-setting-not-used', poll: 'longpoll' }, {
      secretToken: token,
    });
    assert.equal(a.initOptions.token, token);
    assert.equal(a.initOptions.server, server.url);
    const cmds = a.initResult.capabilities.executeCommandProvider?.commands ?? [];
    assert.ok(cmds.includes(FORCE_SYNC) && cmds.includes(RESOLVE), `executeCommandProvider: ${JSON.stringify(cmds)}`);
    assert.equal(a.initResult.serverInfo?.name, 'threadsync');

    await waitFor('A: first threadsync/status', () => a.statuses.length > 0, 10_000);
    const first = a.statuses[0];
    for (const k of ['state', 'pending', 'conflicts', 'online', 'lastSync']) assert.ok(k in first, `status has ${k}`);
    assert.ok(
      ['synced', 'syncing', 'pending', 'offline', 'error', 'conflict', 'unauthorized'].includes(first.state),
      first.state,
    );
    const synced = await a.waitStatus('synced + online', (s) => s.state === 'synced' && s.online);
    assert.equal(synced.pending, 0);
    assert.equal(synced.conflicts, 0);
    const st = await a.request('threadsync/getStatus', {});
    assert.equal(st.state, 'synced');
    assert.equal(st.online, true);
  });

  it('createThread + appendMessage write the thread file; forceSync answers ok and status is synced', async () => {
    ({ threadId } = await a.request('threadsync/createThread', { title: 'Hello' }));
    assert.match(threadId, /^[A-Za-z0-9_-]{1,128}$/);
    const r = await a.request('threadsync/appendMessage', { threadId, role: 'user', content: 'first message' });
    assert.ok(r.messageId, 'messageId');
    assert.equal(typeof r.version, 'number');
    // Visible locally at once: the file (a log) is written before the answer.
    const file = path.join(a.settings.threadsDir, `${threadId}.jsonl`);
    const onDisk = readLog(file);
    assert.equal(onDisk.id, threadId);
    assert.equal(onDisk.title, 'Hello');
    assert.deepEqual(
      onDisk.messages.map((m) => [m.role, m.content]),
      [['user', 'first message']],
    );

    a.markStatuses();
    const before = Date.now();
    assert.deepEqual(await a.command(FORCE_SYNC, []), { ok: true });
    // The status notification is coalesced (≤ 1 per 100 ms): it follows shortly.
    const synced = await a.waitStatus('synced, 0 pending, after forceSync', (s) => s.state === 'synced' && s.pending === 0, 5000);
    assert.ok(synced.lastSync && !Number.isNaN(Date.parse(synced.lastSync)), `lastSync: ${synced.lastSync}`);
    assert.ok(Date.parse(synced.lastSync) >= before - 5000, `lastSync ${synced.lastSync} is recent`);
    // getStatus answers the same object as the last notification.
    assert.deepEqual(await a.request('threadsync/getStatus', {}), a.status);

    const { threads } = await a.request('threadsync/listThreads', {});
    const t = threads.find((x) => x.id === threadId);
    assert.ok(t, 'listThreads has the thread');
    assert.equal(t.title, 'Hello');
    assert.equal(t.messageCount, 1);
    // forceSync with a thread id argument works too (the extension passes it through).
    assert.deepEqual(await a.command(FORCE_SYNC, [threadId]), { ok: true });
  });

  it('a second sidecar (another machine) gets the thread, and later changes as threadUpdated origin remote', async () => {
    b = await Sidecar.start('B', { serverUrl: server.url, token, poll: 'longpoll' });
    await b.waitStatus('synced', (s) => s.state === 'synced' && s.online);
    await waitFor('B has the thread', async () => {
      const { threads } = await b.request('threadsync/listThreads', {});
      return threads.find((x) => x.id === threadId && x.messageCount === 1);
    });

    await a.request('threadsync/appendMessage', { threadId, role: 'assistant', content: { type: 'text', text: 'second' } });
    assert.deepEqual(await a.command(FORCE_SYNC, []), { ok: true });
    const upd = await waitFor(
      'B: threadUpdated origin remote with 2 messages',
      () => b.updates.find((u) => u.threadId === threadId && u.origin === 'remote' && u.messageCount === 2),
      20_000,
    );
    assert.equal(upd.title, 'Hello');
    const thread = await b.request('threadsync/getThread', { threadId });
    assert.deepEqual(thread.messages[1].content, { type: 'text', text: 'second' });
    // B's own file has it too.
    const onDisk = readLog(path.join(b.settings.threadsDir, `${threadId}.jsonl`));
    assert.equal(onDisk.messages.length, 2);
  });

  it('Show Threads: a session thread shows its assistant and project on both machines; our own thread neither', async () => {
    // An assistant's session as a thread file (the `.json` layout) with the
    // env the assistant sources write: `source` and `project`.
    const sessionId = 'T-session-claude-1';
    fs.writeFileSync(
      path.join(a.settings.threadsDir, `${sessionId}.json`),
      JSON.stringify({
        id: sessionId,
        v: 0,
        created: 1732460000000,
        title: 'Parser session',
        messages: [{ id: 'm-s1', role: 'user', content: 'fix the parser', timestamp: 1732460001000 }],
        env: { source: 'claude-code', project: { repo: 'github.com/team/api', path: 'cli' }, cwd: '/home/u/src/api/cli' },
      }),
    );
    const listed = (sc) =>
      waitFor(`${sc.name}: listThreads has the session thread`, async () => {
        const { threads } = await sc.request('threadsync/listThreads', {});
        const s = threads.find((x) => x.id === sessionId && x.messageCount === 1);
        return s && { session: s, own: threads.find((x) => x.id === threadId) };
      }, 20_000);
    const onA = await listed(a);
    assert.equal(onA.session.source, 'claude-code');
    assert.equal(onA.session.project, 'team/api/cli');
    assert.deepEqual(threadItem(onA.session), {
      label: 'Parser session',
      description: `Claude Code · team/api/cli · 1 message · ${onA.session.state}`,
      detail: `${sessionId} · v${onA.session.version}`,
    });
    // threadsync's own thread has neither field, and its item no empty separators.
    assert.ok(!('source' in onA.own) && !('project' in onA.own), JSON.stringify(onA.own));
    assert.equal(threadItem(onA.own).description, `2 messages · ${onA.own.state}`);

    assert.deepEqual(await a.command(FORCE_SYNC, []), { ok: true });
    assert.deepEqual(await b.command(FORCE_SYNC, []), { ok: true });
    const onB = await listed(b);
    assert.equal(onB.session.source, 'claude-code');
    assert.equal(onB.session.project, 'team/api/cli');
    assert.equal(threadItem(onB.session).description, `Claude Code · team/api/cli · 1 message · ${onB.session.state}`);
    // The next step counts A's pending changes from zero.
    await waitFor('A synced, 0 pending', async () => {
      const st = await a.request('threadsync/getStatus', {});
      return st.state === 'synced' && st.pending === 0;
    }, 20_000);
  });

  it('didChangeConfiguration to a dead server URL takes effect: offline with pending, forceSync fails with a reason', async () => {
    const dead = `http://127.0.0.1:${await freePort()}`;
    a.markStatuses();
    await a.changeSettings({ serverUrl: dead });
    await a.request('threadsync/setTitle', { threadId, title: 'Mine' });
    const off = await a.waitStatus('offline with 1 pending', (s) => s.state === 'offline' && s.pending === 1, 20_000);
    assert.equal(off.online, false);
    // What "ThreadSync: Force Sync" shows when it fails: the error's message.
    await assert.rejects(a.command(FORCE_SYNC, [], 20_000), (e) => {
      assert.equal(e.code, -32001, `code ${e.code}: ${e.message}`);
      assert.ok(e.message.length > 0, 'a reason');
      return true;
    });
  });

  it('a title changed on both sides becomes a conflict; resolving with local wins everywhere', async () => {
    await b.request('threadsync/setTitle', { threadId, title: 'Theirs' });
    assert.deepEqual(await b.command(FORCE_SYNC, []), { ok: true });
    assert.equal((await b.request('threadsync/getStatus', {})).state, 'synced');

    a.markStatuses();
    await a.changeSettings({ serverUrl: server.url });
    const c = await a.waitStatus('conflict 1', (s) => s.state === 'conflict' && s.conflicts === 1, 20_000);
    assert.equal(c.online, true);

    const { conflicts } = await a.request('threadsync/listConflicts', {});
    assert.equal(conflicts.length, 1, JSON.stringify(conflicts));
    const [k] = conflicts;
    assert.equal(k.threadId, threadId);
    assert.equal(k.kind, 'title');
    assert.equal(k.base, 'Hello');
    assert.equal(k.local, 'Mine');
    assert.equal(k.remote, 'Theirs');
    // The thread keeps remote until resolved.
    assert.equal((await a.request('threadsync/getThread', { threadId })).title, 'Theirs');

    await assert.rejects(a.command(RESOLVE, [{ conflictId: k.id, choose: 'sideways' }]), (e) => e.code === -32602);

    a.markStatuses();
    assert.deepEqual(await a.command(RESOLVE, [{ conflictId: k.id, choose: 'local' }]), { ok: true });
    assert.deepEqual(await a.command(FORCE_SYNC, []), { ok: true });
    await a.waitStatus('synced, 0 conflicts', (s) => s.state === 'synced' && s.conflicts === 0, 20_000);
    assert.deepEqual((await a.request('threadsync/listConflicts', {})).conflicts, []);
    assert.equal((await a.request('threadsync/getThread', { threadId })).title, 'Mine');

    assert.deepEqual(await b.command(FORCE_SYNC, []), { ok: true });
    await waitFor('B sees title Mine', async () => (await b.request('threadsync/getThread', { threadId })).title === 'Mine');
    await waitFor(
      'B: threadUpdated origin remote with title Mine',
      () => b.updates.find((u) => u.threadId === threadId && u.origin === 'remote' && u.title === 'Mine'),
    );
  });

  it('a bad token: unauthorized state and a window/showMessage; a good token via didChangeConfiguration fixes it', async () => {
    const c = await Sidecar.start('C', { serverUrl: server.url, token: 'tsk_not_a_real_token' });
    extra.push(c);
    const u = await c.waitStatus('unauthorized', (s) => s.state === 'unauthorized', 20_000);
    assert.ok(u.message, 'unauthorized status says why');
    await waitFor('C: window/showMessage about the token', () => c.messages.length > 0, 10_000);
    c.markStatuses();
    c.secretToken = token; // "ThreadSync: Set Token" → secret store → didChangeConfiguration
    await c.changeSettings({});
    await c.waitStatus('synced after the new token', (s) => s.state === 'synced' && s.online, 20_000);
    await waitFor('C has the thread', async () => {
      const { threads } = await c.request('threadsync/listThreads', {});
      return threads.find((x) => x.id === threadId && x.title === 'Mine');
    });
  });

  it('errors the extension shows: bad params and unknown methods', async () => {
    await assert.rejects(a.request('threadsync/getThread', { threadId: '../etc/passwd' }), (e) => e.code === -32602);
    await assert.rejects(a.request('threadsync/noSuchMethod', {}), (e) => e.code === -32601);
    await assert.rejects(a.command('threadsync.noSuchCommand', []), (e) => e.code === -32602);
  });

  it('a second editor window on the same stateDir is a follower: synced with a message, requests fail -32001', async () => {
    const d = await Sidecar.start('D (second window)', {
      serverUrl: server.url,
      threadsDir: a.settings.threadsDir,
      stateDir: a.settings.stateDir,
    }, { secretToken: token });
    extra.push(d);
    const st = await d.waitStatus('follower status', (s) => s.state === 'synced' && /another editor window/.test(s.message ?? ''));
    assert.equal(st.pending, 0);
    await assert.rejects(d.request('threadsync/listThreads', {}), (e) => e.code === -32001 && /another editor window/.test(e.message));
    await assert.rejects(d.command(FORCE_SYNC, []), (e) => e.code === -32001);
  });

  it('the token never appears in the sidecar log (info level)', () => {
    for (const sc of [a, b]) assert.ok(!sc.stderr.includes(token), `${sc.name} logged the token`);
  });

  it('shutdown + exit: the sidecar exits promptly with code 0', async () => {
    for (const sc of [a, b, ...extra]) {
      const { code } = await sc.shutdown();
      assert.equal(code, 0, `${sc.name} exit code`);
    }
  });
});
