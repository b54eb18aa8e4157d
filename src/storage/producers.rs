//! Idempotent producers: per-partition sequence state.
//!
//! An idempotent producer stamps every batch with its producer id, epoch
//! and the sequence number of the batch's first record; the records of a
//! batch have consecutive sequences, as they have consecutive offsets. A
//! partition remembers, for each producer, its epoch, the last sequence it
//! wrote and the sequence → offset ranges of its last
//! [`CACHED_BATCHES`] appends (Kafka's broker keeps five too). An append is
//! then:
//!
//! - **new**, if its first sequence follows the last one (or is 0 for a
//!   producer or epoch the partition has not seen): written;
//! - **a duplicate**, if its sequences lie within a cached append: nothing
//!   is written and the original offsets are returned — a retried send
//!   never writes twice;
//! - **refused** otherwise: [`Error::OutOfOrderSequence`] for a gap or a
//!   duplicate too old to be cached, [`Error::ProducerFenced`] for an epoch
//!   older than the partition has seen.
//!
//! # Durability of the state
//!
//! The state is derived from the batch headers in the log, so it can always
//! be rebuilt by walking them. To avoid that walk, every recovery
//! checkpoint carries each partition's state together with the offset it
//! describes (`ProducerSnapshot`, like Kafka's `.snapshot` files). On open
//! the snapshot is loaded and the headers from its offset to the end are
//! replayed; a missing snapshot means the state was empty when the
//! checkpoint was taken, so replaying from the recovery point suffices; a
//! snapshot that describes more than the recovered log holds (a power loss
//! took unsynced batches) is dropped and the whole log is walked.
//!
//! Compaction keeps batch headers (base sequence, `lastOffsetDelta`) of the
//! batches it keeps, and the snapshot keeps the state of batches it
//! removes. Retention that deletes a producer's every batch, and
//! [`PRODUCER_EXPIRY_MS`] without appends, forget the producer, as in Kafka.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::BatchHeader;
pub(crate) use crate::format::ProducerBatch;

/// Appends per producer whose offsets a partition remembers for retries.
pub(crate) const CACHED_BATCHES: usize = 5;
/// A producer without appends for this long is forgotten (Kafka's
/// `producer.id.expiration.ms` default, one day).
pub(crate) const PRODUCER_EXPIRY_MS: i64 = 24 * 3600 * 1000;

/// One remembered append: sequences `first..=last` at offsets from `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SeqRange {
    pub first: i32,
    pub last: i32,
    pub offset: u64,
}

/// What a partition knows of one producer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProducerEntry {
    pub producer_id: i64,
    pub epoch: i16,
    /// Newest last; at most [`CACHED_BATCHES`].
    pub recent: VecDeque<SeqRange>,
    /// Wall-clock time of the last append, for expiry.
    pub last_append_ms: i64,
}

impl ProducerEntry {
    fn last_sequence(&self) -> Option<i32> {
        self.recent.back().map(|r| r.last)
    }
}

/// What to do with an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// Write it.
    Append,
    /// Already written: the first record is at this offset.
    Duplicate { offset: u64 },
}

/// The sequence after `s` (sequences wrap to 0 after `i32::MAX`, as in Kafka).
pub(crate) fn next_sequence(s: i32) -> i32 {
    if s == i32::MAX {
        0
    } else {
        s + 1
    }
}

/// The last sequence of `count` records starting at `first`.
pub(crate) fn last_sequence(first: i32, count: u32) -> i32 {
    ((first as i64 + count as i64 - 1) % (i32::MAX as i64 + 1)) as i32
}

/// Every producer's state in one partition.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ProducerStates {
    entries: HashMap<i64, ProducerEntry>,
}

/// The state as stored in a recovery checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProducerSnapshot {
    /// The state covers every batch below this offset.
    pub offset: u64,
    pub producers: Vec<ProducerEntry>,
}

impl ProducerStates {
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Decides what to do with an append of `count` records; `where_` names
    /// the partition in errors.
    pub(crate) fn check(&self, b: ProducerBatch, count: u32, where_: &str) -> Result<Check> {
        let last = last_sequence(b.base_sequence, count);
        let Some(e) = self.entries.get(&b.producer_id) else {
            return first_of_epoch(b, where_);
        };
        if b.epoch < e.epoch {
            return Err(Error::ProducerFenced {
                producer_id: b.producer_id,
                epoch: b.epoch,
                current_epoch: e.epoch,
                context: format!("partition {where_}"),
            });
        }
        if b.epoch > e.epoch {
            return first_of_epoch(b, where_);
        }
        for r in &e.recent {
            if in_range(b.base_sequence, r) && in_range(last, r) {
                let skip = seq_distance(r.first, b.base_sequence);
                return Ok(Check::Duplicate {
                    offset: r.offset + skip as u64,
                });
            }
        }
        let expected = e.last_sequence().map_or(0, next_sequence);
        if b.base_sequence != expected {
            return Err(Error::OutOfOrderSequence {
                producer_id: b.producer_id,
                partition: where_.to_owned(),
                expected,
                got: b.base_sequence,
            });
        }
        Ok(Check::Append)
    }

    /// Records an append of sequences `first..=last` at offsets from
    /// `offset`. Consecutive appends of one producer extend its newest
    /// range when they continue it, as they share an on-disk batch.
    pub(crate) fn record(&mut self, b: ProducerBatch, last: i32, offset: u64, now_ms: i64) {
        let e = self
            .entries
            .entry(b.producer_id)
            .or_insert_with(|| ProducerEntry {
                producer_id: b.producer_id,
                epoch: b.epoch,
                recent: VecDeque::new(),
                last_append_ms: now_ms,
            });
        if b.epoch != e.epoch {
            e.epoch = b.epoch;
            e.recent.clear();
        }
        e.last_append_ms = e.last_append_ms.max(now_ms);
        e.recent.push_back(SeqRange {
            first: b.base_sequence,
            last,
            offset,
        });
        if e.recent.len() > CACHED_BATCHES {
            e.recent.pop_front();
        }
    }

