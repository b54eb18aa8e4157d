//! Configuration of a log ([`LogConfig`], [`SyncPolicy`]) and of a topic
//! ([`TopicConfig`], [`CleanupPolicy`]).
//!
//! Topic configuration is persisted with the topic (in `topics.json`) and
//! restored on reopen; log configuration belongs to the process that opens
//! the log and is not persisted.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::{Compression, BATCH_HEADER_BYTES};

/// When appended data is forced to stable storage (fsync).
///
/// Whatever the policy, an append that returned survives `kill -9` of the
/// process: the data is in the operating system's page cache. The policy
/// decides what survives a power loss or kernel crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SyncPolicy {
    /// The OS writes back when it likes; call [`Log::sync`](crate::Log::sync)
    /// yourself. Rolled segments are still fsynced in the background.
    #[default]
    Never,
    /// A background fsync at most this long after an append.
    Interval(Duration),
    /// Each append returns only after its data is fsynced. Concurrent
    /// appenders share one fsync (group commit).
    Always,
}

/// Settings for [`Log::open_with`](crate::Log::open_with).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LogConfig {
    /// Durability policy for appends.
    pub sync: SyncPolicy,
    /// How often the background thread applies retention (at most one minute).
    pub retention_check_interval: Duration,
    /// Whether the background cleaner compacts compacted topics on its own
    /// (Kafka's `log.cleaner.enable`; default true). When off, compaction
    /// runs only through [`Log::compact_now`](crate::Log::compact_now).
    pub cleaner: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            sync: SyncPolicy::Never,
            retention_check_interval: Duration::from_secs(60),
            cleaner: true,
        }
    }
}

impl LogConfig {
    /// Sets the [`SyncPolicy`].
    pub fn sync(mut self, policy: SyncPolicy) -> Self {
        self.sync = policy;
        self
    }

    /// Sets how often retention runs in the background (default and maximum
    /// 60 s; retention also runs whenever a segment rolls).
    pub fn retention_check_interval(mut self, interval: Duration) -> Self {
        self.retention_check_interval = interval;
        self
    }

    /// Turns the background cleaner on or off (default on).
    pub fn cleaner(mut self, enabled: bool) -> Self {
        self.cleaner = enabled;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if let SyncPolicy::Interval(d) = self.sync {
            if d.is_zero() {
                return Err(Error::config(
                    "SyncPolicy::Interval must be longer than zero (use SyncPolicy::Always)",
                ));
            }
        }
        if self.retention_check_interval.is_zero()
            || self.retention_check_interval > Duration::from_secs(60)
        {
            return Err(Error::config(format!(
                "retention_check_interval must be within (0, 60 s], got {:?}",
                self.retention_check_interval
            )));
        }
        Ok(())
    }
}

/// What happens to old data of a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CleanupPolicy {
    /// Delete whole old segments by age or size (retention).
    #[default]
    Delete,
    /// Keep at least the latest record of every key (log compaction).
    Compact,
    /// Compact, and also delete whole old segments by retention (Kafka's
    /// `cleanup.policy=compact,delete`).
    CompactAndDelete,
}

impl CleanupPolicy {
    /// Whether the topic is compacted (records need keys).
    pub fn compacts(self) -> bool {
        matches!(
            self,
            CleanupPolicy::Compact | CleanupPolicy::CompactAndDelete
        )
    }

    /// Whether retention deletes old segments.
    pub fn deletes(self) -> bool {
        matches!(
            self,
            CleanupPolicy::Delete | CleanupPolicy::CompactAndDelete
        )
    }
}

/// Largest segment: positions in the offset index are 32-bit, as in Kafka.
pub const MAX_SEGMENT_BYTES: u64 = i32::MAX as u64;

