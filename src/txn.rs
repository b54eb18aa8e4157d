//! The transaction coordinator's state: one entry per transactional id, in
//! an internal partition log `__transaction_state-0`, replayed into memory
//! at open — as Kafka keeps it.
//!
//! # Protocol
//!
//! A transactional producer, identified by its `transactional_id`:
//!
//! 1. **Init** (`Log::producer`): the coordinator bumps the id's epoch (a
//!    new producer id the first time), which fences every older instance,
//!    and ends a transaction the previous instance left open — aborted, or
//!    completed if it had already decided to commit.
//! 2. **Add partitions / offsets**: before the producer first writes to a
//!    partition in a transaction, the coordinator records it (state
//!    `Ongoing`), so that whatever happens next, it knows where to write
//!    markers. `send_offsets_to_transaction` records consumer-group offsets
//!    the same way.
//! 3. **End**: `PrepareCommit` or `PrepareAbort` is appended — for a commit,
//!    that record *is* the commit point — then a commit or abort marker (a
//!    control batch) is written to every partition of the transaction, the
//!    offsets are committed to the group (on commit), and `CompleteCommit`
//!    or `CompleteAbort` is appended.
//!
//! At open, the coordinator finishes what a crash interrupted: `Ongoing`
//! and `PrepareAbort` are aborted, `PrepareCommit` is committed. Markers are
//! written only to partitions whose producer state still shows the
//! transaction open, so finishing twice writes nothing twice. Transactions
//! open longer than their timeout are aborted by the background thread with
//! a bumped epoch, which fences the producer that let them time out.
//!
//! Records follow the log's `SyncPolicy`; under `SyncPolicy::Always` each
//! state change is fsynced before the coordinator acts on it. The store is
//! kept small like the offset store: after enough records it rewrites the
//! live states into a fresh segment, syncs it, and deletes older segments.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::config::SyncPolicy;
use crate::error::{Error, Result};
use crate::format::RecordParts;
use crate::storage::{now_ms, PartitionLog};

/// Name of the internal topic (reserved: users cannot create it).
pub(crate) const TXN_TOPIC: &str = "__transaction_state";
/// Rewrite the live states once this many records were appended since the
/// last rewrite and they outnumber the live states twice.
const SNAPSHOT_MIN_RECORDS: u64 = 10_000;

/// Where a transactional id's current transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum TxnStatus {
    /// No transaction open.
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
}

/// A transactional id's state, as each record of the store carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TxnState {
    pub producer_id: i64,
    pub epoch: i16,
    pub status: TxnStatus,
    /// `(topic, partition)` written in the open transaction.
    pub partitions: BTreeSet<(String, u32)>,
    /// `(group, topic, partition, offset)` to commit with it.
    pub offsets: Vec<(String, String, u32, u64)>,
    /// When the transaction started (ms since the epoch).
    pub started_ms: i64,
    pub timeout_ms: u64,
}

impl TxnState {
    /// Whether a transaction is open or being ended.
    pub(crate) fn is_open(&self) -> bool {
        matches!(
            self.status,
            TxnStatus::Ongoing | TxnStatus::PrepareCommit | TxnStatus::PrepareAbort
        )
    }
}

/// Decodes one record of the store: the transactional id and its state,
/// or why the record is unreadable.
pub(crate) fn decode_record<'k>(
    key: Option<&'k [u8]>,
    value: Option<&[u8]>,
) -> std::result::Result<(&'k str, TxnState), String> {
    let id = key
        .and_then(|k| std::str::from_utf8(k).ok())
        .ok_or("unreadable transactional id")?;
    let state: TxnState = serde_json::from_slice(value.unwrap_or_default())
        .map_err(|e| format!("unreadable transaction state: {e}"))?;
    Ok((id, state))
}

pub(crate) struct TxnStore {
    log: Arc<PartitionLog>,
    sync: SyncPolicy,
    state: Mutex<StoreState>,
}

struct StoreState {
    txns: HashMap<String, TxnState>,
    records_since_snapshot: u64,
}

