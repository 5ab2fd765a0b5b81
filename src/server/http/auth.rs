//! Bearer tokens: the team a request acts for.

use axum::extract::FromRequestParts;
use axum::http::{StatusCode, header, request::Parts};

use super::{ApiError, AppState, blocking};
use crate::server::core::TeamId;
use crate::server::store::token_hash;

/// The team of the request's bearer token.
pub struct Team(pub TeamId);

impl FromRequestParts<AppState> for Team {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(unauthorized("missing bearer token (Authorization: Bearer <token>)"));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() <= 256)
            .ok_or_else(|| unauthorized("malformed Authorization header; expected \"Bearer <token>\""))?;
        let hash = token_hash(token);
        let store = state.store.clone();
        match blocking(move || store.team_for_token(&hash)).await? {
            Some(team) => Ok(Team(team)),
            None => Err(unauthorized("the token is not valid (unknown or revoked)")),
        }
    }
}
