//! The OpenAPI document a real `threadsync serve` answers at
//! `/openapi.json` and protocol.md's "HTTP API" section describe the same
//! API: the same routes and methods, the same error statuses and codes.
//! (`tests/schemathesis.sh` checks the document against the server's
//! answers.)

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

struct Server {
    child: Child,
    base: String,
    _dir: common::TempDir,
}

impl Server {
    fn start() -> Server {
        let dir = common::TempDir::new("openapi");
        let db = format!("sqlite://{}", dir.0.join("db.sqlite").display());
        let mut child = Command::new(env!("CARGO_BIN_EXE_threadsync"))
            .args(["serve", "--listen", "127.0.0.1:0", "--db", &db])
            .env("THREADSYNC_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("addr=").nth(1) {
                    let _ = tx.send(addr.split_whitespace().next().unwrap_or_default().to_string());
                }
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(20)).expect("the server printed its address");
        Server { child, base: format!("http://{addr}"), _dir: dir }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The document as the server serves it.
fn served_document() -> Value {
    let server = Server::start();
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
    let resp = client.get(format!("{}/openapi.json", server.base)).send().unwrap();
    assert_eq!(resp.status(), 200);
    let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    assert!(ct.starts_with("application/json"), "content type {ct:?}");
    resp.json().unwrap()
}

/// The text of one `## ` section of protocol.md.
fn protocol_section(heading: &str) -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/protocol.md")).unwrap();
    let start = doc.find(&format!("\n## {heading}")).unwrap_or_else(|| panic!("protocol.md has no section {heading}"));
    let rest = &doc[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    rest[..end].to_string()
}

/// The routes of protocol.md's "HTTP API" table: `(METHOD, path)`, the
/// query string left out.
fn documented_routes() -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    for line in protocol_section("HTTP API").lines() {
        let Some(rest) = line.strip_prefix("| `") else { continue };
        let Some((route, _)) = rest.split_once('`') else { continue };
        let Some((method, path)) = route.split_once(' ') else { continue };
        if !matches!(method, "GET" | "POST" | "PUT" | "PATCH" | "DELETE") {
            continue;
        }
        let path = path.split('?').next().unwrap();
        routes.insert((method.to_string(), path.to_string()));
    }
    routes
}

/// protocol.md's error table: `(status, code)`.
fn documented_errors() -> BTreeSet<(u16, String)> {
    let mut errors = BTreeSet::new();
    for line in protocol_section("HTTP API").lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 {
            continue;
        }
        let (Ok(status), Some(code)) =
            (cells[1].parse::<u16>(), cells[2].strip_prefix('`').and_then(|c| c.strip_suffix('`')))
        else {
            continue;
        };
        errors.insert((status, code.to_string()));
    }
    errors
}

fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().unwrap() {
            if matches!(method.as_str(), "get" | "post" | "put" | "patch" | "delete" | "head" | "options") {
                ops.push((method.to_uppercase(), path.clone(), op));
            }
        }
    }
    ops
}

#[test]
fn the_served_document_has_every_route_of_protocol_md_and_no_other() {
    let doc = served_document();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
    let documented = documented_routes();
    assert!(documented.len() >= 6, "protocol.md's HTTP API table was not read: {documented:?}");
    let described: BTreeSet<(String, String)> = operations(&doc).into_iter().map(|(m, p, _)| (m, p)).collect();
    let missing: Vec<_> = documented.difference(&described).collect();
    let extra: Vec<_> = described.difference(&documented).collect();
    assert!(missing.is_empty(), "in protocol.md's HTTP API table, not in /openapi.json: {missing:?}");
    assert!(extra.is_empty(), "in /openapi.json, not in protocol.md's HTTP API table: {extra:?}");

    // The web pages are left out, and the document says so.
    let description = doc["info"]["description"].as_str().unwrap();
    assert!(description.contains("Web pages") && description.contains("not part"), "{description}");

    // Every /v1 route needs the bearer token; the others none.
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    for (method, path, op) in operations(&doc) {
        let secured = op["security"].as_array().is_some_and(|s| s.iter().any(|r| r.get("bearer").is_some()));
        assert_eq!(secured, path.starts_with("/v1/"), "{method} {path}: security {}", op["security"]);
        if secured {
            assert!(op["responses"].get("401").is_some(), "{method} {path} does not document 401");
        }
        assert!(op["responses"].get("200").is_some(), "{method} {path} does not document 200");
    }
}

#[test]
fn every_error_of_protocol_md_is_in_the_document() {
    let doc = served_document();
    let documented = documented_errors();
    assert!(documented.len() >= 10, "protocol.md's error table was not read: {documented:?}");

    // The codes: exactly the table's.
    let codes: BTreeSet<String> = doc["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .expect("an ErrorCode enum")
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    let table_codes: BTreeSet<String> = documented.iter().map(|(_, c)| c.clone()).collect();
    assert_eq!(codes, table_codes, "ErrorCode in /openapi.json vs protocol.md's error table");
    let error = &doc["components"]["schemas"]["Error"];
    assert_eq!(error["required"], serde_json::json!(["code", "message"]), "{error}");

    // Each (status, code) answers some operation, with that status and that
    // code allowed in its schema; but 405, which no operation (a method and
    // a route) can answer: the document's description names it.
    let mut answered = BTreeSet::new();
    for (_, _, op) in operations(&doc) {
        for (status, resp) in op["responses"].as_object().unwrap() {
            let Ok(status) = status.parse::<u16>() else { continue };
            let schema = &resp["content"]["application/json"]["schema"];
            for item in schema["allOf"].as_array().into_iter().flatten() {
                for code in item["properties"]["code"]["enum"].as_array().into_iter().flatten() {
                    answered.insert((status, code.as_str().unwrap().to_string()));
                }
            }
        }
    }
    for (status, code) in &documented {
        if *status == 405 {
            assert!(doc["info"]["description"].as_str().unwrap().contains(&format!("405 `{code}`")));
            continue;
        }
        assert!(answered.contains(&(*status, code.clone())), "no operation documents {status} `{code}`");
    }
    let extra: Vec<_> = answered.difference(&documented).collect();
    assert!(extra.is_empty(), "errors in /openapi.json that protocol.md's table lacks: {extra:?}");
}

#[test]
fn every_reference_in_the_document_resolves() {
    let doc = served_document();
    fn walk<'a>(v: &'a Value, refs: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    refs.push(r);
                }
                m.values().for_each(|v| walk(v, refs));
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, refs)),
            _ => {}
        }
    }
    let mut refs = Vec::new();
    walk(&doc, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("unexpected $ref {r}"));
        assert!(doc["components"]["schemas"].get(name).is_some(), "$ref {r} does not resolve");
    }
    // The wire types are there, derived from the code.
    for name in ["PushRequest", "PushResponse", "PullResponse", "Op", "Effect", "Change", "Thread", "Message", "Doc"] {
        assert!(doc["components"]["schemas"].get(name).is_some(), "no schema {name}");
    }
}
