use super::*;
use serde_json::json;

fn tid() -> ThreadId {
    ThreadId::new("T-log").unwrap()
}

fn lines(v: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for x in v {
        out.extend(serde_json::to_vec(x).unwrap());
        out.push(b'\n');
    }
    out
}

fn contents(t: &Thread) -> Vec<String> {
    t.messages.iter().map(|m| m.content.value().unwrap().as_str().unwrap().to_string()).collect()
}

#[test]
fn a_torn_last_line_is_left_for_later() {
    let (l, used) = complete_lines(b"{\"a\":1}\n\n{\"b\":", 100);
    assert_eq!(l, vec![(100, &b"{\"a\":1}"[..])]);
    assert_eq!(used, 9, "the blank line is consumed, the torn one is not");
    assert_eq!(complete_lines(b"{\"b\":", 0).1, 0);
}

#[test]
fn replay_applies_records_in_order_and_after_places_messages() {
    let bytes = lines(&[
        json!({"type": "thread", "id": "T-log", "created": 5, "title": "t", "env": {}, "custom": 1}),
        json!({"type": "message", "id": "a", "role": "user", "content": "a"}),
        json!({"type": "message", "id": "c", "role": "user", "content": "c"}),
        json!({"type": "message", "id": "b", "after": "a", "role": "user", "content": "b"}),
        json!({"type": "message", "id": "z", "after": null, "role": "user", "content": "z"}),
        json!({"type": "edit", "id": "c", "content": "c2"}),
        json!({"type": "delete", "id": "a"}),
        json!({"type": "message", "id": "a2", "after": "a", "role": "user", "content": "after a tombstone"}),
        json!({"type": "title", "title": "new"}),
    ]);
    let (r, errors, used) = replay(&bytes, &tid()).unwrap();
    assert!(errors.is_empty());
    assert_eq!(used, bytes.len());
    let t = r.thread();
    assert_eq!(contents(&t), ["z", "after a tombstone", "b", "c2"]);
    assert_eq!((t.title.as_str(), t.created, &t.extra["custom"]), ("new", 5, &json!(1)));
}

#[test]
fn a_message_record_brings_a_deleted_message_back() {
    let bytes = lines(&[
        json!({"type": "thread", "id": "T-log"}),
        json!({"type": "message", "id": "a", "role": "user", "content": "a"}),
        json!({"type": "message", "id": "b", "role": "user", "content": "b"}),
        json!({"type": "delete", "id": "a"}),
        json!({"type": "delete", "id": "b"}),
        json!({"type": "message", "id": "c", "after": null, "role": "user", "content": "c"}),
        // Back where it was (after c's insert at the start, a's tombstone is second).
        json!({"type": "message", "id": "a", "role": "user", "content": "a again"}),
        // Back at a new place.
        json!({"type": "message", "id": "b", "after": null, "role": "user", "content": "b"}),
    ]);
    let t = replay(&bytes, &tid()).unwrap().0.thread();
    assert_eq!(contents(&t), ["b", "c", "a again"]);
}

#[test]
fn messages_without_ids_get_stable_ids_also_when_read_in_pieces() {
    let m = json!({"type": "message", "role": "user", "content": "same", "timestamp": 1});
    let bytes = lines(&[json!({"type": "thread", "id": "T-log"}), m.clone(), m.clone(), m]);
    let whole = replay(&bytes, &tid()).unwrap().0.thread();
    let ids: Vec<String> = whole.messages.iter().map(|m| m.id.to_string()).collect();
    assert_eq!(ids.len(), 3);
    assert!(ids[1].ends_with("-2") && ids[2].ends_with("-3"), "{ids:?}");
    // The third line read on its own, knowing the first two.
    let (l, _) = complete_lines(&bytes, 0);
    let known_ids: HashSet<MessageId> = whole.messages[..2].iter().map(|m| m.id.clone()).collect();
    let known = |id: &MessageId| known_ids.contains(id);
    let mut d = IdDeriver::new(&known);
    let Record::Message { message, .. } = parse_line(l[3].1, l[3].0, &tid(), &mut d).unwrap() else { panic!() };
    assert_eq!(message.id.as_str(), ids[2]);
}

#[test]
fn rendering_and_reading_back_round_trips() {
    let mut t = Thread::new(tid(), 9);
    t.title = "t".into();
    t.extra.insert("custom".into(), json!({"k": true}));
    t.messages = vec![Arc::new(Message {
        id: MessageId::new("m-1").unwrap(),
        role: "assistant".into(),
        content: json!([{"type": "text", "text": "hi"}]).into(),
        timestamp: 3,
        extra: Map::from_iter([("model".to_string(), json!("x"))]),
    })];
    let bytes = render(&compacted(&t)).unwrap();
    assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 2, "one line per record");
    let back = replay(&bytes, &tid()).unwrap().0.thread();
    assert_eq!(back, t);
}

#[test]
fn bad_lines_are_reported_and_skipped_but_a_missing_header_is_an_error() {
    let bytes = lines(&[
        json!({"type": "thread", "id": "T-log"}),
        json!({"type": "message", "role": 5, "content": "x"}),
        json!({"type": "nonsense"}),
        json!({"type": "message", "id": "ok", "role": "user", "content": "fine"}),
    ]);
    let (r, errors, _) = replay(&bytes, &tid()).unwrap();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].to_string().contains("\"role\" must be a string"), "{}", errors[0]);
    assert_eq!(contents(&r.thread()), ["fine"]);
    let no_header = lines(&[json!({"type": "message", "id": "ok", "role": "user", "content": "fine"})]);
    assert_eq!(replay(&no_header, &tid()).unwrap_err(), LineError::NoHeader);
    let other = lines(&[json!({"type": "thread", "id": "T-other"})]);
    assert!(matches!(replay(&other, &tid()), Err(LineError::IdMismatch { .. })));
}
