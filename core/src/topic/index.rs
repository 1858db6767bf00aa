//! [`SubscriptionIndex`]: a trie of filters that finds every filter matching a topic name.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::Hash;

use super::{TopicError, is_reserved, validate_filter};

/// Maps subscription filters to values (for example client ids) and finds the values whose
/// filters match a published topic.
///
/// The index is a trie keyed by level: each node has a map of literal child levels, one child for
/// `+` and a slot for filters that end in `#` there. Matching a topic walks only the branches
/// that can match it, so its cost depends on the topic's depth and on the matching branches, not
/// on the number of unrelated filters; it allocates nothing (except in
/// [`matching_values`](Self::matching_values), which builds its result).
///
/// The same value may be stored under several filters, and several values under one filter; a
/// (filter, value) pair is stored at most once. Empty nodes are pruned on
/// [`remove`](Self::remove), so memory is given back after unsubscribing.
///
/// Matching recurses once per trie level. Because [`insert`](Self::insert) only accepts valid
/// filters, the trie is at most [`MAX_TOPIC_LEVELS`](super::MAX_TOPIC_LEVELS) levels deep, which
/// bounds the recursion whatever the topic passed in (topics are not validated by the index and
/// may be arbitrarily long or deep).
///
/// ```
/// use sealbus::topic::SubscriptionIndex;
///
/// let mut index = SubscriptionIndex::new();
/// index.insert("sensors/+/temp", "alice")?;
/// index.insert("sensors/#", "alice")?;
/// index.insert("sensors/kitchen/temp", "bob")?;
/// index.insert("#", "carol")?;
///
/// let mut hits = index.matching_values("sensors/kitchen/temp").into_iter().collect::<Vec<_>>();
/// hits.sort();
/// assert_eq!(hits, ["alice", "bob", "carol"]);
/// assert!(index.matching_values("$SYS/uptime").is_empty());
///
/// assert!(index.remove("#", &"carol"));
/// assert_eq!(index.len(), 3);
/// # Ok::<(), sealbus::topic::TopicError>(())
/// ```
pub struct SubscriptionIndex<T> {
    root: Node<T>,
    len: usize,
}

/// One level of the trie.
struct Node<T> {
    /// Children for literal levels.
    children: HashMap<Box<str>, Node<T>>,
    /// The child for a `+` level.
    plus: Option<Box<Node<T>>>,
    /// Values of filters that end at this node.
    exact: HashSet<T>,
    /// Values of filters that end with `#` right after this node.
    rest: HashSet<T>,
}

impl<T> Node<T> {
    fn new() -> Self {
        Node {
            children: HashMap::new(),
            plus: None,
            exact: HashSet::new(),
            rest: HashSet::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.plus.is_none()
            && self.exact.is_empty()
            && self.rest.is_empty()
    }
}

/// A filter split into the levels that lead to its trie node, and whether it ends in `#`.
///
/// `"#"` has no path levels; `"a/#"` has the path `a`; `"/#"` has the path of one empty level.
fn split_filter(filter: &str) -> (Option<&str>, bool) {
    if filter == "#" {
        (None, true)
    } else if let Some(path) = filter.strip_suffix("/#") {
        (Some(path), true)
    } else {
        (Some(filter), false)
    }
}

/// The levels of an optional path: none for `None`.
fn path_levels(path: Option<&str>) -> impl Iterator<Item = &str> + Clone {
    path.into_iter().flat_map(|path| path.split('/'))
}

/// Gives back memory when a map or set has become much smaller than its allocation.
fn maybe_shrink_map<K: Eq + Hash, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 16 && map.len() * 4 < map.capacity() {
        map.shrink_to_fit();
    }
}

/// See [`maybe_shrink_map`].
fn maybe_shrink_set<T: Eq + Hash>(set: &mut HashSet<T>) {
    if set.capacity() > 16 && set.len() * 4 < set.capacity() {
        set.shrink_to_fit();
    }
}

impl<T: Eq + Hash + Clone> SubscriptionIndex<T> {
    /// An empty index.
    pub fn new() -> Self {
        SubscriptionIndex {
            root: Node::new(),
            len: 0,
        }
    }

