//! Metrics: the counters partitions keep as they work, and the snapshot
//! [`Log::metrics`](crate::Log::metrics) and
//! [`Cluster::metrics`](crate::Cluster::metrics) return.
//!
//! Counters cost the hot paths no atomic per record and little per call:
//! records and bytes appended are plain additions under the partition's
//! state lock, which the append holds anyway; a read sums the key and
//! value lengths of the messages it returns and adds its record and byte
//! counts once, with relaxed atomics. Append latency is *sampled*: one
//! append call in [`APPEND_LATENCY_SAMPLE_EVERY`] (counted per thread, the
//! first call of each thread included) reads the monotonic clock twice and
//! records into a log-scale histogram of atomic buckets. Timing every call
//! cost about 110 ns on a ~275 ns single-record append (two clock reads of
//! ~40 ns each on a VM, plus three atomics): sampled, it is lost in the
//! noise. Each group of atomics written together sits on its own cache
//! line, so readers and writers of one partition do not bounce each
//! other's lines.
//!
//! Counters start at zero when a partition is opened (they are not
//! persisted); a snapshot is a consistent view of each counter, not of
//! all of them at one instant.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::consumer::PartitionLag;
use crate::record::TopicPartition;

/// One append call in this many is timed for the append latency
/// histograms (counted per thread; the first call of each thread is
/// timed). A histogram's [`count`](LatencyHistogram::count) is the number
/// of calls timed, about `1 / APPEND_LATENCY_SAMPLE_EVERY` of the calls.
pub const APPEND_LATENCY_SAMPLE_EVERY: u32 = 64;

/// The start of an append call, if this call is one of the sampled ones.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AppendTimer(Option<Instant>);

impl AppendTimer {
    #[inline]
    pub(crate) fn start() -> AppendTimer {
        thread_local! {
            static CALLS: Cell<u32> = const { Cell::new(0) };
        }
        let n = CALLS.with(|c| {
            let n = c.get();
            c.set(n.wrapping_add(1));
            n
        });
        AppendTimer(
            n.is_multiple_of(APPEND_LATENCY_SAMPLE_EVERY)
                .then(Instant::now),
        )
    }

    /// Time since the start, for a sampled call.
    #[inline]
    pub(crate) fn elapsed(self) -> Option<Duration> {
        self.0.map(|t| t.elapsed())
    }
}

/// Buckets of a [`LatencyHistogram`]: bucket `i` counts latencies below
/// `2^i` ns (and at least `2^(i-1)` ns), the last one everything longer
/// than about 9 minutes.
pub const LATENCY_BUCKETS: usize = 40;

/// Live latency counters: log-scale buckets of atomics.
#[repr(align(64))]
pub(crate) struct LatencyCounters {
    buckets: [AtomicU64; LATENCY_BUCKETS],
    sum_ns: AtomicU64,
    max_ns: AtomicU64,
}

impl Default for LatencyCounters {
    fn default() -> Self {
        LatencyCounters {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
            max_ns: AtomicU64::new(0),
        }
    }
}

