//! The sidecar's request/response surface, in process: `lsp::serve` (what
//! `threadsync lsp` runs) over an in-memory pipe, against the server's own
//! router on the in-memory store. No process is spawned, so these run in
//! about a second; `tests/lsp.rs` keeps what needs real processes (stdio,
//! exit with the editor, kill -9, two windows, a server crash).
//!
//! An integration test rather than a unit test in `src/lsp`: it reaches the
//! sidecar only through the public function the binary calls, as an editor
//! would, and it needs the server, which the sidecar's modules do not know.

mod common;
#[path = "common/lsp_inprocess.rs"]
mod inprocess;

use common::lsp_harness::{Proxy, append_record, is_thread_error};
use inprocess::*;
use serde_json::{Value, json};
use threadsync::lsp::protocol::ENGINE_ERROR;

const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;

fn force_sync(thread: &[&str]) -> Value {
    json!({ "command": "threadsync.forceSync", "arguments": thread })
}

/// Every request answers with its documented result.
#[test]
fn every_request_answers_with_its_result() {
    run("inproc-ok", |env| async move {
        let mut a = env.sidecar("a").await;
        a.ignore_chatter();
        let note = a.wait_status("synced").await["params"].clone();
        let st = a.ok("threadsync/getStatus", json!({})).await;
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&st), keys(&note), "getStatus answers what threadsync/status carries: {st} {note}");
        assert_eq!(
            (st["state"].as_str(), st["online"].as_bool(), st["pending"].as_u64()),
            (Some("synced"), Some(true), Some(0))
        );

        let id = a.ok("threadsync/createThread", json!({ "title": "first" })).await["threadId"]
            .as_str()
            .unwrap()
            .to_string();
        for untitled in [Value::Null, json!({})] {
            let r = a.ok("threadsync/createThread", untitled).await;
            let t = a.ok("threadsync/getThread", json!({ "threadId": r["threadId"] })).await;
            assert_eq!(t["title"], "", "{t}");
        }
        let m1 = a.ok("threadsync/appendMessage", json!({ "threadId": id, "role": "user", "content": "one" })).await;
        let blocks = json!([{ "type": "text", "text": "two" }]);
        let m2 =
            a.ok("threadsync/appendMessage", json!({ "threadId": id, "role": "assistant", "content": blocks })).await;
        assert!(m1["messageId"].is_string() && m2["version"].as_u64() > m1["version"].as_u64(), "{m1} {m2}");
        let titled = a.ok("threadsync/setTitle", json!({ "threadId": id, "title": "renamed" })).await;
        assert!(titled["version"].as_u64() > m2["version"].as_u64(), "{titled}");

        let t = a.ok("threadsync/getThread", json!({ "threadId": id })).await;
        assert_eq!((t["id"].as_str(), t["title"].as_str()), (Some(id.as_str()), Some("renamed")), "{t}");
        assert_eq!(t["messages"][0]["content"], "one");
        assert_eq!(t["messages"][1]["content"], blocks, "content blocks are kept as sent");

        let list = a.ok("threadsync/listThreads", json!({})).await;
        assert_eq!(list["threads"].as_array().unwrap().len(), 3, "{list}");
        let ours = list["threads"].as_array().unwrap().iter().find(|t| t["id"] == id.as_str()).cloned();
        let ours = ours.unwrap_or_else(|| panic!("{id} not listed: {list}"));
        assert_eq!((ours["title"].as_str(), ours["messageCount"].as_u64()), (Some("renamed"), Some(2)));
        assert_eq!(a.ok("threadsync/listConflicts", json!({})).await, json!({ "conflicts": [] }));
        // Requests without params take anything as none.
        let no_params =
            ["threadsync/getStatus", "threadsync/listThreads", "threadsync/listConflicts", "threadsync/metrics"];
        for method in no_params {
            for params in [Value::Null, json!([]), json!({ "x": 1 })] {
                a.ok(method, params).await;
            }
        }

        assert_eq!(a.ok("workspace/executeCommand", force_sync(&[])).await, json!({ "ok": true }));
        assert_eq!(a.ok("workspace/executeCommand", force_sync(&[&id])).await, json!({ "ok": true }));
        let metrics = a.ok("threadsync/metrics", json!({})).await;
        assert!(metrics["sync"]["pushes"].as_u64() > Some(0), "{metrics}");
        assert_eq!(metrics["pendingThreads"], 0, "{metrics}");

        // A message an assistant deleted (a delete record in the log) comes back under a new id.
        let gone = m1["messageId"].as_str().unwrap().to_string();
        append_record(&a.threads, &id, &json!({ "type": "delete", "id": gone }));
        a.wait_thread(&id, |t| t["messages"].as_array().unwrap().len() == 1).await;
        let back = a.ok("threadsync/restoreMessage", json!({ "threadId": id, "messageId": gone })).await;
        assert!(back["messageId"].is_string() && back["messageId"] != gone.as_str(), "{back}");
        let t = a.ok("threadsync/getThread", json!({ "threadId": id })).await;
        assert_eq!((&t["messages"][0]["content"], &t["messages"][0]["restoredFrom"]), (&json!("one"), &json!(gone)));
    });
}

