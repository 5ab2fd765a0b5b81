//! Every route and every error, in process (`Router::oneshot`), over the
//! in-memory store. The real binary on real databases is `tests/server.rs`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use tokio::sync::watch;
use tower::ServiceExt;

use threadsync::server::TeamId;
use threadsync::server::http::{AppState, ServerConfig, router};
use threadsync::server::store::{MemStore, Store, StoreExt, token_hash};

struct App {
    state: AppState,
    stop: watch::Sender<bool>,
}

const TOKEN_A: &str = "tsk_aaaa_secret";
const TOKEN_B: &str = "tsk_bbbb_secret";

fn app(cfg: ServerConfig) -> App {
    let store = Arc::new(std::sync::Mutex::new(MemStore::default()));
    store.insert_token("aaaa", &TeamId::new("a").unwrap(), &token_hash(TOKEN_A), 0).unwrap();
    store.insert_token("bbbb", &TeamId::new("b").unwrap(), &token_hash(TOKEN_B), 0).unwrap();
    let (stop, rx) = watch::channel(false);
    App { state: AppState::new(store, cfg, rx), stop }
}

impl App {
    async fn call(&self, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
        let resp = router(self.state.clone()).oneshot(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (parts.status, parts.headers, value)
    }

    async fn push(&self, token: &str, body: impl Into<Body>) -> (StatusCode, Value) {
        let req = Request::post("/v1/push")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(body.into())
            .unwrap();
        let (s, _, v) = self.call(req).await;
        (s, v)
    }

    async fn get(&self, token: Option<&str>, uri: &str) -> (StatusCode, axum::http::HeaderMap, Value) {
        let mut req = Request::get(uri);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        self.call(req.body(Body::empty()).unwrap()).await
    }
}

fn create_and_append(client: &str, id: u64, thread: &str, msg: &str) -> String {
    json!({"clientId": client, "mutations": [{"id": id, "threadId": thread, "ops": [
        {"op": "create", "created": 1, "env": {}},
        {"op": "append", "after": null, "message": {"id": msg, "role": "user", "content": format!("text {msg}")}}
    ]}]})
    .to_string()
}

fn code(v: &Value) -> &str {
    v["code"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn push_pull_and_fetch() {
    let a = app(ServerConfig::default());
    let (s, v) = a.push(TOKEN_A, create_and_append("c1", 1, "T-1", "m1")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["results"][0]["status"], "applied");
    assert_eq!(v["cursor"], "2");

    let (s, _, v) = a.get(Some(TOKEN_A), "/v1/pull?cursor=0").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["changes"].as_array().unwrap().len(), 2);
    assert_eq!(v["upToDate"], true);
    let (_, _, v) = a.get(Some(TOKEN_A), "/v1/pull").await;
    assert_eq!(v["snapshots"][0]["thread"]["id"], "T-1", "no cursor: snapshots");

    let (s, h, v) = a.get(Some(TOKEN_A), "/v1/threads/T-1").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["messages"][0]["id"], "m1");
    let etag = h[header::ETAG].to_str().unwrap().to_string();
    assert_eq!(etag, "\"v2\"");
    let req = Request::get("/v1/threads/T-1")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN_A}"))
        .header(header::IF_NONE_MATCH, &etag)
        .body(Body::empty())
        .unwrap();
    let (s, _, _) = a.call(req).await;
    assert_eq!(s, StatusCode::NOT_MODIFIED);
    let (s, _, v) = a.get(Some(TOKEN_A), "/v1/threads/T-1?from=1").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["changes"].as_array().unwrap().len(), 1, "only what changed after version 1: {v}");
    let (_, _, v) = a.get(Some(TOKEN_A), "/v1/threads/T-1?from=2").await;
    assert_eq!(v["changes"].as_array().unwrap().len(), 0);

    let (s, _, v) = a.get(None, "/healthz").await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (s, _, v) = a.get(None, "/metrics").await;
    assert_eq!(s, StatusCode::OK);
    let text = v.as_str().unwrap();
    assert!(text.contains("threadsync_push_mutations_total{status=\"applied\"} 1"), "{text}");
    assert!(text.contains("threadsync_long_polls_held"));
}

