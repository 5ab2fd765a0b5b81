//! The local boundary under load: what one change costs the sidecar as a
//! thread grows, measured with the real `threadsync serve` and real
//! `threadsync lsp` processes, all in one run:
//!
//! - `.jsonl` and `.json` threads of 10 KB, 1 MB, 5 MB and 20 MB (1 KB
//!   messages): `threadsync/appendMessage` latency (median), the bytes the
//!   sidecar writes to files per 1 KB append (its `wchar` from
//!   `/proc/<pid>/io`, less what it wrote to the editor's pipe and to the
//!   server's socket, both counted by the harness), and how long an
//!   assistant's appended line takes to reach the server;
//! - 1,000 sequential 1 KB appends to one `.jsonl` thread;
//! - idle memory (RSS) after syncing 100 threads of 2 MB each, then 1,000.
//!
//! Ratios are against the 10 KB thread of the same run.
//!
//! `cargo bench --bench local` (`THREADSYNC_BENCH_QUICK=1`: 100 threads only
//! for the memory part).

#[path = "../tests/common/lsp_harness.rs"]
mod lsp_harness;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use lsp_harness::*;
use serde_json::{Value, json};

const KB: usize = 1024;
/// Longer than a sidecar takes to settle after its last write (a `.json`
/// write is checked again 2 s later, and settling waits for a quiet second).
const SETTLE: Duration = Duration::from_millis(3500);
const MB: usize = 1024 * KB;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A 1 KB message body.
fn text(tag: &str, i: usize) -> String {
    let mut s = format!("{tag} {i}: ");
    while s.len() < KB {
        s.push_str("lorem ipsum dolor sit amet ");
    }
    s.truncate(KB);
    s
}

/// Writes a thread of about `size` bytes of 1 KB messages (as an assistant
/// would have), as a log or a `.json` file.
fn write_thread(dir: &Path, id: &str, size: usize, log: bool, message: usize) {
    let n = (size / message).max(1);
    let body = |i: usize| {
        let mut s = text(id, i);
        while s.len() < message {
            s.push_str(&text(id, i));
        }
        s.truncate(message);
        s
    };
    if log {
        let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join(format!("{id}.jsonl"))).unwrap());
        writeln!(f, "{}", json!({ "type": "thread", "id": id, "created": 1, "title": id, "env": {} })).unwrap();
        for i in 0..n {
            let m = json!({ "type": "message", "id": format!("m-{i}"), "role": "user", "content": body(i), "timestamp": i });
            writeln!(f, "{m}").unwrap();
        }
    } else {
        let messages: Vec<Value> = (0..n)
            .map(|i| json!({ "id": format!("m-{i}"), "role": "user", "content": body(i), "timestamp": i }))
            .collect();
        let t = json!({ "id": id, "created": 1, "title": id, "env": {}, "messages": messages });
        std::fs::write(dir.join(format!("{id}.json")), serde_json::to_vec(&t).unwrap()).unwrap();
    }
}

fn proc_io(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    s.lines().find_map(|l| l.strip_prefix(&format!("{key}: "))?.trim().parse().ok()).unwrap()
}

/// A sidecar whose traffic to the server goes through a counting proxy.
struct Counted {
    car: Sidecar,
    proxy: Proxy,
}

impl Counted {
    fn start(dir: &Path, server: &Server, token: &str) -> Counted {
        std::fs::create_dir_all(dir).unwrap();
        let proxy = Proxy::start(&server.addr);
        let opts = json!({ "server": proxy.url(), "token": token, "threadsDir": dir.join("threads"), "stateDir": dir.join("state") });
        // Quiet logs: every byte written is a file's or the protocol's.
        let mut car = Sidecar::spawn_env(dir, opts, None, &[("THREADSYNC_LOG", "error")]);
        // A benchmark measures; the tests check what sidecars say.
        car.ignore_everything();
        Counted { car, proxy }
    }

    /// Bytes written to files so far: all writes, less the editor's pipe
    /// and the server's socket.
    fn file_bytes(&self) -> u64 {
        let all = proc_io(self.car.child.id(), "wchar");
        all - self.car.stdout_bytes.load(Ordering::Relaxed) - self.proxy.sent.load(Ordering::Relaxed)
    }

    fn force_sync(&mut self) {
        self.car.ok("workspace/executeCommand", json!({ "command": "threadsync.forceSync", "arguments": [] }));
    }

    fn append(&mut self, id: &str, content: &str) -> Duration {
        let start = Instant::now();
        self.car.ok("threadsync/appendMessage", json!({ "threadId": id, "role": "user", "content": content }));
        start.elapsed()
    }
}

