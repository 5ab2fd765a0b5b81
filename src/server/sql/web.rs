//! [`WebStore`] in SQL: the thread list, search, thread pages, browser
//! sessions and share links, written once for both databases.

use super::{Access, Backend, Conn, SqlStore, Val, json_err, parse_message, search};
use crate::model::ThreadId;
use crate::server::core::{StoreError, TeamId};
use crate::server::search::{Query, message_text, snippet};
use crate::server::web_store::{
    ListCursor, PageMessage, SearchHit, Session, ShareInfo, ThreadPage, ThreadSummary, WebStore,
};

fn bad_id(e: crate::model::IdError) -> StoreError {
    StoreError::new(format!("stored id: {e}"))
}

fn team_of(v: Val) -> Result<TeamId, StoreError> {
    TeamId::new(v.text()?).map_err(|e| StoreError::new(e.to_string()))
}

fn opt_int(v: Val) -> Result<Option<i64>, StoreError> {
    match v {
        Val::Null => Ok(None),
        v => v.int().map(Some),
    }
}

const SHARE_COLUMNS: &str = "id, team, thread, created, expires, revoked";

fn share_row(r: Vec<Val>) -> Result<ShareInfo, StoreError> {
    let mut r = r.into_iter();
    Ok(ShareInfo {
        id: r.next().unwrap().text()?,
        team: team_of(r.next().unwrap())?,
        thread: ThreadId::new(r.next().unwrap().text()?).map_err(bad_id)?,
        created: r.next().unwrap().int()?,
        expires: opt_int(r.next().unwrap())?,
        revoked: opt_int(r.next().unwrap())?,
    })
}

/// Messages not deleted in a thread (the list's count).
const LIVE_COUNT: &str =
    "(SELECT count(*) FROM messages m WHERE m.team = t.team AND m.thread = t.thread AND m.deleted = 0)";

impl<B: Backend> WebStore for SqlStore<B> {
    fn threads(
        &self,
        team: &TeamId,
        before: Option<&ListCursor>,
        limit: usize,
    ) -> Result<Vec<ThreadSummary>, StoreError> {
        self.0.transaction(Access::Read, |c| {
            let rows = match before {
                None => c.query(
                    &format!(
                        "SELECT t.thread, t.title, t.updated, {LIVE_COUNT} FROM threads t WHERE t.team = ?1
                         ORDER BY t.updated DESC, t.thread DESC LIMIT ?2"
                    ),
                    &[team.as_str().into(), limit.into()],
                )?,
                Some(cur) => c.query(
                    &format!(
                        "SELECT t.thread, t.title, t.updated, {LIVE_COUNT} FROM threads t
                         WHERE t.team = ?1 AND (t.updated < ?2 OR (t.updated = ?2 AND t.thread < ?3))
                         ORDER BY t.updated DESC, t.thread DESC LIMIT ?4"
                    ),
                    &[team.as_str().into(), Val::Int(cur.updated), cur.thread.as_str().into(), limit.into()],
                )?,
            };
            rows.into_iter()
                .map(|r| {
                    let mut r = r.into_iter();
                    Ok(ThreadSummary {
                        id: ThreadId::new(r.next().unwrap().text()?).map_err(bad_id)?,
                        title: r.next().unwrap().text()?,
                        updated: r.next().unwrap().int()?,
                        messages: r.next().unwrap().int()? as usize,
                    })
                })
                .collect()
        })
    }

    fn search(&self, team: &TeamId, q: &Query, limit: usize) -> Result<Vec<SearchHit>, StoreError> {
        if q.is_empty() {
            return Ok(Vec::new());
        }
        self.0.transaction(Access::Read, |c| {
            let found = search::matches(c, team, q, limit)?;
            let mut hits = Vec::with_capacity(found.len());
            for (thread, id) in found {
                let mut rows = c.query(
                    "SELECT m.body, t.title FROM messages m JOIN threads t ON t.team = m.team AND t.thread = m.thread
                     WHERE m.team = ?1 AND m.thread = ?2 AND m.id = ?3",
                    &[team.as_str().into(), thread.as_str().into(), id.as_str().into()],
                )?;
                let Some(r) = rows.pop() else { continue };
                let mut r = r.into_iter();
                let message = parse_message(r.next().unwrap())?;
                let title = r.next().unwrap().text()?;
                let text = message_text(&message);
                hits.push(SearchHit {
                    thread,
                    title,
                    message: id,
                    role: message.role.clone(),
                    snippet: snippet(&text, q),
                });
            }
            Ok(hits)
        })
    }

    fn thread_page(
        &self,
        team: &TeamId,
        thread: &ThreadId,
        from: usize,
        limit: usize,
    ) -> Result<Option<ThreadPage>, StoreError> {
        self.0.transaction(Access::Read, |c| {
            let mut rows = c.query(
                &format!(
                    "SELECT t.version, t.created, t.updated, t.title, t.env, {LIVE_COUNT} FROM threads t
                     WHERE t.team = ?1 AND t.thread = ?2"
                ),
                &[team.as_str().into(), thread.as_str().into()],
            )?;
            let Some(r) = rows.pop() else { return Ok(None) };
            let mut r = r.into_iter();
            let version = r.next().unwrap().int()? as u64;
            let created = r.next().unwrap().int()?;
            let updated = r.next().unwrap().int()?;
            let title = r.next().unwrap().text()?;
            let env = serde_json::from_str(&r.next().unwrap().text()?).map_err(json_err)?;
            let total = r.next().unwrap().int()? as usize;
            let rows = c.query(
                "SELECT m.body, COALESCE(c.machine, m.author) FROM messages m
                 LEFT JOIN clients c ON c.team = m.team AND c.client = m.author
                 WHERE m.team = ?1 AND m.thread = ?2 AND m.deleted = 0
                 ORDER BY m.pos LIMIT ?3 OFFSET ?4",
                &[team.as_str().into(), thread.as_str().into(), limit.into(), from.into()],
            )?;
            let messages = rows
                .into_iter()
                .map(|r| {
                    let mut r = r.into_iter();
                    Ok(PageMessage {
                        message: parse_message(r.next().unwrap())?,
                        author: r.next().unwrap().opt_text()?,
                    })
                })
                .collect::<Result<_, StoreError>>()?;
            Ok(Some(ThreadPage { id: thread.clone(), title, version, created, updated, env, total, messages }))
        })
    }

