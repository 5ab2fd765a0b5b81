//! The sidecar's own LSP surface: every `threadsync/*` notification and
//! request and every `workspace/executeCommand` command, with the types of
//! what they carry (names fixed by interface.md; protocol.md, "The sidecar",
//! documents them).
//!
//! Longer than 600 lines: the whole surface in one file is the point —
//! the editors' definitions are generated from it and a reader checks it
//! against protocol.md in one go.
//!
//! This is the one place the surface is written down. The VS Code
//! extension's types (`editors/vscode/src/protocol.generated.ts`) and the
//! Neovim plugin's name table (`editors/nvim/lua/threadsync/protocol.lua`)
//! are generated from it by `THREADSYNC_BLESS=1 cargo test --test tidy`,
//! and that test fails while either, or protocol.md, disagrees with it.
//!
//! Engine types convert into these at the edge (`From`), so the engine knows
//! nothing of the wire. Content that is free-form JSON (message content,
//! conflict sides, a whole thread) stays a `Value`.

use std::any::TypeId;
use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tower_lsp_server::lsp_types::notification::Notification;
use tower_lsp_server::lsp_types::request::Request;
use ts_rs::{Config, TS, TypeVisitor};

use crate::engine;
use crate::merge;

/// The error code of a request the sync engine cannot serve: not running
/// (another window syncs), or the sync failed; the message says which.
pub const ENGINE_ERROR: i64 = -32001;

/// One notification, request or command: its name and, for the generated
/// TypeScript, its types.
pub struct Method {
    pub name: &'static str,
    params: Ts,
    result: Option<Ts>,
}

/// A `workspace/executeCommand` command, as `Request` is a request.
pub trait Command {
    const NAME: &'static str;
    /// The command's `arguments` array.
    type Arguments;
    type Result: Serialize;
    /// Reads `arguments`; the error says what the command takes.
    fn parse(arguments: &[Value]) -> Result<Self::Arguments, String>;
}

