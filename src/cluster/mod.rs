//! An in-process replicated cluster: several brokers, each with its own
//! directory in the same on-disk format as a [`Log`](crate::Log),
//! partitions replicated with a leader and followers, Kafka's ISR, high
//! watermark and `acks`, and failover.
//!
//! ```text
//!  Cluster (a directory, locked by one process)
//!   ├── cluster.json            topics, assignments, leaders, epochs, ISRs
//!   ├── broker-0/orders-0/      replica of orders-0 (segments as in a Log)
//!   ├── broker-1/orders-0/      ...
//!   └── broker-2/orders-1/ ...
//! ```
//!
//! - One running broker is the **controller** (the lowest-numbered one
//!   that runs and is not cut off, when the previous one goes). It assigns
//!   replicas when a topic is created (leaders and followers spread evenly
//!   over the brokers, like Kafka's assignment without racks), elects
//!   leaders from the ISR, shrinks the ISR, moves leadership back to the
//!   preferred (first) replica when it is in sync again, and records every
//!   decision in `cluster.json` before acting on it, so a reopened cluster
//!   resumes.
//! - **Replication**: a background thread makes every follower fetch from
//!   its leader continuously (woken by appends); see `replication.rs` for
//!   the protocol: leader epochs in every batch, divergence truncation,
//!   ISR and high watermark.
//! - **Reading**: [`Topic`], [`Partition`](crate::Partition) and
//!   [`Consumer`] are the same types as on a `Log`; reads go to the current
//!   leader and see records below the high watermark only.
//! - **Durability**: with [`Acks::All`] an append returns once every
//!   in-sync replica has the record; `SyncPolicy` applies to every
//!   replica's writes as on a `Log`.
//! - `replica_lag_time_max` defaults to 2 s (Kafka: 30 s): in one process
//!   a follower that has not caught up for 2 s is stuck, not slow.
//!
//! Lock order: the cluster's metadata lock, then a partition's state
//! lock, then the storage's own locks (a replica's `sync_lock`, then its
//! state); storage never calls back into the cluster. An `Acks::All`
//! append waits on the partition's condition variable holding nothing
//! else.
//!
//! - **Producers**: [`Cluster::producer`] gives the same idempotent and
//!   transactional [`Producer`] as a `Log`. Its sends use `Acks::All`
//!   (Kafka requires it for idempotence). Producer state (last sequences,
//!   open transactions) is rebuilt by every replica from the batches it
//!   copies, so a new leader deduplicates retries and knows the open
//!   transactions; transaction markers are control batches and replicate
//!   like data. The transaction coordinator's state lives in the
//!   replicated `__transaction_state` topic; a background thread finishes
//!   transactions whose end failed half-way (a marker's partition had no
//!   leader), aborts those a reopened cluster found open, and aborts the
//!   ones open past their timeout.
//!
//! Lock order with transactions: the coordinator's lock (held while a
//! transaction's markers are written and acknowledged), then the
//! committed-offset store's, then the ones above.
//!
//! What it does not do (yet): compaction, `add_partitions` and
//! `delete_topic` on a cluster; consumer groups keep their committed
//! offsets on the controller's side in a replicated internal topic (see
//! [`Cluster::consumer`]).

#[cfg(test)]
mod producer_tests;
mod replication;
#[cfg(test)]
mod sim;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};
use serde::{Deserialize, Serialize};

pub use replication::Acks;
pub(crate) use replication::{Network, Part, PartState, Slot};

use crate::config::{SyncPolicy, TopicConfig};
use crate::consumer::{
    group_metrics, Consumer, ConsumerConfig, ConsumerGroup, Coordinator, OffsetStore, TopicSource,
};
use crate::error::{Error, Result};
use crate::format::{ProducerBatch, RecordParts};
use crate::io::{self, DirLock};
use crate::log::{limits, read_meta, write_meta, PRODUCER_IDS_FILE};
use crate::metrics::{AppendTimer, Metrics, PartitionMetrics, ReplicaMetrics};
use crate::producer::{Producer, ProducerConfig, ProducerHost};
use crate::record::TopicPartition;
use crate::storage::{Limits, Notify, OpenHints, PartitionLog};
use crate::topic::{validate_topic_name, Partitions, Topic, TopicInner};
use crate::txn::{ProducerIds, ProducerKey, TxnHost, TxnStore, TXN_TOPIC};

/// How a [`Cluster`] runs. Built with `ClusterConfig::default()` and
/// its builder methods (`#[non_exhaustive]`: later versions add fields).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClusterConfig {
    /// Number of brokers (1-64). Default 3.
    pub brokers: u32,
    /// Sync policy of every replica's writes (as [`LogConfig::sync`](crate::LogConfig)).
    pub sync: SyncPolicy,
    /// A follower that has not caught up with its leader for this long
    /// leaves the ISR. Default 2 s.
    pub replica_lag_time_max: Duration,
    /// How long an [`Acks::All`] append waits for the ISR before it fails
    /// with [`Error::Timeout`]. Default 10 s.
    pub ack_timeout: Duration,
    /// No background thread: tests drive replication step by step.
    manual: bool,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            brokers: 3,
            sync: SyncPolicy::Never,
            replica_lag_time_max: Duration::from_secs(2),
            ack_timeout: Duration::from_secs(10),
            manual: false,
        }
    }
}

impl ClusterConfig {
    /// Sets the number of brokers.
    pub fn brokers(mut self, n: u32) -> Self {
        self.brokers = n;
        self
    }

    /// Sets the replicas' sync policy.
    pub fn sync(mut self, policy: SyncPolicy) -> Self {
        self.sync = policy;
        self
    }

    /// Sets how long a follower may lag before it leaves the ISR.
    pub fn replica_lag_time_max(mut self, lag: Duration) -> Self {
        self.replica_lag_time_max = lag;
        self
    }

    /// Sets how long an [`Acks::All`] append waits.
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.ack_timeout = timeout;
        self
    }

    fn validate(&self) -> Result<()> {
        if self.brokers == 0 || self.brokers > MAX_BROKERS {
            return Err(Error::config(format!(
                "a cluster has 1 to {MAX_BROKERS} brokers, not {}",
                self.brokers
            )));
        }
        if self.replica_lag_time_max.is_zero() || self.ack_timeout.is_zero() {
            return Err(Error::config(
                "replica_lag_time_max and ack_timeout must be above zero",
            ));
        }
        Ok(())
    }
}

