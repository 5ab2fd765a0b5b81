//! The sidecar's state database: `stateDir/state.sqlite` (rusqlite, WAL).
//!
//! It holds what the engine asks to keep (`engine::state::Save`), row by
//! row: each message's place in the base, each unconfirmed operation, each
//! entry of a file's view, and every message body once. One engine step is
//! one transaction, so a `kill -9` at any instant leaves either the step or
//! nothing. Pages are 1 KiB: a 1 KB append dirties a handful of small pages
//! rather than a handful of 4 KiB ones.
//!
//! A state directory in the JSON layout of earlier versions (`bases/`,
//! `outbox/`, `cursor.json`, `conflicts.json`) is imported once, on first
//! open, and moved aside to `imported-json/`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_json::{Map, Value};

use crate::engine::file::{FileKind, FileState, FileView, Stamp};
use crate::engine::state::{BaseChange, Bodies, FileSave, Restored, Save, StoredOp, StoredThread, restored_file};
use crate::merge::{Conflict, Doc};
use crate::model::{Content, ContentHash, Message, MessageId, Thread, ThreadId};
use crate::ops::{Effect, Op};
use crate::wire::Cursor;

/// Versioned migrations: index `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE threads (
    id TEXT PRIMARY KEY,
    -- the base: the server's state as last pulled
    v INTEGER NOT NULL DEFAULT 0,
    created INTEGER NOT NULL DEFAULT 0,
    title TEXT NOT NULL DEFAULT '',
    env TEXT NOT NULL DEFAULT '{}',
    count INTEGER NOT NULL DEFAULT 0,
    maxpos REAL NOT NULL DEFAULT 0,
    -- the file
    kind TEXT NOT NULL DEFAULT 'json',
    f_title TEXT NOT NULL DEFAULT '',
    f_env TEXT NOT NULL DEFAULT '',
    f_created INTEGER NOT NULL DEFAULT 0,
    f_extra TEXT NOT NULL DEFAULT '{}',
    stamp TEXT,
    own TEXT,
    dirty INTEGER NOT NULL DEFAULT 0,
    superseded INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE base (
    thread TEXT NOT NULL,
    id TEXT NOT NULL,
    pos REAL NOT NULL,
    after TEXT,
    deleted INTEGER NOT NULL DEFAULT 0,
    hash TEXT NOT NULL,
    size INTEGER NOT NULL,
    role TEXT NOT NULL,
    ts INTEGER NOT NULL,
    extra TEXT,
    PRIMARY KEY (thread, id)
) WITHOUT ROWID;
CREATE TABLE fileview (
    thread TEXT NOT NULL,
    id TEXT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (thread, id)
) WITHOUT ROWID;
CREATE TABLE bodies (
    thread TEXT NOT NULL,
    id TEXT NOT NULL,
    hash TEXT NOT NULL,
    content TEXT NOT NULL,
    PRIMARY KEY (thread, id, hash)
) WITHOUT ROWID;
CREATE TABLE ops (seq INTEGER PRIMARY KEY, thread TEXT NOT NULL, op TEXT NOT NULL);
CREATE INDEX ops_thread ON ops (thread);
CREATE TABLE conflicts (id TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE rejected (id INTEGER PRIMARY KEY, thread TEXT NOT NULL, at INTEGER NOT NULL, reason TEXT NOT NULL, ops TEXT NOT NULL);
"#,
    // The outbox holds a few rows; an index on it cost two page writes per change.
    r#"
DROP INDEX IF EXISTS ops_thread;
"#,
];

pub struct StateDb {
    conn: Connection,
    root: PathBuf,
}

