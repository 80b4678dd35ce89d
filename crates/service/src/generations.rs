//! A bounded map that never forgets everything at once.
//!
//! Entries live in a young and an old generation. When the young one is full it becomes the old
//! one and the previous old one is dropped; a hit in the old generation brings the entry back to
//! the young one. What is used stays; what was not used for a whole generation leaves. A cache
//! that was simply cleared when full lost its hot entries too (the create, power-levels and
//! member events every send and evaluation reads), and under load the rush of reads that
//! followed stalled everything for a moment.

use foldhash::HashMap;
use std::borrow::Borrow;
use std::hash::Hash;

pub(crate) struct Generations<K, V> {
    young: HashMap<K, V>,
    old: HashMap<K, V>,
    /// Entries per generation.
    limit: usize,
}

impl<K: Hash + Eq, V: Clone> Generations<K, V> {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            young: HashMap::default(),
            old: HashMap::default(),
            limit: limit.max(1),
        }
    }

    /// The value, moving it to the young generation if it was in the old one. Returns what a
    /// full young generation pushed out, for the caller to drop outside its lock.
    pub(crate) fn get<Q>(&mut self, key: &Q) -> (Option<V>, Option<HashMap<K, V>>)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(v) = self.young.get(key) {
            return (Some(v.clone()), None);
        }
        match self.old.remove_entry(key) {
            Some((k, v)) => {
                let dropped = self.insert(k, v.clone());
                (Some(v), dropped)
            }
            None => (None, None),
        }
    }

    /// Inserts; returns the generation that had to leave, if any, for the caller to drop
    /// outside its lock.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<HashMap<K, V>> {
        let mut dropped = None;
        if self.young.len() >= self.limit && !self.young.contains_key(&key) {
            let young = std::mem::take(&mut self.young);
            dropped = Some(std::mem::replace(&mut self.old, young));
        }
        self.old.remove(&key);
        self.young.insert(key, value);
        dropped
    }

    pub(crate) fn remove<Q>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.young.remove(key);
        self.old.remove(key);
    }

    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool) {
        self.young.retain(|k, v| keep(k, v));
        self.old.retain(|k, v| keep(k, v));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn used_entries_survive_a_full_generation() {
        let mut g = Generations::new(3);
        for i in 0..3 {
            assert!(g.insert(i, i).is_none());
        }
        // The young generation is full: it becomes the old one.
        assert!(g.insert(10, 10).is_some_and(|d| d.is_empty()));
        assert_eq!(g.get(&0).0, Some(0)); // back to the young generation
        g.insert(11, 11);
        // Full again: the old generation (1, 2) leaves; 0 was used and stays.
        let dropped = g.insert(12, 12).unwrap_or_default();
        let mut gone: Vec<i32> = dropped.into_keys().collect();
        gone.sort();
        assert_eq!(gone, vec![1, 2]);
        assert_eq!(g.get(&0).0, Some(0));
        assert_eq!(g.get(&1).0, None);
        assert!(g.len() <= 6);
    }

    #[test]
    fn remove_and_retain_reach_both_generations() {
        let mut g = Generations::new(2);
        for i in 0..4 {
            g.insert(i, i);
        }
        g.remove(&0);
        g.remove(&3);
        assert_eq!(g.get(&0).0, None);
        assert_eq!(g.get(&3).0, None);
        g.retain(|k, _| *k != 1);
        assert_eq!(g.get(&1).0, None);
        assert_eq!(g.get(&2).0, Some(2));
    }
}
