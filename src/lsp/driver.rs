//! The engine driver: the one task that owns the `SyncEngine` and the state
//! database. Everything else (LSP handlers, the file watcher, HTTP calls)
//! sends it messages, so sync state is never touched concurrently. Its loop
//! is quinn's: perform the engine's actions, sleep until `poll_timeout()` or
//! the next message.
//!
//! It decides nothing. The disk side of every step (the saves in one
//! transaction, the file writes and what follows them) is `client::Client`'s,
//! over the state database and the real files; this loop performs the rest:
//! requests, notifications, replies, and the timers of follow-ups.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tower_lsp_server::lsp_types::MessageType;

use crate::client::{Client, FollowUp, StepError};
use crate::engine::file::{FileKind, FileRead};
use crate::engine::retry::Failure;
use crate::engine::state::Bodies;
use crate::engine::{Action, Choice, EngineConfig, LocalOp, LocalResult, ProgressStep, PullOutcome, ReqId, SyncEngine};
use crate::lsp::config::Config;
use crate::lsp::files::{self, DiskFiles};
use crate::lsp::net::Net;
use crate::lsp::protocol::{
    self, Conflict, ListConflictsResult, ListThreadsResult, RollbackParams, SyncStatus, ThreadFile, ThreadState,
    ThreadStatusParams, ThreadSummary, ThreadUpdatedParams,
};
use crate::lsp::state::StateDb;
use crate::lsp::stores::{Files, Stores};
use crate::model::{Message, MessageId, ThreadId};
use crate::sources::Source;
use crate::time::Time;
use crate::wire::{ClientId, PullResponse, PushResponse};

mod disk;
mod requests;

pub type Reply<T> = oneshot::Sender<Result<T, String>>;

pub enum Cmd {
    Local {
        thread: Option<ThreadId>,
        op: LocalOp,
        reply: Reply<LocalResult>,
    },
    ForceSync {
        thread: Option<ThreadId>,
        reply: Reply<()>,
    },
    Resolve {
        id: String,
        choose: Choice,
        reply: Reply<()>,
    },
    Restore {
        thread: ThreadId,
        message: crate::model::MessageId,
        reply: Reply<LocalResult>,
    },
    /// The server's copy of a message to restore, fetched.
    Restored {
        thread: ThreadId,
        message: crate::model::MessageId,
        kept: Result<Option<crate::model::Message>, Failure>,
        reply: Reply<LocalResult>,
    },
    /// A read of engine state, answered inside the closure.
    Read(Box<dyn FnOnce(&SyncEngine) + Send>),
    GetThread {
        id: ThreadId,
        reply: Reply<ThreadFile>,
    },
    ListThreads {
        reply: Reply<ListThreadsResult>,
    },
    ListConflicts {
        reply: Reply<ListConflictsResult>,
    },
    Files(Vec<PathBuf>),
    Rescan,
    /// Look again at a file a `.json` write displaced (`attempt` counts).
    Displaced {
        id: ThreadId,
        path: PathBuf,
        expected: Option<u64>,
        attempt: u32,
    },
    /// Copy lines appended to a compacted log's old file since `from`.
    OldLog {
        log: PathBuf,
        old: PathBuf,
        from: u64,
        attempt: u32,
    },
    Pushed(ReqId, Result<PushResponse, Failure>),
    Pulled(ReqId, PullOutcome),
    /// A pull's answer, with the content it left out that we had lost.
    Fetched(ReqId, PullResponse, Vec<(ThreadId, Message)>),
    Probed(ReqId, Result<(), Failure>),
    Reconfigure(Config),
}

pub struct Driver {
    client: Client<StateDb, Files>,
    cfg: Config,
    net: Net,
    editor: tower_lsp_server::Client,
    tx: mpsc::UnboundedSender<Cmd>,
    pulls: HashMap<ReqId, tokio::task::JoinHandle<()>>,
    tickets: HashMap<u64, Reply<()>>,
    status: watch::Sender<SyncStatus>,
    clock: (Instant, u64),
    /// The editor offered work-done progress (`window.workDoneProgress`).
    progress: bool,
    /// Ends of the progress shown, by token.
    shown: HashMap<String, oneshot::Sender<String>>,
}

