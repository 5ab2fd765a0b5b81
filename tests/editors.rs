//! The editor integrations' own suites, run against this build's binary.
//!
//! Each suite is a script under `editors/` that installs what it needs into
//! `.cache/` (once; later runs reuse it) and then drives a real editor — headless
//! Neovim, VS Code's extension host in code-server — against a real
//! `threadsync serve` and real `threadsync lsp` processes. The scripts print
//! their own `N passed, N failed` line straight to the terminal, so the line
//! shows in `cargo test` output even though libtest captures this test's own
//! output.
//!
//! They run one at a time: on a two-core machine an editor, a browser and
//! several sidecars at once would turn timing into flakiness.

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn run_suite(script: &str) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let status = Command::new("bash")
        .arg(root.join(script))
        .current_dir(root)
        .env("THREADSYNC_BIN", env!("CARGO_BIN_EXE_threadsync"))
        .status()
        .unwrap_or_else(|e| panic!("cannot start {script}: {e}"));
    assert!(status.success(), "{script} failed ({status}); its output above says which case");
}

#[test]
fn neovim_plugin_in_headless_neovim() {
    run_suite("editors/nvim/tests/run.sh");
}

#[test]
fn vscode_extension_unit_and_sidecar_conversation() {
    run_suite("editors/vscode/test/run.sh");
}

#[test]
fn vscode_extension_in_code_server() {
    run_suite("editors/vscode/e2e/run.sh");
}
