//! Sidecar configuration: `initializationOptions`, then environment, then a
//! config file, then defaults. `workspace/didChangeConfiguration` applies the
//! same keys live.

use std::path::PathBuf;
use std::time::Duration;

use crate::engine::PollMode;

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
        Ok(Config {
            server: server.trim_end_matches('/').to_string(),
            token: o.token.clone().filter(|t| !t.is_empty()),
            threads_dir: o.threads_dir.clone().unwrap_or_else(|| data.join("threadsync/threads")),
            state_dir: o.state_dir.clone().unwrap_or_else(|| state.join("threadsync")),
            poll,
        })
    }
}