/// Most brokers a cluster may have.
pub const MAX_BROKERS: u32 = 64;

const META_FILE: &str = "cluster.json";
/// The internal topic holding consumer groups' committed offsets.
const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// How often the controller checks ISRs and leaders.
const TICK: Duration = Duration::from_millis(20);
/// How often the transaction thread looks for work.
const TXN_TICK: Duration = Duration::from_millis(100);

#[derive(Serialize, Deserialize, Default)]
struct ClusterFile {
    version: u32,
    brokers: u32,
    controller_epoch: u64,
    /// Topics created so far (spreads the next topic's assignment).
    created: u64,
    topics: BTreeMap<String, TopicFile>,
}

#[derive(Serialize, Deserialize, Clone)]
struct TopicFile {
    config: TopicConfig,
    partitions: Vec<PartFile>,
}

#[derive(Serialize, Deserialize, Clone)]
struct PartFile {
    replicas: Vec<u32>,
    leader: Option<u32>,
    epoch: i32,
    isr: Vec<u32>,
    /// The high watermark when this was written: a lower bound of the
    /// real one (exact after a clean close).
    #[serde(default)]
    hw: u64,
}

/// What a topic handle of a cluster shares with the cluster.
#[derive(Debug)]
pub(crate) struct ClusterLink {
    parts: Vec<Arc<Part>>,
    ack_timeout: Duration,
    sync: SyncPolicy,
}

impl ClusterLink {
    /// Appends `records` to partition `p`'s leader and waits for `acks`;
    /// the call's latency (if `started` sampled it) goes to the leader's
    /// metrics.
    pub(crate) fn append<'r>(
        &self,
        p: u32,
        acks: Acks,
        records: impl IntoIterator<Item = (RecordParts<'r>, i64)>,
        on_append: impl FnMut(u64, i64),
        started: AppendTimer,
    ) -> Result<()> {
        let part = &self.parts[p as usize];
        let ticket = part.route(acks)?;
        let end = ticket.log.append(records, on_append)?;
        if self.sync == SyncPolicy::Always {
            ticket.log.sync_to(end)?;
        }
        part.acknowledge(&ticket, end, acks, self.ack_timeout)?;
        ticket.log.record_append_latency(started);
        Ok(())
    }

    /// An idempotent producer's append (see
    /// [`PartitionLog::append_idempotent`]) to partition `p`'s leader,
    /// acknowledged by the ISR (`Acks::All`) — a retry found written is
    /// acknowledged too. Returns the retry's original first offset, if it
    /// was one, and the log written to.
    pub(crate) fn append_idempotent(
        &self,
        p: u32,
        producer: ProducerBatch,
        records: &[(RecordParts<'_>, i64)],
        mut on_append: impl FnMut(u64, i64),
    ) -> Result<(Option<u64>, Arc<PartitionLog>)> {
        let part = &self.parts[p as usize];
        let ticket = part.route(Acks::All)?;
        let mut end = 0;
        let duplicate = ticket
            .log
            .append_idempotent(producer, records, |offset, timestamp| {
                end = offset + 1;
                on_append(offset, timestamp);
            })?;
        if let Some(first) = duplicate {
            end = first + records.len() as u64;
        }
        if self.sync == SyncPolicy::Always {
            ticket.log.sync_to(end)?;
        }
        part.acknowledge(&ticket, end, Acks::All, self.ack_timeout)?;
        Ok((duplicate, ticket.log))
    }

    /// Writes a transaction marker to partition `p`'s leader and waits
    /// until the ISR has it (or, when the leader already holds one, until
    /// the ISR has everything the leader holds).
    pub(crate) fn append_marker(
        &self,
        p: u32,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    ) -> Result<()> {
        let Some(part) = self.parts.get(p as usize) else {
            return Ok(());
        };
        let ticket = part.route(Acks::All)?;
        let end = match ticket.log.append_marker(producer_id, epoch, commit)? {
            Some(offset) => offset + 1,
            None => ticket.log.log_end_offset(),
        };
        if self.sync == SyncPolicy::Always {
            ticket.log.sync_to(end)?;
        }
        part.acknowledge(&ticket, end, Acks::All, self.ack_timeout)
    }

    /// The log reads of partition `p` go to.
    pub(crate) fn read_log(&self, p: u32) -> Option<Arc<PartitionLog>> {
        self.parts.get(p as usize)?.read_log()
    }
}

struct TopicMeta {
    config: TopicConfig,
    parts: Vec<Arc<Part>>,
    inner: Option<Arc<TopicInner>>,
}

struct Meta {
    controller: Option<u32>,
    controller_epoch: u64,
    created: u64,
    topics: BTreeMap<String, TopicMeta>,
}

struct ClusterInner {
    dir: PathBuf,
    config: ClusterConfig,
    alive: Vec<AtomicBool>,
    isolated: Vec<AtomicBool>,
    meta: Mutex<Meta>,
    /// Every partition, the internal ones included (for the replication loop).
    parts: RwLock<Vec<Arc<Part>>>,
    /// Bumped whenever leaders or topics change (consumers re-resolve).
    metadata_epoch: AtomicU64,
    coordinator: Arc<Coordinator>,
    /// The transaction coordinator's state (`__transaction_state`).
    txns: TxnStore,
    producer_ids: ProducerIds,
    /// Transactions found open at open (their producers are gone): the
    /// transaction thread finishes them.
    interrupted: Mutex<Vec<(String, ProducerKey)>>,
    /// Stops the transaction thread (before the replication thread, whose
    /// fetches its acknowledgements wait for).
    txn_stop: Mutex<bool>,
    txn_cv: Condvar,
    txn_thread: Mutex<Option<JoinHandle<()>>>,
    closed: AtomicBool,
    started: Instant,
    /// The simulation's clock (manual mode), in ms.
    manual_clock: AtomicU64,
    /// Rung by appends to any replica: the replication loop wakes.
    wake: Arc<Notify>,
    stop: Mutex<bool>,
    stop_cv: Condvar,
    background: Mutex<Option<JoinHandle<()>>>,
    lock: Mutex<Option<DirLock>>,
}

impl Network for ClusterInner {
    fn alive(&self, b: u32) -> bool {
        self.alive
            .get(b as usize)
            .is_some_and(|a| a.load(Ordering::Acquire))
    }

    fn reachable(&self, a: u32, b: u32) -> bool {
        let isolated = |x: u32| self.isolated[x as usize].load(Ordering::Acquire);
        self.alive(a) && self.alive(b) && (a == b || (!isolated(a) && !isolated(b)))
    }
}

/// A replicated cluster of brokers in one process (see the module docs).
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// use brook::{Acks, Cluster, ClusterConfig, TopicConfig};
/// let cluster = Cluster::open(dir.path(), ClusterConfig::default().brokers(3))?;
/// let t = cluster.create_topic(
///     "orders",
///     TopicConfig::default().partitions(2).replication_factor(3).min_insync_replicas(2),
/// )?;
/// let meta = t.with_acks(Acks::All).append("k", "v")?;  // on every in-sync replica
/// let tp = brook::TopicPartition::new("orders", meta.partition);
/// let leader = cluster.leader(&tp).unwrap();
/// cluster.stop_broker(leader)?;
/// t.append("k", "still accepted")?;                      // a new leader took over
/// let msgs = t.partition(meta.partition)?.read(0, 10)?;
/// assert_eq!(msgs.len(), 2);
/// # Ok::<(), brook::Error>(())
/// ```
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<ClusterHandle>,
}

/// Closes the cluster when the last handle goes.
struct ClusterHandle {
    c: Arc<ClusterInner>,
}

impl Drop for ClusterHandle {
    fn drop(&mut self) {
        let _ = self.c.close();
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("dir", &self.inner.c.dir)
            .field("brokers", &self.inner.c.config.brokers)
            .field("controller", &self.controller())
            .finish()
    }
}

impl Cluster {
    /// Opens (creating if missing) the cluster in `dir`; every broker starts.
    pub fn open(dir: impl AsRef<Path>, config: ClusterConfig) -> Result<Cluster> {
        let c = ClusterInner::open(dir.as_ref(), config)?;
        if !c.config.manual {
            let bg = Arc::clone(&c);
            let handle = std::thread::Builder::new()
                .name("brook-cluster".into())
                .spawn(move || bg.run())
                .map_err(|e| Error::io("spawn replication thread", &c.dir, e))?;
            *c.background.lock() = Some(handle);
            let txn = Arc::clone(&c);
            let handle = std::thread::Builder::new()
                .name("brook-cluster-txn".into())
                .spawn(move || txn.run_transactions())
                .map_err(|e| Error::io("spawn transaction thread", &c.dir, e))?;
            *c.txn_thread.lock() = Some(handle);
        }
        Ok(Cluster {
            inner: Arc::new(ClusterHandle { c }),
        })
    }

