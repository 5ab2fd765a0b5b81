//! The sidecar in process: `threadsync::lsp::serve`, what `threadsync lsp`
//! runs on stdio, spoken to in framed JSON-RPC over an in-memory pipe,
//! against the sync server's own router on the in-memory store (bound to a
//! loopback port, since the sidecar speaks HTTP). Nothing is spawned: a
//! test takes milliseconds of setup, not a process start.
//!
//! As strict as the real-process harness (`lsp_harness.rs`, whose `Ignored`
//! it shares): dropping a sidecar shuts it down (shutdown, exit), reads all
//! it wrote, and fails the test on a message neither read nor ignored.

#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, DuplexStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::common::TempDir;
use crate::common::lsp_harness::{Ignored, T, frame};
use threadsync::server::TeamId;
use threadsync::server::http::{AppState, ServerConfig, bind, router};
use threadsync::server::store::{MemStore, Store, token_hash};

pub const TOKEN: &str = "tsk_inproc_secret";

/// One test's world: a directory and a sync server with one team.
pub struct Env {
    pub dir: PathBuf,
    pub server: String,
}

/// Runs `test` on a runtime like the sidecar's own (two workers; a
/// sidecar's drop blocks in place, which needs them). The directory goes
/// only after the runtime has stopped: a sidecar's sync driver outlives its
/// LSP session (`lsp::serve`; the binary exits there) and keeps its state
/// database open until the runtime drops it.
pub fn run<F: Future<Output = ()>>(tag: &str, test: impl FnOnce(Env) -> F) {
    let dir = TempDir::new(tag);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let root = dir.0.clone();
    rt.block_on(async move {
        let server = start_server().await;
        test(Env { dir: root, server }).await;
    });
    rt.shutdown_timeout(Duration::from_secs(5));
}

/// The server's router on the in-memory store, serving until the runtime
/// stops. Its URL.
async fn start_server() -> String {
    let store = Arc::new(Mutex::new(MemStore::default()));
    store.insert_token("inproc", &TeamId::new("team").unwrap(), &token_hash(TOKEN), 0).unwrap();
    let (stop, stopping) = watch::channel(false);
    let app = router(AppState::new(store, ServerConfig::default(), stopping));
    let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        // Held pulls answer at once when `stop` goes: keep it.
        let _stop = stop;
        axum::serve(listener, app).await
    });
    url
}

impl Env {
    /// A sidecar syncing `<dir>/<name>/threads` with the team's server.
    pub async fn sidecar(&self, name: &str) -> Sidecar {
        let d = self.dir.join(name);
        self.sidecar_with(self.options(&d, &self.server, TOKEN)).await
    }

    /// A sidecar that syncs, started with `opts`; it returns once its sync
    /// engine runs.
    pub async fn sidecar_with(&self, opts: Value) -> Sidecar {
        let mut s = Sidecar::start(opts).await;
        let deadline = tokio::time::Instant::now() + T;
        while s.ok("threadsync/getStatus", json!({})).await["message"] == "starting" {
            assert!(tokio::time::Instant::now() < deadline, "the sidecar's engine never started");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        s
    }

    /// `initializationOptions` for a sidecar in `d`. Every key is given, so
    /// nothing comes from this process's environment or the user's config
    /// file (the sidecar's fallbacks).
    pub fn options(&self, d: &Path, server: &str, token: &str) -> Value {
        json!({ "server": server, "token": token, "threadsDir": d.join("threads"),
                "stateDir": d.join("state"), "poll": "longpoll" })
    }
}

pub struct Sidecar {
    /// The sidecar's stdin; `None` once closed.
    input: Option<DuplexStream>,
    /// Every message the sidecar wrote, in order.
    rx: mpsc::UnboundedReceiver<Value>,
    serving: Option<JoinHandle<()>>,
    next_id: i64,
    /// Messages received and not yet looked at.
    pub notes: Vec<Value>,
    ignored: Ignored,
    pub threads: PathBuf,
}

impl Sidecar {
    /// `lsp::serve` on a pipe, initialized with `opts` (and no `processId`:
    /// the sidecar would watch that process and exit this one with it).
    pub async fn start(opts: Value) -> Sidecar {
        let threads = opts["threadsDir"].as_str().map(PathBuf::from).unwrap_or_default();
        let (input, stdin) = tokio::io::duplex(1 << 16);
        let (stdout, output) = tokio::io::duplex(1 << 16);
        let serving = tokio::spawn(threadsync::lsp::serve(stdin, stdout));
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(read_frames(output, tx));
        let mut s = Sidecar {
            input: Some(input),
            rx,
            serving: Some(serving),
            next_id: 1,
            notes: Vec::new(),
            ignored: Ignored::default(),
            threads,
        };
        let caps = json!({ "window": { "workDoneProgress": true } });
        let init =
            s.ok("initialize", json!({ "processId": null, "capabilities": caps, "initializationOptions": opts })).await;
        assert_eq!(init["serverInfo"]["name"], "threadsync", "{init}");
        s.notify("initialized", json!({})).await;
        s
    }

