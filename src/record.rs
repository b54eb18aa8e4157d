//! What applications send ([`Record`]) and receive ([`Message`],
//! [`RecordMetadata`]), and the name of a partition ([`TopicPartition`]).

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::bulk_arc::BulkArc;
use crate::format::HeaderIter;

/// A record to append: value, optional key and headers, optionally an
/// explicit partition and timestamp.
///
/// ```
/// let r = brook::Record::new("payload").key("k").header("trace", "42");
/// ```
///
/// Builder arguments are copied into the record, so borrowed data of any
/// lifetime works; [`Record::from_bytes`] and [`Record::key_bytes`] take
/// owned buffers without copying.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Record {
    pub(crate) key: Option<Bytes>,
    pub(crate) value: Option<Bytes>,
    pub(crate) headers: Vec<(String, Bytes)>,
    pub(crate) partition: Option<u32>,
    pub(crate) timestamp: Option<i64>,
}

impl Record {
    /// A record with this value (copied).
    pub fn new(value: impl AsRef<[u8]>) -> Record {
        Record {
            value: Some(Bytes::copy_from_slice(value.as_ref())),
            ..Record::default()
        }
    }

    /// A record whose value is this owned buffer (no copy: `Vec<u8>`,
    /// `Bytes`, `String`, `&'static [u8]` ...).
    pub fn from_bytes(value: impl Into<Bytes>) -> Record {
        Record {
            value: Some(value.into()),
            ..Record::default()
        }
    }

    /// A tombstone: a key with no value. Compaction removes the key.
    pub fn tombstone(key: impl AsRef<[u8]>) -> Record {
        Record {
            key: Some(Bytes::copy_from_slice(key.as_ref())),
            ..Record::default()
        }
    }

    /// Sets the key (copied). Keyed records go to
    /// `murmur2(key) & 0x7fffffff % partitions` unless a partition is given.
    pub fn key(mut self, key: impl AsRef<[u8]>) -> Record {
        self.key = Some(Bytes::copy_from_slice(key.as_ref()));
        self
    }

    /// Sets the key to this owned buffer (no copy).
    pub fn key_bytes(mut self, key: impl Into<Bytes>) -> Record {
        self.key = Some(key.into());
        self
    }

    /// Adds a header (Kafka headers: a UTF-8 name and bytes; names may repeat).
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Record {
        self.headers
            .push((name.to_owned(), Bytes::copy_from_slice(value.as_ref())));
        self
    }

    /// Sends the record to this partition, bypassing the partitioner.
    pub fn partition(mut self, partition: u32) -> Record {
        self.partition = Some(partition);
        self
    }

    /// Sets the create-time timestamp in milliseconds since the Unix epoch
    /// (default: the time of the append). Must not be negative.
    pub fn timestamp(mut self, timestamp_ms: i64) -> Record {
        self.timestamp = Some(timestamp_ms);
        self
    }
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("key", &self.key.as_deref().map(Lossy))
            .field("value", &self.value.as_deref().map(Lossy))
            .field("headers", &self.headers.len())
            .field("partition", &self.partition)
            .field("timestamp", &self.timestamp)
            .finish()
    }
}

/// Where an appended record went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct RecordMetadata {
    /// Partition the record was appended to.
    pub partition: u32,
    /// Its offset in that partition.
    pub offset: u64,
    /// Its timestamp, milliseconds since the Unix epoch.
    pub timestamp: i64,
}

/// A topic name and a partition number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct TopicPartition {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
}