    /// The number of (filter, value) pairs stored.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the index holds no pairs.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Stores `value` under `filter`. Returns `Ok(true)` if the pair is new, `Ok(false)` if it
    /// was already stored.
    ///
    /// The filter is validated first (see [`validate_filter`]); an invalid filter is rejected
    /// with its [`TopicError`] and the index is left unchanged.
    ///
    /// ```
    /// use sealbus::topic::SubscriptionIndex;
    ///
    /// let mut index = SubscriptionIndex::new();
    /// assert_eq!(index.insert("a/+", 1), Ok(true));
    /// assert_eq!(index.insert("a/+", 1), Ok(false));
    /// assert!(index.insert("a/#/b", 1).is_err());
    /// assert_eq!(index.len(), 1);
    /// ```
    pub fn insert(&mut self, filter: &str, value: T) -> Result<bool, TopicError> {
        validate_filter(filter)?;
        let (path, rest) = split_filter(filter);
        let mut node = &mut self.root;
        for level in path_levels(path) {
            node = if level == "+" {
                node.plus.get_or_insert_with(|| Box::new(Node::new()))
            } else {
                node.children
                    .entry(Box::from(level))
                    .or_insert_with(Node::new)
            };
        }
        let set = if rest {
            &mut node.rest
        } else {
            &mut node.exact
        };
        let added = set.insert(value);
        if added {
            self.len += 1;
        }
        Ok(added)
    }

    /// Removes the pair (`filter`, `value`). Returns whether it was stored.
    ///
    /// Trie nodes left empty are freed. An invalid filter is never stored, so removing one
    /// returns `false`.
    pub fn remove(&mut self, filter: &str, value: &T) -> bool {
        let (path, rest) = split_filter(filter);
        let removed = remove_at(&mut self.root, path_levels(path), rest, value);
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Whether the pair (`filter`, `value`) is stored.
    pub fn contains(&self, filter: &str, value: &T) -> bool {
        let (path, rest) = split_filter(filter);
        let mut node = &self.root;
        for level in path_levels(path) {
            let next = if level == "+" {
                node.plus.as_deref()
            } else {
                node.children.get(level)
            };
            match next {
                Some(next) => node = next,
                None => return false,
            }
        }
        if rest {
            node.rest.contains(value)
        } else {
            node.exact.contains(value)
        }
    }

    /// Calls `f` for every stored (filter, value) pair whose filter matches `topic`, in no
    /// particular order.
    ///
    /// A value stored under several matching filters is passed once per filter; use
    /// [`matching_values`](Self::matching_values) for a deduplicated set. `topic` is not
    /// validated; matching follows [`matches()`](super::matches), including the rule that filters
    /// starting with a wildcard do not match reserved (`$`) topics. Does not allocate.
    ///
    /// ```
    /// use sealbus::topic::SubscriptionIndex;
    ///
    /// let mut index = SubscriptionIndex::new();
    /// index.insert("a/+", 7)?;
    /// index.insert("a/#", 7)?;
    /// let mut calls = 0;
    /// index.for_each_match("a/b", |value| {
    ///     assert_eq!(*value, 7);
    ///     calls += 1;
    /// });
    /// assert_eq!(calls, 2);
    /// # Ok::<(), sealbus::topic::TopicError>(())
    /// ```
    pub fn for_each_match<F: FnMut(&T)>(&self, topic: &str, mut f: F) {
        let root = &self.root;
        let mut levels = topic.split('/');
        let reserved = is_reserved(topic);
        if !reserved {
            root.rest.iter().for_each(&mut f);
        }
        // `split` always yields at least one level, possibly empty.
        let Some(first) = levels.next() else { return };
        if let Some(child) = root.children.get(first) {
            walk(child, levels.clone(), &mut f);
        }
        if !reserved && let Some(plus) = root.plus.as_deref() {
            walk(plus, levels, &mut f);
        }
    }

    /// The distinct values whose filters match `topic`: one copy per value even when several of
    /// its filters match. See [`for_each_match`](Self::for_each_match).
    pub fn matching_values(&self, topic: &str) -> HashSet<T> {
        let mut values = HashSet::new();
        self.for_each_match(topic, |value| {
            if !values.contains(value) {
                values.insert(value.clone());
            }
        });
        values
    }
}

#[cfg(test)]
impl<T> SubscriptionIndex<T> {
    /// The number of trie nodes, root included (for tests of pruning).
    pub(super) fn node_count(&self) -> usize {
        fn count<T>(node: &Node<T>) -> usize {
            1 + node.children.values().map(count).sum::<usize>()
                + node.plus.as_deref().map_or(0, count)
        }
        count(&self.root)
    }
}

/// Visits `node`, reached by the topic levels before `levels`, and everything below it that
/// matches the remaining `levels`. Recursion depth is bounded by the trie depth.
fn walk<'t, T, F: FnMut(&T)>(node: &Node<T>, mut levels: std::str::Split<'t, char>, f: &mut F) {
    node.rest.iter().for_each(&mut *f);
    match levels.next() {
        None => node.exact.iter().for_each(f),
        Some(level) => {
            if let Some(child) = node.children.get(level) {
                walk(child, levels.clone(), f);
            }
            if let Some(plus) = node.plus.as_deref() {
                walk(plus, levels, f);
            }
        }
    }
}

