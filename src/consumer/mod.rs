//! Consumers and consumer groups with durable committed offsets.
//!
//! A [`Consumer`] either *subscribes* to topics as a member of its group —
//! the group then splits the topics' partitions between its members (see
//! [`group`](self::group) for the protocol) — or is *assigned* fixed
//! partitions with no group management. `poll` returns messages from the
//! consumer's unpaused partitions, fairly, in offset order per partition,
//! and waits for an append (a notification, not a sleep loop) when there is
//! nothing to return.
//!
//! Delivery is at-least-once: a committed offset is the next offset to read,
//! and a consumer that crashes resumes at its group's last commit. Commits
//! are records in the internal `__consumer_offsets` log (see
//! [`offsets`](self::offsets)), durable like appends under the log's
//! [`SyncPolicy`](crate::SyncPolicy).

mod assignor;
mod group;
mod offsets;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub use assignor::Assignor;
pub(crate) use group::{group_metrics, validate_group_id, Coordinator};
pub use group::{ConsumerGroup, MemberDescription, PartitionLag, ResetTo};
#[cfg(feature = "fuzzing")]
pub(crate) use offsets::{decode_record as decode_offset_record, encode_key as encode_offset_key};
pub(crate) use offsets::{OffsetStore, OFFSETS_TOPIC};

use group::{GroupState, Member};

use crate::error::{Error, Result};
use crate::record::{Message, TopicPartition};
use crate::storage::{Notify, PartitionLog};

/// What a consumer reads from: the topics of a log (or a cluster).
pub(crate) trait TopicSource: Send + Sync {
    /// The partitions of a topic, or [`Error::UnknownTopic`].
    fn partitions(&self, topic: &str) -> Result<Vec<Arc<PartitionLog>>>;
    /// A topic's partition count, `None` if it does not exist.
    fn partition_count(&self, topic: &str) -> Option<u32>;
    /// Bumped whenever topics are created, deleted or grow.
    fn metadata_epoch(&self) -> u64;
    /// [`Error::Closed`] once the log is closed.
    fn check_open(&self) -> Result<()>;
    /// Whether a partition's log changing under a consumer keeps its
    /// position: a cluster's new leader holds the same records; a
    /// re-created topic on a log starts over.
    fn keeps_positions(&self) -> bool {
        false
    }

    /// One partition, or [`Error::UnknownTopic`] / [`Error::UnknownPartition`].
    fn partition(&self, tp: &TopicPartition) -> Result<Arc<PartitionLog>> {
        let parts = self.partitions(&tp.topic)?;
        parts
            .get(tp.partition as usize)
            .cloned()
            .ok_or_else(|| Error::UnknownPartition {
                topic: tp.topic.clone(),
                partition: tp.partition,
                partitions: parts.len() as u32,
            })
    }
}

/// Where a consumer starts in a partition its group has no committed
/// offset for (and after retention deleted its position).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OffsetReset {
    /// The first stored offset.
    Earliest,
    /// The end: only records appended from now on (Kafka's default).
    #[default]
    Latest,
    /// Fail with [`Error::NoOffset`].
    None,
}

/// Which records of transactions a consumer sees (Kafka's
/// `isolation.level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum IsolationLevel {
    /// Every record, including those of open and aborted transactions
    /// (Kafka's default).
    #[default]
    ReadUncommitted,
    /// Only records outside transactions and of committed ones: a partition
    /// is read up to its last stable offset (the first record of its oldest
    /// open transaction) and aborted records are skipped.
    ReadCommitted,
}

/// Callbacks around a rebalance: commit or flush before partitions go,
/// set up state when they arrive.
///
/// ```
/// struct CommitOnRevoke;
/// impl brook::RebalanceListener for CommitOnRevoke {
///     fn on_partitions_revoked(&mut self, consumer: &mut brook::RebalanceContext<'_>, _: &[brook::TopicPartition]) {
///         let _ = consumer.commit();
///     }
/// }
/// ```
pub trait RebalanceListener: Send {
    /// These partitions are about to move to another member; the consumer
    /// still owns them, so commits for them succeed.
    fn on_partitions_revoked(
        &mut self,
        _consumer: &mut RebalanceContext<'_>,
        _partitions: &[TopicPartition],
    ) {
    }
    /// These partitions were just assigned.
    fn on_partitions_assigned(
        &mut self,
        _consumer: &mut RebalanceContext<'_>,
        _partitions: &[TopicPartition],
    ) {
    }
    /// These partitions were taken away because the consumer missed its
    /// session timeout; commits for them are no longer accepted.
    fn on_partitions_lost(&mut self, _partitions: &[TopicPartition]) {}
}