    fn c(&self) -> &Arc<ClusterInner> {
        &self.inner.c
    }

    /// The cluster's directory.
    pub fn dir(&self) -> &Path {
        &self.c().dir
    }

    /// Creates a replicated topic: `replication_factor` replicas per
    /// partition (at most the number of brokers), the first of them the
    /// preferred leader.
    pub fn create_topic(&self, name: &str, config: TopicConfig) -> Result<Topic> {
        self.c().check_open()?;
        self.c().create_topic(name, config)
    }

    /// An existing topic.
    pub fn topic(&self, name: &str) -> Result<Topic> {
        self.c().check_open()?;
        let meta = self.c().meta.lock();
        meta.topics
            .get(name)
            .and_then(|t| t.inner.clone())
            .map(Topic::new)
            .ok_or_else(|| Error::UnknownTopic {
                topic: name.to_owned(),
            })
    }

    /// Names of the topics, sorted.
    pub fn topics(&self) -> Vec<String> {
        let meta = self.c().meta.lock();
        meta.topics
            .iter()
            .filter(|(_, t)| t.inner.is_some())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// A consumer in `group` with the default [`ConsumerConfig`].
    pub fn consumer(&self, group: &str) -> Result<Consumer> {
        self.consumer_with(ConsumerConfig::new(group))
    }

    /// A consumer with this configuration. Groups are coordinated in the
    /// cluster's process; their committed offsets are stored in the
    /// replicated `__consumer_offsets` topic and acknowledged by every
    /// in-sync replica, so they survive the loss of a broker.
    pub fn consumer_with(&self, config: ConsumerConfig) -> Result<Consumer> {
        self.c().check_open()?;
        let source: Arc<dyn TopicSource> = Arc::clone(self.c()) as Arc<dyn TopicSource>;
        Consumer::new(config, Arc::clone(&self.c().coordinator), source)
    }

    /// A new producer, idempotent by default, as [`Log::producer`](crate::Log::producer)
    /// gives; with a `transactional_id` it runs transactions across the
    /// cluster's partitions (see the module docs). Its sends are
    /// acknowledged with [`Acks::All`], whatever the topic handle's acks.
    pub fn producer(&self, config: ProducerConfig) -> Result<Producer> {
        Producer::open(Box::new(self.clone()), config)
    }

    /// The admin view of a consumer group.
    pub fn group(&self, id: &str) -> Result<ConsumerGroup> {
        self.c().check_open()?;
        crate::consumer::validate_group_id(id)?;
        Ok(ConsumerGroup {
            id: id.to_owned(),
            coordinator: Arc::clone(&self.c().coordinator),
            source: Arc::clone(self.c()) as Arc<dyn TopicSource>,
        })
    }

    /// Stops broker `id` (as if its process ended): its replicas close,
    /// leave the ISRs, and partitions it led elect new leaders.
    pub fn stop_broker(&self, id: u32) -> Result<()> {
        self.c().check_open()?;
        self.c().stop_broker(id)
    }

    /// Starts broker `id` again: its replicas recover from its directory,
    /// reconcile with their leaders, catch up and rejoin the ISRs.
    pub fn start_broker(&self, id: u32) -> Result<()> {
        self.c().check_open()?;
        self.c().start_broker(id)
    }

    /// Cuts broker `id` off from the others without stopping it: it can
    /// still believe it leads, but nothing it writes is acknowledged with
    /// [`Acks::All`]; the others elect new leaders.
    pub fn isolate_broker(&self, id: u32) -> Result<()> {
        self.c().check_open()?;
        self.c().set_isolated(id, true)
    }

    /// Reconnects an isolated broker: it learns the current leaders,
    /// truncates what diverged, and catches up.
    pub fn heal_broker(&self, id: u32) -> Result<()> {
        self.c().check_open()?;
        self.c().set_isolated(id, false)
    }

    /// Appends `record` through broker `broker` as a client with stale
    /// metadata would: the broker takes it if it believes it leads the
    /// partition (an isolated former leader does), then the record is
    /// acknowledged under `acks` like any other. For fault-injection tests.
    #[doc(hidden)]
    pub fn append_via_broker(
        &self,
        broker: u32,
        tp: &TopicPartition,
        record: crate::Record,
        acks: Acks,
    ) -> Result<crate::RecordMetadata> {
        self.c().check_open()?;
        let part = self.c().part(tp).ok_or_else(|| Error::UnknownTopic {
            topic: tp.topic.clone(),
        })?;
        let ticket = part.ticket_via(broker)?;
        let ts = record.timestamp.unwrap_or_else(crate::storage::now_ms);
        let parts = RecordParts::new(
            record.key.as_deref(),
            record.value.as_deref(),
            &record.headers,
        );
        let mut offset = 0;
        let end = ticket.log.append([(parts, ts)], |o, _| offset = o)?;
        part.acknowledge(&ticket, end, acks, self.c().config.ack_timeout)?;
        Ok(crate::RecordMetadata {
            partition: tp.partition,
            offset,
            timestamp: ts,
        })
    }

    /// The leader of a partition, if it has one.
    pub fn leader(&self, tp: &TopicPartition) -> Option<u32> {
        self.c().part(tp).and_then(|p| p.st.lock().leader)
    }

    /// The in-sync replicas of a partition (empty for an unknown one).
    pub fn isr(&self, tp: &TopicPartition) -> Vec<u32> {
        self.c()
            .part(tp)
            .map(|p| p.st.lock().isr.clone())
            .unwrap_or_default()
    }

    /// The replicas of a partition, preferred leader first.
    pub fn replicas(&self, tp: &TopicPartition) -> Vec<u32> {
        self.c()
            .part(tp)
            .map(|p| p.st.lock().replicas())
            .unwrap_or_default()
    }

    /// The high watermark of a partition: consumers see offsets below it.
    pub fn high_watermark(&self, tp: &TopicPartition) -> Option<u64> {
        self.c().part(tp).map(|p| p.st.lock().hw)
    }

    /// The controller broker, if any broker runs.
    pub fn controller(&self) -> Option<u32> {
        self.c().meta.lock().controller
    }

    /// Whether broker `id` runs.
    pub fn is_running(&self, id: u32) -> bool {
        self.c().alive(id)
    }

    /// A snapshot of the cluster's counters and state (see [`Metrics`]):
    /// per partition the counters of its replicas summed and the offsets
    /// and size of its leader, per replica its role, log end offset, lag
    /// behind the leader and ISR membership, per consumer group its lag.
    /// A stopped broker's replicas lose their counters (they restart at
    /// zero with the broker).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// use brook::{Acks, Cluster, ClusterConfig, TopicConfig, TopicPartition};
    /// let cluster = Cluster::open(dir.path(), ClusterConfig::default().brokers(3))?;
    /// let t = cluster.create_topic("orders", TopicConfig::default().replication_factor(3))?;
    /// t.with_acks(Acks::All).append("k", "v")?;
    /// let m = cluster.metrics();
    /// let replicas = m.replicas_of(&TopicPartition::new("orders", 0));
    /// assert_eq!(replicas.len(), 3);
    /// assert_eq!(replicas.iter().filter(|r| r.leader).count(), 1);
    /// assert!(replicas.iter().all(|r| r.in_isr && r.high_watermark == 1));
    /// # Ok::<(), brook::Error>(())
    /// ```
    pub fn metrics(&self) -> Metrics {
        let c = self.c();
        let mut m = Metrics::default();
        let parts: Vec<Arc<Part>> = c.parts.read().clone();
        for part in &parts {
            let st = part.st.lock();
            let tp = TopicPartition::new(&*part.topic, part.partition);
            let leader_end = st.leader_log().map(|l| l.log_end_offset());
            // The leader's (else any open replica's) offsets and size...
            let mut shape: Option<PartitionMetrics> = None;
            // ...and every open replica's counters.
            let mut counters: Option<PartitionMetrics> = None;
            for slot in &st.slots {
                let pm = slot.log.as_ref().map(|l| l.metrics());
                if let Some(pm) = &pm {
                    m.fsyncs += pm.fsyncs;
                    m.fsync_time_ns += pm.fsync_time_ns;
                }
                // Internal topics (`__consumer_offsets`) count their fsyncs only.
                if part.topic.starts_with("__") {
                    continue;
                }
                let is_leader = st.leader == Some(slot.broker);
                let end = slot.log.as_ref().map(|l| l.log_end_offset());
                m.replicas.push(ReplicaMetrics {
                    topic_partition: tp.clone(),
                    broker: slot.broker,
                    leader: is_leader,
                    online: c.alive(slot.broker),
                    in_isr: st.isr.contains(&slot.broker),
                    log_end_offset: end,
                    lag: match leader_end {
                        Some(_) if is_leader => 0,
                        Some(l) => l.saturating_sub(end.unwrap_or(slot.leo)),
                        None => 0,
                    },
                    high_watermark: st.hw,
                });
                let Some(pm) = pm else { continue };
                if is_leader || shape.is_none() {
                    shape = Some(pm.clone());
                }
                match &mut counters {
                    Some(sum) => sum.add_counters(&pm),
                    None => counters = Some(pm),
                }
            }
            let partition = shape.zip(counters).map(|(mut p, sum)| {
                p.set_counters(&sum);
                p
            });
            if let Some(p) = partition {
                m.partitions.push(p);
            }
        }
        m.partitions
            .sort_by(|a, b| a.topic_partition.cmp(&b.topic_partition));
        m.replicas
            .sort_by(|a, b| a.topic_partition.cmp(&b.topic_partition));
        for p in &m.partitions {
            m.append_latency.merge(&p.append_latency);
        }
        let source = Arc::clone(c) as Arc<dyn TopicSource>;
        m.groups = group_metrics(&c.coordinator, &source);
        m
    }

    /// Stops replication, closes every replica and records the metadata.
    /// Later calls fail with [`Error::Closed`].
    pub fn close(&self) -> Result<()> {
        self.c().close()
    }
}

impl ClusterInner {
    fn open(dir: &Path, config: ClusterConfig) -> Result<Arc<ClusterInner>> {
        config.validate()?;
        io::create_dir_durable(dir)?;
        let lock = io::lock_dir(dir)?;
        // An open batch a killed process left behind is resealed only in
        // the boot that wrote it (see the storage docs).
        let same_boot =
            matches!((&lock.previous_boot_id, io::boot_id()), (Some(a), Some(b)) if *a == b);
        let file: Option<ClusterFile> = read_meta(&dir.join(META_FILE))?;
        if let Some(f) = &file {
            if f.brokers != config.brokers {
                return Err(Error::config(format!(
                    "cluster {} has {} brokers, not {}",
                    dir.display(),
                    f.brokers,
                    config.brokers
                )));
            }
        }
        let file = file.unwrap_or(ClusterFile {
            version: 1,
            brokers: config.brokers,
            ..ClusterFile::default()
        });
        for b in 0..config.brokers {
            io::create_dir(&broker_dir(dir, b))?;
        }
        io::sync_dir(dir)?;
        let n = config.brokers as usize;
        let wake = Arc::new(Notify::default());
        let mut topics = BTreeMap::new();
        let mut all_parts = Vec::new();
        let mut file_topics = file.topics.clone();
        for internal in [OFFSETS_TOPIC, TXN_TOPIC] {
            file_topics
                .entry(internal.to_owned())
                .or_insert_with(|| internal_topic_file(config.brokers));
        }
        for (name, tf) in &file_topics {
            let topic: Arc<str> = Arc::from(name.as_str());
            let lim = internal_limits(name, &tf.config);
            let mut parts = Vec::new();
            for (p, pf) in tf.partitions.iter().enumerate() {
                let mut slots = Vec::new();
                for &b in &pf.replicas {
                    let log = open_replica(dir, b, &topic, p as u32, lim, &wake, same_boot)?;
                    let leading = pf.leader == Some(b);
                    slots.push(Slot {
                        broker: b,
                        log: Some(log),
                        view_leader: pf.leader,
                        view_epoch: pf.epoch,
                        synced_epoch: if leading { pf.epoch } else { -1 },
                        leo: 0,
                        caught_up: 0,
                    });
                }
                // The recorded high watermark: every in-sync replica held
                // the records below it. (Log ends say nothing: a follower's
                // tail may have diverged from the leader's at equal length.)
                let leader_end = pf
                    .leader
                    .and_then(|b| slots.iter().find(|s| s.broker == b))
                    .and_then(|s| s.log.as_ref().map(|l| l.log_end_offset()));
                let hw = leader_end.map_or(pf.hw, |end| pf.hw.min(end));
                for s in &mut slots {
                    if let Some(log) = &s.log {
                        // A follower shows nothing until it reconciled with
                        // the leader; the leader learns its position when
                        // it fetches.
                        if pf.leader == Some(s.broker) {
                            log.set_leader_epoch(pf.epoch);
                            log.set_visible_end(hw);
                        }
                    }
                }
                let part = Arc::new(Part::new(
                    Arc::clone(&topic),
                    p as u32,
                    lim,
                    tf.config.min_insync_replicas as usize,
                    tf.config.unclean_leader_election,
                    PartState {
                        slots,
                        leader: pf.leader,
                        epoch: pf.epoch,
                        isr: pf.isr.clone(),
                        hw,
                    },
                ));
                all_parts.push(Arc::clone(&part));
                parts.push(part);
            }
            topics.insert(
                name.clone(),
                TopicMeta {
                    config: tf.config.clone(),
                    parts,
                    inner: None,
                },
            );
        }
        // The committed-offset store and the transaction coordinator replay
        // their topic's leader and write through a link to it.
        let internal = |name: &str| -> Result<(Arc<PartitionLog>, Arc<ClusterLink>)> {
            let part = Arc::clone(&topics[name].parts[0]);
            let log = part.read_log().ok_or_else(|| {
                Error::config(format!("the internal topic {name} has no replica"))
            })?;
            let link = Arc::new(ClusterLink {
                parts: vec![part],
                ack_timeout: config.ack_timeout,
                sync: config.sync,
            });
            Ok((log, link))
        };
        let (offsets_log, offsets_link) = internal(OFFSETS_TOPIC)?;
        let store = OffsetStore::open_replicated(offsets_log, offsets_link)?;
        let (txn_log, txn_link) = internal(TXN_TOPIC)?;
        let txns = TxnStore::open_replicated(txn_log, txn_link)?;
        let interrupted = txns.open_transactions();
        let producer_ids = ProducerIds::open(dir.join(PRODUCER_IDS_FILE))?;
        let c = Arc::new(ClusterInner {
            dir: dir.to_owned(),
            alive: (0..n).map(|_| AtomicBool::new(true)).collect(),
            isolated: (0..n).map(|_| AtomicBool::new(false)).collect(),
            meta: Mutex::new(Meta {
                controller: None,
                controller_epoch: file.controller_epoch,
                created: file.created,
                topics,
            }),
            parts: RwLock::new(all_parts),
            metadata_epoch: AtomicU64::new(1),
            coordinator: Arc::new(Coordinator::new(Arc::new(store))),
            txns,
            producer_ids,
            interrupted: Mutex::new(interrupted),
            txn_stop: Mutex::new(false),
            txn_cv: Condvar::new(),
            txn_thread: Mutex::new(None),
            closed: AtomicBool::new(false),
            started: Instant::now(),
            manual_clock: AtomicU64::new(0),
            wake,
            stop: Mutex::new(false),
            stop_cv: Condvar::new(),
            background: Mutex::new(None),
            config,
            lock: Mutex::new(Some(lock)),
        });
        {
            let mut meta = c.meta.lock();
            c.ensure_controller(&mut meta);
            let names: Vec<String> = meta.topics.keys().cloned().collect();
            for name in names {
                if !name.starts_with("__") {
                    c.make_handle(&mut meta, &name);
                }
            }
            c.persist(&meta)?;
        }
        Ok(c)
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed {
                what: format!("cluster {} is closed", self.dir.display()),
            });
        }
        Ok(())
    }

