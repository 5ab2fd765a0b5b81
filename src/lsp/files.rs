//! Thread files on disk, read and written so that an assistant writing the
//! same file at the same moment never loses anything.
//!
//! - Only regular files directly in `threadsDir` are read: each is opened
//!   with `O_NOFOLLOW | O_NONBLOCK` and checked to be a regular file, so a
//!   symlink is never followed and a fifo never blocks.
//! - A `.json` write replaces the file with `renameat2(RENAME_EXCHANGE)`:
//!   whatever the rename displaced is read back, and if someone else wrote
//!   it after the sidecar last looked, it is merged, not lost. The displaced
//!   file is kept a moment longer, for a writer still writing into it.
//! - A `.jsonl` log is only ever appended to (`O_APPEND`), whole lines in one
//!   write, and only when it ends where the sidecar last read it (else the
//!   new lines are read first). A compaction swaps in the compact log with
//!   `RENAME_EXCHANGE` and copies over every line others appended to the
//!   old one, during the swap and for a while after.
//!
//! What a read means and when to write is the engine's (`engine::file`);
//! this module only does the I/O.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::client::{FollowUp, LogSource, TAIL, ThreadFiles, WriteOutcome, Written, read_log};
use crate::engine::SyncEngine;
pub use crate::engine::file::hash64;
use crate::engine::file::{FileKind, FileRead, FileWrite, Stamp};
use crate::model::{MessageId, ThreadId, parse_thread_file};
use crate::threadlog::{LogFormat, Own, ReadCtx};

/// The thread a file in `threadsDir` is for, and its layout; None for files
/// that are not thread files at all (hidden and temporary files, other
/// extensions).
pub fn thread_file(path: &Path) -> Option<Result<(ThreadId, FileKind), String>> {
    let name = path.file_name()?.to_str()?;
    if name.starts_with('.') {
        return None;
    }
    let (stem, kind) = match name.rsplit_once('.') {
        Some((stem, "json")) => (stem, FileKind::Json),
        Some((stem, "jsonl")) => (stem, FileKind::Jsonl),
        _ => return None,
    };
    Some(
        ThreadId::new(stem)
            .map(|id| (id, kind))
            .map_err(|e| format!("{name:?} is not named <threadId>.json or <threadId>.jsonl: {e}")),
    )
}

pub fn path_of(dir: &Path, id: &ThreadId, kind: FileKind) -> PathBuf {
    dir.join(format!("{id}.{}", kind.extension()))
}

/// Why a thread file cannot be opened for reading.
#[derive(Debug)]
pub enum OpenError {
    Gone,
    /// A symlink, fifo, directory, …: a clear error, never followed or read.
    NotRegular(String),
    Io(std::io::Error),
}

/// Opens a thread file without following a symlink and without blocking on
/// a fifo, and checks it is a regular file.
pub fn open_regular(path: &Path, write: bool) -> Result<(File, std::fs::Metadata), OpenError> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC);
    if write {
        o.append(true);
    }
    let f = match o.open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(OpenError::Gone),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(OpenError::NotRegular(
                "is a symbolic link; symlinks in the threads directory are not followed".into(),
            ));
        }
        Err(e) => return Err(OpenError::Io(e)),
    };
    let meta = f.metadata().map_err(OpenError::Io)?;
    if !meta.file_type().is_file() {
        return Err(OpenError::NotRegular("is not a regular file".into()));
    }
    Ok((f, meta))
}

fn stamp_of(meta: &std::fs::Metadata, len: u64, hash: u64) -> Stamp {
    Stamp { ino: meta.ino(), len, mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(), hash }
}

/// Whether a file still looks as it did when stamped (a start reads only
/// files that changed while the sidecar was not running).
pub fn unchanged_since(path: &Path, stamp: &Stamp, kind: FileKind) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return false };
    let mtime = meta.mtime() * 1_000_000_000 + meta.mtime_nsec();
    meta.file_type().is_file()
        && meta.ino() == stamp.ino
        && mtime == stamp.mtime_ns
        && match kind {
            FileKind::Json => meta.len() == stamp.len,
            FileKind::Jsonl | FileKind::Native => meta.len() == stamp.len,
        }
}

fn read_all(f: &mut File) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// A `.json` file's bytes and stamp.
pub enum JsonBytes {
    Read(Vec<u8>, Stamp),
    Unusable(FileRead),
}

