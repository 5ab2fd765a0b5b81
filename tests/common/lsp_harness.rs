//! A real server and real sidecars, spoken to as an editor does (framed
//! JSON-RPC over stdio). Shared by the sidecar tests and the propagation
//! benchmark. Each message read gets `_received_us`: microseconds since the
//! process started reading, for latency measurements.
//!
//! Strict, as ruff's test server is: a sidecar dropped with a message left
//! unread (a notification, a request of its own, a stray answer) fails the
//! test, unless the test said it does not care (`ignore`, `ignore_chatter`).
//! An error notification nobody looked at is how a bug slips by.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub fn epoch() -> Instant {
    static E: OnceLock<Instant> = OnceLock::new();
    *E.get_or_init(Instant::now)
}

pub fn received(m: &Value) -> Duration {
    Duration::from_micros(m["_received_us"].as_u64().unwrap_or(0))
}

// ----- the server ------------------------------------------------------------

pub struct Server {
    pub child: Child,
    pub addr: String,
    pub db: String,
}

impl Server {
    pub fn start(dir: &Path) -> Server {
        let db = format!("sqlite://{}", dir.join("server.sqlite").display());
        Self::start_on(&db, "127.0.0.1:0")
    }

    pub fn start_on(db: &str, listen: &str) -> Server {
        Self::start_args(db, listen, &[])
    }