    fn check_broker(&self, id: u32) -> Result<()> {
        if id >= self.config.brokers {
            return Err(Error::config(format!(
                "no broker {id}: the cluster has brokers 0 to {}",
                self.config.brokers - 1
            )));
        }
        Ok(())
    }

    pub(crate) fn now(&self) -> u64 {
        if self.config.manual {
            self.manual_clock.load(Ordering::Acquire)
        } else {
            self.started.elapsed().as_millis() as u64
        }
    }

    fn part(&self, tp: &TopicPartition) -> Option<Arc<Part>> {
        let meta = self.meta.lock();
        meta.topics
            .get(&tp.topic)?
            .parts
            .get(tp.partition as usize)
            .cloned()
    }

    /// Keeps a controller: the current one while it runs and is reachable,
    /// else the lowest-numbered broker that is.
    fn ensure_controller(&self, meta: &mut Meta) {
        let ok = |b: u32| self.alive(b) && !self.isolated[b as usize].load(Ordering::Acquire);
        if meta.controller.is_some_and(ok) {
            return;
        }
        let previous = meta.controller;
        meta.controller = (0..self.config.brokers).find(|&b| ok(b));
        if meta.controller.is_some() {
            meta.controller_epoch += 1;
            tracing::info!(
                controller = meta.controller,
                previous,
                controller_epoch = meta.controller_epoch,
                "controller elected"
            );
        } else {
            tracing::warn!(previous, "no controller: no broker runs reachable");
        }
    }

