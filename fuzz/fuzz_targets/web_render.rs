//! A message body on the web pages (`server::web::render::body` and
//! `summary`): any role and content (a string, JSON, content blocks, a
//! session file's line). Never panics, and nothing from the content lives
//! in the HTML: no `<script>` (or other active) element, no event-handler,
//! `style` or `src` attribute, no link to a scheme other than http, https
//! or mailto, and no `<` that does not open a well-formed tag.
//!
//! The first byte picks the role, the budget and how the rest is read:
//! as a string, as JSON, or as a string inside content blocks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use threadsync::server::web::render::{Opts, body, summary};

const ROLES: [&str; 6] = ["user", "assistant", "tool", "function", "tool_result", "system"];
const BAD_TAGS: [&str; 18] = [
    "script", "img", "iframe", "svg", "object", "embed", "style", "link", "meta", "base", "form", "frame", "frameset",
    "math", "video", "audio", "source", "template",
];

/// One level of HTML character references, as a browser reads an attribute.
fn decode(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let end = rest.find(';').filter(|&e| e <= 12);
        let decoded = end.and_then(|e| {
            let name = &rest[1..e];
            let c = match name {
                "amp" => '&',
                "lt" => '<',
                "gt" => '>',
                "quot" => '"',
                "apos" => '\'',
                "colon" => ':',
                "Tab" => '\t',
                "NewLine" => '\n',
                "nbsp" => '\u{a0}',
                n if n.starts_with("#x") || n.starts_with("#X") => {
                    char::from_u32(u32::from_str_radix(&n[2..], 16).ok()?)?
                }
                n if n.starts_with('#') => char::from_u32(n[1..].parse().ok()?)?,
                _ => return None,
            };
            Some((c, e))
        });
        match decoded {
            Some((c, e)) => {
                out.push(c);
                rest = &rest[e + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Whether a link target is harmless: no scheme, or http, https, mailto.
fn safe_url(raw: &str) -> bool {
    let url: String = decode(raw).chars().filter(|c| *c > ' ' && *c != '\u{7f}').collect();
    match url.find([':', '/', '?', '#']) {
        Some(i) if url.as_bytes()[i] == b':' => {
            matches!(url[..i].to_ascii_lowercase().as_str(), "http" | "https" | "mailto")
        }
        _ => true,
    }
}

/// Walks the markup: every `<` opens a tag (text's are escaped), tags are
/// well formed with quoted attribute values, and none is active.
fn assert_inert(html: &str) {
    let b = html.as_bytes();
    let mut i = 0;
    while let Some(off) = html[i..].find('<') {
        let start = i + off;
        let mut j = start + 1;
        if b.get(j) == Some(&b'/') {
            j += 1;
        }
        let name_end = j + html[j..].find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(html.len() - j);
        let name = html[j..name_end].to_ascii_lowercase();
        assert!(!name.is_empty(), "a '<' that opens no tag at {start}: {html}");
        assert!(!BAD_TAGS.contains(&name.as_str()), "<{name}> in {html}");
        j = name_end;
        // Attributes, up to the tag's end.
        loop {
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            match b.get(j) {
                None => panic!("a tag that never ends at {start}: {html}"),
                Some(b'>') => {
                    j += 1;
                    break;
                }
                Some(b'/') if b.get(j + 1) == Some(&b'>') => {
                    j += 2;
                    break;
                }
                _ => {}
            }
            let attr_end = j + html[j..].find(|c: char| c.is_ascii_whitespace() || "=>/\"'".contains(c)).unwrap_or(0);
            let attr = html[j..attr_end].to_ascii_lowercase();
            assert!(!attr.is_empty(), "a stray {:?} in a tag at {start}: {html}", &html[j..j + 1]);
            assert!(!attr.starts_with("on"), "event handler {attr} in {html}");
            assert!(
                !["style", "src", "srcdoc", "formaction", "action", "srcset"].contains(&attr.as_str()),
                "{attr} in {html}"
            );
            j = attr_end;
            if b.get(j) == Some(&b'=') {
                j += 1;
                assert!(b.get(j) == Some(&b'"'), "an unquoted value of {attr} in {html}");
                let close = j + 1 + html[j + 1..].find('"').expect("an unclosed attribute value");
                let value = &html[j + 1..close];
                if attr == "href" {
                    assert!(safe_url(value), "a dangerous link {value:?} in {html}");
                }
                j = close + 1;
            }
        }
        i = j;
    }
    assert!(!html.to_ascii_lowercase().contains("<script"), "{html}");
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let role = ROLES[(mode & 7) as usize % ROLES.len()];
    let preview_bytes = [16 * 1024, 64, 512, 4096][(mode >> 3 & 3) as usize];
    let text = String::from_utf8_lossy(rest);
    let content = match mode >> 5 {
        0 | 1 | 2 => Value::String(text.into_owned()),
        3 | 4 => match serde_json::from_slice::<Value>(rest) {
            Ok(v) => v,
            Err(_) => return,
        },
        5 => json!([{"type": "text", "text": text}, {"type": "tool_use", "id": "t1", "name": text, "input": {"command": text}}]),
        6 => json!([{"type": "tool_result", "tool_use_id": "t1", "content": text, "is_error": true}]),
        _ => json!({"type": "response_item", "payload": {"type": "message", "role": role, "content": [{"type": "output_text", "text": text}]}}).to_string().into(),
    };
    let opts = Opts { preview_bytes, full_url: "/t/T-1/m/m-1" };
    let html = body(role, &content, &opts).into_string();
    assert_inert(&html);
    let s = summary(role, &content);
    assert!(s.chars().count() <= 200, "a summary of {} characters", s.chars().count());
});
