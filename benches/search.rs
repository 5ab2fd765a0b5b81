//! Full-text search latency on a large, realistic data set, next to a plain
//! `LIKE` scan over the same database in the same process.
//!
//! What it does, per database (SQLite in a temporary file always; also
//! PostgreSQL when `SEARCH_BENCH_PG=1`):
//!
//! 1. Fills the store through its push transaction (`Store::transact` and
//!    `Tx::write`, so the search index is kept exactly as a push keeps it),
//!    a few thousand messages a transaction: 10,000 threads × 100 messages =
//!    1,000,000 messages by default, 90% of the threads in the team
//!    searched ("bench"), 10% in another team (so the team filter is real).
//!    Text is deterministic (ChaCha8, fixed seed): a vocabulary of 5,000
//!    words with a Zipf distribution (English prose words, derived forms,
//!    code identifiers, made-up words), and a tail of 50,000 made-up tokens
//!    (0.3% of words, Zipf-distributed among themselves: from ~1% of the
//!    messages down to a single one, the spectrum between the common words
//!    and the rare ones), messages of
//!    100–2,000 bytes, markdown code blocks in 30% of the assistant's
//!    messages, 3% content-block (array) messages. Prints the fill time and
//!    the database size.
//! 2. Picks ~40 queries from the counted document frequencies: rare words,
//!    (3–30 messages), mid-frequency words (0.05–2% of the team's messages,
//!    log-spread), frequent words (≥ 8%), two-word queries, and prefixes as typed (`"depl"`). Whole-word
//!    queries end in a space (so the last word is not a prefix); prefix
//!    queries do not (see `Query::parse`).
//! 3. Runs each query several times through the real API,
//!    `store.web().search(&team, &Query::parse(q), 20)` (index lookup,
//!    ranking, and the snippets), and the same queries as a `LIKE` scan
//!    (`SELECT thread, id FROM messages WHERE team = ? AND deleted = 0 AND
//!    body LIKE '%w%' [AND body LIKE '%w2%']` — every match, as ranking
//!    needs them all; `ILIKE` on PostgreSQL, case-insensitive as search
//!    is), straight through rusqlite / the postgres crate on the same
//!    database.
//! 4. Prints, per query and per class and overall, p50/p95/max of both and
//!    the ratio LIKE / search (of the means and of the p95s), and whether
//!    the issue's goal holds (≥ 20× faster than LIKE, p95 in tens of
//!    milliseconds). It never asserts: it reports.
//!
//! Run: `cargo bench --bench search`
//!
//! Scale and options (environment):
//! - `SEARCH_BENCH_THREADS` (default 10000), `SEARCH_BENCH_MESSAGES`
//!   (messages per thread, default 100): e.g. `SEARCH_BENCH_THREADS=1000`
//!   for a quick try.
//! - `SEARCH_BENCH_RUNS` (timed runs of each query through search, default
//!   5, after one untimed warm-up run), `SEARCH_BENCH_LIKE_RUNS` (default 3).
//! - `SEARCH_BENCH_PG=1`: also PostgreSQL at 127.0.0.1:5432, database
//!   `test`, trust auth (or `THREADSYNC_TEST_PG`, as the tests), in a fresh
//!   schema `bench_search_<pid>` dropped at the end. PostgreSQL gets a
//!   `VACUUM ANALYZE messages` after the fill (what autovacuum would have
//!   done by then); SQLite gets nothing (the server never runs ANALYZE).
//! - `SEARCH_BENCH_SQLITE=0`: skip SQLite (with `SEARCH_BENCH_PG=1`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use threadsync::model::{Content, Message, MessageId, ThreadId};
use threadsync::ops::Effect;
use threadsync::server::core::TeamId;
use threadsync::server::postgres::PgStore;
use threadsync::server::search::{MARK_END, MARK_START, Query};
use threadsync::server::sqlite::SqliteStore;
use threadsync::server::store::Store;
use threadsync::wire::ClientId;

const SEED: u64 = 0x5EA2_C4B0;
/// Results asked of search and of LIKE.
const LIMIT: usize = 20;
const BENCH_TEAM: &str = "bench";
const OTHER_TEAM: &str = "other";
/// Messages per fill transaction, about.
const PER_TX: usize = 3000;
/// Words under the Zipf distribution, and its exponent.
const VOCAB: usize = 5000;
const ZIPF_S: f64 = 1.0;
/// Tail tokens, and the share of words drawn from them (Zipf again).
const TAIL: usize = 50_000;
const TAIL_P: f64 = 0.003;
/// The goal of the issue.
const GOAL_RATIO: f64 = 20.0;
const GOAL_P95_MS: f64 = 100.0;
const BASE_MS: i64 = 1_750_000_000_000;

/// A thread in ten belongs to the other team.
fn in_bench_team(t: usize) -> bool {
    t % 10 != 9
}

struct Config {
    threads: usize,
    messages: usize,
    search_runs: usize,
    like_runs: usize,
    sqlite: bool,
    pg: bool,
}

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("{name} must be a number, got {v:?}")),
        Err(_) => default,
    }
}

impl Config {
    fn from_env() -> Config {
        Config {
            threads: env_usize("SEARCH_BENCH_THREADS", 10_000).max(1),
            messages: env_usize("SEARCH_BENCH_MESSAGES", 100).max(1),
            search_runs: env_usize("SEARCH_BENCH_RUNS", 5).max(1),
            like_runs: env_usize("SEARCH_BENCH_LIKE_RUNS", 3).max(1),
            sqlite: std::env::var("SEARCH_BENCH_SQLITE").map_or(true, |v| v != "0"),
            pg: std::env::var("SEARCH_BENCH_PG").is_ok_and(|v| v == "1"),
        }
    }
}

