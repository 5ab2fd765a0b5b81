//! Gemini CLI: `~/.gemini/tmp/<project name>/chats/session-<date>-<id8>.jsonl`.
//!
//! A header line (`sessionId`, `projectHash`, `startTime`, `kind`), then
//! messages (`id`, `timestamp`, `type`: `user` / `gemini` / …, `content`),
//! `{"$set": …}` updates and `{"$rewindTo": …}` truncations. A message
//! re-appended with the same id replaces the earlier one — the same rule as
//! a threadsync log, so such a line is an edit. Lines carry no working
//! directory: the project comes from `~/.gemini/projects.json`.

use serde_json::Value;

use super::{Line, content_text, prompt_title, text, time};

/// Gemini CLI's name for a project directory (0.61, `ProjectRegistry`):
/// the directory's name, lowercased, every run of other characters than
/// `a-z0-9` made one `-`, trimmed; `project` if nothing is left. A name
/// another directory has already is suffixed `-1`, `-2`, … (`taken`).
pub fn project_slug(dir_name: &str, taken: &dyn Fn(&str) -> bool) -> String {
    let mut slug = String::new();
    for c in dir_name.to_lowercase().chars() {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '-' };
        if !(c == '-' && slug.ends_with('-')) {
            slug.push(c);
        }
    }
    let slug = slug.trim_matches('-');
    let slug = if slug.is_empty() { "project" } else { slug };
    if !taken(slug) {
        return slug.to_string();
    }
    (1..).map(|n| format!("{slug}-{n}")).find(|s| !taken(s)).expect("some suffix is free")
}

/// Whether a line is a turn (something a resume has to go back to): a
/// session file without one is the stray a resume can leave beside the
/// real file, which Gemini itself skips.
pub fn is_turn(v: &Value) -> bool {
    matches!(v.get("type").and_then(Value::as_str), Some("user" | "gemini"))
}

/// A resume's start is not a state to sync by itself: a header written
/// partway through the file (Gemini starts a resume with a header and the
/// new session's context, then restates the history, then the turn) holds
/// back the file from its line on until a turn follows it. Another machine
/// reading the file between those lines would find nothing to resume.
pub fn hold(lines: &[(u64, &[u8])]) -> Option<usize> {
    let has = |raw: &[u8], n: &[u8]| raw.windows(n.len()).any(|w| w == n);
    let mut held = None;
    for (i, (offset, raw)) in lines.iter().enumerate() {
        if *offset > 0 && has(raw, b"\"startTime\"") && has(raw, b"\"sessionId\"") {
            let header = serde_json::from_slice::<Value>(raw).is_ok_and(|v| describe(&v).role == "session");
            if header && held.is_none() {
                held = Some(i);
            }
        } else if held.is_some()
            && (has(raw, b"\"type\":\"user\"") || has(raw, b"\"type\":\"gemini\""))
            && serde_json::from_slice::<Value>(raw).is_ok_and(|v| is_turn(&v))
        {
            held = None;
        }
    }
    held
}

pub fn describe(v: &Value) -> Line {
    let header = v.get("sessionId").is_some() && v.get("type").is_none();
    let role = if header {
        "session".to_string()
    } else if v.get("$set").is_some() {
        "$set".to_string()
    } else if v.get("$rewindTo").is_some() {
        "$rewindTo".to_string()
    } else {
        text(v, "type").unwrap_or("unknown").to_string()
    };
    let title = match role.as_str() {
        "user" => v.get("content").and_then(|c| match c {
            Value::Array(parts) => parts.iter().find_map(|p| text(p, "text")).and_then(prompt_title),
            other => content_text(other).and_then(prompt_title),
        }),
        _ => None,
    };
    Line {
        id: if header { None } else { text(v, "id").map(str::to_string) },
        timestamp: if header { time(v, "startTime") } else { time(v, "timestamp") },
        session: if header { text(v, "sessionId").map(str::to_string) } else { None },
        cwd: None,
        title,
        role,
    }
}
