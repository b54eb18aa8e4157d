//! Kafka RecordBatch v2 (magic 2): the bytes of every `.log` file.
//!
//! This module owns the byte layout; it knows nothing about files. It encodes
//! records into caller-provided buffers (so the storage layer can write them
//! straight into a memory-mapped segment), seals batches (fills the header
//! and the CRC-32C), and decodes and validates what it reads back.
//!
//! # Layout, from the public Kafka protocol documentation ("Message Format")
//!
//! All integers are big-endian. A `.log` file is a sequence of batches with
//! nothing between them and nothing after the last one.
//!
//! ```text
//! offset  size  field                 meaning
//!      0     8  baseOffset            offset of the first record of the batch
//!      8     4  batchLength           bytes that follow this field (total = 12 + batchLength)
//!     12     4  partitionLeaderEpoch  leader epoch that wrote the batch; -1 = none
//!     16     1  magic                 2
//!     17     4  crc                   CRC-32C (Castagnoli) of bytes 21..end of batch
//!     21     2  attributes            bits 0-2 compression (0 none, 1 gzip, 2 snappy,
//!                                     3 lz4, 4 zstd); bit 3 timestamp type (0 create
//!                                     time); bit 4 transactional; bit 5 control batch;
//!                                     bit 6 delete horizon set; 7-15 unused (0)
//!     23     4  lastOffsetDelta       offset of the last record - baseOffset
//!     27     8  baseTimestamp         timestamp of the first record (ms)
//!     35     8  maxTimestamp          largest record timestamp in the batch (ms)
//!     43     8  producerId            -1 = no producer (non-idempotent)
//!     51     2  producerEpoch         -1
//!     53     4  baseSequence          -1
//!     57     4  recordsCount          number of records that follow
//!     61     -  records               recordsCount records, back to back
//! ```
//!
//! Each record (uncompressed) is:
//!
//! ```text
//! length          varint    bytes of the record after this field
//! attributes      int8      unused, 0
//! timestampDelta  varlong   timestamp - baseTimestamp
//! offsetDelta     varint    offset - baseOffset
//! keyLength       varint    -1 = null key
//! key             bytes
//! valueLength     varint    -1 = null value (a tombstone)
//! value           bytes
//! headerCount     varint
//! headers         headerCount x (keyLength varint, key UTF-8, valueLength varint, value)
//! ```
//!
//! `varint`/`varlong` are protobuf zig-zag variable-length integers: the
//! signed value `n` is mapped to `(n << 1) ^ (n >> 63)` and written 7 bits a
//! byte, least significant group first, high bit set on every byte but the
//! last. A varint holds 32 bits (at most 5 bytes), a varlong 64 (10 bytes).
//!
//! # Open batches
//!
//! The storage layer keeps the newest batch of the active segment *open*:
//! records are added in place and the batch is sealed later. While open, the
//! batch header carries `crc = 0` and a `recordsCount` that is stored after
//! each record's bytes; `batchLength`, `lastOffsetDelta` and `maxTimestamp`
//! are filled in by [`seal_batch`]. [`reseal_open_batch`] rebuilds them from
//! the records when a crashed process left a batch open.
//!
//! # Compression
//!
//! With a codec in `attributes`, the records section is one compressed
//! stream (see [`compression`]); `recordsCount` and every header field stay
//! as they are, and the CRC covers the compressed bytes. Open batches are
//! never compressed: [`compress_batch`] turns a sealed batch into its
//! compressed form.

pub(crate) mod compression;
pub(crate) mod crc;
mod varint;

pub use compression::Compression;
use varint::unzigzag;
pub(crate) use varint::{varint_len, write_varint, Cursor};

/// Bytes of a batch header before the first record.
pub const BATCH_HEADER_BYTES: usize = 61;
/// `baseOffset` + `batchLength`: the bytes not counted by `batchLength`.
pub(crate) const LOG_OVERHEAD: usize = 12;

const BASE_OFFSET: usize = 0;
const BATCH_LENGTH: usize = 8;
const LEADER_EPOCH: usize = 12;
const MAGIC: usize = 16;
const CRC: usize = 17;
const ATTRIBUTES: usize = 21;
const LAST_OFFSET_DELTA: usize = 23;
const BASE_TIMESTAMP: usize = 27;
const MAX_TIMESTAMP: usize = 35;
const PRODUCER_ID: usize = 43;
const PRODUCER_EPOCH: usize = 51;
const BASE_SEQUENCE: usize = 53;
const RECORDS_COUNT: usize = 57;

/// The only magic value brook reads and writes.
pub(crate) const MAGIC_V2: i8 = 2;
/// `partitionLeaderEpoch` of batches not written by a replicated leader.
pub(crate) const NO_PARTITION_LEADER_EPOCH: i32 = -1;
/// Compression codec bits of `attributes`.
const COMPRESSION_MASK: i16 = 0x07;

/// Why bytes are not a valid batch or record. The storage layer adds the
/// file and position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FormatError(pub(crate) String);

impl FormatError {
    fn new(reason: impl Into<String>) -> Self {
        FormatError(reason.into())
    }
}