// ----- vocabulary ---------------------------------------------------------------

const STOP: &str = "the to and of a in is it that for this with on be as you we not are can if or but at from by \
    an will so have was then there which when should would all just now i me my your our they do does here what how \
    also into only more some no yes one two out up about";

const PROSE: &str = "file files test tests error errors function change changes build server client deploy \
    deployment config configuration update version release branch commit merge review issue bug fix fixed failing \
    failure output input value values result results type types module modules package dependency dependencies \
    library crate project code line lines path directory folder command script run running start started stop \
    process thread threads message messages request requests response data database table query index column row \
    schema migration cache memory disk network connection timeout retry latency performance benchmark profile \
    trace log logs logging warning debug production staging environment variable variables secret token key access \
    permission user users team account session login password email service services endpoint api route handler \
    handlers middleware router component components state store event events callback promise async await stream \
    buffer queue worker job task schedule cron backup restore sync synchronize conflict history workspace editor \
    terminal shell window screen page browser frontend backend layout style theme button form field validation \
    parse parser parsing compile compiler lint format formatting refactor rename move delete remove add create \
    write read open close save load import export check verify assert expect mock fixture snapshot coverage \
    pipeline workflow action container image docker cluster node volume storage bucket upload download proxy \
    certificate domain host port address socket protocol header headers payload json yaml toml markdown string \
    number integer boolean array object map list set vector struct enum trait interface class method methods \
    fields property argument arguments parameter parameters returns loop iteration iterator closure lambda \
    pointer reference borrow lifetime ownership mutex lock race condition deadlock panic crash exception stack heap \
    allocation garbage leak size limit maximum minimum default option options feature features flag flags plugin \
    extension template macro generic generics implementation design architecture pattern approach solution \
    problem question answer explanation example examples documentation readme comment comments note notes idea \
    plan step steps reason case cases edge behavior behaviour expected actual instead already still again first \
    last next previous second third simple complex small large quick slow fast better worse correct wrong missing \
    broken works working looks seems means happens think need want try make using used call calls called get put \
    send receive handle handled handling apply applied support supports allow allows prevent ensure keep around \
    between because without within across after before during while until since though although however \
    therefore otherwise maybe probably likely actually really exactly properly correctly currently";

const CODE: &str = "fn impl struct enum async await vec str string option result unwrap clone iter collect config \
    parse handler request response client server store query cursor buffer reader writer stream socket mutex arc \
    rc box tokio serde axum hyper reqwest rusqlite postgres sqlite redis kafka grpc http https router session token \
    ctx builder spawn channel sender receiver timeout retry batch merge diff patch commit schema cache metrics \
    tracing span encode decode serialize deserialize payload status route middleware service layer pool conn txn \
    cargo rustc clippy rustfmt npm pnpm yarn webpack vite eslint prettier pytest kubectl helm nginx terraform \
    ansible git github lsp tsx jsx utf8 sha256 uuid ulid regex glob env argv stdin stdout stderr println eprintln \
    dbg todo unimplemented self super mod pub use let mut const static match else while loop break continue";

const SYLLABLES: &[&str] = &[
    "ka", "lo", "mi", "ter", "van", "zu", "pel", "dor", "rin", "sa", "ko", "tal", "bre", "nu", "fi", "gor", "ma",
    "vel", "xi", "qua", "ros", "lin", "dra", "pe", "sol", "mu", "tek", "ra", "no", "zin", "be", "cho", "li", "for",
    "gan", "hu", "jor", "ke", "lum", "nar", "po", "sen", "tri", "ul", "wen", "yo", "zar",
];

/// Strings in every stored message's JSON, or in code-block templates:
/// a query word inside one of them would make LIKE match everything.
const SKELETON: &[&str] = &[
    "id",
    "role",
    "user",
    "assistant",
    "content",
    "timestamp",
    "type",
    "text",
    "tool_use",
    "tool_result",
    "tool_use_id",
    "name",
    "input",
    "command",
    "bash",
    "toolu",
    "cargo",
    "test",
    "import",
    "from",
    "let",
    "result",
    "rust",
    "python",
    "sh",
    "ts",
    "fn",
    "json",
];

struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Zipf {
        let mut acc = 0.0;
        let mut cdf = Vec::with_capacity(n);
        for r in 0..n {
            acc += 1.0 / ((r + 1) as f64).powf(s);
            cdf.push(acc);
        }
        cdf.iter_mut().for_each(|c| *c /= acc);
        Zipf { cdf }
    }

    fn sample(&self, rng: &mut ChaCha8Rng) -> usize {
        let u: f64 = rng.random();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

struct Vocab {
    /// The Zipf words in rank order (`VOCAB` of them), then the rare tail.
    words: Vec<String>,
    /// The first `stop` words are stop words.
    stop: usize,
    main: Zipf,
    tail: Zipf,
    is_code: Vec<bool>,
    code: Vec<usize>,
    code_zipf: Zipf,
    camel: Vec<usize>,
    camel_zipf: Zipf,
}

fn add(seen: &mut HashSet<String>, list: &mut Vec<String>, w: String) {
    if seen.insert(w.to_lowercase()) {
        list.push(w);
    }
}

fn shuffle<T>(v: &mut [T], rng: &mut ChaCha8Rng) {
    for i in (1..v.len()).rev() {
        v.swap(i, rng.random_range(0..=i));
    }
}

fn pseudo(rng: &mut ChaCha8Rng, syllables: std::ops::RangeInclusive<usize>) -> String {
    let n = rng.random_range(syllables);
    (0..n).map(|_| SYLLABLES[rng.random_range(0..SYLLABLES.len())]).collect()
}

fn capitalized(w: &str) -> String {
    let mut c = w.chars();
    c.next().map_or(String::new(), |f| f.to_ascii_uppercase().to_string() + c.as_str())
}

impl Vocab {
    fn new(rng: &mut ChaCha8Rng) -> Vocab {
        let mut seen = HashSet::new();
        let mut stops = Vec::new();
        STOP.split_whitespace().for_each(|w| add(&mut seen, &mut stops, w.into()));
        let mut core = Vec::new();
        PROSE.split_whitespace().chain(CODE.split_whitespace()).for_each(|w| add(&mut seen, &mut core, w.into()));
        let mut rest = Vec::new();
        // Derived forms of the prose words (porter stems them together).
        let inflected = |w: &str| ["s", "ed", "ing", "ly", "er"].iter().any(|x| w.ends_with(x));
        for w in PROSE.split_whitespace().filter(|w| w.len() >= 4 && !inflected(w)) {
            let stem = w.strip_suffix('e').unwrap_or(w);
            let forms = [format!("{w}s"), format!("{stem}ing"), format!("{stem}ed"), format!("{stem}er")];
            for _ in 0..2 {
                let f = forms[rng.random_range(0..forms.len())].clone();
                add(&mut seen, &mut rest, f);
            }
        }
        // Identifiers: PascalCase and camelCase of two words (one token each).
        let pieces: Vec<&str> =
            PROSE.split_whitespace().chain(CODE.split_whitespace()).filter(|w| w.len() >= 3).collect();
        let mut camel_words = Vec::new();
        while camel_words.len() < 700 {
            let a = pieces[rng.random_range(0..pieces.len())];
            let b = pieces[rng.random_range(0..pieces.len())];
            let w = if rng.random_bool(0.5) { capitalized(a) } else { a.to_string() } + &capitalized(b);
            add(&mut seen, &mut camel_words, w);
        }
        rest.extend(camel_words.iter().cloned());
        // Made-up words (names, jargon) fill the Zipf vocabulary.
        while stops.len() + core.len() + rest.len() < VOCAB {
            let w = pseudo(rng, 2..=3);
            add(&mut seen, &mut rest, w);
        }
        shuffle(&mut core, rng);
        shuffle(&mut rest, rng);
        let stop = stops.len();
        let mut words: Vec<String> = stops.into_iter().chain(core).chain(rest).collect();
        words.truncate(VOCAB);
        let index: HashMap<&str, usize> = words.iter().enumerate().map(|(i, w)| (w.as_str(), i)).collect();
        let mut code: Vec<usize> = CODE.split_whitespace().filter_map(|w| index.get(w).copied()).collect();
        code.sort_unstable();
        code.dedup();
        let mut camel: Vec<usize> = camel_words.iter().filter_map(|w| index.get(w.as_str()).copied()).collect();
        camel.sort_unstable();
        let mut is_code = vec![false; VOCAB];
        code.iter().chain(&camel).for_each(|&i| is_code[i] = true);
        // The rare tail.
        let mut tail = Vec::new();
        while tail.len() < TAIL {
            let w = pseudo(rng, 3..=4);
            add(&mut seen, &mut tail, w);
        }
        words.extend(tail);
        Vocab {
            words,
            stop,
            main: Zipf::new(VOCAB, ZIPF_S),
            tail: Zipf::new(TAIL, ZIPF_S),
            is_code,
            code_zipf: Zipf::new(code.len(), ZIPF_S),
            code,
            camel_zipf: Zipf::new(camel.len(), ZIPF_S),
            camel,
        }
    }
}

// ----- data ---------------------------------------------------------------------

/// Makes the threads, counting each word's document frequency in the bench
/// team's messages.
struct Gen<'v> {
    v: &'v Vocab,
    rng: ChaCha8Rng,
    df: Vec<u32>,
    stamp: Vec<u32>,
    msg: u32,
    count: bool,
    bench_messages: usize,
}

const CODE_LINES: &[&str] = &[
    "let @_@ = @.@(@)?;",
    "fn @_@(@: &#) -> Result<#> {",
    "    @.@_@(&@);",
    "    if @.@() { return Err(#::@); }",
    "}",
    "import { # } from './@';",
    "$ cargo test @_@",
    "const @ = await @.@(@);",
    "def @_@(@, @):",
    "    return @.@(@)",
];