/// A request the sidecar cannot serve is refused with the JSON-RPC code
/// that says whose fault it is (the request's: -32602; the sync's: -32001)
/// and a message naming what is wrong. `$T` is a thread that exists, `$M`
/// a message of it that is not deleted.
#[test]
fn bad_requests_are_refused_with_a_code_and_a_reason() {
    let long_id = format!("T-{}", "x".repeat(200));
    let cases: &[(&str, Value, i64, &str)] = &[
        // Unknown methods.
        ("threadsync/nope", json!({}), METHOD_NOT_FOUND, "Method not found"),
        ("$/threadsync.unknown", json!({}), METHOD_NOT_FOUND, "Method not found"),
        // Hostile or malformed thread ids, in every request that takes one.
        ("threadsync/getThread", json!({ "threadId": "../../etc/passwd" }), INVALID_PARAMS, "only letters"),
        ("threadsync/getThread", json!({ "threadId": "T-\u{0}" }), INVALID_PARAMS, "only letters"),
        ("threadsync/getThread", json!({ "threadId": "" }), INVALID_PARAMS, "empty"),
        ("threadsync/getThread", json!({ "threadId": long_id }), INVALID_PARAMS, "at most 128"),
        (
            "threadsync/appendMessage",
            json!({ "threadId": "a/b", "role": "user", "content": "x" }),
            INVALID_PARAMS,
            "only letters",
        ),
        ("threadsync/setTitle", json!({ "threadId": "T-ü", "title": "x" }), INVALID_PARAMS, "only letters"),
        ("threadsync/restoreMessage", json!({ "threadId": "..", "messageId": "m-1" }), INVALID_PARAMS, "only letters"),
        (
            "threadsync/restoreMessage",
            json!({ "threadId": "$T", "messageId": "m 1" }),
            INVALID_PARAMS,
            "messageId \"m 1\"",
        ),
        ("workspace/executeCommand", force_sync(&["../x"]), INVALID_PARAMS, "only letters"),
        // Wrong shapes.
        ("threadsync/getThread", json!({}), INVALID_PARAMS, "missing field `threadId`"),
        ("threadsync/getThread", Value::Null, INVALID_PARAMS, "invalid type: null"),
        ("threadsync/getThread", json!({ "threadId": 5 }), INVALID_PARAMS, "invalid type"),
        ("threadsync/getThread", json!({ "threadId": "$T", "extra": 1 }), INVALID_PARAMS, "unknown field `extra`"),
        (
            "threadsync/appendMessage",
            json!({ "threadId": 5, "role": [], "content": "x" }),
            INVALID_PARAMS,
            "invalid type",
        ),
        (
            "threadsync/appendMessage",
            json!({ "threadId": "$T", "role": "user" }),
            INVALID_PARAMS,
            "missing field `content`",
        ),
        ("threadsync/setTitle", json!({ "threadId": "$T", "title": 5 }), INVALID_PARAMS, "invalid type"),
        ("threadsync/createThread", json!({ "title": 5 }), INVALID_PARAMS, "invalid type"),
        ("threadsync/restoreMessage", json!({ "threadId": "$T" }), INVALID_PARAMS, "missing field `messageId`"),
        ("workspace/executeCommand", json!({}), INVALID_PARAMS, "missing field `command`"),
        (
            "workspace/executeCommand",
            json!({ "command": "threadsync.nope" }),
            INVALID_PARAMS,
            "unknown command \"threadsync.nope\"",
        ),
        (
            "workspace/executeCommand",
            json!({ "command": "threadsync.forceSync", "arguments": [null] }),
            INVALID_PARAMS,
            "forceSync takes [] or [\"<threadId>\"]",
        ),
        ("workspace/executeCommand", force_sync(&["$T", "$T"]), INVALID_PARAMS, "forceSync takes"),
        ("workspace/executeCommand", resolve(json!([])), INVALID_PARAMS, "resolveConflict takes"),
        (
            "workspace/executeCommand",
            resolve(json!([{ "conflictId": 5, "choose": "local" }])),
            INVALID_PARAMS,
            "resolveConflict takes",
        ),
        (
            "workspace/executeCommand",
            resolve(json!([{ "conflictId": "x", "choose": "both" }])),
            INVALID_PARAMS,
            "choose must be \"local\" or \"remote\", not \"both\"",
        ),
        // Well formed, about something that is not there.
        ("threadsync/getThread", json!({ "threadId": "T-none" }), INVALID_PARAMS, "no thread T-none"),
        (
            "threadsync/appendMessage",
            json!({ "threadId": "T-none", "role": "user", "content": "x" }),
            ENGINE_ERROR,
            "no thread T-none",
        ),
        ("threadsync/setTitle", json!({ "threadId": "T-none", "title": "x" }), ENGINE_ERROR, "no thread T-none"),
        (
            "threadsync/restoreMessage",
            json!({ "threadId": "T-none", "messageId": "m-1" }),
            ENGINE_ERROR,
            "no message m-1 in thread T-none",
        ),
        (
            "threadsync/restoreMessage",
            json!({ "threadId": "$T", "messageId": "m-nope" }),
            ENGINE_ERROR,
            "no message m-nope",
        ),
        ("threadsync/restoreMessage", json!({ "threadId": "$T", "messageId": "$M" }), ENGINE_ERROR, "is not deleted"),
        (
            "workspace/executeCommand",
            resolve(json!([{ "conflictId": "c-none", "choose": "local" }])),
            ENGINE_ERROR,
            "no conflict c-none",
        ),
    ];
    run("inproc-bad", |env| async move {
        let mut a = env.sidecar("a").await;
        a.ignore_chatter();
        a.wait_status("synced").await;
        let id =
            a.ok("threadsync/createThread", json!({ "title": "t" })).await["threadId"].as_str().unwrap().to_string();
        let r = a.ok("threadsync/appendMessage", json!({ "threadId": id, "role": "user", "content": "kept" })).await;
        let message = r["messageId"].as_str().unwrap().to_string();
        let mut failures = Vec::new();
        for (method, params, code, fragment) in cases {
            let params: Value =
                serde_json::from_str(&params.to_string().replace("$T", &id).replace("$M", &message)).unwrap();
            let (got, msg) = a.error(method, params.clone()).await;
            if got != *code || !msg.contains(fragment) {
                failures.push(format!("{method} {params}: got {got} {msg:?}, want {code} containing {fragment:?}"));
            }
        }
        assert!(failures.is_empty(), "{} of {} cases:\n{}", failures.len(), cases.len(), failures.join("\n"));
        // Nothing of it changed the thread.
        let t = a.ok("threadsync/getThread", json!({ "threadId": id })).await;
        assert_eq!((t["title"].as_str(), t["messages"].as_array().unwrap().len()), (Some("t"), 1), "{t}");
    });
}

