//! The server's storage in SQL, written once for SQLite and PostgreSQL.
//!
//! [`SqlStore`] is the [`Store`] over any [`Backend`]; [`SqlTx`] implements
//! [`Tx`] over a minimal [`Conn`] (run a statement with values, get rows of
//! values), so the two databases share every query and every migration
//! (`migrations/`, run by refinery on open). The backends (`sqlite.rs`,
//! `postgres.rs`) only bind values, manage connections and transactions,
//! and say how their placeholders look.
//!
//! Layout: a message row keeps its place (`pos`, counting tombstones), its
//! anchor and its JSON; deleting sets `deleted`. The change log stores each
//! effect without the message body, which a pull joins from `messages`: a
//! message is stored once however often it is pulled.

use std::collections::HashMap;
use std::sync::Arc;

use crate::merge::{Doc, Head, Located};
use crate::model::{Message, MessageId, Thread, ThreadId};
use crate::ops::Effect;
use crate::server::core::{StoreError, TeamId, Tx};
use crate::server::store::{Store, TokenInfo, TxBody};
use crate::server::web_store::WebStore;
use crate::wire::{Change, ClientId};

mod changes;
mod conn;
pub mod search;
mod tokens;
mod web;

pub use self::conn::{Access, Backend, Conn, Dialect, Val};
use self::changes::decode_changes;
use self::tokens::{insert_token, list_tokens, revoke_tokens, team_for_token};

mod shared {
    refinery::embed_migrations!("src/server/migrations/shared");
}
mod sqlite_only {
    refinery::embed_migrations!("src/server/migrations/sqlite");
}
mod postgres_only {
    refinery::embed_migrations!("src/server/migrations/postgres");
}

/// The schema's versioned migrations for one database: those both share
/// (`migrations/shared`) and its own (the search index), one sequence of
/// versions. A database made before them (the same tables, no history)
/// takes the first as is.
pub fn migrations(dialect: Dialect) -> refinery::Runner {
    let own = match dialect {
        Dialect::Sqlite => sqlite_only::migrations::runner(),
        Dialect::Postgres => postgres_only::migrations::runner(),
    };
    let mut all = shared::migrations::runner().get_migrations().clone();
    all.extend(own.get_migrations().iter().cloned());
    refinery::Runner::new(&all)
}

/// The store over a SQL database: every query and decision written once.
pub struct SqlStore<B>(pub B);

impl<B: Backend> Store for SqlStore<B> {
    fn transact(&self, team: &TeamId, write: bool, body: TxBody<'_>) -> Result<Option<u64>, StoreError> {
        let access = if write { Access::WriteTeam(team) } else { Access::Read };
        self.0.transaction(access, |conn| {
            let mut tx = SqlTx::new(&mut *conn, team);
            body(&mut tx)?;
            let head = tx.finish()?;
            if let Some(head) = head {
                self.0.log_moved(conn, team, head)?;
            }
            Ok(head)
        })
    }

    fn insert_token(&self, id: &str, team: &TeamId, hash: &str, now: i64) -> Result<(), StoreError> {
        self.0.transaction(Access::Write, |c| insert_token(c, id, team, hash, now))
    }

    fn team_for_token(&self, hash: &str) -> Result<Option<TeamId>, StoreError> {
        self.0.transaction(Access::Read, |c| team_for_token(c, hash))
    }

    fn list_tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        self.0.transaction(Access::Read, list_tokens)
    }

    fn revoke_tokens(&self, id_prefix: &str, now: i64) -> Result<Vec<TokenInfo>, StoreError> {
        self.0.transaction(Access::Write, |c| revoke_tokens(c, id_prefix, now))
    }

    fn compact(&self, team: &TeamId, keep: u64) -> Result<(), StoreError> {
        self.0.transaction(Access::WriteTeam(team), |c| SqlTx::new(c, team).compact(keep))
    }

    fn web(&self) -> Option<&dyn WebStore> {
        Some(self)
    }
}

/// A migration's outcome as a store error.
pub fn migration_error(e: refinery::Error) -> StoreError {
    StoreError::new(format!("cannot migrate the database: {e}"))
}

