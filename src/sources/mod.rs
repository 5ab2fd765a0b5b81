//! The session stores of the assistants people run — Claude Code, Codex CLI,
//! Gemini CLI — read and written as thread logs.
//!
//! Each store keeps a session as an append-only JSONL file of its own
//! records. A session is one thread (`claude-<sessionId>`, `codex-<id>`,
//! `gemini-<sessionId>`); every line of its file is one message whose
//! content is the line itself, verbatim (after secret redaction), so
//! writing the thread back reproduces the lines byte for byte and
//! everything the client relies on — Claude Code's `parentUuid` tree,
//! Gemini's `$set` / `$rewindTo`, Codex's calls and outputs paired by
//! `call_id` — travels untouched. Beside the line a message carries what
//! threadsync merges on: an id (the record's own, or one derived from the
//! line so every machine derives the same), a role and a time.
//!
//! [`NativeLog`] is the [`LogFormat`] of such a file: it parses lines into
//! `threadlog::Record`s (the first read also makes up the header the file
//! does not have) and renders messages back as lines. Pure: bytes in,
//! records out; where a file lives and which project it belongs to is the
//! shell's (`lsp/sources.rs`).

pub mod claude;
pub mod codex;
pub mod gemini;
pub mod project;

use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::model::{Content, Message, MessageId, ThreadId};
use crate::secrets::Scanner;
use crate::threadlog::{self, IdDeriver, LineError, LogFormat, ReadCtx, Record, Replay};

/// An assistant whose store threadsync syncs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    ClaudeCode,
    Codex,
    Gemini,
}

impl Source {
    pub const ALL: [Source; 3] = [Source::ClaudeCode, Source::Codex, Source::Gemini];

    /// The name in configuration, in a thread's `env.source` and in status.
    pub fn name(self) -> &'static str {
        match self {
            Source::ClaudeCode => "claude-code",
            Source::Codex => "codex",
            Source::Gemini => "gemini",
        }
    }

    pub fn from_name(s: &str) -> Option<Source> {
        Source::ALL.into_iter().find(|x| x.name() == s)
    }

    fn prefix(self) -> &'static str {
        match self {
            Source::ClaudeCode => "claude-",
            Source::Codex => "codex-",
            Source::Gemini => "gemini-",
        }
    }

    /// The thread of a session: the same on every machine.
    pub fn thread_id(self, session: &str) -> Option<ThreadId> {
        ThreadId::new(format!("{}{session}", self.prefix())).ok()
    }

    /// The source whose session a thread id names, if any.
    pub fn of_thread_id(id: &ThreadId) -> Option<Source> {
        Source::ALL.into_iter().find(|s| id.as_str().starts_with(s.prefix()))
    }

    /// The source a thread's `env` names, if any.
    pub fn of_env(env: &Value) -> Option<Source> {
        env.get("source").and_then(Value::as_str).and_then(Source::from_name)
    }

    /// What one line says, for this store.
    fn describe(self, v: &Value) -> Line {
        match self {
            Source::ClaudeCode => claude::describe(v),
            Source::Codex => codex::describe(v),
            Source::Gemini => gemini::describe(v),
        }
    }
}

/// What a native line says, as far as sync is concerned.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Line {
    /// The record's own id, when it has one that is a valid message id.
    pub id: Option<String>,
    pub role: String,
    /// Milliseconds since the epoch (0: the line has no time).
    pub timestamp: i64,
    pub session: Option<String>,
    pub cwd: Option<String>,
    /// A name for the session: `strong` ones (a title the user set) replace
    /// any other; the rest (a first prompt) only name an untitled thread.
    pub title: Option<(String, bool)>,
}

/// A session file's format: one [`Source`]'s lines as thread log records.
pub struct NativeLog<'a> {
    pub source: Source,
    /// Replaces secrets before a line becomes content (None: redaction off).
    pub redact: Option<&'a Scanner>,
}

