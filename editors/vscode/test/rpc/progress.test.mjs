// `$/progress` from the real sidecar, fed live into vscode-languageclient's own
// ProgressFeature (the code the extension runs) with a recording stand-in for
// `vscode.window.withProgress`: the first sync and a large upload become VS Code
// window progress with the sidecar's title, and end.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import Module, { createRequire } from 'node:module';
import { BIN, Server, Sidecar, tempDir, waitFor, killAll } from './harness.mjs';

const require = createRequire(import.meta.url);

/** What vscode.window.withProgress was asked to show, and whether each ended. */
const shown = [];
const fakeVscode = {
  ProgressLocation: { SourceControl: 1, Window: 10, Notification: 15 },
  window: {
    withProgress(options, task) {
      const entry = { options, reports: [], ended: false };
      shown.push(entry);
      const progress = { report: (v) => entry.reports.push(v) };
      const token = { isCancellationRequested: false, onCancellationRequested: () => ({ dispose() {} }) };
      return Promise.resolve(task(progress, token)).then(
        () => (entry.ended = true),
        () => (entry.ended = 'cancelled'),
      );
    },
  },
};

/** Loads vscode-languageclient's ProgressFeature with `vscode` resolved to the stand-in. */
function loadProgressFeature() {
  const load = Module._load;
  Module._load = function (request, parent, isMain) {
    if (request === 'vscode') return fakeVscode;
    return load.call(this, request, parent, isMain);
  };
  try {
    return require('vscode-languageclient/lib/common/progress.js').ProgressFeature;
  } finally {
    Module._load = load;
  }
}

/** The parts of BaseLanguageClient the feature uses, wired to a sidecar's messages. */
function fakeClient() {
  const handlers = new Map();
  let create;
  return {
    onRequest(type, h) {
      assert.equal(type.method, 'window/workDoneProgress/create');
      create = h;
      return { dispose() {} };
    },
    onProgress(_type, token, h) {
      handlers.set(String(token), h);
      return { dispose: () => handlers.delete(String(token)) };
    },
    sendNotification() {},
    listener: {
      create: (p) => create(p),
      progress: (p) => handlers.get(String(p.token))?.(p.value),
    },
  };
}

describe('$/progress → VS Code progress (vscode-languageclient ProgressFeature)', { timeout: 120_000 }, () => {
  let dir, server, token, sc;

  before(async () => {
    assert.ok(fs.existsSync(BIN), `threadsync binary not found at ${BIN}`);
    dir = tempDir();
    server = await Server.start(dir);
    token = await server.token('t1');
  });

  after(async () => {
    sc?.cleanup();
    if (server) await server.stop();
    killAll();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('the client advertises window.workDoneProgress and shows the first sync and a large upload', async () => {
    const ProgressFeature = loadProgressFeature();
    const client = fakeClient();
    const feature = new ProgressFeature(client);
    const capabilities = {};
    feature.fillClientCapabilities(capabilities);
    assert.equal(capabilities.window?.workDoneProgress, true, 'window.workDoneProgress advertised');
    feature.initialize();

    // vscode-languageclient registers the feature by default (v9: registerBuiltinFeatures).
    const src = fs.readFileSync(require.resolve('vscode-languageclient/lib/common/client.js'), 'utf8');
    assert.match(src, /registerFeature\(new progress_1\.ProgressFeature\(this\)\)/);

    sc = await Sidecar.start(
      'P',
      { serverUrl: server.url, token },
      { capabilities, progressListener: client.listener },
    );
    const first = await waitFor('first-sync progress shown and ended', () =>
      shown.find((e) => /first sync/i.test(e.options.title ?? '') && e.ended === true),
    );
    assert.equal(first.options.location, fakeVscode.ProgressLocation.Window);
    await sc.waitStatus('synced', (s) => s.state === 'synced' && s.online);

    // A push larger than 1 MB shows its own progress.
    const { threadId } = await sc.request('threadsync/createThread', { title: 'big' });
    const big = 'x'.repeat(1_500_000);
    await sc.request('threadsync/appendMessage', { threadId, role: 'user', content: big });
    assert.deepEqual(await sc.command('threadsync.forceSync', [], 60_000), { ok: true });
    const upload = await waitFor(
      'upload progress shown and ended',
      () => shown.find((e) => /upload/i.test(e.options.title ?? '') && e.ended === true),
      20_000,
    );
    assert.match(upload.options.title, /MB/);
    assert.ok(sc.progress.some((p) => p.create), 'window/workDoneProgress/create was sent');
    feature.clear();
  });
});
