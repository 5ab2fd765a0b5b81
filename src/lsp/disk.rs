//! The sidecar's files: thread files in `threadsDir` (the user's truth) and
//! sync state in `stateDir` (bases, outboxes, cursor, conflicts).
//!
//! Every write is atomic (a temporary file in the same directory, fsynced,
//! then renamed), so a reader — or a restart after `kill -9` — never sees
//! half a file.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::engine::Restored;
use crate::merge::{Conflict, Doc};
use crate::model::{FileError, Thread, ThreadId, parse_thread_file};
use crate::ops::Op;
use crate::wire::Cursor;

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

pub fn hash(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The thread id a file in `threadsDir` is for; None for files that are not
/// thread files at all (temporary files, other extensions).
pub fn thread_file_id(path: &Path) -> Option<Result<ThreadId, String>> {
    let name = path.file_name()?.to_str()?;
    if name.starts_with('.') {
        return None;
    }
    let stem = name.strip_suffix(".json")?;
    Some(ThreadId::new(stem).map_err(|e| format!("{name:?} is not named <threadId>.json: {e}")))
}

/// Serialises a thread as its file holds it.
pub fn thread_bytes(t: &Thread) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(t).expect("a thread always serialises");
    bytes.push(b'\n');
    bytes
}

/// What reading one thread file gave.
pub enum FileRead {
    Thread(Thread, [u8; 32]),
    Invalid(ThreadId, FileError),
    Gone(ThreadId),
}

pub fn read_thread_file(path: &Path, id: &ThreadId) -> FileRead {
    match std::fs::read(path) {
        Ok(bytes) => {
            let h = hash(&bytes);
            match parse_thread_file(&bytes, id) {
                Ok(t) => FileRead::Thread(t, h),
                Err(e) => FileRead::Invalid(id.clone(), e),
            }
        }
        Err(_) => FileRead::Gone(id.clone()),
    }
}

/// What a restart reads: the engine's input, files that could not be read
/// (thread, why), and the hash of each thread file read.
pub struct Restore {
    pub restored: Restored,
    pub errors: Vec<(ThreadId, String)>,
    pub hashes: BTreeMap<ThreadId, [u8; 32]>,
}

/// The state directory's layout.
#[derive(Clone, Debug)]
pub struct StateDir {
    pub root: PathBuf,
}

impl StateDir {
    pub fn open(root: PathBuf) -> std::io::Result<StateDir> {
        for sub in ["bases", "outbox", "rejected"] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        Ok(StateDir { root })
    }

    fn save<T: Serialize>(&self, path: PathBuf, value: &T) -> std::io::Result<()> {
        write_atomic(&path, &serde_json::to_vec(value).map_err(std::io::Error::other)?)
    }

    fn load<T: DeserializeOwned>(path: &Path) -> Option<T> {
        let bytes = std::fs::read(path).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable state file");
                None
            }
        }
    }

    pub fn save_base(&self, doc: &Doc) -> std::io::Result<()> {
        self.save(self.root.join("bases").join(format!("{}.json", doc.id())), doc)
    }

    pub fn save_outbox(&self, id: &ThreadId, ops: &[Op]) -> std::io::Result<()> {
        let path = self.root.join("outbox").join(format!("{id}.json"));
        if ops.is_empty() {
            return match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        self.save(path, &ops)
    }

    pub fn save_cursor(&self, cursor: &Option<Cursor>) -> std::io::Result<()> {
        self.save(self.root.join("cursor.json"), cursor)
    }

    pub fn save_conflicts(&self, conflicts: &[Conflict]) -> std::io::Result<()> {
        self.save(self.root.join("conflicts.json"), &conflicts)
    }

    /// Keeps what the server refused, so a rollback never destroys content.
    pub fn save_rejected(&self, id: &ThreadId, ops: &[Op], reason: &str, now_ms: u64) -> std::io::Result<()> {
        let value = serde_json::json!({ "threadId": id, "reason": reason, "ops": ops });
        self.save(self.root.join("rejected").join(format!("{id}-{now_ms}.json")), &value)
    }

    /// Everything a restarting engine needs, plus the thread files.
    pub fn restore(&self, threads_dir: &Path) -> Restore {
        let mut r = Restored::default();
        let mut errors = Vec::new();
        let mut hashes = BTreeMap::new();
        let each = |dir: &Path| -> Vec<PathBuf> {
            std::fs::read_dir(dir).map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default()
        };
        for path in each(&self.root.join("bases")) {
            if let Some(doc) = Self::load::<Doc>(&path) {
                r.bases.push(doc);
            }
        }
        for path in each(&self.root.join("outbox")) {
            let Some(Ok(id)) = thread_file_id(&path) else { continue };
            if let Some(ops) = Self::load::<Vec<Op>>(&path) {
                r.outboxes.push((id, ops));
            }
        }
        r.cursor = Self::load::<Option<Cursor>>(&self.root.join("cursor.json")).flatten();
        r.conflicts = Self::load(&self.root.join("conflicts.json")).unwrap_or_default();
        for path in each(threads_dir) {
            match thread_file_id(&path) {
                None => {}
                Some(Err(e)) => tracing::warn!("{e}; ignored"),
                Some(Ok(id)) => match read_thread_file(&path, &id) {
                    FileRead::Thread(t, h) => {
                        hashes.insert(id, h);
                        r.files.push(t);
                    }
                    FileRead::Invalid(id, e) => errors.push((id, e.to_string())),
                    FileRead::Gone(_) => {}
                },
            }
        }
        Restore { restored: r, errors, hashes }
    }
}
