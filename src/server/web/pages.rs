//! The pages' HTML (maud: every interpolated value is escaped). Pure
//! functions from what a handler read to markup; no I/O here.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::render;
use crate::server::search::{MARK_END, MARK_START};
use crate::server::web_store::{ListCursor, PageMessage, SearchHit, ShareInfo, ThreadPage, ThreadSummary};

/// What the header offers: nothing (sign-in, share links) or the signed-in
/// team's navigation.
pub enum Nav<'a> {
    Bare,
    Team { csrf: &'a str, q: &'a str },
}

/// An HTML answer. Pages are never cached: they show what a session or a
/// share link may see now, and either can end at any moment.
pub fn html_response(status: StatusCode, body: Markup) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

pub fn layout(title: &str, page: &str, nav: Nav<'_>, main: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) " · threadsync" }
                link rel="stylesheet" href="/assets/app.css";
                link rel="stylesheet" href="/assets/highlight.css";
                script src="/assets/app.js" defer {}
            }
            body data-page=(page) {
                a class="skip" href="#main" { "Skip to content" }
                @if let Nav::Team { csrf, q } = nav {
                    header class="top" {
                        nav aria-label="Main" {
                            a class="brand" href="/threads" { "threadsync" }
                        }
                        form role="search" action="/search" method="get" class="search" {
                            label for="q" { "Search threads" }
                            input id="q" name="q" type="search" value=(q) autocomplete="off"
                                placeholder="Words in any message";
                            button type="submit" { "Search" }
                        }
                        form method="post" action="/signout" class="signout" {
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                } @else {
                    header class="top bare" { span class="brand" { "threadsync" } }
                }
                main id="main" tabindex="-1" { (main) }
            }
        }
    }
}

pub fn error_page(status: StatusCode, message: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    html_response(
        status,
        layout(
            title,
            "error",
            Nav::Bare,
            html! {
                h1 { (title) }
                p { (message) }
                p { a href="/threads" { "Back to the threads" } }
            },
        ),
    )
}

pub fn not_found() -> Response {
    error_page(StatusCode::NOT_FOUND, "There is nothing here, or it is not yours to see.")
}

/// The server's store has no web pages (the in-memory store).
pub fn no_web() -> Response {
    error_page(StatusCode::NOT_FOUND, "This server does not serve web pages.")
}

pub fn signin(csrf: &str, error: Option<&str>) -> Markup {
    layout(
        "Sign in",
        "signin",
        Nav::Bare,
        html! {
            h1 { "Sign in" }
            p { "Paste your team's token (the one " code { "threadsync token create" } " printed). It is traded for a session here and never stored in the browser." }
            @if let Some(e) = error {
                p role="alert" class="error" { (e) }
            }
            form method="post" action="/signin" class="signin" {
                input type="hidden" name="csrf" value=(csrf);
                label for="token" { "Team token" }
                input id="token" name="token" type="password" autocomplete="off" required autofocus;
                button type="submit" { "Sign in" }
            }
        },
    )
}

