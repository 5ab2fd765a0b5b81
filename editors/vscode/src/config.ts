// Settings → sidecar configuration, and finding the `threadsync` binary.
// Pure (no `vscode` import; file system and environment are injected) so it
// runs under `node --test` and the RPC test builds exactly what the extension
// sends (test/rpc/sidecar.test.mjs).

import * as path from 'path';

/** The extension's settings (contributes.configuration), as read. */
export interface Settings {
  /** threadsync.server.path */
  serverPath?: string;
  /** threadsync.server.url */
  serverUrl?: string;
  /** threadsync.token (plain setting; discouraged) */
  token?: string;
  /** threadsync.threadsDir */
  threadsDir?: string;
  /** threadsync.stateDir */
  stateDir?: string;
  /** threadsync.poll */
  poll?: string;
  /** threadsync.log.level */
  logLevel?: string;
}

/** The sidecar's `initializationOptions` (interface.md). */
export interface InitOptions {
  server?: string;
  token?: string;
  threadsDir?: string;
  stateDir?: string;
  poll?: string;
}

export type Env = Record<string, string | undefined>;

/** The sidecar's own default server (protocol.md, Configuration). */
export const DEFAULT_SERVER = 'http://127.0.0.1:7420';

export const LOG_LEVELS = ['off', 'error', 'warn', 'info', 'debug', 'trace'] as const;

function nonEmpty(s: string | undefined | null): string | undefined {
  if (typeof s !== 'string') return undefined;
  const t = s.trim();
  return t === '' ? undefined : t;
}

/** `~` and `~/…` → the home directory. */
export function expandHome(p: string, home: string | undefined): string {
  if (!home) return p;
  if (p === '~') return home;
  if (p.startsWith('~/') || p.startsWith('~\\')) return path.join(home, p.slice(2));
  return p;
}

/** A directory setting as the sidecar should get it: home expanded, relative → workspace folder. */
export function resolveDir(p: string | undefined, env: Env, workspaceFolder?: string): string | undefined {
  const v = nonEmpty(p);
  if (!v) return undefined;
  const e = expandHome(v, env.HOME ?? env.USERPROFILE);
  if (path.isAbsolute(e) || !workspaceFolder) return e;
  return path.resolve(workspaceFolder, e);
}

/**
 * The token the sidecar gets: the secret store's, then the plain setting.
 * Undefined: none (the sidecar then falls back to THREADSYNC_TOKEN itself).
 */
export function chooseToken(secret: string | undefined, setting: string | undefined): string | undefined {
  return nonEmpty(secret) ?? nonEmpty(setting);
}

/**
 * `initializationOptions` for `threadsync lsp`. Unset settings are left out,
 * so the sidecar falls back to its environment (THREADSYNC_SERVER,
 * THREADSYNC_TOKEN, …), its config file, then its defaults.
 */
export function buildInitOptions(
  s: Settings,
  secretToken?: string,
  env: Env = {},
  workspaceFolder?: string,
): InitOptions {
  const o: InitOptions = {};
  const server = nonEmpty(s.serverUrl);
  if (server) o.server = server;
  const token = chooseToken(secretToken, s.token);
  if (token) o.token = token;
  const threadsDir = resolveDir(s.threadsDir, env, workspaceFolder);
  if (threadsDir) o.threadsDir = threadsDir;
  const stateDir = resolveDir(s.stateDir, env, workspaceFolder);
  if (stateDir) o.stateDir = stateDir;
  const poll = nonEmpty(s.poll);
  if (poll) o.poll = poll;
  return o;
}

/**
 * The `workspace/didChangeConfiguration` params after the server URL or the
 * token changed. The sidecar merges these over its initializationOptions, so
 * a setting that was cleared is sent as its fallback value (environment, then
 * default; an empty token means "none") rather than left out.
 */
export function buildConfigChange(
  s: Settings,
  secretToken?: string,
  env: Env = {},
): { settings: { server: string; token: string } } {
  return {
    settings: {
      server: nonEmpty(s.serverUrl) ?? nonEmpty(env.THREADSYNC_SERVER) ?? DEFAULT_SERVER,
      token: chooseToken(secretToken, s.token) ?? nonEmpty(env.THREADSYNC_TOKEN) ?? '',
    },
  };
}

/** The sidecar's environment: ours plus THREADSYNC_LOG from the log level setting. */
export function buildServerEnv(s: Settings, env: Env): Env {
  const out: Env = { ...env };
  const level = nonEmpty(s.logLevel);
  if (level && (LOG_LEVELS as readonly string[]).includes(level)) out.THREADSYNC_LOG = level;
  return out;
}

