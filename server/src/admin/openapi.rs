//! The OpenAPI 3.1 description of the admin API, served at `/api/openapi.json`.

use axum::Json;
use serde_json::{Value, json};

fn op(summary: &str, body: Option<&str>, ok: &str) -> Value {
    let mut operation = json!({
        "summary": summary,
        "security": [{"admin": []}],
        "responses": {
            ok: {"description": "success"},
            "4XX": {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        }
    });
    if let Some(schema) = body {
        operation["requestBody"] = json!({
            "required": true,
            "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}
        });
    }
    operation
}

/// `GET /api/openapi.json`.
pub(crate) async fn document() -> Json<Value> {
    let name =
        json!([{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}]);
    Json(json!({
        "openapi": "3.1.0",
        "info": {"title": "Sealbus admin API", "version": env!("CARGO_PKG_VERSION")},
        "components": {
            "securitySchemes": {"admin": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
                    "code": {"type": "integer"}, "name": {"type": "string"}, "message": {"type": "string"}}}}},
                "Settings": {"type": "object", "properties": {
                    "retry_interval_ms": {"type": "integer"}, "max_retries": {"type": "integer"},
                    "max_message_bytes": {"type": "integer"}, "max_frame_bytes": {"type": "integer"},
                    "max_clients": {"type": "integer"}, "max_subscriptions": {"type": "integer"},
                    "max_inflight": {"type": "integer"}, "history_size": {"type": "integer"},
                    "history_secs": {"type": "integer"},
                    "offline_queue_size": {"type": "integer"}, "session_expiry_secs": {"type": "integer"},
                    "keepalive_ms": {"type": "integer"}, "outbound_queue": {"type": "integer"},
                    "outbound_queue_bytes": {"type": "integer"},
                    "slow_consumer_drops": {"type": "integer"}}},
                "NewSession": {"allOf": [{"$ref": "#/components/schemas/Settings"}, {"type": "object",
                    "required": ["name"], "properties": {"name": {"type": "string"}, "password": {"type": "string"},
                    "password_hash": {"type": "string"}, "token_secret": {"type": "string"}}}]},
                "SessionUpdate": {"allOf": [{"$ref": "#/components/schemas/Settings"}, {"type": "object",
                    "properties": {"password": {"type": "string"}, "token_secret": {"type": "string"}}}]},
                "CreateSessionCompat": {"type": "object", "required": ["sessionName"], "properties": {
                    "sessionName": {"type": "string"}, "password": {"type": "string"},
                    "retryInterval": {"type": "integer", "description": "milliseconds"},
                    "maxRetryLimit": {"type": "integer"}}},
                "Publish": {"type": "object", "required": ["topic", "data"], "properties": {
                    "topic": {"type": "string"}, "data": {"type": "object", "description": "payload as in PROTOCOL.md §3"},
                    "retain": {"type": "boolean"}, "qos": {"type": "integer", "enum": [0, 1]}}},
                "TokenRequest": {"type": "object", "required": ["client_id"], "properties": {
                    "client_id": {"type": "string"}, "ttl_secs": {"type": "integer"},
                    "pub": {"type": "array", "items": {"type": "string"}},
                    "sub_filters": {"type": "array", "items": {"type": "string"}}}}
            }
        },
        "paths": {
            "/api/sessions": {
                "get": op("List sessions", None, "200"),
                "post": op("Create a session", Some("NewSession"), "201")
            },
            "/api/sessions/{name}": {
                "parameters": name,
                "get": op("Show a session", None, "200"),
                "put": op("Change a session's credentials or settings", Some("SessionUpdate"), "200"),
                "delete": op("Delete a session (its clients are closed with session_deleted)", None, "204")
            },
            "/api/sessions/{name}/clients": {
                "parameters": name,
                "get": op("Clients (persistent ones while away too) with subscriptions, queue depths and QoS 1 copies held", None, "200")
            },
            "/api/sessions/{name}/messages/{mid}": {
                "parameters": [
                    {"name": "name", "in": "path", "required": true, "schema": {"type": "string"}},
                    {"name": "mid", "in": "path", "required": true, "schema": {"type": "string"}}
                ],
                "get": op("Delivery status of a QoS 1 message: each subscriber's copy (pending, delivered, acknowledged, dead) and attempts", None, "200")
            },
            "/api/sessions/{name}/publish": {
                "parameters": name,
                "post": op("Publish a message (from `$admin`)", Some("Publish"), "200")
            },
            "/api/sessions/{name}/tokens": {
                "parameters": name,
                "post": op("Issue a client token (HS256 JWT)", Some("TokenRequest"), "200")
            },
            "/api/createSession": {
                "post": op("Create a session with fastPort's field names", Some("CreateSessionCompat"), "201")
            },
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "ok"}}}},
            "/readyz": {"get": {"summary": "Readiness (503 while shutting down)", "responses": {"200": {"description": "ready"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text"}}}}
        }
    }))
}
