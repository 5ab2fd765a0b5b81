// Real processes for the RPC tests: a `threadsync serve` on a loopback port
// with a temp SQLite database, and `threadsync lsp` sidecars driven through
// vscode-jsonrpc's node connection (the JSON-RPC layer vscode-languageclient
// uses), configured with the extension's own option builders (out/config.js).
import { spawn, execFile } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const rpc = require('vscode-languageserver-protocol/node');
export const config = require('../../out/config.js');

const here = path.dirname(fileURLToPath(import.meta.url));
export const BIN = process.env.THREADSYNC_BIN || path.resolve(here, '../../../../target/debug/threadsync');

/** Every child started here, killed by killAll() whatever happened. */
const children = new Set();
export function killAll() {
  for (const c of children) {
    try {
      c.kill('SIGKILL');
    } catch {
      /* gone */
    }
  }
  children.clear();
}
process.on('exit', killAll);

export function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `f` (sync or async) until it returns a truthy value, or throws after `ms` with `what`. */
export async function waitFor(what, f, ms = 15_000, every = 50) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await f();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${what}; last: ${describe(last)}`);
    }
    await sleep(every);
  }
}

/** A promise with a deadline. */
export function within(ms, what, p) {
  let t;
  return Promise.race([
    p,
    new Promise((_, reject) => {
      t = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(t));
}

function describe(v) {
  if (v instanceof Error) return v.message;
  try {
    return JSON.stringify(v);
  } catch {
    return String(v);
  }
}

export function tempDir(prefix = 'threadsync-vscode-') {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** The environment of a child: ours without THREADSYNC_* (and no user config file). */
export function cleanEnv(home) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('THREADSYNC_')) env[k] = v;
  env.XDG_CONFIG_HOME = path.join(home, 'config');
  env.XDG_DATA_HOME = path.join(home, 'data');
  env.XDG_STATE_HOME = path.join(home, 'state');
  return env;
}

function run(args, env) {
  return new Promise((resolve, reject) => {
    execFile(BIN, args, { env, timeout: 20_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`threadsync ${args.join(' ')}: ${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

export class Server {
  static async start(dir) {
    const s = new Server();
    s.dir = dir;
    s.db = `sqlite://${path.join(dir, 'db.sqlite')}`;
    s.env = cleanEnv(dir);
    s.port = await freePort();
    s.url = `http://127.0.0.1:${s.port}`;
    s.log = '';
    s.child = spawn(BIN, ['serve', '--listen', `127.0.0.1:${s.port}`, '--db', s.db], {
      env: s.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.add(s.child);
    s.child.stdout.on('data', (d) => (s.log += d));
    s.child.stderr.on('data', (d) => (s.log += d));
    s.exited = new Promise((r) => s.child.on('exit', (code, sig) => r({ code, sig })));
    await waitFor(
      `GET ${s.url}/healthz = 200`,
      async () => {
        if (s.child.exitCode !== null) throw new Error(`serve exited: ${s.log}`);
        const r = await fetch(`${s.url}/healthz`, { signal: AbortSignal.timeout(1000) });
        return r.status === 200;
      },
      20_000,
      100,
    );
    return s;
  }

  token(team = 't1') {
    return run(['token', 'create', '--team', team, '--db', this.db], this.env).then((o) => o.trim());
  }

  async stop() {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGTERM');
      await within(5000, 'serve exit', this.exited).catch(() => this.child.kill('SIGKILL'));
    }
    children.delete(this.child);
  }
}

/**
 * One `threadsync lsp`, initialized with the options the extension builds
 * from `settings` (buildInitOptions) and run with its env (buildServerEnv).
 */
export class Sidecar {
  static async start(name, settings, { secretToken, capabilities, progressListener } = {}) {
    const sc = new Sidecar();
    sc.name = name;
    sc.home = tempDir(`threadsync-${name}-`);
    sc.settings = {
      threadsDir: path.join(sc.home, 'threads'),
      stateDir: path.join(sc.home, 'state'),
      logLevel: 'info',
      ...settings,
    };
    sc.secretToken = secretToken;
    sc.statuses = [];
    sc.mark = 0;
    sc.updates = [];
    sc.messages = [];
    sc.progress = [];
    sc.stderr = '';
    const env = config.buildServerEnv(sc.settings, cleanEnv(sc.home));
    sc.child = spawn(BIN, ['lsp'], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    children.add(sc.child);
    sc.child.stderr.on('data', (d) => (sc.stderr += d));
    sc.exited = new Promise((r) => sc.child.on('exit', (code, sig) => r({ code, sig })));
    sc.reader = new rpc.StreamMessageReader(sc.child.stdout);
    sc.conn = rpc.createProtocolConnection(
      sc.reader,
      new rpc.StreamMessageWriter(sc.child.stdin),
    );
    sc.conn.onNotification('threadsync/status', (p) => sc.statuses.push(p));
    sc.conn.onNotification('threadsync/threadUpdated', (p) => sc.updates.push(p));
    sc.conn.onNotification('window/showMessage', (p) => sc.messages.push(p));
    // Progress messages are recorded, and handed to `progressListener` (tests
    // plug vscode-languageclient's ProgressFeature in there).
    sc.progressListener = { create() {}, progress() {} };
    sc.conn.onNotification('$/progress', (p) => {
      sc.progress.push(p);
      sc.progressListener.progress(p);
    });
    sc.conn.onRequest('window/workDoneProgress/create', (p) => {
      sc.progress.push({ create: p });
      sc.progressListener.create(p);
      return null;
    });
    if (progressListener) sc.progressListener = progressListener;
    sc.conn.onError(() => {});
    sc.conn.onClose(() => {});
    sc.conn.listen();
    sc.initOptions = config.buildInitOptions(sc.settings, secretToken, env);
    sc.initResult = await within(
      10_000,
      `${name} initialize`,
      sc.conn.sendRequest(rpc.InitializeRequest.type, {
        processId: process.pid,
        clientInfo: { name: 'threadsync-vscode-rpc-test' },
        rootUri: null,
        capabilities: capabilities ?? { window: { workDoneProgress: true } },
        initializationOptions: sc.initOptions,
      }),
    );
    await sc.conn.sendNotification(rpc.InitializedNotification.type, {});
    return sc;
  }

  get status() {
    return this.statuses[this.statuses.length - 1];
  }

  request(method, params = {}, ms = 15_000) {
    return within(ms, `${this.name} ${method}`, this.conn.sendRequest(method, params));
  }

  command(command, args = [], ms = 20_000) {
    return within(
      ms,
      `${this.name} ${command}`,
      this.conn.sendRequest(rpc.ExecuteCommandRequest.type, { command, arguments: args }),
    );
  }

  /** What the extension sends when threadsync.server.url / the token change. */
  changeSettings(settings) {
    Object.assign(this.settings, settings);
    const params = config.buildConfigChange(this.settings, this.secretToken, {});
    return this.conn.sendNotification(rpc.DidChangeConfigurationNotification.type, params);
  }

  waitStatus(what, pred, ms = 15_000) {
    return waitFor(`${this.name} status ${what}`, () => this.statuses.find((s, i) => i >= this.mark && pred(s)), ms);
  }

  /** Statuses before this call are ignored by waitStatus. */
  markStatuses() {
    this.mark = this.statuses.length;
  }

  async shutdown() {
    await within(5000, `${this.name} shutdown`, this.conn.sendRequest(rpc.ShutdownRequest.type));
    await this.conn.sendNotification(rpc.ExitNotification.type);
    return within(3000, `${this.name} exit after "exit"`, this.exited);
  }

  kill() {
    // Stop reading first: a message cut off by the kill would otherwise leave
    // vscode-jsonrpc's partial-message timer re-arming itself every 10 s,
    // keeping the test process alive forever after the tests passed.
    this.child.stdout.destroy();
    try {
      this.conn.dispose();
    } catch {
      /* closed */
    }
    this.reader.partialMessageTimeout = 0;
    this.reader.clearPartialMessageTimer();
    this.reader.dispose();
    this.child.kill('SIGKILL');
    children.delete(this.child);
  }

  cleanup() {
    this.kill();
    fs.rmSync(this.home, { recursive: true, force: true });
  }
}
