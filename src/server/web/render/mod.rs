//! Message bodies for the web pages: one stored message as safe HTML.
//!
//! Everything here treats message content as hostile. The page's CSP
//! forbids inline scripts and styles, and on top of that nothing from a
//! message ever reaches the output unescaped: markdown's raw HTML is shown
//! as text, links keep only harmless schemes, images become links, and
//! syntax highlighting emits classes (`hl-…`, styled by
//! [`highlight_css`]), never `style` attributes.
//!
//! Content comes in three shapes:
//! 1. a string: markdown;
//! 2. an array of content blocks (Anthropic style: `text`, `tool_use`,
//!    `tool_result`, `thinking`, `image`, …);
//! 3. a string holding one verbatim line of an assistant CLI's session file
//!    (Claude Code, Codex, Gemini CLI), which threadsync syncs as it is:
//!    parsed and shown as what it means rather than as a wall of JSON.
//!
//! All three are first reduced to a flat list of [`Part`]s, which both
//! [`body`] and [`summary`] walk. Rendering spends a byte budget
//! (`Opts::preview_bytes`): once it is spent the rest is left out and a
//! "Show all" link is added, so the work done (markdown parsing,
//! highlighting, pretty-printing) is bounded by the budget, not by the
//! size of the message.
//!
//! Adapting to `crate::model::Message`: call
//! `body(&m.role, m.content.value().unwrap_or(&Value::Null), &opts)`.

use std::io;
use std::sync::LazyLock;

use maud::{Markup, PreEscaped, html};
use serde_json::Value;
use syntect::highlighting::ThemeSet;
use syntect::html::{ClassStyle, css_for_theme_with_class_style};
use syntect::parsing::SyntaxSet;

/// How much of a message is rendered before "Show all" (16 KiB: a page of
/// a thousand messages stays a few megabytes at worst).
pub const PREVIEW_BYTES: usize = 16 * 1024;

/// Code blocks this big or bigger are shown plain: highlighting is the
/// slowest thing done here.
const HIGHLIGHT_MAX: usize = 64 * 1024;

/// What each part costs from the budget besides its text (about what its
/// markup adds), so that a message of a million empty blocks is bounded too.
const PART_COST: usize = 64;

/// How deep content nests (tool results holding blocks holding …) before
/// the rest is shown as JSON.
const MAX_DEPTH: usize = 8;

/// Longest [`summary`], in characters.
const SUMMARY_CHARS: usize = 200;

/// Longest label or short description inside a `<summary>`, in characters.
const LABEL_CHARS: usize = 80;

/// Class prefix of syntect's highlight spans (`hl-keyword`, …).
const HL: ClassStyle = ClassStyle::SpacedPrefixed { prefix: "hl-" };

// Loaded once: deserialising syntect's dumps takes tens of milliseconds.
static SYNTAXES: LazyLock<SyntaxSet> = LazyLock::new(SyntaxSet::load_defaults_newlines);
static THEMES: LazyLock<ThemeSet> = LazyLock::new(ThemeSet::load_defaults);

/// How to render one message body.
#[derive(Clone, Copy, Debug)]
pub struct Opts<'a> {
    /// Bytes of content rendered before the rest is left to "Show all".
    pub preview_bytes: usize,
    /// Where "Show all" leads (the message alone, rendered in full).
    pub full_url: &'a str,
}

impl Default for Opts<'_> {
    fn default() -> Self {
        Opts { preview_bytes: PREVIEW_BYTES, full_url: "" }
    }
}

/// The body of one message: `<div class="body">…</div>`, with a preview and
/// an `<a class="load-full">` link when the message is larger than
/// `opts.preview_bytes`.
pub fn body(role: &str, content: &Value, opts: &Opts) -> Markup {
    let native = native_line(content);
    let mut collect = Collect { left: opts.preview_bytes / PART_COST + 1, cut: false };
    let mut parts = Vec::new();
    match &native {
        Some(line) => native_parts(&mut collect, &mut parts, line),
        None => top_parts(&mut collect, &mut parts, role, content),
    }
    let mut out = Out { left: opts.preview_bytes, cut: collect.cut };
    let inner = out.parts(&parts);
    html! {
        div class="body" {
            (inner)
            @if out.cut {
                a class="load-full" href=(opts.full_url) { "Show all (" (human_size(content_size(content))) ")" }
            }
        }
    }
}

/// One line summarising a message, for lists and tooltips: plain text (not
/// HTML-escaped; the template escapes it), at most 200 characters.
pub fn summary(role: &str, content: &Value) -> String {
    let native = native_line(content);
    // Only the first few parts can matter.
    let mut collect = Collect { left: 64, cut: false };
    let mut parts = Vec::new();
    match &native {
        Some(line) => native_parts(&mut collect, &mut parts, line),
        None => top_parts(&mut collect, &mut parts, role, content),
    }
    // What was said wins over tool calls, thinking and bookkeeping.
    let said = parts.iter().find_map(|p| match p {
        Part::Markdown(s) | Part::Plain(s) => Some(*s).filter(|s| !s.trim().is_empty()),
        _ => None,
    });
    // Then what was done; thinking and bookkeeping last.
    let line = match said {
        Some(s) => one_line(s, SUMMARY_CHARS),
        None => parts
            .iter()
            .find(|p| !matches!(p, Part::Thinking { .. } | Part::Meta { .. }))
            .or(parts.first())
            .map(part_label)
            .unwrap_or_default(),
    };
    clip(&line, SUMMARY_CHARS)
}