impl LatencyCounters {
    pub(crate) fn record(&self, elapsed: Duration) {
        let ns = elapsed.as_nanos().min(u64::MAX as u128) as u64;
        let bucket = ((u64::BITS - ns.leading_zeros()) as usize).min(LATENCY_BUCKETS - 1);
        self.buckets[bucket].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(ns, Relaxed);
        self.max_ns.fetch_max(ns, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> LatencyHistogram {
        LatencyHistogram {
            buckets: self.buckets.iter().map(|b| b.load(Relaxed)).collect(),
            sum_ns: self.sum_ns.load(Relaxed),
            max_ns: self.max_ns.load(Relaxed),
        }
    }
}

/// Counters bumped by reads and fsyncs (appends count under the state
/// lock instead).
#[derive(Default)]
#[repr(align(64))]
pub(crate) struct ReadCounters {
    pub records_out: AtomicU64,
    pub bytes_out: AtomicU64,
}

#[derive(Default)]
#[repr(align(64))]
pub(crate) struct SyncCounters {
    pub fsyncs: AtomicU64,
    pub fsync_ns: AtomicU64,
}

impl SyncCounters {
    pub(crate) fn record(&self, elapsed: Duration) {
        self.fsyncs.fetch_add(1, Relaxed);
        self.fsync_ns
            .fetch_add(elapsed.as_nanos().min(u64::MAX as u128) as u64, Relaxed);
    }
}

/// A latency distribution in log-scale (power-of-two nanosecond) buckets.
/// Append latency is sampled (see [`APPEND_LATENCY_SAMPLE_EVERY`]):
/// `count()` is the number of calls timed, not of all calls.
///
/// Percentiles are derived from the buckets, so they are upper bounds
/// within a factor of two: a `p99()` of 4.1 µs means 99% of the calls
/// took at most 4,096 ns.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// let log = brook::Log::open(dir.path())?;
/// let t = log.create_topic("t", brook::TopicConfig::default())?;
/// t.append("k", "v")?;
/// let h = &log.metrics().append_latency;
/// assert_eq!(h.count(), 1);
/// assert!(h.p50() <= h.p99() && h.p99() <= h.max());
/// # Ok::<(), brook::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct LatencyHistogram {
    /// Calls per bucket: `buckets[i]` counts calls that took less than
    /// `2^i` ns and (for `i > 0`) at least `2^(i-1)` ns; the last bucket
    /// also counts everything longer. [`LATENCY_BUCKETS`] long (empty in
    /// a default value).
    pub buckets: Vec<u64>,
    /// Sum of all latencies, in ns.
    pub sum_ns: u64,
    /// The longest latency, in ns.
    pub max_ns: u64,
}

impl LatencyHistogram {
    /// Number of calls measured (timed).
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Mean latency (zero when nothing was measured).
    pub fn mean(&self) -> Duration {
        let n = self.count();
        Duration::from_nanos(self.sum_ns.checked_div(n).unwrap_or(0))
    }

    /// The longest latency.
    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.max_ns)
    }

    /// Upper bound of the bucket holding the `q` quantile (`q` in 0..=1),
    /// never more than [`max`](Self::max). Zero when nothing was measured.
    pub fn quantile(&self, q: f64) -> Duration {
        let n = self.count();
        if n == 0 {
            return Duration::ZERO;
        }
        let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.buckets.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let upper = if i >= 64 { u64::MAX } else { (1u64 << i) - 1 };
                return Duration::from_nanos(upper.min(self.max_ns));
            }
        }
        self.max()
    }

    /// The median (see [`quantile`](Self::quantile)).
    pub fn p50(&self) -> Duration {
        self.quantile(0.50)
    }

    /// The 99th percentile (see [`quantile`](Self::quantile)).
    pub fn p99(&self) -> Duration {
        self.quantile(0.99)
    }

    /// Adds `other`'s calls to this one (for totals over partitions).
    pub fn merge(&mut self, other: &LatencyHistogram) {
        if self.buckets.len() < other.buckets.len() {
            self.buckets.resize(other.buckets.len(), 0);
        }
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.sum_ns += other.sum_ns;
        self.max_ns = self.max_ns.max(other.max_ns);
    }
}

/// A snapshot of a [`Log`](crate::Log)'s (or a [`Cluster`](crate::Cluster)'s)
/// counters, from [`Log::metrics`](crate::Log::metrics) or
/// [`Cluster::metrics`](crate::Cluster::metrics). Plain data: print it,
/// compare two of them, or serialize it (serde) for export.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// let log = brook::Log::open(dir.path())?;
/// let t = log.create_topic("orders", brook::TopicConfig::default())?;
/// t.append("alice", "ordered a book")?;
/// t.partition(0)?.read(0, 10)?;
/// let m = log.metrics();
/// let p = m.partition("orders", 0).unwrap();
/// assert_eq!((p.records_in, p.records_out), (1, 1));
/// assert_eq!(p.end_offset, 1);
/// # Ok::<(), brook::Error>(())
/// ```
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct Metrics {
    /// Every partition of every user topic, in topic and partition order
    /// (on a cluster: counters summed over the partition's replicas,
    /// offsets and sizes of its leader).
    pub partitions: Vec<PartitionMetrics>,
    /// Append latency over all partitions (the partitions' histograms merged).
    pub append_latency: LatencyHistogram,
    /// fsyncs of every partition, internal ones (committed offsets,
    /// transactions) included.
    pub fsyncs: u64,
    /// Time spent in those fsyncs, in ns.
    pub fsync_time_ns: u64,
    /// Every consumer group with members or committed offsets.
    pub groups: Vec<GroupMetrics>,
    /// On a cluster: every replica of every user topic's partitions
    /// (empty for a [`Log`](crate::Log)).
    pub replicas: Vec<ReplicaMetrics>,
}