/// How long a displaced `.json` file is watched for a writer still writing
/// into it, and an old log for late appends.
const DISPLACED_CHECKS: [u64; 3] = [20, 300, 2_000];

/// How long the sidecar must be quiet before it settles (`Driver::settle`).
const SETTLE_AFTER: Duration = Duration::from_secs(1);

/// Sleeps until `at`, or forever.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Shows `$/progress` for a piece of long work until `done` says how it ended.
fn show_progress(client: tower_lsp_server::Client, token: &str, title: String) -> oneshot::Sender<String> {
    use tower_lsp_server::lsp_types::request::WorkDoneProgressCreate;
    use tower_lsp_server::lsp_types::{NumberOrString, WorkDoneProgressCreateParams};
    let (tx, rx) = oneshot::channel::<String>();
    let token = NumberOrString::String(token.to_string());
    tokio::spawn(async move {
        let created = tokio::time::timeout(
            Duration::from_secs(5),
            client.send_request::<WorkDoneProgressCreate>(WorkDoneProgressCreateParams { token: token.clone() }),
        )
        .await;
        if !matches!(created, Ok(Ok(()))) {
            return;
        }
        let p = client.progress(token, title).begin().await;
        let message = rx.await.unwrap_or_default();
        p.finish_with_message(message).await;
    });
    tx
}

