//! Typed topics: Rust values in, Rust values out, through a serde [`Codec`].
//!
//! A [`TypedTopic`] wraps a [`Topic`] and encodes keys and values before
//! appending; a [`TypedConsumer`] wraps a [`Consumer`] and decodes what
//! `poll` returns. Both wrap the same handles a [`Log`](crate::Log) and a
//! [`Cluster`](crate::Cluster) hand out, so typed code runs unchanged on
//! either. Nothing typed reaches the disk: records are the same Kafka
//! RecordBatch v2 records, with the codec's bytes as key and value.
//!
//! Decoding is per record. A record that does not decode is an
//! [`Error::Decode`] naming topic, partition and offset, in the place of
//! that record in `poll`'s result; the records around it decode as usual
//! and the consumer's position is already past all of them, so skipping a
//! bad record is simply going on (and seeking back to its offset is how to
//! stop there instead).
//!
//! Codecs: `Postcard` (feature `postcard`, on by default) is the default
//! binary codec; `Json` (feature `json`) is readable by anything. Any
//! other format fits behind the [`Codec`] trait.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::consumer::Consumer;
use crate::error::{Error, Result};
use crate::record::{Message, Record, RecordMetadata};
use crate::topic::Topic;

/// The error a [`Codec`] reports; kept as the `source` of
/// [`Error::Encode`] and [`Error::Decode`].
pub type CodecError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Turns serde values into record bytes and back.
///
/// A codec is a small value (usually a unit struct) kept in every typed
/// handle; implement it to plug in another format.
///
/// ```
/// #[derive(Clone, Copy, Debug, Default)]
/// struct Utf8Json;
/// impl brook::Codec for Utf8Json {
///     fn name(&self) -> &'static str { "utf8-json" }
///     fn encode<T: serde::Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>, brook::CodecError> {
///         Ok(serde_json::to_vec(value)?)
///     }
///     fn decode<T: serde::de::DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, brook::CodecError> {
///         Ok(serde_json::from_slice(bytes)?)
///     }
/// }
/// ```
pub trait Codec: Clone + fmt::Debug + Send + Sync + 'static {
    /// A short name for error messages (`"postcard"`, `"json"`).
    fn name(&self) -> &'static str;
    /// Encodes one key or value.
    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> std::result::Result<Vec<u8>, CodecError>;
    /// Decodes one key or value; all of `bytes` must be used.
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> std::result::Result<T, CodecError>;
}

/// The default binary codec: [postcard](https://docs.rs/postcard), whose
/// 1.x wire format is specified and stable. Compact (varint integers, no
/// field names), so a record costs about what its data does; not
/// self-describing, so a key or value type must change compatibly (or
/// move to a new topic) — and serde features that need a self-describing
/// format (`#[serde(flatten)]`, untagged enums, `serde_json::Value`) do
/// not work with it; use `Json` for those.
#[cfg(feature = "postcard")]
#[cfg_attr(docsrs, doc(cfg(feature = "postcard")))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Postcard;

#[cfg(feature = "postcard")]
impl Codec for Postcard {
    fn name(&self) -> &'static str {
        "postcard"
    }

    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> std::result::Result<Vec<u8>, CodecError> {
        Ok(postcard::to_allocvec(value)?)
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> std::result::Result<T, CodecError> {
        let (value, rest) = postcard::take_from_bytes(bytes)?;
        // postcard stops where the type ends; bytes left over mean the
        // record was written with another type.
        if !rest.is_empty() {
            return Err(format!(
                "{} bytes left over after the value (written as another type?)",
                rest.len()
            )
            .into());
        }
        Ok(value)
    }
}

/// JSON through serde_json: self-describing and readable by any tool
/// (`brook consume` prints it as is), larger and slower than `Postcard`.
#[cfg(feature = "json")]
#[cfg_attr(docsrs, doc(cfg(feature = "json")))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Json;

