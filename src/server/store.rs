//! The storage seam: one trait, two databases (SQLite embedded by default,
//! PostgreSQL to scale out), plus the in-memory store for tests.
//!
//! Calls are blocking; the HTTP layer runs them on tokio's blocking pool.

use std::sync::Mutex;

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::server::core::{StoreError, TeamId, Tx};
use crate::server::memory::MemStore;
use crate::server::sql::TokenInfo;

/// A transaction body: runs against one team's data; an error rolls back.
pub type TxBody<'a> = &'a mut dyn FnMut(&mut dyn Tx) -> Result<(), StoreError>;

pub trait Store: Send + Sync + 'static {
    /// Runs `body` in one transaction on `team`'s data and commits if it
    /// returns Ok. `write`: the body may write (it then holds the team's write
    /// lock). Returns the team's new log head if the body wrote changes.
    fn transact(&self, team: &TeamId, write: bool, body: TxBody<'_>) -> Result<Option<u64>, StoreError>;
    fn insert_token(&self, id: &str, team: &TeamId, hash: &str, now: i64) -> Result<(), StoreError>;
    /// The team of a live (not revoked) token, by the token's hash.
    fn team_for_token(&self, hash: &str) -> Result<Option<TeamId>, StoreError>;
    fn list_tokens(&self) -> Result<Vec<TokenInfo>, StoreError>;
    fn revoke_tokens(&self, id_prefix: &str, now: i64) -> Result<Vec<TokenInfo>, StoreError>;
    /// Keeps only the newest `keep` changes of a team's log.
    fn compact(&self, team: &TeamId, keep: u64) -> Result<(), StoreError>;
}

/// Hash under which a token is stored; the token itself never is.
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A new token: `tsk_<id>_<secret>`. The id (10 characters) names it in
/// lists and revocations; the secret is 128 random bits.
pub fn new_token() -> (String, String) {
    let mut rng = rand::rng();
    let mut id = [0u8; 5];
    rng.fill_bytes(&mut id);
    let mut secret = [0u8; 16];
    rng.fill_bytes(&mut secret);
    let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let token = format!("tsk_{id}_{secret}");
    (id, token)
}

/// The in-memory store behind the trait (tests only: nothing is persisted).
#[derive(Default)]
pub struct MemoryStore {
    data: Mutex<(MemStore, Vec<(TokenInfo, String)>)>,
}

impl Store for MemoryStore {
    fn transact(&self, team: &TeamId, _write: bool, body: TxBody<'_>) -> Result<Option<u64>, StoreError> {
        let mut data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        // Run on a copy so that an error rolls back.
        let mut copy = data.0.clone();
        let tx = copy.tx(team);
        let before = tx.head_seq()?;
        body(tx)?;
        let after = tx.head_seq()?;
        data.0 = copy;
        Ok((after != before).then_some(after))
    }

    fn insert_token(&self, id: &str, team: &TeamId, hash: &str, now: i64) -> Result<(), StoreError> {
        let info = TokenInfo { id: id.into(), team: team.clone(), created: now, revoked: None };
        self.data.lock().unwrap_or_else(|e| e.into_inner()).1.push((info, hash.into()));
        Ok(())
    }

    fn team_for_token(&self, hash: &str) -> Result<Option<TeamId>, StoreError> {
        let data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        Ok(data.1.iter().find(|(t, h)| h == hash && t.revoked.is_none()).map(|(t, _)| t.team.clone()))
    }

    fn list_tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        Ok(self.data.lock().unwrap_or_else(|e| e.into_inner()).1.iter().map(|(t, _)| t.clone()).collect())
    }

    fn revoke_tokens(&self, id_prefix: &str, now: i64) -> Result<Vec<TokenInfo>, StoreError> {
        let mut data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        let mut hits = Vec::new();
        for (t, _) in data.1.iter_mut().filter(|(t, _)| t.id.starts_with(id_prefix) && t.revoked.is_none()) {
            t.revoked = Some(now);
            hits.push(t.clone());
        }
        Ok(hits)
    }

    fn compact(&self, team: &TeamId, keep: u64) -> Result<(), StoreError> {
        self.data.lock().unwrap_or_else(|e| e.into_inner()).0.compact(team, keep as usize);
        Ok(())
    }
}