impl Driver {
    pub fn start(
        cfg: Config,
        editor: tower_lsp_server::Client,
        status: watch::Sender<SyncStatus>,
        progress: bool,
    ) -> Result<mpsc::UnboundedSender<Cmd>, String> {
        std::fs::create_dir_all(&cfg.threads_dir)
            .map_err(|e| format!("cannot create {}: {e}", cfg.threads_dir.display()))?;
        let mut db =
            StateDb::open(&cfg.state_dir).map_err(|e| format!("cannot use {}: {e}", cfg.state_dir.display()))?;
        if let Err(e) = db.collect_garbage() {
            tracing::warn!(error = %e, "cannot clean up the state database");
        }
        let restored = db.restore()?;
        let stamps = db.stamps()?;
        let wall =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let clock = (Instant::now(), wall);
        let engine_cfg = EngineConfig {
            poll: cfg.poll,
            flush_when_idle: true,
            native_sources: cfg.stores.iter().map(|s| s.source.name().to_string()).collect(),
            machine: host_name(),
            ..EngineConfig::default()
        };
        // From the OS: the engine draws its client ids from this seed, and
        // two sidecars that drew the same one (the same millisecond and pid
        // — two containers starting together) would have the server take
        // one's changes for replays of the other's and drop them.
        let seed: u64 = rand::Rng::random(&mut rand::rng());
        let engine = SyncEngine::new(engine_cfg, seed, Time(wall), restored);
        let (tx, rx) = mpsc::unbounded_channel();
        // For `threadsync status`: the status of whoever syncs, kept in the
        // state directory.
        let mut watched = status.subscribe();
        let state_dir = cfg.state_dir.clone();
        tokio::spawn(async move {
            loop {
                let s = watched.borrow_and_update().clone();
                crate::daemon::write_status(&state_dir, &s);
                if watched.changed().await.is_err() {
                    return;
                }
            }
        });
        crate::lsp::watch::spawn(cfg.threads_dir.clone(), tx.clone());
        let mut stores = Stores::new(cfg.stores.clone(), cfg.home.clone(), cfg.redact_secrets);
        for (repo, dir) in &cfg.project_map {
            stores.map_project(repo, dir.clone());
        }
        for dir in &cfg.workspace {
            stores.add_workspace(dir);
        }
        for store in &cfg.stores {
            crate::lsp::watch::spawn_store(store.root.clone(), tx.clone());
        }
        // Files that changed while no sidecar ran (and threads whose file
        // was never read) are read first.
        let mut changed = Vec::new();
        let mut gone = Vec::new();
        let entries: Vec<PathBuf> = std::fs::read_dir(&cfg.threads_dir)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        for p in entries {
            if let Some(Ok((id, kind))) = files::thread_file(&p) {
                let same = stamps.get(&id).is_some_and(|(k, s)| {
                    *k == kind && s.as_ref().is_some_and(|s| files::unchanged_since(&p, s, kind))
                });
                if !same {
                    changed.push(p);
                }
            }
        }
        // Sessions in the assistants' stores, the same way.
        let sessions = stores.scan();
        for p in sessions {
            let Some(id) = stores.classify(&p) else { continue };
            let same = stamps.get(&id).is_some_and(|(k, s)| {
                *k == FileKind::Native && s.as_ref().is_some_and(|s| files::unchanged_since(&p, s, FileKind::Native))
            });
            if !same {
                changed.push(p);
            }
        }
        for (id, (kind, stamp)) in &stamps {
            if *kind == FileKind::Native {
                // A session file removed while no sidecar ran.
                if stamp.is_some()
                    && stores.path(id).is_none()
                    && Source::of_thread_id(id).is_some_and(|s| stores.sources().contains(&s))
                {
                    gone.push(id.clone());
                }
                continue;
            }
            let p = files::path_of(&cfg.threads_dir, id, *kind);
            if stamp.is_some() && !p.exists() {
                changed.push(p);
            }
        }
        if !changed.is_empty() {
            let _ = tx.send(Cmd::Files(changed));
        }
        let files = Files { disk: DiskFiles::new(cfg.threads_dir.clone()), stores };
        let mut client = Client::new(engine, db, files);
        for id in gone {
            if let Err(e) = client.file_changed(Time(wall), &id, FileKind::Native) {
                tracing::warn!(thread = %id, error = %e, "cannot take in a removed session file");
            }
        }
        // What a crash left between swapping in a file and taking in what it displaced.
        client.recover(Time(wall))?;
        let driver = Driver {
            client,
            net: Net::new(&cfg.server, cfg.token.clone()),
            cfg,
            editor,
            tx: tx.clone(),
            pulls: HashMap::new(),
            tickets: HashMap::new(),
            status,
            clock,
            progress,
            shown: HashMap::new(),
        };
        tokio::spawn(driver.run(rx));
        Ok(tx)
    }

    /// Monotonic milliseconds anchored at the wall clock at start: timers
    /// never run backwards when the system clock is stepped.
    fn now(&self) -> Time {
        Time(self.clock.1 + self.clock.0.elapsed().as_millis() as u64)
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>) {
        // After a spell of work, the first quiet second tidies up (see `settle`).
        let mut unsettled = true;
        loop {
            self.perform().await;
            let wake = self.client.engine.poll_timeout().map(|t| {
                let now = self.now();
                tokio::time::Instant::now() + t.saturating_since(now)
            });
            let quiet = unsettled.then(|| tokio::time::Instant::now() + SETTLE_AFTER);
            let cmd = tokio::select! {
                cmd = rx.recv() => cmd,
                _ = sleep_until(wake) => {
                    let now = self.now();
                    self.client.engine.handle_timeout(now);
                    unsettled = true;
                    continue;
                }
                _ = sleep_until(quiet) => {
                    self.settle();
                    unsettled = false;
                    continue;
                }
            };
            unsettled = true;

            let Some(cmd) = cmd else { return };
            self.handle(cmd).await;
        }
    }

