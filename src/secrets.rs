//! Secrets in text — cloud keys, tokens of the common services, private
//! keys, passwords in URLs, `.env`-style assignments — found and replaced by
//! a marker naming their kind (`[REDACTED:aws-access-token]`), so that what
//! leaves the machine from an assistant's session does not carry them.
//!
//! The rules are gitleaks' (`secrets/gitleaks.toml`, from gitleaks v8.30
//! — https://github.com/gitleaks/gitleaks, MIT, © 2019 Zachary Rice, the
//! licence in `secrets/LICENSE-gitleaks` — a maintained set of ~220 rules), run as gitleaks runs them on a string:
//! a rule is tried only where one of its keywords occurs; its regex finds a
//! candidate, the secret is the rule's secret group (else the first
//! non-empty group, else the match); a secret below the rule's entropy, or
//! allowed by the rule's or the global allowlists (regexes on the secret,
//! the match or the line; stopwords), is not one. Beside them are rules of
//! our own for what gitleaks has none for ([`OWN_RULES`]).
//!
//! Pure: text in, text out.

use std::sync::OnceLock;

use aho_corasick::AhoCorasick;
use regex::{Regex, RegexBuilder};
use serde::Deserialize;

const GITLEAKS: &str = include_str!("secrets/gitleaks.toml");

/// gitleaks' catch-all rule: a name another rule gives is more telling.
const GENERIC: &str = "generic-api-key";

/// Rules of our own, in gitleaks' format: a password in a URL's user info,
/// and a `.env`-style assignment to a name that says secret (gitleaks'
/// generic rule wants more entropy than many real passwords have).
const OWN_RULES: &str = r##"
[[rules]]
id = "url-password"
regex = '''(?i)\b[a-z][a-z0-9+.-]{1,20}://[^\s:/@'"`]{1,128}:([^\s:/@'"`]{3,256})@[^\s/'"`]{1,256}'''
keywords = ["://"]
[[rules.allowlists]]
regexes = ['''^(?:\*+|x+|\.+|password|passwd|pass|secret|changeme|pwd)$''', '''^[$%{<]''']

[[rules]]
id = "env-secret-assignment"
regex = '''(?m)^[ \t]*(?:export[ \t]+)?[A-Z][A-Z0-9_]*(?:PASSWORD|PASSWD|PASS|SECRET|TOKEN|API_KEY|APIKEY|PRIVATE_KEY|ACCESS_KEY|CREDENTIALS?)[A-Z0-9_]*[ \t]*=[ \t]*['"]?([^\s'"#]{8,256})'''
entropy = 2.5
keywords = ["pass", "secret", "token", "key", "credential"]
[[rules.allowlists]]
regexes = ['''^[$%{<]''', '''^(?:true|false|null|none|changeme|example|placeholder)$''']
"##;