pub fn read_json_bytes(path: &Path) -> JsonBytes {
    match open_regular(path, false) {
        Err(OpenError::Gone) => JsonBytes::Unusable(FileRead::Gone),
        Err(OpenError::NotRegular(e)) => JsonBytes::Unusable(FileRead::Invalid { error: e }),
        Err(OpenError::Io(e)) => JsonBytes::Unusable(FileRead::Invalid { error: format!("cannot read it: {e}") }),
        Ok((mut f, meta)) => match read_all(&mut f) {
            Ok(bytes) => {
                let stamp = stamp_of(&meta, bytes.len() as u64, hash64(&bytes));
                JsonBytes::Read(bytes, stamp)
            }
            Err(e) => JsonBytes::Unusable(FileRead::Invalid { error: format!("cannot read it: {e}") }),
        },
    }
}

pub fn parse_json(bytes: &[u8], stamp: Stamp, id: &ThreadId) -> FileRead {
    match parse_thread_file(bytes, id) {
        Ok(thread) => FileRead::Json { thread, stamp },
        Err(e) => FileRead::Invalid { error: e.to_string() },
    }
}

fn tail_hash(f: &File, len: u64) -> std::io::Result<u64> {
    let start = len.saturating_sub(TAIL);
    let mut buf = vec![0; (len - start) as usize];
    f.read_exact_at(&mut buf, start)?;
    Ok(hash64(&buf))
}

fn hash_at(f: &File, len: u64) -> u64 {
    tail_hash(f, len).unwrap_or(0)
}

/// An open log, read by the shared rules in `client::read_log`.
struct OpenLog {
    f: File,
    meta: std::fs::Metadata,
}

impl LogSource for OpenLog {
    fn ino(&self) -> u64 {
        self.meta.ino()
    }
    fn size(&self) -> u64 {
        self.meta.len()
    }
    fn mtime_ns(&self) -> i64 {
        self.meta.mtime() * 1_000_000_000 + self.meta.mtime_nsec()
    }
    fn read_at(&mut self, start: u64, len: u64) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0; len as usize];
        self.f.read_exact_at(&mut buf, start)?;
        Ok(buf)
    }
}

/// Reads what is new in a log (see `client::read_log`).
pub fn read_log_file(
    path: &Path,
    id: &ThreadId,
    from: Option<Stamp>,
    known: &dyn Fn(&MessageId) -> bool,
    format: &dyn LogFormat,
    ctx: ReadCtx,
) -> Option<FileRead> {
    let (f, meta) = match open_regular(path, false) {
        Ok(x) => x,
        Err(OpenError::Gone) => return Some(FileRead::Gone),
        Err(OpenError::NotRegular(e)) => return Some(FileRead::Invalid { error: e }),
        Err(OpenError::Io(e)) => return Some(FileRead::Invalid { error: format!("cannot read it: {e}") }),
    };
    read_log(&mut OpenLog { f, meta }, id, from, known, format, ctx)
}

// ----- writing ---------------------------------------------------------------

/// What a `.json` write displaced (someone wrote the file after the sidecar
/// last looked, or may still be writing into the old file).
pub struct Displaced {
    pub path: PathBuf,
    pub expected: Option<u64>,
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn temp_path(path: &Path, tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("thread");
    let n = N.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.{tag}-{}-{n}", std::process::id()))
}

fn c_path(p: &Path) -> std::ffi::CString {
    std::ffi::CString::new(p.as_os_str().as_bytes()).expect("paths have no NUL")
}

/// `renameat2` with flags; Err(EINVAL/ENOSYS) means the file system cannot.
fn rename2(from: &Path, to: &Path, flags: libc::c_uint) -> std::io::Result<()> {
    let (a, b) = (c_path(from), c_path(to));
    // SAFETY: both paths are valid NUL-terminated strings; AT_FDCWD is valid.
    let r = unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), flags) };
    if r == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

fn unsupported(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP))
}

fn write_temp(path: &Path, bytes: &[u8], tag: &str) -> std::io::Result<PathBuf> {
    let tmp = temp_path(path, tag);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(tmp)
}

