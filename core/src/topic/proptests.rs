//! Property tests: the index and `matches` against a naive reference matcher written
//! independently, insert/remove sequences against a plain set, and validation on arbitrary input.

use std::collections::{BTreeMap, HashSet};

use proptest::prelude::*;

use super::{
    MAX_TOPIC_BYTES, MAX_TOPIC_LEVELS, SubscriptionIndex, TopicError, matches, validate_filter,
    validate_topic,
};

/// The reference matcher: split both sides into level vectors and compare them recursively,
/// applying the `$` rule up front.
fn reference_matches(filter: &str, topic: &str) -> bool {
    fn levels_match(filter: &[&str], topic: &[&str]) -> bool {
        match (filter, topic) {
            (["#"], _) => true,
            ([], []) => true,
            (["+", f_rest @ ..], [_, t_rest @ ..]) => levels_match(f_rest, t_rest),
            ([f, f_rest @ ..], [t, t_rest @ ..]) => f == t && levels_match(f_rest, t_rest),
            _ => false,
        }
    }
    let filter: Vec<&str> = filter.split('/').collect();
    let topic: Vec<&str> = topic.split('/').collect();
    let leading_wildcard = matches!(filter.first(), Some(&"+" | &"#"));
    let reserved = topic.first().is_some_and(|level| level.starts_with('$'));
    if leading_wildcard && reserved {
        return false;
    }
    levels_match(&filter, &topic)
}

/// The reference validator: `None` if valid, else the name of the first broken rule.
fn reference_validate(input: &str, is_filter: bool) -> Option<&'static str> {
    let levels: Vec<&str> = input.split('/').collect();
    if input.is_empty() {
        Some("empty")
    } else if input.len() > MAX_TOPIC_BYTES {
        Some("too_long")
    } else if input.contains('\0') {
        Some("nul")
    } else if levels.len() > MAX_TOPIC_LEVELS {
        Some("too_many_levels")
    } else if !is_filter {
        (input.contains('+') || input.contains('#')).then_some("wildcard")
    } else {
        levels.iter().enumerate().find_map(|(i, level)| {
            if level.contains('+') && *level != "+" {
                Some("misplaced_plus")
            } else if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
                Some("misplaced_hash")
            } else {
                None
            }
        })
    }
}

fn reason(result: Result<(), TopicError>) -> Option<&'static str> {
    match result {
        Ok(()) => None,
        Err(TopicError::Empty { .. }) => Some("empty"),
        Err(TopicError::TooLong { .. }) => Some("too_long"),
        Err(TopicError::Nul { .. }) => Some("nul"),
        Err(TopicError::TooManyLevels { .. }) => Some("too_many_levels"),
        Err(TopicError::WildcardInTopic { .. }) => Some("wildcard"),
        Err(TopicError::MisplacedPlus { .. }) => Some("misplaced_plus"),
        Err(TopicError::MisplacedHash { .. }) => Some("misplaced_hash"),
    }
}

/// Topic levels from a small alphabet, so that random filters and topics often match.
fn topic_level() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["a", "b", "", "$x", "c"])
}

/// A single empty level would be the (invalid) empty string: use two empty levels instead.
fn non_empty(joined: String) -> String {
    if joined.is_empty() {
        "/".to_owned()
    } else {
        joined
    }
}

fn topic() -> impl Strategy<Value = String> {
    prop::collection::vec(topic_level(), 1..6).prop_map(|levels| non_empty(levels.join("/")))
}

/// Valid filters over the same alphabet plus `+`, optionally ending in `#`, and `#` alone.
fn filter() -> impl Strategy<Value = String> {
    let level = prop::sample::select(vec!["a", "b", "", "$x", "+", "+"]);
    prop_oneof![
        1 => Just("#".to_owned()),
        12 => (prop::collection::vec(level, 1..5), any::<bool>()).prop_map(|(levels, hash)| {
            let mut filter = non_empty(levels.join("/"));
            if hash {
                filter.push_str("/#");
            }
            filter
        }),
    ]
}

/// Strings from an alphabet rich in the characters the rules care about, up to past the limits.
fn tricky_string() -> impl Strategy<Value = String> {
    let chars = prop::sample::select(vec!['a', '/', '/', '+', '#', '\0', 'é', '$', ' ', '🚀']);
    prop_oneof![
        prop::collection::vec(chars.clone(), 0..12).prop_map(String::from_iter),
        prop::collection::vec(chars, 0..1100).prop_map(String::from_iter),
        "[a/]{1000,1030}",
    ]
}

