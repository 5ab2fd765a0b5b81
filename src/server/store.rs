//! The storage seam the HTTP layer sees: the [`Store`] trait, tokens, and
//! the one in-memory store. The databases are in `sql` (one store over
//! SQLite, embedded by default, and PostgreSQL, to scale out).
//!
//! Calls are blocking; the HTTP layer runs them on tokio's blocking pool.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::merge::{Doc, Head, Located, ThreadView};
use crate::model::{Message, MessageId, ThreadId};
use crate::ops::Effect;
use crate::server::core::{StoreError, TeamId, Tx};
use crate::server::web_store::WebStore;
use crate::wire::{Change, ClientId};

/// A transaction body: runs against one team's data; an error rolls back.
pub type TxBody<'a> = &'a mut dyn FnMut(&mut dyn Tx) -> Result<(), StoreError>;

pub trait Store: Send + Sync + 'static {
    /// Runs `body` in one transaction on `team`'s data and commits if it
    /// returns Ok. `write`: the body may write (it then holds the team's write
    /// lock). Returns the team's new log head if the body wrote changes.
    /// ([`StoreExt::run`] is the form that returns the body's result.)
    fn transact(&self, team: &TeamId, write: bool, body: TxBody<'_>) -> Result<Option<u64>, StoreError>;
    fn insert_token(&self, id: &str, team: &TeamId, hash: &str, now: i64) -> Result<(), StoreError>;
    /// The team of a live (not revoked) token, by the token's hash.
    fn team_for_token(&self, hash: &str) -> Result<Option<TeamId>, StoreError>;
    fn list_tokens(&self) -> Result<Vec<TokenInfo>, StoreError>;
    fn revoke_tokens(&self, id_prefix: &str, now: i64) -> Result<Vec<TokenInfo>, StoreError>;
    /// Keeps only the newest `keep` changes of a team's log.
    fn compact(&self, team: &TeamId, keep: u64) -> Result<(), StoreError>;
    /// The web pages' queries (thread list, search, sessions, share
    /// links), if this store serves them: the SQL stores do.
    fn web(&self) -> Option<&dyn WebStore> {
        None
    }
}

/// What every store can do given [`Store::transact`].
pub trait StoreExt: Store {
    /// Runs `f` in one transaction (see [`Store::transact`]) and returns its
    /// result, with the team's new log head if it wrote changes.
    fn run<R>(
        &self,
        team: &TeamId,
        write: bool,
        mut f: impl FnMut(&mut dyn Tx) -> Result<R, StoreError>,
    ) -> Result<(R, Option<u64>), StoreError> {
        let mut out = None;
        let head = self.transact(team, write, &mut |tx| {
            out = Some(f(tx)?);
            Ok(())
        })?;
        Ok((out.expect("a committed transaction ran its body"), head))
    }
}

impl<S: Store + ?Sized> StoreExt for S {}

/// A bearer token as listed (never the secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: String,
    pub team: TeamId,
    pub created: i64,
    pub revoked: Option<i64>,
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

/// The in-memory store shared between threads (nothing is persisted).
impl Store for Mutex<MemStore> {
    fn transact(&self, team: &TeamId, _write: bool, body: TxBody<'_>) -> Result<Option<u64>, StoreError> {
        let mut data = self.lock().unwrap_or_else(|e| e.into_inner());
        // Run on a copy of the team so that an error rolls back.
        let mut copy = data.tx(team).clone();
        let before = copy.head_seq()?;
        body(&mut copy)?;
        let after = copy.head_seq()?;
        *data.tx(team) = copy;
        Ok((after != before).then_some(after))
    }

    fn insert_token(&self, id: &str, team: &TeamId, hash: &str, now: i64) -> Result<(), StoreError> {
        let info = TokenInfo { id: id.into(), team: team.clone(), created: now, revoked: None };
        self.lock().unwrap_or_else(|e| e.into_inner()).tokens.push((info, hash.into()));
        Ok(())
    }

    fn team_for_token(&self, hash: &str) -> Result<Option<TeamId>, StoreError> {
        let data = self.lock().unwrap_or_else(|e| e.into_inner());
        Ok(data.tokens.iter().find(|(t, h)| h == hash && t.revoked.is_none()).map(|(t, _)| t.team.clone()))
    }

    fn list_tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        Ok(self.lock().unwrap_or_else(|e| e.into_inner()).tokens.iter().map(|(t, _)| t.clone()).collect())
    }

    fn revoke_tokens(&self, id_prefix: &str, now: i64) -> Result<Vec<TokenInfo>, StoreError> {
        let mut data = self.lock().unwrap_or_else(|e| e.into_inner());
        let mut hits = Vec::new();
        for (t, _) in data.tokens.iter_mut().filter(|(t, _)| t.id.starts_with(id_prefix) && t.revoked.is_none()) {
            t.revoked = Some(now);
            hits.push(t.clone());
        }
        Ok(hits)
    }

    fn compact(&self, team: &TeamId, keep: u64) -> Result<(), StoreError> {
        self.lock().unwrap_or_else(|e| e.into_inner()).compact(team, keep as usize);
        Ok(())
    }
}

/// The in-memory store: the simulator's and engine tests' server disk (used
/// directly, one team's [`Tx`] at a time), the HTTP tests' store (shared as
/// `Mutex<MemStore>`), and the reference the SQL stores are tested against.
/// Writes cannot fail, so there is no rollback within a team.
#[derive(Clone, Debug, Default)]
pub struct MemStore {
    teams: BTreeMap<TeamId, TeamData>,
    tokens: Vec<(TokenInfo, String)>,
}

