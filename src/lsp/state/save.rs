//! Writing one step's saves: each `Save` as the rows it changes.

use super::*;

/// Conflict bases are loaded from the bodies of the same transaction.
pub(super) struct TxBodies<'a>(&'a Transaction<'a>);

impl Bodies for TxBodies<'_> {
    fn body(&self, thread: &ThreadId, id: &MessageId, hash: ContentHash) -> Option<Value> {
        body(self.0, thread, id, hash)
    }
}

pub(super) fn ensure_thread(tx: &Transaction<'_>, id: &ThreadId) -> Result<(), String> {
    tx.prepare_cached("INSERT OR IGNORE INTO threads (id) VALUES (?1)")
        .and_then(|mut s| s.execute(params![id.as_str()]))
        .map(|_| ())
        .map_err(err)
}

pub(super) fn insert_base_row(
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

pub(super) fn pos_of(tx: &Transaction<'_>, thread: &ThreadId, id: &MessageId) -> Result<Option<f64>, String> {
    tx.prepare_cached("SELECT pos FROM base WHERE thread = ?1 AND id = ?2")
        .and_then(|mut s| s.query_row(params![thread.as_str(), id.as_str()], |r| r.get(0)).optional())
        .map_err(err)
}

/// Gives a thread's base rows the positions 1, 2, 3, … again (when repeated
/// inserts between the same two rows ran out of room between them).
pub(super) fn renumber(tx: &Transaction<'_>, thread: &ThreadId) -> Result<(), String> {
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

pub(super) fn apply_one(tx: &Transaction<'_>, s: &Save) -> Result<(), String> {
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
                        stamp = ?7, own = ?8, dirty = ?9, superseded = ?10, removed = ?11 WHERE id = ?1",
            )
            .and_then(|mut s| {
                s.execute(params![
                    thread.as_str(),
                    match file.kind {
                        FileKind::Json => "json",
                        FileKind::Jsonl => "jsonl",
                        FileKind::Native => "native",
                    },
                    file.title,
                    hex(file.env),
                    file.created,
                    extra,
                    stamp,
                    file.own.map(|h| format!("{h:016x}")),
                    file.dirty,
                    file.superseded as i64,
                    file.removed
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
