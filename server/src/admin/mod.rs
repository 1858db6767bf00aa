//! The admin REST API (behind the admin token), health checks and Prometheus metrics.
//!
//! Errors are JSON: `{"error": {"code": 2005, "name": "no_such_session", "message": "..."}}`
//! with the protocol's stable codes.

mod openapi;
mod sessions;

use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sealbus::protocol::ErrorCode;
use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::server::Server;

/// The admin, health and metrics routes.
pub(crate) fn routes() -> Router<Server> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/openapi.json", get(openapi::document))
        .route("/api/sessions", get(sessions::list).post(sessions::create))
        .route(
            "/api/sessions/{name}",
            get(sessions::show)
                .put(sessions::update)
                .delete(sessions::delete),
        )
        .route("/api/sessions/{name}/clients", get(sessions::clients))
        .route("/api/sessions/{name}/publish", post(sessions::publish))
        .route(
            "/api/sessions/{name}/messages/{mid}",
            get(sessions::message_status),
        )
        .route("/api/sessions/{name}/tokens", post(sessions::token))
        .route("/api/createSession", post(sessions::create_compat))
}

async fn ready(State(server): State<Server>) -> Response {
    if server.broker().is_shutting_down() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response()
    } else {
        "ready".into_response()
    }
}

async fn metrics(State(server): State<Server>) -> Response {
    let sessions = server.broker().sessions();
    let text = crate::metrics::render(
        sessions
            .iter()
            .map(|session| (session.name(), session.metrics().as_ref())),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// A JSON error answer of the admin API.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidField, message)
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        let status = match &err {
            Error::NoSuchSession(_) => StatusCode::NOT_FOUND,
            Error::SessionExists(_) => StatusCode::CONFLICT,
            Error::Io(_) | Error::Crypto(_) | Error::Store(_) | Error::Disconnected => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            Error::Config(_) => StatusCode::BAD_REQUEST,
            Error::Protocol(p) => match p.code {
                ErrorCode::Forbidden => StatusCode::FORBIDDEN,
                ErrorCode::MessageTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::BAD_REQUEST,
            },
        };
        let message = match &err {
            Error::Protocol(p) => p.message.clone(),
            other => other.to_string(),
        };
        ApiError::new(status, err.code(), message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": {"code": self.code.number(), "name": self.code.name(), "message": self.message}
        });
        (self.status, axum::Json(body)).into_response()
    }
}

/// Proof that the request carried the admin token (`Authorization: Bearer <token>`).
pub(crate) struct AdminAuth;

impl FromRequestParts<Server> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, server: &Server) -> Result<Self, ApiError> {
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .unwrap_or("");
        let expected = server.admin_token().as_bytes();
        if bool::from(subtle::ConstantTimeEq::ct_eq(
            presented.as_bytes(),
            expected,
        )) {
            Ok(AdminAuth)
        } else {
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::AuthFailed,
                "missing or wrong admin token",
            ))
        }
    }
}

/// Parses a JSON body, answering `invalid_field` for anything unreadable.
pub(crate) fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|err| ApiError::invalid(err.to_string()))
}
