//! Drives the real assistant CLIs — Claude Code, Codex CLI, Gemini CLI, as
//! installed from npm by `tests/assistants/install.sh` — offline, each in a
//! fake HOME, against [`FakeModel`], a model API on 127.0.0.1.
//!
//! Include it with `#[path = "common/assistants.rs"] mod assistants;`.
//!
//! Everything here is the real client writing its real session store; only
//! the model is fake. What each version writes, and where a copied session
//! must go for the client's own resume to find it, is in
//! `shared/assistant-stores.md` and in the comments on [`Cli`].

#![allow(dead_code)]

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How long one CLI run may take before it is killed (a run takes 1–3 s here).
pub const RUN_TIMEOUT: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------
// Installed CLIs
// ---------------------------------------------------------------------------

/// Absolute paths of the installed tools.
#[derive(Debug)]
pub struct Clis {
    /// Node 24's bin dir: first on the CLIs' PATH (their shebangs say `env node`).
    pub node_bin: PathBuf,
    pub claude: PathBuf,
    pub codex: PathBuf,
    pub gemini: PathBuf,
}

/// Runs `tests/assistants/install.sh` once per test process (it is idempotent
/// and takes ~0.2 s when everything is there) and returns the tools' paths.
pub fn clis() -> &'static Clis {
    static CLIS: OnceLock<Clis> = OnceLock::new();
    CLIS.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let script = root.join("tests/assistants/install.sh");
        let out = Command::new("bash")
            .arg(&script)
            .current_dir(root)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprint!("{stdout}");
        assert!(out.status.success(), "{} failed ({}):\n{stdout}\n{stderr}", script.display(), out.status);
        let node_bin = stdout
            .lines()
            .find_map(|l| l.strip_prefix("ASSISTANTS_NODE_BIN="))
            .map(PathBuf::from)
            .expect("install.sh prints ASSISTANTS_NODE_BIN=<dir> last");
        let bin = |name: &str| root.join(".cache/assistants").join(name).join("node_modules/.bin").join(name);
        let clis = Clis { node_bin, claude: bin("claude"), codex: bin("codex"), gemini: bin("gemini") };
        for p in [&clis.node_bin.join("node"), &clis.claude, &clis.codex, &clis.gemini] {
            assert!(p.exists(), "install.sh succeeded but {} is missing", p.display());
        }
        clis
    })
}

// ---------------------------------------------------------------------------
// The fake model API
// ---------------------------------------------------------------------------

/// Which API a request was for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// Anthropic `POST /v1/messages` (Claude Code; it adds `?beta=true`).
    AnthropicMessages,
    /// Anthropic `POST /v1/messages/count_tokens`.
    AnthropicCountTokens,
    /// OpenAI Responses `POST /v1/responses` (Codex CLI).
    OpenAiResponses,
    /// Gemini `…:generateContent`: Gemini CLI's model-routing and next-speaker
    /// calls (they ask for JSON by schema), or a plain non-streaming turn.
    GeminiGenerate,
    /// Gemini `…:streamGenerateContent` (the conversation turn).
    GeminiStream,
    /// Gemini `…:countTokens`.
    GeminiCountTokens,
    /// Anything else: answered 404 (and logged to stderr).
    Unknown,
}

/// Who said a piece of text, normalised over the three APIs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    User,
    /// `assistant` (Anthropic, OpenAI) or `model` (Gemini).
    Assistant,
    /// `system` / `developer` messages in the conversation.
    Other,
}

/// One request the fake received.
#[derive(Clone, Debug)]
pub struct Request {
    /// 0-based position among all requests this fake received.
    pub index: usize,
    pub method: String,
    /// Path and query, as sent.
    pub path: String,
    pub api: Api,
    /// The parsed JSON body (`Value::Null` if there was none or it was not JSON).
    pub body: Value,
    /// True for a conversation turn (what [`FakeModel::turn_for`] looks at); false
    /// for side calls such as Gemini's routing classifier or token counting.
    pub turn: bool,
    /// The text the fake answered with, for turns answered with text.
    pub reply: Option<String>,
    /// The whole answer, for turns (text or a tool call).
    pub answer: Option<Reply>,
}

/// One piece of a conversation as a request carries it, normalised over the
/// three APIs: text by role, the model's tool calls and the client's results.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    Text(Role, String),
    /// A tool call the model made (Anthropic `tool_use`, OpenAI `function_call`
    /// / `custom_tool_call`, Gemini `functionCall`). `id` is empty when the API
    /// carries none (Gemini may leave it out).
    ToolCall {
        id: String,
        name: String,
        args: Value,
    },
    /// The client's result for a tool call (Anthropic `tool_result`, OpenAI
    /// `function_call_output` / `custom_tool_call_output`, Gemini
    /// `functionResponse`): `output` is every string in it, joined by newlines.
    ToolResult {
        id: String,
        output: String,
    },
}

