//! Push throughput through the real HTTP server on SQLite, next to the raw
//! SQLite insert rate measured in the same run.
//!
//! `cargo bench --bench server` starts `threadsync serve` on a temporary
//! SQLite file and pushes 1 KB messages in batches of 1, 10, 50 and 200 (one
//! mutation of N appends per push) from 4 concurrent clients, then prints
//! messages/s per batch size and the ratio to raw SQLite (WAL, 50 rows a
//! transaction, time-ordered keys, same synchronous setting).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

const MESSAGES: usize = 20_000;
const CLIENTS: usize = 4;

fn raw_sqlite(dir: &std::path::Path) -> f64 {
    let conn = rusqlite::Connection::open(dir.join("raw.sqlite")).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
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

    let raw = raw_sqlite(&dir);
    println!("raw SQLite insert (WAL, 50 rows/tx, ULID keys): {raw:>9.0} messages/s");
    for (round, batch) in [1usize, 10, 50, 200].into_iter().enumerate() {
        let per_client = MESSAGES / CLIENTS / batch;
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
        let rate = (per_client * batch * CLIENTS) as f64 / start.elapsed().as_secs_f64();
        println!("threadsync push, batch {batch:>3}: {rate:>9.0} messages/s  ({:.2}x raw)", rate / raw);
    }
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
