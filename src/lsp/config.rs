//! Sidecar configuration: `initializationOptions`, then environment, then a
//! config file, then defaults. `workspace/didChangeConfiguration` applies the
//! same keys live.

use std::path::PathBuf;
use std::time::Duration;

use crate::engine::PollMode;
use crate::lsp::stores::Store;
use crate::sources::Source;

/// One assistant's store as configured: on or off, where, which projects.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceOption {
    pub source: Source,
    pub enabled: bool,
    pub root: Option<PathBuf>,
    pub projects: Vec<String>,
}

/// `sources`: `["claude-code", "codex"]`, or `{"claude-code": true,
/// "codex": {"root": "…", "projects": ["github.com/team/api"]}}`, or (env)
/// `claude-code,codex`.
fn parse_sources(v: &serde_json::Value) -> Result<Vec<SourceOption>, String> {
    use serde_json::Value;
    let named = |name: &str| {
        Source::from_name(name).ok_or_else(|| {
            let known: Vec<&str> = Source::ALL.iter().map(|s| s.name()).collect();
            format!("sources: unknown source {name:?} (known: {})", known.join(", "))
        })
    };
    let plain = |source| SourceOption { source, enabled: true, root: None, projects: Vec::new() };
    match v {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => {
            s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|n| named(n).map(plain)).collect()
        }
        Value::Array(a) => a
            .iter()
            .map(|n| n.as_str().ok_or_else(|| format!("sources: {n} is not a source name")).and_then(named).map(plain))
            .collect(),
        Value::Object(m) => m
            .iter()
            .map(|(name, o)| {
                let source = named(name)?;
                match o {
                    Value::Bool(on) => Ok(SourceOption { enabled: *on, ..plain(source) }),
                    Value::Object(o) => {
                        let root = match o.get("root") {
                            None | Some(Value::Null) => None,
                            Some(Value::String(r)) if !r.is_empty() => Some(PathBuf::from(r)),
                            Some(other) => return Err(format!("sources.{name}.root: expected a path, got {other}")),
                        };
                        let projects = match o.get("projects") {
                            None | Some(Value::Null) => Vec::new(),
                            Some(Value::Array(ps)) => ps
                                .iter()
                                .map(|p| {
                                    p.as_str()
                                        .map(str::to_string)
                                        .ok_or_else(|| format!("sources.{name}.projects: {p} is not a string"))
                                })
                                .collect::<Result<_, _>>()?,
                            Some(other) => {
                                return Err(format!("sources.{name}.projects: expected a list, got {other}"));
                            }
                        };
                        let enabled = o.get("enabled").and_then(Value::as_bool).unwrap_or(true);
                        Ok(SourceOption { source, enabled, root, projects })
                    }
                    other => Err(format!("sources.{name}: expected true, false or an object, got {other}")),
                }
            })
            .collect(),
        other => Err(format!("sources: expected a list or an object, got {other}")),
    }
}

/// `projectMap`: `{"github.com/team/api": "/home/me/src/api"}`.
fn parse_project_map(v: &serde_json::Value) -> Result<Vec<(String, PathBuf)>, String> {
    match v {
        serde_json::Value::Null => Ok(Vec::new()),
        serde_json::Value::Object(m) => m
            .iter()
            .map(|(k, p)| match p.as_str() {
                Some(p) if std::path::Path::new(p).is_absolute() => Ok((k.clone(), PathBuf::from(p))),
                _ => Err(format!("projectMap.{k}: expected an absolute path, got {p}")),
            })
            .collect(),
        other => Err(format!("projectMap: expected an object, got {other}")),
    }
}

/// The keys editors send (`interface.md`), all optional. Unknown keys are ignored.
/// (Logging is set by `THREADSYNC_LOG` / `THREADSYNC_LOG_FILE` alone: it starts
/// before `initialize`.)
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Options {
    pub server: Option<String>,
    pub token: Option<String>,
    pub threads_dir: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    /// `longpoll` (default), `adaptive`, or `fixed:<seconds>` (the seed's 5 s polling is `fixed:5`).
    pub poll: Option<String>,
    /// The assistants' stores to sync (none unless asked for).
    pub sources: Option<Vec<SourceOption>>,
    /// Replace secrets in what leaves the machine from those stores (default on).
    pub redact_secrets: Option<bool>,
    /// Projects checked out on this machine, by repository.
    pub project_map: Option<Vec<(String, PathBuf)>>,
    /// The editor's workspace folders (from `initialize` only).
    pub workspace: Option<Vec<PathBuf>>,
}