impl Request {
    /// The conversation this request carries, in order: text by role, tool
    /// calls and tool results.
    pub fn items(&self) -> Vec<Item> {
        let mut out = Vec::new();
        let role = |r: &str| match r {
            "user" => Role::User,
            "assistant" | "model" => Role::Assistant,
            _ => Role::Other,
        };
        match self.api {
            Api::AnthropicMessages | Api::AnthropicCountTokens => {
                for m in self.body["messages"].as_array().into_iter().flatten() {
                    let r = role(m["role"].as_str().unwrap_or(""));
                    match &m["content"] {
                        Value::String(s) => out.push(Item::Text(r, s.clone())),
                        Value::Array(blocks) => {
                            for b in blocks {
                                match b["type"].as_str().unwrap_or("") {
                                    "text" => out.push(Item::Text(r, str_of(&b["text"]))),
                                    "tool_use" => out.push(Item::ToolCall {
                                        id: str_of(&b["id"]),
                                        name: str_of(&b["name"]),
                                        args: b["input"].clone(),
                                    }),
                                    "tool_result" => out.push(Item::ToolResult {
                                        id: str_of(&b["tool_use_id"]),
                                        output: all_strings(&b["content"]),
                                    }),
                                    _ => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            Api::OpenAiResponses => {
                if let Some(s) = self.body["input"].as_str() {
                    return vec![Item::Text(Role::User, s.to_owned())];
                }
                for it in self.body["input"].as_array().into_iter().flatten() {
                    match it["type"].as_str().unwrap_or("message") {
                        "message" => {
                            let r = role(it["role"].as_str().unwrap_or(""));
                            match &it["content"] {
                                Value::String(s) => out.push(Item::Text(r, s.clone())),
                                Value::Array(parts) => out.extend(
                                    parts
                                        .iter()
                                        .filter_map(|p| p["text"].as_str())
                                        .map(|t| Item::Text(r, t.to_owned())),
                                ),
                                _ => {}
                            }
                        }
                        "function_call" | "custom_tool_call" | "local_shell_call" => {
                            let args = match &it["arguments"] {
                                Value::String(a) => serde_json::from_str(a).unwrap_or_else(|_| json!(a)),
                                Value::Null => it.get("input").or(it.get("action")).cloned().unwrap_or(Value::Null),
                                other => other.clone(),
                            };
                            out.push(Item::ToolCall { id: str_of(&it["call_id"]), name: str_of(&it["name"]), args });
                        }
                        "function_call_output" | "custom_tool_call_output" | "local_shell_call_output" => out
                            .push(Item::ToolResult { id: str_of(&it["call_id"]), output: all_strings(&it["output"]) }),
                        _ => {}
                    }
                }
            }
            Api::GeminiGenerate | Api::GeminiStream | Api::GeminiCountTokens => {
                for m in self.body["contents"].as_array().into_iter().flatten() {
                    let r = role(m["role"].as_str().unwrap_or(""));
                    for p in m["parts"].as_array().into_iter().flatten() {
                        if let Some(t) = p["text"].as_str() {
                            // Thoughts are not part of what was said.
                            if p["thought"] != true {
                                out.push(Item::Text(r, t.to_owned()));
                            }
                        } else if let Some(c) = p.get("functionCall") {
                            out.push(Item::ToolCall {
                                id: str_of(&c["id"]),
                                name: str_of(&c["name"]),
                                args: c["args"].clone(),
                            });
                        } else if let Some(f) = p.get("functionResponse") {
                            out.push(Item::ToolResult { id: str_of(&f["id"]), output: all_strings(&f["response"]) });
                        }
                    }
                }
            }
            Api::Unknown => {}
        }
        out
    }

    /// The conversation this request carries, as (role, text) in order: the text
    /// parts of every message (tool calls and results are in [`Request::items`]).
    pub fn conversation(&self) -> Vec<(Role, String)> {
        self.items()
            .into_iter()
            .filter_map(|i| match i {
                Item::Text(r, t) => Some((r, t)),
                _ => None,
            })
            .collect()
    }

    /// Every tool result in the conversation, as (call id, output).
    pub fn tool_results(&self) -> Vec<(String, String)> {
        self.items()
            .into_iter()
            .filter_map(|i| match i {
                Item::ToolResult { id, output } => Some((id, output)),
                _ => None,
            })
            .collect()
    }

    /// The tool results that came after the user's latest prompt (see
    /// [`Request::last_user_text`]): what the tool calls of this turn returned.
    pub fn tool_results_since_prompt(&self) -> Vec<(String, String)> {
        let items = self.items();
        let start = items.iter().rposition(is_prompt).map_or(0, |i| i + 1);
        items[start..]
            .iter()
            .filter_map(|i| match i {
                Item::ToolResult { id, output } => Some((id.clone(), output.clone())),
                _ => None,
            })
            .collect()
    }

    /// The user's latest prompt: the last user text that is not an injected
    /// context block (`<system-reminder>`, `<environment_context>`, `<session_context>`…).
    pub fn last_user_text(&self) -> Option<String> {
        self.items().into_iter().rev().find(is_prompt).and_then(|i| match i {
            Item::Text(_, t) => Some(t),
            _ => None,
        })
    }

    /// Whether some message of `role` contains `needle`.
    pub fn has(&self, role: Role, needle: &str) -> bool {
        self.conversation().iter().any(|(r, t)| *r == role && t.contains(needle))
    }

    /// Whether any string anywhere in the body contains `needle` (JSON escaping aside).
    pub fn contains(&self, needle: &str) -> bool {
        fn walk(v: &Value, needle: &str) -> bool {
            match v {
                Value::String(s) => s.contains(needle),
                Value::Array(a) => a.iter().any(|x| walk(x, needle)),
                Value::Object(o) => o.values().any(|x| walk(x, needle)),
                _ => false,
            }
        }
        walk(&self.body, needle)
    }
}

/// A user prompt (not an injected context block such as `<system-reminder>`,
/// `<environment_context>`, `<session_context>`…).
fn is_prompt(i: &Item) -> bool {
    matches!(i, Item::Text(Role::User, t) if !t.trim_start().starts_with('<'))
}

fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

/// Every string in `v` (depth first), joined by newlines.
fn all_strings(v: &Value) -> String {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Value::Object(o) => o.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, &mut out);
    out.join("\n")
}

/// What the fake model answers a turn with, encoded for each API by
/// `anthropic_stream` / `anthropic_message` / `openai_stream` / `gemini_response`.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    Text(String),
    /// A call of the client's own shell tool, running `command` in its cwd:
    /// Claude Code's `Bash` (`{command, description}`), Codex's `exec_command`
    /// (`{cmd}`; older Codex: `shell_command` / `shell`, whichever the request
    /// declares), Gemini CLI's `run_shell_command` (`{command, description}`).
    /// `id` becomes the call id where the API has one. The client runs the
    /// command (if its permissions let it) and sends the output back as a tool
    /// result in its next request, which is a turn of its own.
    Shell {
        id: String,
        command: String,
    },
}

/// The marker of [`FakeModel::start`]'s tool-call convention: a prompt with a
/// line `RUN: <shell command>` gets a [`Reply::Shell`] running it, until the
/// client sends a tool result after that prompt; then a text reply.
pub const RUN_PREFIX: &str = "RUN: ";

/// The command a prompt asks to run by the `RUN: <command>` convention: the rest
/// of the line after the first `RUN: `.
pub fn run_command(prompt: &str) -> Option<String> {
    let at = prompt.find(RUN_PREFIX)?;
    let cmd = prompt[at + RUN_PREFIX.len()..].lines().next().unwrap_or("").trim();
    (!cmd.is_empty()).then(|| cmd.to_owned())
}

/// [`FakeModel::start`]'s answer to turn `n`: a [`Reply::Shell`] for a pending
/// `RUN: <command>` (see [`RUN_PREFIX`]), else `reply-<n> to: <first 40 chars
/// of the prompt>` (the prompt being the user's latest).
pub fn default_reply(req: &Request, n: usize) -> Reply {
    let prompt = req.last_user_text().unwrap_or_default();
    if let Some(command) = run_command(&prompt)
        && req.tool_results_since_prompt().is_empty()
    {
        return Reply::Shell { id: format!("call_fake_{n}"), command };
    }
    let prompt: String = prompt.chars().take(40).collect();
    Reply::Text(format!("reply-{n} to: {prompt}"))
}

type Responder = dyn Fn(&Request, usize) -> Reply + Send + Sync;

struct Shared {
    requests: Mutex<Vec<Request>>,
    turns: Mutex<usize>,
    responder: Box<Responder>,
}

/// A fake model API on 127.0.0.1 that speaks the three wire protocols.
///
/// THE MODEL IS THE ONLY FAKE: a real model cannot run here (no network, no
/// weights). Everything else in these tests — the CLIs, their stores, their
/// resume logic — is the real thing.
///
/// It records every request (path + parsed JSON body) and answers each turn
/// deterministically with `reply-<n> to: <first 40 chars of the prompt>`, `n`
/// counting turns from 1 — or, for a prompt with a line `RUN: <shell command>`,
/// with a call of the client's shell tool running it, then (once the client
/// sent the command's output back) with that text. See [`default_reply`]; a
/// CLI runs the command only when run by [`Cli::run_tool`].
pub struct FakeModel {
    addr: std::net::SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeModel {
    /// Starts the server on its own thread and runtime.
    pub fn start() -> FakeModel {
        FakeModel::start_with(default_reply)
    }

    /// Starts the server with a custom answer for turns (`n` counts turns from 1).
    pub fn start_with(responder: impl Fn(&Request, usize) -> Reply + Send + Sync + 'static) -> FakeModel {
        let shared =
            Arc::new(Shared { requests: Mutex::new(Vec::new()), turns: Mutex::new(0), responder: Box::new(responder) });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone())
            // Codex may compress request bodies (zstd) for some providers.
            .layer(tower_http::decompression::RequestDecompressionLayer::new());
        let thread = std::thread::Builder::new()
            .name("fake-model".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    let serve = std::future::IntoFuture::into_future(axum::serve(listener, app));
                    // Dropping the server future (and then the runtime) ends every
                    // connection at once: the CLIs keep theirs alive.
                    tokio::select! {
                        r = serve => r.expect("fake model server failed"),
                        _ = stopped => {}
                    }
                });
            })
            .unwrap();
        FakeModel { addr, shared, stop: Some(stop), thread: Some(thread) }
    }

    /// `http://127.0.0.1:PORT` (no trailing slash, no `/v1`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// The number of requests so far: pass it to [`FakeModel::saw_since`] /
    /// [`FakeModel::turns_since`] to look only at what came after.
    pub fn mark(&self) -> usize {
        self.shared.requests.lock().unwrap().len()
    }

    /// Whether any request body contains `needle`.
    pub fn saw(&self, needle: &str) -> bool {
        self.saw_since(0, needle)
    }

    /// Whether any request from index `from` on contains `needle`.
    pub fn saw_since(&self, from: usize, needle: &str) -> bool {
        self.shared.requests.lock().unwrap().iter().skip(from).any(|r| r.contains(needle))
    }

    /// The conversation turns from index `from` on.
    pub fn turns_since(&self, from: usize) -> Vec<Request> {
        self.shared.requests.lock().unwrap().iter().skip(from).filter(|r| r.turn).cloned().collect()
    }

    /// Every tool result the clients sent from request `from` on, as (call id,
    /// output), each once (a client re-sends the earlier ones with every turn).
    pub fn tool_results_since(&self, from: usize) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for r in self.turns_since(from) {
            for tr in r.tool_results() {
                if !out.contains(&tr) {
                    out.push(tr);
                }
            }
        }
        out
    }

