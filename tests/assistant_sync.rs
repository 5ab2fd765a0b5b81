//! The real assistant CLIs on two machines kept in sync by threadsync: for
//! each of Claude Code, Codex CLI and Gemini CLI, two HOMEs with the same
//! repository checked out at different paths, a real `threadsync lsp` on
//! each and one real `threadsync serve`. The model behind each CLI is a fake
//! on 127.0.0.1 (`tests/common/assistants.rs`: the only part that cannot
//! run here); what the CLI sends it shows what the CLI read from its store.

#[path = "common/assistants.rs"]
mod assistants;
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use assistants::{Cli, FakeModel, Role, clis};
use common::TempDir;
use common::lsp_harness::{Server, Sidecar};
use serde_json::json;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
const SYNCED: Duration = Duration::from_secs(30);

fn git_checkout(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for args in [&["init", "-q"][..], &["remote", "add", "origin", "https://example.com/team/repo.git"]] {
        let st = Command::new("git").args(args).current_dir(dir).status().expect("git");
        assert!(st.success());
    }
}

struct Machine {
    home: PathBuf,
    repo: PathBuf,
    sidecar: Sidecar,
}

impl Machine {
    fn start(root: &Path, name: &str, checkout: &str, cli: Cli, server: &Server, token: &str) -> Machine {
        let home = root.join(name).join("home");
        let repo = root.join(name).join(checkout);
        std::fs::create_dir_all(&home).unwrap();
        git_checkout(&repo);
        let opts = json!({
            "server": server.url(), "token": token,
            "threadsDir": home.join("threads"), "stateDir": home.join("state"),
            "sources": [source(cli)],
        });
        // The editor is open on the checkout: that is how this machine's
        // sidecar knows where the repository is here.
        let mut sidecar = Sidecar::spawn_in(&home, opts, None, &[], &[&repo]);
        sidecar.ignore_everything();
        Machine { home, repo, sidecar }
    }

    /// The session's lines. Gemini re-appends a message with its id to
    /// replace it, and a machine that gets the session whole gets only the
    /// latest version: an earlier version of a re-appended message is
    /// left out, so both machines' files compare as sessions.
    fn lines(&self, cli: Cli, id: &str) -> Vec<String> {
        let lines: Vec<String> = cli
            .session_file(&self.home, id)
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map(|s| s.lines().map(str::to_string).collect())
            .unwrap_or_default();
        if cli != Cli::Gemini {
            return lines;
        }
        let id_of = |l: &str| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            v.get("type").and(v.get("id")).and_then(|i| i.as_str()).map(str::to_string)
        };
        let ids: Vec<Option<String>> = lines.iter().map(|l| id_of(l)).collect();
        lines
            .iter()
            .enumerate()
            .filter(|(i, _)| ids[*i].as_ref().is_none_or(|me| !ids[i + 1..].iter().any(|x| x.as_ref() == Some(me))))
            .map(|(_, l)| l.clone())
            .collect()
    }
}

