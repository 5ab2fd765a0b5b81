//! The `threadsync` binary. Subcommands arrive with their issues: `serve`
//! (the sync server), `token` and `lsp` (the editor sidecar). Until then it
//! offers what works: checking thread files.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use threadsync::model::{ThreadId, parse_thread_file};

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
    /// Checks thread files (`<threadId>.json`) the way the sidecar reads them.
    Check {
        /// Thread files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Check { files } => check(&files),
    }
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
    if path.extension().and_then(|e| e.to_str()) != Some("json") {
        return Err("a thread file is named <threadId>.json".into());
    }
    let id = ThreadId::new(stem).map_err(|e| format!("{stem:?} is not a thread id: {e}"))?;
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let t = parse_thread_file(&bytes, &id).map_err(|e| e.to_string())?;
    Ok(format!("{} messages, title {:?}", t.messages.len(), t.title))
}