impl Options {
    /// `self` where set, else `other`.
    pub fn or(self, other: Options) -> Options {
        Options {
            server: self.server.or(other.server),
            token: self.token.or(other.token),
            threads_dir: self.threads_dir.or(other.threads_dir),
            state_dir: self.state_dir.or(other.state_dir),
            poll: self.poll.or(other.poll),
            sources: self.sources.or(other.sources),
            redact_secrets: self.redact_secrets.or(other.redact_secrets),
            project_map: self.project_map.or(other.project_map),
            workspace: self.workspace.or(other.workspace),
        }
    }

    pub fn from_env() -> Options {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Options {
            server: var("THREADSYNC_SERVER"),
            token: var("THREADSYNC_TOKEN"),
            threads_dir: var("THREADSYNC_THREADS_DIR").map(PathBuf::from),
            state_dir: var("THREADSYNC_STATE_DIR").map(PathBuf::from),
            poll: var("THREADSYNC_POLL"),
            sources: var("THREADSYNC_SOURCES").and_then(|s| {
                parse_sources(&serde_json::Value::String(s))
                    .map_err(|e| tracing::warn!("THREADSYNC_SOURCES: {e}; ignored"))
                    .ok()
            }),
            redact_secrets: var("THREADSYNC_REDACT_SECRETS")
                .map(|v| !matches!(v.as_str(), "0" | "false" | "off" | "no")),
            project_map: None,
            workspace: None,
        }
    }

    /// `$XDG_CONFIG_HOME/threadsync/config.json` (or `~/.config/…`).
    pub fn from_file() -> Options {
        let Some(path) = dir("XDG_CONFIG_HOME", ".config").map(|d| d.join("threadsync/config.json")) else {
            return Options::default();
        };
        let Ok(bytes) = std::fs::read(&path) else {
            return Options::default();
        };
        let parsed = serde_json::from_slice(&bytes).map_err(|e| e.to_string());
        parsed.and_then(|v| Options::from_value(&v)).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable config file");
            Options::default()
        })
    }

    /// Options from an LSP settings value: either the keys themselves or
    /// nested under `threadsync`. A key of the wrong type is an error naming
    /// it (rather than the whole object silently falling back to defaults);
    /// `null` and `""` mean "not set", which is what editors send for an
    /// empty setting. Unknown keys are ignored.
    pub fn from_value(v: &serde_json::Value) -> Result<Options, String> {
        use serde_json::Value;
        let v = v.get("threadsync").unwrap_or(v);
        let map = match v {
            Value::Null => return Ok(Options::default()),
            Value::Object(map) => map,
            other => return Err(format!("settings must be an object, not {other}")),
        };
        let text = |key: &str| match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone()).filter(|s| !s.is_empty())),
            Some(other) => Err(format!("{key}: expected a string, got {other}")),
        };
        Ok(Options {
            server: text("server")?,
            token: text("token")?,
            threads_dir: text("threadsDir")?.map(PathBuf::from),
            state_dir: text("stateDir")?.map(PathBuf::from),
            poll: text("poll")?,
            sources: map.get("sources").map(parse_sources).transpose()?.filter(|s| !s.is_empty()),
            redact_secrets: match map.get("redactSecrets") {
                None | Some(Value::Null) => None,
                Some(Value::Bool(b)) => Some(*b),
                Some(other) => return Err(format!("redactSecrets: expected true or false, got {other}")),
            },
            project_map: map.get("projectMap").map(parse_project_map).transpose()?.filter(|m| !m.is_empty()),
            workspace: None,
        })
    }
}

fn dir(var: &str, home_sub: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(home_sub)))
}

/// Resolved configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub server: String,
    pub token: Option<String>,
    pub threads_dir: PathBuf,
    pub state_dir: PathBuf,
    pub poll: PollMode,
    /// The assistants' stores synced, with their roots resolved.
    pub stores: Vec<Store>,
    pub redact_secrets: bool,
    pub project_map: Vec<(String, PathBuf)>,
    pub workspace: Vec<PathBuf>,
    pub home: PathBuf,
}

