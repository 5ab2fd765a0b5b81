//! Markdown to safe HTML: raw HTML shown as text, only harmless link
//! schemes, code highlighted to classes.

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
// Markdown
// ---------------------------------------------------------------------------

/// Escapes text for HTML content and double-quoted attributes.
pub(super) fn escape_into(out: &mut String, s: &str) {
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// The link target to keep, if its scheme is harmless: http, https,
/// mailto, or none (relative, `#fragment`). Browsers ignore tabs and line
/// breaks inside a URL and controls and spaces around it
/// (`java\tscript:` is `javascript:`), so the scheme is judged, and the
/// URL emitted, without them.
pub(super) fn safe_href(url: &str) -> Option<String> {
    let cleaned: String =
        url.trim_matches(|c: char| c <= ' ').chars().filter(|c| !matches!(c, '\t' | '\n' | '\r')).collect();
    match cleaned.find([':', '/', '?', '#']) {
        Some(i) if cleaned.as_bytes()[i] == b':' => {
            let scheme = cleaned[..i].to_ascii_lowercase();
            matches!(scheme.as_str(), "http" | "https" | "mailto").then_some(cleaned)
        }
        _ => Some(cleaned),
    }
}

pub(super) fn link_open(href: &str, title: &str, class: Option<&str>) -> String {
    let mut s = String::from("<a href=\"");
    escape_into(&mut s, href);
    s.push('"');
    if let Some(class) = class {
        let _ = write!(s, " class=\"{class}\"");
    }
    if !title.is_empty() {
        s.push_str(" title=\"");
        escape_into(&mut s, title);
        s.push('"');
    }
    s.push_str(" rel=\"nofollow noopener noreferrer\">");
    s
}

/// Markdown (CommonMark, tables, strikethrough, task lists) to HTML.
///
/// pulldown-cmark's own writer renders the events; before it sees them,
/// everything that could carry markup is replaced: raw HTML becomes text,
/// links are rebuilt (or dropped to their text), images become links, code
/// blocks are rendered here (highlighted), table alignment (an inline
/// `style`) is dropped. The only `Event::Html` left are the ones made here.
///
/// `cut`: `src` is a preview; a code block it ends inside is shown plain
/// (it is incomplete, and highlighting multiplies its size).
pub(super) fn markdown(src: &str, cut: bool) -> String {
    let options = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
    let mut events: Vec<Event> = Vec::new();
    // Open links and images: whether an <a> was emitted for each.
    let mut links: Vec<bool> = Vec::new();
    let mut code: Option<(Option<String>, String)> = None;
    let end = src.trim_end().len();
    for (event, range) in Parser::new_ext(src, options).into_offset_iter() {
        if let Some((lang, buf)) = &mut code {
            match event {
                Event::Text(t) => buf.push_str(&t),
                Event::End(TagEnd::CodeBlock) => {
                    let lang = lang.as_deref().filter(|_| !(cut && range.end >= end));
                    events.push(Event::Html(code_block(lang, buf).into()));
                    code = None;
                }
                _ => {}
            }
            continue;
        }
        match event {
            Event::Html(h) | Event::InlineHtml(h) => events.push(Event::Text(h)),
            // Raw HTML blocks are shown as the text they are, lines kept.
            Event::Start(Tag::HtmlBlock) => events.push(Event::Html("<pre class=\"raw-html\">".into())),
            Event::End(TagEnd::HtmlBlock) => events.push(Event::Html("</pre>\n".into())),
            Event::Start(Tag::CodeBlock(kind)) => {
                let lang = match kind {
                    CodeBlockKind::Fenced(info) => {
                        info.split(|c: char| c.is_whitespace() || c == ',' || c == '{').next().map(str::to_string)
                    }
                    CodeBlockKind::Indented => None,
                };
                code = Some((lang, String::new()));
            }
            Event::Start(Tag::Link { link_type, dest_url, title, .. }) => {
                let href = match link_type {
                    LinkType::Email => Some(format!("mailto:{dest_url}")),
                    _ => safe_href(&dest_url),
                };
                // An <a> inside an <a> is not allowed: the inner one stays text.
                match href.filter(|_| !links.contains(&true)) {
                    Some(href) => {
                        events.push(Event::Html(link_open(&href, &title, None).into()));
                        links.push(true);
                    }
                    None => links.push(false),
                }
            }
            Event::Start(Tag::Image { dest_url, title, .. }) => {
                // No <img>: the CSP allows no remote images, and a link
                // leaks nothing until clicked.
                match safe_href(&dest_url).filter(|_| !links.contains(&true)) {
                    Some(href) => {
                        events.push(Event::Html(link_open(&href, &title, Some("image")).into()));
                        links.push(true);
                    }
                    None => links.push(false),
                }
                events.push(Event::Text("[image: ".into()));
            }
            Event::End(TagEnd::Link) => {
                if links.pop() == Some(true) {
                    events.push(Event::Html("</a>".into()));
                }
            }
            Event::End(TagEnd::Image) => {
                events.push(Event::Text("]".into()));
                if links.pop() == Some(true) {
                    events.push(Event::Html("</a>".into()));
                }
            }
            Event::Start(Tag::Table(aligns)) => {
                events.push(Event::Start(Tag::Table(vec![Alignment::None; aligns.len()])))
            }
            other => events.push(other),
        }
    }
    // pulldown-cmark closes every block at the end; just in case.
    if let Some((_, buf)) = code {
        events.push(Event::Html(code_block(None, &buf).into()));
    }
    let mut html = String::with_capacity(src.len() + src.len() / 4);
    pulldown_cmark::html::push_html(&mut html, events.into_iter());
    html
}

/// `<pre><code class="language-LANG">`, highlighted when the language is
/// known and the block is small enough.
pub(super) fn code_block(lang: Option<&str>, code: &str) -> String {
    // The class keeps only characters a language name has.
    let lang: Option<String> = lang
        .map(|l| l.chars().filter(|c| c.is_ascii_alphanumeric() || "+#._-".contains(*c)).take(32).collect())
        .filter(|l: &String| !l.is_empty());
    let mut out = String::with_capacity(code.len() + 64);
    out.push_str("<pre><code");
    if let Some(lang) = &lang {
        out.push_str(" class=\"language-");
        escape_into(&mut out, lang);
        out.push('"');
    }
    out.push('>');
    match lang.as_deref().and_then(|l| highlight(l, code)) {
        Some(h) => out.push_str(&h),
        None => escape_into(&mut out, code),
    }
    out.push_str("</code></pre>\n");
    out
}

/// Syntect's classed HTML for `code` (it escapes the text itself), or None
/// for an unknown language, a large block or a highlighter error.
pub(super) fn highlight(lang: &str, code: &str) -> Option<String> {
    if code.len() >= HIGHLIGHT_MAX {
        return None;
    }
    let lower = lang.to_ascii_lowercase();
    // Common names the default syntax set does not know by themselves.
    let token: Cow<str> = match lower.as_str() {
        "ts" | "typescript" | "tsx" | "jsx" | "mjs" | "cjs" => "js".into(),
        "shell" | "console" | "shellsession" | "zsh" | "sh-session" => "sh".into(),
        "jsonc" | "json5" | "jsonl" => "json".into(),
        "golang" => "go".into(),
        "py3" | "python3" => "py".into(),
        _ => lower.into(),
    };
    let syntax = SYNTAXES.find_syntax_by_token(&token)?;
    if syntax.name == "Plain Text" {
        return None;
    }
    let mut generator = ClassedHTMLGenerator::new_with_class_style(syntax, &SYNTAXES, HL);
    for line in LinesWithEndings::from(code) {
        generator.parse_html_for_line_which_includes_newline(line).ok()?;
    }
    Some(generator.finalize())
}
