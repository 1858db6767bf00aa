//! Topic and filter validation, wildcard matching and the subscription index.
//!
//! Topic names and filters are `/`-separated levels of UTF-8 (see [`validate_topic`] and
//! [`validate_filter`] for the exact rules). In a filter, `+` matches exactly one level and `#`,
//! as the last level, matches the parent level and any number of further levels. Filters whose
//! first level is a wildcard do not match reserved topics, whose first level starts with `$`
//! (see [`is_reserved`]).
//!
//! * [`matches()`] checks one filter against one topic;
//! * [`SubscriptionIndex`] stores many filters and finds those matching a topic, at a cost that
//!   does not grow with the number of unrelated filters.
//!
//! ```
//! use sealbus::topic::{matches, validate_filter, validate_topic};
//!
//! validate_filter("sensors/+/temp")?;
//! validate_topic("sensors/kitchen/temp")?;
//! assert!(matches("sensors/+/temp", "sensors/kitchen/temp"));
//! # Ok::<(), sealbus::topic::TopicError>(())
//! ```

mod index;
mod matching;
#[cfg(test)]
mod proptests;
mod validate;

pub use index::SubscriptionIndex;
pub use matching::{is_reserved, matches};
pub use validate::{
    MAX_TOPIC_BYTES, MAX_TOPIC_LEVELS, TopicError, TopicKind, validate_filter, validate_topic,
};
