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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::cluster::{Acks, ClusterLink};
use crate::config::SyncPolicy;
use crate::error::{Error, Result};
use crate::format::RecordParts;
use crate::log::{read_meta, write_meta};
use crate::metrics::AppendTimer;
use crate::record::TopicPartition;
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
    /// On a cluster: appends go to the state topic's leader with
    /// `Acks::All`.
    link: Option<Arc<ClusterLink>>,
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
            link: None,
        })
    }

    /// The store of a cluster: replayed from `log` (the state topic's
    /// leader), written through `link`.
    pub(crate) fn open_replicated(
        log: Arc<PartitionLog>,
        link: Arc<ClusterLink>,
    ) -> Result<TxnStore> {
        let mut store = TxnStore::open(log, SyncPolicy::Never)?;
        store.link = Some(link);
        Ok(store)
    }

    pub(crate) fn log(&self) -> &Arc<PartitionLog> {
        &self.log
    }

    /// The log appends go to now.
    fn current_log(&self) -> Arc<PartitionLog> {
        self.link
            .as_ref()
            .and_then(|l| l.read_log(0))
            .unwrap_or_else(|| Arc::clone(&self.log))
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
        let record = [(
            RecordParts::new(Some(id.as_bytes()), Some(&value), &[]),
            now_ms(),
        )];
        if let Some(link) = &self.link {
            return link.append(0, Acks::All, record, |_, _| {}, AppendTimer::start());
        }
        let end = self.log.append(record, |_, _| {})?;
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
        let log = self.store.current_log();
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

/// What the coordinator needs from the log or cluster it serves.
pub(crate) trait TxnHost {
    /// A producer id never handed out before.
    fn next_producer_id(&self) -> Result<i64>;

    /// Ends `producer_id`'s transaction on `topic`-`partition` with a
    /// commit or abort marker, as durable as the host's appends are when
    /// this returns (fsynced under `SyncPolicy::Always`; on a cluster,
    /// acknowledged by the in-sync replicas). A partition with no open
    /// transaction of the producer (marked before a crash or failure) gets
    /// no second marker, but what it holds is made as durable; a partition
    /// of a deleted topic is skipped.
    fn write_marker(
        &self,
        topic: &str,
        partition: u32,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    ) -> Result<()>;

    /// Commits consumer-group offsets (a committed transaction's).
    fn commit_offsets(&self, group: &str, offsets: &[(TopicPartition, Option<u64>)]) -> Result<()>;
}

/// Producer ids reserved on disk at a time.
const PRODUCER_ID_BLOCK: i64 = 1000;

#[derive(Serialize, Deserialize)]
struct ProducerIdsFile {
    /// Every id below this may have been handed out.
    reserved_until: i64,
}

/// Producer ids, handed out from blocks reserved durably in a file, so no
/// id is reused after a crash.
pub(crate) struct ProducerIds {
    path: PathBuf,
    /// `(next, end of the block reserved on disk)`.
    ids: Mutex<(i64, i64)>,
}

impl ProducerIds {
    pub(crate) fn open(path: PathBuf) -> Result<ProducerIds> {
        let next = read_meta::<ProducerIdsFile>(&path)?.map_or(0, |f| f.reserved_until);
        Ok(ProducerIds {
            path,
            ids: Mutex::new((next, next)),
        })
    }

    pub(crate) fn next(&self) -> Result<i64> {
        let mut ids = self.ids.lock();
        if ids.0 == ids.1 {
            // Reserve the next block durably before handing any out.
            let until = ids.1 + PRODUCER_ID_BLOCK;
            write_meta(
                &self.path,
                &ProducerIdsFile {
                    reserved_until: until,
                },
            )?;
            ids.1 = until;
        }
        ids.0 += 1;
        Ok(ids.0 - 1)
    }
}

/// A transactional id's producer: `(producer id, epoch)`.
pub(crate) type ProducerKey = (i64, i16);

/// The coordinator's operations (see the module docs for the protocol).
/// Each runs under the store's lock, so transitions never interleave; the
/// lock is held while markers are written and acknowledged.
impl TxnStore {
    /// Initialises `txn_id`'s producer: bumps its epoch (fencing every
    /// older instance) and ends what the previous instance left open.
    /// Returns the new producer id and epoch.
    pub(crate) fn init_producer(
        &self,
        host: &dyn TxnHost,
        txn_id: &str,
        timeout_ms: u64,
    ) -> Result<ProducerKey> {
        self.with(|table| {
            let state = match table.get(txn_id).cloned() {
                Some(old) => {
                    let state = bump_epoch(host, old)?;
                    if state.is_open() {
                        let commit = state.status == TxnStatus::PrepareCommit;
                        table.finish(host, txn_id, state.clone(), commit)?;
                    }
                    state
                }
                None => TxnState {
                    producer_id: host.next_producer_id()?,
                    epoch: 0,
                    status: TxnStatus::Empty,
                    partitions: Default::default(),
                    offsets: Vec::new(),
                    started_ms: 0,
                    timeout_ms,
                },
            };
            // An epoch that overflowed with a transaction open got a new id
            // only now that the transaction is finished.
            let state = if state.epoch == i16::MAX {
                bump_epoch(
                    host,
                    TxnState {
                        status: TxnStatus::Empty,
                        ..state
                    },
                )?
            } else {
                state
            };
            let fresh = TxnState {
                status: TxnStatus::Empty,
                partitions: Default::default(),
                offsets: Vec::new(),
                timeout_ms,
                ..state
            };
            let key = (fresh.producer_id, fresh.epoch);
            table.put(txn_id, fresh)?;
            Ok(key)
        })
    }

    /// Adds partitions and group offsets to `txn_id`'s transaction (state
    /// `Ongoing` from the first addition on).
    pub(crate) fn add(
        &self,
        txn_id: &str,
        producer: ProducerKey,
        partitions: &[(String, u32)],
        offsets: &[(String, String, u32, u64)],
    ) -> Result<()> {
        self.with(|table| {
            let mut state = table.current(txn_id, producer)?;
            match state.status {
                TxnStatus::PrepareCommit | TxnStatus::PrepareAbort => {
                    return Err(Error::InvalidTxnState {
                        transactional_id: txn_id.to_owned(),
                        reason: "the transaction is being ended: commit or abort it again to \
                                 finish"
                            .into(),
                    });
                }
                TxnStatus::Ongoing => {
                    let new_partitions = partitions.iter().any(|p| !state.partitions.contains(p));
                    if !new_partitions && offsets.is_empty() {
                        return Ok(());
                    }
                }
                _ => {
                    state.status = TxnStatus::Ongoing;
                    state.started_ms = now_ms();
                }
            }
            state.partitions.extend(partitions.iter().cloned());
            state.offsets.extend(offsets.iter().cloned());
            table.put(txn_id, state)
        })
    }

    /// Commits or aborts `txn_id`'s transaction. A transaction whose end
    /// failed half-way (a marker not acknowledged) is finished the way it
    /// was decided; asking for the other outcome then fails with
    /// `InvalidTxnState` after finishing it. `retry` says the producer's
    /// previous end of this transaction failed: if the coordinator finished
    /// it meanwhile, its outcome is reported the same way.
    pub(crate) fn end(
        &self,
        host: &dyn TxnHost,
        txn_id: &str,
        producer: ProducerKey,
        commit: bool,
        retry: bool,
    ) -> Result<()> {
        self.with(|table| {
            let state = table.current(txn_id, producer)?;
            let (decided, finished) = match state.status {
                TxnStatus::Ongoing => (commit, false),
                TxnStatus::PrepareCommit => (true, false),
                TxnStatus::PrepareAbort => (false, false),
                TxnStatus::CompleteCommit if retry => (true, true),
                TxnStatus::CompleteAbort if retry => (false, true),
                // Nothing was sent: nothing to end.
                _ => return Ok(()),
            };
            if !finished {
                table.finish(host, txn_id, state, decided)?;
            }
            if decided != commit {
                return Err(Error::InvalidTxnState {
                    transactional_id: txn_id.to_owned(),
                    reason: format!(
                        "the transaction had already been decided; it ended {}",
                        if decided { "committed" } else { "aborted" }
                    ),
                });
            }
            Ok(())
        })
    }

    /// Transactional ids whose transaction is open, with their producer.
    pub(crate) fn open_transactions(&self) -> Vec<(String, ProducerKey)> {
        let st = self.state.lock();
        let mut ids: Vec<(String, ProducerKey)> = st
            .txns
            .iter()
            .filter(|(_, t)| t.is_open())
            .map(|(id, t)| (id.clone(), (t.producer_id, t.epoch)))
            .collect();
        ids.sort();
        ids
    }

    /// Finishes the transactions `open` lists (found open when the log or
    /// cluster opened: their producers are gone) that are still open under
    /// the same producer: `Ongoing` and `PrepareAbort` abort,
    /// `PrepareCommit` commits.
    pub(crate) fn finish_interrupted(
        &self,
        host: &dyn TxnHost,
        open: &[(String, ProducerKey)],
    ) -> Result<()> {
        for (id, producer) in open {
            self.with(|table| {
                let Some(state) = table.get(id).cloned() else {
                    return Ok(());
                };
                if !state.is_open() || (state.producer_id, state.epoch) != *producer {
                    return Ok(()); // finished, or a new producer took over
                }
                let commit = state.status == TxnStatus::PrepareCommit;
                table.finish(host, id, state, commit)
            })?;
        }
        Ok(())
    }

    /// Finishes transactions whose end was decided but failed half-way
    /// (on a cluster: a marker's partition had no leader or too few
    /// replicas); returns the first error, after trying every one.
    pub(crate) fn finish_decided(&self, host: &dyn TxnHost) -> Result<()> {
        let decided: Vec<String> = {
            let st = self.state.lock();
            st.txns
                .iter()
                .filter(|(_, t)| {
                    matches!(t.status, TxnStatus::PrepareCommit | TxnStatus::PrepareAbort)
                })
                .map(|(id, _)| id.clone())
                .collect()
        };
        let mut first_err = None;
        for id in decided {
            let r = self.with(|table| {
                let Some(state) = table.get(&id).cloned() else {
                    return Ok(());
                };
                let commit = match state.status {
                    TxnStatus::PrepareCommit => true,
                    TxnStatus::PrepareAbort => false,
                    _ => return Ok(()), // finished meanwhile
                };
                table.finish(host, &id, state, commit)
            });
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Aborts transactions open longer than their timeout, fencing their
    /// producers with a new epoch.
    pub(crate) fn abort_expired(&self, host: &dyn TxnHost) -> Result<()> {
        for id in self.expired(now_ms()) {
            self.with(|table| {
                let Some(state) = table.get(&id).cloned() else {
                    return Ok(());
                };
                if state.status != TxnStatus::Ongoing {
                    return Ok(()); // ended meanwhile
                }
                let state = bump_epoch(host, state)?;
                table.finish(host, &id, state, false)
            })?;
        }
        Ok(())
    }
}

impl TxnTable<'_> {
    /// `txn_id`'s state if `producer` is its current producer, else why
    /// not.
    fn current(&self, txn_id: &str, (producer_id, epoch): ProducerKey) -> Result<TxnState> {
        let state = self.get(txn_id).ok_or_else(|| Error::InvalidTxnState {
            transactional_id: txn_id.to_owned(),
            reason: "unknown transactional id".into(),
        })?;
        if state.producer_id != producer_id || state.epoch != epoch {
            return Err(Error::ProducerFenced {
                producer_id,
                epoch,
                current_epoch: state.epoch,
                context: format!(
                    "transactional id {txn_id:?} now belongs to producer {} epoch {}",
                    state.producer_id, state.epoch
                ),
            });
        }
        Ok(state.clone())
    }

    /// Ends `state`'s transaction: records the decision, writes a marker to
    /// each of its partitions, commits its offsets on a commit, and records
    /// the end. A failure leaves the decision recorded, to be finished
    /// again (markers are never written twice).
    fn finish(
        &mut self,
        host: &dyn TxnHost,
        id: &str,
        mut state: TxnState,
        commit: bool,
    ) -> Result<()> {
        state.status = if commit {
            TxnStatus::PrepareCommit
        } else {
            TxnStatus::PrepareAbort
        };
        self.put(id, state.clone())?;
        for (topic, p) in &state.partitions {
            host.write_marker(topic, *p, state.producer_id, state.epoch, commit)?;
        }
        if commit {
            let mut by_group: BTreeMap<&str, Vec<(TopicPartition, Option<u64>)>> = BTreeMap::new();
            for (group, topic, p, offset) in &state.offsets {
                by_group
                    .entry(group)
                    .or_default()
                    .push((TopicPartition::new(topic.clone(), *p), Some(*offset)));
            }
            for (group, offsets) in by_group {
                host.commit_offsets(group, &offsets)?;
            }
        }
        state.status = if commit {
            TxnStatus::CompleteCommit
        } else {
            TxnStatus::CompleteAbort
        };
        state.partitions.clear();
        state.offsets.clear();
        self.put(id, state)
    }
}

/// The state with the next epoch (a new producer id when the epoch would
/// overflow, as Kafka does).
fn bump_epoch(host: &dyn TxnHost, mut state: TxnState) -> Result<TxnState> {
    if state.epoch == i16::MAX {
        // The open transaction's markers go out under the old id.
        if state.is_open() {
            return Ok(state);
        }
        state.producer_id = host.next_producer_id()?;
        state.epoch = 0;
    } else {
        state.epoch += 1;
    }
    Ok(state)
}