    /// Writes `bytes` as they are: framing included.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.input.as_mut().expect("stdin is open").write_all(bytes).await.unwrap();
    }

    /// Writes `body` as one frame, whatever it holds.
    pub async fn send_body(&mut self, body: &[u8]) {
        let input = self.input.as_mut().expect("stdin is open");
        input.write_all(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes()).await.unwrap();
        input.write_all(body).await.unwrap();
    }

    pub async fn send(&mut self, v: &Value) {
        self.input.as_mut().expect("stdin is open").write_all(&frame(v)).await.unwrap();
    }

    pub async fn notify(&mut self, method: &str, params: Value) {
        self.send(&json!({ "jsonrpc": "2.0", "method": method, "params": params })).await;
    }

    /// Sends a request and waits for its answer (keeping what else comes).
    pub async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params })).await;
        self.answer(json!(id)).await
    }

    pub async fn answer(&mut self, id: Value) -> Value {
        let deadline = tokio::time::Instant::now() + T;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(m)) if m.get("id") == Some(&id) && m.get("method").is_none() => return m,
                Ok(Some(m)) => self.received(m).await,
                Ok(None) => panic!("the sidecar stopped before answering request {id}"),
                Err(_) => panic!("no answer to request {id}"),
            }
        }
    }

    /// The request's result; fails the test on an error.
    pub async fn ok(&mut self, method: &str, params: Value) -> Value {
        let r = self.request(method, params).await;
        assert!(r.get("error").is_none(), "{method}: {r}");
        r["result"].clone()
    }

    /// The request's error code and message; fails the test on a result.
    pub async fn error(&mut self, method: &str, params: Value) -> (i64, String) {
        let r = self.request(method, params).await;
        let code = r["error"]["code"].as_i64().unwrap_or_else(|| panic!("{method}: no error: {r}"));
        (code, r["error"]["message"].as_str().unwrap_or_default().to_string())
    }

    /// Keeps a message for the test; a request of the sidecar's (progress)
    /// is answered first, so the sidecar does not wait.
    async fn received(&mut self, m: Value) {
        if m.get("method").is_some()
            && m.get("id").is_some()
            && let Some(input) = self.input.as_mut()
        {
            let _ = input.write_all(&frame(&json!({ "jsonrpc": "2.0", "id": m["id"], "result": null }))).await;
        }
        self.notes.push(m);
    }

    /// Waits until a message matching `pred` arrives (or was already seen).
    pub async fn wait_note(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.notes.iter().position(&pred) {
            return self.notes.remove(i);
        }
        let deadline = tokio::time::Instant::now() + T;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(m)) => {
                    self.received(m).await;
                    if pred(self.notes.last().unwrap()) {
                        return self.notes.pop().unwrap();
                    }
                }
                Ok(None) => panic!("the sidecar stopped while waiting for {what}"),
                Err(_) => panic!(
                    "timed out waiting for {what}; seen: {:?}",
                    self.notes.iter().map(|m| m["method"].as_str().unwrap_or("response")).collect::<Vec<_>>()
                ),
            }
        }
    }

    pub async fn wait_status(&mut self, state: &str) -> Value {
        self.wait_note(&format!("status {state}"), |m| {
            m["method"] == "threadsync/status" && m["params"]["state"] == state
        })
        .await
    }

    /// Polls getThread until `pred` holds.
    pub async fn wait_thread(&mut self, id: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + T;
        loop {
            let r = self.request("threadsync/getThread", json!({ "threadId": id })).await;
            if let Some(t) = r.get("result").filter(|t| pred(t)) {
                return t.clone();
            }
            assert!(tokio::time::Instant::now() < deadline, "thread {id} never matched; last: {r}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Still serving: a message it could not take did not end it.
    pub fn is_serving(&self) -> bool {
        self.serving.as_ref().is_some_and(|h| !h.is_finished())
    }

    /// The test does not care whether these notifications (or requests of
    /// the sidecar's) come.
    pub fn ignore(&mut self, methods: &[&str]) {
        self.ignored.methods(methods);
    }

    /// The test does not care about `CHATTER`, except a thread's error.
    pub fn ignore_chatter(&mut self) {
        self.ignored.chatter();
    }

    /// The test does not care whether messages matching `pred` come.
    pub fn ignore_where(&mut self, pred: impl Fn(&Value) -> bool + Send + 'static) {
        self.ignored.matching(pred);
    }

    /// Shuts the sidecar down as an editor does, then reads everything it
    /// wrote: `serve` has returned and its output has ended.
    async fn read_to_end(&mut self) {
        if self.input.is_some() && self.is_serving() {
            let r = self.request("shutdown", Value::Null).await;
            assert!(r.get("error").is_none(), "shutdown: {r}");
            self.notify("exit", Value::Null).await;
        }
        self.input = None;
        if let Some(h) = self.serving.take() {
            tokio::time::timeout(T, h).await.expect("serve returns after exit").expect("serve did not panic");
        }
        loop {
            match tokio::time::timeout(T, self.rx.recv()).await.expect("the sidecar's output ends") {
                Some(m) => self.received(m).await,
                None => return,
            }
        }
    }
}

/// The sidecar's output, frame by frame, until it ends. It keeps reading
/// after the test stops listening: a sidecar whose output breaks exits the
/// process, as it must on real stdio.
async fn read_frames(output: DuplexStream, tx: mpsc::UnboundedSender<Value>) {
    let mut output = BufReader::new(output);
    loop {
        let mut len = None;
        loop {
            let mut line = String::new();
            if output.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim();
            if line.is_empty() {
                break;
            }
            if let Some(v) = line.strip_prefix("Content-Length:") {
                len = v.trim().parse::<usize>().ok();
            }
        }
        let mut body = vec![0; len.expect("Content-Length")];
        if output.read_exact(&mut body).await.is_err() {
            return;
        }
        let _ = tx.send(serde_json::from_slice(&body).expect("the sidecar writes JSON"));
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        // Drop cannot await: block this thread while `run`'s workers serve.
        let ended = tokio::task::block_in_place(|| {
            let handle = tokio::runtime::Handle::current();
            if std::thread::panicking() {
                // Best effort: a failing test has said what went wrong.
                self.input = None;
                if let Some(h) = self.serving.take() {
                    let _ = handle.block_on(tokio::time::timeout(T, h));
                }
                return false;
            }
            handle.block_on(self.read_to_end());
            true
        });
        if ended {
            self.ignored.check(&format!("the sidecar of {}", self.threads.display()), &self.notes);
        }
    }
}