#[tokio::test]
async fn auth_errors_are_401_and_teams_are_isolated() {
    let a = app(ServerConfig::default());
    a.push(TOKEN_A, create_and_append("c1", 1, "T-1", "m1")).await;
    let (s, _, v) = a.get(None, "/v1/pull").await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    assert!(v["message"].as_str().unwrap().contains("missing bearer token"));
    let req = Request::get("/v1/pull").header(header::AUTHORIZATION, "Basic abc").body(Body::empty()).unwrap();
    let (s, _, v) = a.call(req).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(v["message"].as_str().unwrap().contains("malformed"));
    let (s, _, _) = a.get(Some("tsk_nope"), "/v1/pull").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    a.state.store.revoke_tokens("aaaa", 1).unwrap();
    let (s, _, v) = a.get(Some(TOKEN_A), "/v1/pull").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "revoked: {v}");

    // Team b: the same thread id answers like a missing one, and its push
    // cannot touch team a's thread.
    let a2 = app(ServerConfig::default());
    a2.push(TOKEN_A, create_and_append("c1", 1, "T-1", "m1")).await;
    let (s, _, v) = a2.get(Some(TOKEN_B), "/v1/threads/T-1").await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "not_found"));
    let (_, _, missing) = a2.get(Some(TOKEN_B), "/v1/threads/T-nothing").await;
    assert_eq!(
        v["message"].as_str().unwrap().replace("T-1", "X"),
        missing["message"].as_str().unwrap().replace("T-nothing", "X")
    );
    let (_, v) = a2.push(TOKEN_B, create_and_append("c1", 1, "T-1", "intruder")).await;
    assert_eq!(v["results"][0]["status"], "applied", "team b's own T-1");
    let (_, _, v) = a2.get(Some(TOKEN_A), "/v1/threads/T-1").await;
    assert_eq!(v["messages"].as_array().unwrap().len(), 1);
    assert_eq!(v["messages"][0]["id"], "m1");
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    let a = app(ServerConfig { max_body: 4096, ..ServerConfig::default() });
    a.push(TOKEN_A, create_and_append("c1", 1, "T-1", "m1")).await;
    let cases: Vec<(Body, StatusCode, &str, &str)> = vec![
        (Body::from("{\"clientId\": "), StatusCode::BAD_REQUEST, "bad_request", "EOF"),
        (Body::from("[1, 2]"), StatusCode::BAD_REQUEST, "bad_request", "invalid type"),
        (Body::from(r#"{"clientId": 5, "mutations": []}"#), StatusCode::BAD_REQUEST, "bad_request", "invalid type"),
        (
            Body::from(vec![b'{', b'"', 0xff, 0xfe, b'"', b':', b'1', b'}']),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "invalid",
        ),
        (
            Body::from(
                json!({"clientId": "c1", "mutations": [{"id": 2, "threadId": "../../etc/passwd", "ops": []}]})
                    .to_string(),
            ),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "only letters, digits",
        ),
        (
            Body::from(json!({"clientId": "c 1", "mutations": []}).to_string()),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "only letters",
        ),
        (
            Body::from(json!({"clientId": "c1", "mutations": [{"id": 0, "threadId": "T-1", "ops": []}]}).to_string()),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "start at 1",
        ),
        (
            Body::from(format!("{{\"pad\": \"{}\"}}", "x".repeat(5000))),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "4096 bytes",
        ),
    ];
    for (body, status, want_code, want_text) in cases {
        let (s, v) = a.push(TOKEN_A, body).await;
        assert_eq!((s, code(&v)), (status, want_code), "{v}");
        assert!(v["message"].as_str().unwrap().contains(want_text), "{v}");
    }
    for (uri, status, want) in [
        ("/v1/pull?cursor=zzz", StatusCode::BAD_REQUEST, "bad_cursor"),
        ("/v1/pull?cursor=999", StatusCode::GONE, "refetch"),
        ("/v1/pull?wait=abc", StatusCode::BAD_REQUEST, ""),
        ("/v1/threads/a%20b", StatusCode::BAD_REQUEST, "bad_thread_id"),
        ("/v1/threads/..%2F..%2Fetc", StatusCode::BAD_REQUEST, "bad_thread_id"),
        ("/v1/nothing", StatusCode::NOT_FOUND, "not_found"),
    ] {
        let (s, _, v) = a.get(Some(TOKEN_A), uri).await;
        assert_eq!(s, status, "{uri}: {v}");
        if !want.is_empty() {
            assert_eq!(code(&v), want, "{uri}");
        }
    }
    let (s, _, v) = a.call(Request::delete("/v1/push").body(Body::empty()).unwrap()).await;
    assert_eq!((s, code(&v)), (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"));
    // Nothing stored was touched.
    let (_, _, v) = a.get(Some(TOKEN_A), "/v1/threads/T-1").await;
    assert_eq!(v["messages"].as_array().unwrap().len(), 1);
    assert_eq!(v["v"], 2);
}

#[tokio::test]
async fn compressed_bodies_are_limited_after_decompression() {
    use std::io::Write;
    let a = app(ServerConfig { max_body: 64 << 10, ..ServerConfig::default() });
    let gz = |text: &str| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(text.as_bytes()).unwrap();
        e.finish().unwrap()
    };
    let body = create_and_append("c1", 1, "T-1", "m1");
    let req = Request::post("/v1/push")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN_A}"))
        .header(header::CONTENT_ENCODING, "gzip")
        .body(Body::from(gz(&body)))
        .unwrap();
    let (s, _, v) = a.call(req).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // A small gzip bomb: 1 MB of zeros inflated from ~1 KB.
    let bomb = gz(&format!("{{\"x\": \"{}\"}}", "0".repeat(1 << 20)));
    assert!(bomb.len() < 8 << 10);
    let req = Request::post("/v1/push")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN_A}"))
        .header(header::CONTENT_ENCODING, "gzip")
        .body(Body::from(bomb))
        .unwrap();
    let (s, _, v) = a.call(req).await;
    assert_eq!((s, code(&v)), (StatusCode::PAYLOAD_TOO_LARGE, "too_large"));

    // A push's small answer is not worth compressing.
    let big = json!({"clientId": "c1", "mutations": [{"id": 2, "threadId": "T-1", "ops": [
        {"op": "append", "after": "m1", "message": {"id": "m2", "role": "user", "content": "lorem ipsum ".repeat(400)}}
    ]}]});
    let req = Request::post("/v1/push")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN_A}"))
        .header(header::ACCEPT_ENCODING, "gzip")
        .body(Body::from(big.to_string()))
        .unwrap();
    let resp = router(a.state.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().get(header::CONTENT_ENCODING).is_none());
    // Answers are compressed when large and the client accepts it (here
    // zstd and gzip): the pull carries the 4.8 KB message.
    for enc in ["gzip", "zstd"] {
        let req = Request::get("/v1/pull?cursor=0")
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN_A}"))
            .header(header::ACCEPT_ENCODING, enc)
            .body(Body::empty())
            .unwrap();
        let resp = router(a.state.clone()).oneshot(req).await.unwrap();
        assert_eq!(resp.headers()[header::CONTENT_ENCODING], enc);
    }
}

