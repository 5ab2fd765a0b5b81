//! Team tokens in SQL: stored as hashes, revoked by id prefix.

use super::{Conn, Val};
use crate::server::core::{StoreError, TeamId};
use crate::server::store::TokenInfo;

pub(super) fn insert_token(
    conn: &mut dyn Conn,
    id: &str,
    team: &TeamId,
    hash: &str,
    now: i64,
) -> Result<(), StoreError> {
    conn.exec(
        "INSERT INTO tokens (id, team, hash, created) VALUES (?1, ?2, ?3, ?4)",
        &[id.into(), team.as_str().into(), hash.into(), Val::Int(now)],
    )?;
    Ok(())
}

pub(super) fn team_for_token(conn: &mut dyn Conn, hash: &str) -> Result<Option<TeamId>, StoreError> {
    let rows = conn.query("SELECT team FROM tokens WHERE hash = ?1 AND revoked IS NULL", &[hash.into()])?;
    match rows.into_iter().next() {
        Some(r) => {
            Ok(Some(TeamId::new(r.into_iter().next().unwrap().text()?).map_err(|e| StoreError::new(e.to_string()))?))
        }
        None => Ok(None),
    }
}

pub(super) fn list_tokens(conn: &mut dyn Conn) -> Result<Vec<TokenInfo>, StoreError> {
    conn.query("SELECT id, team, created, revoked FROM tokens ORDER BY created, id", &[])?
        .into_iter()
        .map(|r| {
            let mut r = r.into_iter();
            Ok(TokenInfo {
                id: r.next().unwrap().text()?,
                team: TeamId::new(r.next().unwrap().text()?).map_err(|e| StoreError::new(e.to_string()))?,
                created: r.next().unwrap().int()?,
                revoked: match r.next().unwrap() {
                    Val::Null => None,
                    v => Some(v.int()?),
                },
            })
        })
        .collect()
}

/// Revokes the tokens whose id starts with `prefix`; returns them.
pub(super) fn revoke_tokens(conn: &mut dyn Conn, prefix: &str, now: i64) -> Result<Vec<TokenInfo>, StoreError> {
    let hits: Vec<TokenInfo> =
        list_tokens(conn)?.into_iter().filter(|t| t.id.starts_with(prefix) && t.revoked.is_none()).collect();
    for t in &hits {
        conn.exec("UPDATE tokens SET revoked = ?2 WHERE id = ?1", &[t.id.as_str().into(), Val::Int(now)])?;
    }
    Ok(hits)
}
