//! The web pages over HTTP, against a real `threadsync serve` on SQLite and
//! on PostgreSQL: sessions, anti-forgery, escaping, search kept in the push
//! transaction, share links, team isolation and live updates' fragments.
//! (What needs a browser — scripts running, live updates appearing — is
//! `tests/web.rs`, in Chromium.)

mod common;

use std::process::Command;

use common::lsp_harness::Server;
use reqwest::StatusCode;
use reqwest::blocking::{Client, Response};
use serde_json::{Value, json};

fn client() -> Client {
    Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

struct Site {
    server: Server,
    c: Client,
}

impl Site {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url())
    }

    fn push(&self, token: &str, client: &str, id: u64, thread: &str, ops: Value) -> Value {
        let body = json!({ "clientId": client, "machine": "laptop-7", "mutations": [{ "id": id, "threadId": thread, "ops": ops }] });
        let r = self.c.post(self.url("/v1/push")).bearer_auth(token).json(&body).send().unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let v: Value = r.json().unwrap();
        assert_eq!(v["results"][0]["status"], "applied", "{v}");
        v
    }

    /// Signs in with `token`; returns the session cookie.
    fn sign_in(&self, token: &str) -> String {
        let (signin_cookie, csrf) = self.signin_form();
        let r = self
            .c
            .post(self.url("/signin"))
            .header("Cookie", format!("ts_signin={signin_cookie}"))
            .header("Origin", self.server.url())
            .form(&[("token", token), ("csrf", &csrf)])
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(r.headers()["location"], "/threads");
        let cookie = set_cookie(&r, "ts_session").expect("a session cookie");
        let attrs = cookie.to_ascii_lowercase();
        assert!(attrs.contains("httponly") && attrs.contains("samesite=strict"), "{cookie}");
        assert!(!cookie.contains(token), "the cookie never holds the token");
        cookie.split(';').next().unwrap().split_once('=').unwrap().1.to_string()
    }

    fn signin_form(&self) -> (String, String) {
        let r = self.c.get(self.url("/signin")).send().unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let cookie = set_cookie(&r, "ts_signin").unwrap();
        let value = cookie.split(';').next().unwrap().split_once('=').unwrap().1.to_string();
        let html = r.text().unwrap();
        (value, hidden(&html, "csrf"))
    }

    fn get(&self, session: &str, path: &str) -> (StatusCode, String) {
        let r = self.c.get(self.url(path)).header("Cookie", format!("ts_session={session}")).send().unwrap();
        (r.status(), r.text().unwrap())
    }

    fn post(&self, session: &str, path: &str, form: &[(&str, &str)]) -> Response {
        self.c
            .post(self.url(path))
            .header("Cookie", format!("ts_session={session}"))
            .header("Origin", self.server.url())
            .form(form)
            .send()
            .unwrap()
    }
}

fn set_cookie(r: &Response, name: &str) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_string)
}

/// The value of the first hidden input named `name`.
fn hidden(html: &str, name: &str) -> String {
    let at = html.find(&format!("name=\"{name}\" value=\"")).unwrap_or_else(|| panic!("no {name} in {html}"));
    let rest = &html[at + name.len() + 15..];
    rest[..rest.find('"').unwrap()].to_string()
}

fn msg(id: &str, role: &str, content: Value, after: Option<&str>) -> Value {
    json!({ "op": "append", "after": after, "message": { "id": id, "role": role, "content": content, "timestamp": 1_732_460_001_000i64 } })
}

fn create(title: &str) -> Vec<Value> {
    vec![
        json!({ "op": "create", "created": 1_732_460_000_000i64, "env": {} }),
        json!({ "op": "setTitle", "title": title, "base": "" }),
    ]
}

