//! Sync without an editor, for the terminal assistants' users:
//! `threadsync daemon` (the sidecar, driven by a built-in client instead of
//! an editor), `threadsync status` (what a statusline would show, and the
//! stores found) and `threadsync restore` (a session file put back).
//!
//! The daemon is the very sidecar (`lsp::serve`) over an in-process pipe: the
//! same configuration (environment, config file), the same state directory
//! and its lock — so a daemon and editor windows on one machine never sync
//! at once; whoever holds the lock syncs, and the others take over when it
//! exits. Its own client only starts it, answers the few requests a sidecar
//! makes of an editor, logs what an editor would show, and shuts it down on
//! SIGTERM.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::lsp::config::{Config, Options};
use crate::lsp::protocol::{SyncState, SyncStatus};
use crate::lsp::stores::{Store, Stores};
use crate::model::{Thread, ThreadId};
use crate::sources::{NativeLog, Source};
use crate::threadlog::{self, LogFormat, Record};

/// The file the syncing process keeps its status in (`stateDir/status.json`).
pub fn status_path(state_dir: &Path) -> PathBuf {
    state_dir.join("status.json")
}

/// Writes the status for `threadsync status` (whole, by rename: a reader
/// never sees half of it).
pub fn write_status(state_dir: &Path, status: &SyncStatus) {
    let path = status_path(state_dir);
    let tmp = state_dir.join(format!(".status.json.{}", std::process::id()));
    let body = json!({ "pid": std::process::id(), "status": status });
    if std::fs::write(&tmp, body.to_string()).is_ok() {
        let _ = std::fs::rename(&tmp, &path);
    }
}

fn config(workspace: Vec<PathBuf>) -> Result<Config, String> {
    let mut o = Options::from_env().or(Options::from_file());
    if !workspace.is_empty() {
        o.workspace = Some(workspace);
    }
    Config::resolve(&o)
}

// ----- the daemon ----------------------------------------------------------------

async fn send(w: &mut (impl AsyncWriteExt + Unpin), v: &Value) -> std::io::Result<()> {
    let body = v.to_string();
    w.write_all(format!("Content-Length: {}\r\n\r\n{body}", body.len()).as_bytes()).await?;
    w.flush().await
}

/// One framed message; None at the end of the stream.
async fn receive(r: &mut (impl AsyncBufReadExt + Unpin)) -> Option<Value> {
    let mut len = None;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let line = line.trim();
        if line.is_empty() {
            break;
        }
        if let Some(v) = line.strip_prefix("Content-Length:") {
            len = v.trim().parse::<usize>().ok();
        }
    }
    let mut body = vec![0; len?];
    r.read_exact(&mut body).await.ok()?;
    serde_json::from_slice(&body).ok()
}

/// What an editor would show, as a log line (never content or tokens: the
/// sidecar's notices hold neither).
fn log_notice(m: &Value, last: &mut Option<(String, usize)>) {
    let params = &m["params"];
    match m["method"].as_str() {
        Some("threadsync/status") => {
            let Ok(s) = serde_json::from_value::<SyncStatus>(params.clone()) else { return };
            let now = (format!("{:?}", s.state), s.pending);
            if last.as_ref() != Some(&now) {
                tracing::info!(status = %status_line(&s), "status");
                *last = Some(now);
            }
        }
        Some("window/showMessage" | "window/logMessage") => {
            let text = params["message"].as_str().unwrap_or_default();
            match params["type"].as_u64() {
                Some(1) => tracing::error!("{text}"),
                Some(2) => tracing::warn!("{text}"),
                _ => tracing::info!("{text}"),
            }
        }
        _ => {}
    }
}

