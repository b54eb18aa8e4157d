//! Idempotent producers ([`Producer`], [`ProducerConfig`]).

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::format::{ProducerBatch, TRANSACTIONAL};
use crate::record::{Record, RecordMetadata, TopicPartition};
use crate::topic::Topic;
use crate::txn::{TxnHost, TxnStore};

/// What a [`Producer`] writes to: a [`Log`](crate::Log) or a
/// [`Cluster`](crate::Cluster), with its transaction coordinator.
pub(crate) trait ProducerHost: Send + Sync {
    /// A handle to an existing topic.
    fn topic(&self, name: &str) -> Result<Topic>;

    /// The transaction coordinator, and the host it hands out producer
    /// ids and writes markers and offsets through; [`Error::Closed`] once
    /// the log or cluster is closed.
    fn coordinator(&self) -> Result<(&TxnStore, &dyn TxnHost)>;
}

/// Settings for [`Log::producer`](crate::Log::producer) and
/// [`Cluster::producer`](crate::Cluster::producer).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProducerConfig {
    /// Whether batches carry producer id, epoch and sequence so that
    /// retries are never written twice (default true, as in Kafka 3.0+).
    pub idempotent: bool,
    /// Makes the producer transactional (default none): its sends happen
    /// inside transactions, and a new producer with the same id fences
    /// this one.
    pub transactional_id: Option<String>,
    /// A transaction open longer than this is aborted and its producer
    /// fenced (default 60 s, Kafka's `transaction.timeout.ms`).
    pub transaction_timeout: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            idempotent: true,
            transactional_id: None,
            transaction_timeout: Duration::from_secs(60),
        }
    }
}

impl ProducerConfig {
    /// Turns idempotence on or off (see [`ProducerConfig::idempotent`]'s field).
    pub fn idempotent(mut self, on: bool) -> Self {
        self.idempotent = on;
        self
    }

    /// Makes the producer transactional under `id` (which implies
    /// idempotence).
    pub fn transactional_id(mut self, id: impl Into<String>) -> Self {
        self.transactional_id = Some(id.into());
        self.idempotent = true;
        self
    }

