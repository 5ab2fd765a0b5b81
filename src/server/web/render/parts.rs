//! A message's content reduced to parts: strings, content blocks, and the
//! lines of assistants' session files (Claude Code, Codex, Gemini CLI).

#![allow(unused_imports)]
use std::borrow::Cow;
use std::fmt::Write as _;
use std::io;

use maud::{Markup, PreEscaped, html};
use pulldown_cmark::{Alignment, CodeBlockKind, Event, LinkType, Options, Parser, Tag, TagEnd};
use serde_json::Value;
use syntect::html::ClassedHTMLGenerator;
use syntect::util::LinesWithEndings;

use super::*;

// ---------------------------------------------------------------------------
// Content, reduced to parts
// ---------------------------------------------------------------------------

/// One thing a message says, borrowed from its content.
#[derive(Debug)]
pub(super) enum Part<'a> {
    /// Prose: rendered as markdown.
    Markdown(&'a str),
    /// Tool output and the like: shown as it is, in `<pre>`.
    Plain(&'a str),
    ToolCall {
        name: &'a str,
        input: Input<'a>,
    },
    ToolResult {
        parts: Vec<Part<'a>>,
        is_error: bool,
    },
    Thinking {
        parts: Vec<Part<'a>>,
        redacted: bool,
    },
    Image,
    /// Bookkeeping (session headers, events, unknown blocks): collapsed JSON.
    Meta {
        label: String,
        value: &'a Value,
    },
}

/// A tool call's input.
#[derive(Debug)]
pub(super) enum Input<'a> {
    Json(&'a Value),
    /// JSON in a string (Codex's `arguments`): parsed only if it fits the budget.
    JsonText(&'a str),
    Text(&'a str),
}

/// Caps the number of parts collected, so a message of a million blocks
/// costs no more than the budget allows.
pub(super) struct Collect {
    pub(super) left: usize,
    pub(super) cut: bool,
}

impl Collect {
    fn push<'a>(&mut self, out: &mut Vec<Part<'a>>, part: Part<'a>) {
        if self.left == 0 {
            self.cut = true;
        } else {
            self.left -= 1;
            out.push(part);
        }
    }

    fn full(&self) -> bool {
        self.left == 0
    }
}

pub(super) fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// A message's own content (not a native line).
pub(super) fn top_parts<'a>(c: &mut Collect, out: &mut Vec<Part<'a>>, role: &str, v: &'a Value) {
    match (role, v) {
        // OpenAI-style tool messages hold the tool's output as a string.
        ("tool" | "function" | "tool_result", Value::String(s)) => {
            let parts = vec![Part::Plain(s)];
            c.push(out, Part::ToolResult { parts, is_error: false });
        }
        _ => content_parts(c, out, v, 0, false),
    }
}

/// Content: a string, an array of blocks, or a single block. `tool` is set
/// inside tool results, where text is output to show as it is.
pub(super) fn content_parts<'a>(c: &mut Collect, out: &mut Vec<Part<'a>>, v: &'a Value, depth: usize, tool: bool) {
    match v {
        Value::Null => {}
        Value::String(s) if tool => c.push(out, Part::Plain(s)),
        Value::String(s) => c.push(out, Part::Markdown(s)),
        Value::Array(items) => {
            for item in items {
                if c.full() {
                    c.cut = true;
                    break;
                }
                block_parts(c, out, item, depth, tool);
            }
        }
        Value::Object(_) => block_parts(c, out, v, depth, tool),
        Value::Bool(_) | Value::Number(_) => c.push(out, Part::Meta { label: "Value".into(), value: v }),
    }
}

