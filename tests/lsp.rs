//! End to end, as an editor does it: the real `threadsync serve` and several
//! real `threadsync lsp` processes, spoken to in framed JSON-RPC over stdio.

mod common;

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use common::lsp_harness::*;
use serde_json::{Value, json};

// ----- tests -------------------------------------------------------------------

/// The seed's concurrent-edits case, for real: two clients append to the same
/// thread at once and end with equal threads holding both messages.
#[test]
fn concurrent_edits_from_two_clients_converge() {
    let dir = common::TempDir::new("lsp-conc");
    let server = Server::start(&dir.0);
    let token = server.token("team");
    let mut a = Sidecar::start(&dir.0.join("a"), &server, &token);
    a.ignore_chatter();
    let mut b = Sidecar::start(&dir.0.join("b"), &server, &token);
    b.ignore_chatter();
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
    // The file on disk says the same (a thread made through the sidecar is a log).
    assert!(dir.0.join("b/threads").join(format!("{id}.jsonl")).exists());
    let file = read_thread_file(&dir.0.join("b/threads"), &id).unwrap();
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
    a.ignore_chatter();
    let mut b = Sidecar::start(&dir.0.join("b"), &server, &token);
    b.ignore_chatter();
    a.wait_status("synced", T);
    b.wait_status("synced", T);
    let file = json!({ "id": "T-file", "title": "from the assistant", "created": 5, "custom": { "keep": true },
        "messages": [ { "role": "user", "content": "question", "timestamp": 1, "model": "m1" },
                      { "id": "m-2", "role": "assistant", "content": [ { "type": "text", "text": "answer" } ], "timestamp": 2 } ] });
    // Written in place, the file may be read half done: reported, then read again.
    a.ignore_where(|m| is_thread_error(m, "T-file"));
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
    b.ignore_chatter();
    let mut a = Sidecar::start(&dir.0.join("a"), &server, &token);
    a.ignore_chatter();
    a.wait_status("synced", T);
    let id = a.ok("threadsync/createThread", json!({ "title": "k" }))["threadId"].as_str().unwrap().to_string();
    b.wait_thread(&id, T, |t| t["title"] == "k");
    append_record(
        &a.threads,
        &id,
        &json!({ "type": "message", "id": "m-kill", "role": "user", "content": "written just before the crash" }),
    );
    a.kill9();
    let mut a = Sidecar::start(&dir.0.join("a"), &server, &token);
    a.ignore_chatter();
    let tb = b.wait_thread(&id, T, |t| !t["messages"].as_array().unwrap().is_empty());
    assert_eq!(ids(&tb), ["m-kill"]);
    // Settle, then check nothing doubled anywhere.
    a.ok("workspace/executeCommand", json!({ "command": "threadsync.forceSync", "arguments": [] }));
    b.ok("workspace/executeCommand", json!({ "command": "threadsync.forceSync", "arguments": [] }));
    assert_eq!(ids(&b.ok("threadsync/getThread", json!({ "threadId": id }))), ["m-kill"]);
    assert_eq!(ids(&a.ok("threadsync/getThread", json!({ "threadId": id }))), ["m-kill"]);
}

