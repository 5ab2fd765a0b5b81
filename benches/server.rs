//! Push throughput through the real HTTP server on SQLite, next to the raw
//! SQLite insert rate measured in the same run.
//!
//! `cargo bench --bench server` starts `threadsync serve` on a temporary
//! SQLite file and pushes 1 KB messages in batches of 1, 10, 50 and 200 (one
//! mutation of N appends per push) from 4 concurrent clients, then prints
//! messages/s per batch size and the ratio to raw SQLite (WAL, 50 rows a
//! transaction, time-ordered keys, same synchronous setting).

#[path = "../tests/common/lsp_harness.rs"]
mod lsp_harness;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

const MESSAGES: usize = 20_000;
const CLIENTS: usize = 4;

/// `checkpoints`: SQLite's automatic checkpoints, in the commits that cross
/// their threshold (the default), or none.
fn raw_sqlite(dir: &std::path::Path, checkpoints: bool) -> f64 {
    let conn = rusqlite::Connection::open(dir.join(format!("raw-{checkpoints}.sqlite"))).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
    if !checkpoints {
        conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    }
    conn.execute("CREATE TABLE m (id TEXT PRIMARY KEY, body TEXT NOT NULL)", []).unwrap();
    let body = "x".repeat(1024);
    let start = Instant::now();
    let mut n = 0;
    while n < MESSAGES {
        let tx = conn.unchecked_transaction().unwrap();
        {
            let mut stmt = tx.prepare_cached("INSERT INTO m (id, body) VALUES (?1, ?2)").unwrap();
            for _ in 0..50 {
                stmt.execute(rusqlite::params![ulid::Ulid::new().to_string(), body]).unwrap();
                n += 1;
            }
        }
        tx.commit().unwrap();
    }
    MESSAGES as f64 / start.elapsed().as_secs_f64()
}

