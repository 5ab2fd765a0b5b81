//! Failures: retries and backoff, offline and probes, unauthorized, permanent 4xx.

use super::*;

// ===== 5. retries, offline, unauthorized ==================================

#[test]
fn a_push_refused_with_503_is_retried_on_the_backoff_schedule_and_never_dropped() {
    let mut h = Harness::synced(EngineConfig::default());
    let id = h.create_thread("retry me");
    h.append(&id, json!("precious"));
    let (mut last, req, first) = h.next_push(secs(1));
    h.fail_push(req, http(503, "unavailable"));
    assert_eq!(h.client.engine.status().state, State::Error);

    let nominal = [1, 2, 5, 10, 30, 30, 30, 30];
    for (i, &s) in nominal.iter().enumerate() {
        let (at, req, body) = h.next_push(secs(60));
        assert_delay(at.saturating_since(last), secs(s), &format!("retry {}", i + 1));
        assert_eq!(body, first, "resent unchanged");
        last = at;
        if i + 1 < nominal.len() {
            h.fail_push(req, http(503, "unavailable"));
        } else {
            h.answer_push(req);
        }
    }
    h.run_for(secs(1));
    let server = h.server_doc(&id).unwrap();
    assert_eq!(contents(&server.thread), [json!("precious")]);
    assert_eq!(h.server_log().len(), 3, "create, title, append: each applied once");
    assert_eq!(h.client.engine.status().state, State::Synced);
    assert!(h.client.engine.is_idle());
}

#[test]
fn retry_after_of_a_429_is_honoured() {
    let mut h = Harness::synced(EngineConfig::default());
    h.create_thread("slow down");
    let (t, req, _) = h.next_push(secs(1));
    let f = Failure::Http { status: 429, retry_after: Some(secs(7)), message: "slow down".into() };
    h.fail_push(req, f);
    let (at, _, _) = h.next_push(secs(60));
    assert_eq!(at, t + secs(7));
}

#[test]
fn a_network_failure_goes_offline_and_probes_until_the_server_answers() {
    let mut h = Harness::synced(EngineConfig::default());
    let held = h.pull_req();
    let id = h.create_thread("offline");
    let (_, req, body) = h.next_push(secs(1));
    let m = h.mark();
    let t = h.now;
    h.fail_push(req, Failure::Network("connection refused".into()));

    let s = h.client.engine.status();
    assert_eq!(s.state, State::Offline);
    assert!(!s.online);
    assert!(s.message.unwrap().contains("connection refused"));
    assert_eq!(h.find(m, |a| matches!(a, Action::CancelPull { req } if *req == held).then_some(())).len(), 1);
    assert!(h.pulls.is_empty(), "the held pull was given up");

    // Probes, spaced by the backoff; nothing else goes out meanwhile.
    let (p1, i) = h.tick_until_action(secs(5), |a| matches!(a, Action::Probe { .. }));
    assert_delay(p1.saturating_since(t), secs(1), "first probe");
    let Action::Probe { req: probe, .. } = h.log[i].1 else { unreachable!() };
    h.answer_probe(probe, Err(Failure::Network("connection refused".into())));
    let (p2, i) = h.tick_until_action(secs(5), |a| matches!(a, Action::Probe { .. }));
    assert_delay(p2.saturating_since(p1), secs(2), "second probe");
    assert_eq!(h.requests_since(m), 2, "only probes while offline");

    // The server is back: the queue flushes at once.
    let Action::Probe { req: probe, .. } = h.log[i].1 else { unreachable!() };
    let m2 = h.mark();
    h.answer_probe(probe, Ok(()));
    let pushes = h.pushes_since(m2);
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0], (p2, body));
    assert_eq!(h.pulls_since(m2).len(), 1);
    assert!(h.client.engine.status().online);
    h.run_for(secs(1));
    assert_eq!(h.server_doc(&id).unwrap().thread.title, "offline");
}

#[test]
fn unauthorized_stops_all_requests_until_credentials_change() {
    let mut h = Harness::synced(EngineConfig::default());
    let held = h.pull_req();
    let id = h.create_thread("secret");
    let (_, req, body) = h.next_push(secs(1));
    let m = h.mark();
    h.fail_push(req, http(401, "bad token"));
    let s = h.client.engine.status();
    assert_eq!(s.state, State::Unauthorized);
    assert!(s.message.is_some());

    // More changes, ten minutes: no request at all.
    h.append(&id, json!("while unauthorized"));
    h.tick(secs(600));
    assert_eq!(h.requests_since(m), 0, "{:#?}", &h.log[m..]);

    let m2 = h.mark();
    let t = h.now;
    h.client.engine.credentials_changed(t);
    h.drain();
    assert_eq!(h.find(m2, |a| matches!(a, Action::CancelPull { req } if *req == held).then_some(())).len(), 1);
    let pushes = h.pushes_since(m2);
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0], (t, body), "the refused push goes again at once");
    assert_eq!(h.pulls_since(m2).len(), 1);
    h.run_for(secs(1));
    assert_eq!(contents(&h.server_doc(&id).unwrap().thread), [json!("while unauthorized")]);
    assert_ne!(h.client.engine.status().state, State::Unauthorized);
}