impl Metrics {
    /// The metrics of one partition, if it exists.
    pub fn partition(&self, topic: &str, partition: u32) -> Option<&PartitionMetrics> {
        self.partitions
            .iter()
            .find(|p| p.topic_partition.topic == topic && p.topic_partition.partition == partition)
    }

    /// The metrics of one consumer group, if it is known.
    pub fn group(&self, group: &str) -> Option<&GroupMetrics> {
        self.groups.iter().find(|g| g.group == group)
    }

    /// The replicas of one partition (cluster only), in assignment order.
    pub fn replicas_of(&self, tp: &TopicPartition) -> Vec<&ReplicaMetrics> {
        self.replicas
            .iter()
            .filter(|r| &r.topic_partition == tp)
            .collect()
    }
}

/// Counters and state of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PartitionMetrics {
    /// Which partition.
    pub topic_partition: TopicPartition,
    /// Records appended (by `append`, `send`, `send_batch`, producers;
    /// on a cluster, on the leader: followers' copies are not counted).
    pub records_in: u64,
    /// Bytes those appends wrote to the log: records as encoded in their
    /// batches, batch headers included, before compression.
    pub bytes_in: u64,
    /// Records returned by reads and polls.
    pub records_out: u64,
    /// Key and value bytes of those records.
    pub bytes_out: u64,
    /// First offset still stored.
    pub start_offset: u64,
    /// The end readers see (the high watermark on a cluster).
    pub end_offset: u64,
    /// Bytes of batches in the partition's segments (`.log` files; the
    /// active segment's preallocated, unwritten tail is not counted).
    pub size_bytes: u64,
    /// Segments, the active one included.
    pub segments: u64,
    /// fsyncs of the partition's files (a sync may fsync several files
    /// and counts once).
    pub fsyncs: u64,
    /// Time spent in those fsyncs, in ns.
    pub fsync_time_ns: u64,
    /// Time spent in append calls on this partition (one measurement per
    /// call, whatever its record count; one call in
    /// [`APPEND_LATENCY_SAMPLE_EVERY`] is timed): from the call to the
    /// append's return, an fsync under `SyncPolicy::Always` and an
    /// `Acks::All` wait included.
    pub append_latency: LatencyHistogram,
}

impl PartitionMetrics {
    /// Adds `other`'s counters (another replica's) to these.
    pub(crate) fn add_counters(&mut self, other: &PartitionMetrics) {
        self.records_in += other.records_in;
        self.bytes_in += other.bytes_in;
        self.records_out += other.records_out;
        self.bytes_out += other.bytes_out;
        self.fsyncs += other.fsyncs;
        self.fsync_time_ns += other.fsync_time_ns;
        self.append_latency.merge(&other.append_latency);
    }

    /// Replaces these counters with `other`'s (offsets and sizes stay).
    pub(crate) fn set_counters(&mut self, other: &PartitionMetrics) {
        self.records_in = other.records_in;
        self.bytes_in = other.bytes_in;
        self.records_out = other.records_out;
        self.bytes_out = other.bytes_out;
        self.fsyncs = other.fsyncs;
        self.fsync_time_ns = other.fsync_time_ns;
        self.append_latency = other.append_latency.clone();
    }
}

/// A consumer group's position: its lag per partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct GroupMetrics {
    /// The group id.
    pub group: String,
    /// Current members.
    pub members: usize,
    /// The group's generation: how many times its assignment was computed
    /// since the log opened.
    pub generation: u64,
    /// Committed offset, end offset and lag of every partition of the
    /// group's topics (as [`ConsumerGroup::lag`](crate::ConsumerGroup::lag)).
    pub partitions: Vec<PartitionLag>,
    /// Sum of the partitions' lag.
    pub total_lag: u64,
}

/// One replica of a cluster partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ReplicaMetrics {
    /// Which partition.
    pub topic_partition: TopicPartition,
    /// The broker holding the replica.
    pub broker: u32,
    /// The replica is the partition's leader.
    pub leader: bool,
    /// Its broker runs (a stopped broker's replica is offline).
    pub online: bool,
    /// The replica is in the ISR.
    pub in_isr: bool,
    /// The replica's log end offset (`None` while its broker is stopped).
    pub log_end_offset: Option<u64>,
    /// Messages the replica is behind its leader's log end offset (when
    /// offline: behind the last position the leader saw it at; 0 for the
    /// leader, and for every replica while there is no leader).
    pub lag: u64,
    /// The partition's high watermark.
    pub high_watermark: u64,
}
