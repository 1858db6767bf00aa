//! Session handlers of the admin API: CRUD, clients, publish, tokens, and the compatibility
//! route.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sealbus::protocol::{ErrorCode, Payload, Qos};
use sealbus::topic::{is_reserved, validate_filter, validate_topic};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AdminAuth, ApiError, parse};
use crate::auth::{self, Claims};
use crate::broker::{Session, now_ms};
use crate::config::{SessionConfig, SessionSettings};
use crate::server::Server;

fn view(session: &Session) -> Value {
    let record = session.record();
    json!({
        "name": record.name,
        "epoch": session.epoch(),
        "password": record.password_hash.is_some(),
        "clients": session.clients().len(),
        "settings": record.settings,
    })
}

/// `GET /api/sessions`.
pub(crate) async fn list(_: AdminAuth, State(server): State<Server>) -> Json<Value> {
    let sessions: Vec<Value> = server.broker().sessions().iter().map(|s| view(s)).collect();
    Json(json!({ "sessions": sessions }))
}

/// Runs Argon2 work off the async worker threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> crate::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Internal,
                err.to_string(),
            )
        })?
        .map_err(ApiError::from)
}

async fn create_from(server: &Server, config: SessionConfig) -> Result<Response, ApiError> {
    let creator = server.clone();
    let session = blocking(move || creator.create_session(&config)).await?;
    tracing::info!(session = %session.name(), "session created");
    Ok((StatusCode::CREATED, Json(view(&session))).into_response())
}

/// `POST /api/sessions`.
pub(crate) async fn create(
    _: AdminAuth,
    State(server): State<Server>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let config: SessionConfig = parse(&body)?;
    check_settings_keys(&body)?;
    create_from(&server, config).await
}

/// Rejects unknown keys (serde cannot deny them through a flattened struct).
fn check_settings_keys(body: &[u8]) -> Result<(), ApiError> {
    let object: serde_json::Map<String, Value> = parse(body)?;
    let known = serde_json::to_value(SessionSettings::default())
        .map_err(|err| ApiError::invalid(err.to_string()))?;
    for key in object.keys() {
        let credential =
            ["name", "password", "password_hash", "token_secret"].contains(&key.as_str());
        if !credential && known.get(key).is_none() {
            return Err(ApiError::invalid(format!("unknown field `{key}`")));
        }
    }
    Ok(())
}

/// The body of `POST /api/createSession` (fastPort's field names).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CompatSession {
    session_name: String,
    password: Option<String>,
    /// Milliseconds.
    retry_interval: Option<u64>,
    max_retry_limit: Option<u32>,
}

/// `POST /api/createSession`.
pub(crate) async fn create_compat(
    _: AdminAuth,
    State(server): State<Server>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let compat: CompatSession = parse(&body)?;
    let mut settings = SessionSettings::default();
    if let Some(interval) = compat.retry_interval {
        settings.retry_interval_ms = interval;
    }
    if let Some(limit) = compat.max_retry_limit {
        settings.max_retries = limit;
    }
    let config = SessionConfig {
        name: compat.session_name,
        password: compat.password,
        password_hash: None,
        token_secret: None,
        settings,
    };
    create_from(&server, config).await
}

/// `GET /api/sessions/{name}`.
pub(crate) async fn show(
    _: AdminAuth,
    State(server): State<Server>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let session = server.broker().session(&name)?;
    Ok(Json(view(&session)))
}

