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

use assistants::{Cli, FakeModel, Reply, Role, clis};
use common::TempDir;
use serde_json::Value;

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

// ---------------------------------------------------------------------------
// Tool output in the session
// ---------------------------------------------------------------------------

/// Where each CLI records a shell command's output in its session file: the
/// JSON paths (array indices written `[]`) of the strings that hold it, by
/// record type. A secret printed by a command lands in every one of them.
fn tool_output_fields(cli: Cli) -> &'static [(&'static str, &'static str)] {
    match cli {
        // `type: "user"` record answering the assistant's `tool_use`:
        // `message.content[i]` is `{type: "tool_result", tool_use_id, content, is_error}`
        // (`content` a string; an array of `{type: "text", text}` blocks for
        // some tools), and `toolUseResult` is Bash's `{stdout, stderr, interrupted, …}`.
        Cli::Claude => &[
            ("user", "message.content[].content"),
            ("user", "message.content[].content[].text"),
            ("user", "toolUseResult.stdout"),
            ("user", "toolUseResult.stderr"),
        ],
        // `response_item` with `payload.type: "function_call_output"` (`call_id`
        // pairs it with the `function_call`): `payload.output` is exec_command's
        // text ("Chunk ID: …\nWall time: …\nProcess exited with code 0\n…\nOutput:\n<stdout>");
        // and `event_msg` `item_completed` with `payload.item.type: "CommandExecution"`:
        // `payload.item.aggregated_output` is the raw output.
        Cli::Codex => &[
            ("response_item", "payload.output"),
            ("response_item", "payload.output[].text"),
            ("event_msg", "payload.item.aggregated_output"),
        ],
        // `type: "gemini"` message with `toolCalls[i]`: `result[j].functionResponse
        // .response.output` (what the model gets) and `resultDisplay` (the raw
        // output, as shown); then a `type: "user"` message whose `content[j]` is
        // the same `{functionResponse: {id, name, response: {output}}}`. A resume
        // appends `{"$set": {"messages": [...]}}`, the whole history again, with
        // messages of these shapes (plus a `user` one with id `<gemini id>_response`
        // holding the same functionResponse; its `gemini` message may or may not
        // keep `toolCalls`), which [`records_with`] checks message by message.
        Cli::Gemini => &[
            ("gemini", "toolCalls[].result[].functionResponse.response.output"),
            ("gemini", "toolCalls[].resultDisplay"),
            ("user", "content[].functionResponse.response.output"),
        ],
    }
}

/// The JSON paths (indices as `[]`) of every string in `v` that contains `needle`.
fn paths_containing(v: &Value, needle: &str, at: &str, out: &mut Vec<String>) {
    match v {
        Value::String(s) if s.contains(needle) => out.push(at.to_owned()),
        Value::Array(a) => a.iter().for_each(|x| paths_containing(x, needle, &format!("{at}[]"), out)),
        Value::Object(o) => {
            for (k, x) in o {
                let at = if at.is_empty() { k.clone() } else { format!("{at}.{k}") };
                paths_containing(x, needle, &at, out);
            }
        }
        _ => {}
    }
}

/// Every record of the session file that holds `marker`, as (where, record
/// type, paths holding it, the record). `where` is the line number; Gemini's
/// `{"$set": {"messages": […]}}` (a resume rewrites the whole message list
/// that way) counts as one record per message, `<line>:$set.messages[<i>]`.
fn records_with(p: &Path, marker: &str) -> Vec<(String, String, Vec<String>, String)> {
    let text = std::fs::read_to_string(p).unwrap();
    let mut out = Vec::new();
    let mut push = |at: String, v: &Value, raw: String| {
        let kind = v["type"].as_str().unwrap_or("?").to_owned();
        let mut paths = Vec::new();
        paths_containing(v, marker, "", &mut paths);
        out.push((at, kind, paths, raw));
    };
    for (i, line) in text.lines().enumerate().filter(|(_, l)| l.contains(marker)) {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{}:{}: not JSON ({e})", p.display(), i + 1));
        match v["$set"]["messages"].as_array() {
            Some(messages) => {
                for (j, m) in messages.iter().enumerate().filter(|(_, m)| m.to_string().contains(marker)) {
                    push(format!("{}:$set.messages[{j}]", i + 1), m, m.to_string());
                }
            }
            None => push(format!("{}", i + 1), &v, line.to_owned()),
        }
    }
    out
}

