use super::*;
use serde_json::json;

struct Tmp(PathBuf);
impl Tmp {
    fn new(tag: &str) -> Tmp {
        let p = std::env::temp_dir().join(format!("ts-stores-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }
}
impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn repo(dir: &Path, remote: &str) {
    std::fs::create_dir_all(dir.join(".git")).unwrap();
    std::fs::write(dir.join(".git/config"), format!("[remote \"origin\"]\n\turl = {remote}\n")).unwrap();
}

fn stores(home: &Path) -> Stores {
    let all = Source::ALL.map(|source| Store { source, root: Store::default_root(source, home), projects: Vec::new() });
    Stores::new(all.to_vec(), home.to_path_buf(), true)
}

#[test]
fn a_directory_is_named_by_its_repository_and_the_path_inside() {
    let t = Tmp::new("identify");
    let home = t.0.join("home");
    let checkout = home.join("work/api");
    repo(&checkout, "git@github.com:Team/api.git");
    std::fs::create_dir_all(checkout.join("cli/src")).unwrap();
    assert_eq!(
        identify(&checkout.join("cli/src"), &home),
        Some(Project::Repo { repo: "github.com/Team/api".into(), path: "cli/src".into() })
    );
    // A worktree's `.git` is a file pointing into the main repository.
    let wt = home.join("wt");
    std::fs::create_dir_all(checkout.join(".git/worktrees/wt")).unwrap();
    std::fs::write(checkout.join(".git/worktrees/wt/commondir"), "../..\n").unwrap();
    std::fs::create_dir_all(&wt).unwrap();
    std::fs::write(wt.join(".git"), format!("gitdir: {}\n", checkout.join(".git/worktrees/wt").display())).unwrap();
    assert_eq!(identify(&wt, &home), Some(Project::Repo { repo: "github.com/Team/api".into(), path: "".into() }));
    // No repository: the path under home; outside home: nothing.
    std::fs::create_dir_all(home.join("notes")).unwrap();
    assert_eq!(identify(&home.join("notes"), &home), Some(Project::Home { path: "notes".into() }));
    assert_eq!(identify(Path::new("/"), &home), None);
}

#[test]
fn a_session_from_elsewhere_goes_where_each_client_resumes_it() {
    let t = Tmp::new("place");
    let home = t.0.join("b");
    let checkout = home.join("code/api-server");
    repo(&checkout, "https://github.com/team/api");
    let mut s = stores(&home);
    s.add_workspace(&checkout);
    let id = Source::ClaudeCode.thread_id("3f0c").unwrap();
    // Made on another machine in /home/ann/src/api/cli: the same repository.
    let env = json!({"source": "claude-code", "session": "3f0c", "cwd": "/home/ann/src/api/cli",
                     "project": {"repo": "github.com/team/api", "path": "cli"}});
    let (_, p) = s.place(&id, &env).unwrap();
    let dir = claude::project_dir_name(&checkout.join("cli").to_string_lossy());
    assert_eq!(p, home.join(".claude/projects").join(&dir).join("3f0c.jsonl"));
    // No checkout of it here: the same place under this home.
    // A subagent's transcript goes where it was under the project's directory.
    let env = json!({"source": "claude-code", "session": "3f0c", "file": "3f0c/subagents/agent-a1b2.jsonl",
                     "project": {"repo": "github.com/team/api", "path": "cli"}});
    let (_, p) = s.place(&Source::ClaudeCode.thread_id("3f0c-agent-a1b2").unwrap(), &env).unwrap();
    assert_eq!(p, home.join(".claude/projects").join(&dir).join("3f0c/subagents/agent-a1b2.jsonl"));
    for bad in ["../x.jsonl", "3f0c/../../x.jsonl", "a/b.jsonl", "3f0c/subagents/x.txt"] {
        let env = json!({"source": "claude-code", "session": "../../etc", "file": bad});
        assert!(s.place(&id, &env).is_err(), "{bad}");
    }
    let env = json!({"source": "claude-code", "session": "3f0c", "cwd": "/home/ann/src/other",
                     "project": {"repo": "github.com/team/other", "path": ""}});
    let (_, p) = s.place(&id, &env).unwrap();
    let dir = claude::project_dir_name(&home.join("src/other").to_string_lossy());
    assert_eq!(p, home.join(".claude/projects").join(dir).join("3f0c.jsonl"));

    let sid = "0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
    let file = format!("2026/12/06/rollout-2026-12-06T10-00-00-{sid}.jsonl");
    let env = json!({"source": "codex", "session": sid, "file": file});
    let (_, p) = s.place(&Source::Codex.thread_id(sid).unwrap(), &env).unwrap();
    assert_eq!(p, home.join(".codex/sessions").join(&file));
    // A hostile file name never leaves the store.
    for bad in ["../../../.bashrc", "2026/12/06/../../x.jsonl", "/etc/passwd"] {
        let env = json!({"source": "codex", "session": sid, "file": bad});
        assert!(s.place(&Source::Codex.thread_id(sid).unwrap(), &env).is_err(), "{bad}");
    }

    std::fs::create_dir_all(home.join(".gemini")).unwrap();
    std::fs::write(
        home.join(".gemini/projects.json"),
        serde_json::to_vec(&json!({"projects": {checkout.to_string_lossy(): "api-server-1"}})).unwrap(),
    )
    .unwrap();
    let env = json!({"source": "gemini", "session": "5e6f", "file": "session-2026-12-06T10-00-5e6f0000.jsonl",
                     "project": {"repo": "github.com/team/api", "path": ""}});
    let (_, p) = s.place(&Source::Gemini.thread_id("5e6f").unwrap(), &env).unwrap();
    assert_eq!(p, home.join(".gemini/tmp/api-server-1/chats/session-2026-12-06T10-00-5e6f0000.jsonl"));
    // Not in projects.json: the name Gemini will give it, past a taken one.
    std::fs::create_dir_all(home.join(".gemini/tmp/code")).unwrap();
    std::fs::write(home.join(".gemini/tmp/code/.project_root"), "/somewhere/else/code").unwrap();
    let env = json!({"source": "gemini", "session": "5e6f", "file": "session-2026-12-06T10-00-5e6f0000.jsonl",
                     "project": {"home": "Code"}});
    std::fs::create_dir_all(home.join("Code")).unwrap();
    let (_, p) = s.place(&Source::Gemini.thread_id("5e6f").unwrap(), &env).unwrap();
    assert_eq!(p, home.join(".gemini/tmp/code-1/chats/session-2026-12-06T10-00-5e6f0000.jsonl"));
    let env = json!({"source": "gemini", "session": "5e6f", "file": "../x.jsonl"});
    assert!(s.place(&Source::Gemini.thread_id("5e6f").unwrap(), &env).is_err());
}

#[test]
fn session_files_are_recognised_and_limited_to_the_projects_asked_for() {
    let t = Tmp::new("classify");
    let home = t.0.clone();
    let api = home.join("src/api");
    repo(&api, "git@github.com:team/api.git");
    let claude = home.join(".claude/projects/-x-src-api");
    std::fs::create_dir_all(&claude).unwrap();
    let line = json!({"type": "user", "cwd": api.to_string_lossy(), "sessionId": "s1", "uuid": "u1"});
    std::fs::write(claude.join("s1.jsonl"), format!("{line}\n")).unwrap();
    let other = json!({"type": "user", "cwd": home.join("elsewhere").to_string_lossy(), "sessionId": "s2"});
    std::fs::write(claude.join("s2.jsonl"), format!("{other}\n")).unwrap();
    std::fs::write(claude.join("notes.txt"), "x").unwrap();
    let root = home.join(".claude/projects");
    let only_api =
        Store { source: Source::ClaudeCode, root: root.clone(), projects: vec!["github.com/team/api".into()] };
    let mut s = Stores::new(vec![only_api], home.clone(), true);
    assert_eq!(s.scan(), vec![claude.join("s1.jsonl")]);
    assert_eq!(s.classify(&claude.join("s1.jsonl")).unwrap().as_str(), "claude-s1");
    assert_eq!(s.counts(), vec![(Source::ClaudeCode, 1)]);
    let all = Store { source: Source::ClaudeCode, root, projects: Vec::new() };
    let mut s = Stores::new(vec![all], home.clone(), true);
    assert_eq!(s.scan().len(), 2);
    // A subagent's transcript is a thread of its own.
    let agent = claude.join("s1/subagents/agent-a1b2.jsonl");
    std::fs::create_dir_all(agent.parent().unwrap()).unwrap();
    std::fs::write(&agent, format!("{line}\n")).unwrap();
    assert_eq!(s.scan().len(), 3);
    assert_eq!(s.classify(&agent).unwrap().as_str(), "claude-s1-agent-a1b2");

    let gem = home.join(".gemini/tmp/api/chats");
    std::fs::create_dir_all(&gem).unwrap();
    let header =
        json!({"sessionId": "5e6f0000-1111", "projectHash": "x", "startTime": "2026-12-06T10:00:00Z", "kind": "main"});
    let turn = json!({"id": "m1", "type": "user", "content": [{"text": "hi"}]});
    let set = json!({"$set": {"messages": []}});
    let real = gem.join("session-2026-12-06T10-00-5e6f0000.jsonl");
    std::fs::write(&real, format!("{header}\n{set}\n{turn}\n")).unwrap();
    // What a resume can leave beside it: a header and the new context.
    std::fs::write(gem.join("session-2026-12-06T10-01-5e6f0000.jsonl"), format!("{header}\n{set}\n")).unwrap();
    let mut s = stores(&home);
    let found = s.scan();
    // A Gemini file without a turn yet is turned down, and taken once it has one.
    let fresh = gem.join("session-2026-12-06T11-00-77770000.jsonl");
    let h2 =
        json!({"sessionId": "77770000-2222", "projectHash": "x", "startTime": "2026-12-06T11:00:00Z", "kind": "main"});
    std::fs::write(&fresh, format!("{h2}\n")).unwrap();
    assert_eq!(s.classify(&fresh), None);
    assert_eq!(s.classify(&fresh), None, "declined, unchanged");
    std::fs::write(&fresh, format!("{h2}\n{turn}\n")).unwrap();
    assert_eq!(s.classify(&fresh).unwrap().as_str(), "gemini-77770000-2222");
    // Gemini's stray second file for one session is left alone.
    assert_eq!(found.iter().filter(|p| p.starts_with(&gem)).collect::<Vec<_>>(), vec![&real]);
    assert_eq!(s.path(&Source::Gemini.thread_id("5e6f0000-1111").unwrap()), Some(real.as_path()));
}

/// Without an entry in projects.json, a Gemini session's project is the
/// `.project_root` Gemini keeps in the project's folder.
#[test]
fn a_gemini_session_knows_its_directory_from_the_project_folder() {
    let t = Tmp::new("gemini-root");
    let home = t.0.clone();
    let api = home.join("src/api");
    repo(&api, "git@github.com:team/api.git");
    let folder = home.join(".gemini/tmp/api");
    std::fs::create_dir_all(folder.join("chats")).unwrap();
    std::fs::write(folder.join(".project_root"), api.to_string_lossy().as_bytes()).unwrap();
    let s = stores(&home);
    assert_eq!(s.session_dir(Source::Gemini, &folder.join("chats/session-x.jsonl")), Some(api));
}
