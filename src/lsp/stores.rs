//! The assistants' session stores on this machine (the formats are in
//! `sources`): which files are sessions and of which thread, which project
//! each belongs to, where a session from elsewhere goes so that the
//! assistant's own resume finds it, and reading and appending those files
//! by the same rules as threadsync's logs (`files`).
//!
//! Placement, per store:
//! - Claude Code: `<root>/<this machine's working directory, escaped>/<session>.jsonl`;
//! - Codex: `<root>/<the same YYYY/MM/DD/rollout-….jsonl as on the machine it came from>`;
//! - Gemini: `<root>/<this machine's name for the project>/chats/<the same file name>`.
//!
//! The working directory on this machine is found from the project (see
//! `sources::project`): a checkout of the same repository (from the
//! explicit map, the editor's workspace folders, or the directories of
//! sessions seen here), else the same path under the home directory.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::client::{ThreadFiles, WriteOutcome, Written};
use crate::engine::SyncEngine;
use crate::engine::file::{FileKind, FileRead, FileWrite};
use crate::lsp::files::{DiskFiles, append_log, create_log, read_log_file};
use crate::model::{MessageId, ThreadId};
use crate::secrets::Scanner;
use crate::sources::project::{self, Project};
use crate::sources::{NativeLog, Source, claude, codex, gemini};
use crate::threadlog::{LogFormat, ReadCtx, Record};

/// One store to sync.
#[derive(Clone, Debug, PartialEq)]
pub struct Store {
    pub source: Source,
    pub root: PathBuf,
    /// Only sessions of these projects (`github.com/team/api`, a path in it
    /// `github.com/team/api/cli`, or `~/notes`); empty: all.
    pub projects: Vec<String>,
}

impl Store {
    /// Where the store is by default, under `home` (`$CODEX_HOME` moves Codex's).
    pub fn default_root(source: Source, home: &Path) -> PathBuf {
        match source {
            Source::ClaudeCode => home.join(".claude/projects"),
            Source::Codex => std::env::var_os("CODEX_HOME")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .unwrap_or_else(|| home.join(".codex"))
                .join("sessions"),
            Source::Gemini => home.join(".gemini/tmp"),
        }
    }

    fn wants(&self, p: Option<&Project>) -> bool {
        if self.projects.is_empty() {
            return true;
        }
        let Some(p) = p else { return false };
        let name = match p {
            Project::Repo { repo, path } if path.is_empty() => repo.clone(),
            Project::Repo { repo, path } => format!("{repo}/{path}"),
            Project::Home { path } => format!("~/{path}"),
        };
        self.projects.iter().any(|want| {
            let want = want.trim_end_matches('/');
            name == want || name.starts_with(&format!("{want}/"))
        })
    }
}

/// The stores, the session files found in them, and the projects known here.
pub struct Stores {
    pub stores: Vec<Store>,
    home: PathBuf,
    redact: bool,
    files: HashMap<ThreadId, (Source, PathBuf)>,
    by_path: HashMap<PathBuf, ThreadId>,
    /// A repository's checkout on this machine, by its normalised remote.
    /// The explicit map and the workspace folders come first; directories
    /// of sessions seen here add to them.
    checkouts: HashMap<String, PathBuf>,
    identified: HashMap<PathBuf, Option<Project>>,
    /// Files that had to be read to be turned down (a session of a project
    /// left out, a Gemini file with no turn yet), as they were then: not
    /// read again on every rescan until they change.
    declined: HashMap<PathBuf, (u64, i64)>,
}

impl Stores {
    pub fn new(stores: Vec<Store>, home: PathBuf, redact: bool) -> Stores {
        Stores {
            stores,
            home,
            redact,
            files: HashMap::new(),
            by_path: HashMap::new(),
            checkouts: HashMap::new(),
            identified: HashMap::new(),
            declined: HashMap::new(),
        }
    }

    /// `repo` (a project name as `github.com/team/api`, or a remote URL) is
    /// checked out at `dir` here.
    pub fn map_project(&mut self, repo: &str, dir: PathBuf) {
        let name = project::normalize_remote(repo).unwrap_or_else(|| repo.trim_end_matches('/').to_string());
        self.checkouts.insert(name, dir);
    }

