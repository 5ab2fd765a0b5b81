//! Optimistic local operations and conflicts.

use super::*;

// ===== 9. optimistic local operations ========================================

#[test]
fn a_local_append_is_written_at_once_and_confirmed_by_the_push() {
    let mut h = Harness::synced(EngineConfig::default());
    let id = h.create_thread("t");
    h.run_for(secs(1));
    let before = h.client.engine.thread(&id).unwrap().v;
    let (t, m) = (h.now, h.mark());
    let r = h.append(&id, json!("hello"));
    let mid = r.message_id.clone().unwrap();
    assert_eq!(r.thread_id, id);
    assert_eq!(r.version, before + 1);

    let updated = h.find(m, |a| match a {
        Action::ThreadUpdated { thread_id, version, message_count, origin, .. } if thread_id == &id => {
            Some((*version, *message_count, *origin))
        }
        _ => None,
    });
    assert_eq!(updated, [(t, (r.version, 1, Origin::Local))]);
    let writes = h.find(m, |a| match a {
        Action::WriteFile { thread_id, write } if *thread_id == id => Some(write.clone()),
        _ => None,
    });
    assert_eq!(writes.len(), 1, "{writes:?}");
    let (at, write) = &writes[0];
    assert_eq!(*at, t);
    // A thread made here is a log: the message is appended to it.
    assert!(matches!(write, FileWrite::Append { records, .. } if records.len() == 1), "{write:?}");
    let f = h.file_of(&id);
    assert_eq!(f.messages.iter().map(|m| m.id.clone()).collect::<Vec<_>>(), std::slice::from_ref(&mid));
    assert_eq!(f.messages[0].content.value(), Some(&json!("hello")));
    assert_eq!(h.client.engine.thread_status(&id).unwrap().state, ThreadState::Pending);

    h.run_for(secs(1));
    assert_eq!(h.client.engine.thread_status(&id).unwrap().state, ThreadState::Synced);
    assert!(h.client.engine.is_idle());
    let server = h.server_doc(&id).unwrap();
    assert_eq!(server.get(&mid).and_then(|m| m.content.value().cloned()), Some(json!("hello")));
    h.assert_matches_server(&id);
}

// ===== 10. conflicts ========================================================

/// Two clients on one server that both saw thread "orig"; both retitle it,
/// `a` first. Returns (a, b, thread).
fn concurrent_titles() -> (Harness, Harness, ThreadId) {
    let mut a = Harness::synced(EngineConfig::default());
    let mut b = Harness::sharing(&a, 2);
    b.run_for(secs(1));
    let id = a.create_thread("orig");
    a.run_for(secs(1));
    b.run_for(secs(1));
    assert_eq!(b.client.engine.thread(&id).map(|t| t.title.as_str()), Some("orig"));

    a.set_title(&id, "from a");
    b.set_title(&id, "from b");
    a.run_for(secs(1));
    // b pushes before it pulls a's change.
    let (_, req, _) = b.next_push(secs(1));
    b.answer_push(req);
    (a, b, id)
}

#[test]
fn concurrent_titles_make_a_conflict_for_the_later_writer() {
    let (_a, b, id) = concurrent_titles();
    // As the user sees them (bases loaded).
    let conflicts = b.client.conflicts().unwrap();
    assert_eq!(conflicts.len(), 1);
    let c = &conflicts[0];
    assert_eq!(c.thread_id, id);
    assert_eq!(c.kind, ConflictKind::Title);
    assert_eq!((c.base.value(), &c.local, &c.remote), (Some(&json!("orig")), &json!("from b"), &json!("from a")));
    assert_eq!(b.client.engine.status().state, State::Conflict);
    assert_eq!(b.client.engine.status().conflicts, 1);
    assert_eq!(b.client.engine.thread_status(&id).unwrap().state, ThreadState::Conflict);
    let saved = b.find(0, |x| match x {
        Action::Save(Save::Conflicts(conflicts)) => Some(conflicts.clone()),
        _ => None,
    });
    assert_eq!(saved.last().map(|(_, c)| c.clone()), Some(conflicts.clone()));
    assert_eq!(b.client.store.conflicts(), conflicts);
    assert_eq!(b.server_doc(&id).unwrap().thread.title, "from a", "the first write stays");
}

#[test]
fn choosing_local_makes_the_refused_title_win_everywhere() {
    let (mut a, mut b, id) = concurrent_titles();
    b.run_for(secs(1));
    assert_eq!(b.client.engine.thread(&id).unwrap().title, "from a");
    let cid = b.client.engine.conflicts()[0].id.clone();
    b.client.resolve_conflict(b.now, &cid, Choice::Local).unwrap();
    b.drain();
    assert!(b.client.engine.conflicts().is_empty());
    assert_eq!(b.client.engine.thread(&id).unwrap().title, "from b", "applied locally at once");
    b.run_for(secs(1));
    assert_eq!(b.server_doc(&id).unwrap().thread.title, "from b");
    a.now = b.now;
    a.run_for(secs(1));
    assert_eq!(a.client.engine.thread(&id).unwrap().title, "from b");
    a.assert_matches_server(&id);
    b.assert_matches_server(&id);
    assert_eq!(b.client.engine.status().state, State::Synced);
}

#[test]
fn choosing_remote_only_removes_the_conflict() {
    let (_a, mut b, id) = concurrent_titles();
    b.run_for(secs(1));
    let m = b.mark();
    let cid = b.client.engine.conflicts()[0].id.clone();
    b.client.resolve_conflict(b.now, &cid, Choice::Remote).unwrap();
    b.drain();
    assert!(b.client.engine.conflicts().is_empty());
    assert!(b.client.store.conflicts().is_empty());
    assert!(
        b.find(m, |x| matches!(x, Action::Save(Save::Conflicts(conflicts)) if conflicts.is_empty()).then_some(()))
            .len()
            == 1
    );
    b.run_for(secs(1));
    assert!(b.pushes_since(m).is_empty(), "nothing to send");
    assert_eq!(b.client.engine.thread(&id).unwrap().title, "from a");
    assert_eq!(b.client.engine.status().state, State::Synced);
    assert!(b.client.resolve_conflict(b.now, &cid, Choice::Remote).is_err(), "already resolved");
}
