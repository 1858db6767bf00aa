//! [`ByDid`]: a client's copies in flight, keyed by delivery id.
//!
//! A client's delivery ids are given in order (1, 2, 3, ...) and mostly acknowledged in order,
//! so the recent ones live in a ring indexed by `did - base`: inserting and settling are an
//! index, not a hash and a probe (the hash map this replaced was 9% of the server's samples
//! under QoS 1 load, most of it in removals that leave tombstones behind). A copy that stays
//! unacknowledged (its subscriber is slow, or it is being retried) would pin the ring's start
//! and make it span every later id: once the ring spans [`RING_SPAN`] ids, its oldest entries
//! move to a map, so the ring's memory stays bounded whatever the acks do.

use std::collections::VecDeque;

use super::IdMap;

/// Most delivery ids the ring spans; older entries still in flight move to the map.
pub(super) const RING_SPAN: usize = 1024;

/// Values keyed by delivery id, cheapest when ids are inserted in increasing order.
#[derive(Debug)]
pub(super) struct ByDid<V> {
    /// Delivery id of `ring[0]`.
    base: u64,
    /// Entries for ids `base..base + ring.len()`; `None` once removed. Never starts with `None`.
    ring: VecDeque<Option<V>>,
    /// Entries with ids below `base`.
    old: IdMap<u64, V>,
    /// Entries held.
    len: usize,
}

impl<V> Default for ByDid<V> {
    fn default() -> Self {
        ByDid {
            base: 0,
            ring: VecDeque::new(),
            old: IdMap::default(),
            len: 0,
        }
    }
}

impl<V> ByDid<V> {
    /// Entries held.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Inserts `value` as `did`, replacing an entry with the same id.
    pub(super) fn insert(&mut self, did: u64, value: V) {
        if let Some(index) = self.index(did) {
            if self.ring[index].replace(value).is_none() {
                self.len += 1;
            }
            return;
        }
        if !self.ring.is_empty() && did < self.base {
            if self.old.insert(did, value).is_none() {
                self.len += 1;
            }
            return;
        }
        let end = self.base + self.ring.len() as u64;
        if self.ring.is_empty() || did - end >= RING_SPAN as u64 {
            self.spill(self.ring.len());
            self.base = did;
        }
        while self.base + (self.ring.len() as u64) < did {
            self.ring.push_back(None);
        }
        self.ring.push_back(Some(value));
        self.len += 1;
        if self.ring.len() > RING_SPAN {
            self.spill(self.ring.len() - RING_SPAN);
        }
    }

    /// Removes and returns entry `did`.
    pub(super) fn remove(&mut self, did: u64) -> Option<V> {
        let value = match self.index(did) {
            Some(index) => self.ring[index].take(),
            None => self.old.remove(&did),
        }?;
        self.len -= 1;
        self.trim_front();
        Some(value)
    }

    /// Entry `did`.
    pub(super) fn get(&self, did: u64) -> Option<&V> {
        match self.index(did) {
            Some(index) => self.ring[index].as_ref(),
            None => self.old.get(&did),
        }
    }

    /// Entry `did`, mutable.
    pub(super) fn get_mut(&mut self, did: u64) -> Option<&mut V> {
        match self.index(did) {
            Some(index) => self.ring[index].as_mut(),
            None => self.old.get_mut(&did),
        }
    }

    /// Every entry (in no particular order).
    pub(super) fn values(&self) -> impl Iterator<Item = &V> {
        self.old.values().chain(self.ring.iter().flatten())
    }

    /// Removes every entry, ids with them.
    pub(super) fn drain(&mut self) -> Vec<(u64, V)> {
        let mut all: Vec<(u64, V)> = self.old.drain().collect();
        let base = self.base;
        all.extend(
            self.ring
                .drain(..)
                .enumerate()
                .filter_map(|(i, slot)| Some((base + i as u64, slot?))),
        );
        self.len = 0;
        all
    }

    /// Where `did` is in the ring, if the ring spans it.
    fn index(&self, did: u64) -> Option<usize> {
        let index = usize::try_from(did.checked_sub(self.base)?).ok()?;
        (index < self.ring.len()).then_some(index)
    }

