//! Who a browser is: the session cookie, and the anti-forgery checks every
//! form goes through.
//!
//! Signing in trades the team token (pasted once) for a random session id
//! in an HttpOnly, SameSite=Strict cookie; the server keeps only its hash,
//! so neither the token nor a usable session id is ever in the database.
//! A session ends when it expires, on sign-out, or when its token is
//! revoked. Every POST carries the session's CSRF token in a form field
//! (checked in constant time) and, when the browser sends one, an `Origin`
//! that is the page's own.

use axum::extract::FromRequestParts;
use axum::http::{HeaderMap, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Redirect, Response};
use rand::RngCore;

use super::pages;
use crate::server::http::{AppState, blocking};
use crate::server::store::token_hash;
use crate::server::web_store::Session;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "ts_session";
/// The sign-in form's anti-forgery cookie (no session exists yet).
pub const SIGNIN_COOKIE: &str = "ts_signin";
/// How long a session lasts.
pub const SESSION_DAYS: i64 = 30;

/// `n` random bytes as hex.
pub fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, the whole site;
/// `Secure` when the request came over HTTPS (a proxy in front says so).
pub fn set_cookie(headers: &HeaderMap, name: &str, value: &str, max_age_s: i64) -> String {
    let https = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).is_some_and(|p| p == "https");
    format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{}",
        if https { "; Secure" } else { "" }
    )
}

/// Equal in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A cross-site POST. A browser says where a request comes from in
/// `Sec-Fetch-Site` (trusted when present: no page can set it); else its
/// `Origin` must be this host's (`null`, sent from opaque origins, is not).
/// A client that sends neither still needs the CSRF token.
pub fn cross_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return !matches!(site, "same-origin" | "none");
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return false };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    let origin_host = origin.split_once("://").map_or("", |(_, h)| h);
    origin == "null" || !origin_host.eq_ignore_ascii_case(host)
}

/// The refusal of a forged (or stale) form.
pub fn forbidden() -> Response {
    pages::error_page(
        StatusCode::FORBIDDEN,
        "This form has expired or did not come from this site. Go back, reload the page and try again.",
    )
}

/// A signed-in browser: its session and the hash it is stored under.
pub struct Browser {
    pub session: Session,
    pub hash: String,
}

impl Browser {
    /// The form's CSRF token is the session's and the request is not
    /// cross-site. (The refusal is the page a handler answers with.)
    #[allow(clippy::result_large_err)]
    pub fn check(&self, headers: &HeaderMap, csrf: Option<&str>) -> Result<(), Response> {
        match csrf {
            Some(c) if same_secret(c, &self.session.csrf) && !cross_site(headers) => Ok(()),
            _ => Err(forbidden()),
        }
    }
}

impl FromRequestParts<AppState> for Browser {
    type Rejection = Response;

    /// Without a live session: a page sends the browser to sign in.
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        if state.store.web().is_none() {
            return Err(pages::no_web());
        }
        let hash = match cookie(&parts.headers, SESSION_COOKIE) {
            Some(v) if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) => token_hash(v),
            _ => return Err(Redirect::to("/signin").into_response()),
        };
        let store = state.store.clone();
        let h = hash.clone();
        let found = blocking(move || store.web().expect("checked above").session(&h, now_ms()))
            .await
            .map_err(IntoResponse::into_response)?;
        match found {
            Some(session) => Ok(Browser { session, hash }),
            None => Err(Redirect::to("/signin").into_response()),
        }
    }
}
