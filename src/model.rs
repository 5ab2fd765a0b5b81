//! The thread model: what a thread file holds, validated.
//!
//! A thread is a title and an ordered list of messages. Fields threadsync
//! does not know are kept in `extra` so that rewriting a file never drops
//! what an assistant put there.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Longest thread or message id accepted.
pub const MAX_ID_LEN: usize = 128;

/// A thread id: `[A-Za-z0-9_-]{1,128}`. It names a file on disk, so nothing
/// else is ever accepted (no dots, no slashes).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ThreadId(String);

/// A message id. Not used as a path, so it is a little more permissive than a
/// thread id: 1–128 printable ASCII characters without spaces or quotes.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MessageId(Arc<str>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("id is empty")]
    Empty,
    #[error("id is {0} bytes long; at most {MAX_ID_LEN} are allowed")]
    TooLong(usize),
    #[error("id contains {0:?}; only letters, digits, '_' and '-' are allowed")]
    BadChar(char),
}

fn check_id(s: &str, extra_ok: fn(char) -> bool) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong(s.len()));
    }
    match s.chars().find(|&c| !(c.is_ascii_alphanumeric() || c == '_' || c == '-' || extra_ok(c))) {
        Some(c) => Err(IdError::BadChar(c)),
        None => Ok(()),
    }
}

impl ThreadId {
    pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
        let s = s.into();
        check_id(&s, |_| false)?;
        Ok(ThreadId(s))
    }

    /// A fresh, time-ordered thread id (`T-` + ULID). Time-ordered keys insert
    /// ~1.7x faster than random ones into SQLite's B-trees.
    pub fn generate(now_ms: u64, random: u128) -> Self {
        ThreadId(format!("T-{}", ulid::Ulid::from_parts(now_ms, random)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl MessageId {
    pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
        let s = s.into();
        check_id(&s, |c| matches!(c, '.' | ':' | '/' | '+' | '=' | '@'))?;
        Ok(MessageId(s.into()))
    }

    /// A fresh, time-ordered message id (`m-` + ULID).
    pub fn generate(now_ms: u64, random: u128) -> Self {
        MessageId(format!("m-{}", ulid::Ulid::from_parts(now_ms, random)).into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Declares a newtype id with the thread-id alphabet (`[A-Za-z0-9_-]{1,128}`):
/// validated on construction and deserialisation.
macro_rules! plain_id {
    ($(#[$doc:meta])* $t:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $t(String);

        impl $t {
            pub fn new(s: impl Into<String>) -> Result<Self, $crate::model::IdError> {
                let s = s.into();
                $crate::model::check_plain_id(&s)?;
                Ok($t(s))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $t {
            type Error = $crate::model::IdError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                $t::new(s)
            }
        }

        impl From<$t> for String {
            fn from(id: $t) -> String {
                id.0
            }
        }

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }
    };
}
pub(crate) use plain_id;

/// Checks the thread-id alphabet.
pub(crate) fn check_plain_id(s: &str) -> Result<(), IdError> {
    check_id(s, |_| false)
}

macro_rules! id_impls {
    ($t:ty) => {
        impl TryFrom<String> for $t {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                <$t>::new(s)
            }
        }
        impl From<$t> for String {
            fn from(id: $t) -> String {
                id.0.to_string()
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }
        impl std::borrow::Borrow<str> for $t {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}
id_impls!(ThreadId);
id_impls!(MessageId);

/// A message's content: a string or any JSON value (content blocks), possibly
/// megabytes.
///
/// Where only decisions are made — the client engine — content is *elided*:
/// held as its hash and size alone, the value itself staying in the sidecar's
/// state database (the shell loads it when it writes a file or pushes).
/// Elided content compares by hash and refuses to serialise, so it can never
/// reach a file or the wire by mistake.
#[derive(Clone)]
pub struct Content(Repr);

#[derive(Clone)]
enum Repr {
    Loaded(Arc<Loaded>),
    Elided { hash: ContentHash, size: usize },
}

struct Loaded {
    value: Value,
    // Computed on first use: a server comparing two loaded values never needs them.
    hash: std::sync::OnceLock<ContentHash>,
    size: std::sync::OnceLock<usize>,
}

impl Content {
    pub fn new(value: Value) -> Self {
        Content(Repr::Loaded(Arc::new(Loaded {
            value,
            hash: std::sync::OnceLock::new(),
            size: std::sync::OnceLock::new(),
        })))
    }

    /// Content known only by its hash and size.
    pub fn elided_of(hash: ContentHash, size: usize) -> Self {
        Content(Repr::Elided { hash, size })
    }

    /// The same content without its value.
    pub fn elided(&self) -> Self {
        Content::elided_of(self.hash(), self.size())
    }

    pub fn is_elided(&self) -> bool {
        matches!(self.0, Repr::Elided { .. })
    }

    /// The value, unless elided.
    pub fn value(&self) -> Option<&Value> {
        match &self.0 {
            Repr::Loaded(l) => Some(&l.value),
            Repr::Elided { .. } => None,
        }
    }

    /// The value, or null when elided (for diagnostics and conflict sides
    /// the engine computes only to throw away).
    pub fn value_or_null(&self) -> Value {
        self.value().cloned().unwrap_or(Value::Null)
    }

    pub fn hash(&self) -> ContentHash {
        match &self.0 {
            Repr::Loaded(l) => *l.hash.get_or_init(|| ContentHash::of(&l.value)),
            Repr::Elided { hash, .. } => *hash,
        }
    }

    /// Bytes on the wire (see [`json_size`]).
    pub fn size(&self) -> usize {
        match &self.0 {
            Repr::Loaded(l) => *l.size.get_or_init(|| json_size(&l.value)),
            Repr::Elided { size, .. } => *size,
        }
    }
}

impl From<Value> for Content {
    fn from(v: Value) -> Self {
        Content::new(v)
    }
}

impl PartialEq for Content {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Repr::Loaded(a), Repr::Loaded(b)) => Arc::ptr_eq(a, b) || a.value == b.value,
            _ => self.hash() == other.hash(),
        }
    }
}

impl Eq for Content {}

impl PartialEq<Value> for Content {
    fn eq(&self, other: &Value) -> bool {
        match self.value() {
            Some(v) => v == other,
            None => self.hash() == ContentHash::of(other),
        }
    }
}

impl fmt::Debug for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Loaded(l) => write!(f, "{:?}", l.value),
            Repr::Elided { hash, size } => write!(f, "<{hash:?}, {size} bytes>"),
        }
    }
}

impl Serialize for Content {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.value() {
            Some(v) => v.serialize(s),
            None => {
                Err(serde::ser::Error::custom("message content is not loaded (elided content never leaves the engine)"))
            }
        }
    }
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Value::deserialize(d).map(Content::new)
    }
}