fn log_uniform(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> usize {
    (lo.ln() + rng.random::<f64>() * (hi.ln() - lo.ln())).exp() as usize
}

impl<'v> Gen<'v> {
    fn new(v: &'v Vocab) -> Gen<'v> {
        Gen {
            v,
            rng: ChaCha8Rng::seed_from_u64(SEED + 1),
            df: vec![0; v.words.len()],
            stamp: vec![0; v.words.len()],
            msg: 0,
            count: false,
            bench_messages: 0,
        }
    }

    fn word(&mut self, i: usize, out: &mut String) {
        out.push_str(&self.v.words[i]);
        if self.count && self.stamp[i] != self.msg {
            self.stamp[i] = self.msg;
            self.df[i] += 1;
        }
    }

    fn any_word(&mut self) -> usize {
        if self.rng.random_bool(TAIL_P) {
            VOCAB + self.v.tail.sample(&mut self.rng)
        } else {
            self.v.main.sample(&mut self.rng)
        }
    }

    fn sentence(&mut self, out: &mut String) {
        let n = self.rng.random_range(5..18);
        for k in 0..n {
            if k > 0 {
                if self.rng.random_bool(0.06) {
                    out.push(',');
                }
                out.push(' ');
            }
            let i = self.any_word();
            let tick = i < VOCAB && self.v.is_code[i] && self.rng.random_bool(0.4);
            let start = out.len();
            if tick {
                out.push('`');
            }
            self.word(i, out);
            if tick {
                out.push('`');
            } else if k == 0 {
                out[start..start + 1].make_ascii_uppercase();
            }
        }
        out.push(if self.rng.random_bool(0.1) { '?' } else { '.' });
    }

    fn code_line(&mut self, out: &mut String) {
        let line = CODE_LINES[self.rng.random_range(0..CODE_LINES.len())];
        for c in line.chars() {
            match c {
                '@' => {
                    let i = self.v.code[self.v.code_zipf.sample(&mut self.rng)];
                    self.word(i, out);
                }
                '#' => {
                    let i = self.v.camel[self.v.camel_zipf.sample(&mut self.rng)];
                    self.word(i, out);
                }
                c => out.push(c),
            }
        }
        out.push('\n');
    }

    /// About `target` bytes of prose, with a code block at the end when
    /// `code`.
    fn text(&mut self, target: usize, code: bool) -> String {
        let mut out = String::with_capacity(target + 200);
        let prose = if code { target * 6 / 10 } else { target };
        let mut in_para = 0;
        let mut para = self.rng.random_range(2..6);
        loop {
            self.sentence(&mut out);
            if out.len() >= prose {
                break;
            }
            in_para += 1;
            if in_para >= para {
                out.push_str("\n\n");
                in_para = 0;
                para = self.rng.random_range(2..6);
            } else {
                out.push(' ');
            }
        }
        if code {
            let lang = ["rust", "ts", "python", "sh"][self.rng.random_range(0..4)];
            out.push_str("\n\n```");
            out.push_str(lang);
            out.push('\n');
            for _ in 0..12 {
                self.code_line(&mut out);
                if out.len() + 4 >= target {
                    break;
                }
            }
            out.push_str("```");
        }
        if out.len() > 2000 {
            let cut = out[..2000].rfind(char::is_whitespace).unwrap_or(2000);
            out.truncate(cut);
        }
        out
    }

    fn message(&mut self, t: usize, i: usize, bench: bool) -> Message {
        self.msg += 1;
        self.count = bench;
        if bench {
            self.bench_messages += 1;
        }
        let user = i.is_multiple_of(2);
        let target =
            if user { log_uniform(&mut self.rng, 100.0, 700.0) } else { log_uniform(&mut self.rng, 150.0, 1900.0) };
        let code = !user && self.rng.random_bool(0.3);
        let text = self.text(target, code);
        let content = if self.rng.random_bool(0.03) {
            let call = format!("toolu_{t}_{i}");
            if user {
                json!([{"type": "tool_result", "tool_use_id": call, "content": text}])
            } else {
                let mut cmd = String::from("cargo test ");
                let (a, b) = (
                    self.v.code[self.v.code_zipf.sample(&mut self.rng)],
                    self.v.code[self.v.code_zipf.sample(&mut self.rng)],
                );
                self.word(a, &mut cmd);
                cmd.push('_');
                self.word(b, &mut cmd);
                json!([
                    {"type": "text", "text": text},
                    {"type": "tool_use", "id": call, "name": "Bash", "input": {"command": cmd}},
                ])
            }
        } else {
            Value::String(text)
        };
        self.count = false;
        Message {
            id: MessageId::new(format!("m-{t}-{i}")).unwrap(),
            role: if user { "user" } else { "assistant" }.into(),
            content: Content::new(content),
            timestamp: BASE_MS + (t as i64) * 3_600_000 + (i as i64) * 20_000,
            extra: Default::default(),
        }
    }

    fn thread(&mut self, t: usize, messages: usize) -> (ThreadId, Vec<Effect>) {
        let bench = in_bench_team(t);
        let mut effects = Vec::with_capacity(messages + 2);
        effects.push(Effect::Create { created: BASE_MS + (t as i64) * 3_600_000, env: json!({}) });
        let mut title = String::new();
        for k in 0..self.rng.random_range(3..7) {
            let i = loop {
                let i = self.v.main.sample(&mut self.rng);
                if i >= self.v.stop {
                    break i;
                }
            };
            if k > 0 {
                title.push(' ');
            }
            title.push_str(&self.v.words[i]);
        }
        effects.push(Effect::Title { title: capitalized(&title) });
        let mut after: Option<MessageId> = None;
        for i in 0..messages {
            let m = self.message(t, i, bench);
            let id = m.id.clone();
            effects.push(Effect::Insert { index: i, after: after.replace(id), message: Arc::new(m) });
        }
        (ThreadId::new(format!("T-{t:06}")).unwrap(), effects)
    }
}

struct Fill {
    secs: f64,
    gen_secs: f64,
    messages: usize,
    bench_messages: usize,
    per_tx: usize,
    df: Vec<u32>,
}

fn write_all(store: &dyn Store, team: &TeamId, author: &ClientId, threads: &[(ThreadId, Vec<Effect>)]) {
    if threads.is_empty() {
        return;
    }
    store
        .transact(team, true, &mut |tx| {
            for (t, effects) in threads {
                for (k, e) in effects.iter().enumerate() {
                    tx.write(t, k as u64 + 1, e, author)?;
                }
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("fill transaction failed: {e}"));
}

fn fill(store: &dyn Store, cfg: &Config, v: &Vocab) -> Fill {
    let bench = TeamId::new(BENCH_TEAM).unwrap();
    let other = TeamId::new(OTHER_TEAM).unwrap();
    let author = ClientId::new("bench-client").unwrap();
    let mut g = Gen::new(v);
    // Threads per round: its bench-team share is one transaction of about
    // PER_TX messages, the other team's a second, smaller one.
    let chunk = ((PER_TX / cfg.messages).max(1) * 10).div_ceil(9).max(1);
    let total = cfg.threads * cfg.messages;
    let start = Instant::now();
    let mut gen_secs = 0.0;
    let mut done = 0;
    let mut next_report = total / 10;
    for first in (0..cfg.threads).step_by(chunk) {
        let g0 = Instant::now();
        let (mut mine, mut theirs) = (Vec::new(), Vec::new());
        for t in first..(first + chunk).min(cfg.threads) {
            let th = g.thread(t, cfg.messages);
            if in_bench_team(t) { mine.push(th) } else { theirs.push(th) }
        }
        gen_secs += g0.elapsed().as_secs_f64();
        write_all(store, &bench, &author, &mine);
        write_all(store, &other, &author, &theirs);
        done += (mine.len() + theirs.len()) * cfg.messages;
        if done >= next_report && done < total {
            eprintln!("  filled {done}/{total} messages in {:.1} s", start.elapsed().as_secs_f64());
            next_report += total / 10;
        }
    }
    Fill {
        secs: start.elapsed().as_secs_f64(),
        gen_secs,
        messages: total,
        bench_messages: g.bench_messages,
        per_tx: (chunk * 9 / 10).max(1) * cfg.messages,
        df: g.df,
    }
}

// ----- queries ------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Rare,
    Mid,
    Frequent,
    TwoWord,
    Prefix,
}

const CLASSES: [Class; 5] = [Class::Rare, Class::Mid, Class::Frequent, Class::TwoWord, Class::Prefix];

impl Class {
    fn name(self) -> &'static str {
        match self {
            Class::Rare => "rare",
            Class::Mid => "mid",
            Class::Frequent => "frequent",
            Class::TwoWord => "two-word",
            Class::Prefix => "prefix",
        }
    }
}

struct QuerySpec {
    class: Class,
    text: String,
    /// Messages of the bench team holding the (first) word, as generated.
    df: Option<u32>,
}

fn queryable(s: &str) -> bool {
    s.len() >= 3 && s.chars().all(|c| c.is_ascii_lowercase()) && !SKELETON.iter().any(|k| k.contains(s))
}

/// `n` items spread evenly over `c`.
fn spread(c: &[usize], n: usize) -> Vec<usize> {
    if c.len() <= n {
        return c.to_vec();
    }
    (0..n).map(|k| c[k * c.len() / n]).collect()
}

/// `n` items of `c` whose document frequencies are closest to `n` targets
/// spread evenly on a log scale from `lo` to `hi`.
fn log_spread(c: &[usize], df: &[u32], lo: f64, hi: f64, n: usize) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::new();
    let lo = lo.max(1.0);
    for k in 0..n {
        let target = (lo.ln() + (hi.max(lo).ln() - lo.ln()) * k as f64 / (n - 1).max(1) as f64).exp();
        let best = c.iter().copied().filter(|i| df[*i] > 0 && !out.contains(i)).min_by(|a, b| {
            let d = |i: usize| ((df[i] as f64).ln() - target.ln()).abs();
            d(*a).total_cmp(&d(*b))
        });
        out.extend(best);
    }
    out
}

fn choose_queries(v: &Vocab, df: &[u32], bench_messages: usize) -> Vec<QuerySpec> {
    let n = bench_messages.max(1) as f64;
    let ok = |i: usize| i >= v.stop && v.words[i].len() >= 4 && queryable(&v.words[i]);
    let by_df_desc = |mut c: Vec<usize>| {
        c.sort_by_key(|&i| (std::cmp::Reverse(df[i]), i));
        c
    };
    let frequent = by_df_desc((0..VOCAB).filter(|&i| ok(i) && df[i] as f64 / n >= 0.08).collect());
    let frequent = spread(&frequent, 8);
    let mid =
        by_df_desc(log_spread(&(0..v.words.len()).filter(|&i| ok(i)).collect::<Vec<_>>(), df, 0.0005 * n, 0.02 * n, 8));
    // Rare: tokens of the tail found in 3–30 messages (at a small scale,
    // fewer: whatever is found at all).
    let mut rare = by_df_desc((VOCAB..v.words.len()).filter(|&i| ok(i) && (3..=30).contains(&df[i])).collect());
    if rare.len() < 8 {
        rare = by_df_desc((VOCAB..v.words.len()).filter(|&i| ok(i) && df[i] >= 1).collect());
    }
    let rare = spread(&rare, 8);
    let (f, m, r) = (&frequent, &mid, &rare);
    let pick = |l: &[usize], k: usize| l[k % l.len()];
    let word = |i: usize| v.words[i].clone();
    let mut out = Vec::new();
    let mut q = |class, text: String, df: Option<u32>| out.push(QuerySpec { class, text, df });
    for &i in r {
        q(Class::Rare, format!("{} ", word(i)), Some(df[i]));
    }
    for &i in m {
        q(Class::Mid, format!("{} ", word(i)), Some(df[i]));
    }
    for &i in f {
        q(Class::Frequent, format!("{} ", word(i)), Some(df[i]));
    }
    let pairs = [
        (pick(f, 0), pick(f, 1)),
        (pick(f, 2), pick(f, 3)),
        (pick(f, 4), pick(m, 0)),
        (pick(f, 5), pick(m, 1)),
        (pick(m, 2), pick(m, 3)),
        (pick(m, 4), pick(m, 5)),
        (pick(f, 6), pick(r, 0)),
        (pick(m, 6), pick(r, 1)),
    ];
    for (a, b) in pairs {
        q(Class::TwoWord, format!("{} {} ", word(a), word(b)), None);
    }
    // As typed, no trailing space: the last word is a prefix.
    let prefix = |i: usize, len: usize| {
        let w = &v.words[i];
        // The shortest prefix, from `len` on, that means nothing alone.
        (len..w.len()).map(|l| w[..l].to_string()).find(|p| queryable(p)).unwrap_or_else(|| w.clone())
    };
    for (i, len) in [
        (pick(f, 0), 4),
        (pick(f, 3), 4),
        (pick(m, 0), 4),
        (pick(m, 3), 4),
        (pick(m, 6), 4),
        (pick(m, 1), 3),
        (pick(r, 2), 5),
    ] {
        q(Class::Prefix, prefix(i, len), None);
    }
    q(Class::Prefix, format!("{} {}", word(pick(f, 1)), prefix(pick(m, 2), 4)), None);
    out
}

// ----- measuring ----------------------------------------------------------------

/// The LIKE scan, straight on the database.
enum Like {
    Sqlite(rusqlite::Connection),
    Pg(postgres::Client),
}

/// Every message of the team holding every word: a ranked search needs all
/// the matches to rank them, so a search by `LIKE` scans the whole table
/// (case-insensitive, as search is: SQLite's LIKE is, PostgreSQL's ILIKE).
fn like_sql(terms: usize, dollar: bool) -> String {
    let p = |n: usize| if dollar { format!("${n}") } else { format!("?{n}") };
    let op = if dollar { "ILIKE" } else { "LIKE" };
    let mut sql = format!("SELECT thread, id FROM messages WHERE team = {} AND deleted = 0", p(1));
    for k in 0..terms {
        sql += &format!(" AND body {op} '%' || {} || '%'", p(k + 2));
    }
    sql
}

impl Like {
    /// Rows found.
    fn run(&mut self, team: &str, terms: &[String]) -> usize {
        match self {
            Like::Sqlite(c) => {
                let mut stmt = c.prepare_cached(&like_sql(terms.len(), false)).unwrap();
                let params = std::iter::once(team).chain(terms.iter().map(String::as_str));
                let rows = stmt.query_map(rusqlite::params_from_iter(params), |r| r.get::<_, String>(1)).unwrap();
                rows.inspect(|r| assert!(r.is_ok())).count()
            }
            Like::Pg(c) => {
                let team = team.to_string();
                let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> = vec![&team];
                params.extend(terms.iter().map(|t| t as &(dyn postgres::types::ToSql + Sync)));
                c.query(like_sql(terms.len(), true).as_str(), &params).unwrap().len()
            }
        }
    }

    /// Reads the whole table once, so the timed scans find it cached.
    fn warm(&mut self) {
        let sql = "SELECT count(*) FROM messages WHERE body LIKE '%qqxqqzq%'";
        match self {
            Like::Sqlite(c) => {
                let _ = c.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
            }
            Like::Pg(c) => {
                let _ = c.query_one(sql, &[]).unwrap();
            }
        }
    }
}

#[derive(Default)]
struct Measured {
    search_ms: Vec<f64>,
    like_ms: Vec<f64>,
    hits: usize,
    like_hits: usize,
    /// Hits outside the bench team's threads (must be 0).
    foreign: usize,
    snippet: Option<String>,
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

fn measure(store: &dyn Store, like: &mut Like, queries: &[QuerySpec], cfg: &Config) -> Vec<Measured> {
    let web = store.web().expect("the SQL stores serve the web pages");
    let team = TeamId::new(BENCH_TEAM).unwrap();
    let mut out: Vec<Measured> = queries.iter().map(|_| Measured::default()).collect();
    let search = |q: &QuerySpec, m: &mut Measured, timed: bool| {
        let start = Instant::now();
        let hits =
            web.search(&team, &Query::parse(&q.text), LIMIT).unwrap_or_else(|e| panic!("search {:?}: {e}", q.text));
        let took = ms(start);
        if timed {
            m.search_ms.push(took);
        }
        m.hits = hits.len();
        m.foreign =
            hits.iter().filter(|h| h.thread.as_str()[2..].parse::<usize>().map_or(true, |t| !in_bench_team(t))).count();
        if m.snippet.is_none() {
            m.snippet = hits.first().map(|h| h.snippet.replace(MARK_START, "«").replace(MARK_END, "»"));
        }
    };
    for (q, m) in queries.iter().zip(&mut out) {
        search(q, m, false);
    }
    for _ in 0..cfg.search_runs {
        for (q, m) in queries.iter().zip(&mut out) {
            search(q, m, true);
        }
    }
    eprintln!("  search timed; LIKE scans next");
    like.warm();
    for _ in 0..cfg.like_runs {
        for (q, m) in queries.iter().zip(&mut out) {
            let terms = Query::parse(&q.text).terms;
            let start = Instant::now();
            m.like_hits = like.run(BENCH_TEAM, &terms);
            m.like_ms.push(ms(start));
        }
    }
    out
}

// ----- reporting ----------------------------------------------------------------

fn sorted(v: impl IntoIterator<Item = f64>) -> Vec<f64> {
    let mut v: Vec<f64> = v.into_iter().collect();
    v.sort_by(f64::total_cmp);
    v
}

/// Nearest-rank percentile of sorted samples.
fn pct(s: &[f64], p: f64) -> f64 {
    if s.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

fn mean(s: &[f64]) -> f64 {
    s.iter().sum::<f64>() / s.len().max(1) as f64
}

fn fmt_ms(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1 << 20) as f64)
}

fn yes(b: bool) -> &'static str {
    if b { "holds" } else { "does NOT hold" }
}