impl std::fmt::Display for FormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn get_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn get_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn get_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
fn put_i16(b: &mut [u8], at: usize, v: i16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}
fn put_i32(b: &mut [u8], at: usize, v: i32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}
fn put_i64(b: &mut [u8], at: usize, v: i64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

/// The fixed fields of a batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    /// Parses the 61 header bytes at the start of `b` and checks the fields
    /// that can be checked without the body.
    pub(crate) fn parse(b: &[u8]) -> Result<BatchHeader, FormatError> {
        if b.len() < BATCH_HEADER_BYTES {
            return Err(FormatError::new(format!(
                "batch header needs {BATCH_HEADER_BYTES} bytes, {} left",
                b.len()
            )));
        }
        let h = BatchHeader {
            base_offset: get_i64(b, BASE_OFFSET),
            batch_length: get_i32(b, BATCH_LENGTH),
            leader_epoch: get_i32(b, LEADER_EPOCH),
            magic: b[MAGIC] as i8,
            crc: get_i32(b, CRC) as u32,
            attributes: get_i16(b, ATTRIBUTES),
            last_offset_delta: get_i32(b, LAST_OFFSET_DELTA),
            base_timestamp: get_i64(b, BASE_TIMESTAMP),
            max_timestamp: get_i64(b, MAX_TIMESTAMP),
            producer_id: get_i64(b, PRODUCER_ID),
            producer_epoch: get_i16(b, PRODUCER_EPOCH),
            base_sequence: get_i32(b, BASE_SEQUENCE),
            records_count: get_i32(b, RECORDS_COUNT),
        };
        if h.magic != MAGIC_V2 {
            return Err(FormatError::new(format!("magic {} is not 2", h.magic)));
        }
        if h.base_offset < 0 {
            return Err(FormatError::new(format!(
                "negative base offset {}",
                h.base_offset
            )));
        }
        if (h.batch_length as i64) < (BATCH_HEADER_BYTES - LOG_OVERHEAD) as i64 {
            return Err(FormatError::new(format!(
                "batch length {} is shorter than a header",
                h.batch_length
            )));
        }
        if h.last_offset_delta < 0 || h.records_count < 0 {
            return Err(FormatError::new(format!(
                "negative lastOffsetDelta {} or recordsCount {}",
                h.last_offset_delta, h.records_count
            )));
        }
        Compression::from_attributes(h.attributes)?;
        if h.base_offset
            .checked_add(h.last_offset_delta as i64)
            .is_none()
        {
            return Err(FormatError::new("last offset overflows"));
        }
        Ok(h)
    }

    /// Bytes of the whole batch, header included.
    pub(crate) fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    /// Offset of the last record.
    pub(crate) fn last_offset(&self) -> u64 {
        self.base_offset as u64 + self.last_offset_delta as u64
    }

    /// The codec of the records section (checked by [`parse`](Self::parse)).
    pub(crate) fn compression(&self) -> Compression {
        Compression::from_attributes(self.attributes).unwrap_or_default()
    }

    /// Whether the batch was written inside a transaction.
    pub(crate) fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL != 0
    }

    /// Whether the batch is a control batch (a transaction marker).
    pub(crate) fn is_control(&self) -> bool {
        self.attributes & CONTROL != 0
    }

    /// Whether the stored CRC matches `batch` (the whole batch's bytes).
    pub(crate) fn crc_matches(&self, batch: &[u8]) -> bool {
        crc::crc32c(&batch[ATTRIBUTES..]) == self.crc
    }
}

/// Checks a whole batch: header, CRC, and that its records decode and fill
/// the batch exactly with the declared count and offsets.
pub(crate) fn validate_batch(batch: &[u8]) -> Result<BatchHeader, FormatError> {
    let h = BatchHeader::parse(batch)?;
    if batch.len() != h.total_len() {
        return Err(FormatError::new(format!(
            "batch declares {} bytes, {} present",
            h.total_len(),
            batch.len()
        )));
    }
    if !h.crc_matches(batch) {
        return Err(FormatError::new(format!(
            "CRC-32C mismatch: stored {:#010x}, computed {:#010x}",
            h.crc,
            crc::crc32c(&batch[ATTRIBUTES..])
        )));
    }
    let (records, mut pos) = batch_records(&h, batch)?;
    let records = &records[..];
    let mut last_delta = -1i64;
    for _ in 0..h.records_count {
        let r = RecordView::decode(records, pos)?;
        if (r.offset_delta as i64) <= last_delta || r.offset_delta > h.last_offset_delta {
            return Err(FormatError::new(format!(
                "record offset delta {} out of order",
                r.offset_delta
            )));
        }
        last_delta = r.offset_delta as i64;
        pos = r.end;
    }
    records_fill(&h, pos, records.len())?;
    Ok(h)
}

/// Checks that the batch's records, decoded up to `end`, fill its records
/// section of `len` bytes exactly.
fn records_fill(h: &BatchHeader, end: usize, len: usize) -> Result<(), FormatError> {
    if end != len {
        return Err(FormatError::new(format!(
            "{} records end at byte {end} of {len} bytes of records",
            h.records_count
        )));
    }
    Ok(())
}

/// Bytes holding the records of the whole batch `batch` whose header is
/// `h`, and the position of the first record in them: the batch itself
/// when uncompressed, its decompressed records section otherwise.
pub(crate) fn batch_records<'b>(
    h: &BatchHeader,
    batch: &'b [u8],
) -> Result<(std::borrow::Cow<'b, [u8]>, usize), FormatError> {
    match h.compression() {
        Compression::None => Ok((std::borrow::Cow::Borrowed(batch), BATCH_HEADER_BYTES)),
        codec => Ok((
            compression::decompress(codec, &batch[BATCH_HEADER_BYTES..])?,
            0,
        )),
    }
}

/// Writes the compressed form of the sealed, uncompressed batch `batch` to
/// `out` (cleared first): the same header with `codec` in its attributes,
/// the records compressed, a new length and CRC.
pub(crate) fn compress_batch(
    batch: &[u8],
    codec: Compression,
    out: &mut Vec<u8>,
) -> Result<(), FormatError> {
    out.clear();
    out.extend_from_slice(&batch[..BATCH_HEADER_BYTES]);
    compression::compress(codec, &batch[BATCH_HEADER_BYTES..], out)?;
    let attributes = get_i16(out, ATTRIBUTES) & !COMPRESSION_MASK | codec.attribute_bits();
    put_i16(out, ATTRIBUTES, attributes);
    let (last, max_ts, count) = (
        get_i32(out, LAST_OFFSET_DELTA),
        get_i64(out, MAX_TIMESTAMP),
        get_i32(out, RECORDS_COUNT),
    );
    seal_batch(out, last, max_ts, count);
    Ok(())
}

/// What a record needs to be encoded. Header names are UTF-8 (Kafka header
/// keys are strings).
///
/// The fields are private so that `fixed_len` always describes `key`,
/// `value` and `headers` (set together by [`new`](Self::new), immutable
/// after): [`encode_into`](Self::encode_into) relies on it.
#[derive(Clone, Copy)]
pub(crate) struct RecordParts<'a> {
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    headers: &'a [(String, bytes::Bytes)],
    /// Body bytes that do not depend on the deltas (computed once).
    fixed_len: usize,
}

