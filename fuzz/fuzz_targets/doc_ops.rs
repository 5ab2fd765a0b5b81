//! `Doc::apply` and `diff`, structure-aware: three replicas of one thread
//! make changes (appends with any anchor, reused and colliding ids, edits
//! and deletes on current or stale bases, restores, titles, env, whole-file
//! rewrites turned into operations by `diff`) and sync them with a server
//! in any order. Checks, besides never panicking:
//!
//! - every `Doc` stays consistent (visible messages = `seq` without
//!   tombstones, one anchor entry per id);
//! - `diff(view, file)` applied to the view gives the file's messages,
//!   contents, title and env, and diffing again finds nothing to do;
//! - the server's decisions over storage (`server::core::push` into
//!   `MemStore`, through `ThreadView` with its cached head) are
//!   `Doc::apply`'s, operation by operation, and leave the same thread;
//! - the server's effects, replayed in order from nothing
//!   (`Doc::apply_effect`), rebuild its `Doc` exactly, and a `Doc`
//!   survives the trip through JSON (pull snapshots);
//! - `merge(base, local, remote)` never fails.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use threadsync::merge::{Doc, Limits, OpOutcome, merge};
use threadsync::model::{Content, ContentHash, Message, MessageId, Thread, ThreadId};
use threadsync::ops::{Effect, Op, diff};
use threadsync::server::store::MemStore;
use threadsync::server::{TeamId, Tx, push};
use threadsync::wire::{ClientId, Mutation, OpResult, PushRequest};
use threadsync_fuzz::check_doc;

const REPLICAS: usize = 3;
const MAX_STEPS: usize = 64;

/// Content and titles: a few values that collide often, or short text.
#[derive(Arbitrary, Debug, Clone)]
enum Text {
    A,
    B,
    Small(u8),
    Str(String),
    Blocks(u8, bool),
}

impl Text {
    fn string(&self) -> String {
        match self {
            Text::A => "a".into(),
            Text::B => "b".into(),
            Text::Small(n) => format!("t{}", n % 8),
            Text::Str(s) => {
                let mut end = s.len().min(40);
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                s[..end].to_string()
            }
            Text::Blocks(n, _) => format!("block {}", n % 4),
        }
    }

    fn value(&self) -> Value {
        match self {
            Text::Blocks(n, tool) if *tool => {
                json!([{"type": "tool_use", "id": format!("toolu_{}", n % 4), "input": {}}])
            }
            Text::Blocks(_, _) => json!([{"type": "text", "text": self.string()}]),
            _ => Value::String(self.string()),
        }
    }
}

/// Where an append says it was written.
#[derive(Arbitrary, Debug)]
enum Anchor {
    /// After the last visible message (what a writer at the end does).
    Last,
    /// First.
    Start,
    /// After any id the replica knows, a tombstone maybe.
    Seq(u8),
    /// After an id it never saw.
    Unknown(u8),
}

#[derive(Arbitrary, Debug)]
enum NewId {
    Fresh,
    /// An id the replica already has (present or deleted).
    Reuse(u8),
    /// One of a few ids, colliding across replicas.
    Few(u8),
}

#[derive(Arbitrary, Debug)]
enum Base {
    Current,
    Stale(Text),
}

#[derive(Arbitrary, Debug)]
enum FileEdit {
    Remove(u8),
    Change(u8, Text),
    Insert(u8, Text),
    Title(Text),
    Env(Text),
}

#[derive(Arbitrary, Debug)]
enum Step {
    Create {
        r: u8,
        created: i8,
    },
    Append {
        r: u8,
        id: NewId,
        assistant: bool,
        content: Text,
        after: Anchor,
        follows: bool,
    },
    Edit {
        r: u8,
        pick: u8,
        content: Text,
        base: Base,
    },
    Delete {
        r: u8,
        pick: u8,
        base: Base,
    },
    Restore {
        r: u8,
        pick: u8,
        id: NewId,
        content: Text,
    },
    Title {
        r: u8,
        title: Text,
        base: Option<Text>,
    },
    Env {
        r: u8,
        env: Text,
        base: Option<Text>,
    },
    /// A file rewrite (an assistant's `.json`), taken in with `diff`.
    Rewrite {
        r: u8,
        edits: Vec<FileEdit>,
    },
    /// The replica's changes rebased onto the server's thread.
    Merge {
        r: u8,
    },
    Sync {
        r: u8,
    },
}

struct Replica {
    base: Doc,
    view: Doc,
    queue: Vec<Op>,
    last_own: Option<MessageId>,
    client: ClientId,
    mutation: u64,
}

struct World {
    limits: Limits,
    server: Doc,
    effects: Vec<Effect>,
    store: MemStore,
    team: TeamId,
    replicas: Vec<Replica>,
    next: usize,
}

