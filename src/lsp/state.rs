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

mod load;
mod save;

use self::load::*;
use self::save::*;

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
    // Native session files (an assistant's store) their owner removed.
    r#"
ALTER TABLE threads ADD COLUMN removed INTEGER NOT NULL DEFAULT 0;
"#,
    // Bodies out of the key's b-tree: in a WITHOUT ROWID table a lookup
    // compares keys by reading whole cells, overflow included, so every
    // lookup read the megabytes of the bodies on its search path (a turn
    // in a 5 MB session read ~1 MB). In a rowid table the index holds only
    // the keys, and the body is read when asked for.
    r#"
CREATE TABLE bodies_by_row (thread TEXT NOT NULL, id TEXT NOT NULL, hash TEXT NOT NULL, content TEXT NOT NULL);
INSERT INTO bodies_by_row (thread, id, hash, content) SELECT thread, id, hash, content FROM bodies;
DROP TABLE bodies;
ALTER TABLE bodies_by_row RENAME TO bodies;
CREATE UNIQUE INDEX bodies_key ON bodies (thread, id, hash);
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
    /// Where the thread comes from (an assistant's session: its source and project).
    pub env: serde_json::Value,
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
            self.conn.prepare("SELECT id, title, v, count, env FROM threads WHERE v > 0 ORDER BY id").map_err(err)?;
        let rows = s
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })
            .map_err(err)?;
        let mut out = Vec::new();
        for row in rows {
            let (id, title, v, count, env) = row.map_err(err)?;
            out.push(ListedThread {
                id: ThreadId::new(id).map_err(err)?,
                title,
                version: v as u64,
                message_count: count as usize,
                env: serde_json::from_str(&env).unwrap_or_default(),
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
                removed: false,
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

#[cfg(test)]
mod tests;
