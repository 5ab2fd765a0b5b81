//! The local boundary, with real processes: an assistant and the sidecar
//! writing one thread file, and files of shapes nobody planned for. Each
//! test here first failed on the code before the state database and the
//! append-only thread log. (JSON-RPC messages of the wrong shape, the other
//! door, are in `lsp_inprocess.rs`.)

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::lsp_harness::*;
use serde_json::{Value, json};

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Writes `v` the way most assistants do: a temporary file, then a rename.
fn write_by_rename(path: &Path, v: &Value) {
    let tmp = path.with_extension(format!("assistant-{}.tmp", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec_pretty(v).unwrap()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn force_sync(s: &mut Sidecar) {
    s.ok("workspace/executeCommand", json!({ "command": "threadsync.forceSync", "arguments": [] }));
}

/// The server's change log of a thread (`?from=0`), as effect names.
fn server_effects(server: &Server, token: &str, id: &str) -> Vec<Value> {
    let r = reqwest::blocking::Client::new()
        .get(format!("{}/v1/threads/{id}?from=0", server.url()))
        .bearer_auth(token)
        .send()
        .unwrap();
    let v: Value = r.json().unwrap();
    v["changes"].as_array().cloned().unwrap_or_default()
}

fn server_thread(server: &Server, token: &str, id: &str) -> Value {
    reqwest::blocking::Client::new()
        .get(format!("{}/v1/threads/{id}", server.url()))
        .bearer_auth(token)
        .send()
        .unwrap()
        .json()
        .unwrap()
}

fn message_contents(t: &Value) -> Vec<String> {
    t["messages"]
        .as_array()
        .map_or(Vec::new(), |m| m.iter().map(|m| m["content"].as_str().unwrap_or_default().to_string()).collect())
}

/// Waits until `path` holds JSON matching `pred`.
fn wait_file(path: &Path, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + T;
    loop {
        if let Some(v) = read_json(path).filter(|v| pred(v)) {
            return v;
        }
        assert!(Instant::now() < deadline, "{} never showed {what}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Fields drop in order: the sidecars are shut down (and checked for
/// unread messages) while their server and directories still exist.
struct Pair {
    a: Sidecar,
    b: Sidecar,
    server: Server,
    token: String,
    _dir: common::TempDir,
}

fn pair(tag: &str) -> Pair {
    let dir = common::TempDir::new(tag);
    let server = Server::start(&dir.0);
    let token = server.token("team");
    let mut a = Sidecar::start(&dir.0.join("a"), &server, &token);
    a.ignore_chatter();
    let mut b = Sidecar::start(&dir.0.join("b"), &server, &token);
    b.ignore_chatter();
    a.wait_status("synced", T);
    b.wait_status("synced", T);
    Pair { a, b, server, token, _dir: dir }
}

/// A thread made on A (by an assistant's file) that B has pulled.
fn shared_json_thread(p: &mut Pair, id: &str) -> PathBuf {
    let path = p.a.threads.join(format!("{id}.json"));
    let file = json!({ "id": id, "title": "shared", "messages": [
        { "id": "m-0", "role": "user", "content": "first" } ] });
    write_by_rename(&path, &file);
    p.b.wait_thread(id, T, |t| t["messages"].as_array().is_some_and(|m| m.len() == 1));
    path
}

// ----- 1. a rewrite from an older read -----------------------------------------

/// An assistant reads the thread file, another machine appends meanwhile (the
/// sidecar writes that message into the file), then the assistant writes back
/// its older read plus its own message. Nothing the other machine confirmed
/// may be deleted: the assistant had never seen it.
#[test]
fn a_rewrite_from_an_older_read_deletes_nothing_it_never_saw() {
    let mut p = pair("local-older");
    let path = shared_json_thread(&mut p, "T-older");
    let before = read_json(&path).unwrap();
    p.b.ok("threadsync/appendMessage", json!({ "threadId": "T-older", "role": "user", "content": "from B" }));
    wait_file(&path, "B's message", |v| message_contents(v).contains(&"from B".to_string()));
    let mut rewrite = before.clone();
    rewrite["messages"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "id": "m-a1", "role": "assistant", "content": "from the assistant" }));
    write_by_rename(&path, &rewrite);
    p.b.wait_thread("T-older", T, |t| message_contents(t).contains(&"from the assistant".to_string()));
    force_sync(&mut p.a);
    force_sync(&mut p.b);
    let want = ["first", "from B", "from the assistant"];
    let mut got = message_contents(&p.b.ok("threadsync/getThread", json!({ "threadId": "T-older" })));
    got.sort();
    assert_eq!(got, want, "B's confirmed message must survive");
    let deletes: Vec<_> =
        server_effects(&p.server, &p.token, "T-older").into_iter().filter(|c| c["effect"] == "delete").collect();
    assert!(deletes.is_empty(), "nothing was deleted by anyone: {deletes:?}");
    // And the assistant's file ends with all three.
    let file = wait_file(&path, "all three messages", |v| message_contents(v).len() == 3);
    let mut in_file = message_contents(&file);
    in_file.sort();
    assert_eq!(in_file, want);
}

// ----- 2. two writers on one file, for a while ----------------------------------

/// What one run of an assistant writing a thread file while another machine
/// appends through the sidecar left behind.
struct StressResult {
    assistant_written: Vec<String>,
    other_confirmed: Vec<String>,
    server: Vec<String>,
    deletes: usize,
}

/// For `secs` seconds: an assistant on A keeps reading the thread file,
/// adding one message and writing it back (by rename, or in place when
/// `in_place`), sometimes pausing between its read and its write; B appends
/// through `threadsync/appendMessage`. Then everything settles.
fn two_writers(tag: &str, secs: u64, in_place: bool) -> StressResult {
    let mut p = pair(tag);
    let id = "T-stress";
    // Half-written files are this test's point: A reports each one it reads.
    p.a.ignore_where(move |m| is_thread_error(m, id));
    let path = shared_json_thread(&mut p, id);
    let stop = Arc::new(AtomicBool::new(false));
    let assistant = {
        let (stop, path) = (stop.clone(), path.clone());
        std::thread::spawn(move || {
            let mut written = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // An assistant reads whole files; a torn read is read again.
                let Some(mut v) = read_json(&path) else { continue };
                n += 1;
                if n.is_multiple_of(3) {
                    std::thread::sleep(Duration::from_millis(n % 7 * 5)); // "thinking"
                }
                let text = format!("assistant {n}");
                v["messages"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({ "id": format!("m-as{n}"), "role": "assistant", "content": text }));
                if in_place {
                    // Truncate, then write in two pieces: a reader can see half a file.
                    let bytes = serde_json::to_vec_pretty(&v).unwrap();
                    let mut f = std::fs::OpenOptions::new().write(true).truncate(true).open(&path).unwrap();
                    let half = bytes.len() / 2;
                    f.write_all(&bytes[..half]).unwrap();
                    f.flush().unwrap();
                    std::thread::sleep(Duration::from_millis(2));
                    f.write_all(&bytes[half..]).unwrap();
                } else {
                    write_by_rename(&path, &v);
                }
                written.push(text);
                std::thread::sleep(Duration::from_millis(15));
            }
            written
        })
    };
    let mut other_confirmed = Vec::new();
    let end = Instant::now() + Duration::from_secs(secs);
    let mut i = 0;
    while Instant::now() < end {
        i += 1;
        let text = format!("other {i}");
        p.b.ok("threadsync/appendMessage", json!({ "threadId": id, "role": "user", "content": text }));
        other_confirmed.push(text);
        std::thread::sleep(Duration::from_millis(25));
    }
    stop.store(true, Ordering::Relaxed);
    let assistant_written = assistant.join().unwrap();
    // Settle: both sidecars push and pull everything, twice over.
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..2 {
        force_sync(&mut p.a);
        force_sync(&mut p.b);
    }
    let server = message_contents(&server_thread(&p.server, &p.token, id));
    let deletes = server_effects(&p.server, &p.token, id).iter().filter(|c| c["effect"] == "delete").count();
    StressResult { assistant_written, other_confirmed, server, deletes }
}

fn check_stress(r: &StressResult) {
    let missing = |want: &[String]| -> Vec<String> { want.iter().filter(|w| !r.server.contains(w)).cloned().collect() };
    let lost_other = missing(&r.other_confirmed);
    let lost_assistant = missing(&r.assistant_written);
    let mut seen = std::collections::HashSet::new();
    let twice: Vec<&String> = r.server.iter().filter(|c| !seen.insert(*c)).collect();
    assert!(
        lost_other.is_empty() && lost_assistant.is_empty() && twice.is_empty() && r.deletes == 0,
        "of {} confirmed appends from the other machine {} were lost ({:?}); of {} assistant writes {} never \
         reached the server ({:?}); {} messages twice; {} deletes in the log",
        r.other_confirmed.len(),
        lost_other.len(),
        lost_other.iter().take(5).collect::<Vec<_>>(),
        r.assistant_written.len(),
        lost_assistant.len(),
        lost_assistant.iter().take(5).collect::<Vec<_>>(),
        twice.len(),
        r.deletes,
    );
}

/// The finding of issue 9 as it was measured: an assistant rewriting by rename
/// while another machine appends. No confirmed message is deleted and no
/// assistant write is lost in the sidecar's own write window.
#[test]
fn an_assistant_rewriting_by_rename_and_another_machine_appending_lose_nothing() {
    let r = two_writers("local-rename", 6, false);
    assert!(r.assistant_written.len() > 50 && r.other_confirmed.len() > 50, "the run did real work");
    check_stress(&r);
}

/// The same with an assistant that writes the file in place (truncate, then
/// two writes): a half-written file is waited for, never overwritten.
#[test]
fn an_assistant_writing_in_place_loses_nothing_to_half_written_reads() {
    let r = two_writers("local-inplace", 6, true);
    assert!(r.assistant_written.len() > 50 && r.other_confirmed.len() > 50, "the run did real work");
    check_stress(&r);
}

/// The same two writers on an append-only log: an assistant appends lines
/// to `T-log.jsonl` (some in two pieces, so the sidecar meets torn lines)
/// while B appends through `threadsync/appendMessage`, which A's sidecar
/// appends to the same log. Nothing is lost or doubled on the server, and
/// the log stays whole lines, each message once.
#[test]
fn an_assistant_appending_to_a_log_and_another_machine_appending_lose_nothing() {
    let mut p = pair("local-log");
    let id = "T-log";
    let path = p.a.threads.join(format!("{id}.jsonl"));
    let header = json!({ "type": "thread", "id": id, "created": 1, "title": "log", "env": {} });
    std::fs::write(&path, format!("{header}\n")).unwrap();
    p.b.wait_thread(id, T, |t| t["title"] == "log");
    let stop = Arc::new(AtomicBool::new(false));
    let assistant = {
        let (stop, path) = (stop.clone(), path.clone());
        std::thread::spawn(move || {
            let mut written = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let text = format!("assistant {n}");
                let line = format!(
                    "{}\n",
                    json!({ "type": "message", "id": format!("m-as{n}"), "role": "assistant", "content": text })
                );
                let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
                if n.is_multiple_of(3) {
                    let half = line.len() / 2;
                    f.write_all(&line.as_bytes()[..half]).unwrap();
                    std::thread::sleep(Duration::from_millis(3));
                    f.write_all(&line.as_bytes()[half..]).unwrap();
                } else {
                    f.write_all(line.as_bytes()).unwrap();
                }
                written.push(text);
                std::thread::sleep(Duration::from_millis(15));
            }
            written
        })
    };
    let mut other_confirmed = Vec::new();
    let end = Instant::now() + Duration::from_secs(6);
    let mut i = 0;
    while Instant::now() < end {
        i += 1;
        let text = format!("other {i}");
        p.b.ok("threadsync/appendMessage", json!({ "threadId": id, "role": "user", "content": text }));
        other_confirmed.push(text);
        std::thread::sleep(Duration::from_millis(25));
    }
    stop.store(true, Ordering::Relaxed);
    let assistant_written = assistant.join().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..2 {
        force_sync(&mut p.a);
        force_sync(&mut p.b);
    }
    let server = message_contents(&server_thread(&p.server, &p.token, id));
    let deletes = server_effects(&p.server, &p.token, id).iter().filter(|c| c["effect"] == "delete").count();
    let r = StressResult { assistant_written, other_confirmed, server, deletes };
    assert!(r.assistant_written.len() > 50 && r.other_confirmed.len() > 50, "the run did real work");
    check_stress(&r);
    // A's log: whole lines only, every message of the thread in it once.
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.ends_with('\n'), "no torn last line left behind");
    let mut in_log = Vec::new();
    for line in text.lines() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("a line that is not JSON ({e}): {line:.200}"));
        if v["type"] == "message" {
            in_log.push(v["content"].as_str().unwrap().to_string());
        }
    }
    let mut sorted_log = in_log.clone();
    sorted_log.sort();
    let mut sorted_server = r.server.clone();
    sorted_server.sort();
    assert_eq!(sorted_log, sorted_server, "the log holds each of the thread's messages once");
}

