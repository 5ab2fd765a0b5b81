//! `threadsync lsp`: the editor sidecar. JSON-RPC with LSP framing over
//! stdio (tower-lsp-server). Handlers only parse and forward to the engine
//! driver (`driver.rs`), the single task that owns sync state.

pub mod config;
pub mod driver;
pub mod files;
pub mod net;
pub mod notify;
pub mod state;
pub mod stdio;
pub mod watch;

use std::fs::File;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tower_lsp_server::jsonrpc::{Error, ErrorCode, Result};
use tower_lsp_server::lsp_types::*;
use tower_lsp_server::{Client, LanguageServer, LspService, Server};

use crate::engine::{Choice, LocalOp, SyncEngine};
use crate::model::ThreadId;
use config::{Config, Options};
use driver::{Cmd, Driver};

pub const FORCE_SYNC: &str = "threadsync.forceSync";
pub const RESOLVE_CONFLICT: &str = "threadsync.resolveConflict";

pub struct Backend {
    client: Client,
    /// `initializationOptions`, or why they cannot be used.
    init_options: Mutex<std::result::Result<Options, String>>,
    sync: Arc<Syncing>,
}

/// The syncing side, shared with a follower's takeover task.
struct Syncing {
    client: Client,
    /// The editor offered work-done progress.
    progress: std::sync::atomic::AtomicBool,
    driver: Mutex<Option<mpsc::UnboundedSender<Cmd>>>,
    status_tx: tokio::sync::watch::Sender<Value>,
    /// Held while this sidecar syncs its state directory.
    lock: Mutex<Option<File>>,
}

fn invalid(msg: impl Into<String>) -> Error {
    Error { code: ErrorCode::InvalidParams, message: msg.into().into(), data: None }
}

fn failed(msg: impl Into<String>) -> Error {
    Error { code: ErrorCode::ServerError(-32001), message: msg.into().into(), data: None }
}

