//! The real `threadsync serve` process on a free loopback port, over a real
//! SQLite file and over this machine's PostgreSQL: the same suite on both,
//! plus crash, shutdown and scale-out tests.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::blocking::Client;
use serde_json::{Value, json};

struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(db: &str, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_threadsync"))
            .args(["serve", "--listen", "127.0.0.1:0", "--db", db])
            .args(extra)
            .env("THREADSYNC_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("addr=").nth(1) {
                    let _ = tx.send(addr.split_whitespace().next().unwrap_or_default().to_string());
                }
                // Keep draining so the server never blocks on a full pipe.
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(20)).expect("the server printed its address");
        Server { child, base: format!("http://{addr}") }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_string()
    }

    #[cfg(unix)]
    fn term(&self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    }

    /// Waits for the process to exit; its status and how long it took.
    fn wait_exit(&mut self, limit: Duration) -> (std::process::ExitStatus, Duration) {
        let start = Instant::now();
        loop {
            if let Some(code) = self.child.try_wait().unwrap() {
                return (code, start.elapsed());
            }
            assert!(start.elapsed() < limit, "the server did not exit within {limit:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn token(db: &str, team: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_threadsync"))
        .args(["token", "create", "--team", team, "--db", db])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "the token alone, on one line");
    text.trim().to_string()
}

fn client() -> Client {
    Client::builder().timeout(Duration::from_secs(40)).build().unwrap()
}

fn push(c: &Client, s: &Server, tok: &str, body: &Value) -> (StatusCode, Value) {
    let r = c.post(s.url("/v1/push")).bearer_auth(tok).json(body).send().unwrap();
    (r.status(), r.json().unwrap_or(Value::Null))
}

fn get(c: &Client, s: &Server, tok: &str, path: &str) -> (StatusCode, Value) {
    let r = c.get(s.url(path)).bearer_auth(tok).send().unwrap();
    (r.status(), r.json().unwrap_or(Value::Null))
}

fn append(client_id: &str, id: u64, thread: &str, msg: &str, after: Option<&str>, create: bool) -> Value {
    let mut ops = vec![];
    if create {
        ops.push(json!({"op": "create", "created": 1, "env": {}}));
    }
    ops.push(json!({"op": "append", "after": after, "message": {"id": msg, "role": "user", "content": format!("content of {msg}")}}));
    json!({"clientId": client_id, "mutations": [{"id": id, "threadId": thread, "ops": ops}]})
}

