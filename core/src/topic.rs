//! Topic and filter validation, wildcard matching and the subscription index.
//!
//! Placeholder until the topic module lands: accepts any non-empty topic.

use crate::protocol::ErrorCode;

/// A topic or filter broke a rule.
#[derive(Debug, thiserror::Error)]
#[error("invalid")]
pub struct TopicError(bool);

impl TopicError {
    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        if self.0 {
            ErrorCode::InvalidFilter
        } else {
            ErrorCode::InvalidTopic
        }
    }
}

/// Checks a topic name.
pub fn validate_topic(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() || topic.contains(['+', '#']) {
        Err(TopicError(false))
    } else {
        Ok(())
    }
}

/// Checks a filter.
pub fn validate_filter(filter: &str) -> Result<(), TopicError> {
    if filter.is_empty() {
        Err(TopicError(true))
    } else {
        Ok(())
    }
}
