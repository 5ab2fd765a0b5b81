//! Share links: `/s/<secret>` shows one thread, read-only, to whoever has
//! the link, until it expires or is revoked (at once: every request looks
//! the link up). The secret is 192 random bits; the server keeps its hash.
//! A link shows that thread and nothing else of its team: its pages have
//! no navigation, its events say only that thread's version.

use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::pages::{self, ThreadCtx, html_response, not_found};
use super::session::{Browser, cookie, now_ms, random_hex, set_cookie};
use super::{CsrfForm, PageParams, SinceParams, THREAD_PAGE, load_page, one_message, read, team_events, thread_id};
use crate::model::ThreadId;
use crate::server::core::TeamId;
use crate::server::http::AppState;
use crate::server::store::token_hash;
use crate::server::web_store::{ShareInfo, WebStore};

/// Characters of a link's secret (hex of 24 random bytes).
const SECRET_LEN: usize = 48;

/// A new link's listing and its secret (shown once, never stored).
pub fn new_share(team: &TeamId, thread: &ThreadId, now: i64, ttl: Option<Duration>) -> (ShareInfo, String) {
    let info = ShareInfo {
        id: random_hex(5),
        team: team.clone(),
        thread: thread.clone(),
        created: now,
        expires: ttl.map(|d| now + d.as_millis() as i64),
        revoked: None,
    };
    (info, random_hex(SECRET_LEN / 2))
}

/// Makes a link to a team's thread (which must exist); returns its
/// listing and secret.
pub fn create_share(
    web: &dyn WebStore,
    team: &TeamId,
    thread: &ThreadId,
    now: i64,
    ttl: Option<Duration>,
) -> Result<(ShareInfo, String), String> {
    match web.thread_page(team, thread, 0, 0) {
        Ok(Some(_)) => {}
        Ok(None) => return Err(format!("team {team} has no thread {thread}")),
        Err(e) => return Err(e.to_string()),
    }
    let (info, secret) = new_share(team, thread, now, ttl);
    web.create_share(&info, &token_hash(&secret)).map_err(|e| e.to_string())?;
    Ok((info, secret))
}

/// `never`, or a number and a unit: `30m`, `12h`, `7d`.
pub fn parse_expiry(s: &str) -> Result<Option<Duration>, String> {
    let s = s.trim();
    if s == "never" {
        return Ok(None);
    }
    let bad = || format!("{s:?} is not an expiry: use never, or a number and m, h or d (e.g. 7d)");
    let (n, unit) = s.split_at(s.len().saturating_sub(1));
    let n: u64 = n.parse().map_err(|_| bad())?;
    let secs = match unit {
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    if n == 0 || n > 3650 * 86_400 / secs {
        return Err(bad());
    }
    Ok(Some(Duration::from_secs(n * secs)))
}

/// The team and thread of a live link (None: unknown, revoked, expired or
/// malformed — all the same 404).
async fn resolve(s: &AppState, secret: &str) -> Result<Option<(TeamId, ThreadId)>, Response> {
    if secret.len() != SECRET_LEN || !secret.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Ok(None);
    }
    let hash = token_hash(secret);
    read(s, move |w| w.share(&hash, now_ms())).await
}

// ----- the team's side: make, list, revoke --------------------------------------

#[derive(Deserialize)]
pub(super) struct CreateForm {
    csrf: Option<String>,
    expires: Option<String>,
}