#[cfg(feature = "json")]
impl Codec for Json {
    fn name(&self) -> &'static str {
        "json"
    }

    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> std::result::Result<Vec<u8>, CodecError> {
        Ok(serde_json::to_vec(value)?)
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> std::result::Result<T, CodecError> {
        Ok(serde_json::from_slice(bytes)?)
    }
}

/// The codec `TypedTopic<K, V>` and `TypedConsumer<K, V>` use when none is
/// named: `Postcard` with the `postcard` feature (the default), else
/// `Json` with the `json` feature.
#[cfg(feature = "postcard")]
pub type DefaultCodec = Postcard;
/// The codec `TypedTopic<K, V>` and `TypedConsumer<K, V>` use when none is
/// named: `Postcard` with the `postcard` feature (the default), else
/// `Json` with the `json` feature.
#[cfg(all(not(feature = "postcard"), feature = "json"))]
pub type DefaultCodec = Json;
/// Without the `postcard` and `json` features there is no default codec:
/// name one, `TypedTopic<K, V, MyCodec>`. This type is not a [`Codec`].
#[cfg(not(any(feature = "postcard", feature = "json")))]
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultCodec;

/// A topic that appends Rust values: keys and values are encoded with the
/// codec `C` (default [`DefaultCodec`], postcard).
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// # #[cfg(feature = "postcard")] {
/// use brook::{Log, TopicConfig, TypedTopic};
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Order { item: String, cents: u64 }
///
/// let log = Log::open(dir.path())?;
/// let orders: TypedTopic<u64, Order> =
///     TypedTopic::new(log.create_topic("orders", TopicConfig::default().partitions(2))?);
/// let meta = orders.append(&7, &Order { item: "book".into(), cents: 1200 })?;
/// # let _ = meta;
/// # }
/// # Ok::<(), brook::Error>(())
/// ```
pub struct TypedTopic<K, V, C = DefaultCodec> {
    topic: Topic,
    codec: C,
    types: PhantomData<fn(&K, &V)>,
}

impl<K, V, C: Clone> Clone for TypedTopic<K, V, C> {
    fn clone(&self) -> Self {
        TypedTopic {
            topic: self.topic.clone(),
            codec: self.codec.clone(),
            types: PhantomData,
        }
    }
}

impl<K, V, C: fmt::Debug> fmt::Debug for TypedTopic<K, V, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypedTopic")
            .field("topic", &self.topic)
            .field("codec", &self.codec)
            .field("key", &std::any::type_name::<K>())
            .field("value", &std::any::type_name::<V>())
            .finish()
    }
}

impl<K, V, C: Codec + Default> TypedTopic<K, V, C> {
    /// Wraps a topic of a [`Log`](crate::Log) or a
    /// [`Cluster`](crate::Cluster), with the codec's default settings.
    pub fn new(topic: Topic) -> Self {
        Self::with_codec(topic, C::default())
    }
}

impl<K, V, C: Codec> TypedTopic<K, V, C> {
    /// Wraps a topic with this codec.
    pub fn with_codec(topic: Topic, codec: C) -> Self {
        TypedTopic {
            topic,
            codec,
            types: PhantomData,
        }
    }

    /// The untyped topic (for `partition`, `with_acks`, ...).
    pub fn topic(&self) -> &Topic {
        &self.topic
    }

    /// The topic's name.
    pub fn name(&self) -> &str {
        self.topic.name()
    }

    /// The codec.
    pub fn codec(&self) -> &C {
        &self.codec
    }

    fn encode<T: Serialize + ?Sized>(&self, field: &'static str, value: &T) -> Result<Vec<u8>> {
        self.codec.encode(value).map_err(|source| Error::Encode {
            topic: self.topic.name().to_owned(),
            field,
            codec: self.codec.name(),
            source,
        })
    }
}

impl<K: Serialize, V: Serialize, C: Codec> TypedTopic<K, V, C> {
    /// Appends a keyed record; the encoded key picks the partition (the
    /// same murmur2 rule as for bytes, so equal keys share a partition).
    pub fn append(&self, key: &K, value: &V) -> Result<RecordMetadata> {
        self.topic.send(self.record(key, value)?)
    }

