// Settings → initializationOptions / didChangeConfiguration / env, binary lookup, redaction, labels.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const {
  buildInitOptions,
  buildConfigChange,
  buildServerEnv,
  chooseToken,
  findBinary,
  threadsDirCandidates,
  isThreadId,
  DEFAULT_SERVER,
} = require('../../out/config.js');
const { redact } = require('../../out/redact.js');
const { preview, choiceItems, conflictItem, threadItem, wantsCompare } = require('../../out/views.js');

const fsWith = (...exec) => ({ isExecutable: (p) => exec.includes(p) });

test('initializationOptions: only what is set, secret token over plain setting', () => {
  assert.deepEqual(buildInitOptions({}), {});
  assert.deepEqual(buildInitOptions({ serverUrl: '  ', token: '', threadsDir: '', stateDir: '', poll: '' }), {});
  assert.deepEqual(
    buildInitOptions(
      { serverUrl: 'http://127.0.0.1:1234', token: 'plain', threadsDir: '/t', stateDir: '/s', poll: 'fixed:1' },
      'secret',
    ),
    { server: 'http://127.0.0.1:1234', token: 'secret', threadsDir: '/t', stateDir: '/s', poll: 'fixed:1' },
  );
  assert.equal(buildInitOptions({ token: 'plain' }).token, 'plain');
  assert.equal(buildInitOptions({ token: 'plain' }, '').token, 'plain');
  assert.equal(chooseToken(undefined, undefined), undefined);
});

test('initializationOptions: ~ and relative directories', () => {
  const o = buildInitOptions({ threadsDir: '~/threads', stateDir: 'state' }, undefined, { HOME: '/home/u' }, '/ws');
  assert.equal(o.threadsDir, '/home/u/threads');
  assert.equal(o.stateDir, '/ws/state');
});

test('didChangeConfiguration: cleared settings fall back to env, then default / no token', () => {
  assert.deepEqual(buildConfigChange({ serverUrl: 'http://h:1', token: 't' }, 's'), {
    settings: { server: 'http://h:1', token: 's' },
  });
  assert.deepEqual(buildConfigChange({}, undefined, {}), { settings: { server: DEFAULT_SERVER, token: '' } });
  assert.deepEqual(buildConfigChange({}, undefined, { THREADSYNC_SERVER: 'http://e:2', THREADSYNC_TOKEN: 'et' }), {
    settings: { server: 'http://e:2', token: 'et' },
  });
});

test('sidecar env: THREADSYNC_LOG from the log level, nothing else changed', () => {
  const env = buildServerEnv({ logLevel: 'debug' }, { PATH: '/bin', THREADSYNC_LOG: 'x' });
  assert.deepEqual(env, { PATH: '/bin', THREADSYNC_LOG: 'debug' });
  assert.equal(buildServerEnv({ logLevel: 'off' }, {}).THREADSYNC_LOG, 'off');
  assert.equal(buildServerEnv({ logLevel: 'bogus' }, {}).THREADSYNC_LOG, undefined);
  assert.equal(buildServerEnv({}, {}).THREADSYNC_LOG, undefined);
});

test('findBinary: the setting wins and is never second-guessed', () => {
  const env = { PATH: '/usr/bin:/opt/ts/bin', HOME: '/home/u' };
  assert.deepEqual(findBinary('/x/threadsync', env, fsWith('/x/threadsync', '/opt/ts/bin/threadsync'), 'linux'), {
    path: '/x/threadsync',
    tried: ['/x/threadsync'],
    source: 'setting',
  });
  const bad = findBinary('/nope/threadsync', env, fsWith('/opt/ts/bin/threadsync'), 'linux');
  assert.equal(bad.path, undefined);
  assert.deepEqual(bad.tried, ['/nope/threadsync']);
  assert.match(bad.error, /threadsync\.server\.path setting points to "\/nope\/threadsync", which is not an executable/);
  assert.equal(findBinary('~/bin/ts', env, fsWith('/home/u/bin/ts'), 'linux').path, '/home/u/bin/ts');
  assert.equal(findBinary('./bin/ts', env, fsWith('/ws/bin/ts'), 'linux', '/ws').path, '/ws/bin/ts');
  // A bare name is looked up on PATH.
  assert.equal(findBinary('ts2', env, fsWith('/opt/ts/bin/ts2'), 'linux').path, '/opt/ts/bin/ts2');
});

