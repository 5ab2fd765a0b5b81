//! The merge decisions, case by case.

use super::*;
use serde_json::json;

fn msg(id: &str) -> Arc<Message> {
    Arc::new(Message {
        id: MessageId::new(id).unwrap(),
        role: "user".into(),
        content: json!(format!("text of {id}")).into(),
        timestamp: 0,
        extra: Default::default(),
    })
}

fn doc(ids: &[&str]) -> Doc {
    let mut t = Thread::new(ThreadId::new("T").unwrap(), 1);
    t.v = 1;
    t.title = "base".into();
    t.messages = ids.iter().map(|i| msg(i)).collect();
    Doc::from_thread(t)
}

fn ids(d: &Doc) -> String {
    d.thread.messages.iter().map(|m| m.id.as_str()).collect::<Vec<_>>().join(" ")
}

fn append(d: &mut Doc, id: &str, after: Option<&str>) -> OpOutcome {
    let op = Op::Append { message: msg(id), after: after.map(|a| MessageId::new(a).unwrap()), follows: None };
    d.apply(&op, &Limits::default())
}

#[test]
fn concurrent_runs_stay_contiguous_in_any_interleaving() {
    // a1 a2 a3 from one writer and b1 b2 from another, all written after m,
    // interleaved one message at a time.
    let mut d = doc(&["m"]);
    append(&mut d, "a1", Some("m"));
    append(&mut d, "b1", Some("m"));
    append(&mut d, "a2", Some("a1"));
    append(&mut d, "b2", Some("b1"));
    append(&mut d, "a3", Some("a2"));
    assert_eq!(ids(&d), "m a1 a2 a3 b1 b2");
}

#[test]
fn appends_are_idempotent_by_id() {
    let mut d = doc(&["m"]);
    assert!(matches!(append(&mut d, "a", Some("m")), OpOutcome::Applied { .. }));
    assert_eq!(append(&mut d, "a", Some("m")), OpOutcome::Unchanged);
    assert_eq!(ids(&d), "m a");
    assert_eq!(d.thread.v, 2);
}

#[test]
fn unknown_or_deleted_anchor_appends_at_end() {
    let mut d = doc(&["m", "n"]);
    append(&mut d, "x", Some("gone"));
    assert_eq!(ids(&d), "m n x");
    let mut d = doc(&["m", "n"]);
    let base = d.get(&MessageId::new("m").unwrap()).unwrap().content.hash();
    d.apply(&Op::Delete { id: MessageId::new("m").unwrap(), base }, &Limits::default());
    // n now descends from m's anchor (none): a run after n still follows n.
    append(&mut d, "y", Some("n"));
    append(&mut d, "z", None);
    assert_eq!(ids(&d), "n y z");
}

#[test]
fn concurrent_title_change_keeps_first_and_records_conflict() {
    let mut d = doc(&[]);
    let set = |t: &str| Op::SetTitle { title: t.into(), base: "base".into() };
    assert!(matches!(d.apply(&set("A"), &Limits::default()), OpOutcome::Applied { .. }));
    let out = d.apply(&set("B"), &Limits::default());
    assert_eq!(
        out,
        OpOutcome::Conflict {
            conflict: ConflictInfo {
                kind: ConflictKind::Title,
                message_id: None,
                local: json!("B"),
                remote: json!("A")
            }
        }
    );
    assert_eq!(d.thread.title, "A");
    // Choosing the local side wins on top of the current state.
    let c = Conflict::new(
        "c1".into(),
        d.id().clone(),
        match out {
            OpOutcome::Conflict { conflict } => conflict,
            _ => unreachable!(),
        },
        &doc(&[]),
    );
    assert_eq!(c.base, json!("base"));
    let op = c.choose_local(&d).unwrap();
    assert!(matches!(d.apply(&op, &Limits::default()), OpOutcome::Applied { .. }));
    assert_eq!(d.thread.title, "B");
}

#[test]
fn edit_against_edit_and_delete() {
    let base = doc(&["m"]);
    let id = MessageId::new("m").unwrap();
    let h = base.thread.messages[0].content.hash();
    let edit = |c: &str| Op::Edit { id: id.clone(), content: json!(c).into(), base: h };
    let mut d = base.clone();
    assert!(matches!(d.apply(&edit("one"), &Limits::default()), OpOutcome::Applied { .. }));
    assert_eq!(d.apply(&edit("one"), &Limits::default()), OpOutcome::Unchanged);
    assert!(matches!(
        d.apply(&edit("two"), &Limits::default()),
        OpOutcome::Conflict { conflict: ConflictInfo { kind: ConflictKind::Content, .. } }
    ));
    // A delete based on the old content does not destroy the newer edit.
    assert!(matches!(
        d.apply(&Op::Delete { id: id.clone(), base: h }, &Limits::default()),
        OpOutcome::Conflict { conflict: ConflictInfo { kind: ConflictKind::DeleteEdit, .. } }
    ));
    assert_eq!(d.thread.messages[0].content, json!("one"));
    // An edit of a message deleted first is a conflict; choosing the edit brings it back.
    let mut d = base.clone();
    d.apply(&Op::Delete { id: id.clone(), base: h }, &Limits::default());
    let OpOutcome::Conflict { conflict } = d.apply(&edit("kept"), &Limits::default()) else { panic!() };
    assert_eq!(conflict.kind, ConflictKind::EditDelete);
    let c = Conflict::new("c".into(), d.id().clone(), conflict, &base);
    d.apply(&c.choose_local(&d).unwrap(), &Limits::default());
    assert_eq!(d.thread.messages[0].content, json!("kept"));
}

