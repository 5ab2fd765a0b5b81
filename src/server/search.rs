//! Full-text search, the pure part: what of a message is searchable, how a
//! user's query becomes an FTS5 or `tsquery` expression, and the snippet
//! shown for a hit. The SQL that keeps and queries the index is in
//! `sql/search.rs`, one flavour per database.
//!
//! Both databases index the same text, so a search finds the same messages
//! on either: a message's string content, or every string inside its JSON
//! content (content blocks, and the records of assistants' session files,
//! which arrive as one JSON line in a string). Keys, ids and hashes are
//! left out: they match everything and mean nothing to a reader.

use serde_json::Value;

use crate::model::Message;

/// Text beyond this many bytes of a message is not indexed: PostgreSQL
/// refuses a tsvector over 1 MB, and a megabyte tool output is found by its
/// first part as well as by its whole.
pub const MAX_INDEXED: usize = 200 << 10;

/// Most terms a query keeps (a pasted paragraph is cut, not refused).
const MAX_TERMS: usize = 12;

/// Markers around a matched word in a snippet; the web page turns them into
/// `<mark>` after escaping the rest.
pub const MARK_START: char = '\u{1}';
pub const MARK_END: char = '\u{2}';

/// The searchable text of a message, at most [`MAX_INDEXED`] bytes.
pub fn message_text(m: &Message) -> String {
    let mut out = String::new();
    if let Some(v) = m.content.value() {
        collect(v, None, &mut out);
    }
    cut(&mut out, MAX_INDEXED);
    out
}

/// Keys whose string values are identifiers or machinery, not words.
fn skipped_key(k: &str) -> bool {
    matches!(
        k,
        "id" | "uuid"
            | "parentUuid"
            | "leafUuid"
            | "sessionId"
            | "session_id"
            | "call_id"
            | "tool_use_id"
            | "requestId"
            | "signature"
            | "data"
            | "encrypted_content"
            | "type"
            | "timestamp"
            | "version"
            | "gitBranch"
            | "cwd"
            | "userType"
            | "media_type"
    )
}

fn collect(v: &Value, key: Option<&str>, out: &mut String) {
    if out.len() >= MAX_INDEXED {
        return;
    }
    match v {
        Value::String(s) => {
            if key.is_some_and(skipped_key) {
                return;
            }
            // An assistant's session line: a JSON record kept verbatim.
            if s.starts_with('{')
                && let Ok(inner @ Value::Object(_)) = serde_json::from_str::<Value>(s)
            {
                return collect(&inner, None, out);
            }
            if !out.is_empty() {
                out.push('\n');
            }
            // PostgreSQL's text (and so to_tsvector) refuses NUL.
            out.extend(s.chars().filter(|c| *c != '\0'));
        }
        Value::Array(a) => a.iter().for_each(|x| collect(x, key, out)),
        Value::Object(m) => m.iter().for_each(|(k, x)| collect(x, Some(k), out)),
        _ => {}
    }
}

/// Cuts `s` to at most `max` bytes, on a character boundary.
fn cut(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// A user's query as words: runs of letters and digits, lowercased. The
/// last one is a prefix when the query does not end in a space (search as
/// you type). Punctuation and operators are never passed to the database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub terms: Vec<String>,
    pub last_is_prefix: bool,
}

