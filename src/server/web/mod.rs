//! The team's threads on the web, served by `threadsync serve` itself:
//! sign in with the team token, the thread list, search, a thread page,
//! and read-only share links. Handlers here read the store and hand what
//! they read to `pages` (markup) and `render` (a message's body); sessions
//! and the forms' anti-forgery checks are `session`'s, share links
//! `share`'s.
//!
//! Every answer carries a strict Content-Security-Policy (scripts and
//! styles only from `/assets`, nothing inline), `Referrer-Policy:
//! same-origin` (a share link's secret never leaves in a Referer; forms
//! still carry their `Origin`) and `no-store`. Reading needs
//! no JavaScript; the script adds live updates, search as you type and
//! "Show all" in place.

mod pages;
pub mod render;
pub use self::pages::rfc3339;
mod session;
pub mod share;

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use self::pages::{ThreadCtx, html_response, not_found};
use self::session::{Browser, SESSION_COOKIE, SESSION_DAYS, SIGNIN_COOKIE, cookie, now_ms, random_hex, set_cookie};
use crate::model::{MessageId, ThreadId};
use crate::ops::Effect;
use crate::server::core::{StoreError, TeamId};
use crate::server::http::{AppState, blocking};
use crate::server::search::Query as SearchQuery;
use crate::server::store::{StoreExt, token_hash};
use crate::server::web_store::{ListCursor, ThreadPage, WebStore};

/// Threads per page of the list.
const LIST_PAGE: usize = 50;
/// Messages per page of a thread.
const THREAD_PAGE: usize = 1000;
/// Search results shown.
const HITS: usize = 30;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/signin", get(signin_form).post(signin))
        .route("/signout", post(signout))
        .route("/threads", get(threads))
        .route("/events", get(events))
        .route("/search", get(search))
        .route("/t/{id}", get(thread))
        .route("/t/{id}/since", get(thread_since))
        .route("/t/{id}/m/{message}", get(thread_message))
        .route("/t/{id}/shares", get(share::list).post(share::create))
        .route("/t/{id}/shares/{share}/revoke", post(share::revoke))
        .route("/s/{secret}", get(share::thread))
        .route("/s/{secret}/since", get(share::since))
        .route("/s/{secret}/m/{message}", get(share::message))
        .route("/s/{secret}/events", get(share::events))
        .route("/assets/{file}", get(asset))
        .layer(middleware::from_fn(security_headers))
}

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

async fn security_headers(req: axum::extract::Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

/// Runs a web query off the async threads; a storage failure is an error
/// page.
async fn read<R: Send + 'static>(
    s: &AppState,
    f: impl FnOnce(&dyn WebStore) -> Result<R, StoreError> + Send + 'static,
) -> Result<R, Response> {
    let store = s.store.clone();
    blocking(move || match store.web() {
        Some(w) => f(w),
        None => Err(StoreError::new("this store serves no web pages")),
    })
    .await
    .map_err(|_| pages::error_page(StatusCode::SERVICE_UNAVAILABLE, "The server could not read its data; try again."))
}

async fn home(headers: HeaderMap) -> Redirect {
    if cookie(&headers, SESSION_COOKIE).is_some() { Redirect::to("/threads") } else { Redirect::to("/signin") }
}

// ----- signing in and out ---------------------------------------------------

async fn signin_form(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if s.store.web().is_none() {
        return pages::no_web();
    }
    signin_page(&headers, StatusCode::OK, None)
}