impl TopicPartition {
    /// `TopicPartition::new("orders", 0)`.
    pub fn new(topic: impl Into<String>, partition: u32) -> TopicPartition {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// The bytes a read shares with its messages: a published, immutable range
/// of a segment's memory map, and the topic name.
pub(crate) struct ReadRegion {
    pub(crate) topic: Arc<str>,
    /// Keeps the mapping alive.
    pub(crate) _map: Arc<crate::storage::SegmentMap>,
    pub(crate) ptr: *const u8,
    pub(crate) len: usize,
}

// SAFETY: the region is read-only and immutable while it lives (see
// `ReadRegion::bytes`); the map it points into is `Send + Sync`.
unsafe impl Send for ReadRegion {}
// SAFETY: as above; shared access is read-only.
unsafe impl Sync for ReadRegion {}

impl ReadRegion {
    #[inline]
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr..ptr+len` lies within the mapped file below the
        // length published to readers when the region was made; brook never
        // writes there again (the writer appends past the published end and
        // sealing touches only the open batch's header, which no region
        // covers), never truncates below it, and `_map` keeps the mapping
        // alive. Deleting or renaming the file leaves the mapping valid.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// `Bytes` owner for [`Message::key_bytes`] and [`Message::value_bytes`].
struct RegionSlice {
    region: BulkArc<ReadRegion>,
    start: usize,
    end: usize,
}

impl AsRef<[u8]> for RegionSlice {
    fn as_ref(&self) -> &[u8] {
        &self.region.bytes()[self.start..self.end]
    }
}

/// A `(start, length)` field of a record in its region; length -1 is null.
#[derive(Clone, Copy)]
pub(crate) struct Field {
    pub(crate) start: u32,
    pub(crate) len: i32,
}

impl Field {
    pub(crate) fn from_range(r: Option<(usize, usize)>) -> Field {
        match r {
            Some((s, e)) => Field {
                start: s as u32,
                len: (e - s) as i32,
            },
            None => Field { start: 0, len: -1 },
        }
    }

    #[inline]
    fn range(self) -> Option<std::ops::Range<usize>> {
        (self.len >= 0).then(|| self.start as usize..self.start as usize + self.len as usize)
    }
}

/// A record read from a partition. Cheap to clone (one reference count);
/// owns its bytes, which are shared with the segment's memory map (no
/// copy), so a `Message` stays valid after the log is closed or the segment
/// deleted.
///
/// Dropping the messages of one read costs one atomic operation, not one
/// each: a thread counts the messages of a read it drops and gives the
/// read's share of the map back when it drops a message of another read,
/// reads again, or exits. Until then the map stays mapped (and a deleted
/// segment's disk space stays in use) — at most one read's worth per
/// thread.
#[derive(Clone)]
pub struct Message {
    pub(crate) region: BulkArc<ReadRegion>,
    pub(crate) offset: u64,
    pub(crate) timestamp: i64,
    pub(crate) partition: u32,
    pub(crate) key: Field,
    pub(crate) value: Field,
    pub(crate) headers_start: u32,
    pub(crate) header_count: u32,
    /// End of the record in the region.
    pub(crate) end: u32,
}

impl Message {
    /// The topic it was read from.
    #[inline]
    pub fn topic(&self) -> &str {
        &self.region.topic
    }

    /// The partition it was read from.
    #[inline]
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// Its offset.
    #[inline]
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Its timestamp, milliseconds since the Unix epoch.
    #[inline]
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }

    /// Its key, if any.
    #[inline]
    pub fn key(&self) -> Option<&[u8]> {
        self.key.range().map(|r| &self.region.bytes()[r])
    }

    /// Its value; `None` for a tombstone.
    #[inline]
    pub fn value(&self) -> Option<&[u8]> {
        self.value.range().map(|r| &self.region.bytes()[r])
    }

    /// Its headers in order: `(name, value)`.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        HeaderIter {
            buf: &self.region.bytes()[..self.end as usize],
            pos: self.headers_start as usize,
            left: self.header_count,
        }
    }

    /// The bytes of its key and value (for the metrics), read from the
    /// message alone.
    pub(crate) fn payload_len(&self) -> usize {
        self.key.len.max(0) as usize + self.value.len.max(0) as usize
    }

    fn shared(&self, f: Field) -> Option<Bytes> {
        f.range().map(|r| {
            Bytes::from_owner(RegionSlice {
                region: self.region.clone(),
                start: r.start,
                end: r.end,
            })
        })
    }

    /// The key as shared bytes (no copy of the data).
    pub fn key_bytes(&self) -> Option<Bytes> {
        self.shared(self.key)
    }

    /// The value as shared bytes (no copy of the data).
    pub fn value_bytes(&self) -> Option<Bytes> {
        self.shared(self.value)
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("topic", &self.topic())
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .field("timestamp", &self.timestamp)
            .field("key", &self.key().map(Lossy))
            .field("value", &self.value().map(Lossy))
            .field("headers", &self.header_count)
            .finish()
    }
}

/// Shows bytes as text when they are short UTF-8, else by length.
struct Lossy<'a>(&'a [u8]);

impl fmt::Debug for Lossy<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(self.0) {
            Ok(s) if s.len() <= 64 => write!(f, "{s:?}"),
            _ => write!(f, "<{} bytes>", self.0.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_copy_borrowed_data() {
        let k = String::from("key");
        let r = Record::new(vec![1u8, 2])
            .key(&k)
            .header("h", "v")
            .partition(3)
            .timestamp(7);
        drop(k);
        assert_eq!(r.key.as_deref(), Some(&b"key"[..]));
        assert_eq!(r.value.as_deref(), Some(&[1u8, 2][..]));
        assert_eq!(r.headers.len(), 1);
        assert_eq!((r.partition, r.timestamp), (Some(3), Some(7)));
        assert_eq!(Record::tombstone("k").value, None);
        assert!(format!("{r:?}").contains("\"key\""));
    }

    #[test]
    fn topic_partition_orders_by_topic_then_partition() {
        let mut v = [
            TopicPartition::new("b", 0),
            TopicPartition::new("a", 2),
            TopicPartition::new("a", 1),
        ];
        v.sort();
        assert_eq!(v[0], TopicPartition::new("a", 1));
        assert_eq!(v[2].to_string(), "b-0");
    }
}