    /// The last turn whose latest user prompt is exactly `prompt`: the request
    /// that carried it, with the whole conversation the client sent along.
    pub fn turn_for(&self, prompt: &str) -> Option<Request> {
        let reqs = self.shared.requests.lock().unwrap();
        reqs.iter().rev().find(|r| r.turn && r.last_user_text().is_some_and(|t| t.trim() == prompt.trim())).cloned()
    }
}

impl Drop for FakeModel {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn handle(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;

    let path = uri.path();
    let query = uri.query().unwrap_or("");
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let api = match path {
        "/v1/messages" => Api::AnthropicMessages,
        "/v1/messages/count_tokens" => Api::AnthropicCountTokens,
        "/v1/responses" => Api::OpenAiResponses,
        p if p.ends_with(":streamGenerateContent") => Api::GeminiStream,
        p if p.ends_with(":generateContent") => Api::GeminiGenerate,
        p if p.ends_with(":countTokens") => Api::GeminiCountTokens,
        _ => Api::Unknown,
    };
    let method_ok = method == axum::http::Method::POST;
    // Gemini's side calls ask for JSON by schema; they are not conversation turns.
    let json_schema = gemini_json_schema(&body);
    let turn = method_ok
        && match api {
            Api::AnthropicMessages | Api::OpenAiResponses | Api::GeminiStream => true,
            Api::GeminiGenerate => json_schema.is_none(),
            _ => false,
        };
    let mut req = Request {
        index: 0,
        method: method.to_string(),
        path: if query.is_empty() { path.to_owned() } else { format!("{path}?{query}") },
        api,
        body,
        turn,
        reply: None,
        answer: None,
    };
    let reply = if turn {
        let n = {
            let mut t = shared.turns.lock().unwrap();
            *t += 1;
            *t
        };
        let r = (shared.responder)(&req, n);
        if let Reply::Text(text) = &r {
            req.reply = Some(text.clone());
        }
        req.answer = Some(r.clone());
        Some(r)
    } else {
        None
    };
    let body = req.body.clone();
    let path_logged = req.path.clone();
    {
        let mut reqs = shared.requests.lock().unwrap();
        req.index = reqs.len();
        reqs.push(req);
    }

    let sse = |events: Vec<(Option<&str>, Value)>| {
        let mut s = String::new();
        for (event, data) in events {
            if let Some(e) = event {
                s.push_str(&format!("event: {e}\n"));
            }
            s.push_str(&format!("data: {data}\n\n"));
        }
        ([(axum::http::header::CONTENT_TYPE, "text/event-stream")], s).into_response()
    };
    let model = body["model"].as_str().unwrap_or("fake-model").to_owned();
    match (method_ok, api, reply) {
        (true, Api::AnthropicMessages, Some(r)) => {
            if body["stream"].as_bool() == Some(true) {
                sse(anthropic_stream(&model, &r))
            } else {
                axum::Json(anthropic_message(&model, &r)).into_response()
            }
        }
        (true, Api::AnthropicCountTokens, _) => axum::Json(json!({"input_tokens": 10})).into_response(),
        (true, Api::OpenAiResponses, Some(r)) => sse(openai_stream(&body, &r)),
        (true, Api::GeminiStream, Some(r)) => {
            let chunk = gemini_response(&r);
            if query.contains("alt=sse") {
                sse(vec![(None, chunk)])
            } else {
                axum::Json(json!([chunk])).into_response()
            }
        }
        (true, Api::GeminiGenerate, Some(r)) => axum::Json(gemini_response(&r)).into_response(),
        (true, Api::GeminiGenerate, None) => {
            // Give the JSON the schema asks for, so the CLI proceeds at once
            // (for a parse failure it retries, or falls back after a timeout).
            let answer = example_for(json_schema.as_ref().unwrap_or(&Value::Null));
            axum::Json(gemini_response(&Reply::Text(answer.to_string()))).into_response()
        }
        (true, Api::GeminiCountTokens, _) => axum::Json(json!({"totalTokens": 10})).into_response(),
        _ => {
            eprintln!("fake-model: 404 for {method} {path_logged}");
            (StatusCode::NOT_FOUND, format!("fake model: no route for {method} {path_logged}\n")).into_response()
        }
    }
}

/// Anthropic Messages, streamed: the event sequence Claude Code parses. A
/// tool call is a `tool_use` block whose input comes as one `input_json_delta`,
/// and the message stops with `stop_reason: "tool_use"`.
fn anthropic_stream(model: &str, reply: &Reply) -> Vec<(Option<&'static str>, Value)> {
    let (start, delta, stop_reason) = match reply {
        Reply::Text(text) => {
            (json!({"type": "text", "text": ""}), json!({"type": "text_delta", "text": text}), "end_turn")
        }
        Reply::Shell { id, command } => (
            json!({"type": "tool_use", "id": anthropic_tool_id(id), "name": "Bash", "input": {}}),
            json!({"type": "input_json_delta", "partial_json": anthropic_bash_input(command).to_string()}),
            "tool_use",
        ),
    };
    vec![
        (
            Some("message_start"),
            json!({"type": "message_start", "message": {
                "id": "msg_fake", "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 10, "output_tokens": 1}}}),
        ),
        (Some("content_block_start"), json!({"type": "content_block_start", "index": 0, "content_block": start})),
        (Some("content_block_delta"), json!({"type": "content_block_delta", "index": 0, "delta": delta})),
        (Some("content_block_stop"), json!({"type": "content_block_stop", "index": 0})),
        (
            Some("message_delta"),
            json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null},
                   "usage": {"output_tokens": 5}}),
        ),
        (Some("message_stop"), json!({"type": "message_stop"})),
    ]
}

/// Anthropic Messages, not streamed.
fn anthropic_message(model: &str, reply: &Reply) -> Value {
    let (content, stop_reason) = match reply {
        Reply::Text(text) => (json!({"type": "text", "text": text}), "end_turn"),
        Reply::Shell { id, command } => (
            json!({"type": "tool_use", "id": anthropic_tool_id(id), "name": "Bash",
                   "input": anthropic_bash_input(command)}),
            "tool_use",
        ),
    };
    json!({"id": "msg_fake", "type": "message", "role": "assistant", "model": model,
           "content": [content], "stop_reason": stop_reason, "stop_sequence": null,
           "usage": {"input_tokens": 10, "output_tokens": 5}})
}

/// Anthropic tool-use ids look like `toolu_…`.
fn anthropic_tool_id(id: &str) -> String {
    if id.starts_with("toolu_") { id.to_owned() } else { format!("toolu_{id}") }
}

/// Claude Code's `Bash` tool input.
fn anthropic_bash_input(command: &str) -> Value {
    json!({"command": command, "description": "Run the command the user asked for"})
}

/// The shell tool a Codex request declares, and its arguments for `command`:
/// `exec_command` `{cmd}` (0.171, unified exec), else `shell_command`
/// `{command}`, else `shell` `{command: [argv]}` (older versions).
fn openai_shell_call(body: &Value, command: &str) -> (&'static str, Value) {
    let declared = |name: &str| body["tools"].as_array().into_iter().flatten().any(|t| t["name"] == name);
    if declared("exec_command") || !(declared("shell_command") || declared("shell")) {
        ("exec_command", json!({"cmd": command}))
    } else if declared("shell_command") {
        ("shell_command", json!({"command": command}))
    } else {
        ("shell", json!({"command": ["bash", "-lc", command]}))
    }
}

/// OpenAI Responses, streamed: the events Codex 0.171 needs (it takes the
/// final item from `response.output_item.done` and ends on `response.completed`,
/// whose `usage` it records). A tool call is a `function_call` item whose
/// `arguments` are a JSON string.
fn openai_stream(body: &Value, reply: &Reply) -> Vec<(Option<&'static str>, Value)> {
    let (added, deltas, done) = match reply {
        Reply::Text(text) => (
            json!({"type": "message", "id": "msg_fake", "role": "assistant", "status": "in_progress", "content": []}),
            vec![(
                Some("response.output_text.delta"),
                json!({"type": "response.output_text.delta", "item_id": "msg_fake", "output_index": 0,
                       "content_index": 0, "delta": text}),
            )],
            json!({"type": "message", "id": "msg_fake", "role": "assistant", "status": "completed",
                   "content": [{"type": "output_text", "text": text, "annotations": []}]}),
        ),
        Reply::Shell { id, command } => {
            let (name, args) = openai_shell_call(body, command);
            let args = args.to_string();
            (
                json!({"type": "function_call", "id": format!("fc_{id}"), "call_id": id, "name": name,
                       "arguments": "", "status": "in_progress"}),
                vec![(
                    Some("response.function_call_arguments.delta"),
                    json!({"type": "response.function_call_arguments.delta", "item_id": format!("fc_{id}"),
                           "output_index": 0, "delta": args}),
                )],
                json!({"type": "function_call", "id": format!("fc_{id}"), "call_id": id, "name": name,
                       "arguments": args, "status": "completed"}),
            )
        }
    };
    let mut events = vec![
        (Some("response.created"), json!({"type": "response.created", "response": {"id": "resp_fake"}})),
        (
            Some("response.output_item.added"),
            json!({"type": "response.output_item.added", "output_index": 0, "item": added}),
        ),
    ];
    events.extend(deltas);
    events.extend([
        (
            Some("response.output_item.done"),
            json!({"type": "response.output_item.done", "output_index": 0, "item": done}),
        ),
        (
            Some("response.completed"),
            json!({"type": "response.completed", "response": {"id": "resp_fake", "usage": {
                "input_tokens": 10, "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 15}}}),
        ),
    ]);
    events
}

/// A Gemini `GenerateContentResponse` (one SSE chunk, or the whole answer). A
/// tool call is a `functionCall` part for `run_shell_command`.
fn gemini_response(reply: &Reply) -> Value {
    let part = match reply {
        Reply::Text(text) => json!({"text": text}),
        Reply::Shell { id, command } => json!({"functionCall": {"id": id, "name": "run_shell_command",
            "args": {"command": command, "description": "Run the command the user asked for"}}}),
    };
    json!({"candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP", "index": 0}],
           "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15},
           "modelVersion": "fake-model"})
}

/// The JSON schema a Gemini request asks its answer to follow, if any.
fn gemini_json_schema(body: &Value) -> Option<Value> {
    let cfg = &body["generationConfig"];
    let schema = cfg.get("responseJsonSchema").or_else(|| cfg.get("responseSchema"));
    match schema {
        Some(s) if !s.is_null() => Some(s.clone()),
        _ if cfg["responseMimeType"] == "application/json" => Some(json!({"type": "object"})),
        _ => None,
    }
}

/// A value that satisfies a (Gemini-style, case-insensitive types) JSON schema:
/// the first enum value, the minimum number, every property. Gemini CLI's
/// router wants `{complexity_reasoning, complexity_score}`; its next-speaker
/// check gets `"user"` (the first enum value), which ends the turn.
fn example_for(schema: &Value) -> Value {
    if let Some(first) = schema["enum"].as_array().and_then(|e| e.first()) {
        return first.clone();
    }
    match schema["type"].as_str().unwrap_or("object").to_ascii_lowercase().as_str() {
        "object" => {
            let mut o = serde_json::Map::new();
            for (k, v) in schema["properties"].as_object().into_iter().flatten() {
                o.insert(k.clone(), example_for(v));
            }
            Value::Object(o)
        }
        "array" => json!([]),
        "string" => json!("fake"),
        "integer" | "number" => schema.get("minimum").cloned().unwrap_or(json!(1)),
        "boolean" => json!(false),
        _ => Value::Null,
    }
}

// ---------------------------------------------------------------------------
// Running the CLIs
// ---------------------------------------------------------------------------

/// The three CLIs, and what each one's store looks like (verified with
/// claude-code 2.1.332, codex 0.171.0, gemini-cli 0.61.0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cli {
    /// `~/.claude/projects/<cwd, every non-alphanumeric char → '-'>/<sessionId>.jsonl`
    /// (escaped names over 200 chars are cut and get a hash suffix). `--resume <id>`
    /// finds the file under any project folder; `--continue` and the picker look
    /// only under the cwd's. A resume appends to the file where it is.
    Claude,
    /// `$CODEX_HOME/sessions/YYYY/MM/DD/rollout-YYYY-MM-DDTHH-MM-SS-<uuid>.jsonl`.
    /// `exec resume <id>` finds the file by its name anywhere under `sessions/`
    /// (no SQLite state or session index needed), and appends to it.
    Codex,
    /// `~/.gemini/tmp/<project slug>/chats/session-YYYY-MM-DDTHH-MM-<id8>.jsonl`,
    /// the slug being the cwd's basename lower-cased, runs of non-`[a-z0-9]` → '-'
    /// (recorded in `~/.gemini/projects.json`, owned via `.project_root` files).
    Gemini,
}

impl Cli {
    pub const ALL: [Cli; 3] = [Cli::Claude, Cli::Codex, Cli::Gemini];

    pub fn name(self) -> &'static str {
        match self {
            Cli::Claude => "claude",
            Cli::Codex => "codex",
            Cli::Gemini => "gemini",
        }
    }

    /// Runs the CLI once, non-interactively, in `home` (a fake HOME) and `cwd`,
    /// with `prompt`, resuming session `resume` if given. The CLI's own
    /// permission defaults apply: a shell tool call is refused or not offered.
    pub fn run(self, fake: &FakeModel, home: &Path, cwd: &Path, prompt: &str, resume: Option<&str>) -> Run {
        self.run_opts(fake, home, cwd, prompt, resume, false)
    }

    /// Like [`Cli::run`], but with the CLI's shell tool allowed to run without
    /// asking, so that a [`Reply::Shell`] (e.g. [`FakeModel::start`]'s answer to
    /// a prompt with `RUN: <command>`) really runs in `cwd` and its output
    /// lands in the session as a tool result. See [`Cli::shell_flags`].
    pub fn run_tool(self, fake: &FakeModel, home: &Path, cwd: &Path, prompt: &str, resume: Option<&str>) -> Run {
        self.run_opts(fake, home, cwd, prompt, resume, true)
    }

    fn run_opts(
        self,
        fake: &FakeModel,
        home: &Path,
        cwd: &Path,
        prompt: &str,
        resume: Option<&str>,
        shell: bool,
    ) -> Run {
        let extra = if shell { self.shell_flags() } else { &[] };
        match self {
            Cli::Claude => run_claude_with(fake, home, cwd, prompt, resume, extra),
            Cli::Codex => run_codex_with(fake, home, cwd, prompt, resume, extra),
            Cli::Gemini => run_gemini_with(fake, home, cwd, prompt, resume, extra),
        }
    }

    /// The flags [`Cli::run_tool`] adds so that the CLI runs any command of
    /// its shell tool non-interactively, also as root (checked here with
    /// claude-code 2.1.332, codex 0.171.0, gemini-cli 0.61.0):
    /// - Claude Code: `--permission-mode dontAsk --allowedTools Bash`. Without
    ///   flags it runs read-only commands such as `cat` in the cwd but refuses
    ///   one that writes ("… needs approval"), and `--allowedTools Bash` alone
    ///   does not change that; `dontAsk` (never prompt: what is not allowed is
    ///   denied) with `Bash` allowed runs it. `--dangerously-skip-permissions` /
    ///   `bypassPermissions` exit 1 as root ("cannot be used with root/sudo
    ///   privileges").
    /// - Codex: `--sandbox danger-full-access -c approval_policy="never"`.
    ///   `codex exec` already has approval `never`, and its default read-only
    ///   sandbox (the bundled bubblewrap) does work in this container: `cat`
    ///   runs, a write fails with "Read-only file system" (`workspace-write`
    ///   allows the cwd and /tmp). No sandbox, so writes work and nothing hangs
    ///   on a host without user namespaces.
    /// - Gemini CLI: `--approval-mode yolo` (= `--yolo`; it needs a trusted
    ///   folder, which `--skip-trust` gives). Without it headless gemini does not
    ///   declare `run_shell_command` at all, and a call of it comes back as
    ///   `{"error": "Tool \"run_shell_command\" not found. …"}`.
    pub fn shell_flags(self) -> &'static [&'static str] {
        match self {
            Cli::Claude => &["--permission-mode", "dontAsk", "--allowedTools", "Bash"],
            Cli::Codex => &["--sandbox", "danger-full-access", "-c", "approval_policy=\"never\""],
            Cli::Gemini => &["--approval-mode", "yolo"],
        }
    }

