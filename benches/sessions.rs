//! One more turn in an assistant's long session: what it costs threadsync.
//!
//! For each of Claude Code, Codex and Gemini, a session of 5 MB (turns with
//! large tool outputs, as real sessions are) and one of 10 KB, in that
//! client's records, synced between two machines (two real `threadsync lsp`
//! sidecars, one real `threadsync serve`), then the same 20 turns (a
//! prompt, a 6 KB tool output, an answer) appended to each, one at a time,
//! as the client appends them. Per turn, for both
//! sizes in the same run: the sending sidecar's CPU time and the bytes it
//! read from files (`rchar`, less what it read from the server's socket,
//! which a counting proxy counts), the bytes pushed and
//! pulled through the server, and the time until the other machine's file
//! has the turn. The ratio 5 MB / 10 KB says whether the work grows with
//! the session (it must not); bytes on the wire / turn size, what a turn
//! costs the network.
//!
//! `cargo bench --bench sessions`

#[path = "../tests/common/lsp_harness.rs"]
mod lsp_harness;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use lsp_harness::*;
use serde_json::json;

const TURNS: usize = 20;

fn proc_io(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    s.lines().find_map(|l| l.strip_prefix(&format!("{key}: "))?.trim().parse().ok()).unwrap()
}

fn escaped(p: &Path) -> String {
    p.to_string_lossy().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect()
}

struct Machine {
    home: PathBuf,
    checkout: PathBuf,
}

impl Machine {
    fn new(root: &Path, name: &str) -> Machine {
        let home = root.join(name);
        let checkout = home.join("src/api");
        std::fs::create_dir_all(checkout.join(".git")).unwrap();
        std::fs::write(checkout.join(".git/config"), "[remote \"origin\"]\n\turl = git@example.com:team/api.git\n")
            .unwrap();
        Machine { home, checkout }
    }