test('findBinary: PATH search in order, with the list of paths tried', () => {
  const env = { PATH: '/a::/b:/c' };
  const r = findBinary('', env, fsWith('/b/threadsync', '/c/threadsync'), 'linux');
  assert.equal(r.path, '/b/threadsync');
  assert.equal(r.source, 'PATH');
  assert.deepEqual(r.tried, ['/a/threadsync', '/b/threadsync']);
  const none = findBinary(undefined, env, fsWith(), 'linux');
  assert.equal(none.path, undefined);
  assert.deepEqual(none.tried, ['/a/threadsync', '/b/threadsync', '/c/threadsync']);
  assert.match(none.error, /not found/);
  assert.deepEqual(findBinary(undefined, {}, fsWith(), 'linux').tried, []);
});

test('findBinary: Windows uses ; and PATHEXT', () => {
  const env = { Path: 'C:\\a;C:\\b', PATHEXT: '.EXE;.CMD' };
  const r = findBinary('', env, fsWith('C:\\b\\threadsync.EXE'), 'win32');
  assert.equal(r.path, 'C:\\b\\threadsync.EXE');
  assert.deepEqual(r.tried.slice(0, 3), ['C:\\a\\threadsync', 'C:\\a\\threadsync.EXE', 'C:\\a\\threadsync.CMD']);
});

test('threads dir candidates and thread id check', () => {
  assert.deepEqual(threadsDirCandidates({ threadsDir: '/t' }, { THREADSYNC_THREADS_DIR: '/e' }), ['/t']);
  assert.deepEqual(threadsDirCandidates({}, { THREADSYNC_THREADS_DIR: '/e' }), ['/e']);
  assert.deepEqual(threadsDirCandidates({}, { XDG_DATA_HOME: '/x', HOME: '/h' }), ['/x/threadsync/threads']);
  assert.deepEqual(threadsDirCandidates({}, { HOME: '/h' }), ['/h/.local/share/threadsync/threads']);
  assert.ok(isThreadId('T-01JD_x'));
  assert.ok(!isThreadId('../etc/passwd'));
  assert.ok(!isThreadId(''));
  assert.ok(!isThreadId('a'.repeat(129)));
});

test('redact: tokens never reach the log', () => {
  const line = '{"initializationOptions":{"server":"http://x","token":"s3cr3t-token"}}';
  assert.equal(redact(line), '{"initializationOptions":{"server":"http://x","token":"***"}}');
  assert.equal(redact('Authorization: Bearer abc.DEF-123'), 'Authorization: Bearer ***');
  assert.equal(redact('token is s3cr3t-token here', ['s3cr3t-token']), 'token is *** here');
  assert.equal(redact('"token": ""'), '"token": ""');
  // vscode-languageclient's verbose trace pretty-prints params.
  const traced = JSON.stringify({ initializationOptions: { token: 'tsk_abc_"q"' } }, null, 4);
  assert.ok(!redact(traced).includes('tsk_abc'), redact(traced));
  assert.match(redact(traced), /"token": "\*\*\*"/);
  assert.equal(redact('nothing secret', [undefined, '']), 'nothing secret');
});

test('conflict and thread labels with previews', () => {
  const c = { id: 'c-1', threadId: 'T-1', kind: 'title', base: 'Old', local: 'Mine', remote: 'Theirs' };
  const item = conflictItem(c, new Map([['T-1', 'Fix the parser']]));
  assert.equal(item.label, 'Fix the parser');
  assert.match(item.description, /^title: title changed on both sides/);
  assert.equal(item.detail, 'here: Mine  ·  server: Theirs');
  assert.equal(conflictItem(c, new Map()).label, '(untitled) T-1');
  const choices = choiceItems(c);
  assert.deepEqual(choices.map((i) => i.choice), ['local', 'remote']);
  assert.equal(choices[0].detail, 'Mine');
  assert.equal(choices[1].detail, 'Theirs');
  assert.match(choices[0].label, /Keep local/);
  assert.match(choices[1].label, /Keep remote/);

  const long = { id: 'c-2', threadId: 'T-1', kind: 'content', base: 'b', local: 'x'.repeat(500), remote: null, messageId: 'm-1' };
  assert.ok(wantsCompare(long));
  const lc = choiceItems(long);
  assert.deepEqual(lc.map((i) => i.choice), ['local', 'remote', 'compare']);
  assert.equal(lc[0].detail.length, 200);
  assert.ok(lc[0].detail.endsWith('…'));
  assert.equal(lc[1].detail, '(deleted)');
  assert.equal(preview({ a: [1, 2] }), '{"a":[1,2]}');
  assert.equal(preview('  two\n lines '), 'two lines');
  assert.equal(preview(''), '(empty)');

  const t = threadItem({ id: 'T-9', title: 'Hello', version: 3, messageCount: 1, state: 'pending' });
  assert.deepEqual(t, { label: 'Hello', description: '1 message · pending', detail: 'T-9 · v3' });
  assert.equal(threadItem({ id: 'T-9', title: '', version: 1, messageCount: 2, state: null }).description, '2 messages · synced');
});
