//! Pushing: batching, lanes, and an item the server refuses.

use super::*;

// ===== 4. batching ========================================================

#[test]
fn changes_to_several_threads_within_the_window_go_in_one_push() {
    let mut h = Harness::synced(EngineConfig::default());
    let (t, m) = (h.now, h.mark());
    let mut ids = Vec::new();
    for i in 0..3u64 {
        h.tick_until(t + ms(30 * i));
        ids.push(h.create_thread(&format!("thread {i}")));
    }
    h.tick(secs(1));

    let pushes = h.pushes_since(m);
    assert_eq!(pushes.len(), 1, "{pushes:#?}");
    assert_eq!(pushes[0].0, t + ms(100), "sent when the window of the first change closes");
    assert_eq!(mutations(&pushes[0].1), [(1, ids[0].clone()), (2, ids[1].clone()), (3, ids[2].clone())]);
}

#[test]
fn with_flush_when_idle_a_lone_change_goes_at_once_and_a_burst_still_batches() {
    let cfg = EngineConfig { flush_when_idle: true, ..EngineConfig::default() };
    let mut h = Harness::synced(cfg);
    let (t, m) = (h.now, h.mark());
    let first = h.create_thread("alone");
    h.tick(ms(1));
    let pushes = h.pushes_since(m);
    assert_eq!(pushes.len(), 1, "the leading edge: {pushes:#?}");
    assert_eq!(pushes[0].0, t, "no window for a change after a quiet spell");
    assert_eq!(mutations(&pushes[0].1), [(1, first)]);
    // Changes while that push is out wait, and then go together.
    let m2 = h.mark();
    let (second, third) = (h.create_thread("b"), h.create_thread("c"));
    h.tick(ms(500));
    assert!(h.pushes_since(m2).is_empty(), "nothing new while the lane is busy");
    let req = h.pushes[0].0;
    h.answer_push(req);
    let pushes = h.pushes_since(m2);
    assert_eq!(pushes.len(), 1);
    assert_eq!(mutations(&pushes[0].1), [(2, second), (3, third)]);
}

#[test]
fn more_than_fifty_threads_are_split_over_several_pushes() {
    let mut h = Harness::synced(EngineConfig::default());
    let (t, m) = (h.now, h.mark());
    let ids: Vec<ThreadId> = (0..120).map(|i| h.create_thread(&format!("n{i}"))).collect();
    h.tick(ms(100));
    let mut sizes = Vec::new();
    let mut all = Vec::new();
    // Each answer lets the next batch go at once.
    while let Some((req, body)) = h.pushes.first().cloned() {
        assert!(sizes.len() < 10);
        sizes.push(body.mutations.len());
        all.extend(mutations(&body));
        h.answer_push(req);
    }
    assert_eq!(sizes, [50, 50, 20]);
    assert!(h.pushes_since(m).iter().all(|(at, _)| *at == t + ms(100)));
    let want: Vec<(u64, ThreadId)> = ids.iter().cloned().enumerate().map(|(i, id)| (i as u64 + 1, id)).collect();
    assert_eq!(all, want, "oldest first, mutation ids consecutive across pushes");
    assert_eq!(h.pushes_since(m).len(), 3);
    assert_eq!(h.server_thread_count(), 120);
}

#[test]
fn a_second_change_to_a_queued_thread_merges_into_its_mutation() {
    let mut h = Harness::synced(EngineConfig::default());
    let id = h.create_thread("orig");
    h.run_for(secs(1));
    let m = h.mark();
    h.set_title(&id, "first");
    h.tick(ms(30));
    h.set_title(&id, "second");
    h.tick(secs(1));

    let pushes = h.pushes_since(m);
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].1.mutations.len(), 1);
    assert_eq!(pushes[0].1.mutations[0].ops, [Op::SetTitle { title: "second".into(), base: "orig".into() }]);
    h.answer_push(h.push_req());
    assert_eq!(h.server_doc(&id).unwrap().thread.title, "second");
}