/// The server's change-log head (a pull without a cursor pages through
/// every thread first: follow it to the end).
fn head(url: &str, token: &str) -> String {
    let client = reqwest::blocking::Client::new();
    let mut cursor = String::new();
    loop {
        let r: Value = client
            .get(format!("{url}/v1/pull"))
            .query(&[("cursor", cursor.as_str())])
            .bearer_auth(token)
            .send()
            .unwrap()
            .json()
            .unwrap();
        cursor = r["cursor"].as_str().unwrap().to_string();
        if r["upToDate"] == true {
            return cursor;
        }
    }
}

/// Waits (a held long-poll, as a sidecar would) for the log to move past `cursor`.
fn wait_past(url: &str, token: &str, cursor: &str) -> Instant {
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(40)).build().unwrap();
    loop {
        let r: Value = client
            .get(format!("{url}/v1/pull"))
            .query(&[("cursor", cursor), ("wait", "25")])
            .bearer_auth(token)
            .send()
            .unwrap()
            .json()
            .unwrap();
        if !r["changes"].as_array().unwrap().is_empty() {
            return Instant::now();
        }
    }
}

struct Row {
    size: usize,
    latency: Duration,
    disk_per_append: f64,
    /// The thread file's size in the middle of the disk window (it grows
    /// by the earlier appends).
    file_size: f64,
    to_server: Option<Duration>,
}

fn per_size(root: &Path, server: &Server, token: &str, log: bool, sizes: &[usize]) -> Vec<Row> {
    let kind = if log { "jsonl" } else { "json" };
    let dir = root.join(format!("sizes-{kind}"));
    std::fs::create_dir_all(dir.join("threads")).unwrap();
    for &size in sizes {
        write_thread(&dir.join("threads"), &format!("T-{kind}-{}", size / KB), size, log, KB);
    }
    let mut a = Counted::start(&dir, server, token);
    a.car.wait_status("synced", Duration::from_secs(600));
    a.force_sync();
    let mut rows = Vec::new();
    for &size in sizes {
        let id = format!("T-{kind}-{}", size / KB);
        // Warm: the thread in memory, connections open.
        for i in 0..3 {
            a.append(&id, &text("warm", i));
        }
        a.force_sync();
        // Latency: back-to-back appends, each answered once stored and in the file.
        let lat: Vec<Duration> = (0..40).map(|i| a.append(&id, &text("lat", i))).collect();
        a.force_sync();
        // Disk: every append's whole cycle (stored, written, pushed,
        // confirmed), over enough appends to include the database's
        // checkpoints at their usual rate.
        let n = if log { 150 } else { 10 };
        // Quiet first, and after: the sidecar checkpoints its database when
        // it settles, so the window holds these appends' checkpoint and no
        // earlier work's.
        std::thread::sleep(SETTLE);
        let ext = if log { "jsonl" } else { "json" };
        let file_len = || std::fs::metadata(dir.join("threads").join(format!("{id}.{ext}"))).unwrap().len() as f64;
        let first = file_len();
        let before = a.file_bytes();
        for i in 0..n {
            a.append(&id, &text("disk", i));
            a.force_sync();
        }
        let file_size = (first + file_len()) / 2.0;
        std::thread::sleep(SETTLE);
        let disk = (a.file_bytes() - before) as f64 / n as f64;
        // An assistant's line reaching the server.
        let to_server = log.then(|| {
            let path = dir.join("threads").join(format!("{id}.jsonl"));
            let runs: Vec<Duration> = (0..15)
                .map(|i| {
                    let cursor = head(&server.url(), token);
                    let (url, tok) = (server.url(), token.to_string());
                    let waiter = std::thread::spawn(move || wait_past(&url, &tok, &cursor));
                    std::thread::sleep(Duration::from_millis(30)); // the long-poll is held
                    let line = format!("{}\n", json!({ "type": "message", "id": format!("m-asst-{i}"), "role": "assistant", "content": text("assistant", i) }));
                    let start = Instant::now();
                    let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
                    f.write_all(line.as_bytes()).unwrap();
                    drop(f);
                    let reached = waiter.join().unwrap();
                    reached.saturating_duration_since(start)
                })
                .collect();
            median(runs)
        });
        rows.push(Row { size, latency: median(lat), disk_per_append: disk, file_size, to_server });
    }
    rows
}

/// An idle sidecar's memory after syncing `n` threads of 2 MB (100
/// messages of 20 KB each) that it found in its threads directory (its
/// own team: nothing else to pull).
fn memory(root: &Path, server: &Server, n: usize) -> (f64, Duration) {
    let token = &server.token(&format!("memory-{n}"));
    let dir = root.join(format!("memory-{n}"));
    let threads = dir.join("threads");
    std::fs::create_dir_all(&threads).unwrap();
    for i in 0..n {
        write_thread(&threads, &format!("T-mem{n}-{i}"), 2 * MB, true, 20 * KB);
    }
    let start = Instant::now();
    let mut c = Counted::start(&dir, server, token);
    c.car.wait_status("synced", Duration::from_secs(3600));
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        c.force_sync();
        let st = c.car.ok("threadsync/getStatus", json!({}));
        if st["pending"] == 0 || Instant::now() > deadline {
            break;
        }
    }
    let took = start.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    (rss_kib(c.car.child.id()) as f64 / 1024.0, took)
}