#[inline]
fn opt_len(b: Option<&[u8]>) -> usize {
    match b {
        Some(b) => count_len(b.len()) + b.len(),
        None => 1,
    }
}

/// `varint_len(n as i64)` for a length or count (never negative in
/// memory: a slice holds at most `isize::MAX` bytes, so the zig-zag is
/// `2n`).
#[inline]
fn count_len(n: usize) -> usize {
    let z = (n as u64) << 1;
    let bits = 64 - (z | 1).leading_zeros() as usize;
    (bits * 9 + 64) / 64
}

impl<'a> RecordParts<'a> {
    #[inline]
    pub(crate) fn new(
        key: Option<&'a [u8]>,
        value: Option<&'a [u8]>,
        headers: &'a [(String, bytes::Bytes)],
    ) -> Self {
        // attributes + key + value + header count + headers
        let mut fixed_len = 1 + opt_len(key) + opt_len(value);
        fixed_len += count_len(headers.len());
        for (name, v) in headers {
            fixed_len += opt_len(Some(name.as_bytes())) + opt_len(Some(v));
        }
        RecordParts {
            key,
            value,
            headers,
            fixed_len,
        }
    }

    /// The key; `None` for a null key.
    #[inline]
    pub(crate) fn key(&self) -> Option<&'a [u8]> {
        self.key
    }

    /// The value; `None` for a null value (a tombstone).
    #[inline]
    pub(crate) fn value(&self) -> Option<&'a [u8]> {
        self.value
    }

    /// Bytes after the `length` field for the given deltas.
    #[inline]
    pub(crate) fn body_len(&self, timestamp_delta: i64, offset_delta: i32) -> usize {
        self.fixed_len + varint_len(timestamp_delta) + varint_len(offset_delta as i64)
    }

    /// Whether the record with both deltas 0 takes at most `max` bytes
    /// (`encoded_len(0, 0) <= max`).
    #[inline]
    pub(crate) fn fits(&self, max: usize) -> bool {
        // The deltas take a byte each and the length prefix at most 10:
        // most records are far enough below `max` to need nothing more.
        self.fixed_len + 12 <= max || self.encoded_len(0, 0) <= max
    }

    /// Bytes of the record including its `length` prefix.
    #[inline]
    pub(crate) fn encoded_len(&self, timestamp_delta: i64, offset_delta: i32) -> usize {
        let body = self.body_len(timestamp_delta, offset_delta);
        varint_len(body as i64) + body
    }

    /// Writes the record at the start of `dst` and returns its length.
    /// `dst` must hold at least [`encoded_len`](Self::encoded_len) bytes.
    #[cfg(test)]
    pub(crate) fn encode(&self, dst: &mut [u8], timestamp_delta: i64, offset_delta: i32) -> usize {
        let body = self.body_len(timestamp_delta, offset_delta);
        self.encode_body(dst, body, timestamp_delta, offset_delta)
    }

    /// [`encode`](Self::encode) with the body length already computed by
    /// [`body_len`](Self::body_len) for the same deltas.
    #[inline(always)]
    pub(crate) fn encode_body(
        &self,
        dst: &mut [u8],
        body: usize,
        timestamp_delta: i64,
        offset_delta: i32,
    ) -> usize {
        let p = self.put_prefix(dst, body, timestamp_delta, offset_delta);
        let p = put_opt(dst, p, self.value);
        self.put_headers(dst, p)
    }

    /// Writes the record's fields before the value (length, attributes,
    /// deltas, key) at the start of `dst`; returns where they end.
    #[inline]
    fn put_prefix(
        &self,
        dst: &mut [u8],
        body: usize,
        timestamp_delta: i64,
        offset_delta: i32,
    ) -> usize {
        let mut p = write_varint(dst, 0, body as i64);
        dst[p] = 0; // attributes
        p += 1;
        p = write_varint(dst, p, timestamp_delta);
        p = write_varint(dst, p, offset_delta as i64);
        put_opt(dst, p, self.key)
    }

    /// Writes the header count and headers at `p`; returns where they end.
    #[inline]
    fn put_headers(&self, dst: &mut [u8], mut p: usize) -> usize {
        p = write_varint(dst, p, self.headers.len() as i64);
        for (name, value) in self.headers {
            p = put_opt(dst, p, Some(name.as_bytes()));
            p = put_opt(dst, p, Some(value));
        }
        p
    }
}

impl<'a> RecordParts<'a> {
    /// The record as [`encode_body`](Self::encode_body) writes it, in three
    /// pieces, so that a large value can be written from where it lies:
    /// `head` is set to the length, attributes, deltas, key and the value's
    /// length, `tail` to the header count and headers, and the value (empty
    /// for a null one) comes between them.
    pub(crate) fn encode_pieces(
        &self,
        timestamp_delta: i64,
        offset_delta: i32,
        head: &mut Vec<u8>,
        tail: &mut Vec<u8>,
    ) -> &'a [u8] {
        let body = self.body_len(timestamp_delta, offset_delta);
        let value = self.value.unwrap_or(&[]);
        let value_len = match self.value {
            None => -1,
            Some(v) => v.len() as i64,
        };
        let head_len = varint_len(body as i64)
            + 1
            + varint_len(timestamp_delta)
            + varint_len(offset_delta as i64)
            + opt_len(self.key)
            + varint_len(value_len);
        head.clear();
        head.resize(head_len, 0);
        let p = self.put_prefix(head, body, timestamp_delta, offset_delta);
        let p = write_varint(head, p, value_len);
        debug_assert_eq!(p, head_len);
        let tail_len = varint_len(body as i64) + body - head_len - value.len();
        tail.clear();
        tail.resize(tail_len, 0);
        let p = self.put_headers(tail, 0);
        debug_assert_eq!(p, tail_len);
        value
    }
}

