//! [`Log`]: a directory, its lock, the topic registry and background work.
//!
//! Files in a log directory:
//!
//! - `.lock` — the OS lock (`flock`) that keeps other `Log`s out; it also
//!   records the kernel boot id of its last owner (see the storage docs).
//! - `topics.json` — every topic's [`TopicConfig`]; the source of truth for
//!   which partition directories belong to the log. Replaced atomically.
//!   Partition directories are created before a topic is added to it and
//!   removed after a topic is taken out, so a crash leaves at most orphan
//!   directories, which the next open removes.
//! - `recovery-checkpoint` — per partition, the point up to which data is
//!   fsynced and checked; written by the background thread and at close.
//! - `.clean-shutdown` — present only between a clean close and the next
//!   open; it makes the end state in the checkpoint trustworthy.
//! - `<topic>-<partition>/` — the partition directories.
//!
//! Metadata files start with a line holding the CRC-32C of the JSON that
//! follows, so damage is detected rather than trusted.
//!
//! One background thread per log seals idle open batches, runs
//! `SyncPolicy::Interval` fsyncs, fsyncs rolled segments, applies retention
//! and writes the checkpoint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard, RwLock};
use serde::{Deserialize, Serialize};

use crate::config::{LogConfig, SyncPolicy, TopicConfig, MAX_PARTITIONS};
use crate::consumer::{
    group_metrics, validate_group_id, Consumer, ConsumerConfig, ConsumerGroup, Coordinator,
    OffsetStore, TopicSource, OFFSETS_TOPIC,
};
use crate::error::{Error, Result};
use crate::format::Compression;
use crate::io::{self, DirLock};
use crate::metrics::Metrics;
use crate::producer::{Producer, ProducerConfig, ProducerHost};
use crate::record::TopicPartition;
use crate::storage::{
    dir_name, now_ms, CleanState, CompactSettings, CompactionReport, Limits, OpenHints,
    PartitionLog, ProducerSnapshot, ProducerWalk, RecoveryPoint, OPEN_BATCH_LINGER,
};
use crate::topic::{validate_topic_name, Partitions, Topic, TopicInner};
use crate::txn::{ProducerIds, TxnHost, TxnStore, TXN_TOPIC};

const TOPICS_FILE: &str = "topics.json";
const CHECKPOINT_FILE: &str = "recovery-checkpoint";
const CLEAN_MARKER: &str = ".clean-shutdown";
/// The end of the last block of producer ids handed out.
pub(crate) const PRODUCER_IDS_FILE: &str = "producer-ids";
/// How often the background thread rewrites the checkpoint (when it changed).
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Serialize, Deserialize, Default)]
struct TopicsFile {
    version: u32,
    topics: BTreeMap<String, TopicConfig>,
}

#[derive(Serialize, Deserialize, Default, PartialEq)]
struct CheckpointFile {
    version: u32,
    partitions: Vec<PartitionCheckpoint>,
}

#[derive(Serialize, Deserialize, Clone, PartialEq)]
struct PartitionCheckpoint {
    topic: String,
    partition: u32,
    recovery_segment: u64,
    recovery_position: u64,
    clean: Option<CleanCheckpoint>,
    /// Offsets below this were compacted.
    #[serde(default)]
    clean_offset: u64,
    /// Idempotent producers' state (none known: absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    producers: Option<ProducerSnapshot>,
}

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq)]
struct CleanCheckpoint {
    next_offset: u64,
    active_len: u64,
    max_timestamp: i64,
    offset_of_max_timestamp: u64,
}

/// Writes `value` as `<crc32c hex>\n<json>` atomically.
pub(crate) fn write_meta<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let json = serde_json::to_vec_pretty(value).expect("metadata serializes");
    let mut out = format!("{:08x}\n", crate::format::crc::crc32c(&json)).into_bytes();
    out.extend_from_slice(&json);
    io::write_atomic(path, &out)
}

/// Reads a file written by [`write_meta`]; `None` if missing.
pub(crate) fn read_meta<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    let Some(bytes) = io::read_optional(path)? else {
        return Ok(None);
    };
    let corrupt = |reason: String| Error::corrupt(path, 0, reason);
    let nl = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| corrupt("no checksum line".into()))?;
    let stored = std::str::from_utf8(&bytes[..nl])
        .ok()
        .and_then(|s| u32::from_str_radix(s, 16).ok())
        .ok_or_else(|| corrupt("unreadable checksum line".into()))?;
    let json = &bytes[nl + 1..];
    if crate::format::crc::crc32c(json) != stored {
        return Err(corrupt("CRC-32C mismatch".into()));
    }
    serde_json::from_slice(json)
        .map(Some)
        .map_err(|e| Error::corrupt(path, (nl + 1) as u64, e.to_string()))
}

/// Every topic's config from `dir`'s topics file, without opening the log
/// (`None`: no topics file), and whether the log was closed cleanly.
#[cfg(feature = "cli")]
pub(crate) fn read_topics_unopened(
    dir: &Path,
) -> Result<Option<(BTreeMap<String, TopicConfig>, bool)>> {
    let clean = io::file_len(&dir.join(CLEAN_MARKER))?.is_some();
    Ok(read_meta::<TopicsFile>(&dir.join(TOPICS_FILE))?.map(|t| (t.topics, clean)))
}

/// An open log directory. Clones share one log; the last handle dropped
/// closes it.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// let log = brook::Log::open(dir.path())?;
/// let t = log.create_topic("events", brook::TopicConfig::default())?;
/// t.append("k", "v")?;
/// let msgs = t.partition(0)?.read(0, 10)?;
/// assert_eq!(msgs[0].value(), Some(&b"v"[..]));
/// log.close()?;
/// # Ok::<(), brook::Error>(())
/// ```
#[derive(Clone)]
pub struct Log {
    inner: Arc<LogInner>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.inner.shared.dir)
            .field("closed", &self.inner.shared.closed.load(Ordering::Relaxed))
            .finish()
    }
}