/// Declares each notification's marker type, and `NOTIFICATIONS`.
macro_rules! notifications {
    ($( $(#[$doc:meta])* $t:ident: $method:literal ($params:ty); )*) => {
        $(
            $(#[$doc])*
            pub enum $t {}
            impl Notification for $t {
                type Params = $params;
                const METHOD: &'static str = $method;
            }
        )*
        /// Every notification, sidecar → editor.
        pub const NOTIFICATIONS: &[Method] =
            &[$( Method { name: <$t as Notification>::METHOD, params: ts::<$params>(), result: None } ),*];
    };
}

/// Declares each request's marker type, and `REQUESTS`.
macro_rules! requests {
    ($( $(#[$doc:meta])* $t:ident: $method:literal ($params:ty) -> $result:ty; )*) => {
        $(
            $(#[$doc])*
            pub enum $t {}
            impl Request for $t {
                type Params = $params;
                type Result = $result;
                const METHOD: &'static str = $method;
            }
        )*
        /// Every request, editor → sidecar.
        pub const REQUESTS: &[Method] = &[$(
            Method { name: <$t as Request>::METHOD, params: ts::<$params>(), result: Some(ts::<$result>()) }
        ),*];
    };
}

notifications! {
    /// On every change of the status, and once right after `initialized`.
    Status: "threadsync/status" (SyncStatus);
    /// A thread's state changed.
    ThreadStatus: "threadsync/threadStatus" (ThreadStatusParams);
    /// A thread's content changed on this machine, from either side.
    ThreadUpdated: "threadsync/threadUpdated" (ThreadUpdatedParams);
    /// A change made through the sidecar was refused for good and undone.
    Rollback: "threadsync/rollback" (RollbackParams);
}

requests! {
    /// The same object as the last `threadsync/status`.
    GetStatus: "threadsync/getStatus" (NoParams) -> SyncStatus;
    ListThreads: "threadsync/listThreads" (NoParams) -> ListThreadsResult;
    GetThread: "threadsync/getThread" (ThreadParams) -> ThreadFile;
    CreateThread: "threadsync/createThread" (Option<CreateThreadParams>) -> CreateThreadResult;
    AppendMessage: "threadsync/appendMessage" (AppendMessageParams) -> MessageResult;
    SetTitle: "threadsync/setTitle" (SetTitleParams) -> VersionResult;
    ListConflicts: "threadsync/listConflicts" (NoParams) -> ListConflictsResult;
    RestoreMessage: "threadsync/restoreMessage" (RestoreMessageParams) -> MessageResult;
    Metrics: "threadsync/metrics" (NoParams) -> MetricsResult;
}

/// Sync now, skipping the batching window and any backoff.
pub enum ForceSync {}

impl Command for ForceSync {
    const NAME: &'static str = "threadsync.forceSync";
    type Arguments = ForceSyncArgs;
    type Result = CommandDone;

    fn parse(arguments: &[Value]) -> Result<ForceSyncArgs, String> {
        match arguments {
            [] => Ok(ForceSyncArgs { thread_id: None }),
            [Value::String(s)] => Ok(ForceSyncArgs { thread_id: Some(s.clone()) }),
            other => Err(format!("forceSync takes [] or [\"<threadId>\"], not {}", Value::from(other.to_vec()))),
        }
    }
}

/// Keep one side of a conflict.
pub enum ResolveConflict {}

impl Command for ResolveConflict {
    const NAME: &'static str = "threadsync.resolveConflict";
    type Arguments = (ResolveConflictArg,);
    type Result = CommandDone;

    fn parse(arguments: &[Value]) -> Result<(ResolveConflictArg,), String> {
        // `choose` is read as a string first, so a wrong one gets its own message.
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Loose {
            conflict_id: String,
            choose: String,
        }
        let arg: Loose = arguments
            .first()
            .cloned()
            .and_then(|a| serde_json::from_value(a).ok())
            .ok_or("resolveConflict takes [{ \"conflictId\": …, \"choose\": \"local\" | \"remote\" }]")?;
        let choose = match arg.choose.as_str() {
            "local" => Side::Local,
            "remote" => Side::Remote,
            other => return Err(format!("choose must be \"local\" or \"remote\", not {other:?}")),
        };
        Ok((ResolveConflictArg { conflict_id: arg.conflict_id, choose },))
    }
}

/// Every command (advertised in `executeCommandProvider`).
pub const COMMANDS: &[Method] = &[command::<ForceSync>(), command::<ResolveConflict>()];

const fn command<C: Command>() -> Method
where
    C::Arguments: TS + 'static,
    C::Result: TS + 'static,
{
    Method { name: C::NAME, params: ts::<C::Arguments>(), result: Some(ts::<C::Result>()) }
}

// ---- payloads ---------------------------------------------------------------

/// The overall state; what a statusline shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub enum SyncState {
    Synced,
    Syncing,
    Pending,
    Offline,
    Error,
    Conflict,
    Unauthorized,
}

/// `threadsync/status` params and `threadsync/getStatus` result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct SyncStatus {
    pub state: SyncState,
    /// Threads with changes not yet on the server.
    pub pending: usize,
    pub conflicts: usize,
    /// The server has answered (and has not stopped answering since).
    pub online: bool,
    /// RFC 3339, or null when nothing was ever synced.
    pub last_sync: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub message: Option<String>,
}

/// One thread's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub enum ThreadState {
    Pending,
    Syncing,
    Synced,
    Conflict,
    Error,
}

/// `threadsync/threadStatus` params.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct ThreadStatusParams {
    pub thread_id: String,
    pub state: ThreadState,
    pub version: u64,
    /// RFC 3339, or null.
    pub last_sync: Option<String>,
    /// Why the thread file could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub error: Option<String>,
}

/// Where a change to a thread came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub enum Origin {
    Local,
    Remote,
}

/// `threadsync/threadUpdated` params.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct ThreadUpdatedParams {
    pub thread_id: String,
    pub version: u64,
    pub title: String,
    pub message_count: usize,
    pub origin: Origin,
}