/// Garbage on the real stdin (a body that is not JSON, a header without a
/// usable length, JSON that is not JSON-RPC) is answered, and the process
/// goes on serving. Each kind of bad request is in `lsp_inprocess.rs`.
#[test]
fn garbage_on_stdin_is_answered_and_the_sidecar_stays_up() {
    let dir = common::TempDir::new("lsp-bad");
    let server = Server::start(&dir.0);
    let token = server.token("team");
    let mut a = Sidecar::start(&dir.0.join("a"), &server, &token);
    a.ignore_chatter();
    a.wait_status("synced", T);
    let frames: [(&[u8], i64); 3] = [
        (b"Content-Length: 39\r\n\r\n{\"jsonrpc\": \"2.0\", \"id\": 99, \"method\": ", -32700),
        (b"Content-Length: x\r\n\r\n", -32700),
        (b"Content-Length: 2\r\n\r\n[]", -32600),
    ];
    for (bytes, code) in frames {
        let stdin = a.stdin.as_mut().unwrap();
        stdin.write_all(bytes).unwrap();
        stdin.flush().unwrap();
        let what = String::from_utf8_lossy(bytes).to_string();
        let err = a.wait_note(&format!("an error for {what:?}"), T, |m| m.get("error").is_some());
        assert_eq!((&err["error"]["code"], &err["id"]), (&json!(code), &Value::Null), "{what:?}: {err}");
        assert!(a.ok("threadsync/getStatus", json!({}))["state"].is_string(), "{what:?}");
    }
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
    a.ignore_chatter();
    a.wait_status("synced", T);
    a.ok("threadsync/createThread", json!({ "title": "secret" }));
    a.ok("workspace/executeCommand", json!({ "command": "threadsync.forceSync", "arguments": [] }));
    let mut bad = Sidecar::start(&dir.0.join("bad"), &server, "tsk_0000000000_wrong");
    bad.ignore_chatter();
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
    a.ignore_chatter();
    a.wait_status("synced", T);
    a.close();
    assert!(a.exited_within(Duration::from_secs(1)), "after stdin closed");

    let mut b = Sidecar::start(&dir.0.join("b"), &server, &token);
    b.ignore_chatter();
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
    c.ignore_chatter();
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
    a.ignore_chatter();
    let mut b = Sidecar::start(&dir.0.join("b"), &server, &token);
    b.ignore_chatter();
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
    a.ignore_chatter();
    let mut b = Sidecar::start(&dir.0.join("b"), &server, &token);
    b.ignore_chatter();
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
    first.ignore_chatter();
    first.wait_status("synced", T);
    let mut second = Sidecar::start(&shared, &server, &token);
    second.ignore_chatter();
    let st = second.wait_status("synced", T);
    assert!(st["params"]["message"].as_str().unwrap_or_default().contains("another editor window"), "{st}");
    let id = first.ok("threadsync/createThread", json!({ "title": "two" }))["threadId"].as_str().unwrap().to_string();
    first.ok("threadsync/appendMessage", json!({ "threadId": id, "role": "user", "content": "from the first" }));
    // An assistant appends to the shared log meanwhile.
    append_record(
        &shared.join("threads"),
        &id,
        &json!({ "type": "message", "id": "m-assistant", "role": "assistant", "content": "from the assistant" }),
    );
    first.ok("workspace/executeCommand", json!({ "command": "threadsync.forceSync", "arguments": [] }));
    // The first window goes away; the second takes over and syncs.
    first.close();
    assert!(first.exited_within(Duration::from_secs(1)));
    let mut other = Sidecar::start(&dir.0.join("other"), &server, &token);
    other.ignore_chatter();
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
    a.ignore_chatter();
    let mut b = Sidecar::start(&dir.0.join("b"), &server, &token);
    b.ignore_chatter();
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
    a.ignore_chatter();
    a.wait_status("synced", T);
    for i in 0..5 {
        a.ok("threadsync/createThread", json!({ "title": format!("t{i}") }));
    }
    a.ok("workspace/executeCommand", json!({ "command": "threadsync.forceSync", "arguments": [] }));
    let mut b = Sidecar::start(&dir.0.join("b"), &server, &token);
    b.ignore_chatter();
    let begin =
        b.wait_note("progress begin", T, |m| m["method"] == "$/progress" && m["params"]["value"]["kind"] == "begin");
    assert!(begin["params"]["value"]["title"].as_str().unwrap().contains("first sync"));
    let end = b.wait_note("progress end", T, |m| m["method"] == "$/progress" && m["params"]["value"]["kind"] == "end");
    assert_eq!(end["params"]["value"]["message"], "5 threads");
    assert!(b.notes.iter().any(|m| m["method"] == "window/workDoneProgress/create"));
}

