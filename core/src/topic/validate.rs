//! Validation of topic names and subscription filters, and the typed [`TopicError`].

use std::fmt;

use crate::protocol::ErrorCode;

/// The largest topic name or filter, in UTF-8 bytes.
pub const MAX_TOPIC_BYTES: usize = 1024;

/// The largest number of `/`-separated levels in a topic name or filter.
pub const MAX_TOPIC_LEVELS: usize = 32;

/// How many characters of the offending input an error message keeps.
const MAX_QUOTED_CHARS: usize = 64;

/// Whether a string was checked as a topic name or as a subscription filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicKind {
    /// A topic name: what messages are published to. No wildcards.
    Topic,
    /// A subscription filter: may use `+` and `#` wildcards.
    Filter,
}

impl fmt::Display for TopicKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TopicKind::Topic => "topic name",
            TopicKind::Filter => "filter",
        })
    }
}

/// Why a topic name or filter was rejected.
///
/// `input` fields hold the offending string, cut to its first 64 characters (with `…` appended
/// when cut), so that error messages stay short even for megabyte-sized input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// The string is empty.
    #[error("{kind} must not be empty")]
    Empty {
        /// What was being validated.
        kind: TopicKind,
    },
    /// The string is longer than [`MAX_TOPIC_BYTES`] bytes.
    #[error("{kind} {input:?} is {len} bytes long, more than the maximum of {MAX_TOPIC_BYTES}")]
    TooLong {
        /// What was being validated.
        kind: TopicKind,
        /// The offending input (truncated).
        input: String,
        /// The length of the input in bytes.
        len: usize,
    },
    /// The string has more than [`MAX_TOPIC_LEVELS`] levels.
    #[error("{kind} {input:?} has {levels} levels, more than the maximum of {MAX_TOPIC_LEVELS}")]
    TooManyLevels {
        /// What was being validated.
        kind: TopicKind,
        /// The offending input (truncated).
        input: String,
        /// The number of levels in the input.
        levels: usize,
    },
    /// The string contains U+0000.
    #[error("{kind} {input:?} contains the NUL character U+0000")]
    Nul {
        /// What was being validated.
        kind: TopicKind,
        /// The offending input (truncated).
        input: String,
    },
    /// A topic name contains `+` or `#`; only filters may use wildcards.
    #[error(
        "topic name {input:?} contains the wildcard {wildcard:?}; only filters may use wildcards"
    )]
    WildcardInTopic {
        /// The offending input (truncated).
        input: String,
        /// The wildcard found first.
        wildcard: char,
    },
    /// A filter uses `+` in a level that holds something else too (`a+`, `+a`).
    #[error("filter {input:?}: `+` must be a whole level, but level {level} is not")]
    MisplacedPlus {
        /// The offending input (truncated).
        input: String,
        /// The zero-based index of the offending level.
        level: usize,
    },
    /// A filter uses `#` other than as the whole last level (`a#`, `#/a`, `a/#/b`).
    #[error("filter {input:?}: `#` must be the whole last level, but level {level} breaks that")]
    MisplacedHash {
        /// The offending input (truncated).
        input: String,
        /// The zero-based index of the offending level.
        level: usize,
    },
}

impl TopicError {
    /// The stable error code for this error: [`ErrorCode::InvalidTopic`] for topic names,
    /// [`ErrorCode::InvalidFilter`] for filters.
    ///
    /// ```
    /// use sealbus::protocol::ErrorCode;
    /// use sealbus::topic::{validate_filter, validate_topic};
    ///
    /// assert_eq!(validate_topic("a/+").unwrap_err().code(), ErrorCode::InvalidTopic);
    /// assert_eq!(validate_filter("a/#/b").unwrap_err().code(), ErrorCode::InvalidFilter);
    /// ```
    pub fn code(&self) -> ErrorCode {
        match self.kind() {
            TopicKind::Topic => ErrorCode::InvalidTopic,
            TopicKind::Filter => ErrorCode::InvalidFilter,
        }
    }

    /// Whether the rejected string was a topic name or a filter.
    pub fn kind(&self) -> TopicKind {
        match self {
            TopicError::Empty { kind }
            | TopicError::TooLong { kind, .. }
            | TopicError::TooManyLevels { kind, .. }
            | TopicError::Nul { kind, .. } => *kind,
            TopicError::WildcardInTopic { .. } => TopicKind::Topic,
            TopicError::MisplacedPlus { .. } | TopicError::MisplacedHash { .. } => {
                TopicKind::Filter
            }
        }
    }
}

