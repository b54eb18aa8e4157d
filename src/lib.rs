//! # brook
//!
//! An embeddable, Kafka-style commit log: topics split into partitions,
//! stored on local disk as append-only segments in Kafka's own RecordBatch
//! v2 format.
//!
//! ```text
//!  Log (a directory, locked by one process)
//!   ├── topics.json, recovery-checkpoint
//!   └── Topic "orders" ── partitioner: murmur2(key) % partitions, like Kafka
//!        ├── Partition 0 ── orders-0/ 00000000000000000000.log  .index  .timeindex
//!        │                            00000000000000052133.log  ...   (active segment)
//!        └── Partition 1 ── orders-1/ ...
//! ```
//!
//! - A [`Log`] owns a directory. [`Log::create_topic`] makes a [`Topic`]
//!   with a fixed [`TopicConfig`]; records are appended with
//!   [`Topic::append`], [`Topic::send`] or [`Topic::send_batch`] and land in
//!   one partition each, at the next offset.
//! - A partition is a sequence of segments; the newest (active) one takes
//!   appends and rolls at `segment_bytes`. Retention deletes old segments.
//! - [`Partition::read`] returns [`Message`]s that share the segment's
//!   memory-mapped bytes (no copy).
//! - When an append returns, the record is visible to every reader and
//!   survives `kill -9`; surviving power loss follows [`SyncPolicy`].
//! - [`TypedTopic`] and [`TypedConsumer`] append and poll Rust values
//!   through a serde [`Codec`] (postcard by default, JSON with the `json`
//!   feature); a record that does not decode is an [`Error::Decode`]
//!   naming topic, partition and offset, and the consumer goes on.
//! - With the `tokio` feature, `AsyncConsumer` is a `Stream` of messages
//!   woken by appends and `AsyncTopic` appends as futures.
//! - [`Log::metrics`] and [`Cluster::metrics`] return a [`Metrics`]
//!   snapshot (records and bytes in and out, offsets, sizes, fsyncs,
//!   append latency, consumer lag, replica lag); recovery, retention,
//!   compaction, rebalances and failover are logged through `tracing`.
//!
//! ```
//! # let dir = tempfile::tempdir().unwrap();
//! use brook::{Log, Record, TopicConfig};
//! let log = Log::open(dir.path())?;
//! let orders = log.create_topic("orders", TopicConfig::default().partitions(4))?;
//! let meta = orders.send(Record::new("ordered a book").key("alice").header("trace", "42"))?;
//! let msgs = orders.partition(meta.partition)?.read(meta.offset, 10)?;
//! assert_eq!(msgs[0].key(), Some(&b"alice"[..]));
//! # Ok::<(), brook::Error>(())
//! ```
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "tokio")]
mod asynch;
mod clock;
mod cluster;
mod config;
mod consumer;
mod error;
mod format;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
#[allow(missing_docs)]
pub mod fuzz;
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod inspect;
mod io;
#[cfg(feature = "power-loss-sim")]
#[doc(hidden)]
pub mod power_loss {
    //! Power-loss simulation for tests (feature `power-loss-sim`); see
    //! `tests/power_loss.rs`. Not an API.
    pub use crate::io::power_loss::{History, LossMode, Op, Recorder, Replay, Rng};
}
mod bulk_arc;
mod log;
mod metrics;
mod producer;
mod record;
mod storage;
mod topic;
mod txn;
mod typed;

#[cfg(feature = "tokio")]
pub use asynch::{AsyncConsumer, AsyncTopic};
pub use cluster::{Acks, Cluster, ClusterConfig, MAX_BROKERS};
pub use config::{
    CleanupPolicy, LogConfig, SyncPolicy, TopicConfig, MAX_PARTITIONS, MAX_SEGMENT_BYTES,
};
pub use consumer::{
    Assignor, Consumer, ConsumerConfig, ConsumerGroup, IsolationLevel, MemberDescription,
    OffsetReset, PartitionLag, RebalanceContext, RebalanceListener, ResetTo,
};
pub use error::{Error, Result};
pub use format::Compression;
pub use log::{CompactionStats, Log};
pub use metrics::{
    GroupMetrics, LatencyHistogram, Metrics, PartitionMetrics, ReplicaMetrics,
    APPEND_LATENCY_SAMPLE_EVERY, LATENCY_BUCKETS,
};
pub use producer::{Producer, ProducerConfig};
pub use record::{Message, Record, RecordMetadata, TopicPartition};
pub use topic::{murmur2, Partition, Partitioner, Topic};
#[cfg(feature = "json")]
pub use typed::Json;
#[cfg(feature = "postcard")]
pub use typed::Postcard;
pub use typed::{Codec, CodecError, DefaultCodec, TypedConsumer, TypedMessage, TypedTopic};
