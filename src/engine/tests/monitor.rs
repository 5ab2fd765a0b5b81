//! The performance monitor.

use super::*;

// ===== 13. performance monitor ===============================================

#[test]
fn metrics_count_pushes_and_a_slow_push_warns_once_there_is_history() {
    let mut h = Harness::synced(EngineConfig::default());
    let id = h.create_thread("perf");
    let m = h.mark();
    let mut bytes = 0u64;
    let mut items = 0u64;
    // Push n answered after `latency`.
    let mut push = |h: &mut Harness, i: usize, latency: Duration| {
        if i > 0 {
            h.append(&id, json!(format!("message {i}")));
        }
        let (_, req, body) = h.next_push(secs(1));
        bytes += body.mutations.iter().flat_map(|m| &m.ops).map(Op::size).sum::<usize>() as u64;
        items += body.mutations.len() as u64;
        h.tick(latency);
        h.answer_push(req);
        h.run_for(secs(1));
    };
    for i in 0..25 {
        // One slow push early on: not enough history to call it slow.
        let latency = if i == 2 { ms(1_500) } else { ms(200) };
        push(&mut h, i, latency);
    }
    assert!(h.warnings_since(m).is_empty(), "{:?}", h.warnings_since(m));
    let s = h.client.engine.metrics();
    assert_eq!(s.pushes, 25);
    assert_eq!(s.pulls, 1, "held long-polls are not timed");
    assert_eq!(s.sync_p50_ms, Some(200));
    assert_eq!(s.sync_p95_ms, Some(200));
    assert_eq!(s.slow_syncs, 0);

    push(&mut h, 25, ms(5_000));
    let warnings = h.warnings_since(m);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("slow sync") && warnings[0].contains("5000 ms"), "{}", warnings[0]);
    let s = h.client.engine.metrics();
    assert_eq!((s.pushes, s.items_pushed, s.bytes_pushed), (26, items, bytes));
    assert_eq!(s.slow_syncs, 1);
    assert_eq!(s.failures, 0);
}