/// One message. `content` is a string or any JSON (content blocks) and may be
/// megabytes; messages are shared (`Arc`) so that copies of a thread are cheap.
// `Eq` lets `Arc<Message>` comparisons short-cut on pointer equality.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Message {
    pub id: MessageId,
    pub role: String,
    pub content: Content,
    #[serde(default)]
    pub timestamp: i64,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One thread, as in its file. `v` is the thread's version: the server's
/// count of changes applied to it (plus, locally, changes not yet confirmed).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Thread {
    pub id: ThreadId,
    #[serde(default)]
    pub v: u64,
    #[serde(default)]
    pub created: i64,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub messages: Vec<Arc<Message>>,
    #[serde(default = "empty_object")]
    pub env: Value,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

pub fn empty_object() -> Value {
    Value::Object(Map::new())
}

impl Thread {
    pub fn new(id: ThreadId, created: i64) -> Self {
        Thread { id, v: 0, created, title: String::new(), messages: Vec::new(), env: empty_object(), extra: Map::new() }
    }

    /// Position of a message, searching from the end: the messages a change
    /// touches are almost always recent ones.
    pub fn position(&self, id: &MessageId) -> Option<usize> {
        self.messages.iter().rposition(|m| &m.id == id)
    }
}

impl Message {
    /// The same message with its content elided.
    pub fn elided(&self) -> Message {
        Message { content: self.content.elided(), ..self.clone() }
    }
}

/// A short, stable hash of a JSON value, used as the "based on" of edits so
/// that an edit need not carry the megabytes it replaces.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct ContentHash(pub u64);