/// What a [`RebalanceListener`] may do with the consumer during a callback.
pub struct RebalanceContext<'a> {
    consumer: &'a mut Consumer,
}

impl RebalanceContext<'_> {
    /// Commits the position of every assigned partition.
    pub fn commit(&mut self) -> Result<()> {
        self.consumer.commit()
    }

    /// Commits explicit offsets.
    pub fn commit_offsets(&mut self, offsets: &[(TopicPartition, u64)]) -> Result<()> {
        self.consumer.commit_offsets(offsets)
    }

    /// The position (next offset to read) of an assigned partition.
    pub fn position(&mut self, tp: &TopicPartition) -> Result<u64> {
        self.consumer.position(tp)
    }

    /// Moves the position of an assigned partition.
    pub fn seek(&mut self, tp: &TopicPartition, offset: u64) -> Result<()> {
        self.consumer.seek(tp, offset)
    }

    /// The group's committed offset of a partition.
    pub fn committed(&self, tp: &TopicPartition) -> Result<Option<u64>> {
        self.consumer.committed(tp)
    }
}

/// Settings of a consumer. Builder style:
/// `ConsumerConfig::new("billing").auto_offset_reset(OffsetReset::Earliest)`.
#[derive(Clone)]
#[non_exhaustive]
pub struct ConsumerConfig {
    /// The group id: members of one group split partitions and share offsets.
    pub group_id: String,
    /// Where to start without a committed offset (default [`OffsetReset::Latest`]).
    pub auto_offset_reset: OffsetReset,
    /// Commit positions every `auto_commit_interval` during `poll`, before
    /// partitions are revoked, and at `close` (default true).
    pub enable_auto_commit: bool,
    /// Default 5 s, like Kafka.
    pub auto_commit_interval: Duration,
    /// Most messages one `poll` returns (default 500).
    pub max_poll_records: usize,
    /// How the group splits partitions (default [`Assignor::Range`]).
    pub assignor: Assignor,
    /// A member that does not poll for this long is evicted and its
    /// partitions move (default 10 s: in-process members need no network
    /// slack, unlike Kafka's 45 s).
    pub session_timeout: Duration,
    /// Which transactional records `poll` returns (default
    /// [`IsolationLevel::ReadUncommitted`], like Kafka).
    pub isolation_level: IsolationLevel,
    listener: Option<Arc<Mutex<dyn RebalanceListener>>>,
}

impl std::fmt::Debug for ConsumerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerConfig")
            .field("group_id", &self.group_id)
            .field("auto_offset_reset", &self.auto_offset_reset)
            .field("enable_auto_commit", &self.enable_auto_commit)
            .field("auto_commit_interval", &self.auto_commit_interval)
            .field("max_poll_records", &self.max_poll_records)
            .field("assignor", &self.assignor)
            .field("session_timeout", &self.session_timeout)
            .field("isolation_level", &self.isolation_level)
            .field("listener", &self.listener.is_some())
            .finish()
    }
}

impl ConsumerConfig {
    /// Defaults for a member of `group_id`.
    pub fn new(group_id: impl Into<String>) -> ConsumerConfig {
        ConsumerConfig {
            group_id: group_id.into(),
            auto_offset_reset: OffsetReset::Latest,
            enable_auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
            max_poll_records: 500,
            assignor: Assignor::Range,
            session_timeout: Duration::from_secs(10),
            isolation_level: IsolationLevel::ReadUncommitted,
            listener: None,
        }
    }

    /// Sets [`auto_offset_reset`](Self::auto_offset_reset).
    pub fn auto_offset_reset(mut self, reset: OffsetReset) -> Self {
        self.auto_offset_reset = reset;
        self
    }