    fn persist(&self, meta: &Meta) -> Result<()> {
        let mut topics = BTreeMap::new();
        for (name, t) in &meta.topics {
            let partitions = t
                .parts
                .iter()
                .map(|p| {
                    let st = p.st.lock();
                    PartFile {
                        replicas: st.replicas(),
                        leader: st.leader,
                        epoch: st.epoch,
                        isr: st.isr.clone(),
                        hw: st.hw,
                    }
                })
                .collect();
            topics.insert(
                name.clone(),
                TopicFile {
                    config: t.config.clone(),
                    partitions,
                },
            );
        }
        let file = ClusterFile {
            version: 1,
            brokers: self.config.brokers,
            controller_epoch: meta.controller_epoch,
            created: meta.created,
            topics,
        };
        write_meta(&self.dir.join(META_FILE), &file)
    }

    /// Makes (or refreshes) the topic handle's leader logs.
    fn make_handle(&self, meta: &mut Meta, name: &str) {
        let t = meta.topics.get_mut(name).expect("known topic");
        // A partition whose replicas are all stopped keeps its last log
        // (closed: reads fail until a replica is back).
        let logs: Vec<Option<Arc<PartitionLog>>> = t.parts.iter().map(|p| p.read_log()).collect();
        match &t.inner {
            Some(inner) => {
                let mut current = inner
                    .partitions
                    .leaders_mut()
                    .expect("a cluster topic's table holds leaders");
                for (slot, log) in current.iter_mut().zip(logs) {
                    if let Some(log) = log.filter(|l| !Arc::ptr_eq(slot, l)) {
                        *slot = log;
                    }
                }
            }
            None => {
                let logs = logs
                    .into_iter()
                    .map(|l| l.expect("a new or reopened topic has its replicas open"))
                    .collect();
                let mut inner = TopicInner::new(
                    Arc::from(name),
                    t.config.clone(),
                    Partitions::leaders(logs),
                    self.config.sync,
                );
                inner.link = Some(Arc::new(ClusterLink {
                    parts: t.parts.clone(),
                    ack_timeout: self.config.ack_timeout,
                    sync: self.config.sync,
                }));
                t.inner = Some(Arc::new(inner));
            }
        }
    }

