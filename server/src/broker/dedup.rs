//! The session's window of recently seen message ids, which makes publishing idempotent
//! (`docs/PROTOCOL.md` §8.5).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// How long a message id is remembered.
const WINDOW: Duration = Duration::from_secs(600);

/// Most ids remembered per session; the oldest are forgotten first, so memory stays bounded.
const MAX_IDS: usize = 100_000;

/// Message ids seen within [`WINDOW`], with the offset their publish got.
#[derive(Debug, Default)]
pub(super) struct Dedup {
    seen: HashMap<String, Option<u64>>,
    order: VecDeque<(String, Instant)>,
}

impl Dedup {
    /// The offset of an earlier publish with this id (`Some(None)` for a direct message).
    pub(super) fn seen(&mut self, mid: &str) -> Option<Option<u64>> {
        self.expire();
        self.seen.get(mid).copied()
    }

    /// Remembers a message id.
    pub(super) fn record(&mut self, mid: &str, offset: Option<u64>) {
        if self.seen.insert(mid.to_owned(), offset).is_none() {
            self.order.push_back((mid.to_owned(), Instant::now()));
        }
        while self.order.len() > MAX_IDS {
            if let Some((old, _)) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
    }

    fn expire(&mut self) {
        while let Some((mid, at)) = self.order.front() {
            if at.elapsed() < WINDOW {
                break;
            }
            self.seen.remove(mid);
            self.order.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_and_bounds() {
        let mut dedup = Dedup::default();
        assert_eq!(dedup.seen("a"), None);
        dedup.record("a", Some(3));
        assert_eq!(dedup.seen("a"), Some(Some(3)));
        for i in 0..MAX_IDS {
            dedup.record(&i.to_string(), None);
        }
        assert_eq!(dedup.seen("a"), None, "oldest forgotten first");
        assert_eq!(dedup.order.len(), MAX_IDS);
    }
}