fn json_err(e: serde_json::Error) -> StoreError {
    StoreError::new(format!("stored JSON is unreadable: {e}"))
}

/// [`Tx`] over any [`Conn`]. The team's log head and the rows of the threads
/// a push touches are read once, kept here, and written back by
/// [`SqlTx::finish`] inside the same transaction: an append then costs one
/// lookup and two inserts.
pub struct SqlTx<'c, C: Conn + ?Sized> {
    pub conn: &'c mut C,
    team: String,
    head: Option<(u64, u64)>,
    dirty: bool,
    threads: HashMap<ThreadId, Option<ThreadRow>>,
    /// The last message looked up (deleted or not): `decide` asks
    /// "present?" and then "deleted?" about the same id.
    probe: Option<(ThreadId, MessageId, Option<Row>)>,
    /// Rows of the messages a mutation appends, read in one statement
    /// before it is decided (see [`Tx::prefetch`]): almost always none.
    prefetched: Option<(ThreadId, HashMap<MessageId, Option<Row>>)>,
    /// When this transaction began (ms): a thread it changes was last
    /// changed then.
    now: i64,
}

/// A row as read: its values in the query's column order.
type Row = Vec<Val>;

#[derive(Clone, Debug)]
struct ThreadRow {
    version: u64,
    title: String,
    env: serde_json::Value,
    len: usize,
    last: Option<MessageId>,
    dirty: bool,
}

impl<'c, C: Conn + ?Sized> SqlTx<'c, C> {
    pub fn new(conn: &'c mut C, team: &TeamId) -> Self {
        SqlTx {
            conn,
            team: team.as_str().to_string(),
            head: None,
            dirty: false,
            threads: HashMap::new(),
            probe: None,
            prefetched: None,
            now: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64),
        }
    }

    fn thread_row(&mut self, t: &ThreadId) -> Result<Option<&mut ThreadRow>, StoreError> {
        if !self.threads.contains_key(t) {
            let mut rows = self.conn.query(
                "SELECT version, title, env, len, last_id FROM threads WHERE team = ?1 AND thread = ?2",
                &[self.team(), t.as_str().into()],
            )?;
            let row = match rows.pop() {
                None => None,
                Some(r) => {
                    let mut r = r.into_iter();
                    Some(ThreadRow {
                        version: r.next().unwrap().int()? as u64,
                        title: r.next().unwrap().text()?,
                        env: serde_json::from_str(&r.next().unwrap().text()?).map_err(json_err)?,
                        len: r.next().unwrap().int()? as usize,
                        last: parse_id(r.next().unwrap())?,
                        dirty: false,
                    })
                }
            };
            self.threads.insert(t.clone(), row);
        }
        Ok(self.threads.get_mut(t).and_then(|r| r.as_mut()))
    }

    fn touch(&mut self, t: &ThreadId, version: u64) -> Result<&mut ThreadRow, StoreError> {
        let row = self.thread_row(t)?.ok_or_else(|| StoreError::new(format!("write to missing thread {t}")))?;
        row.version = version;
        row.dirty = true;
        Ok(row)
    }

    /// Writes the cached thread rows that changed.
    fn flush_threads(&mut self) -> Result<(), StoreError> {
        let team = self.team();
        for (t, row) in self.threads.iter_mut() {
            let Some(row) = row.as_mut().filter(|r| r.dirty) else { continue };
            self.conn.exec(
                "UPDATE threads SET version = ?3, title = ?4, env = ?5, len = ?6, last_id = ?7, updated = ?8
                 WHERE team = ?1 AND thread = ?2",
                &[
                    team.clone(),
                    t.as_str().into(),
                    row.version.into(),
                    stored_title(&row.title).into_owned().into(),
                    row.env.to_string().into(),
                    row.len.into(),
                    row.last.as_ref().map(|l| l.as_str()).into(),
                    Val::Int(self.now),
                ],
            )?;
            row.dirty = false;
        }
        Ok(())
    }

    fn team(&self) -> Val {
        Val::Text(self.team.clone())
    }

    /// (head, floor) of the team's log.
    fn log(&mut self) -> Result<(u64, u64), StoreError> {
        if let Some(h) = self.head {
            return Ok(h);
        }
        let rows = self.conn.query("SELECT head_seq, floor_seq FROM teams WHERE team = ?1", &[self.team()])?;
        let h = match rows.first() {
            Some(r) => (r[0].int()? as u64, r[1].int()? as u64),
            None => (0, 0),
        };
        self.head = Some(h);
        Ok(h)
    }

    /// Writes the log head back. Returns the new head if anything changed.
    pub fn finish(mut self) -> Result<Option<u64>, StoreError> {
        self.flush_threads()?;
        if !self.dirty {
            return Ok(None);
        }
        let (head, _) = self.log()?;
        self.conn.exec(
            "INSERT INTO teams (team, head_seq) VALUES (?1, ?2)
             ON CONFLICT (team) DO UPDATE SET head_seq = excluded.head_seq",
            &[self.team(), head.into()],
        )?;
        Ok(Some(head))
    }

    fn rows(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Vec<Val>>, StoreError> {
        self.conn.query(sql, params)
    }

    /// The row (pos, after, body) of a message with the given deleted flag.
    fn message_row(&mut self, t: &ThreadId, id: &MessageId, deleted: i64) -> Result<Option<Vec<Val>>, StoreError> {
        let cached = matches!(&self.probe, Some((pt, pid, _)) if pt == t && pid == id);
        let known = match &self.prefetched {
            Some((pt, rows)) if pt == t => rows.get(id).cloned(),
            _ => None,
        };
        if let Some(row) = known {
            self.probe = Some((t.clone(), id.clone(), row));
        } else if !cached {
            let row = self
                .rows(
                    "SELECT pos, after, body, deleted FROM messages WHERE team = ?1 AND thread = ?2 AND id = ?3",
                    &[self.team(), t.as_str().into(), id.as_str().into()],
                )?
                .pop();
            self.probe = Some((t.clone(), id.clone(), row));
        }
        let Some((_, _, row)) = &self.probe else { unreachable!("just set") };
        Ok(match row {
            Some(r) if r[3].int()? == deleted => Some(r[..3].to_vec()),
            _ => None,
        })
    }
}