fn resolve(arguments: Value) -> Value {
    json!({ "command": "threadsync.resolveConflict", "arguments": arguments })
}

/// A message that is not JSON-RPC is answered with an error (a null id:
/// it has none that can be trusted) and the sidecar goes on serving.
#[test]
fn every_malformed_message_is_answered_and_the_sidecar_stays_up() {
    let cases: &[(&[u8], i64)] = &[
        (b"{\"jsonrpc\": \"2.0\", \"id\": 99, \"method\": ", PARSE_ERROR),
        (b"{\"jsonrpc\":\"2.0\",\"method\":\"\xff\"}", PARSE_ERROR),
        (b"1", INVALID_REQUEST),
        (b"{}", INVALID_REQUEST),
        (b"[]", INVALID_REQUEST),
        (b"\"text\"", INVALID_REQUEST),
        (br#"[{"jsonrpc":"2.0","id":1,"method":"threadsync/getStatus"}]"#, INVALID_REQUEST),
        (br#"{"jsonrpc":"1.0","id":1,"method":"threadsync/getStatus"}"#, INVALID_REQUEST),
        (br#"{"jsonrpc":"2.0","id":1,"method":5}"#, INVALID_REQUEST),
        (br#"{"jsonrpc":"2.0","id":1.5,"method":"threadsync/getStatus"}"#, INVALID_REQUEST),
        (br#"{"jsonrpc":"2.0","id":true,"method":"threadsync/getStatus"}"#, INVALID_REQUEST),
        (br#"{"jsonrpc":"2.0","id":[1],"method":"threadsync/getStatus"}"#, INVALID_REQUEST),
        (br#"{"jsonrpc":"2.0","id":1180591620717411303424,"method":"threadsync/getStatus"}"#, INVALID_REQUEST),
        (br#"{"jsonrpc":"2.0","id":7,"method":"threadsync/getStatus","params":5}"#, INVALID_REQUEST),
        (br#"{"jsonrpc":"2.0","id":1,"result":1,"error":{"code":1,"message":"m"}}"#, INVALID_REQUEST),
    ];
    run("inproc-rpc", |env| async move {
        let mut a = env.sidecar("a").await;
        a.ignore_chatter();
        a.wait_status("synced").await;
        for (body, code) in cases {
            let what = String::from_utf8_lossy(body).to_string();
            a.send_body(body).await;
            let err = a.wait_note(&format!("an error for {what}"), |m| m.get("error").is_some()).await;
            assert_eq!((&err["error"]["code"], &err["id"]), (&json!(code), &Value::Null), "{what}: {err}");
            assert!(a.ok("threadsync/getStatus", json!({})).await["state"].is_string(), "{what}");
        }
        // A frame whose header is unusable is skipped and answered too.
        a.send_raw(b"Content-Length: x\r\n\r\n").await;
        let err = a.wait_note("an error for a bad Content-Length", |m| m.get("error").is_some()).await;
        assert_eq!(err["error"]["code"], PARSE_ERROR, "{err}");
        assert!(a.ok("threadsync/getStatus", json!({})).await["state"].is_string());
        assert!(a.is_serving());
    });
}

/// A sidecar whose configuration is unusable tells the user which key, does
/// not start syncing, and answers every request that needs the sync with
/// an error saying so (its status still answers).
#[test]
fn a_sidecar_that_cannot_sync_says_why_and_refuses_sync_requests() {
    run("inproc-nosync", |env| async move {
        let mut opts = env.options(&env.dir.join("a"), &env.server, TOKEN);
        opts["threadsDir"] = json!(["not", "a", "path"]);
        let mut a = Sidecar::start(opts).await;
        let m = a.wait_note("showMessage", |m| m["method"] == "window/showMessage").await;
        assert!(m["params"]["message"].as_str().unwrap().contains("threadsDir: expected a string"), "{m}");
        assert_eq!(a.ok("threadsync/getStatus", json!({})).await["state"], "syncing");
        let requests = [
            ("threadsync/listThreads", json!({})),
            ("threadsync/createThread", json!({ "title": "t" })),
            ("threadsync/getThread", json!({ "threadId": "T-1" })),
            ("threadsync/metrics", json!({})),
            ("workspace/executeCommand", force_sync(&[])),
        ];
        for (method, params) in requests {
            let (code, msg) = a.error(method, params).await;
            assert_eq!(code, ENGINE_ERROR, "{method}: {msg}");
            assert!(msg.contains("not syncing"), "{method}: {msg}");
        }
    });
}

/// Title changes made on two machines at once: the one that reaches the
/// server second is refused, and its sidecar lists the conflict; resolving
/// it with `local` makes that side win everywhere. (B is cut off while it
/// changes the title, so the two changes are concurrent however fast the
/// machines are.)
#[test]
fn concurrent_titles_conflict_and_resolve() {
    run("inproc-title", |env| async move {
        let mut a = env.sidecar("a").await;
        a.ignore_chatter();
        let proxy = Proxy::start(env.server.strip_prefix("http://").unwrap());
        let mut b = env.sidecar_with(env.options(&env.dir.join("b"), &proxy.url(), TOKEN)).await;
        b.ignore_chatter();
        a.wait_status("synced").await;
        let id =
            a.ok("threadsync/createThread", json!({ "title": "base" })).await["threadId"].as_str().unwrap().to_string();
        b.wait_thread(&id, |t| t["title"] == "base").await;
        proxy.cut();
        b.ok("threadsync/setTitle", json!({ "threadId": id, "title": "B's title" })).await;
        a.ok("threadsync/setTitle", json!({ "threadId": id, "title": "A's title" })).await;
        a.ok("workspace/executeCommand", force_sync(&[&id])).await;
        proxy.heal();
        b.ok("workspace/executeCommand", force_sync(&[])).await;
        a.ok("workspace/executeCommand", force_sync(&[])).await;
        let ta = a.ok("threadsync/getThread", json!({ "threadId": id })).await;
        let tb = b.ok("threadsync/getThread", json!({ "threadId": id })).await;
        assert_eq!((ta["title"].as_str(), tb["title"].as_str()), (Some("A's title"), Some("A's title")), "converged");
        assert_eq!(a.ok("threadsync/listConflicts", json!({})).await, json!({ "conflicts": [] }), "A's change won");
        let conflicts = b.ok("threadsync/listConflicts", json!({})).await["conflicts"].clone();
        assert_eq!(conflicts.as_array().unwrap().len(), 1, "{conflicts}");
        let c = &conflicts[0];
        assert_eq!(
            (c["kind"].as_str(), c["threadId"].as_str(), c["base"].as_str(), c["local"].as_str(), c["remote"].as_str()),
            (Some("title"), Some(id.as_str()), Some("base"), Some("B's title"), Some("A's title"))
        );
        b.wait_status("conflict").await;
        let choice = json!([{ "conflictId": c["id"], "choose": "local" }]);
        assert_eq!(b.ok("workspace/executeCommand", resolve(choice.clone())).await, json!({ "ok": true }));
        b.ok("workspace/executeCommand", force_sync(&[])).await;
        assert_eq!(b.ok("threadsync/listConflicts", json!({})).await, json!({ "conflicts": [] }));
        // Resolved once: a second time there is nothing to resolve.
        let (code, msg) = b.error("workspace/executeCommand", resolve(choice)).await;
        assert_eq!(code, ENGINE_ERROR, "{msg}");
        assert!(msg.contains("no conflict"), "{msg}");
        a.wait_thread(&id, |t| t["title"] == "B's title").await;
        b.wait_thread(&id, |t| t["title"] == "B's title").await;
    });
}

/// A half-written thread file is reported for that thread, and read again
/// once it is whole; a file whose name is not a thread id is left alone.
#[test]
fn a_half_written_thread_file_is_reported_then_read_when_whole() {
    run("inproc-half", |env| async move {
        let mut a = env.sidecar("a").await;
        a.ignore_chatter();
        a.wait_status("synced").await;
        std::fs::write(a.threads.join("T-half.json"), b"{\"id\": \"T-half\", \"messages\": [{\"role\": \"us").unwrap();
        let st = a.wait_note("threadStatus error", |m| is_thread_error(m, "T-half")).await;
        assert!(st["params"]["error"].as_str().unwrap().contains("not valid thread JSON"), "{st}");
        // Each write may be read before it is done: more reports may follow.
        a.ignore_where(|m| is_thread_error(m, "T-half"));
        std::fs::write(
            a.threads.join("T-half.json"),
            br#"{"id": "T-half", "messages": [{"role": "user", "content": "whole now"}]}"#,
        )
        .unwrap();
        a.wait_note("threadStatus recovered", |m| {
            m["method"] == "threadsync/threadStatus"
                && m["params"]["threadId"] == "T-half"
                && m["params"]["state"] != "error"
        })
        .await;
        std::fs::write(a.threads.join("not a thread.json"), b"{}").unwrap();
        let t = a.wait_thread("T-half", |t| t["messages"].as_array().is_some_and(|m| m.len() == 1)).await;
        assert_eq!(t["messages"][0]["content"], "whole now");
        a.ok("workspace/executeCommand", force_sync(&[])).await;
        let list = a.ok("threadsync/listThreads", json!({})).await;
        let ids: Vec<&str> = list["threads"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["T-half"], "{list}");
    });
}

/// Sidecars started at the same moment (in one process here; on two
/// machines, or in two containers whose sidecars have the same pid) must
/// not share a client id: the server would take the second one's changes
/// for replays of the first's and drop them, while that sidecar showed
/// them as synced.
#[test]
fn sidecars_started_at_once_lose_none_of_their_changes() {
    run("inproc-at-once", |env| async move {
        for round in 0..10 {
            let (da, db) = (env.dir.join(format!("a{round}")), env.dir.join(format!("b{round}")));
            // Started together, without the pause `sidecar_with` leaves.
            let (mut a, mut b) = tokio::join!(
                Sidecar::start(env.options(&da, &env.server, TOKEN)),
                Sidecar::start(env.options(&db, &env.server, TOKEN))
            );
            a.ignore_chatter();
            b.ignore_chatter();
            a.wait_status("synced").await;
            b.wait_status("synced").await;
            let (ta, tb) = tokio::join!(
                a.ok("threadsync/createThread", json!({ "title": format!("a{round}") })),
                b.ok("threadsync/createThread", json!({ "title": format!("b{round}") }))
            );
            a.ok("workspace/executeCommand", force_sync(&[])).await;
            b.ok("workspace/executeCommand", force_sync(&[])).await;
            let http = reqwest::Client::new();
            for t in [&ta["threadId"], &tb["threadId"]] {
                let url = format!("{}/v1/threads/{}", env.server, t.as_str().unwrap());
                let r = http.get(url).bearer_auth(TOKEN).send().await.unwrap();
                assert_eq!(r.status(), 200, "round {round}: thread {t} never reached the server");
            }
        }
    });
}