/// Replaces a `.json` file with `bytes` if it still is `expect` (None: it
/// must not exist). Returns how it went and, after a replace, the displaced
/// file to look at.
pub fn write_json(path: &Path, bytes: &[u8], expect: Option<Stamp>) -> (Written, Option<Displaced>) {
    let dir = path.parent().unwrap_or(Path::new("."));
    let exists = match open_regular(path, false) {
        Err(OpenError::Gone) => false,
        Err(OpenError::NotRegular(e)) => return (Written::NotRegular(e), None),
        Err(OpenError::Io(e)) => return (Written::Failed(e.to_string()), None),
        Ok((mut f, _)) => {
            let current = match read_all(&mut f) {
                Ok(b) => hash64(&b),
                Err(e) => return (Written::Failed(e.to_string()), None),
            };
            if expect.map(|s| s.hash) != Some(current) {
                return (Written::Changed, None);
            }
            true
        }
    };
    let tmp = match write_temp(path, bytes, "write") {
        Ok(t) => t,
        Err(e) => return (Written::Failed(e.to_string()), None),
    };
    let done = |displaced: Option<Displaced>| -> (Written, Option<Displaced>) {
        if let Err(e) = fsync_dir(dir) {
            tracing::warn!(error = %e, "cannot fsync the threads directory");
        }
        match open_regular(path, false) {
            Ok((_, meta)) => (Written::Ok(stamp_of(&meta, bytes.len() as u64, hash64(bytes))), displaced),
            // Replaced again at once by someone else: a read follows.
            Err(_) => (Written::Changed, displaced),
        }
    };
    if !exists {
        return match rename2(&tmp, path, libc::RENAME_NOREPLACE) {
            Ok(()) => done(None),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                let _ = std::fs::remove_file(&tmp);
                (Written::Changed, None)
            }
            Err(e) if unsupported(&e) => match std::fs::hard_link(&tmp, path) {
                // link(2) never replaces: the same guarantee without renameat2.
                Ok(()) => {
                    let _ = std::fs::remove_file(&tmp);
                    done(None)
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let _ = std::fs::remove_file(&tmp);
                    (Written::Changed, None)
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    (Written::Failed(e.to_string()), None)
                }
            },
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                (Written::Failed(e.to_string()), None)
            }
        };
    }
    match rename2(&tmp, path, libc::RENAME_EXCHANGE) {
        // `tmp` now names what was at `path` an instant ago.
        Ok(()) => done(Some(Displaced { path: tmp, expected: expect.map(|s| s.hash) })),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            // Deleted meanwhile: put ours in place, never over a new one.
            match rename2(&tmp, path, libc::RENAME_NOREPLACE) {
                Ok(()) => done(None),
                Err(_) => {
                    let _ = std::fs::remove_file(&tmp);
                    (Written::Changed, None)
                }
            }
        }
        Err(e) if unsupported(&e) => {
            // No exchange on this file system: a plain rename after the
            // check above (a writer landing in between is overwritten; see
            // ARCHITECTURE.md).
            match std::fs::rename(&tmp, path) {
                Ok(()) => done(None),
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    (Written::Failed(e.to_string()), None)
                }
            }
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            (Written::Failed(e.to_string()), None)
        }
    }
}

/// Creates a log holding `bytes`; it must not exist.
pub fn create_log(path: &Path, bytes: &[u8]) -> Written {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path);
    let mut f = match f {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Written::Changed,
        Err(e) => return Written::Failed(e.to_string()),
    };
    if let Err(e) = f.write_all(bytes).and_then(|_| f.sync_all()) {
        return Written::Failed(e.to_string());
    }
    let _ = fsync_dir(path.parent().unwrap_or(Path::new(".")));
    match f.metadata() {
        Ok(meta) => {
            let len = bytes.len() as u64;
            Written::Ok(stamp_of(&meta, len, hash64(&bytes[len.saturating_sub(TAIL) as usize..])))
        }
        Err(e) => Written::Failed(e.to_string()),
    }
}