    /// Housekeeping once the sidecar goes quiet (it decides nothing): the
    /// database folds its write-ahead log back (so the log stays small and
    /// the next writes are cheap), and the allocator hands the memory of a
    /// burst (a first sync pages through whole threads) back to the system,
    /// so an idle sidecar holds only what it keeps.
    fn settle(&mut self) {
        if let Err(e) = self.client.flush() {
            tracing::error!(error = %e, "cannot save sync state; exiting");
            std::process::exit(1);
        }
        if let Err(e) = self.client.store.checkpoint() {
            tracing::warn!(error = %e, "state database checkpoint failed");
        }
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only returns free memory to the system.
        unsafe {
            libc::malloc_trim(0);
        }
    }

    async fn handle(&mut self, cmd: Cmd) {
        let now = self.now();
        match cmd {
            Cmd::Local { thread, op, reply } => {
                let r = self.client.local_op(now, thread.as_ref(), op);
                // Answer only once the change is stored and in the file.
                self.perform().await;
                let _ = reply.send(r);
            }
            Cmd::ForceSync { thread, reply } => {
                let ticket = self.client.engine.force_sync(now, thread);
                self.tickets.insert(ticket, reply);
            }
            Cmd::Resolve { id, choose, reply } => {
                let r = self.client.resolve_conflict(now, &id, choose);
                self.perform().await;
                let _ = reply.send(r);
            }
            Cmd::Restore { thread, message, reply } => {
                if let Err(e) = self.client.ensure_loaded(now, [&thread]) {
                    let _ = reply.send(Err(e));
                    return;
                }
                match self.client.engine.is_deleted(&thread, &message) {
                    None => {
                        let _ = reply.send(Err(format!("no message {message} in thread {thread}")));
                    }
                    Some(false) => {
                        let _ = reply.send(Err(format!("message {message} of {thread} is not deleted")));
                    }
                    // Its content: this machine's copy, else the server's.
                    Some(true) => match self.client.store.deleted_message(&thread, &message) {
                        Some(m) => {
                            let r = self.client.local_op(now, Some(&thread), LocalOp::Restore { message: m });
                            self.perform().await;
                            let _ = reply.send(r);
                        }
                        None => {
                            let (net, tx, timeout) = (self.net.clone(), self.tx.clone(), Duration::from_secs(30));
                            tokio::spawn(async move {
                                let kept = net.kept_message(&thread, &message, timeout).await;
                                let _ = tx.send(Cmd::Restored { thread, message, kept, reply });
                            });
                        }
                    },
                }
            }
            Cmd::Restored { thread, message, kept, reply } => {
                let r = match kept {
                    Ok(Some(mut m)) => {
                        m.id = message;
                        self.client.local_op(now, Some(&thread), LocalOp::Restore { message: m })
                    }
                    Ok(None) => Err(format!("the server does not have message {message} of {thread}")),
                    Err(f) => Err(format!("cannot fetch the deleted message from the server: {}", f.describe())),
                };
                self.perform().await;
                let _ = reply.send(r);
            }
            Cmd::Read(f) => f(&self.client.engine),
            Cmd::GetThread { id, reply } => {
                let _ = reply.send(self.client.thread_value(now, &id).map(ThreadFile));
            }
            Cmd::ListThreads { reply } => {
                let _ = reply.send(self.list_threads());
            }
            Cmd::ListConflicts { reply } => {
                let conflicts = self.client.conflicts().and_then(|cs| cs.iter().map(Conflict::try_from).collect());
                let _ = reply.send(conflicts.map(|conflicts| ListConflictsResult { conflicts }));
            }
            Cmd::Files(paths) => {
                for p in paths {
                    self.file_changed(&p);
                    // One file's step at a time: its bodies go to the store
                    // before the next file is read.
                    self.perform().await;
                }
            }
            Cmd::Rescan => {
                let mut entries: Vec<PathBuf> = std::fs::read_dir(&self.cfg.threads_dir)
                    .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
                    .unwrap_or_default();
                entries.extend(self.client.files.stores.scan());
                for p in entries {
                    self.file_changed(&p);
                    self.perform().await;
                }
            }
            Cmd::Displaced { id, path, expected, attempt } => self.check_displaced(&id, &path, expected, attempt),
            Cmd::OldLog { log, old, from, attempt } => {
                let upto = files::drain_into(&old, from, &log);
                if upto > from {
                    self.file_changed(&log);
                }
                self.follow_old_log(log, old, upto, attempt + 1);
            }
            Cmd::Pushed(req, r) => self.client.engine.handle_push(now, req, r),
            Cmd::Pulled(req, r) => {
                self.pulls.remove(&req);
                if let PullOutcome::Ok(resp) = &r {
                    let missing = self.client.missing_bodies(resp);
                    if !missing.is_empty() {
                        self.fetch_bodies(req, r, missing);
                        return;
                    }
                }
                self.client.handle_pull(now, req, r);
            }
            Cmd::Fetched(req, mut resp, fetched) => {
                self.pulls.remove(&req);
                let r = match self.client.fill_bodies(&mut resp, &fetched) {
                    Ok(()) => PullOutcome::Ok(resp),
                    Err(message) => PullOutcome::Failed(Failure::Http { status: 500, retry_after: None, message }),
                };
                self.client.handle_pull(now, req, r);
            }
            Cmd::Probed(req, r) => self.client.engine.handle_probe(now, req, r),
            Cmd::Reconfigure(cfg) => {
                if cfg.server != self.cfg.server || cfg.token != self.cfg.token {
                    self.net = Net::new(&cfg.server, cfg.token.clone());
                    self.cfg.server = cfg.server;
                    self.cfg.token = cfg.token;
                    self.client.engine.credentials_changed(now);
                }
            }
        }
    }

