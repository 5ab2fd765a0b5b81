//! The chaos runner: real processes under seeded faults, then a check that
//! nothing confirmed was lost, duplicated or left diverged.
//!
//! A schedule (one seed) starts one `threadsync serve` on SQLite, or two on
//! one PostgreSQL schema, and three `threadsync lsp` sidecars, each behind
//! a fault-injecting loopback proxy of its own (`Faults`: delay, resets,
//! drops mid-stream, truncated requests and responses, partitions). It
//! then runs a seeded mix of steps: writes through `appendMessage` and
//! `setTitle`, writes as an assistant makes them (a `.json` rewritten by
//! rename or in place, lines appended to a `.jsonl` log; some messages a
//! megabyte), proxy faults, `kill -9` and restart of sidecars and servers,
//! and SIGTERM of servers. Then it heals everything, forces a sync until
//! all is quiet, and checks with the unique marker every write carried:
//! every confirmed write is present exactly once on every client and the
//! server, all copies are equal, no process died on its own, and every
//! SIGTERM exited 0.
//!
//! `cargo test --test chaos` runs `CHAOS_SCHEDULES` schedules per backend
//! (default 10); `CHAOS_SEED=<n> CHAOS_BACKEND=sqlite|postgres` replays
//! one. A failing schedule prints its seed and the command that replays it.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::lsp_harness::Sidecar;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

// ----- the fault-injecting proxy --------------------------------------------------

/// What a proxy does to the bytes it carries (changed between steps).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    None,
    /// Every chunk waits this long.
    Delay(u64),
    /// Each connection is cut after this many bytes (either way).
    DropAfter(usize),
    /// Requests reach the server cut short, then the connection closes.
    TruncateRequests,
    /// Answers reach the client cut short, then the connection closes.
    TruncateResponses,
    /// No connection gets through.
    Partition,
}

struct Faults {
    addr: String,
    fault: Arc<Mutex<Fault>>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Faults {
    fn start(target: String) -> Faults {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let fault = Arc::new(Mutex::new(Fault::None));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (f, c) = (fault.clone(), conns.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if *f.lock().unwrap() == Fault::Partition {
                    reset(&client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target) else {
                    reset(&client);
                    continue;
                };
                c.lock().unwrap().extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                for (from, to, upstream) in
                    [(client.try_clone().unwrap(), server.try_clone().unwrap(), true), (server, client, false)]
                {
                    let f = f.clone();
                    std::thread::spawn(move || pump(from, to, upstream, &f));
                }
            }
        });
        Faults { addr, fault, conns }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
        if fault == Fault::Partition {
            self.reset_all();
        }
    }

    /// Resets every connection it carries (RST, not FIN).
    fn reset_all(&self) {
        for c in self.conns.lock().unwrap().drain(..) {
            reset(&c);
        }
    }
}

/// Closes with a reset: SO_LINGER 0, then close.
fn reset(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt on a socket this process owns, with a valid struct.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    let _ = s.shutdown(Shutdown::Both);
}

fn pump(mut from: TcpStream, mut to: TcpStream, upstream: bool, fault: &Mutex<Fault>) {
    let mut buf = vec![0; 64 << 10];
    let mut carried = 0usize;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let f = *fault.lock().unwrap();
        let n = match f {
            Fault::None => n,
            Fault::Delay(ms) => {
                std::thread::sleep(Duration::from_millis(ms));
                n
            }
            Fault::DropAfter(limit) => {
                let left = limit.saturating_sub(carried);
                if left < n {
                    let _ = to.write_all(&buf[..left]);
                    break;
                }
                n
            }
            Fault::TruncateRequests if upstream => {
                let _ = to.write_all(&buf[..n / 2]);
                break;
            }
            Fault::TruncateResponses if !upstream => {
                let _ = to.write_all(&buf[..n / 2]);
                break;
            }
            Fault::Partition => break,
            _ => n,
        };
        carried += n;
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    reset(&to);
    reset(&from);
}

// ----- servers ----------------------------------------------------------------------