/// Starts a pull that the server may hold; yields how long it took and its answer.
fn held_pull(state: AppState, uri: &'static str) -> tokio::task::JoinHandle<(Duration, Value)> {
    tokio::spawn(async move {
        let req =
            Request::get(uri).header(header::AUTHORIZATION, format!("Bearer {TOKEN_A}")).body(Body::empty()).unwrap();
        let start = std::time::Instant::now();
        let resp = router(state).oneshot(req).await.unwrap();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        (start.elapsed(), serde_json::from_slice::<Value>(&bytes).unwrap())
    })
}

#[tokio::test]
async fn a_held_pull_answers_the_moment_a_push_lands_and_at_shutdown() {
    let a = app(ServerConfig::default());
    a.push(TOKEN_A, create_and_append("c1", 1, "T-1", "m1")).await;
    let held = held_pull(a.state.clone(), "/v1/pull?cursor=2&wait=20");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let push = json!({"clientId": "c2", "mutations": [{"id": 1, "threadId": "T-1", "ops": [
        {"op": "append", "after": "m1", "message": {"id": "m2", "role": "user", "content": "x"}}]}]});
    a.push(TOKEN_A, push.to_string()).await;
    let (took, v) = held.await.unwrap();
    assert!(took < Duration::from_secs(2), "answered after {took:?}");
    assert_eq!(v["changes"][0]["message"]["id"], "m2");

    // Nothing new: held until shutdown, then an up-to-date answer at once.
    let held = held_pull(a.state.clone(), "/v1/pull?cursor=3&wait=20");
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.stop.send(true).unwrap();
    let (took, v) = held.await.unwrap();
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!((v["upToDate"].as_bool(), v["cursor"].as_str()), (Some(true), Some("3")));
}

