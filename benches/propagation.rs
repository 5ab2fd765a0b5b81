//! Propagation latency through real sidecars and a real server: client A
//! appends, every other client's `threadsync/threadUpdated` is timed. With 10
//! and 50 sidecars, long-poll against the seed's fixed 5 s polling (the same
//! binary with `poll: fixed:5`), in one run. Then an idle sidecar's request
//! rate and a sidecar's memory with 1,000 threads.
//!
//! `cargo bench --bench propagation` (`THREADSYNC_BENCH_ONLY=50`: long-poll
//! with 50 sidecars only; `THREADSYNC_BENCH_DETAIL=1`: round by round).

#[path = "../tests/common/lsp_harness.rs"]
mod lsp_harness;

use std::path::Path;
use std::time::{Duration, Instant};

use lsp_harness::*;
use serde_json::json;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn spawn(dir: &Path, server: &Server, token: &str, poll: &str) -> Sidecar {
    std::fs::create_dir_all(dir).unwrap();
    let opts = json!({ "server": server.url(), "token": token, "threadsDir": dir.join("threads"),
                       "stateDir": dir.join("state"), "poll": poll });
    let mut car = Sidecar::spawn(dir, opts, None);
    // A benchmark measures; the tests check what sidecars say.
    car.ignore_everything();
    car
}

fn latencies(root: &Path, server: &Server, token: &str, n: usize, poll: &str, rounds: usize) -> Vec<Duration> {
    let mut cars: Vec<Sidecar> =
        (0..n).map(|i| spawn(&root.join(format!("{poll}-{n}-{i}")), server, token, poll)).collect();
    for c in &mut cars {
        c.wait_status("synced", Duration::from_secs(60));
    }
    let id =
        cars[0].ok("threadsync/createThread", json!({ "title": "latency" }))["threadId"].as_str().unwrap().to_string();
    for c in cars.iter_mut().skip(1) {
        c.wait_thread(&id, Duration::from_secs(60), |t| t["title"] == "latency");
        c.notes.clear();
    }
    let mut all = Vec::new();
    let detail = std::env::var("THREADSYNC_BENCH_DETAIL").is_ok();
    for round in 1..=rounds {
        let sent = epoch().elapsed();
        cars[0].ok(
            "threadsync/appendMessage",
            json!({ "threadId": id, "role": "user", "content": format!("round {round}") }),
        );
        let answered = epoch().elapsed().saturating_sub(sent);
        let mut this = Vec::new();
        for c in cars.iter_mut().skip(1) {
            let note = c.wait_note("threadUpdated", Duration::from_secs(30), |m| {
                m["method"] == "threadsync/threadUpdated"
                    && m["params"]["threadId"] == id.as_str()
                    && m["params"]["messageCount"] == round
            });
            this.push(received(&note).saturating_sub(sent));
            c.notes.clear();
        }
        if detail {
            let mut sorted = this.clone();
            sorted.sort();
            let slowest = this.iter().enumerate().max_by_key(|(_, d)| **d).map(|(i, _)| i + 1).unwrap_or(0);
            println!(
                "    round {round}: append answered {:.1} ms, first {:.1} ms, median {:.1} ms, last {:.1} ms (car {slowest})",
                answered.as_secs_f64() * 1e3,
                sorted[0].as_secs_f64() * 1e3,
                sorted[sorted.len() / 2].as_secs_f64() * 1e3,
                sorted[sorted.len() - 1].as_secs_f64() * 1e3
            );
        }
        all.extend(this);
        // Let the system go idle between rounds, as a human-paced chat would.
        std::thread::sleep(Duration::from_millis(200));
    }
    all.sort();
    all
}

fn main() {
    let root = std::env::temp_dir().join(format!("threadsync-prop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let server = Server::start(&root);
    let token = server.token("bench");

    println!("propagation latency, client A appends -> other clients' threadUpdated:");
    if let Ok(n) = std::env::var("THREADSYNC_BENCH_ONLY").map(|n| n.parse::<usize>().expect("a number of sidecars")) {
        // One size, long-poll only, round by round.
        let lp = latencies(&root, &server, &token, n, "longpoll", 10);
        println!(
            "  {n:>2} sidecars  long-poll p50 {:>7.1} ms  p99 {:>7.1} ms",
            percentile(&lp, 0.5).as_secs_f64() * 1e3,
            percentile(&lp, 0.99).as_secs_f64() * 1e3
        );
        return;
    }
    for n in [10, 50] {
        let lp = latencies(&root, &server, &token, n, "longpoll", 10);
        let fx = latencies(&root, &server, &token, n, "fixed:5", 3);
        println!(
            "  {n:>2} sidecars  long-poll p50 {:>7.1} ms  p99 {:>7.1} ms   | fixed 5 s polling p50 {:>7.1} ms  p99 {:>7.1} ms   (p50 ratio {:.3})",
            percentile(&lp, 0.5).as_secs_f64() * 1e3,
            percentile(&lp, 0.99).as_secs_f64() * 1e3,
            percentile(&fx, 0.5).as_secs_f64() * 1e3,
            percentile(&fx, 0.99).as_secs_f64() * 1e3,
            percentile(&lp, 0.5).as_secs_f64() / percentile(&fx, 0.5).as_secs_f64(),
        );
    }

    // An idle sidecar: requests a minute besides its held long-poll.
    let mut idle = spawn(&root.join("idle"), &server, &token, "longpoll");
    idle.wait_status("synced", Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    let (pulls0, pushes0) = (
        server.metric("threadsync_http_requests_total{route=\"/v1/pull\""),
        server.metric("threadsync_http_requests_total{route=\"/v1/push\""),
    );
    let window = Duration::from_secs(60);
    let start = Instant::now();
    let cpu0 = cpu_time(idle.child.id());
    std::thread::sleep(window);
    let cpu = (cpu_time(idle.child.id()) - cpu0).as_millis();
    let pulls = server.metric("threadsync_http_requests_total{route=\"/v1/pull\"") - pulls0;
    let pushes = server.metric("threadsync_http_requests_total{route=\"/v1/push\"") - pushes0;
    println!(
        "idle sidecar over {:.0} s: {pulls} pulls (each held up to 240 s), {pushes} pushes, {cpu} ms of CPU",
        start.elapsed().as_secs_f64()
    );

    // Memory with 1,000 threads.
    let dir = root.join("thousand");
    std::fs::create_dir_all(dir.join("threads")).unwrap();
    for i in 0..1000 {
        let t = json!({ "id": format!("T-k{i}"), "title": format!("thread {i}"), "created": 1,
            "messages": (0..3).map(|j| json!({ "id": format!("m{j}"), "role": "user", "content": format!("message {j} of thread {i}") })).collect::<Vec<_>>() });
        std::fs::write(dir.join("threads").join(format!("T-k{i}.json")), serde_json::to_vec(&t).unwrap()).unwrap();
    }
    let mut big = spawn(&dir, &server, &token, "longpoll");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let st = big.ok("threadsync/getStatus", json!({}));
        if st["state"] == "synced" && st["pending"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "1,000 threads did not sync: {st}");
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("sidecar with 1,000 threads (3 messages each), synced: RSS {} KiB", rss_kib(big.child.id()));
    drop(big);
    drop(idle);
    let _ = std::fs::remove_dir_all(&root);
}