fn thread_id(s: &str) -> Result<ThreadId> {
    ThreadId::new(s).map_err(|e| invalid(format!("threadId {s:?}: {e}")))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ThreadParams {
    thread_id: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct CreateParams {
    #[serde(default)]
    title: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppendParams {
    thread_id: String,
    role: String,
    content: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestoreParams {
    thread_id: String,
    message_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TitleParams {
    thread_id: String,
    title: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResolveArg {
    conflict_id: String,
    choose: String,
}

impl Backend {
    fn new(client: Client) -> Self {
        let (status_tx, _) = tokio::sync::watch::channel(json!({
            "state": "syncing", "pending": 0, "conflicts": 0, "online": false, "lastSync": null, "message": "starting"
        }));
        let sync = Arc::new(Syncing {
            client: client.clone(),
            progress: Default::default(),
            driver: Mutex::new(None),
            status_tx,
            lock: Mutex::new(None),
        });
        Backend { client, init_options: Mutex::new(Ok(Options::default())), sync }
    }

    fn driver(&self) -> Result<mpsc::UnboundedSender<Cmd>> {
        self.sync.driver.lock().unwrap_or_else(|e| e.into_inner()).clone().ok_or_else(|| {
            failed("not syncing: another editor window's sidecar owns this state directory (this one takes over when it exits), or initialization failed")
        })
    }

    async fn ask<T: Send + 'static>(&self, make: impl FnOnce(driver::Reply<T>) -> Cmd) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.driver()?.send(make(tx)).map_err(|_| failed("the sync engine stopped"))?;
        rx.await.map_err(|_| failed("the sync engine stopped"))?.map_err(failed)
    }

    async fn read<T: Send + 'static>(&self, f: impl FnOnce(&SyncEngine) -> T + Send + 'static) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.driver()?
            .send(Cmd::Read(Box::new(move |e| {
                let _ = tx.send(f(e));
            })))
            .map_err(|_| failed("the sync engine stopped"))?;
        rx.await.map_err(|_| failed("the sync engine stopped"))
    }

    fn config(&self, extra: Option<Options>) -> std::result::Result<Config, String> {
        let init = self.init_options.lock().unwrap_or_else(|e| e.into_inner()).clone()?;
        let merged = extra.unwrap_or_default().or(init).or(Options::from_env()).or(Options::from_file());
        Config::resolve(&merged)
    }

    pub async fn get_status(&self, _: Option<Value>) -> Result<Value> {
        Ok(self.sync.status_tx.borrow().clone())
    }

    pub async fn list_threads(&self, _: Option<Value>) -> Result<Value> {
        self.ask(|reply| Cmd::ListThreads { reply }).await
    }

    pub async fn get_thread(&self, p: ThreadParams) -> Result<Value> {
        let id = thread_id(&p.thread_id)?;
        let (tx, rx) = oneshot::channel();
        self.driver()?.send(Cmd::GetThread { id, reply: tx }).map_err(|_| failed("the sync engine stopped"))?;
        rx.await.map_err(|_| failed("the sync engine stopped"))?.map_err(invalid)
    }

    pub async fn create_thread(&self, p: Option<CreateParams>) -> Result<Value> {
        let title = p.unwrap_or_default().title.unwrap_or_default();
        let r = self.ask(|reply| Cmd::Local { thread: None, op: LocalOp::CreateThread { title }, reply }).await?;
        Ok(json!({ "threadId": r.thread_id }))
    }

    pub async fn append_message(&self, p: AppendParams) -> Result<Value> {
        let id = thread_id(&p.thread_id)?;
        let op = LocalOp::Append { role: p.role, content: p.content };
        let r = self.ask(|reply| Cmd::Local { thread: Some(id), op, reply }).await?;
        Ok(json!({ "messageId": r.message_id, "version": r.version }))
    }

    pub async fn set_title(&self, p: TitleParams) -> Result<Value> {
        let id = thread_id(&p.thread_id)?;
        let r =
            self.ask(|reply| Cmd::Local { thread: Some(id), op: LocalOp::SetTitle { title: p.title }, reply }).await?;
        Ok(json!({ "version": r.version }))
    }

    pub async fn restore_message(&self, p: RestoreParams) -> Result<Value> {
        let thread = thread_id(&p.thread_id)?;
        let message = crate::model::MessageId::new(p.message_id.clone())
            .map_err(|e| invalid(format!("messageId {:?}: {e}", p.message_id)))?;
        let r = self.ask(|reply| Cmd::Restore { thread, message, reply }).await?;
        Ok(json!({ "messageId": r.message_id, "version": r.version }))
    }

    pub async fn list_conflicts(&self, _: Option<Value>) -> Result<Value> {
        self.ask(|reply| Cmd::ListConflicts { reply }).await
    }

    pub async fn metrics(&self, _: Option<Value>) -> Result<Value> {
        self.read(|e| json!({ "sync": e.metrics(), "pendingThreads": e.pending_threads().len() })).await
    }
}

impl LanguageServer for Backend {
    async fn initialize(&self, params: InitializeParams) -> Result<InitializeResult> {
        if let Some(o) = &params.initialization_options {
            *self.init_options.lock().unwrap_or_else(|e| e.into_inner()) = Options::from_value(o);
        }
        let progress = params.capabilities.window.as_ref().and_then(|w| w.work_done_progress).unwrap_or(false);
        self.sync.progress.store(progress, std::sync::atomic::Ordering::Relaxed);
        if let Some(pid) = params.process_id {
            exit_with_parent(pid);
        }
        Ok(InitializeResult {
            capabilities: ServerCapabilities {
                execute_command_provider: Some(ExecuteCommandOptions {
                    commands: vec![FORCE_SYNC.into(), RESOLVE_CONFLICT.into()],
                    ..Default::default()
                }),
                ..Default::default()
            },
            server_info: Some(ServerInfo {
                name: "threadsync".into(),
                version: Some(env!("CARGO_PKG_VERSION").into()),
            }),
        })
    }

    async fn initialized(&self, _: InitializedParams) {
        let cfg = match self.config(None) {
            Ok(c) => c,
            Err(e) => {
                self.client.show_message(MessageType::ERROR, format!("threadsync: bad configuration: {e}")).await;
                return;
            }
        };
        if self.sync.start(cfg.clone()).await {
            return;
        }
        // Another window syncs: say so, and take over when it exits.
        let v = json!({ "state": "synced", "pending": 0, "conflicts": 0, "online": true, "lastSync": null,
                        "message": "another editor window is syncing these threads" });
        self.sync.status_tx.send_replace(v.clone());
        self.client.send_notification::<notify::Status>(v).await;
        let sync = self.sync.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if sync.start(cfg.clone()).await {
                    return;
                }
            }
        });
    }

    async fn did_change_configuration(&self, params: DidChangeConfigurationParams) {
        match Options::from_value(&params.settings).and_then(|opts| self.config(Some(opts))) {
            Ok(cfg) => {
                if let Ok(d) = self.driver() {
                    let _ = d.send(Cmd::Reconfigure(cfg));
                }
            }
            Err(e) => self.client.show_message(MessageType::ERROR, format!("threadsync: bad configuration: {e}")).await,
        }
    }

    async fn execute_command(&self, params: ExecuteCommandParams) -> Result<Option<LSPAny>> {
        match params.command.as_str() {
            FORCE_SYNC => {
                let thread = match params.arguments.as_slice() {
                    [] => None,
                    [Value::String(s)] => Some(thread_id(s)?),
                    other => {
                        let got = Value::from(other.to_vec());
                        return Err(invalid(format!("forceSync takes [] or [\"<threadId>\"], not {got}")));
                    }
                };
                self.ask(|reply| Cmd::ForceSync { thread, reply }).await?;
                Ok(Some(json!({ "ok": true })))
            }
            RESOLVE_CONFLICT => {
                let arg: ResolveArg =
                    params.arguments.first().cloned().and_then(|a| serde_json::from_value(a).ok()).ok_or_else(
                        || invalid("resolveConflict takes [{ \"conflictId\": …, \"choose\": \"local\" | \"remote\" }]"),
                    )?;
                let choose = match arg.choose.as_str() {
                    "local" => Choice::Local,
                    "remote" => Choice::Remote,
                    other => return Err(invalid(format!("choose must be \"local\" or \"remote\", not {other:?}"))),
                };
                self.ask(|reply| Cmd::Resolve { id: arg.conflict_id, choose, reply }).await?;
                Ok(Some(json!({ "ok": true })))
            }
            other => Err(invalid(format!("unknown command {other:?}"))),
        }
    }

    async fn shutdown(&self) -> Result<()> {
        Ok(())
    }
}