/** Settings whose change needs a new sidecar process (vs. didChangeConfiguration). */
export const RESTART_SETTINGS = [
  'threadsync.server.path',
  'threadsync.threadsDir',
  'threadsync.stateDir',
  'threadsync.poll',
  'threadsync.log.level',
] as const;

/** Settings applied live through didChangeConfiguration. */
export const LIVE_SETTINGS = ['threadsync.server.url', 'threadsync.token'] as const;

/** What binary lookup needs from the file system. */
export interface LookupFs {
  /** True when `p` is a regular file this process may execute. */
  isExecutable(p: string): boolean;
}

export interface LookupResult {
  /** The binary to run, when one was found. */
  path?: string;
  /** Every candidate looked at, in order. */
  tried: string[];
  /** Where it came from (or would have). */
  source: 'setting' | 'PATH';
  /** Why nothing was found, with the fix: for the error message. */
  error?: string;
}

/**
 * Finds the `threadsync` binary: the `threadsync.server.path` setting when
 * set (and only it: an explicit setting that is wrong is an error, not a
 * reason to run some other binary), else `threadsync` on PATH (PATHEXT on
 * Windows).
 */
export function findBinary(
  setting: string | undefined,
  env: Env,
  fs: LookupFs,
  platform: string = process.platform,
  workspaceFolder?: string,
): LookupResult {
  const configured = nonEmpty(setting);
  if (configured) {
    let p = expandHome(configured, env.HOME ?? env.USERPROFILE);
    if (!path.isAbsolute(p) && workspaceFolder && /[\\/]/.test(p)) p = path.resolve(workspaceFolder, p);
    if (!path.isAbsolute(p) && !/[\\/]/.test(p)) {
      // A bare name: look it up on PATH like a shell would.
      const r = searchPath(p, env, fs, platform);
      if (r.path) return { path: r.path, tried: r.tried, source: 'setting' };
      return {
        tried: r.tried,
        source: 'setting',
        error: `The threadsync.server.path setting is "${configured}", which was not found on PATH.`,
      };
    }
    if (fs.isExecutable(p)) return { path: p, tried: [p], source: 'setting' };
    return {
      tried: [p],
      source: 'setting',
      error: `The threadsync.server.path setting points to "${p}", which is not an executable file.`,
    };
  }
  const r = searchPath('threadsync', env, fs, platform);
  if (r.path) return { path: r.path, tried: r.tried, source: 'PATH' };
  return {
    tried: r.tried,
    source: 'PATH',
    error: 'The threadsync binary was not found: the threadsync.server.path setting is empty and there is no threadsync on PATH.',
  };
}

function searchPath(name: string, env: Env, fs: LookupFs, platform: string): { path?: string; tried: string[] } {
  const win = platform === 'win32';
  const delimiter = win ? ';' : ':';
  const join = win ? path.win32.join : path.posix.join;
  const pathVar = env.PATH ?? env.Path ?? '';
  const exts = win ? ['', ...(env.PATHEXT ?? '.COM;.EXE;.BAT;.CMD').split(';').filter(Boolean)] : [''];
  const tried: string[] = [];
  for (const dir of pathVar.split(delimiter)) {
    if (!dir) continue;
    for (const ext of exts) {
      const p = join(dir, name + ext);
      if (tried.includes(p)) continue;
      tried.push(p);
      if (fs.isExecutable(p)) return { path: p, tried };
    }
  }
  return { tried };
}

/** The real file system check. */
export function nodeLookupFs(): LookupFs {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const fs = require('fs') as typeof import('fs');
  return {
    isExecutable(p: string): boolean {
      try {
        if (!fs.statSync(p).isFile()) return false;
        if (process.platform === 'win32') return true;
        fs.accessSync(p, fs.constants.X_OK);
        return true;
      } catch {
        return false;
      }
    },
  };
}

/** The thread files directory the sidecar uses, as far as the editor can tell. */
export function threadsDirCandidates(s: Settings, env: Env, workspaceFolder?: string): string[] {
  const out: string[] = [];
  const fromSetting = resolveDir(s.threadsDir, env, workspaceFolder);
  if (fromSetting) return [fromSetting];
  const fromEnv = nonEmpty(env.THREADSYNC_THREADS_DIR);
  if (fromEnv) return [fromEnv];
  const xdg = nonEmpty(env.XDG_DATA_HOME);
  if (xdg && path.isAbsolute(xdg)) out.push(path.join(xdg, 'threadsync', 'threads'));
  else if (env.HOME) out.push(path.join(env.HOME, '.local', 'share', 'threadsync', 'threads'));
  return out;
}

/** Thread ids are `[A-Za-z0-9_-]{1,128}` (interface.md); anything else is never used as a path. */
export function isThreadId(id: unknown): id is string {
  return typeof id === 'string' && /^[A-Za-z0-9_-]{1,128}$/.test(id);
}
