//! Matching one filter against one topic name, and the `$` (reserved topic) rule.

/// Whether `topic` is reserved: its first level starts with `$` (for example `$SYS/uptime` or
/// `$dead/orders`).
///
/// Filters whose first level is a wildcard do not match reserved topics, and the server does not
/// let clients publish to them.
///
/// ```
/// use sealbus::topic::is_reserved;
///
/// assert!(is_reserved("$SYS/uptime"));
/// assert!(is_reserved("$"));
/// assert!(!is_reserved("a/$b"));
/// assert!(!is_reserved("/$a"));
/// ```
pub fn is_reserved(topic: &str) -> bool {
    topic.starts_with('$')
}

/// Whether the subscription `filter` matches the topic name `topic`.
///
/// Both are assumed valid (see [`validate_filter`](super::validate_filter) and
/// [`validate_topic`](super::validate_topic)); on invalid input the answer is unspecified but the
/// function never panics. It does not allocate and runs in time linear in the shorter input.
///
/// * a literal level matches the same level, byte for byte (case-sensitive);
/// * `+` matches exactly one level, which may be empty;
/// * `#` (the last level) matches the parent level and any number of further levels;
/// * a filter whose first level is `+` or `#` does not match a reserved topic (one whose first
///   level starts with `$`, see [`is_reserved`]).
///
/// ```
/// use sealbus::topic::matches;
///
/// assert!(matches("sensors/+/temp", "sensors/kitchen/temp"));
/// assert!(matches("sensors/#", "sensors"));
/// assert!(matches("sensors/#", "sensors/kitchen/temp"));
/// assert!(!matches("sensors/+", "sensors/kitchen/temp"));
/// assert!(!matches("#", "$SYS/uptime"));
/// assert!(matches("$SYS/#", "$SYS/uptime"));
/// ```
pub fn matches(filter: &str, topic: &str) -> bool {
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    let mut first = true;
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            (Some("#"), level) => {
                return !(first && level.is_some_and(is_reserved));
            }
            (Some("+"), Some(level)) => {
                if first && is_reserved(level) {
                    return false;
                }
            }
            (Some(wanted), Some(level)) => {
                if wanted != level {
                    return false;
                }
            }
            (None, None) => return true,
            (None, Some(_)) | (Some(_), None) => return false,
        }
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_levels_match_exactly() {
        assert!(matches("a", "a"));
        assert!(matches("a/b/c", "a/b/c"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(!matches("a/b/c", "a/b"));
        assert!(!matches("a/B", "a/b"));
        assert!(matches("/", "/"));
        assert!(!matches("a", "a/"));
        assert!(matches("a//b", "a//b"));
        assert!(matches("$SYS/x", "$SYS/x"));
    }

    #[test]
    fn plus_matches_one_level() {
        assert!(matches("+", "a"));
        assert!(!matches("+", "a/b"));
        assert!(matches("+", ""));
        assert!(matches("a/+", "a/"));
        assert!(matches("a/+/b", "a//b"));
        assert!(matches("+/+", "/"));
        assert!(matches("+/b", "a/b"));
        assert!(!matches("a/+", "a"));
        assert!(matches("a/+", "a/$b"));
    }

    #[test]
    fn hash_matches_the_parent_and_the_rest() {
        assert!(matches("#", "a"));
        assert!(matches("#", "a/b/c"));
        assert!(matches("#", "/"));
        assert!(matches("a/#", "a"));
        assert!(matches("a/#", "a/"));
        assert!(matches("a/#", "a/b/c"));
        assert!(!matches("a/#", "b"));
        assert!(!matches("a/#", "ab"));
        assert!(matches("+/#", "a"));
        assert!(matches("a/+/#", "a/b"));
        assert!(!matches("a/+/#", "a"));
    }

    #[test]
    fn leading_wildcards_skip_reserved_topics() {
        assert!(!matches("#", "$SYS"));
        assert!(!matches("#", "$SYS/x"));
        assert!(!matches("+", "$SYS"));
        assert!(!matches("+/x", "$SYS/x"));
        assert!(!matches("+/#", "$SYS/x"));
        assert!(matches("$SYS/#", "$SYS"));
        assert!(matches("$SYS/#", "$SYS/x/y"));
        assert!(matches("$SYS/+", "$SYS/x"));
        assert!(matches("#", "a/$SYS"));
        assert!(matches("+/#", "/$SYS"));
    }

    #[test]
    fn never_panics_on_invalid_input() {
        for (filter, topic) in [
            ("", ""),
            ("#/a", "b"),
            ("a/#/b", "a"),
            ("a+", "a+"),
            ("", "#"),
        ] {
            let _ = matches(filter, topic);
        }
        assert!(matches("", ""));
    }
}