#[test]
fn a_large_mutation_goes_on_the_bulk_client_and_does_not_hold_up_small_ones() {
    let cfg = EngineConfig { bulk_threshold: 10_000, ..EngineConfig::default() };
    let mut h = Harness::synced(cfg);
    let big = h.create_thread("big");
    let small = h.create_thread("small");
    h.run_for(secs(1));
    let [fast_client, bulk_client] = h.client.engine.client_ids().map(|c| c.clone());
    assert!(bulk_client.as_str().ends_with("-bulk"), "{bulk_client}");
    assert_eq!(bulk_client.as_str(), format!("{fast_client}-bulk"));

    let (t, m) = (h.now, h.mark());
    h.append(&big, json!("x".repeat(50_000)));
    h.append(&small, json!("hi"));
    h.tick(ms(100));

    // Both lanes go at once: two pushes outstanding together.
    assert_eq!(h.pushes.len(), 2, "{:?}", h.pushes);
    let pushes = h.pushes_since(m);
    assert!(pushes.iter().all(|(at, _)| *at == t + ms(100)));
    let bulk = pushes.iter().find(|(_, b)| b.client_id == bulk_client).expect("a bulk push").1.clone();
    let fast = pushes.iter().find(|(_, b)| b.client_id == fast_client).expect("a small push").1.clone();
    assert_eq!(mutations(&bulk), [(1, big.clone())], "the bulk client numbers its own mutations");
    assert_eq!(mutations(&fast)[0].1, small);

    // The small lane keeps moving while the large upload is still out.
    let fast_req = h.pushes.iter().find(|(_, b)| b.client_id == fast_client).unwrap().0;
    h.answer_push(fast_req);
    h.append(&small, json!("again"));
    let (_, _, next) = h.next_push(secs(1));
    assert_eq!(next.client_id, fast_client);
    assert_eq!(h.pushes.len(), 2, "the bulk push is still outstanding");

    h.run_for(secs(1));
    assert_eq!(contents(&h.server_doc(&big).unwrap().thread), [json!("x".repeat(50_000))]);
    assert_eq!(contents(&h.server_doc(&small).unwrap().thread), [json!("hi"), json!("again")]);
}

// ===== 7. an item the server rejects =======================================

#[test]
fn an_item_the_server_rejects_is_rolled_back_and_the_rest_of_the_push_applies() {
    // The engine allows 1 MiB messages, the server only 1000 bytes.
    let cfg =
        EngineConfig { limits: Limits { max_message_bytes: 1 << 20, ..Limits::default() }, ..EngineConfig::default() };
    let mut h = Harness::new(cfg);
    h.server_limits = Limits { max_message_bytes: 1000, ..Limits::default() };
    h.run_for(secs(1));
    let id = h.create_thread("t");
    h.run_for(secs(1));

    let m = h.mark();
    let small = h.append(&id, json!("short")).message_id.unwrap();
    let big = h.append(&id, json!("x".repeat(5000))).message_id.unwrap();
    h.set_title(&id, "renamed");
    let (_, req, body) = h.next_push(secs(1));
    assert_eq!(body.mutations.len(), 1);
    assert_eq!(body.mutations[0].ops.len(), 3);
    let resp = h.answer_push(req);
    assert_eq!(resp.results[0].status, MutationStatus::Rejected);

    let rollbacks = h.find(m, |a| match a {
        Action::Rollback { thread_id, reason, ops } => Some((thread_id.clone(), reason.clone(), ops.clone())),
        _ => None,
    });
    assert_eq!(rollbacks.len(), 1, "{rollbacks:?}");
    let (_, (thread_id, reason, ops)) = &rollbacks[0];
    assert_eq!(thread_id, &id);
    assert!(reason.contains("the limit is 1000 bytes"), "{reason}");
    assert!(matches!(&ops[..], [Op::Append { message, .. }] if message.id == big), "{ops:?}");

    let local = h.client.engine.thread(&id).unwrap();
    assert_eq!(local.messages.iter().map(|m| m.id.clone()).collect::<Vec<_>>(), std::slice::from_ref(&small));
    assert_eq!(local.title, "renamed");
    let file = h.file_of(&id);
    assert!(file.position(&big).is_none() && file.position(&small).is_some() && file.title == "renamed");

    h.run_for(secs(1));
    let server = h.server_doc(&id).unwrap();
    assert_eq!(contents(&server.thread), [json!("short")]);
    assert_eq!(server.thread.title, "renamed");
    h.assert_matches_server(&id);
}