fn message_ids(c: &Client, s: &Server, tok: &str, thread: &str) -> Vec<String> {
    let (status, v) = get(c, s, tok, &format!("/v1/threads/{thread}"));
    assert_eq!(status, StatusCode::OK, "{v}");
    v["messages"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect()
}

/// The suite every backend passes.
fn suite(db: &str) {
    let s = Server::start(db, &["--max-body", "65536"]);
    let (a, b) = (token(db, "team-a"), token(db, "team-b"));
    let c = client();

    // Exactly once: the same batch three times leaves one copy.
    let first = append("c1", 1, "T-1", "m1", None, true);
    for i in 0..3 {
        let (st, v) = push(&c, &s, &a, &first);
        assert_eq!(st, StatusCode::OK);
        assert_eq!(v["results"][0]["status"], if i == 0 { "applied" } else { "duplicate" });
    }
    // A batch whose answer was lost comes again with the next mutation.
    let second = append("c1", 2, "T-1", "m2", Some("m1"), false);
    push(&c, &s, &a, &second);
    let mut both = second.clone();
    both["mutations"]
        .as_array_mut()
        .unwrap()
        .push(append("c1", 3, "T-1", "m3", Some("m2"), false)["mutations"][0].clone());
    let (_, v) = push(&c, &s, &a, &both);
    assert_eq!(v["results"][0]["status"], "duplicate");
    assert_eq!(v["results"][1]["status"], "applied");
    assert_eq!(message_ids(&c, &s, &a, "T-1"), ["m1", "m2", "m3"]);

    // Isolation: team b sees a's thread as missing and cannot change it.
    let (st, v) = get(&c, &s, &b, "/v1/threads/T-1");
    assert_eq!((st, v["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    let (_, v) = get(&c, &s, &b, "/v1/pull");
    assert!(v["snapshots"].as_array().is_none_or(|a| a.is_empty()), "{v}");
    push(&c, &s, &b, &append("c1", 1, "T-1", "intruder", None, true));
    assert_eq!(message_ids(&c, &s, &a, "T-1"), ["m1", "m2", "m3"]);
    assert_eq!(message_ids(&c, &s, &b, "T-1"), ["intruder"]);

    // Bad input: each a clear 4xx; the server stays up; nothing stored changes.
    let raw = |body: Vec<u8>, tok: Option<&str>| {
        let mut r = c.post(s.url("/v1/push")).header("content-type", "application/json").body(body);
        if let Some(t) = tok {
            r = r.bearer_auth(t);
        }
        let r = r.send().unwrap();
        (r.status(), r.json::<Value>().unwrap())
    };
    for (body, want) in [
        (b"{\"clientId\":".to_vec(), StatusCode::BAD_REQUEST),
        (b"{\"clientId\": 1, \"mutations\": {}}".to_vec(), StatusCode::BAD_REQUEST),
        (vec![b'{', b'"', 0xc3, 0x28, b'"', b':', b'1', b'}'], StatusCode::BAD_REQUEST),
        (append("c1", 4, "../etc/passwd", "x", None, true).to_string().into_bytes(), StatusCode::BAD_REQUEST),
        (format!("{{\"x\": \"{}\"}}", "y".repeat(70_000)).into_bytes(), StatusCode::PAYLOAD_TOO_LARGE),
    ] {
        let (st, v) = raw(body, Some(&a));
        assert_eq!(st, want, "{v}");
        assert!(v["code"].is_string() && v["message"].is_string(), "{v}");
    }
    let (st, v) = raw(first.to_string().into_bytes(), None);
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
    let (st, _) = raw(first.to_string().into_bytes(), Some("tsk_0000000000_wrong"));
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, v) = get(&c, &s, &a, "/v1/threads/..%2F..%2Fetc%2Fpasswd");
    assert_eq!((st, v["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_thread_id")));
    let (st, v) = get(&c, &s, &a, &format!("/v1/threads/{}", "x".repeat(300)));
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    // Revoked: refused from then on.
    let c_tok = token(db, "team-c");
    let id = c_tok.split('_').nth(1).unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_threadsync")).args(["token", "revoke", id, "--db", db]).output().unwrap();
    assert!(out.status.success());
    let listed = Command::new(env!("CARGO_BIN_EXE_threadsync")).args(["token", "list", "--db", db]).output().unwrap();
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(listed.contains(id) && !listed.contains(c_tok.split('_').nth(2).unwrap()), "list never shows secrets");
    let (st, v) = get(&c, &s, &c_tok, "/v1/pull");
    assert_eq!((st, v["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")));
    assert_eq!(c.get(s.url("/healthz")).send().unwrap().status(), StatusCode::OK);
    assert_eq!(message_ids(&c, &s, &a, "T-1"), ["m1", "m2", "m3"]);

    // Deltas only: a 1 KB append to a ~5 MB thread pulls ~1 KB.
    let big = "z".repeat(40_000);
    let mut prev = "m3".to_string();
    // Client c1's mutation ids go on from 4 without a gap.
    for (chunk, mutation) in (0..125).zip(4u64..) {
        let id = format!("big{chunk}");
        let body = json!({"clientId": "c1", "mutations": [{"id": mutation, "threadId": "T-1", "ops": [
            {"op": "append", "after": prev, "message": {"id": id, "role": "assistant", "content": big}}]}]});
        let (st, v) = push(&c, &s, &a, &body);
        assert_eq!(st, StatusCode::OK, "{v}");
        prev = id;
    }
    let (_, v) = get(&c, &s, &a, "/v1/pull?cursor=0");
    let mut cursor = v["cursor"].as_str().unwrap().to_string();
    loop {
        let (_, v) = get(&c, &s, &a, &format!("/v1/pull?cursor={cursor}"));
        cursor = v["cursor"].as_str().unwrap().to_string();
        if v["upToDate"] == true {
            break;
        }
    }
    push(
        &c,
        &s,
        &a,
        &json!({"clientId": "c1", "mutations": [{"id": 129, "threadId": "T-1", "ops": [
        {"op": "append", "after": prev, "message": {"id": "small", "role": "user", "content": "k".repeat(1000)}}]}]}),
    );
    let r = c.get(s.url(&format!("/v1/pull?cursor={cursor}"))).bearer_auth(&a).send().unwrap();
    let body = r.bytes().unwrap();
    assert!(body.len() < 1600, "a 1 KB append pulled {} bytes", body.len());
    // Large answers are compressed on the wire.
    let r = c.get(s.url("/v1/threads/T-1")).bearer_auth(&a).header("accept-encoding", "gzip").send().unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // A held pull answers the moment another client's push lands.
    let (_, v) = get(&c, &s, &a, &format!("/v1/pull?cursor={cursor}"));
    let cursor = v["cursor"].as_str().unwrap().to_string();
    let (url, tok) = (s.url(&format!("/v1/pull?cursor={cursor}&wait=20")), a.clone());
    let waiter = std::thread::spawn(move || {
        let start = Instant::now();
        let v: Value = client().get(url).bearer_auth(tok).send().unwrap().json().unwrap();
        (start.elapsed(), v)
    });
    std::thread::sleep(Duration::from_millis(300));
    let pushed = Instant::now();
    push(&c, &s, &a, &append("c2", 1, "T-1", "wake", Some("small"), false));
    let (_, v) = waiter.join().unwrap();
    assert!(pushed.elapsed() < Duration::from_secs(2), "woken {:?} after the push", pushed.elapsed());
    assert_eq!(v["changes"][0]["message"]["id"], "wake");

    // Metrics saw it all.
    let text = c.get(s.url("/metrics")).send().unwrap().text().unwrap();
    assert!(text.contains("threadsync_push_mutations_total{status=\"duplicate\"}"), "{text}");
}

/// kill -9 in the middle of a stream of pushes: after a restart everything
/// that was acknowledged is there, and retrying what was not never
/// duplicates anything.
fn crash_during_pushes(db: &str) {
    let mut s = Server::start(db, &[]);
    let tok = token(db, "crash");
    let c = Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let (st, _) = push(&c, &s, &tok, &append("w", 1, "T-c", "c0", None, true));
    assert_eq!(st, StatusCode::OK);
    let url = s.url("/v1/push");
    let t = tok.clone();
    // Pushes as fast as it can; records which were acknowledged.
    let writer = std::thread::spawn(move || {
        let c = Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
        let mut acked = 1;
        for i in 2..100_000u64 {
            let body = append("w", i, "T-c", &format!("c{}", i - 1), Some(&format!("c{}", i - 2)), false);
            match c.post(&url).bearer_auth(&t).json(&body).send() {
                Ok(r) if r.status() == StatusCode::OK => acked = i,
                _ => return acked,
            }
        }
        acked
    });
    std::thread::sleep(Duration::from_millis(700));
    s.kill9();
    let acked = writer.join().unwrap();
    assert!(acked > 5, "some pushes were acknowledged before the kill ({acked})");
    let s = Server::start(db, &[]);
    // The client retries from the first unacknowledged mutation (it may have
    // been applied before the kill) and goes on.
    for i in acked + 1..=acked + 3 {
        let body = append("w", i, "T-c", &format!("c{}", i - 1), Some(&format!("c{}", i - 2)), false);
        let (st, v) = push(&c, &s, &tok, &body);
        assert_eq!(st, StatusCode::OK, "{v}");
        assert!(v["results"][0]["status"] == "applied" || v["results"][0]["status"] == "duplicate", "{v}");
    }
    let ids = message_ids(&c, &s, &tok, "T-c");
    let want: Vec<String> = (0..acked + 3).map(|i| format!("c{i}")).collect();
    assert_eq!(ids, want, "every acknowledged message once, in order");
}

#[test]
fn sqlite_suite() {
    let dir = common::TempDir::new("serve");
    suite(&format!("sqlite://{}", dir.0.join("db.sqlite").display()));
}

#[test]
fn postgres_suite() {
    let schema = common::PgSchema::new("serve");
    suite(&schema.url);
}

#[test]
fn sqlite_kill_9_during_pushes() {
    let dir = common::TempDir::new("crash");
    crash_during_pushes(&format!("sqlite://{}", dir.0.join("db.sqlite").display()));
}

#[test]
fn postgres_kill_9_during_pushes() {
    let schema = common::PgSchema::new("crash");
    crash_during_pushes(&schema.url);
}

/// Two servers on one PostgreSQL behave as one: a push through one wakes a
/// pull held by the other.
#[test]
fn two_servers_one_postgres() {
    let schema = common::PgSchema::new("scale");
    let (one, two) = (Server::start(&schema.url, &[]), Server::start(&schema.url, &[]));
    let tok = token(&schema.url, "team");
    let c = client();
    push(&c, &one, &tok, &append("c1", 1, "T-s", "s1", None, true));
    let (_, v) = get(&c, &two, &tok, "/v1/pull?cursor=0");
    let cursor = v["cursor"].as_str().unwrap().to_string();
    assert_eq!(cursor, "2");
    let url = two.url(&format!("/v1/pull?cursor={cursor}&wait=20"));
    let t = tok.clone();
    let waiter = std::thread::spawn(move || client().get(url).bearer_auth(t).send().unwrap().json::<Value>().unwrap());
    std::thread::sleep(Duration::from_millis(500));
    let pushed = Instant::now();
    push(&c, &one, &tok, &append("c2", 1, "T-s", "s2", Some("s1"), false));
    let v = waiter.join().unwrap();
    assert!(pushed.elapsed() < Duration::from_secs(2), "woken after {:?}", pushed.elapsed());
    assert_eq!(v["changes"][0]["message"]["id"], "s2");
    // Both serve the same data.
    assert_eq!(message_ids(&c, &one, &tok, "T-s"), message_ids(&c, &two, &tok, "T-s"));
}

/// SIGTERM: held pulls are answered at once and the process exits 0 after
/// draining, on either backend (on PostgreSQL it used to abort with exit
/// 134 while closing its pooled connections).
#[cfg(unix)]
fn graceful_shutdown_answers_held_pulls(db: &str) {
    let mut s = Server::start(db, &[]);
    let tok = token(db, "t");
    let c = client();
    push(&c, &s, &tok, &append("c1", 1, "T-g", "g1", None, true));
    let url = s.url("/v1/pull?cursor=2&wait=20");
    let waiter = std::thread::spawn(move || {
        let start = Instant::now();
        let r = client().get(url).bearer_auth(tok).send().unwrap();
        (start.elapsed(), r.status(), r.json::<Value>().unwrap())
    });
    std::thread::sleep(Duration::from_millis(500));
    s.term();
    let (took, status, v) = waiter.join().unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["upToDate"], true);
    assert!(took < Duration::from_secs(3), "{took:?}");
    let (code, took) = s.wait_exit(Duration::from_secs(5));
    assert!(code.success(), "{code} after {took:?}");
}

#[cfg(unix)]
#[test]
fn sqlite_graceful_shutdown() {
    let dir = common::TempDir::new("term");
    graceful_shutdown_answers_held_pulls(&format!("sqlite://{}", dir.0.join("db.sqlite").display()));
}

#[cfg(unix)]
#[test]
fn postgres_graceful_shutdown() {
    let schema = common::PgSchema::new("term");
    graceful_shutdown_answers_held_pulls(&schema.url);
}

/// A client cut off mid-request (half a body sent, then silence) does not
/// hold a shutdown up past its grace, and the server still exits 0.
#[cfg(unix)]
#[test]
fn shutdown_with_a_half_sent_request_ends_within_the_grace() {
    use std::io::Write;
    let dir = common::TempDir::new("half");
    let db = format!("sqlite://{}", dir.0.join("db.sqlite").display());
    let mut s = Server::start(&db, &["--shutdown-grace", "2", "--read-timeout", "60"]);
    let tok = token(&db, "t");
    let mut conn = std::net::TcpStream::connect(s.addr()).unwrap();
    write!(
        conn,
        "POST /v1/push HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"clientId\""
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    s.term();
    let (code, took) = s.wait_exit(Duration::from_secs(10));
    assert!(code.success(), "{code}");
    assert!(took < Duration::from_secs(4), "took {took:?} with a 2 s grace");
    drop(conn);
}

/// Connections that never finish their headers are closed after the read
/// timeout; a body declared over the limit is refused before it is sent.
#[test]
fn stalled_connections_are_closed_and_oversized_bodies_refused_at_once() {
    use std::io::{Read, Write};
    let dir = common::TempDir::new("stall");
    let db = format!("sqlite://{}", dir.0.join("db.sqlite").display());
    let s = Server::start(&db, &["--read-timeout", "1"]);
    let tok = token(&db, "t");
    // Half a request line; and nothing at all.
    let mut partial = std::net::TcpStream::connect(s.addr()).unwrap();
    partial.write_all(b"GET /v1/pull HTT").unwrap();
    let silent = std::net::TcpStream::connect(s.addr()).unwrap();
    for (what, mut conn) in [("partial headers", partial), ("nothing sent", silent)] {
        conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let start = Instant::now();
        let mut buf = Vec::new();
        let r = conn.read_to_end(&mut buf);
        let took = start.elapsed();
        assert!(r.is_ok(), "{what}: the server closed it ({r:?})");
        assert!(took < Duration::from_secs(5), "{what}: closed after {took:?}");
    }
    // A terabyte declared, two bytes sent: 413 at once, JSON.
    let mut conn = std::net::TcpStream::connect(s.addr()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        conn,
        "POST /v1/push HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\nContent-Type: application/json\r\nContent-Length: 1099511627776\r\n\r\n{{}}"
    )
    .unwrap();
    let start = Instant::now();
    let mut head = String::new();
    let mut buf = [0u8; 4096];
    while !head.contains("\r\n\r\n") {
        let n = conn.read(&mut buf).expect("an answer before the read timeout");
        assert!(n > 0, "closed without an answer: {head}");
        head.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(head.contains("too_large"), "{head}");
    // The server is still there for everyone else.
    let (status, _) = get(&client(), &s, &tok, "/v1/pull");
    assert_eq!(status, StatusCode::OK);
}

/// Malformed queries, paths and codings get the protocol's JSON errors; a
/// coding's name is case-insensitive.
#[test]
fn bad_queries_paths_and_codings_get_json_errors() {
    use std::io::Write;
    let dir = common::TempDir::new("badq");
    let db = format!("sqlite://{}", dir.0.join("db.sqlite").display());
    let s = Server::start(&db, &[]);
    let tok = token(&db, "t");
    let c = client();
    for q in ["wait=abc", "wait=-1", "wait=0.5", "cursor=1&cursor=2"] {
        let r = c.get(s.url(&format!("/v1/pull?{q}"))).bearer_auth(&tok).send().unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{q}");
        let v: Value = r.json().unwrap_or_else(|e| panic!("{q}: not JSON: {e}"));
        assert_eq!(v["code"], "bad_request", "{q}: {v}");
    }
    let r = c.get(s.url("/v1/threads/T-x?from=abc")).bearer_auth(&tok).send().unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.json::<Value>().unwrap()["code"], "bad_request");
    // A path that is not UTF-8 once decoded.
    let r = c.get(s.url("/v1/threads/T-%FF%FE")).bearer_auth(&tok).send().unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.json::<Value>().unwrap()["code"], "bad_thread_id");
    // Codings.
    let body = serde_json::to_vec(&append("c1", 1, "T-z", "z1", None, true)).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&body).unwrap();
    let gz = gz.finish().unwrap();
    let send = |coding: &str, bytes: &[u8]| {
        c.post(s.url("/v1/push"))
            .bearer_auth(&tok)
            .header("Content-Type", "application/json")
            .header("Content-Encoding", coding)
            .body(bytes.to_vec())
            .send()
            .unwrap()
    };
    let r = send("GZIP", &gz);
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text());
    for coding in ["br", "deflate"] {
        let r = send(coding, &body);
        assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{coding}");
        assert_eq!(r.json::<Value>().unwrap()["code"], "unsupported_encoding", "{coding}");
    }
    // An empty coding is no coding.
    let r = send("", &serde_json::to_vec(&append("c1", 2, "T-z", "z2", Some("z1"), false)).unwrap());
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(message_ids(&c, &s, &tok, "T-z"), ["z1", "z2"]);
}

