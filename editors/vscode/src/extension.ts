// The ThreadSync extension: runs `threadsync lsp` (the sidecar) through
// vscode-languageclient over stdio, shows its status in the status bar and
// offers the ThreadSync commands. The names it uses are in
// ../../../protocol.md ("The sidecar") and README.md beside this folder.

import * as cp from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import * as vscode from 'vscode';
import {
  CloseAction,
  DidChangeConfigurationNotification,
  ErrorAction,
  ExecuteCommandParams,
  ExecuteCommandRequest,
  LanguageClient,
  LanguageClientOptions,
  NotificationType,
  RequestType,
  RevealOutputChannelOn,
  ServerOptions,
  State,
} from 'vscode-languageclient/node';

import {
  buildConfigChange,
  buildInitOptions,
  buildServerEnv,
  findBinary,
  isThreadId,
  LIVE_SETTINGS,
  nodeLookupFs,
  RESTART_SETTINGS,
  Settings,
  threadsDirCandidates,
} from './config';
import { redact } from './redact';
import {
  CommandTypes,
  Conflict,
  NotificationParams,
  Notifications,
  Requests,
  RequestTypes,
  SidecarCommands,
  SyncStatus,
  ThreadSummary,
} from './protocol';
import { ClientPhase, Commands, present } from './status';
import { choiceItems, conflictItem, fullText, kindLabel, threadItem, threadLabel } from './views';

/** A notification of the sidecar's, typed by its method. */
function notification<M extends keyof NotificationParams>(method: M) {
  return new NotificationType<NotificationParams[M]>(method);
}

/** A request of the sidecar's, typed by its method. */
function request<M extends keyof RequestTypes>(method: M) {
  return new RequestType<RequestTypes[M]['params'], RequestTypes[M]['result'], void>(method);
}

/** `workspace/executeCommand` params of a sidecar command, its arguments typed. */
function command<C extends keyof CommandTypes>(name: C, args: CommandTypes[C]['arguments']): ExecuteCommandParams {
  return { command: name, arguments: args };
}

/** The sidecar's methods, typed. */
const Sidecar = {
  status: notification(Notifications.status),
  threadUpdated: notification(Notifications.threadUpdated),
  threadStatus: notification(Notifications.threadStatus),
  rollback: notification(Notifications.rollback),
  getStatus: request(Requests.getStatus),
  listThreads: request(Requests.listThreads),
  getThread: request(Requests.getThread),
  listConflicts: request(Requests.listConflicts),
} as const;

const SECRET_KEY = 'threadsync.token';
const CONFLICT_SCHEME = 'threadsync-conflict';

function readSettings(): Settings {
  const c = vscode.workspace.getConfiguration('threadsync');
  return {
    serverPath: c.get<string>('server.path'),
    serverUrl: c.get<string>('server.url'),
    token: c.get<string>('token'),
    threadsDir: c.get<string>('threadsDir'),
    stateDir: c.get<string>('stateDir'),
    poll: c.get<string>('poll'),
    logLevel: c.get<string>('log.level'),
  };
}

function workspaceFolder(): string | undefined {
  const f = vscode.workspace.workspaceFolders?.[0];
  return f && f.uri.scheme === 'file' ? f.uri.fsPath : undefined;
}

function errorText(e: unknown): string {
  if (e instanceof Error) return e.message;
  if (e && typeof e === 'object' && 'message' in e) return String((e as { message: unknown }).message);
  return String(e);
}

/** An OutputChannel that writes to the log channel with tokens removed. */
class RedactingChannel implements vscode.OutputChannel {
  readonly name: string;
  constructor(
    private readonly inner: vscode.LogOutputChannel,
    private readonly secrets: () => (string | undefined)[],
  ) {
    this.name = inner.name;
  }
  append(value: string): void {
    this.inner.append(redact(value, this.secrets()));
  }
  appendLine(value: string): void {
    this.inner.appendLine(redact(value, this.secrets()));
  }
  replace(value: string): void {
    this.inner.replace(redact(value, this.secrets()));
  }
  clear(): void {
    this.inner.clear();
  }
  show(a?: unknown, b?: boolean): void {
    if (typeof a === 'boolean') this.inner.show(a);
    else this.inner.show(b);
  }
  hide(): void {
    this.inner.hide();
  }
  dispose(): void {
    /* the log channel is owned by the extension */
  }
}

