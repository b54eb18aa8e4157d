//! Topic and partition handles, and partitioning.
//!
//! `Topic::append` picks a partition (explicit, custom [`Partitioner`],
//! murmur2 of the key like the Java client, or round robin for unkeyed
//! records), validates the record, and hands it to that partition's log.

mod partitions;

use std::borrow::Borrow;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::cluster::{Acks, ClusterLink};
use crate::config::{SyncPolicy, TopicConfig};
use crate::error::{Error, Result};
use crate::format::{ProducerBatch, RecordParts};
use crate::metrics::AppendTimer;
use crate::record::{Message, Record, RecordMetadata};
use crate::storage::{now_ms, PartitionLog};
pub(crate) use partitions::{Partitions, View};

/// Chooses the partition of a record that has no explicit partition.
///
/// ```
/// struct ByLength;
/// impl brook::Partitioner for ByLength {
///     fn partition(&self, _key: Option<&[u8]>, value: &[u8], partitions: u32) -> u32 {
///         value.len() as u32 % partitions
///     }
/// }
/// ```
pub trait Partitioner: Send + Sync + 'static {
    /// Returns a partition in `0..partitions`; anything else makes the
    /// append fail with [`Error::UnknownPartition`].
    fn partition(&self, key: Option<&[u8]>, value: &[u8], partitions: u32) -> u32;
}