/// The notices the user gets (once each), decided by the engine on its
/// clock: a refused token, and a server unreachable for five minutes.
fn notices_since(h: &Harness, mark: usize) -> Vec<(Time, bool, String)> {
    h.find(mark, |a| match a {
        Action::Notify { error, message } => Some((*error, message.clone())),
        _ => None,
    })
    .into_iter()
    .map(|(t, (e, m))| (t, e, m))
    .collect()
}

#[test]
fn a_refused_token_is_told_once_until_the_token_changes() {
    let mut h = Harness::synced(EngineConfig::default());
    let id = h.create_thread("t");
    let (_, req, _) = h.next_push(secs(1));
    let m = h.mark();
    h.fail_push(req, http(401, "bad token"));
    // The pull refused too, and a force sync tried again: still told once.
    h.force_sync(None);
    if let Some((req, _)) = h.pushes.first().cloned() {
        h.fail_push(req, http(401, "bad token"));
    }
    h.tick(secs(60));
    let told = notices_since(&h, m);
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(told[0].1 && told[0].2.contains("refused our token"), "{told:?}");
    // A new token: told again if it is refused too.
    let m = h.mark();
    let t = h.now;
    h.client.engine.credentials_changed(t);
    h.drain();
    let (req, _) = h.pushes.first().cloned().expect("a new token: the push goes at once");
    h.fail_push(req, http(401, "still bad"));
    assert_eq!(notices_since(&h, m).len(), 1);
    let _ = id;
}

#[test]
fn a_server_unreachable_for_five_minutes_is_told_once_and_again_after_it_was_back() {
    let mut h = Harness::synced(EngineConfig::default());
    let id = h.create_thread("t");
    let (_, req, _) = h.next_push(secs(1));
    let m = h.mark();
    let down = h.now;
    h.fail_push(req, Failure::Network("connection refused".into()));
    // Probes keep failing.
    let fail_probes = |h: &mut Harness, until: Time| {
        while h.now < until {
            let next = h.client.engine.poll_timeout().unwrap();
            h.tick_until(next.min(until));
            for req in std::mem::take(&mut h.probes) {
                h.probes.push(req);
                h.answer_probe(req, Err(Failure::Network("connection refused".into())));
            }
        }
    };
    fail_probes(&mut h, down + secs(299));
    assert!(notices_since(&h, m).is_empty(), "not before five minutes");
    fail_probes(&mut h, down + secs(301));
    let told = notices_since(&h, m);
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(told[0].0, down + secs(300), "at five minutes, from the engine's own deadline");
    assert!(!told[0].1 && told[0].2.contains("unreachable for 5 minutes"), "{told:?}");
    fail_probes(&mut h, down + secs(900));
    assert_eq!(notices_since(&h, m).len(), 1, "once");
    // Back online, then offline again for five minutes: told again.
    let (_, i) = h.tick_until_action(secs(60), |a| matches!(a, Action::Probe { .. }));
    let Action::Probe { req, .. } = h.log[i].1 else { unreachable!() };
    h.answer_probe(req, Ok(()));
    h.run_for(secs(1));
    assert_eq!(h.client.engine.status().state, State::Synced);
    h.append(&id, json!("again"));
    let (_, req, _) = h.next_push(secs(1));
    let m = h.mark();
    let down = h.now;
    h.fail_push(req, Failure::Network("connection refused".into()));
    fail_probes(&mut h, down + secs(301));
    assert_eq!(notices_since(&h, m).len(), 1);
}

#[test]
fn the_first_sync_shows_progress_from_its_first_pull_to_catching_up() {
    // Threads on the server before this client first syncs.
    let mut other = Harness::synced(EngineConfig::default());
    for i in 0..3 {
        other.create_thread(&format!("t{i}"));
    }
    other.run_for(secs(1));
    let mut h = Harness::sharing(&other, 9);
    h.run_for(secs(1));
    let begin = h.find(0, |a| match a {
        Action::Progress { token, step: crate::engine::ProgressStep::Begin(title) } => {
            Some((token.clone(), title.clone()))
        }
        _ => None,
    });
    assert_eq!(begin.len(), 1, "shown when the first (snapshot) pull goes");
    assert!(begin[0].1.1.contains("first sync"));
    let end = h.find(0, |a| match a {
        Action::Progress { token, step: crate::engine::ProgressStep::End(msg) } => Some((token.clone(), msg.clone())),
        _ => None,
    });
    assert_eq!(end.len(), 1);
    assert_eq!(end[0].1, (begin[0].1.0.clone(), "3 threads".to_string()));
    // Later pulls show nothing.
    let m = h.mark();
    h.run_for(secs(60));
    assert!(h.find(m, |a| matches!(a, Action::Progress { .. }).then_some(())).is_empty());
}