/// Appends whole lines to a log that still ends where `expect` says.
/// Returns the stamp to read on from: after our lines, or — if someone else
/// appended in the same instant — `expect`, so their lines are read (ours
/// come back as known records).
pub fn append_log(path: &Path, bytes: &[u8], expect: Stamp) -> Written {
    let (mut f, meta) = match open_regular(path, true) {
        Ok(x) => x,
        Err(OpenError::Gone) => return Written::Changed,
        Err(OpenError::NotRegular(e)) => return Written::NotRegular(e),
        Err(OpenError::Io(e)) => return Written::Failed(e.to_string()),
    };
    if meta.ino() != expect.ino || meta.len() < expect.len || tail_hash(&f, expect.len).ok() != Some(expect.hash) {
        return Written::Changed;
    }
    if meta.len() > expect.len {
        // New lines to read first, or a line still being written.
        let mut rest = Vec::new();
        let torn = f
            .seek(SeekFrom::Start(expect.len))
            .and_then(|_| f.read_to_end(&mut rest))
            .map(|_| !rest.contains(&b'\n'))
            .unwrap_or(false);
        return if torn { Written::Busy } else { Written::Changed };
    }
    // One write: with O_APPEND the lines land whole at the end.
    if let Err(e) = f.write_all(bytes) {
        return Written::Failed(e.to_string());
    }
    let after = match f.metadata() {
        Ok(m) => m,
        Err(e) => return Written::Failed(e.to_string()),
    };
    let end = expect.len + bytes.len() as u64;
    if after.len() != end {
        return Written::Ok(expect);
    }
    Written::Ok(stamp_of(&after, end, hash_at(&f, end)))
}

/// Swaps in a compact log, if the log still is `expect`. Lines others
/// appended after `expect` are copied to the new log; the old file is
/// returned to watch for late appends (from `Displaced::path`, after the
/// offset returned).
pub fn compact_log(path: &Path, bytes: &[u8], expect: Stamp) -> (Written, Option<(PathBuf, u64)>) {
    match open_regular(path, false) {
        Ok((f, meta)) => {
            if meta.ino() != expect.ino
                || meta.len() < expect.len
                || tail_hash(&f, expect.len).ok() != Some(expect.hash)
            {
                return (Written::Changed, None);
            }
        }
        Err(OpenError::Gone) => return (Written::Changed, None),
        Err(OpenError::NotRegular(e)) => return (Written::NotRegular(e), None),
        Err(OpenError::Io(e)) => return (Written::Failed(e.to_string()), None),
    }
    let tmp = match write_temp(path, bytes, "compact") {
        Ok(t) => t,
        Err(e) => return (Written::Failed(e.to_string()), None),
    };
    if let Err(e) = rename2(&tmp, path, libc::RENAME_EXCHANGE) {
        let _ = std::fs::remove_file(&tmp);
        // Without an exchange a compaction could lose a concurrent append:
        // the log simply stays as it is.
        return (Written::Failed(format!("cannot swap in the compacted log: {e}")), None);
    }
    let _ = fsync_dir(path.parent().unwrap_or(Path::new(".")));
    let new_len = bytes.len() as u64;
    let stamp = match open_regular(path, false) {
        Ok((f, meta)) => stamp_of(&meta, new_len, hash_at(&f, new_len)),
        Err(_) => return (Written::Changed, Some((tmp, expect.len))),
    };
    // Lines appended to the old log since we last read it go over now; the
    // new log's stamp stays before them, so they are read as news.
    let drained = drain_into(&tmp, expect.len, path);
    (Written::Ok(stamp), Some((tmp, drained)))
}

