//! Push and pull bodies. The first byte picks the side:
//!
//! - even: a `POST /v1/push` body, parsed as the server parses it, checked
//!   as its handler checks it, and pushed into the in-memory store
//!   (`server::core::push` over `MemStore`). Never panics or fails; the
//!   same body pushed again changes nothing (exactly once); the team's
//!   change log replayed from the start rebuilds every thread exactly, and
//!   a first sync's snapshots are those threads; the answers survive the
//!   trip through JSON to the client.
//! - odd: a pull answer as the client decodes it, its changes applied to
//!   threads built from them alone. Never panics; threads stay consistent.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use threadsync::merge::{Doc, Limits};
use threadsync::model::ThreadId;
use threadsync::server::store::MemStore;
use threadsync::server::{PullLimits, TeamId, Tx, pull, push};
use threadsync::wire::{Cursor, MutationStatus, PullResponse, PushRequest, PushResponse};
use threadsync_fuzz::{check_doc, has_float};

fn docs(store: &MemStore, team: &TeamId) -> BTreeMap<ThreadId, Doc> {
    store.threads(team).map(|d| (d.id().clone(), d.clone())).collect()
}

fn push_body(data: &[u8]) {
    let Ok(req) = serde_json::from_slice::<PushRequest>(data) else { return };
    // What the HTTP handler refuses before the core sees it.
    if req.mutations.len() > 1000
        || req
            .machine
            .as_ref()
            .is_some_and(|m| m.len() > threadsync::wire::MAX_MACHINE_NAME || m.chars().any(char::is_control))
        || req.mutations.iter().any(|m| m.id == 0)
    {
        return;
    }
    // Small limits, so that rejections are reachable.
    let limits = Limits { max_message_bytes: 64, max_title_bytes: 16 };
    let team = TeamId::new("team").unwrap();
    let mut store = MemStore::default();
    let first = push(store.tx(&team), &req, &limits).expect("a push into memory cannot fail");
    assert_eq!(first.results.len(), req.mutations.len());
    for (r, m) in first.results.iter().zip(&req.mutations) {
        assert_eq!((r.id, &r.thread_id), (m.id, &m.thread_id));
        match r.status {
            MutationStatus::Gap | MutationStatus::Duplicate => assert!(r.ops.is_empty()),
            _ => assert_eq!(r.ops.len(), m.ops.len()),
        }
    }
    let threads = docs(&store, &team);
    for d in threads.values() {
        check_doc(d);
    }
    let head = store.tx(&team).head_seq().unwrap();

    // Exactly once: the same body again changes nothing.
    let again = push(store.tx(&team), &req, &limits).expect("a push into memory cannot fail");
    for r in &again.results {
        assert!(matches!(r.status, MutationStatus::Duplicate | MutationStatus::Gap), "pushed twice: {r:?}");
    }
    assert_eq!(docs(&store, &team), threads, "a replayed push changed a thread");
    assert_eq!(store.tx(&team).head_seq().unwrap(), head);

    // The change log, pulled in small pages from the start, rebuilds every thread.
    let lim = PullLimits { max_changes: 3, max_snapshots: 2, max_bytes: 256 };
    let mut rebuilt: BTreeMap<ThreadId, Doc> = BTreeMap::new();
    let mut cursor = Cursor::Log(0);
    let mut pages = 0;
    loop {
        let page = pull(store.tx(&team), Some(&cursor), &lim).expect("the log serves cursor 0 and on");
        for c in &page.changes {
            let d = rebuilt.entry(c.thread_id.clone()).or_insert_with(|| Doc::empty(c.thread_id.clone()));
            d.apply_effect(&c.effect).unwrap_or_else(|e| panic!("the log does not replay: {e}"));
            assert_eq!(d.thread.v, c.version);
        }
        round_trip(&page);
        let done = page.up_to_date;
        assert!(done || page.cursor != cursor, "a pull that does not move");
        cursor = page.cursor;
        pages += 1;
        assert!(pages <= head + 2, "paging does not end");
        if done {
            break;
        }
    }
    assert_eq!(rebuilt, threads, "the change log does not rebuild the threads");

    // A first sync: snapshots, paged, are the threads.
    let mut snap: BTreeMap<ThreadId, Doc> = BTreeMap::new();
    let mut cursor = None;
    loop {
        let page = pull(store.tx(&team), cursor.as_ref(), &lim).expect("a snapshot pull");
        for d in &page.snapshots {
            assert!(snap.insert(d.id().clone(), d.clone()).is_none(), "{} sent twice", d.id());
        }
        round_trip(&page);
        match page.cursor {
            Cursor::Log(n) => {
                assert_eq!(n, head);
                break;
            }
            c => cursor = Some(c),
        }
    }
    assert_eq!(snap, threads);

    // The push answer as the client decodes it.
    let text = serde_json::to_vec(&first).expect("an answer serialises");
    let decoded: PushResponse = serde_json::from_slice(&text).expect("the client decodes the answer");
    if !has_float(&serde_json::to_value(&first).unwrap()) {
        assert_eq!(decoded, first);
    }
    // As read back by the client that pushed: its inserts without content.
    let mine = pull(store.tx(&team), Some(&Cursor::Log(0)), &PullLimits::default()).unwrap();
    let _ = mine.as_read_by(&[&req.client_id]);
}

/// A pull answer as the client decodes it.
fn round_trip(page: &PullResponse) {
    let text = serde_json::to_vec(page).expect("a pull answer serialises");
    let mut decoded: PullResponse = serde_json::from_slice(&text).expect("the client decodes a pull answer");
    let mut sent = page.clone();
    for c in &mut sent.changes {
        c.author = None; // never sent
    }
    for c in &mut decoded.changes {
        c.take_elided();
    }
    if !has_float(&serde_json::to_value(page).unwrap()) {
        assert_eq!(decoded, sent);
    }
}

fn pull_body(data: &[u8]) {
    let Ok(mut page) = serde_json::from_slice::<PullResponse>(data) else { return };
    let _ = page.cursor.to_string().parse::<Cursor>().expect("a cursor prints as it parses");
    let mut threads: BTreeMap<ThreadId, Doc> = BTreeMap::new();
    for c in &mut page.changes {
        c.take_elided();
        let d = threads.entry(c.thread_id.clone()).or_insert_with(|| Doc::empty(c.thread_id.clone()));
        let _ = d.apply_effect(&c.effect);
        check_doc(d);
    }
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((mode, rest)) if mode & 1 == 0 => push_body(rest),
        Some((_, rest)) => pull_body(rest),
        None => {}
    }
});