/// A thread as `threadsync/listThreads` shows one at rest.
pub struct ListedThread {
    pub id: ThreadId,
    pub title: String,
    pub version: u64,
    pub message_count: usize,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn hex(h: ContentHash) -> String {
    String::from(h)
}

fn unhex(s: &str) -> Result<ContentHash, String> {
    ContentHash::try_from(s.to_string()).map_err(|e| format!("bad hash {s:?} in the state: {e}"))
}

impl StateDb {
    /// Opens (or creates) the database in `dir`, migrating it, and imports
    /// a state directory of the older JSON layout once.
    pub fn open(dir: &Path) -> Result<StateDb, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let path = dir.join("state.sqlite");
        let fresh = !path.exists();
        let conn = Connection::open(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        if fresh {
            // Must precede the first table.
            // Small pages: a change rewrites the pages it touches, and
            // most of its rows are small.
            conn.pragma_update(None, "page_size", 512).map_err(err)?;
        }
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        // Commits survive a crash of the process (kill -9); an OS crash may
        // lose the last few, which the files and the server still have.
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
        conn.pragma_update(None, "foreign_keys", false).map_err(err)?;
        // Pages changed again and again between checkpoints are copied into
        // the database once per checkpoint: let the log grow to a few MB
        // while busy (the sidecar checkpoints when it goes quiet).
        conn.pragma_update(None, "wal_autocheckpoint", 8000).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(err)?;
        let mut db = StateDb { conn, root: dir.to_path_buf() };
        db.migrate()?;
        db.import_json_layout()?;
        Ok(db)
    }

    fn migrate(&mut self) -> Result<(), String> {
        let version: usize = self.conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(err)?;
        if version > MIGRATIONS.len() {
            return Err(format!(
                "the state database has schema version {version}, newer than this threadsync knows ({}); upgrade threadsync",
                MIGRATIONS.len()
            ));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = self.conn.transaction().map_err(err)?;
            tx.execute_batch(sql).map_err(|e| format!("migration {} failed: {e}", i + 1))?;
            tx.pragma_update(None, "user_version", i + 1).map_err(err)?;
            tx.commit().map_err(err)?;
        }
        Ok(())
    }

    // ----- saving ------------------------------------------------------------

    /// Applies one engine step's saves in one transaction. `intents`: the
    /// hashes of `.json` files about to be written (recorded first, so that
    /// a crash right after the write still recognises it as ours).
    pub fn apply(&mut self, saves: &[Save], intents: &[(ThreadId, u64)]) -> Result<(), String> {
        if saves.is_empty() && intents.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(err)?;
        for s in saves {
            apply_one(&tx, s)?;
        }
        for (id, hash) in intents {
            tx.execute("INSERT OR IGNORE INTO threads (id) VALUES (?1)", params![id.as_str()]).map_err(err)?;
            tx.execute("UPDATE threads SET own = ?2 WHERE id = ?1", params![id.as_str(), format!("{hash:016x}")])
                .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// Keeps what the server refused, so a rollback never destroys content.
    pub fn save_rejected(&mut self, thread: &ThreadId, ops: &[Op], reason: &str, at_ms: u64) -> Result<(), String> {
        let ops = serde_json::to_string(ops).map_err(err)?;
        self.conn
            .execute(
                "INSERT INTO rejected (thread, at, reason, ops) VALUES (?1, ?2, ?3, ?4)",
                params![thread.as_str(), at_ms as i64, reason, ops],
            )
            .map(|_| ())
            .map_err(err)
    }

    /// Copies the write-ahead log into the database and restarts it.
    pub fn checkpoint(&mut self) -> Result<(), String> {
        self.conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())).map_err(err)
    }

    /// Drops bodies nothing refers to any more (edited-away content).
    pub fn collect_garbage(&mut self) -> Result<usize, String> {
        self.conn
            .execute(
                "DELETE FROM bodies WHERE NOT EXISTS (SELECT 1 FROM base b WHERE b.thread = bodies.thread AND b.id = bodies.id AND b.hash = bodies.hash)
                   AND NOT EXISTS (SELECT 1 FROM fileview f WHERE f.thread = bodies.thread AND f.id = bodies.id AND f.hash = bodies.hash)
                   AND NOT EXISTS (SELECT 1 FROM ops o WHERE o.thread = bodies.thread AND instr(o.op, bodies.hash) > 0)",
                [],
            )
            .map_err(err)
    }

    // ----- loading -----------------------------------------------------------

    pub fn load(&self, id: &ThreadId) -> Result<Option<StoredThread>, String> {
        load_thread(&self.conn, id)
    }

