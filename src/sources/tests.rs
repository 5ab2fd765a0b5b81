use super::*;
use crate::threadlog::{LogFormat, Own, ReadCtx};

fn log(source: Source) -> NativeLog<'static> {
    NativeLog { source, redact: Some(Scanner::get()) }
}

const CLAUDE: &str = concat!(
    r#"{"type":"queue-operation","operation":"enqueue","timestamp":"2026-12-06T10:00:00.000Z","sessionId":"3f0c9c1e-8a51-4d2b-9a0e-1c2d3e4f5a6b"}"#,
    "\n",
    r#"{"parentUuid":null,"isSidechain":false,"userType":"external","cwd":"/home/ann/src/api","sessionId":"3f0c9c1e-8a51-4d2b-9a0e-1c2d3e4f5a6b","version":"2.1.332","gitBranch":"main","type":"user","message":{"role":"user","content":"Fix the flaky login test\nplease"},"uuid":"a1","timestamp":"2026-12-06T10:00:01.250Z"}"#,
    "\n",
    r#"{"parentUuid":"a1","isSidechain":false,"cwd":"/home/ann/src/api","sessionId":"3f0c9c1e-8a51-4d2b-9a0e-1c2d3e4f5a6b","type":"assistant","message":{"role":"assistant","content":[{"type":"text","text":"Looking — caf\u00e9 ünïcode"}]},"uuid":"a2","timestamp":"2026-12-06T10:00:02Z"}"#,
    "\n",
    r#"{"type":"queue-operation","operation":"enqueue","timestamp":"2026-12-06T10:00:00.000Z","sessionId":"3f0c9c1e-8a51-4d2b-9a0e-1c2d3e4f5a6b"}"#,
    "\n",
);

fn thread(source: Source, session: &str) -> ThreadId {
    source.thread_id(session).unwrap()
}

#[test]
fn a_claude_session_replays_as_a_thread_of_its_lines() {
    let id = thread(Source::ClaudeCode, "3f0c9c1e-8a51-4d2b-9a0e-1c2d3e4f5a6b");
    let (r, errors, used) = log(Source::ClaudeCode).replay(CLAUDE.as_bytes(), &id).unwrap();
    assert!(errors.is_empty());
    assert_eq!(used, CLAUDE.len());
    let t = r.thread();
    assert_eq!(t.title, "Fix the flaky login test");
    assert_eq!(t.env["source"], "claude-code");
    assert_eq!(t.env["session"], "3f0c9c1e-8a51-4d2b-9a0e-1c2d3e4f5a6b");
    assert_eq!(t.env["cwd"], "/home/ann/src/api");
    assert_eq!(t.created, 1_796_551_200_000);
    let roles: Vec<&str> = t.messages.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(roles, ["queue-operation", "user", "assistant", "queue-operation"]);
    assert_eq!(t.messages[1].id.as_str(), "a1");
    assert_eq!(t.messages[1].timestamp, 1_796_551_201_250);
    // Two identical lines without ids are two messages, numbered.
    assert_ne!(t.messages[0].id, t.messages[3].id);
    assert!(t.messages[3].id.as_str().ends_with("-2"));
    // Written back, the lines come out byte for byte.
    let records: Vec<Record> = t.messages.iter().map(|m| Record::Message { message: m.clone(), after: None }).collect();
    assert_eq!(log(Source::ClaudeCode).render(&records).unwrap(), CLAUDE.as_bytes());
}

#[test]
fn ids_are_the_same_read_whole_or_line_by_line() {
    let whole = read_ids(Source::ClaudeCode, CLAUDE.as_bytes(), 0, &[]);
    assert_eq!(whole.len(), 4);
    let mut from = 0;
    for (i, line) in CLAUDE.lines().enumerate() {
        let rest = read_ids(Source::ClaudeCode, CLAUDE.as_bytes(), from, &whole[..i]);
        assert_eq!(rest, whole[i..], "read on from line {i}");
        from += line.len() + 1;
    }
}