    /// A directory the user works in (an editor's workspace folder).
    pub fn add_workspace(&mut self, dir: &Path) {
        if let Some(Project::Repo { repo, path }) = self.identify(dir) {
            let root = strip_rel(dir, &path);
            self.checkouts.entry(repo).or_insert(root);
        }
    }

    pub fn sources(&self) -> Vec<Source> {
        self.stores.iter().map(|s| s.source).collect()
    }

    /// Session files found so far, by source.
    pub fn counts(&self) -> Vec<(Source, usize)> {
        let mut out: Vec<(Source, usize)> = self.stores.iter().map(|s| (s.source, 0)).collect();
        for (source, _) in self.files.values() {
            if let Some(c) = out.iter_mut().find(|(s, _)| s == source) {
                c.1 += 1;
            }
        }
        out
    }

    pub fn path(&self, id: &ThreadId) -> Option<&Path> {
        self.files.get(id).map(|(_, p)| p.as_path())
    }

    /// The project a directory belongs to: its repository (by remote) and
    /// the path inside, else its path under the home directory.
    pub fn identify(&mut self, dir: &Path) -> Option<Project> {
        if let Some(p) = self.identified.get(dir) {
            return p.clone();
        }
        let p = identify(dir, &self.home);
        self.identified.insert(dir.to_path_buf(), p.clone());
        p
    }

    /// Every session file in the stores (a start and a rescan read them).
    pub fn scan(&mut self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for store in self.stores.clone() {
            match store.source {
                Source::ClaudeCode => {
                    walk(&store.root, 2, &mut out); // <dir>/<session>.jsonl
                    walk(&store.root, 4, &mut out); // <dir>/<session>/subagents/agent-….jsonl
                }
                Source::Codex => walk(&store.root, 4, &mut out), // YYYY/MM/DD/rollout-….jsonl
                Source::Gemini => walk(&store.root, 3, &mut out), // <project>/chats/session-….jsonl
            }
        }
        out.retain(|p| self.classify(p).is_some());
        out
    }

    /// The thread a file in a store is the session of; None for anything
    /// else (other files, a session of a project the user left out, a
    /// Gemini file not yet holding its header).
    pub fn classify(&mut self, path: &Path) -> Option<ThreadId> {
        if let Some(id) = self.by_path.get(path) {
            return Some(id.clone());
        }
        let seen = std::fs::symlink_metadata(path).ok().map(|m| (m.len(), m.mtime_nsec() + m.mtime() * 1_000_000_000));
        if seen.is_some() && self.declined.get(path) == seen.as_ref() {
            return None;
        }
        let id = self.classify_anew(path);
        match (&id, seen) {
            (None, Some(seen)) => {
                self.declined.insert(path.to_path_buf(), seen);
            }
            _ => {
                self.declined.remove(path);
            }
        }
        id
    }

    fn classify_anew(&mut self, path: &Path) -> Option<ThreadId> {
        let store = self.stores.iter().find(|s| path.starts_with(&s.root))?.clone();
        let rel = path.strip_prefix(&store.root).ok()?;
        let parts: Vec<&str> = rel.components().filter_map(|c| c.as_os_str().to_str()).collect();
        let session = match (store.source, parts.as_slice()) {
            (Source::ClaudeCode, [_, name]) => name.strip_suffix(".jsonl")?.to_string(),
            // A subagent's transcript: a thread of its own beside its session's.
            (Source::ClaudeCode, [_, session, "subagents", name]) => {
                format!("{session}-{}", name.strip_suffix(".jsonl")?)
            }
            (Source::Codex, [_, _, _, name]) => codex::session_of_file(name)?.to_string(),
            (Source::Gemini, [_, "chats", name]) if name.starts_with("session-") && name.ends_with(".jsonl") => {
                let lines = lines_of(path, 200);
                if !lines.iter().any(gemini::is_turn) {
                    return None; // a header alone, or the stray of a resume: nothing to resume yet
                }
                lines.first().and_then(|v| v.get("sessionId")?.as_str().map(str::to_string))?
            }
            _ => return None,
        };
        let id = store.source.thread_id(&session)?;
        if !store.projects.is_empty() {
            let dir = self.session_dir(store.source, path)?;
            let p = self.identify(&dir);
            if !store.wants(p.as_ref()) {
                return None;
            }
        }
        if let Some((_, other)) = self.files.get(&id)
            && other != path
            && other.exists()
        {
            // Gemini can leave a second, short file with the same session
            // beside the real one: the first found stays the session's file.
            tracing::debug!(thread = %id, "a second file for the same session is ignored");
            return None;
        }
        self.by_path.insert(path.to_path_buf(), id.clone());
        self.files.insert(id.clone(), (store.source, path.to_path_buf()));
        Some(id)
    }