fn report(db: &str, cfg: &Config, fill: &Fill, size: &str, queries: &[QuerySpec], m: &[Measured]) {
    println!();
    println!("=== {db}: search vs LIKE ===");
    println!(
        "data: {} threads × {} messages = {} messages (team {BENCH_TEAM:?}: {}, team {OTHER_TEAM:?}: {})",
        cfg.threads,
        cfg.messages,
        fill.messages,
        fill.bench_messages,
        fill.messages - fill.bench_messages
    );
    println!(
        "fill: {:.1} s = {:.0} messages/s ({:.1} s of it generating the text), ~{} messages per transaction",
        fill.secs,
        fill.messages as f64 / fill.secs,
        fill.gen_secs,
        fill.per_tx
    );
    println!("size: {size}");
    println!(
        "runs: search {} timed per query (+1 warm-up), LIKE {} per query (after one cold-cache-warming scan); limit {LIMIT}; ms",
        cfg.search_runs, cfg.like_runs
    );
    println!();
    println!(
        "{:<9} {:<28} {:>7} {:>5} {:>9} {:>9} {:>6} {:>9} {:>8}",
        "class", "query", "df", "hits", "srch p50", "srch max", "LIKE#", "LIKE p50", "ratio"
    );
    for (q, r) in queries.iter().zip(m) {
        let s = sorted(r.search_ms.iter().copied());
        let l = sorted(r.like_ms.iter().copied());
        println!(
            "{:<9} {:<28} {:>7} {:>5} {:>9} {:>9} {:>6} {:>9} {:>7.1}×",
            q.class.name(),
            format!("{:?}", q.text),
            q.df.map_or("-".into(), |d| d.to_string()),
            r.hits,
            fmt_ms(pct(&s, 50.0)),
            fmt_ms(pct(&s, 100.0)),
            r.like_hits,
            fmt_ms(pct(&l, 50.0)),
            pct(&l, 50.0) / pct(&s, 50.0)
        );
    }
    let foreign: usize = m.iter().map(|r| r.foreign).sum();
    if foreign > 0 {
        println!("!! {foreign} search hits came from another team's threads");
    }
    println!();
    println!(
        "{:<9} {:>3} | {:>8} {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8} | {:>10} {:>9} {:>11} | {:>5}",
        "class",
        "n",
        "srch p50",
        "srch p95",
        "srch max",
        "srch avg",
        "LIKE p50",
        "LIKE p95",
        "LIKE avg",
        "ratio mean",
        "ratio p95",
        "worst query",
        "≥20×"
    );
    let row = |name: &str, sel: &dyn Fn(&QuerySpec) -> bool| {
        let picked: Vec<&Measured> = queries.iter().zip(m).filter(|(q, _)| sel(q)).map(|(_, r)| r).collect();
        let s = sorted(picked.iter().flat_map(|r| r.search_ms.iter().copied()));
        let l = sorted(picked.iter().flat_map(|r| r.like_ms.iter().copied()));
        let worst = picked
            .iter()
            .map(|r| pct(&sorted(r.like_ms.iter().copied()), 50.0) / pct(&sorted(r.search_ms.iter().copied()), 50.0))
            .fold(f64::INFINITY, f64::min);
        let (rm, rp) = (mean(&l) / mean(&s), pct(&l, 95.0) / pct(&s, 95.0));
        println!(
            "{:<9} {:>3} | {:>8} {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8} | {:>9.1}× {:>8.1}× {:>10.1}× | {:>5}",
            name,
            picked.len(),
            fmt_ms(pct(&s, 50.0)),
            fmt_ms(pct(&s, 95.0)),
            fmt_ms(pct(&s, 100.0)),
            fmt_ms(mean(&s)),
            fmt_ms(pct(&l, 50.0)),
            fmt_ms(pct(&l, 95.0)),
            fmt_ms(mean(&l)),
            rm,
            rp,
            worst,
            if rm >= GOAL_RATIO && rp >= GOAL_RATIO { "yes" } else { "no" }
        );
        (rm, rp, pct(&s, 95.0))
    };
    for c in CLASSES {
        row(c.name(), &|q: &QuerySpec| q.class == c);
    }
    let (rm, rp, p95) = row("overall", &|_: &QuerySpec| true);
    println!();
    println!(
        "goal (issue): search ≥ {GOAL_RATIO:.0}× faster than LIKE: by the means {rm:.1}× — {}; by the p95s {rp:.1}× — {}",
        yes(rm >= GOAL_RATIO),
        yes(rp >= GOAL_RATIO)
    );
    println!(
        "goal (issue): search p95 in tens of milliseconds (< {GOAL_P95_MS:.0} ms): {} ms — {}",
        fmt_ms(p95),
        yes(p95 < GOAL_P95_MS)
    );
    if let Some((q, s)) =
        queries.iter().zip(m).find_map(|(q, r)| (q.class == Class::Mid).then_some((q, r.snippet.as_ref()?)))
    {
        println!("example snippet for {:?}: {s}", q.text);
    }
}

