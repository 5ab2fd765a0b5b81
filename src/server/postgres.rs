//! PostgreSQL backend: several `threadsync serve` processes share one
//! database. Writes to a team take that team's row lock, so its change log
//! stays gap-free and ordered across servers; a commit that changed the log
//! sends `NOTIFY threadsync, '<team>:<head>'`, which every server's listener
//! turns into a wake-up of the long-polls it holds for that team.

use std::collections::HashMap;
use std::error::Error;
use std::sync::Mutex;

use bytes::BytesMut;
use postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use postgres::{Client, NoTls, Statement};

use crate::server::core::{StoreError, TeamId};
use crate::server::sql::{self, Conn, SqlTx, TokenInfo, Val};
use crate::server::store::{Store, TxBody};

/// The channel `NOTIFY` uses.
pub const CHANNEL: &str = "threadsync";
const POOL: usize = 8;

struct Pooled {
    client: Client,
    statements: HashMap<String, Statement>,
}

pub struct PgStore {
    url: String,
    pool: Mutex<Vec<Pooled>>,
}

fn err(e: postgres::Error) -> StoreError {
    use postgres::error::SqlState;
    let transient = e.is_closed()
        || matches!(e.code(), Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED);
    StoreError { message: format!("postgres: {e}"), transient }
}

impl ToSql for Val {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self {
            Val::Null => Ok(IsNull::Yes),
            Val::Int(i) => i.to_sql(ty, out),
            Val::Text(s) => s.as_str().to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        <i64 as ToSql>::accepts(ty) || <&str as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

/// One transaction plus the connection's prepared statements.
struct PgConn<'a, 'c> {
    tx: &'a mut postgres::Transaction<'c>,
    statements: &'a mut HashMap<String, Statement>,
}

impl PgConn<'_, '_> {
    fn statement(&mut self, sql: &str) -> Result<Statement, StoreError> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        // Both dialects number their placeholders; PostgreSQL spells them `$n`.
        let s = self.tx.prepare(&sql.replace('?', "$")).map_err(err)?;
        self.statements.insert(sql.to_string(), s.clone());
        Ok(s)
    }
}

fn refs(params: &[Val]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

impl Conn for PgConn<'_, '_> {
    fn exec(&mut self, sql: &str, params: &[Val]) -> Result<u64, StoreError> {
        let stmt = self.statement(sql)?;
        self.tx.execute(&stmt, &refs(params)).map_err(err)
    }

    fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Vec<Val>>, StoreError> {
        let stmt = self.statement(sql)?;
        let rows = self.tx.query(&stmt, &refs(params)).map_err(err)?;
        rows.iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| match *row.columns()[i].type_() {
                        Type::INT8 | Type::INT4 => Ok(row.get::<_, Option<i64>>(i).map_or(Val::Null, Val::Int)),
                        Type::TEXT | Type::VARCHAR => Ok(row.get::<_, Option<String>>(i).map_or(Val::Null, Val::Text)),
                        ref t => Err(StoreError::new(format!("unexpected column type {t}"))),
                    })
                    .collect()
            })
            .collect()
    }
}

impl PgStore {
    /// Connects and applies the schema (idempotent; safe with several servers).
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let store = PgStore { url: url.to_string(), pool: Mutex::new(Vec::new()) };
        store.with(|conn| {
            // Serialise schema creation between servers starting together.
            conn.exec("SELECT pg_advisory_xact_lock(7420)", &[])?;
            for stmt in sql::SCHEMA {
                conn.exec(stmt, &[])?;
            }
            Ok(())
        })?;
        Ok(store)
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn connect(&self) -> Result<Pooled, StoreError> {
        let client = Client::connect(&self.url, NoTls).map_err(err)?;
        Ok(Pooled { client, statements: HashMap::new() })
    }

    /// Runs `f` in a transaction on a pooled connection.
    fn with<R>(&self, f: impl FnOnce(&mut PgConn<'_, '_>) -> Result<R, StoreError>) -> Result<R, StoreError> {
        let pooled = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut pooled = match pooled {
            Some(p) if !p.client.is_closed() => p,
            _ => self.connect()?,
        };
        let result = (|| {
            let Pooled { client, statements } = &mut pooled;
            let mut tx = client.transaction().map_err(err)?;
            let r = f(&mut PgConn { tx: &mut tx, statements })?;
            tx.commit().map_err(err)?;
            Ok(r)
        })();
        if !pooled.client.is_closed() {
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            if pool.len() < POOL {
                pool.push(pooled);
            }
        }
        result
    }
}

/// The blocking client shuts its connection down on a runtime of its own,
/// which may not start on a thread of tokio's (where the last reference
/// to the store usually goes: a server's state at shutdown): the pooled
/// connections are closed on a plain thread instead.
impl Drop for PgStore {
    fn drop(&mut self) {
        let pool = std::mem::take(self.pool.get_mut().unwrap_or_else(|e| e.into_inner()));
        if pool.is_empty() {
            return;
        }
        let _ = std::thread::Builder::new().name("pg-close".into()).spawn(move || drop(pool)).map(|t| t.join());
    }
}

impl Store for PgStore {
    fn transact(&self, team: &TeamId, write: bool, body: TxBody<'_>) -> Result<Option<u64>, StoreError> {
        self.with(|conn| {
            if write {
                // The team's write lock, held to commit.
                conn.exec(
                    "INSERT INTO teams (team) VALUES (?1) ON CONFLICT (team) DO NOTHING",
                    &[team.as_str().into()],
                )?;
                conn.query("SELECT head_seq FROM teams WHERE team = ?1 FOR UPDATE", &[team.as_str().into()])?;
            }
            let mut tx = SqlTx::new(conn, team);
            body(&mut tx)?;
            let head = tx.finish()?;
            if let Some(head) = head {
                // Delivered to listeners when (and only if) this commits.
                conn.exec("SELECT pg_notify(?1, ?2)", &[CHANNEL.into(), format!("{team}:{head}").into()])?;
            }
            Ok(head)
        })
    }

    fn insert_token(&self, id: &str, team: &TeamId, hash: &str, now: i64) -> Result<(), StoreError> {
        self.with(|c| sql::insert_token(c, id, team, hash, now))
    }

    fn team_for_token(&self, hash: &str) -> Result<Option<TeamId>, StoreError> {
        self.with(|c| sql::team_for_token(c, hash))
    }

    fn list_tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        self.with(|c| sql::list_tokens(c))
    }

    fn revoke_tokens(&self, id_prefix: &str, now: i64) -> Result<Vec<TokenInfo>, StoreError> {
        self.with(|c| sql::revoke_tokens(c, id_prefix, now))
    }

    fn compact(&self, team: &TeamId, keep: u64) -> Result<(), StoreError> {
        self.with(|c| SqlTx::new(c, team).compact(keep))
    }
}
