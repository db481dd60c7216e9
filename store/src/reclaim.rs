//! Freeing the tree nodes sled replaced, right after the store's big writes.
//!
//! sled 0.34 never changes a tree node in place: every insert into a leaf copies the whole
//! node (`PageCache::link` clones it and applies the change to the copy), publishes the
//! copy and hands the old node to crossbeam-epoch's global collector, to be freed once no
//! thread can still be reading it. That collector frees little at a time: a thread frees at
//! most 8 bags of 64 old nodes when it pins, and only once every 128 pins. A scan's writer
//! pins once per batch of tens of thousands of inserts, so the old copies pile up far faster
//! than anyone frees them: heaptrack on certd scanning 50,000 new files showed 665 MB of heap
//! at the end of the scan, 95% of it node copies made by `link` and `split_node` under
//! `apply_batch`, freed only in the seconds after the scan (73 MB left); at 200,000 files
//! certd peaked at 3.2 GB with a 32 MiB page cache.
//!
//! [`after_write`] runs the collector after such a batch until what the batch left can have
//! been freed. What one batch makes cannot be freed while it is applied (the writer stays
//! pinned for the whole batch), so a batch's own garbage is the floor; bounding that is the
//! batch size's job (the scan commits every 2,048 certificates, see certd's `inventory`).

use std::sync::atomic::{AtomicUsize, Ordering};

/// Old nodes one collector step frees at most (crossbeam-epoch 0.9: 8 bags of 64).
const FREED_PER_STEP: usize = 8 * 64;

/// Steps beyond the estimate: two to move the epoch past the batch (garbage is freed two
/// epochs after it was made), the rest for garbage other threads left in the queue.
const EXTRA_STEPS: usize = 64;

/// The writes of the last batch [`after_write`] ran the collector for. A thread pinned at
/// that moment (sled's flusher writing a buffer out, a reader) holds the epoch back, and the
/// steps then free nothing; [`before_write`] tries again for them before the next batch.
static LAST_WRITES: AtomicUsize = AtomicUsize::new(0);

/// Runs crossbeam-epoch's collector after a batch of about `writes` inserts and removals:
/// each write replaced a leaf (one old node; a split, a few more), so the batch left about
/// `writes` to `2 * writes` old nodes. Cheap when there is nothing to free (a step is a pin
/// and an empty queue check, well under a microsecond).
pub(crate) fn after_write(writes: usize) {
    LAST_WRITES.store(writes, Ordering::Relaxed);
    collect(writes);
}

/// Runs the collector again for the last batch (see [`LAST_WRITES`]), before a new one.
pub(crate) fn before_write() {
    collect(LAST_WRITES.load(Ordering::Relaxed));
}

fn collect(writes: usize) {
    let steps = writes.saturating_mul(2) / FREED_PER_STEP + EXTRA_STEPS;
    for _ in 0..steps {
        // A fresh pin each time: a pinned thread holds the epoch where it found it.
        crossbeam_epoch::pin().flush();
    }
}
