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
    /// Offset of the producer's first record in its open transaction on
    /// this partition (Kafka's `currentTxnFirstOffset`).
    #[serde(default)]
    pub txn_first_offset: Option<u64>,
}

/// A transaction that ended with an abort marker: records of its producer
/// from `first_offset` to the marker at `last_offset` are never shown to a
/// `ReadCommitted` reader (Kafka's `.txnindex` entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: u64,
    pub last_offset: u64,
}

impl AbortedTxn {
    /// Whether the batch of `producer_id` at `base_offset` belongs to it.
    pub(crate) fn covers(&self, producer_id: i64, base_offset: u64) -> bool {
        self.producer_id == producer_id
            && (self.first_offset..=self.last_offset).contains(&base_offset)
    }
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
    /// Aborted transactions, in marker order.
    aborted: Vec<AbortedTxn>,
}

/// The state as stored in a recovery checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProducerSnapshot {
    /// The state covers every batch below this offset.
    pub offset: u64,
    pub producers: Vec<ProducerEntry>,
    #[serde(default)]
    pub aborted: Vec<AbortedTxn>,
}

impl ProducerStates {
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.aborted.is_empty()
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
        let e = self.entry(b, now_ms);
        if b.attributes & crate::format::TRANSACTIONAL != 0 && e.txn_first_offset.is_none() {
            e.txn_first_offset = Some(offset);
        }
        e.recent.push_back(SeqRange {
            first: b.base_sequence,
            last,
            offset,
        });
        if e.recent.len() > CACHED_BATCHES {
            e.recent.pop_front();
        }
    }

    fn entry(&mut self, b: ProducerBatch, now_ms: i64) -> &mut ProducerEntry {
        let e = self
            .entries
            .entry(b.producer_id)
            .or_insert_with(|| ProducerEntry {
                producer_id: b.producer_id,
                epoch: b.epoch,
                recent: VecDeque::new(),
                last_append_ms: now_ms,
                txn_first_offset: None,
            });
        if b.epoch != e.epoch {
            e.epoch = b.epoch;
            e.recent.clear();
        }
        e.last_append_ms = e.last_append_ms.max(now_ms);
        e
    }

    /// Checks that a transaction marker of `producer_id` at `epoch` may be
    /// written: not from an epoch older than the partition has seen.
    pub(crate) fn check_marker(&self, producer_id: i64, epoch: i16, where_: &str) -> Result<()> {
        match self.entries.get(&producer_id) {
            Some(e) if epoch < e.epoch => Err(Error::ProducerFenced {
                producer_id,
                epoch,
                current_epoch: e.epoch,
                context: format!("transaction marker on partition {where_}"),
            }),
            _ => Ok(()),
        }
    }

    /// Whether `producer_id` has an open transaction on this partition.
    pub(crate) fn in_transaction(&self, producer_id: i64) -> bool {
        self.entries
            .get(&producer_id)
            .is_some_and(|e| e.txn_first_offset.is_some())
    }

    /// Records a transaction marker at `offset`: the producer's open
    /// transaction ends; an aborted one is remembered.
    pub(crate) fn end_transaction(
        &mut self,
        producer_id: i64,
        epoch: i16,
        offset: u64,
        commit: bool,
        now_ms: i64,
    ) {
        let b = ProducerBatch {
            producer_id,
            epoch,
            base_sequence: -1,
            attributes: 0,
        };
        let e = self.entry(b, now_ms);
        if let Some(first) = e.txn_first_offset.take() {
            if !commit {
                self.aborted.push(AbortedTxn {
                    producer_id,
                    first_offset: first,
                    last_offset: offset,
                });
            }
        }
    }

    /// The last stable offset: the first offset of the oldest open
    /// transaction, or `end` when none is open.
    pub(crate) fn last_stable_offset(&self, end: u64) -> u64 {
        self.entries
            .values()
            .filter_map(|e| e.txn_first_offset)
            .min()
            .map_or(end, |o| o.min(end))
    }

    /// Aborted transactions that end at or after `from`.
    pub(crate) fn aborted_from(&self, from: u64) -> Vec<AbortedTxn> {
        self.aborted
            .iter()
            .filter(|a| a.last_offset >= from)
            .copied()
            .collect()
    }

    /// Forgets aborted transactions wholly below `start` (deleted by
    /// retention).
    pub(crate) fn trim_aborted(&mut self, start: u64) {
        self.aborted.retain(|a| a.last_offset >= start);
    }

    /// Replays one batch found in the log (`batch`: its bytes, for the
    /// marker type of a control batch).
    pub(crate) fn replay(&mut self, h: &BatchHeader, batch: &[u8]) {
        if h.producer_id < 0 {
            return;
        }
        if h.is_control() {
            if let Some(commit) = crate::format::marker_kind(batch) {
                let stale = self
                    .entries
                    .get(&h.producer_id)
                    .is_some_and(|e| h.producer_epoch < e.epoch);
                if !stale {
                    self.end_transaction(
                        h.producer_id,
                        h.producer_epoch,
                        h.base_offset as u64,
                        commit,
                        h.max_timestamp,
                    );
                }
            }
            return;
        }
        if h.base_sequence < 0 {
            return;
        }
        let b = ProducerBatch {
            producer_id: h.producer_id,
            epoch: h.producer_epoch,
            base_sequence: h.base_sequence,
            attributes: h.attributes & (crate::format::TRANSACTIONAL | crate::format::CONTROL),
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
        // A producer with an open transaction stays: its transaction still
        // holds the last stable offset back until a marker ends it.
        self.entries.retain(|_, e| {
            e.txn_first_offset.is_some()
                || e.last_append_ms.saturating_add(PRODUCER_EXPIRY_MS) >= now_ms
        });
    }

    pub(crate) fn snapshot(&self, offset: u64) -> ProducerSnapshot {
        let mut producers: Vec<ProducerEntry> = self.entries.values().cloned().collect();
        producers.sort_by_key(|e| e.producer_id);
        ProducerSnapshot {
            offset,
            producers,
            aborted: self.aborted.clone(),
        }
    }

    pub(crate) fn from_snapshot(s: &ProducerSnapshot) -> ProducerStates {
        ProducerStates {
            entries: s
                .producers
                .iter()
                .map(|e| (e.producer_id, e.clone()))
                .collect(),
            aborted: s.aborted.clone(),
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
            attributes: 0,
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