/// `PUT /api/sessions/{name}`: changes the given fields, keeps the others.
pub(crate) async fn update(
    _: AdminAuth,
    State(server): State<Server>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    check_settings_keys(&body)?;
    let mut changes: serde_json::Map<String, Value> = parse(&body)?;
    let session = server.broker().session(&name)?;
    let mut record = session.record();
    if changes
        .remove("name")
        .is_some_and(|n| n != Value::String(name.clone()))
    {
        return Err(ApiError::invalid("a session cannot be renamed"));
    }
    if let Some(password) = changes.remove("password") {
        let password = password
            .as_str()
            .ok_or_else(|| ApiError::invalid("`password` must be a string"))?;
        let password = password.to_owned();
        record.password_hash = Some(blocking(move || auth::hash_password(&password)).await?);
    }
    if let Some(hash) = changes.remove("password_hash") {
        let hash = hash
            .as_str()
            .ok_or_else(|| ApiError::invalid("`password_hash` must be a string"))?;
        record.password_hash = Some(hash.to_owned());
    }
    if let Some(secret) = changes.remove("token_secret") {
        let secret = secret
            .as_str()
            .ok_or_else(|| ApiError::invalid("`token_secret` must be a string"))?;
        record.token_secret = secret.to_owned();
    }
    let mut settings =
        serde_json::to_value(&record.settings).map_err(|err| ApiError::invalid(err.to_string()))?;
    for (key, value) in changes {
        settings[key] = value;
    }
    record.settings =
        serde_json::from_value(settings).map_err(|err| ApiError::invalid(err.to_string()))?;
    let session = server.update_session(record)?;
    tracing::info!(session = %name, "session updated");
    Ok(Json(view(&session)))
}

/// `DELETE /api/sessions/{name}`.
pub(crate) async fn delete(
    _: AdminAuth,
    State(server): State<Server>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    server.broker().delete_session(&name)?;
    tracing::info!(session = %name, "session deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/sessions/{name}/clients`.
pub(crate) async fn clients(
    _: AdminAuth,
    State(server): State<Server>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let session = server.broker().session(&name)?;
    Ok(Json(json!({ "clients": session.clients() })))
}

/// `GET /api/sessions/{name}/messages/{mid}`: the delivery status of a QoS 1 message.
pub(crate) async fn message_status(
    _: AdminAuth,
    State(server): State<Server>,
    Path((name, mid)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let session = server.broker().session(&name)?;
    let status = session.message_status(&mid).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::UnknownMessageId,
            format!("no QoS 1 message `{mid}` is tracked in this session"),
        )
    })?;
    Ok(Json(json!({
        "mid": mid,
        "topic": status.topic,
        "from": status.from,
        "copies": status.copies,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpPublish {
    topic: String,
    data: Payload,
    #[serde(default)]
    retain: bool,
    #[serde(default)]
    qos: Qos,
}

/// `POST /api/sessions/{name}/publish`.
pub(crate) async fn publish(
    _: AdminAuth,
    State(server): State<Server>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: HttpPublish = parse(&body)?;
    let session = server.broker().session(&name)?;
    validate_topic(&request.topic)
        .map_err(|err| ApiError::new(StatusCode::BAD_REQUEST, err.code(), err.to_string()))?;
    if is_reserved(&request.topic) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "topics starting with `$` are reserved",
        ));
    }
    let (offset, mid) = session
        .publish_as_admin(request.topic, request.data, request.qos, request.retain)
        .await
        .map_err(|err| ApiError::from(crate::error::Error::Protocol(err)))?;
    Ok(Json(json!({ "offset": offset, "mid": mid })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    client_id: String,
    #[serde(default = "default_ttl")]
    ttl_secs: u64,
    #[serde(default, rename = "pub")]
    publish: Option<Vec<String>>,
    #[serde(default)]
    sub_filters: Option<Vec<String>>,
}

fn default_ttl() -> u64 {
    3_600
}

/// `POST /api/sessions/{name}/tokens`: mints a client token signed with the session's secret.
pub(crate) async fn token(
    _: AdminAuth,
    State(server): State<Server>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: TokenRequest = parse(&body)?;
    let session = server.broker().session(&name)?;
    sealbus::protocol::validate_client_id(&request.client_id)
        .map_err(|err| ApiError::new(StatusCode::BAD_REQUEST, err.code, err.message))?;
    for filter in request.publish.iter().chain(&request.sub_filters).flatten() {
        validate_filter(filter)
            .map_err(|err| ApiError::new(StatusCode::BAD_REQUEST, err.code(), err.to_string()))?;
    }
    let claims = Claims {
        sub: request.client_id,
        exp: now_ms() / 1000 + request.ttl_secs,
        publish: request.publish,
        sub_filters: request.sub_filters,
    };
    let token = auth::sign_token(&claims, session.record().token_secret.as_bytes())?;
    Ok(Json(json!({ "token": token, "exp": claims.exp })))
}