    /// The session's file in `home`'s store, if there is one.
    pub fn session_file(self, home: &Path, id: &str) -> Option<PathBuf> {
        match self {
            Cli::Claude => claude_session_file(home, id),
            Cli::Codex => codex_session_file(home, id),
            Cli::Gemini => gemini_session_files(home, id).into_iter().max_by_key(|p| line_count(p)),
        }
    }

    /// Where a session file copied from another machine (`src`, from that
    /// machine's store) must go in `home` so that this CLI's resume, run in
    /// `cwd`, finds it.
    pub fn resume_place(self, home: &Path, cwd: &Path, src: &Path) -> PathBuf {
        let file_name = src.file_name().expect("a session file");
        match self {
            // The cwd's own folder, so `--continue` and the picker find it too.
            Cli::Claude => claude_project_dir(home, cwd).join(file_name),
            // Anywhere under sessions/; keep the date folders the file came from.
            Cli::Codex => {
                let parts: Vec<_> = src.iter().collect();
                let dated = &parts[parts.len().saturating_sub(4)..];
                dated.iter().fold(home.join(".codex/sessions"), |p, c| p.join(c))
            }
            // The slug this HOME will give the cwd. No projects.json entry is
            // needed (gemini adds one), but never copy the other machine's
            // `.project_root`: the slug would then count as taken and gemini
            // would pick `<slug>-1`, where the session is not.
            Cli::Gemini => home.join(".gemini/tmp").join(gemini_project_slug(cwd)).join("chats").join(file_name),
        }
    }
}