    /// Where each client keeps the session on this machine.
    fn file(&self, client: Client, session: &str) -> PathBuf {
        match client {
            Client::Claude => {
                self.home.join(".claude/projects").join(escaped(&self.checkout)).join(format!("{session}.jsonl"))
            }
            Client::Codex => self
                .home
                .join(".codex/sessions/2026/12/06")
                .join(format!("rollout-2026-12-06T10-00-00-{session}.jsonl")),
            Client::Gemini => self
                .home
                .join(".gemini/tmp/api/chats")
                .join(format!("session-2026-12-06T10-00-{}.jsonl", &session[..8])),
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Client {
    Claude,
    Codex,
    Gemini,
}

/// A session's first lines (what the client writes before the first turn).
fn start(m: &Machine, client: Client, session: &str) -> Vec<String> {
    match client {
        Client::Claude => Vec::new(),
        Client::Codex => vec![
            json!({"timestamp": "2026-12-06T10:00:00.000Z", "type": "session_meta",
                   "payload": {"id": session, "cwd": m.checkout, "cli_version": "0.171.0"}})
            .to_string(),
        ],
        Client::Gemini => vec![
            json!({"sessionId": session, "projectHash": "0", "startTime": "2026-12-06T10:00:00.000Z", "kind": "main"})
                .to_string(),
        ],
    }
}

/// One turn's lines: a prompt, a tool call's output of `tool` bytes, an
/// answer — each in its client's records.
fn turn(m: &Machine, client: Client, session: &str, n: usize, tool: usize) -> Vec<String> {
    let mut output = String::new();
    while output.len() < tool {
        output.push_str(&format!("line {} of the test log: ok\n", output.len()));
    }
    let ts = format!("2026-12-06T10:{:02}:{:02}.{:03}Z", (n / 60) % 60, n % 60, n % 1000);
    let prompt = format!("step {n}: run the tests again");
    let answer = format!("Step {n} passes.");
    match client {
        Client::Claude => {
            let line = |uuid: String, kind: &str, content: serde_json::Value| {
                json!({"parentUuid": null, "isSidechain": false, "cwd": m.checkout, "sessionId": session,
                       "version": "2.1.332", "type": kind, "message": {"role": kind, "content": content},
                       "uuid": uuid, "timestamp": ts})
                .to_string()
            };
            vec![
                line(format!("{session}-u{n}"), "user", json!(prompt)),
                line(format!("{session}-t{n}"), "user", json!([{"type": "tool_result", "tool_use_id": format!("toolu_{n}"), "content": output}])),
                line(format!("{session}-a{n}"), "assistant", json!([{"type": "text", "text": answer}])),
            ]
        }
        Client::Codex => {
            let item = |payload: serde_json::Value| json!({"timestamp": ts, "type": "response_item", "payload": payload}).to_string();
            vec![
                item(json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": prompt}]})),
                item(json!({"type": "function_call_output", "call_id": format!("call_{n}"), "output": output})),
                item(json!({"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": answer}]})),
            ]
        }
        Client::Gemini => vec![
            json!({"id": format!("{session}-u{n}"), "timestamp": ts, "type": "user", "content": [{"text": prompt}]}).to_string(),
            json!({"id": format!("{session}-g{n}"), "timestamp": ts, "type": "gemini", "content": "",
                   "toolCalls": [{"id": format!("run_shell_command__{n}"), "name": "run_shell_command", "resultDisplay": output}]})
            .to_string(),
            json!({"id": format!("{session}-a{n}"), "timestamp": ts, "type": "gemini", "content": answer}).to_string(),
        ],
    }
}

fn append(path: &Path, lines: &[String]) -> usize {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    let bytes: String = lines.iter().map(|l| format!("{l}\n")).collect();
    f.write_all(bytes.as_bytes()).unwrap();
    bytes.len()
}

fn lines(p: &Path) -> usize {
    std::fs::read_to_string(p).map(|s| s.lines().count()).unwrap_or(0)
}

fn wait(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !f() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

struct Cost {
    cpu: Duration,
    read: u64,
    pushed: u64,
    pulled: u64,
    turn_bytes: u64,
    latency: Vec<Duration>,
}

fn main() {
    let root = std::env::temp_dir().join(format!("ts-bench-sessions-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let server = Server::start(&root);
    let token = server.token("team");
    let (a, b) = (Machine::new(&root, "a"), Machine::new(&root, "b"));
    let clients = [Client::Claude, Client::Codex, Client::Gemini];
    let sizes = [("10 KB", 10 << 10, 1), ("5 MB", 5 << 20, 5)];
    // (The first 8 characters differ: Gemini names files by them.)
    let session = |client: Client, n: u32| format!("{n}a1c000{}-0000-4000-8000-000000000000", client as u8);
    // Gemini's list of projects, as Gemini keeps it.
    std::fs::create_dir_all(a.home.join(".gemini")).unwrap();
    let projects = json!({ "projects": { a.checkout.to_string_lossy(): "api" } });
    std::fs::write(a.home.join(".gemini/projects.json"), projects.to_string()).unwrap();
    // The sessions as they stand before the run (turns with tool outputs of
    // up to 64 KB).
    for client in clients {
        for (_, size, n) in sizes {
            let s = session(client, n);
            let mut written = append(&a.file(client, &s), &start(&a, client, &s));
            let mut t = 0;
            while written < size {
                written += append(&a.file(client, &s), &turn(&a, client, &s, t, (size / 8).min(64 << 10)));
                t += 1;
            }
        }
    }
    let sidecar = |m: &Machine, proxy: Option<&Proxy>| {
        let url = proxy.map_or_else(|| server.url(), |p| p.url());
        let opts = json!({"server": url, "token": token, "threadsDir": m.home.join("threads"),
                          "stateDir": m.home.join("state"), "sources": ["claude-code", "codex", "gemini"],
                          "projectMap": {"example.com/team/api": m.checkout}});
        let mut s = Sidecar::spawn(&m.home, opts, None);
        s.ignore_everything();
        s
    };
    // A's traffic goes through a counting proxy, so its socket reads can be
    // told from its file reads.
    let proxy = Proxy::start(&server.addr);
    let sa = sidecar(&a, Some(&proxy));
    let _sb = sidecar(&b, None);
    let t0 = Instant::now();
    for client in clients {
        for (_, _, n) in sizes {
            let s = session(client, n);
            let (fa, fb) = (a.file(client, &s), b.file(client, &s));
            let deadline = Instant::now() + Duration::from_secs(180);
            while lines(&fb) != lines(&fa) {
                let (la, lb) = (lines(&fa), lines(&fb));
                assert!(
                    Instant::now() < deadline,
                    "the first sync of {client:?} {s}: A {la} lines, B {lb} ({})",
                    fb.display()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    eprintln!("first sync of six sessions (15 MB): {:.1} s", t0.elapsed().as_secs_f64());
    std::thread::sleep(Duration::from_secs(3));

    let pid = sa.child.id();
    let r = |x: f64, y: f64| if y > 0.0 { x / y } else { f64::NAN };
    for client in clients {
        let mut costs = Vec::new();
        for (name, _, n) in sizes {
            let s = session(client, n);
            let (fa, fb) = (a.file(client, &s), b.file(client, &s));
            let mut c = Cost { cpu: Duration::ZERO, read: 0, pushed: 0, pulled: 0, turn_bytes: 0, latency: Vec::new() };
            for i in 0..TURNS {
                let want = lines(&fa) + 3;
                let (cpu0, read0) = (cpu_time(pid), proc_io(pid, "rchar"));
                let socket0 = proxy.received.load(Ordering::Relaxed);
                let (push0, pull0) =
                    (server.metric("threadsync_push_bytes_total"), server.metric("threadsync_pull_bytes_total"));
                let started = Instant::now();
                c.turn_bytes += append(&fa, &turn(&a, client, &s, 1_000 + i, 6 << 10)) as u64;
                wait("the turn on B", || lines(&fb) == want);
                c.latency.push(started.elapsed());
                // Let both sidecars finish with the turn (acks, the held pull).
                std::thread::sleep(Duration::from_millis(300));
                c.cpu += cpu_time(pid) - cpu0;
                let socket = proxy.received.load(Ordering::Relaxed) - socket0;
                c.read += proc_io(pid, "rchar") - read0 - socket;
                c.pushed += server.metric("threadsync_push_bytes_total") - push0;
                c.pulled += server.metric("threadsync_pull_bytes_total") - pull0;
            }
            c.latency.sort();
            eprintln!(
                "{client:?} {name:>6} session: per turn {:.1} ms CPU, {} B read from files, {} B pushed, {} B pulled (turn {} B), B's file p50 {:.0} ms",
                c.cpu.as_secs_f64() * 1e3 / TURNS as f64,
                c.read / TURNS as u64,
                c.pushed / TURNS as u64,
                c.pulled / TURNS as u64,
                c.turn_bytes / TURNS as u64,
                c.latency[TURNS / 2].as_secs_f64() * 1e3
            );
            costs.push(c);
        }
        let (small, large) = (&costs[0], &costs[1]);
        println!(
            "{client:?}: one more turn, 5 MB vs 10 KB session: CPU {:.2}x, file bytes read {:.2}x, pushed {:.2}x, pulled {:.2}x; per byte of the turn (5 MB): pushed {:.2}, pulled {:.2}, read {:.2}",
            r(large.cpu.as_secs_f64(), small.cpu.as_secs_f64()),
            r(large.read as f64, small.read as f64),
            r(large.pushed as f64, small.pushed as f64),
            r(large.pulled as f64, small.pulled as f64),
            r(large.pushed as f64, large.turn_bytes as f64),
            r(large.pulled as f64, large.turn_bytes as f64),
            r(large.read as f64, large.turn_bytes as f64)
        );
    }
    drop(sa);
    let _ = std::fs::remove_dir_all(&root);
}