struct ServerProc {
    db: String,
    port: u16,
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl ServerProc {
    fn start(db: &str) -> ServerProc {
        let mut s = ServerProc { db: db.to_string(), port: free_port(), child: None };
        s.restart();
        s
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn restart(&mut self) {
        for _ in 0..50 {
            let mut child = Command::new(env!("CARGO_BIN_EXE_threadsync"))
                .args(["serve", "--listen", &self.addr(), "--db", &self.db, "--shutdown-grace", "3"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if TcpStream::connect(self.addr()).is_ok() {
                    self.child = Some(child);
                    return;
                }
                if child.try_wait().unwrap().is_some() {
                    break; // the port is still taken: try again
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the server did not come back on {}", self.addr());
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM; returns how it exited.
    fn term(&mut self) -> Result<(), String> {
        let Some(mut c) = self.child.take() else { return Ok(()) };
        // SAFETY: signals a child this process started and has not reaped.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return if status.success() { Ok(()) } else { Err(format!("SIGTERM: the server exited {status}")) };
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return Err("SIGTERM: the server did not exit within 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether it died without being told to.
    fn crashed(&mut self) -> Option<String> {
        let c = self.child.as_mut()?;
        c.try_wait().unwrap().map(|s| format!("the server on {} exited by itself: {s}", self.addr()))
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

// ----- a schedule -------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// What must hold after the heal: every confirmed write, by its marker.
#[derive(Default)]
struct Ledger {
    /// marker → the thread it was written to.
    writes: BTreeMap<String, String>,
}

struct Machine {
    dir: PathBuf,
    proxy: Faults,
    side: Option<Sidecar>,
}

impl Machine {
    fn opts(&self, token: &str) -> Value {
        json!({
            "server": self.proxy.url(), "token": token,
            "threadsDir": self.dir.join("threads"), "stateDir": self.dir.join("state"),
        })
    }

    fn start(&mut self, token: &str) {
        let mut s = Sidecar::spawn(&self.dir, self.opts(token), None);
        s.ignore_everything();
        self.side = Some(s);
    }

    fn kill9(&mut self) {
        if let Some(mut s) = self.side.take() {
            s.kill9();
        }
    }
}

/// The outcome of one schedule.
struct Outcome {
    steps: usize,
    /// Faults injected: proxy faults, kill -9s, SIGTERMs.
    faults: usize,
    writes: usize,
    lost: usize,
    duplicated: usize,
    diverged: usize,
    problems: Vec<String>,
}

fn rpc(s: &mut Sidecar, method: &str, params: Value) -> Result<Value, String> {
    let a = s.request(method, params);
    match a.get("result") {
        Some(r) => Ok(r.clone()),
        None => Err(a["error"].to_string()),
    }
}

/// Writes a file as an assistant does.
fn write_file(path: &Path, bytes: &[u8], atomic: bool) {
    if atomic {
        let tmp = path.with_extension("tmp-chaos");
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    } else {
        std::fs::write(path, bytes).unwrap();
    }
}

fn marker_content(marker: &str, big: bool) -> Value {
    if big { json!(format!("{marker} {}", "x".repeat(1 << 20))) } else { json!(marker) }
}

fn content_marker(c: &Value) -> Option<&str> {
    c.as_str().and_then(|s| s.split(' ').next()).filter(|s| s.starts_with("mk-"))
}

fn run_schedule(seed: u64, backend: Backend) -> Outcome {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let root = common::TempDir::new(&format!("chaos-{seed}"));
    let pg = (backend == Backend::Postgres).then(|| common::PgSchema::new(&format!("chaos{seed}")));
    let db = match &pg {
        Some(s) => s.url.clone(),
        None => format!("sqlite://{}", root.0.join("server.sqlite").display()),
    };
    let mut servers = vec![ServerProc::start(&db)];
    if backend == Backend::Postgres {
        servers.push(ServerProc::start(&db));
    }
    let token = {
        let out = Command::new(env!("CARGO_BIN_EXE_threadsync"))
            .args(["token", "create", "--team", "chaos", "--db", &db])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let mut machines: Vec<Machine> = (0..3)
        .map(|i| {
            let dir = root.0.join(format!("m{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            Machine { dir, proxy: Faults::start(servers[i % servers.len()].addr()), side: None }
        })
        .collect();
    for m in &mut machines {
        m.start(&token);
    }
    let mut ledger = Ledger::default();
    let mut problems = Vec::new();
    let mut threads: Vec<(String, bool)> = Vec::new(); // (id, is a .jsonl log)
    // Each machine starts a thread through the sidecar; machine 0 also an
    // assistant's log.
    for (i, m) in machines.iter_mut().enumerate() {
        let s = m.side.as_mut().unwrap();
        let id = rpc(s, "threadsync/createThread", json!({ "title": format!("t{i}") })).unwrap()["threadId"]
            .as_str()
            .unwrap()
            .to_string();
        threads.push((id, false));
    }
    let log_id = format!("T-log-{seed}");
    let header = json!({ "type": "thread", "id": log_id, "created": 1, "title": "log", "env": {} });
    std::fs::write(machines[0].dir.join("threads").join(format!("{log_id}.jsonl")), format!("{header}\n")).unwrap();
    threads.push((log_id, true));

    let steps = rng.random_range(60..100);
    let mut faults = 0;
    let mut n = 0u64;
    let mut next_marker = || {
        n += 1;
        format!("mk-{seed}-{n}")
    };
    for _ in 0..steps {
        let roll = rng.random_range(0..100);
        let mi = rng.random_range(0..machines.len());
        let (tid, is_log) = threads[rng.random_range(0..threads.len())].clone();
        let big = rng.random_range(0..100) < 3;
        match roll {
            // Writes through the sidecar.
            0..=29 => {
                let m = &mut machines[mi];
                let Some(s) = m.side.as_mut() else { continue };
                let marker = next_marker();
                let params = json!({ "threadId": tid, "role": "user", "content": marker_content(&marker, big) });
                if rpc(s, "threadsync/appendMessage", params).is_ok() {
                    ledger.writes.insert(marker, tid.clone());
                }
            }
            30..=33 => {
                if let Some(s) = machines[mi].side.as_mut() {
                    let _ = rpc(s, "threadsync/setTitle", json!({ "threadId": tid, "title": next_marker() }));
                }
            }
            // Writes as an assistant makes them.
            34..=57 => {
                let m = &machines[mi];
                let marker = next_marker();
                if is_log {
                    let path = m.dir.join("threads").join(format!("{tid}.jsonl"));
                    if !path.exists() {
                        continue;
                    }
                    let rec = json!({ "type": "message", "id": marker, "role": "assistant", "content": marker_content(&marker, big) });
                    let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
                    f.write_all(format!("{rec}\n").as_bytes()).unwrap();
                    ledger.writes.insert(marker, tid.clone());
                } else {
                    let path = m.dir.join("threads").join(format!("{tid}.json"));
                    let Ok(bytes) = std::fs::read(&path) else { continue };
                    let Ok(mut t) = serde_json::from_slice::<Value>(&bytes) else { continue };
                    let Some(msgs) = t["messages"].as_array_mut() else { continue };
                    msgs.push(json!({ "id": marker, "role": "assistant", "content": marker_content(&marker, big), "timestamp": 1 }));
                    write_file(&path, &serde_json::to_vec(&t).unwrap(), rng.random_bool(0.5));
                    ledger.writes.insert(marker, tid.clone());
                }
            }
            // Network faults.
            58..=77 => {
                let fault = match rng.random_range(0..6) {
                    0 => Fault::Delay(rng.random_range(20..300)),
                    1 => Fault::DropAfter(rng.random_range(100..20_000)),
                    2 => Fault::TruncateRequests,
                    3 => Fault::TruncateResponses,
                    4 => Fault::Partition,
                    _ => Fault::None,
                };
                machines[mi].proxy.set(fault);
                faults += 1;
                if rng.random_bool(0.3) {
                    machines[mi].proxy.reset_all();
                }
            }
            78..=86 => machines[mi].proxy.set(Fault::None),
            // Processes.
            87..=91 => {
                if machines[mi].side.is_some() {
                    faults += 1;
                    machines[mi].kill9();
                } else {
                    machines[mi].start(&token);
                }
            }
            92..=95 => {
                let si = rng.random_range(0..servers.len());
                faults += 1;
                servers[si].kill9();
                servers[si].restart();
            }
            _ => {
                let si = rng.random_range(0..servers.len());
                faults += 1;
                if let Err(e) = servers[si].term() {
                    problems.push(e);
                }
                servers[si].restart();
            }
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(0..120)));
        for s in &mut servers {
            if let Some(e) = s.crashed() {
                problems.push(e);
                s.restart();
            }
        }
    }

    // Heal: every proxy clean, every process up, then sync until quiet.
    for m in &mut machines {
        m.proxy.set(Fault::None);
        if let Some(s) = m.side.as_mut()
            && let Ok(Some(status)) = s.child.try_wait()
        {
            problems.push(format!("a sidecar exited by itself: {status}"));
            m.side = None;
        }
        if m.side.is_none() {
            m.start(&token);
        }
    }
    let (copies, quiet) = settle(&mut machines, &servers[0], &token, &threads);
    if !quiet {
        problems.push("the copies did not become equal within 90 s of the heal".into());
    }

    // Check every copy: each confirmed marker once, all copies equal.
    let (mut lost, mut duplicated, mut diverged) = (0, 0, 0);
    for (tid, _) in &threads {
        let Some(reference) = copies.get(&("server".to_string(), tid.clone())) else {
            problems.push(format!("the server has no thread {tid}"));
            continue;
        };
        for (who, _) in copies.keys().filter(|(_, t)| t == tid) {
            let copy = &copies[&(who.clone(), tid.clone())];
            if copy != reference {
                diverged += 1;
                problems.push(format!("{who}'s copy of {tid} differs from the server's"));
            }
            let mut seen: HashMap<&str, usize> = HashMap::new();
            for m in copy["messages"].as_array().into_iter().flatten() {
                if let Some(mk) = content_marker(&m["content"]) {
                    *seen.entry(mk).or_default() += 1;
                }
            }
            for (mk, t) in ledger.writes.iter().filter(|(_, t)| *t == tid) {
                match seen.get(mk.as_str()).copied().unwrap_or(0) {
                    1 => {}
                    0 => {
                        lost += 1;
                        problems.push(format!("{mk} (written to {t}) is missing on {who}"));
                    }
                    k => {
                        duplicated += 1;
                        problems.push(format!("{mk} is on {who} {k} times"));
                    }
                }
            }
        }
    }
    // Every server still answers a SIGTERM with exit 0.
    for s in &mut servers {
        if let Some(e) = s.crashed() {
            problems.push(e);
        } else if let Err(e) = s.term() {
            problems.push(e);
        }
    }
    for m in &mut machines {
        if let Some(s) = m.side.as_mut()
            && let Ok(Some(status)) = s.child.try_wait()
        {
            problems.push(format!("a sidecar exited by itself: {status}"));
        }
        m.kill9();
    }
    Outcome { steps, faults, writes: ledger.writes.len(), lost, duplicated, diverged, problems }
}

/// Forces syncs until every sidecar's copy of every thread equals the
/// server's (or 90 s pass). Returns the copies last read: (who, thread) →
/// `{title, messages: [{id, content}]}`.
fn settle(
    machines: &mut [Machine],
    server: &ServerProc,
    token: &str,
    threads: &[(String, bool)],
) -> (HashMap<(String, String), Value>, bool) {
    let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let shape = |t: &Value| {
        let msgs: Vec<Value> = t["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| json!({ "id": m["id"], "content": m["content"] }))
            .collect();
        json!({ "title": t["title"], "messages": msgs })
    };
    loop {
        let mut copies = HashMap::new();
        for m in machines.iter_mut() {
            let s = m.side.as_mut().unwrap();
            let _ = rpc(s, "workspace/executeCommand", json!({ "command": "threadsync.forceSync", "arguments": [] }));
        }
        for (tid, _) in threads {
            if let Ok(r) = http.get(format!("http://{}/v1/threads/{tid}", server.addr())).bearer_auth(token).send()
                && r.status().is_success()
                && let Ok(v) = r.json::<Value>()
            {
                copies.insert(("server".to_string(), tid.clone()), shape(&v));
            }
            for (i, m) in machines.iter_mut().enumerate() {
                let s = m.side.as_mut().unwrap();
                if let Ok(v) = rpc(s, "threadsync/getThread", json!({ "threadId": tid })) {
                    copies.insert((format!("machine {i}"), tid.clone()), shape(&v));
                }
            }
        }
        let equal = threads.iter().all(|(tid, _)| {
            let reference = copies.get(&("server".to_string(), tid.clone()));
            reference.is_some()
                && (0..machines.len()).all(|i| copies.get(&(format!("machine {i}"), tid.clone())) == reference)
        });
        if equal || Instant::now() > deadline {
            return (copies, equal);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn run(backend: Backend, seeds: impl Iterator<Item = u64>) {
    static TOTAL: AtomicU64 = AtomicU64::new(0);
    let name = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let (mut ran, mut failed, mut writes, mut steps) = (0, 0, 0, 0);
    let (mut lost, mut duplicated, mut diverged) = (0, 0, 0);
    let started = Instant::now();
    for seed in seeds {
        let t = Instant::now();
        let o = run_schedule(seed, backend);
        ran += 1;
        writes += o.writes;
        steps += o.steps;
        lost += o.lost;
        duplicated += o.duplicated;
        diverged += o.diverged;
        let ok = o.problems.is_empty();
        println!(
            "chaos {name} seed {seed}: {} steps, {} faults, {} writes, lost {}, duplicated {}, diverged {} — {} ({:.1} s)",
            o.steps,
            o.faults,
            o.writes,
            o.lost,
            o.duplicated,
            o.diverged,
            if ok { "ok" } else { "FAILED" },
            t.elapsed().as_secs_f64()
        );
        if !ok {
            failed += 1;
            for p in o.problems.iter().take(20) {
                println!("  {p}");
            }
            println!("  replay: CHAOS_SEED={seed} CHAOS_BACKEND={name} cargo test --test chaos -- --nocapture");
        }
    }
    TOTAL.fetch_add(ran, Ordering::Relaxed);
    println!(
        "chaos-{name}: {} passed, {failed} failed ({steps} steps, {writes} confirmed writes, lost {lost}, duplicated {duplicated}, diverged {diverged}, {:.0} s)",
        ran - failed,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(failed, 0, "{failed} chaos schedules failed on {name}; each printed its seed above");
}

fn seeds(backend: &str) -> Option<Box<dyn Iterator<Item = u64>>> {
    if let Ok(seed) = std::env::var("CHAOS_SEED") {
        let wanted = std::env::var("CHAOS_BACKEND").unwrap_or_else(|_| "sqlite".into());
        return (wanted == backend)
            .then(|| Box::new(std::iter::once(seed.parse().expect("CHAOS_SEED is a number"))) as _);
    }
    let n: u64 = std::env::var("CHAOS_SCHEDULES").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let base: u64 = std::env::var("CHAOS_BASE").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let offset = if backend == "postgres" { 1_000_000 } else { 0 };
    Some(Box::new((0..n).map(move |i| base + offset + i)))
}

/// One schedule at a time per backend; the two backends run side by side
/// only if the test harness runs them so (CI: one test thread each).
#[test]
fn chaos_sqlite() {
    if let Some(s) = seeds("sqlite") {
        run(Backend::Sqlite, s);
    }
}

#[test]
fn chaos_postgres() {
    if let Some(s) = seeds("postgres") {
        run(Backend::Postgres, s);
    }
}