/// A database made by the code before versioned migrations (the fixtures
/// are that code's dumps) is migrated in place on start: its threads,
/// tokens and log are served and continued, and the history says so.
fn an_existing_database_is_migrated_in_place(db: &str, history: impl Fn() -> Vec<i64>) {
    for start in 0..2 {
        let s = Server::start(db, &[]);
        let tok = token(db, "fixture-a");
        let c = client();
        let (status, v) = get(&c, &s, &tok, "/v1/threads/T-fixture-1");
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["title"], "Fixing the parser");
        assert_eq!(v["env"], json!({ "cwd": "/repo" }));
        let want: Vec<String> = (1..=3 + start).map(|i| format!("m-{i}")).collect();
        assert_eq!(message_ids(&c, &s, &tok, "T-fixture-1"), want, "start {start}");
        assert_eq!(v["messages"][1]["content"], json!([{ "type": "text", "text": "a missing comma" }]));
        // Another team's thread stays theirs.
        assert_eq!(get(&c, &s, &tok, "/v1/threads/T-fixture-b").0, StatusCode::NOT_FOUND);
        // The log goes on from where the old code left it.
        let (_, v) = get(&c, &s, &tok, "/v1/pull?cursor=4");
        assert_eq!(v["changes"][0]["seq"], 5, "{v}");
        if start == 0 {
            let (status, v) = push(&c, &s, &tok, &append("c-new", 1, "T-fixture-1", "m-4", Some("m-3"), false));
            assert_eq!(status, StatusCode::OK, "{v}");
            assert_eq!(v["cursor"], "6", "{v}");
        }
        // Its author gets the new insert back without its content; a change
        // logged before authors were kept goes whole to everyone.
        let (_, v) = get(&c, &s, &tok, "/v1/pull?cursor=4&clients=c-new,c-other");
        assert!(v["changes"][0].get("elided").is_none(), "{v}");
        let new = &v["changes"][1];
        assert_eq!((&new["message"]["id"], &new["message"]["content"]), (&json!("m-4"), &Value::Null), "{v}");
        assert_eq!(new["elided"]["size"], json!("\"content of m-4\"".len()), "{v}");
        let (_, v) = get(&c, &s, &tok, "/v1/pull?cursor=5&clients=c-other");
        assert_eq!(v["changes"][0]["message"]["content"], "content of m-4", "{v}");
        let (status, v) = get(&c, &s, &tok, "/v1/pull?cursor=5&clients=c%20new");
        assert_eq!((status, &v["code"]), (StatusCode::BAD_REQUEST, &json!("bad_request")), "{v}");
        assert_eq!(history(), [1, 2, 3, 4], "start {start}: the migrations recorded once");
        // The messages stored before search existed are found (indexed when
        // the server opened the database).
        let store = threadsync::server::run::DbUrl::parse(db).unwrap().open().unwrap();
        let team = threadsync::server::TeamId::new("fixture-a").unwrap();
        let q = threadsync::server::search::Query::parse("missing comma");
        let hits = store.web().unwrap().search(&team, &q, 10).unwrap();
        let ids: Vec<_> = hits.iter().map(|h| (h.thread.as_str(), h.message.as_str())).collect();
        assert_eq!(ids, [("T-fixture-1", "m-2")], "start {start}");
        assert!(hits[0].snippet.contains("\u{1}missing\u{2}"), "{:?}", hits[0].snippet);
    }
}