/// A prompt asks (by the fake's `RUN:` convention) to `cat secrets.env`; the
/// real CLI runs it with its own shell tool; its output, a secret, is in the
/// session file as a tool result, exactly where [`tool_output_fields`] says;
/// and the session still resumes, sending the tool call and output back.
fn tool_output_is_recorded(cli: Cli) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    clis();
    let fake = FakeModel::start();
    let tmp = TempDir::new(&format!("assistants-tool-{}", cli.name()));
    let root = tmp.0.canonicalize().unwrap();
    let (home, repo) = (root.join("home"), root.join("work/repo"));
    std::fs::create_dir_all(&home).unwrap();
    git_checkout(&repo);
    let nonce = format!("{}-{}", std::process::id(), root.file_name().unwrap().to_string_lossy());
    let marker = format!("sk-live-MARKER-{}", nonce.replace('-', "x"));
    std::fs::write(repo.join("secrets.env"), format!("# test credentials\nAPI_TOKEN={marker}\n")).unwrap();
    let p1 = format!("what is in the env file? {nonce}\nRUN: cat secrets.env");
    let p2 = format!("thanks, {} {nonce}", cli.name());

    // A session whose first turn runs `cat secrets.env` as a tool call.
    let run1 = cli.run_tool(&fake, &home, &repo, &p1, None);
    let id = run1.expect_ok("tool run").id().to_owned();
    // (1) The fake asked for the command and the CLI sent its output back.
    let turns = fake.turns_since(0);
    let asked = turns.iter().find_map(|t| match &t.answer {
        Some(Reply::Shell { id, command }) if command == "cat secrets.env" => Some(id.clone()),
        _ => None,
    });
    let call_id = asked.unwrap_or_else(|| panic!("{cli:?}: the fake never asked to run the command: {turns:#?}"));
    let results = fake.tool_results_since(0);
    let (result_id, output) = results.iter().find(|(_, o)| o.contains(&marker)).unwrap_or_else(|| {
        panic!("{cli:?} did not run `cat secrets.env`; tool results sent: {results:#?}\n{}", run1.stderr)
    });
    assert!(
        result_id.is_empty() || result_id.ends_with(&call_id),
        "{cli:?}: result for call {result_id:?}, asked {call_id:?}"
    );
    let turn1 = fake.turn_for(&p1).expect("a turn for the prompt");
    assert!(
        turn1.tool_results_since_prompt().iter().any(|(_, o)| o.contains(&marker)),
        "{cli:?}: the last turn of the prompt did not carry the output"
    );
    let reply1 = turn1.reply.clone().expect("the fake answered the tool result with text");
    assert_eq!(run1.reply.as_deref(), Some(reply1.as_str()), "{cli:?} printed another answer");
    assert!(!reply1.contains(&marker) && !p1.contains(&marker), "the marker must come only from the tool");
    eprintln!("{cli:?}: tool result {result_id:?} sent to the model: {output:?}");

    // (2) The session file holds the marker in tool-result records, and nowhere else.
    let file = cli.session_file(&home, &id).unwrap_or_else(|| panic!("{cli:?}: no session file for {id}"));
    let check_records = |what: &str| {
        let records = records_with(&file, &marker);
        let known = tool_output_fields(cli);
        for (n, kind, paths, line) in &records {
            let trimmed: String = line.chars().take(300).collect();
            eprintln!("{cli:?} {what}: record {n} `{kind}` holds the output at {paths:?}: {trimmed}…");
            for path in paths {
                assert!(
                    known.iter().any(|(k, p)| k == kind && p == path),
                    "{cli:?} {what}: {}:{n} holds the output in an unexpected place: `{kind}` {path}\n{line}",
                    file.display()
                );
            }
        }
        for (kind, path) in known {
            let seen = records.iter().any(|(_, k, ps, _)| k == kind && ps.iter().any(|p| p == path));
            // The array form of Claude's tool_result content and codex's
            // output and stderr do not occur for a `cat` that succeeds.
            let optional = path.ends_with("[].text") || path.ends_with("stderr");
            assert!(
                optional || seen,
                "{cli:?} {what}: no `{kind}` record holds the output at {path} in {}",
                file.display()
            );
        }
        records.len()
    };
    let n1 = check_records("after the tool run");

    // (3) The session resumes, sending the call and its output back to the model.
    let before = snapshot(&file);
    let run2 = cli.run(&fake, &home, &repo, &p2, Some(&id));
    run2.expect_ok("resume after the tool run");
    assert_eq!(run2.id(), id, "{cli:?} resumed another session");
    let turn2 = fake.turn_for(&p2).expect("a turn for the resume prompt");
    assert!(turn2.has(Role::User, &p1), "{cli:?}: the resume did not send the first prompt: {:#?}", turn2.items());
    assert!(turn2.has(Role::Assistant, &reply1), "{cli:?}: the resume did not send the first reply");
    assert!(
        turn2.items().iter().any(|i| matches!(i, assistants::Item::ToolCall { .. })),
        "{cli:?}: the resume did not send the tool call: {:#?}",
        turn2.items()
    );
    assert!(
        turn2.tool_results().iter().any(|(_, o)| o.contains(&marker)),
        "{cli:?}: the resume did not send the tool output: {:#?}",
        turn2.items()
    );
    assert_appended(cli, &file, &before, "resume after the tool run");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains(&p2) && text.contains(turn2.reply.as_deref().unwrap()),
        "{cli:?}: the file lacks the resumed turn"
    );
    let n2 = check_records("after the resume");
    eprintln!(
        "{cli:?}: {n1} records held the output after the tool run, {n2} after the resume; runs took {:.1}s, {:.1}s",
        run1.elapsed.as_secs_f64(),
        run2.elapsed.as_secs_f64()
    );
}

#[test]
fn claude_code_records_tool_output() {
    tool_output_is_recorded(Cli::Claude);
}

#[test]
fn codex_records_tool_output() {
    tool_output_is_recorded(Cli::Codex);
}

#[test]
fn gemini_records_tool_output() {
    tool_output_is_recorded(Cli::Gemini);
}