    /// With extra `serve` arguments.
    pub fn start_args(db: &str, listen: &str, args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_threadsync"))
            .args(["serve", "--listen", listen, "--db", db])
            .args(args)
            .env("THREADSYNC_LOG", "info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(a) = line.split("addr=").nth(1) {
                    let _ = tx.send(a.split_whitespace().next().unwrap_or_default().to_string());
                }
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(20)).expect("server address");
        Server { child, addr, db: db.to_string() }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The sum of the server's Prometheus samples whose line starts with
    /// `prefix` (a name, or a name and the start of its labels:
    /// `threadsync_http_requests_total{route="/v1/pull"`).
    pub fn metric(&self, prefix: &str) -> u64 {
        let text = reqwest::blocking::get(format!("{}/metrics", self.url())).unwrap().text().unwrap();
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    pub fn token(&self, team: &str) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_threadsync"))
            .args(["token", "create", "--team", team, "--db", &self.db])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ----- what a test may leave unread --------------------------------------------

/// What every syncing sidecar says whatever the test does: its status, its
/// threads' states and updates, and the first sync's progress.
pub const CHATTER: &[&str] = &[
    "threadsync/status",
    "threadsync/threadStatus",
    "threadsync/threadUpdated",
    "$/progress",
    "window/workDoneProgress/create",
];

/// The messages a test said it leaves unread. Shared by this harness and
/// the in-process one (`tests/common/lsp_inprocess.rs`).
#[derive(Default)]
pub struct Ignored {
    rules: Vec<Rule>,
    everything: bool,
}

/// Whether a message may be left unread.
type Rule = Box<dyn Fn(&Value) -> bool + Send>;

/// A `threadsync/threadStatus` reporting an error for `thread`.
pub fn is_thread_error(m: &Value, thread: &str) -> bool {
    m["method"] == "threadsync/threadStatus" && m["params"]["threadId"] == thread && m["params"]["state"] == "error"
}

impl Ignored {
    pub fn methods(&mut self, methods: &[&str]) {
        let methods: Vec<String> = methods.iter().map(|m| m.to_string()).collect();
        self.rules.push(Box::new(move |m| methods.iter().any(|x| m["method"] == x.as_str())));
    }

    /// `CHATTER`, except a thread's error: that one a test must read (or
    /// ignore by name).
    pub fn chatter(&mut self) {
        self.rules.push(Box::new(|m| {
            let method = m["method"].as_str().unwrap_or_default();
            let thread_error = method == "threadsync/threadStatus" && m["params"]["state"] == "error";
            CHATTER.contains(&method) && !thread_error
        }));
    }

    pub fn matching(&mut self, pred: impl Fn(&Value) -> bool + Send + 'static) {
        self.rules.push(Box::new(pred));
    }

    /// For benchmarks, which measure rather than check.
    pub fn everything(&mut self) {
        self.everything = true;
    }

    pub fn is_everything(&self) -> bool {
        self.everything
    }

    pub fn covers(&self, m: &Value) -> bool {
        self.everything || self.rules.iter().any(|r| r(m))
    }

    /// Fails the test if `notes` holds a message it did not say it ignores.
    pub fn check(&self, who: &str, notes: &[Value]) {
        let unread: Vec<&Value> = notes.iter().filter(|m| !self.covers(m)).collect();
        let shown: Vec<String> = unread
            .iter()
            .take(20)
            .map(|m| {
                let mut m = (*m).clone();
                if let Some(o) = m.as_object_mut() {
                    o.remove("_received_us");
                }
                let text = m.to_string();
                if text.len() > 300 { format!("{}…", &text[..text.floor_char_boundary(300)]) } else { text }
            })
            .collect();
        assert!(
            unread.is_empty(),
            "{who} ended with {} message(s) the test neither read nor ignored (the first {}):\n  {}",
            unread.len(),
            shown.len(),
            shown.join("\n  ")
        );
    }
}

// ----- a sidecar, as an editor sees it --------------------------------------

pub struct Sidecar {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    /// Bytes the sidecar wrote to stdout (framing included).
    pub stdout_bytes: std::sync::Arc<std::sync::atomic::AtomicU64>,
    rx: Receiver<Value>,
    next_id: u64,
    /// Messages received and not yet looked at: notifications, the
    /// sidecar's own requests (answered), answers nobody waited for.
    pub notes: Vec<Value>,
    ignored: Ignored,
    pub threads: PathBuf,
}

pub fn frame(v: &Value) -> Vec<u8> {
    let body = serde_json::to_vec(v).unwrap();
    let mut out = format!("Content-Length: {}\r\n\r\n", body.len()).into_bytes();
    out.extend(body);
    out
}

impl Sidecar {
    pub fn spawn(dir: &Path, opts: Value, pid: Option<u32>) -> Sidecar {
        Sidecar::spawn_env(dir, opts, pid, &[])
    }

    pub fn spawn_env(dir: &Path, opts: Value, pid: Option<u32>, env: &[(&str, &str)]) -> Sidecar {
        Sidecar::spawn_in(dir, opts, pid, env, &[])
    }

    /// With the editor's workspace folders in `initialize`.
    pub fn spawn_in(dir: &Path, opts: Value, pid: Option<u32>, env: &[(&str, &str)], folders: &[&Path]) -> Sidecar {
        let threads = opts["threadsDir"].as_str().map(PathBuf::from).unwrap_or_else(|| dir.join("threads"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_threadsync"));
        cmd.arg("lsp").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null());
        // A clean environment: no config file, no stray THREADSYNC_* settings.
        cmd.env("HOME", dir).env("XDG_CONFIG_HOME", dir.join("config"));
        for k in ["THREADSYNC_SERVER", "THREADSYNC_TOKEN", "THREADSYNC_THREADS_DIR", "THREADSYNC_STATE_DIR"] {
            cmd.env_remove(k);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = mpsc::channel();
        let stdout_bytes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = stdout_bytes.clone();
        std::thread::spawn(move || {
            let count = |n: usize| counted.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            loop {
                let mut len = None;
                loop {
                    let mut line = String::new();
                    let n = stdout.read_line(&mut line).unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    count(n);
                    let line = line.trim();
                    if line.is_empty() {
                        break;
                    }
                    if let Some(v) = line.strip_prefix("Content-Length:") {
                        len = v.trim().parse::<usize>().ok();
                    }
                }
                let mut body = vec![0; len.expect("Content-Length")];
                if stdout.read_exact(&mut body).is_err() {
                    return;
                }
                count(body.len());
                let mut v: Value = serde_json::from_slice(&body).expect("the sidecar writes JSON");
                v["_received_us"] = json!(epoch().elapsed().as_micros() as u64);
                if tx.send(v).is_err() {
                    return;
                }
            }
        });
        let mut s = Sidecar {
            child,
            stdin,
            stdout_bytes,
            rx,
            next_id: 1,
            notes: Vec::new(),
            ignored: Ignored::default(),
            threads,
        };
        let folders: Vec<Value> = folders
            .iter()
            .map(|f| json!({ "uri": format!("file://{}", f.display()), "name": f.file_name().unwrap().to_string_lossy() }))
            .collect();
        let init = s.request(
            "initialize",
            json!({ "processId": pid, "capabilities": { "window": { "workDoneProgress": true } }, "initializationOptions": opts,
                    "workspaceFolders": if folders.is_empty() { Value::Null } else { Value::Array(folders) } }),
        );
        assert!(
            init["result"]["capabilities"]["executeCommandProvider"]["commands"]
                .to_string()
                .contains("threadsync.forceSync")
        );
        s.notify("initialized", json!({}));
        s
    }

    pub fn start(dir: &Path, server: &Server, token: &str) -> Sidecar {
        std::fs::create_dir_all(dir).unwrap();
        let opts = json!({
            "server": server.url(), "token": token,
            "threadsDir": dir.join("threads"), "stateDir": dir.join("state"),
        });
        Sidecar::spawn(dir, opts, None)
    }

    pub fn send(&mut self, v: &Value) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(&frame(v)).unwrap();
        stdin.flush().unwrap();
    }

    pub fn notify(&mut self, method: &str, params: Value) {
        self.send(&json!({ "jsonrpc": "2.0", "method": method, "params": params }));
    }

    /// Sends a request and waits for its answer (collecting notifications).
    pub fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }));
        self.answer(json!(id))
    }

    pub fn answer(&mut self, id: Value) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(m) if m.get("id") == Some(&id) && m.get("method").is_none() => return m,
                Ok(m) => self.received(m),
                Err(_) => panic!("no answer to request {id}"),
            }
        }
    }

    /// Keeps a message for the test to look at; a request of the sidecar's
    /// (e.g. progress) is answered first, so the sidecar does not wait.
    fn received(&mut self, m: Value) {
        if m.get("method").is_some()
            && m.get("id").is_some()
            && let Some(stdin) = self.stdin.as_mut()
        {
            // A sidecar that has exited needs no answer.
            let reply = json!({ "jsonrpc": "2.0", "id": m["id"], "result": null });
            let _ = stdin.write_all(&frame(&reply)).and_then(|()| stdin.flush());
        }
        self.notes.push(m);
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

    /// For benchmarks: nothing is checked, and dropping only kills.
    pub fn ignore_everything(&mut self) {
        self.ignored.everything();
    }

    pub fn ok(&mut self, method: &str, params: Value) -> Value {
        let r = self.request(method, params);
        assert!(r.get("error").is_none(), "{method}: {r}");
        r["result"].clone()
    }

    /// Waits until a notification matching `pred` arrives (or was already seen).
    pub fn wait_note(&mut self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.notes.iter().position(&pred) {
            return self.notes.remove(i);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(m) => {
                    self.received(m);
                    if pred(self.notes.last().unwrap()) {
                        return self.notes.pop().unwrap();
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "timed out waiting for {what}; seen: {:?}",
                    self.notes.iter().map(|m| m["method"].as_str().unwrap_or("response")).collect::<Vec<_>>()
                ),
                Err(RecvTimeoutError::Disconnected) => panic!("the sidecar exited while waiting for {what}"),
            }
        }
    }

    pub fn wait_status(&mut self, state: &str, timeout: Duration) -> Value {
        self.wait_note(&format!("status {state}"), timeout, |m| {
            m["method"] == "threadsync/status" && m["params"]["state"] == state
        })
    }

    /// Polls getThread until `pred` holds.
    pub fn wait_thread(&mut self, id: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.request("threadsync/getThread", json!({ "threadId": id }));
            if let Some(t) = r.get("result").filter(|t| pred(t)) {
                return t.clone();
            }
            assert!(Instant::now() < deadline, "thread {id} never matched; last: {r}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn close(&mut self) {
        self.stdin = None;
    }

    pub fn exited_within(&mut self, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.child.try_wait().unwrap().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sidecar {
    /// Shuts the sidecar down as an editor does (if it still runs and
    /// reads), then reads all it wrote until it exited: what is unread then
    /// is all it will ever have said.
    fn read_to_exit(&mut self) {
        if self.stdin.is_some() && self.child.try_wait().unwrap().is_none() {
            let r = self.request("shutdown", Value::Null);
            assert!(r.get("error").is_none(), "shutdown: {r}");
            self.notify("exit", Value::Null);
            self.close();
        }
        let deadline = Instant::now() + T;
        loop {
            match self.rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(m) => self.received(m),
                Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => panic!("the sidecar did not exit after `exit` or stdin closed"),
            }
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        // A failing test has said what went wrong; don't bury it.
        if self.ignored.is_everything() || std::thread::panicking() {
            self.kill9();
            return;
        }
        self.read_to_exit();
        self.kill9();
        self.ignored.check(&format!("the sidecar of {}", self.threads.display()), &self.notes);
    }
}

pub fn ids(t: &Value) -> Vec<String> {
    t["messages"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect()
}

pub fn contents(t: &Value) -> Vec<Value> {
    t["messages"].as_array().unwrap().iter().map(|m| m["content"].clone()).collect()
}

/// A loopback TCP proxy the test can cut (every connection dropped, new ones
/// refused at once) and heal. It counts the bytes clients send.
pub struct Proxy {
    addr: String,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
    pub sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Bytes the server sent back through the proxy.
    pub received: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Proxy {
    pub fn start(target: &str) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let conns: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>> = Default::default();
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (target, up2, conns2, sent2, received2) =
            (target.to_string(), up.clone(), conns.clone(), sent.clone(), received.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(&target) else { continue };
                conns2.lock().unwrap().extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                let pairs = [(client.try_clone().unwrap(), server.try_clone().unwrap(), true), (server, client, false)];
                for (mut from, mut to, upstream) in pairs {
                    let sent = sent2.clone();
                    let received = received2.clone();
                    std::thread::spawn(move || {
                        let mut buf = vec![0; 64 << 10];
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            let count = if upstream { &sent } else { &received };
                            count.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Proxy { addr, up, conns, sent, received }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn heal(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

pub const T: Duration = Duration::from_secs(20);

/// A thread file as a reader sees it: a `.json` file, or a `.jsonl` log
/// replayed (as `.json` would hold it).
pub fn read_thread_file(threads: &Path, id: &str) -> Option<Value> {
    let json = threads.join(format!("{id}.json"));
    if let Ok(bytes) = std::fs::read(&json) {
        return serde_json::from_slice(&bytes).ok();
    }
    let bytes = std::fs::read(threads.join(format!("{id}.jsonl"))).ok()?;
    let tid = threadsync::model::ThreadId::new(id).ok()?;
    let (replay, _, _) = threadsync::threadlog::replay(&bytes, &tid).ok()?;
    serde_json::to_value(replay.thread()).ok()
}

/// Appends one record to a thread log, as an assistant would (one write).
pub fn append_record(threads: &Path, id: &str, record: &Value) {
    use std::io::Write;
    let mut line = serde_json::to_vec(record).unwrap();
    line.push(b'\n');
    let mut f = std::fs::OpenOptions::new().append(true).open(threads.join(format!("{id}.jsonl"))).unwrap();
    f.write_all(&line).unwrap();
}

// ----- a process, measured ----------------------------------------------------

/// A process's resident memory, in KiB (Linux).
pub fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU time (user + system) a process has used (Linux).
pub fn cpu_time(pid: u32) -> Duration {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = s.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: u64 = fields[11..13].iter().filter_map(|f| f.parse::<u64>().ok()).sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}
