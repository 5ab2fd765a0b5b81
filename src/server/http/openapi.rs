//! The OpenAPI 3.1 document of the JSON API, served at `GET /openapi.json`.
//!
//! Routes, parameters and success answers come from the handlers'
//! `#[utoipa::path]` attributes; request and answer schemas are derived
//! from the wire types themselves (`#[derive(utoipa::ToSchema)]` in
//! `wire`, `ops`, `model`). Written here by hand: the schemas of types whose
//! serde form is custom (ids and hashes are strings, message content is
//! any JSON value, cursors are strings) or that live in `merge` (`Doc`,
//! `ConflictInfo`), the error answers of every operation (from one table,
//! [`ERRORS`], which `tests/openapi.rs` checks against protocol.md), and
//! the bearer security scheme. The document is built once.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use utoipa::openapi::content::Content as MediaContent;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{AllOfBuilder, AnyOfBuilder, ObjectBuilder, Ref, Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, ResponsesBuilder};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use super::AppState;
use crate::merge::{ConflictInfo, Doc};
use crate::model::{Content, ContentHash, MessageId, Thread, ThreadId};
use crate::wire::{ClientId, Cursor, PullResponse};

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/openapi.json", get(openapi_json))
}

/// The document, serialised once.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| document().to_string());

/// The OpenAPI document of the JSON API, as JSON.
pub fn document() -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document always serialises");
    fix_links(&mut doc);
    doc
}

/// utoipa 5 writes a link's fields in snake case (`operation_id`); OpenAPI
/// spells them `operationId`, `operationRef`, `requestBody`.
fn fix_links(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(serde_json::Value::Object(links)) = m.get_mut("links") {
                for link in links.values_mut().filter_map(serde_json::Value::as_object_mut) {
                    for (from, to) in [
                        ("operation_id", "operationId"),
                        ("operation_ref", "operationRef"),
                        ("request_body", "requestBody"),
                    ] {
                        if let Some(x) = link.remove(from) {
                            link.insert(to.into(), x);
                        }
                    }
                }
            }
            m.values_mut().for_each(fix_links);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(fix_links),
        _ => {}
    }
}

/// The OpenAPI 3.1 document of this API (this document).
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    operation_id = "openapi",
    responses((status = 200, description = "This document.", body = Object)),
)]
async fn openapi_json() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT.as_str())
}

const DESCRIPTION: &str = "The JSON API of `threadsync serve`, as protocol.md's \"HTTP API\" \
section describes it (protocol.md has the prose; this document the shapes).\n\n\
Every `/v1` route needs `Authorization: Bearer <token>`; the token names the team, and every \
read and write is scoped to it. Request bodies may be sent with `Content-Encoding: gzip` or \
`zstd`; answers over 1,400 bytes are compressed for clients that accept it. Every error is \
`{\"code\", \"message\"}` (schema `Error`); a route that does not exist answers 404 \
`not_found`, a method a route does not take 405 `method_not_allowed`.\n\n\
Not described here: the web pages (protocol.md, \"Web pages\": `/`, `/signin`, `/threads`, \
`/t/…`, `/s/…`, `/assets/…`), which are HTML for browsers behind a session cookie, not part \
of the JSON API.";

#[derive(OpenApi)]
#[openapi(
    info(title = "threadsync", description = DESCRIPTION, license(name = "MIT OR Apache-2.0")),
    paths(
        super::push::push,
        super::pull::pull,
        super::threads::thread,
        super::threads::kept_message,
        super::health,
        super::metrics::metrics,
        openapi_json,
    ),
    components(schemas(ErrorBody, ErrorCode)),
    modifiers(&Security, &Errors),
    tags(
        (name = "sync", description = "What sidecars push and pull"),
        (name = "meta", description = "Health, metrics and this document"),
    ),
)]
struct ApiDoc;

/// Every error answer, as protocol.md's error table lists them: status,
/// `code`, when.
pub const ERRORS: &[(u16, &str, &str)] = &[
    (
        400,
        "bad_request",
        "the body is not valid JSON, has wrong types, a bad id, a mutation id 0, or a query parameter is malformed",
    ),
    (400, "bad_body", "the body could not be read (broken stream, undecodable compression)"),
    (400, "bad_cursor", "`cursor` is not one this server issued"),
    (400, "bad_thread_id", "the path's thread id is not `[A-Za-z0-9_-]{1,128}` (or a path segment is not UTF-8)"),
    (401, "unauthorized", "missing or malformed `Authorization`, unknown or revoked token"),
    (404, "not_found", "no such thread (or message) in this team, or no such route"),
    (405, "method_not_allowed", "the route does not take this method"),
    (408, "timeout", "the request's body stalled for longer than the read timeout"),
    (410, "refetch", "the cursor (or `from` version) is older than the log keeps or newer than its head"),
    (413, "too_large", "the body is over the limit; the message names it in bytes"),
    (413, "too_many_mutations", "more than the server's limit (1,000) of mutations in one push"),
    (415, "unsupported_encoding", "a `Content-Encoding` other than `gzip`, `zstd` or `identity`"),
    (429, "overloaded", "too many pushes being applied or pulls being held; see `Retry-After`"),
    (500, "internal", "a storage or server fault (logged on the server)"),
    (503, "unavailable", "storage busy; see `Retry-After`"),
];