fn sqlite_size(conn: &rusqlite::Connection, path: &std::path::Path) -> String {
    // Fold the WAL in first, so the file is the whole database.
    let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
    let file = std::fs::metadata(path).map_or(0, |m| m.len());
    let wal = std::fs::metadata(path.with_extension("sqlite-wal")).map_or(0, |m| m.len());
    let mut by_name: HashMap<String, u64> = HashMap::new();
    if let Ok(mut stmt) = conn.prepare("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name") {
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))).unwrap();
        for r in rows.flatten() {
            by_name.insert(r.0, r.1 as u64);
        }
    }
    let sum = |f: &dyn Fn(&str) -> bool| by_name.iter().filter(|(n, _)| f(n)).map(|(_, s)| *s).sum::<u64>();
    let fts = sum(&|n| n.starts_with("message_search"));
    let messages = sum(&|n| n == "messages" || n == "messages_by_pos" || n == "sqlite_autoindex_messages_1");
    let changes = sum(&|n| n.starts_with("changes") || n == "sqlite_autoindex_changes_1");
    format!(
        "{} file (+{} WAL): messages table+indexes {}, change log {}, FTS5 index {}",
        mib(file),
        mib(wal),
        mib(messages),
        mib(changes),
        mib(fts)
    )
}

fn pg_size(c: &mut postgres::Client) -> String {
    let rows = c
        .query(
            "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = current_schema() AND c.relkind = 'r'",
            &[],
        )
        .unwrap();
    let total: i64 = rows.iter().map(|r| r.get::<_, i64>(1)).sum();
    let of = |name: &str| rows.iter().find(|r| r.get::<_, &str>(0) == name).map_or(0, |r| r.get::<_, i64>(1));
    let gin: i64 = c.query_one("SELECT pg_relation_size('messages_search')", &[]).unwrap().get(0);
    format!(
        "{} in all tables: messages (with TOAST, indexes, tsvector column) {}, change log {}, of which GIN index {}",
        mib(total as u64),
        mib(of("messages") as u64),
        mib(of("changes") as u64),
        mib(gin as u64)
    )
}