impl Config {
    pub fn resolve(o: &Options) -> Result<Config, String> {
        let data = dir("XDG_DATA_HOME", ".local/share").unwrap_or_else(|| PathBuf::from("."));
        let state = dir("XDG_STATE_HOME", ".local/state").unwrap_or_else(|| PathBuf::from("."));
        let poll = match o.poll.as_deref() {
            None | Some("longpoll") => PollMode::LongPoll { wait: crate::engine::LONG_POLL },
            Some("adaptive") => PollMode::Adaptive { base: Duration::from_secs(5), max: Duration::from_secs(60) },
            Some(p) => match p.strip_prefix("fixed:").and_then(|s| s.parse::<f64>().ok()) {
                Some(s) if s > 0.0 => PollMode::Fixed(Duration::from_secs_f64(s)),
                _ => return Err(format!("poll: {p:?} is not longpoll, adaptive or fixed:<seconds>")),
            },
        };
        let server = o.server.clone().unwrap_or_else(|| "http://127.0.0.1:7420".into());
        if !(server.starts_with("http://") || server.starts_with("https://")) {
            return Err(format!("server: {server:?} is not an http(s) URL"));
        }
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/"));
        let stores = o
            .sources
            .iter()
            .flatten()
            .filter(|s| s.enabled)
            .map(|s| Store {
                source: s.source,
                root: s.root.clone().unwrap_or_else(|| Store::default_root(s.source, &home)),
                projects: s.projects.clone(),
            })
            .collect();
        Ok(Config {
            stores,
            redact_secrets: o.redact_secrets.unwrap_or(true),
            project_map: o.project_map.clone().unwrap_or_default(),
            workspace: o.workspace.clone().unwrap_or_default(),
            home,
            server: server.trim_end_matches('/').to_string(),
            token: o.token.clone().filter(|t| !t.is_empty()),
            threads_dir: o.threads_dir.clone().unwrap_or_else(|| data.join("threadsync/threads")),
            state_dir: o.state_dir.clone().unwrap_or_else(|| state.join("threadsync")),
            poll,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sources(v: serde_json::Value) -> Result<Vec<SourceOption>, String> {
        Ok(Options::from_value(&json!({ "sources": v }))?.sources.unwrap_or_default())
    }

    fn on(source: Source, root: Option<&str>, projects: &[&str]) -> SourceOption {
        let projects = projects.iter().map(|p| p.to_string()).collect();
        SourceOption { source, enabled: true, root: root.map(PathBuf::from), projects }
    }

    #[test]
    fn sources_are_named_in_a_list_an_object_or_the_environment() {
        assert_eq!(
            sources(json!(["claude-code", "gemini"])).unwrap(),
            vec![on(Source::ClaudeCode, None, &[]), on(Source::Gemini, None, &[])]
        );
        let o =
            sources(json!({"codex": {"root": "/data/codex", "projects": ["github.com/team/api"]}, "gemini": false}));
        assert_eq!(
            o.unwrap(),
            vec![
                on(Source::Codex, Some("/data/codex"), &["github.com/team/api"]),
                SourceOption { enabled: false, ..on(Source::Gemini, None, &[]) }
            ]
        );
        assert_eq!(parse_sources(&json!("claude-code, codex")).unwrap().len(), 2);
        // Wrong shapes are errors that name the key.
        for (bad, says) in [
            (json!(["cursor"]), "unknown source \"cursor\""),
            (json!([1]), "1 is not a source name"),
            (json!({"codex": 1}), "sources.codex: expected true, false or an object"),
            (json!({"codex": {"projects": "x"}}), "sources.codex.projects: expected a list"),
            (json!({"codex": {"root": 5}}), "sources.codex.root: expected a path"),
            (json!(7), "sources: expected a list or an object"),
        ] {
            let e = sources(bad.clone()).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert!(Options::from_value(&json!({"redactSecrets": "yes"})).unwrap_err().contains("redactSecrets"));
        assert!(
            Options::from_value(&json!({"projectMap": {"x": "relative/path"}})).unwrap_err().contains("projectMap.x")
        );
    }

    #[test]
    fn enabled_stores_resolve_to_their_roots_and_redaction_is_on_by_default() {
        let o =
            Options::from_value(&json!({"sources": {"claude-code": true, "gemini": false, "codex": {"root": "/c"}}}))
                .unwrap();
        let cfg = Config::resolve(&o).unwrap();
        let stores: Vec<(Source, PathBuf)> = cfg.stores.iter().map(|s| (s.source, s.root.clone())).collect();
        assert_eq!(
            stores,
            vec![(Source::ClaudeCode, cfg.home.join(".claude/projects")), (Source::Codex, PathBuf::from("/c"))]
        );
        assert!(cfg.redact_secrets);
        let off = Options::from_value(&json!({"redactSecrets": false})).unwrap();
        assert!(!Config::resolve(&off).unwrap().redact_secrets);
        assert!(Config::resolve(&Options::default()).unwrap().stores.is_empty(), "every store is opt-in");
    }
}
