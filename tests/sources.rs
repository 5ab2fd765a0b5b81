//! The assistants' stores synced between two machines, end to end with real
//! `threadsync serve` and `threadsync lsp` processes: each "machine" has its
//! own HOME (with the store under it) and its own checkout of the same
//! repository at a different path. Here the session files are written the
//! way the assistants write them (whole lines, appended); the real CLIs
//! resuming them are in `tests/assistants.rs`.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::lsp_harness::*;
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(20);

/// A machine: a HOME with a checkout of the team's repository.
struct Machine {
    home: PathBuf,
    checkout: PathBuf,
}

impl Machine {
    fn new(root: &Path, name: &str, checkout: &str) -> Machine {
        let home = root.join(name);
        let checkout = home.join(checkout);
        std::fs::create_dir_all(checkout.join(".git")).unwrap();
        std::fs::write(checkout.join(".git/config"), "[remote \"origin\"]\n\turl = git@example.com:team/api.git\n")
            .unwrap();
        Machine { home, checkout }
    }

    fn sidecar(&self, server: &Server, token: &str, extra: Value) -> Sidecar {
        let mut opts = json!({
            "server": server.url(), "token": token,
            "threadsDir": self.home.join("threads"), "stateDir": self.home.join("state"),
            "sources": ["claude-code", "codex", "gemini"],
            "projectMap": { "example.com/team/api": self.checkout },
        });
        for (k, v) in extra.as_object().unwrap() {
            opts[k] = v.clone();
        }
        let mut s = Sidecar::spawn(&self.home, opts, None);
        s.ignore_chatter();
        s
    }

    /// Where Claude Code keeps this machine's sessions of the checkout.
    fn claude_dir(&self) -> PathBuf {
        let escaped: String =
            self.checkout.to_string_lossy().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
        self.home.join(".claude/projects").join(escaped)
    }
}

fn claude_line(m: &Machine, session: &str, uuid: &str, parent: Option<&str>, kind: &str, text: &str) -> String {
    let v = json!({
        "parentUuid": parent, "isSidechain": false, "userType": "external",
        "cwd": m.checkout, "sessionId": session, "version": "2.1.332", "gitBranch": "main",
        "type": kind, "message": { "role": kind, "content": text },
        "uuid": uuid, "timestamp": "2026-12-06T10:00:00.000Z",
    });
    serde_json::to_string(&v).unwrap()
}

/// Appends lines as an assistant does: each whole, in one write.
fn append_lines(path: &Path, lines: &[String]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    for l in lines {
        f.write_all(format!("{l}\n").as_bytes()).unwrap();
    }
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).map(|s| s.lines().map(str::to_string).collect()).unwrap_or_default()
}

#[test]
fn a_claude_session_goes_to_the_other_machine_and_its_new_turns_come_back() {
    let dir = common::TempDir::new("sources-claude");
    let server = Server::start(&dir.0);
    let token = server.token("team");
    let a = Machine::new(&dir.0, "a", "work/api");
    let b = Machine::new(&dir.0, "b", "code/api-server");
    let session = "3f0c9c1e-8a51-4d2b-9a0e-1c2d3e4f5a6b";
    let a_file = a.claude_dir().join(format!("{session}.jsonl"));
    let secret = "ghp_".to_string() + "R8mK2pX7vQ4nT9wL3sJ6hF1bC5dG0aZyE2uI";
    let a_lines = vec![
        r#"{"type":"queue-operation","operation":"enqueue","timestamp":"2026-12-06T10:00:00.000Z","sessionId":"3f0c9c1e-8a51-4d2b-9a0e-1c2d3e4f5a6b"}"#.to_string(),
        claude_line(&a, session, "u1", None, "user", "Fix the flaky login test"),
        claude_line(&a, session, "a1", Some("u1"), "assistant", &format!("The CI log shows GITHUB_TOKEN={secret} in the env")),
    ];
    append_lines(&a_file, &a_lines);
    // A subagent's transcript beside it (its lines are the sidechain).
    let agent = format!("{session}/subagents/agent-a4f1.jsonl");
    let agent_line = claude_line(&a, session, "s1", None, "user", "Find the flaky assertion");
    append_lines(&a.claude_dir().join(&agent), std::slice::from_ref(&agent_line));

    let mut sa = a.sidecar(&server, &token, json!({}));
    let mut sb = b.sidecar(&server, &token, json!({}));
    let thread = format!("claude-{session}");
    let tb = sb.wait_thread(&thread, T, |t| t["messages"].as_array().is_some_and(|m| m.len() == 3));
    assert_eq!(tb["title"], "Fix the flaky login test");
    assert_eq!(tb["env"]["source"], "claude-code");
    assert_eq!(tb["env"]["project"], json!({"repo": "example.com/team/api", "path": ""}));

    // B's copy is where B's `claude --resume` looks: under B's checkout.
    let b_file = b.claude_dir().join(format!("{session}.jsonl"));
    wait_for("B's session file", T, || lines(&b_file).len() == 3);
    let got = lines(&b_file);
    assert_eq!(got[..2], a_lines[..2], "lines arrive byte for byte");
    wait_for("the subagent's transcript on B", T, || lines(&b.claude_dir().join(&agent)) == [agent_line.clone()]);
    // The secret never left A: B's line has the marker, A's file the secret.
    assert!(!got[2].contains(&secret) && got[2].contains("[REDACTED:github-pat]"), "{}", got[2]);
    assert!(lines(&a_file)[2].contains(&secret));
    serde_json::from_str::<Value>(&got[2]).expect("a redacted line is still JSON");

    // B's assistant goes on (its lines carry B's directory); A gets the turn.
    let b_turn = vec![
        claude_line(&b, session, "u2", Some("a1"), "user", "Now on the desktop: run it again"),
        claude_line(&b, session, "a2", Some("u2"), "assistant", "Passing 50 of 50 runs."),
    ];
    append_lines(&b_file, &b_turn);
    wait_for("A's file to get B's turn", T, || lines(&a_file).len() == 5);
    assert_eq!(lines(&a_file)[3..], b_turn[..]);
    // Nothing twice anywhere.
    let ta = sa.wait_thread(&thread, T, |t| t["messages"].as_array().unwrap().len() == 5);
    let tb = sb.wait_thread(&thread, T, |t| t["messages"].as_array().unwrap().len() == 5);
    assert_eq!(ids(&ta), ids(&tb));
    assert_eq!(lines(&b_file).len(), 5);
    sa.ignore_everything();
    sb.ignore_everything();
}