#[derive(Deserialize)]
struct Config {
    #[serde(default)]
    allowlist: Option<AllowlistSpec>,
    #[serde(default)]
    rules: Vec<RuleSpec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuleSpec {
    id: String,
    regex: Option<String>,
    entropy: Option<f64>,
    #[serde(default)]
    secret_group: usize,
    #[serde(default)]
    keywords: Vec<String>,
    #[serde(default)]
    allowlists: Vec<AllowlistSpec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AllowlistSpec {
    #[serde(default)]
    regexes: Vec<String>,
    regex_target: Option<String>,
    #[serde(default)]
    stopwords: Vec<String>,
    condition: Option<String>,
    #[serde(default)]
    paths: Vec<String>,
}

/// What an allowlist's regexes are matched against.
#[derive(Clone, Copy, PartialEq)]
enum Target {
    Secret,
    Match,
    Line,
}

struct Allowlist {
    regexes: Vec<Regex>,
    target: Target,
    stopwords: Vec<String>,
    /// All of its checks must hold (else any one).
    all: bool,
    /// It names paths: text has none, so an all-of allowlist never holds.
    paths: bool,
}

struct Rule {
    id: String,
    regex: Regex,
    entropy: Option<f64>,
    secret_group: usize,
    allowlists: Vec<Allowlist>,
}

/// One secret found: its rule and where it is (byte offsets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub rule: String,
    pub start: usize,
    pub end: usize,
}

/// The rules, compiled once.
pub struct Scanner {
    rules: Vec<Rule>,
    /// Keyword `i` (lowercase) makes the rules `by_keyword[i]` worth trying.
    keywords: AhoCorasick,
    by_keyword: Vec<Vec<usize>>,
    /// Rules without keywords: always tried.
    always: Vec<usize>,
    global: Option<Allowlist>,
    /// Rules whose regex this regex engine cannot compile (none today; a
    /// test says so), by id.
    pub skipped: Vec<String>,
}

fn compile(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(&literal_braces(pattern)).size_limit(64 << 20).dfa_size_limit(64 << 20).build()
}

/// Go's RE2 takes a `{` that does not start a repetition (`{2}`, `{2,}`,
/// `{2,5}` after something to repeat) as a literal; Rust's regex wants it
/// escaped. The rules are written for Go.
fn literal_braces(pattern: &str) -> String {
    let b = pattern.as_bytes();
    let mut out = String::with_capacity(pattern.len() + 8);
    let (mut i, mut class) = (0, false);
    let mut prev_repeatable = false;
    while i < b.len() {
        let c = b[i] as char;
        if c == '\\' && i + 1 < b.len() {
            let next = pattern[i + 1..].chars().next().unwrap();
            out.push('\\');
            out.push(next);
            i += 1 + next.len_utf8();
            prev_repeatable = true;
            continue;
        }
        if class {
            if c == ']' {
                class = false;
                prev_repeatable = true;
            }
        } else if c == '[' {
            class = true;
            // A `]` first in a class is a literal.
            if pattern[i + 1..].starts_with(']') || pattern[i + 1..].starts_with("^]") {
                let skip = if pattern[i + 1..].starts_with('^') { 2 } else { 1 };
                out.push_str(&pattern[i..i + 1 + skip]);
                i += 1 + skip;
                continue;
            }
        } else if c == '{' {
            let rest = &pattern[i + 1..];
            let close = rest.find('}');
            let is_rep = prev_repeatable
                && close.is_some_and(|e| {
                    let inner = &rest[..e];
                    let mut parts = inner.splitn(2, ',');
                    let lo = parts.next().unwrap_or("");
                    !lo.is_empty()
                        && lo.bytes().all(|x| x.is_ascii_digit())
                        && parts.next().is_none_or(|hi| hi.bytes().all(|x| x.is_ascii_digit()))
                });
            if !is_rep {
                out.push_str("\\{");
                i += 1;
                prev_repeatable = true;
                continue;
            }
        }
        if !class && c == '{' {
            // A repetition: copy it whole.
            let e = pattern[i..].find('}').unwrap();
            out.push_str(&pattern[i..=i + e]);
            i += e + 1;
            continue;
        }
        // A `}` closing a repetition was copied with it above: one here is
        // a literal.
        if !class && c == '}' {
            out.push_str("\\}");
            i += 1;
            prev_repeatable = true;
            continue;
        }
        let ch = pattern[i..].chars().next().unwrap();
        out.push(ch);
        i += ch.len_utf8();
        prev_repeatable = !class && !matches!(ch, '(' | '|' | '^');
    }
    out
}

fn allowlist(spec: AllowlistSpec) -> Result<Allowlist, regex::Error> {
    Ok(Allowlist {
        regexes: spec.regexes.iter().map(|r| compile(r)).collect::<Result<_, _>>()?,
        target: match spec.regex_target.as_deref() {
            Some("match") => Target::Match,
            Some("line") => Target::Line,
            _ => Target::Secret,
        },
        stopwords: spec.stopwords.iter().map(|s| s.to_lowercase()).collect(),
        all: spec.condition.as_deref().is_some_and(|c| c.eq_ignore_ascii_case("and")),
        paths: !spec.paths.is_empty(),
    })
}

impl Allowlist {
    fn allows(&self, secret: &str, matched: &str, line: &str) -> bool {
        let target = match self.target {
            Target::Secret => secret,
            Target::Match => matched,
            Target::Line => line,
        };
        let lower = secret.to_lowercase();
        let regex = (!self.regexes.is_empty()).then(|| self.regexes.iter().any(|r| r.is_match(target)));
        let stop = (!self.stopwords.is_empty()).then(|| self.stopwords.iter().any(|s| lower.contains(s.as_str())));
        let checks = [regex, stop];
        if self.all {
            !self.paths && checks.iter().flatten().all(|c| *c) && checks.iter().any(|c| c.is_some())
        } else {
            checks.iter().flatten().any(|c| *c)
        }
    }
}

/// Shannon entropy of `s` in bits per character, as gitleaks computes it.
fn entropy(s: &str) -> f64 {
    let mut counts = std::collections::HashMap::new();
    for c in s.chars() {
        *counts.entry(c).or_insert(0usize) += 1;
    }
    let n = s.chars().count() as f64;
    counts.values().map(|&c| c as f64 / n).map(|p| -p * p.log2()).sum()
}

impl Scanner {
    /// gitleaks' rules and ours.
    pub fn get() -> &'static Scanner {
        static SCANNER: OnceLock<Scanner> = OnceLock::new();
        SCANNER.get_or_init(|| Scanner::from_configs(&[GITLEAKS, OWN_RULES]).expect("the embedded rules parse"))
    }