    /// After leaders changed: records them, points handles at the new
    /// leaders, and tells consumers.
    fn publish(&self, meta: &mut Meta) -> Result<()> {
        let result = self.persist(meta);
        let names: Vec<String> = meta.topics.keys().cloned().collect();
        for name in names {
            if meta.topics[&name].inner.is_some() {
                self.make_handle(meta, &name);
            }
        }
        self.metadata_epoch.fetch_add(1, Ordering::AcqRel);
        self.wake.notify();
        result
    }

    fn create_topic(&self, name: &str, config: TopicConfig) -> Result<Topic> {
        validate_topic_name(name)?;
        if name.starts_with("__") {
            return Err(Error::InvalidTopicName {
                name: name.to_owned(),
                reason: "names starting with '__' are internal",
            });
        }
        config.validate(name)?;
        let rf = config.replication_factor as u32;
        if rf > self.config.brokers {
            return Err(Error::config(format!(
                "topic {name:?}: replication_factor {rf} is more than the {} brokers",
                self.config.brokers
            )));
        }
        let mut meta = self.meta.lock();
        if meta.topics.contains_key(name) {
            return Err(Error::TopicExists {
                topic: name.to_owned(),
            });
        }
        self.ensure_controller(&mut meta);
        let Some(controller) = meta.controller else {
            return Err(Error::NoLeader {
                topic: name.to_owned(),
                partition: 0,
            });
        };
        let n = self.config.brokers;
        let start = (meta.created % n as u64) as u32;
        let topic: Arc<str> = Arc::from(name);
        let lim = limits(&config);
        let now = self.now();
        let mut parts = Vec::new();
        for p in 0..config.partitions {
            // Kafka without racks: leaders round robin from a start that
            // moves per topic; followers on the next brokers.
            let replicas: Vec<u32> = (0..rf).map(|j| (start + p + j) % n).collect();
            let mut slots = Vec::new();
            for &b in &replicas {
                let log = if self.alive(b) {
                    Some(create_replica(&self.dir, b, &topic, p, lim, &self.wake)?)
                } else {
                    None
                };
                slots.push(Slot {
                    broker: b,
                    log,
                    view_leader: None,
                    view_epoch: -1,
                    synced_epoch: -1,
                    leo: 0,
                    caught_up: now,
                });
            }
            let isr: Vec<u32> = replicas
                .iter()
                .copied()
                .filter(|&b| self.alive(b))
                .collect();
            if isr.is_empty() {
                return Err(Error::NoLeader {
                    topic: name.to_owned(),
                    partition: p,
                });
            }
            let part = Part::new(
                Arc::clone(&topic),
                p,
                lim,
                config.min_insync_replicas as usize,
                config.unclean_leader_election,
                PartState {
                    slots,
                    leader: None,
                    epoch: -1,
                    isr,
                    hw: 0,
                },
            );
            part.elect(self, controller, false, now);
            parts.push(Arc::new(part));
        }
        meta.created += 1;
        self.parts.write().extend(parts.iter().cloned());
        meta.topics.insert(
            name.to_owned(),
            TopicMeta {
                config,
                parts,
                inner: None,
            },
        );
        self.make_handle(&mut meta, name);
        self.persist(&meta)?;
        self.metadata_epoch.fetch_add(1, Ordering::AcqRel);
        Ok(Topic::new(
            meta.topics[name].inner.clone().expect("just made"),
        ))
    }