proptest! {
    #[test]
    fn matches_agrees_with_the_reference(filter in filter(), topic in topic()) {
        prop_assert_eq!(validate_filter(&filter), Ok(()));
        prop_assert_eq!(validate_topic(&topic), Ok(()));
        prop_assert_eq!(matches(&filter, &topic), reference_matches(&filter, &topic));
    }

    #[test]
    fn index_agrees_with_the_naive_matcher(
        pairs in prop::collection::vec((filter(), 0u8..4), 0..80),
        topics in prop::collection::vec(topic(), 1..12),
    ) {
        let mut index = SubscriptionIndex::new();
        let mut stored = HashSet::new();
        for (filter, value) in &pairs {
            let added = index.insert(filter, *value).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(added, stored.insert((filter.clone(), *value)));
        }
        prop_assert_eq!(index.len(), stored.len());
        for topic in &topics {
            // for_each_match: once per matching (filter, value) pair.
            let mut expected: Vec<u8> = stored
                .iter()
                .filter(|(filter, _)| reference_matches(filter, topic))
                .map(|&(_, value)| value)
                .collect();
            expected.sort_unstable();
            let mut found = Vec::new();
            index.for_each_match(topic, |&value| found.push(value));
            found.sort_unstable();
            prop_assert_eq!(&found, &expected, "topic {:?}", topic);
            // matching_values: deduplicated.
            let expected: HashSet<u8> = expected.into_iter().collect();
            prop_assert_eq!(index.matching_values(topic), expected);
        }
    }

    #[test]
    fn insert_remove_sequences_match_a_plain_set(
        ops in prop::collection::vec((any::<bool>(), filter(), 0u8..3), 0..120),
        topics in prop::collection::vec(topic(), 1..6),
    ) {
        let mut index = SubscriptionIndex::new();
        let mut model: BTreeMap<(String, u8), ()> = BTreeMap::new();
        for (insert, filter, value) in &ops {
            let key = (filter.clone(), *value);
            if *insert {
                let added = index.insert(filter, *value).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(added, model.insert(key, ()).is_none());
            } else {
                prop_assert_eq!(index.remove(filter, value), model.remove(&key).is_some());
            }
            prop_assert_eq!(index.len(), model.len());
            prop_assert_eq!(index.contains(filter, value), *insert);
        }
        for (filter, value) in model.keys() {
            prop_assert!(index.contains(filter, value));
        }
        for topic in &topics {
            let expected: HashSet<u8> = model
                .keys()
                .filter(|(filter, _)| reference_matches(filter, topic))
                .map(|&(_, value)| value)
                .collect();
            prop_assert_eq!(index.matching_values(topic), expected);
        }
        // Removing everything left frees every node but the root.
        let keys: Vec<(String, u8)> = model.keys().cloned().collect();
        for (filter, value) in &keys {
            prop_assert!(index.remove(filter, value));
        }
        prop_assert!(index.is_empty());
        prop_assert_eq!(index.node_count(), 1);
    }

    #[test]
    fn validation_never_panics_and_follows_the_rules(input in any::<String>()) {
        prop_assert_eq!(reason(validate_topic(&input)), reference_validate(&input, false));
        prop_assert_eq!(reason(validate_filter(&input)), reference_validate(&input, true));
        let _ = matches(&input, &input);
        let _ = matches(&input, "a/b");
        let _ = matches("a/#", &input);
    }

    #[test]
    fn validation_follows_the_rules_near_the_limits(input in tricky_string(), other in tricky_string()) {
        let topic_reason = reason(validate_topic(&input));
        prop_assert_eq!(topic_reason, reference_validate(&input, false));
        prop_assert_eq!(reason(validate_filter(&input)), reference_validate(&input, true));
        if topic_reason.is_none() {
            prop_assert_eq!(validate_filter(&input), Ok(()));
        }
        // Matching and the index never panic on arbitrary (even invalid) input.
        let _ = matches(&input, &other);
        let mut index = SubscriptionIndex::new();
        let inserted = index.insert(&input, 0u8).is_ok();
        prop_assert_eq!(inserted, validate_filter(&input).is_ok());
        index.for_each_match(&other, |_| {});
        prop_assert_eq!(index.contains(&input, &0), inserted);
        prop_assert_eq!(index.remove(&other, &0), inserted && other == input);
    }
}