    /// Moves the ring's first `count` slots to the map.
    fn spill(&mut self, count: usize) {
        for _ in 0..count {
            if let Some(Some(value)) = self.ring.pop_front() {
                self.old.insert(self.base, value);
            }
            self.base += 1;
        }
        self.trim_front();
    }

    /// Drops the removed slots at the ring's start.
    fn trim_front(&mut self) {
        while let Some(None) = self.ring.front() {
            self.ring.pop_front();
            self.base += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(map: &ByDid<u64>) -> Vec<u64> {
        let mut ids: Vec<u64> = map.values().copied().collect();
        ids.sort_unstable();
        ids
    }

    #[test]
    fn in_order_inserts_and_removals_stay_in_the_ring() {
        let mut map = ByDid::default();
        for did in 1..=100 {
            map.insert(did, did);
        }
        assert_eq!(map.len(), 100);
        for did in 1..=60 {
            assert_eq!(map.remove(did), Some(did));
        }
        assert_eq!((map.len(), map.ring.len(), map.base), (40, 40, 61));
        assert!(map.old.is_empty());
        assert_eq!(ids(&map), (61..=100).collect::<Vec<_>>());
    }

    #[test]
    fn removals_out_of_order_are_found_and_trimmed() {
        let mut map = ByDid::default();
        for did in 1..=10 {
            map.insert(did, did);
        }
        assert_eq!(map.remove(5), Some(5));
        assert_eq!(map.remove(5), None);
        assert_eq!(map.ring.len(), 10);
        for did in [2, 3, 4, 1] {
            assert_eq!(map.remove(did), Some(did));
        }
        // 1..=5 are gone: the ring starts at 6.
        assert_eq!((map.base, map.ring.len(), map.len()), (6, 5, 5));
        assert_eq!(map.get(7), Some(&7));
        assert_eq!(map.get(3), None);
        assert_eq!(map.remove(99), None);
    }

    #[test]
    fn an_unacknowledged_copy_moves_to_the_map_instead_of_pinning_the_ring() {
        let mut map = ByDid::default();
        map.insert(1, 1);
        for did in 2..=10_000 {
            map.insert(did, did);
            assert_eq!(map.remove(did), Some(did));
        }
        assert!(map.ring.len() <= RING_SPAN);
        assert_eq!(map.len(), 1);
        assert_eq!(map.get(1), Some(&1));
        if let Some(value) = map.get_mut(1) {
            *value = 11;
        }
        assert_eq!(map.remove(1), Some(11));
        assert_eq!(map.len(), 0);
        assert!(map.old.is_empty());
    }

    #[test]
    fn a_full_ring_spills_its_oldest_entries() {
        let mut map = ByDid::default();
        let count = 3 * RING_SPAN as u64;
        for did in 1..=count {
            map.insert(did, did);
        }
        assert_eq!(map.ring.len(), RING_SPAN);
        assert_eq!(map.old.len(), 2 * RING_SPAN);
        assert_eq!(ids(&map), (1..=count).collect::<Vec<_>>());
        for did in (1..=count).rev() {
            assert_eq!(map.remove(did), Some(did));
        }
        assert_eq!((map.len(), map.ring.len(), map.old.len()), (0, 0, 0));
    }

    #[test]
    fn ids_out_of_order_or_far_ahead_are_kept() {
        let mut map = ByDid::default();
        map.insert(10, 10);
        map.insert(3, 3);
        map.insert(10, 100);
        map.insert(10 + 5 * RING_SPAN as u64, 7);
        map.insert(11, 11);
        assert_eq!(map.len(), 4);
        assert_eq!(map.get(10), Some(&100));
        assert_eq!(map.get(3), Some(&3));
        assert_eq!(map.get(11), Some(&11));
        let mut drained = map.drain();
        drained.sort_unstable();
        assert_eq!(
            drained,
            vec![(3, 3), (10, 100), (11, 11), (10 + 5 * RING_SPAN as u64, 7)]
        );
        assert_eq!((map.len(), map.values().count()), (0, 0));
    }
}