struct LogInner {
    shared: Arc<Shared>,
    background: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for LogInner {
    fn drop(&mut self) {
        let _ = close(&self.shared, &self.background);
    }
}

/// What the background thread shares with the handles.
struct Shared {
    dir: PathBuf,
    config: LogConfig,
    topics: RwLock<BTreeMap<String, Arc<TopicInner>>>,
    /// Serializes topic creation, deletion and partition changes, and
    /// `close` with them.
    admin: Mutex<()>,
    closed: AtomicBool,
    stop: Mutex<bool>,
    stop_cv: Condvar,
    lock: Mutex<Option<DirLock>>,
    last_checkpoint: Mutex<Option<CheckpointFile>>,
    /// Groups and the committed-offset store (`__consumer_offsets-0`).
    coordinator: Arc<Coordinator>,
    /// Bumped when topics are created, deleted or grow (groups reassign).
    metadata_epoch: AtomicU64,
    /// Producer ids, reserved in blocks in `producer-ids`.
    producer_ids: ProducerIds,
    /// Transactional ids' state (`__transaction_state-0`).
    txns: TxnStore,
}

/// Segment size of the internal offset store: small, it is snapshotted.
const OFFSETS_SEGMENT_BYTES: u64 = 8 << 20;

fn offsets_limits() -> Limits {
    Limits {
        segment_bytes: OFFSETS_SEGMENT_BYTES,
        compacted: false,
        retention_bytes: None,
        retention_ms: None,
        compression: Compression::None,
    }
}

impl Log {
    /// Opens (creating if missing) the log in `dir` with the default config.
    pub fn open(dir: impl AsRef<Path>) -> Result<Log> {
        Log::open_with(dir, LogConfig::default())
    }

    /// Opens (creating if missing) the log in `dir`. Fails with
    /// [`Error::Locked`] while another `Log` has it open.
    pub fn open_with(dir: impl AsRef<Path>, config: LogConfig) -> Result<Log> {
        let started = Instant::now();
        config.validate()?;
        let dir = dir.as_ref().to_owned();
        io::create_dir_durable(&dir)?;
        let lock = io::lock_dir(&dir)?;
        let same_boot =
            matches!((&lock.previous_boot_id, io::boot_id()), (Some(a), Some(b)) if *a == b);
        let topics_path = dir.join(TOPICS_FILE);
        let topics_file: TopicsFile = match read_meta(&topics_path)? {
            Some(t) => t,
            None => {
                let partition_dirs = io::list_dir(&dir)?
                    .into_iter()
                    .filter(|e| e.is_dir && parse_partition_dir(&e.name).is_some())
                    .count();
                if partition_dirs > 0 {
                    return Err(Error::corrupt(
                        &topics_path,
                        0,
                        format!("missing, but {partition_dirs} partition directories exist"),
                    ));
                }
                let t = TopicsFile {
                    version: 1,
                    topics: BTreeMap::new(),
                };
                write_meta(&topics_path, &t)?;
                t
            }
        };
        // A damaged checkpoint only costs a full recovery scan.
        let checkpoint: CheckpointFile = read_meta(&dir.join(CHECKPOINT_FILE))
            .ok()
            .flatten()
            .unwrap_or_default();
        let marker = dir.join(CLEAN_MARKER);
        let clean = io::file_len(&marker)?.is_some();
        if clean {
            io::remove_file(&marker)?;
            io::sync_dir(&dir)?;
        }
        let by_partition: BTreeMap<(&str, u32), &PartitionCheckpoint> = checkpoint
            .partitions
            .iter()
            .map(|c| ((c.topic.as_str(), c.partition), c))
            .collect();

        let open_partition = |name: &Arc<str>, p: u32, limits: Limits| -> Result<PartitionLog> {
            let c = by_partition.get(&(&**name, p));
            let hints = OpenHints {
                recovery: c.map_or_else(RecoveryPoint::default, |c| RecoveryPoint {
                    segment: c.recovery_segment,
                    position: c.recovery_position,
                }),
                clean: c
                    .and_then(|c| c.clean)
                    .filter(|_| clean)
                    .map(|c| CleanState {
                        next_offset: c.next_offset,
                        active_len: c.active_len,
                        max_timestamp: c.max_timestamp,
                        offset_of_max_timestamp: c.offset_of_max_timestamp,
                    }),
                same_boot,
                clean_offset: c.map_or(0, |c| c.clean_offset),
            };
            if io::file_len(&dir.join(dir_name(name, p)))?.is_some() {
                let log = PartitionLog::open(&dir, Arc::clone(name), p, limits, hints)?;
                log.set_clean_offset(hints.clean_offset);
                // Without a checkpoint entry nothing is known: walk it all.
                // Without a snapshot no producer was known when the
                // checkpoint was taken: after a clean close nothing is to be
                // walked, after a crash what follows the recovery point.
                let walk = match c {
                    None => ProducerWalk::FromOffset(0),
                    Some(_) if hints.clean.is_some() => ProducerWalk::Nothing,
                    Some(_) => ProducerWalk::FromPoint(hints.recovery),
                };
                log.restore_producers(c.and_then(|c| c.producers.as_ref()), walk)?;
                Ok(log)
            } else {
                // New, or lost between creation and the topics file: start empty.
                PartitionLog::create(&dir, Arc::clone(name), p, limits)
            }
        };
        let offsets_log = Arc::new(open_partition(
            &Arc::from(OFFSETS_TOPIC),
            0,
            offsets_limits(),
        )?);
        let offsets = Arc::new(OffsetStore::open(offsets_log, config.sync)?);
        let txn_log = Arc::new(open_partition(&Arc::from(TXN_TOPIC), 0, offsets_limits())?);
        let txns = TxnStore::open(txn_log, config.sync)?;
        let mut topics = BTreeMap::new();
        for (name, cfg) in &topics_file.topics {
            let name_arc: Arc<str> = Arc::from(name.as_str());
            let mut logs = Vec::with_capacity(cfg.partitions as usize);
            for p in 0..cfg.partitions {
                logs.push(Arc::new(open_partition(&name_arc, p, limits(cfg))?));
            }
            topics.insert(
                name.clone(),
                Arc::new(TopicInner::new(
                    name_arc,
                    cfg.clone(),
                    Partitions::local(logs),
                    config.sync,
                )),
            );
        }
        remove_orphans(&dir, &topics_file)?;
        let producer_ids = ProducerIds::open(dir.join(PRODUCER_IDS_FILE))?;
        // Partition directories created above (the offset store on first
        // open, partitions lost before a crash) become durable here.
        io::sync_dir(&dir)?;

        let shared = Arc::new(Shared {
            dir,
            config,
            topics: RwLock::new(topics),
            admin: Mutex::new(()),
            closed: AtomicBool::new(false),
            stop: Mutex::new(false),
            stop_cv: Condvar::new(),
            lock: Mutex::new(Some(lock)),
            last_checkpoint: Mutex::new(None),
            coordinator: Arc::new(Coordinator::new(offsets)),
            metadata_epoch: AtomicU64::new(0),
            producer_ids,
            txns,
        });
        // Finish the transactions a crash interrupted.
        let open = shared.txns.open_transactions();
        shared.txns.finish_interrupted(&*shared, &open)?;
        tracing::info!(
            dir = %shared.dir.display(),
            topics = shared.topics.read().len(),
            clean_shutdown = clean,
            same_boot,
            took_ms = started.elapsed().as_millis() as u64,
            "log opened"
        );
        let bg = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("brook-background".into())
            .spawn(move || background(bg))
            .map_err(|e| Error::io("spawn background thread", &shared.dir, e))?;
        Ok(Log {
            inner: Arc::new(LogInner {
                shared,
                background: Mutex::new(Some(handle)),
            }),
        })
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.shared.dir
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.shared.closed.load(Ordering::Acquire) {
            return Err(Error::Closed {
                what: format!("log {} is closed", self.inner.shared.dir.display()),
            });
        }
        Ok(())
    }

