//! The real binary: `threadsync check` reads thread files as the sidecar does.

use std::process::Command;

fn threadsync() -> Command {
    Command::new(env!("CARGO_BIN_EXE_threadsync"))
}

#[test]
fn version_and_help() {
    let out = threadsync().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("threadsync "));
    let out = threadsync().arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("check"));
}

#[test]
fn check_accepts_good_files_and_explains_bad_ones() {
    let dir = std::env::temp_dir().join(format!("threadsync-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("T-1.json");
    std::fs::write(
        &good,
        r#"{"id": "T-1", "title": "t", "messages": [{"role": "user", "content": "hi"}], "custom": 1}"#,
    )
    .unwrap();
    let out = threadsync().arg("check").arg(&good).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (1 messages"));

    let half = dir.join("T-2.json");
    std::fs::write(&half, r#"{"id": "T-2", "messages": [{"role": "us"#).unwrap();
    let hostile = dir.join("..bad.json");
    std::fs::write(&hostile, "{}").unwrap();
    let out = threadsync().arg("check").arg(&good).arg(&half).arg(&hostile).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("T-2.json: not valid thread JSON"), "{text}");
    assert!(text.contains("is not a thread id"), "{text}");

    // Logs: replayed as the sidecar reads them; a bad line is named.
    let log = dir.join("T-3.jsonl");
    std::fs::write(&log, "{\"type\":\"thread\",\"id\":\"T-3\",\"title\":\"l\"}\n{\"type\":\"message\",\"id\":\"a\",\"role\":\"user\",\"content\":\"x\"}\n{\"type\":\"delete\",\"id\":\"a\"}\n").unwrap();
    let out = threadsync().arg("check").arg(&log).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (0 messages, title \"l\")"));
    std::fs::write(&log, "{\"type\":\"thread\",\"id\":\"T-3\"}\n{\"type\":\"message\",\"role\":5}\n").unwrap();
    let out = threadsync().arg("check").arg(&log).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("line at byte"), "{}", String::from_utf8_lossy(&out.stdout));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Shell completions come from the command line's own definition: every
/// subcommand is in them, and the scripts are valid for their shells.
#[test]
fn completions_for_bash_zsh_and_fish() {
    for (shell, check) in [("bash", Some(("bash", "-n"))), ("zsh", None), ("fish", None)] {
        let out = threadsync().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}: {}", String::from_utf8_lossy(&out.stderr));
        let script = String::from_utf8(out.stdout).unwrap();
        for sub in ["serve", "token", "lsp", "check", "completions"] {
            assert!(script.contains(sub), "{shell} completions lack {sub}");
        }
        // The shell itself reads it, where this machine has that shell.
        if let Some((bin, flag)) = check {
            let dir = std::env::temp_dir().join(format!("threadsync-completions-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let file = dir.join(shell);
            std::fs::write(&file, &script).unwrap();
            let st = Command::new(bin).arg(flag).arg(&file).status().unwrap();
            assert!(st.success(), "{bin} {flag} rejects the {shell} completions");
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    let out = threadsync().args(["completions", "tcsh"]).output().unwrap();
    assert!(!out.status.success(), "an unknown shell is refused");
}

/// `threadsync daemon --systemd-unit` prints a user unit that systemd's own
/// checker accepts (no unknown keys, an executable ExecStart).
#[test]
fn the_systemd_user_unit_passes_systemd_analyze_verify() {
    let out = threadsync().args(["daemon", "--systemd-unit"]).output().unwrap();
    assert!(out.status.success());
    let unit = String::from_utf8(out.stdout).unwrap();
    assert!(unit.contains(&format!("ExecStart={} daemon", env!("CARGO_BIN_EXE_threadsync"))), "{unit}");
    let dir = std::env::temp_dir().join(format!("ts-unit-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("run")).unwrap();
    std::fs::set_permissions(dir.join("run"), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let path = dir.join("threadsync.service");
    std::fs::write(&path, &unit).unwrap();
    // A user manager's checks need a runtime directory of its own.
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--user"])
        .arg(&path)
        .env("XDG_RUNTIME_DIR", dir.join("run"))
        .output()
        .expect("systemd-analyze (Debian's systemd package; .ci/run installs it)");
    let said = String::from_utf8_lossy(&verify.stderr).into_owned() + &String::from_utf8_lossy(&verify.stdout);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(verify.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");
}