impl RecordParts<'_> {
    /// Writes the record at the start of `dst` if it fits there, and
    /// returns its length (what [`encoded_len`](Self::encoded_len) gives);
    /// `None`, writing nothing, if `dst` is too short. The same bytes as
    /// [`encode_body`](Self::encode_body), without a bounds check per field.
    #[inline(always)]
    pub(crate) fn encode_into(
        &self,
        dst: &mut [u8],
        timestamp_delta: i64,
        offset_delta: i32,
    ) -> Option<usize> {
        let body = self.body_len(timestamp_delta, offset_delta);
        let len = count_len(body) + body;
        if dst.len() < len {
            return None;
        }
        let start = dst.as_mut_ptr();
        // SAFETY: every write below lands in `start..start + len`, which is
        // within `dst` (checked above): `len` counts the length prefix and
        // `body` bytes, and `body_len` adds to `fixed_len` (attributes, key,
        // value, header count and headers, computed by `new` from these
        // same fields, which nothing can change since) the two deltas
        // written here. Each `put_*` writes exactly the bytes `varint_len`,
        // `count_len` or `opt_len` counts for its field.
        unsafe {
            let mut p = put_count_raw(start, body);
            *p = 0;
            p = p.add(1);
            p = put_varint_raw(p, timestamp_delta);
            p = put_varint_raw(p, offset_delta as i64);
            p = put_opt_raw(p, self.key);
            p = put_opt_raw(p, self.value);
            p = put_count_raw(p, self.headers.len());
            for (name, value) in self.headers {
                p = put_opt_raw(p, Some(name.as_bytes()));
                p = put_opt_raw(p, Some(value));
            }
            debug_assert_eq!(p.offset_from(start), len as isize);
        }
        Some(len)
    }
}

/// [`write_varint`] through a raw pointer; returns the pointer after it.
///
/// # Safety
///
/// `p` must be valid for writes of `varint_len(v)` bytes.
#[inline(always)]
unsafe fn put_varint_raw(p: *mut u8, v: i64) -> *mut u8 {
    // SAFETY: passed on from the caller.
    unsafe { put_zigzag_raw(p, ((v << 1) ^ (v >> 63)) as u64) }
}

/// [`put_varint_raw`] of a length or count (see [`count_len`]).
///
/// # Safety
///
/// `p` must be valid for writes of `count_len(n)` bytes.
#[inline(always)]
unsafe fn put_count_raw(p: *mut u8, n: usize) -> *mut u8 {
    // SAFETY: passed on from the caller.
    unsafe { put_zigzag_raw(p, (n as u64) << 1) }
}

/// Writes the zig-zag encoded value `z`, 7 bits a byte.
///
/// # Safety
///
/// `p` must be valid for writes of one byte per started 7 bits of `z`
/// (at least one).
#[inline(always)]
unsafe fn put_zigzag_raw(p: *mut u8, mut z: u64) -> *mut u8 {
    // SAFETY: the caller provides one byte per 7 bits of `z`, which is
    // what these writes take.
    unsafe {
        if z < 0x80 {
            *p = z as u8;
            return p.add(1);
        }
        // Two bytes: record lengths, value lengths and offset deltas of
        // typical records.
        if z < 0x4000 {
            *p = (z as u8) | 0x80;
            *p.add(1) = (z >> 7) as u8;
            return p.add(2);
        }
        let mut p = p;
        while z >= 0x80 {
            *p = (z as u8) | 0x80;
            z >>= 7;
            p = p.add(1);
        }
        *p = z as u8;
        p.add(1)
    }
}

/// A length-prefixed field (`-1` for `None`) through a raw pointer.
///
/// # Safety
///
/// `p` must be valid for writes of `opt_len(b)` bytes and not overlap `b`.
#[inline(always)]
unsafe fn put_opt_raw(p: *mut u8, b: Option<&[u8]>) -> *mut u8 {
    // SAFETY: `opt_len(b)` bytes are the length varint and the bytes of `b`.
    unsafe {
        match b {
            None => put_varint_raw(p, -1),
            Some(b) => {
                let p = put_count_raw(p, b.len());
                std::ptr::copy_nonoverlapping(b.as_ptr(), p, b.len());
                p.add(b.len())
            }
        }
    }
}

#[inline(always)]
fn put_opt(dst: &mut [u8], p: usize, b: Option<&[u8]>) -> usize {
    match b {
        None => write_varint(dst, p, -1),
        Some(b) => {
            let p = write_varint(dst, p, b.len() as i64);
            dst[p..p + b.len()].copy_from_slice(b);
            p + b.len()
        }
    }
}

/// Fields of a new batch that are known when it is opened.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewBatch {
    pub base_offset: u64,
    pub base_timestamp: i64,
    pub leader_epoch: i32,
    /// Producer id, epoch and base sequence of an idempotent producer's
    /// batch; `None` writes Kafka's "no producer" values (-1).
    pub producer: Option<ProducerBatch>,
}

/// The producer fields of an idempotent producer's batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProducerBatch {
    pub producer_id: i64,
    pub epoch: i16,
    pub base_sequence: i32,
    /// Extra `attributes` bits: [`TRANSACTIONAL`], and [`CONTROL`] for a
    /// transaction marker.
    pub attributes: i16,
}

/// `attributes` bit of a batch written inside a transaction.
pub(crate) const TRANSACTIONAL: i16 = 0x10;
/// `attributes` bit of a control batch (a transaction marker).
pub(crate) const CONTROL: i16 = 0x20;

/// The one record of a transaction marker (a control batch): key
/// `[version i16 = 0][type i16: 0 abort, 1 commit]`, value `[version i16 =
/// 0][coordinator epoch i32]`, as Kafka's `EndTransactionMarker`.
pub(crate) fn marker_record(commit: bool) -> ([u8; 4], [u8; 6]) {
    let key = [0, 0, 0, u8::from(commit)];
    let value = [0, 0, 0, 0, 0, 0];
    (key, value)
}

/// Whether the control batch `batch` (whole, uncompressed) is a commit
/// marker (`Some(true)`), an abort marker (`Some(false)`), or something
/// else.
pub(crate) fn marker_kind(batch: &[u8]) -> Option<bool> {
    let r = RecordView::decode(batch, BATCH_HEADER_BYTES).ok()?;
    let (s, e) = r.key?;
    match &batch[s..e] {
        [0, 0, 0, 0] => Some(false),
        [0, 0, 0, 1] => Some(true),
        _ => None,
    }
}

