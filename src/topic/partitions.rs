//! A topic's partition logs, read on every append.
//!
//! A local topic's partition count only grows (`Log::add_partitions`), and
//! a partition's log stays at its index for the topic's life, so its table
//! is append-only: chunks of doubling size, each allocated once, each slot
//! written once. A reader loads the length and two pointers; it takes no
//! lock and does no atomic read-modify-write. The `RwLock<Vec<_>>` this
//! replaces cost four locked instructions per single-record append (the
//! read lock, its release, and an `Arc` clone and drop to call `sync_to`
//! after releasing it): 17 % of an append in the profile.
//!
//! A cluster topic's table holds each partition's current leader log, which
//! the cluster replaces when leadership moves; it stays a `RwLock<Vec<_>>`
//! (its appends go through the cluster, not this table).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::config::MAX_PARTITIONS;
use crate::storage::PartitionLog;

/// Slots in the first chunk; chunk `c` has `FIRST << c`.
const FIRST: usize = 16;
/// Enough chunks for [`MAX_PARTITIONS`]: `FIRST * (2^CHUNKS - 1)` slots.
const CHUNKS: usize = 14;
const _: () = assert!(FIRST * ((1 << CHUNKS) - 1) >= MAX_PARTITIONS as usize);

type Chunk = Box<[OnceLock<Arc<PartitionLog>>]>;

/// A topic's partition logs.
pub(crate) enum Partitions {
    /// A local topic's: append-only, read without a lock.
    Local(Box<AppendOnly>),
    /// A cluster topic's: each partition's current leader log.
    Leaders(RwLock<Vec<Arc<PartitionLog>>>),
}

/// The partitions of a [`Partitions`] at one moment, to index.
pub(crate) enum View<'a> {
    Local(&'a AppendOnly, usize),
    Leaders(RwLockReadGuard<'a, Vec<Arc<PartitionLog>>>),
}

impl Partitions {
    /// A local topic's table.
    pub(crate) fn local(logs: Vec<Arc<PartitionLog>>) -> Partitions {
        let table = AppendOnly {
            len: AtomicUsize::new(0),
            chunks: Default::default(),
            extending: Mutex::new(()),
        };
        table.extend(logs);
        Partitions::Local(Box::new(table))
    }

    /// A cluster topic's table.
    pub(crate) fn leaders(logs: Vec<Arc<PartitionLog>>) -> Partitions {
        Partitions::Leaders(RwLock::new(logs))
    }

    /// The partitions now; a local topic's view takes no lock.
    #[inline]
    pub(crate) fn view(&self) -> View<'_> {
        match self {
            Partitions::Local(t) => View::Local(t, t.len()),
            Partitions::Leaders(l) => View::Leaders(l.read()),
        }
    }

    /// How many partitions the topic has.
    pub(crate) fn len(&self) -> usize {
        self.view().len()
    }

    /// Partition `i`'s log.
    pub(crate) fn get(&self, i: usize) -> Option<Arc<PartitionLog>> {
        self.view().get(i).cloned()
    }

    /// The logs of all partitions now.
    pub(crate) fn to_vec(&self) -> Vec<Arc<PartitionLog>> {
        self.view().iter().cloned().collect()
    }

    /// Adds partitions at the end.
    pub(crate) fn extend(&self, logs: Vec<Arc<PartitionLog>>) {
        match self {
            Partitions::Local(t) => t.extend(logs),
            Partitions::Leaders(l) => l.write().extend(logs),
        }
    }

    /// A cluster topic's leader logs, to repoint; `None` for a local topic.
    pub(crate) fn leaders_mut(&self) -> Option<RwLockWriteGuard<'_, Vec<Arc<PartitionLog>>>> {
        match self {
            Partitions::Local(_) => None,
            Partitions::Leaders(l) => Some(l.write()),
        }
    }
}