fn mid(s: String) -> MessageId {
    MessageId::new(s).expect("a valid id")
}

fn message(id: MessageId, assistant: bool, content: Value) -> Arc<Message> {
    let role = if assistant { "assistant" } else { "user" };
    Arc::new(Message { id, role: role.into(), content: Content::new(content), timestamp: 0, extra: Default::default() })
}

impl World {
    fn fresh(&mut self) -> MessageId {
        self.next += 1;
        mid(format!("m{}", self.next))
    }

    fn new_id(&mut self, r: usize, id: &NewId) -> MessageId {
        match id {
            NewId::Reuse(k) if !self.replicas[r].view.seq.is_empty() => {
                let seq = &self.replicas[r].view.seq;
                seq[*k as usize % seq.len()].clone()
            }
            NewId::Few(k) => mid(format!("x{}", k % 4)),
            _ => self.fresh(),
        }
    }

    /// Any id the replica knows (tombstones too), or one it does not.
    fn pick(&self, r: usize, k: u8) -> MessageId {
        let seq = &self.replicas[r].view.seq;
        if seq.is_empty() { mid(format!("u{}", k % 2)) } else { seq[k as usize % seq.len()].clone() }
    }

    fn local(&mut self, r: usize, op: Op) {
        let rep = &mut self.replicas[r];
        let _ = rep.view.apply(&op, &self.limits);
        check_doc(&rep.view);
        rep.queue.push(op);
    }

    fn step(&mut self, step: &Step) {
        match step {
            Step::Create { r, created } => {
                let r = *r as usize % REPLICAS;
                self.local(r, Op::Create { created: *created as i64, env: json!({}) });
            }
            Step::Append { r, id, assistant, content, after, follows } => {
                let r = *r as usize % REPLICAS;
                let id = self.new_id(r, id);
                let view = &self.replicas[r].view;
                let after = match after {
                    Anchor::Last => view.thread.messages.last().map(|m| m.id.clone()),
                    Anchor::Start => None,
                    Anchor::Seq(k) => Some(self.pick(r, *k)),
                    Anchor::Unknown(k) => Some(mid(format!("u{}", k % 2))),
                };
                let follows = if *follows { self.replicas[r].last_own.clone() } else { None };
                self.replicas[r].last_own = Some(id.clone());
                let op = Op::Append { message: message(id, *assistant, content.value()), after, follows };
                self.local(r, op);
            }
            Step::Edit { r, pick, content, base } => {
                let r = *r as usize % REPLICAS;
                let id = self.pick(r, *pick);
                let base = self.base(r, &id, base);
                self.local(r, Op::Edit { id, content: Content::new(content.value()), base });
            }
            Step::Delete { r, pick, base } => {
                let r = *r as usize % REPLICAS;
                let id = self.pick(r, *pick);
                let base = self.base(r, &id, base);
                self.local(r, Op::Delete { id, base });
            }
            Step::Restore { r, pick, id, content } => {
                let r = *r as usize % REPLICAS;
                let of = self.pick(r, *pick);
                let id = self.new_id(r, id);
                self.local(r, Op::Restore { message: message(id, false, content.value()), of });
            }
            Step::Title { r, title, base } => {
                let r = *r as usize % REPLICAS;
                let base = match base {
                    None => self.replicas[r].view.thread.title.clone(),
                    Some(t) => t.string(),
                };
                self.local(r, Op::SetTitle { title: title.string(), base });
            }
            Step::Env { r, env, base } => {
                let r = *r as usize % REPLICAS;
                let base = match base {
                    None => ContentHash::of(&self.replicas[r].view.thread.env),
                    Some(t) => ContentHash::of(&json!({ "k": t.value() })),
                };
                self.local(r, Op::SetEnv { env: json!({ "k": env.value() }), base });
            }
            Step::Rewrite { r, edits } => {
                let r = *r as usize % REPLICAS;
                self.rewrite(r, edits);
            }
            Step::Merge { r } => {
                let rep = &self.replicas[*r as usize % REPLICAS];
                let merged = merge(&rep.base, &rep.view.thread, &self.server, &self.limits);
                check_doc(&merged.doc);
            }
            Step::Sync { r } => self.sync(*r as usize % REPLICAS),
        }
    }

    fn base(&self, r: usize, id: &MessageId, base: &Base) -> ContentHash {
        match base {
            Base::Current => self.replicas[r].view.get(id).map_or(ContentHash::of(&Value::Null), |m| m.content.hash()),
            Base::Stale(t) => ContentHash::of(&t.value()),
        }
    }