    /// Sets [`enable_auto_commit`](Self::enable_auto_commit).
    pub fn enable_auto_commit(mut self, enable: bool) -> Self {
        self.enable_auto_commit = enable;
        self
    }

    /// Sets [`auto_commit_interval`](Self::auto_commit_interval).
    pub fn auto_commit_interval(mut self, interval: Duration) -> Self {
        self.auto_commit_interval = interval;
        self
    }

    /// Sets [`max_poll_records`](Self::max_poll_records).
    pub fn max_poll_records(mut self, n: usize) -> Self {
        self.max_poll_records = n;
        self
    }

    /// Sets [`assignor`](Self::assignor).
    pub fn assignor(mut self, assignor: Assignor) -> Self {
        self.assignor = assignor;
        self
    }

    /// Sets [`session_timeout`](Self::session_timeout).
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }

    /// Sets [`isolation_level`](Self::isolation_level).
    pub fn isolation_level(mut self, level: IsolationLevel) -> Self {
        self.isolation_level = level;
        self
    }

    /// Calls `listener` around rebalances of this consumer.
    pub fn on_rebalance(mut self, listener: impl RebalanceListener + 'static) -> Self {
        self.listener = Some(Arc::new(Mutex::new(listener)));
        self
    }

    fn validate(&self) -> Result<()> {
        validate_group_id(&self.group_id)?;
        if self.max_poll_records == 0 {
            return Err(Error::config("max_poll_records must be at least 1"));
        }
        if self.session_timeout.is_zero() || self.auto_commit_interval.is_zero() {
            return Err(Error::config(
                "session_timeout and auto_commit_interval must be above zero",
            ));
        }
        Ok(())
    }
}

struct PartState {
    log: Arc<PartitionLog>,
    /// Next offset to return; `None` until resolved from the committed
    /// offset or the reset policy.
    position: Option<u64>,
    paused: bool,
}

enum Mode {
    Idle,
    Subscribed { member_id: String },
    Assigned,
}

