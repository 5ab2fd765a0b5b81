//! The `threadsync` binary: `serve` (the sync server), `token` (bearer
//! tokens), `lsp` (the editor sidecar), `check` (thread files).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use threadsync::model::{ThreadId, parse_thread_file};
use threadsync::server::TeamId;
use threadsync::server::http::ServerConfig;
use threadsync::server::run::{DbUrl, serve};
use threadsync::server::store::{new_token, token_hash};

#[derive(Parser)]
#[command(
    name = "threadsync",
    version,
    about = "Keeps AI coding-assistant threads in sync across machines and teammates"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the sync server.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "THREADSYNC_LISTEN", default_value = "127.0.0.1:7420")]
        listen: SocketAddr,
        /// sqlite://PATH or postgres://… (default: threadsync.db in the user's data directory).
        #[arg(long, env = "THREADSYNC_DB")]
        db: Option<String>,
        /// Largest request body in bytes, after decompression.
        #[arg(long, env = "THREADSYNC_MAX_BODY", default_value_t = 32 << 20)]
        max_body: usize,
        /// Largest message content in bytes.
        #[arg(long, env = "THREADSYNC_MAX_MESSAGE", default_value_t = 16 << 20)]
        max_message: usize,
        /// Seconds a client may take to send a request's headers (or stay
        /// idle between requests), or between two pieces of its body.
        #[arg(long, env = "THREADSYNC_READ_TIMEOUT", default_value = "30", value_parser = seconds)]
        read_timeout: Duration,
        /// Seconds a shutdown (SIGTERM, Ctrl-C) waits for requests in flight.
        #[arg(long, env = "THREADSYNC_SHUTDOWN_GRACE", default_value = "10", value_parser = seconds)]
        shutdown_grace: Duration,
        /// Changes of each team's log kept by compaction; a client whose
        /// cursor is older pulls whole threads again.
        #[arg(long, env = "THREADSYNC_KEEP_CHANGES", default_value_t = 100_000)]
        keep_changes: u64,
        /// Seconds between compactions of the logs that grew.
        #[arg(long, env = "THREADSYNC_COMPACT_EVERY", default_value = "600", value_parser = seconds)]
        compact_every: Duration,
        /// Longest a pull is held, in seconds (a client asks for less).
        #[arg(long, env = "THREADSYNC_MAX_WAIT", default_value = "300", value_parser = seconds)]
        max_wait: Duration,
        /// Seconds between the keep-alive bytes of a held pull (under the
        /// idle timeout of any proxy between clients and the server).
        #[arg(long, env = "THREADSYNC_HEARTBEAT", default_value = "20", value_parser = seconds)]
        heartbeat: Duration,
    },
    /// Manages bearer tokens (each maps to one team).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Manages read-only web links to one thread (`/s/<secret>`).
    Share {
        #[command(subcommand)]
        command: ShareCommand,
    },
    /// The editor sidecar: JSON-RPC (LSP framing) on stdin/stdout.
    Lsp {
        /// Accepted and ignored: stdio is the only transport, and LSP clients
        /// (vscode-languageclient among them) add this flag by convention.
        #[arg(long, hide = true)]
        stdio: bool,
    },
    /// Checks thread files (`<threadId>.json`) the way the sidecar reads them.
    Check {
        /// Thread files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Syncs without an editor (for terminal assistants): the sidecar with
    /// its configuration from the environment and the config file, until
    /// SIGTERM. Shares the state directory's lock with editor windows: only
    /// one of them syncs at a time.
    Daemon {
        /// A checkout of a project on this machine (repeatable): sessions of
        /// that repository from elsewhere go into it.
        #[arg(long = "project", value_name = "DIR")]
        projects: Vec<PathBuf>,
        /// Prints a systemd user unit that runs this daemon, and exits:
        /// `threadsync daemon --systemd-unit > ~/.config/systemd/user/threadsync.service`.
        #[arg(long)]
        systemd_unit: bool,
    },
    /// Prints what a statusline would show, and the assistants' stores found.
    Status,
    /// Puts a thread's file back from the server (an assistant's session
    /// into its store, e.g. after its 30-day cleanup; run it in the
    /// project's checkout).
    Restore {
        /// The thread (`claude-<session id>`, `codex-<id>`, `gemini-<id>`, …).
        thread: String,
    },
    /// Prints the completion script for a shell, e.g.
    /// `threadsync completions bash > ~/.local/share/bash-completion/completions/threadsync`.
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand)]
enum ShareCommand {
    /// Makes a read-only link to a team's thread and prints it (once; only
    /// its hash is stored).
    Create {
        /// The thread's id.
        thread: String,
        #[arg(long)]
        team: String,
        /// `never`, or e.g. `30m`, `12h`, `7d`.
        #[arg(long, default_value = "never")]
        expires: String,
        /// The server's address as readers reach it (e.g.
        /// `https://sync.example.com`); without it, the link's path alone.
        #[arg(long, env = "THREADSYNC_PUBLIC_URL")]
        url: Option<String>,
        #[arg(long, env = "THREADSYNC_DB")]
        db: Option<String>,
    },
    /// Lists links (ids, teams, threads, dates; never secrets).
    List {
        #[arg(long)]
        team: Option<String>,
        #[arg(long, env = "THREADSYNC_DB")]
        db: Option<String>,
    },
    /// Revokes the links whose id starts with PREFIX, at once.
    Revoke {
        prefix: String,
        #[arg(long)]
        team: Option<String>,
        #[arg(long, env = "THREADSYNC_DB")]
        db: Option<String>,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Creates a token for a team and prints it (once; only its hash is stored).
    Create {
        #[arg(long)]
        team: String,
        #[arg(long, env = "THREADSYNC_DB")]
        db: Option<String>,
    },
    /// Lists tokens (ids, teams, dates; never secrets).
    List {
        #[arg(long, env = "THREADSYNC_DB")]
        db: Option<String>,
    },
    /// Revokes the tokens whose id starts with PREFIX.
    Revoke {
        prefix: String,
        #[arg(long, env = "THREADSYNC_DB")]
        db: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            listen,
            db,
            max_body,
            max_message,
            read_timeout,
            shutdown_grace,
            keep_changes,
            compact_every,
            max_wait,
            heartbeat,
        } => {
            init_logs("info");
            let db = match db_url(db) {
                Ok(db) => db,
                Err(e) => return fail(&e),
            };
            let mut cfg = ServerConfig {
                max_body,
                read_timeout,
                shutdown_grace,
                keep_changes,
                compact_every,
                max_wait,
                heartbeat,
                ..ServerConfig::default()
            };
            cfg.limits.max_message_bytes = max_message;
            let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => return fail(&format!("cannot start the runtime: {e}")),
            };
            match rt.block_on(serve(listen, db, cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
        Command::Token { command } => {
            init_logs("warn");
            match token(command) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
        Command::Share { command } => {
            init_logs("warn");
            match share(command) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
        Command::Lsp { stdio: _ } => threadsync::lsp::run(),
        Command::Check { files } => check(&files),
        Command::Daemon { projects, systemd_unit: true } => {
            let _ = projects;
            print!("{}", systemd_unit());
            ExitCode::SUCCESS
        }
        Command::Daemon { projects, systemd_unit: false } => {
            let projects = projects.into_iter().map(|p| std::path::absolute(&p).unwrap_or(p)).collect();
            threadsync::daemon::run(projects)
        }
        Command::Status => threadsync::daemon::status(),
        Command::Restore { thread } => threadsync::daemon::restore(&thread),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "threadsync",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
    }
}

/// A positive number of seconds (fractions allowed), for `serve`'s timings.
fn seconds(v: &str) -> Result<Duration, String> {
    v.trim()
        .parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{v:?} is not a positive number of seconds"))
}

fn fail(e: &str) -> ExitCode {
    eprintln!("threadsync: {e}");
    ExitCode::FAILURE
}

/// Logs go to stderr; `THREADSYNC_LOG` (or `RUST_LOG`) filters them.
fn init_logs(default: &str) {
    let filter =
        std::env::var("THREADSYNC_LOG").or_else(|_| std::env::var("RUST_LOG")).unwrap_or_else(|_| default.to_string());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

fn db_url(db: Option<String>) -> Result<DbUrl, String> {
    match db {
        Some(s) => DbUrl::parse(&s),
        None => Ok(DbUrl::default_sqlite()),
    }
}

fn token(command: TokenCommand) -> Result<(), String> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let open = |db: Option<String>| {
        let db = db_url(db)?;
        db.open().map_err(|e| format!("cannot open {}: {e}", db.redacted()))
    };
    match command {
        TokenCommand::Create { team, db } => {
            let team = TeamId::new(team).map_err(|e| format!("bad team name: {e}"))?;
            let store = open(db)?;
            let (id, token) = new_token();
            store.insert_token(&id, &team, &token_hash(&token), now).map_err(|e| e.to_string())?;
            println!("{token}");
        }
        TokenCommand::List { db } => {
            let store = open(db)?;
            println!("{:<12} {:<24} {:<14} revoked", "id", "team", "created");
            for t in store.list_tokens().map_err(|e| e.to_string())? {
                let revoked = t.revoked.map_or_else(|| "-".to_string(), |r| r.to_string());
                println!("{:<12} {:<24} {:<14} {revoked}", t.id, t.team.as_str(), t.created);
            }
        }
        TokenCommand::Revoke { prefix, db } => {
            if prefix.is_empty() {
                return Err("give the id (or a prefix of it) of the token to revoke".into());
            }
            let store = open(db)?;
            let revoked = store.revoke_tokens(&prefix, now).map_err(|e| e.to_string())?;
            if revoked.is_empty() {
                return Err(format!("no live token has an id starting with {prefix:?}"));
            }
            for t in revoked {
                println!("revoked {} (team {})", t.id, t.team);
            }
        }
    }
    Ok(())
}

fn share(command: ShareCommand) -> Result<(), String> {
    use threadsync::server::web::share::{create_share, parse_expiry};
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let open = |db: Option<String>| {
        let db = db_url(db)?;
        db.open().map_err(|e| format!("cannot open {}: {e}", db.redacted()))
    };
    let team_of = |t: Option<String>| t.map(|t| TeamId::new(t).map_err(|e| format!("bad team name: {e}"))).transpose();
    let when = |ms: Option<i64>| ms.map_or_else(|| "-".to_string(), threadsync::server::web::rfc3339);
    match command {
        ShareCommand::Create { thread, team, expires, url, db } => {
            let team = TeamId::new(team).map_err(|e| format!("bad team name: {e}"))?;
            let thread = ThreadId::new(thread).map_err(|e| format!("bad thread id: {e}"))?;
            let ttl = parse_expiry(&expires)?;
            let store = open(db)?;
            let web = store.web().ok_or("this database serves no web pages")?;
            let (_, secret) = create_share(web, &team, &thread, now, ttl)?;
            println!("{}/s/{secret}", url.as_deref().unwrap_or("").trim_end_matches('/'));
        }
        ShareCommand::List { team, db } => {
            let team = team_of(team)?;
            let store = open(db)?;
            let web = store.web().ok_or("this database serves no web pages")?;
            println!("{:<12} {:<20} {:<32} {:<22} {:<22} state", "id", "team", "thread", "created", "expires");
            for s in web.shares(team.as_ref(), None).map_err(|e| e.to_string())? {
                let state = if s.revoked.is_some() {
                    "revoked"
                } else if s.live(now) {
                    "live"
                } else {
                    "expired"
                };
                let (created, expires) = (when(Some(s.created)), when(s.expires));
                println!(
                    "{:<12} {:<20} {:<32} {created:<22} {expires:<22} {state}",
                    s.id,
                    s.team.as_str(),
                    s.thread.as_str()
                );
            }
        }
        ShareCommand::Revoke { prefix, team, db } => {
            if prefix.is_empty() {
                return Err("give the id (or a prefix of it) of the link to revoke".into());
            }
            let team = team_of(team)?;
            let store = open(db)?;
            let web = store.web().ok_or("this database serves no web pages")?;
            let revoked = web.revoke_shares(team.as_ref(), &prefix, now).map_err(|e| e.to_string())?;
            if revoked.is_empty() {
                return Err(format!("no live link has an id starting with {prefix:?}"));
            }
            for s in revoked {
                println!("revoked {} (team {}, thread {})", s.id, s.team, s.thread);
            }
        }
    }
    Ok(())
}

fn check(files: &[PathBuf]) -> ExitCode {
    let mut ok = true;
    for path in files {
        match check_one(path) {
            Ok(summary) => println!("{}: ok ({summary})", path.display()),
            Err(e) => {
                ok = false;
                println!("{}: {e}", path.display());
            }
        }
    }
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn check_one(path: &std::path::Path) -> Result<String, String> {
    let stem = path.file_stem().and_then(|s| s.to_str()).ok_or("the file name is not valid UTF-8")?;
    let log = match path.extension().and_then(|e| e.to_str()) {
        Some("json") => false,
        Some("jsonl") => true,
        _ => return Err("a thread file is named <threadId>.json or <threadId>.jsonl".into()),
    };
    let id = ThreadId::new(stem).map_err(|e| format!("{stem:?} is not a thread id: {e}"))?;
    // As the sidecar: only a regular file, never through a symlink, and
    // never a fifo or a device (reading one would block or never end).
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if !meta.file_type().is_file() {
        let kind = if meta.file_type().is_symlink() { "a symlink" } else { "a fifo, socket or device" };
        return Err(format!("not a regular file ({kind}); the sidecar reads only regular files"));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    if !log {
        let t = parse_thread_file(&bytes, &id).map_err(|e| e.to_string())?;
        return Ok(format!("{} messages, title {:?}", t.messages.len(), t.title));
    }
    let (replay, errors, used) = threadsync::threadlog::replay(&bytes, &id).map_err(|e| e.to_string())?;
    if let Some(e) = errors.first() {
        return Err(format!("{e} ({} bad line(s) in all; the sidecar skips them)", errors.len()));
    }
    let t = replay.thread();
    let torn = if used < bytes.len() { "; its last line is not finished yet" } else { "" };
    Ok(format!("{} messages, title {:?}{torn}", t.messages.len(), t.title))
}

/// A systemd user unit for `threadsync daemon`, naming this binary.
fn systemd_unit() -> String {
    let exe = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "threadsync".into());
    format!(
        "[Unit]
Description=threadsync: keeps AI coding-assistant sessions in sync

[Service]
Type=exec
# Configuration: ~/.config/threadsync/config.json (server, token, sources).
ExecStart={exe} daemon
Restart=on-failure
RestartSec=5
# SIGTERM: the daemon finishes what it is writing and exits.
TimeoutStopSec=20

[Install]
WantedBy=default.target
"
    )
}