#[test]
fn sqlite_database_from_before_migrations() {
    let dir = common::TempDir::new("migrate");
    let path = dir.0.join("db.sqlite");
    rusqlite::Connection::open(&path).unwrap().execute_batch(include_str!("fixtures/server-v0.sqlite.sql")).unwrap();
    let history = || {
        let c = rusqlite::Connection::open(&path).unwrap();
        let mut st = c.prepare("SELECT version FROM refinery_schema_history ORDER BY version").unwrap();
        st.query_map([], |r| r.get::<_, i64>(0)).unwrap().map(Result::unwrap).collect()
    };
    an_existing_database_is_migrated_in_place(&format!("sqlite://{}", path.display()), history);
}

#[test]
fn postgres_database_from_before_migrations() {
    let schema = common::PgSchema::new("migrate");
    let mut c = postgres::Client::connect(&common::pg_base_url(), postgres::NoTls).unwrap();
    c.batch_execute(&include_str!("fixtures/server-v0.postgres.sql").replace("__SCHEMA__", &schema.name)).unwrap();
    let history = || {
        let mut c = postgres::Client::connect(&common::pg_base_url(), postgres::NoTls).unwrap();
        let sql = format!("SELECT version::bigint FROM {}.refinery_schema_history ORDER BY version", schema.name);
        c.query(&sql, &[]).unwrap().iter().map(|r| r.get::<_, i64>(0)).collect()
    };
    an_existing_database_is_migrated_in_place(&schema.url, history);
}