class ThreadSyncExtension implements vscode.Disposable {
  private client: LanguageClient | undefined;
  private status: SyncStatus | undefined;
  private phase: ClientPhase = 'stopped';
  private readonly item: vscode.StatusBarItem;
  private readonly log: vscode.LogOutputChannel;
  private readonly channel: RedactingChannel;
  private readonly disposables: vscode.Disposable[] = [];
  private readonly titles = new Map<string, string>();
  private readonly conflictDocs = new Map<string, string>();
  private readonly conflictDocsChanged = new vscode.EventEmitter<vscode.Uri>();
  /** Serializes start/stop/restart. */
  private queue: Promise<unknown> = Promise.resolve();
  private secretToken: string | undefined;
  private liveTimer: NodeJS.Timeout | undefined;
  private restartTimer: NodeJS.Timeout | undefined;
  private disposed = false;
  private crashes: number[] = [];

  constructor(private readonly context: vscode.ExtensionContext) {
    this.log = vscode.window.createOutputChannel('ThreadSync', { log: true });
    this.channel = new RedactingChannel(this.log, () => this.knownSecrets());
    this.item = vscode.window.createStatusBarItem('threadsync.status', vscode.StatusBarAlignment.Left, 10);
    this.item.name = 'ThreadSync';
    this.disposables.push(this.log, this.item, this.conflictDocsChanged);
    this.render();
    this.item.show();

    const reg = (id: string, f: (...args: any[]) => unknown) =>
      this.disposables.push(vscode.commands.registerCommand(id, f));
    reg(Commands.forceSync, (threadId?: unknown) => this.forceSync(typeof threadId === 'string' ? threadId : undefined));
    reg(Commands.resolveConflict, (arg?: unknown) => this.resolveConflict(arg));
    reg(Commands.showThreads, () => this.showThreads());
    reg(Commands.showLog, () => this.log.show());
    reg(Commands.restart, () => this.restart());
    reg(Commands.setToken, (token?: unknown) => this.setToken(typeof token === 'string' ? token : undefined));

    this.disposables.push(
      vscode.workspace.registerTextDocumentContentProvider(CONFLICT_SCHEME, {
        onDidChange: this.conflictDocsChanged.event,
        provideTextDocumentContent: (uri) => this.conflictDocs.get(uri.toString()) ?? '',
      }),
      vscode.workspace.onDidChangeConfiguration((e) => this.onConfigChange(e)),
      context.secrets.onDidChange(async (e) => {
        if (e.key !== SECRET_KEY) return;
        this.secretToken = await this.readSecret();
        this.sendConfigChange();
      }),
    );
    // Keeps "last sync: N minutes ago" in the tooltip fresh.
    const tick = setInterval(() => this.render(), 30_000);
    this.disposables.push({ dispose: () => clearInterval(tick) });
  }

  /** The token in VS Code's secret storage (none when the store is unavailable). */
  private async readSecret(): Promise<string | undefined> {
    try {
      return await this.context.secrets.get(SECRET_KEY);
    } catch (e) {
      this.log.warn(`secret storage unavailable: ${errorText(e)}`);
      return undefined;
    }
  }

  private knownSecrets(): (string | undefined)[] {
    return [this.secretToken, readSettings().token, process.env.THREADSYNC_TOKEN];
  }

  // ---- status bar ----------------------------------------------------------

  private render(): void {
    const p = present(this.status, new Date(), this.phase);
    this.item.text = p.text;
    const md = new vscode.MarkdownString(p.tooltip);
    md.isTrusted = false;
    this.item.tooltip = md;
    this.item.command = p.command;
    this.item.backgroundColor = p.background ? new vscode.ThemeColor(p.background) : undefined;
    this.item.accessibilityInformation = { label: p.accessibility, role: 'button' };
  }

  private setStatus(s: SyncStatus | undefined): void {
    this.status = s;
    this.render();
  }

  // ---- lifecycle -----------------------------------------------------------

  private serialized<T>(f: () => Promise<T>): Promise<T> {
    const run = this.queue.then(f, f);
    this.queue = run.catch(() => undefined);
    return run;
  }

  start(): Promise<boolean> {
    return this.serialized(() => this.doStart());
  }

  restart(): Promise<boolean> {
    return this.serialized(async () => {
      this.log.info('restarting the sidecar');
      await this.doStop();
      return this.doStart();
    });
  }

  stop(): Promise<void> {
    return this.serialized(() => this.doStop());
  }