/// One content block: Anthropic (`{type, …}`), OpenAI (`input_text`, …) or
/// Gemini (`{text}`, `{functionCall}`, `{functionResponse}`, …).
pub(super) fn block_parts<'a>(c: &mut Collect, out: &mut Vec<Part<'a>>, b: &'a Value, depth: usize, tool: bool) {
    let prose = |s: &'a str| if tool { Part::Plain(s) } else { Part::Markdown(s) };
    if depth > MAX_DEPTH {
        return c.push(out, Part::Meta { label: "Nested content".into(), value: b });
    }
    let Some(kind) = text(b, "type") else {
        // Gemini parts carry no type: they are known by their key.
        if let Some(s) = text(b, "text") {
            let part = if b.get("thought") == Some(&Value::Bool(true)) {
                Part::Thinking { parts: vec![Part::Markdown(s)], redacted: false }
            } else {
                prose(s)
            };
            return c.push(out, part);
        }
        if let Some(call) = b.get("functionCall") {
            let name = text(call, "name").unwrap_or("tool");
            let input = Input::Json(call.get("args").unwrap_or(&Value::Null));
            return c.push(out, Part::ToolCall { name, input });
        }
        if let Some(resp) = b.get("functionResponse") {
            return c.push(out, gemini_response(resp));
        }
        if b.get("inlineData").is_some() || b.get("fileData").is_some() {
            return c.push(out, Part::Image);
        }
        return match b {
            Value::String(s) => c.push(out, prose(s)),
            _ => c.push(out, Part::Meta { label: "Block".into(), value: b }),
        };
    };
    match kind {
        "text" | "input_text" | "output_text" => match text(b, "text") {
            Some(s) => c.push(out, prose(s)),
            None => c.push(out, Part::Meta { label: clip(kind, LABEL_CHARS), value: b }),
        },
        "tool_use" | "server_tool_use" => {
            let name = text(b, "name").unwrap_or("tool");
            let input = Input::Json(b.get("input").unwrap_or(&Value::Null));
            c.push(out, Part::ToolCall { name, input });
        }
        "tool_result" => {
            let mut parts = Vec::new();
            if let Some(content) = b.get("content") {
                content_parts(c, &mut parts, content, depth + 1, true);
            }
            let is_error = b.get("is_error") == Some(&Value::Bool(true));
            c.push(out, Part::ToolResult { parts, is_error });
        }
        "thinking" => {
            let parts = text(b, "thinking").map(|s| vec![Part::Markdown(s)]).unwrap_or_default();
            c.push(out, Part::Thinking { parts, redacted: false });
        }
        "redacted_thinking" => c.push(out, Part::Thinking { parts: Vec::new(), redacted: true }),
        "image" | "input_image" => c.push(out, Part::Image),
        _ => c.push(out, Part::Meta { label: clip(kind, LABEL_CHARS), value: b }),
    }
}

/// Gemini's `functionResponse`: `{id, name, response: {output} | {error}}`.
pub(super) fn gemini_response(resp: &Value) -> Part<'_> {
    let response = resp.get("response").unwrap_or(&Value::Null);
    let is_error = response.get("error").is_some();
    let parts = match text(response, "output").or_else(|| text(response, "error")) {
        Some(s) => vec![Part::Plain(s)],
        None => vec![Part::Meta { label: "Response".into(), value: response }],
    };
    Part::ToolResult { parts, is_error }
}

// ---------------------------------------------------------------------------
// Native session lines
// ---------------------------------------------------------------------------

/// The session record a string holds, if it is one: a JSON object with a
/// shape some assistant CLI writes. Any other string is markdown, even
/// JSON-looking (`{"a": 1}` typed by a person stays their text).
pub(super) fn native_line(content: &Value) -> Option<Value> {
    let s = content.as_str()?.trim();
    if !(s.starts_with('{') && s.ends_with('}')) {
        return None;
    }
    let v: Value = serde_json::from_str(s).ok()?;
    let o = v.as_object()?;
    let recognised = o.get("type").is_some_and(Value::is_string)
        || o.contains_key("$set")
        || o.contains_key("$rewindTo")
        || (o.contains_key("sessionId") && (o.contains_key("startTime") || o.contains_key("projectHash")));
    recognised.then_some(v)
}