impl NativeLog<'_> {
    /// The line as it will leave the machine: secrets replaced. The line
    /// stays valid JSON: a replacement that would break it (a secret
    /// spanning an escape) is made in the parsed strings instead.
    fn content(&self, line: &str) -> String {
        let Some(scanner) = self.redact else { return line.to_string() };
        let Some((redacted, _)) = scanner.redact(line) else { return line.to_string() };
        if serde_json::from_str::<Value>(&redacted).is_ok() {
            return redacted;
        }
        let mut v: Value = serde_json::from_str(line).expect("the line parsed before");
        redact_strings(scanner, &mut v);
        serde_json::to_string(&v).expect("a Value always serialises")
    }

    /// One line as a message record (and what it tells about the thread).
    fn record(
        &self,
        raw: &[u8],
        offset: u64,
        thread: &ThreadId,
        ids: &mut IdDeriver<'_>,
    ) -> Result<(Arc<Message>, Line), LineError> {
        let bad = |error: String| LineError::Bad { offset, error };
        let text = std::str::from_utf8(raw).map_err(|e| bad(format!("not UTF-8: {e}")))?;
        let value: Value = serde_json::from_str(text).map_err(|e| LineError::Json { offset, error: e.to_string() })?;
        if !value.is_object() {
            return Err(bad("a record must be a JSON object".into()));
        }
        let line = self.source.describe(&value);
        let content = Value::String(self.content(text));
        let id = match line.id.as_deref().map(MessageId::new) {
            Some(Ok(id)) => id,
            _ => ids.derive_line(thread, &line.role, line.timestamp, &content, raw),
        };
        let message = Message {
            id,
            role: line.role.clone(),
            content: Content::new(content),
            timestamp: line.timestamp,
            extra: Map::new(),
        };
        Ok((Arc::new(message), line))
    }

    /// The env of a session's thread: where it comes from. The shell adds
    /// the project (`project::identify`).
    fn env(&self, session: &str, cwd: Option<&str>) -> Value {
        let mut env = json!({ "source": self.source.name(), "session": session });
        if let Some(cwd) = cwd {
            env["cwd"] = cwd.into();
        }
        env
    }
}

fn redact_strings(scanner: &Scanner, v: &mut Value) {
    match v {
        Value::String(s) => {
            if let Some((r, _)) = scanner.redact(s) {
                *s = r;
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| redact_strings(scanner, x)),
        Value::Object(m) => m.values_mut().for_each(|x| redact_strings(scanner, x)),
        _ => {}
    }
}

impl LogFormat for NativeLog<'_> {
    fn parse_line(
        &self,
        raw: &[u8],
        offset: u64,
        thread: &ThreadId,
        ids: &mut IdDeriver<'_>,
        ctx: &mut ReadCtx,
    ) -> Result<Vec<Record>, LineError> {
        let (message, line) = self.record(raw, offset, thread, ids)?;
        let mut out = vec![Record::Message { message, after: None }];
        if let Some((title, strong)) = line.title
            && (strong || !ctx.titled)
        {
            ctx.titled = true;
            out.push(Record::Title { title });
        }
        if let Some(cwd) = &line.cwd
            && let Some(env) = ctx.env.as_mut().filter(|e| e.get("cwd").is_none())
        {
            // The first read saw no working directory (a session's first
            // lines may not carry one): the thread learns it now.
            env["cwd"] = cwd.as_str().into();
            out.push(Record::Env { env: env.clone() });
        }
        Ok(out)
    }

    fn replay(&self, bytes: &[u8], id: &ThreadId) -> Result<(Replay, Vec<LineError>, usize), LineError> {
        let (mut lines, mut consumed) = threadlog::complete_lines(bytes, 0);
        if let Some(i) = self.hold(&lines) {
            consumed = lines[i].0 as usize;
            lines.truncate(i);
        }
        let known = |_: &MessageId| false;
        let mut ids = IdDeriver::new(&known);
        let mut errors = Vec::new();
        let mut messages = Vec::with_capacity(lines.len());
        let (mut session, mut cwd, mut created) = (None, None, None);
        let (mut weak, mut strong) = (None, None);
        for (offset, raw) in lines {
            match self.record(raw, offset, id, &mut ids) {
                Ok((m, line)) => {
                    session = session.or(line.session);
                    cwd = cwd.or(line.cwd);
                    if line.timestamp != 0 {
                        created = created.or(Some(line.timestamp));
                    }
                    match line.title {
                        Some((t, true)) => strong = Some(t),
                        Some((t, false)) => weak = weak.or(Some(t)),
                        None => {}
                    }
                    messages.push(m);
                }
                Err(e) => errors.push(e),
            }
        }
        if messages.is_empty() && !errors.is_empty() {
            return Err(errors.swap_remove(0));
        }
        // The file name is the session's id where no line says it.
        let session = session.unwrap_or_else(|| id.as_str().split_once('-').map_or("", |x| x.1).to_string());
        let mut r = Replay::new(id.clone());
        let header = Record::Header {
            id: id.clone(),
            created: created.unwrap_or(0),
            title: strong.or(weak).unwrap_or_default(),
            env: self.env(&session, cwd.as_deref()),
            extra: Map::new(),
        };
        r.apply(header)?;
        for m in messages {
            r.apply(Record::Message { message: m, after: None })?;
        }
        Ok((r, errors, consumed))
    }

    fn render(&self, records: &[Record]) -> Result<Vec<u8>, serde_json::Error> {
        let mut out = Vec::new();
        for r in records {
            // Only a native line can go into a native file: the header,
            // titles and env are threadsync's (the lines they came from are
            // messages too), and an edit is a line re-appended with its id
            // (Gemini's rule) — the other stores have no edits.
            let content = match r {
                Record::Message { message, .. } => &message.content,
                Record::Edit { content, .. } if self.source == Source::Gemini => content,
                _ => continue,
            };
            match content.value() {
                Some(Value::String(line)) if is_one_line(line) => {
                    out.extend_from_slice(line.as_bytes());
                    out.push(b'\n');
                }
                _ => tracing::warn!(source = self.source.name(), "a message that is not a native line is not written"),
            }
        }
        Ok(out)
    }

    fn native(&self) -> bool {
        true
    }

    /// A tool call travels with its result: a call not answered yet holds
    /// back the file from its line on — unless a later line starts a new
    /// turn (the call was abandoned: interrupted, or its client died).
    /// Gemini writes a call and its result in one record; what it holds
    /// back is a resume's start (`gemini::hold`).
    fn hold(&self, lines: &[(u64, &[u8])]) -> Option<usize> {
        if self.source == Source::Gemini {
            return gemini::hold(lines);
        }
        let mut open: Vec<(String, usize)> = Vec::new();
        for (i, (_, raw)) in lines.iter().enumerate() {
            // Only lines that can name a call (or, while one is open, start
            // a turn) are parsed twice.
            if !(mentions_tool(raw) || (!open.is_empty() && may_start_turn(raw))) {
                continue;
            }
            let Ok(v) = serde_json::from_slice::<Value>(raw) else { continue };
            let calls = match self.source {
                Source::ClaudeCode => claude::calls(&v),
                Source::Codex => codex::calls(&v),
                Source::Gemini => Calls::default(),
            };
            if calls.new_turn {
                open.clear();
            }
            open.retain(|(id, _)| !calls.results.contains(id));
            open.extend(calls.calls.into_iter().map(|id| (id, i)));
        }
        open.iter().map(|(_, i)| *i).min()
    }
}

