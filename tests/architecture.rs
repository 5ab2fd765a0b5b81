//! The architecture invariants of ARCHITECTURE.md that can be read off the
//! source, checked: what the pure core may use, what the HTTP handlers may
//! decide, and how long a file may grow.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir` (or `dir` itself if it is a file).
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    if dir.is_file() {
        return vec![dir.to_path_buf()];
    }
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The source of `f` without its tests (`#[cfg(test)]` modules, and files
/// under a `tests` directory, may use anything).
fn code(f: &Path) -> String {
    if f.components().any(|c| c.as_os_str() == "tests") {
        return String::new();
    }
    let text = std::fs::read_to_string(f).unwrap();
    match text.find("#[cfg(test)]") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

fn offenders(paths: &[&str], forbidden: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for p in paths {
        for f in rust_files(&root().join(p)) {
            let text = code(&f);
            for (n, line) in text.lines().enumerate() {
                let line = line.split("//").next().unwrap();
                for bad in forbidden {
                    if line.contains(bad) {
                        out.push(format!("{}:{}: {bad}", f.strip_prefix(root()).unwrap().display(), n + 1));
                    }
                }
            }
        }
    }
    out
}

/// The decisions (model, operations, merge, the thread log, the client
/// engine, the server core, the secret scanner, the assistants' session
/// formats) never read the clock, do no I/O and draw no
/// randomness but from a seed: a run is a function of its inputs.
#[test]
fn the_pure_core_reads_no_clock_does_no_io_and_draws_no_unseeded_randomness() {
    let core = [
        "src/model.rs",
        "src/ops.rs",
        "src/merge.rs",
        "src/merge",
        "src/threadlog.rs",
        "src/time.rs",
        "src/engine",
        "src/server/core.rs",
        "src/secrets.rs",
        "src/sources",
    ];
    let forbidden = [
        "Instant",
        "SystemTime",
        "tokio",
        "std::fs",
        "std::net",
        "std::thread",
        "std::process",
        "std::env",
        "reqwest",
        "rusqlite",
        "axum",
        "thread_rng",
        "rand::rng(",
        "OsRng",
        "from_entropy",
    ];
    let bad = offenders(&core, &forbidden);
    assert!(bad.is_empty(), "the pure core uses what it must not:\n{}", bad.join("\n"));
}

/// HTTP handlers decide nothing about sync: they call the server core
/// (`core::push`, `core::pull`), never the merge's decisions.
#[test]
fn http_handlers_leave_the_decisions_to_the_core() {
    let bad = offenders(&["src/server/http"], &["decide(", "apply_effect(", "Doc::apply", "ops::diff"]);
    assert!(bad.is_empty(), "a handler decides:\n{}", bad.join("\n"));
}

/// No file under `src/` grows past ~600 lines unless its first lines say
/// why (`//! Longer than 600 lines: …`): a long file is a module owning too
/// much.
#[test]
fn no_source_file_is_over_600_lines_without_saying_why() {
    let mut long = Vec::new();
    for f in rust_files(&root().join("src")) {
        let text = std::fs::read_to_string(&f).unwrap();
        let lines = text.lines().count();
        let says_why = text.lines().take(10).any(|l| l.starts_with("//! Longer than 600 lines:"));
        if lines > 620 && !says_why {
            long.push(format!("{}: {lines} lines", f.strip_prefix(root()).unwrap().display()));
        }
    }
    assert!(long.is_empty(), "split these, or say why at the top:\n{}", long.join("\n"));
}
