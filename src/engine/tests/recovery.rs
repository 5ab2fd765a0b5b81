//! Crash recovery: a crash at any point loses and duplicates nothing.

use super::*;

// ===== 12. crash recovery ===================================================

#[derive(Clone, Copy, Debug)]
enum CrashPoint {
    /// Changes written to the file, not yet sent.
    BeforePush,
    /// Push sent, lost on the way.
    PushLost,
    /// The server applied the push, the answer was lost.
    AnswerLost,
    /// Push answered, not yet seen in a pull.
    BeforePull,
}

#[test]
fn after_a_crash_pending_work_is_rederived_and_reaches_the_server_exactly_once() {
    for point in [CrashPoint::BeforePush, CrashPoint::PushLost, CrashPoint::AnswerLost, CrashPoint::BeforePull] {
        let mut h = Harness::synced(EngineConfig::default());
        let id = h.create_thread("t");
        h.run_for(secs(1));
        let one = h.append(&id, json!("one")).message_id.unwrap();
        let two = h.append(&id, json!("two")).message_id.unwrap();
        match point {
            CrashPoint::BeforePush => h.tick(ms(50)),
            CrashPoint::PushLost => {
                h.next_push(secs(1));
            }
            CrashPoint::AnswerLost => {
                let (_, _, body) = h.next_push(secs(1));
                h.server_push(&body);
            }
            CrashPoint::BeforePull => {
                let (_, req, _) = h.next_push(secs(1));
                h.answer_push(req);
            }
        }
        let file = h.file_of(&id);
        assert!(file.position(&one).is_some() && file.position(&two).is_some(), "{point:?}: written before the crash");

        h.tick(secs(1));
        h.restart(100);
        h.run_for(secs(5));
        let server = h.server_doc(&id).unwrap();
        let ids: Vec<MessageId> = server.thread.messages.iter().map(|m| m.id.clone()).collect();
        assert_eq!(ids, [one.clone(), two.clone()], "{point:?}");
        let inserts = h.server_log().iter().filter(|c| matches!(c.effect, Effect::Insert { .. })).count();
        assert_eq!(inserts, 2, "{point:?}: each message inserted once");
        h.assert_matches_server(&id);
        assert!(h.client.engine.is_idle(), "{point:?}");
    }
}

#[test]
fn a_message_sent_before_a_crash_and_deleted_from_the_file_meanwhile_stays_deleted() {
    // `applied`: whether the lost push had reached the server. A `.jsonl`
    // thread (made here, the message appended here) and a `.json` one (the
    // message written by an assistant, so a rewrite without it is a delete).
    for kind in [FileKind::Jsonl, FileKind::Json] {
        for applied in [false, true] {
            let mut h = Harness::synced(EngineConfig::default());
            let (id, gone) = if kind == FileKind::Jsonl {
                let id = h.create_thread("t");
                h.append(&id, json!("keep"));
                h.run_for(secs(1));
                (id.clone(), h.append(&id, json!("delete me")).message_id.unwrap())
            } else {
                let id = tid("T-json");
                h.snapshot(file(&id, "t", &[("m-keep", json!("keep"))]));
                h.run_for(secs(1));
                h.snapshot(file(&id, "t", &[("m-keep", json!("keep")), ("m-gone", json!("delete me"))]));
                (id, MessageId::new("m-gone").unwrap())
            };
            assert_eq!(h.client.files.kind_of(&id), Some(kind));
            let (_, _, body) = h.next_push(secs(1));
            if applied {
                h.server_push(&body);
            }
            assert_eq!(h.client.store.ops(&id).len(), 1, "{kind:?}: saved before the push");
            // Crash; while the sidecar is down the user deletes the message.
            h.crashed = true;
            let mut f = h.file_of(&id);
            f.messages.retain(|m| m.id != gone);
            h.client.files.assistant_write(&f);
            h.tick(secs(1));
            h.restart(100);
            h.run_for(secs(5));

            let server = h.server_doc(&id).unwrap();
            assert_eq!(contents(&server.thread), [json!("keep")], "{kind:?}, applied before the crash: {applied}");
            assert!(
                h.file_of(&id).position(&gone).is_none(),
                "{kind:?}: brought back into the file (applied: {applied})"
            );
            h.assert_matches_server(&id);
        }
    }
}

