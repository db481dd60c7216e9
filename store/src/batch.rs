//! [`Batch`]: one atomic sled batch that counts the keys it writes.
//!
//! sled's cost is per key written, so the store counts them: [`crate::Store::keys_written`]
//! lets tests check what a commit costs (a renewed credential, a pruned record) and the
//! benchmarks report it; the reclaimer ([`crate::reclaim`]) frees the tree nodes a batch
//! replaced according to the same number.

use sled::IVec;

/// A [`sled::Batch`] with the number of inserts and removals it holds.
#[derive(Default)]
pub(crate) struct Batch {
    inner: sled::Batch,
    writes: usize,
}

impl Batch {
    pub(crate) fn insert<K: Into<IVec>, V: Into<IVec>>(&mut self, key: K, value: V) {
        self.writes += 1;
        self.inner.insert(key, value);
    }

    pub(crate) fn remove<K: Into<IVec>>(&mut self, key: K) {
        self.writes += 1;
        self.inner.remove(key);
    }

    /// Inserts and removals so far (a key written twice counts twice).
    pub(crate) fn writes(&self) -> usize {
        self.writes
    }

    pub(crate) fn into_sled(self) -> sled::Batch {
        self.inner
    }
}
