//! Search, the pure part (`server::search`): `Query::parse`, `snippet`
//! and `message_text` on any text and content. Never panics; a query's
//! FTS5 and `tsquery` expressions hold nothing but quoted terms (no
//! operator, no quote inside a term); a snippet is made of the text's own
//! characters (it cannot split one), marks (balanced, around words that
//! match), spaces and `…`, and stays short; the indexed text is bounded.
//!
//! The input is split at the first `\0`: the query, then the text. The
//! text is also searched as message content: a string, and inside JSON.
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use threadsync::model::{Content, Message, MessageId};
use threadsync::server::search::{MARK_END, MARK_START, MAX_INDEXED, Query, message_text, snippet};

fn msg(content: Value) -> Message {
    Message {
        id: MessageId::new("m1").unwrap(),
        role: "user".into(),
        content: Content::new(content),
        timestamp: 0,
        extra: Default::default(),
    }
}

/// `expr` is the terms, each quoted with `quote` (then `suffix` maybe),
/// joined by `sep`; a term holds no quote of either kind.
fn assert_quoted(expr: &str, q: &Query, quote: char, suffix: &str, sep: &str) {
    let mut want = Vec::new();
    for (i, t) in q.terms.iter().enumerate() {
        assert!(!t.is_empty(), "an empty term");
        assert!(!t.contains(['"', '\'', '\0']), "a quote inside the term {t:?}");
        let last = i + 1 == q.terms.len() && q.last_is_prefix;
        want.push(format!("{quote}{t}{quote}{}", if last { suffix } else { "" }));
    }
    assert_eq!(expr, want.join(sep));
}

fn check_snippet(text: &str, q: &Query) {
    let s = snippet(text, q);
    let own: HashSet<char> = text.chars().collect();
    let marked = !text.contains([MARK_START, MARK_END]);
    let mut open = false;
    for c in s.chars() {
        match c {
            MARK_START if marked => {
                assert!(!open, "a mark inside a mark: {s:?}");
                open = true;
            }
            MARK_END if marked => {
                assert!(open, "a mark closed that was not open: {s:?}");
                open = false;
            }
            // Marks the text itself holds: not balanced, and not the text's.
            MARK_START | MARK_END | ' ' | '…' => {}
            c => assert!(own.contains(&c), "{c:?} is not the text's: {s:?}"),
        }
    }
    assert!(!open, "a mark left open: {s:?}");
    // About 160 characters of the text, a few marks and ellipses.
    let shown = s.chars().filter(|c| ![MARK_START, MARK_END].contains(c)).count();
    assert!(shown <= 160 + 2, "a snippet of {shown} characters: {s:?}");
    if q.is_empty() && !text.is_empty() && !text.starts_with(char::is_whitespace) {
        assert!(!s.starts_with('…'), "no query, no match: the text's start");
    }
}

fuzz_target!(|data: &[u8]| {
    let data = String::from_utf8_lossy(data);
    let (query, text) = data.split_once('\0').unwrap_or((&data, ""));
    let q = Query::parse(query);
    assert!(q.terms.len() <= 12);
    for t in &q.terms {
        assert!(t.chars().all(|c| c.is_alphanumeric() || !c.is_ascii()), "{t:?}");
    }
    assert_quoted(&q.fts5(), &q, '"', "*", " ");
    assert_quoted(&q.tsquery(), &q, '\'', ":*", " & ");

    check_snippet(text, &q);
    check_snippet(query, &q);
    for content in [
        Value::String(text.to_string()),
        json!([{"type": "text", "text": text}, {"type": "tool_use", "id": "x", "input": {"command": query}}]),
        serde_json::from_str::<Value>(text).unwrap_or(Value::Null),
    ] {
        let indexed = message_text(&msg(content));
        assert!(indexed.len() <= MAX_INDEXED);
        check_snippet(&indexed, &q);
    }
});
