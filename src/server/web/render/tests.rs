use super::*;
use serde_json::json;

fn escape(s: &str) -> String {
    let mut out = String::new();
    escape_into(&mut out, s);
    out
}

fn render(content: &Value) -> String {
    body("assistant", content, &Opts { preview_bytes: PREVIEW_BYTES, full_url: "/t/T1/m/M1" }).into_string()
}

fn md(s: &str) -> String {
    render(&json!(s))
}

/// No live markup from the content: no script or img elements, no
/// event-handler or style attributes, no javascript: URLs.
fn assert_inert(html: &str) {
    let lower = html.to_ascii_lowercase();
    for bad in ["<script", "<img", "<iframe", "<svg", "style=", "javascript:", "href=\"data:"] {
        assert!(!lower.contains(bad), "{bad:?} in {html}");
    }
    // An attribute starting with `on` would follow a space inside a
    // tag, outside quotes (our attributes are always double-quoted).
    let (mut in_tag, mut in_quote) = (false, false);
    for (i, b) in lower.bytes().enumerate() {
        match b {
            b'"' if in_tag => in_quote = !in_quote,
            b'<' if !in_quote => in_tag = true,
            b'>' if !in_quote => in_tag = false,
            b' ' if in_tag && !in_quote => {
                assert!(!lower[i + 1..].starts_with("on"), "event handler in {html}")
            }
            _ => {}
        }
    }
    assert!(!in_tag && !in_quote, "unbalanced markup in {html}");
}

const SCRIPT: &str = "<script>alert(1)</script>";
const IMG: &str = "<img src=x onerror=alert(1)>";

#[test]
fn script_and_img_in_text_are_escaped() {
    for s in [SCRIPT, IMG, &format!("hello {SCRIPT} and {IMG} inline"), &format!("para\n\n{IMG}\n\nmore")] {
        let html = md(s);
        assert_inert(&html);
        assert!(html.contains("&lt;script&gt;") || html.contains("&lt;img"), "{html}");
    }
}

#[test]
fn raw_html_blocks_are_shown_as_text() {
    let html = md("<div onclick=\"x()\">\n<b>bold?</b>\n</div>");
    assert_inert(&html);
    assert!(html.contains("<pre class=\"raw-html\">&lt;div onclick=\"x()\"&gt;\n&lt;b&gt;"), "{html}");
    assert!(!html.contains("<b>"), "{html}");
}

#[test]
fn script_in_code_is_escaped() {
    for s in [format!("`{SCRIPT}`"), format!("```html\n{SCRIPT}\n{IMG}\n```"), format!("```\n{IMG}\n```")] {
        let html = md(&s);
        assert_inert(&html);
        assert!(html.contains("alert(1)"), "{html}");
    }
}

#[test]
fn dangerous_links_are_dropped_to_text() {
    for url in [
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        "java\tscript:alert(1)",
        " javascript:alert(1)",
        "&#106;avascript:alert(1)",
        "vbscript:x",
        "data:text/html;base64,PHNjcmlwdD4=",
    ] {
        let html = md(&format!("[click](<{url}>) and [two]({url})"));
        assert!(!html.contains("<a "), "{url}: {html}");
        assert!(html.contains("click"), "{html}");
        let lower = html.to_ascii_lowercase();
        assert!(!lower.contains("href"), "{url}: {html}");
    }
    let html = md("<javascript:alert(1)>");
    assert!(!html.contains("<a "), "{html}");
    // Reference-style links too.
    let html = md("[x][r]\n\n[r]: javascript:alert(1)");
    assert!(!html.contains("<a "), "{html}");
}