    pub fn restore(&self) -> Result<Restored, String> {
        let mut ids: Vec<String> = self
            .conn
            .prepare("SELECT DISTINCT thread FROM ops UNION SELECT id FROM threads WHERE dirty = 1")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .map_err(err)?;
        ids.sort();
        let mut threads = Vec::new();
        for id in ids {
            let id = ThreadId::new(id).map_err(err)?;
            if let Some(t) = self.load(&id)? {
                threads.push(t);
            }
        }
        let cursor: Option<String> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'cursor'", [], |r| r.get(0))
            .optional()
            .map_err(err)?;
        let cursor = match cursor {
            Some(c) => Some(c.parse::<Cursor>().map_err(|e| format!("bad cursor in the state: {e}"))?),
            None => None,
        };
        let conflicts = self
            .conn
            .prepare("SELECT value FROM conflicts ORDER BY id")
            .and_then(|mut s| s.query_map([], |r| r.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>())
            .map_err(err)?
            .iter()
            .map(|v| serde_json::from_str::<Conflict>(v).map_err(err))
            .collect::<Result<Vec<_>, _>>()?;
        let next_seq: i64 =
            self.conn.query_row("SELECT coalesce(max(seq), 0) + 1 FROM ops", [], |r| r.get(0)).map_err(err)?;
        Ok(Restored { threads, cursor, conflicts, next_seq: next_seq as u64 })
    }

    /// Every thread's file kind and stamp (a start compares them with the
    /// files, and reads only those that changed).
    pub fn stamps(&self) -> Result<HashMap<ThreadId, (FileKind, Option<Stamp>)>, String> {
        let mut out = HashMap::new();
        let mut s = self.conn.prepare("SELECT id, kind, stamp FROM threads").map_err(err)?;
        let rows = s
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<String>>(2)?)))
            .map_err(err)?;
        for row in rows {
            let (id, kind, stamp) = row.map_err(err)?;
            let id = ThreadId::new(id).map_err(err)?;
            out.insert(id, (parse_kind(&kind)?, parse_stamp(stamp.as_deref())?));
        }
        Ok(out)
    }

    /// A deleted message as this machine last knew it, content loaded (None:
    /// not known here, e.g. deleted before this machine first synced).
    pub fn deleted_message(&self, thread: &ThreadId, id: &MessageId) -> Option<Message> {
        let (hash, role, ts, extra): (String, String, i64, Option<String>) = self
            .conn
            .query_row(
                "SELECT hash, role, ts, extra FROM base WHERE thread = ?1 AND id = ?2 AND deleted = 1",
                params![thread.as_str(), id.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .ok()??;
        let content = body(&self.conn, thread, id, unhex(&hash).ok()?)?;
        let extra = match extra {
            Some(e) => serde_json::from_str(&e).ok()?,
            None => Map::new(),
        };
        Some(Message { id: id.clone(), role, content: Content::new(content), timestamp: ts, extra })
    }

    /// The threads at rest, for `threadsync/listThreads`.
    pub fn list_threads(&self) -> Result<Vec<ListedThread>, String> {
        let mut s =
            self.conn.prepare("SELECT id, title, v, count FROM threads WHERE v > 0 ORDER BY id").map_err(err)?;
        let rows = s
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get::<_, i64>(3)?))
            })
            .map_err(err)?;
        let mut out = Vec::new();
        for row in rows {
            let (id, title, v, count) = row.map_err(err)?;
            out.push(ListedThread {
                id: ThreadId::new(id).map_err(err)?,
                title,
                version: v as u64,
                message_count: count as usize,
            });
        }
        Ok(out)
    }

    // ----- the JSON layout of earlier versions ----------------------------------

    fn import_json_layout(&mut self) -> Result<(), String> {
        let bases = self.root.join("bases");
        let outbox = self.root.join("outbox");
        let cursor = self.root.join("cursor.json");
        let conflicts = self.root.join("conflicts.json");
        if !bases.is_dir() && !outbox.is_dir() && !cursor.exists() && !conflicts.exists() {
            return Ok(());
        }
        let each = |dir: &Path| -> Vec<PathBuf> {
            let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
                .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            v.sort();
            v
        };
        let load = |p: &Path| -> Option<Value> {
            let bytes = std::fs::read(p).ok()?;
            match serde_json::from_slice(&bytes) {
                Ok(v) => Some(v),
                Err(e) => {
                    tracing::warn!(path = %p.display(), error = %e, "ignoring an unreadable file of the old state layout");
                    None
                }
            }
        };
        let mut saves = Vec::new();
        let mut docs: HashMap<ThreadId, Doc> = HashMap::new();
        for p in each(&bases) {
            let Some(doc) = load(&p).and_then(|v| serde_json::from_value::<Doc>(v).ok()) else { continue };
            docs.insert(doc.id().clone(), doc);
        }
        let mut outboxes: HashMap<ThreadId, Vec<Op>> = HashMap::new();
        for p in each(&outbox) {
            let Some(stem) = p.file_stem().and_then(|s| s.to_str()) else { continue };
            let Ok(id) = ThreadId::new(stem) else { continue };
            if let Some(ops) = load(&p).and_then(|v| serde_json::from_value::<Vec<Op>>(v).ok()) {
                outboxes.insert(id, ops);
            }
        }
        let mut seq = 1;
        let mut ids: Vec<ThreadId> = docs.keys().chain(outboxes.keys()).cloned().collect();
        ids.sort();
        ids.dedup();
        for id in ids {
            let doc = docs.remove(&id).unwrap_or_else(|| Doc::empty(id.clone()));
            let ops = outboxes.remove(&id).unwrap_or_default();
            // The old sidecar diffed a file against base + outbox: that is
            // what the file is known to hold. It is read again at start.
            let mut view_doc = doc.clone();
            for op in &ops {
                view_doc.apply(op, &crate::merge::Limits::default());
            }
            let mut kept = Vec::new();
            for m in &doc.thread.messages {
                saves.push(Save::Body { thread: id.clone(), id: m.id.clone(), content: m.content.clone() });
            }
            let elided = Doc {
                thread: Thread {
                    messages: doc.thread.messages.iter().map(|m| Arc::new(m.elided())).collect(),
                    ..doc.thread.clone()
                },
                ..doc.clone()
            };
            saves.push(Save::Base { thread: id.clone(), change: BaseChange::Replace { doc: Box::new(elided) } });
            for op in ops {
                match &op {
                    Op::Append { message, .. } | Op::Restore { message, .. } => saves.push(Save::Body {
                        thread: id.clone(),
                        id: message.id.clone(),
                        content: message.content.clone(),
                    }),
                    Op::Edit { id: mid, content, .. } => {
                        saves.push(Save::Body { thread: id.clone(), id: mid.clone(), content: content.clone() })
                    }
                    _ => {}
                }
                kept.push((seq, op));
                seq += 1;
            }
            if !kept.is_empty() {
                saves.push(Save::Ops { thread: id.clone(), add: kept, done: Vec::new() });
            }
            let view = FileView::of_thread(&view_doc.thread);
            let mut file = FileSave {
                kind: FileKind::Json,
                messages: view.messages.iter().map(|(k, v)| (k.clone(), Some(*v))).collect(),
                replace: true,
                title: view.title.clone(),
                env: view.env,
                created: view.created,
                extra: Map::new(),
                stamp: None,
                own: None,
                dirty: false,
                superseded: 0,
            };
            file.messages.sort();
            saves.push(Save::File { thread: id.clone(), file });
        }
        if let Some(c) = load(&cursor).and_then(|v| serde_json::from_value::<Option<Cursor>>(v).ok()) {
            saves.push(Save::Cursor(c));
        }
        if let Some(c) = load(&conflicts).and_then(|v| serde_json::from_value::<Vec<Conflict>>(v).ok()) {
            saves.push(Save::Conflicts(c));
        }
        self.apply(&saves, &[])?;
        // Keep the old files, out of the way (the import never runs twice).
        let aside = self.root.join("imported-json");
        std::fs::create_dir_all(&aside).map_err(err)?;
        for p in [bases, outbox, cursor, conflicts] {
            if p.exists() {
                let to = aside.join(p.file_name().expect("named"));
                std::fs::rename(&p, &to).map_err(|e| format!("cannot move {} aside: {e}", p.display()))?;
            }
        }
        tracing::info!("imported the state directory's JSON layout into state.sqlite");
        Ok(())
    }
}