    fn stop_broker(&self, id: u32) -> Result<()> {
        self.check_broker(id)?;
        let mut meta = self.meta.lock();
        if !self.alive(id) {
            return Ok(());
        }
        self.alive[id as usize].store(false, Ordering::Release);
        tracing::info!(broker = id, "broker stopped");
        self.broker_lost(&mut meta, id);
        let result = self.publish(&mut meta);
        // Its replicas close (what they wrote stays on disk).
        for part in self.parts.read().iter() {
            let log = part
                .st
                .lock()
                .slots
                .iter_mut()
                .find(|s| s.broker == id)
                .and_then(|s| s.log.take());
            if let Some(log) = log {
                log.unwatch(&self.wake);
                let _ = log.close();
            }
        }
        result
    }

    fn start_broker(&self, id: u32) -> Result<()> {
        self.check_broker(id)?;
        let mut meta = self.meta.lock();
        if self.alive(id) {
            return Ok(());
        }
        for part in self.parts.read().iter() {
            let mut st = part.st.lock();
            if let Some(s) = st.slots.iter_mut().find(|s| s.broker == id) {
                let log = open_replica(
                    &self.dir,
                    id,
                    &part.topic,
                    part.partition,
                    part.limits,
                    &self.wake,
                    true,
                )?;
                s.log = Some(log);
                s.synced_epoch = -1;
                s.leo = 0;
                // A restarted broker leads nothing until the controller
                // tells it what to do (its log stamps no epoch before).
                s.view_leader = None;
                s.view_epoch = -1;
            }
        }
        self.alive[id as usize].store(true, Ordering::Release);
        tracing::info!(broker = id, "broker started");
        self.broker_back(&mut meta);
        self.publish(&mut meta)
    }

    fn set_isolated(&self, id: u32, isolated: bool) -> Result<()> {
        self.check_broker(id)?;
        let mut meta = self.meta.lock();
        if self.isolated[id as usize].swap(isolated, Ordering::AcqRel) == isolated {
            return Ok(());
        }
        if isolated {
            tracing::info!(broker = id, "broker cut off from the others");
            self.broker_lost(&mut meta, id);
        } else {
            tracing::info!(broker = id, "broker reachable again");
            self.broker_back(&mut meta);
        }
        self.publish(&mut meta)
    }

    /// The controller reacts to broker `id` going away.
    fn broker_lost(&self, meta: &mut Meta, id: u32) {
        self.ensure_controller(meta);
        let Some(controller) = meta.controller else {
            return;
        };
        let now = self.now();
        for part in self.parts.read().iter() {
            if part.st.lock().slot(id).is_some() {
                part.drop_from_isr(id);
                part.elect(self, controller, false, now);
            }
        }
    }

    /// The controller reacts to a broker coming (back): every replica it
    /// reaches learns the current leaders; partitions without one elect.
    fn broker_back(&self, meta: &mut Meta) {
        self.ensure_controller(meta);
        let Some(controller) = meta.controller else {
            return;
        };
        let now = self.now();
        for part in self.parts.read().iter() {
            {
                let mut st = part.st.lock();
                part.inform(&mut st, self, controller, now);
            }
            part.elect(self, controller, false, now);
        }
    }

    /// One round of fetches: every follower of every partition once.
    /// Returns whether any bytes moved.
    pub(crate) fn replicate_round(&self) -> bool {
        let now = self.now();
        let parts: Vec<Arc<Part>> = self.parts.read().clone();
        let mut moved = false;
        let mut truth = false;
        for part in &parts {
            let followers: Vec<u32> = part.st.lock().replicas();
            for f in followers {
                let c = self.fetch_once(part, f, now);
                moved |= c.moved;
                truth |= c.truth;
            }
        }
        if truth {
            let meta = self.meta.lock();
            let _ = self.persist(&meta);
        }
        moved
    }

    /// One fetch of follower `f` of `part`. A replica that cannot take the
    /// leader's batches (damaged, disk full), or under `SyncPolicy::Always`
    /// cannot fsync them, stays behind, drops out of the ISR, and tries
    /// again next round.
    fn fetch_once(&self, part: &Part, f: u32, now: u64) -> replication::Changed {
        let durable = self.config.sync == SyncPolicy::Always;
        part.fetch(f, self, now, durable).unwrap_or_default()
    }

    /// The controller's periodic work: ISR shrinks (recorded before the
    /// high watermark moves on them), elections, preferred leaders.
    pub(crate) fn tick(&self) {
        let now = self.now();
        let mut meta = self.meta.lock();
        self.ensure_controller(&mut meta);
        let Some(controller) = meta.controller else {
            return;
        };
        let lag = self.config.replica_lag_time_max.as_millis() as u64;
        let parts: Vec<Arc<Part>> = self.parts.read().clone();
        let mut changed = false;
        for part in &parts {
            changed |= part.shrink_isr(self, now, lag);
        }
        for part in &parts {
            changed |= part.elect(self, controller, true, now);
        }
        if changed {
            let _ = self.publish(&mut meta);
        }
        drop(meta);
        for part in &parts {
            let mut st = part.st.lock();
            part.advance_hw(&mut st);
        }
    }

    fn run(self: Arc<Self>) {
        let mut last_tick = Instant::now();
        loop {
            if *self.stop.lock() {
                return;
            }
            let seen = self.wake.generation();
            let moved = self.replicate_round();
            if last_tick.elapsed() >= TICK {
                self.tick();
                last_tick = Instant::now();
            }
            if !moved {
                let deadline = Instant::now() + TICK;
                self.wake.wait(seen, deadline);
            }
        }
    }