/// Settings of one topic, persisted with it. Builder style:
/// `TopicConfig::default().partitions(4).segment_bytes(64 << 20)`; read the
/// settings back through the public fields (`cfg.segment_bytes`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct TopicConfig {
    /// Number of partitions (default 1).
    pub partitions: u32,
    /// A segment rolls when the next batch would pass this size (default 1 GiB,
    /// at most `i32::MAX` like Kafka's `segment.bytes`).
    pub segment_bytes: u64,
    /// Delete the oldest segments while the partition is larger than this
    /// (default: no limit).
    pub retention_bytes: Option<u64>,
    /// Delete segments whose newest record is older than this (default: no limit).
    pub retention: Option<Duration>,
    /// Largest accepted record, measured as its encoded size inside a batch
    /// (key, value, headers and a few bytes of framing); default 1 MiB.
    pub max_record_bytes: usize,
    /// What happens to old data (default [`CleanupPolicy::Delete`]).
    pub cleanup_policy: CleanupPolicy,
    /// Replicas per partition on a cluster (default 1; a single `Log` ignores it).
    pub replication_factor: u16,
    /// Minimum in-sync replicas for `Acks::All` on a cluster (default 1).
    pub min_insync_replicas: u16,
    /// Compaction runs when the not-yet-compacted share of the closed
    /// segments' bytes reaches this (default 0.5, like Kafka).
    pub min_cleanable_dirty_ratio: f64,
    /// A record is compacted no sooner than this after its timestamp
    /// (default 0).
    pub min_compaction_lag: Duration,
    /// A tombstone stays this long after compaction first kept it, so slow
    /// consumers see the delete (default 24 h, like Kafka).
    pub delete_retention: Duration,
    /// Codec of newly written batches (default [`Compression::None`]).
    pub compression: Compression,
    /// On a cluster: whether a replica outside the ISR may become leader
    /// when no in-sync replica is alive (Kafka's
    /// `unclean.leader.election.enable`, default off: acknowledged records
    /// may be lost when it happens).
    pub unclean_leader_election: bool,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            partitions: 1,
            segment_bytes: 1 << 30,
            retention_bytes: None,
            retention: None,
            max_record_bytes: 1 << 20,
            cleanup_policy: CleanupPolicy::Delete,
            replication_factor: 1,
            min_insync_replicas: 1,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag: Duration::ZERO,
            delete_retention: Duration::from_secs(24 * 3600),
            compression: Compression::None,
            unclean_leader_election: false,
        }
    }
}

impl TopicConfig {
    /// Sets the number of partitions.
    pub fn partitions(mut self, n: u32) -> Self {
        self.partitions = n;
        self
    }

    /// Sets the segment size limit in bytes.
    pub fn segment_bytes(mut self, bytes: u64) -> Self {
        self.segment_bytes = bytes;
        self
    }

    /// Sets size-based retention (`None`: no limit).
    pub fn retention_bytes(mut self, bytes: Option<u64>) -> Self {
        self.retention_bytes = bytes;
        self
    }

    /// Sets age-based retention (`None`: no limit).
    pub fn retention(mut self, age: Option<Duration>) -> Self {
        self.retention = age;
        self
    }

    /// Sets the largest accepted encoded record.
    pub fn max_record_bytes(mut self, bytes: usize) -> Self {
        self.max_record_bytes = bytes;
        self
    }

    /// Sets the cleanup policy.
    pub fn cleanup_policy(mut self, policy: CleanupPolicy) -> Self {
        self.cleanup_policy = policy;
        self
    }

    /// Sets the replication factor (cluster only).
    pub fn replication_factor(mut self, n: u16) -> Self {
        self.replication_factor = n;
        self
    }

    /// Sets the minimum in-sync replicas (cluster only).
    pub fn min_insync_replicas(mut self, n: u16) -> Self {
        self.min_insync_replicas = n;
        self
    }

    /// Sets the dirty ratio that triggers compaction (0.0..=1.0).
    pub fn min_cleanable_dirty_ratio(mut self, ratio: f64) -> Self {
        self.min_cleanable_dirty_ratio = ratio;
        self
    }

    /// Sets how old a record must be before compaction may remove it.
    pub fn min_compaction_lag(mut self, lag: Duration) -> Self {
        self.min_compaction_lag = lag;
        self
    }

    /// Sets how long compaction keeps tombstones.
    pub fn delete_retention(mut self, retention: Duration) -> Self {
        self.delete_retention = retention;
        self
    }

    /// Sets the codec of newly written batches. Batches are compressed when
    /// they are sealed (a batch of 16 KiB, at a sync, or after a second
    /// without appends), each as one stream encoded as Kafka encodes it;
    /// reads decompress them. Batches written earlier keep their codec.
    pub fn compression(mut self, codec: Compression) -> Self {
        self.compression = codec;
        self
    }