fn main() {
    let quick = std::env::var("THREADSYNC_BENCH_QUICK").is_ok();
    let root: PathBuf = std::env::temp_dir().join(format!("threadsync-bench-local-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let server = Server::start(&root);
    let token = server.token("bench");
    let sizes = [10 * KB, MB, 5 * MB, 20 * MB];

    if std::env::var("THREADSYNC_BENCH_ONLY").as_deref() == Ok("memory") {
        let (rss100, t100) = memory(&root, &server, 100);
        println!("idle RSS after syncing 100 threads of 2 MB: {rss100:.1} MB (synced in {:.0} s)", t100.as_secs_f64());
        return;
    }
    if std::env::var("THREADSYNC_BENCH_ONLY").as_deref() == Ok("disk") {
        // Some sizes of one layout, for looking into (e.g. under strace):
        // `THREADSYNC_BENCH_KIND=json`, `THREADSYNC_BENCH_SIZE_KB=10,20480`.
        let log = std::env::var("THREADSYNC_BENCH_KIND").as_deref() != Ok("json");
        let sizes: Vec<usize> = std::env::var("THREADSYNC_BENCH_SIZE_KB")
            .unwrap_or_else(|_| "1024".into())
            .split(',')
            .map(|kb| kb.trim().parse::<usize>().expect("sizes in KB") * KB)
            .collect();
        for r in per_size(&root, &server, &token, log, &sizes) {
            println!(
                "{} KB: appendMessage {:.2} ms, disk/append {:.1} KB (file {:.0} KB)",
                r.size / KB,
                ms(r.latency),
                r.disk_per_append / 1024.0,
                r.file_size / 1024.0
            );
        }
        return;
    }
    let log = per_size(&root, &server, &token, true, &sizes);
    let json = per_size(&root, &server, &token, false, &sizes);
    let base = &log[0];
    println!("one 1 KB append, by thread size (real serve + lsp; ratios against the 10 KB thread):");
    println!(
        "| thread | .jsonl appendMessage | ratio | .jsonl disk/append | assistant line → server | ratio | .json appendMessage | .json file then | .json disk/append | ÷ file size | beyond the file |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (l, j) in log.iter().zip(&json) {
        let to = l.to_server.unwrap();
        println!(
            "| {} | {:.2} ms | {:.2}× | {:.1} KB | {:.2} ms | {:.2}× | {:.2} ms | {:.0} KB | {:.0} KB | {:.2}× | {:.1} KB |",
            if l.size < MB { format!("{} KB", l.size / KB) } else { format!("{} MB", l.size / MB) },
            ms(l.latency),
            l.latency.as_secs_f64() / base.latency.as_secs_f64(),
            l.disk_per_append / 1024.0,
            ms(to),
            to.as_secs_f64() / base.to_server.unwrap().as_secs_f64(),
            ms(j.latency),
            j.file_size / 1024.0,
            j.disk_per_append / 1024.0,
            j.disk_per_append / j.file_size,
            (j.disk_per_append - j.file_size) / 1024.0,
        );
    }

    // 1,000 sequential appends to one log.
    let dir = root.join("thousand");
    let mut a = Counted::start(&dir, &server, &token);
    a.car.wait_status("synced", Duration::from_secs(60));
    let id =
        a.car.ok("threadsync/createThread", json!({ "title": "thousand" }))["threadId"].as_str().unwrap().to_string();
    let start = Instant::now();
    for i in 0..1000 {
        a.append(&id, &text("seq", i));
    }
    let answered = start.elapsed();
    a.force_sync();
    let synced = start.elapsed();
    println!(
        "1,000 sequential 1 KB appends to one .jsonl thread: {:.0} messages/s answered, {:.0} messages/s on the server",
        1000.0 / answered.as_secs_f64(),
        1000.0 / synced.as_secs_f64()
    );
    drop(a);

    let (rss100, t100) = memory(&root, &server, 100);
    println!("idle RSS after syncing 100 threads of 2 MB: {rss100:.1} MB (synced in {:.0} s)", t100.as_secs_f64());
    if !quick {
        let (rss1000, t1000) = memory(&root, &server, 1000);
        println!(
            "idle RSS after syncing 1,000 threads of 2 MB: {rss1000:.1} MB ({:.2}× the 100-thread figure; synced in {:.0} s)",
            rss1000 / rss100,
            t1000.as_secs_f64()
        );
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&root);
}