    /// The threads the store holds, as the engine sees them where it has
    /// them loaded.
    fn list_threads(&self) -> Result<ListThreadsResult, String> {
        let mut out = std::collections::BTreeMap::new();
        for t in self.client.store.list_threads()? {
            let (source, project) = ThreadSummary::origin(&t.env);
            let v = ThreadSummary {
                id: t.id.to_string(),
                title: t.title,
                version: t.version,
                message_count: t.message_count,
                state: ThreadState::Synced,
                source,
                project,
            };
            out.insert(t.id, v);
        }
        let engine = &self.client.engine;
        for id in engine.thread_ids() {
            let (Some(t), Some(s)) = (engine.thread(id), engine.thread_status(id)) else { continue };
            let (source, project) = ThreadSummary::origin(&t.env);
            let v = ThreadSummary {
                id: id.to_string(),
                title: t.title.clone(),
                version: t.v,
                message_count: t.messages.len(),
                state: s.state.into(),
                source,
                project,
            };
            out.insert(id.clone(), v);
        }
        Ok(ListThreadsResult { threads: out.into_values().collect() })
    }

    /// Performs everything the engine asked for: the disk side through the
    /// client, then the rest in order.
    async fn perform(&mut self) {
        let now = self.now();
        let out = match self.client.step(now, &mut |_| false) {
            Ok(out) => out,
            Err(StepError::Store(e)) => {
                // Without the state saved nothing else of the step may happen.
                tracing::error!(error = %e, "cannot save sync state; exiting");
                self.editor.show_message(MessageType::ERROR, format!("threadsync: cannot save sync state: {e}")).await;
                std::process::exit(1);
            }
            Err(StepError::Crashed) => unreachable!("nothing stops a real step"),
        };
        for f in out.follow_ups {
            match f {
                FollowUp::Displaced { thread, path, expected } => self.schedule_displaced(&thread, &path, expected, 1),
                FollowUp::OldLog { log, old, from } => self.follow_old_log(log, old, from, 0),
            }
        }
        for a in out.actions {
            self.act(a).await;
        }
    }
}

/// This machine's host name (the kernel's), if it has a usable one.
fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok().or_else(|| std::env::var("HOSTNAME").ok())?;
    let name = name.trim();
    (!name.is_empty() && name.len() <= crate::wire::MAX_MACHINE_NAME && !name.chars().any(char::is_control))
        .then(|| name.to_string())
}