/// Writes the header of an open batch (no records yet, CRC 0) into `dst[..61]`.
pub(crate) fn write_open_header(dst: &mut [u8], b: NewBatch) {
    put_i64(dst, BASE_OFFSET, b.base_offset as i64);
    put_i32(
        dst,
        BATCH_LENGTH,
        (BATCH_HEADER_BYTES - LOG_OVERHEAD) as i32,
    );
    put_i32(dst, LEADER_EPOCH, b.leader_epoch);
    dst[MAGIC] = MAGIC_V2 as u8;
    put_i32(dst, CRC, 0);
    put_i16(dst, ATTRIBUTES, b.producer.map_or(0, |p| p.attributes));
    put_i32(dst, LAST_OFFSET_DELTA, 0);
    put_i64(dst, BASE_TIMESTAMP, b.base_timestamp);
    put_i64(dst, MAX_TIMESTAMP, b.base_timestamp);
    let p = b.producer.unwrap_or(ProducerBatch {
        producer_id: -1,
        epoch: -1,
        base_sequence: -1,
        attributes: 0,
    });
    put_i64(dst, PRODUCER_ID, p.producer_id);
    put_i16(dst, PRODUCER_EPOCH, p.epoch);
    put_i32(dst, BASE_SEQUENCE, p.base_sequence);
    put_i32(dst, RECORDS_COUNT, 0);
}

/// Position of `recordsCount` in a batch: the field an open batch commits
/// each record with.
pub(crate) const RECORDS_COUNT_OFFSET: usize = RECORDS_COUNT;

/// Fills the length, last offset delta, max timestamp, count and CRC of the
/// batch occupying all of `batch`.
pub(crate) fn seal_batch(batch: &mut [u8], last_offset_delta: i32, max_timestamp: i64, count: i32) {
    put_i32(batch, BATCH_LENGTH, (batch.len() - LOG_OVERHEAD) as i32);
    put_i32(batch, LAST_OFFSET_DELTA, last_offset_delta);
    put_i64(batch, MAX_TIMESTAMP, max_timestamp);
    put_i32(batch, RECORDS_COUNT, count);
    let crc = crc::crc32c(&batch[ATTRIBUTES..]);
    put_i32(batch, CRC, crc as i32);
}

/// Seals an open batch whose header is `header` (61 bytes) and whose records
/// are `records`, without needing the two to be one slice (readers may share
/// the records while the header is written).
pub(crate) fn seal_header(
    header: &mut [u8],
    records: &[u8],
    last_offset_delta: i32,
    max_timestamp: i64,
    count: i32,
) {
    seal_header_pieces(header, &[records], last_offset_delta, max_timestamp, count);
}

/// [`seal_header`] for records that lie in several pieces, in order.
pub(crate) fn seal_header_pieces(
    header: &mut [u8],
    records: &[&[u8]],
    last_offset_delta: i32,
    max_timestamp: i64,
    count: i32,
) {
    let len = BATCH_HEADER_BYTES + records.iter().map(|r| r.len()).sum::<usize>();
    put_i32(header, BATCH_LENGTH, (len - LOG_OVERHEAD) as i32);
    put_i32(header, LAST_OFFSET_DELTA, last_offset_delta);
    put_i64(header, MAX_TIMESTAMP, max_timestamp);
    put_i32(header, RECORDS_COUNT, count);
    let crc = records
        .iter()
        .fold(crc::crc32c(&header[ATTRIBUTES..]), |crc, r| {
            crc::crc32c_append(crc, r)
        });
    put_i32(header, CRC, crc as i32);
}

/// Result of looking at the bytes where an open batch was left by a process
/// that died: the batch can be resealed from its committed records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OpenBatchScan {
    /// Bytes the batch occupies once resealed.
    pub len: usize,
    pub count: i32,
    pub last_offset_delta: i32,
    pub max_timestamp: i64,
}

/// Looks for an open batch (CRC field 0, mismatching CRC) at the start of
/// `b`, and decodes its committed records (`recordsCount` of them). Returns
/// `None` if these bytes are not an open batch with intact records.
pub(crate) fn scan_open_batch(b: &[u8]) -> Option<OpenBatchScan> {
    if b.len() < BATCH_HEADER_BYTES || b[MAGIC] as i8 != MAGIC_V2 || get_i32(b, CRC) != 0 {
        return None;
    }
    let count = get_i32(b, RECORDS_COUNT);
    let base_ts = get_i64(b, BASE_TIMESTAMP);
    let attributes = get_i16(b, ATTRIBUTES);
    if count <= 0 || get_i64(b, BASE_OFFSET) < 0 || attributes & !(TRANSACTIONAL | CONTROL) != 0 {
        return None;
    }
    let mut pos = BATCH_HEADER_BYTES;
    let mut max_ts = base_ts;
    let mut last_delta = -1i64;
    for _ in 0..count {
        let r = RecordView::decode(b, pos).ok()?;
        if r.offset_delta as i64 != last_delta + 1 {
            return None;
        }
        last_delta = r.offset_delta as i64;
        max_ts = max_ts.max(base_ts.checked_add(r.timestamp_delta)?);
        pos = r.end;
    }
    Some(OpenBatchScan {
        len: pos,
        count,
        last_offset_delta: last_delta as i32,
        max_timestamp: max_ts,
    })
}

/// Seals an open batch that [`scan_open_batch`] accepted; `batch` is exactly
/// `scan.len` bytes.
pub(crate) fn reseal_open_batch(batch: &mut [u8], scan: OpenBatchScan) {
    seal_batch(
        batch,
        scan.last_offset_delta,
        scan.max_timestamp,
        scan.count,
    );
}

/// One decoded record: positions are relative to the buffer given to
/// [`RecordView::decode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecordView {
    /// First byte after the `length` prefix.
    pub body_start: usize,
    /// First byte after the record.
    pub end: usize,
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub key: Option<(usize, usize)>,
    pub value: Option<(usize, usize)>,
    /// Bytes holding the headers (after `headerCount`), and their count.
    pub headers: (usize, usize),
    pub header_count: u32,
}

impl RecordView {
    /// Decodes the record starting at `buf[pos]`, checking every length
    /// against the record's own `length` and header names for UTF-8.
    #[inline]
    pub(crate) fn decode(buf: &[u8], pos: usize) -> Result<RecordView, FormatError> {
        if let Some(r) = Self::decode_short(buf, pos) {
            return Ok(r);
        }
        Self::decode_full(buf, pos)
    }