/// Copies complete lines of `old` from `from` on to the end of `log`;
/// returns how far `old` was copied.
pub fn drain_into(old: &Path, from: u64, log: &Path) -> u64 {
    let Ok((mut f, meta)) = open_regular(old, false) else { return from };
    if meta.len() <= from {
        return from;
    }
    let mut rest = Vec::new();
    if f.seek(SeekFrom::Start(from)).and_then(|_| f.read_to_end(&mut rest)).is_err() {
        return from;
    }
    let Some(end) = rest.iter().rposition(|&b| b == b'\n') else { return from };
    let lines = &rest[..=end];
    match std::fs::OpenOptions::new().append(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(log) {
        Ok(mut l) => {
            if l.write_all(lines).is_err() {
                return from;
            }
        }
        Err(_) => return from,
    }
    from + lines.len() as u64
}

/// The threads directory, as the client reads and writes it.
pub struct DiskFiles {
    pub dir: PathBuf,
    /// Displaced versions found at start, deleted once taken in.
    found: Vec<PathBuf>,
}

impl DiskFiles {
    pub fn new(dir: PathBuf) -> Self {
        DiskFiles { dir, found: Vec::new() }
    }
}

impl ThreadFiles for DiskFiles {
    fn read(&mut self, id: &ThreadId, kind: FileKind, engine: &SyncEngine) -> Option<FileRead> {
        let path = path_of(&self.dir, id, kind);
        match kind {
            FileKind::Json => match read_json_bytes(&path) {
                JsonBytes::Unusable(r) => Some(r),
                // Our own write coming back is not parsed at all.
                JsonBytes::Read(_, stamp) if !engine.wants_read(id, &stamp) => Some(FileRead::Seen { stamp }),
                JsonBytes::Read(bytes, stamp) => Some(parse_json(&bytes, stamp, id)),
            },
            FileKind::Jsonl | FileKind::Native => {
                let known = |m: &MessageId| engine.file_has(id, m);
                read_log_file(&path, id, engine.file_stamp(id), &known, &Own, ReadCtx::default())
            }
        }
    }

    fn write(&mut self, id: &ThreadId, _: FileKind, write: &FileWrite, bytes: Vec<u8>) -> WriteOutcome {
        let done = |written| WriteOutcome { written, displaced: None, follow_up: None };
        match write {
            FileWrite::Json { expect, .. } => {
                let path = path_of(&self.dir, id, FileKind::Json);
                let (written, displaced) = write_json(&path, &bytes, *expect);
                // What the exchange displaced is looked at now, and again a
                // little later (a writer may still be writing into it).
                let now = displaced.as_ref().and_then(|d| {
                    let theirs = std::fs::read(&d.path).ok()?;
                    let hash = hash64(&theirs);
                    if Some(hash) == d.expected {
                        return None;
                    }
                    match parse_thread_file(&theirs, id) {
                        Ok(thread) => Some(FileRead::Displaced { thread }),
                        Err(_) => None,
                    }
                });
                let follow_up = displaced.map(|d| FollowUp::Displaced {
                    thread: id.clone(),
                    expected: match &now {
                        Some(_) => std::fs::read(&d.path).ok().map(|b| hash64(&b)),
                        None => d.expected,
                    },
                    path: d.path,
                });
                WriteOutcome { written, displaced: now, follow_up }
            }
            FileWrite::Create { .. } => done(create_log(&path_of(&self.dir, id, FileKind::Jsonl), &bytes)),
            FileWrite::Append { expect, .. } => {
                done(append_log(&path_of(&self.dir, id, FileKind::Jsonl), &bytes, *expect))
            }
            FileWrite::Compact { expect, .. } => {
                let path = path_of(&self.dir, id, FileKind::Jsonl);
                let (written, old) = compact_log(&path, &bytes, *expect);
                let follow_up = old.map(|(old, from)| FollowUp::OldLog { log: path, old, from });
                WriteOutcome { written, displaced: None, follow_up }
            }
        }
    }

    /// A process that died right after swapping in a `.json` file left what
    /// it displaced in `.<id>.json.write-…`; its content comes back.
    fn leftovers(&mut self) -> Vec<(ThreadId, FileRead)> {
        let entries: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        let mut out = Vec::new();
        for p in entries {
            let Some(name) = p.file_name().and_then(|n| n.to_str()) else { continue };
            let Some((stem, _)) = name.strip_prefix('.').and_then(|n| n.split_once(".json.write-")) else { continue };
            let Ok(id) = ThreadId::new(stem) else { continue };
            match open_regular(&p, false) {
                Ok((mut f, _)) => {
                    if let Ok(bytes) = read_all(&mut f)
                        && let Ok(thread) = parse_thread_file(&bytes, &id)
                    {
                        out.push((id, FileRead::Displaced { thread }));
                    }
                    self.found.push(p);
                }
                Err(_) => continue,
            }
        }
        out
    }

    fn settled(&mut self) {
        for p in self.found.drain(..) {
            let _ = std::fs::remove_file(p);
        }
    }

    fn check_log(&mut self, id: &ThreadId, _: FileKind) -> Option<FileRead> {
        let path = path_of(&self.dir, id, FileKind::Jsonl);
        match read_log_file(&path, id, None, &|_| false, &Own, ReadCtx::default())? {
            FileRead::Replayed { thread, stamp, superseded } => Some(FileRead::Checked { thread, stamp, superseded }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