/// The error codes each operation may answer.
const OPERATION_ERRORS: &[(&str, &[&str])] = &[
    (
        "push",
        &[
            "bad_request",
            "bad_body",
            "unauthorized",
            "timeout",
            "too_large",
            "too_many_mutations",
            "unsupported_encoding",
            "overloaded",
            "internal",
            "unavailable",
        ],
    ),
    ("pull", &["bad_request", "bad_cursor", "unauthorized", "refetch", "overloaded", "internal", "unavailable"]),
    ("getThread", &["bad_request", "bad_thread_id", "unauthorized", "not_found", "refetch", "internal", "unavailable"]),
    ("getMessage", &["bad_request", "bad_thread_id", "unauthorized", "not_found", "internal", "unavailable"]),
    ("healthz", &["internal"]),
    ("metrics", &["internal"]),
    ("openapi", &["internal"]),
];

/// The bearer token every `/v1` route needs.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("tsk_<id>_<secret>")
                    .description(Some("A team's token (`threadsync token create --team NAME`)."))
                    .build(),
            ),
        );
    }
}

/// Adds each operation's error answers: per status, the `Error` schema
/// with `code` narrowed to the codes that operation answers with it.
struct Errors;

impl Modify for Errors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for op in [&mut item.get, &mut item.post].into_iter().flatten() {
                let id = op.operation_id.clone().unwrap_or_default();
                let codes = OPERATION_ERRORS.iter().find(|(o, _)| *o == id).map_or(&[][..], |(_, c)| c);
                let mut by_status: BTreeMap<u16, Vec<(&str, &str)>> = BTreeMap::new();
                for code in codes {
                    let (status, _, when) =
                        ERRORS.iter().find(|(_, c, _)| c == code).expect("OPERATION_ERRORS names a code in ERRORS");
                    by_status.entry(*status).or_default().push((code, when));
                }
                let mut responses = ResponsesBuilder::new();
                for (status, codes) in by_status {
                    let description = codes.iter().map(|(c, w)| format!("`{c}`: {w}")).collect::<Vec<_>>().join("; ");
                    let schema = AllOfBuilder::new().item(Ref::from_schema_name("Error")).item(
                        ObjectBuilder::new().property(
                            "code",
                            ObjectBuilder::new()
                                .schema_type(Type::String)
                                .enum_values(Some(codes.iter().map(|(c, _)| *c))),
                        ),
                    );
                    let mut response = ResponseBuilder::new()
                        .description(description)
                        .content("application/json", MediaContent::new(Some(schema)));
                    if status == 429 || status == 503 {
                        response = response.header(
                            "Retry-After",
                            HeaderBuilder::new()
                                .schema(u64::schema())
                                .description(Some("Seconds to wait before trying again."))
                                .build(),
                        );
                    }
                    responses = responses.response(status.to_string(), response.build());
                }
                op.responses.responses.extend(responses.build().responses);
            }
        }
    }
}

/// An error answer (every route's 4xx and 5xx; a held pull's failure after
/// its 200 was sent).
#[derive(utoipa::ToSchema)]
#[schema(as = Error)]
#[allow(dead_code)]
struct ErrorBody {
    code: ErrorCode,
    /// What is wrong, in a sentence.
    message: String,
}

/// What went wrong, for programs (protocol.md's error table).
struct ErrorCode;

impl PartialSchema for ErrorCode {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(ERRORS.iter().map(|(_, c, _)| *c)))
            .description(Some("What went wrong, for programs (protocol.md's error table)."))
            .into()
    }
}

impl ToSchema for ErrorCode {}

/// Implements `ToSchema` for a type whose JSON form is written by hand.
macro_rules! schema_by_hand {
    ($t:ty, $name:literal, $schema:expr) => {
        impl PartialSchema for $t {
            fn schema() -> RefOr<Schema> {
                $schema.into()
            }
        }
        impl ToSchema for $t {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
        }
    };
}

fn string(pattern: &str, description: &str) -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String).pattern(Some(pattern)).description(Some(description))
}

fn id(pattern: &str, description: &str) -> ObjectBuilder {
    string(pattern, description).min_length(Some(1)).max_length(Some(crate::model::MAX_ID_LEN))
}

