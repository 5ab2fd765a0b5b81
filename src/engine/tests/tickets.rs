//! Force sync.

use super::*;

// ===== 11. force sync =======================================================

#[test]
fn force_sync_skips_the_windows_and_reports_done_after_push_and_pull() {
    let mut h = Harness::synced(EngineConfig::default());
    let held = h.pull_req();
    let (t, m) = (h.now, h.mark());
    let id = tid("T-force");
    h.snapshot(file(&id, "now please", &[("m-1", json!("sync me"))]));
    let ticket = h.force_sync(None);

    let pushes = h.pushes_since(m);
    assert_eq!(pushes.len(), 1, "no debounce, no batch window");
    assert_eq!(pushes[0].0, t);
    assert_eq!(mutations(&pushes[0].1), [(1, id.clone())]);
    let done = |h: &Harness| {
        h.find(m, |a| match a {
            Action::SyncDone { ticket, result } => Some((*ticket, result.clone())),
            _ => None,
        })
    };
    assert!(done(&h).is_empty());

    h.tick(ms(40));
    let m2 = h.mark();
    h.answer_push(h.push_req());
    assert!(done(&h).is_empty(), "the push alone does not finish it");
    // The held long-poll began before the push: a fresh pull replaces it.
    assert_eq!(h.find(m2, |a| matches!(a, Action::CancelPull { req } if *req == held).then_some(())).len(), 1);
    let fresh = h.pull_req();
    assert_ne!(fresh, held);
    h.answer_pull(fresh);
    assert_eq!(done(&h), [(t + ms(40), (ticket, Ok(())))]);
    h.assert_matches_server(&id);
    // The editor's status is current when the sync is reported done (not one
    // status interval later): the last status before SyncDone says synced.
    let at = h.log.iter().rposition(|(_, a)| matches!(a, Action::SyncDone { .. })).unwrap();
    let before = h.log[..at].iter().rev().find_map(|(_, a)| match a {
        Action::Status(s) => Some(s.clone()),
        _ => None,
    });
    assert_eq!(before, Some(h.client.engine.status()));
    assert_eq!(h.client.engine.status().state, State::Synced);
}

#[test]
fn force_sync_cancels_a_held_long_poll_and_pulls_fresh() {
    let mut h = Harness::synced(EngineConfig::default());
    let held = h.pull_req();
    let (t, m) = (h.now, h.mark());
    let ticket = h.force_sync(None);
    assert_eq!(h.find(m, |a| matches!(a, Action::CancelPull { req } if *req == held).then_some(())), [(t, ())]);
    let pulls = h.pulls_since(m);
    assert_eq!(pulls.len(), 1);
    assert_eq!(pulls[0].0, t);
    // Nothing changed on the server: it answers when the pull's wait (if
    // any) runs out. A sync the user asked for should not wait for that.
    h.run_for(secs(2));
    let done = h.find(m, |a| match a {
        Action::SyncDone { ticket, result } => Some((*ticket, result.clone())),
        _ => None,
    });
    assert_eq!(done.len(), 1, "no SyncDone within 2 s; fresh pull: {:?}", pulls[0]);
    assert_eq!(done[0].1, (ticket, Ok(())));
}

#[test]
fn force_sync_with_fixed_polling_pulls_again_when_the_pull_in_flight_predates_the_push() {
    // The pull that a first push's answer starts is still out when the last
    // push lands: it cannot confirm that push, so a new one must follow now,
    // not at the next poll 10 minutes later.
    let cfg = EngineConfig { flush_when_idle: true, poll: PollMode::Fixed(secs(600)), ..EngineConfig::default() };
    let mut h = Harness::synced(cfg);
    let m = h.mark();
    let id = h.create_thread("first");
    // The leading edge: pushed at once (by the change itself or a timer due now).
    h.tick(ms(0));
    assert_eq!(h.pushes_since(m).len(), 1);
    let first = h.push_req();
    h.append(&id, json!("second"));
    let ticket = h.force_sync(None);
    h.answer_push(first);
    let pull = h.pull_req();
    let second = h.push_req();
    h.tick(ms(10));
    h.answer_push(second);
    h.answer_pull(pull);
    h.run_for(secs(2));
    let done = h.find(m, |a| match a {
        Action::SyncDone { ticket, result } => Some((*ticket, result.clone())),
        _ => None,
    });
    assert_eq!(done.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>(), [(ticket, Ok(()))]);
    h.assert_matches_server(&id);
}

#[test]
fn force_sync_reports_a_network_failure() {
    let mut h = Harness::synced(EngineConfig::default());
    let m = h.mark();
    h.create_thread("unlucky");
    let ticket = h.force_sync(None);
    let req = h.push_req();
    h.fail_push(req, Failure::Network("connection reset".into()));
    let done = h.find(m, |a| match a {
        Action::SyncDone { ticket, result } => Some((*ticket, result.clone())),
        _ => None,
    });
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].1.0, ticket);
    let err = done[0].1.1.clone().unwrap_err();
    assert!(err.contains("connection reset"), "{err}");
}