/// `threadsync daemon`: syncs until SIGTERM or Ctrl-C.
pub fn run(workspace: Vec<PathBuf>) -> ExitCode {
    if std::env::var_os("THREADSYNC_LOG").is_none() {
        // SAFETY: still single-threaded: the runtime is not started yet.
        unsafe { std::env::set_var("THREADSYNC_LOG", "info") };
    }
    crate::lsp::init_logs();
    if let Err(e) = config(workspace.clone()) {
        eprintln!("threadsync: {e}");
        return ExitCode::FAILURE;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("threadsync: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ok = rt.block_on(drive(workspace));
    // As the sidecar: whatever a restart needs is committed.
    std::process::exit(if ok { 0 } else { 1 })
}

async fn drive(workspace: Vec<PathBuf>) -> bool {
    use tokio::signal::unix::{SignalKind, signal};
    let (ours, theirs) = tokio::io::duplex(1 << 20);
    let (sr, sw) = tokio::io::split(theirs);
    let sidecar = tokio::spawn(crate::lsp::serve(sr, sw));
    let (cr, mut w) = tokio::io::split(ours);
    let mut r = BufReader::new(cr);
    let folders: Vec<Value> = workspace
        .iter()
        .map(|d| json!({ "uri": format!("file://{}", d.display()), "name": d.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default() }))
        .collect();
    let init = json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": { "processId": null, "capabilities": {}, "clientInfo": { "name": "threadsync daemon" },
                    "workspaceFolders": if folders.is_empty() { Value::Null } else { Value::Array(folders) } } });
    if send(&mut w, &init).await.is_err() {
        return false;
    }
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return false;
    };
    let mut last = None;
    let mut stopping = false;
    loop {
        let m = tokio::select! {
            m = receive(&mut r) => m,
            _ = term.recv(), if !stopping => { stopping = true; Some(json!({"stop": true})) }
            _ = int.recv(), if !stopping => { stopping = true; Some(json!({"stop": true})) }
        };
        let Some(m) = m else { break };
        if m.get("stop").is_some() {
            tracing::info!("stopping");
            let _ = send(&mut w, &json!({ "jsonrpc": "2.0", "id": 2, "method": "shutdown" })).await;
            continue;
        }
        match (m.get("id"), m.get("method")) {
            (Some(id), Some(_)) => {
                // A request of the sidecar's (progress tokens and the like):
                // accepted, as an editor would.
                let _ = send(&mut w, &json!({ "jsonrpc": "2.0", "id": id, "result": null })).await;
            }
            (Some(id), None) if id == 1 => {
                if m.get("error").is_some() {
                    tracing::error!(error = %m["error"], "the sidecar refused to start");
                    return false;
                }
                let _ = send(&mut w, &json!({ "jsonrpc": "2.0", "method": "initialized", "params": {} })).await;
                tracing::info!("started");
            }
            (Some(id), None) if id == 2 => {
                let _ = send(&mut w, &json!({ "jsonrpc": "2.0", "method": "exit" })).await;
                break;
            }
            _ => log_notice(&m, &mut last),
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), sidecar).await;
    true
}

// ----- status --------------------------------------------------------------------

/// The statusline's words for a status.
pub fn status_line(s: &SyncStatus) -> String {
    let mut out = match s.state {
        SyncState::Synced => "synced".to_string(),
        SyncState::Syncing => "syncing".to_string(),
        SyncState::Offline => "offline".to_string(),
        SyncState::Error => "error".to_string(),
        other => format!("{other:?}").to_lowercase(),
    };
    if s.pending > 0 {
        out.push_str(&format!(", {} thread(s) pending", s.pending));
    }
    if s.conflicts > 0 {
        out.push_str(&format!(", {} conflict(s)", s.conflicts));
    }
    if let Some(m) = &s.message {
        out.push_str(&format!(" — {m}"));
    }
    out
}

/// Whether a process holds the state directory's lock (a sidecar or a daemon syncing).
fn syncing(state_dir: &Path) -> bool {
    match std::fs::File::open(state_dir.join("lock")) {
        Ok(f) => f.try_lock_shared().is_err(),
        Err(_) => false,
    }
}