/// The statements threadsync's SQL store runs per pushed message (probe,
/// message row, log entry) and per push (client, thread, log head), on its
/// own schema, straight through rusqlite: no HTTP, no JSON, no decisions.
/// What the schema itself costs, as a second baseline.
fn raw_schema(dir: &std::path::Path, batch: usize) -> f64 {
    let path = dir.join(format!("schema-{batch}.sqlite"));
    drop(threadsync::server::sqlite::SqliteStore::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
    // As the server runs it: checkpoints are not on the write path.
    conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    let body = serde_json::to_string(&json!({"id": "m", "role": "user", "content": "x".repeat(1024)})).unwrap();
    conn.execute("INSERT INTO threads VALUES ('t', 'T', 0, 1, '', '{}', 0, NULL)", []).unwrap();
    let start = Instant::now();
    let (mut n, mut seq) = (0usize, 0i64);
    while n < MESSAGES {
        let tx = conn.unchecked_transaction().unwrap();
        tx.query_row("SELECT last_mutation FROM clients WHERE team = 't' AND client = 'c'", [], |_| Ok(())).ok();
        tx.query_row(
            "SELECT version, title, env, len, last_id FROM threads WHERE team = 't' AND thread = 'T'",
            [],
            |_| Ok(()),
        )
        .unwrap();
        tx.query_row("SELECT head_seq, floor_seq FROM teams WHERE team = 't'", [], |_| Ok(())).ok();
        for _ in 0..batch {
            let id = format!("m-{}", ulid::Ulid::new());
            let mut probe = tx
                .prepare_cached(
                    "SELECT pos, after, body, deleted FROM messages WHERE team = 't' AND thread = 'T' AND id = ?1",
                )
                .unwrap();
            assert!(!probe.exists([&id]).unwrap());
            tx.prepare_cached("INSERT INTO messages (team, thread, id, pos, after, deleted, body) VALUES ('t', 'T', ?1, ?2, NULL, 0, ?3)")
                .unwrap()
                .execute(rusqlite::params![id, n as i64, body])
                .unwrap();
            seq += 1;
            let effect = json!({"effect": "insert", "index": n, "after": null, "id": id}).to_string();
            tx.prepare_cached("INSERT INTO changes (team, seq, thread, version, effect, msg_id, author) VALUES ('t', ?1, 'T', ?1, ?2, ?3, 'c')")
                .unwrap()
                .execute(rusqlite::params![seq, effect, id])
                .unwrap();
            n += 1;
        }
        tx.execute("UPDATE threads SET version = ?1, len = ?1 WHERE team = 't' AND thread = 'T'", [seq]).unwrap();
        tx.execute(
            "INSERT INTO teams (team, head_seq) VALUES ('t', ?1) ON CONFLICT (team) DO UPDATE SET head_seq = excluded.head_seq",
            [seq],
        )
        .unwrap();
        tx.execute(
            "INSERT INTO clients (team, client, last_mutation) VALUES ('t', 'c', ?1)
             ON CONFLICT (team, client) DO UPDATE SET last_mutation = excluded.last_mutation",
            [seq],
        )
        .unwrap();
        tx.commit().unwrap();
    }
    MESSAGES as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let dir = std::env::temp_dir().join(format!("threadsync-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite://{}", dir.join("server.sqlite").display());
    let bin = env!("CARGO_BIN_EXE_threadsync");
    let out = Command::new(bin).args(["token", "create", "--team", "bench", "--db", &db]).output().unwrap();
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let mut server = Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--db", &db])
        .env("THREADSYNC_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().unwrap().unwrap();
        if let Some(a) = line.split("addr=").nth(1) {
            break a.split_whitespace().next().unwrap().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let url = format!("http://{addr}/v1/push");
    let body = "x".repeat(1024);

    let raw = raw_sqlite(&dir, true);
    println!("raw SQLite insert (WAL, 50 rows/tx, ULID keys): {raw:>9.0} messages/s  (the baseline)");
    let raw_nock = raw_sqlite(&dir, false);
    println!(
        "  the same without checkpoints on the insert path: {raw_nock:>9.0} messages/s  ({:.2}x raw)",
        raw_nock / raw
    );
    // The floor under batch 1: requests that do nothing (an empty push is
    // authenticated and runs its transaction, with no mutation in it).
    let empty = {
        let n = 4000;
        let body = serde_json::to_vec(&json!({"clientId": "c-empty", "mutations": []})).unwrap();
        let start = Instant::now();
        let workers: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (url, token, body) = (url.clone(), token.clone(), body.clone());
                std::thread::spawn(move || {
                    let http = reqwest::blocking::Client::new();
                    for _ in 0..n / CLIENTS {
                        let r = http
                            .post(&url)
                            .bearer_auth(&token)
                            .header("content-type", "application/json")
                            .body(body.clone())
                            .send()
                            .unwrap();
                        assert!(r.status().is_success());
                    }
                })
            })
            .collect();
        workers.into_iter().for_each(|w| w.join().unwrap());
        n as f64 / start.elapsed().as_secs_f64()
    };
    println!(
        "empty pushes (HTTP, auth, one transaction):    {empty:>9.0} requests/s  ({:.2}x raw: the bound at batch 1)",
        empty / raw
    );
    for batch in [1usize, 50] {
        let schema = raw_schema(&dir, batch);
        println!(
            "threadsync's statements on its schema, no HTTP, batch {batch:>3}: {schema:>9.0} messages/s  ({:.2}x raw: the schema's bound)",
            schema / raw
        );
    }
    // `THREADSYNC_BENCH_BATCH=50 THREADSYNC_BENCH_SCALE=10`: one batch
    // size, ten times the messages (long enough to profile the server).
    let scale: usize = std::env::var("THREADSYNC_BENCH_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let only: Option<usize> = std::env::var("THREADSYNC_BENCH_BATCH").ok().and_then(|s| s.parse().ok());
    for (round, batch) in [1usize, 10, 50, 200].into_iter().enumerate() {
        if only.is_some_and(|b| b != batch) {
            continue;
        }
        let per_client = MESSAGES * scale / CLIENTS / batch;
        // Request bodies are built before the clock starts, so the clients
        // (on the same 2 cores) spend their time sending, not in serde.
        let bodies: Vec<Vec<Vec<u8>>> = (0..CLIENTS)
            .map(|c| {
                let thread = format!("T-r{round}c{c}");
                let client = format!("c-r{round}c{c}");
                let mut last: Option<String> = None;
                (0..per_client)
                    .map(|m| {
                        let mut ops = Vec::with_capacity(batch + 1);
                        if m == 0 {
                            ops.push(json!({"op": "create", "created": 1, "env": {}}));
                        }
                        for _ in 0..batch {
                            let id = format!("m-{}", ulid::Ulid::new());
                            ops.push(json!({"op": "append", "after": last, "message": {"id": id, "role": "user", "content": body}}));
                            last = Some(id);
                        }
                        serde_json::to_vec(&json!({"clientId": client, "mutations": [{"id": m + 1, "threadId": thread, "ops": ops}]}))
                            .unwrap()
                    })
                    .collect()
            })
            .collect();
        let start = Instant::now();
        let cpu0 = (lsp_harness::cpu_time(server.id()), lsp_harness::cpu_time(std::process::id()));
        let workers: Vec<_> = bodies
            .into_iter()
            .map(|bodies| {
                let (url, token) = (url.clone(), token.clone());
                std::thread::spawn(move || {
                    let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
                    for b in bodies {
                        let r = http
                            .post(&url)
                            .bearer_auth(&token)
                            .header("content-type", "application/json")
                            .body(b)
                            .send()
                            .unwrap();
                        assert!(r.status().is_success(), "{}", r.text().unwrap());
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        let n = (per_client * batch * CLIENTS) as f64;
        let rate = n / start.elapsed().as_secs_f64();
        // Where the time goes: the server's CPU and the clients' (this
        // process) per message, and the rate the machine's cores allow them.
        let server_us = (lsp_harness::cpu_time(server.id()) - cpu0.0).as_secs_f64() * 1e6 / n;
        let clients_us = (lsp_harness::cpu_time(std::process::id()) - cpu0.1).as_secs_f64() * 1e6 / n;
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get()) as f64;
        println!(
            "threadsync push, batch {batch:>3}: {rate:>9.0} messages/s  ({:.2}x raw; {:.2}x raw without checkpoints)  \
             CPU per message: server {server_us:.1} us, clients {clients_us:.1} us; {cores} cores allow {:.0}/s",
            rate / raw,
            rate / raw_nock,
            cores * 1e6 / (server_us + clients_us)
        );
    }
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
