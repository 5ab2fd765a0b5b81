// The extension's fixed identity (package.json): what users, scripts and the e2e test depend on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const pkg = JSON.parse(fs.readFileSync(new URL('../../package.json', import.meta.url), 'utf8'));
const { Commands } = require('../../out/status.js');
const { RESTART_SETTINGS, LIVE_SETTINGS, LOG_LEVELS } = require('../../out/config.js');

test('identity: name, publisher, version, main, engine, activation', () => {
  assert.equal(pkg.name, 'threadsync');
  assert.equal(pkg.publisher, 'threadsync');
  assert.equal(pkg.version, '0.1.0');
  assert.equal(pkg.displayName, 'ThreadSync');
  assert.equal(pkg.main, './out/extension.js');
  assert.equal(pkg.engines.vscode, '^1.90.0');
  assert.deepEqual(pkg.activationEvents, ['onStartupFinished']);
  assert.ok(fs.existsSync(new URL('../../out/extension.js', import.meta.url)), 'out/extension.js is built');
});

test('commands: own ids (not the sidecar\'s), exact palette titles', () => {
  const titles = Object.fromEntries(pkg.contributes.commands.map((c) => [c.command, `${c.category}: ${c.title}`]));
  assert.deepEqual(titles, {
    'threadsync.client.forceSync': 'ThreadSync: Force Sync',
    'threadsync.client.resolveConflict': 'ThreadSync: Resolve Conflict',
    'threadsync.client.showThreads': 'ThreadSync: Show Threads',
    'threadsync.client.showLog': 'ThreadSync: Show Log',
    'threadsync.client.restart': 'ThreadSync: Restart Sidecar',
    'threadsync.client.setToken': 'ThreadSync: Set Token',
  });
  // The sidecar advertises these in executeCommandProvider; vscode-languageclient registers them.
  assert.ok(!('threadsync.forceSync' in titles) && !('threadsync.resolveConflict' in titles));
  assert.deepEqual(new Set(Object.values(Commands)), new Set(Object.keys(titles)));
});

test('settings: every key the extension reads is contributed', () => {
  const props = pkg.contributes.configuration.properties;
  for (const k of [
    'threadsync.server.path',
    'threadsync.server.url',
    'threadsync.token',
    'threadsync.threadsDir',
    'threadsync.stateDir',
    'threadsync.poll',
    'threadsync.log.level',
    ...RESTART_SETTINGS,
    ...LIVE_SETTINGS,
  ]) {
    assert.ok(props[k], `${k} contributed`);
  }
  assert.deepEqual(props['threadsync.log.level'].enum, [...LOG_LEVELS]);
  assert.match(props['threadsync.token'].markdownDescription, /Discouraged/i);
  assert.match(props['threadsync.token'].markdownDescription, /Set Token/);
});

test('dependencies stay minimal and locked', () => {
  assert.deepEqual(Object.keys(pkg.dependencies), ['vscode-languageclient']);
  const lock = JSON.parse(fs.readFileSync(new URL('../../package-lock.json', import.meta.url), 'utf8'));
  assert.equal(lock.packages[''].dependencies['vscode-languageclient'], pkg.dependencies['vscode-languageclient']);
  assert.equal(lock.packages['node_modules/vscode-languageclient'].version, '9.0.1');
});

test('the sidecar names the extension uses are the ones in interface.md (and protocol.md\'s restoreMessage)', () => {
  const { Notifications, Requests, SidecarCommands, ENGINE_ERROR } = require('../../out/protocol.js');
  assert.deepEqual(Object.values(Notifications).sort(), [
    'threadsync/rollback',
    'threadsync/status',
    'threadsync/threadStatus',
    'threadsync/threadUpdated',
  ]);
  assert.deepEqual(Object.values(Requests).sort(), [
    'threadsync/appendMessage',
    'threadsync/createThread',
    'threadsync/getStatus',
    'threadsync/getThread',
    'threadsync/listConflicts',
    'threadsync/listThreads',
    'threadsync/metrics',
    'threadsync/restoreMessage',
    'threadsync/setTitle',
  ]);
  assert.deepEqual(SidecarCommands, { forceSync: 'threadsync.forceSync', resolveConflict: 'threadsync.resolveConflict' });
  assert.equal(ENGINE_ERROR, -32001);
});