#[test]
fn a_restore_puts_the_copy_exactly_where_the_deleted_message_was() {
    // b is followed by replies that descend from it: an append after b
    // would go after them; a restore goes right at b's place.
    let mut d = doc(&["a"]);
    append(&mut d, "b", Some("a"));
    append(&mut d, "c", Some("b"));
    append(&mut d, "e", Some("c"));
    let base = d.get(&MessageId::new("b").unwrap()).unwrap().content.hash();
    d.apply(&Op::Delete { id: MessageId::new("b").unwrap(), base }, &Limits::default());
    let restore = Op::Restore { message: msg("b2"), of: MessageId::new("b").unwrap() };
    assert!(matches!(d.apply(&restore, &Limits::default()), OpOutcome::Applied { .. }));
    assert_eq!(ids(&d), "a b2 c e");
    assert_eq!(d.apply(&restore, &Limits::default()), OpOutcome::Unchanged, "replays change nothing");
    let not_deleted = Op::Restore { message: msg("c2"), of: MessageId::new("c").unwrap() };
    assert!(matches!(d.apply(&not_deleted, &Limits::default()), OpOutcome::Rejected { .. }));
}

#[test]
fn oversized_messages_are_rejected_with_the_limit() {
    let mut d = doc(&[]);
    let limits = Limits { max_message_bytes: 10, ..Limits::default() };
    let OpOutcome::Rejected { reason } =
        d.apply(&Op::Append { message: msg("big"), after: None, follows: None }, &limits)
    else {
        panic!()
    };
    assert!(reason.contains("limit is 10 bytes"), "{reason}");
    assert!(d.thread.messages.is_empty());
}

#[test]
fn ops_on_a_missing_thread_are_rejected_and_create_is_idempotent() {
    let mut d = Doc::empty(ThreadId::new("T").unwrap());
    assert!(matches!(append(&mut d, "a", None), OpOutcome::Rejected { .. }));
    let create = Op::Create { created: 5, env: json!({}) };
    assert!(matches!(d.apply(&create, &Limits::default()), OpOutcome::Applied { .. }));
    assert_eq!(d.apply(&create, &Limits::default()), OpOutcome::Unchanged);
    assert_eq!(d.thread.created, 5);
}

#[test]
fn diff_then_apply_reproduces_local() {
    let base = doc(&["a", "b", "c"]);
    let mut local = base.thread.clone();
    local.title = "new".into();
    local.messages.remove(1);
    Arc::make_mut(&mut local.messages[0]).content = json!("edited").into();
    local.messages.push(msg("d"));
    local.messages.push(msg("e"));
    let m = merge(&base, &local, &base, &Limits::default());
    assert!(m.conflicts.is_empty());
    assert_eq!(ids(&m.doc), "a c d e");
    assert_eq!(m.doc.thread.title, "new");
    assert_eq!(m.doc.thread.messages[0].content, json!("edited"));
    assert!(diff(&m.doc, &local).is_empty(), "applying the diff leaves nothing to do");
}

#[test]
fn three_way_merge_rebases_local_on_remote() {
    let base = doc(&["a"]);
    let mut remote = base.clone();
    append(&mut remote, "r1", Some("a"));
    append(&mut remote, "r2", Some("r1"));
    let mut local = base.thread.clone();
    local.messages.push(msg("l1"));
    local.messages.push(msg("l2"));
    let m = merge(&base, &local, &remote, &Limits::default());
    assert_eq!(ids(&m.doc), "a r1 r2 l1 l2", "pending local changes go on top of the server's");
}

#[test]
fn effects_replay_to_the_same_doc() {
    let mut server = doc(&["a"]);
    let mut replica = server.clone();
    for (id, after) in [("x", Some("a")), ("y", Some("a")), ("z", Some("x"))] {
        let OpOutcome::Applied { effect } = append(&mut server, id, after) else { panic!() };
        replica.apply_effect(&effect).unwrap();
    }
    assert_eq!(replica, server);
    assert!(replica.apply_effect(&Effect::Insert { index: 99, after: None, message: msg("q") }).is_err());
}