/// The outcome of one CLI run.
#[derive(Debug)]
pub struct Run {
    pub cli: Cli,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// The session it used or created, from the CLI's own output.
    pub session_id: Option<String>,
    /// The answer text the CLI printed.
    pub reply: Option<String>,
    pub elapsed: Duration,
}

impl Run {
    /// Panics with the whole output unless the run succeeded and named its session.
    pub fn expect_ok(&self, what: &str) -> &Run {
        assert!(
            self.status.success() && self.session_id.is_some(),
            "{} ({what}) failed: {}, session {:?}, {:.1}s\n--- stdout\n{}\n--- stderr\n{}",
            self.cli.name(),
            self.status,
            self.session_id,
            self.elapsed.as_secs_f64(),
            self.stdout,
            self.stderr
        );
        self
    }

    pub fn id(&self) -> &str {
        self.session_id.as_deref().expect("the run named its session")
    }
}

/// The environment every CLI runs in: nothing inherited from this process (no
/// real API keys, config dirs or proxies), HOME as given, Node 24 first on PATH.
fn base_command(exe: &Path, home: &Path, cwd: &Path) -> Command {
    let clis = clis();
    let mut cmd = Command::new(exe);
    cmd.env_clear()
        .env("HOME", home)
        .env("PATH", format!("{}:/usr/local/bin:/usr/bin:/bin", clis.node_bin.display()))
        .env("LANG", "C.UTF-8")
        .env("TERM", "dumb")
        .env("NO_COLOR", "1")
        .env("USER", "tester")
        .current_dir(cwd)
        .stdin(Stdio::null());
    cmd
}

