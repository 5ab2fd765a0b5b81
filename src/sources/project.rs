//! Which project a session belongs to, in terms every machine shares.
//!
//! A working directory's path differs between machines (`/home/ann/src/api`
//! and `/Users/bo/work/api-server`); the repository does not. A project is
//! named by its repository's remote URL, normalised (`github.com/team/api`),
//! plus the path inside the checkout; a directory outside any repository
//! with a remote by its path under the home directory. The shell reads
//! `.git/config`; these functions only turn what it read into names.

use std::path::{Component, Path, PathBuf};

use serde_json::{Value, json};

/// A project as a machine-independent name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Project {
    /// A checkout of `repo` (a normalised remote URL), `path` inside it
    /// ("" for its root).
    Repo { repo: String, path: String },
    /// A directory under the home directory, by its relative path.
    Home { path: String },
}

impl Project {
    pub fn to_json(&self) -> Value {
        match self {
            Project::Repo { repo, path } => json!({ "repo": repo, "path": path }),
            Project::Home { path } => json!({ "home": path }),
        }
    }

    pub fn from_json(v: &Value) -> Option<Project> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        match (s("repo"), s("home")) {
            (Some(repo), _) => Some(Project::Repo { repo, path: s("path").unwrap_or_default() }),
            (None, Some(path)) => Some(Project::Home { path }),
            _ => None,
        }
    }

    /// A short label for thread lists: `team/api` or `~/notes`.
    pub fn label(&self) -> String {
        match self {
            Project::Repo { repo, path } => {
                let name = repo.split_once('/').map_or(repo.as_str(), |x| x.1);
                if path.is_empty() { name.to_string() } else { format!("{name}/{path}") }
            }
            Project::Home { path } => format!("~/{path}"),
        }
    }
}

/// `git@github.com:Team/api.git`, `https://user:pw@github.com/Team/api`,
/// `ssh://git@github.com:22/Team/api.git/` → `github.com/Team/api` (the
/// host lowercased; credentials, port, scheme and `.git` dropped).
pub fn normalize_remote(url: &str) -> Option<String> {
    let url = url.trim();
    let (host, path) = if let Some((_, rest)) = url.split_once("://") {
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let host = authority.rsplit_once('@').map_or(authority, |x| x.1);
        let host = host.split(':').next().unwrap_or(host);
        (host, path)
    } else if let Some((left, path)) = url.split_once(':')
        && !left.contains('/')
    {
        // scp-like: [user@]host:path
        (left.rsplit_once('@').map_or(left, |x| x.1), path)
    } else {
        // A local path as a remote: its last components are all there is.
        return None;
    };
    let path = path.trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path).trim_end_matches('/');
    if host.is_empty() || path.is_empty() {
        return None;
    }
    Some(format!("{}/{path}", host.to_ascii_lowercase()))
}

/// The URL of a repository's `origin` remote (else of its first remote)
/// from the text of its `.git/config`.
pub fn remote_from_git_config(text: &str) -> Option<String> {
    let mut section = String::new();
    let mut first = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line.trim_matches(|c| c == '[' || c == ']').replace('\'', "\"");
            continue;
        }
        let Some((key, value)) = line.split_once('=') else { continue };
        if key.trim() != "url" || !section.starts_with("remote ") {
            continue;
        }
        let value = value.trim().trim_matches('"').to_string();
        if section == "remote \"origin\"" {
            return Some(value);
        }
        first.get_or_insert(value);
    }
    first
}

/// `path` relative to `base` as a `/`-separated string, if it is inside.
pub fn relative(path: &Path, base: &Path) -> Option<String> {
    let rel = path.strip_prefix(base).ok()?;
    let parts: Option<Vec<&str>> = rel
        .components()
        .map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect();
    Some(parts?.join("/"))
}

/// Where `path` (a `/`-separated relative path) lands under `base`; None
/// if it would leave it.
pub fn under(base: &Path, path: &str) -> Option<PathBuf> {
    let mut out = base.to_path_buf();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        if part == "." || part == ".." || part.contains('\0') {
            return None;
        }
        out.push(part);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remotes_of_one_repository_normalise_to_one_name() {
        for url in [
            "git@github.com:Team/api.git",
            "https://github.com/Team/api",
            "https://user:secret@GitHub.com/Team/api.git/",
            "ssh://git@github.com:22/Team/api.git",
            "git://github.com/Team/api.git",
        ] {
            assert_eq!(normalize_remote(url).as_deref(), Some("github.com/Team/api"), "{url}");
        }
        assert_eq!(normalize_remote("/srv/git/api.git"), None);
        assert_eq!(normalize_remote("../api"), None);
        assert_eq!(normalize_remote("https://github.com/"), None);
    }

    #[test]
    fn the_origin_remote_wins() {
        let config = "[core]\n\tbare = false\n[remote \"upstream\"]\n\turl = git@x.org:a/b.git\n[remote \"origin\"]\n\turl = https://example.com/team/repo.git\n\tfetch = +refs/heads/*:refs/remotes/origin/*\n";
        assert_eq!(remote_from_git_config(config).as_deref(), Some("https://example.com/team/repo.git"));
        assert_eq!(remote_from_git_config("[remote \"fork\"]\nurl = a:b/c\n").as_deref(), Some("a:b/c"));
        assert_eq!(remote_from_git_config("[core]\nurl = nope\n"), None);
    }

    #[test]
    fn relative_paths_never_leave_their_base() {
        assert_eq!(relative(Path::new("/h/a/src/x"), Path::new("/h/a")).as_deref(), Some("src/x"));
        assert_eq!(relative(Path::new("/h/a"), Path::new("/h/a")).as_deref(), Some(""));
        assert_eq!(relative(Path::new("/h/b"), Path::new("/h/a")), None);
        assert_eq!(under(Path::new("/h"), "src/x"), Some(PathBuf::from("/h/src/x")));
        assert_eq!(under(Path::new("/h"), "../etc"), None);
        assert_eq!(under(Path::new("/h"), ""), Some(PathBuf::from("/h")));
    }

    #[test]
    fn projects_round_trip_and_label() {
        let p = Project::Repo { repo: "github.com/team/api".into(), path: "cli".into() };
        assert_eq!(Project::from_json(&p.to_json()), Some(p.clone()));
        assert_eq!(p.label(), "team/api/cli");
        let h = Project::Home { path: "notes".into() };
        assert_eq!(Project::from_json(&h.to_json()), Some(h.clone()));
        assert_eq!(h.label(), "~/notes");
    }
}