/// `threadsync/rollback` params.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct RollbackParams {
    pub thread_id: String,
    pub reason: String,
}

/// The params of a request that takes none: `{}` by convention, though
/// anything is accepted (and ignored).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, TS)]
#[ts(type = "Record<string, never>")]
pub struct NoParams {}

impl<'de> Deserialize<'de> for NoParams {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| NoParams {})
    }
}

/// An item of `threadsync/listThreads`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct ThreadSummary {
    pub id: String,
    pub title: String,
    pub version: u64,
    pub message_count: usize,
    pub state: ThreadState,
    /// The assistant whose session this is (`claude-code`, `codex`,
    /// `gemini`); absent for threadsync's own threads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub source: Option<String>,
    /// The session's project, short (`team/api`, `team/api/cli`, `~/notes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub project: Option<String>,
}

impl ThreadSummary {
    /// Source and project, from a thread's env.
    pub fn origin(env: &serde_json::Value) -> (Option<String>, Option<String>) {
        let source = env.get("source").and_then(|s| s.as_str()).map(str::to_string);
        let project =
            env.get("project").and_then(crate::sources::project::Project::from_json).map(|p| p.label()).or_else(|| {
                let cwd = env.get("cwd")?.as_str()?;
                Some(cwd.rsplit('/').find(|s| !s.is_empty())?.to_string())
            });
        (source, project)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
pub struct ListThreadsResult {
    pub threads: Vec<ThreadSummary>,
}

/// The params of the requests about one thread.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ThreadParams {
    pub thread_id: String,
}

/// A thread as in its file (protocol.md, "Thread files"), unknown fields
/// included.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
#[ts(type = "Record<string, unknown>")]
pub struct ThreadFile(pub Value);

/// `threadsync/createThread` params (may be null).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct CreateThreadParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub title: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct CreateThreadResult {
    pub thread_id: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct AppendMessageParams {
    pub thread_id: String,
    pub role: String,
    /// A string or any JSON (content blocks).
    #[ts(type = "unknown")]
    pub content: Value,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestoreMessageParams {
    pub thread_id: String,
    pub message_id: String,
}

/// A message added (`appendMessage`) or brought back (`restoreMessage`),
/// and the thread's version after it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct MessageResult {
    pub message_id: Option<String>,
    pub version: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct SetTitleParams {
    pub thread_id: String,
    pub title: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
pub struct VersionResult {
    pub version: u64,
}

/// What both sides changed (protocol.md, "Conflicts").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "kebab-case")]
pub enum ConflictKind {
    Title,
    Env,
    Content,
    EditDelete,
    DeleteEdit,
}

/// An item of `threadsync/listConflicts` (protocol.md, "Conflicts").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct Conflict {
    pub id: String,
    pub thread_id: String,
    pub kind: ConflictKind,
    /// For message conflicts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub message_id: Option<String>,
    /// The value both sides started from.
    #[ts(type = "unknown")]
    pub base: Value,
    /// The value the refused change wanted (null: delete).
    #[ts(type = "unknown")]
    pub local: Value,
    /// The value the thread keeps (null: the message is gone).
    #[ts(type = "unknown")]
    pub remote: Value,
    /// For message conflicts: the message as it was at the base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional, type = "unknown")]
    pub base_message: Option<Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
pub struct ListConflictsResult {
    pub conflicts: Vec<Conflict>,
}

/// Counters and timings of the sync pipeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct SyncMetrics {
    pub pushes: u64,
    pub pulls: u64,
    pub failures: u64,
    pub items_pushed: u64,
    pub bytes_pushed: u64,
    pub bytes_pulled: u64,
    pub conflicts: u64,
    pub conflict_rate: f64,
    pub sync_p50_ms: Option<u64>,
    pub sync_p95_ms: Option<u64>,
    pub slow_syncs: u64,
    pub batch_limit: usize,
    pub byte_budget: u64,
    pub avg_batch_size: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct MetricsResult {
    pub sync: SyncMetrics,
    pub pending_threads: usize,
}

/// `threadsync.forceSync` arguments: `[]` syncs everything, `[threadId]`
/// that thread.
#[derive(Clone, Debug, PartialEq, Eq, TS)]
#[ts(type = "[] | [threadId: string]")]
pub struct ForceSyncArgs {
    pub thread_id: Option<String>,
}

/// Which side of a conflict to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub enum Side {
    Local,
    Remote,
}

/// The one argument of `threadsync.resolveConflict`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct ResolveConflictArg {
    pub conflict_id: String,
    pub choose: Side,
}

/// What a command answers once it is done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct CommandDone {
    pub ok: bool,
}

