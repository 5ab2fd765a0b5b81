//! `threadsync lsp`: the editor sidecar. JSON-RPC with LSP framing over
//! stdio (tower-lsp-server). Handlers only parse and forward to the engine
//! driver (`driver.rs`), the single task that owns sync state.

pub mod config;
pub mod driver;
pub mod files;
pub mod net;
pub mod protocol;
pub mod state;
pub mod stdio;
pub mod stores;
pub mod watch;

use std::fs::File;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tower_lsp_server::jsonrpc::{Error, ErrorCode, Method, Result};
use tower_lsp_server::lsp_types::request::Request;
use tower_lsp_server::lsp_types::*;
use tower_lsp_server::{Client, ClientSocket, LanguageServer, LspService, LspServiceBuilder, Server};

use crate::engine::{self, LocalOp, SyncEngine};
use crate::model::ThreadId;
use config::{Config, Options};
use driver::{Cmd, Driver};
use protocol::{
    AppendMessageParams, Command, CommandDone, CreateThreadParams, CreateThreadResult, ForceSync, ListConflictsResult,
    ListThreadsResult, MessageResult, MetricsResult, NoParams, ResolveConflict, RestoreMessageParams, SetTitleParams,
    SyncStatus, ThreadFile, ThreadParams, VersionResult,
};

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
    status_tx: tokio::sync::watch::Sender<SyncStatus>,
    /// Held while this sidecar syncs its state directory.
    lock: Mutex<Option<File>>,
}

fn invalid(msg: impl Into<String>) -> Error {
    Error { code: ErrorCode::InvalidParams, message: msg.into().into(), data: None }
}

fn failed(msg: impl Into<String>) -> Error {
    Error { code: ErrorCode::ServerError(protocol::ENGINE_ERROR), message: msg.into().into(), data: None }
}

fn thread_id(s: &str) -> Result<ThreadId> {
    ThreadId::new(s).map_err(|e| invalid(format!("threadId {s:?}: {e}")))
}

/// A status of the sidecar's own (no engine behind it yet): nothing
/// pending, never synced.
fn own_status(state: engine::State, online: bool, message: &str) -> SyncStatus {
    let s = engine::Status { state, pending: 0, conflicts: 0, online, last_sync: None, message: Some(message.into()) };
    SyncStatus::from(&s)
}

