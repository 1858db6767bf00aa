//! Runs the language-neutral topic vectors in `tests/vectors/topics.json` against validation,
//! `matches` and `SubscriptionIndex`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, HashSet};

use sealbus::protocol::ErrorCode;
use sealbus::topic::{SubscriptionIndex, TopicError, matches, validate_filter, validate_topic};
use serde::Deserialize;

const VECTORS: &str = include_str!("vectors/topics.json");

/// A string, or `{"repeat": s, "times": n, "suffix": t}` for long inputs.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Input {
    Literal(String),
    Repeat {
        repeat: String,
        times: usize,
        #[serde(default)]
        suffix: String,
    },
}

impl Input {
    fn expand(&self) -> String {
        match self {
            Input::Literal(s) => s.clone(),
            Input::Repeat {
                repeat,
                times,
                suffix,
            } => repeat.repeat(*times) + suffix,
        }
    }
}

#[derive(Debug, Deserialize)]
struct MatchCase {
    filter: Input,
    topic: Input,
    matches: bool,
    note: String,
}

#[derive(Debug, Deserialize)]
struct InvalidCase {
    input: Input,
    reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Vectors {
    description: String,
    matches: Vec<MatchCase>,
    invalid_topics: Vec<InvalidCase>,
    invalid_filters: Vec<InvalidCase>,
    valid_topics: Vec<Input>,
    valid_filters: Vec<Input>,
}

fn vectors() -> Vectors {
    serde_json::from_str(VECTORS).expect("topics.json parses")
}

/// The reason name used in the vectors for an error.
fn reason(error: &TopicError) -> &'static str {
    match error {
        TopicError::Empty { .. } => "empty",
        TopicError::TooLong { .. } => "too_long",
        TopicError::TooManyLevels { .. } => "too_many_levels",
        TopicError::Nul { .. } => "nul",
        TopicError::WildcardInTopic { .. } => "wildcard",
        TopicError::MisplacedPlus { .. } => "misplaced_plus",
        TopicError::MisplacedHash { .. } => "misplaced_hash",
        other => panic!("unexpected error variant {other:?}"),
    }
}

#[test]
fn vector_file_is_complete() {
    let v = vectors();
    assert!(!v.description.is_empty());
    assert!(v.matches.len() >= 80, "{} match cases", v.matches.len());
    assert!(v.matches.iter().any(|c| c.matches) && v.matches.iter().any(|c| !c.matches));
    assert!(v.matches.iter().all(|c| !c.note.is_empty()));
    assert!(v.invalid_topics.len() >= 10);
    assert!(v.invalid_filters.len() >= 10);
    let valid_topics: Vec<String> = v.valid_topics.iter().map(Input::expand).collect();
    assert!(
        valid_topics.iter().any(|t| t.len() == 1024),
        "a 1024-byte topic"
    );
    assert!(
        valid_topics.iter().any(|t| t.split('/').count() == 32),
        "a 32-level topic"
    );
    let valid_filters: Vec<String> = v.valid_filters.iter().map(Input::expand).collect();
    assert!(
        valid_filters.iter().any(|t| t.len() == 1024),
        "a 1024-byte filter"
    );
    assert!(
        valid_filters.iter().any(|t| t.split('/').count() == 32),
        "a 32-level filter"
    );
}

#[test]
fn match_vectors() {
    for case in vectors().matches {
        let (filter, topic) = (case.filter.expand(), case.topic.expand());
        validate_filter(&filter).unwrap_or_else(|e| panic!("vector filter invalid: {e}"));
        validate_topic(&topic).unwrap_or_else(|e| panic!("vector topic invalid: {e}"));
        assert_eq!(
            matches(&filter, &topic),
            case.matches,
            "matches({filter:?}, {topic:?}): {}",
            case.note
        );
    }
}

#[test]
fn index_agrees_with_every_match_vector() {
    let v = vectors();
    // One filter at a time: the index reports exactly what the vector expects.
    for case in &v.matches {
        let (filter, topic) = (case.filter.expand(), case.topic.expand());
        let mut index = SubscriptionIndex::new();
        assert_eq!(index.insert(&filter, ()), Ok(true));
        let mut calls = 0;
        index.for_each_match(&topic, |()| calls += 1);
        assert_eq!(
            calls,
            usize::from(case.matches),
            "{filter:?} vs {topic:?}: {}",
            case.note
        );
        assert_eq!(
            index.matching_values(&topic).len(),
            usize::from(case.matches)
        );
    }

    // Every vector filter in one index: for every vector topic, the index returns exactly the
    // filters that `matches` accepts, and agrees with each vector's expectation.
    let filters: BTreeSet<String> = v.matches.iter().map(|c| c.filter.expand()).collect();
    let filters: Vec<String> = filters.into_iter().collect();
    let mut index = SubscriptionIndex::new();
    for (i, filter) in filters.iter().enumerate() {
        assert_eq!(index.insert(filter, i), Ok(true));
    }
    assert_eq!(index.len(), filters.len());
    for case in &v.matches {
        let topic = case.topic.expand();
        let expected: HashSet<usize> = (0..filters.len())
            .filter(|&i| matches(&filters[i], &topic))
            .collect();
        let found = index.matching_values(&topic);
        assert_eq!(found, expected, "topic {topic:?}");
        let filter_id = filters.binary_search(&case.filter.expand()).unwrap();
        assert_eq!(found.contains(&filter_id), case.matches, "{}", case.note);
    }
}

#[test]
fn invalid_topic_vectors() {
    for case in vectors().invalid_topics {
        let input = case.input.expand();
        let error = validate_topic(&input).expect_err(&format!("{input:?} must be rejected"));
        assert_eq!(reason(&error), case.reason, "{input:?}: {error}");
        assert_eq!(error.code(), ErrorCode::InvalidTopic);
        assert!(!error.to_string().is_empty());
    }
}

#[test]
fn invalid_filter_vectors() {
    for case in vectors().invalid_filters {
        let input = case.input.expand();
        let error = validate_filter(&input).expect_err(&format!("{input:?} must be rejected"));
        assert_eq!(reason(&error), case.reason, "{input:?}: {error}");
        assert_eq!(error.code(), ErrorCode::InvalidFilter);
        let mut index = SubscriptionIndex::new();
        assert_eq!(index.insert(&input, 1), Err(error));
        assert!(index.is_empty());
        // An invalid filter is not a valid topic either.
        assert!(validate_topic(&input).is_err(), "{input:?}");
    }
}

#[test]
fn valid_vectors() {
    let v = vectors();
    for input in &v.valid_topics {
        let topic = input.expand();
        assert_eq!(validate_topic(&topic), Ok(()), "topic {topic:?}");
        // Every valid topic name is also a valid filter, matching itself.
        assert_eq!(validate_filter(&topic), Ok(()), "topic as filter {topic:?}");
        assert!(matches(&topic, &topic), "{topic:?} matches itself");
    }
    for input in &v.valid_filters {
        let filter = input.expand();
        assert_eq!(validate_filter(&filter), Ok(()), "filter {filter:?}");
        let mut index = SubscriptionIndex::new();
        assert_eq!(index.insert(&filter, 1), Ok(true));
        assert!(index.contains(&filter, &1));
        assert!(index.remove(&filter, &1));
        assert!(index.is_empty());
    }
}