impl CommandDone {
    pub const OK: CommandDone = CommandDone { ok: true };
}

// ---- from the engine --------------------------------------------------------

impl From<engine::State> for SyncState {
    fn from(s: engine::State) -> Self {
        match s {
            engine::State::Synced => SyncState::Synced,
            engine::State::Syncing => SyncState::Syncing,
            engine::State::Pending => SyncState::Pending,
            engine::State::Offline => SyncState::Offline,
            engine::State::Error => SyncState::Error,
            engine::State::Conflict => SyncState::Conflict,
            engine::State::Unauthorized => SyncState::Unauthorized,
        }
    }
}

impl From<&engine::Status> for SyncStatus {
    fn from(s: &engine::Status) -> Self {
        SyncStatus {
            state: s.state.into(),
            pending: s.pending,
            conflicts: s.conflicts,
            online: s.online,
            last_sync: s.last_sync.map(|t| rfc3339(t.as_millis())),
            message: s.message.clone(),
        }
    }
}

impl From<engine::ThreadState> for ThreadState {
    fn from(s: engine::ThreadState) -> Self {
        match s {
            engine::ThreadState::Pending => ThreadState::Pending,
            engine::ThreadState::Syncing => ThreadState::Syncing,
            engine::ThreadState::Synced => ThreadState::Synced,
            engine::ThreadState::Conflict => ThreadState::Conflict,
            engine::ThreadState::Error => ThreadState::Error,
        }
    }
}

impl From<&engine::ThreadStatus> for ThreadStatusParams {
    fn from(s: &engine::ThreadStatus) -> Self {
        ThreadStatusParams {
            thread_id: s.thread_id.to_string(),
            state: s.state.into(),
            version: s.version,
            last_sync: s.last_sync.map(|t| rfc3339(t.as_millis())),
            error: s.error.clone(),
        }
    }
}

impl From<engine::Origin> for Origin {
    fn from(o: engine::Origin) -> Self {
        match o {
            engine::Origin::Local => Origin::Local,
            engine::Origin::Remote => Origin::Remote,
        }
    }
}

impl From<merge::ConflictKind> for ConflictKind {
    fn from(k: merge::ConflictKind) -> Self {
        match k {
            merge::ConflictKind::Title => ConflictKind::Title,
            merge::ConflictKind::Env => ConflictKind::Env,
            merge::ConflictKind::Content => ConflictKind::Content,
            merge::ConflictKind::EditDelete => ConflictKind::EditDelete,
            merge::ConflictKind::DeleteEdit => ConflictKind::DeleteEdit,
        }
    }
}

/// Fails only on content the store did not load (elided content never
/// serialises).
impl TryFrom<&merge::Conflict> for Conflict {
    type Error = String;

