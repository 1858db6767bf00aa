//! Rules a decoded client frame must follow beyond its JSON shape.
//!
//! The codec runs [`ClientFrame::validate`] after parsing, so a server only ever sees frames whose
//! ids fit in a JSON number of every language, whose names have legal lengths and characters,
//! and whose topics and filters are well formed.

use super::{
    Ack, AckRequest, Auth, ClientFrame, ErrorCode, Hello, MAX_ACK_TIMEOUT_MS, MAX_CLIENT_ID_BYTES,
    MAX_CREDENTIAL_BYTES, MAX_ERROR_TEXT_BYTES, MAX_ID, MAX_MESSAGE_ID_BYTES,
    MAX_SESSION_NAME_BYTES, PROTOCOL_VERSION, ProtocolError, Qos, truncate,
};

type Check = Result<(), ProtocolError>;

fn fail(code: ErrorCode, id: Option<u64>, message: impl Into<String>) -> ProtocolError {
    ProtocolError::new(code, id, message)
}

/// Checks a client id: 1 to 128 bytes, no control characters, not starting with `$` (reserved
/// for the server's own participants such as `$server` and `$admin`).
pub fn validate_client_id(client_id: &str) -> Result<(), ProtocolError> {
    let shown = truncate(client_id, 64);
    if client_id.is_empty() || client_id.len() > MAX_CLIENT_ID_BYTES {
        return Err(fail(
            ErrorCode::InvalidClientId,
            None,
            format!(
                "client id must be 1 to {MAX_CLIENT_ID_BYTES} bytes, got {}",
                client_id.len()
            ),
        ));
    }
    if client_id.starts_with('$') {
        return Err(fail(
            ErrorCode::InvalidClientId,
            None,
            format!("client id `{shown}` starts with `$`, which is reserved for the server"),
        ));
    }
    if client_id.chars().any(char::is_control) {
        return Err(fail(
            ErrorCode::InvalidClientId,
            None,
            format!(
                "client id `{}` contains a control character",
                shown.escape_default()
            ),
        ));
    }
    Ok(())
}

/// Checks a session name: 1 to 64 bytes of ASCII letters, digits, `.`, `_` and `-`.
pub fn validate_session_name(name: &str) -> Result<(), ProtocolError> {
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > MAX_SESSION_NAME_BYTES || !name.chars().all(legal) {
        return Err(fail(
            ErrorCode::InvalidField,
            None,
            format!(
                "session name `{}` must be 1 to {MAX_SESSION_NAME_BYTES} characters of A-Z a-z 0-9 . _ -",
                truncate(name, 64).escape_default()
            ),
        ));
    }
    Ok(())
}

/// Checks a message id: 1 to 64 bytes, no control characters.
pub fn validate_message_id(mid: &str) -> Result<(), ProtocolError> {
    if mid.is_empty() || mid.len() > MAX_MESSAGE_ID_BYTES || mid.chars().any(char::is_control) {
        return Err(fail(
            ErrorCode::InvalidMessageId,
            None,
            format!(
                "message id `{}` must be 1 to {MAX_MESSAGE_ID_BYTES} bytes without control characters",
                truncate(mid, 64).escape_default()
            ),
        ));
    }
    Ok(())
}

fn with_id(result: Check, id: Option<u64>) -> Check {
    result.map_err(|mut err| {
        err.id = err.id.or(id);
        err
    })
}

fn check_id(name: &str, value: Option<u64>, request: Option<u64>) -> Check {
    match value {
        Some(v) if v > MAX_ID => Err(fail(
            ErrorCode::InvalidField,
            request.filter(|r| *r <= MAX_ID),
            format!("`{name}` {v} is larger than 2^53 - 1"),
        )),
        _ => Ok(()),
    }
}

fn check_topic(topic: &str, id: Option<u64>) -> Check {
    crate::topic::validate_topic(topic).map_err(|err| fail(err.code(), id, err.to_string()))
}

fn check_filter(filter: &str, id: Option<u64>) -> Check {
    crate::topic::validate_filter(filter).map_err(|err| fail(err.code(), id, err.to_string()))
}