impl View<'_> {
    /// How many partitions there are.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        match self {
            View::Local(_, len) => *len,
            View::Leaders(logs) => logs.len(),
        }
    }

    /// Partition `i`'s log.
    #[inline]
    pub(crate) fn get(&self, i: usize) -> Option<&Arc<PartitionLog>> {
        match self {
            View::Local(t, len) => (i < *len).then(|| t.get(i)).flatten(),
            View::Leaders(logs) => logs.get(i),
        }
    }

    /// The logs in partition order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<PartitionLog>> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

impl std::ops::Index<usize> for View<'_> {
    type Output = Arc<PartitionLog>;

    /// Like a slice's: panics past the end (callers index below `len()`).
    fn index(&self, i: usize) -> &Arc<PartitionLog> {
        self.get(i)
            .expect("partition index below the view's length")
    }
}

/// A local topic's table (see the module docs).
pub(crate) struct AppendOnly {
    /// Slots below this are filled (published with `Release` after the
    /// slots themselves).
    len: AtomicUsize,
    chunks: [OnceLock<Chunk>; CHUNKS],
    /// Serializes [`extend`](Self::extend).
    extending: Mutex<()>,
}

/// The chunk and slot of index `i`.
fn locate(i: usize) -> (usize, usize) {
    let n = i / FIRST + 1;
    let c = (usize::BITS - 1 - n.leading_zeros()) as usize;
    (c, i - FIRST * ((1 << c) - 1))
}

impl AppendOnly {
    fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Slot `i`, which the caller saw below `len()`.
    #[inline]
    fn get(&self, i: usize) -> Option<&Arc<PartitionLog>> {
        let (c, slot) = locate(i);
        self.chunks.get(c)?.get()?.get(slot)?.get()
    }

    /// Appends partitions; readers see all of them at once, when the
    /// length is stored, so a keyed record never maps to a partition count
    /// in between.
    fn extend(&self, logs: Vec<Arc<PartitionLog>>) {
        let _one = self.extending.lock();
        let mut len = self.len.load(Ordering::Acquire);
        for log in logs {
            let (c, slot) = locate(len);
            // Past MAX_PARTITIONS, which configuration refuses first.
            let Some(chunk) = self.chunks.get(c) else {
                break;
            };
            let chunk = chunk.get_or_init(|| (0..FIRST << c).map(|_| OnceLock::new()).collect());
            // Slots at or past `len` are empty (`extend` runs one at a
            // time), so the set succeeds.
            let _ = chunk[slot].set(log);
            len += 1;
        }
        self.len.store(len, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Limits;

    #[test]
    fn a_growing_table_keeps_every_log_at_its_index() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            segment_bytes: 64 * 1024,
            compacted: false,
            retention_bytes: None,
            retention_ms: None,
            compression: crate::format::Compression::None,
        };
        let topic: Arc<str> = Arc::from("t");
        let create =
            |p| Arc::new(PartitionLog::create(dir.path(), Arc::clone(&topic), p, limits).unwrap());
        let table = Partitions::local((0..10).map(create).collect());
        assert_eq!(table.len(), 10);
        assert!(table.get(10).is_none());
        // Across the chunks of 16, 32 and 64 slots.
        table.extend((10..60).map(create).collect());
        table.extend((60..100).map(create).collect());
        assert_eq!(table.len(), 100);
        let view = table.view();
        for p in 0..100 {
            assert_eq!(view[p].partition, p as u32, "slot {p}");
        }
        assert!(view.get(100).is_none());
        assert_eq!(table.to_vec().len(), 100);
    }

    #[test]
    fn indexes_map_to_consecutive_slots_of_doubling_chunks() {
        assert_eq!(locate(0), (0, 0));
        assert_eq!(locate(15), (0, 15));
        assert_eq!(locate(16), (1, 0));
        assert_eq!(locate(47), (1, 31));
        assert_eq!(locate(48), (2, 0));
        let mut expect = (0, 0);
        for i in 0..MAX_PARTITIONS as usize {
            assert_eq!(locate(i), expect, "index {i}");
            expect.1 += 1;
            if expect.1 == FIRST << expect.0 {
                expect = (expect.0 + 1, 0);
            }
        }
        assert!(expect.0 < CHUNKS);
    }
}