    fn try_from(c: &merge::Conflict) -> Result<Self, String> {
        let err = |e: serde_json::Error| format!("conflict {}: {e}", c.id);
        Ok(Conflict {
            id: c.id.clone(),
            thread_id: c.thread_id.to_string(),
            kind: c.kind.into(),
            message_id: c.message_id.as_ref().map(|m| m.to_string()),
            base: serde_json::to_value(&c.base).map_err(err)?,
            local: c.local.clone(),
            remote: c.remote.clone(),
            base_message: c.base_message.as_deref().map(serde_json::to_value).transpose().map_err(err)?,
        })
    }
}

impl From<engine::monitor::MetricsSnapshot> for SyncMetrics {
    fn from(m: engine::monitor::MetricsSnapshot) -> Self {
        // Destructured, so a new counter cannot be left off the wire unnoticed.
        let engine::monitor::MetricsSnapshot {
            pushes,
            pulls,
            failures,
            items_pushed,
            bytes_pushed,
            bytes_pulled,
            conflicts,
            conflict_rate,
            sync_p50_ms,
            sync_p95_ms,
            slow_syncs,
            batch_limit,
            byte_budget,
            avg_batch_size,
        } = m;
        SyncMetrics {
            pushes,
            pulls,
            failures,
            items_pushed,
            bytes_pushed,
            bytes_pulled,
            conflicts,
            conflict_rate,
            sync_p50_ms,
            sync_p95_ms,
            slow_syncs,
            batch_limit,
            byte_budget,
            avg_batch_size,
        }
    }
}

impl From<Side> for engine::Choice {
    fn from(s: Side) -> Self {
        match s {
            Side::Local => engine::Choice::Local,
            Side::Remote => engine::Choice::Remote,
        }
    }
}

/// RFC 3339 (UTC, milliseconds) from ms since the Unix epoch: how times
/// travel to editors.
pub fn rfc3339(ms: u64) -> String {
    let (secs, millis) = (ms / 1000, ms % 1000);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

// ---- generated editor code --------------------------------------------------

/// The command that rewrites the generated files.
pub const REGENERATE: &str = "THREADSYNC_BLESS=1 cargo test --test tidy";

/// A payload type as TypeScript: its name, and how to declare it with the
/// declared types it uses.
#[derive(Clone, Copy)]
struct Ts {
    name: fn(&Config) -> String,
    declare: fn(&mut Decls),
}

const fn ts<T: TS + 'static>() -> Ts {
    Ts { name: T::name, declare: declare::<T> }
}

fn declare<T: TS + 'static>(d: &mut Decls) {
    d.visit::<T>();
    // A wrapper (`Option<T>`, a tuple) is not declared itself; what it wraps is.
    T::visit_generics(d);
}

/// Declarations of the types reached so far, in the order first reached.
struct Decls {
    cfg: Config,
    seen: HashSet<TypeId>,
    out: Vec<String>,
}

impl TypeVisitor for Decls {
    fn visit<T: TS + 'static + ?Sized>(&mut self) {
        // Only derived types have an output path; primitives have none.
        if T::output_path().is_none() || !self.seen.insert(TypeId::of::<T>()) {
            return;
        }
        self.out.push(format!("{}export {}", T::docs().unwrap_or_default(), layout(&T::decl(&self.cfg))));
        T::visit_dependencies(self);
    }
}

/// One field a line: ts-rs writes an object type on one line, with its
/// fields' doc comments inside it.
fn layout(decl: &str) -> String {
    let (Some(open), Some(body)) = (decl.find("= { "), decl.strip_suffix(" };")) else { return decl.to_string() };
    let mut fields = Vec::new();
    let (mut field, mut depth, mut comment) = (String::new(), 0, false);
    let mut chars = body[open + 4..].chars().peekable();
    while let Some(c) = chars.next() {
        field.push(c);
        match c {
            '/' if !comment && chars.peek() == Some(&'*') => comment = true,
            '/' if comment && field.ends_with("*/") => comment = false,
            '{' | '[' | '(' | '<' if !comment => depth += 1,
            '}' | ']' | ')' | '>' if !comment => depth -= 1,
            ',' if !comment && depth == 0 => fields.push(std::mem::take(&mut field)),
            _ => {}
        }
    }
    let mut out = format!("{}{{\n", &decl[..open + 2]);
    for f in fields.iter().map(|f| f.trim()).filter(|f| !f.is_empty()) {
        for line in f.lines() {
            out.push_str(&format!("  {}\n", line.trim_end()));
        }
    }
    out.push_str("};");
    out
}

