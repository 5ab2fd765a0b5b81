//! The interface's bad-input guarantee as tables: every class of bad input
//! (malformed JSON-RPC, files, HTTP bodies, oversized payloads, bad tokens,
//! hostile ids, symlinks, fifos) against the real processes, each row an
//! input and the error it must get — a code and the words that say what is
//! wrong. After each table: the process is still running and nothing it
//! had stored is lost.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::lsp_harness::{Server, Sidecar, frame};
use reqwest::StatusCode;
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(20);

// ----- HTTP ------------------------------------------------------------------------

/// One request: method, path, headers, body.
struct Req {
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

fn req(method: &'static str, path: &str) -> Req {
    Req { method, path: path.to_string(), headers: Vec::new(), body: Vec::new() }
}

impl Req {
    fn auth(mut self, token: &str) -> Req {
        self.headers.push(("Authorization", format!("Bearer {token}")));
        self
    }
    fn header(mut self, k: &'static str, v: &str) -> Req {
        self.headers.push((k, v.to_string()));
        self
    }
    fn json(mut self, v: &Value) -> Req {
        self.body = serde_json::to_vec(v).unwrap();
        self.header("Content-Type", "application/json")
    }
    fn bytes(mut self, b: &[u8]) -> Req {
        self.body = b.to_vec();
        self.header("Content-Type", "application/json")
    }
}

/// Sends a request over a plain socket (so that headers a client library
/// would fix — a false `Content-Length` — go as written); returns the
/// status and the body.
fn send(addr: &str, r: &Req) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let mut head = format!("{} {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n", r.method, r.path);
    if !r.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-length")) {
        head += &format!("Content-Length: {}\r\n", r.body.len());
    }
    for (k, v) in &r.headers {
        head += &format!("{k}: {v}\r\n");
    }
    head += "\r\n";
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(&r.body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = match out.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => out[i + 4..].to_vec(),
        None => Vec::new(),
    };
    (status, body)
}

fn push_body(client: &str, id: u64, thread: &str, ops: Value) -> Value {
    json!({ "clientId": client, "mutations": [{ "id": id, "threadId": thread, "ops": ops }] })
}