/// What a line says of tool calls: the calls it makes, the calls it
/// answers, and whether it starts a new turn.
#[derive(Debug, Default, PartialEq)]
pub struct Calls {
    pub calls: Vec<String>,
    pub results: Vec<String>,
    pub new_turn: bool,
}

fn mentions_tool(raw: &[u8]) -> bool {
    const NEEDLES: [&[u8]; 3] = [b"tool_use", b"call_id", b"tool_result"];
    NEEDLES.iter().any(|n| raw.windows(n.len()).any(|w| w == *n))
}

/// Cheap: a line that may be a new prompt (parsed only while a call is open).
fn may_start_turn(raw: &[u8]) -> bool {
    const NEEDLES: [&[u8]; 3] = [b"\"user\"", b"user_message", b"turn_context"];
    NEEDLES.iter().any(|n| raw.windows(n.len()).any(|w| w == *n))
}

/// A line that stays one line (and one JSON object) in a JSONL file.
fn is_one_line(s: &str) -> bool {
    !s.contains('\n') && serde_json::from_str::<Value>(s).is_ok_and(|v| v.is_object())
}

/// `2026-12-06T15:46:53.123Z` (or with an offset) as milliseconds since the
/// epoch; None if it is not an RFC 3339 date-time.
pub fn parse_time(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut ms = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let f = &frac[..digits.min(3)];
        ms = f.parse::<i64>().ok()? * 10_i64.pow(3 - f.len() as u32);
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (oh, om) = (rest.get(1..3)?.parse::<i64>().ok()?, rest.get(4..6)?.parse::<i64>().ok()?);
            if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                return None;
            }
            sign * (oh * 60 + om)
        }
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = if mo <= 2 { (y - 1, mo + 9) } else { (y, mo - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + mi - offset) * 60_000 + sec * 1000 + ms)
}

/// A field's text, if it is a string.
fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// The time a record carries under `key`.
fn time(v: &Value, key: &str) -> i64 {
    text(v, key).and_then(parse_time).unwrap_or(0)
}

/// A first prompt as a thread's name: its first line, at most 80 characters.
fn prompt_title(s: &str) -> Option<(String, bool)> {
    let first = s.lines().map(str::trim).find(|l| !l.is_empty())?;
    let mut t: String = first.chars().take(80).collect();
    if first.chars().count() > 80 {
        t.push('…');
    }
    Some((t, false))
}

/// The text of message content: a string, or the first text block.
fn content_text(c: &Value) -> Option<&str> {
    match c {
        Value::String(s) => Some(s),
        Value::Array(blocks) => blocks.iter().find_map(|b| match b {
            Value::String(s) => Some(s.as_str()),
            _ => text(b, "text"),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
