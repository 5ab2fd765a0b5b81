//! SQLite backend: the embedded default. WAL mode; one writer connection
//! (SQLite has one writer anyway) and a few readers, so pulls never wait for
//! pushes.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ToSql};

use crate::server::core::StoreError;
use crate::server::sql::{self, Access, Backend, Conn, Dialect, SqlStore, Val};

const READERS: usize = 4;

/// The embedded database: one writer connection, a few readers, and a
/// checkpointer.
pub struct Sqlite {
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    path: std::path::PathBuf,
    checkpointer: Checkpointer,
}

/// Past this many WAL pages left after a checkpoint (writes went on during
/// it, so the WAL is never free to start over), the checkpoint waits for
/// the writer once: the WAL stays near this size (16 MiB) under any load.
const LARGE_WAL: i64 = 4096;

/// Copies the WAL into the database file on a thread of its own. SQLite's
/// automatic checkpoint runs inside the commit that crosses its threshold,
/// and its fsyncs made every write wait: without it on the write path the
/// write rate doubles here (`cargo bench --bench server`). Durability is
/// the same (a commit is in the WAL either way).
struct Checkpointer {
    wake: Option<std::sync::mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: &Path) -> Result<Self, StoreError> {
        let conn = open_conn(path)?;
        let (wake, woken) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                while woken.recv().is_ok() {
                    // Let a burst of commits gather first.
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    while woken.try_recv().is_ok() {}
                    checkpoint(&conn);
                }
            })
            .map_err(|e| StoreError::new(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Checkpointer { wake: Some(wake), thread: Some(thread) })
    }

    /// Something was committed.
    fn poke(&self) {
        if let Some(w) = &self.wake {
            let _ = w.try_send(());
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        // Closing the channel ends the thread after its current checkpoint.
        self.wake = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn checkpoint(conn: &Connection) {
    let run = |mode: &str| {
        conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        })
    };
    match run("PASSIVE") {
        Ok((log, done)) if log - done > LARGE_WAL => {
            if let Err(e) = run("RESTART") {
                tracing::warn!(error = %e, "cannot checkpoint the database");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot checkpoint the database"),
    }
}

pub type SqliteStore = SqlStore<Sqlite>;

fn err(e: rusqlite::Error) -> StoreError {
    let transient =
        matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked));
    StoreError { message: format!("sqlite: {e}"), transient }
}

impl ToSql for Val {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Val::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Val::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Val::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        })
    }
}

impl Conn for Connection {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn json_list(&self, n: usize) -> String {
        format!("SELECT value FROM json_each(?{n})")
    }

    fn exec(&mut self, sql: &str, params: &[Val]) -> Result<u64, StoreError> {
        let mut stmt = self.prepare_cached(sql).map_err(err)?;
        Ok(stmt.execute(rusqlite::params_from_iter(params)).map_err(err)? as u64)
    }

    fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Vec<Val>>, StoreError> {
        let mut stmt = self.prepare_cached(sql).map_err(err)?;
        let n = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(params)).map_err(err)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(err)? {
            let mut vals = Vec::with_capacity(n);
            for i in 0..n {
                vals.push(match row.get_ref(i).map_err(err)? {
                    ValueRef::Null => Val::Null,
                    ValueRef::Integer(i) => Val::Int(i),
                    ValueRef::Text(t) => Val::Text(String::from_utf8_lossy(t).into_owned()),
                    other => return Err(StoreError::new(format!("unexpected column type {:?}", other.data_type()))),
                });
            }
            out.push(vals);
        }
        Ok(out)
    }
}

fn open_conn(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(err)?;
    conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(err)?;
    // WAL with synchronous=NORMAL: a committed transaction survives a
    // process crash (kill -9); only an OS crash can lose the last ones.
    conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

impl SqlStore<Sqlite> {
    /// Opens (creating if needed) the database file and migrates it.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::new(format!("cannot create {}: {e}", dir.display())))?;
        }
        let mut writer = open_conn(path)?;
        sql::migrations(Dialect::Sqlite).run(&mut writer).map_err(sql::migration_error)?;
        // Checkpoints are the checkpointer's; a WAL grown by a burst is
        // cut back when it starts over.
        writer.pragma_update(None, "wal_autocheckpoint", 0).map_err(err)?;
        writer.pragma_update(None, "journal_size_limit", 32 << 20).map_err(err)?;
        let checkpointer = Checkpointer::start(path)?;
        let store = SqlStore(Sqlite {
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
            path: path.to_path_buf(),
            checkpointer,
        });
        sql::search::backfill(&store)?;
        Ok(store)
    }
}

impl Sqlite {
    fn reader(&self) -> Result<Connection, StoreError> {
        match self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            Some(c) => Ok(c),
            None => open_conn(&self.path),
        }
    }

    fn give_back(&self, conn: Connection) {
        let mut readers = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        if readers.len() < READERS {
            readers.push(conn);
        }
    }
}

impl Backend for Sqlite {
    /// A write runs on the writer (IMMEDIATE: takes the write lock up front,
    /// so two writers never deadlock on an upgrade; SQLite has one writer,
    /// which serialises every team's writes); a read on a reader, so pulls
    /// never wait for pushes.
    fn transaction<R>(
        &self,
        access: Access<'_>,
        f: impl FnOnce(&mut dyn Conn) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        if let Access::Read = access {
            let mut conn = self.reader()?;
            conn.execute_batch("BEGIN").map_err(err)?;
            let r = f(&mut conn);
            let _ = conn.execute_batch("COMMIT");
            self.give_back(conn);
            return r;
        }
        let mut conn = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if !conn.is_autocommit() {
            // A body panicked mid-transaction: what it did is not committed.
            let _ = conn.execute_batch("ROLLBACK");
        }
        conn.execute_batch("BEGIN IMMEDIATE").map_err(err)?;
        match f(&mut *conn) {
            Ok(r) => {
                conn.execute_batch("COMMIT").map_err(err)?;
                self.checkpointer.poke();
                Ok(r)
            }
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }
}