#[test]
fn a_push_that_timed_out_after_the_server_applied_it_is_resent_and_applied_once() {
    let mut h = Harness::synced(EngineConfig::default());
    let id = h.create_thread("t");
    h.append(&id, json!("once"));
    let (_, req, body) = h.next_push(secs(1));
    // The server applied it; the answer never came (hand-crafted timeout).
    h.server_push(&body);
    h.fail_push(req, Failure::Timeout);
    assert_eq!(h.client.engine.status().state, State::Offline);
    let (_, i) = h.tick_until_action(secs(5), |a| matches!(a, Action::Probe { .. }));
    let Action::Probe { req: probe, .. } = h.log[i].1 else { unreachable!() };
    h.answer_probe(probe, Ok(()));
    let again = h.push_req();
    assert_eq!(h.pushes[0].1, body, "resent unchanged");
    let resp = h.answer_push(again);
    assert!(resp.results.iter().all(|r| r.status == MutationStatus::Duplicate), "{resp:?}");
    h.run_for(secs(1));
    assert_eq!(contents(&h.server_doc(&id).unwrap().thread), [json!("once")]);
    assert_eq!(h.server_log().len(), 3);
    h.assert_matches_server(&id);
    assert!(h.client.engine.is_idle());
}

#[test]
fn a_pull_refused_with_503_is_retried_after_a_backoff_without_going_offline() {
    let mut h = Harness::synced(EngineConfig::default());
    let held = h.pull_req();
    let t = h.now;
    h.answer_pull_with(held, PullOutcome::Failed(http(503, "unavailable")));
    let s = h.client.engine.status();
    assert_eq!((s.state, s.online), (State::Error, true));
    assert!(s.message.unwrap().contains("503"));
    let (at, _) = h.tick_until_action(secs(5), |a| matches!(a, Action::Pull { .. }));
    assert_delay(at.saturating_since(t), secs(1), "pull retry");
    // The retry succeeds (and so do the long-polls after it): the error is over.
    h.run_for(secs(60));
    assert!(h.client.engine.metrics().failures == 1);
    let s = h.client.engine.status();
    assert_eq!((s.state, s.message), (State::Synced, None), "status still reports the old 503");
}

// ===== 6. permanent 4xx ====================================================

#[test]
fn a_change_refused_with_413_is_rolled_back_and_later_changes_still_go_through() {
    let mut h = Harness::synced(EngineConfig::default());
    let id = h.create_thread("t");
    h.run_for(secs(1));
    let m = h.mark();
    let refused = h.append(&id, json!("too large for the proxy")).message_id.unwrap();
    let (_, req, body) = h.next_push(secs(1));
    assert_eq!(mutations(&body), [(2, id.clone())]);
    let refusal = h.mark();
    h.fail_push(req, http(413, "payload too large"));

    let rollbacks = h.find(m, |a| match a {
        Action::Rollback { thread_id, reason, ops } => Some((thread_id.clone(), reason.clone(), ops.clone())),
        _ => None,
    });
    assert_eq!(rollbacks.len(), 1);
    let (_, (thread_id, reason, ops)) = &rollbacks[0];
    assert_eq!(thread_id, &id);
    assert!(reason.contains("413"), "{reason}");
    assert!(matches!(&ops[..], [Op::Append { message, .. }] if message.id == refused), "{ops:?}");
    assert!(h.client.engine.thread(&id).unwrap().position(&refused).is_none(), "the local view no longer has it");
    let written = h.file_of(&id);
    assert!(written.position(&refused).is_none(), "the file was rewritten without it");
    assert!(written.messages.is_empty());
    let rewrites =
        h.find(refusal, |a| matches!(a, Action::WriteFile { thread_id, .. } if *thread_id == id).then_some(()));
    assert_eq!(rewrites.len(), 1, "the file is written once after the refusal");

    // A change to another thread goes at once, under the id the server
    // never recorded: no gap.
    let t = h.now;
    let other = h.create_thread("other");
    let (at, req, body) = h.next_push(secs(1));
    assert_eq!(at, t + ms(100));
    assert_eq!(mutations(&body), [(2, other.clone())]);
    let resp = h.answer_push(req);
    assert_eq!(resp.results[0].status, MutationStatus::Applied);

    // The refused thread's next change waits out the per-thread backoff
    // (so a rewrite of the same content cannot become a push loop).
    let m2 = h.mark();
    h.append(&id, json!("small"));
    let (at, req, body) = h.next_push(secs(120));
    assert_eq!(at, t + h.cfg.thread_backoff);
    assert_eq!(mutations(&body), [(3, id.clone())]);
    let resp = h.answer_push(req);
    assert_eq!(resp.results[0].status, MutationStatus::Applied);
    assert!(h.warnings_since(m2).is_empty(), "{:?}", h.warnings_since(m2));
    h.run_for(secs(1));
    assert_eq!(contents(&h.server_doc(&id).unwrap().thread), [json!("small")]);
    h.assert_matches_server(&id);
    h.assert_matches_server(&other);
}