    /// The transaction thread: finishes the transactions found open at
    /// open, then, every [`TXN_TICK`], those whose end failed half-way and
    /// those open past their timeout. Failures are retried next round.
    fn run_transactions(self: Arc<Self>) {
        loop {
            let interrupted = self.interrupted.lock().clone();
            if !interrupted.is_empty() && self.txns.finish_interrupted(&*self, &interrupted).is_ok()
            {
                self.interrupted.lock().clear();
            }
            let _ = self.txns.finish_decided(&*self);
            let _ = self.txns.abort_expired(&*self);
            let mut stop = self.txn_stop.lock();
            if !*stop {
                self.txn_cv.wait_for(&mut stop, TXN_TICK);
            }
            if *stop {
                return;
            }
        }
    }

    /// The link of an existing user topic.
    fn link(&self, topic: &str) -> Option<Arc<ClusterLink>> {
        let meta = self.meta.lock();
        meta.topics.get(topic)?.inner.as_ref()?.link.clone()
    }

    fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        *self.txn_stop.lock() = true;
        self.txn_cv.notify_all();
        if let Some(h) = self.txn_thread.lock().take() {
            let _ = h.join();
        }
        *self.stop.lock() = true;
        self.stop_cv.notify_all();
        self.wake.notify();
        if let Some(h) = self.background.lock().take() {
            let _ = h.join();
        }
        let meta = self.meta.lock();
        let result = self.persist(&meta);
        for part in self.parts.read().iter() {
            for s in part.st.lock().slots.iter_mut() {
                if let Some(log) = s.log.take() {
                    let _ = log.close();
                }
            }
        }
        drop(meta);
        *self.lock.lock() = None;
        result
    }
}

impl TxnHost for ClusterInner {
    fn next_producer_id(&self) -> Result<i64> {
        self.producer_ids.next()
    }

    fn write_marker(
        &self,
        topic: &str,
        partition: u32,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    ) -> Result<()> {
        match self.link(topic) {
            Some(link) => link.append_marker(partition, producer_id, epoch, commit),
            None => Ok(()), // no such topic: nothing to mark
        }
    }

    fn commit_offsets(&self, group: &str, offsets: &[(TopicPartition, Option<u64>)]) -> Result<()> {
        self.coordinator.offsets.commit(group, offsets)
    }
}

impl ProducerHost for Cluster {
    fn topic(&self, name: &str) -> Result<Topic> {
        Cluster::topic(self, name)
    }

    fn coordinator(&self) -> Result<(&TxnStore, &dyn TxnHost)> {
        let c = self.c();
        c.check_open()?;
        Ok((&c.txns, &**c))
    }
}

impl TopicSource for ClusterInner {
    fn partitions(&self, topic: &str) -> Result<Vec<Arc<PartitionLog>>> {
        let meta = self.meta.lock();
        let t = meta
            .topics
            .get(topic)
            .filter(|t| t.inner.is_some())
            .ok_or_else(|| Error::UnknownTopic {
                topic: topic.to_owned(),
            })?;
        let logs = t.inner.as_ref().expect("checked").partitions.to_vec();
        Ok(logs)
    }

    fn partition_count(&self, topic: &str) -> Option<u32> {
        let meta = self.meta.lock();
        meta.topics
            .get(topic)
            .filter(|t| t.inner.is_some())
            .map(|t| t.parts.len() as u32)
    }

    fn metadata_epoch(&self) -> u64 {
        self.metadata_epoch.load(Ordering::Acquire)
    }

    fn check_open(&self) -> Result<()> {
        ClusterInner::check_open(self)
    }

    fn keeps_positions(&self) -> bool {
        true
    }
}

fn broker_dir(dir: &Path, b: u32) -> PathBuf {
    dir.join(format!("broker-{b}"))
}

/// An internal topic (committed offsets, transaction state): one
/// partition on up to three brokers.
fn internal_topic_file(brokers: u32) -> TopicFile {
    let rf = brokers.min(3);
    let config = TopicConfig::default()
        .segment_bytes(8 << 20)
        .replication_factor(rf as u16)
        .min_insync_replicas(1);
    TopicFile {
        config,
        partitions: vec![PartFile {
            replicas: (0..rf).collect(),
            leader: Some(0),
            epoch: 0,
            isr: (0..rf).collect(),
            hw: 0,
        }],
    }
}

fn internal_limits(name: &str, config: &TopicConfig) -> Limits {
    let l = limits(config);
    if name == OFFSETS_TOPIC || name == TXN_TOPIC {
        // Bounded by the stores' own snapshots, like a Log's.
        return Limits {
            retention_bytes: None,
            retention_ms: None,
            ..l
        };
    }
    l
}

fn create_replica(
    dir: &Path,
    b: u32,
    topic: &Arc<str>,
    p: u32,
    lim: Limits,
    wake: &Arc<Notify>,
) -> Result<Arc<PartitionLog>> {
    let root = broker_dir(dir, b);
    let log = Arc::new(PartitionLog::create(&root, Arc::clone(topic), p, lim)?);
    io::sync_dir(&root)?;
    log.set_visible_end(0);
    log.watch(wake);
    Ok(log)
}

/// Opens a replica's directory (creating it if missing) and rebuilds its
/// leader-epoch cache.
fn open_replica(
    dir: &Path,
    b: u32,
    topic: &Arc<str>,
    p: u32,
    lim: Limits,
    wake: &Arc<Notify>,
    same_boot: bool,
) -> Result<Arc<PartitionLog>> {
    let root = broker_dir(dir, b);
    if !root.join(crate::storage::dir_name(topic, p)).exists() {
        return create_replica(dir, b, topic, p, lim, wake);
    }
    let hints = OpenHints {
        same_boot,
        ..OpenHints::default()
    };
    let log = Arc::new(PartitionLog::open(&root, Arc::clone(topic), p, lim, hints)?);
    log.restore_producers(None, crate::storage::ProducerWalk::FromOffset(0))?;
    log.load_epochs()?;
    log.set_visible_end(0);
    log.watch(wake);
    Ok(log)
}