    /// Replays one batch header found in the log.
    pub(crate) fn replay(&mut self, h: &BatchHeader) {
        if h.producer_id < 0 || h.base_sequence < 0 {
            return;
        }
        let b = ProducerBatch {
            producer_id: h.producer_id,
            epoch: h.producer_epoch,
            base_sequence: h.base_sequence,
        };
        if let Some(e) = self.entries.get(&b.producer_id) {
            if b.epoch < e.epoch {
                return;
            }
        }
        // `lastOffsetDelta`, not the count: compaction keeps the first and
        // the delta of the batches it rewrites.
        let last = last_sequence(h.base_sequence, h.last_offset_delta as u32 + 1);
        self.record(b, last, h.base_offset as u64, h.max_timestamp);
    }

    /// Forgets producers idle longer than [`PRODUCER_EXPIRY_MS`].
    pub(crate) fn expire(&mut self, now_ms: i64) {
        self.entries
            .retain(|_, e| e.last_append_ms.saturating_add(PRODUCER_EXPIRY_MS) >= now_ms);
    }

    pub(crate) fn snapshot(&self, offset: u64) -> ProducerSnapshot {
        let mut producers: Vec<ProducerEntry> = self.entries.values().cloned().collect();
        producers.sort_by_key(|e| e.producer_id);
        ProducerSnapshot { offset, producers }
    }

    pub(crate) fn from_snapshot(s: &ProducerSnapshot) -> ProducerStates {
        ProducerStates {
            entries: s
                .producers
                .iter()
                .map(|e| (e.producer_id, e.clone()))
                .collect(),
        }
    }
}

/// The first append of a producer, or of a new epoch, starts at sequence 0.
fn first_of_epoch(b: ProducerBatch, where_: &str) -> Result<Check> {
    if b.base_sequence != 0 {
        return Err(Error::OutOfOrderSequence {
            producer_id: b.producer_id,
            partition: where_.to_owned(),
            expected: 0,
            got: b.base_sequence,
        });
    }
    Ok(Check::Append)
}

/// Sequences from `from` forward to `to`, across the wrap.
fn seq_distance(from: i32, to: i32) -> i64 {
    let d = to as i64 - from as i64;
    if d < 0 {
        d + i32::MAX as i64 + 1
    } else {
        d
    }
}

fn in_range(s: i32, r: &SeqRange) -> bool {
    seq_distance(r.first, s) <= seq_distance(r.first, r.last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(pid: i64, epoch: i16, seq: i32) -> ProducerBatch {
        ProducerBatch {
            producer_id: pid,
            epoch,
            base_sequence: seq,
        }
    }

    #[test]
    fn sequences_must_follow_and_retries_find_their_offsets() {
        let mut s = ProducerStates::default();
        assert_eq!(s.check(batch(7, 0, 0), 3, "t-0").unwrap(), Check::Append);
        s.record(batch(7, 0, 0), 2, 100, 0);
        assert_eq!(s.check(batch(7, 0, 3), 1, "t-0").unwrap(), Check::Append);
        s.record(batch(7, 0, 3), 3, 200, 0);
        // A retry of the first append, or of part of it.
        assert_eq!(
            s.check(batch(7, 0, 0), 3, "t-0").unwrap(),
            Check::Duplicate { offset: 100 }
        );
        assert_eq!(
            s.check(batch(7, 0, 1), 2, "t-0").unwrap(),
            Check::Duplicate { offset: 101 }
        );
        // A gap.
        let err = s.check(batch(7, 0, 9), 1, "t-0").unwrap_err();
        assert!(
            matches!(
                err,
                Error::OutOfOrderSequence {
                    expected: 4,
                    got: 9,
                    ..
                }
            ),
            "{err}"
        );
        // An older epoch is fenced; a newer one starts at 0.
        s.record(batch(7, 1, 0), 0, 300, 0);
        assert!(matches!(
            s.check(batch(7, 0, 4), 1, "t-0").unwrap_err(),
            Error::ProducerFenced { .. }
        ));
        assert!(s.check(batch(7, 2, 5), 1, "t-0").is_err());
        assert_eq!(s.check(batch(7, 2, 0), 1, "t-0").unwrap(), Check::Append);
    }

    #[test]
    fn only_the_last_five_appends_are_remembered() {
        let mut s = ProducerStates::default();
        for i in 0..8 {
            s.record(batch(1, 0, i), i, 10 * i as u64, 0);
        }
        assert_eq!(
            s.check(batch(1, 0, 3), 1, "t-0").unwrap(),
            Check::Duplicate { offset: 30 }
        );
        assert!(matches!(
            s.check(batch(1, 0, 2), 1, "t-0").unwrap_err(),
            Error::OutOfOrderSequence { .. }
        ));
    }

    #[test]
    fn sequences_wrap_after_i32_max() {
        assert_eq!(next_sequence(i32::MAX), 0);
        assert_eq!(last_sequence(i32::MAX - 1, 4), 1);
        let mut s = ProducerStates::default();
        s.record(batch(1, 0, i32::MAX - 1), 1, 50, 0);
        assert_eq!(
            s.check(batch(1, 0, i32::MAX), 2, "t-0").unwrap(),
            Check::Duplicate { offset: 51 }
        );
        assert_eq!(s.check(batch(1, 0, 2), 1, "t-0").unwrap(), Check::Append);
    }
}
