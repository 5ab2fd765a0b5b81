//! The same storage scenarios against every backend: the in-memory store,
//! SQLite (a real file) and PostgreSQL (this machine's, a fresh schema).

mod common;

use std::sync::Arc;

use serde_json::json;
use threadsync::merge::Limits;
use threadsync::model::{Message, MessageId, ThreadId};
use threadsync::ops::Op;
use threadsync::server::postgres::PgStore;
use threadsync::server::sqlite::SqliteStore;
use threadsync::server::store::{MemStore, Store, StoreExt, token_hash};
use threadsync::server::{PullError, PullLimits, TeamId, pull, push};
use threadsync::wire::{ClientId, Cursor, Mutation, MutationStatus, PullResponse, PushRequest, PushResponse};

fn team(s: &str) -> TeamId {
    TeamId::new(s).unwrap()
}

fn append(id: &str, after: Option<&str>, content: serde_json::Value) -> Op {
    Op::Append {
        message: Arc::new(Message {
            id: MessageId::new(id).unwrap(),
            role: "user".into(),
            content: content.into(),
            timestamp: 0,
            extra: Default::default(),
        }),
        after: after.map(|a| MessageId::new(a).unwrap()),
        follows: None,
    }
}

fn req(client: &str, muts: Vec<(u64, &str, Vec<Op>)>) -> PushRequest {
    PushRequest {
        client_id: ClientId::new(client).unwrap(),
        mutations: muts
            .into_iter()
            .map(|(id, t, ops)| Mutation { id, thread_id: ThreadId::new(t).unwrap(), ops })
            .collect(),
        machine: None,
    }
}

fn do_push(s: &dyn Store, team: &TeamId, r: &PushRequest) -> PushResponse {
    s.run(team, true, |tx| push(tx, r, &Limits::default())).unwrap().0
}

fn do_pull(s: &dyn Store, team: &TeamId, cursor: Option<&Cursor>, lim: &PullLimits) -> Result<PullResponse, PullError> {
    s.run(team, false, |tx| Ok(pull(tx, cursor, lim))).unwrap().0
}

fn ids(s: &dyn Store, team: &TeamId, t: &str) -> Vec<String> {
    let mut out = vec![];
    s.transact(team, false, &mut |tx| {
        if let Some(d) = tx.doc(&ThreadId::new(t).unwrap())? {
            out = d.thread.messages.iter().map(|m| m.id.to_string()).collect();
        }
        Ok(())
    })
    .unwrap();
    out
}