/// Kafka's `Utils.murmur2`: the hash the Java client's default partitioner
/// applies to keys (seed `0x9747b28c`).
pub fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = 0x9747_b28c ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= (tail[2] as u32) << 16;
    }
    if tail.len() >= 2 {
        h ^= (tail[1] as u32) << 8;
    }
    if !tail.is_empty() {
        h ^= tail[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner gives a key.
pub(crate) fn key_partition(key: &[u8], partitions: u32) -> u32 {
    ((murmur2(key) as u32) & 0x7fff_ffff) % partitions
}

/// Kafka's topic name rule: 1-249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub(crate) fn validate_topic_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name == "." || name == ".." {
        Some("'.' and '..' are not allowed")
    } else if name.len() > 249 {
        Some("longer than 249 characters")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        Some("only ASCII letters, digits, '.', '_' and '-' are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidTopicName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Shared state of one topic.
pub(crate) struct TopicInner {
    pub name: Arc<str>,
    /// Copy of `config.max_record_bytes` (fixed for a topic's life).
    max_record_bytes: usize,
    pub config: RwLock<TopicConfig>,
    pub partitions: Partitions,
    pub deleted: AtomicBool,
    pub sync: SyncPolicy,
    /// Copy of `config.cleanup_policy.compacts()`: records need keys.
    compacted: bool,
    round_robin: AtomicU32,
    /// On a cluster: the replicated partitions behind `partitions` (which
    /// then holds each partition's current leader log).
    pub link: Option<Arc<ClusterLink>>,
}

impl TopicInner {
    pub(crate) fn new(
        name: Arc<str>,
        config: TopicConfig,
        partitions: Partitions,
        sync: SyncPolicy,
    ) -> Self {
        TopicInner {
            name,
            max_record_bytes: config.max_record_bytes,
            compacted: config.cleanup_policy.compacts(),
            config: RwLock::new(config),
            partitions,
            deleted: AtomicBool::new(false),
            sync,
            round_robin: AtomicU32::new(0),
            link: None,
        }
    }
}

/// A handle to a topic: appends records and opens partitions. Cheap to clone.
#[derive(Clone)]
pub struct Topic {
    inner: Arc<TopicInner>,
    partitioner: Option<Arc<dyn Partitioner>>,
    acks: Acks,
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Topic")
            .field("name", &self.inner.name)
            .field("partitions", &self.partition_count())
            .field("custom_partitioner", &self.partitioner.is_some())
            .finish()
    }
}

impl Topic {
    pub(crate) fn new(inner: Arc<TopicInner>) -> Topic {
        Topic {
            inner,
            partitioner: None,
            acks: Acks::default(),
        }
    }

    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Number of partitions now.
    pub fn partition_count(&self) -> u32 {
        self.inner.partitions.len() as u32
    }

    /// The topic's configuration.
    pub fn config(&self) -> TopicConfig {
        self.inner.config.read().clone()
    }

    /// The same topic with a custom partitioner for records without an
    /// explicit partition.
    pub fn with_partitioner(&self, partitioner: impl Partitioner) -> Topic {
        Topic {
            inner: Arc::clone(&self.inner),
            partitioner: Some(Arc::new(partitioner)),
            acks: self.acks,
        }
    }

    /// The same topic, acknowledging appends as `acks` says (on a
    /// [`Cluster`](crate::Cluster); default [`Acks::All`]). On a single
    /// [`Log`](crate::Log) there is one replica and this changes nothing.
    pub fn with_acks(&self, acks: Acks) -> Topic {
        Topic {
            inner: Arc::clone(&self.inner),
            partitioner: self.partitioner.clone(),
            acks,
        }
    }

    /// A handle to one partition, for reading.
    pub fn partition(&self, partition: u32) -> Result<Partition> {
        self.check_live()?;
        let parts = self.inner.partitions.view();
        let log = parts
            .get(partition as usize)
            .ok_or_else(|| self.unknown_partition(partition, parts.len() as u32))?;
        Ok(Partition {
            log: Arc::clone(log),
            link: self.inner.link.clone().map(|l| (l, partition)),
        })
    }

    /// Appends a keyed record; the key picks the partition.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let log = brook::Log::open(dir.path())?;
    /// let orders = log.create_topic("orders", brook::TopicConfig::default().partitions(4))?;
    /// let meta = orders.append("alice", "ordered a book")?;
    /// assert_eq!(meta.offset, 0);
    /// # Ok::<(), brook::Error>(())
    /// ```
    pub fn append(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<RecordMetadata> {
        let parts = RecordParts::new(Some(key.as_ref()), Some(value.as_ref()), &[]);
        self.append_one(parts, None, None)
    }

    /// Appends a [`Record`] (key, headers, partition and timestamp optional).
    pub fn send(&self, record: Record) -> Result<RecordMetadata> {
        let parts = RecordParts::new(
            record.key.as_deref(),
            record.value.as_deref(),
            &record.headers,
        );
        self.append_one(parts, record.partition, record.timestamp)
    }

    fn append_one(
        &self,
        parts: RecordParts<'_>,
        partition: Option<u32>,
        timestamp: Option<i64>,
    ) -> Result<RecordMetadata> {
        let started = AppendTimer::start();
        self.check_live()?;
        let ts = self.check_record(&parts, timestamp)?;
        if let Some(link) = &self.inner.link {
            let n = self.partition_count();
            let p = match partition {
                Some(p) => p,
                None => self.choose(parts.key(), parts.value(), n, None),
            };
            if p >= n {
                return Err(self.unknown_partition(p, n));
            }
            let mut offset = 0;
            link.append(p, self.acks, [(parts, ts)], |o, _| offset = o, started)?;
            return Ok(RecordMetadata {
                partition: p,
                offset,
                timestamp: ts,
            });
        }
        // A local topic's view holds no lock, so the fsync below may run
        // under it.
        let logs = self.inner.partitions.view();
        let n = logs.len() as u32;
        let p = match partition {
            Some(p) => p,
            None => self.choose(parts.key(), parts.value(), n, None),
        };
        let log = logs
            .get(p as usize)
            .ok_or_else(|| self.unknown_partition(p, n))?;
        let mut offset = 0;
        let end = log.append([(parts, ts)], |o, _| offset = o)?;
        if self.inner.sync == SyncPolicy::Always {
            log.sync_to(end)?;
        }
        log.record_append_latency(started);
        Ok(RecordMetadata {
            partition: p,
            offset,
            timestamp: ts,
        })
    }

    /// Appends records in order; records for one partition keep their order
    /// and unkeyed ones all go to one partition per call (sticky). Every
    /// record is checked before any is written.
    ///
    /// Takes owned records or references (`&records` appends a `Vec<Record>`
    /// without consuming or cloning it).
    pub fn send_batch<R: Borrow<Record>>(
        &self,
        records: impl IntoIterator<Item = R>,
    ) -> Result<Vec<RecordMetadata>> {
        let started = AppendTimer::start();
        self.check_live()?;
        let records: Vec<R> = records.into_iter().collect();
        if let Some(link) = &self.inner.link {
            return self.send_replicated(link, &records, started);
        }
        let logs = self.inner.partitions.view();
        let plan = self.plan(&records, logs.len() as u32)?;
        let mut metas: Vec<RecordMetadata> = Vec::with_capacity(records.len());
        let mut to_sync = Vec::new();
        if let Some(p) = plan.single {
            // One partition (the common case): records in order, no grouping.
            let log = &logs[p as usize];
            let end = log.append(plan.entries.iter().copied(), |_, _| {})?;
            // `append` gives the records consecutive offsets ending at `end`.
            let first = end - plan.entries.len() as u64;
            metas.extend(
                plan.entries
                    .iter()
                    .zip(first..)
                    .map(|(&(_, timestamp), offset)| RecordMetadata {
                        partition: p,
                        offset,
                        timestamp,
                    }),
            );
            to_sync.push((log, end));
        } else if !records.is_empty() {
            let targets = &plan.targets;
            let entries = &plan.entries;
            metas.resize(
                records.len(),
                RecordMetadata {
                    partition: 0,
                    offset: 0,
                    timestamp: 0,
                },
            );
            let mut order: Vec<usize> = (0..records.len()).collect();
            order.sort_by_key(|&i| targets[i]);
            for run in order.chunk_by(|&a, &b| targets[a] == targets[b]) {
                let p = targets[run[0]];
                let log = &logs[p as usize];
                let mut slots = run.iter();
                let end = log.append(run.iter().map(|&i| entries[i]), |offset, timestamp| {
                    let &i = slots.next().expect("one slot per record");
                    metas[i] = RecordMetadata {
                        partition: p,
                        offset,
                        timestamp,
                    };
                })?;
                to_sync.push((log, end));
            }
        }
        // A local topic's view holds no lock: the fsyncs may run under it.
        if self.inner.sync == SyncPolicy::Always {
            for (log, end) in &to_sync {
                log.sync_to(*end)?;
            }
        }
        // One measurement per partition the call wrote to.
        for (log, _) in &to_sync {
            log.record_append_latency(started);
        }
        Ok(metas)
    }

    /// `send_batch` on a cluster: each partition's records go to its
    /// leader, then every partition's are acknowledged.
    fn send_replicated<R: Borrow<Record>>(
        &self,
        link: &ClusterLink,
        records: &[R],
        started: AppendTimer,
    ) -> Result<Vec<RecordMetadata>> {
        let plan = self.plan(records, self.partition_count())?;
        let target = |i: usize| plan.single.unwrap_or_else(|| plan.targets[i]);
        let mut metas = vec![
            RecordMetadata {
                partition: 0,
                offset: 0,
                timestamp: 0,
            };
            records.len()
        ];
        let mut order: Vec<usize> = (0..records.len()).collect();
        order.sort_by_key(|&i| target(i));
        for run in order.chunk_by(|&a, &b| target(a) == target(b)) {
            let p = target(run[0]);
            let mut slots = run.iter();
            link.append(
                p,
                self.acks,
                run.iter().map(|&i| plan.entries[i]),
                |offset, timestamp| {
                    let &i = slots.next().expect("one slot per record");
                    metas[i] = RecordMetadata {
                        partition: p,
                        offset,
                        timestamp,
                    };
                },
                started,
            )?;
        }
        Ok(metas)
    }

    /// Checks every record and picks its partition (unkeyed records of one
    /// call share a partition). Nothing is written.
    fn plan<'r, R: Borrow<Record>>(&self, records: &'r [R], n: u32) -> Result<Plan<'r>> {
        let now = now_ms();
        let sticky = self.inner.round_robin.fetch_add(1, Ordering::Relaxed) % n;
        // With one partition and no custom partitioner every record without
        // an explicit partition goes to 0 (what `choose` returns).
        let only_zero = n == 1 && self.partitioner.is_none();
        let mut entries: Vec<(RecordParts<'_>, i64)> = Vec::with_capacity(records.len());
        let mut single: Option<u32> = None;
        let mut targets: Vec<u32> = Vec::new();
        for (i, r) in records.iter().enumerate() {
            let r = r.borrow();
            let parts = parts_of(r);
            let ts = self.check_record(&parts, r.timestamp.or(Some(now)))?;
            let p = match r.partition {
                Some(p) => p,
                None if only_zero => 0,
                None => self.choose(parts.key(), parts.value(), n, Some(sticky)),
            };
            if p >= n {
                return Err(self.unknown_partition(p, n));
            }
            match single {
                Some(s) if s == p => {}
                None if i == 0 => single = Some(p),
                _ => {
                    // The first record whose partition differs: from here
                    // on every record's partition is kept.
                    if let Some(s) = single.take() {
                        targets.reserve_exact(records.len());
                        targets.resize(i, s);
                    }
                    targets.push(p);
                }
            }
            entries.push((parts, ts));
        }
        Ok(Plan {
            entries,
            single,
            targets,
        })
    }

    /// The idempotent write path of a [`Producer`](crate::Producer): each
    /// partition's records are appended as one producer append whose fields
    /// `producer(partition)` gives; a retry of an append already written
    /// returns the original metadata. `advanced(partition, count)` is called
    /// once a partition's records are written (or found written) and, under
    /// `SyncPolicy::Always`, synced.
    pub(crate) fn send_idempotent<R: Borrow<Record>>(
        &self,
        records: &[R],
        mut producer: impl FnMut(u32) -> Result<ProducerBatch>,
        mut advanced: impl FnMut(u32, u32),
    ) -> Result<Vec<RecordMetadata>> {
        let started = AppendTimer::start();
        self.check_live()?;
        // On a cluster, each partition's records go to its current leader.
        // (Nothing is held while an append waits for the ISR: the cluster
        // repoints the handle's logs when leaders change.)
        let route = match self.inner.link.as_deref() {
            Some(link) => Route::Cluster(link),
            None => Route::Local(self.inner.partitions.view()),
        };
        let n = match &route {
            Route::Local(logs) => logs.len() as u32,
            Route::Cluster(_) => self.partition_count(),
        };
        let plan = self.plan(records, n)?;
        let entries = &plan.entries;
        let target = |i: usize| plan.single.unwrap_or_else(|| plan.targets[i]);
        let mut metas = vec![
            RecordMetadata {
                partition: 0,
                offset: 0,
                timestamp: 0,
            };
            records.len()
        ];
        let mut order: Vec<usize> = (0..records.len()).collect();
        order.sort_by_key(|&i| target(i));
        for run in order.chunk_by(|&a, &b| target(a) == target(b)) {
            let p = target(run[0]);
            let run_entries: Vec<(RecordParts<'_>, i64)> =
                run.iter().map(|&i| entries[i]).collect();
            let mut slots = run.iter();
            let on_append = |offset, timestamp| {
                let &i = slots.next().expect("one slot per record");
                metas[i] = RecordMetadata {
                    partition: p,
                    offset,
                    timestamp,
                };
            };
            let batch = producer(p)?;
            let (duplicate, log) = match &route {
                // Acknowledged by the ISR (and synced) inside.
                Route::Cluster(link) => {
                    link.append_idempotent(p, batch, &run_entries, on_append)?
                }
                Route::Local(logs) => {
                    let log = Arc::clone(&logs[p as usize]);
                    let duplicate = log.append_idempotent(batch, &run_entries, on_append)?;
                    if self.inner.sync == SyncPolicy::Always {
                        log.sync_to(log.log_end_offset())?;
                    }
                    (duplicate, log)
                }
            };
            if let Some(first) = duplicate {
                // Already written: report the records as they were stored
                // (offsets are consecutive within one producer append).
                let stored = log.read(first, run.len())?;
                for (k, &i) in run.iter().enumerate() {
                    let offset = first + k as u64;
                    let timestamp = stored
                        .iter()
                        .find(|m| m.offset() == offset)
                        .map_or(entries[i].1, |m| m.timestamp());
                    metas[i] = RecordMetadata {
                        partition: p,
                        offset,
                        timestamp,
                    };
                }
            }
            log.record_append_latency(started);
            advanced(p, run.len() as u32);
        }
        Ok(metas)
    }

    fn check_live(&self) -> Result<()> {
        if self.inner.deleted.load(Ordering::Acquire) {
            return Err(Error::UnknownTopic {
                topic: self.inner.name.to_string(),
            });
        }
        Ok(())
    }

    /// Checks size and timestamp; returns the timestamp to store.
    #[inline]
    fn check_record(&self, parts: &RecordParts<'_>, timestamp: Option<i64>) -> Result<i64> {
        let keyless = self.inner.compacted && parts.key().is_none();
        let too_large = !parts.fits(self.inner.max_record_bytes);
        let negative = matches!(timestamp, Some(ts) if ts < 0);
        if keyless || too_large || negative {
            return Err(self.record_error(parts, timestamp));
        }
        Ok(timestamp.unwrap_or_else(now_ms))
    }

    /// Why [`check_record`](Self::check_record) refused a record.
    #[cold]
    #[inline(never)]
    fn record_error(&self, parts: &RecordParts<'_>, timestamp: Option<i64>) -> Error {
        if self.inner.compacted && parts.key().is_none() {
            return Error::InvalidRecord {
                topic: self.inner.name.to_string(),
                reason: "a compacted topic needs a key on every record".into(),
            };
        }
        let max = self.inner.max_record_bytes;
        let size = parts.encoded_len(0, 0);
        if size > max {
            return Error::RecordTooLarge {
                topic: self.inner.name.to_string(),
                size,
                max,
            };
        }
        let ts = timestamp.unwrap_or_default();
        Error::InvalidRecord {
            topic: self.inner.name.to_string(),
            reason: format!("timestamp {ts} is negative (Kafka requires >= 0)"),
        }
    }

    fn choose(&self, key: Option<&[u8]>, value: Option<&[u8]>, n: u32, sticky: Option<u32>) -> u32 {
        if let Some(p) = &self.partitioner {
            return p.partition(key, value.unwrap_or(&[]), n);
        }
        if n == 1 {
            return 0;
        }
        match (key, sticky) {
            (Some(k), _) => key_partition(k, n),
            (None, Some(s)) => s,
            (None, None) => self.inner.round_robin.fetch_add(1, Ordering::Relaxed) % n,
        }
    }

    fn unknown_partition(&self, partition: u32, partitions: u32) -> Error {
        Error::UnknownPartition {
            topic: self.inner.name.to_string(),
            partition,
            partitions,
        }
    }
}

/// Where a producer's appends go.
enum Route<'a> {
    /// A log's partitions (held for the call).
    Local(View<'a>),
    /// A cluster's current leaders.
    Cluster(&'a ClusterLink),
}

/// The checked records of one call: their parts with the timestamp to
/// store, in order, and their partitions.
struct Plan<'r> {
    entries: Vec<(RecordParts<'r>, i64)>,
    /// The partition of every record, if they all go to one (`None` for
    /// no records).
    single: Option<u32>,
    /// Each record's partition when they do not all go to one; empty
    /// otherwise.
    targets: Vec<u32>,
}

#[inline]
fn parts_of(r: &Record) -> RecordParts<'_> {
    RecordParts::new(r.key.as_deref(), r.value.as_deref(), &r.headers)
}

/// A handle to one partition of a topic, for reading. Cheap to clone.
#[derive(Clone)]
pub struct Partition {
    log: Arc<PartitionLog>,
    /// On a cluster: reads follow the partition's current leader.
    link: Option<(Arc<ClusterLink>, u32)>,
}

impl fmt::Debug for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Partition({}-{})", self.log.topic, self.log.partition)
    }
}

impl Partition {
    /// The partition's log (for the fuzz entry points' reads).
    #[cfg(feature = "fuzzing")]
    pub(crate) fn log(&self) -> &Arc<PartitionLog> {
        &self.log
    }

    /// The log reads go to: on a cluster, the current leader's replica.
    fn current(&self) -> Arc<PartitionLog> {
        match &self.link {
            Some((link, p)) => link.read_log(*p).unwrap_or_else(|| Arc::clone(&self.log)),
            None => Arc::clone(&self.log),
        }
    }

    /// The topic's name.
    pub fn topic(&self) -> &str {
        &self.log.topic
    }

    /// The partition number.
    pub fn id(&self) -> u32 {
        self.log.partition
    }

    /// First offset still stored (moves forward as retention deletes segments).
    pub fn start_offset(&self) -> u64 {
        self.current().start_offset()
    }

    /// The offset the next record will get.
    pub fn end_offset(&self) -> u64 {
        self.current().end_offset()
    }

    /// Up to `max_records` messages from `from_offset` in offset order; at
    /// least one when records other than transaction markers lie between
    /// `from_offset` and `end_offset()`, none at `end_offset()`. Every
    /// record is returned, those of open and aborted transactions too
    /// (Kafka's `read_uncommitted`); transaction markers never are.
    /// Offsets outside `start_offset()..=end_offset()` are
    /// [`Error::OffsetOutOfRange`].
    pub fn read(&self, from_offset: u64, max_records: usize) -> Result<Vec<Message>> {
        self.current().read(from_offset, max_records)
    }

    /// Like [`read`](Self::read), but only records outside transactions
    /// and of committed ones, below [`last_stable_offset`](Self::last_stable_offset)
    /// (Kafka's `read_committed`).
    pub fn read_committed(&self, from_offset: u64, max_records: usize) -> Result<Vec<Message>> {
        let mut out = Vec::new();
        self.current()
            .read_with(from_offset, max_records, &mut out, true)?;
        Ok(out)
    }

    /// The first offset of the oldest transaction still open on this
    /// partition, or [`end_offset`](Self::end_offset) when none is:
    /// `ReadCommitted` readers stop here.
    pub fn last_stable_offset(&self) -> u64 {
        self.current().last_stable_offset()
    }

    /// The earliest offset whose timestamp is at least `timestamp_ms`, or
    /// `None` if every record is older.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<u64>> {
        self.current().offset_for_timestamp(timestamp_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafkas_published_vectors() {
        // Kafka's UtilsTest.testMurmur2.
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            (b"abc", 479470107),
        ];
        for (key, want) in cases {
            assert_eq!(
                murmur2(key),
                want,
                "murmur2({:?})",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn topic_names_follow_kafkas_rule() {
        for ok in ["a", "orders", "a.b_c-d", &"x".repeat(249)] {
            validate_topic_name(ok).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "a b", "ü", &"x".repeat(250)] {
            assert!(
                matches!(
                    validate_topic_name(bad),
                    Err(Error::InvalidTopicName { .. })
                ),
                "{bad:?}"
            );
        }
    }
}