fn suite(db: &str) {
    let dir = common::TempDir::new("web-pages");
    let server = Server::start_on(db, "127.0.0.1:0");
    let (tok_a, tok_b) = (server.token("acme"), server.token("rival"));
    let site = Site { server, c: client() };

    // --- signing in ---------------------------------------------------------------
    // Pages need a session.
    let r = site.c.get(site.url("/threads")).send().unwrap();
    assert_eq!((r.status(), r.headers()["location"].to_str().unwrap()), (StatusCode::SEE_OTHER, "/signin"));
    // A wrong token: 401 and the form again, with an alert.
    let (cookie, csrf) = site.signin_form();
    let r = site
        .c
        .post(site.url("/signin"))
        .header("Cookie", format!("ts_signin={cookie}"))
        .form(&[("token", "tsk_nope"), ("csrf", csrf.as_str())])
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.text().unwrap().contains("role=\"alert\""));
    // Without the sign-in form's own token (login CSRF): refused.
    let r = site.c.post(site.url("/signin")).form(&[("token", tok_a.as_str()), ("csrf", "00")]).send().unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let a = site.sign_in(&tok_a);
    let b = site.sign_in(&tok_b);

    // --- content, escaped -----------------------------------------------------------
    let mut ops = create("Fix the <b>parser</b>");
    ops.push(msg("m1", "user", json!("Why does the parser choke on tabs? <script>window.__xss=1</script>"), None));
    ops.push(msg("m2", "assistant", json!("Like this:\n\n```rust\nfn main() { let tab = '\\t'; }\n```\n\n<img src=x onerror=\"window.__xss=1\"> [x](javascript:window.__xss=1)"), Some("m1")));
    ops.push(msg("m3", "assistant", json!([{ "type": "text", "text": "Running the tests." }, { "type": "tool_use", "id": "toolu_1", "name": "Bash", "input": { "command": "cargo test --workspace" } }]), Some("m2")));
    site.push(&tok_a, "c-a1", 1, "T-parser", json!(ops));
    let mut ops = create("Rival plans");
    ops.push(msg("r1", "user", json!("tabs are the rival's secret"), None));
    site.push(&tok_b, "c-b1", 1, "T-rival", json!(ops));

    let (status, html) = site.get(&a, "/t/T-parser");
    assert_eq!(status, StatusCode::OK);
    assert!(!html.contains("<script>window"), "a message's script is text");
    assert!(html.contains("&lt;script&gt;window.__xss=1&lt;/script&gt;"));
    assert!(!html.contains("<img") && !html.contains("javascript:"), "{html}");
    assert!(html.contains("Fix the &lt;b&gt;parser&lt;/b&gt;"));
    assert!(html.contains("class=\"hl-"), "the code block is highlighted");
    assert!(html.contains("<details class=\"block tool\""), "the tool call is collapsed");
    assert!(html.contains("<span class=\"machine\" title=\"Pushed from\">laptop-7</span>"), "author machine");
    let r = site.c.get(site.url("/t/T-parser")).header("Cookie", format!("ts_session={a}")).send().unwrap();
    let csp = r.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(r.headers()["referrer-policy"], "same-origin");
    assert_eq!(r.headers()["cache-control"], "no-store");

    // --- teams stay apart -------------------------------------------------------------
    let (status, html) = site.get(&a, "/t/T-rival");
    let (missing_status, missing) = site.get(&a, "/t/T-none");
    assert_eq!((status, missing_status), (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND));
    assert_eq!(html, missing, "another team's thread answers exactly like a missing one");
    assert_eq!(site.get(&a, "/t/T-rival/m/r1").0, StatusCode::NOT_FOUND);
    let (_, list) = site.get(&a, "/threads");
    assert!(list.contains("data-thread=\"T-parser\"") && !list.contains("T-rival"), "{list}");
    // Hostile ids are a 404, never a path.
    for path in ["/t/..%2F..%2Fetc", "/t/%00", "/t/a%20b/m/x", "/s/x%2Fy", "/s/zz", "/t/T-parser/m/a%2Fb"] {
        assert_eq!(site.get(&a, path).0, StatusCode::NOT_FOUND, "{path}");
    }

    // --- search: kept in the push transaction, this team's only ----------------------------
    let (_, html) = site.get(&a, "/search?q=tabs");
    assert!(html.contains("href=\"/t/T-parser#m-m1\""), "{html}");
    assert!(html.contains("<mark>tabs</mark>"), "{html}");
    assert!(!html.contains("rival"), "another team's message is never a hit");
    // A message pushed a moment ago is found at once; a prefix as typed.
    site.push(
        &tok_a,
        "c-a1",
        2,
        "T-parser",
        json!([msg("m4", "user", json!("Now the lexer fails on zanzibar quoting"), Some("m3"))]),
    );
    let (_, html) = site.get(&a, "/search?q=zanzib&partial=1");
    assert!(html.contains("#m-m4") && html.contains("<mark>zanzibar</mark>"), "{html}");
    assert!(!html.contains("<html"), "a fragment for search as you type");
    // Edited: found by its new words, not its old ones. Deleted: not found.
    let v = site.c.get(site.url("/v1/threads/T-parser")).bearer_auth(&tok_a).send().unwrap().json::<Value>().unwrap();
    let m4 = v["messages"].as_array().unwrap().iter().find(|m| m["id"] == "m4").unwrap().clone();
    let hash = String::from(threadsync::model::ContentHash::of(&m4["content"]));
    site.push(
        &tok_a,
        "c-a1",
        3,
        "T-parser",
        json!([{ "op": "edit", "id": "m4", "content": "Now the lexer fails on quagga quoting", "base": hash }]),
    );
    assert!(!site.get(&a, "/search?q=zanzibar").1.contains("#m-m4"));
    assert!(site.get(&a, "/search?q=quagga").1.contains("#m-m4"));
    let hash = String::from(threadsync::model::ContentHash::of(&json!("Now the lexer fails on quagga quoting")));
    site.push(&tok_a, "c-a1", 4, "T-parser", json!([{ "op": "delete", "id": "m4", "base": hash }]));
    assert!(site.get(&a, "/search?q=quagga").1.contains("id=\"no-results\""));
    // A NUL in a message or a title (tool output can hold one): stored on
    // both backends (PostgreSQL's text refuses NUL), and searchable.
    let mut ops = create("nul\u{0}title");
    ops.push(msg("n1", "tool", json!("binary\u{0}output with wombat inside"), None));
    site.push(&tok_a, "c-a2", 1, "T-nul", json!(ops));
    let (status, html) = site.get(&a, "/search?q=wombat");
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("#m-n1"), "{html}");
    assert_eq!(site.get(&a, "/t/T-nul").0, StatusCode::OK);
    // Query syntax is words only: operators and quotes are searched for, never run.
    for q in ["\"", "tabs OR", "NEAR(", "*", "a:*|b", "'; DROP TABLE messages; --", "\u{0}"] {
        let (status, _) = site.get(&a, &format!("/search?q={}", urlencode(q)));
        assert_eq!(status, StatusCode::OK, "{q:?}");
    }

    // --- a thread page's live fragment -------------------------------------------------
    // The page shows m1..m3 at the version after the delete; one more append.
    let v = site.c.get(site.url("/v1/threads/T-parser")).bearer_auth(&tok_a).send().unwrap().json::<Value>().unwrap();
    let version = v["v"].as_u64().unwrap();
    site.push(
        &tok_a,
        "c-a1",
        5,
        "T-parser",
        json!([msg("m5", "assistant", json!("Fixed in **lexer.rs**."), Some("m4"))]),
    );
    let (_, body) = site.get(&a, &format!("/t/T-parser/since?v={version}&n=3&last=m3"));
    let d: Value = serde_json::from_str(&body).unwrap();
    // m5 was appended after the deleted m4, the page's last shown is m3:
    // anchors differ, so the page reloads rather than guess.
    assert_eq!(d["reload"], true, "{d}");
    let (_, body) = site.get(&a, &format!("/t/T-parser/since?v={}&n=4&last=m5", version + 1));
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["html"], "", "nothing new");
    site.push(&tok_a, "c-a1", 6, "T-parser", json!([msg("m6", "user", json!("Thanks <3"), Some("m5"))]));
    let (_, body) = site.get(&a, &format!("/t/T-parser/since?v={}&n=4&last=m5", version + 1));
    let d: Value = serde_json::from_str(&body).unwrap();
    assert!(d["html"].as_str().unwrap().contains("id=\"m-m6\""), "{d}");
    assert!(d["html"].as_str().unwrap().contains("Thanks &lt;3"), "{d}");
    assert_eq!(d["count"], 5);

    // --- anti-forgery ---------------------------------------------------------------------
    let r = site.post(&a, "/t/T-parser/shares", &[("expires", "never")]);
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "no csrf field");
    let (_, page) = site.get(&a, "/t/T-parser");
    let csrf = hidden(&page, "csrf");
    let r = site.post(&a, "/t/T-parser/shares", &[("expires", "never"), ("csrf", "0".repeat(32).as_str())]);
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "a wrong csrf token");
    let r = site
        .c
        .post(site.url("/t/T-parser/shares"))
        .header("Cookie", format!("ts_session={a}"))
        .header("Origin", "https://evil.example")
        .form(&[("expires", "never"), ("csrf", csrf.as_str())])
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "another origin");
    // B's session token does not sign A's forms.
    let (_, page_b) = site.get(&b, "/threads");
    let r = site.post(&a, "/t/T-parser/shares", &[("expires", "never"), ("csrf", hidden(&page_b, "csrf").as_str())]);
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // --- share links ------------------------------------------------------------------------
    let r = site.post(&a, "/t/T-parser/shares", &[("expires", "7d"), ("csrf", csrf.as_str())]);
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with("/t/T-parser/shares?created="), "{location}");
    let flash = set_cookie(&r, "ts_new_share").unwrap();
    assert!(flash.contains("Path=/t/T-parser/shares;") && flash.contains("HttpOnly"), "{flash}");
    let flash = flash.split(';').next().unwrap().to_string();
    let r = site.c.get(site.url(&location)).header("Cookie", format!("ts_session={a}; {flash}")).send().unwrap();
    assert!(set_cookie(&r, "ts_new_share").unwrap().contains("Max-Age=0"), "shown once");
    let html = r.text().unwrap();
    let at = html.find("id=\"share-url\"").unwrap();
    let url = html[at..].split("value=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    let share_id = html[at..].split("data-share=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    let secret = url.rsplit('/').next().unwrap().to_string();
    assert!(secret.len() >= 32 && url.starts_with(&site.server.url()), "{url}");
    // The database keeps only its hash.
    if let Some(path) = db.strip_prefix("sqlite://") {
        let bytes = std::fs::read(path).unwrap();
        let wal = std::fs::read(format!("{path}-wal")).unwrap_or_default();
        let hay = [bytes, wal].concat();
        assert!(!hay.windows(secret.len()).any(|w| w == secret.as_bytes()), "the secret is not stored");
    }
    // Opened without a session: that thread, read-only, nothing else.
    let anon = client();
    let r = anon.get(&url).send().unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["referrer-policy"], "same-origin");
    let shared = r.text().unwrap();
    assert!(shared.contains("Why does the parser choke on tabs?"));
    assert!(!shared.contains("href=\"/threads\"") && !shared.contains("action=\"/search\""), "no way into the team");
    assert!(!shared.contains("name=\"csrf\""), "no forms");
    assert_eq!(anon.get(format!("{url}/m/m1")).send().unwrap().status(), StatusCode::OK);
    assert_eq!(anon.get(format!("{url}/m/r1")).send().unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(anon.get(site.url("/t/T-parser")).send().unwrap().status(), StatusCode::SEE_OTHER);
    let tampered = format!("{}{}", &url[..url.len() - 1], if url.ends_with('0') { '1' } else { '0' });
    assert_eq!(anon.get(&tampered).send().unwrap().status(), StatusCode::NOT_FOUND);
    // Listed for the team (never the secret); B cannot revoke it.
    let (_, list) = site.get(&a, "/t/T-parser/shares");
    assert!(list.contains(&format!("data-share=\"{share_id}\"")) && !list.contains(&secret));
    let r =
        site.post(&b, &format!("/t/T-parser/shares/{share_id}/revoke"), &[("csrf", hidden(&page_b, "csrf").as_str())]);
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(anon.get(&url).send().unwrap().status(), StatusCode::OK);
    // Revoked: 404 at once.
    let r = site.post(&a, &format!("/t/T-parser/shares/{share_id}/revoke"), &[("csrf", csrf.as_str())]);
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(anon.get(&url).send().unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(anon.get(format!("{url}/m/m1")).send().unwrap().status(), StatusCode::NOT_FOUND);

    // From the command line: create, list, revoke; an expired link is a 404.
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_threadsync")).args(args).args(["--db", db]).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let base = site.server.url();
    let (ok, link, err) = cli(&["share", "create", "T-parser", "--team", "acme", "--url", &base]);
    assert!(ok, "{err}");
    let link = link.trim().to_string();
    assert!(link.starts_with(&format!("{base}/s/")), "{link}");
    assert_eq!(anon.get(&link).send().unwrap().status(), StatusCode::OK);
    let (ok, _, err) = cli(&["share", "create", "T-rival", "--team", "acme"]);
    assert!(!ok && err.contains("no thread"), "a link only to the team's own thread: {err}");
    let (ok, listing, _) = cli(&["share", "list", "--team", "acme"]);
    assert!(ok && listing.contains("T-parser") && listing.contains("revoked") && listing.contains("live"), "{listing}");
    assert!(!listing.contains(link.rsplit('/').next().unwrap()), "no secret listed");
    let id = listing.lines().find(|l| l.ends_with("live")).unwrap().split_whitespace().next().unwrap().to_string();
    let (ok, out, _) = cli(&["share", "revoke", &id]);
    assert!(ok && out.contains(&id), "{out}");
    assert_eq!(anon.get(&link).send().unwrap().status(), StatusCode::NOT_FOUND);
    let (ok, _, err) = cli(&["share", "revoke", &id]);
    assert!(!ok && err.contains("no live link"), "{err}");
    let (ok, _, err) = cli(&["share", "create", "T-parser", "--team", "acme", "--expires", "soon"]);
    assert!(!ok && err.contains("not an expiry"), "{err}");
    {
        // A link whose expiry has passed (made directly in the store: the
        // shortest expiry the commands take is a minute).
        let store = threadsync::server::run::DbUrl::parse(db).unwrap().open().unwrap();
        let web = store.web().unwrap();
        let team = threadsync::server::TeamId::new("acme").unwrap();
        let thread = threadsync::model::ThreadId::new("T-parser").unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        let (mut info, secret) = threadsync::server::web::share::new_share(&team, &thread, now - 10_000, None);
        info.expires = Some(now - 1);
        web.create_share(&info, &threadsync::server::store::token_hash(&secret)).unwrap();
        assert_eq!(anon.get(site.url(&format!("/s/{secret}"))).send().unwrap().status(), StatusCode::NOT_FOUND);
    }

    // --- sessions end ---------------------------------------------------------------------
    let (_, page) = site.get(&a, "/threads");
    let r = site.post(&a, "/signout", &[("csrf", hidden(&page, "csrf").as_str())]);
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(site.get(&a, "/threads").0, StatusCode::SEE_OTHER, "signed out: the old cookie is dead");
    // Revoking the team token ends its sessions.
    assert_eq!(site.get(&b, "/threads").0, StatusCode::OK);
    let out = Command::new(env!("CARGO_BIN_EXE_threadsync")).args(["token", "list", "--db", db]).output().unwrap();
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    let id = listing.lines().find(|l| l.contains("rival")).unwrap().split_whitespace().next().unwrap().to_string();
    let out =
        Command::new(env!("CARGO_BIN_EXE_threadsync")).args(["token", "revoke", &id, "--db", db]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(site.get(&b, "/threads").0, StatusCode::SEE_OTHER, "the token's sessions end with it");
    // Malformed cookies and forms: a clear answer, the server keeps running.
    for cookie in ["ts_session=", "ts_session=zz", "ts_session=\u{7f}", &format!("ts_session={}", "a".repeat(5000))] {
        let r = site.c.get(site.url("/threads")).header("Cookie", cookie).send();
        if let Ok(r) = r {
            assert!(r.status() == StatusCode::SEE_OTHER || r.status().is_client_error(), "{cookie}: {}", r.status());
        }
    }
    let r = site
        .c
        .post(site.url("/signin"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("%%%")
        .send()
        .unwrap();
    assert!(r.status().is_client_error());
    assert_eq!(site.c.get(site.url("/healthz")).send().unwrap().status(), StatusCode::OK);
    drop(dir);
}

fn urlencode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

#[test]
fn web_pages_on_sqlite() {
    let dir = common::TempDir::new("web-sqlite");
    suite(&format!("sqlite://{}", dir.0.join("server.sqlite").display()));
}

#[test]
fn web_pages_on_postgres() {
    let schema = common::PgSchema::new("web");
    suite(&schema.url);
}
