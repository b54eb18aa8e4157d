//! Idempotent producers ([`Producer`], [`ProducerConfig`]).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt;

use crate::error::Result;
use crate::format::ProducerBatch;
use crate::log::Log;
use crate::record::{Record, RecordMetadata};
use crate::topic::Topic;

/// Settings for [`Log::producer`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProducerConfig {
    /// Whether batches carry producer id, epoch and sequence so that
    /// retries are never written twice (default true, as in Kafka 3.0+).
    pub idempotent: bool,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig { idempotent: true }
    }
}

impl ProducerConfig {
    /// Turns idempotence on or off (see [`ProducerConfig::idempotent`]'s field).
    pub fn idempotent(mut self, on: bool) -> Self {
        self.idempotent = on;
        self
    }
}

/// A producer: sends records to any topic of its log; idempotent unless
/// configured otherwise.
///
/// `Topic::append`/`send` are enough for most embedders. A [`Producer`]
/// adds Kafka's idempotence: it holds a producer id (unique for the life
/// of the log directory) and an epoch, and numbers the records it sends to
/// each partition 0, 1, 2, …; every batch it writes carries id, epoch and
/// the sequence of its first record in the RecordBatch header, as Kafka's
/// producers do. The partition refuses a sequence that does not follow the
/// last one it wrote for the producer ([`Error::OutOfOrderSequence`](crate::Error::OutOfOrderSequence)), and
/// answers a sequence it already wrote with the original offsets instead
/// of writing it again — so a send that is retried after an error whose
/// outcome was unknown never writes twice.
///
/// The partition's view of each producer survives close, `kill -9` and
/// power loss (see `storage/producers.rs`); the producer's own counters
/// live in this handle, so a new handle is a new producer (new id), as in
/// Kafka without a transactional id.
///
/// # Retries and partial failures
///
/// A call's records are grouped by partition; each group is one append,
/// checked and written as a whole. A call to one partition (every `send`,
/// and a `send_batch` whose records share a partition) is safe to retry
/// after any error: if its records reached the log, the retry writes
/// nothing and returns their offsets. A `send_batch` spanning partitions
/// that fails has written the groups before the failing one (their
/// sequences are spent) and not the rest; retrying the whole call would
/// write those groups again, so retry it per partition, or send one
/// partition's records per call when retries matter. A group that failed
/// part-way (an I/O error in the middle of a roll) stays written up to the
/// failure; the partition is then read-only (see
/// [`SyncPolicy`](crate::SyncPolicy)), and a retry gets an error.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// let log = brook::Log::open(dir.path())?;
/// log.create_topic("orders", brook::TopicConfig::default().partitions(2))?;
/// let mut producer = log.producer(brook::ProducerConfig::default())?;
/// let meta = producer.send("orders", brook::Record::new("a book").key("alice"))?;
/// assert_eq!(meta.offset, 0);
/// # Ok::<(), brook::Error>(())
/// ```
pub struct Producer {
    log: Log,
    config: ProducerConfig,
    producer_id: i64,
    epoch: i16,
    topics: HashMap<String, Topic>,
    /// Next sequence per topic, by partition.
    sequences: HashMap<String, Vec<i32>>,
}

impl fmt::Debug for Producer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("producer_id", &self.producer_id)
            .field("epoch", &self.epoch)
            .field("idempotent", &self.config.idempotent)
            .finish()
    }
}

impl Producer {
    pub(crate) fn new(log: Log, config: ProducerConfig, producer_id: i64) -> Producer {
        Producer {
            log,
            config,
            producer_id,
            epoch: 0,
            topics: HashMap::new(),
            sequences: HashMap::new(),
        }
    }

    /// The producer id (unique within the log directory; -1 when not
    /// idempotent).
    pub fn producer_id(&self) -> i64 {
        if self.config.idempotent {
            self.producer_id
        } else {
            -1
        }
    }

    /// The producer epoch (0 for a producer without a transactional id).
    pub fn epoch(&self) -> i16 {
        self.epoch
    }

    /// Sends one record to `topic` (partition chosen as by
    /// [`Topic::send`]).
    pub fn send(&mut self, topic: &str, record: Record) -> Result<RecordMetadata> {
        let mut metas = self.send_batch(topic, std::slice::from_ref(&record))?;
        Ok(metas.pop().expect("one record sent"))
    }

    /// Sends records to `topic`, like [`Topic::send_batch`]: every record
    /// is checked before any is written.
    pub fn send_batch<R: Borrow<Record>>(
        &mut self,
        topic: &str,
        records: &[R],
    ) -> Result<Vec<RecordMetadata>> {
        let handle = self.topic(topic)?;
        if !self.config.idempotent {
            return handle.send_batch(records.iter().map(Borrow::borrow));
        }
        let (id, epoch) = (self.producer_id, self.epoch);
        let seqs = self.sequences.entry(topic.to_owned()).or_default();
        // Partitions added since the last send start at sequence 0.
        seqs.resize(seqs.len().max(handle.partition_count() as usize), 0);
        let mut advanced = Vec::new();
        let result = handle.send_idempotent(
            records,
            |p| ProducerBatch {
                producer_id: id,
                epoch,
                base_sequence: seqs.get(p as usize).copied().unwrap_or(0),
            },
            |p, count| advanced.push((p, count)),
        );
        // Groups written before a failure spent their sequences.
        for (p, count) in advanced {
            let seq = &mut seqs[p as usize];
            *seq = crate::storage::last_sequence(*seq, count + 1);
        }
        result
    }

    fn topic(&mut self, name: &str) -> Result<Topic> {
        if let Some(t) = self.topics.get(name) {
            return Ok(t.clone());
        }
        let t = self.log.topic(name)?;
        self.topics.insert(name.to_owned(), t.clone());
        Ok(t)
    }
}