  private async doStart(): Promise<boolean> {
    if (this.disposed) return false;
    this.phase = 'starting';
    this.setStatus(undefined);
    const settings = readSettings();
    const env = process.env as Record<string, string | undefined>;
    const ws = workspaceFolder();
    this.secretToken = await this.readSecret();

    const found = findBinary(settings.serverPath, env, nodeLookupFs(), process.platform, ws);
    if (!found.path) {
      this.failStart(found.error ?? 'The threadsync binary was not found.', found.tried);
      return false;
    }
    const bin = found.path;
    this.log.info(`using ${bin} (from ${found.source === 'setting' ? 'threadsync.server.path' : 'PATH'})`);

    const version = await this.checkVersion(bin);
    if (!version.ok) {
      this.failStart(`"${bin} --version" failed: ${version.error}.`, [bin]);
      return false;
    }
    this.log.info(`sidecar version: ${version.version}`);

    const initializationOptions = buildInitOptions(settings, this.secretToken, env, ws);
    const serverOptions: ServerOptions = {
      command: bin,
      args: ['lsp'],
      // stdio, without `transport: TransportKind.stdio`: that would append
      // `--stdio`, which `threadsync lsp` rejects.
      options: { env: buildServerEnv(settings, env), cwd: ws },
    };
    const clientOptions: LanguageClientOptions = {
      documentSelector: [],
      initializationOptions,
      outputChannel: this.channel,
      traceOutputChannel: this.channel,
      revealOutputChannelOn: RevealOutputChannelOn.Never,
      errorHandler: {
        error: (_e, _m, count) => ({ action: (count ?? 0) <= 3 ? ErrorAction.Continue : ErrorAction.Shutdown }),
        closed: () => {
          const now = Date.now();
          this.crashes = this.crashes.filter((t) => now - t < 180_000);
          this.crashes.push(now);
          if (this.crashes.length <= 4) {
            this.log.warn('the sidecar exited unexpectedly; restarting it');
            return { action: CloseAction.Restart, handled: true };
          }
          this.log.error('the sidecar exited 5 times in 3 minutes; not restarting it');
          return {
            action: CloseAction.DoNotRestart,
            message: 'ThreadSync: the sidecar exited 5 times in 3 minutes and was not restarted. See "ThreadSync: Show Log"; "ThreadSync: Restart Sidecar" starts it again.',
          };
        },
      },
    };
    const client = new LanguageClient('threadsync', 'ThreadSync', serverOptions, clientOptions);
    client.onDidChangeState((e) => {
      if (this.client !== client) return;
      if (e.newState === State.Running) this.phase = 'running';
      else if (e.newState === State.Starting) this.phase = 'starting';
      else {
        this.phase = 'stopped';
        this.status = undefined;
      }
      this.render();
    });
    client.onNotification(Sidecar.status, (s) => {
      if (this.client === client) this.setStatus(s);
    });
    client.onNotification(Sidecar.threadUpdated, (p) => {
      if (p && typeof p.threadId === 'string') this.titles.set(p.threadId, p.title);
      this.log.debug(`thread ${p?.threadId} updated (${p?.origin}), v${p?.version}`);
    });
    client.onNotification(Sidecar.threadStatus, (p) => {
      if (p?.error) this.log.warn(`thread ${p.threadId}: ${p.error}`);
    });
    client.onNotification(Sidecar.rollback, (p) => {
      const name = threadLabel(this.titles.get(p?.threadId), String(p?.threadId));
      this.log.warn(`rollback of thread ${p?.threadId}: ${p?.reason}`);
      void vscode.window
        .showWarningMessage(
          `ThreadSync: a change to thread "${name}" was refused by the server and undone locally: ${p?.reason}`,
          'Show Log',
        )
        .then((c) => c && this.log.show());
    });

    this.client = client;
    try {
      await client.start();
    } catch (e) {
      this.log.error(`the sidecar did not start: ${errorText(e)}`);
      if (this.client === client) this.client = undefined;
      try {
        await client.dispose(2000);
      } catch {
        /* already gone */
      }
      this.phase = 'stopped';
      this.setStatus(undefined);
      void vscode.window
        .showErrorMessage(`ThreadSync: the sidecar (${bin} lsp) did not start: ${errorText(e)}`, 'Show Log', 'Restart Sidecar')
        .then((c) => {
          if (c === 'Show Log') this.log.show();
          else if (c === 'Restart Sidecar') void this.restart();
        });
      return false;
    }
    this.phase = 'running';
    this.render();
    try {
      const s = await client.sendRequest(Sidecar.getStatus, {});
      // A notification may have arrived meanwhile; either is current enough.
      if (this.client === client && s && typeof s === 'object') this.setStatus(s);
    } catch (e) {
      this.log.warn(`getStatus failed: ${errorText(e)}`);
    }
    return true;
  }

