//! The crate's one error type.
//!
//! Variants are split by what a caller can do about them: fix the input
//! (`InvalidTopicName`, `RecordTooLarge`, ...), look elsewhere
//! (`UnknownTopic`, `OffsetOutOfRange`), wait or retry (`Locked`,
//! `NotEnoughReplicas`), or give up on the data (`Io`, `Corrupt`). Every
//! message names what went wrong and where: topic, partition, offset, file.

use std::path::PathBuf;

/// `Result<T, brook::Error>`.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in brook.
///
/// Match variants with braces and `..` (`Error::Locked { .. }`): the fields
/// may grow.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O call failed.
    #[error("I/O error: {op} {path}: {source}")]
    Io {
        /// What brook was doing (`"fsync"`, `"open"`, ...).
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Stored bytes failed an integrity check (CRC-32C, framing, offsets).
    #[error("corrupt data in {path} at byte {position}: {reason}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte position in the file where the damage was found.
        position: u64,
        /// What check failed.
        reason: String,
    },
    /// Another `Log` (in this process or another) holds the directory lock.
    #[error("log directory {path} is locked by another open Log")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// A topic name breaks Kafka's naming rule.
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopicName {
        /// The rejected name.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// `create_topic` of a name that exists.
    #[error("topic {topic:?} already exists")]
    TopicExists {
        /// The topic.
        topic: String,
    },
    /// A topic that does not exist (or was deleted).
    #[error("unknown topic {topic:?}")]
    UnknownTopic {
        /// The topic.
        topic: String,
    },
    /// A partition number outside the topic's partitions.
    #[error("unknown partition {partition} of topic {topic:?} ({partitions} partitions)")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The requested partition.
        partition: u32,
        /// How many partitions the topic has.
        partitions: u32,
    },
    /// `add_partitions` to a total that is not above the current one.
    #[error("topic {topic:?} has {current} partitions; cannot change to {requested}")]
    InvalidPartitions {
        /// The topic.
        topic: String,
        /// The requested total.
        requested: u32,
        /// The current total.
        current: u32,
    },
    /// A configuration value that cannot work.
    #[error("invalid configuration: {reason}")]
    InvalidConfig {
        /// What is wrong, naming the setting.
        reason: String,
    },
    /// A record larger than the topic's `max_record_bytes`; nothing was written.
    #[error("record of {size} bytes for topic {topic:?} exceeds max_record_bytes {max}")]
    RecordTooLarge {
        /// The topic.
        topic: String,
        /// The record's encoded size.
        size: usize,
        /// The topic's limit.
        max: usize,
    },
    /// A record the topic cannot accept (e.g. a negative timestamp).
    #[error("invalid record for topic {topic:?}: {reason}")]
    InvalidRecord {
        /// The topic.
        topic: String,
        /// Why it was refused.
        reason: String,
    },
    /// An offset outside the stored range of a partition.
    #[error("offset {offset} out of range for {topic}-{partition} (stored: {start}..{end})")]
    OffsetOutOfRange {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The requested offset.
        offset: u64,
        /// First stored offset.
        start: u64,
        /// Offset the next record will get.
        end: u64,
    },
    /// A consumer has no committed offset and `OffsetReset::None`.
    #[error("no committed offset for {topic}-{partition} in group {group:?}")]
    NoOffset {
        /// The group.
        group: String,
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
    },
    /// Fewer in-sync replicas than `min_insync_replicas`.
    #[error("not enough in-sync replicas for {topic}-{partition}: {isr} < {min}")]
    NotEnoughReplicas {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// In-sync replicas now.
        isr: usize,
        /// The topic's minimum.
        min: usize,
    },
    /// A partition has no leader.
    #[error("no leader for {topic}-{partition}")]
    NoLeader {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
    },
    /// A group id that cannot be used.
    #[error("invalid group id {group:?}: {reason}")]
    InvalidGroupId {
        /// The rejected id.
        group: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A consumer used a partition it is not assigned (commit, seek, position).
    #[error("{topic}-{partition} is not assigned to this consumer of group {group:?}")]
    NotAssigned {
        /// The group.
        group: String,
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
    },
    /// A commit from a consumer that no longer owns the partition (evicted
    /// by its session timeout, or a manual consumer racing a group member).
    #[error("commit refused for group {group:?}, member {member}: {reason}")]
    Fenced {
        /// The group.
        group: String,
        /// The refused member.
        member: String,
        /// Why.
        reason: String,
    },
    /// An admin operation that needs a group without members.
    #[error("group {group:?} has {members} active member(s)")]
    GroupNotEmpty {
        /// The group.
        group: String,
        /// How many members it has.
        members: usize,
    },
    /// An idempotent producer's sequence does not follow the last one the
    /// partition wrote for it (a gap, or a duplicate too old to be
    /// remembered): nothing was written.
    #[error("producer {producer_id}: out-of-order sequence in {partition}: expected {expected}, got {got}")]
    OutOfOrderSequence {
        /// The producer id.
        producer_id: i64,
        /// `topic-partition`.
        partition: String,
        /// The sequence the partition expected.
        expected: i32,
        /// The sequence the append carried.
        got: i32,
    },
    /// A producer whose epoch is older than the newest one seen: another
    /// producer with the same transactional id took over. The old one
    /// cannot write any more.
    #[error(
        "producer {producer_id} fenced ({context}): epoch {epoch} is older than {current_epoch}"
    )]
    ProducerFenced {
        /// The producer id.
        producer_id: i64,
        /// The fenced producer's epoch.
        epoch: i16,
        /// The newest epoch.
        current_epoch: i16,
        /// Where it was refused.
        context: String,
    },
    /// A transactional producer call that does not fit the transaction's
    /// state (a send outside `begin_transaction`, a second `begin`, a
    /// transactional call on a producer without a transactional id).
    #[error("transactional id {transactional_id:?}: {reason}")]
    InvalidTxnState {
        /// The producer's transactional id (empty if it has none).
        transactional_id: String,
        /// What was wrong.
        reason: String,
    },
    /// A cluster replica wrote the record as leader but lost the
    /// leadership before the record was acknowledged: it may or may not
    /// survive; retry on the new leader.
    #[error("{topic}-{partition}: broker {broker} is no longer the leader (epoch {epoch}); the record was not acknowledged")]
    NotLeader {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The broker that was the leader.
        broker: u32,
        /// The leader epoch the record was written in.
        epoch: i32,
    },
    /// A cluster could not confirm a record within its acknowledgement
    /// timeout (`ClusterConfig::ack_timeout`); it may or may not survive.
    #[error("{topic}-{partition}: offset {offset} not replicated to every in-sync replica within {timeout_ms} ms")]
    Timeout {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The record's offset (the last one, for a batch).
        offset: u64,
        /// The timeout that passed.
        timeout_ms: u64,
    },
    /// A typed topic's codec could not encode a key or value; nothing was
    /// written.
    #[error("cannot encode the {field} of a record for topic {topic:?} with {codec}: {source}")]
    Encode {
        /// The topic.
        topic: String,
        /// `"key"` or `"value"`.
        field: &'static str,
        /// The codec's name ([`Codec::name`](crate::Codec::name)).
        codec: &'static str,
        /// The codec's error.
        #[source]
        source: crate::typed::CodecError,
    },
    /// A record's key or value did not decode with a typed consumer's
    /// codec. The consumer has moved past the record: skip it and go on, or
    /// `seek` back to `offset` to stop there.
    #[error("cannot decode the {field} of {topic}-{partition} at offset {offset} with {codec}: {source}")]
    Decode {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The record's offset.
        offset: u64,
        /// `"key"` or `"value"`.
        field: &'static str,
        /// The codec's name ([`Codec::name`](crate::Codec::name)).
        codec: &'static str,
        /// The codec's error.
        #[source]
        source: crate::typed::CodecError,
    },
    /// The log (or the partition, after a failed fsync) no longer takes this call.
    #[error("closed: {what}")]
    Closed {
        /// What is closed and why.
        what: String,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        position: u64,
        reason: impl Into<String>,
    ) -> Self {
        Error::Corrupt {
            path: path.into(),
            position,
            reason: reason.into(),
        }
    }

    pub(crate) fn config(reason: impl Into<String>) -> Self {
        Error::InvalidConfig {
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_place() {
        let e = Error::OffsetOutOfRange {
            topic: "orders".into(),
            partition: 3,
            offset: 99,
            start: 0,
            end: 10,
        };
        let s = e.to_string();
        assert!(s.contains("orders-3") && s.contains("99"), "{s}");
        let e = Error::corrupt("/x/00000000000000000000.log", 61, "crc mismatch");
        assert!(e
            .to_string()
            .contains("00000000000000000000.log at byte 61"));
    }

    #[test]
    fn error_is_send_sync_static() {
        fn check<T: std::error::Error + Send + Sync + 'static>() {}
        check::<Error>();
    }
}
