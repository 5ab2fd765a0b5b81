//! End to end, as an editor does it: the real `threadsync serve` and several
//! real `threadsync lsp` processes, spoken to in framed JSON-RPC over stdio.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

// ----- the server ------------------------------------------------------------

struct Server {
    child: Child,
    addr: String,
    db: String,
}

impl Server {
    fn start(dir: &Path) -> Server {
        let db = format!("sqlite://{}", dir.join("server.sqlite").display());
        Self::start_on(&db, "127.0.0.1:0")
    }

    fn start_on(db: &str, listen: &str) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_threadsync"))
            .args(["serve", "--listen", listen, "--db", db])
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

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn token(&self, team: &str) -> String {
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

// ----- a sidecar, as an editor sees it --------------------------------------

struct Sidecar {
    child: Child,
    stdin: Option<ChildStdin>,
    rx: Receiver<Value>,
    next_id: u64,
    /// Notifications received and not yet looked at.
    notes: Vec<Value>,
    threads: PathBuf,
}

fn frame(v: &Value) -> Vec<u8> {
    let body = serde_json::to_vec(v).unwrap();
    let mut out = format!("Content-Length: {}\r\n\r\n", body.len()).into_bytes();
    out.extend(body);
    out
}

impl Sidecar {
    fn spawn(dir: &Path, opts: Value, pid: Option<u32>) -> Sidecar {
        let threads = opts["threadsDir"].as_str().map(PathBuf::from).unwrap_or_else(|| dir.join("threads"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_threadsync"));
        cmd.arg("lsp").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null());
        // A clean environment: no config file, no stray THREADSYNC_* settings.
        cmd.env("HOME", dir).env("XDG_CONFIG_HOME", dir.join("config"));
        for k in ["THREADSYNC_SERVER", "THREADSYNC_TOKEN", "THREADSYNC_THREADS_DIR", "THREADSYNC_STATE_DIR"] {
            cmd.env_remove(k);
        }
        let mut child = cmd.spawn().unwrap();
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            loop {
                let mut len = None;
                loop {
                    let mut line = String::new();
                    if stdout.read_line(&mut line).unwrap_or(0) == 0 {
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
                if stdout.read_exact(&mut body).is_err() {
                    return;
                }
                if tx.send(serde_json::from_slice(&body).expect("the sidecar writes JSON")).is_err() {
                    return;
                }
            }
        });
        let mut s = Sidecar { child, stdin, rx, next_id: 1, notes: Vec::new(), threads };
        let init =
            s.request("initialize", json!({ "processId": pid, "capabilities": { "window": { "workDoneProgress": true } }, "initializationOptions": opts }));
        assert!(
            init["result"]["capabilities"]["executeCommandProvider"]["commands"]
                .to_string()
                .contains("threadsync.forceSync")
        );
        s.notify("initialized", json!({}));
        s
    }

    fn start(dir: &Path, server: &Server, token: &str) -> Sidecar {
        std::fs::create_dir_all(dir).unwrap();
        let opts = json!({
            "server": server.url(), "token": token,
            "threadsDir": dir.join("threads"), "stateDir": dir.join("state"),
        });
        Sidecar::spawn(dir, opts, None)
    }

    fn send(&mut self, v: &Value) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(&frame(v)).unwrap();
        stdin.flush().unwrap();
    }

    fn notify(&mut self, method: &str, params: Value) {
        self.send(&json!({ "jsonrpc": "2.0", "method": method, "params": params }));
    }

    /// Sends a request and waits for its answer (collecting notifications).
    fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }));
        self.answer(json!(id))
    }

    fn answer(&mut self, id: Value) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(m) if m.get("id") == Some(&id) && m.get("method").is_none() => return m,
                Ok(m) if m.get("method").is_some() && m.get("id").is_some() => {
                    // A request from the sidecar (e.g. progress): answer it.
                    let reply = json!({ "jsonrpc": "2.0", "id": m["id"], "result": null });
                    self.send(&reply);
                }
                Ok(m) => self.notes.push(m),
                Err(_) => panic!("no answer to request {id}"),
            }
        }
    }

    fn ok(&mut self, method: &str, params: Value) -> Value {
        let r = self.request(method, params);
        assert!(r.get("error").is_none(), "{method}: {r}");
        r["result"].clone()
    }

    /// Waits until a notification matching `pred` arrives (or was already seen).
    fn wait_note(&mut self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.notes.iter().position(&pred) {
            return self.notes.remove(i);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(m) if pred(&m) => return m,
                Ok(m) if m.get("method").is_some() && m.get("id").is_some() => {
                    let reply = json!({ "jsonrpc": "2.0", "id": m["id"], "result": null });
                    self.send(&reply);
                    self.notes.push(m);
                }
                Ok(m) => self.notes.push(m),
                Err(RecvTimeoutError::Timeout) => panic!(
                    "timed out waiting for {what}; seen: {:?}",
                    self.notes.iter().map(|m| m["method"].as_str().unwrap_or("response")).collect::<Vec<_>>()
                ),
                Err(RecvTimeoutError::Disconnected) => panic!("the sidecar exited while waiting for {what}"),
            }
        }
    }

    fn wait_status(&mut self, state: &str, timeout: Duration) -> Value {
        self.wait_note(&format!("status {state}"), timeout, |m| {
            m["method"] == "threadsync/status" && m["params"]["state"] == state
        })
    }

    /// Polls getThread until `pred` holds.
    fn wait_thread(&mut self, id: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
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

    fn close(&mut self) {
        self.stdin = None;
    }

    fn exited_within(&mut self, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.child.try_wait().unwrap().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn ids(t: &Value) -> Vec<String> {
    t["messages"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect()
}

fn contents(t: &Value) -> Vec<Value> {
    t["messages"].as_array().unwrap().iter().map(|m| m["content"].clone()).collect()
}

/// A loopback TCP proxy the test can cut (every connection dropped, new ones
/// refused at once) and heal.
struct Proxy {
    addr: String,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    fn start(target: &str) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let conns: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>> = Default::default();
        let (target, up2, conns2) = (target.to_string(), up.clone(), conns.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(&target) else { continue };
                conns2.lock().unwrap().extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                for (mut from, mut to) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)]
                {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Proxy { addr, up, conns }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    fn heal(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

const T: Duration = Duration::from_secs(20);

// ----- tests -------------------------------------------------------------------

/// The seed's concurrent-edits case, for real: two clients append to the same
/// thread at once and end with equal threads holding both messages.
#[test]
fn concurrent_edits_from_two_clients_converge() {
    let dir = common::TempDir::new("lsp-conc");
    let server = Server::start(&dir.0);
    let token = server.token("team");
    let mut a = Sidecar::start(&dir.0.join("a"), &server, &token);
    let mut b = Sidecar::start(&dir.0.join("b"), &server, &token);
    a.wait_status("synced", T);
    let id = a.ok("threadsync/createThread", json!({ "title": "shared" }))["threadId"].as_str().unwrap().to_string();
    b.wait_thread(&id, T, |t| t["title"] == "shared");
    let ra =
        a.ok("threadsync/appendMessage", json!({ "threadId": id, "role": "user", "content": "Hello from user 1" }));
    let rb =
        b.ok("threadsync/appendMessage", json!({ "threadId": id, "role": "user", "content": "Hello from user 2" }));
    assert!(ra["messageId"].is_string() && ra["version"].is_u64());
    assert!(rb["messageId"].is_string());
    let ta = a.wait_thread(&id, T, |t| t["messages"].as_array().unwrap().len() == 2);
    let tb = b.wait_thread(&id, T, |t| t["messages"].as_array().unwrap().len() == 2);
    assert_eq!(ta["messages"], tb["messages"]);
    assert_eq!(ta["title"], tb["title"]);
    // A remote change is announced.
    b.wait_note("threadUpdated from remote", T, |m| {
        m["method"] == "threadsync/threadUpdated" && m["params"]["origin"] == "remote"
    });
    // The file on disk says the same.
    let file: Value =
        serde_json::from_slice(&std::fs::read(dir.0.join("b/threads").join(format!("{id}.json"))).unwrap()).unwrap();
    assert_eq!(file["messages"], tb["messages"]);
}

/// An assistant writing a thread file directly reaches the other client; a
/// remote change written back keeps fields threadsync does not know.
#[test]
fn assistant_file_writes_sync_and_unknown_fields_survive() {
    let dir = common::TempDir::new("lsp-file");
    let server = Server::start(&dir.0);
    let token = server.token("team");
    let mut a = Sidecar::start(&dir.0.join("a"), &server, &token);
    let mut b = Sidecar::start(&dir.0.join("b"), &server, &token);
    a.wait_status("synced", T);
    b.wait_status("synced", T);
    let file = json!({ "id": "T-file", "title": "from the assistant", "created": 5, "custom": { "keep": true },
        "messages": [ { "role": "user", "content": "question", "timestamp": 1, "model": "m1" },
                      { "id": "m-2", "role": "assistant", "content": [ { "type": "text", "text": "answer" } ], "timestamp": 2 } ] });
    std::fs::write(a.threads.join("T-file.json"), serde_json::to_vec_pretty(&file).unwrap()).unwrap();
    let tb = b.wait_thread("T-file", T, |t| t["messages"].as_array().is_some_and(|m| m.len() == 2));
    assert_eq!(tb["title"], "from the assistant");
    assert_eq!(tb["messages"][0]["model"], "m1", "message fields travel with the message");
    assert_eq!(tb["messages"][1]["content"][0]["text"], "answer");
    // B appends; A's file is rewritten with it and keeps "custom".
    b.ok("threadsync/appendMessage", json!({ "threadId": "T-file", "role": "user", "content": "follow-up" }));
    let deadline = Instant::now() + T;
    loop {
        let v: Value = serde_json::from_slice(&std::fs::read(a.threads.join("T-file.json")).unwrap()).unwrap();
        if v["messages"].as_array().unwrap().len() == 3 {
            assert_eq!(v["custom"], json!({ "keep": true }));
            assert!(v["messages"][0]["id"].as_str().unwrap().starts_with("m-d"), "an id was derived and written back");
            break;
        }
        assert!(Instant::now() < deadline, "A's file never got B's message");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// kill -9 of a sidecar right after a file write, then a restart: the change
/// arrives, once.
#[test]
fn a_change_survives_kill_9_of_the_sidecar() {
    let dir = common::TempDir::new("lsp-kill");
    let server = Server::start(&dir.0);
    let token = server.token("team");
    let mut b = Sidecar::start(&dir.0.join("b"), &server, &token);
    let mut a = Sidecar::start(&dir.0.join("a"), &server, &token);
    a.wait_status("synced", T);
    let id = a.ok("threadsync/createThread", json!({ "title": "k" }))["threadId"].as_str().unwrap().to_string();
    b.wait_thread(&id, T, |t| t["title"] == "k");
    let path = a.threads.join(format!("{id}.json"));
    let mut file: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    file["messages"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "id": "m-kill", "role": "user", "content": "written just before the crash" }));
    std::fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();
    a.kill9();
    let mut a = Sidecar::start(&dir.0.join("a"), &server, &token);
    let tb = b.wait_thread(&id, T, |t| !t["messages"].as_array().unwrap().is_empty());
    assert_eq!(ids(&tb), ["m-kill"]);
    // Settle, then check nothing doubled anywhere.
    a.ok("workspace/executeCommand", json!({ "command": "threadsync.forceSync", "arguments": [] }));
    b.ok("workspace/executeCommand", json!({ "command": "threadsync.forceSync", "arguments": [] }));
    assert_eq!(ids(&b.ok("threadsync/getThread", json!({ "threadId": id }))), ["m-kill"]);
    assert_eq!(ids(&a.ok("threadsync/getThread", json!({ "threadId": id }))), ["m-kill"]);
}

/// Concurrent title changes: both converge, a conflict is listed, and
/// resolving it with `local` makes that side win everywhere.
#[test]
fn concurrent_titles_conflict_and_resolve() {
    let dir = common::TempDir::new("lsp-title");
    let server = Server::start(&dir.0);
    let token = server.token("team");
    let mut a = Sidecar::start(&dir.0.join("a"), &server, &token);
    let mut b = Sidecar::start(&dir.0.join("b"), &server, &token);
    a.wait_status("synced", T);
    let id = a.ok("threadsync/createThread", json!({ "title": "base" }))["threadId"].as_str().unwrap().to_string();
    b.wait_thread(&id, T, |t| t["title"] == "base");
    a.ok("threadsync/setTitle", json!({ "threadId": id, "title": "A's title" }));
    b.ok("threadsync/setTitle", json!({ "threadId": id, "title": "B's title" }));
    a.ok("workspace/executeCommand", json!({ "command": "threadsync.forceSync", "arguments": [id] }));
    b.ok("workspace/executeCommand", json!({ "command": "threadsync.forceSync", "arguments": [id] }));
    a.ok("workspace/executeCommand", json!({ "command": "threadsync.forceSync", "arguments": [] }));
    let (ta, tb) = (
        a.ok("threadsync/getThread", json!({ "threadId": id })),
        b.ok("threadsync/getThread", json!({ "threadId": id })),
    );
    assert_eq!(ta["title"], tb["title"], "converged");
    // Whoever lost has the conflict.
    let (loser, winner_title) = if ta["title"] == "A's title" { (&mut b, "A's title") } else { (&mut a, "B's title") };
    let conflicts = loser.ok("threadsync/listConflicts", json!({}))["conflicts"].clone();
    assert_eq!(conflicts.as_array().unwrap().len(), 1, "{conflicts}");
    let c = &conflicts[0];
    assert_eq!(
        (c["kind"].as_str(), c["base"].as_str(), c["remote"].as_str()),
        (Some("title"), Some("base"), Some(winner_title))
    );
    let losing_title = c["local"].as_str().unwrap().to_string();
    loser.wait_status("conflict", T);
    loser.ok(
        "workspace/executeCommand",
        json!({ "command": "threadsync.resolveConflict", "arguments": [{ "conflictId": c["id"], "choose": "local" }] }),
    );
    loser.ok("workspace/executeCommand", json!({ "command": "threadsync.forceSync", "arguments": [] }));
    assert!(loser.ok("threadsync/listConflicts", json!({}))["conflicts"].as_array().unwrap().is_empty());
    a.wait_thread(&id, T, |t| t["title"] == losing_title.as_str());
    b.wait_thread(&id, T, |t| t["title"] == losing_title.as_str());
}

/// Bad input gets a clear error and the sidecar keeps running.
#[test]
fn bad_input_is_answered_and_the_sidecar_stays_up() {
    let dir = common::TempDir::new("lsp-bad");
    let server = Server::start(&dir.0);
    let token = server.token("team");
    let mut a = Sidecar::start(&dir.0.join("a"), &server, &token);
    a.wait_status("synced", T);
    // Malformed JSON: a parse error, and the process stays alive.
    let body = b"{\"jsonrpc\": \"2.0\", \"id\": 99, \"method\": ";
    let stdin = a.stdin.as_mut().unwrap();
    stdin.write_all(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes()).unwrap();
    stdin.write_all(body).unwrap();
    stdin.flush().unwrap();
    let parse = a.wait_note("parse error", T, |m| m["error"]["code"] == -32700);
    assert!(parse["error"]["message"].is_string());
    // Unknown method, wrong parameter types, hostile ids.
    assert_eq!(a.request("threadsync/nope", json!({}))["error"]["code"], -32601);
    assert_eq!(
        a.request("threadsync/appendMessage", json!({ "threadId": 5, "role": [], "content": "x" }))["error"]["code"],
        -32602
    );
    let r = a.request("threadsync/getThread", json!({ "threadId": "../../etc/passwd" }));
    assert_eq!(r["error"]["code"], -32602);
    assert!(r["error"]["message"].as_str().unwrap().contains("only letters"), "{r}");
    let r = a.request("workspace/executeCommand", json!({ "command": "threadsync.resolveConflict", "arguments": [{ "conflictId": "c-none", "choose": "local" }] }));
    assert!(r["error"]["message"].as_str().unwrap().contains("no conflict"), "{r}");
    let r = a.request(
        "workspace/executeCommand",
        json!({ "command": "threadsync.resolveConflict", "arguments": [{ "conflictId": "x", "choose": "both" }] }),
    );
    assert_eq!(r["error"]["code"], -32602);
    // A half-written file: reported for that thread, tried again when it changes.
    std::fs::write(a.threads.join("T-half.json"), b"{\"id\": \"T-half\", \"messages\": [{\"role\": \"us").unwrap();
    let st = a.wait_note("threadStatus error", T, |m| {
        m["method"] == "threadsync/threadStatus" && m["params"]["threadId"] == "T-half"
    });
    assert_eq!(st["params"]["state"], "error");
    assert!(st["params"]["error"].as_str().unwrap().contains("not valid thread JSON"), "{st}");
    std::fs::write(
        a.threads.join("T-half.json"),
        br#"{"id": "T-half", "messages": [{"role": "user", "content": "whole now"}]}"#,
    )
    .unwrap();
    a.wait_note("threadStatus recovered", T, |m| {
        m["method"] == "threadsync/threadStatus"
            && m["params"]["threadId"] == "T-half"
            && m["params"]["state"] != "error"
    });
    // A file whose name is not a thread id is ignored.
    std::fs::write(a.threads.join("not a thread.json"), b"{}").unwrap();
    let st = a.ok("threadsync/getStatus", json!({}));
    assert!(st["state"].is_string());
    let t = a.wait_thread("T-half", T, |t| t["messages"].as_array().is_some_and(|m| m.len() == 1));
    assert_eq!(t["messages"][0]["content"], "whole now");
    let list = a.ok("threadsync/listThreads", json!({}));
    assert!(list["threads"].as_array().unwrap().iter().any(|t| t["id"] == "T-half"), "{list}");
    assert!(a.child.try_wait().unwrap().is_none(), "still running");
}

/// A wrong token puts the sidecar in `unauthorized` (and tells the user once);
/// another team's token sees none of this team's threads.
#[test]
fn wrong_token_is_unauthorized_and_teams_are_isolated() {
    let dir = common::TempDir::new("lsp-auth");
    let server = Server::start(&dir.0);
    let token = server.token("team");
    let mut a = Sidecar::start(&dir.0.join("a"), &server, &token);
    a.wait_status("synced", T);
    a.ok("threadsync/createThread", json!({ "title": "secret" }));
    a.ok("workspace/executeCommand", json!({ "command": "threadsync.forceSync", "arguments": [] }));
    let mut bad = Sidecar::start(&dir.0.join("bad"), &server, "tsk_0000000000_wrong");
    let st = bad.wait_status("unauthorized", T);
    assert!(st["params"]["message"].as_str().unwrap().contains("token"), "{st}");
    bad.wait_note("showMessage", T, |m| m["method"] == "window/showMessage");
    // Fixing the token live (didChangeConfiguration) recovers without a restart.
    let other = server.token("other-team");
    bad.notify("workspace/didChangeConfiguration", json!({ "settings": { "threadsync": { "token": other } } }));
    bad.wait_status("synced", T);
    let list = bad.ok("threadsync/listThreads", json!({}));
    assert!(list["threads"].as_array().unwrap().is_empty(), "another team sees nothing: {list}");
}

/// The sidecar exits within a second of stdin closing, of `exit`, and of
/// its editor process dying.
#[test]
fn the_sidecar_never_outlives_its_editor() {
    let dir = common::TempDir::new("lsp-exit");
    let server = Server::start(&dir.0);
    let token = server.token("team");
    let mut a = Sidecar::start(&dir.0.join("a"), &server, &token);
    a.wait_status("synced", T);
    a.close();
    assert!(a.exited_within(Duration::from_secs(1)), "after stdin closed");

    let mut b = Sidecar::start(&dir.0.join("b"), &server, &token);
    b.ok("shutdown", Value::Null);
    b.notify("exit", Value::Null);
    assert!(b.exited_within(Duration::from_secs(1)), "after exit");

    // An "editor" that dies: the sidecar notices through processId.
    let mut editor = Command::new("sleep").arg("60").spawn().unwrap();
    let d = dir.0.join("d");
    std::fs::create_dir_all(&d).unwrap();
    let opts =
        json!({ "server": server.url(), "token": token, "threadsDir": d.join("threads"), "stateDir": d.join("state") });
    let mut c = Sidecar::spawn(&d, opts, Some(editor.id()));
    c.wait_status("synced", T);
    editor.kill().unwrap();
    editor.wait().unwrap();
    assert!(c.exited_within(Duration::from_millis(1500)), "after the editor died");
}

/// The seed's network-partition case, for real: cut off, a client queues its
/// changes (status offline, one thread pending); healed, everything arrives
/// and the status returns to synced.
#[test]
fn a_partition_queues_changes_and_healing_delivers_them() {
    let dir = common::TempDir::new("lsp-part");
    let server = Server::start(&dir.0);
    let token = server.token("team");
    let proxy = Proxy::start(&server.addr);
    let a_dir = dir.0.join("a");
    std::fs::create_dir_all(&a_dir).unwrap();
    let opts = json!({ "server": proxy.url(), "token": token, "threadsDir": a_dir.join("threads"), "stateDir": a_dir.join("state") });
    let mut a = Sidecar::spawn(&a_dir, opts, None);
    let mut b = Sidecar::start(&dir.0.join("b"), &server, &token);
    a.wait_status("synced", T);
    let id = a.ok("threadsync/createThread", json!({ "title": "p" }))["threadId"].as_str().unwrap().to_string();
    a.ok("threadsync/appendMessage", json!({ "threadId": id, "role": "user", "content": "Online message" }));
    b.wait_thread(&id, T, |t| t["messages"].as_array().unwrap().len() == 1);

    proxy.cut();
    a.ok("threadsync/appendMessage", json!({ "threadId": id, "role": "user", "content": "Offline message 1" }));
    a.ok("threadsync/appendMessage", json!({ "threadId": id, "role": "user", "content": "Offline message 2" }));
    let st = a.wait_status("offline", T);
    assert_eq!(st["params"]["online"], false);
    let st = a.ok("threadsync/getStatus", json!({}));
    assert_eq!((st["state"].as_str(), st["pending"].as_u64()), (Some("offline"), Some(1)), "{st}");
    // Visible locally at once (optimistic), not yet elsewhere.
    assert_eq!(a.ok("threadsync/getThread", json!({ "threadId": id }))["messages"].as_array().unwrap().len(), 3);
    assert_eq!(b.ok("threadsync/getThread", json!({ "threadId": id }))["messages"].as_array().unwrap().len(), 1);

    proxy.heal();
    let tb = b.wait_thread(&id, Duration::from_secs(40), |t| t["messages"].as_array().unwrap().len() == 3);
    assert_eq!(contents(&tb), [json!("Online message"), json!("Offline message 1"), json!("Offline message 2")]);
    a.wait_status("synced", T);
    assert_eq!(a.ok("threadsync/getStatus", json!({}))["pending"], 0);
}

/// kill -9 of the server during a stream of appends, then a restart: every
/// message arrives, once, in order.
#[test]
fn a_server_crash_during_a_stream_loses_and_duplicates_nothing() {
    let dir = common::TempDir::new("lsp-srvkill");
    let mut server = Server::start(&dir.0);
    let token = server.token("team");
    let mut a = Sidecar::start(&dir.0.join("a"), &server, &token);
    let mut b = Sidecar::start(&dir.0.join("b"), &server, &token);
    a.wait_status("synced", T);
    let id = a.ok("threadsync/createThread", json!({ "title": "stream" }))["threadId"].as_str().unwrap().to_string();
    let addr = server.addr.clone();
    for i in 0..60 {
        a.ok("threadsync/appendMessage", json!({ "threadId": id, "role": "user", "content": format!("m{i}") }));
        if i == 20 {
            let _ = server.child.kill();
            let _ = server.child.wait();
        }
        if i == 40 {
            // Same address, same database file.
            server = Server::start_on(&server.db.clone(), &addr);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let want: Vec<Value> = (0..60).map(|i| json!(format!("m{i}"))).collect();
    let tb = b.wait_thread(&id, Duration::from_secs(60), |t| t["messages"].as_array().unwrap().len() >= 60);
    assert_eq!(contents(&tb), want);
    a.ok("workspace/executeCommand", json!({ "command": "threadsync.forceSync", "arguments": [] }));
    assert_eq!(contents(&a.ok("threadsync/getThread", json!({ "threadId": id }))), want);
}

/// Two editor windows on the same threads: one syncs, the other follows;
/// nothing is corrupted, lost or duplicated, and the follower takes over
/// when the first one exits.
#[test]
fn two_sidecars_on_one_threads_dir_take_turns() {
    let dir = common::TempDir::new("lsp-two");
    let server = Server::start(&dir.0);
    let token = server.token("team");
    let shared = dir.0.join("shared");
    let mut first = Sidecar::start(&shared, &server, &token);
    first.wait_status("synced", T);
    let mut second = Sidecar::start(&shared, &server, &token);
    let st = second.wait_status("synced", T);
    assert!(st["params"]["message"].as_str().unwrap_or_default().contains("another editor window"), "{st}");
    let id = first.ok("threadsync/createThread", json!({ "title": "two" }))["threadId"].as_str().unwrap().to_string();
    first.ok("threadsync/appendMessage", json!({ "threadId": id, "role": "user", "content": "from the first" }));
    // An assistant writes the shared file meanwhile.
    let path = shared.join("threads").join(format!("{id}.json"));
    let mut f: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    f["messages"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "id": "m-assistant", "role": "assistant", "content": "from the assistant" }));
    std::fs::write(&path, serde_json::to_vec(&f).unwrap()).unwrap();
    first.ok("workspace/executeCommand", json!({ "command": "threadsync.forceSync", "arguments": [] }));
    // The first window goes away; the second takes over and syncs.
    first.close();
    assert!(first.exited_within(Duration::from_secs(1)));
    let mut other = Sidecar::start(&dir.0.join("other"), &server, &token);
    other.wait_thread(&id, T, |t| t["messages"].as_array().unwrap().len() == 2);
    other.ok("threadsync/appendMessage", json!({ "threadId": id, "role": "user", "content": "from elsewhere" }));
    let t =
        second.wait_thread(&id, Duration::from_secs(30), |t| t["messages"].as_array().is_some_and(|m| m.len() == 3));
    assert_eq!(contents(&t), [json!("from the first"), json!("from the assistant"), json!("from elsewhere")]);
}

/// The seed's throughput case, for real: 1,000 messages from one client reach
/// another at far more than 100 messages/s.
#[test]
fn a_thousand_messages_sync_end_to_end() {
    let dir = common::TempDir::new("lsp-1000");
    let server = Server::start(&dir.0);
    let token = server.token("team");
    let mut a = Sidecar::start(&dir.0.join("a"), &server, &token);
    let mut b = Sidecar::start(&dir.0.join("b"), &server, &token);
    a.wait_status("synced", T);
    let id = a.ok("threadsync/createThread", json!({ "title": "perf" }))["threadId"].as_str().unwrap().to_string();
    b.wait_thread(&id, T, |t| t["title"] == "perf");
    let start = Instant::now();
    for i in 0..1000 {
        a.ok("threadsync/appendMessage", json!({ "threadId": id, "role": "user", "content": format!("Message {i}") }));
    }
    b.wait_thread(&id, Duration::from_secs(60), |t| t["messages"].as_array().unwrap().len() == 1000);
    let rate = 1000.0 / start.elapsed().as_secs_f64();
    println!("1,000 messages end to end: {:.2} s, {rate:.0} messages/s", start.elapsed().as_secs_f64());
    assert!(rate > 100.0, "{rate:.0} messages/s");
}

/// The first sync of many threads reports `$/progress` (the editor offered
/// work-done progress), from begin to end.
#[test]
fn the_first_sync_shows_progress() {
    let dir = common::TempDir::new("lsp-progress");
    let server = Server::start(&dir.0);
    let token = server.token("team");
    let mut a = Sidecar::start(&dir.0.join("a"), &server, &token);
    a.wait_status("synced", T);
    for i in 0..5 {
        a.ok("threadsync/createThread", json!({ "title": format!("t{i}") }));
    }
    a.ok("workspace/executeCommand", json!({ "command": "threadsync.forceSync", "arguments": [] }));
    let mut b = Sidecar::start(&dir.0.join("b"), &server, &token);
    let begin =
        b.wait_note("progress begin", T, |m| m["method"] == "$/progress" && m["params"]["value"]["kind"] == "begin");
    assert!(begin["params"]["value"]["title"].as_str().unwrap().contains("first sync"));
    let end = b.wait_note("progress end", T, |m| m["method"] == "$/progress" && m["params"]["value"]["kind"] == "end");
    assert_eq!(end["params"]["value"]["message"], "5 threads");
    assert!(b.notes.iter().any(|m| m["method"] == "window/workDoneProgress/create"));
}