/// Claude Code: `claude -p PROMPT --output-format json [--resume ID]`.
pub fn run_claude(fake: &FakeModel, home: &Path, cwd: &Path, prompt: &str, resume: Option<&str>) -> Run {
    run_claude_with(fake, home, cwd, prompt, resume, &[])
}

/// [`run_claude`] with `extra` flags.
pub fn run_claude_with(
    fake: &FakeModel,
    home: &Path,
    cwd: &Path,
    prompt: &str,
    resume: Option<&str>,
    extra: &[&str],
) -> Run {
    let mut cmd = base_command(&clis().claude, home, cwd);
    cmd.env("ANTHROPIC_BASE_URL", fake.url())
        .env("ANTHROPIC_API_KEY", "sk-test")
        .env("DISABLE_TELEMETRY", "1")
        .env("DISABLE_ERROR_REPORTING", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .args(["-p", prompt, "--output-format", "json"])
        .args(extra);
    if let Some(id) = resume {
        cmd.args(["--resume", id]);
    }
    let mut run = run_with_timeout(Cli::Claude, cmd);
    // {"type":"result", "result": "...", "session_id": "...", ...}
    if let Ok(v) = serde_json::from_str::<Value>(run.stdout.trim()) {
        run.session_id = v["session_id"].as_str().map(str::to_owned);
        run.reply = v["result"].as_str().map(str::to_owned);
    }
    run
}

/// Codex CLI: `codex exec --skip-git-repo-check [resume ID] PROMPT`, with
/// `CODEX_HOME=$HOME/.codex` and a config.toml (rewritten on every run, for the
/// fake's port) that points the `fake` provider at the fake.
pub fn run_codex(fake: &FakeModel, home: &Path, cwd: &Path, prompt: &str, resume: Option<&str>) -> Run {
    run_codex_with(fake, home, cwd, prompt, resume, &[])
}

/// [`run_codex`] with `extra` flags (options of `codex exec`, before `resume`).
pub fn run_codex_with(
    fake: &FakeModel,
    home: &Path,
    cwd: &Path,
    prompt: &str,
    resume: Option<&str>,
    extra: &[&str],
) -> Run {
    let codex_home = home.join(".codex");
    std::fs::create_dir_all(&codex_home).unwrap();
    // Retries off, so an unexpected answer fails the run at once.
    let config = format!(
        r#"model = "fake-model"
model_provider = "fake"
check_for_update_on_startup = false

[analytics]
enabled = false

[feedback]
enabled = false

[model_providers.fake]
name = "fake"
base_url = "{}/v1"
env_key = "OPENAI_API_KEY"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0
stream_idle_timeout_ms = 30000
"#,
        fake.url()
    );
    std::fs::write(codex_home.join("config.toml"), config).unwrap();
    let mut cmd = base_command(&clis().codex, home, cwd);
    cmd.env("CODEX_HOME", &codex_home)
        .env("OPENAI_API_KEY", "sk-test")
        .args(["exec", "--skip-git-repo-check"])
        .args(extra);
    if let Some(id) = resume {
        cmd.args(["resume", id]);
    }
    cmd.arg(prompt);
    let mut run = run_with_timeout(Cli::Codex, cmd);
    // The banner on stderr says `session id: <uuid>`; stdout is the last message.
    run.session_id =
        run.stderr.lines().find_map(|l| l.trim().strip_prefix("session id: ")).map(|s| s.trim().to_owned());
    run.reply = Some(run.stdout.trim().to_owned()).filter(|s| !s.is_empty());
    run
}

/// Gemini CLI: `gemini --skip-trust -o json [--resume ID] -p PROMPT`, with an
/// API-key settings.json and `GOOGLE_GEMINI_BASE_URL` at the fake.
pub fn run_gemini(fake: &FakeModel, home: &Path, cwd: &Path, prompt: &str, resume: Option<&str>) -> Run {
    run_gemini_with(fake, home, cwd, prompt, resume, &[])
}

/// [`run_gemini`] with `extra` flags.
pub fn run_gemini_with(
    fake: &FakeModel,
    home: &Path,
    cwd: &Path,
    prompt: &str,
    resume: Option<&str>,
    extra: &[&str],
) -> Run {
    let dir = home.join(".gemini");
    std::fs::create_dir_all(&dir).unwrap();
    let settings = dir.join("settings.json");
    if !settings.exists() {
        let s = json!({
            "security": {"auth": {"selectedType": "gemini-api-key"}},
            "general": {"enableAutoUpdate": false, "enableAutoUpdateNotification": false},
            "privacy": {"usageStatisticsEnabled": false},
            "telemetry": {"enabled": false}
        });
        std::fs::write(&settings, serde_json::to_string_pretty(&s).unwrap()).unwrap();
    }
    let mut cmd = base_command(&clis().gemini, home, cwd);
    cmd.env("GEMINI_API_KEY", "sk-test")
        .env("GOOGLE_GEMINI_BASE_URL", fake.url())
        // 0.61 refuses to run headless in an untrusted folder without this flag.
        .args(["--skip-trust", "-o", "json"])
        .args(extra);
    if let Some(id) = resume {
        cmd.args(["--resume", id]);
    }
    cmd.args(["-p", prompt]);
    let mut run = run_with_timeout(Cli::Gemini, cmd);
    // {"session_id": "...", "response": "...", "stats": {...}}
    if let Ok(v) = serde_json::from_str::<Value>(run.stdout.trim()) {
        run.session_id = v["session_id"].as_str().map(str::to_owned);
        run.reply = v["response"].as_str().map(str::to_owned);
    }
    run
}

/// Runs `cmd` in its own process group (gemini re-launches itself as a child
/// node process) and kills the whole group if it outlives [`RUN_TIMEOUT`].
fn run_with_timeout(cli: Cli, mut cmd: Command) -> Run {
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cli:?}: {e}"));
    let pid = child.id() as i32;
    let read = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = r.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = read(Box::new(child.stdout.take().unwrap()));
    let err = read(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > RUN_TIMEOUT {
            // SAFETY: kill(2) on the process group this run created; no memory is involved.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // A leftover grandchild could hold the pipes open: end the group regardless.
    // SAFETY: as above; the group is ours and ESRCH is harmless.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    let stdout = out.join().unwrap();
    let mut stderr = err.join().unwrap();
    if start.elapsed() > RUN_TIMEOUT {
        stderr.push_str(&format!("\n[killed after {RUN_TIMEOUT:?}]"));
    }
    Run { cli, status, stdout, stderr, session_id: None, reply: None, elapsed: start.elapsed() }
}

// ---------------------------------------------------------------------------
// Finding sessions in a store
// ---------------------------------------------------------------------------

/// Claude Code's folder for a cwd: `~/.claude/projects/<escaped cwd>`.
pub fn claude_project_dir(home: &Path, cwd: &Path) -> PathBuf {
    home.join(".claude/projects").join(claude_escape(&cwd.to_string_lossy()))
}

/// Claude Code's escaping of a path into a folder name (2.1.332): every
/// non-alphanumeric char → '-'. Names over 200 chars get cut and a hash suffix,
/// which this does not reproduce (test paths stay short).
pub fn claude_escape(path: &str) -> String {
    let s: String = path.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    assert!(s.len() <= 200, "claude cuts and hashes escaped paths over 200 chars: {path}");
    s
}

/// `~/.claude/projects/*/<id>.jsonl`.
pub fn claude_session_file(home: &Path, id: &str) -> Option<PathBuf> {
    let name = format!("{id}.jsonl");
    read_dir(&home.join(".claude/projects")).into_iter().map(|d| d.join(&name)).find(|p| p.is_file())
}

/// `$CODEX_HOME/sessions/**/rollout-*-<id>.jsonl` (CODEX_HOME = `~/.codex` here).
pub fn codex_session_file(home: &Path, id: &str) -> Option<PathBuf> {
    let suffix = format!("-{id}.jsonl");
    walk(&home.join(".codex/sessions")).into_iter().find(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("rollout-") && n.to_string_lossy().ends_with(&suffix))
    })
}