/// One large push does not leave the server several times larger for good
/// (the allocator is told to give back what the push freed).
#[cfg(target_os = "linux")]
#[test]
fn a_large_push_gives_its_memory_back() {
    let dir = common::TempDir::new("bigpush");
    let db = format!("sqlite://{}", dir.0.join("db.sqlite").display());
    let s = Server::start(&db, &[]);
    let tok = token(&db, "t");
    let c = client();
    let rss = || common::lsp_harness::rss_kib(s.child.id());
    assert_eq!(push(&c, &s, &tok, &append("c1", 1, "T-big", "m0", None, true)).0, StatusCode::OK);
    std::thread::sleep(Duration::from_millis(300));
    let idle = rss();
    let chunk = "0123456789abcdef".repeat(1 << 6); // 1 KiB
    let ops: Vec<Value> = (1..=28_000)
        .map(|i| {
            let after = format!("m{}", i - 1);
            json!({"op": "append", "after": after, "message": {"id": format!("m{i}"), "role": "user", "content": chunk}})
        })
        .collect();
    let body = json!({"clientId": "c1", "mutations": [{"id": 2, "threadId": "T-big", "ops": ops}]});
    let (status, v) = push(&c, &s, &tok, &body);
    assert_eq!(status, StatusCode::OK, "{v}");
    std::thread::sleep(Duration::from_millis(500));
    let after = rss();
    // Without giving it back: ~43 MB more, for good.
    assert!(after < idle + 24 * 1024, "RSS {idle} KiB idle, {after} KiB after a 28 MiB push");
    assert_eq!(message_ids(&c, &s, &tok, "T-big").len(), 28_001);
}

