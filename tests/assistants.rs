//! The real assistant CLIs (Claude Code, Codex CLI, Gemini CLI, from npm) run
//! offline against a fake model API: a session made on machine A, copied into
//! machine B's store where the client looks for it, resumes on B with the whole
//! conversation — checked by what B's client sends to the model.
//!
//! These are the facts the sync adapters rely on; when a CLI update breaks one,
//! this is where it shows. `tests/common/assistants.rs` has the harness; the
//! first run installs the CLIs under `.cache/` (~30 s), later runs reuse them.

#[path = "common/assistants.rs"]
mod assistants;
mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use assistants::{Cli, FakeModel, Role, clis};
use common::TempDir;

// One CLI at a time: each is a heavy node/native process on a two-core machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A checkout of the team's repository at `dir`.
fn git_checkout(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for args in [&["init", "-q"][..], &["remote", "add", "origin", "https://example.com/team/repo.git"]] {
        let st = Command::new("git").args(args).current_dir(dir).status().expect("git");
        assert!(st.success(), "git {args:?} in {}", dir.display());
    }
}

/// The file's inode and bytes, to check that a resume only appended.
fn snapshot(p: &Path) -> (u64, Vec<u8>) {
    (std::fs::metadata(p).unwrap().ino(), std::fs::read(p).unwrap())
}

fn assert_appended(cli: Cli, p: &Path, before: &(u64, Vec<u8>), what: &str) {
    let after = snapshot(p);
    assert_eq!(after.0, before.0, "{cli:?} {what}: {} was replaced (new inode)", p.display());
    assert!(
        after.1.len() > before.1.len() && after.1.starts_with(&before.1),
        "{cli:?} {what}: {} was not only appended to",
        p.display()
    );
}

fn synced_session_resumes(cli: Cli) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    clis(); // install (once per process) before anything is timed
    let fake = FakeModel::start();
    let tmp = TempDir::new(&format!("assistants-{}", cli.name()));
    let root = tmp.0.canonicalize().unwrap(); // the CLIs see the real path
    // Machine A and machine B: own HOMEs, the same repo checked out at different paths.
    let (home_a, repo_a) = (root.join("a/home"), root.join("a/work/repo"));
    let (home_b, repo_b) = (root.join("b/home"), root.join("b/src/checkout-b"));
    for d in [&home_a, &home_b] {
        std::fs::create_dir_all(d).unwrap();
    }
    git_checkout(&repo_a);
    git_checkout(&repo_b);
    let nonce = format!("{}-{}", std::process::id(), root.file_name().unwrap().to_string_lossy());
    let p1 = format!("first {} prompt {nonce}", cli.name());
    let p2 = format!("second {} prompt {nonce}", cli.name());
    let p3 = format!("third {} prompt {nonce}", cli.name());

    // A: a new session.
    let run1 = cli.run(&fake, &home_a, &repo_a, &p1, None);
    let id = run1.expect_ok("new session on A").id().to_owned();
    let turn1 = fake.turn_for(&p1).unwrap_or_else(|| panic!("the fake got no turn for {p1:?}: {:#?}", fake.requests()));
    let reply1 = turn1.reply.clone().unwrap();
    assert_eq!(run1.reply.as_deref(), Some(reply1.as_str()), "{cli:?} printed another answer");
    let file_a = cli
        .session_file(&home_a, &id)
        .unwrap_or_else(|| panic!("{cli:?}: no session file for {id} under {}", home_a.display()));
    match cli {
        Cli::Claude => assert_eq!(file_a, assistants::claude_project_dir(&home_a, &repo_a).join(format!("{id}.jsonl"))),
        Cli::Codex => assert!(file_a.starts_with(home_a.join(".codex/sessions")), "{}", file_a.display()),
        Cli::Gemini => assert!(file_a.starts_with(home_a.join(".gemini/tmp/repo/chats")), "{}", file_a.display()),
    }
    let text = std::fs::read_to_string(&file_a).unwrap();
    assert!(text.contains(&p1) && text.contains(&reply1), "{cli:?}: {} lacks the first turn", file_a.display());

    // A: resume with the CLI's own resume command.
    let before = snapshot(&file_a);
    let run2 = cli.run(&fake, &home_a, &repo_a, &p2, Some(&id));
    run2.expect_ok("resume on A");
    assert_eq!(run2.id(), id, "{cli:?} resumed another session");
    let turn2 = fake.turn_for(&p2).expect("a turn for the second prompt");
    assert!(
        turn2.has(Role::User, &p1),
        "{cli:?} resume on A did not send the first prompt: {:#?}",
        turn2.conversation()
    );
    assert!(turn2.has(Role::Assistant, &reply1), "{cli:?} resume on A did not send the first reply");
    let reply2 = turn2.reply.clone().unwrap();
    assert_appended(cli, &file_a, &before, "resume on A");

    // B: the session file copied where B's client looks, B's checkout elsewhere.
    let file_b = cli.resume_place(&home_b, &repo_b, &file_a);
    std::fs::create_dir_all(file_b.parent().unwrap()).unwrap();
    std::fs::copy(&file_a, &file_b).unwrap();
    let before = snapshot(&file_b);
    let run3 = cli.run(&fake, &home_b, &repo_b, &p3, Some(&id));
    run3.expect_ok("resume on B");
    assert_eq!(run3.id(), id, "{cli:?} resumed another session on B");
    let turn3 = fake.turn_for(&p3).expect("a turn for the third prompt");
    for (role, t) in [(Role::User, &p1), (Role::Assistant, &reply1), (Role::User, &p2), (Role::Assistant, &reply2)] {
        assert!(turn3.has(role, t), "{cli:?} resume on B did not send {role:?} {t:?}: {:#?}", turn3.conversation());
    }
    // B's client continued the copied file itself, by appending.
    assert_eq!(cli.session_file(&home_b, &id).as_deref(), Some(file_b.as_path()), "{cli:?} on B used another file");
    assert_appended(cli, &file_b, &before, "resume on B");
    let text = std::fs::read_to_string(&file_b).unwrap();
    assert!(
        text.contains(&p3) && text.contains(turn3.reply.as_deref().unwrap()),
        "{cli:?}: B's file lacks the third turn"
    );
    eprintln!(
        "{cli:?}: runs took {:.1}s, {:.1}s, {:.1}s; {} requests to the fake",
        run1.elapsed.as_secs_f64(),
        run2.elapsed.as_secs_f64(),
        run3.elapsed.as_secs_f64(),
        fake.requests().len()
    );
}

#[test]
fn claude_code_session_resumes_on_another_machine() {
    synced_session_resumes(Cli::Claude);
}

#[test]
fn codex_session_resumes_on_another_machine() {
    synced_session_resumes(Cli::Codex);
}

#[test]
fn gemini_session_resumes_on_another_machine() {
    synced_session_resumes(Cli::Gemini);
}