#[derive(Clone, Debug, Default)]
pub struct TeamData {
    clients: HashMap<ClientId, u64>,
    threads: BTreeMap<ThreadId, Doc>,
    log: Vec<Change>,
    /// Sequence of the last change compacted away.
    floor: u64,
    /// Deleted messages, kept (as the SQL stores keep them) to be brought back.
    deleted: HashMap<(ThreadId, MessageId), Arc<Message>>,
}

impl MemStore {
    pub fn tx(&mut self, team: &TeamId) -> &mut TeamData {
        self.teams.entry(team.clone()).or_default()
    }

    /// Drops all but the newest `keep` changes of a team's log, so that older
    /// cursors must refetch.
    pub fn compact(&mut self, team: &TeamId, keep: usize) {
        let t = self.tx(team);
        let drop = t.log.len().saturating_sub(keep);
        if drop > 0 {
            t.floor = t.log[drop - 1].seq;
            t.log.drain(..drop);
        }
    }

    pub fn threads(&self, team: &TeamId) -> impl Iterator<Item = &Doc> {
        self.teams.get(team).into_iter().flat_map(|t| t.threads.values())
    }
}

fn no_error<T>(r: Result<T, std::convert::Infallible>) -> T {
    match r {
        Ok(v) => v,
        Err(never) => match never {},
    }
}

impl Tx for TeamData {
    fn last_mutation(&mut self, client: &ClientId) -> Result<u64, StoreError> {
        Ok(self.clients.get(client).copied().unwrap_or(0))
    }

    fn set_last_mutation(&mut self, client: &ClientId, id: u64) -> Result<(), StoreError> {
        self.clients.insert(client.clone(), id);
        Ok(())
    }

    fn thread_head(&mut self, t: &ThreadId) -> Result<Option<(u64, Head)>, StoreError> {
        Ok(self.threads.get(t).and_then(|d| {
            let mut view = d;
            no_error(view.head()).map(|h| (d.thread.v, h))
        }))
    }

    fn message(&mut self, t: &ThreadId, id: &MessageId) -> Result<Option<Located>, StoreError> {
        Ok(self.threads.get(t).and_then(|d| {
            let mut view = d;
            no_error(view.message(id))
        }))
    }

    fn tombstone(&mut self, t: &ThreadId, id: &MessageId) -> Result<Option<usize>, StoreError> {
        Ok(match self.threads.get(t) {
            Some(mut d) => no_error(d.tombstone(id)),
            None => None,
        })
    }

    fn scan_from(
        &mut self,
        t: &ThreadId,
        from: usize,
        keep: &mut dyn FnMut(&MessageId, Option<&MessageId>) -> bool,
    ) -> Result<usize, StoreError> {
        Ok(match self.threads.get(t) {
            Some(mut d) => no_error(d.scan_from(from, keep)),
            None => 0,
        })
    }

    fn write(&mut self, t: &ThreadId, version: u64, effect: &Effect, author: &ClientId) -> Result<u64, StoreError> {
        let doc = self.threads.entry(t.clone()).or_insert_with(|| Doc::empty(t.clone()));
        if let Effect::Delete { id } = effect
            && let Some(m) = doc.get(id)
        {
            self.deleted.insert((t.clone(), id.clone()), m.clone());
        }
        doc.apply_effect(effect).map_err(StoreError::new)?;
        debug_assert_eq!(doc.thread.v, version);
        let seq = self.log.last().map_or(self.floor, |c| c.seq) + 1;
        let mut change = Change::new(seq, t.clone(), version, effect.clone());
        change.author = Some(author.clone());
        self.log.push(change);
        Ok(seq)
    }

    fn head_seq(&mut self) -> Result<u64, StoreError> {
        Ok(self.log.last().map_or(self.floor, |c| c.seq))
    }

    fn log_floor(&mut self) -> Result<u64, StoreError> {
        Ok(self.floor)
    }

    fn changes_since(&mut self, after: u64, limit: usize) -> Result<Vec<Change>, StoreError> {
        let start = self.log.partition_point(|c| c.seq <= after);
        Ok(self.log[start..].iter().take(limit).cloned().collect())
    }

    fn thread_changes(&mut self, t: &ThreadId, after_version: u64, limit: usize) -> Result<Vec<Change>, StoreError> {
        Ok(self.log.iter().filter(|c| &c.thread_id == t && c.version > after_version).take(limit).cloned().collect())
    }

    fn doc(&mut self, t: &ThreadId) -> Result<Option<Doc>, StoreError> {
        Ok(self.threads.get(t).cloned())
    }

    fn kept_message(&mut self, t: &ThreadId, id: &MessageId) -> Result<Option<(Arc<Message>, bool)>, StoreError> {
        if let Some(m) = self.threads.get(t).and_then(|d| d.get(id)) {
            return Ok(Some((m.clone(), false)));
        }
        Ok(self.deleted.get(&(t.clone(), id.clone())).map(|m| (m.clone(), true)))
    }

    fn docs_after(&mut self, after: Option<&ThreadId>, limit: usize) -> Result<Vec<Doc>, StoreError> {
        use std::ops::Bound::{Excluded, Unbounded};
        let lower = after.map_or(Unbounded, Excluded);
        Ok(self.threads.range::<ThreadId, _>((lower, Unbounded)).take(limit).map(|(_, d)| d.clone()).collect())
    }
}
