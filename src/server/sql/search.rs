//! The search index in SQL, one flavour per database: an FTS5 table keyed
//! by the message row's rowid on SQLite, a `tsvector` column with a GIN
//! index on PostgreSQL. Written to in the push transaction (`SqlTx::write`)
//! so a search sees exactly what a pull sees.

use super::{Access, Backend, Conn, Dialect, SqlStore, Val};
use crate::model::{Message, MessageId, ThreadId};
use crate::server::core::{StoreError, TeamId};
use crate::server::search::{self, Query};

/// Indexes a message row that was just inserted (or edited).
pub(super) fn index<C: Conn + ?Sized>(conn: &mut C, team: &Val, thread: &Val, m: &Message) -> Result<(), StoreError> {
    let text = search::message_text(m);
    match conn.dialect() {
        Dialect::Sqlite => {
            conn.exec(
                "INSERT INTO message_search (rowid, text)
                 SELECT rowid, ?4 FROM messages WHERE team = ?1 AND thread = ?2 AND id = ?3",
                &[team.clone(), thread.clone(), m.id.as_str().into(), text.into()],
            )?;
        }
        Dialect::Postgres => {
            conn.exec(
                "UPDATE messages SET search = to_tsvector('english', ?4) WHERE team = ?1 AND thread = ?2 AND id = ?3",
                &[team.clone(), thread.clone(), m.id.as_str().into(), text.into()],
            )?;
        }
    }
    Ok(())
}

/// Takes a message out of the index (deleted, or about to be re-indexed).
pub(super) fn unindex<C: Conn + ?Sized>(
    conn: &mut C,
    team: &Val,
    thread: &Val,
    id: &MessageId,
) -> Result<(), StoreError> {
    let sql = match conn.dialect() {
        Dialect::Sqlite => {
            "DELETE FROM message_search WHERE rowid =
             (SELECT rowid FROM messages WHERE team = ?1 AND thread = ?2 AND id = ?3)"
        }
        Dialect::Postgres => "UPDATE messages SET search = NULL WHERE team = ?1 AND thread = ?2 AND id = ?3",
    };
    conn.exec(sql, &[team.clone(), thread.clone(), id.as_str().into()])?;
    Ok(())
}

/// Rows indexed per transaction while backfilling.
const BACKFILL_BATCH: usize = 2000;

/// Indexes the messages stored before the index existed, if that is still
/// to do. Runs when a server opens the database, in batches of one
/// transaction each (`tx` runs one); idempotent, so two servers starting
/// together on one PostgreSQL database only repeat work.
pub fn backfill<B: Backend>(store: &SqlStore<B>) -> Result<(), StoreError> {
    let mut after: (String, String, String) = Default::default();
    let mut done = 0usize;
    loop {
        let more = store.0.transaction(Access::Write, |conn| {
            if conn.query("SELECT pending FROM search_backfill", &[])?.is_empty() {
                return Ok(false);
            }
            let rows = conn.query(
                "SELECT team, thread, id, body FROM messages
                 WHERE deleted = 0 AND (team, thread, id) > (?1, ?2, ?3)
                 ORDER BY team, thread, id LIMIT ?4",
                &[after.0.as_str().into(), after.1.as_str().into(), after.2.as_str().into(), BACKFILL_BATCH.into()],
            )?;
            let last = rows.len() < BACKFILL_BATCH;
            for r in rows {
                let mut r = r.into_iter();
                let (team, thread, id) = (r.next().unwrap(), r.next().unwrap(), r.next().unwrap());
                let body = r.next().unwrap().text()?;
                let m: Message = serde_json::from_str(&body)
                    .map_err(|e| StoreError::new(format!("stored JSON is unreadable: {e}")))?;
                if conn.dialect() == Dialect::Sqlite {
                    unindex(conn, &team, &thread, &m.id)?;
                }
                index(conn, &team, &thread, &m)?;
                after = (team.text()?, thread.text()?, id.text()?);
                done += 1;
            }
            if last {
                conn.exec("DELETE FROM search_backfill", &[])?;
            }
            Ok(!last)
        })?;
        if !more {
            break;
        }
        tracing::info!(messages = done, "indexing stored messages for search");
    }
    if done > 0 {
        tracing::info!(messages = done, "search index ready");
    }
    Ok(())
}

/// Matches ranked, at most: the newest this many of a team's matches (all
/// of them for any but its commonest words). Ranking every match of a word
/// in a fifth of a million messages costs a fifth of a second; a reader
/// looking for where something was discussed wants the best of the recent
/// ones.
pub const CANDIDATES: usize = 1000;

/// The best `limit` matches of `q` among the team's messages: (thread,
/// message) pairs, best first, ranked among the team's newest
/// [`CANDIDATES`] matches.
pub(super) fn matches(
    conn: &mut dyn Conn,
    team: &TeamId,
    q: &Query,
    limit: usize,
) -> Result<Vec<(ThreadId, MessageId)>, StoreError> {
    let rows = match conn.dialect() {
        // FTS5 streams the matches newest first (by rowid: the order rows
        // were written), the team's are kept, and the stream stops after
        // the candidates; only those are scored.
        Dialect::Sqlite => conn.query(
            "SELECT m.thread, m.id FROM (
                 SELECT s.rowid AS r, s.score FROM (
                     SELECT rowid, bm25(message_search) AS score FROM message_search
                     WHERE message_search MATCH ?2 ORDER BY rowid DESC) s
                 JOIN messages m ON m.rowid = s.rowid
                 WHERE m.team = ?1 AND m.deleted = 0 LIMIT ?4) c
             JOIN messages m ON m.rowid = c.r
             ORDER BY c.score LIMIT ?3",
            &[team.as_str().into(), q.fts5().into(), limit.into(), CANDIDATES.into()],
        )?,
        // The GIN index finds the matches; only the first candidates are
        // read and ranked.
        Dialect::Postgres => conn.query(
            "SELECT c.thread, c.id FROM (
                 SELECT m.thread, m.id, m.pos, ts_rank(m.search, q) AS score
                 FROM messages m, to_tsquery('english', ?2) q
                 WHERE m.team = ?1 AND m.deleted = 0 AND m.search @@ q LIMIT ?4) c
             ORDER BY c.score DESC, c.thread, c.pos LIMIT ?3",
            &[team.as_str().into(), q.tsquery().into(), limit.into(), CANDIDATES.into()],
        )?,
    };
    rows.into_iter()
        .map(|r| {
            let mut r = r.into_iter();
            let bad = |e: crate::model::IdError| StoreError::new(format!("stored id: {e}"));
            let t = ThreadId::new(r.next().unwrap().text()?).map_err(bad)?;
            let m = MessageId::new(r.next().unwrap().text()?).map_err(bad)?;
            Ok((t, m))
        })
        .collect()
}
