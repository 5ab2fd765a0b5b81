//! The assistants' session stores (`sources::NativeLog`: Claude Code,
//! Codex, Gemini CLI): any bytes as a session file, read whole
//! (`LogFormat::replay`) and in two pieces (`client::read_log`), with and
//! without secret redaction. Never panics; every message's content is one
//! of the file's lines (verbatim without redaction, valid JSON with it),
//! so writing the messages back gives the lines; a torn or held-back line
//! is never consumed; read in two pieces, the ids are the whole read's.
//!
//! The first byte picks the store (and redaction), the second where the
//! first of two reads stops.
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use threadsync::client::{read_log, tail_hash};
use threadsync::engine::file::{FileRead, Stamp};
use threadsync::model::MessageId;
use threadsync::secrets::Scanner;
use threadsync::sources::{NativeLog, Source};
use threadsync::threadlog::{LogFormat, ReadCtx, Record, complete_lines};

struct Bytes<'a>(&'a [u8]);

impl threadsync::client::LogSource for Bytes<'_> {
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

fuzz_target!(
    // Compiling the secret rules takes seconds: once, before the clock starts.
    init: {
        Scanner::get();
    },
    |data: &[u8]| {
    let [mode, split, data @ ..] = data else { return };
    let source = Source::ALL[*mode as usize % 3];
    let redact = (mode / 3) % 2 == 1;
    let log = NativeLog { source, redact: redact.then(Scanner::get) };
    let id = source.thread_id("3f0c9c1e-8a51-4d2b-9a0e-1c2d3e4f5a6b").unwrap();

    let Ok((r, _errors, used)) = log.replay(data, &id) else { return };
    assert!(used <= data.len());
    assert!(used == 0 || data[used - 1] == b'\n', "a torn line was consumed");
    let t = r.thread();
    assert_eq!(t.env["source"], source.name());
    let (lines, _) = complete_lines(&data[..used], 0);
    let lines: HashSet<&[u8]> = lines.iter().map(|(_, l)| *l).collect();
    for m in &t.messages {
        let Some(Value::String(line)) = m.content.value() else { panic!("content is not a line: {:?}", m.content) };
        assert!(!line.contains('\n'), "a line with a line break: {line:?}");
        let v: Value = serde_json::from_str(line).expect("a message's line is JSON");
        assert!(v.is_object());
        if !redact {
            assert!(lines.contains(line.as_bytes()), "not a line of the file: {line:?}");
        }
    }
    // Written back: a line per message, the messages' own.
    let records: Vec<Record> = t.messages.iter().map(|m| Record::Message { message: m.clone(), after: None }).collect();
    let out = log.render(&records).expect("renders");
    assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), t.messages.len());

    // Read in two pieces: the first lines, then the rest.
    let (all, _) = complete_lines(&data[..used], 0);
    if all.len() < 2 || !_errors.is_empty() {
        return;
    }
    let cut = all[1 + *split as usize % (all.len() - 1)].0;
    let mut src = Bytes(&data[..cut as usize]);
    let Some(FileRead::Replayed { thread: head, stamp, .. }) =
        read_log(&mut src, &id, None, &|_| false, &log, ReadCtx::default())
    else {
        return;
    };
    if stamp.len != cut {
        return; // a call in the first lines waits for its result
    }
    let known: HashSet<MessageId> = head.messages.iter().map(|m| m.id.clone()).collect();
    let mut src = Bytes(&data[..used]);
    let stamp = Stamp { hash: tail_hash(&mut src, cut).unwrap(), ..stamp };
    let ctx = ReadCtx { titled: !head.title.is_empty(), env: Some(head.env.clone()) };
    let rest = read_log(&mut src, &id, Some(stamp), &|m| known.contains(m), &log, ctx);
    let records = match rest {
        Some(FileRead::Appended { records, stamp }) => {
            assert!(stamp.len <= used as u64);
            records
        }
        None => Vec::new(),
        other => panic!("reading on at byte {cut}: {other:?}"),
    };
    // With every line a message of its own, the ids are the whole read's.
    let mut pieces: Vec<MessageId> = head.messages.iter().map(|m| m.id.clone()).collect();
    pieces.extend(records.iter().filter_map(|r| match r {
        Record::Message { message, .. } => Some(message.id.clone()),
        _ => None,
    }));
    let whole: Vec<MessageId> = t.messages.iter().map(|m| m.id.clone()).collect();
    if whole.len() == all.len() && pieces.len() == whole.len() {
        assert_eq!(pieces, whole, "ids read in two pieces (at byte {cut}) differ from the whole read's");
    }
});