    fn token_by_hash(&self, hash: &str) -> Result<Option<(String, TeamId)>, StoreError> {
        self.0.transaction(Access::Read, |c| {
            let rows = c.query("SELECT id, team FROM tokens WHERE hash = ?1 AND revoked IS NULL", &[hash.into()])?;
            match rows.into_iter().next() {
                None => Ok(None),
                Some(r) => {
                    let mut r = r.into_iter();
                    Ok(Some((r.next().unwrap().text()?, team_of(r.next().unwrap())?)))
                }
            }
        })
    }

    fn create_session(
        &self,
        hash: &str,
        team: &TeamId,
        token_id: &str,
        csrf: &str,
        now: i64,
        expires: i64,
    ) -> Result<(), StoreError> {
        self.0.transaction(Access::Write, |c| {
            // Sessions that ended are cleared as new ones begin.
            c.exec("DELETE FROM web_sessions WHERE expires <= ?1", &[Val::Int(now)])?;
            c.exec(
                "INSERT INTO web_sessions (hash, team, token_id, csrf, created, expires) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                &[hash.into(), team.as_str().into(), token_id.into(), csrf.into(), Val::Int(now), Val::Int(expires)],
            )?;
            Ok(())
        })
    }

    fn session(&self, hash: &str, now: i64) -> Result<Option<Session>, StoreError> {
        self.0.transaction(Access::Read, |c| {
            let rows = c.query(
                "SELECT s.team, s.csrf FROM web_sessions s JOIN tokens k ON k.id = s.token_id
                 WHERE s.hash = ?1 AND s.expires > ?2 AND k.revoked IS NULL AND k.team = s.team",
                &[hash.into(), Val::Int(now)],
            )?;
            match rows.into_iter().next() {
                None => Ok(None),
                Some(r) => {
                    let mut r = r.into_iter();
                    Ok(Some(Session { team: team_of(r.next().unwrap())?, csrf: r.next().unwrap().text()? }))
                }
            }
        })
    }

    fn delete_session(&self, hash: &str) -> Result<(), StoreError> {
        self.0.transaction(Access::Write, |c| {
            c.exec("DELETE FROM web_sessions WHERE hash = ?1", &[hash.into()]).map(drop)
        })
    }

    fn create_share(&self, s: &ShareInfo, hash: &str) -> Result<(), StoreError> {
        self.0.transaction(Access::Write, |c| {
            c.exec(
                "INSERT INTO shares (id, team, thread, hash, created, expires, revoked) VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL)",
                &[
                    s.id.as_str().into(),
                    s.team.as_str().into(),
                    s.thread.as_str().into(),
                    hash.into(),
                    Val::Int(s.created),
                    s.expires.map_or(Val::Null, Val::Int),
                ],
            )?;
            Ok(())
        })
    }

    fn share(&self, hash: &str, now: i64) -> Result<Option<(TeamId, ThreadId)>, StoreError> {
        self.0.transaction(Access::Read, |c| {
            let rows = c.query(
                "SELECT team, thread FROM shares WHERE hash = ?1 AND revoked IS NULL AND (expires IS NULL OR expires > ?2)",
                &[hash.into(), Val::Int(now)],
            )?;
            match rows.into_iter().next() {
                None => Ok(None),
                Some(r) => {
                    let mut r = r.into_iter();
                    let team = team_of(r.next().unwrap())?;
                    Ok(Some((team, ThreadId::new(r.next().unwrap().text()?).map_err(bad_id)?)))
                }
            }
        })
    }

    fn shares(&self, team: Option<&TeamId>, thread: Option<&ThreadId>) -> Result<Vec<ShareInfo>, StoreError> {
        self.0.transaction(Access::Read, |c| list(c, team, thread))
    }

    fn revoke_shares(&self, team: Option<&TeamId>, prefix: &str, now: i64) -> Result<Vec<ShareInfo>, StoreError> {
        self.0.transaction(Access::Write, |c| {
            let hits: Vec<ShareInfo> =
                list(c, team, None)?.into_iter().filter(|s| s.id.starts_with(prefix) && s.revoked.is_none()).collect();
            for s in &hits {
                c.exec("UPDATE shares SET revoked = ?2 WHERE id = ?1", &[s.id.as_str().into(), Val::Int(now)])?;
            }
            Ok(hits)
        })
    }
}

fn list(c: &mut dyn Conn, team: Option<&TeamId>, thread: Option<&ThreadId>) -> Result<Vec<ShareInfo>, StoreError> {
    let rows = c.query(
        &format!(
            "SELECT {SHARE_COLUMNS} FROM shares WHERE (?1 = '' OR team = ?1) AND (?2 = '' OR thread = ?2)
             ORDER BY created, id"
        ),
        &[team.map_or("", |t| t.as_str()).into(), thread.map_or("", |t| t.as_str()).into()],
    )?;
    rows.into_iter().map(share_row).collect()
}
