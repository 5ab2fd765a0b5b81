//! `POST /v1/push`: a batch of mutations, applied exactly once.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};

use super::metrics::StatusLabel;
use super::{ApiError, AppState, JsonBody, Team, blocking};
use crate::server::core;
use crate::server::store::StoreExt;
use crate::wire::{MutationStatus, PushRequest, PushResponse};

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/v1/push", post(push))
}

/// Applies a batch of mutations, each exactly once (by client id and
/// mutation id), and answers one result per mutation.
#[utoipa::path(
    post,
    path = "/v1/push",
    tag = "sync",
    operation_id = "push",
    security(("bearer" = [])),
    request_body(
        content = PushRequest,
        description = "One client's mutations; each one thread's operations under one mutation id.",
        example = json!({
            "clientId": "c-openapi",
            "machine": "laptop",
            "mutations": [{ "id": 1, "threadId": "T-openapi", "ops": [
                { "op": "create", "created": 1732460000000i64, "env": {} },
                { "op": "setTitle", "title": "Example", "base": "" },
                { "op": "append", "after": null, "message":
                    { "id": "m-1", "role": "user", "content": "hello", "timestamp": 1732460001000i64 } }
            ] }]
        }),
    ),
    responses((
        status = 200,
        description = "One result per mutation, in order, and the team's log head.",
        body = PushResponse,
        links(
            ("GetThread" = (
                operation_id = "getThread",
                parameters(("threadId" = "$response.body#/results/0/threadId")),
                description = "The thread the first mutation changed."
            )),
            ("PullAfter" = (
                operation_id = "pull",
                parameters(("cursor" = "$response.body#/cursor")),
                description = "Changes after this push."
            )),
        ),
    )),
)]
async fn push(
    State(s): State<AppState>,
    Team(team): Team,
    JsonBody(req, size): JsonBody<PushRequest>,
) -> Result<Response, ApiError> {
    if req.mutations.len() > s.cfg.max_mutations {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_mutations",
            format!("{} mutations in one push; the limit is {}", req.mutations.len(), s.cfg.max_mutations),
        ));
    }
    if let Some(machine) = &req.machine
        && (machine.len() > crate::wire::MAX_MACHINE_NAME || machine.chars().any(char::is_control))
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("machine: at most {} bytes, no control characters", crate::wire::MAX_MACHINE_NAME),
        ));
    }
    if let Some(m) = req.mutations.iter().find(|m| m.id == 0) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("mutation ids start at 1 (thread {})", m.thread_id),
        ));
    }
    let Ok(_permit) = tokio::time::timeout(Duration::from_secs(2), s.pushes.clone().acquire_owned()).await else {
        return Err(ApiError::busy("too many pushes at once; retry shortly"));
    };
    s.metrics.bytes_in.inc_by(size as u64);
    let (store, limits, t) = (s.store.clone(), s.cfg.limits, team.clone());
    let big = size >= RELEASE_AFTER;
    let (resp, head) = blocking(move || {
        let r = store.run(&t, true, |tx| core::push(tx, &req, &limits));
        drop(req);
        if big {
            release_memory();
        }
        r
    })
    .await?;
    if let Some(head) = head {
        s.hub.notify(&team, head);
        s.log_grew(&team);
    }
    for r in &resp.results {
        let status = match r.status {
            MutationStatus::Applied => "applied",
            MutationStatus::Duplicate => "duplicate",
            MutationStatus::Conflict => "conflict",
            MutationStatus::Rejected => "rejected",
            MutationStatus::Gap => "gap",
        };
        s.metrics.mutations.get_or_create(&StatusLabel { status: status.into() }).inc();
    }
    Ok(Json(resp).into_response())
}

/// A push at least this large leaves the allocator holding several times
/// its size once it is freed (the body, its parsed form, the rows).
const RELEASE_AFTER: usize = 4 << 20;

/// Hands freed memory back to the system, so that one large push does not
/// leave the server at several times its usual size for good.
fn release_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}