    /// On a cluster, lets a replica outside the ISR become leader when no
    /// in-sync replica is alive (see the field).
    pub fn unclean_leader_election(mut self, enabled: bool) -> Self {
        self.unclean_leader_election = enabled;
        self
    }

    /// Checks that the settings can work together; `topic` names the topic in
    /// the error.
    pub(crate) fn validate(&self, topic: &str) -> Result<()> {
        let fail = |what: String| Err(Error::config(format!("topic {topic:?}: {what}")));
        if self.partitions == 0 {
            return fail("partitions must be at least 1".into());
        }
        if self.partitions > MAX_PARTITIONS {
            return fail(format!(
                "partitions must be at most {MAX_PARTITIONS}, got {}",
                self.partitions
            ));
        }
        if self.max_record_bytes == 0 {
            return fail("max_record_bytes must be at least 1".into());
        }
        if self.segment_bytes > MAX_SEGMENT_BYTES {
            return fail(format!(
                "segment_bytes {} exceeds the maximum {MAX_SEGMENT_BYTES}",
                self.segment_bytes
            ));
        }
        // Saturating: `max_record_bytes(usize::MAX)` must be an error, not an overflow.
        let smallest = (self.max_record_bytes as u64).saturating_add(BATCH_HEADER_BYTES as u64);
        if self.segment_bytes < smallest {
            return fail(format!(
                "segment_bytes {} is smaller than one record of max_record_bytes {} plus a \
                 {BATCH_HEADER_BYTES}-byte batch header",
                self.segment_bytes, self.max_record_bytes
            ));
        }
        if !(0.0..=1.0).contains(&self.min_cleanable_dirty_ratio) {
            return fail(format!(
                "min_cleanable_dirty_ratio must be within 0.0..=1.0, got {}",
                self.min_cleanable_dirty_ratio
            ));
        }
        if !self.compression.is_available() {
            return fail(format!(
                "compression {:?} needs brook's {:?} cargo feature",
                self.compression,
                self.compression.feature()
            ));
        }
        if self.replication_factor == 0 {
            return fail("replication_factor must be at least 1".into());
        }
        if self.min_insync_replicas == 0 || self.min_insync_replicas > self.replication_factor {
            return fail(format!(
                "min_insync_replicas {} must be within 1..={} (the replication factor)",
                self.min_insync_replicas, self.replication_factor
            ));
        }
        Ok(())
    }
}

/// Upper bound on partitions per topic: each partition is a directory with
/// open segment state, so an unbounded count is a resource bug.
pub const MAX_PARTITIONS: u32 = 100_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_contract() {
        let c = TopicConfig::default();
        assert_eq!(c.partitions, 1);
        assert_eq!(c.segment_bytes, 1 << 30);
        assert_eq!(c.retention_bytes, None);
        assert_eq!(c.retention, None);
        assert_eq!(c.max_record_bytes, 1 << 20);
        assert_eq!(c.cleanup_policy, CleanupPolicy::Delete);
        c.validate("t").unwrap();
    }

    #[test]
    fn impossible_configs_are_refused() {
        let bad = [
            TopicConfig::default().partitions(0),
            TopicConfig::default().segment_bytes(100),
            TopicConfig::default().segment_bytes(MAX_SEGMENT_BYTES + 1),
            TopicConfig::default().max_record_bytes(0),
            TopicConfig::default().max_record_bytes(usize::MAX),
            TopicConfig::default()
                .replication_factor(2)
                .min_insync_replicas(3),
        ];
        for c in bad {
            let e = c.validate("orders").unwrap_err();
            assert!(matches!(e, Error::InvalidConfig { .. }), "{c:?}");
            assert!(e.to_string().contains("orders"), "{e}");
        }
    }

    #[test]
    fn config_round_trips_through_json() {
        let c = TopicConfig::default()
            .partitions(4)
            .retention(Some(Duration::from_secs(5)))
            .cleanup_policy(CleanupPolicy::Compact);
        let s = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<TopicConfig>(&s).unwrap(), c);
    }
}
