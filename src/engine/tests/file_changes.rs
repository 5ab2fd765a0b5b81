//! File changes: debounce, and rewrites racing remote changes.

use super::*;

// ===== 2. debounce of file changes ==========================================

#[test]
fn rapid_rewrites_of_one_thread_become_one_push_with_the_final_content() {
    let mut h = Harness::synced(EngineConfig::default());
    let (t, m) = (h.now, h.mark());
    let id = tid("T-debounce");
    for (i, text) in ["a", "ab", "abc", "abcd"].into_iter().enumerate() {
        h.tick_until(t + ms(50 * i as u64));
        h.snapshot(file(&id, "draft", &[("m-1", json!(text))]));
    }
    h.tick(secs(2));

    let pushes = h.pushes_since(m);
    assert_eq!(pushes.len(), 1, "{pushes:#?}");
    // Last rewrite at t+150, quiet for 200 ms, then the 100 ms batch window.
    assert_eq!(pushes[0].0, t + ms(450));
    let body = &pushes[0].1;
    assert_eq!(mutations(body), [(1, id.clone())]);
    let appends: Vec<Value> = body.mutations[0]
        .ops
        .iter()
        .filter_map(|op| match op {
            Op::Append { message, .. } => message.content.value().cloned(),
            _ => None,
        })
        .collect();
    assert_eq!(appends, [json!("abcd")]);
    assert!(!body.mutations[0].ops.iter().any(|op| matches!(op, Op::Edit { .. })));

    h.answer_push(h.push_req());
    let server = h.server_doc(&id).unwrap();
    assert_eq!(contents(&server.thread), [json!("abcd")]);
    assert_eq!(server.thread.title, "draft");
}

#[test]
fn a_thread_rewritten_continuously_is_still_pushed_after_the_max_wait() {
    let mut h = Harness::synced(EngineConfig::default());
    let (t, m) = (h.now, h.mark());
    let id = tid("T-busy");
    // Rewritten every 100 ms for 3 s: never 200 ms of quiet.
    for i in 0..30u64 {
        h.tick_until(t + ms(100 * i));
        h.snapshot(file(&id, "busy", &[("m-1", json!("x".repeat(i as usize + 1)))]));
    }
    let pushes = h.pushes_since(m);
    assert!(!pushes.is_empty(), "never pushed while the file kept changing");
    // First touch at t: taken at t+2000 (what the file held since t+1900),
    // pushed when the batch window closes.
    assert_eq!(pushes[0].0, t + ms(2_100));
    let appended = pushes[0].1.mutations[0].ops.iter().find_map(|op| match op {
        Op::Append { message, .. } => message.content.value().cloned(),
        _ => None,
    });
    assert_eq!(appended, Some(json!("x".repeat(20))));
}

// ===== file rewrites racing remote changes ===================================

/// An assistant rewrote its `.json` file from a version it had read before a
/// message arrived from elsewhere (and the sidecar wrote it into the file):
/// the rewrite adds the assistant's message and deletes nothing, the engine
/// telling by itself that the assistant never saw the remote message.
#[test]
fn a_file_rewritten_from_an_older_version_does_not_delete_newer_remote_messages() {
    let mut a = Harness::synced(EngineConfig::default());
    let id = tid("T-race");
    a.snapshot(file(&id, "race", &[("m-first", json!("first"))]));
    a.run_for(secs(2));
    assert_eq!(a.client.files.kind_of(&id), Some(FileKind::Json));
    a.assert_matches_server(&id);
    // The assistant reads its file.
    let seen_by_assistant = a.file_of(&id);
    // Another client appends; A pulls it and writes it into the file.
    let mut b = Harness::sharing(&a, 77);
    b.run_for(secs(2));
    b.append(&id, json!("from elsewhere"));
    b.run_for(secs(2));
    a.now = b.now;
    a.run_for(secs(2));
    assert_eq!(contents(&a.view(&id)), [json!("first"), json!("from elsewhere")]);
    assert_eq!(contents(&a.file_of(&id)), [json!("first"), json!("from elsewhere")], "the sidecar wrote it");
    // The assistant writes back what it had read, plus its answer.
    let mut rewritten = seen_by_assistant.clone();
    rewritten.messages.push(Arc::new(Message {
        id: MessageId::new("m-assistant").unwrap(),
        role: "assistant".into(),
        content: json!("the assistant's answer").into(),
        timestamp: 0,
        extra: Default::default(),
    }));
    a.snapshot(rewritten);
    a.run_for(secs(3));
    let want = [json!("first"), json!("from elsewhere"), json!("the assistant's answer")];
    assert_eq!(contents(&a.view(&id)), want);
    assert_eq!(contents(&a.server_doc(&id).unwrap().thread), want);
    assert_eq!(contents(&a.file_of(&id)), want, "the file shows the remote message again");
    assert!(!a.server_log().iter().any(|c| matches!(c.effect, Effect::Delete { .. })), "a delete reached the server");
    a.assert_matches_server(&id);
}