/// `threadsync daemon` syncs a terminal user's sessions with no editor, under
/// the same state-directory lock as editor windows: while it runs an editor
/// window on the same machine waits; after SIGTERM (exit 0) the window takes
/// over. `threadsync status` says what a statusline would, and counts the
/// sessions found.
#[test]
fn the_daemon_syncs_without_an_editor_and_hands_over_to_one() {
    let dir = common::TempDir::new("sources-daemon");
    let server = Server::start(&dir.0);
    let token = server.token("team");
    let a = Machine::new(&dir.0, "a", "work/api");
    let b = Machine::new(&dir.0, "b", "code/api-server");
    let session = "9d2f6a40-1b7c-4e0a-8f3d-5c6b7a8e9f01";
    let a_file = a.claude_dir().join(format!("{session}.jsonl"));
    append_lines(&a_file, &[claude_line(&a, session, "u1", None, "user", "Summarise the release notes")]);
    // The daemon's configuration: the config file, as a user writes it.
    let config = a.home.join("config/threadsync");
    std::fs::create_dir_all(&config).unwrap();
    let settings = json!({
        "server": server.url(), "token": token,
        "threadsDir": a.home.join("threads"), "stateDir": a.home.join("state"),
        "sources": { "claude-code": true },
    });
    std::fs::write(config.join("config.json"), settings.to_string()).unwrap();
    let env = |c: &mut std::process::Command| {
        c.env_clear()
            .env("HOME", &a.home)
            .env("XDG_CONFIG_HOME", a.home.join("config"))
            .env("PATH", std::env::var("PATH").unwrap_or_default());
    };
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_threadsync"));
    env(&mut cmd);
    let mut daemon = cmd
        .args(["daemon", "--project"])
        .arg(&a.checkout)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut sb = b.sidecar(&server, &token, json!({}));
    let b_file = b.claude_dir().join(format!("{session}.jsonl"));
    wait_for("the daemon's session on B", T, || lines(&b_file).len() == 1);

    let status = || {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_threadsync"));
        env(&mut c);
        let out = c.arg("status").output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    wait_for("status: synced", T, || status().starts_with("threadsync: synced"));
    let said = status();
    assert!(said.contains("claude-code  synced, 1 session(s)"), "{said}");
    assert!(said.contains("codex        not found") && said.contains("gemini       not found"), "{said}");
    assert!(!said.contains(&token), "status never prints the token");

    // An editor window on the same machine while the daemon syncs: it waits.
    let mut window = Sidecar::spawn(
        &a.home,
        json!({ "server": server.url(), "token": token, "threadsDir": a.home.join("threads"),
                "stateDir": a.home.join("state"), "sources": ["claude-code"] }),
        None,
    );
    window.ignore_everything();
    append_lines(&a_file, &[claude_line(&a, session, "a1", Some("u1"), "assistant", "Three fixes, one feature.")]);
    wait_for("the daemon's second line on B", T, || lines(&b_file).len() == 2);

    // SIGTERM: the daemon exits 0 and the window takes over.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + T;
    let code = loop {
        if let Some(s) = daemon.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the daemon did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(code.success(), "the daemon exited with {code}");
    append_lines(&a_file, &[claude_line(&a, session, "u2", Some("a1"), "user", "And the migration?")]);
    wait_for("the window's line on B", T, || lines(&b_file).len() == 3);
    assert_eq!(lines(&b_file), lines(&a_file));
    sb.ignore_everything();
}

/// Where two writers meet: an assistant appending lines to a session as
/// fast as it can while the sidecar appends the other machine's lines to the
/// same file. Every line of both ends up whole (valid JSON), once, in both
/// files.
#[test]
fn an_assistant_writing_while_the_sidecar_appends_loses_and_corrupts_nothing() {
    let dir = common::TempDir::new("sources-race");
    let server = Server::start(&dir.0);
    let token = server.token("team");
    let a = Machine::new(&dir.0, "a", "work/api");
    let b = Machine::new(&dir.0, "b", "code/api-server");
    let session = "7e1d2c3b-4a59-4687-9a0b-1c2d3e4f5a6b";
    let (a_file, b_file) =
        (a.claude_dir().join(format!("{session}.jsonl")), b.claude_dir().join(format!("{session}.jsonl")));
    append_lines(&a_file, &[claude_line(&a, session, "root", None, "user", "Start")]);
    let sa = a.sidecar(&server, &token, json!({}));
    let sb = b.sidecar(&server, &token, json!({}));
    wait_for("the session on B", T, || lines(&b_file).len() == 1);
    const N: usize = 300;
    // Lines of a few KB, some written in two pieces (as a writer's buffer
    // flushes): a reader sees torn lines, the sidecar must not write then.
    let line = |m: &Machine, who: &str, i: usize| {
        claude_line(
            m,
            session,
            &format!("{who}{i}"),
            Some("root"),
            "assistant",
            &format!("{who} {i} {}", "x".repeat(i % 7 * 700)),
        )
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut f = std::fs::OpenOptions::new().append(true).open(&a_file).unwrap();
            for i in 0..N {
                let l = format!("{}\n", line(&a, "a", i));
                if i % 3 == 0 {
                    let (x, y) = l.as_bytes().split_at(l.len() / 2);
                    f.write_all(x).unwrap();
                    std::thread::sleep(Duration::from_micros(300));
                    f.write_all(y).unwrap();
                } else {
                    f.write_all(l.as_bytes()).unwrap();
                }
                if i % 10 == 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        });
        s.spawn(|| {
            for i in 0..N {
                append_lines(&b_file, &[line(&b, "b", i)]);
                if i % 10 == 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        });
    });
    wait_for("both writers' lines in both files", Duration::from_secs(60), || {
        lines(&a_file).len() == 1 + 2 * N && lines(&b_file).len() == 1 + 2 * N
    });
    for (who, path) in [("A", &a_file), ("B", &b_file)] {
        let all = lines(path);
        for l in &all {
            serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("a broken line in {who}'s file: {e}: {l:.120}"));
        }
        let mut sorted = all.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), all.len(), "a line twice in {who}'s file");
    }
    let mut la = lines(&a_file);
    let mut lb = lines(&b_file);
    la.sort();
    lb.sort();
    assert_eq!(la, lb);
    drop((sa, sb));
}

