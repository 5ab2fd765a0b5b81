//! The engine driver: the one task that owns the `SyncEngine`. Everything
//! else (LSP handlers, the file watcher, HTTP calls) sends it messages, so
//! sync state is never touched concurrently. Its loop is quinn's: perform the
//! engine's actions, sleep until `poll_timeout()` or the next message.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};
use tower_lsp_server::Client;
use tower_lsp_server::lsp_types::MessageType;

use crate::engine::retry::Failure;
use crate::engine::{
    Action, Choice, EngineConfig, LocalOp, LocalResult, PullOutcome, ReqId, State, Status, SyncEngine,
};
use crate::lsp::config::Config;
use crate::lsp::disk::{self, FileRead, StateDir};
use crate::lsp::net::Net;
use crate::lsp::notify;
use crate::model::ThreadId;
use crate::time::Time;
use crate::wire::PushResponse;

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
    /// A read of engine state, answered inside the closure.
    Read(Box<dyn FnOnce(&SyncEngine) + Send>),
    Files(Vec<PathBuf>),
    Rescan,
    Pushed(ReqId, Result<PushResponse, Failure>),
    Pulled(ReqId, PullOutcome),
    Probed(ReqId, Result<(), Failure>),
    Reconfigure(Config),
}

pub struct Driver {
    engine: SyncEngine,
    cfg: Config,
    net: Net,
    state: StateDir,
    client: Client,
    tx: mpsc::UnboundedSender<Cmd>,
    /// Hash of each thread file as last read or written: a watcher event for
    /// content we already know (our own write) is not a change.
    known: HashMap<ThreadId, [u8; 32]>,
    /// Each thread file's content as last read or written: what an assistant
    /// rewriting the file started from.
    last_file: HashMap<ThreadId, crate::model::Thread>,
    pulls: HashMap<ReqId, tokio::task::JoinHandle<()>>,
    tickets: HashMap<u64, Reply<()>>,
    status: watch::Sender<Value>,
    clock: (Instant, u64),
    told_unauthorized: bool,
    offline_since: Option<Instant>,
    told_offline: bool,
    /// The editor offered work-done progress (`window.workDoneProgress`).
    progress: bool,
    /// Ends the first-sync progress, when one is shown.
    first_sync: Option<oneshot::Sender<String>>,
    first_sync_done: bool,
    /// Ends the progress of each large upload, by request.
    uploads: HashMap<ReqId, oneshot::Sender<String>>,
}

/// Pushes larger than this show progress.
const LARGE_PUSH: usize = 1 << 20;