    /// The replica's thread file rewritten by someone else, taken in as the
    /// sidecar takes in a `.json` rewrite: `diff` against the view.
    fn rewrite(&mut self, r: usize, edits: &[FileEdit]) {
        let mut file: Thread = self.replicas[r].view.thread.clone();
        for e in edits.iter().take(16) {
            let n = file.messages.len();
            match e {
                FileEdit::Remove(i) if n > 0 => {
                    file.messages.remove(*i as usize % n);
                }
                FileEdit::Change(i, t) if n > 0 => {
                    let m = Arc::make_mut(&mut file.messages[*i as usize % n]);
                    m.content = Content::new(t.value());
                }
                FileEdit::Insert(i, t) => {
                    let id = self.fresh();
                    file.messages.insert(*i as usize % (n + 1), message(id, true, t.value()));
                }
                FileEdit::Title(t) => file.title = t.string(),
                FileEdit::Env(t) => file.env = json!({ "k": t.value() }),
                _ => {}
            }
        }
        let ops = diff(&self.replicas[r].view, &file);
        for op in ops {
            let outcome = self.replicas[r].view.apply(&op, &self.limits);
            assert!(
                matches!(outcome, OpOutcome::Applied { .. } | OpOutcome::Unchanged),
                "{op:?} derived from the view does not apply to it: {outcome:?}"
            );
            self.replicas[r].queue.push(op);
        }
        let view = &self.replicas[r].view;
        check_doc(view);
        let contents = |t: &Thread| -> BTreeMap<MessageId, Value> {
            t.messages.iter().map(|m| (m.id.clone(), m.content.value_or_null())).collect()
        };
        assert_eq!(contents(&view.thread), contents(&file), "the view after diff is not the file");
        assert_eq!((&view.thread.title, &view.thread.env), (&file.title, &file.env));
        let again = diff(view, &file);
        assert!(again.is_empty(), "diff again: {again:?}");
    }

    fn sync(&mut self, r: usize) {
        let rep = &mut self.replicas[r];
        if !rep.queue.is_empty() {
            let mut outcomes = Vec::new();
            for op in &rep.queue {
                let outcome = self.server.apply(op, &self.limits);
                if let OpOutcome::Applied { effect } = &outcome {
                    self.effects.push(effect.clone());
                }
                outcomes.push(OpResult::from(outcome));
            }
            check_doc(&self.server);
            // The same operations, decided over storage.
            rep.mutation += 1;
            let req = PushRequest {
                client_id: rep.client.clone(),
                mutations: vec![Mutation {
                    id: rep.mutation,
                    thread_id: self.server.id().clone(),
                    ops: rep.queue.clone(),
                }],
                machine: None,
            };
            let resp = push(self.store.tx(&self.team), &req, &self.limits).expect("a push into memory");
            assert_eq!(resp.results[0].ops, outcomes, "the store decided otherwise than Doc::apply");
            assert_eq!(resp.results[0].version, self.server.thread.v);
            let stored = self.store.tx(&self.team).doc(self.server.id()).unwrap();
            let stored = stored.unwrap_or_else(|| Doc::empty(self.server.id().clone()));
            assert_eq!(stored, self.server, "the store's thread is not the Doc's");
        }
        rep.queue.clear();
        rep.base = self.server.clone();
        rep.view = self.server.clone();
        rep.last_own = None;
    }
}

fuzz_target!(|steps: Vec<Step>| {
    let id = ThreadId::new("T").unwrap();
    let empty = Doc::empty(id.clone());
    let mut w = World {
        limits: Limits::default(),
        server: empty.clone(),
        effects: Vec::new(),
        store: MemStore::default(),
        team: TeamId::new("team").unwrap(),
        replicas: (0..REPLICAS)
            .map(|i| Replica {
                base: empty.clone(),
                view: empty.clone(),
                queue: Vec::new(),
                last_own: None,
                client: ClientId::new(format!("c{i}")).unwrap(),
                mutation: 0,
            })
            .collect(),
        next: 0,
    };
    for s in steps.iter().take(MAX_STEPS) {
        w.step(s);
    }
    for r in 0..REPLICAS {
        w.sync(r);
    }
    // The effects replayed from nothing: the server's Doc, exactly.
    let mut replayed = empty.clone();
    for e in &w.effects {
        replayed.apply_effect(e).unwrap_or_else(|err| panic!("{e:?} does not replay: {err}"));
    }
    assert_eq!(replayed, w.server, "the effects do not rebuild the thread");
    // A Doc through JSON (a pull's snapshot).
    let text = serde_json::to_vec(&w.server).unwrap();
    let back: Doc = serde_json::from_slice(&text).unwrap();
    assert_eq!(back, w.server);
    // Nothing lost: every visible id once.
    let ids: BTreeSet<&MessageId> = w.server.thread.messages.iter().map(|m| &m.id).collect();
    assert_eq!(ids.len(), w.server.thread.messages.len());
});