/// Removes `value` from the node that the filter `levels` lead to, pruning nodes left empty.
/// Recursion depth is bounded by the trie depth: the walk stops at the first missing child.
fn remove_at<'f, T: Eq + Hash>(
    node: &mut Node<T>,
    mut levels: impl Iterator<Item = &'f str>,
    rest: bool,
    value: &T,
) -> bool {
    match levels.next() {
        None => {
            let set = if rest {
                &mut node.rest
            } else {
                &mut node.exact
            };
            let removed = set.remove(value);
            maybe_shrink_set(set);
            removed
        }
        Some("+") => {
            let Some(child) = node.plus.as_deref_mut() else {
                return false;
            };
            let removed = remove_at(child, levels, rest, value);
            if child.is_empty() {
                node.plus = None;
            }
            removed
        }
        Some(level) => {
            let Some(child) = node.children.get_mut(level) else {
                return false;
            };
            let removed = remove_at(child, levels, rest, value);
            if child.is_empty() {
                node.children.remove(level);
                maybe_shrink_map(&mut node.children);
            }
            removed
        }
    }
}

impl<T: Eq + Hash + Clone> Default for SubscriptionIndex<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for SubscriptionIndex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionIndex")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::matches;

    fn sorted(index: &SubscriptionIndex<&'static str>, topic: &str) -> Vec<&'static str> {
        let mut values: Vec<_> = index.matching_values(topic).into_iter().collect();
        values.sort_unstable();
        values
    }

    #[test]
    fn finds_exact_plus_and_hash_filters() {
        let mut index = SubscriptionIndex::new();
        for (filter, value) in [
            ("a/b", "exact"),
            ("a/+", "plus"),
            ("a/#", "hash"),
            ("#", "all"),
            ("+/b", "first-plus"),
            ("a/b/c", "deeper"),
            ("x", "other"),
        ] {
            assert_eq!(index.insert(filter, value), Ok(true), "{filter}");
        }
        assert_eq!(index.len(), 7);
        assert_eq!(
            sorted(&index, "a/b"),
            ["all", "exact", "first-plus", "hash", "plus"]
        );
        assert_eq!(sorted(&index, "a"), ["all", "hash"]);
        assert_eq!(sorted(&index, "a/"), ["all", "hash", "plus"]);
        assert_eq!(sorted(&index, "a/b/c"), ["all", "deeper", "hash"]);
        assert_eq!(sorted(&index, "q"), ["all"]);
        assert_eq!(sorted(&index, "x"), ["all", "other"]);
    }

    #[test]
    fn reserved_topics_skip_leading_wildcards() {
        let mut index = SubscriptionIndex::new();
        for (filter, value) in [
            ("#", "all"),
            ("+/x", "plus"),
            ("$SYS/#", "sys"),
            ("$SYS/+", "p"),
        ] {
            assert_eq!(index.insert(filter, value), Ok(true));
        }
        assert_eq!(sorted(&index, "$SYS/x"), ["p", "sys"]);
        assert_eq!(sorted(&index, "$SYS"), ["sys"]);
        assert_eq!(sorted(&index, "a/x"), ["all", "plus"]);
        assert!(sorted(&index, "$other/x").is_empty());
    }

    #[test]
    fn for_each_match_reports_each_pair_and_matching_values_dedups() {
        let mut index = SubscriptionIndex::new();
        index.insert("a/+", "c1").unwrap();
        index.insert("a/#", "c1").unwrap();
        index.insert("a/b", "c1").unwrap();
        index.insert("a/b", "c2").unwrap();
        let mut seen = Vec::new();
        index.for_each_match("a/b", |v| seen.push(*v));
        seen.sort_unstable();
        assert_eq!(seen, ["c1", "c1", "c1", "c2"]);
        assert_eq!(sorted(&index, "a/b"), ["c1", "c2"]);
    }

    #[test]
    fn insert_is_idempotent_and_validates() {
        let mut index = SubscriptionIndex::new();
        assert_eq!(index.insert("a/+", 1), Ok(true));
        assert_eq!(index.insert("a/+", 1), Ok(false));
        assert_eq!(index.insert("a/+", 2), Ok(true));
        assert!(matches!(
            index.insert("a+", 3),
            Err(TopicError::MisplacedPlus { .. })
        ));
        assert!(matches!(index.insert("", 3), Err(TopicError::Empty { .. })));
        assert!(index.insert(&"a/".repeat(40), 3).is_err());
        assert_eq!(index.len(), 2);
        assert!(index.contains("a/+", &1));
        assert!(!index.contains("a/+", &3));
        assert!(!index.contains("a/b", &1));
        assert!(!index.contains("a+", &3));
    }

    #[test]
    fn hash_variants_are_distinct_filters() {
        let mut index = SubscriptionIndex::new();
        for filter in ["#", "/#", "a/#", "a", "a/+/#", "+/#", "+", "/"] {
            assert_eq!(index.insert(filter, filter), Ok(true));
        }
        for filter in ["#", "/#", "a/#", "a", "a/+/#", "+/#", "+", "/"] {
            assert!(index.contains(filter, &filter), "{filter}");
        }
        for topic in ["a", "/", "a/b", "", "/x", "a/b/c", "$x/y", "b"] {
            let mut expected: Vec<_> = ["#", "/#", "a/#", "a", "a/+/#", "+/#", "+", "/"]
                .into_iter()
                .filter(|f| matches(f, topic))
                .collect();
            expected.sort_unstable();
            assert_eq!(sorted(&index, topic), expected, "{topic:?}");
        }
    }

    #[test]
    fn remove_prunes_empty_nodes() {
        let mut index = SubscriptionIndex::new();
        index.insert("keep", 0).unwrap();
        let before = index.node_count();
        let filters = ["a/b/c/d", "a/+/c/#", "+/+/+", "a/#", "#", "x//y", "/#"];
        for filter in filters {
            index.insert(filter, 1).unwrap();
            index.insert(filter, 2).unwrap();
        }
        assert!(index.node_count() > before);
        assert!(!index.remove("a/b/c/d", &3));
        assert!(!index.remove("a/b/c", &1));
        assert!(!index.remove("a/#/b", &1));
        for filter in filters {
            assert!(index.remove(filter, &1), "{filter}");
            assert!(!index.remove(filter, &1), "{filter} twice");
            assert!(index.contains(filter, &2));
            assert!(index.remove(filter, &2), "{filter}");
        }
        assert_eq!(index.len(), 1);
        assert_eq!(index.node_count(), before);
        assert!(index.remove("keep", &0));
        assert!(index.is_empty());
        assert!(index.root.is_empty());
    }

    #[test]
    fn remove_shrinks_large_maps() {
        let mut index = SubscriptionIndex::new();
        for i in 0..1000 {
            index.insert(&format!("t{i}"), i).unwrap();
        }
        for i in 0..1000 {
            assert!(index.remove(&format!("t{i}"), &i));
        }
        assert!(index.is_empty());
        assert!(index.root.children.capacity() <= 16);
    }

    #[test]
    fn deep_and_long_topics_do_not_overflow() {
        let mut index = SubscriptionIndex::new();
        let deep_filter = vec!["+"; 31].join("/") + "/#";
        index.insert(&deep_filter, 1).unwrap();
        index.insert("#", 2).unwrap();
        let huge_topic = "a/".repeat(200_000);
        let mut hits: Vec<_> = index.matching_values(&huge_topic).into_iter().collect();
        hits.sort_unstable();
        assert_eq!(hits, [1, 2]);
        assert_eq!(
            index.matching_values("a/b").into_iter().collect::<Vec<_>>(),
            [2]
        );
    }

    #[test]
    fn debug_and_default() {
        let index: SubscriptionIndex<u8> = SubscriptionIndex::default();
        assert!(index.is_empty());
        assert_eq!(format!("{index:?}"), "SubscriptionIndex { len: 0, .. }");
    }
}