#[test]
fn safe_links_are_kept_with_rel() {
    let html =
        md("[a](https://example.com/?q=1&r=\"2\") [b](/t/x) [c](#m-1) [d](mailto:a@b.c) <https://x.org> <me@x.org>");
    assert!(
        html.contains(r#"<a href="https://example.com/?q=1&amp;r=%222%22" rel="nofollow noopener noreferrer">a</a>"#)
            || html.contains(
                r#"<a href="https://example.com/?q=1&amp;r=&quot;2&quot;" rel="nofollow noopener noreferrer">a</a>"#
            ),
        "{html}"
    );
    assert!(html.contains(r#"<a href="/t/x" rel="nofollow noopener noreferrer">b</a>"#), "{html}");
    assert!(html.contains(r##"<a href="#m-1" rel="nofollow noopener noreferrer">c</a>"##), "{html}");
    assert!(html.contains(r#"<a href="mailto:a@b.c""#), "{html}");
    assert!(html.contains(r#"<a href="https://x.org""#), "{html}");
    assert!(html.contains(r#"<a href="mailto:me@x.org""#), "{html}");
    assert_eq!(html.matches("<a ").count(), html.matches("rel=\"nofollow noopener noreferrer\"").count());
}

#[test]
fn attribute_breakouts_in_links_are_escaped() {
    let html = md(r#"[x](https://e.com/"onmouseover="alert(1) "t" onclick='y') ![i](x.png "a\" onerror=\"b")"#);
    assert_inert(&html);
}

#[test]
fn images_become_links() {
    let html = md("![a cat](https://e.com/cat.png) ![bad](javascript:alert(1)) [![badge](https://b/x.svg)](https://b)");
    assert_inert(&html);
    assert!(
        html.contains(
            r#"<a href="https://e.com/cat.png" class="image" rel="nofollow noopener noreferrer">[image: a cat]</a>"#
        ),
        "{html}"
    );
    assert!(html.contains("[image: bad]"), "{html}");
    // A badge inside a link: one <a>, not nested ones.
    assert!(html.contains(r#"<a href="https://b" rel="nofollow noopener noreferrer">[image: badge]</a>"#), "{html}");
}

#[test]
fn markdown_basics() {
    let html = md(
        "# Title\n\nSome **bold**, *it*, ~~gone~~ and `code`.\n\n- one\n- two\n\n1. first\n\n> quoted\n\n| a | b |\n|:--|--:|\n| 1 | 2 |\n\n- [x] done\n",
    );
    for want in [
        "<h1>Title</h1>",
        "<strong>bold</strong>",
        "<em>it</em>",
        "<del>gone</del>",
        "<code>code</code>",
        "<li>one</li>",
        "<ol>",
        "<blockquote>",
        "<table>",
        "<td>2</td>",
        "type=\"checkbox\"",
    ] {
        assert!(html.contains(want), "{want} not in {html}");
    }
    assert!(html.starts_with("<div class=\"body\">") && html.ends_with("</div>"), "{html}");
    // Table alignment would be an inline style.
    assert!(!html.contains("style="), "{html}");
}

#[test]
fn code_blocks_are_highlighted_with_classes() {
    let html = md("```rust\nfn main() { let x = \"<b>\"; }\n```\n");
    assert!(html.contains("<pre><code class=\"language-rust\">"), "{html}");
    assert!(html.contains("class=\"hl-"), "{html}");
    assert!(html.contains("&lt;b&gt;"), "{html}");
    assert!(!html.contains("style="), "{html}");
    // Aliases and info strings with attributes.
    assert!(md("```ts {title=x}\nconst a = 1;\n```").contains("<pre><code class=\"language-ts\"><span class=\"hl-"));
    // Unknown language: the class, plain escaped text.
    let html = md("```nosuchlang\n<i>x</i>\n```");
    assert!(html.contains("<pre><code class=\"language-nosuchlang\">&lt;i&gt;x&lt;/i&gt;\n</code></pre>"), "{html}");
    // No language: plain.
    assert!(md("```\nplain\n```").contains("<pre><code>plain\n</code></pre>"));
    assert!(md("    indented\n").contains("<pre><code>indented\n</code></pre>"));
    // A hostile language name cannot leave the class attribute.
    let html = md("```\"><script>x\nx\n```");
    assert_inert(&html);
}

#[test]
fn large_code_blocks_are_not_highlighted() {
    let code = "let x = 1;\n".repeat(HIGHLIGHT_MAX / 10);
    let html =
        body("a", &json!(format!("```rust\n{code}```")), &Opts { preview_bytes: 1 << 20, full_url: "" }).into_string();
    assert!(html.contains("<pre><code class=\"language-rust\">let x = 1;"), "{}", &html[..200]);
    assert!(!html.contains("hl-"));
}

#[test]
fn tool_use_and_result_are_details() {
    let content = json!([
        {"type": "text", "text": "Running the tests."},
        {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "make test", "description": SCRIPT}},
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": format!("ok\n{IMG}"), "is_error": false},
        {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "boom"}], "is_error": true},
    ]);
    let html = render(&content);
    assert_inert(&html);
    assert!(html.contains("<p>Running the tests.</p>"), "{html}");
    assert!(
        html.contains("<details class=\"block tool\"><summary>Tool call: Bash — make test</summary><pre>{\n  &quot;command&quot;: &quot;make test&quot;"),
        "{html}"
    );
    assert!(html.contains("&lt;script&gt;"), "{html}");
    assert!(
        html.contains("<details class=\"block tool result\"><summary>Tool result — ok</summary><pre>ok\n&lt;img"),
        "{html}"
    );
    assert!(html.contains("<summary>Tool result (error) — boom</summary><pre>boom</pre>"), "{html}");
    assert!(!html.contains("load-full"));
}

#[test]
fn other_blocks() {
    let content = json!([
        {"type": "thinking", "thinking": "Hmm, *maybe*", "signature": "abc"},
        {"type": "redacted_thinking", "data": "xyz"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "mystery", "x": SCRIPT},
        "a bare string",
    ]);
    let html = render(&content);
    assert_inert(&html);
    assert!(
        html.contains("<details class=\"block thinking\"><summary>Thinking</summary><p>Hmm, <em>maybe</em></p>"),
        "{html}"
    );
    assert!(html.contains("<summary>Thinking (redacted)</summary>"), "{html}");
    assert!(html.contains("<p class=\"block image\">[image]</p>"), "{html}");
    assert!(!html.contains("iVBORw0KGgo"), "image data is not shown: {html}");
    assert!(html.contains("<details class=\"block meta\"><summary>mystery</summary><pre>{"), "{html}");
    assert!(html.contains("<p>a bare string</p>"), "{html}");
}

#[test]
fn tool_role_string_is_a_tool_result() {
    let html = body("tool", &json!("exit 0"), &Opts::default()).into_string();
    assert!(
        html.contains("<details class=\"block tool result\"><summary>Tool result — exit 0</summary><pre>exit 0</pre>"),
        "{html}"
    );
}

// -- Native session lines (shapes from src/sources/tests.rs and tests/assistants.rs) --

fn line(v: Value) -> Value {
    Value::String(v.to_string())
}

#[test]
fn claude_user_and_assistant_lines() {
    let user = r#"{"parentUuid":null,"isSidechain":false,"userType":"external","cwd":"/home/ann/src/api","sessionId":"3f0c9c1e-8a51-4d2b-9a0e-1c2d3e4f5a6b","version":"2.1.332","gitBranch":"main","type":"user","message":{"role":"user","content":"Fix the flaky **login** test\nplease"},"uuid":"a1","timestamp":"2026-12-06T10:00:01.250Z"}"#;
    let html = render(&json!(user));
    assert!(html.contains("<p>Fix the flaky <strong>login</strong> test"), "{html}");
    assert!(!html.contains("sessionId"), "{html}");
    assert_eq!(summary("user", &json!(user)), "Fix the flaky **login** test please");

    let assistant = r#"{"parentUuid":"a1","isSidechain":false,"cwd":"/home/ann/src/api","sessionId":"3f0c","type":"assistant","message":{"role":"assistant","content":[{"type":"text","text":"Looking — caf\u00e9 <script>alert(1)</script>"},{"type":"tool_use","id":"toolu_1","name":"Bash","input":{"command":"make test"}}]},"uuid":"a2","timestamp":"2026-12-06T10:00:02Z"}"#;
    let html = render(&json!(assistant));
    assert_inert(&html);
    assert!(html.contains("<p>Looking — café &lt;script&gt;"), "{html}");
    assert!(html.contains("<summary>Tool call: Bash — make test</summary>"), "{html}");

    let result = r#"{"type":"user","uuid":"r1","message":{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"ok","is_error":false}]},"toolUseResult":{"stdout":"ok","stderr":"","interrupted":false}}"#;
    let html = render(&json!(result));
    assert!(
        html.contains(
            "<details class=\"block tool result\"><summary>Tool result — ok</summary><pre>ok</pre></details>"
        ),
        "{html}"
    );
    assert_eq!(summary("user", &json!(result)), "Tool result — ok");
}

#[test]
fn claude_bookkeeping_lines_are_meta() {
    for (l, label) in [
        (
            json!({"type":"queue-operation","operation":"enqueue","timestamp":"2026-12-06T10:00:00.000Z","sessionId":"3f0c"}),
            "queue-operation",
        ),
        (
            json!({"type":"summary","summary":"Flaky login test fixed","leafUuid":"a2"}),
            "Summary — Flaky login test fixed",
        ),
        (json!({"type":"custom-title","customTitle":"Login","sessionId":"3f0c"}), "Title — Login"),
        (
            json!({"type":"file-history-snapshot","messageId":"m1","snapshot":{"trackedFileBackups":{}},"isSnapshotUpdate":false}),
            "file-history-snapshot",
        ),
        (
            json!({"type":"system","subtype":"compact_boundary","content":"Conversation compacted","uuid":"s1"}),
            "System — Conversation compacted",
        ),
        (
            json!({"type":"user","isMeta":true,"uuid":"u0","message":{"role":"user","content":"<local-command-caveat>Caveat: …</local-command-caveat>"}}),
            "Meta — <local-command-caveat>Caveat: …</local-command-caveat>",
        ),
    ] {
        let html = render(&line(l.clone()));
        let want = format!("<details class=\"block meta\"><summary>{}</summary><pre>{{", escape(label));
        assert!(html.contains(&want), "{want} not in {html}");
        assert_inert(&html);
        assert_eq!(summary("x", &line(l)), label);
    }
}

#[test]
fn codex_lines() {
    let msg = json!({"timestamp":"2026-12-06T10:00:01Z","type":"response_item","payload":{"type":"message","role":"user","content":[{"type":"input_text","text":"<environment_context>\n  <cwd>/w/api</cwd>\n</environment_context>"},{"type":"input_text","text":"Add a `--json` flag"}]}});
    let html = render(&line(msg.clone()));
    assert!(html.contains("<summary>Context</summary>"), "{html}");
    assert!(html.contains("<p>Add a <code>--json</code> flag</p>"), "{html}");
    assert_eq!(summary("user", &line(msg)), "Add a `--json` flag");

    let out = json!({"timestamp":"2026-12-06T10:00:02Z","type":"response_item","payload":{"type":"message","role":"assistant","content":[{"type":"output_text","text":"Done <b>now</b>."}]}});
    assert!(render(&line(out)).contains("<p>Done &lt;b&gt;now&lt;/b&gt;.</p>"));

    let call = json!({"timestamp":"2026-12-06T10:00:03Z","type":"response_item","payload":{"type":"function_call","name":"exec_command","arguments":"{\"cmd\":\"cat secrets.env\",\"workdir\":\"/w/api\"}","call_id":"call_9"}});
    let html = render(&line(call.clone()));
    assert!(
        html.contains("<details class=\"block tool\"><summary>Tool call: exec_command — cat secrets.env</summary><pre>{\n  &quot;cmd&quot;: &quot;cat secrets.env&quot;"),
        "{html}"
    );
    assert_eq!(summary("function_call", &line(call)), "Tool call: exec_command — cat secrets.env");
    let shell = json!({"type":"response_item","payload":{"type":"function_call","name":"shell","arguments":"{\"command\":[\"bash\",\"-lc\",\"make test\"]}","call_id":"c"}});
    assert!(render(&line(shell)).contains("<summary>Tool call: shell — bash -lc make test</summary>"));

    let output = json!({"timestamp":"2026-12-06T10:00:04Z","type":"response_item","payload":{"type":"function_call_output","call_id":"call_9","output":"Process exited with code 0\nOutput:\n<script>alert(1)</script>"}});
    let html = render(&line(output));
    assert_inert(&html);
    assert!(
        html.contains("<details class=\"block tool result\"><summary>Tool result — Process exited with code 0</summary><pre>Process exited"),
        "{html}"
    );

    let reasoning = json!({"type":"response_item","payload":{"type":"reasoning","summary":[{"type":"summary_text","text":"**Planning** the flag"}],"content":null,"encrypted_content":"gAAAA"}});
    let html = render(&line(reasoning));
    assert!(
        html.contains(
            "<details class=\"block thinking\"><summary>Thinking</summary><p><strong>Planning</strong> the flag</p>"
        ),
        "{html}"
    );
    let encrypted =
        json!({"type":"response_item","payload":{"type":"reasoning","summary":[],"encrypted_content":"gAAAA"}});
    assert!(render(&line(encrypted)).contains("<summary>Thinking (redacted)</summary>"));

    let developer = json!({"type":"response_item","payload":{"type":"message","role":"developer","content":[{"type":"input_text","text":"<permissions instructions>…"}]}});
    assert!(
        render(&line(developer)).contains("<details class=\"block meta\"><summary>Instructions (developer)</summary>")
    );

    for (l, label) in [
        (
            json!({"timestamp":"2026-12-06T10:00:00.5Z","type":"session_meta","payload":{"id":"0199a1b2","cwd":"/w/api","cli_version":"0.171.0"}}),
            "session_meta",
        ),
        (json!({"type":"turn_context","payload":{"cwd":"/w/api","model":"gpt-5"}}), "turn_context"),
        (
            json!({"type":"event_msg","payload":{"type":"user_message","message":"Add a --json flag"}}),
            "event_msg: user_message",
        ),
        (json!({"type":"event_msg","payload":{"type":"token_count"}}), "event_msg: token_count"),
        (json!({"type":"compacted","payload":{"message":"summary"}}), "compacted"),
    ] {
        let html = render(&line(l));
        assert!(
            html.contains(&format!("<details class=\"block meta\"><summary>{label}</summary><pre>{{")),
            "{label}: {html}"
        );
    }
}

#[test]
fn gemini_lines() {
    let header = json!({"sessionId":"5e6f","projectHash":"ab","startTime":"2026-12-06T10:00:00Z","kind":"main"});
    assert!(render(&line(header)).contains("<details class=\"block meta\"><summary>Session start</summary>"));
    assert!(render(&line(json!({"$rewindTo":"u1"}))).contains("<summary>Rewind to u1</summary>"));
    assert!(render(&line(json!({"$set":{"summary":"x"}}))).contains("<summary>Session update ($set)</summary>"));

    let user =
        json!({"id":"u1","timestamp":"2026-12-06T10:00:01Z","type":"user","content":[{"text":"Explain the *cache*"}]});
    let html = render(&line(user.clone()));
    assert!(html.contains("<p>Explain the <em>cache</em></p>"), "{html}");
    assert_eq!(summary("user", &line(user)), "Explain the *cache*");

    let gemini = json!({
        "id":"g1","timestamp":"2026-12-06T10:00:02Z","type":"gemini","content":"Let me look.","model":"gemini-2.5-pro",
        "thoughts":[{"subject":"Reading","description":"I should read the env file","timestamp":"2026-12-06T10:00:02Z"}],
        "toolCalls":[{"id":"run_shell_command-1","name":"run_shell_command","args":{"command":"cat secrets.env"},
            "result":[{"functionResponse":{"id":"run_shell_command-1","name":"run_shell_command","response":{"output":"API_TOKEN=<script>alert(1)</script>"}}}],
            "status":"success","resultDisplay":"API_TOKEN=…","displayName":"Shell"}]
    });
    let html = render(&line(gemini));
    assert_inert(&html);
    assert!(html.contains("<details class=\"block thinking\"><summary>Thinking</summary><p>Reading</p>\n<p>I should read the env file</p>"), "{html}");
    assert!(html.contains("<p>Let me look.</p>"), "{html}");
    assert!(html.contains("<summary>Tool call: run_shell_command — cat secrets.env</summary>"), "{html}");
    assert!(html.contains("<summary>Tool result — API_TOKEN=&lt;script&gt;alert(1)&lt;/script&gt;</summary><pre>API_TOKEN=&lt;script&gt;"), "{html}");

    let response = json!({"id":"g1_response","timestamp":"t","type":"user","content":[{"functionResponse":{"id":"r1","name":"run_shell_command","response":{"output":"done"}}}]});
    assert!(
        render(&line(response))
            .contains("<details class=\"block tool result\"><summary>Tool result — done</summary><pre>done</pre>")
    );

    let info = json!({"id":"i1","timestamp":"t","type":"info","content":"Request cancelled."});
    assert!(render(&line(info)).contains("<details class=\"block meta\"><summary>info — Request cancelled.</summary>"));
}

#[test]
fn json_looking_text_that_is_no_session_line_stays_text() {
    assert!(md(r#"{"a": 1}"#).contains("<p>{\"a\": 1}</p>"));
    assert!(md("{not json}").contains("<p>{not json}</p>"));
    // An unknown record with a type: meta.
    assert!(
        md(r#"{"type":"new-thing","x":"<script>"}"#)
            .contains("<details class=\"block meta\"><summary>new-thing</summary>")
    );
    let html = md(r#"{"type":"<img src=x onerror=alert(1)>"}"#);
    assert_inert(&html);
}

// -- Size limits --

#[test]
fn large_text_is_previewed_with_a_link() {
    let text = "word ".repeat(300_000); // 1.5 MB
    let html = render(&json!(text));
    assert!(
        html.contains("<a class=\"load-full\" href=\"/t/T1/m/M1\">Show all (1.4 MB)</a>"),
        "{}",
        &html[html.len() - 200..]
    );
    assert!(html.len() < PREVIEW_BYTES + 10 * 1024, "{}", html.len());
    // Small: no link.
    assert!(!md("short").contains("load-full"));
}

#[test]
fn rendering_five_megabytes_is_bounded() {
    let opts = Opts { preview_bytes: PREVIEW_BYTES, full_url: "/x" };
    let big = "x".repeat(5 << 20);
    let code = format!("```rust\n{}\n```", "let a = b + c; // <script>\n".repeat(200_000));
    let cases = [
        json!(big),
        json!(code),
        json!([{"type": "text", "text": big}]),
        json!([{"type": "tool_use", "name": "Write", "input": {"file_path": "/a", "content": big}}]),
        json!([{"type": "tool_result", "tool_use_id": "t", "content": big}]),
        Value::Array(vec![json!({"type": "text", "text": ""}); 1_000_000]),
        Value::Array(vec![json!({"type": "mystery"}); 200_000]),
        line(json!({"type":"assistant","message":{"role":"assistant","content":[{"type":"text","text":big}]}})),
        line(
            json!({"type":"response_item","payload":{"type":"function_call","name":"apply_patch","arguments":json!({"patch": big}).to_string()}}),
        ),
        line(json!({"type":"response_item","payload":{"type":"function_call_output","call_id":"c","output":big}})),
        line(json!({"type":"session_meta","payload":{"instructions":big}})),
    ];
    for (i, content) in cases.iter().enumerate() {
        let start = std::time::Instant::now();
        let html = body("assistant", content, &opts).into_string();
        let took = start.elapsed();
        // Escaping lengthens `<` fourfold, so only benign text has the
        // tight bound; any content is bounded by the preview.
        let benign = !matches!(i, 1 | 6);
        assert!(!benign || html.len() < PREVIEW_BYTES + 10 * 1024, "case {i}: {} bytes", html.len());
        assert!(html.len() < 4 * PREVIEW_BYTES, "case {i}: {} bytes", html.len());
        assert!(html.contains("<a class=\"load-full\" href=\"/x\">Show all ("), "case {i}");
        assert!(took.as_secs() < 5, "case {i} took {took:?}");
        assert_inert(&html);
    }
}

#[test]
fn preview_cuts_on_a_character_boundary() {
    let text = "é".repeat(100);
    // The budget pays a fixed cost per part before the text.
    let html = body("u", &json!(text), &Opts { preview_bytes: PART_COST + 101, full_url: "/f" }).into_string();
    assert!(html.contains("load-full"), "{html}");
    assert!(html.contains(&"é".repeat(50)), "{html}");
    assert!(!html.contains(&"é".repeat(51)), "{html}");
}

#[test]
fn sizes_and_summaries() {
    assert_eq!(human_size(500), "500 bytes");
    assert_eq!(human_size(64 * 1024), "64 KB");
    assert_eq!(human_size(1_258_291), "1.2 MB");
    assert_eq!(human_size(1_048_000), "1.0 MB", "never 1023 KB");
    let long = "a ".repeat(1000);
    let s = summary("user", &json!(long));
    assert!(s.chars().count() <= 200 && s.ends_with('…'), "{s}");
    assert_eq!(summary("user", &json!("  two\n\nlines  ")), "two lines");
    assert_eq!(summary("user", &json!([{"type": "image", "source": {}}])), "[image]");
    assert_eq!(
        summary(
            "assistant",
            &json!([{"type": "thinking", "thinking": "..."}, {"type": "tool_use", "name": "Read", "input": {"file_path": "/etc/hosts"}}])
        ),
        "Tool call: Read — /etc/hosts"
    );
    assert_eq!(summary("assistant", &json!([{"type": "thinking", "thinking": "..."}])), "Thinking");
    assert_eq!(
        summary("assistant", &json!([{"type": "tool_use", "name": "Read", "input": {"file_path": "/etc/hosts"}}])),
        "Tool call: Read — /etc/hosts"
    );
    assert_eq!(summary("user", &Value::Null), "");
    // Plain text: not escaped here (the template escapes it).
    assert_eq!(summary("user", &json!(SCRIPT)), SCRIPT);
}

#[test]
fn css_has_both_themes_and_no_inline_markup() {
    let css = highlight_css();
    assert!(css.contains(".hl-keyword"), "{css}");
    assert!(css.contains("@media (prefers-color-scheme: dark) {"));
    let (light, dark) = css.split_once("@media").unwrap();
    assert!(light.contains("GitHub") && dark.contains("Ocean Dark"), "{css}");
    assert!(css.contains("pre:has(> code[class*=\"language-\"])"));
}