impl crate::client::StateStore for StateDb {
    fn load(&self, id: &ThreadId) -> Result<Option<StoredThread>, String> {
        load_thread(&self.conn, id)
    }

    fn apply(&mut self, saves: &[Save], intents: &[(ThreadId, u64)]) -> Result<(), String> {
        StateDb::apply(self, saves, intents)
    }
}

impl Bodies for StateDb {
    fn body(&self, thread: &ThreadId, id: &MessageId, hash: ContentHash) -> Option<Value> {
        body(&self.conn, thread, id, hash)
    }

    fn has_body(&self, thread: &ThreadId, id: &MessageId, hash: ContentHash) -> bool {
        self.conn
            .prepare_cached("SELECT 1 FROM bodies WHERE thread = ?1 AND id = ?2 AND hash = ?3")
            .and_then(|mut s| s.exists(params![thread.as_str(), id.as_str(), hex(hash)]))
            .unwrap_or(false)
    }
}

fn body(conn: &Connection, thread: &ThreadId, id: &MessageId, hash: ContentHash) -> Option<Value> {
    let text: String = conn
        .prepare_cached("SELECT content FROM bodies WHERE thread = ?1 AND id = ?2 AND hash = ?3")
        .and_then(|mut s| s.query_row(params![thread.as_str(), id.as_str(), hex(hash)], |r| r.get(0)))
        .optional()
        .ok()
        .flatten()?;
    serde_json::from_str(&text).ok()
}