    /// Creates a topic. Fails with [`Error::TopicExists`],
    /// [`Error::InvalidTopicName`] or [`Error::InvalidConfig`].
    pub fn create_topic(&self, name: &str, config: TopicConfig) -> Result<Topic> {
        self.check_open()?;
        validate_topic_name(name)?;
        if RESERVED_TOPICS.contains(&name) {
            return Err(Error::InvalidTopicName {
                name: name.to_owned(),
                reason: "reserved for brook's internal use",
            });
        }
        config.validate(name)?;
        let s = &self.inner.shared;
        let _admin = s.admin()?;
        if s.topics.read().contains_key(name) {
            return Err(Error::TopicExists {
                topic: name.to_owned(),
            });
        }
        let name_arc: Arc<str> = Arc::from(name);
        let mut logs = Vec::with_capacity(config.partitions as usize);
        let created = (|| {
            for p in 0..config.partitions {
                // A directory left by a crash before the topics file named it.
                io::remove_dir_all(&s.dir.join(dir_name(name, p)))?;
                logs.push(Arc::new(PartitionLog::create(
                    &s.dir,
                    Arc::clone(&name_arc),
                    p,
                    limits(&config),
                )?));
            }
            let mut file = self.topics_file();
            file.topics.insert(name.to_owned(), config.clone());
            write_meta(&s.dir.join(TOPICS_FILE), &file)
        })();
        if let Err(e) = created {
            for log in &logs {
                let _ = log.delete_files();
            }
            return Err(e);
        }
        let inner = Arc::new(TopicInner::new(
            name_arc,
            config,
            Partitions::local(logs),
            s.config.sync,
        ));
        // Before the topic is visible: a commit for it must be stored.
        s.coordinator.offsets.topic_created(name);
        s.topics.write().insert(name.to_owned(), Arc::clone(&inner));
        s.metadata_epoch.fetch_add(1, Ordering::AcqRel);
        // Drop any recovery point a deleted topic of this name left behind.
        s.write_checkpoint()?;
        Ok(Topic::new(inner))
    }

    fn topics_file(&self) -> TopicsFile {
        let topics = self.inner.shared.topics.read();
        TopicsFile {
            version: 1,
            topics: topics
                .iter()
                .map(|(n, t)| (n.clone(), t.config.read().clone()))
                .collect(),
        }
    }

    /// An existing topic, or [`Error::UnknownTopic`].
    pub fn topic(&self, name: &str) -> Result<Topic> {
        self.check_open()?;
        self.inner
            .shared
            .topics
            .read()
            .get(name)
            .map(|t| Topic::new(Arc::clone(t)))
            .ok_or_else(|| Error::UnknownTopic {
                topic: name.to_owned(),
            })
    }

    /// Names of all topics, sorted.
    pub fn topics(&self) -> Vec<String> {
        self.inner.shared.topics.read().keys().cloned().collect()
    }

    /// Grows a topic to `partitions` in total; never fewer
    /// ([`Error::InvalidPartitions`]).
    pub fn add_partitions(&self, name: &str, partitions: u32) -> Result<()> {
        self.check_open()?;
        let s = &self.inner.shared;
        let _admin = s.admin()?;
        let topic = s.topic_inner(name)?;
        let current = topic.partitions.len() as u32;
        if partitions <= current {
            return Err(Error::InvalidPartitions {
                topic: name.to_owned(),
                requested: partitions,
                current,
            });
        }
        if partitions > MAX_PARTITIONS {
            return Err(Error::config(format!(
                "topic {name:?}: partitions must be at most {MAX_PARTITIONS}, got {partitions}"
            )));
        }
        let cfg = topic.config.read().clone();
        let mut new_logs = Vec::new();
        for p in current..partitions {
            io::remove_dir_all(&s.dir.join(dir_name(name, p)))?;
            new_logs.push(Arc::new(PartitionLog::create(
                &s.dir,
                Arc::clone(&topic.name),
                p,
                limits(&cfg),
            )?));
        }
        let mut file = self.topics_file();
        file.topics
            .insert(name.to_owned(), cfg.partitions(partitions));
        write_meta(&s.dir.join(TOPICS_FILE), &file)?;
        topic.config.write().partitions = partitions;
        topic.partitions.extend(new_logs);
        s.metadata_epoch.fetch_add(1, Ordering::AcqRel);
        s.write_checkpoint()
    }

