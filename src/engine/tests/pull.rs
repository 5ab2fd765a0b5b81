//! Pulling: polling and long-polls, refetch, our own changes coming back.

use super::*;

// ===== 8. polling ===========================================================

#[test]
fn an_idle_adaptive_engine_pulls_every_minute() {
    let cfg = EngineConfig { poll: PollMode::Adaptive { base: secs(5), max: secs(60) }, ..EngineConfig::default() };
    let mut h = Harness::new(cfg);
    h.run_for(secs(300));
    let times: Vec<Time> = h
        .pulls_since(0)
        .into_iter()
        .map(|(t, _, w)| {
            assert_eq!(w, None, "adaptive polling never asks the server to hold");
            t
        })
        .collect();
    let want: Vec<Time> = (0..=5).map(|i| T0 + secs(60 * i)).collect();
    assert_eq!(times, want);
}

#[test]
fn an_active_adaptive_engine_pulls_sooner() {
    let cfg = EngineConfig { poll: PollMode::Adaptive { base: secs(5), max: secs(60) }, ..EngineConfig::default() };
    let mut h = Harness::new(cfg);
    h.run_for(secs(90));
    let (t, m) = (h.now, h.mark());
    let id = h.create_thread("busy");
    for i in 0..4 {
        h.append(&id, json!(format!("message {i}")));
    }
    h.run_for(secs(60));
    let times: Vec<Time> = h.pulls_since(m).into_iter().map(|(t, _, _)| t).collect();
    assert!(times.len() >= 3, "{times:?}");
    assert_eq!(times[0], t + ms(100), "a pull right after the push confirms it");
    let gap = times[1].saturating_since(times[0]);
    assert!(gap >= secs(5) && gap <= secs(15), "next pull after {gap:?}");
}

#[test]
fn fixed_polling_pulls_exactly_every_five_seconds() {
    let cfg = EngineConfig { poll: PollMode::Fixed(secs(5)), ..EngineConfig::default() };
    let mut h = Harness::new(cfg);
    h.run_for(secs(30));
    let times: Vec<Time> = h.pulls_since(0).into_iter().map(|(t, _, _)| t).collect();
    let want: Vec<Time> = (0..=6).map(|i| T0 + secs(5 * i)).collect();
    assert_eq!(times, want);
}

#[test]
fn long_polling_keeps_exactly_one_pull_outstanding() {
    let mut h = Harness::new(EngineConfig::default());
    h.run_for(secs(1));
    let id = h.create_thread("lp");
    for i in 0..12 {
        h.run_for(secs(7));
        h.append(&id, json!(format!("m{i}")));
        if i % 3 == 0 {
            h.force_sync(None);
        }
    }
    h.run_for(secs(60));
    assert_eq!(h.max_pulls, 1, "never two pulls outstanding");
    assert_eq!(h.pulls.len(), 1, "one pull is always outstanding");
    let pulls = h.pulls_since(0);
    assert!(pulls.len() > 10, "{}", pulls.len());
    assert_eq!(pulls[0].2, None, "the first sync is not held");
    // Every other pull is held, but the one confirming each of the 4 force
    // syncs (held, it would keep the force sync waiting up to 25 s).
    let unheld: Vec<_> = pulls[1..].iter().filter(|(_, _, wait)| *wait != Some(crate::engine::LONG_POLL)).collect();
    assert!(unheld.iter().all(|(_, _, wait)| wait.is_none()), "{unheld:?}");
    assert_eq!(unheld.len(), 4, "{unheld:?}");
    assert_eq!(contents(&h.server_doc(&id).unwrap().thread).len(), 12);
}

// ===== 14. refetch ==========================================================

#[test]
fn a_refetch_answer_restarts_from_a_snapshot_and_ends_equal_to_the_server() {
    let mut h = Harness::synced(EngineConfig::default());
    let mine = h.create_thread("mine");
    h.append(&mine, json!("local"));
    h.run_for(secs(1));
    let held = h.pull_req();

    // Meanwhile another client writes, and the server compacts its log.
    let mut other = Harness::sharing(&h, 7);
    other.run_for(secs(1));
    let theirs = other.create_thread("theirs");
    other.append(&theirs, json!("remote"));
    other.set_title(&mine, "renamed elsewhere");
    other.run_for(secs(1));
    h.store.borrow_mut().compact(&h.team, 0);

    let m = h.mark();
    h.answer_pull_with(held, PullOutcome::Refetch);
    let pulls = h.pulls_since(m);
    assert_eq!(pulls.len(), 1);
    assert_eq!((pulls[0].0, &pulls[0].1, pulls[0].2), (h.now, &None, None), "from scratch, not held");
    assert!(h.find(m, |a| matches!(a, Action::Save(Save::Cursor(None))).then_some(())).len() == 1);
    assert_eq!(h.warnings_since(m).len(), 1);

    h.run_for(secs(1));
    h.assert_matches_server(&mine);
    h.assert_matches_server(&theirs);
    assert_eq!(h.client.engine.thread(&mine).unwrap().title, "renamed elsewhere");
    assert_eq!(contents(&h.view(&theirs)), [json!("remote")]);
    assert_eq!(h.client.engine.cursor(), Some(&Cursor::Log(h.server_head())));
}

// ===== our own changes, pulled back =========================================

/// Our own inserts come back from the server without their content (we have
/// it); a body lost from the store after all is fetched from the server and
/// kept, so the file still gets the content.
#[test]
fn our_inserts_come_back_without_content_and_a_lost_body_is_fetched() {
    let mut h = Harness::synced(EngineConfig::default());
    let id = h.create_thread("own");
    h.append(&id, json!("x".repeat(5000)));
    let (_, req, _) = h.next_push(secs(1));
    h.answer_push(req);
    // What the server would answer us now: the insert, without its content.
    let PullOutcome::Ok(r) = h.server_pull(Some(&Cursor::Log(0))) else { panic!("pull failed") };
    let r = r.as_read_by(&h.client.engine.client_ids());
    let insert = r.changes.iter().find_map(|c| match &c.effect {
        Effect::Insert { message, .. } => Some(message.clone()),
        _ => None,
    });
    assert!(insert.expect("our insert is in the log").content.is_elided());
    assert!(h.client.missing_bodies(&r).is_empty(), "we have the body");

    // The body is lost before the pull answers; the answer brings it back
    // through a fetch.
    h.client.store.forget_bodies();
    h.run_for(secs(5));
    let first = h.file_of(&id).messages[0].id.clone();
    assert!(h.client.store.has_body(&id, &first, ContentHash::of(&json!("x".repeat(5000)))), "fetched and kept");
    // A write that needs it finds it.
    h.append(&id, json!("second"));
    h.run_for(secs(5));
    assert_eq!(contents(&h.file_of(&id)), [json!("x".repeat(5000)), json!("second")]);
}
