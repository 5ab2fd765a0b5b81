//! What the web pages ask of a store beyond sync: the thread list, search,
//! a thread as a page, browser sessions and share links. The SQL stores
//! implement it (`sql/web.rs`); the in-memory store has no web pages.
//!
//! Sessions and share links are stored as hashes of their secrets (like
//! tokens): a copy of the database lets no one in.

use std::sync::Arc;

use crate::model::{Message, MessageId, ThreadId};
use crate::server::core::{StoreError, TeamId};
use crate::server::search::Query;

/// A thread as the list shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadSummary {
    pub id: ThreadId,
    pub title: String,
    /// When it last changed (ms since the epoch, the server's clock).
    pub updated: i64,
    /// Messages not deleted.
    pub messages: usize,
}

/// Where a page of the thread list starts: after this thread in the list's
/// order (newest change first, then by id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListCursor {
    pub updated: i64,
    pub thread: ThreadId,
}

impl ListCursor {
    /// `<updated>.<thread>`, as it appears in `?before=`.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.updated, self.thread)
    }

    pub fn decode(s: &str) -> Option<ListCursor> {
        let (u, t) = s.split_once('.')?;
        Some(ListCursor { updated: u.parse().ok()?, thread: ThreadId::new(t).ok()? })
    }
}

/// One search result: the message and the text around the match (see
/// [`crate::server::search::snippet`] for its markers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchHit {
    pub thread: ThreadId,
    pub title: String,
    pub message: MessageId,
    pub role: String,
    pub snippet: String,
}

/// A message on a thread page.
#[derive(Clone, Debug)]
pub struct PageMessage {
    pub message: Arc<Message>,
    /// The machine that pushed it (its client's machine name, else the
    /// client's id); None for messages stored before authors were kept.
    pub author: Option<String>,
}

/// A thread as a page: its head and its messages from `from` on (counting
/// messages not deleted).
#[derive(Clone, Debug)]
pub struct ThreadPage {
    pub id: ThreadId,
    pub title: String,
    pub version: u64,
    pub created: i64,
    pub updated: i64,
    pub env: serde_json::Value,
    /// Messages not deleted, in all.
    pub total: usize,
    pub messages: Vec<PageMessage>,
}

/// A signed-in browser.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub team: TeamId,
    /// The session's anti-forgery token, echoed by every form.
    pub csrf: String,
}

/// A share link as listed (never its secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareInfo {
    pub id: String,
    pub team: TeamId,
    pub thread: ThreadId,
    pub created: i64,
    pub expires: Option<i64>,
    pub revoked: Option<i64>,
}

impl ShareInfo {
    pub fn live(&self, now: i64) -> bool {
        self.revoked.is_none() && self.expires.is_none_or(|e| e > now)
    }
}

pub trait WebStore: Send + Sync {
    /// A page of the team's threads, newest change first.
    fn threads(
        &self,
        team: &TeamId,
        before: Option<&ListCursor>,
        limit: usize,
    ) -> Result<Vec<ThreadSummary>, StoreError>;
    /// The best matches of `q` among the team's messages, best first.
    fn search(&self, team: &TeamId, q: &Query, limit: usize) -> Result<Vec<SearchHit>, StoreError>;
    /// A thread with its messages from the `from`th on (at most `limit`);
    /// None if the team has no such thread.
    fn thread_page(
        &self,
        team: &TeamId,
        thread: &ThreadId,
        from: usize,
        limit: usize,
    ) -> Result<Option<ThreadPage>, StoreError>;
    /// The id and team of a live (not revoked) token, by its hash.
    fn token_by_hash(&self, hash: &str) -> Result<Option<(String, TeamId)>, StoreError>;
    fn create_session(
        &self,
        hash: &str,
        team: &TeamId,
        token_id: &str,
        csrf: &str,
        now: i64,
        expires: i64,
    ) -> Result<(), StoreError>;
    /// A session by the hash of its cookie: None once it expired, was
    /// signed out, or its token was revoked.
    fn session(&self, hash: &str, now: i64) -> Result<Option<Session>, StoreError>;
    fn delete_session(&self, hash: &str) -> Result<(), StoreError>;
    fn create_share(&self, share: &ShareInfo, hash: &str) -> Result<(), StoreError>;
    /// The team and thread of a live share link, by the hash of its secret.
    fn share(&self, hash: &str, now: i64) -> Result<Option<(TeamId, ThreadId)>, StoreError>;
    /// Share links, of one team and thread when given, oldest first.
    fn shares(&self, team: Option<&TeamId>, thread: Option<&ThreadId>) -> Result<Vec<ShareInfo>, StoreError>;
    /// Revokes the live links whose id starts with `prefix` (of one team
    /// when given); returns them.
    fn revoke_shares(&self, team: Option<&TeamId>, prefix: &str, now: i64) -> Result<Vec<ShareInfo>, StoreError>;
}