    /// Changes the codec a topic's new batches are compressed with (Kafka's
    /// `compression.type`), persisted with the topic. Batches already
    /// written keep their codec and stay readable.
    pub fn set_compression(&self, name: &str, codec: Compression) -> Result<()> {
        self.check_open()?;
        let s = &self.inner.shared;
        let _admin = s.admin()?;
        let topic = s.topic_inner(name)?;
        let cfg = topic.config.read().clone().compression(codec);
        cfg.validate(name)?;
        let mut file = self.topics_file();
        file.topics.insert(name.to_owned(), cfg);
        write_meta(&s.dir.join(TOPICS_FILE), &file)?;
        topic.config.write().compression = codec;
        for log in topic.partitions.view().iter() {
            log.set_compression(codec);
        }
        Ok(())
    }

    /// Deletes a topic and its data. Handles to it fail with
    /// [`Error::UnknownTopic`] afterwards; messages already read stay valid.
    /// Calls racing the deletion either finish before it or fail so; a
    /// compaction of one of its partitions in progress is stopped at its
    /// next batch and fails with `UnknownTopic` (segments it already
    /// swapped in stay compacted; a swap past its commit point finishes
    /// first), and
    /// consumer groups' committed offsets for it are removed (commits that
    /// arrive later store nothing, until a topic of that name is created
    /// again).
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        self.check_open()?;
        let s = &self.inner.shared;
        let _admin = s.admin()?;
        let topic = s.topic_inner(name)?;
        let mut file = self.topics_file();
        file.topics.remove(name);
        write_meta(&s.dir.join(TOPICS_FILE), &file)?;
        s.topics.write().remove(name);
        topic.deleted.store(true, Ordering::Release);
        #[cfg(test)]
        io::faults::run_in_topic_deletion();
        s.metadata_epoch.fetch_add(1, Ordering::AcqRel);
        s.coordinator.offsets.remove_topic(name)?;
        for log in topic.partitions.view().iter() {
            log.delete_files()?;
        }
        io::sync_dir(&s.dir)?;
        s.write_checkpoint()
    }

    /// A consumer in `group` with the default [`ConsumerConfig`].
    pub fn consumer(&self, group: &str) -> Result<Consumer> {
        self.consumer_with(ConsumerConfig::new(group))
    }

    /// A consumer with this configuration.
    pub fn consumer_with(&self, config: ConsumerConfig) -> Result<Consumer> {
        self.check_open()?;
        let s = &self.inner.shared;
        let source: Arc<dyn TopicSource> = Arc::clone(s) as Arc<dyn TopicSource>;
        Consumer::new(config, Arc::clone(&s.coordinator), source)
    }

    /// The admin view of a consumer group (it need not exist yet).
    pub fn group(&self, id: &str) -> Result<ConsumerGroup> {
        self.check_open()?;
        validate_group_id(id)?;
        let s = &self.inner.shared;
        Ok(ConsumerGroup {
            id: id.to_owned(),
            coordinator: Arc::clone(&s.coordinator),
            source: Arc::clone(s) as Arc<dyn TopicSource>,
        })
    }

    /// Ids of the groups that have members or committed offsets, sorted.
    pub fn groups(&self) -> Vec<String> {
        self.inner.shared.coordinator.group_ids()
    }

    /// A snapshot of the log's counters and state: per partition records
    /// and bytes in and out, offsets, size, segments, fsyncs and append
    /// latency; per consumer group its lag (see [`Metrics`]). Counters
    /// start at zero when the log opens. Cheap enough to call every few
    /// seconds: it takes each partition's lock briefly, reads no file.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let log = brook::Log::open(dir.path())?;
    /// let t = log.create_topic("orders", brook::TopicConfig::default())?;
    /// t.send_batch((0..10).map(|i| brook::Record::new(format!("order {i}"))))?;
    /// log.sync()?;
    /// let m = log.metrics();
    /// let p = m.partition("orders", 0).unwrap();
    /// assert_eq!(p.records_in, 10);
    /// assert_eq!(p.append_latency.count(), 1);   // one call
    /// assert!(p.fsyncs >= 1);
    /// # Ok::<(), brook::Error>(())
    /// ```
    pub fn metrics(&self) -> Metrics {
        let s = &self.inner.shared;
        let mut m = Metrics::default();
        let user: Vec<Arc<PartitionLog>> = s
            .topics
            .read()
            .values()
            .flat_map(|t| t.partitions.to_vec())
            .collect();
        for log in &user {
            m.partitions.push(log.metrics());
        }
        for p in &m.partitions {
            m.append_latency.merge(&p.append_latency);
            m.fsyncs += p.fsyncs;
            m.fsync_time_ns += p.fsync_time_ns;
        }
        for log in [s.coordinator.offsets.log(), s.txns.log()] {
            let p = log.metrics();
            m.fsyncs += p.fsyncs;
            m.fsync_time_ns += p.fsync_time_ns;
        }
        let source = Arc::clone(s) as Arc<dyn TopicSource>;
        m.groups = group_metrics(&s.coordinator, &source);
        m
    }

    /// A new producer (see [`Producer`]): idempotent by default, with a
    /// producer id never handed out before in this directory.
    pub fn producer(&self, config: ProducerConfig) -> Result<Producer> {
        Producer::open(Box::new(self.clone()), config)
    }

