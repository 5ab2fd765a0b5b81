//! Claude Code: `~/.claude/projects/<escaped cwd>/<sessionId>.jsonl`.
//!
//! Records are `{type, uuid, parentUuid, sessionId, cwd, timestamp, message,
//! …}` for the conversation (`user`, `assistant`, `system`, `attachment`)
//! and bookkeeping without a `uuid` (`summary`, `custom-title`,
//! `last-prompt`, `queue-operation`, `file-history-snapshot`, …). The
//! conversation is a tree by `parentUuid` (a redo branches it, a compaction
//! starts a new root with `logicalParentUuid`, subagent lines are marked
//! `isSidechain`); the lines are kept as they are, so the tree is.

use serde_json::Value;

use super::{Calls, Line, content_text, prompt_title, text, time};

pub fn describe(v: &Value) -> Line {
    let kind = text(v, "type").unwrap_or("unknown");
    let title = match kind {
        "custom-title" => text(v, "customTitle").map(|t| (t.to_string(), true)),
        "summary" => text(v, "summary").map(|t| (t.to_string(), false)),
        // The first prompt the user typed: not a meta line (caveats, command
        // output) and not a tool result.
        "user" if v.get("isMeta") != Some(&Value::Bool(true)) && v.get("isSidechain") != Some(&Value::Bool(true)) => v
            .get("message")
            .and_then(|m| m.get("content"))
            .and_then(content_text)
            .filter(|t| !t.trim_start().starts_with('<'))
            .and_then(prompt_title),
        _ => None,
    };
    Line {
        id: text(v, "uuid").map(str::to_string),
        role: kind.to_string(),
        timestamp: time(v, "timestamp"),
        session: text(v, "sessionId").map(str::to_string),
        cwd: text(v, "cwd").map(str::to_string),
        title,
    }
}

/// Tool calls: an assistant line's `tool_use` blocks are calls, a user
/// line's `tool_result` blocks answer them; a prompt the user typed (text,
/// not a tool result, not a meta line) starts a new turn.
pub fn calls(v: &Value) -> Calls {
    let mut out = Calls::default();
    let blocks = v.get("message").and_then(|m| m.get("content"));
    match (text(v, "type"), blocks) {
        (Some("assistant"), Some(Value::Array(blocks))) => {
            out.calls = blocks
                .iter()
                .filter(|b| text(b, "type") == Some("tool_use"))
                .filter_map(|b| text(b, "id").map(str::to_string))
                .collect();
        }
        (Some("user"), Some(Value::Array(blocks))) => {
            out.results = blocks
                .iter()
                .filter(|b| text(b, "type") == Some("tool_result"))
                .filter_map(|b| text(b, "tool_use_id").map(str::to_string))
                .collect();
            out.new_turn = out.results.is_empty() && v.get("isMeta") != Some(&Value::Bool(true));
        }
        (Some("user"), Some(Value::String(_))) => out.new_turn = v.get("isMeta") != Some(&Value::Bool(true)),
        _ => {}
    }
    out
}

/// The directory Claude Code keeps a working directory's sessions in: the
/// path with every UTF-16 unit that is not an ASCII letter or digit made
/// `-`; past 200 characters, the first 200 and `-<hash>` (2.1.332: the
/// 31-multiplier string hash of the path, its absolute value in base 36).
pub fn project_dir_name(cwd: &str) -> String {
    let name: String = cwd
        .encode_utf16()
        .map(|u| match char::from_u32(u32::from(u)) {
            Some(c) if c.is_ascii_alphanumeric() => c,
            _ => '-',
        })
        .collect();
    if name.len() <= 200 {
        return name;
    }
    let hash = cwd.encode_utf16().fold(0i32, |h, u| h.wrapping_shl(5).wrapping_sub(h).wrapping_add(i32::from(u)));
    let mut n = hash.unsigned_abs();
    let mut digits = Vec::new();
    loop {
        digits.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    digits.reverse();
    format!("{}-{}", &name[..200], String::from_utf8(digits).expect("ASCII"))
}