  private failStart(message: string, tried: string[]): void {
    this.phase = 'stopped';
    this.setStatus(undefined);
    this.log.error(message);
    if (tried.length) this.log.error(`tried: ${tried.join(', ')}`);
    const shown = tried.slice(0, 3).join(', ') + (tried.length > 3 ? ` and ${tried.length - 3} more (see the log)` : '');
    void vscode.window
      .showErrorMessage(
        `ThreadSync: ${message} Set "threadsync.server.path" to the threadsync binary, or put threadsync on PATH.` +
          (tried.length ? ` Tried: ${shown}.` : ''),
        'Open Settings',
        'Show Log',
      )
      .then((c) => {
        if (c === 'Open Settings') void vscode.commands.executeCommand('workbench.action.openSettings', 'threadsync.server.path');
        else if (c === 'Show Log') this.log.show();
      });
  }

  private checkVersion(bin: string): Promise<{ ok: true; version: string } | { ok: false; error: string }> {
    return new Promise((resolve) => {
      try {
        cp.execFile(bin, ['--version'], { timeout: 10_000, windowsHide: true }, (err, stdout, stderr) => {
          if (err) {
            const why = (err as NodeJS.ErrnoException & { killed?: boolean }).killed
              ? 'it did not answer within 10 s'
              : (stderr && stderr.trim()) || err.message;
            resolve({ ok: false, error: why });
          } else {
            resolve({ ok: true, version: stdout.trim() || stderr.trim() || 'unknown' });
          }
        });
      } catch (e) {
        resolve({ ok: false, error: errorText(e) });
      }
    });
  }

  /** Stops the sidecar; the status bar shows `phase` ("stopped", also on the way through a restart). */
  private async doStop(phase: ClientPhase = 'stopped'): Promise<void> {
    const client = this.client;
    this.client = undefined;
    if (client) {
      try {
        await client.dispose(2000);
      } catch (e) {
        this.log.warn(`stopping the sidecar: ${errorText(e)}`);
      }
    }
    this.phase = phase;
    this.setStatus(undefined);
  }

  // ---- settings ------------------------------------------------------------

  private onConfigChange(e: vscode.ConfigurationChangeEvent): void {
    if (!e.affectsConfiguration('threadsync')) return;
    const changed = [...RESTART_SETTINGS, ...LIVE_SETTINGS].filter((k) => e.affectsConfiguration(k));
    this.log.info(`settings changed: ${changed.join(', ') || '(other threadsync settings)'}`);
    // Settings UI text fields change on every keystroke: wait for a pause.
    if (RESTART_SETTINGS.some((k) => e.affectsConfiguration(k))) {
      clearTimeout(this.restartTimer);
      this.restartTimer = setTimeout(() => {
        vscode.window.setStatusBarMessage('ThreadSync: settings changed, restarting the sidecar', 3000);
        void this.restart();
      }, 800);
    } else if (LIVE_SETTINGS.some((k) => e.affectsConfiguration(k))) {
      clearTimeout(this.liveTimer);
      this.liveTimer = setTimeout(() => this.sendConfigChange(), 500);
    }
  }

  /** Server URL or token changed: tell the running sidecar (no restart). */
  private sendConfigChange(): void {
    const client = this.client;
    if (!client || !client.isRunning()) {
      this.log.info('the sidecar is not running; the new settings apply when it starts');
      return;
    }
    const params = buildConfigChange(readSettings(), this.secretToken, process.env as Record<string, string | undefined>);
    this.log.info(`applying server ${params.settings.server}${params.settings.token ? ' with a token' : ' without a token'}`);
    client.sendNotification(DidChangeConfigurationNotification.type, params).catch((e) => {
      this.log.warn(`didChangeConfiguration failed: ${errorText(e)}`);
    });
  }

  private async setToken(given?: string): Promise<boolean> {
    const token =
      given ??
      (await vscode.window.showInputBox({
        title: 'ThreadSync: Set Token',
        prompt:
          'Bearer token for the sync server (from "threadsync token create"). It is kept in VS Code\'s secret storage. Leave empty to remove the stored token.',
        password: true,
        ignoreFocusOut: true,
      }));
    if (token === undefined) return false;
    const t = token.trim();
    if (t === '') {
      await this.context.secrets.delete(SECRET_KEY);
      this.secretToken = undefined;
      vscode.window.showInformationMessage('ThreadSync: the stored token was removed.');
    } else {
      await this.context.secrets.store(SECRET_KEY, t);
      this.secretToken = t;
      vscode.window.setStatusBarMessage('ThreadSync: token saved', 3000);
    }
    // secrets.onDidChange also fires; sending twice is harmless.
    this.sendConfigChange();
    return true;
  }