/// The groups of the surface: their TypeScript and Lua names, and the
/// prefix their keys drop.
const GROUPS: [(&str, &str, &str, &[Method]); 3] = [
    ("Notifications", "notifications", "threadsync/", NOTIFICATIONS),
    ("Requests", "requests", "threadsync/", REQUESTS),
    ("SidecarCommands", "commands", "threadsync.", COMMANDS),
];

fn key<'a>(prefix: &str, name: &'a str) -> &'a str {
    name.strip_prefix(prefix).unwrap_or(name)
}

fn header(comment: &str) -> String {
    format!(
        "{comment} Generated from src/lsp/protocol.rs; do not edit. Regenerate with\n\
         {comment}   {REGENERATE}\n\
         {comment} (the same test fails while this file is out of date).\n"
    )
}

/// `editors/vscode/src/protocol.generated.ts`: every payload type, the
/// method names, and each method's types by name.
pub fn typescript() -> String {
    let mut d = Decls { cfg: Config::new().with_large_int("number"), seen: HashSet::new(), out: Vec::new() };
    for (_, _, _, methods) in GROUPS {
        for m in methods {
            (m.params.declare)(&mut d);
            if let Some(r) = m.result {
                (r.declare)(&mut d);
            }
        }
    }
    let mut out = header("//");
    for decl in &d.out {
        out.push('\n');
        out.push_str(decl);
        out.push('\n');
    }
    let docs =
        ["Notifications, sidecar → editor.", "Requests, editor → sidecar.", "`workspace/executeCommand` commands."];
    for ((ts_name, _, prefix, methods), doc) in GROUPS.iter().zip(docs) {
        out.push_str(&format!("\n/** {doc} */\nexport const {ts_name} = {{\n"));
        for m in *methods {
            out.push_str(&format!("  {}: '{}',\n", key(prefix, m.name), m.name));
        }
        out.push_str("} as const;\n");
    }
    out.push_str(&format!("\n/** The error code of a request the sync engine cannot serve. */\nexport const ENGINE_ERROR = {ENGINE_ERROR};\n"));
    let cfg = &d.cfg;
    let maps = [
        ("NotificationParams", "The params of each notification.", NOTIFICATIONS, "params"),
        ("RequestTypes", "The params and result of each request.", REQUESTS, "params"),
        ("CommandTypes", "The arguments and result of each command.", COMMANDS, "arguments"),
    ];
    for (ts_name, doc, methods, params) in maps {
        out.push_str(&format!("\n/** {doc} */\nexport type {ts_name} = {{\n"));
        for m in methods {
            let p = (m.params.name)(cfg);
            match m.result {
                None => out.push_str(&format!("  '{}': {p};\n", m.name)),
                Some(r) => out.push_str(&format!("  '{}': {{ {params}: {p}; result: {} }};\n", m.name, (r.name)(cfg))),
            }
        }
        out.push_str("};\n");
    }
    out
}

