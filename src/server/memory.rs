//! An in-memory store: the simulator's server disk, and a reference the SQL
//! stores are tested against. Writes cannot fail, so there is no rollback.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::merge::{Doc, Head, Located, ThreadView};
use crate::model::{Message, MessageId, ThreadId};
use crate::ops::Effect;
use crate::server::core::{StoreError, TeamId, Tx};
use crate::wire::{Change, ClientId};

#[derive(Clone, Debug, Default)]
pub struct MemStore {
    teams: BTreeMap<TeamId, TeamData>,
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

    fn write(&mut self, t: &ThreadId, version: u64, effect: &Effect) -> Result<u64, StoreError> {
        let doc = self.threads.entry(t.clone()).or_insert_with(|| Doc::empty(t.clone()));
        if let Effect::Delete { id } = effect
            && let Some(m) = doc.get(id)
        {
            self.deleted.insert((t.clone(), id.clone()), m.clone());
        }
        doc.apply_effect(effect).map_err(StoreError::new)?;
        debug_assert_eq!(doc.thread.v, version);
        let seq = self.log.last().map_or(self.floor, |c| c.seq) + 1;
        self.log.push(Change { seq, thread_id: t.clone(), version, effect: effect.clone() });
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