    /// Appends a record without a key (spread over partitions).
    pub fn append_value(&self, value: &V) -> Result<RecordMetadata> {
        let value = self.encode("value", value)?;
        self.topic.send(Record::from_bytes(value))
    }

    /// Appends a tombstone for `key` (for compacted topics).
    pub fn tombstone(&self, key: &K) -> Result<RecordMetadata> {
        let key = self.encode("key", key)?;
        self.topic.send(Record::tombstone(key))
    }

    /// Appends pairs in order, as one [`Topic::send_batch`]: every pair is
    /// encoded before anything is written.
    pub fn append_batch<'a>(
        &self,
        pairs: impl IntoIterator<Item = (&'a K, &'a V)>,
    ) -> Result<Vec<RecordMetadata>>
    where
        K: 'a,
        V: 'a,
    {
        let records = pairs
            .into_iter()
            .map(|(k, v)| self.record(k, v))
            .collect::<Result<Vec<_>>>()?;
        self.topic.send_batch(&records)
    }

    /// The encoded record for a pair, to add headers, a partition or a
    /// timestamp and append with [`Topic::send`].
    pub fn record(&self, key: &K, value: &V) -> Result<Record> {
        let k = self.encode("key", key)?;
        let v = self.encode("value", value)?;
        Ok(Record::from_bytes(v).key_bytes(k))
    }
}

/// A decoded message: the key and value as Rust values, and the
/// [`Message`] they came from (offset, timestamp, headers).
#[derive(Clone)]
pub struct TypedMessage<K, V> {
    key: Option<K>,
    value: Option<V>,
    message: Message,
}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for TypedMessage<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypedMessage")
            .field("topic", &self.message.topic())
            .field("partition", &self.message.partition())
            .field("offset", &self.message.offset())
            .field("key", &self.key)
            .field("value", &self.value)
            .finish()
    }
}

impl<K, V> TypedMessage<K, V> {
    /// The key; `None` if the record had none.
    pub fn key(&self) -> Option<&K> {
        self.key.as_ref()
    }

    /// The value; `None` for a tombstone.
    pub fn value(&self) -> Option<&V> {
        self.value.as_ref()
    }

    /// The raw message (headers, the encoded bytes).
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        self.message.topic()
    }

    /// The partition.
    pub fn partition(&self) -> u32 {
        self.message.partition()
    }

    /// The offset.
    pub fn offset(&self) -> u64 {
        self.message.offset()
    }

    /// The timestamp, ms since the epoch.
    pub fn timestamp(&self) -> i64 {
        self.message.timestamp()
    }

    /// Key, value and raw message, taken apart.
    pub fn into_parts(self) -> (Option<K>, Option<V>, Message) {
        (self.key, self.value, self.message)
    }
}

/// A [`Consumer`] whose `poll` decodes keys and values with the codec `C`
/// (default [`DefaultCodec`], postcard).
///
/// Every other [`Consumer`] method (`subscribe`, `assign`, `commit`,
/// `seek`, `close`, ...) is reached through `Deref`.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// # #[cfg(feature = "postcard")] {
/// use brook::{ConsumerConfig, Log, OffsetReset, TopicConfig, TypedConsumer, TypedTopic};
/// use std::time::Duration;
///
/// let log = Log::open(dir.path())?;
/// let orders: TypedTopic<String, u64> = TypedTopic::new(log.create_topic("orders", TopicConfig::default())?);
/// orders.append(&"alice".to_string(), &1200)?;
///
/// let config = ConsumerConfig::new("billing").auto_offset_reset(OffsetReset::Earliest);
/// let mut c: TypedConsumer<String, u64> = TypedConsumer::new(log.consumer_with(config)?);
/// c.subscribe(&["orders"])?;
/// for item in c.poll(Duration::from_secs(1))? {
///     match item {
///         Ok(m) => assert_eq!(m.value(), Some(&1200)),
///         Err(e) => eprintln!("skipping a record: {e}"),   // names topic, partition, offset
///     }
/// }
/// c.commit()?;
/// # }
/// # Ok::<(), brook::Error>(())
/// ```
pub struct TypedConsumer<K, V, C = DefaultCodec> {
    consumer: Consumer,
    codec: C,
    types: PhantomData<fn() -> (K, V)>,
}