#[test]
fn an_incremental_read_names_an_untitled_thread_and_learns_its_directory() {
    let id = thread(Source::ClaudeCode, "s");
    let line = CLAUDE.lines().nth(1).unwrap().as_bytes();
    let known = |_: &MessageId| false;
    let mut ctx = ReadCtx { titled: false, env: Some(json!({"source": "claude-code", "session": "s"})) };
    let records = log(Source::ClaudeCode).parse_line(line, 0, &id, &mut IdDeriver::new(&known), &mut ctx).unwrap();
    assert!(matches!(&records[1], Record::Title { title } if title == "Fix the flaky login test"));
    assert!(
        matches!(&records[2], Record::Env { env } if env == &json!({"source": "claude-code", "session": "s", "cwd": "/home/ann/src/api"}))
    );
    // A titled thread keeps its title; a known directory is not restated.
    let records = log(Source::ClaudeCode).parse_line(line, 0, &id, &mut IdDeriver::new(&known), &mut ctx).unwrap();
    assert_eq!(records.len(), 1);
}

#[test]
fn secrets_are_replaced_and_the_line_stays_json() {
    let id = thread(Source::Codex, "x");
    let key = "AKIA".to_string() + "Z7QXW3MR5TLV6K2P";
    let line = format!(
        r#"{{"timestamp":"2026-12-06T10:00:00Z","type":"response_item","payload":{{"type":"function_call_output","call_id":"call_1","output":"export AWS_ACCESS_KEY_ID={key}\n"}}}}"#
    );
    let known = |_: &MessageId| false;
    let mut ctx = ReadCtx::default();
    let records =
        log(Source::Codex).parse_line(line.as_bytes(), 0, &id, &mut IdDeriver::new(&known), &mut ctx).unwrap();
    let Record::Message { message, .. } = &records[0] else { panic!() };
    let text = message.content.value().unwrap().as_str().unwrap();
    assert!(!text.contains(&key), "{text}");
    assert!(text.contains("[REDACTED:"), "{text}");
    let v: Value = serde_json::from_str(text).unwrap();
    assert_eq!(v["payload"]["call_id"], "call_1");
    assert_eq!(message.role, "function_call_output");
    // Off: the line as it is.
    let plain = NativeLog { source: Source::Codex, redact: None };
    let records = plain.parse_line(line.as_bytes(), 0, &id, &mut IdDeriver::new(&known), &mut ctx).unwrap();
    let Record::Message { message, .. } = &records[0] else { panic!() };
    assert_eq!(message.content.value().unwrap().as_str().unwrap(), line);
}

#[test]
fn codex_and_gemini_lines_say_what_they_are() {
    let meta = json!({"timestamp":"2026-12-06T10:00:00.5Z","type":"session_meta","payload":{"id":"0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b","cwd":"/w/api","cli_version":"0.171.0"}});
    let l = codex::describe(&meta);
    assert_eq!(
        (l.role.as_str(), l.session.as_deref(), l.cwd.as_deref()),
        ("session_meta", Some("0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"), Some("/w/api"))
    );
    assert_eq!(l.timestamp, 1_796_551_200_500);
    let msg = json!({"type":"response_item","payload":{"type":"message","role":"user","content":[{"type":"input_text","text":"hi"}]}});
    assert_eq!(codex::describe(&msg).role, "user");
    let ev = json!({"type":"event_msg","payload":{"type":"user_message","message":"Add a --json flag"}});
    assert_eq!(codex::describe(&ev).title, Some(("Add a --json flag".into(), false)));
    assert_eq!(
        codex::session_of_file("rollout-2026-12-06T10-00-00-0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b.jsonl"),
        Some("0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b")
    );
    assert_eq!(codex::session_of_file("rollout-x.jsonl"), None);

    let header = json!({"sessionId":"5e6f","projectHash":"ab","startTime":"2026-12-06T10:00:00Z","kind":"main"});
    let l = gemini::describe(&header);
    assert_eq!((l.role.as_str(), l.session.as_deref(), l.id), ("session", Some("5e6f"), None));
    let user =
        json!({"id":"u1","timestamp":"2026-12-06T10:00:01Z","type":"user","content":[{"text":"Explain the cache"}]});
    let l = gemini::describe(&user);
    assert_eq!((l.id.as_deref(), l.title), (Some("u1"), Some(("Explain the cache".into(), false))));
    assert_eq!(gemini::describe(&json!({"$rewindTo":"u1"})).role, "$rewindTo");
    assert_eq!(gemini::describe(&json!({"$set":{"summary":"x"}})).role, "$set");
}

