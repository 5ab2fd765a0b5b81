//! Docs that cannot drift: protocol.md records a hash of the wire types
//! (`src/wire.rs`, `src/ops.rs`). Change them, update protocol.md, then the
//! hash this test prints.

use sha2::{Digest, Sha256};

#[test]
fn protocol_doc_matches_the_wire_types() {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut h = Sha256::new();
    for f in ["src/wire.rs", "src/ops.rs"] {
        let text = std::fs::read_to_string(format!("{root}/{f}")).unwrap();
        // Line endings must not matter.
        h.update(text.replace("\r\n", "\n").as_bytes());
    }
    let hash: String = h.finalize()[..8].iter().map(|b| format!("{b:02x}")).collect();
    let doc = std::fs::read_to_string(format!("{root}/protocol.md")).unwrap();
    let want = format!("<!-- wire-hash: {hash} -->");
    assert!(
        doc.contains(&want),
        "src/wire.rs or src/ops.rs changed: update protocol.md, then set its last line to\n{want}"
    );
}

// The sidecar's LSP surface is written once, in src/lsp/protocol.rs; the
// editors' copies are generated from it and protocol.md must name it all.

use threadsync::lsp::protocol::{self, COMMANDS, Method, NOTIFICATIONS, REQUESTS};

const TS_FILE: &str = "editors/vscode/src/protocol.generated.ts";
const LUA_FILE: &str = "editors/nvim/lua/threadsync/protocol.lua";

fn read(path: &str) -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    std::fs::read_to_string(format!("{root}/{path}")).unwrap_or_default().replace("\r\n", "\n")
}

/// With `THREADSYNC_BLESS=1`, writes `want` to `path` instead of checking it.
fn bless(path: &str, want: &str) -> bool {
    if std::env::var("THREADSYNC_BLESS").as_deref() != Ok("1") {
        return false;
    }
    std::fs::write(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")), want).unwrap();
    true
}

/// The surface as (group, key, name): `Notifications.status` is `threadsync/status`.
fn surface() -> Vec<(&'static str, &'static str, &'static str)> {
    let groups: [(&str, &str, &[Method]); 3] = [
        ("notifications", "threadsync/", NOTIFICATIONS),
        ("requests", "threadsync/", REQUESTS),
        ("commands", "threadsync.", COMMANDS),
    ];
    let mut out = Vec::new();
    for (group, prefix, methods) in groups {
        for m in methods {
            out.push((group, m.name.strip_prefix(prefix).unwrap(), m.name));
        }
    }
    out
}

fn names() -> std::collections::BTreeSet<&'static str> {
    surface().into_iter().map(|(_, _, name)| name).collect()
}

#[test]
fn vscode_protocol_types_are_generated_from_the_rust_types() {
    let want = protocol::typescript();
    if bless(TS_FILE, &want) {
        return;
    }
    let have = read(TS_FILE);
    if have != want {
        let line = have
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(have.lines().count().min(want.lines().count()));
        panic!(
            "{TS_FILE} is not what src/lsp/protocol.rs generates (first difference at line {}).\nRegenerate it with\n    {}",
            line + 1,
            protocol::REGENERATE
        );
    }
}

/// `group = { key = 'name', … }` entries of the generated Lua table.
fn lua_entries(text: &str) -> Vec<(String, String, String)> {
    let mut group = None;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(g) = line.strip_suffix(" = {") {
            group = Some(g.to_string());
        } else if line.starts_with('}') {
            group = None;
        } else if let (Some(g), Some((k, v))) = (&group, line.split_once(" = ")) {
            let v = v.trim_end_matches(',').trim_matches('\'');
            out.push((g.clone(), k.to_string(), v.to_string()));
        }
    }
    out
}

#[test]
fn neovim_method_names_are_the_rust_ones() {
    if bless(LUA_FILE, &protocol::lua()) {
        return;
    }
    let have: std::collections::BTreeSet<_> = lua_entries(&read(LUA_FILE)).into_iter().collect();
    let want: std::collections::BTreeSet<_> =
        surface().into_iter().map(|(g, k, n)| (g.to_string(), k.to_string(), n.to_string())).collect();
    let missing: Vec<_> = want.difference(&have).collect();
    let unknown: Vec<_> = have.difference(&want).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "{LUA_FILE} disagrees with src/lsp/protocol.rs: missing {missing:?}, unknown {unknown:?}.\nRegenerate it with\n    {}",
        protocol::REGENERATE
    );
}

/// The editors name methods only through their generated tables, so a
/// renamed method cannot linger in them as a string.
#[test]
fn editor_code_takes_method_names_from_the_tables() {
    let root = env!("CARGO_MANIFEST_DIR");
    let sources = [
        ("editors/nvim/lua/threadsync", "lua", "protocol.lua"),
        ("editors/nvim/lua/lualine/components", "lua", ""),
        ("editors/vscode/src", "ts", "protocol.generated.ts"),
    ];
    let mut found = Vec::new();
    for (dir, ext, generated) in sources {
        for entry in std::fs::read_dir(format!("{root}/{dir}")).unwrap() {
            let path = entry.unwrap().path();
            let file = path.file_name().unwrap().to_string_lossy().to_string();
            if file == generated || path.extension().is_none_or(|e| e != ext) {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for q in ['\'', '"'] {
                // Any quoted `threadsync/…` method, and every command name.
                for (i, _) in text.match_indices(&format!("{q}threadsync/")) {
                    let s = &text[i + 1..];
                    found.push(format!("{dir}/{file}: {}", &s[..s.find(q).unwrap_or(s.len())]));
                }
                for c in COMMANDS {
                    if text.contains(&format!("{q}{}{q}", c.name)) {
                        found.push(format!("{dir}/{file}: {}", c.name));
                    }
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "method names written out instead of taken from the generated tables:\n{}",
        found.join("\n")
    );
}

/// protocol.md's section on the sidecar names every method, notification
/// and command of src/lsp/protocol.rs, and nothing else.
#[test]
fn protocol_doc_names_every_sidecar_method() {
    let doc = read("protocol.md");
    let start = doc.find("\n## The sidecar").expect("protocol.md has a section \"## The sidecar\"");
    let section = &doc[start + 1..];
    let section = &section[..section[1..].find("\n## ").map_or(section.len(), |i| i + 1)];
    let mut mentioned = std::collections::BTreeSet::new();
    for (i, _) in section.match_indices("`threadsync") {
        let rest = &section[i + 1..];
        let end = rest.find('`').unwrap_or(rest.len());
        let token = &rest[..end];
        let named = token.strip_prefix("threadsync/").or_else(|| token.strip_prefix("threadsync."));
        if named.is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphabetic())) {
            mentioned.insert(token.to_string());
        }
    }
    let want: std::collections::BTreeSet<String> = names().into_iter().map(String::from).collect();
    let undocumented: Vec<_> = want.difference(&mentioned).collect();
    let unknown: Vec<_> = mentioned.difference(&want).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "protocol.md (\"The sidecar\") and src/lsp/protocol.rs disagree: not documented {undocumented:?}, no such method {unknown:?}"
    );
}