impl ContentHash {
    pub fn of(v: &Value) -> Self {
        // serde_json's Map is ordered (BTreeMap), so this serialisation is canonical.
        let bytes = serde_json::to_vec(v).expect("a Value always serialises");
        let digest = Sha256::digest(&bytes);
        ContentHash(u64::from_be_bytes(digest[..8].try_into().unwrap()))
    }
}

impl From<ContentHash> for String {
    fn from(h: ContentHash) -> String {
        format!("{:016x}", h.0)
    }
}

impl TryFrom<String> for ContentHash {
    type Error = std::num::ParseIntError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        u64::from_str_radix(&s, 16).map(ContentHash)
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{:016x}", self.0)
    }
}

/// Size of a JSON value when sent, for byte budgets and limits.
pub fn json_size(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len() + 2,
        _ => serde_json::to_vec(v).map(|b| b.len()).unwrap_or(0),
    }
}

/// Why a thread file could not be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FileError {
    #[error("not valid thread JSON: {0}")]
    Json(String),
    #[error("the file's \"id\" is {found:?} but its name says {expected:?}")]
    IdMismatch { expected: String, found: String },
    #[error("message {index}: bad id: {error}")]
    BadMessageId { index: usize, error: IdError },
    #[error("message id {0} appears twice")]
    DuplicateMessageId(String),
}

/// The file form of a message: the id may be missing.
#[derive(Deserialize)]
struct RawMessage {
    #[serde(default)]
    id: Option<String>,
    role: String,
    content: Value,
    #[serde(default)]
    timestamp: i64,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Deserialize)]
