// A tiny JSON-RPC client with LSP framing ("Content-Length: N\r\n\r\n" + body)
// over a child process's stdio: the test's second threadsync client ("another
// machine"), a real `threadsync lsp` process with its own threadsDir/stateDir.

import { spawn } from 'node:child_process';

export class LspClient {
  /**
   * @param {string} bin path of the threadsync binary
   * @param {{server:string, token:string, threadsDir:string, stateDir:string, poll?:string}} options initializationOptions
   * @param {{env?: Record<string,string>, logFile?: string}} [extra]
   */
  constructor(bin, options, extra = {}) {
    this.options = options;
    this.nextId = 1;
    this.pending = new Map();
    this.buffer = Buffer.alloc(0);
    this.notifications = [];
    this.waiters = new Set();
    this.status = undefined;
    this.stderr = '';
    this.exited = false;
    const env = { ...process.env, ...(extra.env ?? {}) };
    for (const k of Object.keys(env)) if (k.startsWith('THREADSYNC_') && !(extra.env ?? {})[k]) delete env[k];
    if (extra.logFile) env.THREADSYNC_LOG_FILE = extra.logFile;
    env.THREADSYNC_LOG = env.THREADSYNC_LOG ?? 'info';
    this.proc = spawn(bin, ['lsp'], { stdio: ['pipe', 'pipe', 'pipe'], env, detached: true });
    this.proc.stdout.on('data', (d) => this.onData(d));
    this.proc.stderr.on('data', (d) => {
      this.stderr = (this.stderr + d.toString()).slice(-20000);
    });
    this.proc.on('exit', (code, signal) => {
      this.exited = true;
      const err = new Error(`threadsync lsp exited (code ${code}, signal ${signal}); stderr tail:\n${this.stderr.slice(-2000)}`);
      for (const { reject } of this.pending.values()) reject(err);
      this.pending.clear();
      this.wake();
    });
    this.proc.stdin.on('error', () => {});
  }

  onData(chunk) {
    this.buffer = Buffer.concat([this.buffer, chunk]);
    for (;;) {
      const sep = this.buffer.indexOf('\r\n\r\n');
      if (sep < 0) return;
      const header = this.buffer.subarray(0, sep).toString('ascii');
      const m = /Content-Length:\s*(\d+)/i.exec(header);
      if (!m) throw new Error(`bad LSP header from the sidecar: ${JSON.stringify(header)}`);
      const len = Number(m[1]);
      if (this.buffer.length < sep + 4 + len) return;
      const body = this.buffer.subarray(sep + 4, sep + 4 + len).toString('utf8');
      this.buffer = this.buffer.subarray(sep + 4 + len);
      this.onMessage(JSON.parse(body));
    }
  }

  onMessage(msg) {
    if (msg.id !== undefined && msg.method === undefined) {
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (msg.error) {
        const e = new Error(`${p.method}: ${msg.error.message} (${msg.error.code})`);
        e.code = msg.error.code;
        p.reject(e);
      } else p.resolve(msg.result);
      return;
    }
    if (msg.id !== undefined && msg.method !== undefined) {
      // A request from the sidecar (e.g. window/workDoneProgress/create): answer null.
      this.write({ jsonrpc: '2.0', id: msg.id, result: null });
      return;
    }
    if (msg.method === 'threadsync/status') this.status = msg.params;
    this.notifications.push(msg);
    if (this.notifications.length > 2000) this.notifications.splice(0, 1000);
    this.wake();
  }

  wake() {
    for (const w of [...this.waiters]) w();
  }

  write(msg) {
    const body = Buffer.from(JSON.stringify(msg), 'utf8');
    this.proc.stdin.write(Buffer.concat([Buffer.from(`Content-Length: ${body.length}\r\n\r\n`, 'ascii'), body]));
  }

  request(method, params, timeoutMs = 30_000) {
    if (this.exited) return Promise.reject(new Error(`threadsync lsp has exited; stderr:\n${this.stderr.slice(-2000)}`));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${method}: no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, {
        method,
        resolve: (v) => (clearTimeout(timer), resolve(v)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      });
      this.write({ jsonrpc: '2.0', id, method, params });
    });
  }

  notify(method, params) {
    this.write({ jsonrpc: '2.0', method, params });
  }

  async start() {
    const result = await this.request('initialize', {
      processId: process.pid,
      clientInfo: { name: 'threadsync-vscode-e2e' },
      rootUri: null,
      capabilities: {},
      initializationOptions: this.options,
    });
    this.notify('initialized', {});
    this.status = await this.request('threadsync/getStatus', {});
    return result;
  }

  /** Waits until pred(status) holds (bounded); returns the status. */
  async waitStatus(pred, what, timeoutMs = 20_000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.status && pred(this.status)) return this.status;
      if (this.exited) throw new Error(`threadsync lsp exited while waiting for ${what}`);
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(`other client: timed out after ${timeoutMs} ms waiting for ${what}; last status ${JSON.stringify(this.status)}`);
      }
      await new Promise((resolve) => {
        const done = () => {
          clearTimeout(t);
          this.waiters.delete(done);
          resolve();
        };
        const t = setTimeout(done, Math.min(left, 500));
        this.waiters.add(done);
      });
      // getStatus too, in case a notification was coalesced away
      try {
        this.status = await this.request('threadsync/getStatus', {}, 5000);
      } catch {
        /* retried on the next round */
      }
    }
  }

  async stop() {
    if (this.exited) return;
    const gone = new Promise((r) => this.proc.once('exit', r));
    try {
      await this.request('shutdown', null, 3000);
      this.notify('exit', null);
    } catch {
      /* kill below */
    }
    const t = setTimeout(() => {
      try {
        process.kill(-this.proc.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }, 3000);
    await gone;
    clearTimeout(t);
  }

  kill() {
    if (this.exited) return;
    try {
      process.kill(-this.proc.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}
