//! `GET /v1/threads/{id}` and `GET /v1/threads/{id}/messages/{message}`:
//! a thread (or its changes since a version), and one message as the server
//! keeps it.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{ApiError, AppState, PathIds, QueryParams, Team, blocking};
use crate::model::{Message, MessageId, ThreadId};
use crate::server::core::StoreError;
use crate::server::store::StoreExt;
use crate::wire::Change;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/v1/threads/{id}", get(thread)).route("/v1/threads/{id}/messages/{message}", get(kept_message))
}

/// A thread's changes after a version (`?from=V`).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct ThreadChanges {
    thread_id: ThreadId,
    /// The thread's version now.
    version: u64,
    /// The thread's changes after version V, in order (at most a page; fetch again from the last one's
    /// `version` for more).
    changes: Vec<Change>,
}

/// One message as the server keeps it.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct KeptMessage {
    thread_id: ThreadId,
    message: Arc<Message>,
    /// Whether the message is deleted (its content is kept, so it can be brought back).
    deleted: bool,
}

#[derive(Deserialize)]
struct ThreadQuery {
    /// Only the changes after this version.
    from: Option<u64>,
}

/// A thread as in its file (or, with `?from=V`, its changes after version V).
#[utoipa::path(
    get,
    path = "/v1/threads/{threadId}",
    tag = "sync",
    operation_id = "getThread",
    security(("bearer" = [])),
    params(
        ("threadId" = ThreadId, Path, description = "The thread."),
        ("from" = Option<u64>, Query, minimum = 0, description = "Only the changes after this version."),
        ("If-None-Match" = Option<String>, Header, description = "An `ETag` this route gave: 304 if unchanged."),
    ),
    responses(
        (
            status = 200,
            description = "The thread (`id`, `v`, `created`, `title`, `messages`, `env`), or with `from` \
                           `{threadId, version, changes}`.",
            body = super::openapi::ThreadAnswer,
            headers(("ETag" = String, description = "`\"v<version>\"`")),
            links(
                ("GetFirstMessage" = (
                    operation_id = "getMessage",
                    parameters(
                        ("threadId" = "$request.path.threadId"),
                        ("messageId" = "$response.body#/messages/0/id"),
                    ),
                    description = "The thread's first message as the server keeps it."
                )),
                ("IfNoneMatch" = (
                    operation_id = "getThread",
                    parameters(("threadId" = "$request.path.threadId"), ("If-None-Match" = "$response.header.ETag")),
                    description = "The same thread, unchanged: 304."
                )),
                ("ChangesSinceCreation" = (
                    operation_id = "getThread",
                    parameters(("threadId" = "$request.path.threadId"), ("from" = json!(0))),
                    description = "Every change of the thread the log still keeps."
                )),
            ),
        ),
        (status = 304, description = "`If-None-Match` named the current version.",
            headers(("ETag" = String, description = "`\"v<version>\"`"))),
    ),
)]
async fn thread(
    State(s): State<AppState>,
    Team(team): Team,
    PathIds(id): PathIds<String>,
    QueryParams(q): QueryParams<ThreadQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = ThreadId::new(id)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_thread_id", format!("bad thread id: {e}")))?;
    let (store, t, tid) = (s.store.clone(), team.clone(), id.clone());
    let limit = s.cfg.pull_limits.max_changes;
    let found = blocking(move || {
        let found = store.run(&t, false, |tx| {
            Ok(match tx.doc(&tid)? {
                None => None,
                Some(doc) => {
                    let changes = match q.from {
                        Some(v) if v < doc.thread.v => Some(tx.thread_changes(&tid, v, limit)?),
                        Some(_) => Some(Vec::new()),
                        None => None,
                    };
                    Some((doc, changes))
                }
            })
        })?;
        Ok(found.0)
    })
    .await?;
    // Another team's thread answers exactly like a missing one.
    let Some((doc, changes)) = found else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no thread {id}")));
    };
    let etag = format!("\"v{}\"", doc.thread.v);
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
    {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    let body = match changes {
        None => serde_json::to_vec(&doc.thread),
        Some(changes) => {
            let from = q.from.unwrap_or(0);
            if changes.first().is_some_and(|c| c.version != from + 1) || (changes.is_empty() && from < doc.thread.v) {
                return Err(ApiError::new(
                    StatusCode::GONE,
                    "refetch",
                    format!("changes after version {from} are no longer kept; fetch the whole thread"),
                ));
            }
            serde_json::to_vec(&ThreadChanges { thread_id: id, version: doc.thread.v, changes })
        }
    }
    .map_err(|e| StoreError::new(e.to_string()))?;
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (header::ETAG, HeaderValue::from_str(&etag).unwrap()),
        ],
        Body::from(body),
    )
        .into_response())
}

/// One message as the server keeps it, deleted or not (what a client needs
/// to bring a deleted message back).
#[utoipa::path(
    get,
    path = "/v1/threads/{threadId}/messages/{messageId}",
    tag = "sync",
    operation_id = "getMessage",
    security(("bearer" = [])),
    params(
        ("threadId" = ThreadId, Path, description = "The thread."),
        ("messageId" = MessageId, Path, description = "The message, deleted or not."),
    ),
    responses((
        status = 200,
        description = "The message as the server keeps it, and whether it is deleted (a delete keeps the content).",
        body = KeptMessage,
    )),
)]
async fn kept_message(
    State(s): State<AppState>,
    Team(team): Team,
    PathIds((id, message)): PathIds<(String, String)>,
) -> Result<Response, ApiError> {
    let id = ThreadId::new(id)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_thread_id", format!("bad thread id: {e}")))?;
    let mid = MessageId::new(message)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("bad message id: {e}")))?;
    let (store, t, tid, m) = (s.store.clone(), team.clone(), id.clone(), mid.clone());
    let found = blocking(move || Ok(store.run(&t, false, |tx| tx.kept_message(&tid, &m))?.0)).await?;
    // Another team's thread answers exactly like a missing one.
    let Some((message, deleted)) = found else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no message {mid} in thread {id}")));
    };
    Ok(Json(KeptMessage { thread_id: id, message, deleted }).into_response())
}