struct RawThread {
    id: String,
    #[serde(default)]
    v: u64,
    #[serde(default)]
    created: i64,
    #[serde(default)]
    title: String,
    // Required: a file without it is broken, not "every message deleted".
    messages: Vec<RawMessage>,
    #[serde(default = "empty_object")]
    env: Value,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

/// Parses a thread file named `<expected>.json`. Messages without an id get a
/// stable one derived from the thread id, role, timestamp, content and how
/// many identical messages came before it, so that parsing the same file
/// twice (or on a restart) gives the same ids.
pub fn parse_thread_file(bytes: &[u8], expected: &ThreadId) -> Result<Thread, FileError> {
    let raw: RawThread = serde_json::from_slice(bytes).map_err(|e| FileError::Json(e.to_string()))?;
    if raw.id != expected.as_str() {
        return Err(FileError::IdMismatch { expected: expected.to_string(), found: raw.id });
    }
    let mut seen = std::collections::HashSet::new();
    let mut derived_count: std::collections::HashMap<u64, u32> = std::collections::HashMap::new();
    let mut messages = Vec::with_capacity(raw.messages.len());
    for (index, m) in raw.messages.into_iter().enumerate() {
        let id = match m.id {
            Some(id) => MessageId::new(id).map_err(|error| FileError::BadMessageId { index, error })?,
            None => {
                let key = derive_key(expected, &m.role, m.timestamp, &m.content);
                let n = derived_count.entry(key).or_insert(0);
                *n += 1;
                MessageId(format!("m-d{:016x}{}", key, if *n > 1 { format!("-{n}") } else { String::new() }).into())
            }
        };
        if !seen.insert(id.clone()) {
            return Err(FileError::DuplicateMessageId(id.0.to_string()));
        }
        messages.push(Arc::new(Message {
            id,
            role: m.role,
            content: Content::new(m.content),
            timestamp: m.timestamp,
            extra: m.extra,
        }));
    }
    Ok(Thread {
        id: expected.clone(),
        v: raw.v,
        created: raw.created,
        title: raw.title,
        messages,
        env: raw.env,
        extra: raw.extra,
    })
}

pub(crate) fn derive_key(thread: &ThreadId, role: &str, timestamp: i64, content: &Value) -> u64 {
    let mut h = Sha256::new();
    h.update(thread.as_str().as_bytes());
    h.update([0]);
    h.update(role.as_bytes());
    h.update([0]);
    h.update(timestamp.to_be_bytes());
    h.update(serde_json::to_vec(content).expect("a Value always serialises"));
    u64::from_be_bytes(h.finalize()[..8].try_into().unwrap())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn thread_ids_are_validated() {
        assert!(ThreadId::new("T-3f1c_ab").is_ok());
        assert_eq!(ThreadId::new(""), Err(IdError::Empty));
        assert_eq!(ThreadId::new("../etc/passwd"), Err(IdError::BadChar('.')));
        assert_eq!(ThreadId::new("a/b"), Err(IdError::BadChar('/')));
        assert_eq!(ThreadId::new("a b"), Err(IdError::BadChar(' ')));
        assert_eq!(ThreadId::new("é"), Err(IdError::BadChar('é')));
        assert_eq!(ThreadId::new("x".repeat(129)), Err(IdError::TooLong(129)));
        assert!(ThreadId::new("x".repeat(128)).is_ok());
        assert!(serde_json::from_value::<ThreadId>(json!("a\u{0}b")).is_err());
    }

    #[test]
    fn generated_ids_are_time_ordered_and_valid() {
        let a = ThreadId::generate(1_000, u128::MAX);
        let b = ThreadId::generate(1_001, 0);
        assert!(a < b);
        assert!(ThreadId::new(a.as_str()).is_ok());
        let m = MessageId::generate(5, 7);
        assert!(MessageId::new(m.as_str()).is_ok());
    }

    #[test]
    fn unknown_fields_survive_a_round_trip() {
        let text = json!({
            "id": "T-1", "v": 3, "created": 10, "title": "t", "custom": {"a": 1},
            "messages": [{"id": "m-1", "role": "user", "content": [{"type": "text"}], "timestamp": 5, "model": "x"}],
            "env": {"cwd": "/"}
        });
        let t = parse_thread_file(text.to_string().as_bytes(), &ThreadId::new("T-1").unwrap()).unwrap();
        assert_eq!(serde_json::to_value(&t).unwrap(), text);
    }

    #[test]
    fn missing_message_ids_are_derived_stably_and_distinctly() {
        let text = json!({"id": "T-1", "messages": [
            {"role": "user", "content": "hi", "timestamp": 1},
            {"role": "user", "content": "hi", "timestamp": 1},
            {"role": "assistant", "content": "hello", "timestamp": 2}]})
        .to_string();
        let id = ThreadId::new("T-1").unwrap();
        let a = parse_thread_file(text.as_bytes(), &id).unwrap();
        let b = parse_thread_file(text.as_bytes(), &id).unwrap();
        let ids: Vec<_> = a.messages.iter().map(|m| m.id.clone()).collect();
        assert_eq!(ids, b.messages.iter().map(|m| m.id.clone()).collect::<Vec<_>>());
        assert_ne!(ids[0], ids[1]);
        assert_ne!(ids[1], ids[2]);
    }

    #[test]
    fn bad_files_are_reported_not_accepted() {
        let id = ThreadId::new("T-1").unwrap();
        assert!(matches!(parse_thread_file(b"{\"id\": \"T-1\", \"mess", &id), Err(FileError::Json(_))));
        assert!(matches!(
            parse_thread_file(br#"{"id": "T-2", "messages": []}"#, &id),
            Err(FileError::IdMismatch { .. })
        ));
        // No `messages` is a broken file, not an empty thread.
        let e = parse_thread_file(br#"{"id": "T-1"}"#, &id).unwrap_err();
        assert!(e.to_string().contains("missing field `messages`"), "{e}");
        let dup = json!({"id": "T-1", "messages": [
            {"id": "m", "role": "user", "content": "a"}, {"id": "m", "role": "user", "content": "b"}]});
        assert_eq!(parse_thread_file(dup.to_string().as_bytes(), &id), Err(FileError::DuplicateMessageId("m".into())));
        let bad = json!({"id": "T-1", "messages": [{"id": "a b", "role": "user", "content": "a"}]});
        assert!(matches!(
            parse_thread_file(bad.to_string().as_bytes(), &id),
            Err(FileError::BadMessageId { index: 0, .. })
        ));
    }

    #[test]
    fn content_hash_is_canonical() {
        let a: Value = serde_json::from_str(r#"{"b": 1, "a": [1, "x"]}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a": [1, "x"], "b": 1}"#).unwrap();
        assert_eq!(ContentHash::of(&a), ContentHash::of(&b));
        assert_ne!(ContentHash::of(&a), ContentHash::of(&json!("x")));
        let h = ContentHash::of(&a);
        assert_eq!(serde_json::from_value::<ContentHash>(serde_json::to_value(h).unwrap()).unwrap(), h);
    }
}