// ----- main ---------------------------------------------------------------------

fn run_sqlite(cfg: &Config, v: &Vocab) {
    let dir = std::env::temp_dir().join(format!("threadsync-bench-search-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("search.sqlite");
    eprintln!("SQLite at {}: filling…", path.display());
    let store = SqliteStore::open(&path).unwrap();
    let f = fill(&store, cfg, v);
    let queries = choose_queries(v, &f.df, f.bench_messages);
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(30)).unwrap();
    eprintln!("  filled in {:.1} s; measuring the size", f.secs);
    let size = sqlite_size(&conn, &path);
    eprintln!("  timing {} queries", queries.len());
    let mut like = Like::Sqlite(conn);
    let m = measure(&store, &mut like, &queries, cfg);
    report("SQLite", cfg, &f, &size, &queries, &m);
    drop(like);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

fn pg_base_url() -> String {
    std::env::var("THREADSYNC_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh schema, dropped on drop (as tests/common's `PgSchema`).
struct PgSchema {
    name: String,
    url: String,
}

impl PgSchema {
    fn new() -> PgSchema {
        let name = format!("bench_search_{}", std::process::id());
        let mut c = postgres::Client::connect(&pg_base_url(), postgres::NoTls)
            .expect("PostgreSQL must be reachable at 127.0.0.1:5432 (database test) with SEARCH_BENCH_PG=1");
        c.batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}")).unwrap();
        let sep = if pg_base_url().contains('?') { '&' } else { '?' };
        let url = format!("{}{sep}options=-csearch_path%3D{name}", pg_base_url());
        PgSchema { name, url }
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&pg_base_url(), postgres::NoTls) {
            let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name));
        }
    }
}