    /// Sets how long a transaction may stay open before it is aborted.
    pub fn transaction_timeout(mut self, timeout: Duration) -> Self {
        self.transaction_timeout = timeout;
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
/// part-way (a segment roll that found no file descriptor or disk space)
/// stays written up to the failure, and those sequences are spent: a retry
/// of the group gets [`Error::OutOfOrderSequence`](crate::Error::OutOfOrderSequence),
/// so this handle can no longer write to that partition — send the
/// remaining records from a new `Producer`. (Noticed, left: Kafka's
/// producer would bump its epoch here instead.)
///
/// # Transactions
///
/// With a [`transactional_id`](ProducerConfig::transactional_id), sends
/// happen inside transactions: `begin_transaction`, sends to any topics and
/// partitions, `send_offsets_to_transaction` for a consumer group's
/// positions, then `commit_transaction` or `abort_transaction`.
/// `ReadCommitted` consumers see a transaction's records only once it
/// committed, and never an aborted one's. Opening a producer with the same
/// id fences this one ([`Error::ProducerFenced`](crate::Error::ProducerFenced))
/// and aborts the transaction it left open.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// let log = brook::Log::open(dir.path())?;
/// log.create_topic("invoices", brook::TopicConfig::default())?;
/// let mut p = log.producer(brook::ProducerConfig::default().transactional_id("billing"))?;
/// p.begin_transaction()?;
/// p.send("invoices", brook::Record::new("42 EUR").key("order-7"))?;
/// p.commit_transaction()?;
/// let part = log.topic("invoices")?.partition(0)?;
/// assert_eq!(part.read_committed(0, 10)?.len(), 1);
/// # Ok::<(), brook::Error>(())
/// ```
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
    host: Box<dyn ProducerHost>,
    config: ProducerConfig,
    producer_id: i64,
    epoch: i16,
    topics: HashMap<String, Topic>,
    /// Next sequence per topic, by partition.
    sequences: HashMap<String, Vec<i32>>,
    /// Between `begin_transaction` and its commit or abort.
    in_transaction: bool,
    /// A commit or abort failed half-way: only ending it again is allowed.
    ending: bool,
    /// Partitions the coordinator knows to be in the open transaction.
    txn_partitions: HashSet<(String, u32)>,
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
    fn new(
        host: Box<dyn ProducerHost>,
        config: ProducerConfig,
        producer_id: i64,
        epoch: i16,
    ) -> Producer {
        Producer {
            host,
            config,
            producer_id,
            epoch,
            topics: HashMap::new(),
            sequences: HashMap::new(),
            in_transaction: false,
            ending: false,
            txn_partitions: HashSet::new(),
        }
    }

    /// A new producer on `host`: a fresh producer id, or, with a
    /// transactional id, its producer initialised by the host's
    /// coordinator, fencing older instances.
    pub(crate) fn open(host: Box<dyn ProducerHost>, config: ProducerConfig) -> Result<Producer> {
        let (txns, txn_host) = host.coordinator()?;
        let (id, epoch) = match config.transactional_id.as_deref() {
            None => (txn_host.next_producer_id()?, 0),
            Some("") => return Err(Error::config("transactional_id must not be empty")),
            Some(txn_id) => {
                let timeout_ms =
                    config.transaction_timeout.as_millis().min(u64::MAX as u128) as u64;
                txns.init_producer(txn_host, txn_id, timeout_ms)?
            }
        };
        Ok(Producer::new(host, config, id, epoch))
    }

    /// The transactional id, if the producer has one.
    pub fn transactional_id(&self) -> Option<&str> {
        self.config.transactional_id.as_deref()
    }

    fn txn_error(&self, reason: &str) -> Error {
        Error::InvalidTxnState {
            transactional_id: self.config.transactional_id.clone().unwrap_or_default(),
            reason: reason.to_owned(),
        }
    }

    fn txn_id(&self) -> Result<&str> {
        self.config
            .transactional_id
            .as_deref()
            .ok_or_else(|| self.txn_error("the producer has no transactional id"))
    }

    /// Starts a transaction: sends from now on are part of it until
    /// [`commit_transaction`](Self::commit_transaction) or
    /// [`abort_transaction`](Self::abort_transaction).
    pub fn begin_transaction(&mut self) -> Result<()> {
        self.txn_id()?;
        if self.in_transaction {
            return Err(self.txn_error("a transaction is already open"));
        }
        self.in_transaction = true;
        self.txn_partitions.clear();
        Ok(())
    }

    /// Adds a consumer group's offsets to the open transaction: they are
    /// committed for `group` if and only if the transaction commits
    /// (consume-transform-produce with exactly-once results). Each offset is
    /// the next one to consume, as with `Consumer::commit`.
    pub fn send_offsets_to_transaction(
        &mut self,
        offsets: &[(TopicPartition, u64)],
        group: &str,
    ) -> Result<()> {
        let id = self.txn_id()?.to_owned();
        if !self.in_transaction {
            return Err(self.txn_error("send_offsets_to_transaction outside a transaction"));
        }
        self.check_not_ending()?;
        let offsets: Vec<(String, String, u32, u64)> = offsets
            .iter()
            .map(|(tp, o)| (group.to_owned(), tp.topic.clone(), tp.partition, *o))
            .collect();
        let (txns, _) = self.host.coordinator()?;
        txns.add(&id, (self.producer_id, self.epoch), &[], &offsets)
    }

    /// Commits the open transaction: its records become visible to
    /// `ReadCommitted` consumers and its offsets are committed, atomically.
    ///
    /// If it fails half-way (on a cluster: a partition of the transaction
    /// has no leader, or an acknowledgement timed out), the decision may
    /// already be recorded: call it again to finish. Until then sends fail;
    /// `abort_transaction` finishes a recorded commit as a commit and says
    /// so.
    pub fn commit_transaction(&mut self) -> Result<()> {
        self.end_transaction(true)
    }

    /// Aborts the open transaction: its records are never shown to
    /// `ReadCommitted` consumers and its offsets are not committed.
    pub fn abort_transaction(&mut self) -> Result<()> {
        self.end_transaction(false)
    }

    fn end_transaction(&mut self, commit: bool) -> Result<()> {
        let id = self.txn_id()?.to_owned();
        if !self.in_transaction {
            return Err(self.txn_error("no transaction is open"));
        }
        // Until it succeeds, the transaction takes nothing new.
        let retry = std::mem::replace(&mut self.ending, true);
        let (txns, txn_host) = self.host.coordinator()?;
        txns.end(txn_host, &id, (self.producer_id, self.epoch), commit, retry)?;
        self.in_transaction = false;
        self.ending = false;
        self.txn_partitions.clear();
        Ok(())
    }

    fn check_not_ending(&self) -> Result<()> {
        if self.ending {
            return Err(self.txn_error(
                "a commit or abort of this transaction failed: call it again to finish it",
            ));
        }
        Ok(())
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
        if self.config.transactional_id.is_some() && !self.in_transaction {
            return Err(self.txn_error("send outside a transaction: call begin_transaction first"));
        }
        self.check_not_ending()?;
        let (id, epoch) = (self.producer_id, self.epoch);
        let Producer {
            host,
            config,
            sequences,
            txn_partitions,
            ..
        } = self;
        let txn = config.transactional_id.as_deref();
        let seqs = sequences.entry(topic.to_owned()).or_default();
        // Partitions added since the last send start at sequence 0.
        seqs.resize(seqs.len().max(handle.partition_count() as usize), 0);
        let mut advanced = Vec::new();
        let result = handle.send_idempotent(
            records,
            |p| {
                if let Some(txn_id) = txn {
                    // The coordinator learns of a partition before it is
                    // written, so it can always mark it.
                    let key = (topic.to_owned(), p);
                    if !txn_partitions.contains(&key) {
                        let (txns, _) = host.coordinator()?;
                        txns.add(txn_id, (id, epoch), std::slice::from_ref(&key), &[])?;
                        txn_partitions.insert(key);
                    }
                }
                Ok(ProducerBatch {
                    producer_id: id,
                    epoch,
                    base_sequence: seqs.get(p as usize).copied().unwrap_or(0),
                    attributes: if txn.is_some() { TRANSACTIONAL } else { 0 },
                })
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
        let t = self.host.topic(name)?;
        self.topics.insert(name.to_owned(), t.clone());
        Ok(t)
    }
}