/// Reads records from topics, alone or as a member of a consumer group.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// # use std::time::Duration;
/// let log = brook::Log::open(dir.path())?;
/// let orders = log.create_topic("orders", brook::TopicConfig::default())?;
/// orders.append("k", "v")?;
/// let mut c = log.consumer_with(
///     brook::ConsumerConfig::new("billing").auto_offset_reset(brook::OffsetReset::Earliest),
/// )?;
/// c.subscribe(&["orders"])?;
/// let batch = c.poll(Duration::from_millis(100))?;
/// assert_eq!(batch[0].value(), Some(&b"v"[..]));
/// c.commit()?;
/// # Ok::<(), brook::Error>(())
/// ```
pub struct Consumer {
    config: ConsumerConfig,
    coordinator: Arc<Coordinator>,
    source: Arc<dyn TopicSource>,
    group: Arc<Mutex<GroupState>>,
    notify: Arc<Notify>,
    mode: Mode,
    topics: BTreeSet<String>,
    parts: BTreeMap<TopicPartition, PartState>,
    cursor: usize,
    last_auto_commit: Instant,
    /// Topic metadata epoch the partition handles were taken at.
    seen_epoch: u64,
    closed: bool,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("group", &self.config.group_id)
            .field("member_id", &self.member_id())
            .field("assignment", &self.parts.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Consumer {
    pub(crate) fn new(
        config: ConsumerConfig,
        coordinator: Arc<Coordinator>,
        source: Arc<dyn TopicSource>,
    ) -> Result<Consumer> {
        config.validate()?;
        source.check_open()?;
        let group = coordinator.group(&config.group_id);
        let seen_epoch = source.metadata_epoch();
        Ok(Consumer {
            config,
            coordinator,
            source,
            group,
            notify: Arc::new(Notify::default()),
            mode: Mode::Idle,
            topics: BTreeSet::new(),
            parts: BTreeMap::new(),
            cursor: 0,
            last_auto_commit: Instant::now(),
            seen_epoch,
            closed: false,
        })
    }

    /// What an async consumer waits on: the signal appends and rebalances
    /// ring, and how often it must poll to keep its group membership.
    #[cfg(feature = "tokio")]
    pub(crate) fn wake_source(&self) -> (&Arc<Notify>, Duration) {
        (&self.notify, self.config.session_timeout)
    }

    /// The group id.
    pub fn group_id(&self) -> &str {
        &self.config.group_id
    }

    /// The member id while subscribed.
    pub fn member_id(&self) -> Option<&str> {
        match &self.mode {
            Mode::Subscribed { member_id } => Some(member_id),
            _ => None,
        }
    }

    fn check_usable(&self) -> Result<()> {
        if self.closed {
            return Err(Error::Closed {
                what: format!("consumer of group {:?} is closed", self.config.group_id),
            });
        }
        self.source.check_open()
    }

    /// Joins the group for these topics (replacing an earlier subscription
    /// or assignment). Partitions arrive at the next `poll`.
    pub fn subscribe<S: AsRef<str>>(&mut self, topics: &[S]) -> Result<()> {
        self.check_usable()?;
        let topics: BTreeSet<String> = topics.iter().map(|t| t.as_ref().to_owned()).collect();
        for t in &topics {
            if self.source.partition_count(t).is_none() {
                return Err(Error::UnknownTopic { topic: t.clone() });
            }
        }
        if matches!(self.mode, Mode::Assigned) {
            self.drop_partitions(&self.parts.keys().cloned().collect::<Vec<_>>());
        }
        let mut g = self.group.lock();
        match &self.mode {
            Mode::Subscribed { member_id } => {
                if let Some(m) = g.members.get_mut(member_id) {
                    m.topics = topics.clone();
                    m.last_seen = Instant::now();
                }
            }
            _ => {
                let (id, joined) = self.coordinator.new_member_id(&self.config.group_id);
                g.members.insert(
                    id.clone(),
                    Member {
                        topics: topics.clone(),
                        owned: BTreeSet::new(),
                        last_seen: Instant::now(),
                        session_timeout: self.config.session_timeout,
                        assignor: self.config.assignor,
                        joined,
                        notify: Arc::clone(&self.notify),
                    },
                );
                self.mode = Mode::Subscribed { member_id: id };
            }
        }
        g.dirty = true;
        g.wake_all();
        drop(g);
        self.topics = topics;
        Ok(())
    }

    /// Reads these partitions with no group management (replacing an
    /// earlier subscription, which leaves the group). Offsets may still be
    /// committed for the group id.
    pub fn assign(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        self.check_usable()?;
        let mut logs = Vec::with_capacity(partitions.len());
        for tp in partitions {
            logs.push(self.source.partition(tp)?);
        }
        self.leave_group(self.config.enable_auto_commit)?;
        self.drop_partitions(&self.parts.keys().cloned().collect::<Vec<_>>());
        for (tp, log) in partitions.iter().zip(logs) {
            log.watch(&self.notify);
            self.parts.insert(
                tp.clone(),
                PartState {
                    log,
                    position: None,
                    paused: false,
                },
            );
        }
        self.mode = Mode::Assigned;
        Ok(())
    }

    /// Returns up to `max_poll_records` messages, waiting up to `timeout`
    /// for some to arrive. Takes part in the group's rebalances (never
    /// waiting for another member) and auto-commits when enabled.
    pub fn poll(&mut self, timeout: Duration) -> Result<Vec<Message>> {
        self.check_usable()?;
        // `None`: too far to represent (`Duration::MAX`), i.e. no deadline.
        let deadline = Instant::now().checked_add(timeout);
        let mut first = true;
        loop {
            let seen = self.notify.generation();
            self.refresh_handles();
            // The rebalance step runs first: it rejoins an evicted member,
            // whose commits would otherwise be refused.
            self.sync_group()?;
            if first {
                first = false;
                self.maybe_auto_commit()?;
            }
            let msgs = self.fetch()?;
            let now = Instant::now();
            if !msgs.is_empty() || deadline.is_some_and(|d| now >= d) {
                return Ok(msgs);
            }
            // Wake at least three times per session timeout so a long poll
            // keeps the membership alive.
            let wake = now.checked_add(self.config.session_timeout / 3);
            let until = match (deadline, wake) {
                (Some(d), Some(w)) => d.min(w),
                (d, w) => d.or(w).unwrap_or(now + Duration::from_secs(3600)),
            };
            self.notify.wait(seen, until);
        }
    }

    /// Commits positions if the auto-commit interval passed. A refusal
    /// because ownership changed is not the caller's error (the partitions
    /// moved, and the new owner continues from the last commit); I/O
    /// errors are.
    fn maybe_auto_commit(&mut self) -> Result<()> {
        if !self.config.enable_auto_commit
            || self.last_auto_commit.elapsed() < self.config.auto_commit_interval
        {
            return Ok(());
        }
        match self.commit_positions() {
            Err(Error::Fenced { .. } | Error::NotAssigned { .. }) => Ok(()),
            other => other,
        }
    }

    /// After topics were deleted or re-created, points each assigned
    /// partition at the topic's current log (a re-created topic starts over:
    /// its position is resolved again).
    fn refresh_handles(&mut self) {
        let epoch = self.source.metadata_epoch();
        if epoch == self.seen_epoch {
            return;
        }
        self.seen_epoch = epoch;
        let notify = Arc::clone(&self.notify);
        for (tp, p) in self.parts.iter_mut() {
            if let Ok(log) = self.source.partition(tp) {
                if !Arc::ptr_eq(&log, &p.log) {
                    p.log.unwatch(&notify);
                    log.watch(&notify);
                    p.log = log;
                    if !self.source.keeps_positions() {
                        p.position = None;
                    }
                }
            }
        }
    }

    fn listener(&self) -> Option<Arc<Mutex<dyn RebalanceListener>>> {
        self.config.listener.clone()
    }

    /// One step of the cooperative rebalance protocol (see [`group`]).
    fn sync_group(&mut self) -> Result<()> {
        let Mode::Subscribed { member_id } = &self.mode else {
            return Ok(());
        };
        let id = member_id.clone();
        let now = Instant::now();
        let (revoke, acquire) = {
            let mut g = self.group.lock();
            g.evict_expired(now);
            let Some(me) = g.members.get_mut(&id) else {
                drop(g);
                return self.handle_eviction();
            };
            me.last_seen = now;
            if g.dirty || g.epoch != self.source.metadata_epoch() {
                g.recompute(&self.config.group_id, self.source.as_ref());
            }
            let target = g.target.get(&id).cloned().unwrap_or_default();
            let owned = g.members[&id].owned.clone();
            let revoke: Vec<TopicPartition> = owned.difference(&target).cloned().collect();
            let acquire: Vec<TopicPartition> = target
                .difference(&owned)
                .filter(|tp| !g.owners.contains_key(*tp))
                .cloned()
                .collect();
            for tp in &acquire {
                g.owners.insert(tp.clone(), id.clone());
            }
            g.members
                .get_mut(&id)
                .expect("present")
                .owned
                .extend(acquire.iter().cloned());
            (revoke, acquire)
        };
        if !revoke.is_empty() {
            self.revoke(&id, &revoke)?;
        }
        if !acquire.is_empty() {
            let mut gone = Vec::new();
            for tp in &acquire {
                match self.source.partition(tp) {
                    Ok(log) => {
                        log.watch(&self.notify);
                        self.parts.insert(
                            tp.clone(),
                            PartState {
                                log,
                                position: None,
                                paused: false,
                            },
                        );
                    }
                    Err(_) => gone.push(tp.clone()), // deleted meanwhile
                }
            }
            if !gone.is_empty() {
                self.release(&id, &gone);
            }
            if let Some(l) = self.listener() {
                l.lock()
                    .on_partitions_assigned(&mut RebalanceContext { consumer: self }, &acquire);
            }
        }
        Ok(())
    }

    /// Gives partitions up: listener, auto-commit, then release.
    fn revoke(&mut self, id: &str, partitions: &[TopicPartition]) -> Result<()> {
        if let Some(l) = self.listener() {
            l.lock()
                .on_partitions_revoked(&mut RebalanceContext { consumer: self }, partitions);
        }
        let result = if self.config.enable_auto_commit {
            let offsets = self.positions_of(partitions);
            self.commit_checked(&offsets)
        } else {
            Ok(())
        };
        self.drop_partitions(partitions);
        self.release(id, partitions);
        result
    }

    fn release(&mut self, id: &str, partitions: &[TopicPartition]) {
        let mut g = self.group.lock();
        for tp in partitions {
            if g.owners.get(tp).map(String::as_str) == Some(id) {
                g.owners.remove(tp);
            }
            if let Some(m) = g.members.get_mut(id) {
                m.owned.remove(tp);
            }
        }
        g.wake_all();
    }

    fn drop_partitions(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            if let Some(p) = self.parts.remove(tp) {
                p.log.unwatch(&self.notify);
            }
        }
    }

    /// The group evicted this member: its partitions are lost; it rejoins.
    fn handle_eviction(&mut self) -> Result<()> {
        let lost: Vec<TopicPartition> = self.parts.keys().cloned().collect();
        self.drop_partitions(&lost);
        self.mode = Mode::Idle;
        if let Some(l) = self.listener() {
            l.lock().on_partitions_lost(&lost);
        }
        let topics: Vec<String> = self.topics.iter().cloned().collect();
        self.subscribe(&topics)
    }

    /// Positions to commit for `partitions`: those resolved, of topics that
    /// still exist (a deleted topic's offsets stay deleted).
    fn positions_of(&self, partitions: &[TopicPartition]) -> Vec<(TopicPartition, u64)> {
        partitions
            .iter()
            .filter(|tp| self.source.partition_count(&tp.topic).is_some())
            .filter_map(|tp| {
                self.parts
                    .get(tp)
                    .and_then(|p| p.position)
                    .map(|o| (tp.clone(), o))
            })
            .collect()
    }

    /// Fetches from unpaused partitions, starting at a rotating partition
    /// and capping each at an even share, so none starves another.
    fn fetch(&mut self) -> Result<Vec<Message>> {
        let active: Vec<TopicPartition> = self
            .parts
            .iter()
            .filter(|(_, p)| !p.paused)
            .map(|(tp, _)| tp.clone())
            .collect();
        let mut out = Vec::new();
        if active.is_empty() {
            return Ok(out);
        }
        let max = self.config.max_poll_records;
        let share = max.div_ceil(active.len());
        let n = active.len();
        for k in 0..n {
            let left = max - out.len();
            if left == 0 {
                break;
            }
            let tp = &active[(self.cursor + k) % n];
            let position = self.resolve_position(tp)?;
            let log = Arc::clone(&self.parts[tp].log);
            let committed = self.config.isolation_level == IsolationLevel::ReadCommitted;
            let next = match log.read_with(position, share.min(left), &mut out, committed) {
                Ok(next) => next,
                Err(Error::OffsetOutOfRange { start, end, .. }) => {
                    // Retention deleted the position: reset by the policy.
                    let reset = self.reset_offset(tp, start, end)?;
                    self.parts.get_mut(tp).expect("assigned").position = Some(reset);
                    continue;
                }
                Err(Error::UnknownTopic { .. }) => continue, // deleted; the group drops it
                Err(e) => return Err(e),
            };
            // Past the messages returned, and past transaction markers and
            // aborted records skipped after them.
            if next > position {
                self.parts.get_mut(tp).expect("assigned").position = Some(next);
            }
        }
        self.cursor = (self.cursor + 1) % n;
        Ok(out)
    }

    fn reset_offset(&self, tp: &TopicPartition, start: u64, end: u64) -> Result<u64> {
        match self.config.auto_offset_reset {
            OffsetReset::Earliest => Ok(start),
            OffsetReset::Latest => Ok(end),
            OffsetReset::None => Err(Error::NoOffset {
                group: self.config.group_id.clone(),
                topic: tp.topic.clone(),
                partition: tp.partition,
            }),
        }
    }

    fn resolve_position(&mut self, tp: &TopicPartition) -> Result<u64> {
        let p = self.parts.get(tp).ok_or_else(|| self.not_assigned(tp))?;
        if let Some(pos) = p.position {
            return Ok(pos);
        }
        let (start, end) = (p.log.start_offset(), p.log.end_offset());
        let pos = match self
            .coordinator
            .offsets
            .committed(&self.config.group_id, tp)
        {
            Some(c) if (start..=end).contains(&c) => c,
            _ => self.reset_offset(tp, start, end)?,
        };
        self.parts.get_mut(tp).expect("assigned").position = Some(pos);
        Ok(pos)
    }

    fn not_assigned(&self, tp: &TopicPartition) -> Error {
        Error::NotAssigned {
            group: self.config.group_id.clone(),
            topic: tp.topic.clone(),
            partition: tp.partition,
        }
    }

    /// Commits the position after the last message `poll` returned, for
    /// every assigned partition.
    pub fn commit(&mut self) -> Result<()> {
        self.check_usable()?;
        self.commit_positions()
    }

    fn commit_positions(&mut self) -> Result<()> {
        let all: Vec<TopicPartition> = self.parts.keys().cloned().collect();
        let offsets = self.positions_of(&all);
        self.last_auto_commit = Instant::now();
        self.commit_checked(&offsets)
    }

    /// Commits explicit offsets (each the next offset to read) for assigned
    /// partitions.
    pub fn commit_offsets(&mut self, offsets: &[(TopicPartition, u64)]) -> Result<()> {
        self.check_usable()?;
        self.commit_checked(offsets)
    }

    /// Commits after fencing: a group member must still be a member and own
    /// each partition; a manually assigned consumer must have it assigned
    /// and no member may own it.
    fn commit_checked(&mut self, offsets: &[(TopicPartition, u64)]) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let group = &self.config.group_id;
        let mut g = self.group.lock();
        match &self.mode {
            Mode::Subscribed { member_id } => {
                g.evict_expired(Instant::now());
                if !g.members.contains_key(member_id) {
                    return Err(Error::Fenced {
                        group: group.clone(),
                        member: member_id.clone(),
                        reason: "evicted after missing its session timeout; its partitions moved"
                            .into(),
                    });
                }
                for (tp, _) in offsets {
                    if g.owners.get(tp) != Some(member_id) {
                        return Err(self.not_assigned(tp));
                    }
                }
            }
            _ => {
                for (tp, _) in offsets {
                    if !self.parts.contains_key(tp) {
                        return Err(self.not_assigned(tp));
                    }
                    if let Some(owner) = g.owners.get(tp) {
                        return Err(Error::Fenced {
                            group: group.clone(),
                            member: "(manual assignment)".into(),
                            reason: format!("{tp} is owned by group member {owner}"),
                        });
                    }
                }
            }
        }
        let list: Vec<(TopicPartition, Option<u64>)> = offsets
            .iter()
            .map(|(tp, o)| (tp.clone(), Some(*o)))
            .collect();
        // Held across the write so an eviction cannot slip in between the
        // check and the commit.
        let result = self.coordinator.offsets.commit(group, &list);
        drop(g);
        result
    }