/// CSS for the highlight classes: the light theme, and the dark one inside
/// `@media (prefers-color-scheme: dark)`.
pub fn highlight_css() -> String {
    let css = |name: &str| {
        let css = THEMES.themes.get(name).and_then(|t| css_for_theme_with_class_style(t, HL).ok()).unwrap_or_default();
        // The theme's colours for the block itself: rendered code blocks
        // carry `language-…`, not syntect's `hl-code`.
        css.replacen(".hl-code {", ".hl-code, pre:has(> code[class*=\"language-\"]) {", 1)
    };
    format!("{}\n@media (prefers-color-scheme: dark) {{\n{}}}\n", css("InspiredGitHub"), css("base16-ocean.dark"))
}

mod markdown;
mod parts;
#[cfg(test)]
mod tests;

use self::markdown::*;
use self::parts::*;

// ---------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------

/// Renders parts while the byte budget lasts.
struct Out {
    left: usize,
    cut: bool,
}

impl Out {
    /// As much of `s` as the budget allows.
    fn take<'s>(&mut self, s: &'s str) -> &'s str {
        if s.len() <= self.left {
            self.left -= s.len();
            return s;
        }
        self.cut = true;
        let head = preview_cut(s, self.left);
        self.left = 0;
        head
    }

    fn parts(&mut self, parts: &[Part]) -> Markup {
        let mut html = String::new();
        for part in parts {
            if self.left < PART_COST {
                self.cut = true;
                break;
            }
            self.left -= PART_COST;
            html.push_str(&self.part(part).into_string());
        }
        PreEscaped(html)
    }

    fn part(&mut self, part: &Part) -> Markup {
        match part {
            Part::Markdown(s) => {
                let head = self.take(s);
                PreEscaped(markdown(head, head.len() < s.len()))
            }
            Part::Plain(s) => html! { pre { (self.take(s)) } },
            Part::ToolCall { name, input } => {
                let short = input_summary(input);
                let shown = match input {
                    Input::Json(v) => self.json(v),
                    // Parse only what fits: the pretty form is longer still.
                    Input::JsonText(s) => match serde_json::from_str::<Value>(s) {
                        Ok(v) if s.len() <= self.left => self.json(&v),
                        _ => self.take(s).to_string(),
                    },
                    Input::Text(s) => self.take(s).to_string(),
                };
                html! {
                    details class="block tool" {
                        summary {
                            "Tool call: " (clip(name, LABEL_CHARS))
                            @if !short.is_empty() { " — " (short) }
                        }
                        pre { (shown) }
                    }
                }
            }
            Part::ToolResult { parts, is_error } => {
                let first = parts.iter().find_map(|p| match p {
                    Part::Plain(s) | Part::Markdown(s) => Some(first_line(s, LABEL_CHARS)).filter(|l| !l.is_empty()),
                    _ => None,
                });
                let inner = self.parts(parts);
                html! {
                    details class="block tool result" {
                        summary {
                            "Tool result"
                            @if *is_error { " (error)" }
                            @if let Some(first) = first { " — " (first) }
                        }
                        (inner)
                    }
                }
            }
            Part::Thinking { parts, redacted } => {
                let inner = self.parts(parts);
                html! {
                    details class="block thinking" {
                        summary { @if *redacted { "Thinking (redacted)" } @else { "Thinking" } }
                        (inner)
                    }
                }
            }
            Part::Image => html! { p class="block image" { "[image]" } },
            Part::Meta { label, value } => {
                let shown = self.json(value);
                html! {
                    details class="block meta" {
                        summary { (label) }
                        pre { (shown) }
                    }
                }
            }
        }
    }

    /// Pretty JSON, no longer than the budget: serialisation stops there,
    /// so a megabyte of input is never printed whole.
    fn json(&mut self, v: &Value) -> String {
        let mut w = Capped { buf: Vec::new(), cap: self.left };
        let complete = serde_json::to_writer_pretty(&mut w, v).is_ok();
        let text = match std::str::from_utf8(&w.buf) {
            Ok(s) => s,
            // Cut inside a character: keep the whole ones.
            Err(e) => std::str::from_utf8(&w.buf[..e.valid_up_to()]).unwrap_or(""),
        };
        if !complete {
            self.cut = true;
        }
        self.left -= text.len().min(self.left);
        text.to_string()
    }
}

/// A writer that takes `cap` bytes and then fails.
struct Capped {
    buf: Vec<u8>,
    cap: usize,
}