    /// Runs a compaction pass over every partition of a compacted topic
    /// now, whatever the dirty ratio (still respecting
    /// `min_compaction_lag`). For tests and operators; a background cleaner
    /// does the same when the dirty ratio passes `min_cleanable_dirty_ratio`.
    pub fn compact_now(&self, topic: &str) -> Result<CompactionStats> {
        self.check_open()?;
        let s = &self.inner.shared;
        let t = s.topic_inner(topic)?;
        let cfg = t.config.read().clone();
        if !cfg.cleanup_policy.compacts() {
            return Err(Error::config(format!(
                "topic {topic:?} is not compacted (cleanup_policy {:?})",
                cfg.cleanup_policy
            )));
        }
        let mut stats = CompactionStats::default();
        for log in t.partitions.to_vec() {
            stats.add(log.compact(compact_settings(&cfg, true))?);
        }
        Ok(stats)
    }

    /// Hands everything appended so far to the OS as whole batches (it is
    /// already safe from a process crash; see [`sync`](Self::sync) for power loss).
    pub fn flush(&self) -> Result<()> {
        self.check_open()?;
        for log in self.inner.shared.partitions() {
            log.flush()?;
        }
        Ok(())
    }

    /// Forces everything appended so far to stable storage (fsync).
    pub fn sync(&self) -> Result<()> {
        self.check_open()?;
        for log in self.inner.shared.partitions() {
            log.sync()?;
        }
        Ok(())
    }

    /// Clean shutdown: seals and fsyncs every partition, records the end
    /// state so the next open needs no recovery, and releases the lock.
    /// Later calls on this log (or its topics) fail with [`Error::Closed`].
    pub fn close(&self) -> Result<()> {
        close(&self.inner.shared, &self.inner.background)
    }
}

impl ProducerHost for Log {
    fn topic(&self, name: &str) -> Result<Topic> {
        Log::topic(self, name)
    }

    fn coordinator(&self) -> Result<(&TxnStore, &dyn TxnHost)> {
        self.check_open()?;
        let s = &self.inner.shared;
        Ok((&s.txns, &**s))
    }
}

impl TopicSource for Shared {
    fn partitions(&self, topic: &str) -> Result<Vec<Arc<PartitionLog>>> {
        self.topics
            .read()
            .get(topic)
            .map(|t| t.partitions.to_vec())
            .ok_or_else(|| Error::UnknownTopic {
                topic: topic.to_owned(),
            })
    }

    fn partition_count(&self, topic: &str) -> Option<u32> {
        self.topics
            .read()
            .get(topic)
            .map(|t| t.partitions.len() as u32)
    }

    fn metadata_epoch(&self) -> u64 {
        self.metadata_epoch.load(Ordering::Acquire)
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed {
                what: format!("log {} is closed", self.dir.display()),
            });
        }
        Ok(())
    }
}

impl TxnHost for Shared {
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
        // A topic deleted since holds nothing to mark, also when it is
        // deleted between the lookup and the marker.
        let Some(log) = self.partition_log(topic, partition) else {
            return Ok(());
        };
        let marker = match log.append_marker(producer_id, epoch, commit) {
            Err(Error::UnknownTopic { .. }) => return Ok(()),
            other => other?,
        };
        if self.config.sync == SyncPolicy::Always {
            // A marker found already written (a completion retried after
            // an error) may be one whose sync failed: it is made durable
            // now, with everything before it, as the cluster's path does.
            let end = marker.map_or_else(|| log.log_end_offset(), |offset| offset + 1);
            log.sync_to(end)?;
        }
        Ok(())
    }

    fn commit_offsets(&self, group: &str, offsets: &[(TopicPartition, Option<u64>)]) -> Result<()> {
        self.coordinator.offsets.commit(group, offsets)
    }
}

impl Shared {
    /// Every partition log, the internal offset store included.
    fn partitions(&self) -> Vec<Arc<PartitionLog>> {
        let mut all: Vec<Arc<PartitionLog>> = self
            .topics
            .read()
            .values()
            .flat_map(|t| t.partitions.to_vec())
            .collect();
        all.push(Arc::clone(self.coordinator.offsets.log()));
        all.push(Arc::clone(self.txns.log()));
        all
    }

    /// The admin lock, once the log is known to be still open: `close`
    /// holds it, so an admin call that got past its first check waits for
    /// the close and then fails here instead of changing a closed log.
    fn admin(&self) -> Result<MutexGuard<'_, ()>> {
        let guard = self.admin.lock();
        self.check_open()?;
        Ok(guard)
    }

    /// An existing topic's shared state, or [`Error::UnknownTopic`].
    fn topic_inner(&self, name: &str) -> Result<Arc<TopicInner>> {
        self.topics
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownTopic {
                topic: name.to_owned(),
            })
    }

    /// The partition log of `topic`-`partition`, if the topic exists.
    fn partition_log(&self, topic: &str, partition: u32) -> Option<Arc<PartitionLog>> {
        let topics = self.topics.read();
        let t = topics.get(topic)?;
        t.partitions.get(partition as usize)
    }

    fn checkpoint(&self, clean: &BTreeMap<(String, u32), CleanState>) -> CheckpointFile {
        let mut partitions = Vec::new();
        for log in self.partitions() {
            {
                let rp = log.recovery_point();
                let c = clean.get(&(log.topic.to_string(), log.partition));
                partitions.push(PartitionCheckpoint {
                    topic: log.topic.to_string(),
                    partition: log.partition,
                    recovery_segment: rp.segment,
                    recovery_position: rp.position,
                    clean_offset: log.clean_offset(),
                    producers: log.producer_snapshot(),
                    clean: c.map(|c| CleanCheckpoint {
                        next_offset: c.next_offset,
                        active_len: c.active_len,
                        max_timestamp: c.max_timestamp,
                        offset_of_max_timestamp: c.offset_of_max_timestamp,
                    }),
                });
            }
        }
        CheckpointFile {
            version: 1,
            partitions,
        }
    }

    /// Writes the checkpoint if it changed since the last write.
    fn write_checkpoint(&self) -> Result<()> {
        let cp = self.checkpoint(&BTreeMap::new());
        let mut last = self.last_checkpoint.lock();
        if last.as_ref() == Some(&cp) {
            return Ok(());
        }
        write_meta(&self.dir.join(CHECKPOINT_FILE), &cp)?;
        *last = Some(cp);
        Ok(())
    }
}