    /// The group's committed offset of a partition (`None` if none).
    pub fn committed(&self, tp: &TopicPartition) -> Result<Option<u64>> {
        self.check_usable()?;
        Ok(self
            .coordinator
            .offsets
            .committed(&self.config.group_id, tp))
    }

    /// The next offset `poll` will return for an assigned partition.
    pub fn position(&mut self, tp: &TopicPartition) -> Result<u64> {
        self.check_usable()?;
        self.resolve_position(tp)
    }

    /// Moves the position of an assigned partition; the offset must be
    /// within the stored range (`start_offset..=end_offset`).
    pub fn seek(&mut self, tp: &TopicPartition, offset: u64) -> Result<()> {
        self.check_usable()?;
        let p = self.parts.get_mut(tp).ok_or_else(|| Error::NotAssigned {
            group: self.config.group_id.clone(),
            topic: tp.topic.clone(),
            partition: tp.partition,
        })?;
        let (start, end) = (p.log.start_offset(), p.log.end_offset());
        if !(start..=end).contains(&offset) {
            return Err(Error::OffsetOutOfRange {
                topic: tp.topic.clone(),
                partition: tp.partition,
                offset,
                start,
                end,
            });
        }
        p.position = Some(offset);
        Ok(())
    }

    /// Moves to the earliest offset whose timestamp is at least
    /// `timestamp_ms` (the end if none).
    pub fn seek_to_timestamp(&mut self, tp: &TopicPartition, timestamp_ms: i64) -> Result<()> {
        self.check_usable()?;
        let log = Arc::clone(&self.parts.get(tp).ok_or_else(|| self.not_assigned(tp))?.log);
        let offset = log
            .offset_for_timestamp(timestamp_ms)?
            .unwrap_or_else(|| log.end_offset());
        self.seek(tp, offset)
    }

