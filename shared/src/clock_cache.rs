//! A capacity-bounded map whose eviction keeps what is in use: the CLOCK ("second chance")
//! approximation of least-recently-used. A read marks its entry (an atomic flag, so reads
//! share a read lock); when the map is full, an insert walks its ring of keys from the
//! oldest, giving each marked entry a second chance (unmarking it and moving it to the back)
//! and evicting the first unmarked one. Hot keys (a proxy's frequent users) stay; a scan of
//! cold ones (a million users each seen once) cycles through the rest of the capacity.
//!
//! Amortised O(1) per operation; the ring holds each key once per insertion (removed keys
//! leave stale ring slots, skipped and compacted away).
use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

struct Slot<V> {
    value: V,
    /// Read since the hand last passed it.
    referenced: AtomicBool,
    /// Which insertion of the key this is (ring slots of earlier ones are stale).
    generation: u64,
}

pub struct ClockCache<K, V> {
    entries: HashMap<Arc<K>, Slot<V>>,
    ring: VecDeque<(Arc<K>, u64)>,
    capacity: usize,
    next_generation: u64,
}

impl<K: Hash + Eq, V> ClockCache<K, V> {
    /// At most `capacity` entries (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            ring: VecDeque::new(),
            capacity: capacity.max(1),
            next_generation: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The value of `key`, marking it used.
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        Arc<K>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let slot = self.entries.get(key)?;
        // Relaxed: the flag is a hint for eviction, never a guard of the value.
        if !slot.referenced.load(Ordering::Relaxed) {
            slot.referenced.store(true, Ordering::Relaxed);
        }
        Some(&slot.value)
    }

    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        Arc<K>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.contains_key(key)
    }

    /// Stores `value` under `key` (replacing one there, which counts as a use); when full,
    /// evicts an entry not used since the hand last passed it.
    pub fn insert(&mut self, key: K, value: V) {
        if let Some(slot) = self.entries.get_mut(&key) {
            slot.value = value;
            slot.referenced.store(true, Ordering::Relaxed);
            return;
        }
        while self.entries.len() >= self.capacity {
            self.evict_one();
        }
        let key = Arc::new(key);
        let generation = self.next_generation;
        self.next_generation += 1;
        self.ring.push_back((key.clone(), generation));
        self.entries.insert(
            key,
            Slot {
                value,
                // New entries start unmarked: one read before the hand comes round keeps
                // them, none lets them go first (a scan does not push out the hot set).
                referenced: AtomicBool::new(false),
                generation,
            },
        );
        self.compact_if_sparse();
    }

    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        Arc<K>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let removed = self.entries.remove(key).map(|slot| slot.value);
        self.compact_if_sparse();
        removed
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.ring.clear();
    }

    fn evict_one(&mut self) {
        // Each live entry is passed at most twice (once unmarked): this ends.
        while let Some((key, generation)) = self.ring.pop_front() {
            let Some(slot) = self.entries.get(&key) else {
                continue;
            };
            if slot.generation != generation {
                continue;
            }
            if slot.referenced.swap(false, Ordering::Relaxed) {
                self.ring.push_back((key, generation));
                continue;
            }
            self.entries.remove(&key);
            return;
        }
    }

    /// Drops stale ring slots once they outnumber the live entries (removals without
    /// evictions would otherwise grow the ring without bound).
    fn compact_if_sparse(&mut self) {
        if self.ring.len() > 2 * self.entries.len() + 64 {
            let entries = &self.entries;
            self.ring.retain(|(key, generation)| {
                entries
                    .get(key)
                    .is_some_and(|slot| slot.generation == *generation)
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_cache_keeps_the_keys_in_use_through_a_scan_of_cold_ones() {
        let mut cache = ClockCache::new(100);
        for hot in 0..10 {
            cache.insert(format!("hot{hot}"), hot);
        }
        // A million-user scan: each cold key seen once, the hot ones read all along.
        for cold in 0..10_000 {
            for hot in 0..10 {
                assert!(cache.get(&format!("hot{hot}")).is_some(), "hot{hot}");
            }
            cache.insert(format!("cold{cold}"), cold);
            assert!(cache.len() <= 100);
        }
        assert_eq!(cache.len(), 100);
        assert!(cache.ring.len() <= 2 * cache.len() + 64);
    }

    #[test]
    fn replacing_removing_and_clearing_keep_the_ring_consistent() {
        let mut cache = ClockCache::new(3);
        cache.insert("a".to_owned(), 1);
        cache.insert("a".to_owned(), 2);
        assert_eq!(cache.get(&"a".to_owned()), Some(&2));
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.remove(&"a".to_owned()), Some(2));
        assert_eq!(cache.get(&"a".to_owned()), None);
        // A key removed and inserted again is not evicted by its stale ring slot.
        cache.insert("a".to_owned(), 3);
        cache.insert("b".to_owned(), 4);
        cache.insert("c".to_owned(), 5);
        assert!(cache.get(&"a".to_owned()).is_some());
        cache.insert("d".to_owned(), 6);
        assert_eq!(cache.len(), 3);
        assert!(cache.get(&"a".to_owned()).is_some(), "used, so kept");
        assert!(cache.get(&"d".to_owned()).is_some(), "just inserted");
        cache.clear();
        assert!(cache.is_empty());
        cache.insert("e".to_owned(), 7);
        assert_eq!(cache.get(&"e".to_owned()), Some(&7));
    }

    #[test]
    fn removals_without_evictions_do_not_grow_the_ring() {
        let mut cache = ClockCache::new(1_000);
        for round in 0..10_000 {
            cache.insert(round % 7, round);
            cache.remove(&(round % 7));
        }
        assert!(
            cache.ring.len() <= 64 + 2 * cache.len(),
            "{}",
            cache.ring.len()
        );
    }

    #[test]
    fn a_capacity_of_zero_is_one() {
        let mut cache = ClockCache::new(0);
        cache.insert(1, "one");
        cache.insert(2, "two");
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get(&2), Some(&"two"));
    }
}
