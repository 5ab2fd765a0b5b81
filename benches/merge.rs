//! Merge cost, measured against baselines run in the same process.
//!
//! `cargo bench --bench merge` prints, for a 10,000-message thread that has
//! just received 100 appends from one client:
//! - threadsync: merging 100 concurrent appends from a second client (each
//!   anchored before the first client's run, so every one scans that run);
//! - seed: the seed chapter's `mergeMessages` (common prefix, sort by
//!   timestamp, dedup by a 50-character content prefix) on the same input;
//! - clone: copying the thread once (a floor for "work grows with the thread").
//!
//! Ratios are reported against the seed baseline.

use std::collections::HashSet;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use threadsync::merge::{Doc, Limits};
use threadsync::model::{Message, MessageId, Thread, ThreadId};
use threadsync::ops::Op;

fn msg(id: String, ts: i64) -> Arc<Message> {
    Arc::new(Message {
        content: json!(format!("message {id}: {}", "lorem ipsum ".repeat(8))).into(),
        id: MessageId::new(id).unwrap(),
        role: "user".into(),
        timestamp: ts,
        extra: Default::default(),
    })
}

fn setup() -> (Doc, Vec<Op>) {
    let mut t = Thread::new(ThreadId::new("T").unwrap(), 1);
    t.messages = (0..10_000).map(|i| msg(format!("base{i}"), i)).collect();
    let mut doc = Doc::from_thread(t);
    doc.thread.v = 1;
    let anchor = doc.thread.messages.last().unwrap().id.clone();
    // Client A's 100 appends reached the server first.
    let mut prev = anchor.clone();
    for i in 0..100 {
        let m = msg(format!("a{i}"), 20_000 + i);
        doc.apply(&Op::Append { message: m.clone(), after: Some(prev.clone()), follows: None }, &Limits::default());
        prev = m.id.clone();
    }
    // Client B wrote 100 messages after the same anchor, concurrently.
    let mut ops = Vec::new();
    let mut prev = anchor;
    for i in 0..100 {
        let m = msg(format!("b{i}"), 20_000 + i);
        ops.push(Op::Append { message: m.clone(), after: Some(prev.clone()), follows: None });
        prev = m.id.clone();
    }
    (doc, ops)
}

/// The seed's ConflictResolver.mergeMessages, transliterated.
fn seed_merge(base: &[Arc<Message>], local: &[Arc<Message>], remote: &[Arc<Message>]) -> Vec<Arc<Message>> {
    let mut common = 0;
    while common < base.len()
        && common < local.len()
        && common < remote.len()
        && base[common] == local[common]
        && base[common] == remote[common]
    {
        common += 1;
    }
    let mut merged = base[..common].to_vec();
    let mut new: Vec<Arc<Message>> = local[common..].iter().chain(&remote[common..]).cloned().collect();
    new.sort_by_key(|m| m.timestamp);
    let mut seen = HashSet::new();
    for m in new {
        let text = m.content.value().and_then(|v| v.as_str()).unwrap_or("");
        let key = format!("{}:{}:{}", m.role, m.timestamp, &text[..text.len().min(50)]);
        if seen.insert(key) {
            merged.push(m);
        }
    }
    merged
}

/// Best of several rounds of 50 runs of `run` on a fresh `setup()` value
/// (setup is not timed).
/// (setup is not timed, and neither is dropping what `run` returns).
fn time<S, R, F: FnMut(&mut S) -> R>(mut setup: impl FnMut() -> S, mut run: F) -> Duration {
    let mut best = Duration::MAX;
    for _ in 0..7 {
        let mut inputs: Vec<S> = (0..50).map(|_| setup()).collect();
        let mut outputs = Vec::with_capacity(50);
        let start = Instant::now();
        for s in &mut inputs {
            outputs.push(run(s));
        }
        best = best.min(start.elapsed() / 50);
        drop(outputs);
    }
    best
}

fn main() {
    let (doc, ops) = setup();
    let limits = Limits::default();

    let clone = time(|| (), |_| black_box(doc.clone()));
    let ours = time(
        || doc.clone(),
        |d| {
            for op in &ops {
                black_box(d.apply(op, &limits));
            }
        },
    );

    let base: Vec<Arc<Message>> = doc.thread.messages[..10_000].to_vec();
    let remote = doc.thread.messages.clone();
    let mut local = base.clone();
    local.extend(ops.iter().map(|op| match op {
        Op::Append { message, .. } => message.clone(),
        _ => unreachable!(),
    }));
    let seed = time(|| (), |_| black_box(seed_merge(&base, &local, &remote)));

    // Check the result once: both runs kept, each contiguous, B's on top of A's.
    let mut d = doc.clone();
    for op in &ops {
        d.apply(op, &limits);
    }
    let ids: Vec<&str> = d.thread.messages[10_000..].iter().map(|m| m.id.as_str()).collect();
    assert!(ids[..100].iter().all(|i| i.starts_with('a')) && ids[100..].iter().all(|i| i.starts_with('b')));

    println!("merge of 100 concurrent appends into a 10,000-message thread:");
    println!("  threadsync merge  {:>10.1} µs", ours.as_secs_f64() * 1e6);
    println!("  seed mergeMessages{:>10.1} µs  (baseline)", seed.as_secs_f64() * 1e6);
    println!("  clone of the doc  {:>10.1} µs", clone.as_secs_f64() * 1e6);
    println!("  ratio threadsync/seed: {:.3}", ours.as_secs_f64() / seed.as_secs_f64());
}
