//! Reading a thread back: its base, operations and file view as the
//! engine kept them.

use super::*;

pub(super) fn parse_kind(s: &str) -> Result<FileKind, String> {
    match s {
        "json" => Ok(FileKind::Json),
        "jsonl" => Ok(FileKind::Jsonl),
        "native" => Ok(FileKind::Native),
        other => Err(format!("unknown file kind {other:?} in the state")),
    }
}

pub(super) fn parse_stamp(s: Option<&str>) -> Result<Option<Stamp>, String> {
    s.map(|s| serde_json::from_str(s).map_err(|e| format!("bad stamp in the state: {e}"))).transpose()
}

type ThreadRow =
    (i64, i64, String, String, String, String, String, i64, String, Option<String>, Option<String>, bool, i64, bool);

pub(super) fn load_thread(conn: &Connection, id: &ThreadId) -> Result<Option<StoredThread>, String> {
    let row: Option<ThreadRow> = conn
        .prepare_cached(
            "SELECT v, created, title, env, kind, f_title, f_env, f_created, f_extra, stamp, own, dirty, superseded, removed
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
                    r.get(13)?,
                ))
            })
            .optional()
        })
        .map_err(err)?;
    let Some((
        v,
        created,
        title,
        env,
        kind,
        f_title,
        f_env,
        f_created,
        f_extra,
        stamp,
        own,
        dirty,
        superseded,
        removed,
    )) = row
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
    file.removed = removed;
    Ok(Some(StoredThread { base: doc, ops, file: restored_file(&file), last_sync: None }))
}
