//! The async API (feature `tokio`): an [`AsyncConsumer`] that is a
//! [`futures_core::Stream`] of messages, and an [`AsyncTopic`] whose appends
//! are futures.
//!
//! **Waking.** A consumer owns one wake-up signal that every partition it
//! reads rings on append (and its group rings on a rebalance); the sync
//! `poll` sleeps on it. The stream registers its task's `Waker` on the same
//! signal instead, after a non-blocking read found nothing, and checks the
//! signal's generation once more after registering, so an append between
//! the read and the registration is not missed. An append then wakes the
//! task directly: there is no polling loop and no thread per consumer. The
//! only timer is the group heartbeat: a waiting subscribed stream wakes once
//! per third of its `session_timeout` to stay a member, as the sync `poll`
//! does.
//!
//! **Appends** are memory-mapped writes of microseconds, but under
//! [`SyncPolicy::Always`](crate::SyncPolicy::Always) an append waits for its
//! fsync and on a [`Cluster`](crate::Cluster) with [`Acks::All`](crate::Acks)
//! for the replicas, so [`AsyncTopic`] runs each call on tokio's blocking
//! pool (`spawn_blocking`): one pool thread per append in flight.
//!
//! Everything here needs a tokio runtime with the time driver enabled
//! (`#[tokio::main]` has it; a hand-built runtime needs `enable_time`).

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;

use crate::consumer::Consumer;
use crate::error::{Error, Result};
use crate::record::{Message, Record, RecordMetadata, TopicPartition};
use crate::topic::Topic;

/// A topic whose appends are futures, for async code. Cheap to clone.
///
/// Each future resolves when the record is in the log as the log's
/// [`SyncPolicy`](crate::SyncPolicy) promises: visible and safe from a
/// process crash always, fsynced too under `SyncPolicy::Always` (and, on a
/// cluster, acknowledged as the topic's [`Acks`](crate::Acks) say).
///
/// **Cancellation.** A future does nothing until first polled. Once
/// polled, the append runs to its end on a blocking thread whether or not
/// the future is kept: dropping the future (a `select!` branch that lost,
/// a timeout) does not take the record back, it only loses its
/// [`RecordMetadata`] — the record may be in the log. Retrying after such
/// a drop can write it twice; an idempotent
/// [`Producer`](crate::Producer) is the tool when that matters.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let log = brook::Log::open(dir.path())?;
/// let orders = brook::AsyncTopic::new(log.create_topic("orders", brook::TopicConfig::default())?);
/// let meta = orders.append("alice", "ordered a book").await?;
/// assert_eq!(meta.offset, 0);
/// # Ok::<(), brook::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone, Debug)]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub struct AsyncTopic {
    topic: Topic,
}

impl AsyncTopic {
    /// Wraps a topic of a [`Log`](crate::Log) or a [`Cluster`](crate::Cluster).
    pub fn new(topic: Topic) -> AsyncTopic {
        AsyncTopic { topic }
    }

    /// The sync topic (appends on it block the calling thread).
    pub fn topic(&self) -> &Topic {
        &self.topic
    }

    /// [`Topic::append`] as a future. Key and value are copied at the call.
    pub fn append(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> impl Future<Output = Result<RecordMetadata>> + Send + 'static {
        self.send(Record::new(value).key(key))
    }

    /// [`Topic::send`] as a future.
    pub fn send(
        &self,
        record: Record,
    ) -> impl Future<Output = Result<RecordMetadata>> + Send + 'static {
        let topic = self.topic.clone();
        blocking(move || topic.send(record))
    }

    /// [`Topic::send_batch`] as a future: all records or none are checked
    /// before any is written, as there.
    pub fn send_batch(
        &self,
        records: Vec<Record>,
    ) -> impl Future<Output = Result<Vec<RecordMetadata>>> + Send + 'static {
        let topic = self.topic.clone();
        blocking(move || topic.send_batch(records))
    }
}

/// Runs a blocking brook call on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(call).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(Error::Closed {
            what: "the tokio runtime shut down during an append (the record may be in the log)"
                .into(),
        }),
    }
}

/// A [`Consumer`] as a [`Stream`] of messages that wakes on append.
///
/// Items are `Result<Message>`: an error of the underlying `poll` (an I/O
/// error, `Error::NoOffset`, ...) is yielded and the stream goes on; after
/// an [`Error::Closed`] it ends. Rebalances, auto-commit and the group's
/// session keep-alive happen inside the stream, as inside the sync `poll`.
///
/// Messages come from `poll` in batches of up to `max_poll_records` and are
/// buffered here; [`commit`](Self::commit) commits only what the stream
/// has yielded, and [`consumer_mut`](Self::consumer_mut) rewinds the
/// consumer to the first message not yet yielded before handing it out.
///
/// **Cancellation.** [`recv`](Self::recv) and `poll_next` keep no state
/// in the future: dropping a `recv()` (a `select!` branch that lost, a
/// timeout) loses no message; the next call yields it.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use brook::{AsyncConsumer, ConsumerConfig, Log, OffsetReset, TopicConfig};
/// let log = Log::open(dir.path())?;
/// let orders = log.create_topic("orders", TopicConfig::default())?;
/// let config = ConsumerConfig::new("billing").auto_offset_reset(OffsetReset::Earliest);
/// let mut consumer = AsyncConsumer::new(log.consumer_with(config)?);
/// consumer.consumer_mut()?.subscribe(&["orders"])?;
///
/// let writer = tokio::task::spawn_blocking(move || orders.append("alice", "a book"));
/// let m = consumer.recv().await.expect("a message")?;   // sleeps until the append wakes it
/// assert_eq!(m.value(), Some(&b"a book"[..]));
/// consumer.commit()?;
/// # writer.await.unwrap()?;
/// # Ok::<(), brook::Error>(())
/// # }).unwrap();
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub struct AsyncConsumer {
    consumer: Consumer,
    /// Messages `poll` returned that the stream has not yielded yet, in
    /// offset order per partition.
    buffer: VecDeque<Message>,
    /// Wakes a waiting stream to keep its group membership alive.
    heartbeat: Option<Pin<Box<tokio::time::Sleep>>>,
    ended: bool,
}