#[tokio::test]
async fn a_long_held_pull_sends_a_byte_every_heartbeat_then_its_answer() {
    use http_body_util::BodyExt;
    let a = app(ServerConfig { heartbeat: Duration::from_millis(100), ..ServerConfig::default() });
    a.push(TOKEN_A, create_and_append("c1", 1, "T-1", "m1")).await;
    let req = Request::get("/v1/pull?cursor=2&wait=20")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN_A}"))
        .header(header::ACCEPT_ENCODING, "gzip")
        .body(Body::empty())
        .unwrap();
    let resp = router(a.state.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().get(header::CONTENT_ENCODING).is_none(), "a compressor would hold the spaces back");
    let mut body = resp.into_body();
    let mut got = Vec::new();
    while got.len() < 3 {
        let frame = tokio::time::timeout(Duration::from_secs(2), body.frame()).await.expect("a heartbeat");
        got.extend_from_slice(&frame.unwrap().unwrap().into_data().unwrap());
    }
    assert!(got.iter().all(|b| *b == b' '), "{got:?}");
    // A push ends the hold: the answer follows the spaces (valid JSON).
    let push = json!({"clientId": "c2", "mutations": [{"id": 1, "threadId": "T-1", "ops": [
        {"op": "append", "after": "m1", "message": {"id": "m2", "role": "user", "content": "x"}}]}]});
    a.push(TOKEN_A, push.to_string()).await;
    let rest = tokio::time::timeout(Duration::from_secs(2), axum::body::to_bytes(body, usize::MAX)).await.unwrap();
    got.extend_from_slice(&rest.unwrap());
    let v: Value = serde_json::from_slice(&got).unwrap();
    assert_eq!(v["changes"][0]["message"]["id"], "m2");
}

#[tokio::test]
async fn held_pulls_share_a_read_yet_a_missed_notification_is_read_again() {
    let a = app(ServerConfig::default());
    a.push(TOKEN_A, create_and_append("c1", 1, "T-1", "m1")).await;
    // Several pulls at one cursor, woken by one push: each gets the change.
    let held: Vec<_> = (0..5).map(|_| held_pull(a.state.clone(), "/v1/pull?cursor=2&wait=20")).collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let push = json!({"clientId": "c2", "mutations": [{"id": 1, "threadId": "T-1", "ops": [
        {"op": "append", "after": "m1", "message": {"id": "m2", "role": "user", "content": "x"}}]}]});
    a.push(TOKEN_A, push.to_string()).await;
    for h in held {
        let (_, v) = h.await.unwrap();
        assert_eq!(v["changes"][0]["message"]["id"], "m2");
    }
    // A change the hub never heard of (another server's notification lost):
    // pulls that shared an idle read read again when told to.
    let held: Vec<_> = (0..3).map(|_| held_pull(a.state.clone(), "/v1/pull?cursor=3&wait=20")).collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let req: threadsync::wire::PushRequest = serde_json::from_value(json!({"clientId": "c3", "mutations": [
        {"id": 1, "threadId": "T-1", "ops": [
            {"op": "append", "after": "m2", "message": {"id": "m3", "role": "user", "content": "y"}}]}]}))
    .unwrap();
    let team = TeamId::new("a").unwrap();
    a.state.store.run(&team, true, |tx| threadsync::server::push(tx, &req, &Default::default())).unwrap();
    a.state.hub.wake_all();
    for h in held {
        let (took, v) = h.await.unwrap();
        assert!(took < Duration::from_secs(2), "{took:?}");
        assert_eq!(v["changes"][0]["message"]["id"], "m3", "{v}");
    }
}

#[tokio::test]
async fn overload_answers_429_with_retry_after() {
    let a = app(ServerConfig { max_held: 0, ..ServerConfig::default() });
    a.push(TOKEN_A, create_and_append("c1", 1, "T-1", "m1")).await;
    let (s, h, v) = a.get(Some(TOKEN_A), "/v1/pull?cursor=2&wait=5").await;
    assert_eq!((s, code(&v)), (StatusCode::TOO_MANY_REQUESTS, "overloaded"));
    assert_eq!(h[header::RETRY_AFTER], "1");
    // Not held: a pull without wait still answers.
    let (s, _, _) = a.get(Some(TOKEN_A), "/v1/pull?cursor=2").await;
    assert_eq!(s, StatusCode::OK);
    let a = app(ServerConfig { max_mutations: 1, ..ServerConfig::default() });
    let two = json!({"clientId": "c1", "mutations": [{"id": 1, "threadId": "T", "ops": []}, {"id": 2, "threadId": "T", "ops": []}]});
    let (s, v) = a.push(TOKEN_A, two.to_string()).await;
    assert_eq!((s, code(&v)), (StatusCode::PAYLOAD_TOO_LARGE, "too_many_mutations"));
}