/// The sign-in form with a fresh anti-forgery cookie (login CSRF: a
/// forged sign-in would put the victim in the attacker's team).
fn signin_page(headers: &HeaderMap, status: StatusCode, error: Option<&str>) -> Response {
    let csrf = random_hex(16);
    let mut r = html_response(status, pages::signin(&csrf, error));
    if let Ok(v) = HeaderValue::from_str(&set_cookie(headers, SIGNIN_COOKIE, &csrf, 3600)) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

#[derive(Deserialize)]
struct SigninForm {
    token: Option<String>,
    csrf: Option<String>,
}

async fn signin(
    State(s): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<SigninForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    if s.store.web().is_none() {
        return pages::no_web();
    }
    let Ok(Form(form)) = form else {
        return signin_page(&headers, StatusCode::BAD_REQUEST, Some("The form was malformed."));
    };
    let expected = cookie(&headers, SIGNIN_COOKIE).unwrap_or("");
    if expected.is_empty()
        || !form.csrf.as_deref().is_some_and(|c| session::same_secret(c, expected))
        || session::cross_site(&headers)
    {
        return session::forbidden();
    }
    let token = form.token.unwrap_or_default();
    let token = token.trim();
    if token.is_empty() || token.len() > 256 {
        return signin_page(&headers, StatusCode::UNAUTHORIZED, Some("Paste a team token."));
    }
    let hash = token_hash(token);
    let found = match read(&s, move |w| w.token_by_hash(&hash)).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let Some((token_id, team)) = found else {
        return signin_page(&headers, StatusCode::UNAUTHORIZED, Some("That token is not valid (unknown or revoked)."));
    };
    let secret = random_hex(32);
    let (hash, csrf, now) = (token_hash(&secret), random_hex(16), now_ms());
    let expires = now + SESSION_DAYS * 86_400_000;
    if let Err(r) = read(&s, move |w| w.create_session(&hash, &team, &token_id, &csrf, now, expires)).await {
        return r;
    }
    let mut r = Redirect::to("/threads").into_response();
    let h = r.headers_mut();
    for c in [
        set_cookie(&headers, SESSION_COOKIE, &secret, SESSION_DAYS * 86_400),
        set_cookie(&headers, SIGNIN_COOKIE, "", 0),
    ] {
        if let Ok(v) = HeaderValue::from_str(&c) {
            h.append(header::SET_COOKIE, v);
        }
    }
    r
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: Option<String>,
}

async fn signout(
    State(s): State<AppState>,
    b: Browser,
    headers: HeaderMap,
    form: Result<Form<CsrfForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let csrf = form.ok().and_then(|Form(f)| f.csrf);
    if let Err(r) = b.check(&headers, csrf.as_deref()) {
        return r;
    }
    let hash = b.hash.clone();
    if let Err(r) = read(&s, move |w| w.delete_session(&hash)).await {
        return r;
    }
    let mut r = Redirect::to("/signin").into_response();
    if let Ok(v) = HeaderValue::from_str(&set_cookie(&headers, SESSION_COOKIE, "", 0)) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

// ----- the thread list, live ------------------------------------------------

#[derive(Deserialize)]
struct ListQuery {
    before: Option<String>,
    partial: Option<String>,
}

async fn threads(State(s): State<AppState>, b: Browser, q: Result<Query<ListQuery>, QueryRejection>) -> Response {
    let q = q.ok().map(|Query(q)| q).unwrap_or(ListQuery { before: None, partial: None });
    let before = match q.before.as_deref() {
        None | Some("") => None,
        Some(c) => match ListCursor::decode(c) {
            Some(c) => Some(c),
            None => return pages::error_page(StatusCode::BAD_REQUEST, "That page of the list does not exist."),
        },
    };
    let team = b.session.team.clone();
    let first = before.is_none();
    let mut list = match read(&s, move |w| w.threads(&team, before.as_ref(), LIST_PAGE + 1)).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let next = (list.len() > LIST_PAGE).then(|| {
        list.truncate(LIST_PAGE);
        list.last().map(|t| ListCursor { updated: t.updated, thread: t.id.clone() })
    });
    if q.partial.is_some() {
        return html_response(StatusCode::OK, pages::thread_list(&list));
    }
    html_response(StatusCode::OK, pages::threads(&b.session.csrf, &list, next.flatten().as_ref(), first))
}

/// Server-Sent Events: `change` whenever the team's log moves (and once
/// on connect), from the same hub that wakes the sidecars' long-polls.
/// Ends when the server shuts down.
async fn events(State(s): State<AppState>, b: Browser) -> Response {
    team_events(&s, &b.session.team, None).into_response()
}

/// The event stream of a team's changes; with `thread`, only when that
/// thread's version moved (a share link learns nothing else of the team).
fn team_events(
    s: &AppState,
    team: &TeamId,
    thread: Option<ThreadId>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>> + use<>> {
    let rx = s.hub.subscribe(team);
    let stop = s.shutdown.clone();
    let (store, team) = (s.store.clone(), team.clone());
    // `seen`: what the last event said (None before the first).
    let stream = futures_util::stream::unfold((rx, stop, None::<u64>), move |(mut rx, mut stop, seen)| {
        let (store, team, thread) = (store.clone(), team.clone(), thread.clone());
        async move {
            let mut first = seen.is_none();
            loop {
                if !first {
                    tokio::select! {
                        r = rx.changed() => if r.is_err() { return None },
                        _ = stop.wait_for(|s| *s) => return None,
                    }
                }
                first = false;
                if *stop.borrow() {
                    return None;
                }
                let head = rx.borrow_and_update().head();
                let Some(t) = &thread else {
                    let ev = Event::default().event("change").data(format!("{{\"head\":{head}}}"));
                    return Some((Ok(ev), (rx, stop, Some(head))));
                };
                let (store, team, t) = (store.clone(), team.clone(), t.clone());
                let version = blocking(move || Ok(store.run(&team, false, |tx| tx.thread_head(&t))?.0))
                    .await
                    .ok()
                    .flatten()
                    .map_or(0, |(v, _)| v);
                if seen != Some(version) {
                    let ev = Event::default().event("change").data(format!("{{\"version\":{version}}}"));
                    return Some((Ok(ev), (rx, stop, Some(version))));
                }
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

// ----- search -----------------------------------------------------------------

#[derive(Deserialize)]
struct SearchParams {
    q: Option<String>,
    partial: Option<String>,
}

async fn search(State(s): State<AppState>, b: Browser, q: Result<Query<SearchParams>, QueryRejection>) -> Response {
    let (text, partial) =
        q.ok().map_or((String::new(), false), |Query(q)| (q.q.unwrap_or_default(), q.partial.is_some()));
    let text: String = text.chars().take(500).collect();
    let query = SearchQuery::parse(&text);
    let team = b.session.team.clone();
    let hits = match read(&s, move |w| w.search(&team, &query, HITS)).await {
        Ok(h) => h,
        Err(r) => return r,
    };
    if partial {
        return html_response(StatusCode::OK, pages::results(&text, &hits));
    }
    html_response(StatusCode::OK, pages::search(&b.session.csrf, &text, &hits))
}

// ----- a thread ---------------------------------------------------------------

#[derive(Deserialize)]
struct PageParams {
    from: Option<usize>,
    partial: Option<String>,
}

fn thread_id(id: &str) -> Option<ThreadId> {
    ThreadId::new(id).ok()
}

/// A thread of `team` as a page from message `from` (None: no such thread
/// in that team — another team's answers exactly the same).
async fn load_page(s: &AppState, team: &TeamId, id: &ThreadId, from: usize) -> Result<Option<ThreadPage>, Response> {
    let (team, id) = (team.clone(), id.clone());
    read(s, move |w| w.thread_page(&team, &id, from, THREAD_PAGE)).await
}

async fn thread(
    State(s): State<AppState>,
    b: Browser,
    Path(id): Path<String>,
    q: Result<Query<PageParams>, QueryRejection>,
) -> Response {
    let Some(id) = thread_id(&id) else { return not_found() };
    let from = q.ok().and_then(|Query(q)| q.from).unwrap_or(0);
    let page = match load_page(&s, &b.session.team, &id, from).await {
        Ok(Some(p)) => p,
        Ok(None) => return not_found(),
        Err(r) => return r,
    };
    let base = format!("/t/{id}");
    let ctx = ThreadCtx { base: &base, csrf: Some(&b.session.csrf), from, per_page: THREAD_PAGE };
    html_response(StatusCode::OK, pages::thread(&page, &ctx))
}

async fn thread_message(
    State(s): State<AppState>,
    b: Browser,
    Path((id, message)): Path<(String, String)>,
    q: Result<Query<PageParams>, QueryRejection>,
) -> Response {
    let partial = q.is_ok_and(|Query(q)| q.partial.is_some());
    one_message(&s, &b.session.team, &id, &message, &format!("/t/{id}"), Some(&b.session.csrf), partial).await
}

/// One message in full: the "Show all" fragment, or a page of its own.
async fn one_message(
    s: &AppState,
    team: &TeamId,
    id: &str,
    message: &str,
    base: &str,
    csrf: Option<&str>,
    partial: bool,
) -> Response {
    let (Some(tid), Ok(mid)) = (thread_id(id), MessageId::new(message)) else { return not_found() };
    let (store, t, tt, mm) = (s.store.clone(), team.clone(), tid.clone(), mid.clone());
    let found = blocking(move || {
        Ok(store
            .run(&t, false, |tx| {
                let title = tx.thread_head(&tt)?.map(|(_, h)| h.title);
                Ok(title.and_then(|title| Some((title, tx.message(&tt, &mm).ok()??.message))))
            })?
            .0)
    })
    .await;
    let Ok(Some((title, m))) = found else { return not_found() };
    let content = m.content.value_or_null();
    // The whole message: the preview limit is its size.
    let opts = render::Opts { preview_bytes: usize::MAX, full_url: "" };
    let body = render::body(&m.role, &content, &opts);
    if partial {
        return html_response(StatusCode::OK, body);
    }
    let back = format!("{base}#m-{mid}");
    html_response(StatusCode::OK, pages::message_page(&title, &back, csrf, body))
}

#[derive(Deserialize)]
struct SinceParams {
    /// The version the page shows.
    v: u64,
    /// How many messages it shows, and the last one's id.
    n: usize,
    last: Option<String>,
}

/// What changed in a thread since the version a page shows: the messages
/// appended after its last one, rendered; or `reload` when anything else
/// changed (an edit, a delete, an insert in the middle, a log compacted).
/// Work grows with the change, not with the thread.
async fn thread_since(
    State(s): State<AppState>,
    b: Browser,
    Path(id): Path<String>,
    q: Result<Query<SinceParams>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else { return StatusCode::BAD_REQUEST.into_response() };
    since(&s, &b.session.team, &id, &format!("/t/{id}"), q).await
}

async fn since(s: &AppState, team: &TeamId, id: &str, base: &str, q: SinceParams) -> Response {
    let Some(tid) = thread_id(id) else { return not_found() };
    let (store, t, tt) = (s.store.clone(), team.clone(), tid.clone());
    let limit = 200;
    let read_changes = blocking(move || {
        Ok(store
            .run(&t, false, |tx| {
                let Some((version, head)) = tx.thread_head(&tt)? else { return Ok(None) };
                let changes = if version > q.v { tx.thread_changes(&tt, q.v, limit)? } else { Vec::new() };
                Ok(Some((version, head.title, changes)))
            })?
            .0)
    })
    .await;
    let Ok(Some((version, title, changes))) = read_changes else { return not_found() };
    let reload = || Json(serde_json::json!({ "version": version, "reload": true })).into_response();
    if version == q.v {
        return Json(serde_json::json!({ "version": version, "title": title, "html": "" })).into_response();
    }
    // Appends only, each after the one before, starting after the page's
    // last message; all of them here (not cut by the limit).
    let mut last = q.last.filter(|l| !l.is_empty());
    let mut appended = 0;
    if changes.first().is_none_or(|c| c.version != q.v + 1) || changes.last().is_none_or(|c| c.version != version) {
        return reload();
    }
    for c in &changes {
        match &c.effect {
            Effect::Insert { after, message, .. } if after.as_ref().map(|a| a.as_str()) == last.as_deref() => {
                last = Some(message.id.to_string());
                appended += 1;
            }
            Effect::Title { .. } => {}
            _ => return reload(),
        }
    }
    let page = match load_page(s, team, &tid, q.n).await {
        Ok(Some(p)) => p,
        Ok(None) => return not_found(),
        Err(r) => return r,
    };
    if page.messages.len() != appended || page.version != version {
        // It moved again while this was read: the next event brings it.
        return reload();
    }
    let html: String = page.messages.iter().map(|m| pages::message(base, m).into_string()).collect();
    Json(serde_json::json!({ "version": version, "title": page.title, "html": html, "count": q.n + appended }))
        .into_response()
}

// ----- assets -------------------------------------------------------------------

static HIGHLIGHT_CSS: std::sync::LazyLock<String> = std::sync::LazyLock::new(render::highlight_css);

async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind): (std::borrow::Cow<'static, str>, &str) = match file.as_str() {
        "app.css" => (include_str!("assets/app.css").into(), "text/css; charset=utf-8"),
        "app.js" => (include_str!("assets/app.js").into(), "text/javascript; charset=utf-8"),
        "highlight.css" => (HIGHLIGHT_CSS.as_str().into(), "text/css; charset=utf-8"),
        _ => return not_found(),
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_str(kind).expect("static")),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300")),
        ],
        body.into_owned(),
    )
        .into_response()
}