/// Conflict bases are loaded from the bodies of the same transaction.
struct TxBodies<'a>(&'a Transaction<'a>);

impl Bodies for TxBodies<'_> {
    fn body(&self, thread: &ThreadId, id: &MessageId, hash: ContentHash) -> Option<Value> {
        body(self.0, thread, id, hash)
    }
}

fn ensure_thread(tx: &Transaction<'_>, id: &ThreadId) -> Result<(), String> {
    tx.prepare_cached("INSERT OR IGNORE INTO threads (id) VALUES (?1)")
        .and_then(|mut s| s.execute(params![id.as_str()]))
        .map(|_| ())
        .map_err(err)
}

fn insert_base_row(
    tx: &Transaction<'_>,
    thread: &ThreadId,
    pos: f64,
    after: Option<&MessageId>,
    deleted: bool,
    m: &Message,
) -> Result<(), String> {
    let extra = if m.extra.is_empty() { None } else { Some(serde_json::to_string(&m.extra).map_err(err)?) };
    tx.prepare_cached(
        "INSERT OR REPLACE INTO base (thread, id, pos, after, deleted, hash, size, role, ts, extra) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )
    .and_then(|mut s| {
        s.execute(params![
            thread.as_str(),
            m.id.as_str(),
            pos,
            after.map(|a| a.as_str()),
            deleted,
            hex(m.content.hash()),
            m.content.size() as i64,
            m.role,
            m.timestamp,
            extra
        ])
    })
    .map(|_| ())
    .map_err(err)
}

fn pos_of(tx: &Transaction<'_>, thread: &ThreadId, id: &MessageId) -> Result<Option<f64>, String> {
    tx.prepare_cached("SELECT pos FROM base WHERE thread = ?1 AND id = ?2")
        .and_then(|mut s| s.query_row(params![thread.as_str(), id.as_str()], |r| r.get(0)).optional())
        .map_err(err)
}

/// Gives a thread's base rows the positions 1, 2, 3, … again (when repeated
/// inserts between the same two rows ran out of room between them).
fn renumber(tx: &Transaction<'_>, thread: &ThreadId) -> Result<(), String> {
    let ids: Vec<String> = tx
        .prepare("SELECT id FROM base WHERE thread = ?1 ORDER BY pos")
        .and_then(|mut s| s.query_map(params![thread.as_str()], |r| r.get(0))?.collect())
        .map_err(err)?;
    for (i, id) in ids.iter().enumerate() {
        tx.execute(
            "UPDATE base SET pos = ?3 WHERE thread = ?1 AND id = ?2",
            params![thread.as_str(), id, (i + 1) as f64],
        )
        .map_err(err)?;
    }
    tx.execute("UPDATE threads SET maxpos = ?2 WHERE id = ?1", params![thread.as_str(), ids.len() as f64])
        .map_err(err)?;
    Ok(())
}

fn apply_one(tx: &Transaction<'_>, s: &Save) -> Result<(), String> {
    match s {
        Save::Body { thread, id, content } => {
            let v = content.value().ok_or("a body to keep must be loaded")?;
            let text = serde_json::to_string(v).map_err(err)?;
            tx.prepare_cached("INSERT OR IGNORE INTO bodies (thread, id, hash, content) VALUES (?1, ?2, ?3, ?4)")
                .and_then(|mut st| st.execute(params![thread.as_str(), id.as_str(), hex(content.hash()), text]))
                .map_err(err)?;
        }
        Save::Base { thread, change: BaseChange::Replace { doc } } => {
            ensure_thread(tx, thread)?;
            tx.execute("DELETE FROM base WHERE thread = ?1", params![thread.as_str()]).map_err(err)?;
            let t = &doc.thread;
            let mut visible = t.messages.iter().map(|m| (&m.id, m)).collect::<HashMap<_, _>>();
            for (i, id) in doc.seq.iter().enumerate() {
                let after = doc.after.get(id).and_then(|a| a.as_ref());
                match visible.remove(id) {
                    Some(m) => insert_base_row(tx, thread, (i + 1) as f64, after, false, m)?,
                    None => {
                        // A tombstone: only its place and anchor matter.
                        let m = Message {
                            id: id.clone(),
                            role: String::new(),
                            content: Content::elided_of(ContentHash(0), 0),
                            timestamp: 0,
                            extra: Map::new(),
                        };
                        insert_base_row(tx, thread, (i + 1) as f64, after, true, &m)?;
                    }
                }
            }
            tx.execute(
                "UPDATE threads SET v = ?2, created = ?3, title = ?4, env = ?5, count = ?6, maxpos = ?7 WHERE id = ?1",
                params![
                    thread.as_str(),
                    t.v as i64,
                    t.created,
                    t.title,
                    serde_json::to_string(&t.env).map_err(err)?,
                    t.messages.len() as i64,
                    doc.seq.len() as f64
                ],
            )
            .map_err(err)?;
        }
        Save::Base { thread, change: BaseChange::Effects { effects, between, version } } => {
            ensure_thread(tx, thread)?;
            for (i, e) in effects.iter().enumerate() {
                match e {
                    Effect::Create { created, env } => {
                        tx.execute(
                            "UPDATE threads SET created = ?2, env = ?3 WHERE id = ?1",
                            params![thread.as_str(), created, serde_json::to_string(env).map_err(err)?],
                        )
                        .map_err(err)?;
                    }
                    Effect::Insert { after, message, .. } => {
                        let pos = match between.get(i).cloned().flatten() {
                            None => {
                                let max: f64 = tx
                                    .prepare_cached("SELECT maxpos FROM threads WHERE id = ?1")
                                    .and_then(|mut s| s.query_row(params![thread.as_str()], |r| r.get(0)))
                                    .map_err(err)?;
                                tx.prepare_cached("UPDATE threads SET maxpos = ?2 WHERE id = ?1")
                                    .and_then(|mut s| s.execute(params![thread.as_str(), max + 1.0]))
                                    .map_err(err)?;
                                max + 1.0
                            }
                            Some((prev, next)) => {
                                let place = || -> Result<Option<f64>, String> {
                                    let lo = match &prev {
                                        Some(p) => pos_of(tx, thread, p)?.ok_or("unknown neighbour")?,
                                        None => 0.0,
                                    };
                                    let hi = pos_of(tx, thread, &next)?.ok_or("unknown neighbour")?;
                                    let mid = lo + (hi - lo) / 2.0;
                                    Ok((mid > lo && mid < hi).then_some(mid))
                                };
                                match place()? {
                                    Some(p) => p,
                                    None => {
                                        renumber(tx, thread)?;
                                        place()?.ok_or("cannot place a message between its neighbours")?
                                    }
                                }
                            }
                        };
                        insert_base_row(tx, thread, pos, after.as_ref(), false, message)?;
                        tx.prepare_cached("UPDATE threads SET count = count + 1 WHERE id = ?1")
                            .and_then(|mut s| s.execute(params![thread.as_str()]))
                            .map_err(err)?;
                    }
                    Effect::Edit { id, content } => {
                        tx.execute(
                            "UPDATE base SET hash = ?3, size = ?4 WHERE thread = ?1 AND id = ?2",
                            params![thread.as_str(), id.as_str(), hex(content.hash()), content.size() as i64],
                        )
                        .map_err(err)?;
                    }
                    Effect::Delete { id } => {
                        tx.execute(
                            "UPDATE base SET deleted = 1 WHERE thread = ?1 AND id = ?2",
                            params![thread.as_str(), id.as_str()],
                        )
                        .map_err(err)?;
                        tx.execute("UPDATE threads SET count = count - 1 WHERE id = ?1", params![thread.as_str()])
                            .map_err(err)?;
                    }
                    Effect::Title { title } => {
                        tx.execute("UPDATE threads SET title = ?2 WHERE id = ?1", params![thread.as_str(), title])
                            .map_err(err)?;
                    }
                    Effect::Env { env } => {
                        tx.execute(
                            "UPDATE threads SET env = ?2 WHERE id = ?1",
                            params![thread.as_str(), serde_json::to_string(env).map_err(err)?],
                        )
                        .map_err(err)?;
                    }
                }
            }
            tx.prepare_cached("UPDATE threads SET v = ?2 WHERE id = ?1")
                .and_then(|mut s| s.execute(params![thread.as_str(), *version as i64]))
                .map_err(err)?;
        }
        Save::Ops { thread, add, done } => {
            for seq in done {
                tx.prepare_cached("DELETE FROM ops WHERE seq = ?1")
                    .and_then(|mut s| s.execute(params![*seq as i64]))
                    .map_err(err)?;
            }
            for (seq, op) in add {
                let text = serde_json::to_string(StoredOp::of(op).json()).map_err(err)?;
                tx.prepare_cached("INSERT OR REPLACE INTO ops (seq, thread, op) VALUES (?1, ?2, ?3)")
                    .and_then(|mut s| s.execute(params![*seq as i64, thread.as_str(), text]))
                    .map_err(err)?;
            }
        }
        Save::File { thread, file } => {
            ensure_thread(tx, thread)?;
            if file.replace {
                tx.execute("DELETE FROM fileview WHERE thread = ?1", params![thread.as_str()]).map_err(err)?;
            }
            for (id, h) in &file.messages {
                match h {
                    Some(h) => tx
                        .prepare_cached("INSERT OR REPLACE INTO fileview (thread, id, hash) VALUES (?1, ?2, ?3)")
                        .and_then(|mut s| s.execute(params![thread.as_str(), id.as_str(), hex(*h)])),
                    None => tx
                        .prepare_cached("DELETE FROM fileview WHERE thread = ?1 AND id = ?2")
                        .and_then(|mut s| s.execute(params![thread.as_str(), id.as_str()])),
                }
                .map_err(err)?;
            }
            let stamp = file.stamp.map(|s| serde_json::to_string(&s)).transpose().map_err(err)?;
            let extra = serde_json::to_string(&file.extra).map_err(err)?;
            tx.prepare_cached(
                "UPDATE threads SET kind = ?2, f_title = ?3, f_env = ?4, f_created = ?5, f_extra = ?6,
                        stamp = ?7, own = ?8, dirty = ?9, superseded = ?10 WHERE id = ?1",
            )
            .and_then(|mut s| {
                s.execute(params![
                    thread.as_str(),
                    match file.kind {
                        FileKind::Json => "json",
                        FileKind::Jsonl => "jsonl",
                    },
                    file.title,
                    hex(file.env),
                    file.created,
                    extra,
                    stamp,
                    file.own.map(|h| format!("{h:016x}")),
                    file.dirty,
                    file.superseded as i64
                ])
            })
            .map_err(err)?;
        }
        Save::Cursor(c) => match c {
            Some(c) => {
                tx.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES ('cursor', ?1)")
                    .and_then(|mut s| s.execute(params![c.to_string()]))
                    .map_err(err)?;
            }
            None => {
                tx.execute("DELETE FROM meta WHERE key = 'cursor'", []).map_err(err)?;
            }
        },
        Save::Conflicts(list) => {
            tx.execute("DELETE FROM conflicts", []).map_err(err)?;
            let bodies = TxBodies(tx);
            for c in list {
                let c = bodies.load_conflict(c)?;
                let text = serde_json::to_string(&c).map_err(err)?;
                tx.execute("INSERT INTO conflicts (id, value) VALUES (?1, ?2)", params![c.id, text]).map_err(err)?;
            }
        }
    }
    Ok(())
}

fn parse_kind(s: &str) -> Result<FileKind, String> {
    match s {
        "json" => Ok(FileKind::Json),
        "jsonl" => Ok(FileKind::Jsonl),
        other => Err(format!("unknown file kind {other:?} in the state")),
    }
}

fn parse_stamp(s: Option<&str>) -> Result<Option<Stamp>, String> {
    s.map(|s| serde_json::from_str(s).map_err(|e| format!("bad stamp in the state: {e}"))).transpose()
}

type ThreadRow =
    (i64, i64, String, String, String, String, String, i64, String, Option<String>, Option<String>, bool, i64);

fn load_thread(conn: &Connection, id: &ThreadId) -> Result<Option<StoredThread>, String> {
    let row: Option<ThreadRow> = conn
        .prepare_cached(
            "SELECT v, created, title, env, kind, f_title, f_env, f_created, f_extra, stamp, own, dirty, superseded
               FROM threads WHERE id = ?1",
        )
        .and_then(|mut s| {
            s.query_row(params![id.as_str()], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                    r.get(10)?,
                    r.get(11)?,
                    r.get(12)?,
                ))
            })
            .optional()
        })
        .map_err(err)?;
    let Some((v, created, title, env, kind, f_title, f_env, f_created, f_extra, stamp, own, dirty, superseded)) = row
    else {
        return Ok(None);
    };
    // The base, in order.
    type BaseRow = (String, f64, Option<String>, bool, String, i64, String, i64, Option<String>);
    let mut rows: Vec<BaseRow> = conn
        .prepare_cached("SELECT id, pos, after, deleted, hash, size, role, ts, extra FROM base WHERE thread = ?1")
        .and_then(|mut s| {
            s.query_map(params![id.as_str()], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?))
            })?
            .collect()
        })
        .map_err(err)?;
    rows.sort_by(|a, b| a.1.total_cmp(&b.1));
    let mut thread = Thread::new(id.clone(), created);
    thread.v = v as u64;
    thread.title = title;
    thread.env = serde_json::from_str(&env).map_err(err)?;
    let mut doc = Doc::empty(id.clone());
    for (mid, _, after, deleted, hash, size, role, ts, extra) in rows {
        let mid = MessageId::new(mid).map_err(err)?;
        let after = after.map(MessageId::new).transpose().map_err(err)?;
        doc.seq.push(mid.clone());
        doc.after.insert(mid.clone(), after);
        if deleted {
            doc.deleted.insert(mid);
            continue;
        }
        let extra: Map<String, Value> = match extra {
            Some(e) => serde_json::from_str(&e).map_err(err)?,
            None => Map::new(),
        };
        thread.messages.push(Arc::new(Message {
            id: mid,
            role,
            content: Content::elided_of(unhex(&hash)?, size as usize),
            timestamp: ts,
            extra,
        }));
    }
    doc.thread = thread;
    // Unconfirmed operations.
    let ops: Vec<(i64, String)> = conn
        .prepare_cached("SELECT seq, op FROM ops WHERE thread = ?1 ORDER BY seq")
        .and_then(|mut s| s.query_map(params![id.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .map_err(err)?;
    let ops = ops
        .into_iter()
        .map(|(seq, text)| {
            let v: Value = serde_json::from_str(&text).map_err(err)?;
            Ok((seq as u64, StoredOp::from_json(v).to_op()?))
        })
        .collect::<Result<Vec<_>, String>>()?;
    // The file.
    let view_rows: Vec<(String, String)> = conn
        .prepare_cached("SELECT id, hash FROM fileview WHERE thread = ?1")
        .and_then(|mut s| s.query_map(params![id.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .map_err(err)?;
    let mut view = FileView {
        messages: HashMap::with_capacity(view_rows.len()),
        title: f_title,
        env: if f_env.is_empty() { FileView::default().env } else { unhex(&f_env)? },
        created: f_created,
        extra: serde_json::from_str(&f_extra).map_err(err)?,
    };
    for (mid, h) in view_rows {
        view.messages.insert(MessageId::new(mid).map_err(err)?, unhex(&h)?);
    }
    let mut file = FileState::new(parse_kind(&kind)?);
    file.view = view;
    file.stamp = parse_stamp(stamp.as_deref())?;
    file.own = own.map(|o| u64::from_str_radix(&o, 16)).transpose().map_err(err)?;
    file.dirty = dirty;
    file.superseded = superseded as u64;
    Ok(Some(StoredThread { base: doc, ops, file: restored_file(&file), last_sync: None }))
}

#[cfg(test)]
mod tests {
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
        saves.push(Save::Body {
            thread: t.clone(),
            id: MessageId::new("c").unwrap(),
            content: Content::new(json!("c2")),
        });
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
}
