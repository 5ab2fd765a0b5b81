//! The secret scanner (`src/secrets.rs`) against two corpora: fake secrets
//! of every kind it must replace, made here from a seed (nothing that looks
//! like a credential is committed), and ordinary code and prose — this
//! project's own sources and documents — that must come through unchanged.
//! Both rates are printed (`cargo test --test secrets -- --nocapture`).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use threadsync::secrets::Scanner;

const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const UPPER_B32: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const ALNUM: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const HEX: &str = "0123456789abcdef";
const B64: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const LOWER_ALNUM: &str = "abcdefghijklmnopqrstuvwxyz0123456789";

fn s(rng: &mut ChaCha8Rng, set: &str, n: usize) -> String {
    let set: Vec<char> = set.chars().collect();
    (0..n).map(|_| set[rng.random_range(0..set.len())]).collect()
}

/// (what, text holding one secret, the secret, the rules that may name it).
fn positives(rng: &mut ChaCha8Rng) -> Vec<(&'static str, String, String, &'static [&'static str])> {
    let mut out = Vec::new();
    let mut add = |what, text: String, secret: String, rules| out.push((what, text, secret, rules));
    let k = format!("AKIA{}", s(rng, UPPER_B32, 16));
    add("AWS access key", format!("aws_access_key_id = {k}\n"), k, &["aws-access-token"][..]);
    let k = format!("ghp_{}", s(rng, ALNUM, 36));
    add(
        "GitHub token",
        format!("git clone https://{k}@github.com/acme/app.git"),
        k,
        &["github-pat", "url-password"][..],
    );
    let k = format!("github_pat_{}", s(rng, ALNUM, 82));
    add(
        "GitHub fine-grained token",
        format!("GH_TOKEN={k}"),
        k,
        &["github-fine-grained-pat", "env-secret-assignment"][..],
    );
    let k = format!("glpat-{}", s(rng, ALNUM, 20));
    add("GitLab token", format!("export GITLAB_TOKEN=\"{k}\""), k, &["gitlab-pat", "env-secret-assignment"][..]);
    let k = format!("xoxb-{}-{}-{}", s(rng, "0123456789", 12), s(rng, "0123456789", 12), s(rng, ALNUM, 24));
    add("Slack bot token", format!("slack: {{ token: '{k}' }}"), k, &["slack-bot-token"][..]);
    let k = format!("sk_live_{}", s(rng, ALNUM, 24));
    add("Stripe key", format!("Stripe::api_key = '{k}'"), k, &["stripe-access-token"][..]);
    let k = format!("sk-ant-api03-{}AA", s(rng, ALNUM, 93));
    add("Anthropic key", format!("ANTHROPIC_API_KEY={k}"), k, &["anthropic-api-key", "env-secret-assignment"][..]);
    let k = format!("sk-proj-{}T3BlbkFJ{}", s(rng, ALNUM, 74), s(rng, ALNUM, 74));
    add("OpenAI key", format!("client = OpenAI(api_key=\"{k}\")"), k, &["openai-api-key", "generic-api-key"][..]);
    let k = format!("AIza{}", s(rng, ALNUM, 35));
    add("Google API key", format!("const key = \"{k}\";"), k, &["gcp-api-key"][..]);
    let k = format!("npm_{}", s(rng, ALNUM, 36));
    add("npm token", format!("//registry.npmjs.org/:_authToken={k}"), k, &["npm-access-token"][..]);
    let k = format!("hf_{}", s(rng, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", 34));
    add("Hugging Face token", format!("HF_TOKEN={k}"), k, &["huggingface-access-token", "env-secret-assignment"][..]);
    let k = format!("dop_v1_{}", s(rng, HEX, 64));
    add("DigitalOcean token", format!("doctl auth init -t {k}"), k, &["digitalocean-pat"][..]);
    let k = format!("SG.{}.{}", s(rng, ALNUM, 22), s(rng, ALNUM, 43));
    add("SendGrid key", format!("sendgrid_api_key: {k}"), k, &["sendgrid-api-token", "generic-api-key"][..]);
    let body: Vec<String> = (0..12).map(|_| s(rng, B64, 64)).collect();
    let k = body.join("\n");
    add(
        "private key",
        format!("-----BEGIN RSA PRIVATE KEY-----\n{k}\n-----END RSA PRIVATE KEY-----\n"),
        k,
        &["private-key"][..],
    );
    let k = format!("eyJhbGciOiJIUzI1NiJ9.eyJ{}.{}", s(rng, ALNUM, 40), s(rng, ALNUM, 43));
    add("JWT", format!("Authorization: Bearer {k}"), k, &["jwt", "generic-api-key"][..]);
    let k = format!("{}-{}", s(rng, ALNUM, 12), s(rng, ALNUM, 6));
    add("password in a URL", format!("DATABASE_URL=postgres://app:{k}@db.internal:5432/app"), k, &["url-password"][..]);
    let k = format!("{}{}", s(rng, LOWER_ALNUM, 10), s(rng, UPPER, 3));
    add(
        ".env password",
        format!("DB_HOST=localhost\nDB_PASSWORD={k}\n"),
        k,
        &["env-secret-assignment", "generic-api-key"][..],
    );
    // (40 hex digits would be taken for a commit hash, and left alone.)
    let k = s(rng, ALNUM, 32);
    add("generic secret", format!("config.secret_key = \"{k}\""), k, &["generic-api-key"][..]);
    out
}

#[test]
fn every_embedded_rule_compiles() {
    let scanner = Scanner::get();
    assert!(scanner.skipped.is_empty(), "rules this regex engine cannot compile: {:?}", scanner.skipped);
}

#[test]
fn fake_secrets_of_every_kind_are_replaced_by_their_kind() {
    let scanner = Scanner::get();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut missed = Vec::new();
    let mut cases = 0;
    for _ in 0..20 {
        for (what, text, secret, rules) in positives(&mut rng) {
            cases += 1;
            match scanner.redact(&text) {
                Some((out, fired)) if !out.contains(&secret) && fired.iter().any(|r| rules.contains(&r.as_str())) => {
                    assert!(rules.iter().any(|r| out.contains(&format!("[REDACTED:{r}]"))), "{what}: {out}");
                }
                other => missed.push(format!("{what}: {text:?} -> {other:?}")),
            }
        }
    }
    println!(
        "secrets replaced: {} of {cases} ({:.1}%)",
        cases - missed.len(),
        100.0 * (cases - missed.len()) as f64 / cases as f64
    );
    assert!(missed.is_empty(), "missed:\n{}", missed.join("\n"));
}

#[test]
fn ordinary_code_and_prose_come_through_unchanged() {
    let scanner = Scanner::get();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    let mut walk =
        vec![root.join("src"), root.join("editors/vscode/src"), root.join("editors/nvim/lua"), root.join("benches")];
    while let Some(d) = walk.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk.push(p);
            } else if p.extension().is_some_and(|x| ["rs", "ts", "lua", "md", "sql"].contains(&x.to_str().unwrap()))
                && !p.starts_with(root.join("src/secrets"))
                && p != root.join("src/secrets.rs")
            {
                files.push(p);
            }
        }
    }
    for doc in ["README.md", "ARCHITECTURE.md", "protocol.md", "editors/vscode/README.md", "editors/nvim/README.md"] {
        files.push(root.join(doc));
    }
    let (mut lines, mut flagged) = (0usize, Vec::new());
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        lines += text.lines().count();
        for finding in scanner.find(&text) {
            let line = text[..finding.start].lines().count();
            flagged.push(format!("{}:{line}: {}", f.strip_prefix(root).unwrap().display(), finding.rule));
        }
    }
    println!(
        "ordinary text changed: {} of {lines} lines in {} files ({:.3}%)",
        flagged.len(),
        files.len(),
        100.0 * flagged.len() as f64 / lines as f64
    );
    assert!(flagged.is_empty(), "flagged in ordinary text:\n{}", flagged.join("\n"));
}
