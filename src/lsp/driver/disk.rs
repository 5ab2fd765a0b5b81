//! The driver's disk side: a file that changed, a `.json` version another
//! writer's rename displaced, and lines appended late to a compacted log's
//! old file.

use super::*;

impl Driver {
    /// A file in the threads directory changed (or may have).
    pub(super) fn file_changed(&mut self, path: &Path) {
        if self.cfg.stores.iter().any(|s| path.starts_with(&s.root)) {
            // A session in an assistant's store, or nothing of ours.
            if let Some(id) = self.client.files.stores.classify(path) {
                let now = self.now();
                if let Err(e) = self.client.file_changed(now, &id, FileKind::Native) {
                    tracing::error!(thread = %id, error = %e, "cannot take in a session file");
                }
            }
            return;
        }
        match files::thread_file(path) {
            None => {}
            Some(Err(e)) => tracing::warn!("{e}; ignored"),
            Some(Ok((id, kind))) => {
                let now = self.now();
                if let Err(e) = self.client.file_changed(now, &id, kind) {
                    tracing::error!(thread = %id, error = %e, "cannot take in a thread file");
                }
            }
        }
    }

    /// Looks again at what a `.json` write displaced: someone's version to
    /// merge back, possibly still being written.
    pub(super) fn check_displaced(&mut self, id: &ThreadId, path: &Path, expected: Option<u64>, attempt: u32) {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(_) => return,
        };
        let hash = files::hash64(&bytes);
        if Some(hash) != expected {
            let stamp = crate::engine::file::Stamp { ino: 0, len: bytes.len() as u64, mtime_ns: 0, hash };
            match files::parse_json(&bytes, stamp, id) {
                FileRead::Json { thread, .. } => {
                    let now = self.now();
                    if self.client.ensure_loaded(now, [id]).is_ok() {
                        self.client.engine.file_read(now, id, FileKind::Json, FileRead::Displaced { thread });
                    }
                    // Taken in; keep watching in case the writer goes on.
                    return self.schedule_displaced(id, path, Some(hash), attempt + 1);
                }
                _ if (attempt as usize) < DISPLACED_CHECKS.len() => {
                    // Half written: its writer is still at it.
                    return self.schedule_displaced(id, path, expected, attempt + 1);
                }
                _ => {
                    let keep = self.cfg.state_dir.join("displaced");
                    let _ = std::fs::create_dir_all(&keep);
                    let to = keep.join(format!("{id}-{}.json", self.now().as_millis()));
                    tracing::warn!(thread = %id, kept = %to.display(), "a version of the thread file displaced by our write never became valid JSON; kept aside");
                    let _ = std::fs::rename(path, &to);
                    return;
                }
            }
        }
        if (attempt as usize) < DISPLACED_CHECKS.len() {
            self.schedule_displaced(id, path, expected, attempt + 1);
        } else {
            let _ = std::fs::remove_file(path);
        }
    }

    pub(super) fn schedule_displaced(&self, id: &ThreadId, path: &Path, expected: Option<u64>, attempt: u32) {
        let Some(delay) = DISPLACED_CHECKS.get(attempt as usize) else {
            let _ = std::fs::remove_file(path);
            return;
        };
        let (tx, id, path) = (self.tx.clone(), id.clone(), path.to_path_buf());
        let delay = Duration::from_millis(*delay);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(Cmd::Displaced { id, path, expected, attempt });
        });
    }

    pub(super) fn follow_old_log(&self, log: PathBuf, old: PathBuf, from: u64, attempt: u32) {
        let Some(delay) = DISPLACED_CHECKS.get(attempt as usize) else {
            let _ = std::fs::remove_file(&old);
            return;
        };
        let tx = self.tx.clone();
        let delay = Duration::from_millis(*delay);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(Cmd::OldLog { log, old, from, attempt });
        });
    }
}