impl Backend {
    fn new(client: Client) -> Self {
        let (status_tx, _) = tokio::sync::watch::channel(own_status(engine::State::Syncing, false, "starting"));
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

    pub async fn get_status(&self, _: NoParams) -> Result<SyncStatus> {
        Ok(self.sync.status_tx.borrow().clone())
    }

    pub async fn list_threads(&self, _: NoParams) -> Result<ListThreadsResult> {
        self.ask(|reply| Cmd::ListThreads { reply }).await
    }

    pub async fn get_thread(&self, p: ThreadParams) -> Result<ThreadFile> {
        let id = thread_id(&p.thread_id)?;
        let (tx, rx) = oneshot::channel();
        self.driver()?.send(Cmd::GetThread { id, reply: tx }).map_err(|_| failed("the sync engine stopped"))?;
        rx.await.map_err(|_| failed("the sync engine stopped"))?.map_err(invalid)
    }

    pub async fn create_thread(&self, p: Option<CreateThreadParams>) -> Result<CreateThreadResult> {
        let title = p.unwrap_or_default().title.unwrap_or_default();
        let r = self.ask(|reply| Cmd::Local { thread: None, op: LocalOp::CreateThread { title }, reply }).await?;
        Ok(CreateThreadResult { thread_id: r.thread_id.into() })
    }

    pub async fn append_message(&self, p: AppendMessageParams) -> Result<MessageResult> {
        let id = thread_id(&p.thread_id)?;
        let op = LocalOp::Append { role: p.role, content: p.content };
        let r = self.ask(|reply| Cmd::Local { thread: Some(id), op, reply }).await?;
        Ok(MessageResult { message_id: r.message_id.map(String::from), version: r.version })
    }

    pub async fn set_title(&self, p: SetTitleParams) -> Result<VersionResult> {
        let id = thread_id(&p.thread_id)?;
        let r =
            self.ask(|reply| Cmd::Local { thread: Some(id), op: LocalOp::SetTitle { title: p.title }, reply }).await?;
        Ok(VersionResult { version: r.version })
    }

    pub async fn restore_message(&self, p: RestoreMessageParams) -> Result<MessageResult> {
        let thread = thread_id(&p.thread_id)?;
        let message = crate::model::MessageId::new(p.message_id.clone())
            .map_err(|e| invalid(format!("messageId {:?}: {e}", p.message_id)))?;
        let r = self.ask(|reply| Cmd::Restore { thread, message, reply }).await?;
        Ok(MessageResult { message_id: r.message_id.map(String::from), version: r.version })
    }

    pub async fn list_conflicts(&self, _: NoParams) -> Result<ListConflictsResult> {
        self.ask(|reply| Cmd::ListConflicts { reply }).await
    }

    pub async fn metrics(&self, _: NoParams) -> Result<MetricsResult> {
        self.read(|e| MetricsResult { sync: e.metrics().into(), pending_threads: e.pending_threads().len() }).await
    }
}

impl LanguageServer for Backend {
    async fn initialize(&self, params: InitializeParams) -> Result<InitializeResult> {
        let mut options = match &params.initialization_options {
            Some(o) => Options::from_value(o),
            None => Ok(Options::default()),
        };
        // Where the user works: the checkouts a session from elsewhere is
        // placed in (see `stores`).
        #[allow(deprecated)] // rootUri: what an editor without workspace folders sends
        let folders: Vec<std::path::PathBuf> = params
            .workspace_folders
            .iter()
            .flatten()
            .map(|f| &f.uri)
            .chain(params.root_uri.as_ref())
            .filter_map(|u| tower_lsp_server::UriExt::to_file_path(u).map(|p| p.into_owned()))
            .collect();
        if let Ok(o) = &mut options
            && !folders.is_empty()
        {
            o.workspace = Some(folders);
        }
        *self.init_options.lock().unwrap_or_else(|e| e.into_inner()) = options;
        let progress = params.capabilities.window.as_ref().and_then(|w| w.work_done_progress).unwrap_or(false);
        self.sync.progress.store(progress, std::sync::atomic::Ordering::Relaxed);
        if let Some(pid) = params.process_id {
            exit_with_parent(pid);
        }
        Ok(InitializeResult {
            capabilities: ServerCapabilities {
                execute_command_provider: Some(ExecuteCommandOptions {
                    commands: protocol::COMMANDS.iter().map(|c| c.name.into()).collect(),
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
        let v = own_status(engine::State::Synced, true, "another editor window is syncing these threads");
        self.sync.status_tx.send_replace(v.clone());
        self.client.send_notification::<protocol::Status>(v).await;
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
            ForceSync::NAME => {
                let args = ForceSync::parse(&params.arguments).map_err(invalid)?;
                let thread = args.thread_id.as_deref().map(thread_id).transpose()?;
                self.ask(|reply| Cmd::ForceSync { thread, reply }).await?;
                Ok(Some(done()))
            }
            ResolveConflict::NAME => {
                let (arg,) = ResolveConflict::parse(&params.arguments).map_err(invalid)?;
                let choose = arg.choose.into();
                self.ask(|reply| Cmd::Resolve { id: arg.conflict_id, choose, reply }).await?;
                Ok(Some(done()))
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

/// What a command answers once it has finished.
fn done() -> LSPAny {
    serde_json::to_value(CommandDone::OK).unwrap_or_default()
}

/// Registers a handler for a request of `protocol`: its name and its types
/// are the request's.
trait Route {
    fn route<R, F>(self, handler: F) -> Self
    where
        R: Request,
        F: for<'a> Method<&'a Backend, (R::Params,), Result<R::Result>> + Clone + Send + Sync + 'static;
}

impl Route for LspServiceBuilder<Backend> {
    fn route<R, F>(self, handler: F) -> Self
    where
        R: Request,
        F: for<'a> Method<&'a Backend, (R::Params,), Result<R::Result>> + Clone + Send + Sync + 'static,
    {
        self.custom_method(R::METHOD, handler)
    }
}

/// The backend with every request of `protocol` routed to its handler.
fn service() -> (LspService<Backend>, ClientSocket) {
    LspService::build(Backend::new)
        .route::<protocol::GetStatus, _>(Backend::get_status)
        .route::<protocol::ListThreads, _>(Backend::list_threads)
        .route::<protocol::GetThread, _>(Backend::get_thread)
        .route::<protocol::CreateThread, _>(Backend::create_thread)
        .route::<protocol::AppendMessage, _>(Backend::append_message)
        .route::<protocol::SetTitle, _>(Backend::set_title)
        .route::<protocol::ListConflicts, _>(Backend::list_conflicts)
        .route::<protocol::RestoreMessage, _>(Backend::restore_message)
        .route::<protocol::Metrics, _>(Backend::metrics)
        .finish()
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
pub(crate) fn init_logs() {
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

/// Serves one editor over `input` and `output` until `exit` or the end of
/// `input`: the sidecar `run` starts on stdio, and tests on in-memory pipes.
/// The sync driver it starts outlives it (`run` ends the process), and a
/// write error on `output` ends the process, as on stdio.
pub async fn serve(
    input: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    output: impl tokio::io::AsyncWrite + Unpin + Send + 'static,
) {
    let (service, socket) = service();
    let (input, output, io) = stdio::transport(input, output);
    Server::new(input, output, socket).serve(service).await;
    // Write out the answers still queued, without hanging on an editor
    // that stopped reading.
    let _ = tokio::time::timeout(Duration::from_secs(2), io.finish()).await;
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
    rt.block_on(serve(tokio::io::stdin(), tokio::io::stdout()));
    // `exit`, or stdin closed: everything a restart needs is committed (a
    // file stamp not yet saved is found again by reading the file); leave
    // at once (without waiting for the blocking stdin reader).
    std::process::exit(0)
}

#[cfg(test)]
mod tests {
    use tower::{Service, ServiceExt};
    use tower_lsp_server::jsonrpc::Request as Rpc;

    use super::*;

    /// Every request of `protocol` reaches a handler: none is "method not
    /// found" (without an engine they fail otherwise, or answer).
    #[tokio::test]
    async fn every_request_is_routed() {
        let (mut service, _socket) = service();
        let init = Rpc::build("initialize").params(serde_json::json!({ "capabilities": {} })).id(0).finish();
        let r = service.ready().await.unwrap().call(init).await.unwrap().unwrap();
        assert!(r.is_ok(), "{r:?}");
        for (i, m) in protocol::REQUESTS.iter().enumerate() {
            let req = Rpc::build(m.name).params(serde_json::json!({})).id(i as i64 + 1).finish();
            let r = service.ready().await.unwrap().call(req).await.unwrap().unwrap();
            let code = r.error().map(|e| e.code);
            assert_ne!(code, Some(ErrorCode::MethodNotFound), "{} is not routed", m.name);
        }
    }
}