fn check_publish_common(
    id: Option<u64>,
    mid: Option<&str>,
    qos: Qos,
    ack: Option<&AckRequest>,
) -> Check {
    check_id("id", id, id)?;
    if let Some(mid) = mid {
        with_id(validate_message_id(mid), id)?;
    }
    if id.is_none() && (qos == Qos::AtLeastOnce || ack.is_some()) {
        return Err(fail(
            ErrorCode::InvalidField,
            None,
            "`id` is required for QoS 1 and for `ack`",
        ));
    }
    if let Some(ack) = ack
        && (ack.timeout_ms == 0 || ack.timeout_ms > MAX_ACK_TIMEOUT_MS)
    {
        return Err(fail(
            ErrorCode::InvalidField,
            id,
            format!("`ack.timeout_ms` must be 1 to {MAX_ACK_TIMEOUT_MS}"),
        ));
    }
    Ok(())
}

fn check_hello(hello: &Hello) -> Check {
    if hello.v != PROTOCOL_VERSION {
        return Err(fail(
            ErrorCode::UnsupportedVersion,
            None,
            format!(
                "protocol version {} is not supported; this server speaks {PROTOCOL_VERSION}",
                hello.v
            ),
        ));
    }
    validate_session_name(&hello.session)?;
    let credential = match &hello.auth {
        Auth::Password(text) | Auth::Token(text) => text,
    };
    if credential.len() > MAX_CREDENTIAL_BYTES {
        return Err(fail(
            ErrorCode::InvalidField,
            None,
            format!("credential longer than {MAX_CREDENTIAL_BYTES} bytes"),
        ));
    }
    match &hello.client_id {
        Some(client_id) => validate_client_id(client_id),
        None if hello.persistent => Err(fail(
            ErrorCode::InvalidField,
            None,
            "a persistent client must give its `client_id`",
        )),
        None => Ok(()),
    }
}

fn check_ack(ack: &Ack) -> Check {
    check_id("did", ack.did, None)?;
    check_id("aid", ack.aid, None)?;
    if ack.did.is_none() && ack.aid.is_none() {
        return Err(fail(
            ErrorCode::InvalidField,
            None,
            "an `ack` needs `did`, `aid` or both",
        ));
    }
    match &ack.error {
        Some(text) if text.len() > MAX_ERROR_TEXT_BYTES => Err(fail(
            ErrorCode::InvalidField,
            None,
            format!("`error` longer than {MAX_ERROR_TEXT_BYTES} bytes"),
        )),
        _ => Ok(()),
    }
}

impl ClientFrame {
    /// Checks the rules of protocol v1 that JSON typing cannot express (id ranges, name lengths,
    /// topic and filter syntax, required combinations of fields).
    pub fn validate(&self) -> Result<(), ProtocolError> {
        match self {
            ClientFrame::Hello(hello) => check_hello(hello),
            ClientFrame::Subscribe(f) => {
                check_id("id", Some(f.id), Some(f.id))?;
                if let Some(since) = &f.since {
                    check_id("since.offset", Some(since.offset), Some(f.id))?;
                }
                check_filter(&f.filter, Some(f.id))
            }
            ClientFrame::Unsubscribe(f) => {
                check_id("id", Some(f.id), Some(f.id))?;
                check_filter(&f.filter, Some(f.id))
            }
            ClientFrame::Publish(f) => {
                check_publish_common(f.id, f.mid.as_deref(), f.qos, f.ack.as_ref())?;
                check_topic(&f.topic, f.id)
            }
            ClientFrame::Send(f) => {
                check_publish_common(f.id, f.mid.as_deref(), f.qos, f.ack.as_ref())?;
                with_id(validate_client_id(&f.to), f.id)
            }
            ClientFrame::Ack(f) => check_ack(f),
            ClientFrame::AckStatus(f) => {
                check_id("id", Some(f.id), Some(f.id))?;
                check_id("aid", Some(f.aid), Some(f.id))
            }
            ClientFrame::AckCancel(f) => {
                check_id("id", f.id, f.id)?;
                check_id("aid", Some(f.aid), f.id)
            }
            ClientFrame::DeliveryStatus(f) => {
                check_id("id", Some(f.id), Some(f.id))?;
                with_id(validate_message_id(&f.mid), Some(f.id))
            }
            ClientFrame::Ping(f) => check_id("id", f.id, None),
            ClientFrame::Bye(_) => Ok(()),
        }
    }
}