    /// The full decoder, for every record `decode_short` leaves to it.
    #[inline(never)]
    fn decode_full(buf: &[u8], pos: usize) -> Result<RecordView, FormatError> {
        let mut why = "";
        match Self::decode_or_why(buf, pos, &mut why) {
            Some(r) => Ok(r),
            None => Err(FormatError::new(why)),
        }
    }

    /// The common record in fewer steps: every varint one or two bytes
    /// long and no headers. `None` leaves the record to
    /// [`decode_or_why`](Self::decode_or_why), which decodes it or says
    /// what is wrong; where this returns a record, it is the record that
    /// one returns (checked by a test over valid records, their cuts, and
    /// changed bytes of short ones).
    #[inline(always)]
    fn decode_short(buf: &[u8], pos: usize) -> Option<RecordView> {
        let mut p = pos;
        let len = short_varint(buf, &mut p)?;
        // A negative length has an odd zig-zag code.
        if len & 1 != 0 || len < 12 {
            return None;
        }
        let body_start = p;
        let end = body_start + (len >> 1) as usize;
        let buf = buf.get(..end)?;
        p += 1; // attributes
        let timestamp_delta = unzigzag(short_varint(buf, &mut p)?);
        let offset_delta = short_varint(buf, &mut p)?;
        if offset_delta & 1 != 0 {
            return None;
        }
        let key = short_field(buf, &mut p)?;
        let value = short_field(buf, &mut p)?;
        // A header count of zero, in its one-byte form, ends the record.
        if *buf.get(p)? != 0 || p + 1 != end {
            return None;
        }
        Some(RecordView {
            body_start,
            end,
            timestamp_delta,
            offset_delta: (offset_delta >> 1) as i32,
            key,
            value,
            headers: (end, end),
            header_count: 0,
        })
    }

    /// The decoder: `None` with `why` naming the broken field. Every step is
    /// an inlined `Option`, so the values stay in registers on the hot read
    /// path; `why` is only written on the way out.
    #[inline(always)]
    fn decode_or_why(buf: &[u8], pos: usize, why: &mut &'static str) -> Option<RecordView> {
        macro_rules! need {
            ($e:expr, $why:expr) => {
                match $e {
                    Some(v) => v,
                    None => {
                        *why = $why;
                        return None;
                    }
                }
            };
        }
        let mut c = Cursor { b: buf, pos };
        let len = need!(
            c.varint().filter(|&l| l >= 6),
            "record length is malformed or too short"
        );
        let body_start = c.pos;
        let end = need!(
            body_start
                .checked_add(len as usize)
                .filter(|&e| e <= buf.len()),
            "record runs past the batch"
        );
        let mut c = Cursor {
            b: &buf[..end],
            pos: body_start + 1, // attributes
        };
        let timestamp_delta = need!(c.varlong(), "timestamp delta is malformed");
        let offset_delta = need!(
            c.varint().filter(|&d| d >= 0),
            "offset delta is malformed or negative"
        );
        let key = need!(c.field(), "key length is malformed or runs past the record");
        let value = need!(
            c.field(),
            "value length is malformed or runs past the record"
        );
        let count = need!(
            c.varint().filter(|&n| n >= 0),
            "header count is malformed or negative"
        );
        let headers_start = c.pos;
        for _ in 0..count {
            let (s, e) = need!(c.field().flatten(), "header name is malformed or null");
            need!(
                std::str::from_utf8(&buf[s..e]).ok(),
                "header name is not UTF-8"
            );
            need!(c.field(), "header value is malformed");
        }
        if c.pos != end {
            *why = "record fields do not end where its length says";
            return None;
        }
        Some(RecordView {
            body_start,
            end,
            timestamp_delta,
            offset_delta,
            key,
            value,
            headers: (headers_start, end),
            header_count: count as u32,
        })
    }
}

/// The zig-zag code of a varint of one or two bytes at `buf[*p]`, moving
/// `*p` past it; `None` for a longer one or one cut off by the buffer's end.
#[inline(always)]
fn short_varint(buf: &[u8], p: &mut usize) -> Option<u64> {
    let first = u64::from(*buf.get(*p)?);
    if first < 0x80 {
        *p += 1;
        return Some(first);
    }
    let second = u64::from(*buf.get(*p + 1)?);
    if second < 0x80 {
        *p += 2;
        return Some((first & 0x7f) | (second << 7));
    }
    None
}

/// A length-prefixed field with a short length, as
/// [`Cursor::field`](varint::Cursor::field) reads it: `Some(None)` for null,
/// `None` for anything else that is not a field within `buf`.
#[inline(always)]
fn short_field(buf: &[u8], p: &mut usize) -> Option<Option<(usize, usize)>> {
    let z = short_varint(buf, p)?;
    if z == 1 {
        return Some(None); // -1: null
    }
    if z & 1 != 0 {
        return None;
    }
    let start = *p;
    let end = start + (z >> 1) as usize;
    if end > buf.len() {
        return None;
    }
    *p = end;
    Some(Some((start, end)))
}

/// Iterates `(name, value)` pairs over the header bytes of a record that
/// [`RecordView::decode`] accepted.
pub(crate) struct HeaderIter<'a> {
    pub(crate) buf: &'a [u8],
    pub(crate) pos: usize,
    pub(crate) left: u32,
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // The record was validated when it was decoded; a failure here means
        // a bug, and yields the end of the headers rather than a panic.
        let mut c = Cursor {
            b: self.buf,
            pos: self.pos,
        };
        let name = c.field()?;
        let value = c.field()?;
        self.pos = c.pos;
        let (ns, ne) = name?;
        let name = std::str::from_utf8(&self.buf[ns..ne]).ok()?;
        let value = value.map_or(&[][..], |(s, e)| &self.buf[s..e]);
        Some((name, value))
    }
}

/// One record of a batch, decoded and copied out (for tools, not the read
/// path, which shares the segment's bytes).
#[cfg(any(feature = "fuzzing", feature = "cli"))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecodedRecord {
    pub offset_delta: i32,
    pub timestamp_delta: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Decodes every record of the whole batch `batch` whose header is `h`,