    /// The working directory a session file was made in, as far as the
    /// file (or Gemini's project list) says.
    fn session_dir(&self, source: Source, path: &Path) -> Option<PathBuf> {
        match source {
            Source::Gemini => {
                // Gemini's project list, else the `.project_root` it keeps
                // in the project's folder.
                let folder = path.parent()?.parent()?;
                let name = folder.file_name()?.to_str()?;
                gemini_projects(&self.home).into_iter().find(|(_, n)| n == name).map(|(p, _)| p).or_else(|| {
                    let root = std::fs::read_to_string(folder.join(".project_root")).ok()?;
                    Some(PathBuf::from(root.trim())).filter(|p| p.is_absolute())
                })
            }
            _ => first_cwd(path).map(PathBuf::from),
        }
    }

    fn format(&self, source: Source) -> NativeLog<'static> {
        NativeLog { source, redact: self.redact.then(Scanner::get) }
    }

    /// What is new in a session file, as the engine takes it.
    fn read(&mut self, id: &ThreadId, engine: &SyncEngine) -> Option<FileRead> {
        let Some((source, path)) = self.files.get(id).cloned() else { return Some(FileRead::Gone) };
        let known = |m: &MessageId| engine.file_has(id, m);
        let current = engine.thread(id);
        let ctx = ReadCtx { titled: current.is_some_and(|t| !t.title.is_empty()), env: current.map(|t| t.env.clone()) };
        let read = read_log_file(&path, id, engine.file_stamp(id), &known, &self.format(source), ctx)?;
        Some(match read {
            FileRead::Replayed { mut thread, stamp, superseded } => {
                self.describe(source, &path, &mut thread.env, current.map(|t| &t.env));
                if let Some(t) = current.filter(|t| !t.title.is_empty()) {
                    thread.title = t.title.clone();
                }
                FileRead::Replayed { thread, stamp, superseded }
            }
            FileRead::Checked { mut thread, stamp, superseded } => {
                self.describe(source, &path, &mut thread.env, current.map(|t| &t.env));
                FileRead::Checked { thread, stamp, superseded }
            }
            FileRead::Appended { mut records, stamp } => {
                for r in &mut records {
                    if let Record::Env { env } = r {
                        self.describe(source, &path, env, None);
                    }
                }
                FileRead::Appended { records, stamp }
            }
            other => other,
        })
    }

    /// Completes a session's env with what only this machine can say: its
    /// project and its file's place in the store. A thread already known
    /// keeps the env it has (a session written here from elsewhere holds
    /// the other machine's directory in its first lines).
    fn describe(&mut self, source: Source, path: &Path, env: &mut Value, known: Option<&Value>) {
        if let Some(known) = known.filter(|k| k.get("source").is_some()) {
            *env = known.clone();
            return;
        }
        if let Some(root) = self.stores.iter().find(|s| s.source == source).map(|s| s.root.clone())
            && let Some(rel) = project::relative(path, &root)
        {
            let file = match source {
                Source::Codex => rel,
                // Under the project's directory: `<session>.jsonl`, or a
                // subagent's `<session>/subagents/agent-….jsonl`.
                Source::ClaudeCode => rel.split_once('/').map_or(rel.as_str(), |x| x.1).to_string(),
                Source::Gemini => rel.rsplit('/').next().unwrap_or_default().to_string(),
            };
            env["file"] = file.into();
        }
        let dir = match env.get("cwd").and_then(Value::as_str) {
            Some(cwd) => Some(PathBuf::from(cwd)),
            None => self.session_dir(source, path),
        };
        if let Some(dir) = dir {
            if env.get("cwd").is_none() {
                env["cwd"] = dir.to_string_lossy().into_owned().into();
            }
            if let Some(p) = self.identify(&dir) {
                if let Project::Repo { repo, path } = &p {
                    self.checkouts.entry(repo.clone()).or_insert_with(|| strip_rel(&dir, path));
                }
                env["project"] = p.to_json();
            }
        }
    }

    /// The working directory on this machine for a session made elsewhere.
    fn local_dir(&self, env: &Value) -> PathBuf {
        match env.get("project").and_then(Project::from_json) {
            Some(Project::Repo { repo, path }) if self.checkouts.contains_key(&repo) => {
                project::under(&self.checkouts[&repo], &path).unwrap_or_else(|| self.checkouts[&repo].clone())
            }
            Some(Project::Home { path }) => project::under(&self.home, &path).unwrap_or_else(|| self.home.clone()),
            // No checkout known: the same place under this home directory
            // as under the other machine's, else the same path.
            _ => {
                let cwd = env.get("cwd").and_then(Value::as_str).map(PathBuf::from);
                let rel = cwd.as_deref().and_then(home_relative);
                match (rel, cwd) {
                    (Some(rel), _) => project::under(&self.home, &rel).unwrap_or_else(|| self.home.clone()),
                    (None, Some(cwd)) if cwd.is_absolute() => cwd,
                    _ => self.home.clone(),
                }
            }
        }
    }

    /// Where a session from elsewhere goes in this machine's store.
    pub fn place(&self, id: &ThreadId, env: &Value) -> Result<(Source, PathBuf), String> {
        let source = Source::of_env(env).ok_or_else(|| format!("{id} is not an assistant's session"))?;
        let store = self
            .stores
            .iter()
            .find(|s| s.source == source)
            .ok_or_else(|| format!("{id} is a {} session, and that store is not synced here", source.name()))?;
        let session = env.get("session").and_then(Value::as_str).unwrap_or_default();
        let file = env.get("file").and_then(Value::as_str).unwrap_or_default();
        let safe = |name: &str| !name.is_empty() && !name.contains('/') && name != "." && name != "..";
        let path = match source {
            Source::ClaudeCode => {
                let dir = store.root.join(claude::project_dir_name(&self.local_dir(env).to_string_lossy()));
                // The file's place under the project's directory, as on the
                // machine it came from; else the session's own file.
                let parts: Vec<&str> = file.split('/').collect();
                let shaped = match parts.as_slice() {
                    [name] => safe(name) && name.ends_with(".jsonl"),
                    [s, "subagents", name] => safe(s) && safe(name) && name.ends_with(".jsonl"),
                    _ => false,
                };
                if shaped {
                    project::under(&dir, file).ok_or_else(|| format!("{id}: bad session file {file:?}"))?
                } else if ThreadId::new(session).is_ok() {
                    dir.join(format!("{session}.jsonl"))
                } else {
                    return Err(format!("{id}: bad session id {session:?}"));
                }
            }
            Source::Codex => {
                let ok = file.split('/').count() == 4
                    && codex::session_of_file(file.rsplit('/').next().unwrap_or("")) == Some(session);
                let path = if ok { project::under(&store.root, file) } else { None };
                path.ok_or_else(|| format!("{id}: bad rollout file {file:?}"))?
            }
            Source::Gemini => {
                if !(safe(file) && file.starts_with("session-") && file.ends_with(".jsonl")) {
                    return Err(format!("{id}: bad session file {file:?}"));
                }
                // The name Gemini gives (or will give) this machine's
                // directory: its entry in projects.json, else the one it
                // would pick (a name is taken by another directory's entry
                // or `.project_root`).
                let dir = self.local_dir(env);
                let projects = gemini_projects(&self.home);
                let name = match projects.iter().find(|(p, _)| *p == dir) {
                    Some((_, n)) => n.clone(),
                    None => {
                        let taken = |slug: &str| {
                            projects.iter().any(|(_, n)| n == slug)
                                || std::fs::read_to_string(store.root.join(slug).join(".project_root"))
                                    .is_ok_and(|r| Path::new(r.trim()) != dir)
                        };
                        let base = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
                        gemini::project_slug(base, &taken)
                    }
                };
                if !safe(&name) {
                    return Err(format!("{id}: bad project name {name:?}"));
                }
                store.root.join(name).join("chats").join(file)
            }
        };
        Ok((source, path))
    }

    fn write(&mut self, id: &ThreadId, write: &FileWrite, bytes: &[u8]) -> Written {
        match write {
            FileWrite::Create { records } => {
                let env = records.iter().find_map(|r| match r {
                    Record::Header { env, .. } => Some(env),
                    _ => None,
                });
                let (source, path) = match env.map(|env| self.place(id, env)) {
                    Some(Ok(x)) => x,
                    Some(Err(e)) => return Written::Failed(e),
                    None => return Written::Failed("no header".into()),
                };
                if let Some(dir) = path.parent()
                    && let Err(e) = std::fs::create_dir_all(dir)
                {
                    return Written::Failed(format!("cannot create {}: {e}", dir.display()));
                }
                // Known from now on (also when it exists already: the read
                // that follows takes it in).
                self.by_path.insert(path.clone(), id.clone());
                self.files.insert(id.clone(), (source, path.clone()));
                create_log(&path, bytes)
            }
            FileWrite::Append { expect, .. } => match self.files.get(id) {
                Some((_, path)) => append_log(path, bytes, *expect),
                None => Written::Changed,
            },
            FileWrite::Json { .. } | FileWrite::Compact { .. } => {
                Written::Failed("an assistant's session file is only appended to".into())
            }
        }
    }
}