pub(super) async fn create(
    State(s): State<AppState>,
    b: Browser,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Result<Form<CreateForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else { return super::session::forbidden() };
    if let Err(r) = b.check(&headers, form.csrf.as_deref()) {
        return r;
    }
    let Some(tid) = thread_id(&id) else { return not_found() };
    let ttl = match parse_expiry(form.expires.as_deref().unwrap_or("never")) {
        Ok(t) => t,
        Err(e) => return pages::error_page(StatusCode::BAD_REQUEST, &e),
    };
    let (team, t) = (b.session.team.clone(), tid.clone());
    let made = match read(&s, move |w| Ok(create_share(w, &team, &t, now_ms(), ttl))).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let Ok((info, secret)) = made else { return not_found() };
    // Post/redirect/get: the secret goes to the page that shows it once, in
    // a short-lived cookie scoped to that page, never in a URL.
    let mut r = Redirect::to(&format!("/t/{tid}/shares?created={}", info.id)).into_response();
    let cookie = scoped(set_cookie(&headers, NEW_SHARE_COOKIE, &format!("{}.{secret}", info.id), 300), &tid);
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// Carries a new link's secret from the form's answer to the page that
/// shows it.
const NEW_SHARE_COOKIE: &str = "ts_new_share";

/// A cookie sent only to a thread's share page.
fn scoped(cookie: String, tid: &ThreadId) -> String {
    cookie.replace("; Path=/;", &format!("; Path=/t/{tid}/shares;"))
}

#[derive(Deserialize)]
pub(super) struct ListParams {
    created: Option<String>,
}

pub(super) async fn list(
    State(s): State<AppState>,
    b: Browser,
    headers: HeaderMap,
    Path(id): Path<String>,
    q: Result<Query<ListParams>, QueryRejection>,
) -> Response {
    let Some(tid) = thread_id(&id) else { return not_found() };
    let created = q.ok().and_then(|Query(q)| q.created);
    let new = cookie(&headers, NEW_SHARE_COOKIE)
        .and_then(|c| c.split_once('.'))
        .filter(|(id, _)| created.as_deref() == Some(*id))
        .map(|(id, secret)| {
            // The link as this browser reached the server.
            let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
            let https = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).is_some_and(|p| p == "https");
            (id.to_string(), format!("{}://{host}/s/{secret}", if https { "https" } else { "http" }))
        });
    let mut r = shares_page(&s, &b, &tid, new.as_ref().map(|(id, url)| (id.as_str(), url.as_str()))).await;
    if new.is_some() {
        // Shown once.
        if let Ok(v) = HeaderValue::from_str(&scoped(set_cookie(&headers, NEW_SHARE_COOKIE, "", 0), &tid)) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    r
}

async fn shares_page(s: &AppState, b: &Browser, tid: &ThreadId, created: Option<(&str, &str)>) -> Response {
    let page = match load_page(s, &b.session.team, tid, 0).await {
        Ok(Some(p)) => p,
        Ok(None) => return not_found(),
        Err(r) => return r,
    };
    let (team, t) = (b.session.team.clone(), tid.clone());
    let list = match read(s, move |w| w.shares(Some(&team), Some(&t))).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    html_response(StatusCode::OK, pages::shares(&b.session.csrf, &page, &list, now_ms(), created))
}

pub(super) async fn revoke(
    State(s): State<AppState>,
    b: Browser,
    headers: HeaderMap,
    Path((id, share)): Path<(String, String)>,
    form: Result<Form<CsrfForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let csrf = form.ok().and_then(|Form(f)| f.csrf);
    if let Err(r) = b.check(&headers, csrf.as_deref()) {
        return r;
    }
    let Some(tid) = thread_id(&id) else { return not_found() };
    // Exactly this link of this team's thread.
    let (team, t) = (b.session.team.clone(), tid.clone());
    let found = read(&s, move |w| {
        let mine = w.shares(Some(&team), Some(&t))?.into_iter().any(|x| x.id == share);
        if mine { w.revoke_shares(Some(&team), &share, now_ms()).map(|r| !r.is_empty()) } else { Ok(false) }
    })
    .await;
    match found {
        Ok(true) => Redirect::to(&format!("/t/{tid}/shares")).into_response(),
        Ok(false) => not_found(),
        Err(r) => r,
    }
}

// ----- the link's side: one thread, read-only -----------------------------------

pub(super) async fn thread(
    State(s): State<AppState>,
    Path(secret): Path<String>,
    q: Result<Query<PageParams>, QueryRejection>,
) -> Response {
    let Ok(Some((team, tid))) = resolve(&s, &secret).await else { return not_found() };
    let from = q.ok().and_then(|Query(q)| q.from).unwrap_or(0);
    let page = match load_page(&s, &team, &tid, from).await {
        Ok(Some(p)) => p,
        _ => return not_found(),
    };
    let base = format!("/s/{secret}");
    html_response(
        StatusCode::OK,
        pages::thread(&page, &ThreadCtx { base: &base, csrf: None, from, per_page: THREAD_PAGE }),
    )
}

pub(super) async fn message(
    State(s): State<AppState>,
    Path((secret, message)): Path<(String, String)>,
    q: Result<Query<PageParams>, QueryRejection>,
) -> Response {
    let Ok(Some((team, tid))) = resolve(&s, &secret).await else { return not_found() };
    let partial = q.is_ok_and(|Query(q)| q.partial.is_some());
    one_message(&s, &team, tid.as_str(), &message, &format!("/s/{secret}"), None, partial).await
}

pub(super) async fn since(
    State(s): State<AppState>,
    Path(secret): Path<String>,
    q: Result<Query<SinceParams>, QueryRejection>,
) -> Response {
    let Ok(Some((team, tid))) = resolve(&s, &secret).await else { return not_found() };
    let Ok(Query(q)) = q else { return StatusCode::BAD_REQUEST.into_response() };
    super::since(&s, &team, tid.as_str(), &format!("/s/{secret}"), q).await
}

pub(super) async fn events(State(s): State<AppState>, Path(secret): Path<String>) -> Response {
    let Ok(Some((team, tid))) = resolve(&s, &secret).await else { return not_found() };
    team_events(&s, &team, Some(tid)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiries() {
        assert_eq!(parse_expiry("never"), Ok(None));
        assert_eq!(parse_expiry("7d"), Ok(Some(Duration::from_secs(7 * 86_400))));
        assert_eq!(parse_expiry("90m"), Ok(Some(Duration::from_secs(5400))));
        for bad in ["", "d", "0h", "7", "7w", "-1d", "99999999999d", "1.5h"] {
            assert!(parse_expiry(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secrets_are_192_bits_and_ids_short() {
        let (info, secret) = new_share(&TeamId::new("t").unwrap(), &ThreadId::new("T-1").unwrap(), 5, None);
        assert_eq!(secret.len(), SECRET_LEN);
        assert_eq!(info.id.len(), 10);
        assert_eq!(info.expires, None);
        assert_ne!(new_share(&info.team, &info.thread, 5, None).1, secret);
    }
}