/// A write error on stdout (the editor closed its end) is fatal: the sidecar
/// exits instead of lingering.
#[test]
fn a_broken_stdout_ends_the_sidecar() {
    let dir = common::TempDir::new("lsp-stdout");
    let mut child = Command::new(env!("CARGO_BIN_EXE_threadsync"))
        .arg("lsp")
        .env("HOME", &dir.0)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let body = json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": { "processId": null, "capabilities": {} } }).to_string();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(format!("Content-Length: {}\r\n\r\n{body}", body.len()).as_bytes()).unwrap();
    stdin.flush().unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < Duration::from_secs(2), "still running with nowhere to write");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(stdin);
}

/// Configuration comes from initializationOptions, then the environment,
/// then the config file, then defaults.
#[test]
fn configuration_precedence() {
    let dir = common::TempDir::new("lsp-config");
    let server = Server::start(&dir.0);
    let token = server.token("team");
    let d = dir.0.join("a");
    std::fs::create_dir_all(d.join("config/threadsync")).unwrap();
    // The file alone gives server and token.
    let file = json!({ "server": server.url(), "token": token });
    std::fs::write(d.join("config/threadsync/config.json"), file.to_string()).unwrap();
    let dirs = json!({ "threadsDir": d.join("threads"), "stateDir": d.join("state") });
    let mut a = Sidecar::spawn_env(&d, dirs.clone(), None, &[]);
    a.ignore_chatter();
    a.wait_status("synced", T);
    a.close();
    assert!(a.exited_within(Duration::from_secs(1)));
    // The environment overrides the file: a wrong token is refused.
    let mut b = Sidecar::spawn_env(&d, dirs.clone(), None, &[("THREADSYNC_TOKEN", "tsk_0000000000_wrong")]);
    b.ignore_chatter();
    b.wait_status("unauthorized", T);
    let m = b.wait_note("showMessage", T, |m| m["method"] == "window/showMessage");
    assert!(m["params"]["message"].as_str().unwrap().contains("token"), "{m}");
    b.close();
    assert!(b.exited_within(Duration::from_secs(1)));
    // initializationOptions override the environment.
    let mut opts = dirs.clone();
    opts["token"] = json!(token);
    let mut c = Sidecar::spawn_env(&d, opts, None, &[("THREADSYNC_TOKEN", "tsk_0000000000_wrong")]);
    c.ignore_chatter();
    c.wait_status("synced", T);
    // A setting of the wrong type is an error naming it, and nothing of that
    // change is applied (the server stays the working one).
    c.notify("workspace/didChangeConfiguration", json!({ "settings": { "server": "http://127.0.0.1:9", "poll": 5 } }));
    let m = c.wait_note("showMessage", T, |m| m["method"] == "window/showMessage");
    assert!(m["params"]["message"].as_str().unwrap().contains("poll: expected a string, got 5"), "{m}");
    c.ok("threadsync/createThread", json!({ "title": "still syncing" }));
    c.ok("workspace/executeCommand", json!({ "command": "threadsync.forceSync", "arguments": [] }));
    c.close();
    assert!(c.exited_within(Duration::from_secs(1)));
    // Badly typed initializationOptions: the sidecar says which key and does not start syncing.
    let mut bad = dirs.clone();
    bad["threadsDir"] = json!(["not", "a", "path"]);
    let mut e = Sidecar::spawn_env(&d, bad, None, &[]);
    e.ignore_chatter();
    let m = e.wait_note("showMessage", T, |m| m["method"] == "window/showMessage");
    assert!(m["params"]["message"].as_str().unwrap().contains("threadsDir: expected a string"), "{m}");
    e.close();
    assert!(e.exited_within(Duration::from_secs(1)));
    // `--stdio`, which LSP clients add by convention, is accepted.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_threadsync"))
        .args(["lsp", "--stdio"])
        .env("HOME", &d)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Without file notifications (the fallback when the OS watcher cannot
/// start, forced here with THREADSYNC_WATCH=poll), a rescan still finds an
/// assistant's change, and unchanged files are not re-read as changes.
#[test]
fn without_a_watcher_rescans_still_find_file_changes() {
    let dir = common::TempDir::new("lsp-poll");
    let server = Server::start(&dir.0);
    let token = server.token("team");
    let d = dir.0.join("a");
    std::fs::create_dir_all(&d).unwrap();
    let opts =
        json!({ "server": server.url(), "token": token, "threadsDir": d.join("threads"), "stateDir": d.join("state") });
    let mut a = Sidecar::spawn_env(&d, opts, None, &[("THREADSYNC_WATCH", "poll")]);
    a.ignore_chatter();
    let mut b = Sidecar::start(&dir.0.join("b"), &server, &token);
    b.ignore_chatter();
    a.wait_status("synced", T);
    let file = json!({ "id": "T-polled", "title": "found by a rescan", "messages": [{ "id": "m-1", "role": "user", "content": "hi" }] });
    // Written in place, the file may be read half done: reported, then read again.
    a.ignore_where(|m| is_thread_error(m, "T-polled"));
    std::fs::write(a.threads.join("T-polled.json"), file.to_string()).unwrap();
    b.wait_thread("T-polled", T, |t| t["title"] == "found by a rescan");
    // Rescans of an unchanged directory push nothing.
    let before = a.ok("threadsync/metrics", json!({}))["sync"]["pushes"].as_u64().unwrap();
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(a.ok("threadsync/metrics", json!({}))["sync"]["pushes"].as_u64().unwrap(), before);
}

/// A sidecar that was away while the server compacted its team's log gets
/// `410 refetch`, pulls whole threads again and ends with everything, the
/// change it made while away included.
#[test]
fn a_sidecar_behind_the_compacted_log_refetches() {
    let dir = common::TempDir::new("lsp-compact");
    let db = format!("sqlite://{}", dir.0.join("server.sqlite").display());
    let server = Server::start_args(&db, "127.0.0.1:0", &["--keep-changes", "3", "--compact-every", "0.2"]);
    let token = server.token("team");
    let mut a = Sidecar::start(&dir.0.join("a"), &server, &token);
    a.ignore_chatter();
    let mut b = Sidecar::start(&dir.0.join("b"), &server, &token);
    b.ignore_chatter();
    a.wait_status("synced", T);
    let id = a.ok("threadsync/createThread", json!({ "title": "compacted" }))["threadId"].as_str().unwrap().to_string();
    b.wait_thread(&id, T, |t| t["title"] == "compacted");
    b.kill9();
    for i in 0..10 {
        a.ok(
            "threadsync/appendMessage",
            json!({ "threadId": id, "role": "user", "content": format!("while b was away {i}") }),
        );
    }
    a.ok("workspace/executeCommand", json!({ "command": "threadsync.forceSync", "arguments": [] }));
    // The server compacts: an old cursor is refused.
    let http = reqwest::blocking::Client::new();
    let start = Instant::now();
    loop {
        let r = http.get(format!("{}/v1/pull?cursor=1", server.url())).bearer_auth(&token).send().unwrap();
        if r.status() == reqwest::StatusCode::GONE {
            assert_eq!(r.json::<Value>().unwrap()["code"], "refetch");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "the log was not compacted");
        std::thread::sleep(Duration::from_millis(100));
    }
    // b comes back, with a message an assistant wrote while it was down.
    append_record(
        &dir.0.join("b/threads"),
        &id,
        &json!({ "type": "message", "id": "m-away", "role": "user", "content": "written while b was down" }),
    );
    let refetches = || server.metric(r#"threadsync_http_requests_total{route="/v1/pull",status="410"}"#);
    let before = refetches();
    let mut b = Sidecar::start(&dir.0.join("b"), &server, &token);
    b.ignore_chatter();
    let tb = b.wait_thread(&id, T, |t| t["messages"].as_array().unwrap().len() == 11);
    assert!(refetches() > before, "b was told to refetch");
    let ta = a.wait_thread(&id, T, |t| t["messages"].as_array().unwrap().len() == 11);
    assert_eq!(ta["messages"], tb["messages"]);
    assert!(ids(&ta).contains(&"m-away".to_string()));
    let file = read_thread_file(&dir.0.join("b/threads"), &id).unwrap();
    assert_eq!(file["messages"], tb["messages"]);
}

/// A pull held past a heartbeat is streamed (a space every heartbeat, then
/// the answer): the sidecar asks nothing more while it is held, and reads a
/// change through it at once. (That it holds for 240 s is the engine's:
/// `long_polling_keeps_exactly_one_pull_outstanding`.)
#[test]
fn an_idle_sidecar_holds_one_pull_through_heartbeats() {
    let dir = common::TempDir::new("lsp-idle");
    let db = format!("sqlite://{}", dir.0.join("server.sqlite").display());
    let server = Server::start_args(&db, "127.0.0.1:0", &["--heartbeat", "0.2"]);
    let token = server.token("team");
    let mut a = Sidecar::start(&dir.0.join("a"), &server, &token);
    a.ignore_chatter();
    let mut b = Sidecar::start(&dir.0.join("b"), &server, &token);
    b.ignore_chatter();
    a.wait_status("synced", T);
    b.wait_status("synced", T);
    let pulls = || server.metric(r#"threadsync_http_requests_total{route="/v1/pull""#);
    // Settled: both pulls held.
    std::thread::sleep(Duration::from_secs(1));
    let before = pulls();
    // Idle for a while: many heartbeats, no new requests.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(pulls(), before, "an idle sidecar asked again while its pull was held");
    // A change from a reaches b through its held pull.
    let start = Instant::now();
    let id = a.ok("threadsync/createThread", json!({ "title": "through the held pull" }))["threadId"]
        .as_str()
        .unwrap()
        .to_string();
    b.wait_thread(&id, T, |t| t["title"] == "through the held pull");
    assert!(start.elapsed() < Duration::from_secs(3), "{:?}", start.elapsed());
}

/// A sidecar's own inserts come back to it without their content (it has
/// it; the pull names its client ids): a 64 KB append costs the sidecar the
/// push and a few hundred bytes of pull, where it used to pull the 64 KB
/// back. Every other sidecar still gets the content.
#[test]
fn a_pushing_sidecar_does_not_pull_its_own_content_back() {
    let dir = common::TempDir::new("lsp-own");
    let server = Server::start(&dir.0);
    let token = server.token("team");
    let counters = || (server.metric("threadsync_push_bytes_total"), server.metric("threadsync_pull_bytes_total"));
    let mut a = Sidecar::start(&dir.0.join("a"), &server, &token);
    a.ignore_chatter();
    let id = a.ok("threadsync/createThread", json!({ "title": "own" }))["threadId"].as_str().unwrap().to_string();
    a.wait_status("synced", T);
    std::thread::sleep(Duration::from_millis(500));
    let (push0, pull0) = counters();
    let big = "x".repeat(64 * 1024);
    a.ok("threadsync/appendMessage", json!({ "threadId": id, "role": "user", "content": big }));
    let start = Instant::now();
    let (push, pull) = loop {
        let (push1, pull1) = counters();
        if push1 - push0 > 64 * 1024 && pull1 > pull0 {
            break (push1 - push0, pull1 - pull0);
        }
        assert!(start.elapsed() < T, "the append was not pushed and pulled back");
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("64 KB append: {push} bytes pushed, {pull} pulled back: {:.3}x", (push + pull) as f64 / push as f64);
    assert!(pull < 1024, "the sidecar pulled {pull} bytes back for its own 64 KB message");

    let mut b = Sidecar::start(&dir.0.join("b"), &server, &token);
    b.ignore_chatter();
    b.wait_thread(&id, T, |t| t["messages"].as_array().unwrap().len() == 1);
    a.ok("threadsync/appendMessage", json!({ "threadId": id, "role": "user", "content": big.replace('x', "y") }));
    let tb = b.wait_thread(&id, T, |t| t["messages"].as_array().unwrap().len() == 2);
    assert_eq!(contents(&tb), [json!(big), json!(big.replace('x', "y"))], "b got the content");
    let ta = a.wait_thread(&id, T, |t| t["messages"].as_array().unwrap().len() == 2);
    assert_eq!(ta["messages"], tb["messages"]);
    for side in ["a", "b"] {
        let file = read_thread_file(&dir.0.join(side).join("threads"), &id).unwrap();
        assert_eq!(file["messages"], tb["messages"], "{side}'s file");
    }
}