/// `dir` without the trailing `rel` (a `/`-separated path inside it).
fn strip_rel(dir: &Path, rel: &str) -> PathBuf {
    let n = rel.split('/').filter(|p| !p.is_empty()).count();
    let mut root = dir.to_path_buf();
    for _ in 0..n {
        root.pop();
    }
    root
}

fn home_relative(path: &Path) -> Option<String> {
    // `/home/<user>/…` or `/Users/<user>/…`: the machine's home directories.
    let mut parts = path.components().skip(1);
    let top = parts.next()?.as_os_str().to_str()?;
    if !matches!(top, "home" | "Users") {
        return None;
    }
    parts.next()?;
    let rest: Vec<&str> = parts.map(|c| c.as_os_str().to_str()).collect::<Option<_>>()?;
    Some(rest.join("/"))
}

/// The project of a directory: the repository it is in, by its remote, and
/// the path inside; else the path under `home`.
pub fn identify(dir: &Path, home: &Path) -> Option<Project> {
    let mut at = Some(dir);
    while let Some(d) = at {
        let git = d.join(".git");
        if let Some(config) = git_config(&git) {
            let remote = std::fs::read_to_string(config).ok().and_then(|t| project::remote_from_git_config(&t));
            if let Some(repo) = remote.as_deref().and_then(project::normalize_remote) {
                return Some(Project::Repo { repo, path: project::relative(dir, d)? });
            }
            break; // a repository without a usable remote: named by its path
        }
        at = d.parent();
    }
    project::relative(dir, home).filter(|p| !p.is_empty()).map(|path| Project::Home { path })
}