#[test]
fn only_native_lines_are_written_to_a_native_file() {
    let m = |content: Value| {
        Arc::new(Message {
            id: MessageId::new("m1").unwrap(),
            role: "user".into(),
            content: Content::new(content),
            timestamp: 0,
            extra: Map::new(),
        })
    };
    let records = vec![
        Record::Title { title: "t".into() },
        Record::Message { message: m(json!("{\"type\":\"user\"}")), after: None },
        Record::Message { message: m(json!({"not": "a line"})), after: None },
        Record::Message { message: m(json!("two\nlines")), after: None },
        Record::Edit { id: MessageId::new("m1").unwrap(), content: Content::new(json!("{\"id\":\"m1\"}")) },
    ];
    assert_eq!(log(Source::ClaudeCode).render(&records).unwrap(), b"{\"type\":\"user\"}\n");
    assert_eq!(log(Source::Gemini).render(&records).unwrap(), b"{\"type\":\"user\"}\n{\"id\":\"m1\"}\n");
    assert!(!Own.native() && log(Source::Gemini).native());
}

#[test]
fn rfc3339_times() {
    assert_eq!(parse_time("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(parse_time("1970-01-01T00:00:01.5Z"), Some(1500));
    assert_eq!(parse_time("1970-01-01T01:00:00+01:00"), Some(0));
    assert_eq!(parse_time("2000-02-29T00:00:00.123456Z"), Some(951_782_400_123));
    assert_eq!(parse_time("2026-12-06"), None);
    assert_eq!(parse_time("2026-13-06T00:00:00Z"), None);
    assert_eq!(parse_time("2026-12-06T00:00:00"), None);
}

#[test]
fn session_ids_make_valid_thread_ids_or_none() {
    assert_eq!(Source::ClaudeCode.thread_id("3f0c-9c1e").unwrap().as_str(), "claude-3f0c-9c1e");
    assert_eq!(Source::Codex.thread_id("../x"), None);
    assert_eq!(Source::of_env(&json!({"source": "gemini"})), Some(Source::Gemini));
    assert_eq!(Source::of_env(&json!({})), None);
}

#[test]
fn gemini_names_projects_as_gemini_does() {
    let none = |_: &str| false;
    assert_eq!(gemini::project_slug("checkout-B", &none), "checkout-b");
    assert_eq!(gemini::project_slug("My Repo (old)", &none), "my-repo-old");
    assert_eq!(gemini::project_slug("___", &none), "project");
    let taken = |s: &str| s == "api" || s == "api-1";
    assert_eq!(gemini::project_slug("api", &taken), "api-2");
}

/// A log in memory, as `client::read_log` reads files.
struct Bytes(Vec<u8>);
impl crate::client::LogSource for Bytes {
    fn ino(&self) -> u64 {
        1
    }
    fn size(&self) -> u64 {
        self.0.len() as u64
    }
    fn mtime_ns(&self) -> i64 {
        0
    }
    fn read_at(&mut self, start: u64, len: u64) -> std::io::Result<Vec<u8>> {
        Ok(self.0[start as usize..(start + len) as usize].to_vec())
    }
}

fn read_ids(source: Source, bytes: &[u8], from: usize, known: &[String]) -> Vec<String> {
    use crate::engine::file::{FileRead, Stamp};
    let mut src = Bytes(bytes.to_vec());
    let id = thread(source, "x");
    let stamp = (from > 0).then(|| Stamp {
        ino: 1,
        len: from as u64,
        mtime_ns: 0,
        hash: crate::client::tail_hash(&mut src, from as u64).unwrap(),
    });
    let known = |m: &MessageId| known.iter().any(|k| k == m.as_str());
    let read = crate::client::read_log(&mut src, &id, stamp, &known, &log(source), ReadCtx::default());
    let records = match read {
        Some(FileRead::Appended { records, .. }) => records,
        Some(FileRead::Replayed { thread, .. }) => {
            return thread.messages.iter().map(|m| m.id.to_string()).collect();
        }
        other => panic!("{other:?}"),
    };
    records
        .into_iter()
        .filter_map(|r| match r {
            Record::Message { message, .. } => Some(message.id.to_string()),
            _ => None,
        })
        .collect()
}

/// Lines read again that the file is known to hold (our own append read
/// back after a writer appended in the same instant, or after a crash
/// before the new offset was saved) keep their ids: nothing is taken for
/// a new message and pushed twice. A line repeated for real is numbered as
/// a read of the whole file numbers it.
#[test]
fn lines_read_again_keep_their_ids_and_repeats_are_numbered_as_in_the_whole_file() {
    let l1 = r#"{"timestamp":"2026-12-06T10:00:00.001Z","type":"event_msg","payload":{"type":"token_count"}}"#;
    let l2 = r#"{"timestamp":"2026-12-06T10:00:00.002Z","type":"event_msg","payload":{"type":"task_complete"}}"#;
    let file = format!("{l1}\n{l2}\n{l1}\n");
    let whole = read_ids(Source::Codex, file.as_bytes(), 0, &[]);
    assert_eq!(whole.len(), 3);
    assert!(whole[2].ends_with("-2") && whole[2].starts_with(&whole[0]), "{whole:?}");
    let after_l1 = l1.len() + 1;
    // Read on after the first line, knowing it: as the whole read numbers it.
    assert_eq!(read_ids(Source::Codex, file.as_bytes(), after_l1, &whole[..1]), whole[1..]);
    // Read on after the first line, knowing all three (our write read back).
    assert_eq!(read_ids(Source::Codex, file.as_bytes(), after_l1, &whole), whole[1..]);
}

#[test]
fn claude_code_names_project_directories_as_claude_code_does() {
    // Expected values from Claude Code 2.1.332's own function (taken from
    // its binary and run in Node).
    assert_eq!(claude::project_dir_name("/home/ann/src/my_api.v2"), "-home-ann-src-my-api-v2");
    // A character outside the BMP is two UTF-16 units: two dashes.
    assert_eq!(claude::project_dir_name("/tmp/é😀"), "-tmp----");
    // Past 200 characters: the first 200 and the path's hash.
    let name = claude::project_dir_name(&"/x".repeat(120));
    assert_eq!((name.len(), &name[195..]), (207, "x-x-x-n0t9o8"));
    let name = claude::project_dir_name(&format!("/home/ann/{}", "a".repeat(300)));
    assert_eq!(&name[195..], "aaaaa-1pmu1b");
}

/// A tool call travels with its result: read before the result is written,
/// the file is taken up to the call; once the result is there, both come.
/// A call a new turn left unanswered holds nothing back.
#[test]
fn a_tool_call_waits_for_its_result() {
    let call = r#"{"type":"assistant","uuid":"c1","message":{"role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":"Bash","input":{"command":"make test"}}]}}"#;
    let progress = r#"{"type":"progress","uuid":"p1","data":"running"}"#;
    let result = r#"{"type":"user","uuid":"r1","message":{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"ok"}]}}"#;
    let prompt = r#"{"type":"user","uuid":"u2","message":{"role":"user","content":"never mind"}}"#;
    let first = CLAUDE.lines().nth(1).unwrap();
    let ids = |bytes: &str, from: usize| read_ids(Source::ClaudeCode, bytes.as_bytes(), from, &[]);
    let at = first.len() + 1;
    // Waiting: only what comes before the call.
    assert_eq!(ids(&format!("{first}\n{call}\n{progress}\n"), 0), ["a1"]);
    let mut src = Bytes(format!("{first}\n{call}\n{progress}\n").into_bytes());
    let from = crate::client::tail_hash(&mut src, at as u64).unwrap();
    let stamp = crate::engine::file::Stamp { ino: 1, len: at as u64, mtime_ns: 0, hash: from };
    let id = thread(Source::ClaudeCode, "x");
    let read =
        crate::client::read_log(&mut src, &id, Some(stamp), &|_| false, &log(Source::ClaudeCode), ReadCtx::default());
    assert!(read.is_none(), "nothing to take yet: {read:?}");
    // Answered: all of it, in order.
    assert_eq!(ids(&format!("{first}\n{call}\n{progress}\n{result}\n"), at), ["c1", "p1", "r1"]);
    // Abandoned: a new prompt releases the call.
    assert_eq!(ids(&format!("{first}\n{call}\n{prompt}\n"), at), ["c1", "u2"]);
    // Codex pairs by call_id.
    let c = |payload: serde_json::Value| {
        json!({"timestamp": "2026-12-06T10:00:00Z", "type": "response_item", "payload": payload}).to_string()
    };
    let (fc, out) = (
        c(json!({"type": "function_call", "call_id": "call_9", "name": "exec_command"})),
        c(json!({"type": "function_call_output", "call_id": "call_9", "output": "ok"})),
    );
    assert_eq!(read_ids(Source::Codex, format!("{fc}\n").as_bytes(), 0, &[]).len(), 0);
    assert_eq!(read_ids(Source::Codex, format!("{fc}\n{out}\n").as_bytes(), 0, &[]).len(), 2);
}

/// Gemini's resume starts with a header partway through the file and the
/// new session's context: held back until the turn that follows.
#[test]
fn a_gemini_resume_start_waits_for_its_turn() {
    let header = r#"{"sessionId":"5e6f","projectHash":"x","startTime":"2026-12-06T10:00:00Z","kind":"main"}"#;
    let user = r#"{"id":"u1","timestamp":"2026-12-06T10:00:01Z","type":"user","content":[{"text":"hi"}]}"#;
    let set = r#"{"$set":{"messages":[]}}"#;
    let again = r#"{"sessionId":"5e6f","projectHash":"y","startTime":"2026-12-06T10:05:00Z","kind":"main"}"#;
    let user2 = r#"{"id":"u2","timestamp":"2026-12-06T10:05:01Z","type":"user","content":[{"text":"more"}]}"#;
    let ids = |text: String, from: usize| read_ids(Source::Gemini, text.as_bytes(), from, &[]);
    let first = format!("{header}\n{user}\n");
    // The header at the top is the session's own: nothing waits.
    assert_eq!(ids(first.clone(), 0).len(), 2);
    // A resume's start alone waits…
    let mut src = Bytes(format!("{first}{again}\n{set}\n").into_bytes());
    let at = first.len() as u64;
    let stamp = crate::engine::file::Stamp {
        ino: 1,
        len: at,
        mtime_ns: 0,
        hash: crate::client::tail_hash(&mut src, at).unwrap(),
    };
    let read = crate::client::read_log(
        &mut src,
        &thread(Source::Gemini, "x"),
        Some(stamp),
        &|_| false,
        &log(Source::Gemini),
        ReadCtx::default(),
    );
    assert!(read.is_none(), "{read:?}");
    // …and comes with its turn; read whole, the file holds it back too.
    let got = ids(format!("{first}{again}\n{set}\n{user2}\n"), first.len());
    assert_eq!((got.len(), got[2].as_str()), (3, "u2"));
    assert_eq!(ids(format!("{first}{again}\n{set}\n"), 0).len(), 2);
}