/// The first [`MAX_QUOTED_CHARS`] characters of `input`, with `…` appended if it was cut.
fn quote(input: &str) -> String {
    match input.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((cut, _)) => {
            let mut quoted = String::with_capacity(cut + '…'.len_utf8());
            quoted.push_str(&input[..cut]);
            quoted.push('…');
            quoted
        }
        None => input.to_owned(),
    }
}

/// The checks shared by topic names and filters: length, NUL and level count.
fn check_common(input: &str, kind: TopicKind) -> Result<(), TopicError> {
    if input.is_empty() {
        return Err(TopicError::Empty { kind });
    }
    if input.len() > MAX_TOPIC_BYTES {
        return Err(TopicError::TooLong {
            kind,
            input: quote(input),
            len: input.len(),
        });
    }
    let bytes = input.as_bytes();
    if bytes.contains(&0) {
        return Err(TopicError::Nul {
            kind,
            input: quote(input),
        });
    }
    let levels = bytes.iter().filter(|&&b| b == b'/').count() + 1;
    if levels > MAX_TOPIC_LEVELS {
        return Err(TopicError::TooManyLevels {
            kind,
            input: quote(input),
            levels,
        });
    }
    Ok(())
}

/// Checks that `topic` is a valid topic name, one that messages may be published to.
///
/// A topic name is 1..=[`MAX_TOPIC_BYTES`] bytes of UTF-8 with at most [`MAX_TOPIC_LEVELS`]
/// `/`-separated levels, no U+0000 and no `+` or `#`. Empty levels (`a//b`, `/a`, `a/`) are
/// allowed. The checks run in this order, and the first failure is returned: empty, too long,
/// NUL, too many levels, wildcard.
///
/// This does not reject reserved (`$`-prefixed) topics; see [`is_reserved`](super::is_reserved).
///
/// ```
/// use sealbus::topic::{validate_topic, TopicError};
///
/// assert!(validate_topic("sensors/kitchen/temp").is_ok());
/// assert!(validate_topic("a//b").is_ok());
/// assert!(matches!(validate_topic("a/#"), Err(TopicError::WildcardInTopic { .. })));
/// assert!(matches!(validate_topic(""), Err(TopicError::Empty { .. })));
/// ```
pub fn validate_topic(topic: &str) -> Result<(), TopicError> {
    check_common(topic, TopicKind::Topic)?;
    if let Some(wildcard) = topic.chars().find(|&c| c == '+' || c == '#') {
        return Err(TopicError::WildcardInTopic {
            input: quote(topic),
            wildcard,
        });
    }
    Ok(())
}