fn append(id: &str, after: Option<&str>, content: Value) -> Value {
    json!({ "op": "append", "after": after, "message": { "id": id, "role": "user", "content": content, "timestamp": 1 } })
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

#[test]
fn http_bad_input_table() {
    let dir = common::TempDir::new("bad-http");
    let server = Server::start_args(
        &format!("sqlite://{}", dir.0.join("server.sqlite").display()),
        "127.0.0.1:0",
        &["--max-body", "1048576", "--max-message", "65536"],
    );
    let (tok, other) = (server.token("acme"), server.token("rival"));
    let addr = server.addr.clone();
    // What is stored before: one thread per team.
    let create =
        |t: &str| json!([{ "op": "create", "created": 1, "env": {} }, append(&format!("{t}-m1"), None, json!("kept"))]);
    for (token, thread) in [(&tok, "T-kept"), (&other, "T-rival")] {
        let (status, body) =
            send(&addr, &req("POST", "/v1/push").auth(token).json(&push_body("c-setup", 1, thread, create(thread))));
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
    let snapshot = || send(&addr, &req("GET", "/v1/threads/T-kept").auth(&tok)).1;
    let before = snapshot();

    let long_id = "x".repeat(200);
    let many: Vec<Value> = (1..=1001).map(|i| json!({ "id": i, "threadId": "T-x", "ops": [] })).collect();
    let big_message =
        push_body("c-big", 1, "T-kept", json!([append("big", Some("T-kept-m1"), json!("y".repeat(70_000)))]));
    let rows: Vec<(&str, Req, u16, &str, &str)> = vec![
        // (what, request, status, code, words in the message)
        (
            "no token",
            req("POST", "/v1/push").json(&push_body("c1", 1, "T-a", json!([]))),
            401,
            "unauthorized",
            "missing bearer token",
        ),
        (
            "not a bearer token",
            req("GET", "/v1/pull").header("Authorization", "Basic dXNlcjpwYXNz"),
            401,
            "unauthorized",
            "malformed Authorization",
        ),
        (
            "unknown token",
            req("GET", "/v1/pull").auth("tsk_0000000000_00000000000000000000000000000000"),
            401,
            "unauthorized",
            "not valid",
        ),
        (
            "a 300-byte token",
            req("GET", "/v1/pull").auth(&"t".repeat(300)),
            401,
            "unauthorized",
            "malformed Authorization",
        ),
        (
            // A control character is not a header value: HTTP refuses the
            // request itself (400, no body) before any route sees it.
            "a token with a control character",
            req("GET", "/v1/pull").header("Authorization", "Bearer \u{1}x"),
            400,
            "",
            "",
        ),
        (
            "not JSON",
            req("POST", "/v1/push").auth(&tok).bytes(b"{\"clientId\": "),
            400,
            "bad_request",
            "invalid request body",
        ),
        (
            "JSON of the wrong shape",
            req("POST", "/v1/push").auth(&tok).json(&json!([1, 2])),
            400,
            "bad_request",
            "invalid request body",
        ),
        (
            "a field of the wrong type",
            req("POST", "/v1/push").auth(&tok).json(&json!({ "clientId": 5, "mutations": [] })),
            400,
            "bad_request",
            "invalid type: integer `5`, expected a string",
        ),
        (
            "invalid UTF-8",
            req("POST", "/v1/push").auth(&tok).bytes(b"{\"clientId\": \"c\xff\", \"mutations\": []}"),
            400,
            "bad_request",
            "invalid unicode",
        ),
        (
            "a hostile client id",
            req("POST", "/v1/push").auth(&tok).json(&json!({ "clientId": "../../etc", "mutations": [] })),
            400,
            "bad_request",
            "id contains",
        ),
        (
            "a hostile thread id in a push",
            req("POST", "/v1/push").auth(&tok).json(&push_body("c1", 1, "../x", json!([]))),
            400,
            "bad_request",
            "id contains",
        ),
        (
            "a thread id of 200 bytes",
            req("GET", &format!("/v1/threads/{long_id}")).auth(&tok),
            400,
            "bad_thread_id",
            "at most 128",
        ),
        ("a thread id with a dot", req("GET", "/v1/threads/a.json").auth(&tok), 400, "bad_thread_id", "id contains"),
        (
            "mutation id 0",
            req("POST", "/v1/push").auth(&tok).json(&push_body("c1", 0, "T-a", json!([]))),
            400,
            "bad_request",
            "start at 1",
        ),
        (
            "a machine name of 200 bytes",
            req("POST", "/v1/push")
                .auth(&tok)
                .json(&json!({ "clientId": "c1", "machine": "m".repeat(200), "mutations": [] })),
            400,
            "bad_request",
            "machine",
        ),
        (
            "1001 mutations",
            req("POST", "/v1/push").auth(&tok).json(&json!({ "clientId": "c1", "mutations": many })),
            413,
            "too_many_mutations",
            "the limit is 1000",
        ),
        (
            "a body declared over the limit",
            req("POST", "/v1/push").auth(&tok).header("Content-Length", "2000000").bytes(b"{}"),
            413,
            "too_large",
            "1048576 bytes",
        ),
        (
            "a body over the limit once unzipped",
            req("POST", "/v1/push").auth(&tok).header("Content-Encoding", "gzip").bytes(&gzip(&vec![b' '; 2_000_000])),
            413,
            "too_large",
            "1048576",
        ),
        (
            "an unknown coding",
            req("POST", "/v1/push").auth(&tok).header("Content-Encoding", "br").bytes(b"{}"),
            415,
            "unsupported_encoding",
            "br",
        ),
        (
            "gzip that is not gzip",
            req("POST", "/v1/push").auth(&tok).header("Content-Encoding", "gzip").bytes(b"not gzip at all"),
            400,
            "bad_body",
            "body",
        ),
        (
            "a cursor this server never issued",
            req("GET", "/v1/pull?cursor=zzz").auth(&tok),
            400,
            "bad_cursor",
            "cursor",
        ),
        ("a wait that is not a number", req("GET", "/v1/pull?wait=abc").auth(&tok), 400, "bad_request", "wait"),
        (
            "too many client ids",
            req("GET", &format!("/v1/pull?clients={}", vec!["c1"; 9].join(","))).auth(&tok),
            400,
            "bad_request",
            "clients",
        ),
        ("another team's thread", req("GET", "/v1/threads/T-rival").auth(&tok), 404, "not_found", "no thread T-rival"),
        (
            "another team's message",
            req("GET", "/v1/threads/T-rival/messages/T-rival-m1").auth(&tok),
            404,
            "not_found",
            "no message",
        ),
        ("a route that does not exist", req("GET", "/v1/nothing").auth(&tok), 404, "not_found", "no such route"),
        ("a method a route does not take", req("GET", "/v1/push").auth(&tok), 405, "method_not_allowed", "method"),
        ("a version ahead of the thread", req("GET", "/v1/threads/T-kept?from=999").auth(&tok), 200, "", ""),
    ];
    let mut failures = Vec::new();
    for (what, r, status, code, words) in &rows {
        let (got, body) = send(&addr, r);
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let ok = got == *status
            && (code.is_empty() || v["code"] == *code)
            && v["message"].as_str().unwrap_or("").contains(words);
        if !ok {
            failures.push(format!(
                "{what}: expected {status} {code} \"…{words}…\", got {got} {}",
                String::from_utf8_lossy(&body)
            ));
        }
    }
    // A message over the per-message limit: refused for that operation,
    // saying why (the push itself is answered).
    let (got, body) = send(&addr, &req("POST", "/v1/push").auth(&tok).json(&big_message));
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if got != 200 || v["results"][0]["status"] != "rejected" || !v["results"][0]["reason"].to_string().contains("65536")
    {
        failures.push(format!(
            "a message over --max-message: expected its operation rejected naming the limit, got {got} {v}"
        ));
    }
    // A request that stops half-way does not hold the server up.
    let mut half = TcpStream::connect(&addr).unwrap();
    half.write_all(b"POST /v1/push HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"cli").unwrap();
    assert!(failures.is_empty(), "{} of {} rows failed:\n{}", failures.len(), rows.len() + 1, failures.join("\n"));
    // Still serving, and what was stored is as it was.
    assert_eq!(send(&addr, &req("GET", "/healthz")).0, 200);
    assert_eq!(snapshot(), before, "the stored thread is unchanged");
    drop(half);
}

// ----- JSON-RPC ------------------------------------------------------------------------

#[test]
fn json_rpc_bad_input_table() {
    let dir = common::TempDir::new("bad-rpc");
    let server = Server::start(&dir.0);
    let token = server.token("team");
    let mut a = Sidecar::start(&dir.0.join("a"), &server, &token);
    a.ignore_chatter();
    a.wait_status("synced", T);
    let id = a.ok("threadsync/createThread", json!({ "title": "kept" }))["threadId"].as_str().unwrap().to_string();
    a.ok("threadsync/appendMessage", json!({ "threadId": id, "role": "user", "content": "kept" }));
    let before = a.ok("threadsync/getThread", json!({ "threadId": id }));

    let rpc = |id: i64, method: &str, params: Value| {
        frame(&json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }))
    };
    let rows: Vec<(&str, Vec<u8>, Value, i64, &str)> = vec![
        // (what, bytes, the answer's id, code, words in the message)
        ("a body that is not JSON", b"Content-Length: 9\r\n\r\n{\"jsonrpc".to_vec(), Value::Null, -32700, ""),
        ("a length that is not a number", b"Content-Length: x\r\n\r\n".to_vec(), Value::Null, -32700, ""),
        ("JSON that is not an object", b"Content-Length: 2\r\n\r\n[]".to_vec(), Value::Null, -32600, ""),
        ("an unknown method", rpc(901, "threadsync/noSuchMethod", json!({})), json!(901), -32601, ""),
        (
            "appendMessage without threadId",
            rpc(902, "threadsync/appendMessage", json!({ "role": "user", "content": "x" })),
            json!(902),
            -32602,
            "threadId",
        ),
        (
            "appendMessage with a number for threadId",
            rpc(903, "threadsync/appendMessage", json!({ "threadId": 5, "role": "user", "content": "x" })),
            json!(903),
            -32602,
            "invalid type: integer `5`, expected a string",
        ),
        ("params an array", rpc(904, "threadsync/getThread", json!(["T-1"])), json!(904), -32602, ""),
        (
            "a hostile thread id",
            rpc(905, "threadsync/getThread", json!({ "threadId": "../../etc/passwd" })),
            json!(905),
            -32602,
            "id contains",
        ),
        (
            "a thread id of 200 bytes",
            rpc(906, "threadsync/getThread", json!({ "threadId": "x".repeat(200) })),
            json!(906),
            -32602,
            "at most 128",
        ),
        (
            "a thread that does not exist",
            rpc(907, "threadsync/getThread", json!({ "threadId": "T-none" })),
            json!(907),
            -32602,
            "T-none",
        ),
        (
            "setTitle with a title that is an object",
            rpc(908, "threadsync/setTitle", json!({ "threadId": id, "title": { "a": 1 } })),
            json!(908),
            -32602,
            "invalid type: map, expected a string",
        ),
        (
            "an unknown command",
            rpc(909, "workspace/executeCommand", json!({ "command": "threadsync.noSuch", "arguments": [] })),
            json!(909),
            -32602,
            "threadsync.noSuch",
        ),
        (
            "resolveConflict without a conflict id",
            rpc(
                910,
                "workspace/executeCommand",
                json!({ "command": "threadsync.resolveConflict", "arguments": [{ "choose": "local" }] }),
            ),
            json!(910),
            -32602,
            "conflictId",
        ),
        (
            "resolveConflict choosing neither side",
            rpc(
                911,
                "workspace/executeCommand",
                json!({ "command": "threadsync.resolveConflict", "arguments": [{ "conflictId": "c-1", "choose": "both" }] }),
            ),
            json!(911),
            -32602,
            "choose",
        ),
    ];
    let mut failures = Vec::new();
    for (what, bytes, want_id, code, words) in &rows {
        let stdin = a.stdin.as_mut().unwrap();
        stdin.write_all(bytes).unwrap();
        stdin.flush().unwrap();
        let err = a.wait_note(&format!("an answer to {what}"), T, |m| {
            m.get("error").is_some()
                || m.get("result").is_some() && m.get("id").is_some_and(|i| i.as_i64().is_some_and(|i| i > 900))
        });
        let msg = err["error"]["message"].as_str().unwrap_or("");
        if err["error"]["code"] != json!(code) || err["id"] != *want_id || !msg.contains(words) {
            failures.push(format!("{what}: expected {code} \"…{words}…\" for id {want_id}, got {err}"));
        }
        // Still answering.
        assert!(a.ok("threadsync/getStatus", json!({}))["state"].is_string(), "after {what}");
    }
    assert!(failures.is_empty(), "{} of {} rows failed:\n{}", failures.len(), rows.len(), failures.join("\n"));
    assert!(a.child.try_wait().unwrap().is_none(), "still running");
    assert_eq!(a.ok("threadsync/getThread", json!({ "threadId": id })), before, "nothing stored was lost");
}

// ----- files ---------------------------------------------------------------------------

/// `threadsync check` reads a thread file the way the sidecar does; each
/// row is a file and what it must be told.
#[test]
fn thread_file_bad_input_table() {
    let dir = common::TempDir::new("bad-files");
    let d = &dir.0;
    let good = json!({ "id": "T-1", "v": 0, "created": 1, "title": "t", "messages": [], "env": {} });
    let write = |name: &str, bytes: &[u8]| {
        let p = d.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let mut rows: Vec<(&str, std::path::PathBuf, &str)> = vec![
        ("not JSON", write("T-1.json", b"{\"id\": \"T-1\", "), "JSON"),
        ("an empty file", write("T-2.json", b""), "JSON"),
        ("JSON that is not an object", write("T-3.json", b"[1, 2]"), "invalid type: sequence"),
        ("no messages", write("T-4.json", br#"{"id": "T-4", "title": "x"}"#), "messages"),
        ("messages not a list", write("T-5.json", br#"{"id": "T-5", "messages": {"a": 1}}"#), "expected a sequence"),
        ("a message id twice", write("T-7.json", br#"{"id": "T-7", "messages": [{"id": "m", "role": "user", "content": "x"}, {"id": "m", "role": "user", "content": "y"}]}"#), "twice"),
        ("an id that is not the file's name", write("T-8.json", br#"{"id": "T-other", "messages": []}"#), "T-other"),
        // (Message ids may hold `.` and `/`: they are never paths.)
        ("a message id with a space", write("T-9.json", br#"{"id": "T-9", "messages": [{"id": "m 1", "role": "user", "content": "x"}]}"#), "id contains"),
        ("invalid UTF-8", write("T-10.json", b"{\"id\": \"T-10\", \"title\": \"\xff\", \"messages\": []}"), "invalid unicode"),
        ("a name that is not a thread id", write("a b.json", &serde_json::to_vec(&good).unwrap()), "not a thread id"),
        ("neither .json nor .jsonl", write("T-11.txt", b"{}"), "<threadId>.json"),
        ("a log line that is not JSON", write("T-12.jsonl", b"{\"type\":\"header\",\"id\":\"T-12\"}\nnot json\n"), "line"),
    ];
    // A symlink and a fifo: refused without being followed or opened.
    let link = d.join("T-13.json");
    std::os::unix::fs::symlink(write("elsewhere.json", &serde_json::to_vec(&good).unwrap()), &link).unwrap();
    rows.push(("a symlink", link, "not a regular file"));
    let fifo = d.join("T-14.json");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    rows.push(("a fifo", fifo, "not a regular file"));
    let mut failures = Vec::new();
    for (what, path, words) in &rows {
        let out = Command::new(env!("CARGO_BIN_EXE_threadsync")).arg("check").arg(path).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !text.contains(words) {
            failures.push(format!("{what}: expected a failure saying \"…{words}…\", got {}: {text}", out.status));
        }
    }
    assert!(failures.is_empty(), "{} of {} rows failed:\n{}", failures.len(), rows.len(), failures.join("\n"));
    let _ = Path::new("");
}

/// The same bad files under a running sidecar, over a thread it synced:
/// each is reported for that thread, the sidecar keeps running, and the
/// thread's last good state stays on this machine and the server.
#[test]
fn a_sidecar_given_bad_files_reports_them_and_keeps_the_last_good_state() {
    let dir = common::TempDir::new("bad-files-lsp");
    let server = Server::start(&dir.0);
    let token = server.token("team");
    let mut a = Sidecar::start(&dir.0.join("a"), &server, &token);
    a.ignore_chatter();
    a.wait_status("synced", T);
    // A thread an assistant wrote as a `.json` file, synced.
    let id = "T-kept".to_string();
    let file = a.threads.join(format!("{id}.json"));
    let good = serde_json::to_vec(&json!({ "id": id, "v": 0, "created": 1, "title": "kept",
        "messages": [{ "id": "m-kept", "role": "user", "content": "kept", "timestamp": 1 }], "env": {} }))
    .unwrap();
    std::fs::write(&file, &good).unwrap();
    a.wait_thread(&id, T, |t| t["messages"].as_array().is_some_and(|m| m.len() == 1));
    a.ok("workspace/executeCommand", json!({ "command": "threadsync.forceSync", "arguments": [] }));
    let before = a.ok("threadsync/getThread", json!({ "threadId": id }));
    let rows: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not JSON", b"{\"id\": ".to_vec(), "not valid thread JSON"),
        ("no messages", format!("{{\"id\": \"{id}\", \"title\": \"emptied\"}}").into_bytes(), "messages"),
        (
            "a message id twice",
            format!("{{\"id\": \"{id}\", \"messages\": [{{\"id\": \"m\", \"role\": \"user\", \"content\": \"x\"}}, {{\"id\": \"m\", \"role\": \"user\", \"content\": \"y\"}}]}}").into_bytes(),
            "appears twice",
        ),
        ("invalid UTF-8", b"{\"title\": \"\xff\"}".to_vec(), "invalid unicode"),
    ];
    // Errors for one write may repeat while the next is read.
    a.ignore_where(|m| m["method"] == "threadsync/threadStatus" && m["params"]["state"] == "error");
    for (what, bytes, words) in &rows {
        std::fs::write(&file, bytes).unwrap();
        let note = a.wait_note(&format!("an error for {what}"), T, |m| {
            m["method"] == "threadsync/threadStatus"
                && m["params"]["threadId"] == id.as_str()
                && m["params"]["state"] == "error"
                && m["params"]["error"].as_str().is_some_and(|e| e.contains(words))
        });
        assert!(note["params"]["error"].as_str().is_some_and(|e| !e.is_empty()), "{what}: {note}");
        assert_eq!(a.ok("threadsync/getThread", json!({ "threadId": id }))["messages"], before["messages"], "{what}");
        assert!(a.child.try_wait().unwrap().is_none(), "{what}: still running");
    }
    // Put right again: synced, nothing lost on the server either.
    std::fs::write(&file, &good).unwrap();
    a.ok("workspace/executeCommand", json!({ "command": "threadsync.forceSync", "arguments": [] }));
    let c = reqwest::blocking::Client::new();
    let v: Value =
        c.get(format!("{}/v1/threads/{id}", server.url())).bearer_auth(&token).send().unwrap().json().unwrap();
    assert_eq!(v["messages"][0]["content"], "kept");
    assert_eq!(v["messages"].as_array().unwrap().len(), 1);
    let _ = StatusCode::OK;
}