/// decompressing first, and checks that they fill the records section.
#[cfg(any(feature = "fuzzing", feature = "cli"))]
pub(crate) fn decode_records(
    h: &BatchHeader,
    batch: &[u8],
) -> Result<Vec<DecodedRecord>, FormatError> {
    let (records, mut pos) = batch_records(h, batch)?;
    let records = &records[..];
    let mut out = Vec::with_capacity(h.records_count.clamp(0, 4096) as usize);
    for _ in 0..h.records_count {
        let r = RecordView::decode(records, pos)?;
        let field = |f: Option<(usize, usize)>| f.map(|(s, e)| records[s..e].to_vec());
        let headers = HeaderIter {
            buf: records,
            pos: r.headers.0,
            left: r.header_count,
        }
        .map(|(k, v)| (k.to_owned(), v.to_vec()))
        .collect();
        out.push(DecodedRecord {
            offset_delta: r.offset_delta,
            timestamp_delta: r.timestamp_delta,
            key: field(r.key),
            value: field(r.value),
            headers,
        });
        pos = r.end;
    }
    records_fill(h, pos, records.len())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// (key, value, timestamp) of a test record.
    type TestRecord<'a> = (Option<&'a [u8]>, Option<&'a [u8]>, i64);

    fn build(records: &[TestRecord<'_>], base_offset: u64) -> Vec<u8> {
        let base_ts = records[0].2;
        let mut buf = vec![0u8; 1 << 16];
        write_open_header(
            &mut buf,
            NewBatch {
                base_offset,
                base_timestamp: base_ts,
                leader_epoch: NO_PARTITION_LEADER_EPOCH,
                producer: None,
            },
        );
        let mut pos = BATCH_HEADER_BYTES;
        let headers = vec![("trace".to_string(), Bytes::from_static(b"42"))];
        let mut max_ts = base_ts;
        for (i, (k, v, ts)) in records.iter().enumerate() {
            let parts = RecordParts::new(*k, *v, if i % 2 == 0 { &headers } else { &[] });
            let n = parts.encode(&mut buf[pos..], ts - base_ts, i as i32);
            assert_eq!(n, parts.encoded_len(ts - base_ts, i as i32));
            pos += n;
            max_ts = max_ts.max(*ts);
        }
        buf.truncate(pos);
        seal_batch(
            &mut buf,
            records.len() as i32 - 1,
            max_ts,
            records.len() as i32,
        );
        buf
    }

    #[test]
    fn sealed_batch_validates_and_decodes() {
        let recs: Vec<TestRecord<'_>> = vec![
            (Some(b"k1"), Some(b"v1"), 1000),
            (None, Some(b"no key"), 999),
            (Some(b"gone"), None, 1005),
        ];
        let b = build(&recs, 42);
        let h = validate_batch(&b).unwrap();
        assert_eq!(h.base_offset, 42);
        assert_eq!(h.last_offset(), 44);
        assert_eq!(h.max_timestamp, 1005);
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (-1, -1, -1)
        );
        let mut pos = BATCH_HEADER_BYTES;
        for (i, (k, v, ts)) in recs.iter().enumerate() {
            let r = RecordView::decode(&b, pos).unwrap();
            assert_eq!(r.offset_delta, i as i32);
            assert_eq!(h.base_timestamp + r.timestamp_delta, *ts);
            assert_eq!(r.key.map(|(s, e)| &b[s..e]), *k);
            assert_eq!(r.value.map(|(s, e)| &b[s..e]), *v);
            let hs: Vec<_> = HeaderIter {
                buf: &b,
                pos: r.headers.0,
                left: r.header_count,
            }
            .collect();
            assert_eq!(hs.len(), if i % 2 == 0 { 1 } else { 0 });
            pos = r.end;
        }
    }

    #[test]
    fn a_record_in_pieces_is_the_record_in_one_and_seals_the_same() {
        let headers = vec![
            ("trace".to_string(), Bytes::from_static(b"42")),
            ("empty".to_string(), Bytes::new()),
        ];
        let big = vec![9u8; 70_000];
        type Case<'a> = (Option<&'a [u8]>, Option<&'a [u8]>, &'a [(String, Bytes)]);
        let cases: [Case<'_>; 5] = [
            (Some(b"key"), Some(&big), &headers),
            (None, Some(&big), &[]),
            (Some(&big), None, &headers),
            (None, None, &[]),
            (Some(b""), Some(b"v"), &headers),
        ];
        let (mut head, mut tail) = (Vec::new(), Vec::new());
        for (i, (k, v, h)) in cases.into_iter().enumerate() {
            for (ts_delta, off_delta) in [(0, 0), (-1, 7), (1 << 40, i32::MAX)] {
                let parts = RecordParts::new(k, v, h);
                let mut whole = vec![0u8; parts.encoded_len(ts_delta, off_delta)];
                let n = parts.encode(&mut whole, ts_delta, off_delta);
                assert_eq!(n, whole.len());
                let value = parts.encode_pieces(ts_delta, off_delta, &mut head, &mut tail);
                let joined = [&head[..], value, &tail[..]].concat();
                assert_eq!(joined, whole, "case {i}, deltas {ts_delta} {off_delta}");

                let mut one = [0u8; BATCH_HEADER_BYTES];
                let mut pieces = [0u8; BATCH_HEADER_BYTES];
                for h in [&mut one, &mut pieces] {
                    write_open_header(
                        h,
                        NewBatch {
                            base_offset: 5,
                            base_timestamp: 1,
                            leader_epoch: 3,
                            producer: None,
                        },
                    );
                }
                seal_header(&mut one, &whole, 0, 9, 1);
                seal_header_pieces(&mut pieces, &[&head, value, &tail], 0, 9, 1);
                assert_eq!(one, pieces);
                if off_delta == 0 {
                    validate_batch(&[&one[..], &whole].concat()).unwrap();
                }
            }
        }
    }

    #[test]
    fn every_flipped_byte_the_batch_protects_is_detected() {
        // baseOffset (0..8) and partitionLeaderEpoch (12..16) are outside the
        // CRC, as in Kafka; the storage layer checks offset continuity.
        let b = build(
            &[(Some(b"key"), Some(b"value"), 5), (None, Some(b"x"), 6)],
            0,
        );
        let protected = (8..12).chain(16..b.len());
        for i in protected {
            for bit in [0x01u8, 0x80] {
                let mut c = b.clone();
                c[i] ^= bit;
                assert!(
                    validate_batch(&c).is_err(),
                    "flip of byte {i} bit {bit:#x} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn open_batch_is_resealed_from_its_committed_records() {
        let sealed = build(
            &[(Some(b"a"), Some(b"1"), 7), (Some(b"b"), Some(b"2"), 9)],
            10,
        );
        let mut open = sealed.clone();
        // What an open batch looks like on disk: CRC 0, stale length fields,
        // and zeros after the committed records.
        put_i32(&mut open, CRC, 0);
        put_i32(&mut open, BATCH_LENGTH, 49);
        put_i32(&mut open, LAST_OFFSET_DELTA, 0);
        put_i64(&mut open, MAX_TIMESTAMP, 7);
        open.extend_from_slice(&[0; 100]);
        let scan = scan_open_batch(&open).unwrap();
        assert_eq!(scan.len, sealed.len());
        reseal_open_batch(&mut open[..scan.len], scan);
        assert_eq!(&open[..scan.len], &sealed[..]);
        // A sealed batch is not mistaken for an open one.
        assert!(scan_open_batch(&sealed).is_none());
    }

    /// `decode_short` must agree with the full decoder wherever it
    /// answers, and answer for the common record.
    #[test]
    fn the_short_decoder_returns_what_the_full_one_does() {
        let full = |b: &[u8], pos: usize| RecordView::decode_or_why(b, pos, &mut "");
        let headers = [("h".to_string(), Bytes::from_static(b"x"))];
        let sizes = [0usize, 1, 5, 16, 63, 64, 100, 8000, 9000];
        let mut answered = 0;
        for key_len in sizes {
            for value_len in sizes {
                for hs in [&headers[..], &[]] {
                    for (ts_delta, off_delta) in [(0, 0), (-1, 63), (64, 64), (1 << 20, 1 << 20)] {
                        let key = vec![1u8; key_len];
                        let value = vec![2u8; value_len];
                        let key = (key_len != 1).then_some(&key[..]); // 1 stands for null
                        let value = (value_len != 1).then_some(&value[..]);
                        let parts = RecordParts::new(key, value, hs);
                        let mut b = vec![0u8; parts.encoded_len(ts_delta, off_delta) + 3];
                        let len = parts.encode(&mut b[1..], ts_delta, off_delta);
                        let want = full(&b, 1).expect("a valid record");
                        let short = hs.is_empty()
                            && want.end - want.body_start < 8192
                            && ts_delta.abs() < 8192
                            && off_delta < 8192;
                        let got = RecordView::decode_short(&b, 1);
                        assert_eq!(got.is_some(), short, "{key_len} {value_len} {ts_delta}");
                        if let Some(got) = got {
                            assert_eq!(got, want);
                            answered += 1;
                        }
                        // Cut short, and with each byte of a short record
                        // changed: the same answer or none.
                        for cut in 1..=len.min(40) {
                            let c = &b[..1 + len - cut];
                            if let Some(got) = RecordView::decode_short(c, 1) {
                                assert_eq!(Some(got), full(c, 1), "cut {cut}");
                            }
                        }
                        if len <= 40 {
                            for i in 1..=len {
                                for v in [0u8, 1, 2, 0x7f, 0x80, 0x81, 0xff] {
                                    let mut c = b.clone();
                                    c[i] = v;
                                    if let Some(got) = RecordView::decode_short(&c, 1) {
                                        assert_eq!(Some(got), full(&c, 1), "byte {i} = {v}");
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        assert!(answered > 100, "the short decoder took only {answered}");
    }

    #[test]
    fn encode_into_writes_what_encode_writes_or_nothing() {
        let headers = [
            ("trace".to_string(), Bytes::from_static(b"42")),
            ("e".to_string(), Bytes::new()),
        ];
        let long = vec![7u8; 300];
        let keys: [Option<&[u8]>; 3] = [None, Some(b""), Some(&long)];
        let values: [Option<&[u8]>; 3] = [None, Some(b"v"), Some(&long)];
        for key in keys {
            for value in values {
                for hs in [&headers[..], &[]] {
                    for (ts_delta, off_delta) in [
                        (0, 0),
                        (-1, 63),
                        (64, 64),
                        (1 << 40, 1 << 20),
                        (i64::MIN, i32::MAX),
                    ] {
                        let parts = RecordParts::new(key, value, hs);
                        let size = parts.encoded_len(0, 0);
                        for max in [size - 1, size, size + 1, size + 11, size + 12] {
                            assert_eq!(parts.fits(max), size <= max, "max {max}, size {size}");
                        }
                        let len = parts.encoded_len(ts_delta, off_delta);
                        let mut want = vec![0u8; len];
                        assert_eq!(parts.encode(&mut want, ts_delta, off_delta), len);
                        let mut got = vec![0xaau8; len + 3];
                        assert_eq!(parts.encode_into(&mut got, ts_delta, off_delta), Some(len));
                        assert_eq!(&got[..len], &want[..]);
                        assert_eq!(&got[len..], &[0xaa; 3]);
                        let mut short = vec![0xaau8; len - 1];
                        assert_eq!(parts.encode_into(&mut short, ts_delta, off_delta), None);
                        assert!(short.iter().all(|&b| b == 0xaa));
                    }
                }
            }
        }
    }

    #[test]
    fn wire_layout_matches_kafka() {
        let b = build(&[(Some(b"k"), Some(b"v"), 0x0102)], 7);
        assert_eq!(&b[0..8], &7i64.to_be_bytes());
        assert_eq!(get_i32(&b, 8) as usize, b.len() - 12);
        assert_eq!(b[16], 2);
        assert_eq!(&b[43..51], &(-1i64).to_be_bytes());
        // The record: length, attributes 0, ts delta 0, offset delta 0,
        // key len 1 (zig-zag 2), 'k', value len 1, 'v', header count 1 ...
        assert_eq!(&b[61..69], &[0x22, 0, 0, 0, 2, b'k', 2, b'v']);
    }
}
