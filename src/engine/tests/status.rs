//! The pending set, per-thread and overall status, and its throttled notifications.

use super::*;

// ===== 1. pending set, per-thread and overall status =======================

#[test]
fn status_is_emitted_right_after_start_and_settles_on_synced() {
    let mut h = Harness::new(EngineConfig::default());
    assert!(matches!(h.log.first(), Some((t, Action::Status(_))) if *t == T0), "first action: {:?}", h.log.first());
    h.run_for(secs(1));
    let (_, last) = h.statuses_since(0).pop().unwrap();
    assert_eq!(last.state, State::Synced);
    assert!(last.online);
    assert_eq!(last.pending, 0);
    assert_eq!(last.last_sync, Some(T0), "the first pull was answered at T0");
}

#[test]
fn a_sidecar_that_never_reached_the_server_is_not_shown_as_synced() {
    // No server answers: the first pull fails with a connection error.
    let mut h = Harness::new(EngineConfig::default());
    h.tick_until_action(secs(1), |a| matches!(a, Action::Pull { .. }));
    let first = h.statuses_since(0);
    assert!(!first.is_empty());
    for (_, s) in &first {
        assert_eq!(s.state, State::Syncing, "before any answer: {s:?}");
        assert!(!s.online, "before any answer: {s:?}");
    }
    let req = h.pull_req();
    h.answer_pull_with(req, PullOutcome::Failed(Failure::Network("connection refused".into())));
    h.tick(secs(1));
    let all = h.statuses_since(0);
    assert!(all.iter().all(|(_, s)| s.state != State::Synced && !s.online), "{all:?}");
    assert_eq!(all.last().unwrap().1.state, State::Offline);
}

#[test]
fn a_changed_thread_goes_pending_then_syncing_then_synced() {
    let mut h = Harness::synced(EngineConfig::default());
    let (t, m) = (h.now, h.mark());
    let id = tid("T-status");
    h.snapshot(file(&id, "hello", &[("m-1", json!("hi"))]));

    assert_eq!(h.client.engine.pending_threads(), BTreeSet::from([id.clone()]));
    assert_eq!(h.client.engine.thread_status(&id).unwrap().state, ThreadState::Pending);

    // Debounce (200 ms) then the batch window (100 ms).
    let (at, req, _) = h.next_push(secs(1));
    assert_eq!(at, t + ms(300));
    assert_eq!(h.client.engine.thread_status(&id).unwrap().state, ThreadState::Syncing);
    assert_eq!(h.client.engine.pending_threads(), BTreeSet::from([id.clone()]), "in flight still counts as pending");

    h.answer_push(req);
    let ts = h.client.engine.thread_status(&id).unwrap();
    assert_eq!(ts.state, ThreadState::Synced);
    assert_eq!(ts.last_sync, Some(t + ms(300)));
    assert!(h.client.engine.pending_threads().is_empty());
    h.tick(ms(200));

    let mut states: Vec<ThreadState> = h
        .find(m, |a| match a {
            Action::ThreadStatus(s) if s.thread_id == id => Some(s.state),
            _ => None,
        })
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    states.dedup();
    assert_eq!(states, [ThreadState::Pending, ThreadState::Syncing, ThreadState::Synced]);

    let overall: Vec<(Time, State, usize)> =
        h.statuses_since(m).into_iter().map(|(t, s)| (t, s.state, s.pending)).collect();
    assert_eq!(
        overall,
        [(t, State::Pending, 1), (t + ms(300), State::Syncing, 1), (t + ms(400), State::Synced, 0)],
        "leading edges at once, the synced state as the trailing edge"
    );
}

// ===== 3. throttled status notifications ==================================

#[test]
fn a_burst_of_changes_yields_one_leading_and_one_trailing_status() {
    let mut h = Harness::synced(EngineConfig::default());
    let (t, m) = (h.now, h.mark());
    for i in 0..4u64 {
        h.tick_until(t + ms(20 * i));
        h.create_thread(&format!("burst {i}"));
    }
    h.tick_until(t + ms(100));

    let in_window: Vec<(Time, Status)> = h.statuses_since(m).into_iter().filter(|(at, _)| *at <= t + ms(100)).collect();
    let seen: Vec<(Time, State, usize)> = in_window.iter().map(|(at, s)| (*at, s.state, s.pending)).collect();
    assert_eq!(
        seen,
        [(t, State::Pending, 1), (t + ms(100), State::Pending, 4)],
        "one leading status, one trailing status with the latest count"
    );
}
