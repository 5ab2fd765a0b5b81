//! Watches `threadsDir` (only that directory) for thread files changed by an
//! assistant, and the assistants' stores synced (recursively). If the OS
//! watcher cannot start (e.g. inotify limits), falls back to rescanning
//! every 2 seconds rather than failing.

use std::path::PathBuf;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::lsp::driver::Cmd;

pub fn spawn(dir: PathBuf, tx: mpsc::UnboundedSender<Cmd>) {
    // THREADSYNC_WATCH=poll forces the fallback (for file systems where
    // notifications do not work, e.g. some network mounts; and for tests).
    if std::env::var("THREADSYNC_WATCH").is_ok_and(|v| v == "poll") {
        rescan_forever(tx);
        return;
    }
    let watcher = watcher(tx.clone()).and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|()| w));
    match watcher {
        Ok(w) => {
            // The watcher lives as long as the process.
            std::mem::forget(w);
        }
        Err(e) => {
            tracing::warn!(error = %e, dir = %dir.display(), "cannot watch the threads directory; rescanning every 2 s instead");
            rescan_forever(tx);
        }
    }
}

/// A watcher that hands the paths of changes to the driver.
fn watcher(events: mpsc::UnboundedSender<Cmd>) -> notify::Result<notify::RecommendedWatcher> {
    notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
        Ok(ev) if !(ev.kind.is_access() || ev.kind.is_other()) => {
            let _ = events.send(Cmd::Files(ev.paths));
        }
        Ok(_) => {}
        // Events may have been lost: read everything again.
        Err(_) => {
            let _ = events.send(Cmd::Rescan);
        }
    })
}

fn rescan_forever(tx: mpsc::UnboundedSender<Cmd>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tick.tick().await;
            if tx.send(Cmd::Rescan).is_err() {
                return;
            }
        }
    });
}

/// Watches an assistant's store (recursively: sessions are a few levels
/// down, in directories made as they are needed). A store that does not
/// exist yet (the assistant never ran here) is looked for every 2 s and
/// watched, and read, once it appears.
pub fn spawn_store(root: PathBuf, tx: mpsc::UnboundedSender<Cmd>) {
    if std::env::var("THREADSYNC_WATCH").is_ok_and(|v| v == "poll") {
        return; // the threads directory's rescans read the stores too
    }
    tokio::spawn(async move {
        let mut appeared = false;
        while !root.is_dir() {
            appeared = true;
            tokio::time::sleep(Duration::from_secs(2)).await;
            if tx.is_closed() {
                return;
            }
        }
        let watcher = watcher(tx.clone()).and_then(|mut w| w.watch(&root, RecursiveMode::Recursive).map(|()| w));
        match watcher {
            Ok(w) => std::mem::forget(w),
            Err(e) => {
                tracing::warn!(error = %e, dir = %root.display(), "cannot watch an assistant's store; rescanning every 2 s instead");
                rescan_forever(tx.clone());
            }
        }
        if appeared {
            let _ = tx.send(Cmd::Rescan);
        }
    });
}