impl Query {
    pub fn parse(q: &str) -> Query {
        let terms: Vec<String> = q
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .take(MAX_TERMS)
            .collect();
        let last_is_prefix = q.chars().last().is_some_and(char::is_alphanumeric);
        Query { terms, last_is_prefix }
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// An FTS5 MATCH expression: every term, each a quoted string (so no
    /// word is read as an operator), the last a prefix when typed so.
    pub fn fts5(&self) -> String {
        let n = self.terms.len();
        self.terms
            .iter()
            .enumerate()
            .map(|(i, t)| if i + 1 == n && self.last_is_prefix { format!("\"{t}\"*") } else { format!("\"{t}\"") })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A `to_tsquery` expression: the terms joined by `&`, each quoted, the
    /// last a prefix (`:*`) when typed so. Terms hold only letters and
    /// digits, so nothing in them is syntax.
    pub fn tsquery(&self) -> String {
        let n = self.terms.len();
        self.terms
            .iter()
            .enumerate()
            .map(|(i, t)| if i + 1 == n && self.last_is_prefix { format!("'{t}':*") } else { format!("'{t}'") })
            .collect::<Vec<_>>()
            .join(" & ")
    }
}

/// About this many characters of context are shown around a match.
const SNIPPET: usize = 160;

/// The part of `text` around the first match of any query term, with the
/// words that match between [`MARK_START`] and [`MARK_END`]. A word matches
/// a term when it starts with it (the index stems words, so "failing"
/// finds "fails"; a prefix is the closest match that needs no stemmer).
/// Without a match (a stemmed form only), the text's start.
pub fn snippet(text: &str, q: &Query) -> String {
    let words = words(text);
    // A term's first letters (all of a short one): a stand-in for its stem.
    let stem = |t: &str| t.len().min(t.len().saturating_sub(2).max(4));
    let hit = |w: &str| {
        let lw = w.to_lowercase();
        q.terms.iter().any(|t| lw.starts_with(&t[..floor_boundary(t, stem(t))]))
    };
    let first = words.iter().find(|(s, e)| hit(&text[*s..*e])).map_or(0, |(s, _)| *s);
    let start = floor_boundary(text, first.saturating_sub(SNIPPET / 3));
    // Start on a word.
    let after_space = |(i, c): (usize, char)| c.is_whitespace().then_some(start + i + c.len_utf8());
    let start = if start == 0 { 0 } else { text[start..].char_indices().find_map(after_space).unwrap_or(start) };
    let start = start.min(first);
    let end = floor_boundary(text, (start + SNIPPET).min(text.len()));
    let mut out = String::new();
    if start > 0 {
        out.push('…');
    }
    let mut at = start;
    for (s, e) in words.iter().copied().filter(|(s, e)| *s >= start && *e <= end) {
        if hit(&text[s..e]) {
            push_spaced(&mut out, &text[at..s]);
            out.push(MARK_START);
            out.push_str(&text[s..e]);
            out.push(MARK_END);
            at = e;
        }
    }
    push_spaced(&mut out, &text[at..end]);
    if end < text.len() {
        out.push('…');
    }
    out
}

/// Whitespace runs (newlines, indentation) as one space. The marks' own
/// characters, should the text hold them, are left out: only `snippet`
/// places marks.
fn push_spaced(out: &mut String, s: &str) {
    let mut space = false;
    for c in s.chars().filter(|c| *c != MARK_START && *c != MARK_END) {
        if c.is_whitespace() {
            space = true;
        } else {
            if space && !out.is_empty() {
                out.push(' ');
            }
            space = false;
            out.push(c);
        }
    }
    if space && !out.is_empty() {
        out.push(' ');
    }
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Byte ranges of the words (letters and digits) of `text`.
fn words(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (c.is_alphanumeric(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, text.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Content, MessageId};
    use serde_json::json;

    fn msg(content: Value) -> Message {
        Message {
            id: MessageId::new("m1").unwrap(),
            role: "user".into(),
            content: Content::new(content),
            timestamp: 0,
            extra: Default::default(),
        }
    }

    #[test]
    fn text_of_strings_blocks_and_session_lines() {
        assert_eq!(message_text(&msg(json!("plain words"))), "plain words");
        let blocks = json!([{"type": "text", "text": "see below"}, {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "cargo test"}}]);
        assert_eq!(message_text(&msg(blocks)), "see below\ncargo test\nBash");
        // A Claude Code line, kept verbatim as a string.
        let line = r#"{"type":"assistant","uuid":"u-1","sessionId":"s","message":{"role":"assistant","content":[{"type":"text","text":"The parser fails on tabs"}]}}"#;
        assert_eq!(message_text(&msg(json!(line))), "The parser fails on tabs\nassistant");
        // A string that only looks like JSON stays text.
        assert_eq!(message_text(&msg(json!("{not json"))), "{not json");
    }

    #[test]
    fn text_is_bounded() {
        let big = "word ".repeat(100_000) + "é";
        let t = message_text(&msg(json!(big)));
        assert!(t.len() <= MAX_INDEXED);
    }

    #[test]
    fn queries_never_carry_syntax() {
        let q = Query::parse("deploy \"OR\" NEAR(x) fail");
        assert_eq!(q.terms, ["deploy", "or", "near", "x", "fail"]);
        assert_eq!(q.fts5(), r#""deploy" "or" "near" "x" "fail"*"#);
        assert_eq!(q.tsquery(), "'deploy' & 'or' & 'near' & 'x' & 'fail':*");
        let q = Query::parse("tabs ");
        assert!(!q.last_is_prefix);
        assert_eq!(q.fts5(), "\"tabs\"");
        assert!(Query::parse("  ;; ").is_empty());
        assert_eq!(Query::parse("O'Brien's").terms, ["o", "brien", "s"]);
    }

    #[test]
    fn snippets_mark_the_matches() {
        let text =
            "Intro. ".repeat(60) + "The parser FAILS on tabs, and failing again.\n\n  Then more text follows here.";
        let s = snippet(&text, &Query::parse("fails"));
        assert!(s.starts_with('…'), "{s}");
        assert!(s.contains("\u{1}FAILS\u{2}"), "{s}");
        assert!(s.contains("\u{1}failing\u{2}"), "stems share a prefix: {s}");
        assert!(!s.contains('\n'));
        assert!(s.chars().count() <= SNIPPET + 4);
        // No match: the start.
        assert!(snippet("alpha beta", &Query::parse("zeta")).starts_with("alpha"));
        // Multibyte text never splits a character.
        let s = snippet(&"ü".repeat(500), &Query::parse("x"));
        assert!(s.ends_with('…'));
    }

    #[test]
    fn marks_come_only_from_the_snippet() {
        let s = snippet("a \u{1}b\u{2} \u{1}tabs here", &Query::parse("tabs"));
        assert_eq!(s, "a b \u{1}tabs\u{2} here");
    }

    /// Found by fuzz/search: the snippet started one byte after a
    /// whitespace character, inside it when it is more than a byte (a
    /// no-break space, U+0085, U+2028…), and slicing there panicked.
    #[test]
    fn a_snippet_starts_after_a_multibyte_space() {
        for space in ['\u{a0}', '\u{85}', '\u{2028}', '\u{3000}'] {
            let text = format!("intro{space}").repeat(60) + "the parser fails";
            let s = snippet(&text, &Query::parse("fails"));
            assert!(s.starts_with('…') && s.contains("\u{1}fails\u{2}"), "{s:?}");
        }
    }
}