/// Milliseconds since the epoch as RFC 3339 (UTC) and as shown.
pub fn times(ms: i64) -> (String, String) {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (h, min, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    (format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}Z"), format!("{y:04}-{m:02}-{d:02} {h:02}:{min:02} UTC"))
}

/// Milliseconds since the epoch as RFC 3339 (UTC).
pub fn rfc3339(ms: i64) -> String {
    times(ms).0
}

fn time(ms: i64) -> Markup {
    let (iso, shown) = times(ms);
    html! { time datetime=(iso) { (shown) } }
}

fn title_or_untitled(t: &str) -> &str {
    if t.trim().is_empty() { "Untitled" } else { t }
}

/// The `<ol id="threads">` (also the live update's fragment).
pub fn thread_list(threads: &[ThreadSummary]) -> Markup {
    html! {
        @if threads.is_empty() {
            p id="threads-empty" { "No threads yet. Threads appear here as editors and assistants sync them." }
        }
        ol id="threads" class="threads" {
            @for t in threads {
                li class="thread" data-thread=(t.id) {
                    a href={ "/t/" (t.id) } { (title_or_untitled(&t.title)) }
                    span class="meta" {
                        (time(t.updated))
                        " · "
                        span class="count" { (t.messages) @if t.messages == 1 { " message" } @else { " messages" } }
                    }
                }
            }
        }
    }
}

pub fn threads(csrf: &str, list: &[ThreadSummary], next: Option<&ListCursor>, first_page: bool) -> Markup {
    layout(
        "Threads",
        if first_page { "threads" } else { "threads-older" },
        Nav::Team { csrf, q: "" },
        html! {
            h1 { "Threads" }
            div id="threads-region" aria-live="polite" { (thread_list(list)) }
            nav aria-label="Pages" class="pages" {
                @if !first_page { a href="/threads" { "Newest threads" } }
                @if let Some(n) = next { a rel="next" href={ "/threads?before=" (n.encode()) } { "Older threads" } }
            }
        },
    )
}

/// A snippet with its marked words as `<mark>` (the rest escaped).
fn snippet(s: &str) -> Markup {
    html! {
        @for (i, part) in s.split(MARK_START).enumerate() {
            @if i == 0 {
                (part)
            } @else {
                @let (marked, rest) = part.split_once(MARK_END).unwrap_or((part, ""));
                mark { (marked) } (rest)
            }
        }
    }
}

/// The results (also search-as-you-type's fragment).
pub fn results(q: &str, hits: &[SearchHit]) -> Markup {
    html! {
        @if q.trim().is_empty() {
            p id="no-results" { "Type words to find the messages that hold them." }
        } @else if hits.is_empty() {
            p id="no-results" { "No messages match " q { (q) } "." }
        } @else {
            ol id="results" class="results" {
                @for h in hits {
                    li class="hit" {
                        a href={ "/t/" (h.thread) "#m-" (h.message) } { (title_or_untitled(&h.title)) }
                        span class="role" { (h.role) }
                        p class="snippet" { (snippet(&h.snippet)) }
                    }
                }
            }
        }
    }
}

pub fn search(csrf: &str, q: &str, hits: &[SearchHit]) -> Markup {
    layout(
        if q.is_empty() { "Search".to_string() } else { format!("Search: {q}") }.as_str(),
        "search",
        Nav::Team { csrf, q },
        html! {
            h1 { "Search" }
            div id="results-region" aria-live="polite" { (results(q, hits)) }
        },
    )
}

/// One message of a thread page (also a live update's fragment).
pub fn message(base: &str, pm: &PageMessage) -> Markup {
    let m = &pm.message;
    let content = m.content.value_or_null();
    let full = format!("{base}/m/{}", m.id);
    html! {
        li class="message" id={ "m-" (m.id) } data-id=(m.id) data-role=(m.role) {
            header {
                span class="role" { (m.role) }
                @if m.timestamp > 0 { " " (time(m.timestamp)) }
                @if let Some(a) = &pm.author { " " span class="machine" title="Pushed from" { (a) } }
                " "
                a class="permalink" href={ "#m-" (m.id) } aria-label="Link to this message" { "#" }
            }
            (render::body(&m.role, &content, &render::Opts { preview_bytes: render::PREVIEW_BYTES, full_url: &full }))
        }
    }
}

/// A thread page's parts that differ between the team's view and a share
/// link's.
pub struct ThreadCtx<'a> {
    /// `/t/<id>` or `/s/<secret>`: where its messages and updates are.
    pub base: &'a str,
    /// The signed-in team's CSRF token; None on a share link.
    pub csrf: Option<&'a str>,
    /// Index of the first message shown, and the page size.
    pub from: usize,
    pub per_page: usize,
}