  // ---- commands ------------------------------------------------------------

  private running(): LanguageClient | undefined {
    const c = this.client;
    if (c && c.isRunning()) return c;
    void vscode.window
      .showErrorMessage('ThreadSync: the sidecar is not running.', 'Restart Sidecar', 'Show Log')
      .then((choice) => {
        if (choice === 'Restart Sidecar') void this.restart();
        else if (choice === 'Show Log') this.log.show();
      });
    return undefined;
  }

  private async forceSync(threadId?: string): Promise<boolean> {
    const client = this.running();
    if (!client) return false;
    try {
      await vscode.window.withProgress(
        { location: vscode.ProgressLocation.Window, title: 'ThreadSync: syncing' },
        () =>
          client.sendRequest(
            ExecuteCommandRequest.type,
            command(SidecarCommands.forceSync, threadId ? [threadId] : []),
          ),
      );
      vscode.window.setStatusBarMessage('$(check) ThreadSync: synced', 4000);
      return true;
    } catch (e) {
      this.log.warn(`force sync failed: ${errorText(e)}`);
      void vscode.window.showErrorMessage(`ThreadSync: sync failed: ${errorText(e)}`, 'Show Log').then((c) => {
        if (c) this.log.show();
      });
      return false;
    }
  }

  private async threadTitles(client: LanguageClient): Promise<Map<string, string>> {
    try {
      const r = await client.sendRequest(Sidecar.listThreads, {});
      for (const t of r?.threads ?? []) this.titles.set(t.id, t.title);
    } catch (e) {
      this.log.debug(`listThreads failed: ${errorText(e)}`);
    }
    return this.titles;
  }

  /**
   * Resolve Conflict. Arguments (optional, for scripts and tests): a conflict
   * id, or `{ conflictId, choose?: "local" | "remote" }`.
   */
  private async resolveConflict(arg?: unknown): Promise<boolean> {
    const client = this.running();
    if (!client) return false;
    let wantedId: string | undefined;
    let wantedChoice: 'local' | 'remote' | undefined;
    if (typeof arg === 'string') wantedId = arg;
    else if (arg && typeof arg === 'object') {
      const a = arg as { conflictId?: unknown; choose?: unknown };
      if (typeof a.conflictId === 'string') wantedId = a.conflictId;
      if (a.choose === 'local' || a.choose === 'remote') wantedChoice = a.choose;
    }
    let conflicts: Conflict[];
    try {
      conflicts = (await client.sendRequest(Sidecar.listConflicts, {}))?.conflicts ?? [];
    } catch (e) {
      void vscode.window.showErrorMessage(`ThreadSync: could not list conflicts: ${errorText(e)}`);
      return false;
    }
    if (conflicts.length === 0) {
      void vscode.window.showInformationMessage('ThreadSync: there are no conflicts to resolve.');
      return false;
    }
    const titles = await this.threadTitles(client);

    let conflict: Conflict | undefined;
    if (wantedId !== undefined) {
      conflict = conflicts.find((c) => c.id === wantedId);
      if (!conflict) {
        void vscode.window.showErrorMessage(`ThreadSync: there is no conflict ${wantedId}.`);
        return false;
      }
    } else {
      const picked = await vscode.window.showQuickPick(
        conflicts.map((c) => ({ ...conflictItem(c, titles), conflict: c })),
        {
          title: 'ThreadSync: Resolve Conflict',
          placeHolder: `${conflicts.length} ${conflicts.length === 1 ? 'conflict' : 'conflicts'}: choose one to resolve`,
          matchOnDescription: true,
          matchOnDetail: true,
          ignoreFocusOut: true,
        },
      );
      if (!picked) return false;
      conflict = picked.conflict;
    }

    const name = threadLabel(titles.get(conflict.threadId), conflict.threadId);
    let choose = wantedChoice;
    while (!choose) {
      const picked = await vscode.window.showQuickPick(choiceItems(conflict), {
        title: `ThreadSync: ${name} — ${kindLabel(conflict.kind)}`,
        placeHolder: 'Keep which side?',
        ignoreFocusOut: true,
      });
      if (!picked) return false;
      if (picked.choice === 'compare') await this.compare(conflict, name);
      else choose = picked.choice;
    }

    try {
      await vscode.window.withProgress(
        { location: vscode.ProgressLocation.Window, title: 'ThreadSync: resolving the conflict' },
        () =>
          client.sendRequest(
            ExecuteCommandRequest.type,
            command(SidecarCommands.resolveConflict, [{ conflictId: conflict!.id, choose }]),
          ),
      );
    } catch (e) {
      void vscode.window.showErrorMessage(`ThreadSync: could not resolve the conflict: ${errorText(e)}`);
      return false;
    }
    vscode.window.setStatusBarMessage(
      `$(check) ThreadSync: conflict resolved, kept ${choose === 'local' ? 'local' : 'remote'}`,
      4000,
    );
    return true;
  }

