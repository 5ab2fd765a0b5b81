//! PostgreSQL backend: several `threadsync serve` processes share one
//! database. Writes to a team take that team's row lock, so its change log
//! stays gap-free and ordered across servers; a commit that changed the log
//! sends `NOTIFY threadsync, '<team>:<head>'`, which every server's listener
//! turns into a wake-up of the long-polls it holds for that team.
//!
//! Connections are tokio-postgres clients in a deadpool pool, driven by the
//! server's runtime. The store's calls are blocking (they run on tokio's
//! blocking pool, like SQLite's), so each statement waits for its answer
//! with `Handle::block_on`; opened outside a runtime (the `token` commands,
//! tests), the store brings a small runtime of its own.

use std::error::Error;
use std::future::Future;
use std::time::Duration;

use bytes::BytesMut;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio_postgres::NoTls;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

use crate::server::core::{StoreError, TeamId};
use crate::server::sql::{self, Access, Backend, Conn, Dialect, SqlStore, Val};

/// The channel `NOTIFY` uses.
pub const CHANNEL: &str = "threadsync";
const POOL: usize = 8;
/// Serialises schema migrations between servers starting together.
const MIGRATION_LOCK: i64 = 7420;

pub struct Postgres {
    url: String,
    pool: Pool,
    exec: Exec,
}

pub type PgStore = SqlStore<Postgres>;

/// Where the connections' futures run.
enum Exec {
    /// The server's runtime; calls come from its blocking pool.
    Ambient(tokio::runtime::Handle),
    /// No runtime around: one of the store's own.
    Own(tokio::runtime::Runtime),
}

impl Exec {
    fn block_on<F: Future>(&self, f: F) -> F::Output {
        match self {
            Exec::Ambient(h) => h.block_on(f),
            Exec::Own(rt) => rt.block_on(f),
        }
    }
}

fn err(e: tokio_postgres::Error) -> StoreError {
    use tokio_postgres::error::SqlState;
    let transient = e.is_closed()
        || matches!(e.code(), Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED);
    StoreError { message: format!("postgres: {e}"), transient }
}

fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => err(e),
        other => StoreError { message: format!("postgres pool: {other}"), transient: true },
    }
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

/// `?1` → `$1`: both dialects number their placeholders, PostgreSQL spells
/// them `$n`. Only a `?` followed by a digit outside a string literal is
/// one (a JSONB `?` operator is left alone).
fn dollar_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut in_string = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => in_string = !in_string,
            '?' if !in_string && chars.peek().is_some_and(char::is_ascii_digit) => {
                out.push('$');
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    out
}

/// One transaction on a pooled connection.
struct PgConn<'a> {
    client: &'a Object,
    exec: &'a Exec,
}

impl PgConn<'_> {
    fn statement(&self, sql: &str) -> Result<tokio_postgres::Statement, StoreError> {
        self.exec.block_on(self.client.prepare_cached(&dollar_placeholders(sql))).map_err(err)
    }

    fn batch(&self, sql: &str) -> Result<(), StoreError> {
        self.exec.block_on(self.client.batch_execute(sql)).map_err(err)
    }
}

fn refs(params: &[Val]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

impl Conn for PgConn<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn json_list(&self, n: usize) -> String {
        format!("SELECT jsonb_array_elements_text(?{n}::text::jsonb)")
    }

    fn exec(&mut self, sql: &str, params: &[Val]) -> Result<u64, StoreError> {
        let stmt = self.statement(sql)?;
        self.exec.block_on(self.client.execute(&stmt, &refs(params))).map_err(err)
    }

    fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Vec<Val>>, StoreError> {
        let stmt = self.statement(sql)?;
        let rows = self.exec.block_on(self.client.query(&stmt, &refs(params))).map_err(err)?;
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

/// A pooled connection inside a transaction. One that does not reach its
/// commit or rollback (a body that panicked, a lost connection) is closed,
/// never handed out again mid-transaction.
struct InTransaction {
    client: Option<Object>,
    ended: bool,
}

impl Drop for InTransaction {
    fn drop(&mut self) {
        if let Some(o) = self.client.take()
            && !self.ended
        {
            drop(Object::take(o));
        }
    }
}

impl SqlStore<Postgres> {
    /// Connects and migrates the schema (safe with several servers).
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let config: tokio_postgres::Config =
            url.parse().map_err(|e| StoreError::new(format!("bad PostgreSQL URL: {e}")))?;
        let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(POOL)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(10)))
            .build()
            .map_err(|e| StoreError::new(format!("cannot make the PostgreSQL pool: {e}")))?;
        let exec = match tokio::runtime::Handle::try_current() {
            Ok(h) => Exec::Ambient(h),
            Err(_) => Exec::Own(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .map_err(|e| StoreError::new(format!("cannot start a runtime: {e}")))?,
            ),
        };
        exec.block_on(async {
            let mut client = pool.get().await.map_err(pool_err)?;
            client.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})")).await.map_err(err)?;
            let migrated = sql::migrations(Dialect::Postgres).run_async(&mut **client).await;
            let _ = client.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})")).await;
            migrated.map(|_| ()).map_err(sql::migration_error)
        })?;
        let store = SqlStore(Postgres { url: url.to_string(), pool, exec });
        sql::search::backfill(&store)?;
        Ok(store)
    }

    pub fn url(&self) -> &str {
        &self.0.url
    }
}

impl Backend for Postgres {
    fn transaction<R>(
        &self,
        access: Access<'_>,
        f: impl FnOnce(&mut dyn Conn) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let mut held =
            InTransaction { client: Some(self.exec.block_on(self.pool.get()).map_err(pool_err)?), ended: false };
        let mut conn = PgConn { client: held.client.as_ref().expect("held"), exec: &self.exec };
        conn.batch("BEGIN")?;
        let r = (|| {
            if let Access::WriteTeam(team) = access {
                // The team's write lock, held to commit.
                conn.exec(
                    "INSERT INTO teams (team) VALUES (?1) ON CONFLICT (team) DO NOTHING",
                    &[team.as_str().into()],
                )?;
                conn.query("SELECT head_seq FROM teams WHERE team = ?1 FOR UPDATE", &[team.as_str().into()])?;
            }
            f(&mut conn)
        })();
        let end = if r.is_ok() { conn.batch("COMMIT") } else { conn.batch("ROLLBACK") };
        held.ended = end.is_ok();
        let r = r?;
        end.map(|()| r)
    }

    fn log_moved(&self, conn: &mut dyn Conn, team: &TeamId, head: u64) -> Result<(), StoreError> {
        // Delivered to listeners when (and only if) this commits.
        conn.exec("SELECT pg_notify(?1, ?2)", &[CHANNEL.into(), format!("{team}:{head}").into()])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::dollar_placeholders;

    #[test]
    fn placeholders_are_numbered_question_marks_outside_strings() {
        assert_eq!(dollar_placeholders("SELECT ?1, ?12 WHERE a = '?3'"), "SELECT $1, $12 WHERE a = '?3'");
        assert_eq!(
            dollar_placeholders("SELECT body::jsonb ? 'key' FROM t WHERE id = ?1"),
            "SELECT body::jsonb ? 'key' FROM t WHERE id = $1"
        );
    }
}