/// Checkpoints run beside the writes, not inside them (see `sqlite.rs`):
/// they still happen, the database file gets the data, and the WAL stays
/// bounded instead of growing with everything written.
#[test]
fn the_wal_is_checkpointed_while_pushes_go_on() {
    let dir = common::TempDir::new("wal");
    let path = dir.0.join("db.sqlite");
    let db = format!("sqlite://{}", path.display());
    let s = Server::start(&db, &[]);
    let tok = token(&db, "t");
    let c = client();
    let content = "x".repeat(16 * 1024);
    let mut last: Option<String> = None;
    let mut id = 0;
    let mut push_some = |n: usize| {
        for _ in 0..n {
            id += 1;
            let mut ops: Vec<Value> = (0..8)
                .map(|j| {
                    let m = format!("m-{id}-{j}");
                    let op = json!({"op": "append", "after": last, "message": {"id": m, "role": "user", "content": content}});
                    last = Some(m);
                    op
                })
                .collect();
            if id == 1 {
                ops.insert(0, json!({"op": "create", "created": 1, "env": {}}));
            }
            let body = json!({"clientId": "c-wal", "mutations": [{"id": id, "threadId": "T-wal", "ops": ops}]});
            let (status, v) = push(&c, &s, &tok, &body);
            assert_eq!(status, StatusCode::OK, "{v}");
        }
    };
    // 48 MiB in one burst.
    push_some(384);
    let written = 384 * 8 * 16 * 1024;
    let start = Instant::now();
    let wal = || std::fs::metadata(dir.0.join("db.sqlite-wal")).map_or(0, |m| m.len());
    while std::fs::metadata(&path).unwrap().len() < written {
        assert!(start.elapsed() < Duration::from_secs(20), "not checkpointed; WAL {} bytes", wal());
        std::thread::sleep(Duration::from_millis(50));
    }
    // The WAL starts over with the next write, cut back to its limit.
    std::thread::sleep(Duration::from_millis(300));
    push_some(1);
    assert!(wal() <= 32 << 20, "the WAL is {} bytes after {written} written", wal());
}