/// Every scenario, against one store.
fn scenarios(s: &dyn Store) {
    let a = team("a");
    let b = team("b");
    let create = Op::Create { created: 5, env: json!({"cwd": "/x"}) };

    // Exactly once: three deliveries, one copy.
    let batch = req(
        "c1",
        vec![
            (
                1,
                "T1",
                vec![create.clone(), append("m1", None, json!("hello")), append("m2", Some("m1"), json!([{"t": 1}]))],
            ),
            (2, "T1", vec![Op::SetTitle { title: "first".into(), base: String::new() }]),
        ],
    );
    let first = do_push(s, &a, &batch);
    assert_eq!(first.results.iter().map(|r| r.status).collect::<Vec<_>>(), [MutationStatus::Applied; 2]);
    for _ in 0..2 {
        let again = do_push(s, &a, &batch);
        assert_eq!(again.results.iter().map(|r| r.status).collect::<Vec<_>>(), [MutationStatus::Duplicate; 2]);
    }
    assert_eq!(ids(s, &a, "T1"), ["m1", "m2"]);

    // Concurrent appends from another client land after the run they did not
    // see; a deleted anchor still marks its place.
    let r = do_push(
        s,
        &a,
        &req("c2", vec![(1, "T1", vec![append("x1", Some("m1"), json!("x")), append("x2", Some("x1"), json!("y"))])]),
    );
    assert_eq!(r.results[0].status, MutationStatus::Applied);
    assert_eq!(ids(s, &a, "T1"), ["m1", "m2", "x1", "x2"]);
    let h = threadsync::model::ContentHash::of(&json!("hello"));
    do_push(s, &a, &req("c2", vec![(2, "T1", vec![Op::Delete { id: MessageId::new("m1").unwrap(), base: h }])]));
    do_push(s, &a, &req("c1", vec![(3, "T1", vec![append("late", Some("m1"), json!("z"))])]));
    assert_eq!(ids(s, &a, "T1"), ["m2", "x1", "x2", "late"], "after the run descending from the deleted m1");
    // A replayed append of the deleted message does not bring it back.
    do_push(s, &a, &req("c3", vec![(1, "T1", vec![append("m1", None, json!("hello"))])]));
    assert!(!ids(s, &a, "T1").contains(&"m1".to_string()));

    // Edits, conflicts and gaps.
    let r =
        do_push(s, &a, &req("c2", vec![(3, "T1", vec![Op::SetTitle { title: "second".into(), base: String::new() }])]));
    assert_eq!(r.results[0].status, MutationStatus::Conflict);
    let r = do_push(s, &a, &req("c2", vec![(9, "T1", vec![])]));
    assert_eq!(r.results[0].status, MutationStatus::Gap);
    let edit = Op::Edit {
        id: MessageId::new("m2").unwrap(),
        content: json!("edited").into(),
        base: threadsync::model::ContentHash::of(&json!([{"t": 1}])),
    };
    do_push(s, &a, &req("c2", vec![(4, "T1", vec![edit])]));

    // Pull: deltas, paging, replaying the log gives the stored thread.
    let lim = PullLimits { max_changes: 3, ..PullLimits::default() };
    let mut cursor = Cursor::Log(0);
    let mut replica = threadsync::merge::Doc::empty(ThreadId::new("T1").unwrap());
    loop {
        let p = do_pull(s, &a, Some(&cursor), &lim).unwrap();
        for c in &p.changes {
            replica.apply_effect(&c.effect).unwrap();
            assert_eq!(replica.thread.v, c.version);
        }
        cursor = p.cursor;
        if p.up_to_date {
            break;
        }
    }
    let mut stored = None;
    s.transact(&a, false, &mut |tx| {
        stored = tx.doc(&ThreadId::new("T1").unwrap())?;
        Ok(())
    })
    .unwrap();
    let stored = stored.unwrap();
    assert_eq!(replica.thread, stored.thread, "replaying the log reproduces the thread");
    assert_eq!(replica.seq, stored.seq);
    assert_eq!(stored.thread.title, "first");
    assert_eq!(stored.thread.env, json!({"cwd": "/x"}));
    assert_eq!(stored.thread.messages[0].content, json!("edited"));

    // Snapshots page through threads; isolation between teams.
    do_push(s, &a, &req("c1", vec![(4, "T2", vec![create.clone()]), (5, "T3", vec![create.clone()])]));
    let lim = PullLimits { max_snapshots: 2, ..PullLimits::default() };
    let p1 = do_pull(s, &a, None, &lim).unwrap();
    assert_eq!(p1.snapshots.len(), 2);
    let p2 = do_pull(s, &a, Some(&p1.cursor), &lim).unwrap();
    assert_eq!(p2.snapshots.len(), 1);
    assert!(p2.up_to_date);
    assert!(do_pull(s, &b, None, &lim).unwrap().snapshots.is_empty());
    let r = do_push(s, &b, &req("c1", vec![(1, "T1", vec![append("intruder", None, json!("b"))])]));
    assert_eq!(r.results[0].status, MutationStatus::Rejected, "team b has no thread T1");
    assert!(!ids(s, &a, "T1").contains(&"intruder".to_string()));

    // Compaction makes old cursors refetch.
    s.compact(&a, 2).unwrap();
    assert!(matches!(do_pull(s, &a, Some(&Cursor::Log(1)), &PullLimits::default()), Err(PullError::Refetch { .. })));

    // A failed transaction leaves nothing behind.
    let before = ids(s, &a, "T1");
    let failed = s.transact(&a, true, &mut |tx| {
        push(tx, &req("c9", vec![(1, "T1", vec![append("ghost", None, json!("g"))])]), &Limits::default())?;
        Err(threadsync::server::StoreError::new("injected"))
    });
    assert!(failed.is_err());
    assert_eq!(ids(s, &a, "T1"), before);
    // A body that panics half way (the HTTP layer survives it) leaves
    // nothing behind, and the next writes go through.
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        s.transact(&a, true, &mut |tx| {
            push(tx, &req("c9", vec![(1, "T1", vec![append("ghost", None, json!("g"))])]), &Limits::default())?;
            panic!("a bug in a transaction body");
        })
    }));
    assert!(panicked.is_err());
    assert_eq!(ids(s, &a, "T1"), before);
    let r = do_push(s, &a, &req("c9", vec![(1, "T1", vec![append("after-panic", None, json!("p"))])]));
    assert!(matches!(r.results[0].status, MutationStatus::Applied), "{r:?}");
    let r = do_push(
        s,
        &a,
        &req(
            "c9",
            vec![(
                2,
                "T1",
                vec![Op::Delete {
                    id: MessageId::new("after-panic").unwrap(),
                    base: threadsync::model::ContentHash::of(&json!("p")),
                }],
            )],
        ),
    );
    assert!(matches!(r.results[0].status, MutationStatus::Applied), "{r:?}");
    assert_eq!(ids(s, &a, "T1"), before);

    // A mutation of several appends is read ahead in one statement (SQL
    // stores): what it says must equal asking one by one — a new message,
    // one present, one deleted, the same new one twice, one restored in the
    // middle (positions shift) and an append after it.
    do_push(
        s,
        &a,
        &req(
            "c-ahead",
            vec![(
                1,
                "T-ahead",
                vec![create.clone(), append("x1", None, json!(1)), append("x2", Some("x1"), json!(2))],
            )],
        ),
    );
    do_push(
        s,
        &a,
        &req(
            "c-ahead",
            vec![(
                2,
                "T-ahead",
                vec![Op::Delete {
                    id: MessageId::new("x1").unwrap(),
                    base: threadsync::model::ContentHash::of(&json!(1)),
                }],
            )],
        ),
    );
    let restore = Op::Restore {
        message: Arc::new(Message {
            id: MessageId::new("x1-back").unwrap(),
            role: "user".into(),
            content: json!("back").into(),
            timestamp: 0,
            extra: Default::default(),
        }),
        of: MessageId::new("x1").unwrap(),
    };
    let r = do_push(
        s,
        &a,
        &req(
            "c-ahead",
            vec![(
                3,
                "T-ahead",
                vec![
                    append("x3", Some("x2"), json!(3)),
                    append("x2", Some("x1"), json!(2)),
                    append("x1", None, json!(1)),
                    append("x3", Some("x2"), json!(3)),
                    restore,
                    append("x4", Some("x3"), json!(4)),
                ],
            )],
        ),
    );
    let outcomes: Vec<String> = r.results[0].ops.iter().map(|o| format!("{o:?}")).collect();
    assert_eq!(outcomes, ["Applied", "Unchanged", "Unchanged", "Unchanged", "Applied", "Applied"], "{r:?}");
    assert_eq!(ids(s, &a, "T-ahead"), ["x1-back", "x2", "x3", "x4"]);

    // Tokens: only hashes are stored; revocation by id prefix.
    s.insert_token("abc123", &a, &token_hash("tsk_abc123_secret"), 1).unwrap();
    assert_eq!(s.team_for_token(&token_hash("tsk_abc123_secret")).unwrap(), Some(a.clone()));
    assert_eq!(s.team_for_token(&token_hash("tsk_abc123_wrong")).unwrap(), None);
    let revoked = s.revoke_tokens("abc", 2).unwrap();
    assert_eq!(revoked.len(), 1);
    assert_eq!(s.team_for_token(&token_hash("tsk_abc123_secret")).unwrap(), None);
    assert_eq!(s.list_tokens().unwrap()[0].revoked, Some(2));
}

#[test]
fn memory_store() {
    scenarios(&std::sync::Mutex::new(MemStore::default()));
}

#[test]
fn sqlite_store() {
    let dir = common::TempDir::new("store");
    let path = dir.0.join("db.sqlite");
    scenarios(&SqliteStore::open(&path).unwrap());
    // Reopening the file finds everything (and applying the schema again is harmless).
    let again = SqliteStore::open(&path).unwrap();
    assert_eq!(ids(&again, &team("a"), "T1").len(), 4);
}

#[test]
fn postgres_store() {
    let schema = common::PgSchema::new("store");
    scenarios(&PgStore::open(&schema.url).unwrap());
    let again = PgStore::open(&schema.url).unwrap();
    assert_eq!(ids(&again, &team("a"), "T1").len(), 4);
}