impl std::fmt::Debug for AsyncConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncConsumer")
            .field("consumer", &self.consumer)
            .field("buffered", &self.buffer.len())
            .field("ended", &self.ended)
            .finish()
    }
}

impl AsyncConsumer {
    /// Wraps a consumer of a [`Log`](crate::Log) or a
    /// [`Cluster`](crate::Cluster); subscribe or assign before or after.
    pub fn new(consumer: Consumer) -> AsyncConsumer {
        AsyncConsumer {
            consumer,
            buffer: VecDeque::new(),
            heartbeat: None,
            ended: false,
        }
    }

    /// The next message, waiting (without blocking a thread) until one is
    /// appended; `None` once the consumer is closed. The same as
    /// `StreamExt::next` on the stream.
    pub async fn recv(&mut self) -> Option<Result<Message>> {
        std::future::poll_fn(|cx| self.poll_message(cx)).await
    }

    /// Commits, for each assigned partition, the offset after the last
    /// message the stream yielded (messages buffered but not yet yielded
    /// are not committed). Blocks for the offset store's write, an fsync
    /// under `SyncPolicy::Always`.
    pub fn commit(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return self.consumer.commit();
        }
        let first_buffered = self.first_buffered();
        let mut offsets = Vec::new();
        for tp in self.consumer.assignment() {
            let offset = match first_buffered.get(&tp) {
                Some(&offset) => offset,
                None => match self.consumer.position(&tp) {
                    Ok(offset) => offset,
                    Err(Error::NoOffset { .. }) => continue,
                    Err(e) => return Err(e),
                },
            };
            offsets.push((tp, offset));
        }
        self.consumer.commit_offsets(&offsets)
    }

    /// The consumer, for reading its state (`assignment`, `committed`).
    pub fn consumer(&self) -> &Consumer {
        &self.consumer
    }

    /// The consumer, for `subscribe`, `assign`, `seek`, `pause`, ...:
    /// first moved back to the first message the stream has not yielded,
    /// so changing it loses nothing and the stream reads what it says next.
    pub fn consumer_mut(&mut self) -> Result<&mut Consumer> {
        self.rewind()?;
        self.ended = false;
        Ok(&mut self.consumer)
    }

    /// The consumer back, positioned at the first message the stream has
    /// not yielded.
    pub fn into_inner(mut self) -> Result<Consumer> {
        self.rewind()?;
        Ok(self.consumer)
    }

    /// The first buffered offset of each partition with buffered messages.
    fn first_buffered(&self) -> BTreeMap<TopicPartition, u64> {
        let mut first = BTreeMap::new();
        for m in &self.buffer {
            first
                .entry(TopicPartition::new(m.topic(), m.partition()))
                .or_insert(m.offset());
        }
        first
    }

    fn rewind(&mut self) -> Result<()> {
        let first_buffered = self.first_buffered();
        self.buffer.clear();
        for (tp, offset) in first_buffered {
            self.consumer.seek(&tp, offset)?;
        }
        Ok(())
    }

    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message>>> {
        loop {
            if let Some(m) = self.buffer.pop_front() {
                return Poll::Ready(Some(Ok(m)));
            }
            if self.ended {
                return Poll::Ready(None);
            }
            let (notify, session_timeout) = self.consumer.wake_source();
            let notify = std::sync::Arc::clone(notify);
            let seen = notify.generation();
            match self.consumer.poll(Duration::ZERO) {
                Ok(batch) if !batch.is_empty() => {
                    self.buffer.extend(batch);
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    self.ended = matches!(e, Error::Closed { .. });
                    return Poll::Ready(Some(Err(e)));
                }
            }
            notify.register_waker(cx.waker());
            if notify.generation() != seen {
                continue; // an append or rebalance came in since the read
            }
            let heartbeat = self
                .heartbeat
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(session_timeout / 3)));
            if heartbeat.as_mut().poll(cx).is_ready() {
                self.heartbeat = None;
                continue;
            }
            return Poll::Pending;
        }
    }
}

impl Stream for AsyncConsumer {
    type Item = Result<Message>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_message(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.buffer.len(), None)
    }
}
