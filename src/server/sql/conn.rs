//! The seam between the SQL store and a database: values, a transaction's
//! statements, what a transaction may do, and the backend that runs them.

use crate::server::core::{StoreError, TeamId};

/// A value crossing into or out of SQL. Integers are 64-bit everywhere.
#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    Null,
    Int(i64),
    Text(String),
}

impl Val {
    pub fn int(&self) -> Result<i64, StoreError> {
        match self {
            Val::Int(i) => Ok(*i),
            other => Err(StoreError::new(format!("expected an integer, got {other:?}"))),
        }
    }

    pub fn text(self) -> Result<String, StoreError> {
        match self {
            Val::Text(s) => Ok(s),
            other => Err(StoreError::new(format!("expected text, got {other:?}"))),
        }
    }

    pub fn opt_text(self) -> Result<Option<String>, StoreError> {
        match self {
            Val::Null => Ok(None),
            v => v.text().map(Some),
        }
    }
}

impl From<&str> for Val {
    fn from(s: &str) -> Val {
        Val::Text(s.to_string())
    }
}

impl From<String> for Val {
    fn from(s: String) -> Val {
        Val::Text(s)
    }
}

impl From<u64> for Val {
    fn from(i: u64) -> Val {
        Val::Int(i as i64)
    }
}

impl From<usize> for Val {
    fn from(i: usize) -> Val {
        Val::Int(i as i64)
    }
}

impl<T: Into<Val>> From<Option<T>> for Val {
    fn from(v: Option<T>) -> Val {
        v.map_or(Val::Null, Into::into)
    }
}

/// Which database a [`Conn`] talks to, for the little SQL that differs
/// (the search index).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// One open transaction of a backend. SQL uses `?1`, `?2`, … placeholders.
pub trait Conn {
    fn dialect(&self) -> Dialect;
    fn exec(&mut self, sql: &str, params: &[Val]) -> Result<u64, StoreError>;
    fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Vec<Val>>, StoreError>;
    /// SQL yielding the strings of the JSON array text bound to `?n` as
    /// rows, for `x IN (…)` over a list of any length in one statement.
    fn json_list(&self, n: usize) -> String;
}

/// What a transaction may do.
#[derive(Clone, Copy, Debug)]
pub enum Access<'a> {
    Read,
    /// Writes outside any team's data (tokens).
    Write,
    /// Writes to this team's data: its write lock is held to the commit, so
    /// its change log stays gap-free across servers.
    WriteTeam(&'a TeamId),
}

/// A database under [`SqlStore`]: connections and transactions.
pub trait Backend: Send + Sync + 'static {
    /// Runs `f` in one transaction, committed if it returns Ok and rolled
    /// back otherwise.
    fn transaction<R>(
        &self,
        access: Access<'_>,
        f: impl FnOnce(&mut dyn Conn) -> Result<R, StoreError>,
    ) -> Result<R, StoreError>;

    /// Inside the transaction that moved `team`'s log head to `head`, before
    /// its commit (PostgreSQL tells the other servers).
    fn log_moved(&self, _conn: &mut dyn Conn, _team: &TeamId, _head: u64) -> Result<(), StoreError> {
        Ok(())
    }
}