impl Syncing {
    /// Starts syncing if this sidecar can take the state directory's lock;
    /// otherwise another window syncs and this one retries until it exits.
    async fn start(&self, cfg: Config) -> bool {
        if std::fs::create_dir_all(&cfg.state_dir).is_err() {
            return false;
        }
        let Ok(file) = File::options().create(true).truncate(false).write(true).open(cfg.state_dir.join("lock")) else {
            return false;
        };
        if file.try_lock().is_err() {
            return false;
        }
        let progress = self.progress.load(std::sync::atomic::Ordering::Relaxed);
        match Driver::start(cfg, self.client.clone(), self.status_tx.clone(), progress) {
            Ok(tx) => {
                *self.lock.lock().unwrap_or_else(|e| e.into_inner()) = Some(file);
                *self.driver.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
                true
            }
            Err(e) => {
                self.client.show_message(MessageType::ERROR, format!("threadsync: {e}")).await;
                false
            }
        }
    }
}

/// Exits within a second of the editor process going away: a cheap OS check
/// (signal 0), not a spawned process.
fn exit_with_parent(pid: u32) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            #[cfg(unix)]
            {
                // SAFETY: kill with signal 0 only checks that the process exists.
                let gone = unsafe { libc::kill(pid as libc::pid_t, 0) } != 0
                    && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
                if gone {
                    std::process::exit(0);
                }
            }
        }
    });
}

/// Logs: never stdout. Quiet stderr (warnings) by default; `THREADSYNC_LOG`
/// sets the level; `THREADSYNC_LOG_FILE` sends them to a file that is
/// rotated at start once it passes 5 MB.
fn init_logs() {
    let level = std::env::var("THREADSYNC_LOG").unwrap_or_else(|_| "warn".into());
    let filter = tracing_subscriber::EnvFilter::new(level);
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false);
    match std::env::var_os("THREADSYNC_LOG_FILE") {
        Some(path) => {
            let path = std::path::PathBuf::from(path);
            if std::fs::metadata(&path).is_ok_and(|m| m.len() > 5 << 20) {
                let _ = std::fs::rename(&path, path.with_extension("old"));
            }
            match File::options().create(true).append(true).open(&path) {
                Ok(f) => builder.with_writer(Mutex::new(f)).init(),
                Err(_) => builder.with_writer(std::io::stderr).init(),
            }
        }
        None => builder.with_writer(std::io::stderr).init(),
    }
}

pub fn run() -> ExitCode {
    init_logs();
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("threadsync: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        let (service, socket) = LspService::build(Backend::new)
            .custom_method("threadsync/getStatus", Backend::get_status)
            .custom_method("threadsync/listThreads", Backend::list_threads)
            .custom_method("threadsync/getThread", Backend::get_thread)
            .custom_method("threadsync/createThread", Backend::create_thread)
            .custom_method("threadsync/appendMessage", Backend::append_message)
            .custom_method("threadsync/setTitle", Backend::set_title)
            .custom_method("threadsync/listConflicts", Backend::list_conflicts)
            .custom_method("threadsync/restoreMessage", Backend::restore_message)
            .custom_method("threadsync/metrics", Backend::metrics)
            .finish();
        let (input, output, io) = stdio::transport(tokio::io::stdin(), tokio::io::stdout());
        Server::new(input, output, socket).serve(service).await;
        // Write out the answers still queued, without hanging on an editor
        // that stopped reading.
        let _ = tokio::time::timeout(Duration::from_secs(2), io.finish()).await;
    });
    // `exit`, or stdin closed: everything a restart needs is committed (a
    // file stamp not yet saved is found again by reading the file); leave
    // at once (without waiting for the blocking stdin reader).
    std::process::exit(0)
}