fn close(shared: &Arc<Shared>, background: &Mutex<Option<JoinHandle<()>>>) -> Result<()> {
    if shared.closed.swap(true, Ordering::AcqRel) {
        return Ok(());
    }
    *shared.stop.lock() = true;
    shared.stop_cv.notify_all();
    if let Some(h) = background.lock().take() {
        let _ = h.join();
    }
    // A topic created, grown or deleted meanwhile is done first: its
    // partitions are then in the list, or gone with their files.
    let _admin = shared.admin.lock();
    let mut clean = BTreeMap::new();
    let mut first_err = None;
    for log in shared.partitions() {
        match log.close() {
            Ok((_, state)) => {
                clean.insert((log.topic.to_string(), log.partition), state);
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    let result = match first_err {
        Some(e) => Err(e),
        None => write_meta(
            &shared.dir.join(CHECKPOINT_FILE),
            &shared.checkpoint(&clean),
        )
        .and_then(|()| io::write_atomic(&shared.dir.join(CLEAN_MARKER), b"")),
    };
    shared.lock.lock().take();
    match &result {
        Ok(()) => tracing::info!(dir = %shared.dir.display(), "log closed cleanly"),
        Err(e) => tracing::error!(
            dir = %shared.dir.display(),
            error = %e,
            "log close failed: the next open recovers"
        ),
    }
    result
}

/// The background loop: runs until the log closes.
fn background(shared: Arc<Shared>) {
    let sync_interval = match shared.config.sync {
        SyncPolicy::Interval(d) => Some(d),
        _ => None,
    };
    let retention_every = shared.config.retention_check_interval;
    let tick = [
        Some(Duration::from_millis(500)),
        sync_interval,
        Some(retention_every),
    ]
    .into_iter()
    .flatten()
    .min()
    .expect("a tick");
    let mut last_retention = Instant::now();
    let mut last_checkpoint = Instant::now();
    let mut errors = BackgroundErrors::default();
    loop {
        {
            let mut stop = shared.stop.lock();
            if !*stop {
                shared.stop_cv.wait_for(&mut stop, tick);
            }
            if *stop {
                return;
            }
        }
        let partitions = shared.partitions();
        for log in &partitions {
            log.seal_if_idle(OPEN_BATCH_LINGER);
            if sync_interval.is_some() {
                // A failed fsync has already made the partition read-only
                // (and said so); appenders see the error.
                errors.check("sync", Some(log), log.sync());
            }
            errors.check("flush of rolled segments", Some(log), log.flush_rolled());
        }
        // The cleaner: compacted topics whose dirty ratio passed the mark.
        let compacted: Vec<(TopicConfig, Vec<Arc<PartitionLog>>)> = shared
            .topics
            .read()
            .values()
            .map(|t| (t.config.read().clone(), t.partitions.to_vec()))
            .filter(|(c, _)| shared.config.cleaner && c.cleanup_policy.compacts())
            .collect();
        for (cfg, logs) in compacted {
            for log in logs {
                let result = log.compact(compact_settings(&cfg, false));
                errors.check("compaction", Some(&log), result);
            }
        }
        if last_retention.elapsed() >= retention_every {
            last_retention = Instant::now();
            let now = now_ms();
            for log in &partitions {
                errors.check("retention", Some(log), log.apply_retention(now));
            }
        }
        let aborted = shared.txns.abort_expired(&*shared);
        errors.check("transaction timeout", None, aborted);
        if last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL {
            last_checkpoint = Instant::now();
            errors.check("checkpoint", None, shared.write_checkpoint());
        }
    }
}

/// Errors of the background thread's work. Nobody waits for that work, so
/// its errors are logged: at `warn`, once when one appears or changes (not
/// at every tick while it persists), and at `info` when the work succeeds
/// again. `UnknownTopic` is not an error here: the thread took its list of
/// partitions before a topic's deletion, and a compaction of one of them
/// (one the deletion stopped, or one that started after it) found it
/// deleted. (Syncs and retention answer `Ok` for a deleted partition.)
#[derive(Default)]
struct BackgroundErrors {
    /// `(task, partition)` to the message last logged.
    current: std::collections::HashMap<(&'static str, String), String>,
}

/// What [`BackgroundErrors::check`] logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Logged {
    Nothing,
    Failure,
    Recovery,
}

impl BackgroundErrors {
    fn check<T>(
        &mut self,
        task: &'static str,
        log: Option<&Arc<PartitionLog>>,
        result: Result<T>,
    ) -> Logged {
        let key = || {
            let partition = log.map_or_else(String::new, |l| dir_name(&l.topic, l.partition));
            (task, partition)
        };
        match result {
            Ok(_) | Err(Error::UnknownTopic { .. }) if self.current.is_empty() => Logged::Nothing,
            Err(Error::UnknownTopic { .. }) => {
                // Gone with its partition: an error logged before is moot.
                self.current.remove(&key());
                Logged::Nothing
            }
            Ok(_) => {
                let key = key();
                if self.current.remove(&key).is_none() {
                    return Logged::Nothing;
                }
                tracing::info!(task, partition = %key.1, "background work succeeds again");
                Logged::Recovery
            }
            Err(e) => {
                let message = e.to_string();
                let key = key();
                if self.current.get(&key) == Some(&message) {
                    return Logged::Nothing;
                }
                tracing::warn!(task, partition = %key.1, error = %message, "background work failed");
                self.current.insert(key, message);
                Logged::Failure
            }
        }
    }
}

/// `txn_id`'s state, if `producer` (id, epoch) is its current instance.
fn compact_settings(cfg: &TopicConfig, force: bool) -> CompactSettings {
    let ms = |d: Duration| d.as_millis().min(u64::MAX as u128) as u64;
    CompactSettings {
        now_ms: now_ms(),
        force,
        min_dirty_ratio: cfg.min_cleanable_dirty_ratio,
        min_lag_ms: ms(cfg.min_compaction_lag),
        delete_retention_ms: ms(cfg.delete_retention),
    }
}

/// What a compaction pass did (summed over partitions).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompactionStats {
    /// Segments read.
    pub segments_in: u64,
    /// Segments written.
    pub segments_out: u64,
    /// Records read.
    pub records_in: u64,
    /// Records kept.
    pub records_out: u64,
    /// Bytes read.
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
}

impl CompactionStats {
    fn add(&mut self, r: CompactionReport) {
        self.segments_in += r.segments_in;
        self.segments_out += r.segments_out;
        self.records_in += r.records_in;
        self.records_out += r.records_out;
        self.bytes_in += r.bytes_in;
        self.bytes_out += r.bytes_out;
    }
}

/// Per-partition limits of a topic; retention applies only when the
/// cleanup policy deletes.
pub(crate) fn limits(cfg: &TopicConfig) -> Limits {
    let deletes = cfg.cleanup_policy.deletes();
    Limits {
        segment_bytes: cfg.segment_bytes,
        compacted: cfg.cleanup_policy.compacts(),
        retention_bytes: cfg.retention_bytes.filter(|_| deletes),
        retention_ms: cfg
            .retention
            .filter(|_| deletes)
            .map(|d| d.as_millis().min(u64::MAX as u128) as u64),
        compression: cfg.compression,
    }
}

/// `<topic>-<partition>` with a valid topic name.
fn parse_partition_dir(name: &str) -> Option<(&str, u32)> {
    let (topic, p) = name.rsplit_once('-')?;
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || validate_topic_name(topic).is_err()
    {
        return None;
    }
    Some((topic, p.parse().ok()?))
}

/// Topic names brook uses itself.
const RESERVED_TOPICS: [&str; 2] = [OFFSETS_TOPIC, TXN_TOPIC];

/// Removes partition directories the topics file does not name (left by a
/// crash during topic creation or deletion).
fn remove_orphans(dir: &Path, topics: &TopicsFile) -> Result<()> {
    let mut removed = false;
    for e in io::list_dir(dir)? {
        if !e.is_dir {
            continue;
        }
        if let Some((topic, p)) = parse_partition_dir(&e.name) {
            if RESERVED_TOPICS.contains(&topic) {
                continue;
            }
            let owned = topics.topics.get(topic).is_some_and(|c| p < c.partitions);
            if !owned {
                io::remove_dir_all(&dir.join(&e.name))?;
                removed = true;
            }
        }
    }
    if removed {
        io::sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a transaction's marker for a partition whose topic was
    /// deleted between the lookup and the append failed the commit or
    /// abort with `Error::UnknownTopic`; such partitions are skipped.
    #[test]
    fn a_marker_for_a_partition_deleted_meanwhile_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path()).unwrap();
        log.create_topic("t", TopicConfig::default()).unwrap();
        let s = &log.inner.shared;
        // Deleted after the lookup: the log is still in the table.
        s.partition_log("t", 0).unwrap().delete_files().unwrap();
        s.write_marker("t", 0, 1, 0, true).unwrap();
        s.write_marker("t", 0, 1, 0, false).unwrap();
    }

    /// Regression: `close` racing `delete_topic` closed the log while the
    /// deletion went on (its offsets store closed under it: `delete_topic`
    /// failed halfway, with the topic's directories left behind), and an
    /// admin call that passed its open check before `close` changed the
    /// closed log. `close` now waits for admin calls in flight, and admin
    /// calls check again under the admin lock.
    #[test]
    fn close_waits_for_a_topic_deletion_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path()).unwrap();
        let t = log.create_topic("t", TopicConfig::default()).unwrap();
        t.send(crate::Record::new("v")).unwrap();
        // Committed offsets: deleting the topic removes them through the
        // offsets log, which `close` closes.
        let tp = crate::TopicPartition::new("t", 0);
        log.group("g")
            .unwrap()
            .reset_offsets(&[tp], crate::ResetTo::Latest)
            .unwrap();
        let closing = Arc::new(Mutex::new(None));
        let (l, c) = (log.clone(), Arc::clone(&closing));
        io::faults::in_next_topic_deletion(move || {
            *c.lock() = Some(std::thread::spawn(move || l.close()));
            // Time for the close to run, were it not waiting.
            std::thread::sleep(Duration::from_millis(100));
        });
        log.delete_topic("t").unwrap();
        let close = closing.lock().take().unwrap();
        close.join().unwrap().unwrap();
        assert!(matches!(
            log.create_topic("u", TopicConfig::default()),
            Err(Error::Closed { .. })
        ));
        assert!(!dir.path().join("t-0").exists());
        assert!(dir.path().join(CLEAN_MARKER).exists());
        let log = Log::open(dir.path()).unwrap();
        assert!(matches!(log.topic("t"), Err(Error::UnknownTopic { .. })));
    }

    /// Completing a transaction again (after an error, say a failed
    /// sync) finds its marker written and writes none: under
    /// `SyncPolicy::Always` it still makes the partition durable to its
    /// end, or the retry would report durable a marker that is not.
    #[test]
    fn a_marker_found_written_is_still_synced_under_sync_always() {
        let dir = tempfile::tempdir().unwrap();
        let log =
            Log::open_with(dir.path(), LogConfig::default().sync(SyncPolicy::Always)).unwrap();
        log.create_topic("t", TopicConfig::default()).unwrap();
        let s = &log.inner.shared;
        let part = s.partition_log("t", 0).unwrap();
        // A record in the page cache only (as after a sync that failed).
        let parts = crate::format::RecordParts::new(None, Some(b"v"), &[]);
        part.append([(parts, 1_000)], |_, _| {}).unwrap();
        let fsyncs = || log.metrics().partition("t", 0).unwrap().fsyncs;
        let before = fsyncs();
        // No transaction of this producer is open here: no marker to write.
        s.write_marker("t", 0, 7, 0, true).unwrap();
        assert_eq!(
            fsyncs(),
            before + 1,
            "synced although no marker was written"
        );
        s.write_marker("t", 0, 7, 0, true).unwrap();
        assert_eq!(fsyncs(), before + 1, "nothing left to sync the second time");
    }

    #[test]
    fn a_persisting_background_error_is_logged_once_and_its_end_once() {
        let failing = |what: &str| -> Result<()> { Err(Error::config(what.to_owned())) };
        let mut errors = BackgroundErrors::default();
        let mut logged = Vec::new();
        for _ in 0..3 {
            logged.push(errors.check("checkpoint", None, failing("disk on fire")));
        }
        logged.push(errors.check("retention", None, failing("disk on fire")));
        logged.push(errors.check("checkpoint", None, failing("disk full")));
        logged.push(errors.check("checkpoint", None, Ok(())));
        logged.push(errors.check("checkpoint", None, Ok(())));
        // Work on a partition deleted meanwhile: nothing to report, and
        // what was logged for it is forgotten.
        let deleted = || -> Result<()> { Err(Error::UnknownTopic { topic: "t".into() }) };
        logged.push(errors.check("retention", None, deleted()));
        assert!(errors.current.is_empty(), "{:?}", errors.current);
        use Logged::*;
        assert_eq!(
            logged,
            [Failure, Nothing, Nothing, Failure, Failure, Recovery, Nothing, Nothing],
            "once per task and distinct error; once when it clears; never for a deleted topic"
        );
    }

    #[test]
    fn meta_files_detect_damage() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m");
        write_meta(&p, &TopicsFile::default()).unwrap();
        assert!(read_meta::<TopicsFile>(&p).unwrap().is_some());
        let mut b = std::fs::read(&p).unwrap();
        let last = b.len() - 2;
        b[last] ^= 1;
        std::fs::write(&p, b).unwrap();
        assert!(matches!(
            read_meta::<TopicsFile>(&p),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn partition_dir_names_parse_from_the_right() {
        assert_eq!(parse_partition_dir("my-topic-12"), Some(("my-topic", 12)));
        assert_eq!(parse_partition_dir("orders"), None);
        assert_eq!(parse_partition_dir("a-b"), None);
    }

    /// A retry through the partition's idempotent path, as a producer whose
    /// send failed with an unknown outcome would make it.
    fn retry(log: &Log, pid: i64, seq: i32) -> Result<Option<u64>> {
        let t = log.inner.shared.topics.read()["t"]
            .partitions
            .get(0)
            .unwrap();
        let parts = crate::format::RecordParts::new(Some(b"k"), Some(b"v"), &[]);
        let b = crate::format::ProducerBatch {
            producer_id: pid,
            epoch: 0,
            base_sequence: seq,
            attributes: 0,
        };
        t.append_idempotent(b, &[(parts, 1)], |_, _| {})
    }

    #[test]
    fn producer_state_survives_close_and_a_crash_through_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path()).unwrap();
        log.create_topic("t", TopicConfig::default()).unwrap();
        // A checkpoint from before any producer...
        log.inner.shared.write_checkpoint().unwrap();
        let no_producers = std::fs::read(dir.path().join(CHECKPOINT_FILE)).unwrap();
        let mut p = log.producer(ProducerConfig::default()).unwrap();
        for i in 0..5 {
            p.send("t", crate::Record::new(format!("{i}"))).unwrap();
        }
        let pid = p.producer_id();
        log.close().unwrap();
        drop((p, log));
        // ...is all a crash leaves: recovery walks from its recovery point.
        let crashed = |checkpoint: &[u8]| {
            let _ = std::fs::remove_file(dir.path().join(CLEAN_MARKER));
            std::fs::write(dir.path().join(CHECKPOINT_FILE), checkpoint).unwrap();
            Log::open(dir.path()).unwrap()
        };
        let log = crashed(&no_producers);
        assert_eq!(retry(&log, pid, 3).unwrap(), Some(3));
        log.close().unwrap();
        drop(log);
        // Clean reopen: the state comes from the checkpoint alone.
        let log = Log::open(dir.path()).unwrap();
        assert_eq!(retry(&log, pid, 4).unwrap(), Some(4));
        assert!(matches!(
            retry(&log, pid, 7),
            Err(Error::OutOfOrderSequence { expected: 5, .. })
        ));
        // A checkpoint with the snapshot, more sends, then a "crash": the
        // clean-shutdown marker is gone, so recovery replays the batches
        // after the snapshot.
        log.inner.shared.write_checkpoint().unwrap();
        let old_checkpoint = std::fs::read(dir.path().join(CHECKPOINT_FILE)).unwrap();
        let mut p2 = log.producer(ProducerConfig::default()).unwrap();
        p2.send("t", crate::Record::new("x")).unwrap();
        assert_eq!(retry(&log, pid, 5).unwrap(), None);
        let pid2 = p2.producer_id();
        log.close().unwrap();
        drop((p2, log));
        let log = crashed(&old_checkpoint);
        assert_eq!(retry(&log, pid, 5).unwrap(), Some(6));
        assert_eq!(retry(&log, pid2, 0).unwrap(), Some(5));
        assert_eq!(retry(&log, pid, 6).unwrap(), None);
    }
}