    fn from_configs(configs: &[&str]) -> Result<Scanner, String> {
        let mut rules = Vec::new();
        let mut keywords: Vec<String> = Vec::new();
        let mut by_keyword: Vec<Vec<usize>> = Vec::new();
        let mut always = Vec::new();
        let mut global = None;
        let mut skipped = Vec::new();
        for text in configs {
            let config: Config = toml::from_str(text).map_err(|e| format!("rules: {e}"))?;
            if let Some(g) = config.allowlist {
                global = Some(allowlist(g).map_err(|e| format!("global allowlist: {e}"))?);
            }
            for spec in config.rules {
                // Rules on file paths alone have nothing to look for in text.
                let Some(pattern) = spec.regex else { continue };
                let compiled = compile(&pattern).and_then(|regex| {
                    let allowlists = spec.allowlists.into_iter().map(allowlist).collect::<Result<Vec<_>, _>>()?;
                    Ok(Rule {
                        id: spec.id.clone(),
                        regex,
                        entropy: spec.entropy,
                        secret_group: spec.secret_group,
                        allowlists,
                    })
                });
                let Ok(rule) = compiled else {
                    skipped.push(spec.id);
                    continue;
                };
                let i = rules.len();
                rules.push(rule);
                if spec.keywords.is_empty() {
                    always.push(i);
                }
                for k in spec.keywords {
                    let k = k.to_lowercase();
                    match keywords.iter().position(|x| *x == k) {
                        Some(at) => by_keyword[at].push(i),
                        None => {
                            keywords.push(k);
                            by_keyword.push(vec![i]);
                        }
                    }
                }
            }
        }
        let keywords = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(&keywords)
            .map_err(|e| format!("keywords: {e}"))?;
        Ok(Scanner { rules, keywords, by_keyword, always, global, skipped })
    }

    /// The secrets in `text`, in order, overlaps merged into one (named by
    /// the specific rule where the generic one found the same secret).
    pub fn find(&self, text: &str) -> Vec<Finding> {
        let mut candidates: Vec<usize> = self.always.clone();
        for m in self.keywords.find_overlapping_iter(text) {
            candidates.extend(&self.by_keyword[m.pattern().as_usize()]);
        }
        candidates.sort_unstable();
        candidates.dedup();
        let mut found = Vec::new();
        for i in candidates {
            let rule = &self.rules[i];
            for caps in rule.regex.captures_iter(text) {
                let whole = caps.get(0).expect("group 0 is the match");
                let secret = match rule.secret_group {
                    0 => (1..caps.len()).filter_map(|g| caps.get(g)).find(|g| !g.as_str().is_empty()).unwrap_or(whole),
                    g => caps.get(g).unwrap_or(whole),
                };
                if secret.as_str().is_empty() || rule.entropy.is_some_and(|e| entropy(secret.as_str()) < e) {
                    continue;
                }
                let line_start = text[..whole.start()].rfind('\n').map_or(0, |i| i + 1);
                let line_end = text[whole.end()..].find('\n').map_or(text.len(), |i| whole.end() + i);
                let line = &text[line_start..line_end];
                let allowed =
                    self.global.iter().chain(&rule.allowlists).any(|a| a.allows(secret.as_str(), whole.as_str(), line));
                if !allowed {
                    found.push(Finding { rule: rule.id.clone(), start: secret.start(), end: secret.end() });
                }
            }
        }
        found.sort_by_key(|f| (f.start, std::cmp::Reverse(f.end)));
        let mut merged: Vec<Finding> = Vec::with_capacity(found.len());
        for f in found {
            match merged.last_mut() {
                Some(last) if f.start < last.end => {
                    last.end = last.end.max(f.end);
                    if last.rule == GENERIC && f.rule != GENERIC {
                        last.rule = f.rule;
                    }
                }
                _ => merged.push(f),
            }
        }
        merged
    }

    /// `text` with each secret replaced by `[REDACTED:<rule>]`, and the
    /// rules that fired; None when there is nothing to replace.
    pub fn redact(&self, text: &str) -> Option<(String, Vec<String>)> {
        let found = self.find(text);
        if found.is_empty() {
            return None;
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for f in &found {
            out.push_str(&text[at..f.start]);
            out.push_str(&format!("[REDACTED:{}]", f.rule));
            at = f.end;
        }
        out.push_str(&text[at..]);
        Some((out, found.into_iter().map(|f| f.rule).collect()))
    }
}