fn source(cli: Cli) -> &'static str {
    match cli {
        Cli::Claude => "claude-code",
        Cli::Codex => "codex",
        Cli::Gemini => "gemini",
    }
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + SYNCED;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Everything the server stores, as bytes (database and write-ahead log).
fn server_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with("server.sqlite") {
            out.extend(std::fs::read(e.path()).unwrap_or_default());
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn two_machines_share_a_session(cli: Cli) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    clis();
    let fake = FakeModel::start();
    let tmp = TempDir::new(&format!("assistant-sync-{}", cli.name()));
    let root = tmp.0.canonicalize().unwrap();
    let server_dir = root.join("server");
    std::fs::create_dir_all(&server_dir).unwrap();
    let server = Server::start(&server_dir);
    let token = server.token("team");
    let a = Machine::start(&root, "a", "work/repo", cli, &server, &token);
    let b = Machine::start(&root, "b", "src/checkout-b", cli, &server, &token);
    let n = format!("{}-{}", cli.name(), std::process::id());
    // A fake secret in the checkout, read by the CLI's own shell tool: it
    // lands in the session as a tool output.
    let secret = "ghp_".to_string() + "R8mK2pX7vQ4nT9wL3sJ6hF1bC5dG0aZyE2uI";
    std::fs::write(a.repo.join("deploy.env"), format!("GITHUB_TOKEN={secret}\n")).unwrap();
    let said = format!("first {n}: why did the deploy fail?");
    let p1 = format!("{said}\nRUN: cat deploy.env");

    // A: a new session. It reaches B's store, where B's client looks.
    let run1 = cli.run_tool(&fake, &a.home, &a.repo, &p1, None);
    let id = run1.expect_ok("new session on A").id().to_owned();
    let reply1 = fake.turn_for(&p1).and_then(|t| t.reply).expect("a reply to the first prompt");
    let a_count = a.lines(cli, &id).len();
    wait_for("A's session in B's store", || b.lines(cli, &id).len() == a_count);
    let redacted = |lines: Vec<String>| -> Vec<String> {
        lines.into_iter().map(|l| l.replace(&secret, "[REDACTED:github-pat]")).collect()
    };
    if cli == Cli::Gemini {
        // (A replaced message keeps its first place in the thread.)
        assert_eq!(sorted(b.lines(cli, &id)), sorted(redacted(a.lines(cli, &id))), "B has A's lines but the secret");
    } else {
        assert_eq!(
            b.lines(cli, &id),
            redacted(a.lines(cli, &id)),
            "B has A's lines, in order, byte for byte but the secret"
        );
    }
    // The secret stayed on A: in A's file, not on the server or on B.
    assert!(a.lines(cli, &id).iter().any(|l| l.contains(&secret)), "the tool output is in A's file");
    assert!(fake.saw(&secret), "A's client sent the tool output to the model");
    assert!(!contains(&server_bytes(&server_dir), &secret), "the secret reached the server");
    assert!(!b.lines(cli, &id).iter().any(|l| l.contains(&secret)));

    // B resumes it with the client's own command: the model gets A's conversation.
    let p2 = format!("second {n} from B");
    cli.run(&fake, &b.home, &b.repo, &p2, Some(&id)).expect_ok("resume on B");
    let turn2 = fake.turn_for(&p2).expect("B's turn");
    assert!(turn2.has(Role::User, &said), "B's resume lacks A's prompt: {:#?}", turn2.conversation());
    assert!(turn2.has(Role::Assistant, &reply1), "B's resume lacks A's reply");
    let reply2 = turn2.reply.clone().unwrap();

    // B's turn reaches A's file; A's client resumes with both machines' turns.
    wait_for("B's turn in A's file", || {
        a.lines(cli, &id).iter().any(|l| l.contains(&p2)) && a.lines(cli, &id).len() == b.lines(cli, &id).len()
    });
    let p3 = format!("third {n} from A");
    cli.run(&fake, &a.home, &a.repo, &p3, Some(&id)).expect_ok("resume on A");
    let turn3 = fake.turn_for(&p3).expect("A's turn");
    for (role, t) in [(Role::User, &said), (Role::Assistant, &reply1), (Role::User, &p2), (Role::Assistant, &reply2)] {
        assert!(turn3.has(role, t), "A's resume lacks {role:?} {t:?}: {:#?}", turn3.conversation());
    }
    wait_for("A's third turn on B", || b.lines(cli, &id).len() == a.lines(cli, &id).len());
    assert_eq!(sorted(b.lines(cli, &id)), sorted(redacted(a.lines(cli, &id))));

    // Both machines go on at the same moment: every turn on both, none twice.
    let (p4a, p4b) = (format!("fourth {n} on A"), format!("fourth {n} on B"));
    std::thread::scope(|s| {
        let ra = s.spawn(|| cli.run(&fake, &a.home, &a.repo, &p4a, Some(&id)));
        let rb = s.spawn(|| cli.run(&fake, &b.home, &b.repo, &p4b, Some(&id)));
        let (ra, rb) = (ra.join().unwrap(), rb.join().unwrap());
        for (m, r) in [(&a, &ra), (&b, &rb)] {
            if !r.status.success() {
                // What the client found, to say why it refused.
                let dir = cli.session_file(&m.home, &id).map(|f| f.parent().unwrap().to_path_buf());
                for f in dir.iter().flat_map(|d| std::fs::read_dir(d).unwrap().flatten()) {
                    eprintln!("--- {}", f.path().display());
                    for l in std::fs::read_to_string(f.path()).unwrap_or_default().lines() {
                        eprintln!("{}", l.chars().take(160).collect::<String>());
                    }
                }
            }
        }
        ra.expect_ok("concurrent resume on A");
        rb.expect_ok("concurrent resume on B");
    });
    let deadline = Instant::now() + SYNCED;
    loop {
        let (la, lb) = (a.lines(cli, &id), b.lines(cli, &id));
        let has = |l: &[String], p: &str| l.iter().any(|x| x.contains(p));
        if la.len() == lb.len() && [&la, &lb].iter().all(|l| has(l, &p4a) && has(l, &p4b)) {
            break;
        }
        if Instant::now() > deadline {
            let only = |x: &[String], y: &[String]| {
                let y: Vec<String> = redacted(y.to_vec());
                x.iter().filter(|l| !y.contains(l)).map(|l| l.chars().take(200).collect::<String>()).collect::<Vec<_>>()
            };
            panic!(
                "the concurrent turns never met: A {} lines (p4a {}, p4b {}), B {} lines (p4a {}, p4b {})\nonly on A: {:#?}\nonly on B: {:#?}",
                la.len(),
                has(&la, &p4a),
                has(&la, &p4b),
                lb.len(),
                has(&lb, &p4a),
                has(&lb, &p4b),
                only(&redacted(la.clone()), &lb),
                only(&lb, &la)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (la, lb) = (redacted(a.lines(cli, &id)), b.lines(cli, &id));
    assert_eq!(sorted(la.clone()), sorted(lb.clone()), "the two files hold the same lines");
    // None twice: a line that carries a time (a turn, a request, a queue
    // operation — made once, at one instant) is in each file once, and so
    // is every record id. (Lines without a time may repeat: a CLI writes
    // the same mode record on every run.)
    for (who, lines) in [("A", &la), ("B", &lb)] {
        let parsed: Vec<serde_json::Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
        let mut timed: Vec<&String> =
            lines.iter().zip(&parsed).filter(|(_, v)| v.get("timestamp").is_some()).map(|(l, _)| l).collect();
        let n = timed.len();
        timed.sort();
        timed.dedup();
        assert_eq!(n, timed.len(), "{} timed line(s) twice in {who}'s file", n - timed.len());
        let mut ids: Vec<&str> = parsed
            .iter()
            .filter_map(|v| v.get("uuid").or_else(|| v.get("id").filter(|_| v.get("type").is_some())))
            .filter_map(|i| i.as_str())
            .collect();
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(n, ids.len(), "a record id twice in {who}'s file");
    }
    assert!(la.iter().filter(|l| l.contains(&p4a)).count() > 0);
    // And both clients still resume.
    for (m, p) in [(&a, format!("fifth {n} on A")), (&b, format!("fifth {n} on B"))] {
        cli.run(&fake, &m.home, &m.repo, &p, Some(&id)).expect_ok("resume after the concurrent turns");
        let t = fake.turn_for(&p).unwrap();
        assert!(t.has(Role::User, &said), "{:#?}", t.conversation());
    }

    // A's session file goes (the client's 30-day cleanup, or the user): it
    // stays on B and on the server, and `threadsync restore` brings it back
    // where A's client resumes it.
    let thread = format!("{}-{id}", if cli == Cli::Claude { "claude" } else { source(cli) });
    let a_file = cli.session_file(&a.home, &id).unwrap();
    let kept = b.lines(cli, &id);
    std::fs::remove_file(&a_file).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    // (Gemini may keep a stray two-line file of a resume beside it: not the session.)
    assert!(!a_file.exists(), "the removed file came back by itself");
    assert_eq!(b.lines(cli, &id), kept, "B's copy is untouched");
    let mut b_side = b;
    let t = b_side.sidecar.request("threadsync/getThread", json!({ "threadId": thread }));
    assert_eq!(t["result"]["messages"].as_array().map(Vec::len), Some(kept.len()), "{t}");
    let out = Command::new(env!("CARGO_BIN_EXE_threadsync"))
        .args(["restore", &thread])
        .current_dir(&a.repo)
        .env_clear()
        .env("HOME", &a.home)
        .env("XDG_CONFIG_HOME", a.home.join("config"))
        .env("THREADSYNC_SERVER", server.url())
        .env("THREADSYNC_TOKEN", &token)
        .env("THREADSYNC_SOURCES", source(cli))
        .output()
        .unwrap();
    assert!(out.status.success(), "restore: {}", String::from_utf8_lossy(&out.stderr));
    let back = cli.session_file(&a.home, &id).expect("the restored file where A's client looks");
    assert_eq!(sorted(a.lines(cli, &id)), sorted(kept.clone()), "{} holds the session", back.display());
    let p6 = format!("sixth {n} on A, restored");
    cli.run(&fake, &a.home, &a.repo, &p6, Some(&id)).expect_ok("resume of the restored session");
    assert!(fake.turn_for(&p6).unwrap().has(Role::User, &said));
    wait_for("the restored session's new turn on B", || b_side.lines(cli, &id).iter().any(|l| l.contains(&p6)));
    drop((a, b_side));
}

#[test]
fn claude_code_sessions_sync_between_two_machines() {
    two_machines_share_a_session(Cli::Claude);
}

#[test]
fn codex_sessions_sync_between_two_machines() {
    two_machines_share_a_session(Cli::Codex);
}

#[test]
fn gemini_sessions_sync_between_two_machines() {
    two_machines_share_a_session(Cli::Gemini);
}