#[test]
fn a_thread_held_after_a_refusal_does_not_make_the_engine_spin_while_the_lane_is_busy() {
    let mut h = Harness::synced(EngineConfig::default());
    let a = h.create_thread("a");
    let b = h.create_thread("b");
    h.run_for(secs(1));
    h.append(&a, json!("refused"));
    let (refused_at, req, _) = h.next_push(secs(1));
    h.fail_push(req, http(413, "payload too large"));
    // Shortly before a's backoff ends, a and b change; b's push is slow to
    // answer, so the small lane is busy when a's backoff runs out.
    h.tick_until(refused_at + h.cfg.thread_backoff - secs(1));
    h.append(&a, json!("retry"));
    h.append(&b, json!("slow"));
    let (_, slow, body) = h.next_push(secs(1));
    assert_eq!(mutations(&body).iter().map(|(_, t)| t.clone()).collect::<Vec<_>>(), std::slice::from_ref(&b));
    // Past the end of the backoff, with the push still out: every deadline
    // the engine names must be in the future once it has handled `now`.
    let end = refused_at + h.cfg.thread_backoff + secs(2);
    while let Some(due) = h.client.engine.poll_timeout().filter(|&d| d <= end) {
        let now = h.now.max(due);
        h.now = now;
        h.client.engine.handle_timeout(now);
        h.drain();
        let next = h.client.engine.poll_timeout();
        assert!(next.is_none_or(|n| n > now), "handled {now:?}, yet the engine asks to be woken at {next:?}");
    }
    h.now = end;
    h.answer_push(slow);
    h.run_for(secs(1));
    assert_eq!(contents(&h.server_doc(&a).unwrap().thread), [json!("retry")]);
    assert_eq!(contents(&h.server_doc(&b).unwrap().thread), [json!("slow")]);
}

#[test]
fn a_413_on_a_batch_finds_and_rolls_back_only_the_offending_mutation() {
    let mut h = Harness::synced(EngineConfig::default());
    let a = h.create_thread("a");
    let b = h.create_thread("b");
    let c = h.create_thread("c");
    h.run_for(secs(1));
    let m = h.mark();
    h.append(&a, json!("for a"));
    h.append(&b, json!("too big for the proxy"));
    h.append(&c, json!("for c"));
    h.tick(ms(100));
    // A proxy refuses any request carrying thread b (hand-crafted 413);
    // everything else reaches the server core.
    let mut sent = Vec::new();
    while let Some((req, body)) = h.pushes.first().cloned() {
        sent.push(mutations(&body));
        assert!(sent.len() < 10, "{sent:?}");
        if body.mutations.iter().any(|m| m.thread_id == b) {
            h.fail_push(req, http(413, "payload too large"));
        } else {
            let resp = h.answer_push(req);
            assert!(resp.results.iter().all(|r| r.status == MutationStatus::Applied), "{resp:?}");
        }
    }
    assert_eq!(
        sent,
        [
            vec![(4, a.clone()), (5, b.clone()), (6, c.clone())],
            vec![(4, a.clone())],
            vec![(5, b.clone())],
            vec![(5, c.clone())],
        ]
    );
    let rolled: Vec<ThreadId> = h
        .find(m, |x| match x {
            Action::Rollback { thread_id, .. } => Some(thread_id.clone()),
            _ => None,
        })
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    assert_eq!(rolled, std::slice::from_ref(&b));
    h.run_for(secs(1));
    assert_eq!(contents(&h.server_doc(&a).unwrap().thread), [json!("for a")]);
    assert!(contents(&h.server_doc(&b).unwrap().thread).is_empty());
    assert_eq!(contents(&h.server_doc(&c).unwrap().thread), [json!("for c")]);
    for id in [&a, &b, &c] {
        h.assert_matches_server(id);
    }
}
