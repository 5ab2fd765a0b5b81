//! Codex CLI: `$CODEX_HOME/sessions/YYYY/MM/DD/rollout-<time>-<id>.jsonl`.
//!
//! Every line is `{timestamp, type, payload}`: `session_meta` (the session's
//! `id`, `cwd`, …), `response_item` (messages by role, function calls and
//! their outputs, paired by `call_id`), `turn_context`, `event_msg`,
//! `compacted`. No line has an id of its own: each gets one derived from
//! the line (the same on every machine), numbered when a line repeats.

use serde_json::Value;

use super::{Calls, Line, prompt_title, text, time};

pub fn describe(v: &Value) -> Line {
    let kind = text(v, "type").unwrap_or("unknown");
    let payload = v.get("payload").unwrap_or(&Value::Null);
    let inner = text(payload, "type");
    let role = match (kind, inner) {
        ("response_item", Some("message")) => text(payload, "role").unwrap_or("message").to_string(),
        ("response_item", Some(t)) | ("event_msg", Some(t)) => t.to_string(),
        _ => kind.to_string(),
    };
    let meta = kind == "session_meta";
    Line {
        id: None,
        role,
        timestamp: time(v, "timestamp"),
        session: meta.then(|| text(payload, "id")).flatten().map(str::to_string),
        cwd: if meta || kind == "turn_context" { text(payload, "cwd").map(str::to_string) } else { None },
        // What the user typed, as Codex itself shows it (the response items
        // of a turn also hold instructions and environment context).
        title: match (kind, inner) {
            ("event_msg", Some("user_message")) => text(payload, "message").and_then(prompt_title),
            _ => None,
        },
    }
}

/// Tool calls: `function_call`, `custom_tool_call` and `local_shell_call`
/// items are calls, their `…_output` items answer them (by `call_id`); a
/// user message event or a new turn's context starts a new turn.
pub fn calls(v: &Value) -> Calls {
    let mut out = Calls::default();
    let payload = v.get("payload").unwrap_or(&Value::Null);
    let id = || text(payload, "call_id").map(str::to_string);
    match (text(v, "type"), text(payload, "type")) {
        (Some("response_item"), Some("function_call" | "custom_tool_call" | "local_shell_call")) => {
            out.calls.extend(id());
        }
        (
            Some("response_item"),
            Some("function_call_output" | "custom_tool_call_output" | "local_shell_call_output"),
        ) => {
            out.results.extend(id());
        }
        (Some("event_msg"), Some("user_message" | "task_started")) | (Some("turn_context"), _) => out.new_turn = true,
        _ => {}
    }
    out
}

/// The session id in a rollout file's name (`rollout-<time>-<uuid>.jsonl`):
/// the last five dash-separated groups.
pub fn session_of_file(name: &str) -> Option<&str> {
    let stem = name.strip_prefix("rollout-")?.strip_suffix(".jsonl")?;
    let mut dashes = stem.rmatch_indices('-').map(|(i, _)| i);
    let start = dashes.nth(4)? + 1;
    let id = &stem[start..];
    (id.len() == 36).then_some(id)
}