impl TxnStore {
    /// Replays the store's log into memory.
    pub(crate) fn open(log: Arc<PartitionLog>, sync: SyncPolicy) -> Result<TxnStore> {
        let mut txns = HashMap::new();
        let mut next = log.start_offset();
        let end = log.end_offset();
        let mut records = 0u64;
        while next < end {
            let batch = log.read(next, 4096)?;
            let Some(last) = batch.last() else { break };
            next = last.offset() + 1;
            for m in &batch {
                records += 1;
                let (id, state) = decode_record(m.key(), m.value())
                    .map_err(|why| Error::corrupt(log.dir(), m.offset(), why))?;
                txns.insert(id.to_owned(), state);
            }
        }
        Ok(TxnStore {
            log,
            sync,
            state: Mutex::new(StoreState {
                txns,
                records_since_snapshot: records,
            }),
        })
    }

    pub(crate) fn log(&self) -> &Arc<PartitionLog> {
        &self.log
    }

    /// Runs `f` on the store's state under its lock: transitions of one
    /// transactional id never interleave.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut TxnTable<'_>) -> Result<T>) -> Result<T> {
        let mut st = self.state.lock();
        let mut table = TxnTable {
            store: self,
            st: &mut st,
        };
        f(&mut table)
    }

    /// Transactional ids whose transaction is still open (at open: to be
    /// finished).
    pub(crate) fn open_transactions(&self) -> Vec<String> {
        let st = self.state.lock();
        let mut ids: Vec<String> = st
            .txns
            .iter()
            .filter(|(_, t)| t.is_open())
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Transactional ids whose `Ongoing` transaction is older than its
    /// timeout at `now_ms`.
    pub(crate) fn expired(&self, now_ms: i64) -> Vec<String> {
        let st = self.state.lock();
        st.txns
            .iter()
            .filter(|(_, t)| {
                t.status == TxnStatus::Ongoing
                    && t.started_ms
                        .saturating_add(t.timeout_ms.min(i64::MAX as u64) as i64)
                        < now_ms
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn append(&self, id: &str, state: &TxnState) -> Result<()> {
        let value = serde_json::to_vec(state).expect("a transaction state serializes");
        let end = self.log.append(
            [(
                RecordParts::new(Some(id.as_bytes()), Some(&value), &[]),
                now_ms(),
            )],
            |_, _| {},
        )?;
        if self.sync == SyncPolicy::Always {
            self.log.sync_to(end)?;
        }
        Ok(())
    }
}

/// The store's state, locked (see [`TxnStore::with`]).
pub(crate) struct TxnTable<'a> {
    store: &'a TxnStore,
    st: &'a mut StoreState,
}

impl TxnTable<'_> {
    pub(crate) fn get(&self, id: &str) -> Option<&TxnState> {
        self.st.txns.get(id)
    }

    /// Durably records `state` as `id`'s, then keeps it in memory.
    pub(crate) fn put(&mut self, id: &str, state: TxnState) -> Result<()> {
        self.store.append(id, &state)?;
        self.st.txns.insert(id.to_owned(), state);
        self.st.records_since_snapshot += 1;
        let live = self.st.txns.len() as u64;
        if self.st.records_since_snapshot >= SNAPSHOT_MIN_RECORDS.max(2 * live) {
            self.snapshot()?;
        }
        Ok(())
    }

    /// Rewrites every live state into a fresh segment, syncs it, and drops
    /// the older segments (a crash before the drop replays old records and
    /// then the rewrite, which ends in the same state).
    fn snapshot(&mut self) -> Result<()> {
        let log = &self.store.log;
        let base = log.roll_now()?;
        let mut ids: Vec<(&String, &TxnState)> = self.st.txns.iter().collect();
        ids.sort_by(|a, b| a.0.cmp(b.0));
        for (id, state) in ids {
            self.store.append(id, state)?;
        }
        log.sync()?;
        log.delete_before(base)?;
        self.st.records_since_snapshot = self.st.txns.len() as u64;
        Ok(())
    }
}
