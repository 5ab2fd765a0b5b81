//! Many held long-polls on one real `threadsync serve` (SQLite): the
//! server's memory per held pull, and how fast one push answers them all.
//!
//! `cargo bench --bench longpoll` holds 10,000 pulls (`THREADSYNC_BENCH_POLLS`
//! for another count), each on its own connection from this process, all at
//! the team's head; reports the server's RSS growth per held pull (against
//! the same server idle, in the same run), then pushes one change and
//! reports when each pull got its answer (p50, p99, all), from the push.
//! Both processes raise their open-file limit to the hard limit (here
//! 20,000: one descriptor per connection on each side).

#[path = "../tests/common/lsp_harness.rs"]
mod lsp_harness;

use std::time::{Duration, Instant};

use lsp_harness::{Server, cpu_time, rss_kib};
use serde_json::{Value, json};

fn raise_nofile() {
    // SAFETY: plain getrlimit/setrlimit on this process (inherited by the
    // server it starts).
    unsafe {
        let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn main() {
    raise_nofile();
    let n: usize = std::env::var("THREADSYNC_BENCH_POLLS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let dir = std::env::temp_dir().join(format!("threadsync-bench-longpoll-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let server = Server::start(&dir);
    let token = server.token("bench");
    let pid = server.child.id();
    let base = server.url();

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(300)).build().unwrap();
        let push = |id: u64, after: Option<&str>, msg: &str| {
            let mut ops = vec![];
            if after.is_none() {
                ops.push(json!({"op": "create", "created": 1, "env": {}}));
            }
            ops.push(
                json!({"op": "append", "after": after, "message": {"id": msg, "role": "user", "content": "hello"}}),
            );
            let body = json!({"clientId": "c-bench", "mutations": [{"id": id, "threadId": "T-poll", "ops": ops}]});
            let (http, url, token) = (http.clone(), format!("{base}/v1/push"), token.clone());
            async move {
                let r = http.post(url).bearer_auth(token).json(&body).send().await.unwrap();
                assert!(r.status().is_success());
                r.json::<Value>().await.unwrap()["cursor"].as_str().unwrap().to_string()
            }
        };
        let held = || {
            let (http, url, token) = (http.clone(), format!("{base}/metrics"), token.clone());
            async move {
                let text = http.get(url).bearer_auth(token).send().await.unwrap().text().await.unwrap();
                text.lines()
                    .find(|l| l.starts_with("threadsync_long_polls_held "))
                    .and_then(|l| l.split_whitespace().last()?.parse::<f64>().ok())
                    .unwrap_or(0.0) as usize
            }
        };
        let cursor = push(1, None, "m-1").await;
        held().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let idle_rss = rss_kib(pid);

        // Every pull on its own connection, opened in steps so the listen
        // backlog is never the bottleneck.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
        // One client: with every request in flight, each gets a connection.
        let client = reqwest::Client::builder().timeout(Duration::from_secs(300)).build().unwrap();
        for i in 0..n {
            let client = client.clone();
            let (url, token, tx) = (format!("{base}/v1/pull?cursor={cursor}&wait=200"), token.clone(), tx.clone());
            tokio::spawn(async move {
                let r = client.get(url).bearer_auth(token).send().await.unwrap();
                let v: Value = r.json().await.unwrap();
                assert!(v["changes"].as_array().is_some_and(|c| !c.is_empty()), "{v}");
                let _ = tx.send(Instant::now());
            });
            if i % 500 == 499 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let start = Instant::now();
        while held().await < n {
            assert!(start.elapsed() < Duration::from_secs(180), "only {} of {n} pulls held", held().await);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let held_rss = rss_kib(pid);
        let per = (held_rss.saturating_sub(idle_rss)) as f64 / n as f64;
        println!(
            "{n} held pulls: server RSS {:.0} MB (idle {:.0} MB), {per:.1} KiB per held pull",
            held_rss as f64 / 1024.0,
            idle_rss as f64 / 1024.0
        );

        let (server_cpu, own_cpu) = (cpu_time(pid), cpu_time(std::process::id()));
        let pushed = Instant::now();
        push(2, Some("m-1"), "m-2").await;
        let mut took = Vec::with_capacity(n);
        while took.len() < n {
            let at = tokio::time::timeout(Duration::from_secs(120), rx.recv()).await.expect("every pull answered");
            took.push(at.unwrap().saturating_duration_since(pushed));
        }
        took.sort();
        let (server_cpu, own_cpu) = (cpu_time(pid) - server_cpu, cpu_time(std::process::id()) - own_cpu);
        println!(
            "one push answers {n} held pulls: p50 {:.0} ms, p99 {:.0} ms, all {:.0} ms",
            pct(&took, 0.5),
            pct(&took, 0.99),
            took[n - 1].as_secs_f64() * 1e3
        );
        println!(
            "  CPU meanwhile: server {} ms, this process (reading the {n} answers) {} ms, on 2 cores",
            server_cpu.as_millis(),
            own_cpu.as_millis()
        );
    });
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