pub fn thread(page: &ThreadPage, ctx: &ThreadCtx<'_>) -> Markup {
    let last = page.reaches_end(ctx.from);
    let nav = match ctx.csrf {
        Some(csrf) => Nav::Team { csrf, q: "" },
        None => Nav::Bare,
    };
    let source = page.env.get("source").and_then(|s| s.as_str());
    html! {
        (layout(title_or_untitled(&page.title), if ctx.csrf.is_some() { "thread" } else { "shared" }, nav, html! {
            h1 id="thread-title" { (title_or_untitled(&page.title)) }
            p class="meta" {
                @if let Some(s) = source { span class="source" { (s) } " · " }
                (page.total) " messages · last change " (time(page.updated))
                @if ctx.csrf.is_none() { " · shared read-only" }
            }
            @if ctx.from > 0 {
                p { a href={ (ctx.base) "?from=" (ctx.from.saturating_sub(ctx.per_page)) } { "Earlier messages" } }
            }
            ol id="messages" class="messages" data-base=(ctx.base) data-version=(page.version)
                data-count=(ctx.from + page.messages.len()) data-live=(if last { "1" } else { "0" })
                data-last=(page.messages.last().map_or(String::new(), |m| m.message.id.to_string())) {
                @for m in &page.messages { (message(ctx.base, m)) }
            }
            @if !last {
                p { a href={ (ctx.base) "?from=" (ctx.from + page.messages.len()) } { "Later messages" } }
            }
            @if let Some(csrf) = ctx.csrf {
                section class="share" aria-labelledby="share-h" {
                    h2 id="share-h" { "Share" }
                    p { "A read-only link to this thread alone, for anyone who has it, until it expires or is revoked." }
                    form method="post" action={ (ctx.base) "/shares" } {
                        input type="hidden" name="csrf" value=(csrf);
                        label for="expires" { "Expires" }
                        select id="expires" name="expires" {
                            option value="never" { "Never" }
                            option value="1h" { "In an hour" }
                            option value="1d" { "In a day" }
                            option value="7d" selected { "In a week" }
                            option value="30d" { "In 30 days" }
                        }
                        button type="submit" { "Share" }
                    }
                    p { a href={ (ctx.base) "/shares" } { "Links to this thread" } }
                }
            }
        }))
    }
}

impl ThreadPage {
    /// Whether the messages shown reach the thread's end.
    fn reaches_end(&self, from: usize) -> bool {
        from + self.messages.len() >= self.total
    }
}

/// One message alone (a deep link without JavaScript, "Show all").
pub fn message_page(title: &str, back: &str, csrf: Option<&str>, body: Markup) -> Markup {
    let nav = match csrf {
        Some(csrf) => Nav::Team { csrf, q: "" },
        None => Nav::Bare,
    };
    layout(
        title_or_untitled(title),
        "message",
        nav,
        html! {
            h1 { (title_or_untitled(title)) }
            p { a href=(back) { "Back to the thread" } }
            (body)
        },
    )
}

pub fn shares(csrf: &str, thread: &ThreadPage, list: &[ShareInfo], now: i64, created: Option<(&str, &str)>) -> Markup {
    let base = format!("/t/{}", thread.id);
    layout(
        "Share links",
        "shares",
        Nav::Team { csrf, q: "" },
        html! {
            h1 { "Share links" }
            p { "Of " a href=(base) { (title_or_untitled(&thread.title)) } }
            @if let Some((id, url)) = created {
                div class="created" role="status" {
                    label for="share-url" { "New link (shown once; copy it now)" }
                    input id="share-url" type="text" readonly value=(url) data-share=(id);
                }
            }
            @if list.is_empty() {
                p { "No links to this thread." }
            }
            ul id="shares" class="shares" {
                @for s in list {
                    li class="share" data-share=(s.id) {
                        code { (s.id) }
                        " made " (time(s.created))
                        @if let Some(r) = s.revoked {
                            " · revoked " (time(r))
                        } @else if !s.live(now) {
                            " · expired"
                        } @else {
                            @if let Some(e) = s.expires { " · expires " (time(e)) } @else { " · never expires" }
                            form method="post" action={ (base) "/shares/" (s.id) "/revoke" } class="inline" {
                                input type="hidden" name="csrf" value=(csrf);
                                button type="submit" aria-label={ "Revoke link " (s.id) } { "Revoke" }
                            }
                        }
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(times(0).0, "1970-01-01T00:00:00Z");
        assert_eq!(times(1_732_460_000_000).0, "2024-11-24T14:53:20Z");
        assert_eq!(times(951_782_400_000).0, "2000-02-29T00:00:00Z");
        assert_eq!(times(-1000).0, "1969-12-31T23:59:59Z");
    }

    #[test]
    fn snippets_escape_and_mark() {
        let s = snippet("a <b> \u{1}match\u{2} & \u{1}more\u{2}").into_string();
        assert_eq!(s, "a &lt;b&gt; <mark>match</mark> &amp; <mark>more</mark>");
    }
}