schema_by_hand!(ThreadId, "ThreadId", id("^[A-Za-z0-9_-]+$", "A thread id: `[A-Za-z0-9_-]{1,128}`."));
schema_by_hand!(ClientId, "ClientId", id("^[A-Za-z0-9_-]+$", "A client id: `[A-Za-z0-9_-]{1,128}`."));
schema_by_hand!(MessageId, "MessageId", id("^[A-Za-z0-9_.:/+=@-]+$", "A message id: 1–128 of `[A-Za-z0-9_-.:/+=@]`."));
schema_by_hand!(
    ContentHash,
    "ContentHash",
    string(
        "^[0-9a-f]{16}$",
        "First 8 bytes of the SHA-256 of a value's canonical JSON (object keys sorted), as 16 lowercase hex digits."
    )
);
schema_by_hand!(
    Cursor,
    "Cursor",
    string(
        "^([0-9]+|s[0-9]+([.][A-Za-z0-9_-]{1,128})?)$",
        "Where a pull resumes: `<n>` (after change n of the team's log) or `s<head>[.<threadId>]` (paging \
         through snapshots). Only cursors this server issued are accepted."
    )
);
schema_by_hand!(
    Content,
    "Content",
    ObjectBuilder::new().schema_type(SchemaType::AnyValue).description(Some(
        "A message's content: a string or any JSON value (content blocks), possibly megabytes. Null in an \
         insert pulled back by its author (see `Change.elided`)."
    ))
);

/// A thread with what placement needs (`merge::Doc`): a pull's snapshot.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct DocSchema {
    thread: Thread,
    /// Message id → the message it was appended after (null: the first), deleted ones included.
    #[schema(schema_with = anchors)]
    after: (),
    /// Every message id in order, deleted ones included.
    seq: Vec<MessageId>,
    /// The deleted message ids (absent: none).
    #[serde(default)]
    deleted: Vec<MessageId>,
}

fn anchors() -> ObjectBuilder {
    let anchor = ObjectBuilder::new()
        .schema_type([Type::String, Type::Null].into_iter().collect::<SchemaType>())
        .description(Some("A message id, or null."));
    ObjectBuilder::new().schema_type(Type::Object).additional_properties(Some(anchor))
}

/// Why an operation was refused: the field changed since its base (`merge::ConflictInfo`).
#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct ConflictInfoSchema {
    kind: ConflictKindSchema,
    /// For message conflicts.
    #[serde(default)]
    message_id: MessageId,
    /// The value the refused operation wanted (null: delete).
    #[schema(value_type = Value)]
    local: serde_json::Value,
    /// The value the thread keeps (null: the message is gone).
    #[schema(value_type = Value)]
    remote: serde_json::Value,
}

/// Which field both sides changed (`merge::ConflictKind`).
#[derive(utoipa::ToSchema)]
#[schema(as = ConflictKind)]
#[serde(rename_all = "kebab-case")]
#[allow(dead_code)]
enum ConflictKindSchema {
    Title,
    Env,
    Content,
    EditDelete,
    DeleteEdit,
}

/// `merge` types, described by their mirrors above.
macro_rules! schema_by_mirror {
    ($t:ty, $name:literal, $mirror:ty) => {
        impl PartialSchema for $t {
            fn schema() -> RefOr<Schema> {
                <$mirror as PartialSchema>::schema()
            }
        }
        impl ToSchema for $t {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
            fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
                <$mirror as ToSchema>::schemas(schemas);
            }
        }
    };
}

schema_by_mirror!(Doc, "Doc", DocSchema);
schema_by_mirror!(ConflictInfo, "ConflictInfo", ConflictInfoSchema);

/// A pull's 200 body: the answer, or — for a pull held past a heartbeat,
/// whose 200 was already sent (the body then starts with spaces) — the
/// error that ended it (`refetch` means what a 410 means).
pub(super) struct PullAnswer;

impl PartialSchema for PullAnswer {
    fn schema() -> RefOr<Schema> {
        AnyOfBuilder::new()
            .item(Ref::from_schema_name("PullResponse"))
            .item(Ref::from_schema_name("Error"))
            .description(Some(
                "The pull answer; for a pull held past a heartbeat (streamed: spaces, then the JSON), possibly \
                 the error that ended it.",
            ))
            .into()
    }
}

impl ToSchema for PullAnswer {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push(("PullResponse".into(), PullResponse::schema()));
        <PullResponse as ToSchema>::schemas(schemas);
        schemas.push(("Error".into(), ErrorBody::schema()));
        <ErrorBody as ToSchema>::schemas(schemas);
    }
}

/// `GET /v1/threads/{threadId}`'s 200 body: the thread, or with `?from=V`
/// its changes after version V.
pub(super) struct ThreadAnswer;

impl PartialSchema for ThreadAnswer {
    fn schema() -> RefOr<Schema> {
        AnyOfBuilder::new()
            .item(Ref::from_schema_name("Thread"))
            .item(Ref::from_schema_name("ThreadChanges"))
            .description(Some("The thread as in its file; with `?from=V`, its changes after version V."))
            .into()
    }
}

impl ToSchema for ThreadAnswer {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push(("Thread".into(), Thread::schema()));
        <Thread as ToSchema>::schemas(schemas);
        schemas.push(("ThreadChanges".into(), super::threads::ThreadChanges::schema()));
        <super::threads::ThreadChanges as ToSchema>::schemas(schemas);
    }
}

/// `GET /healthz`'s answer.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(super) struct Health {
    #[schema(pattern = "^ok$")]
    status: String,
}