/// `editors/nvim/lua/threadsync/protocol.lua`: the method names.
pub fn lua() -> String {
    let mut out = header("--");
    out.push_str("-- The sidecar's method names (protocol.md, \"The sidecar\").\n");
    out.push_str("return {\n");
    for (_, lua_name, prefix, methods) in GROUPS {
        out.push_str(&format!("  {lua_name} = {{\n"));
        for m in methods {
            out.push_str(&format!("    {} = '{}',\n", key(prefix, m.name), m.name));
        }
        out.push_str("  },\n");
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rfc3339_formats_utc_milliseconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_732_460_001_234), "2024-11-24T14:53:21.234Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    /// The JSON editors have always received, field for field.
    #[test]
    fn payloads_keep_their_wire_shape() {
        let status = |message: Option<&str>, last_sync| {
            let s = engine::Status {
                state: engine::State::Offline,
                pending: 2,
                conflicts: 1,
                online: false,
                last_sync,
                message: message.map(String::from),
            };
            serde_json::to_value(SyncStatus::from(&s)).unwrap()
        };
        assert_eq!(
            status(None, None),
            json!({ "state": "offline", "pending": 2, "conflicts": 1, "online": false, "lastSync": null })
        );
        assert_eq!(
            status(Some("server unreachable"), Some(crate::time::Time(0))),
            json!({ "state": "offline", "pending": 2, "conflicts": 1, "online": false,
                    "lastSync": "1970-01-01T00:00:00.000Z", "message": "server unreachable" })
        );
        let ts = engine::ThreadStatus {
            thread_id: crate::model::ThreadId::new("T-1").unwrap(),
            state: engine::ThreadState::Error,
            version: 3,
            last_sync: None,
            error: Some("bad JSON".into()),
        };
        assert_eq!(
            serde_json::to_value(ThreadStatusParams::from(&ts)).unwrap(),
            json!({ "threadId": "T-1", "state": "error", "version": 3, "lastSync": null, "error": "bad JSON" })
        );
        let m = serde_json::to_value(MetricsResult {
            sync: engine::monitor::MetricsSnapshot::default().into(),
            pending_threads: 0,
        })
        .unwrap();
        assert_eq!(m["sync"]["syncP50Ms"], Value::Null);
        assert_eq!(m["sync"]["avgBatchSize"], json!(0.0));
        assert_eq!(m["pendingThreads"], 0);
        assert_eq!(
            serde_json::to_value(MessageResult { message_id: None, version: 1 }).unwrap()["messageId"],
            Value::Null
        );
        assert_eq!(
            serde_json::to_value(CreateThreadResult { thread_id: "T".into() }).unwrap(),
            json!({ "threadId": "T" })
        );
        assert_eq!(serde_json::to_value(CommandDone::OK).unwrap(), json!({ "ok": true }));
    }

    #[test]
    fn requests_without_params_take_anything() {
        for p in [json!({}), json!(null), json!([]), json!({ "x": 1 })] {
            assert_eq!(serde_json::from_value::<NoParams>(p).unwrap(), NoParams {});
        }
        assert!(serde_json::from_value::<ThreadParams>(json!({ "threadId": "T", "x": 1 })).is_err());
    }

    #[test]
    fn command_arguments_are_read_with_clear_errors() {
        assert_eq!(ForceSync::parse(&[]).unwrap(), ForceSyncArgs { thread_id: None });
        assert_eq!(ForceSync::parse(&[json!("T-1")]).unwrap(), ForceSyncArgs { thread_id: Some("T-1".into()) });
        assert_eq!(ForceSync::parse(&[json!(1)]).unwrap_err(), "forceSync takes [] or [\"<threadId>\"], not [1]");
        let (arg,) = ResolveConflict::parse(&[json!({ "conflictId": "c-1", "choose": "remote" })]).unwrap();
        assert_eq!(arg, ResolveConflictArg { conflict_id: "c-1".into(), choose: Side::Remote });
        let both = ResolveConflict::parse(&[json!({ "conflictId": "c-1", "choose": "both" })]).unwrap_err();
        assert_eq!(both, "choose must be \"local\" or \"remote\", not \"both\"");
        assert!(ResolveConflict::parse(&[]).unwrap_err().starts_with("resolveConflict takes"));
    }
}