    fn seek_each(&mut self, partitions: &[TopicPartition], end: bool) -> Result<()> {
        self.check_usable()?;
        let tps: Vec<TopicPartition> = if partitions.is_empty() {
            self.parts.keys().cloned().collect()
        } else {
            partitions.to_vec()
        };
        for tp in &tps {
            let p = self.parts.get_mut(tp).ok_or_else(|| Error::NotAssigned {
                group: self.config.group_id.clone(),
                topic: tp.topic.clone(),
                partition: tp.partition,
            })?;
            p.position = Some(if end {
                p.log.end_offset()
            } else {
                p.log.start_offset()
            });
        }
        Ok(())
    }

    /// Moves to the first stored offset (all assigned partitions if empty).
    pub fn seek_to_beginning(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        self.seek_each(partitions, false)
    }

    /// Moves to the end (all assigned partitions if empty).
    pub fn seek_to_end(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        self.seek_each(partitions, true)
    }

    /// The partitions this consumer reads now, sorted.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.parts.keys().cloned().collect()
    }

    /// Stops returning messages from these partitions (they stay assigned).
    pub fn pause(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            if let Some(p) = self.parts.get_mut(tp) {
                p.paused = true;
            }
        }
    }

    /// Returns messages from these partitions again.
    pub fn resume(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            if let Some(p) = self.parts.get_mut(tp) {
                p.paused = false;
            }
        }
    }

    /// Leaves the group (auto-committing first when enabled); its partitions
    /// move to the other members. Also done on drop.
    pub fn close(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        let result = self.leave_group(self.config.enable_auto_commit);
        self.drop_partitions(&self.parts.keys().cloned().collect::<Vec<_>>());
        self.closed = true;
        result
    }

    fn leave_group(&mut self, commit: bool) -> Result<()> {
        let mut result = Ok(());
        match &self.mode {
            Mode::Subscribed { member_id } => {
                let id = member_id.clone();
                let owned: Vec<TopicPartition> = self.parts.keys().cloned().collect();
                let still_member = {
                    let mut g = self.group.lock();
                    g.evict_expired(Instant::now());
                    g.members.contains_key(&id)
                };
                if !still_member {
                    // Evicted: the partitions are already someone else's.
                    if let Some(l) = self.listener() {
                        l.lock().on_partitions_lost(&owned);
                    }
                } else {
                    if let Some(l) = self.listener() {
                        l.lock().on_partitions_revoked(
                            &mut RebalanceContext { consumer: self },
                            &owned,
                        );
                    }
                    if commit && self.source.check_open().is_ok() {
                        let offsets = self.positions_of(&owned);
                        result = self.commit_checked(&offsets);
                    }
                    self.group.lock().remove_member(&id);
                }
            }
            Mode::Assigned if commit && self.source.check_open().is_ok() => {
                result = self.commit_positions();
            }
            _ => {}
        }
        self.mode = Mode::Idle;
        result
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Log, TopicConfig};

    /// Regression: `poll(Duration::MAX)` and a `session_timeout` of
    /// `Duration::MAX` panicked adding the duration to `Instant::now()`.
    #[test]
    fn durations_too_long_for_an_instant_mean_no_limit() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path()).unwrap();
        let t = log.create_topic("t", TopicConfig::default()).unwrap();
        t.append("k", "v").unwrap();
        let mut c = log
            .consumer_with(
                ConsumerConfig::new("g")
                    .auto_offset_reset(OffsetReset::Earliest)
                    .session_timeout(Duration::MAX),
            )
            .unwrap();
        c.subscribe(&["t"]).unwrap();
        assert_eq!(c.poll(Duration::MAX).unwrap().len(), 1);
        // Nothing to read: a long (not endless) timeout with an endless session.
        assert!(c.poll(Duration::from_millis(20)).unwrap().is_empty());
    }
}