#[test]
fn a_change_costs_two_transactions_and_the_files_new_stamp_rides_with_the_second() {
    // The change itself, then the server's answer; what the client learnt
    // about its own write goes in with the answer (a crash before that is
    // covered by the crash-at-every-point test below).
    let mut h = Harness::synced(EngineConfig::default());
    let id = h.create_thread("t");
    h.run_for(secs(1));
    let before = h.client.store.commits;
    let m = h.append(&id, json!("one")).message_id.unwrap();
    assert_eq!(h.client.store.commits, before + 1, "the change alone, before the answer");
    h.run_for(secs(2));
    assert!(h.client.engine.is_idle());
    assert_eq!(h.client.store.commits, before + 2);
    let stored = h.client.store.stored(&id).unwrap();
    assert!(stored.file.view.messages.contains_key(&m), "the file is known to hold the message");
    assert!(stored.ops.is_empty(), "confirmed");
}

#[test]
fn a_crash_after_any_action_loses_nothing_that_was_written_and_duplicates_nothing() {
    // The scenario, replayed with the crash at each point of the client's
    // steps in turn (before a commit, a file write or another action).
    let scenario = |crash_at: Option<usize>| -> (Harness, ThreadId, usize) {
        let mut h = Harness::synced(EngineConfig::default());
        let id = h.create_thread("t");
        h.run_for(secs(1));
        let start = h.points;
        if let Some(k) = crash_at {
            h.crash_at = Some(start + k);
        }
        h.append(&id, json!("one"));
        h.run_for(secs(2));
        // An assistant adds a message to the file as it reads it (it goes on
        // writing while the sidecar is dead).
        h.snapshot({
            let mut f = h.file_of(&id);
            f.messages.push(file(&id, "", &[("m-file", json!("from the file"))]).messages[0].clone());
            f
        });
        h.run_for(secs(2));
        h.append(&id, json!("two"));
        h.run_for(secs(2));
        let len = h.points - start;
        (h, id, len)
    };
    let (_, _, total) = scenario(None);
    assert!(total > 20, "{total}");
    for k in 0..=total {
        let (mut h, id, _) = scenario(Some(k));
        assert_eq!(h.crashed, k < total, "crash at point {k} of {total}");
        let texts = |t: &Thread| contents(t).iter().map(Value::to_string).collect::<Vec<String>>();
        // What must survive: what the file shows, what the store kept to
        // send, and what the server already has.
        let on_disk: BTreeSet<String> =
            h.client.files.thread(&id).map(|f| texts(&f).into_iter().collect()).unwrap_or_default();
        let stored: BTreeSet<String> = h
            .client
            .store
            .ops(&id)
            .iter()
            .filter_map(|op| match op {
                Op::Append { message, .. } => Some(h.client.store.load_message(&id, message).unwrap()),
                _ => None,
            })
            .map(|m| m.content.value().unwrap().to_string())
            .collect();
        let confirmed: BTreeSet<String> = texts(&h.server_doc(&id).unwrap().thread).into_iter().collect();
        h.tick(secs(1));
        h.restart(100 + k as u64);
        h.run_for(secs(10));
        let server = texts(&h.server_doc(&id).unwrap().thread);
        let unique: BTreeSet<String> = server.iter().cloned().collect();
        assert_eq!(unique.len(), server.len(), "crash at point {k}: duplicated {server:?}");
        assert!(on_disk.is_subset(&unique), "crash at point {k}: on disk {on_disk:?}, server {server:?}");
        assert!(stored.is_subset(&unique), "crash at point {k}: stored {stored:?}, server {server:?}");
        assert!(confirmed.is_subset(&unique), "crash at point {k}: on the server {confirmed:?}, then {server:?}");
        assert!(
            !h.server_log().iter().any(|c| matches!(c.effect, Effect::Delete { .. })),
            "crash at point {k}: a delete"
        );
        h.assert_matches_server(&id);
        assert!(h.client.engine.is_idle(), "crash at point {k}");
    }
}
