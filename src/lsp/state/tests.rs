//! The state database against the in-memory reference store.

use super::*;
use crate::client::mem::MemState;
use serde_json::json;

fn msg(id: &str, text: &str) -> Arc<Message> {
    Arc::new(Message {
        id: MessageId::new(id).unwrap(),
        role: "user".into(),
        content: Content::new(json!(text)),
        timestamp: 7,
        extra: Map::from_iter([("model".to_string(), json!("m"))]),
    })
}

fn tmp(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("threadsync-state-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

/// The same saves give the same loaded thread from the database and from
/// the in-memory reference store, including mid-thread inserts, deletes,
/// edits, operations and the file view.
#[test]
fn the_database_keeps_what_the_reference_store_keeps() {
    let dir = tmp("same");
    let mut db = StateDb::open(&dir).unwrap();
    let mut mem = MemState::default();
    let t = ThreadId::new("T-1").unwrap();
    let mut doc = Doc::empty(t.clone());
    let mut saves = Vec::new();
    let mut effects = Vec::new();
    let mut between = Vec::new();
    let mut ops = vec![Op::Create { created: 3, env: json!({"cwd": "/"}) }];
    // x and y land between a and b: inserts in the middle of the thread.
    for (id, after) in [("a", None), ("b", None), ("c", None), ("x", Some("a")), ("y", Some("a"))] {
        let m = msg(id, id);
        saves.push(Save::Body { thread: t.clone(), id: m.id.clone(), content: m.content.clone() });
        ops.push(Op::Append { message: m, after: after.map(|a| MessageId::new(a).unwrap()), follows: None });
    }
    ops.push(Op::Delete { id: MessageId::new("b").unwrap(), base: ContentHash::of(&json!("b")) });
    ops.push(Op::Edit {
        id: MessageId::new("c").unwrap(),
        content: Content::new(json!("c2")),
        base: ContentHash::of(&json!("c")),
    });
    ops.push(Op::SetTitle { title: "t".into(), base: String::new() });
    saves.push(Save::Body { thread: t.clone(), id: MessageId::new("c").unwrap(), content: Content::new(json!("c2")) });
    for op in &ops {
        let crate::merge::OpOutcome::Applied { effect } = doc.clone().apply(op, &Default::default()) else {
            panic!("{op:?}")
        };
        let place = match &effect {
            Effect::Insert { index, .. } if *index < doc.seq.len() => {
                Some((index.checked_sub(1).map(|i| doc.seq[i].clone()), doc.seq[*index].clone()))
            }
            _ => None,
        };
        doc.apply(op, &Default::default());
        let effect = match effect {
            Effect::Insert { index, after, message } => {
                Effect::Insert { index, after, message: Arc::new(message.elided()) }
            }
            Effect::Edit { id, content } => Effect::Edit { id, content: content.elided() },
            e => e,
        };
        effects.push(effect);
        between.push(place);
    }
    saves.push(Save::Base {
        thread: t.clone(),
        change: BaseChange::Effects { effects, between, version: doc.thread.v },
    });
    let pending = Op::Append {
        message: Arc::new(msg("p", "pending").elided()),
        after: Some(MessageId::new("c").unwrap()),
        follows: None,
    };
    saves.push(Save::Body {
        thread: t.clone(),
        id: MessageId::new("p").unwrap(),
        content: Content::new(json!("pending")),
    });
    saves.push(Save::Ops {
        thread: t.clone(),
        add: vec![(4, pending.clone()), (5, Op::SetTitle { title: "u".into(), base: "t".into() })],
        done: vec![],
    });
    saves.push(Save::Ops { thread: t.clone(), add: vec![], done: vec![5] });
    let stamp = Stamp { ino: 9, len: 100, mtime_ns: 5, hash: 77 };
    saves.push(Save::File {
        thread: t.clone(),
        file: FileSave {
            kind: FileKind::Jsonl,
            messages: vec![(MessageId::new("a").unwrap(), Some(ContentHash::of(&json!("a"))))],
            replace: true,
            title: "t".into(),
            env: ContentHash::of(&json!({})),
            created: 3,
            extra: Map::from_iter([("k".to_string(), json!(1))]),
            stamp: Some(stamp),
            own: None,
            dirty: true,
            superseded: 2,
            removed: false,
        },
    });
    saves.push(Save::Cursor(Some(Cursor::Log(12))));
    db.apply(&saves, &[]).unwrap();
    crate::client::StateStore::apply(&mut mem, &saves, &[]).unwrap();
    let a = db.load(&t).unwrap().unwrap();
    let b = mem.stored(&t).unwrap();
    assert_eq!(a.base, b.base);
    assert_eq!(a.base.thread.messages.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["a", "x", "y", "c"]);
    assert_eq!(a.base.seq.iter().map(|m| m.as_str()).collect::<Vec<_>>(), ["a", "x", "y", "b", "c"]);
    assert_eq!(a.ops, b.ops);
    assert_eq!(a.ops, vec![(4, pending)]);
    assert_eq!(a.file.view, b.file.view);
    assert_eq!((a.file.stamp, a.file.dirty, a.file.superseded), (Some(stamp), true, 2));
    // Bodies come back loaded, by hash.
    let c = &a.base.thread.messages[3];
    assert_eq!(db.load_message(&t, c).unwrap().content, json!("c2"));
    let r = db.restore().unwrap();
    assert_eq!((r.cursor, r.next_seq, r.threads.len()), (Some(Cursor::Log(12)), 5, 1));
    // Reopening keeps everything; a newer schema is refused with a clear error.
    drop(db);
    let db = StateDb::open(&dir).unwrap();
    assert_eq!(db.load(&t).unwrap().unwrap().base, b.base);
    db.conn.pragma_update(None, "user_version", 99).unwrap();
    drop(db);
    assert!(StateDb::open(&dir).err().unwrap().contains("newer than this threadsync knows"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A state directory of the JSON layout is imported once: bases, the
/// outbox (as operations), the cursor and conflicts; the old files move aside.
#[test]
fn the_json_layout_is_imported_once() {
    let dir = tmp("import");
    std::fs::create_dir_all(dir.join("bases")).unwrap();
    std::fs::create_dir_all(dir.join("outbox")).unwrap();
    let t = ThreadId::new("T-old").unwrap();
    let mut th = Thread::new(t.clone(), 1);
    th.v = 2;
    th.title = "old".into();
    th.messages = vec![msg("m-1", "one")];
    let doc = Doc::from_thread(th);
    std::fs::write(dir.join("bases/T-old.json"), serde_json::to_vec(&doc).unwrap()).unwrap();
    let op = Op::Append { message: msg("m-2", "two"), after: Some(MessageId::new("m-1").unwrap()), follows: None };
    std::fs::write(dir.join("outbox/T-old.json"), serde_json::to_vec(&vec![op]).unwrap()).unwrap();
    std::fs::write(dir.join("cursor.json"), br#""7""#).unwrap();
    let db = StateDb::open(&dir).unwrap();
    let s = db.load(&t).unwrap().unwrap();
    assert_eq!(s.base.thread.messages.len(), 1);
    assert_eq!(s.ops.len(), 1);
    assert_eq!(s.file.view.messages.len(), 2, "the file is known to hold base + outbox");
    assert_eq!(s.file.stamp, None, "and is read again at start");
    assert_eq!(db.load_message(&t, &s.base.thread.messages[0]).unwrap().content, json!("one"));
    assert_eq!(db.restore().unwrap().cursor, Some(Cursor::Log(7)));
    assert!(dir.join("imported-json/bases/T-old.json").exists() && !dir.join("bases").exists());
    drop(db);
    // Opening again does not import again.
    let db = StateDb::open(&dir).unwrap();
    assert_eq!(db.load(&t).unwrap().unwrap().ops.len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A state database made before bodies left the key's b-tree keeps its
/// bodies through the migration.
#[test]
fn bodies_survive_the_move_out_of_the_key_b_tree() {
    let dir = tmp("bodies-v4");
    std::fs::create_dir_all(&dir).unwrap();
    {
        let conn = Connection::open(dir.join("state.sqlite")).unwrap();
        for sql in &MIGRATIONS[..4] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 4).unwrap();
        conn.execute(
            "INSERT INTO bodies (thread, id, hash, content) VALUES ('t', 'm1', ?1, '\"hello\"')",
            params![hex(ContentHash::of(&json!("hello")))],
        )
        .unwrap();
    }
    let db = StateDb::open(&dir).unwrap();
    let (t, m) = (ThreadId::new("t").unwrap(), MessageId::new("m1").unwrap());
    assert_eq!(db.body(&t, &m, ContentHash::of(&json!("hello"))), Some(json!("hello")));
    let version: usize = db.conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(version, MIGRATIONS.len());
    let _ = std::fs::remove_dir_all(&dir);
}