/// `threadsync restore` also puts back one of threadsync's own threads (a
/// log in `threadsDir`), from the server; a file that is there is left
/// alone, and an unknown thread or a refused token says so.
#[test]
fn restore_puts_back_a_threadsync_thread_and_refuses_what_it_cannot() {
    let dir = common::TempDir::new("sources-restore");
    let server = Server::start(&dir.0);
    let token = server.token("team");
    let a = Machine::new(&dir.0, "a", "work/api");
    let mut sa = a.sidecar(&server, &token, json!({}));
    sa.wait_status("synced", T);
    let id =
        sa.ok("threadsync/createThread", json!({ "title": "release plan" }))["threadId"].as_str().unwrap().to_string();
    sa.ok("threadsync/appendMessage", json!({ "threadId": id, "role": "user", "content": "ship on Friday" }));
    let file = a.home.join("threads").join(format!("{id}.jsonl"));
    wait_for("the thread's log", T, || std::fs::read_to_string(&file).is_ok_and(|s| s.contains("ship on Friday")));
    // On the server before the sidecar goes.
    sa.ok("workspace/executeCommand", json!({ "command": "threadsync.forceSync", "arguments": [] }));
    drop(sa);
    std::fs::remove_file(&file).unwrap();
    let restore = |thread: &str, token: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_threadsync"))
            .args(["restore", thread])
            .env_clear()
            .env("HOME", &a.home)
            .env("XDG_CONFIG_HOME", a.home.join("config"))
            .env("THREADSYNC_SERVER", server.url())
            .env("THREADSYNC_TOKEN", token)
            .env("THREADSYNC_THREADS_DIR", a.home.join("threads"))
            .output()
            .unwrap()
    };
    let out = restore(&id, &token);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let back = std::fs::read_to_string(&file).unwrap();
    assert!(back.contains("ship on Friday") && back.contains("release plan"), "{back}");
    // Never over a file that is there; clear errors otherwise.
    let out = restore(&id, &token);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("is there already"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), back);
    let out = restore("T-nope", &token);
    assert!(String::from_utf8_lossy(&out.stderr).contains("the server has no thread T-nope"));
    let out = restore(&id, "not-a-token");
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success() && said.contains("refused the token") && !said.contains("not-a-token"), "{said}");
    let out = restore("../etc/passwd", &token);
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad thread id"));
}