  /** A diff editor: remote (the server's, kept now) on the left, local on the right. */
  private async compare(c: Conflict, name: string): Promise<void> {
    const structured = (v: unknown) => v !== null && v !== undefined && typeof v !== 'string';
    const ext = structured(c.local) || structured(c.remote) ? 'json' : 'md';
    const uri = (side: string) =>
      vscode.Uri.from({ scheme: CONFLICT_SCHEME, path: `/${encodeURIComponent(c.id)}/${side}.${ext}` });
    const remote = uri('remote');
    const local = uri('local');
    this.conflictDocs.set(remote.toString(), fullText(c.remote));
    this.conflictDocs.set(local.toString(), fullText(c.local));
    this.conflictDocsChanged.fire(remote);
    this.conflictDocsChanged.fire(local);
    await vscode.commands.executeCommand('vscode.diff', remote, local, `${name}: remote ↔ local (${c.kind})`, {
      preview: true,
    });
  }

  private async showThreads(): Promise<boolean> {
    const client = this.running();
    if (!client) return false;
    let threads: ThreadSummary[];
    try {
      threads = (await client.sendRequest(Sidecar.listThreads, {}))?.threads ?? [];
    } catch (e) {
      void vscode.window.showErrorMessage(`ThreadSync: could not list threads: ${errorText(e)}`);
      return false;
    }
    for (const t of threads) this.titles.set(t.id, t.title);
    if (threads.length === 0) {
      void vscode.window.showInformationMessage('ThreadSync: there are no threads yet.');
      return false;
    }
    const picked = await vscode.window.showQuickPick(
      threads.map((t) => ({ ...threadItem(t), thread: t })),
      {
        title: 'ThreadSync: Threads',
        placeHolder: `${threads.length} ${threads.length === 1 ? 'thread' : 'threads'}: choose one to open (type a title, assistant or project to filter)`,
        // The description leads with the thread's assistant and project ("Claude Code · team/api").
        matchOnDescription: true,
        matchOnDetail: true,
      },
    );
    if (!picked) return false;
    const id = picked.thread.id;
    if (isThreadId(id)) {
      const dirs = threadsDirCandidates(readSettings(), process.env as Record<string, string | undefined>, workspaceFolder());
      for (const dir of dirs) {
        // A `.json` thread file, or the append-only log (`.jsonl`).
        for (const ext of ['.json', '.jsonl']) {
          const file = path.join(dir, `${id}${ext}`);
          if (fs.existsSync(file)) {
            await vscode.window.showTextDocument(vscode.Uri.file(file), { preview: true });
            return true;
          }
        }
      }
    }
    // Not found where we expected the thread files: show the sidecar's copy.
    try {
      const thread = await client.sendRequest(Sidecar.getThread, { threadId: id });
      const doc = await vscode.workspace.openTextDocument({ language: 'json', content: JSON.stringify(thread, null, 2) });
      await vscode.window.showTextDocument(doc, { preview: true });
      return true;
    } catch (e) {
      void vscode.window.showErrorMessage(`ThreadSync: could not open thread ${id}: ${errorText(e)}`);
      return false;
    }
  }

  async dispose(): Promise<void> {
    this.disposed = true;
    clearTimeout(this.liveTimer);
    clearTimeout(this.restartTimer);
    await this.stop();
    for (const d of this.disposables.splice(0)) {
      try {
        d.dispose();
      } catch {
        /* keep going */
      }
    }
  }
}

let ext: ThreadSyncExtension | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  ext = new ThreadSyncExtension(context);
  // Not awaited: activation must not wait on the sidecar.
  void ext.start();
}

export async function deactivate(): Promise<void> {
  const e = ext;
  ext = undefined;
  if (e) await e.dispose();
}