/// The config file of the repository whose `.git` is at `git`: a directory,
/// or a file pointing at one (worktrees and submodules; a worktree's config
/// is its main repository's).
fn git_config(git: &Path) -> Option<PathBuf> {
    let meta = std::fs::symlink_metadata(git).ok()?;
    if meta.is_dir() {
        return Some(git.join("config"));
    }
    let text = std::fs::read_to_string(git).ok()?;
    let dir = PathBuf::from(text.strip_prefix("gitdir:")?.trim());
    let dir = if dir.is_absolute() { dir } else { git.parent()?.join(dir) };
    match std::fs::read_to_string(dir.join("commondir")) {
        Ok(common) => Some(dir.join(common.trim()).join("config")),
        Err(_) => Some(dir.join("config")),
    }
}

/// Gemini's project list (`~/.gemini/projects.json`): directory → name.
fn gemini_projects(home: &Path) -> Vec<(PathBuf, String)> {
    let Ok(bytes) = std::fs::read(home.join(".gemini/projects.json")) else { return Vec::new() };
    let Ok(v) = serde_json::from_slice::<Value>(&bytes) else { return Vec::new() };
    let map = v.get("projects").unwrap_or(&v);
    map.as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| k.starts_with('/'))
                .filter_map(|(k, v)| Some((PathBuf::from(k), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// The first working directory a session's lines name.
fn first_cwd(path: &Path) -> Option<String> {
    lines_of(path, 50)
        .into_iter()
        .find_map(|v| v.get("cwd").or_else(|| v.get("payload")?.get("cwd")).and_then(Value::as_str).map(str::to_string))
}

fn lines_of(path: &Path, n: usize) -> Vec<Value> {
    use std::io::Read;
    let Ok((f, _)) = crate::lsp::files::open_regular(path, false) else { return Vec::new() };
    let mut buf = Vec::new();
    if f.take(1 << 20).read_to_end(&mut buf).is_err() {
        return Vec::new();
    }
    let (lines, _) = crate::threadlog::complete_lines(&buf, 0);
    lines.into_iter().take(n).filter_map(|(_, l)| serde_json::from_slice(l).ok()).collect()
}

/// Files at exactly `depth` levels under `dir` ending in `.jsonl`; symlinks
/// are not followed.
fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let Ok(t) = e.file_type() else { continue };
        let p = e.path();
        if depth > 1 && t.is_dir() {
            walk(&p, depth - 1, out);
        } else if depth == 1 && t.is_file() && p.extension().is_some_and(|x| x == "jsonl") {
            out.push(p);
        }
    }
}

/// The thread files: threadsync's in `threadsDir`, sessions in the stores.
pub struct Files {
    pub disk: DiskFiles,
    pub stores: Stores,
}

impl ThreadFiles for Files {
    fn read(&mut self, id: &ThreadId, kind: FileKind, engine: &SyncEngine) -> Option<FileRead> {
        match kind {
            FileKind::Native => self.stores.read(id, engine),
            _ => self.disk.read(id, kind, engine),
        }
    }

    fn write(&mut self, id: &ThreadId, kind: FileKind, write: &FileWrite, bytes: Vec<u8>) -> WriteOutcome {
        match kind {
            FileKind::Native => {
                WriteOutcome { written: self.stores.write(id, write, &bytes), displaced: None, follow_up: None }
            }
            _ => self.disk.write(id, kind, write, bytes),
        }
    }

    fn render(&self, id: &ThreadId, kind: FileKind, records: &[Record]) -> Result<Vec<u8>, String> {
        if kind != FileKind::Native {
            return self.disk.render(id, kind, records);
        }
        // A new file's header names its source; an append's file is known.
        let source = records
            .iter()
            .find_map(|r| match r {
                Record::Header { env, .. } => Source::of_env(env),
                _ => None,
            })
            .or_else(|| self.stores.files.get(id).map(|(s, _)| *s))
            .ok_or_else(|| format!("{id}: no assistant's store for this thread"))?;
        self.stores.format(source).render(records).map_err(|e| e.to_string())
    }

    fn leftovers(&mut self) -> Vec<(ThreadId, FileRead)> {
        self.disk.leftovers()
    }

    fn check_log(&mut self, id: &ThreadId, kind: FileKind) -> Option<FileRead> {
        match kind {
            FileKind::Native => {
                let (source, path) = self.stores.files.get(id).cloned()?;
                let format = self.stores.format(source);
                match read_log_file(&path, id, None, &|_| false, &format, ReadCtx::default())? {
                    FileRead::Replayed { thread, stamp, superseded } => {
                        Some(FileRead::Checked { thread, stamp, superseded })
                    }
                    _ => None,
                }
            }
            _ => self.disk.check_log(id, kind),
        }
    }

    fn settled(&mut self) {
        self.disk.settled();
    }
}

#[cfg(test)]
mod tests;