pub(super) fn native_parts<'a>(c: &mut Collect, out: &mut Vec<Part<'a>>, v: &'a Value) {
    let kind = text(v, "type");
    if v.get("$set").is_some() {
        return c.push(out, Part::Meta { label: "Session update ($set)".into(), value: v });
    }
    if let Some(to) = v.get("$rewindTo") {
        let label = match to.as_str() {
            Some(id) => format!("Rewind to {}", clip(id, LABEL_CHARS)),
            None => "Rewind".into(),
        };
        return c.push(out, Part::Meta { label, value: v });
    }
    let Some(kind) = kind else {
        // Gemini's session header: {sessionId, projectHash, startTime, kind}.
        return c.push(out, Part::Meta { label: "Session start".into(), value: v });
    };
    if let Some(payload) = v.get("payload") {
        return codex_parts(c, out, kind, payload, v);
    }
    let message = v.get("message").filter(|m| m.is_object());
    if v.get("id").is_some() && message.is_none() && (v.get("content").is_some() || v.get("toolCalls").is_some()) {
        return gemini_parts(c, out, kind, v);
    }
    claude_parts(c, out, kind, message, v)
}

/// Claude Code: `{type: user|assistant, message: {role, content}, uuid, …}`
/// for the conversation; `summary`, `system`, `file-history-snapshot`, … for
/// bookkeeping.
pub(super) fn claude_parts<'a>(
    c: &mut Collect,
    out: &mut Vec<Part<'a>>,
    kind: &str,
    message: Option<&'a Value>,
    v: &'a Value,
) {
    match (kind, message) {
        ("user" | "assistant", Some(m)) => {
            let content = m.get("content").unwrap_or(&Value::Null);
            // Caveats and command echoes Claude Code adds for itself.
            if v.get("isMeta") == Some(&Value::Bool(true)) {
                let label = labelled("Meta", first_text(content));
                return c.push(out, Part::Meta { label, value: v });
            }
            content_parts(c, out, content, 0, false);
        }
        ("summary", _) => c.push(out, Part::Meta { label: labelled("Summary", text(v, "summary")), value: v }),
        ("custom-title", _) => c.push(out, Part::Meta { label: labelled("Title", text(v, "customTitle")), value: v }),
        ("system", _) => {
            let what = text(v, "content").or_else(|| text(v, "subtype"));
            c.push(out, Part::Meta { label: labelled("System", what), value: v });
        }
        _ => c.push(out, Part::Meta { label: clip(kind, LABEL_CHARS), value: v }),
    }
}

/// Codex: `{timestamp, type, payload}`; the conversation is in
/// `response_item`s, the rest is bookkeeping.
pub(super) fn codex_parts<'a>(c: &mut Collect, out: &mut Vec<Part<'a>>, kind: &str, p: &'a Value, v: &'a Value) {
    let inner = text(p, "type");
    if kind != "response_item" {
        let label = match inner {
            Some(t) => format!("{}: {}", clip(kind, 40), clip(t, 40)),
            None => clip(kind, LABEL_CHARS),
        };
        return c.push(out, Part::Meta { label, value: v });
    }
    match inner.unwrap_or("") {
        "message" => {
            let role = text(p, "role").unwrap_or("");
            // The instructions and environment Codex sends along each turn.
            if matches!(role, "developer" | "system") {
                return c.push(out, Part::Meta { label: format!("Instructions ({role})"), value: v });
            }
            let Some(items) = p.get("content").and_then(Value::as_array) else {
                return content_parts(c, out, p.get("content").unwrap_or(&Value::Null), 0, false);
            };
            for item in items {
                if c.full() {
                    c.cut = true;
                    break;
                }
                let t = text(item, "text").unwrap_or("").trim_start();
                let context =
                    ["<environment_context>", "<user_instructions>", "# AGENTS.md instructions", "<permissions"]
                        .iter()
                        .any(|p| t.starts_with(p));
                if context {
                    c.push(out, Part::Meta { label: "Context".into(), value: item });
                } else {
                    block_parts(c, out, item, 0, false);
                }
            }
        }
        "function_call" => {
            let name = text(p, "name").unwrap_or("function");
            let input = match p.get("arguments") {
                Some(Value::String(s)) => Input::JsonText(s),
                Some(other) => Input::Json(other),
                None => Input::Json(&Value::Null),
            };
            c.push(out, Part::ToolCall { name, input });
        }
        "custom_tool_call" => {
            let name = text(p, "name").unwrap_or("tool");
            let input = match p.get("input") {
                Some(Value::String(s)) => Input::Text(s),
                Some(other) => Input::Json(other),
                None => Input::Json(&Value::Null),
            };
            c.push(out, Part::ToolCall { name, input });
        }
        "local_shell_call" => {
            let input = Input::Json(p.get("action").unwrap_or(&Value::Null));
            c.push(out, Part::ToolCall { name: "shell", input });
        }
        "web_search_call" => {
            let input = Input::Json(p.get("action").unwrap_or(&Value::Null));
            c.push(out, Part::ToolCall { name: "web_search", input });
        }
        "function_call_output" | "custom_tool_call_output" | "local_shell_call_output" => {
            let output = p.get("output").unwrap_or(&Value::Null);
            let mut parts = Vec::new();
            let mut is_error = false;
            match output {
                // Some versions wrap the text: {content, success}.
                Value::Object(o) if o.get("content").is_some_and(Value::is_string) => {
                    is_error = o.get("success") == Some(&Value::Bool(false));
                    content_parts(c, &mut parts, &o["content"], 1, true);
                }
                other => content_parts(c, &mut parts, other, 1, true),
            }
            c.push(out, Part::ToolResult { parts, is_error });
        }
        "reasoning" => {
            let mut parts = Vec::new();
            for key in ["summary", "content"] {
                for item in p.get(key).and_then(Value::as_array).into_iter().flatten() {
                    if let Some(s) = text(item, "text") {
                        c.push(&mut parts, Part::Markdown(s));
                    }
                }
            }
            // Only encrypted content: nothing to show.
            let redacted = parts.is_empty();
            c.push(out, Part::Thinking { parts, redacted });
        }
        other => {
            let label = if other.is_empty() { "response_item".into() } else { clip(other, LABEL_CHARS) };
            c.push(out, Part::Meta { label, value: v });
        }
    }
}

