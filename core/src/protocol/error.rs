//! The error of decoding or validating a frame.

use super::{ErrorCode, ErrorFrame};

/// A frame could not be decoded or broke a protocol rule.
///
/// It carries the stable [`ErrorCode`] and, when the frame got far enough to name one, the request
/// id, so that a server can answer with an `error` frame about that request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ProtocolError {
    /// The stable code.
    pub code: ErrorCode,
    /// The request id of the offending frame, when it could be read.
    pub id: Option<u64>,
    /// What was wrong.
    pub message: String,
}

impl ProtocolError {
    /// A protocol error with a code, an optional request id and a message.
    pub fn new(code: ErrorCode, id: Option<u64>, message: impl Into<String>) -> Self {
        ProtocolError {
            code,
            id,
            message: message.into(),
        }
    }

    /// The `error` frame that reports this error to the peer.
    pub fn to_frame(&self) -> ErrorFrame {
        ErrorFrame::new(self.id, self.code, self.message.clone())
    }
}