/// Gemini CLI's project slug for a cwd (0.61, `ProjectRegistry.slugify` of the
/// basename), before any `-1`, `-2` suffix for a collision.
pub fn gemini_project_slug(cwd: &Path) -> String {
    let base = cwd.file_name().map(|b| b.to_string_lossy().to_lowercase()).unwrap_or_default();
    let mut slug = String::new();
    for c in base.chars() {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '-' };
        if !(c == '-' && slug.ends_with('-')) {
            slug.push(c);
        }
    }
    let slug = slug.trim_matches('-').to_owned();
    if slug.is_empty() { "project".into() } else { slug }
}

/// Every `~/.gemini/tmp/*/chats/session-*-<id8>.jsonl` whose header names the
/// session. A resume started in another minute than the file's name leaves a
/// second, 2-line file (header + `$set` of the new session context) beside the
/// real one; [`Cli::session_file`] picks the longest.
pub fn gemini_session_files(home: &Path, id: &str) -> Vec<PathBuf> {
    let short = format!("-{}.jsonl", &id[..id.len().min(8)]);
    read_dir(&home.join(".gemini/tmp"))
        .into_iter()
        .flat_map(|project| read_dir(&project.join("chats")))
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with("session-") && n.ends_with(&short)
        })
        .filter(|p| {
            let first = std::fs::read_to_string(p).ok().and_then(|s| s.lines().next().map(str::to_owned));
            first.and_then(|l| serde_json::from_str::<Value>(&l).ok()).is_some_and(|h| h["sessionId"] == id)
        })
        .collect()
}

pub fn line_count(p: &Path) -> usize {
    std::fs::read_to_string(p).map(|s| s.lines().count()).unwrap_or(0)
}

fn read_dir(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()).collect();
    v.sort();
    v
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in read_dir(dir) {
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