impl io::Write for Capped {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let room = self.cap - self.buf.len();
        if b.len() > room {
            self.buf.extend_from_slice(&b[..room]);
            return Err(io::Error::other("preview is full"));
        }
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Counts bytes written.
struct Counter(usize);

impl io::Write for Counter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0 += b.len();
        Ok(b.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A message's size as shown by "Show all": a string's bytes, else its
/// compact JSON's.
fn content_size(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len(),
        other => {
            let mut n = Counter(0);
            // Writing to a counter cannot fail.
            let _ = serde_json::to_writer(&mut n, other);
            n.0
        }
    }
}

/// A short description of a tool call's input for its `<summary>`: the
/// field people recognise (a command, a path, a pattern…), else the input
/// on one line.
fn input_summary(input: &Input) -> String {
    const KEYS: [&str; 12] = [
        "command",
        "cmd",
        "file_path",
        "path",
        "pattern",
        "query",
        "url",
        "description",
        "prompt",
        "file",
        "dir_path",
        "absolute_path",
    ];
    let pick = |v: &Value| -> String {
        for key in KEYS {
            match v.get(key) {
                Some(Value::String(s)) => return first_line(s, LABEL_CHARS),
                // Codex's shell takes argv: ["bash", "-lc", "make test"].
                Some(Value::Array(argv)) => {
                    let words: Vec<&str> = argv.iter().take(16).filter_map(Value::as_str).collect();
                    return one_line(&words.join(" "), LABEL_CHARS);
                }
                _ => {}
            }
        }
        match v {
            Value::Null => String::new(),
            Value::Object(o) => {
                o.values().find_map(Value::as_str).map(|s| one_line(s, LABEL_CHARS)).unwrap_or_default()
            }
            Value::String(s) => one_line(s, LABEL_CHARS),
            _ => String::new(),
        }
    };
    match input {
        Input::Json(v) => pick(v),
        // Parsing megabytes of arguments for a label is not worth it.
        Input::JsonText(s) if s.len() <= 16 * 1024 => match serde_json::from_str::<Value>(s) {
            Ok(v) => pick(&v),
            Err(_) => one_line(s, LABEL_CHARS),
        },
        Input::JsonText(s) | Input::Text(s) => one_line(s, LABEL_CHARS),
    }
}

/// A part as one line of plain text, for [`summary`].
fn part_label(p: &Part) -> String {
    match p {
        Part::Markdown(s) | Part::Plain(s) => one_line(s, SUMMARY_CHARS),
        Part::ToolCall { name, input } => {
            let short = input_summary(input);
            let name = clip(name, LABEL_CHARS);
            if short.is_empty() { format!("Tool call: {name}") } else { format!("Tool call: {name} — {short}") }
        }
        Part::ToolResult { parts, is_error } => {
            let first = parts.iter().find_map(|p| match p {
                Part::Plain(s) | Part::Markdown(s) => Some(first_line(s, LABEL_CHARS)).filter(|l| !l.is_empty()),
                _ => None,
            });
            let head = if *is_error { "Tool result (error)" } else { "Tool result" };
            match first {
                Some(f) => format!("{head} — {f}"),
                None => head.to_string(),
            }
        }
        Part::Thinking { .. } => "Thinking".into(),
        Part::Image => "[image]".into(),
        Part::Meta { label, .. } => label.clone(),
    }
}

/// The start of `s` with its whitespace runs made single spaces, at most
/// `max` characters. Looks at a bounded prefix only.
fn one_line(s: &str, max: usize) -> String {
    let head = preview_cut(s, max * 4 + 64);
    let mut out = String::new();
    for word in head.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
        if out.chars().count() > max {
            break;
        }
    }
    clip(&out, max)
}

/// The first line of `s` that is not blank, as [`one_line`] makes it.
fn first_line(s: &str, max: usize) -> String {
    let head = preview_cut(s, 64 * 1024);
    one_line(head.lines().find(|l| !l.trim().is_empty()).unwrap_or(""), max)
}

/// At most `max` characters, with `…` when cut.
fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some(_) => {
            let keep: String = s.chars().take(max.saturating_sub(1)).collect();
            format!("{keep}…")
        }
    }
}

/// The first at most `n` bytes of `s`, ending on a character boundary and,
/// when one is near the end, after a line break (a cut mid-line reads
/// worse and can split a markdown construct).
fn preview_cut(s: &str, n: usize) -> &str {
    if s.len() <= n {
        return s;
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let head = &s[..end];
    match head.rfind('\n') {
        Some(i) if end - i <= 1024 => &head[..=i],
        _ => head,
    }
}

/// `1.2 MB` (binary multiples, as the spec's "64 KB" is 64 KiB).
fn human_size(n: usize) -> String {
    const UNITS: [&str; 4] = ["KB", "MB", "GB", "TB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut size = n as f64 / 1024.0;
    let mut unit = 0;
    // 1000 and up in the next unit: "1.0 MB", never "1024 KB".
    while size >= 1000.0 && unit + 1 < UNITS.len() {
        size /= 1024.0;
        unit += 1;
    }
    if size < 10.0 { format!("{size:.1} {}", UNITS[unit]) } else { format!("{size:.0} {}", UNITS[unit]) }
}