// ----- 4. bad input at the file door -----------------------------------------------

/// A thread file without `messages` is an invalid file, not "delete every
/// message": the thread is reported, the team's copy keeps everything, and
/// the sidecar writes nothing over the bad file.
#[test]
fn a_file_without_messages_is_an_error_not_a_deletion() {
    let mut p = pair("local-nomsg");
    let path = shared_json_thread(&mut p, "T-nomsg");
    p.b.ok("threadsync/appendMessage", json!({ "threadId": "T-nomsg", "role": "user", "content": "second" }));
    wait_file(&path, "B's message", |v| message_contents(v).len() == 2);
    // The write may pass through an empty file, reported too; and a thread
    // in error is reported again at each new version or sync.
    p.a.ignore_where(|m| is_thread_error(m, "T-nomsg"));
    std::fs::write(&path, br#"{"id":"T-nomsg","created":1,"title":"t","env":{}}"#).unwrap();
    p.a.wait_note("threadStatus error about messages", T, |m| {
        m["method"] == "threadsync/threadStatus"
            && m["params"]["threadId"] == "T-nomsg"
            && m["params"]["state"] == "error"
            && m["params"]["error"].as_str().is_some_and(|e| e.contains("missing field `messages`"))
    });
    force_sync(&mut p.a);
    force_sync(&mut p.b);
    assert_eq!(message_contents(&server_thread(&p.server, &p.token, "T-nomsg")), ["first", "second"]);
    assert!(server_effects(&p.server, &p.token, "T-nomsg").iter().all(|c| c["effect"] != "delete"));
    // A change from elsewhere does not overwrite the bad file either…
    p.b.ok("threadsync/appendMessage", json!({ "threadId": "T-nomsg", "role": "user", "content": "third" }));
    force_sync(&mut p.a);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(std::fs::read(&path).unwrap(), br#"{"id":"T-nomsg","created":1,"title":"t","env":{}}"#);
    // …and once the file is whole again, everything comes together.
    let mut fixed = read_json(&path).unwrap();
    fixed["messages"] = json!([{ "id": "m-0", "role": "user", "content": "first" }]);
    write_by_rename(&path, &fixed);
    let file = wait_file(&path, "all messages", |v| message_contents(v).len() == 3);
    assert_eq!(message_contents(&file), ["first", "second", "third"]);
}

/// A symlink in threadsDir is not a thread: neither its target's content nor
/// anything else of it reaches the team.
#[test]
fn a_symlink_in_the_threads_dir_is_not_followed() {
    let mut p = pair("local-symlink");
    let outside = p._dir.0.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let secret = json!({ "id": "T-out", "title": "outside", "messages": [{ "id": "m-s", "role": "user", "content": "private" }] });
    std::fs::write(outside.join("T-out.json"), secret.to_string()).unwrap();
    std::os::unix::fs::symlink(outside.join("T-out.json"), p.a.threads.join("T-out.json")).unwrap();
    std::os::unix::fs::symlink("../../outside/T-out.json", p.a.threads.join("T-rel.json")).unwrap();
    let log = format!(
        "{}\n{}\n",
        json!({ "type": "thread", "id": "T-outlog", "created": 1, "title": "outside", "env": {} }),
        json!({ "type": "message", "id": "m-s", "role": "user", "content": "private" })
    );
    std::fs::write(outside.join("T-outlog.jsonl"), &log).unwrap();
    std::os::unix::fs::symlink(outside.join("T-outlog.jsonl"), p.a.threads.join("T-outlog.jsonl")).unwrap();
    // A real thread written after them does get through (so the sidecar looked).
    write_by_rename(&p.a.threads.join("T-real.json"), &json!({ "id": "T-real", "title": "real", "messages": [] }));
    p.b.wait_thread("T-real", T, |t| t["title"] == "real");
    // Each link is reported as what it is.
    for id in ["T-out", "T-rel", "T-outlog"] {
        let st = p.a.wait_note(&format!("threadStatus error for {id}"), T, |m| is_thread_error(m, id));
        assert!(st["params"]["error"].as_str().unwrap().contains("symbolic link"), "{st}");
    }
    force_sync(&mut p.a);
    force_sync(&mut p.b);
    let list = p.b.ok("threadsync/listThreads", json!({}));
    let ids: Vec<&str> = list["threads"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["T-real"], "{list}");
    assert!(std::fs::symlink_metadata(p.a.threads.join("T-out.json")).unwrap().file_type().is_symlink());
    assert_eq!(read_json(&outside.join("T-out.json")).unwrap(), secret, "the target is untouched");
    assert_eq!(std::fs::read_to_string(outside.join("T-outlog.jsonl")).unwrap(), log, "the log target is untouched");
}

/// A fifo named like a thread file blocks nothing: other threads keep syncing
/// and forceSync answers.
#[test]
fn a_fifo_in_the_threads_dir_blocks_nothing() {
    let mut p = pair("local-fifo");
    let fifo = p.a.threads.join("T-fifo.json");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid, NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let c = std::ffi::CString::new(p.a.threads.join("T-fifolog.jsonl").to_str().unwrap()).unwrap();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    std::thread::sleep(Duration::from_millis(300));
    write_by_rename(
        &p.a.threads.join("T-after.json"),
        &json!({ "id": "T-after", "title": "after the fifo", "messages": [] }),
    );
    let started = Instant::now();
    force_sync(&mut p.a);
    assert!(started.elapsed() < Duration::from_secs(5), "forceSync answered");
    p.b.wait_thread("T-after", T, |t| t["title"] == "after the fifo");
    let st = p.a.wait_note("threadStatus error for the fifo", T, |m| {
        m["method"] == "threadsync/threadStatus" && m["params"]["threadId"] == "T-fifo"
    });
    assert!(st["params"]["error"].as_str().unwrap().contains("not a regular file"), "{st}");
    let st = p.a.wait_note("threadStatus error for the log fifo", T, |m| {
        m["method"] == "threadsync/threadStatus" && m["params"]["threadId"] == "T-fifolog"
    });
    assert!(st["params"]["error"].as_str().unwrap().contains("not a regular file"), "{st}");
}

// ----- bringing a deleted message back -----------------------------------------

/// A message deleted by an assistant (a delete record in its log) comes back
/// with `threadsync/restoreMessage`, where it was, for everyone: from the
/// restoring machine's own copy, or from the server's when that machine
/// never had the content.
#[test]
fn a_deleted_message_can_be_brought_back_where_it_was() {
    let mut p = pair("local-restore");
    let id = p.a.ok("threadsync/createThread", json!({ "title": "restore" }))["threadId"].as_str().unwrap().to_string();
    let mut ids = Vec::new();
    for text in ["one", "two", "three", "four"] {
        let r = p.a.ok("threadsync/appendMessage", json!({ "threadId": id, "role": "user", "content": text }));
        ids.push(r["messageId"].as_str().unwrap().to_string());
    }
    p.b.wait_thread(&id, T, |t| message_contents(t).len() == 4);
    // An assistant deletes "two" and "four" in A's log.
    for gone in [&ids[1], &ids[3]] {
        append_record(&p.a.threads, &id, &json!({ "type": "delete", "id": gone }));
    }
    p.b.wait_thread(&id, T, |t| message_contents(t) == ["one", "three"]);
    // B saw them before they went: it restores "two" from its own store.
    let r = p.b.ok("threadsync/restoreMessage", json!({ "threadId": id, "messageId": ids[1] }));
    assert_ne!(r["messageId"], json!(ids[1]), "a new id: the old one stays deleted");
    // C starts after the deletes (its copy has no content for "four"): the server's.
    let dir_c = p._dir.0.join("c");
    let mut c = Sidecar::start(&dir_c, &p.server, &p.token);
    c.ignore_chatter();
    c.wait_thread(&id, T, |t| message_contents(t).len() == 3);
    let r4 = c.ok("threadsync/restoreMessage", json!({ "threadId": id, "messageId": ids[3] }));
    assert!(r4["messageId"].is_string());
    let want = ["one", "two", "three", "four"];
    for s in [&mut p.a, &mut p.b, &mut c] {
        let t = s.wait_thread(&id, T, |t| message_contents(t).len() == 4);
        assert_eq!(message_contents(&t), want, "back where they were");
        assert_eq!(t["messages"][1]["restoredFrom"], json!(ids[1]));
    }
    let file = read_thread_file(&p.a.threads, &id).unwrap();
    assert_eq!(message_contents(&file), want, "and in A's log");
    // What is not deleted, or not there, is refused with a reason.
    let r = p.a.request("threadsync/restoreMessage", json!({ "threadId": id, "messageId": ids[0] }));
    assert!(r["error"]["message"].as_str().unwrap().contains("is not deleted"), "{r}");
    let r = p.a.request("threadsync/restoreMessage", json!({ "threadId": id, "messageId": "m-nope" }));
    assert!(r["error"]["message"].as_str().unwrap().contains("no message m-nope"), "{r}");
}

// ----- upgrading in place ----------------------------------------------------------

/// A state directory in the earlier JSON layout (bases/, outbox/,
/// cursor.json) is imported on first start: the change waiting in its
/// outbox and one an assistant made while no sidecar ran both reach the
/// team, once, and nothing is deleted.
#[test]
fn a_state_directory_of_the_json_layout_is_imported_and_its_pending_work_syncs() {
    let mut p = pair("local-upgrade");
    // The thread as the server has it: made by B from a file, one message.
    let id = "T-upgrade";
    // Written in place, the file may be read half done: reported, then read again.
    p.b.ignore_where(move |m| is_thread_error(m, id));
    std::fs::write(
        p.b.threads.join(format!("{id}.json")),
        json!({ "id": id, "title": "upgrade", "messages": [{ "id": "m-1", "role": "user", "content": "one" }] })
            .to_string(),
    )
    .unwrap();
    p.b.wait_note("B pushed it", T, |m| {
        m["method"] == "threadsync/threadStatus" && m["params"]["threadId"] == id && m["params"]["state"] == "synced"
    });
    force_sync(&mut p.b);
    let server = server_thread(&p.server, &p.token, id);
    assert_eq!(message_contents(&server), ["one"]);
    // A machine whose sidecar (the earlier version) had synced it, sent "two"
    // (still in its outbox), and then stopped; an assistant added "three".
    let c = p._dir.0.join("c");
    let (threads, state) = (c.join("threads"), c.join("state"));
    for d in [threads.clone(), state.join("bases"), state.join("outbox")] {
        std::fs::create_dir_all(d).unwrap();
    }
    let base = json!({ "thread": server, "after": { "m-1": null }, "seq": ["m-1"] });
    std::fs::write(state.join(format!("bases/{id}.json")), base.to_string()).unwrap();
    let two = json!({ "id": "m-2", "role": "user", "content": "two", "timestamp": 2 });
    let outbox = json!([{ "op": "append", "message": two, "after": "m-1" }]);
    std::fs::write(state.join(format!("outbox/{id}.json")), outbox.to_string()).unwrap();
    std::fs::write(state.join("cursor.json"), json!(head_cursor(&p.server, &p.token)).to_string()).unwrap();
    let file = json!({ "id": id, "title": "upgrade", "messages": [
        { "id": "m-1", "role": "user", "content": "one" }, two,
        { "id": "m-3", "role": "assistant", "content": "three", "timestamp": 3 } ] });
    std::fs::write(threads.join(format!("{id}.json")), file.to_string()).unwrap();

    let mut upgraded = Sidecar::start(&c, &p.server, &p.token);
    upgraded.ignore_chatter();
    upgraded.wait_status("synced", T);
    force_sync(&mut upgraded);
    force_sync(&mut p.b);
    assert_eq!(message_contents(&server_thread(&p.server, &p.token, id)), ["one", "two", "three"]);
    let t = p.b.wait_thread(id, T, |t| message_contents(t).len() == 3);
    assert_eq!(message_contents(&t), ["one", "two", "three"]);
    assert!(server_effects(&p.server, &p.token, id).iter().all(|c| c["effect"] != "delete"));
    assert!(state.join("state.sqlite").exists() && state.join("imported-json/bases").exists());
    assert!(!state.join("bases").exists(), "the old layout moved aside");
    // A restart does not import (or send) anything again.
    drop(upgraded);
    let mut again = Sidecar::start(&c, &p.server, &p.token);
    again.ignore_chatter();
    again.wait_status("synced", T);
    force_sync(&mut again);
    assert_eq!(message_contents(&server_thread(&p.server, &p.token, id)), ["one", "two", "three"]);
}

/// The server's change-log head.
fn head_cursor(server: &Server, token: &str) -> String {
    let client = reqwest::blocking::Client::new();
    let mut cursor = String::new();
    loop {
        let r: Value = client
            .get(format!("{}/v1/pull", server.url()))
            .query(&[("cursor", cursor.as_str())])
            .bearer_auth(token)
            .send()
            .unwrap()
            .json()
            .unwrap();
        cursor = r["cursor"].as_str().unwrap().to_string();
        if r["upToDate"] == true {
            return cursor;
        }
    }
}