/// Checks that `filter` is a valid subscription filter.
///
/// A filter obeys the same length, NUL and level rules as a topic name (see [`validate_topic`]),
/// and may also use wildcards: `+` as a whole level (any one level) and `#` as the whole last
/// level (the parent level and any number of further levels). The first failure is returned, in
/// the order: empty, too long, NUL, too many levels, then level by level from the left a
/// misplaced `+` or `#`.
///
/// ```
/// use sealbus::topic::{validate_filter, TopicError};
///
/// assert!(validate_filter("sensors/+/temp").is_ok());
/// assert!(validate_filter("sensors/#").is_ok());
/// assert!(validate_filter("#").is_ok());
/// assert!(matches!(validate_filter("a+"), Err(TopicError::MisplacedPlus { .. })));
/// assert!(matches!(validate_filter("a/#/b"), Err(TopicError::MisplacedHash { level: 1, .. })));
/// ```
pub fn validate_filter(filter: &str) -> Result<(), TopicError> {
    check_common(filter, TopicKind::Filter)?;
    let mut levels = filter.split('/').enumerate().peekable();
    while let Some((index, level)) = levels.next() {
        let is_last = levels.peek().is_none();
        if level.contains('+') && level != "+" {
            return Err(TopicError::MisplacedPlus {
                input: quote(filter),
                level: index,
            });
        }
        if level.contains('#') && (level != "#" || !is_last) {
            return Err(TopicError::MisplacedHash {
                input: quote(filter),
                level: index,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_topics_and_filters() {
        for topic in [
            "a", "a/b", "/", "/a", "a/", "a//b", "$SYS/x", "a/$b", "é/ü", " ",
        ] {
            assert_eq!(validate_topic(topic), Ok(()), "{topic:?}");
            assert_eq!(validate_filter(topic), Ok(()), "{topic:?} as filter");
        }
        for filter in [
            "+", "#", "+/+", "a/+/b", "a/#", "+/#", "/#", "+//#", "$SYS/#", "//+",
        ] {
            assert_eq!(validate_filter(filter), Ok(()), "{filter:?}");
            assert!(validate_topic(filter).is_err(), "{filter:?} as topic");
        }
    }

    #[test]
    fn length_and_level_limits_are_inclusive() {
        let max = "a".repeat(MAX_TOPIC_BYTES);
        assert_eq!(validate_topic(&max), Ok(()));
        let over = "a".repeat(MAX_TOPIC_BYTES + 1);
        assert_eq!(
            validate_topic(&over),
            Err(TopicError::TooLong {
                kind: TopicKind::Topic,
                input: format!("{}…", "a".repeat(64)),
                len: 1025
            })
        );
        // Multi-byte characters count in bytes: 512 two-byte characters fit, 513 do not.
        assert_eq!(validate_filter(&"é".repeat(512)), Ok(()));
        assert!(matches!(
            validate_filter(&"é".repeat(513)),
            Err(TopicError::TooLong { .. })
        ));

        let levels32 = vec!["x"; MAX_TOPIC_LEVELS].join("/");
        assert_eq!(validate_topic(&levels32), Ok(()));
        let levels33 = vec!["x"; MAX_TOPIC_LEVELS + 1].join("/");
        assert!(matches!(
            validate_filter(&levels33),
            Err(TopicError::TooManyLevels {
                kind: TopicKind::Filter,
                levels: 33,
                ..
            })
        ));
        // 31 slashes: 32 empty levels.
        assert_eq!(validate_topic(&"/".repeat(31)), Ok(()));
        assert!(matches!(
            validate_topic(&"/".repeat(32)),
            Err(TopicError::TooManyLevels { .. })
        ));
    }

    #[test]
    fn each_rule_has_its_own_error() {
        assert_eq!(
            validate_topic(""),
            Err(TopicError::Empty {
                kind: TopicKind::Topic
            })
        );
        assert_eq!(
            validate_filter(""),
            Err(TopicError::Empty {
                kind: TopicKind::Filter
            })
        );
        assert_eq!(
            validate_topic("a\0b"),
            Err(TopicError::Nul {
                kind: TopicKind::Topic,
                input: "a\0b".into()
            })
        );
        assert_eq!(
            validate_topic("a/+/#"),
            Err(TopicError::WildcardInTopic {
                input: "a/+/#".into(),
                wildcard: '+'
            })
        );
        assert_eq!(
            validate_topic("a#"),
            Err(TopicError::WildcardInTopic {
                input: "a#".into(),
                wildcard: '#'
            })
        );
        for (filter, level) in [("a+", 0), ("+a", 0), ("x/a+b", 1), ("+/++", 1)] {
            assert_eq!(
                validate_filter(filter),
                Err(TopicError::MisplacedPlus {
                    input: filter.into(),
                    level
                }),
                "{filter:?}"
            );
        }
        for (filter, level) in [("a#", 0), ("#/a", 0), ("a/#/b", 1), ("##", 0), ("a/#/", 1)] {
            assert_eq!(
                validate_filter(filter),
                Err(TopicError::MisplacedHash {
                    input: filter.into(),
                    level
                }),
                "{filter:?}"
            );
        }
    }

    #[test]
    fn codes_follow_the_kind() {
        assert_eq!(
            validate_topic("").unwrap_err().code(),
            ErrorCode::InvalidTopic
        );
        assert_eq!(
            validate_filter("").unwrap_err().code(),
            ErrorCode::InvalidFilter
        );
        assert_eq!(
            validate_topic("+").unwrap_err().code(),
            ErrorCode::InvalidTopic
        );
        assert_eq!(
            validate_filter("a+").unwrap_err().code(),
            ErrorCode::InvalidFilter
        );
        assert_eq!(
            validate_filter("#/a").unwrap_err().code(),
            ErrorCode::InvalidFilter
        );
        assert_eq!(
            validate_filter("a\0").unwrap_err().kind(),
            TopicKind::Filter
        );
    }

    #[test]
    fn messages_name_the_input_and_stay_short() {
        let message = validate_filter("sensors/te+mp").unwrap_err().to_string();
        assert!(message.contains("\"sensors/te+mp\""), "{message}");
        assert!(message.contains('+'), "{message}");

        let message = validate_topic("a\0b").unwrap_err().to_string();
        assert!(message.contains("NUL"), "{message}");
        assert!(message.contains("a\\0b"), "{message}");

        let long = format!("{}/+", "ü".repeat(2000));
        let message = validate_topic(&long).unwrap_err().to_string();
        assert!(message.contains("bytes long"), "{message}");
        assert!(message.contains('…'), "{message}");
        assert!(message.chars().count() < 200, "{message}");
    }

    #[test]
    fn quote_cuts_on_char_boundaries() {
        assert_eq!(quote("short"), "short");
        assert_eq!(quote(&"é".repeat(64)), "é".repeat(64));
        assert_eq!(quote(&"é".repeat(65)), format!("{}…", "é".repeat(64)));
    }
}