/// Gemini CLI: `{id, timestamp, type: user|gemini|info|error|…, content,
/// thoughts?, toolCalls?}`.
pub(super) fn gemini_parts<'a>(c: &mut Collect, out: &mut Vec<Part<'a>>, kind: &str, v: &'a Value) {
    let content = v.get("content").unwrap_or(&Value::Null);
    if !matches!(kind, "user" | "gemini") {
        let label = labelled(&clip(kind, 40), first_text(content));
        return c.push(out, Part::Meta { label, value: v });
    }
    if let Some(thoughts) = v.get("thoughts").and_then(Value::as_array) {
        let mut parts = Vec::new();
        for t in thoughts {
            if let Some(s) = text(t, "subject") {
                c.push(&mut parts, Part::Markdown(s));
            }
            if let Some(s) = text(t, "description") {
                c.push(&mut parts, Part::Markdown(s));
            }
        }
        if !parts.is_empty() {
            c.push(out, Part::Thinking { parts, redacted: false });
        }
    }
    content_parts(c, out, content, 0, false);
    for call in v.get("toolCalls").and_then(Value::as_array).into_iter().flatten() {
        if c.full() {
            c.cut = true;
            break;
        }
        let name = text(call, "name").unwrap_or("tool");
        let input = Input::Json(call.get("args").unwrap_or(&Value::Null));
        c.push(out, Part::ToolCall { name, input });
        // The output the model got, else what the CLI displayed.
        let outputs: Vec<&Value> = call
            .get("result")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| r.get("functionResponse"))
            .collect();
        let is_error = text(call, "status") == Some("error");
        if !outputs.is_empty() {
            for resp in outputs {
                match gemini_response(resp) {
                    Part::ToolResult { parts, is_error: e } => {
                        c.push(out, Part::ToolResult { parts, is_error: is_error || e })
                    }
                    other => c.push(out, other),
                }
            }
        } else if let Some(shown) = text(call, "resultDisplay") {
            c.push(out, Part::ToolResult { parts: vec![Part::Plain(shown)], is_error });
        }
    }
}

/// The first text in some content, for labels.
pub(super) fn first_text(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s),
        Value::Array(items) => items.iter().find_map(|i| text(i, "text").or_else(|| i.as_str())),
        Value::Object(_) => text(v, "text"),
        _ => None,
    }
}

/// `what — first line of detail`, clipped.
pub(super) fn labelled(what: &str, detail: Option<&str>) -> String {
    match detail.map(|d| first_line(d, LABEL_CHARS)).filter(|d| !d.is_empty()) {
        Some(d) => format!("{what} — {d}"),
        None => what.to_string(),
    }
}