impl<K, V, C: fmt::Debug> fmt::Debug for TypedConsumer<K, V, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypedConsumer")
            .field("consumer", &self.consumer)
            .field("codec", &self.codec)
            .field("key", &std::any::type_name::<K>())
            .field("value", &std::any::type_name::<V>())
            .finish()
    }
}

impl<K, V, C: Codec + Default> TypedConsumer<K, V, C> {
    /// Wraps a consumer of a [`Log`](crate::Log) or a
    /// [`Cluster`](crate::Cluster), with the codec's default settings.
    pub fn new(consumer: Consumer) -> Self {
        Self::with_codec(consumer, C::default())
    }
}

impl<K, V, C: Codec> TypedConsumer<K, V, C> {
    /// Wraps a consumer with this codec.
    pub fn with_codec(consumer: Consumer, codec: C) -> Self {
        TypedConsumer {
            consumer,
            codec,
            types: PhantomData,
        }
    }

    /// The codec.
    pub fn codec(&self) -> &C {
        &self.codec
    }

    /// The untyped consumer back.
    pub fn into_inner(self) -> Consumer {
        self.consumer
    }
}

impl<K: DeserializeOwned, V: DeserializeOwned, C: Codec> TypedConsumer<K, V, C> {
    /// [`Consumer::poll`], each message decoded: an `Err` item is an
    /// [`Error::Decode`] for that record alone. The position has moved past
    /// every returned record, bad ones included, so going on skips a bad
    /// record (and a later `commit` commits past it); to stop at it
    /// instead, `seek` to its offset. The outer `Err` is the poll's own
    /// failure, as for [`Consumer::poll`].
    pub fn poll(&mut self, timeout: Duration) -> Result<Vec<Result<TypedMessage<K, V>>>> {
        let batch = self.consumer.poll(timeout)?;
        Ok(batch.into_iter().map(|m| self.decode(m)).collect())
    }

    /// Decodes one message with this consumer's codec, as `poll` does.
    pub fn decode(&self, message: Message) -> Result<TypedMessage<K, V>> {
        TypedMessage::decode(&self.codec, message)
    }
}

impl<K, V, C> Deref for TypedConsumer<K, V, C> {
    type Target = Consumer;
    fn deref(&self) -> &Consumer {
        &self.consumer
    }
}

impl<K, V, C> DerefMut for TypedConsumer<K, V, C> {
    fn deref_mut(&mut self) -> &mut Consumer {
        &mut self.consumer
    }
}

impl<K: DeserializeOwned, V: DeserializeOwned> TypedMessage<K, V> {
    /// Decodes a message's key and value with `codec` (for messages read
    /// another way: [`Partition::read`](crate::Partition::read), an
    /// `AsyncConsumer` stream). A failure is an
    /// [`Error::Decode`] naming the message's topic, partition and offset.
    pub fn decode<C: Codec>(codec: &C, message: Message) -> Result<Self> {
        let fail = |field: &'static str, source: CodecError| Error::Decode {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            field,
            codec: codec.name(),
            source,
        };
        let key = match message.key() {
            Some(bytes) => Some(codec.decode(bytes).map_err(|e| fail("key", e))?),
            None => None,
        };
        let value = match message.value() {
            Some(bytes) => Some(codec.decode(bytes).map_err(|e| fail("value", e))?),
            None => None,
        };
        Ok(TypedMessage {
            key,
            value,
            message,
        })
    }
}