/// A title as both databases can store it: PostgreSQL's text refuses NUL,
/// so it becomes U+FFFD on either (a title is shown, never compared byte
/// for byte with a client's file).
fn stored_title(t: &str) -> std::borrow::Cow<'_, str> {
    if t.contains('\0') { t.replace('\0', "\u{fffd}").into() } else { t.into() }
}

fn parse_id(v: Val) -> Result<Option<MessageId>, StoreError> {
    v.opt_text()?.map(|s| MessageId::new(s).map_err(|e| StoreError::new(format!("stored message id: {e}")))).transpose()
}

fn parse_message(v: Val) -> Result<Arc<Message>, StoreError> {
    Ok(Arc::new(serde_json::from_str(&v.text()?).map_err(json_err)?))
}

impl<C: Conn + ?Sized> Tx for SqlTx<'_, C> {
    fn last_mutation(&mut self, client: &ClientId) -> Result<u64, StoreError> {
        let rows = self.rows(
            "SELECT last_mutation FROM clients WHERE team = ?1 AND client = ?2",
            &[self.team(), client.as_str().into()],
        )?;
        Ok(rows.first().map(|r| r[0].int()).transpose()?.unwrap_or(0) as u64)
    }

    fn set_last_mutation(&mut self, client: &ClientId, id: u64) -> Result<(), StoreError> {
        self.conn.exec(
            "INSERT INTO clients (team, client, last_mutation) VALUES (?1, ?2, ?3)
             ON CONFLICT (team, client) DO UPDATE SET last_mutation = excluded.last_mutation",
            &[self.team(), client.as_str().into(), id.into()],
        )?;
        Ok(())
    }

    fn set_machine(&mut self, client: &ClientId, machine: &str) -> Result<(), StoreError> {
        // Written only when it changed: most pushes cost one lookup here.
        self.conn.exec(
            "UPDATE clients SET machine = ?3 WHERE team = ?1 AND client = ?2 AND machine IS DISTINCT FROM ?3",
            &[self.team(), client.as_str().into(), machine.into()],
        )?;
        Ok(())
    }

    fn thread_head(&mut self, t: &ThreadId) -> Result<Option<(u64, Head)>, StoreError> {
        Ok(self.thread_row(t)?.map(|r| {
            (r.version, Head { title: r.title.clone(), env: r.env.clone(), len: r.len, last: r.last.clone() })
        }))
    }

    fn message(&mut self, t: &ThreadId, id: &MessageId) -> Result<Option<Located>, StoreError> {
        let Some(r) = self.message_row(t, id, 0)? else { return Ok(None) };
        let mut r = r.into_iter();
        let index = r.next().unwrap().int()? as usize;
        let after = parse_id(r.next().unwrap())?;
        let message = parse_message(r.next().unwrap())?;
        Ok(Some(Located { index, after, message }))
    }

    fn tombstone(&mut self, t: &ThreadId, id: &MessageId) -> Result<Option<usize>, StoreError> {
        Ok(match self.message_row(t, id, 1)? {
            Some(r) => Some(r[0].int()? as usize),
            None => None,
        })
    }

    fn scan_from(
        &mut self,
        t: &ThreadId,
        from: usize,
        keep: &mut dyn FnMut(&MessageId, Option<&MessageId>) -> bool,
    ) -> Result<usize, StoreError> {
        // In pages: the scan usually stops after a few rows.
        const PAGE: usize = 64;
        let mut n = 0;
        loop {
            let rows = self.rows(
                "SELECT id, after FROM messages WHERE team = ?1 AND thread = ?2 AND pos >= ?3 ORDER BY pos LIMIT ?4",
                &[self.team(), t.as_str().into(), (from + n).into(), PAGE.into()],
            )?;
            let got = rows.len();
            for r in rows {
                let mut r = r.into_iter();
                let id = parse_id(r.next().unwrap())?.ok_or_else(|| StoreError::new("message without id"))?;
                let after = parse_id(r.next().unwrap())?;
                if !keep(&id, after.as_ref()) {
                    return Ok(n);
                }
                n += 1;
            }
            if got < PAGE {
                return Ok(n);
            }
        }
    }

    fn prefetch(&mut self, t: &ThreadId, ids: &[&MessageId]) -> Result<(), StoreError> {
        let list = serde_json::to_string(ids).map_err(json_err)?;
        let sql = format!(
            "SELECT id, pos, after, body, deleted FROM messages WHERE team = ?1 AND thread = ?2 AND id IN ({})",
            self.conn.json_list(3)
        );
        let mut rows: HashMap<MessageId, Option<Row>> = ids.iter().map(|id| ((*id).clone(), None)).collect();
        for mut r in self.rows(&sql, &[self.team(), t.as_str().into(), list.into()])? {
            let rest = r.split_off(1);
            if let Some(id) = parse_id(r.pop().unwrap())? {
                rows.insert(id, Some(rest));
            }
        }
        self.prefetched = Some((t.clone(), rows));
        Ok(())
    }

    fn write(&mut self, t: &ThreadId, version: u64, effect: &Effect, author: &ClientId) -> Result<u64, StoreError> {
        self.probe = None;
        // What was read ahead no longer holds for a message this writes, nor
        // (positions shift, rows change) after anything but an append.
        match (effect, &mut self.prefetched) {
            (Effect::Insert { message, index, .. }, Some((_, rows)))
                if self.threads.get(t).and_then(|r| r.as_ref()).is_some_and(|r| *index >= r.len) =>
            {
                rows.remove(&message.id);
            }
            (Effect::Create { .. } | Effect::Title { .. } | Effect::Env { .. }, _) => {}
            _ => self.prefetched = None,
        }
        let team = self.team();
        let thread: Val = t.as_str().into();
        let mut msg_id = Val::Null;
        match effect {
            Effect::Create { created, env } => {
                self.conn.exec(
                    "INSERT INTO threads (team, thread, version, created, title, env, len, last_id, updated)
                     VALUES (?1, ?2, ?3, ?4, '', ?5, 0, NULL, ?6)",
                    &[
                        team.clone(),
                        thread.clone(),
                        version.into(),
                        Val::Int(*created),
                        env.to_string().into(),
                        Val::Int(self.now),
                    ],
                )?;
                let row =
                    ThreadRow { version, title: String::new(), env: env.clone(), len: 0, last: None, dirty: false };
                self.threads.insert(t.clone(), Some(row));
            }
            Effect::Insert { index, after, message } => {
                let len = self.touch(t, version)?.len;
                if *index < len {
                    self.conn.exec(
                        "UPDATE messages SET pos = pos + 1 WHERE team = ?1 AND thread = ?2 AND pos >= ?3",
                        &[team.clone(), thread.clone(), (*index).into()],
                    )?;
                }
                let body = serde_json::to_string(message.as_ref()).map_err(json_err)?;
                self.conn.exec(
                    "INSERT INTO messages (team, thread, id, pos, after, deleted, body, author)
                     VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?7)",
                    &[
                        team.clone(),
                        thread.clone(),
                        message.id.as_str().into(),
                        (*index).into(),
                        after.as_ref().map(|a| a.as_str()).into(),
                        body.into(),
                        author.as_str().into(),
                    ],
                )?;
                search::index(&mut *self.conn, &team, &thread, message)?;
                let row = self.touch(t, version)?;
                if *index == row.len {
                    row.last = Some(message.id.clone());
                }
                row.len += 1;
                msg_id = message.id.as_str().into();
            }
            Effect::Edit { id, content } => {
                let row =
                    self.message_row(t, id, 0)?.ok_or_else(|| StoreError::new(format!("edit of missing {id}")))?;
                self.probe = None;
                let mut m = Arc::unwrap_or_clone(parse_message(row[2].clone())?);
                m.content = content.clone();
                let body = serde_json::to_string(&m).map_err(json_err)?;
                search::unindex(&mut *self.conn, &team, &thread, id)?;
                self.conn.exec(
                    "UPDATE messages SET body = ?4 WHERE team = ?1 AND thread = ?2 AND id = ?3",
                    &[team.clone(), thread.clone(), id.as_str().into(), body.into()],
                )?;
                search::index(&mut *self.conn, &team, &thread, &m)?;
                self.touch(t, version)?;
            }
            Effect::Delete { id } => {
                search::unindex(&mut *self.conn, &team, &thread, id)?;
                self.conn.exec(
                    "UPDATE messages SET deleted = 1 WHERE team = ?1 AND thread = ?2 AND id = ?3",
                    &[team.clone(), thread.clone(), id.as_str().into()],
                )?;
                self.touch(t, version)?;
            }
            Effect::Title { title } => self.touch(t, version)?.title.clone_from(title),
            Effect::Env { env } => self.touch(t, version)?.env = env.clone(),
        }
        // The log entry, without the message body (joined back on pull).
        let stored = match effect {
            Effect::Insert { index, after, message } => serde_json::json!({
                "effect": "insert", "index": index, "after": after, "id": message.id,
            })
            .to_string(),
            other => serde_json::to_string(other).map_err(json_err)?,
        };
        let (head, floor) = self.log()?;
        let seq = head + 1;
        self.head = Some((seq, floor));
        self.dirty = true;
        self.conn.exec(
            "INSERT INTO changes (team, seq, thread, version, effect, msg_id, author) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            &[team, seq.into(), thread, version.into(), stored.into(), msg_id, author.as_str().into()],
        )?;
        Ok(seq)
    }

    fn head_seq(&mut self) -> Result<u64, StoreError> {
        Ok(self.log()?.0)
    }

    fn log_floor(&mut self) -> Result<u64, StoreError> {
        Ok(self.log()?.1)
    }

    fn changes_since(&mut self, after: u64, limit: usize) -> Result<Vec<Change>, StoreError> {
        let rows = self.rows(
            "SELECT c.seq, c.thread, c.version, c.effect, m.body, c.author FROM changes c
             LEFT JOIN messages m ON m.team = c.team AND m.thread = c.thread AND m.id = c.msg_id
             WHERE c.team = ?1 AND c.seq > ?2 ORDER BY c.seq LIMIT ?3",
            &[self.team(), after.into(), limit.into()],
        )?;
        decode_changes(rows)
    }

    fn thread_changes(&mut self, t: &ThreadId, after_version: u64, limit: usize) -> Result<Vec<Change>, StoreError> {
        self.flush_threads()?;
        let rows = self.rows(
            "SELECT c.seq, c.thread, c.version, c.effect, m.body, c.author FROM changes c
             LEFT JOIN messages m ON m.team = c.team AND m.thread = c.thread AND m.id = c.msg_id
             WHERE c.team = ?1 AND c.thread = ?2 AND c.version > ?3 ORDER BY c.version LIMIT ?4",
            &[self.team(), t.as_str().into(), after_version.into(), limit.into()],
        )?;
        decode_changes(rows)
    }

    fn doc(&mut self, t: &ThreadId) -> Result<Option<Doc>, StoreError> {
        self.flush_threads()?;
        let mut rows = self.rows(
            "SELECT version, created, title, env FROM threads WHERE team = ?1 AND thread = ?2",
            &[self.team(), t.as_str().into()],
        )?;
        let Some(r) = rows.pop() else { return Ok(None) };
        let mut r = r.into_iter();
        let mut thread = Thread::new(t.clone(), 0);
        thread.v = r.next().unwrap().int()? as u64;
        thread.created = r.next().unwrap().int()?;
        thread.title = r.next().unwrap().text()?;
        thread.env = serde_json::from_str(&r.next().unwrap().text()?).map_err(json_err)?;
        let mut doc = Doc::empty(t.clone());
        let msgs = self.rows(
            "SELECT id, after, deleted, body FROM messages WHERE team = ?1 AND thread = ?2 ORDER BY pos",
            &[self.team(), t.as_str().into()],
        )?;
        for m in msgs {
            let mut m = m.into_iter();
            let id = parse_id(m.next().unwrap())?.ok_or_else(|| StoreError::new("message without id"))?;
            let after = parse_id(m.next().unwrap())?;
            let deleted = m.next().unwrap().int()? != 0;
            doc.after.insert(id.clone(), after);
            doc.seq.push(id.clone());
            if deleted {
                doc.deleted.insert(id);
            } else {
                thread.messages.push(parse_message(m.next().unwrap())?);
            }
        }
        doc.thread = thread;
        Ok(Some(doc))
    }

    fn kept_message(&mut self, t: &ThreadId, id: &MessageId) -> Result<Option<(Arc<Message>, bool)>, StoreError> {
        let mut rows = self.rows(
            "SELECT body, deleted FROM messages WHERE team = ?1 AND thread = ?2 AND id = ?3",
            &[self.team(), t.as_str().into(), id.as_str().into()],
        )?;
        let Some(r) = rows.pop() else { return Ok(None) };
        let mut r = r.into_iter();
        let message = parse_message(r.next().unwrap())?;
        Ok(Some((message, r.next().unwrap().int()? != 0)))
    }

    fn docs_after(&mut self, after: Option<&ThreadId>, limit: usize) -> Result<Vec<Doc>, StoreError> {
        let rows = self.rows(
            "SELECT thread FROM threads WHERE team = ?1 AND thread > ?2 ORDER BY thread LIMIT ?3",
            &[self.team(), after.map_or("", |a| a.as_str()).into(), limit.into()],
        )?;
        let mut docs = Vec::with_capacity(rows.len());
        for r in rows {
            let id =
                ThreadId::new(r.into_iter().next().unwrap().text()?).map_err(|e| StoreError::new(e.to_string()))?;
            docs.extend(self.doc(&id)?);
        }
        Ok(docs)
    }
}

impl<C: Conn + ?Sized> SqlTx<'_, C> {
    /// Drops all but the newest `keep` changes of the team's log (cursors
    /// older than that then refetch).
    pub fn compact(&mut self, keep: u64) -> Result<(), StoreError> {
        let (head, floor) = self.log()?;
        let new_floor = head.saturating_sub(keep).max(floor);
        self.conn.exec("DELETE FROM changes WHERE team = ?1 AND seq <= ?2", &[self.team(), new_floor.into()])?;
        self.conn.exec(
            "INSERT INTO teams (team, head_seq, floor_seq) VALUES (?1, ?2, ?3)
             ON CONFLICT (team) DO UPDATE SET floor_seq = excluded.floor_seq",
            &[self.team(), head.into(), new_floor.into()],
        )?;
        self.head = Some((head, new_floor));
        Ok(())
    }
}