fn run_pg(cfg: &Config, v: &Vocab) {
    let schema = PgSchema::new();
    eprintln!("PostgreSQL schema {}: filling…", schema.name);
    let store = PgStore::open(&schema.url).unwrap();
    let f = fill(&store, cfg, v);
    let queries = choose_queries(v, &f.df, f.bench_messages);
    let mut c = postgres::Client::connect(&schema.url, postgres::NoTls).unwrap();
    eprintln!("  filled in {:.1} s; VACUUM ANALYZE", f.secs);
    c.batch_execute("VACUUM ANALYZE messages").unwrap();
    let size = pg_size(&mut c);
    eprintln!("  timing {} queries", queries.len());
    let mut like = Like::Pg(c);
    let m = measure(&store, &mut like, &queries, cfg);
    report("PostgreSQL", cfg, &f, &size, &queries, &m);
    drop(like);
    drop(store);
}

fn main() {
    let cfg = Config::from_env();
    let v = Vocab::new(&mut ChaCha8Rng::seed_from_u64(SEED));
    println!(
        "search bench: {} threads × {} messages (SEARCH_BENCH_THREADS / SEARCH_BENCH_MESSAGES), vocabulary {VOCAB} Zipf words + {TAIL} rare tokens",
        cfg.threads, cfg.messages
    );
    if cfg.sqlite {
        run_sqlite(&cfg, &v);
    }
    if cfg.pg {
        run_pg(&cfg, &v);
    } else {
        println!("\n(PostgreSQL skipped: set SEARCH_BENCH_PG=1)");
    }
}
