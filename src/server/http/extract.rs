//! Reading requests: the body (admitted by its declared size and coding,
//! read to the limit), query parameters and path ids, each failing with the
//! protocol's JSON error.

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header, request::Parts};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use super::{ApiError, AppState};

/// Query parameters; a malformed one is the protocol's JSON error.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(q)) => Ok(QueryParams(q)),
            Err(e) => Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text())),
        }
    }
}

/// Path segments; one that is not UTF-8 cannot be an id.
pub struct PathIds<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for PathIds<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(p)) => Ok(PathIds(p)),
            Err(e) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_thread_id",
                format!("bad id in the path: {}", e.body_text()),
            )),
        }
    }
}

/// The content codings a request body may use (`identity` is none).
const CODINGS: [&str; 2] = ["gzip", "zstd"];

/// Refuses at once a body declared larger than the limit (the client
/// would otherwise send all of it first), and reads content codings case-
/// insensitively, as HTTP says (`GZIP` is `gzip`).
pub(super) async fn admit_body(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > s.cfg.max_body as u64) {
        let mut resp = ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the request body is larger than the server's limit of {} bytes", s.cfg.max_body),
        )
        .into_response();
        // The rest of the body is not read: the connection cannot be reused.
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        return resp;
    }
    if let Some(v) = req.headers().get(header::CONTENT_ENCODING) {
        let coding = v.to_str().unwrap_or("?").trim().to_ascii_lowercase();
        if coding.is_empty() || coding == "identity" {
            req.headers_mut().remove(header::CONTENT_ENCODING);
        } else if let Some(c) = CODINGS.iter().find(|c| **c == coding) {
            req.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static(c));
        } else {
            return ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_encoding",
                format!("Content-Encoding {coding:?} is not supported; send gzip, zstd or none"),
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// A JSON body, read up to the configured limit (after decompression).
pub struct JsonBody<T>(pub T, pub usize);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let limit = state.cfg.max_body;
        let bytes = axum::body::to_bytes(req.into_body(), limit).await.map_err(|e| {
            // Besides the limit, reading fails only on a broken body stream
            // (or a compressed body that does not decompress).
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            let (mut too_large, mut stalled) = (false, false);
            while let Some(err) = source {
                too_large |= err.is::<http_body_util::LengthLimitError>();
                stalled |= err.is::<tower_http::timeout::TimeoutError>();
                source = err.source();
            }
            if stalled {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "timeout",
                    format!("the request body stalled for longer than {:?}", state.cfg.read_timeout),
                )
            } else if too_large {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("the request body is larger than the server's limit of {limit} bytes"),
                )
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_body", format!("could not read the request body: {e}"))
            }
        })?;
        let value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("invalid request body: {e}")))?;
        Ok(JsonBody(value, bytes.len()))
    }
}
