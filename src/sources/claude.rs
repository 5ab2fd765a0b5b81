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

use super::{Line, content_text, prompt_title, text, time};

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

/// The directory Claude Code keeps a working directory's sessions in: the
/// path with every character that is not a letter or digit made `-`.
pub fn project_dir_name(cwd: &str) -> String {
    cwd.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect()
}