/// `threadsync status`: what a statusline would show, and the stores.
pub fn status() -> ExitCode {
    let cfg = match config(Vec::new()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("threadsync: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    let saved: Option<Value> =
        std::fs::read(status_path(&cfg.state_dir)).ok().and_then(|b| serde_json::from_slice(&b).ok());
    let last = saved.as_ref().and_then(|v| serde_json::from_value::<SyncStatus>(v["status"].clone()).ok());
    let running = syncing(&cfg.state_dir);
    let line = match (&last, running) {
        (Some(s), true) => status_line(s),
        (None, true) => "starting".to_string(),
        (Some(s), false) => format!("not running (last: {})", status_line(s)),
        (None, false) => "not running".to_string(),
    };
    let _ = writeln!(out, "threadsync: {line}");
    if let Some(s) = last.as_ref().and_then(|s| s.last_sync.as_deref()) {
        let _ = writeln!(out, "last sync: {s}");
    }
    let _ = writeln!(out, "server:    {}", cfg.server);
    let _ = writeln!(out, "threads:   {}", cfg.threads_dir.display());
    let _ = writeln!(out, "sources:");
    for source in Source::ALL {
        let store = cfg.stores.iter().find(|s| s.source == source).cloned();
        let on = store.is_some();
        let store = store.unwrap_or_else(|| Store {
            source,
            root: Store::default_root(source, &cfg.home),
            projects: Vec::new(),
        });
        let found = store.root.is_dir();
        let root = store.root.display().to_string();
        let projects = store.projects.join(", ");
        let sessions = if found { Stores::new(vec![store], cfg.home.clone(), false).scan().len() } else { 0 };
        let what = match (on, found) {
            (true, true) => format!("synced, {sessions} session(s)"),
            (true, false) => "synced, not found yet".to_string(),
            (false, true) => format!("found, not synced ({sessions} session(s); add \"{}\" to sources)", source.name()),
            (false, false) => "not found".to_string(),
        };
        let limit = if projects.is_empty() { String::new() } else { format!(" [projects: {projects}]") };
        let _ = writeln!(out, "  {:<12} {what}{limit}  {root}", source.name());
    }
    ExitCode::SUCCESS
}

// ----- restore -------------------------------------------------------------------

/// `threadsync restore <thread>`: the thread's file, written anew from the
/// server where this machine keeps such a thread — a session into its
/// assistant's store (run it in the project's checkout, or map the project),
/// any other thread into the threads directory. A file that is there is
/// left alone. A running sidecar or daemon takes the file in as it is.
pub fn restore(thread: &str) -> ExitCode {
    let cwd = std::env::current_dir().ok().into_iter().collect();
    match restore_inner(thread, cwd) {
        Ok((path, lines)) => {
            println!("restored {thread}: {} ({lines} line(s))", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("threadsync: {e}");
            ExitCode::FAILURE
        }
    }
}

fn restore_inner(thread: &str, workspace: Vec<PathBuf>) -> Result<(PathBuf, usize), String> {
    let cfg = config(workspace)?;
    let id = ThreadId::new(thread).map_err(|e| format!("bad thread id {thread:?}: {e}"))?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let url = format!("{}/v1/threads/{id}", cfg.server);
    let t: Thread = rt.block_on(async {
        let mut r = reqwest::Client::new().get(&url).timeout(Duration::from_secs(60));
        if let Some(token) = &cfg.token {
            r = r.bearer_auth(token);
        }
        let resp = r.send().await.map_err(|e| format!("cannot reach {}: {e}", cfg.server))?;
        match resp.status().as_u16() {
            200 => resp.json::<Thread>().await.map_err(|e| format!("the server's answer: {e}")),
            404 => Err(format!("the server has no thread {id}")),
            401 | 403 => Err("the server refused the token (set THREADSYNC_TOKEN or the config file's token)".into()),
            s => Err(format!("the server answered {s}")),
        }
    })?;
    let records = threadlog::compacted(&t);
    let (path, bytes) = match Source::of_env(&t.env).filter(|s| cfg.stores.iter().any(|st| st.source == *s)) {
        Some(source) => {
            let mut stores = Stores::new(cfg.stores.clone(), cfg.home.clone(), false);
            for (repo, dir) in &cfg.project_map {
                stores.map_project(repo, dir.clone());
            }
            for dir in &cfg.workspace {
                stores.add_workspace(dir);
            }
            let (_, path) = stores.place(&id, &t.env)?;
            let format = NativeLog { source, redact: None };
            (path, format.render(&records).map_err(|e| e.to_string())?)
        }
        None => {
            let path = cfg.threads_dir.join(format!("{id}.jsonl"));
            if cfg.threads_dir.join(format!("{id}.json")).exists() {
                return Err(format!("{id} has its file in {}", cfg.threads_dir.display()));
            }
            (path, threadlog::render(&records).map_err(|e| e.to_string())?)
        }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    match crate::lsp::files::create_log(&path, &bytes) {
        crate::client::Written::Ok(_) => {}
        crate::client::Written::Changed => {
            return Err(format!("{} is there already; nothing restored", path.display()));
        }
        other => return Err(format!("cannot write {}: {other:?}", path.display())),
    }
    let lines = records.iter().filter(|r| matches!(r, Record::Message { .. })).count();
    Ok((path, lines))
}