/// Shows `$/progress` for a piece of long work until `done` says how it ended.
fn show_progress(client: Client, token: &str, title: String) -> oneshot::Sender<String> {
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

/// RFC 3339 (UTC, milliseconds) from ms since the Unix epoch.
pub fn rfc3339(ms: u64) -> String {
    let (secs, millis) = (ms / 1000, ms % 1000);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The `threadsync/status` payload.
pub fn status_json(s: &Status) -> Value {
    let mut v = json!({
        "state": s.state,
        "pending": s.pending,
        "conflicts": s.conflicts,
        "online": s.online,
        "lastSync": s.last_sync.map(|t| rfc3339(t.as_millis())),
    });
    if let Some(m) = &s.message {
        v["message"] = json!(m);
    }
    v
}

impl Driver {
    pub fn start(
        cfg: Config,
        client: Client,
        status: watch::Sender<Value>,
        progress: bool,
    ) -> Result<mpsc::UnboundedSender<Cmd>, String> {
        std::fs::create_dir_all(&cfg.threads_dir)
            .map_err(|e| format!("cannot create {}: {e}", cfg.threads_dir.display()))?;
        let state = StateDir::open(cfg.state_dir.clone())
            .map_err(|e| format!("cannot use {}: {e}", cfg.state_dir.display()))?;
        let disk::Restore { restored, errors, hashes: known } = state.restore(&cfg.threads_dir);
        let wall =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let clock = (Instant::now(), wall);
        let engine_cfg = EngineConfig { poll: cfg.poll, flush_when_idle: true, ..EngineConfig::default() };
        let seed = wall ^ u64::from(std::process::id()).rotate_left(32);
        let mut engine = SyncEngine::new(engine_cfg, seed, Time(wall), restored);
        for (id, e) in errors {
            engine.local_error(Time(wall), id, e);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        crate::lsp::watch::spawn(cfg.threads_dir.clone(), tx.clone());
        let driver = Driver {
            engine,
            net: Net::new(&cfg.server, cfg.token.clone()),
            cfg,
            state,
            client,
            tx: tx.clone(),
            known: known.into_iter().collect(),
            last_file: HashMap::new(),
            pulls: HashMap::new(),
            tickets: HashMap::new(),
            status,
            clock,
            told_unauthorized: false,
            offline_since: None,
            told_offline: false,
            progress,
            first_sync: None,
            first_sync_done: false,
            uploads: HashMap::new(),
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
        loop {
            self.perform().await;
            let wake = self.engine.poll_timeout().map(|t| {
                let now = self.now();
                tokio::time::Instant::now() + t.saturating_since(now)
            });
            let cmd = match wake {
                Some(at) => tokio::select! {
                    cmd = rx.recv() => cmd,
                    _ = tokio::time::sleep_until(at) => {
                        let now = self.now();
                        self.engine.handle_timeout(now);
                        continue;
                    }
                },
                None => rx.recv().await,
            };
            let Some(cmd) = cmd else { return };
            self.handle(cmd).await;
            self.check_offline().await;
        }
    }

    async fn handle(&mut self, cmd: Cmd) {
        let now = self.now();
        match cmd {
            Cmd::Local { thread, op, reply } => {
                let r = self.engine.local_op(now, thread.as_ref(), op);
                // Answer only once the change is on disk.
                self.perform().await;
                let _ = reply.send(r);
            }
            Cmd::ForceSync { thread, reply } => {
                let ticket = self.engine.force_sync(now, thread);
                self.tickets.insert(ticket, reply);
            }
            Cmd::Resolve { id, choose, reply } => {
                let r = self.engine.resolve_conflict(now, &id, choose);
                self.perform().await;
                let _ = reply.send(r);
            }
            Cmd::Read(f) => f(&self.engine),
            Cmd::Files(paths) => {
                for p in paths {
                    self.file_changed(now, &p);
                }
            }
            Cmd::Rescan => {
                let entries: Vec<PathBuf> = std::fs::read_dir(&self.cfg.threads_dir)
                    .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
                    .unwrap_or_default();
                for p in entries {
                    self.file_changed(now, &p);
                }
            }
            Cmd::Pushed(req, r) => {
                if let Some(done) = self.uploads.remove(&req) {
                    let _ = done.send(if r.is_ok() { "uploaded".into() } else { "will retry".into() });
                }
                self.engine.handle_push(now, req, r);
            }
            Cmd::Pulled(req, r) => {
                self.pulls.remove(&req);
                let first_done = !self.first_sync_done && matches!(&r, PullOutcome::Ok(p) if p.up_to_date);
                self.engine.handle_pull(now, req, r);
                if first_done {
                    self.first_sync_done = true;
                    if let Some(done) = self.first_sync.take() {
                        let _ = done.send(format!("{} threads", self.engine.thread_ids().count()));
                    }
                }
            }
            Cmd::Probed(req, r) => self.engine.handle_probe(now, req, r),
            Cmd::Reconfigure(cfg) => {
                if cfg.server != self.cfg.server || cfg.token != self.cfg.token {
                    self.net = Net::new(&cfg.server, cfg.token.clone());
                    self.told_unauthorized = false;
                    self.cfg.server = cfg.server;
                    self.cfg.token = cfg.token;
                    self.engine.credentials_changed(now);
                }
            }
        }
    }

    fn file_changed(&mut self, now: Time, path: &std::path::Path) {
        let id = match disk::thread_file_id(path) {
            None => return,
            Some(Err(e)) => {
                tracing::warn!("{e}; ignored");
                return;
            }
            Some(Ok(id)) => id,
        };
        match disk::read_thread_file(path, &id) {
            FileRead::Thread(t, h) => {
                if self.known.get(&id) == Some(&h) {
                    return;
                }
                self.known.insert(id.clone(), h);
                let based_on = self.last_file.insert(id, t.clone());
                self.engine.local_snapshot_from(now, t, based_on);
            }
            FileRead::Invalid(id, e) => {
                self.known.remove(&id);
                self.engine.local_error(now, id, e.to_string());
            }
            // Deleting a thread file does not delete the thread.
            FileRead::Gone(_) => {}
        }
    }

    /// Performs every action the engine asked for, in order.
    async fn perform(&mut self) {
        while let Some(action) = self.engine.poll_action() {
            self.act(action).await;
        }
    }

    async fn act(&mut self, action: Action) {
        match action {
            Action::Push { req, body, timeout } => {
                let bytes: usize = body.mutations.iter().flat_map(|m| &m.ops).map(|o| o.size()).sum();
                if self.progress && bytes > LARGE_PUSH {
                    let title = format!("threadsync: uploading {:.1} MB", bytes as f64 / 1e6);
                    self.uploads
                        .insert(req, show_progress(self.client.clone(), &format!("threadsync-push-{req}"), title));
                }
                let (net, tx) = (self.net.clone(), self.tx.clone());
                tokio::spawn(async move {
                    let r = net.push(&body, timeout).await;
                    let _ = tx.send(Cmd::Pushed(req, r));
                });
            }
            Action::Pull { req, cursor, wait, timeout } => {
                // A first sync (or a refetch) pages through whole threads.
                let snapshot = !matches!(cursor, Some(crate::wire::Cursor::Log(_)));
                if self.progress && snapshot && !self.first_sync_done && self.first_sync.is_none() {
                    let title = "threadsync: first sync".to_string();
                    self.first_sync = Some(show_progress(self.client.clone(), "threadsync-first-sync", title));
                }
                let (net, tx) = (self.net.clone(), self.tx.clone());
                let h = tokio::spawn(async move {
                    let r = net.pull(cursor.as_ref(), wait, timeout).await;
                    let _ = tx.send(Cmd::Pulled(req, r));
                });
                self.pulls.insert(req, h);
            }
            Action::CancelPull { req } => {
                if let Some(h) = self.pulls.remove(&req) {
                    h.abort();
                }
            }
            Action::Probe { req, timeout } => {
                let (net, tx) = (self.net.clone(), self.tx.clone());
                tokio::spawn(async move {
                    let r = net.probe(timeout).await;
                    let _ = tx.send(Cmd::Probed(req, r));
                });
            }
            Action::WriteThread { thread, .. } => {
                let path = self.cfg.threads_dir.join(format!("{}.json", thread.id));
                // Someone (an assistant) wrote the file since we last read or
                // wrote it, and the watcher has not told us yet: take that
                // change in first rather than overwrite it. The engine writes
                // the merged result once it has it.
                if let Ok(current) = std::fs::read(&path) {
                    let h = disk::hash(&current);
                    if self.known.get(&thread.id).is_some_and(|k| *k != h) {
                        let now = self.now();
                        self.file_changed(now, &path);
                        return;
                    }
                }
                let bytes = disk::thread_bytes(&thread);
                match disk::write_atomic(&path, &bytes) {
                    Ok(()) => {
                        self.known.insert(thread.id.clone(), disk::hash(&bytes));
                        self.last_file.insert(thread.id.clone(), thread);
                    }
                    Err(e) => tracing::error!(thread = %thread.id, error = %e, "cannot write the thread file"),
                }
            }
            Action::SaveBase { doc } => self.persist("base", self.state.save_base(&doc)),
            Action::SaveOutbox { thread_id, ops } => self.persist("outbox", self.state.save_outbox(&thread_id, &ops)),
            Action::SaveCursor { cursor } => self.persist("cursor", self.state.save_cursor(&cursor)),
            Action::SaveConflicts { conflicts } => self.persist("conflicts", self.state.save_conflicts(&conflicts)),
            Action::Status(s) => self.status_changed(&s).await,
            Action::ThreadStatus(s) => {
                let mut v = serde_json::to_value(&s).unwrap_or_default();
                v["lastSync"] = json!(s.last_sync.map(|t| rfc3339(t.as_millis())));
                self.client.send_notification::<notify::ThreadStatus>(v).await;
            }
            Action::ThreadUpdated { thread_id, version, title, message_count, origin } => {
                let v = json!({ "threadId": thread_id, "version": version, "title": title, "messageCount": message_count, "origin": origin });
                self.client.send_notification::<notify::ThreadUpdated>(v).await;
            }
            Action::Rollback { thread_id, reason, ops } => {
                let now = self.now().as_millis();
                self.persist("rejected", self.state.save_rejected(&thread_id, &ops, &reason, now));
                self.client
                    .send_notification::<notify::Rollback>(json!({ "threadId": thread_id, "reason": reason }))
                    .await;
            }
            Action::SyncDone { ticket, result } => {
                if let Some(reply) = self.tickets.remove(&ticket) {
                    let _ = reply.send(result);
                }
            }
            Action::Warning(w) => tracing::warn!("{w}"),
        }
    }

    fn persist(&self, what: &str, r: std::io::Result<()>) {
        if let Err(e) = r {
            tracing::error!(error = %e, "cannot save the sync {what} in the state directory");
        }
    }

    async fn status_changed(&mut self, s: &Status) {
        let v = status_json(s);
        self.status.send_replace(v.clone());
        self.client.send_notification::<notify::Status>(v).await;
        // Tell the user only what they must act on.
        if s.state == State::Unauthorized && !self.told_unauthorized {
            self.told_unauthorized = true;
            let msg = format!("threadsync: {}", s.message.as_deref().unwrap_or("the server refused the token"));
            self.client.show_message(MessageType::ERROR, msg).await;
        }
        if s.state == State::Offline {
            self.offline_since.get_or_insert_with(Instant::now);
        } else {
            self.offline_since = None;
            self.told_offline = false;
        }
    }

    /// Offline for long: tell the user once (probes wake the driver at least
    /// every 30 s while offline, so this is checked often enough).
    async fn check_offline(&mut self) {
        if self.told_offline || self.offline_since.is_none_or(|t| t.elapsed() < Duration::from_secs(300)) {
            return;
        }
        self.told_offline = true;
        self.client
            .show_message(
                MessageType::WARNING,
                "threadsync: the sync server has been unreachable for 5 minutes; changes are kept and will sync when it is back",
            )
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn rfc3339_formats_utc_milliseconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_732_460_001_234), "2024-11-24T14:53:21.234Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
