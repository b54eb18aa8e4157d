//! Log compaction: rewriting closed segments so that only the latest record
//! of each key remains.
//!
//! This module holds the byte-level work; the swap into the partition is in
//! `partition_log.rs` (`PartitionLog::compact`).
//!
//! # What is kept
//!
//! A record survives if it is the latest record of its key among the
//! segments being compacted (a later record in the active segment does not
//! count: compaction only ever looks at closed segments). A tombstone
//! survives too, unless it lies in a segment that an earlier compaction
//! already produced more than `delete_retention` ago — then consumers have
//! had their chance to see the delete, and the key disappears.
//!
//! Transaction markers (control batches) are never removed: their keys
//! are not record keys, and a marker is what tells a reader rebuilding
//! producer state from the log that the records before it were aborted.
//!
//! Kept records are copied byte for byte: each rewritten batch keeps its
//! base offset, base timestamp, attributes and `lastOffsetDelta` (as Kafka's
//! cleaner does), with only the surviving records, a fresh count, max
//! timestamp and CRC. A compressed batch is decompressed, and its kept
//! records are compressed again with the same codec. A batch left with no records is dropped. Offsets
//! therefore never change; removed records leave gaps.
//!
//! # Crash-safe swap (see `PartitionLog::compact`)
//!
//! 1. Write the compacted group into `<base>.log.cleaned` (and `.index`,
//!    `.timeindex` with the same suffix) and fsync them.
//! 2. Commit: write the manifest `<base>.swap` (atomic replace) naming the
//!    first offset after the group.
//! 3. Swap the partition's segment list in memory (the new segment is
//!    mapped from the `.cleaned` files already; old segments are marked
//!    deleted so readers re-plan).
//! 4. Delete the group's other segments, rename the `.cleaned` files over
//!    the group's first segment, fsync the directory.
//! 5. Remove the manifest.
//!
//! Reopening first finishes any committed swap — a manifest means steps 4
//! and 5 are redone (they are idempotent) — and deletes `.cleaned` files
//! without a manifest. A crash therefore leaves the old segments or the new
//! one, never a mix, and never loses the latest value of a key.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::format::{
    batch_records, compress_batch, seal_batch, BatchHeader, Compression, RecordView,
    BATCH_HEADER_BYTES,
};

use super::segment::{IndexBuilder, Segment};
use crate::io::DataFile;

/// Suffix of compacted files before the swap.
pub(crate) const CLEANED_SUFFIX: &str = ".cleaned";
/// Extension of the swap manifest.
pub(crate) const SWAP_EXT: &str = "swap";

/// Walks every batch of a closed segment's bytes.
fn batches<'a>(
    seg: &'a Segment,
    data: &'a [u8],
) -> impl Iterator<Item = Result<(u64, BatchHeader, &'a [u8])>> + 'a {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        if pos >= data.len() {
            return None;
        }
        let rest = &data[pos..];
        let at = pos as u64;
        let item = BatchHeader::parse(rest)
            .and_then(|h| {
                if h.total_len() > rest.len() {
                    Err(crate::format::FormatError(
                        "batch runs past the segment end".into(),
                    ))
                } else {
                    Ok(h)
                }
            })
            .map_err(|e| Error::corrupt(&seg.log_path, at, e.0));
        match item {
            Ok(h) => {
                let len = h.total_len();
                pos += len;
                Some(Ok((at, h, &rest[..len])))
            }
            Err(e) => {
                pos = data.len();
                Some(Err(e))
            }
        }
    })
}

/// A record of a batch; positions are relative to the bytes holding the
/// batch's records (the batch itself, or its decompressed records).
struct Rec {
    offset: u64,
    start: usize,
    end: usize,
    key: Option<(usize, usize)>,
    tombstone: bool,
    timestamp: i64,
}

/// The records of a batch (CRC-checked unless this process already did),
/// and the bytes they lie in: the batch itself, or its records
/// decompressed.
fn records<'b>(
    seg: &Segment,
    at: u64,
    h: &BatchHeader,
    batch: &'b [u8],
) -> Result<(Cow<'b, [u8]>, Vec<Rec>)> {
    let corrupt = |e: crate::format::FormatError| Error::corrupt(&seg.log_path, at, e.0);
    seg.verify_batch(at, batch)?;
    let (bytes, mut pos) = batch_records(h, batch).map_err(corrupt)?;
    let mut out = Vec::with_capacity(h.records_count as usize);
    for _ in 0..h.records_count {
        let r = RecordView::decode(&bytes, pos).map_err(corrupt)?;
        out.push(Rec {
            offset: h.base_offset as u64 + r.offset_delta as u64,
            start: pos,
            end: r.end,
            key: r.key,
            tombstone: r.value.is_none(),
            timestamp: h.base_timestamp.wrapping_add(r.timestamp_delta),
        });
        pos = r.end;
    }
    Ok((bytes, out))
}

/// Offset of the latest record of each key over the given closed segments
/// (`(segment, its bytes)`, in offset order), sorted.
///
/// A first pass builds a key -> latest offset map. Keys of uncompressed
/// batches are borrowed from the mapped segments, not copied: an entry is a
/// slice and an offset (24 bytes, plus the hash table's control byte and
/// load factor), like Kafka's 24-byte hash-and-offset entries but exact, so
/// no hash collision can ever drop a key's latest value. Keys of compressed
/// batches exist only in a decompressed buffer, so they are copied into a
/// second map; a key lives in one of the two maps at a time. The maps are
/// then reduced to their sorted offsets (8 bytes a key), so that the
/// rewrite walks them in step with the records instead of hashing every key
/// a second time. `go_on` is asked before each batch whether to go on (an
/// error stops the scan with that error: the topic is being deleted).
pub(crate) fn latest_offsets<'a>(
    sources: &[(&'a Segment, &'a [u8])],
    go_on: &dyn Fn() -> Result<()>,
) -> Result<Vec<u64>> {
    let mut borrowed: HashMap<&'a [u8], u64> = HashMap::new();
    let mut owned: HashMap<Box<[u8]>, u64> = HashMap::new();
    for &(seg, data) in sources {
        for b in batches(seg, data) {
            go_on()?;
            let (at, h, batch) = b?;
            if h.is_control() {
                continue; // transaction markers are kept, not compacted by key
            }
            let (bytes, recs) = records(seg, at, &h, batch)?;
            for Rec { offset, key, .. } in recs {
                let Some((ks, ke)) = key else {
                    continue; // keyless records predate the compact policy: kept
                };
                match &bytes {
                    Cow::Borrowed(_) => {
                        let key = &batch[ks..ke];
                        if !owned.is_empty() {
                            owned.remove(key);
                        }
                        borrowed.insert(key, offset);
                    }
                    Cow::Owned(bytes) => {
                        let key = &bytes[ks..ke];
                        borrowed.remove(key);
                        match owned.get_mut(key) {
                            Some(o) => *o = offset,
                            None => {
                                owned.insert(key.into(), offset);
                            }
                        }
                    }
                }
            }
        }
    }
    let mut latest: Vec<u64> = borrowed.into_values().chain(owned.into_values()).collect();
    latest.sort_unstable();
    Ok(latest)
}

/// What a rewrite kept and dropped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RewriteStats {
    pub records_in: u64,
    pub records_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Bytes buffered before a rewrite writes them out.
const WRITE_CHUNK_BYTES: usize = 1 << 20;

/// Rewrites source segments into one compacted segment written to `dest`
/// starting at `base_offset`, keeping keyed records whose offset is in
/// `latest` (from [`latest_offsets`]); `drop_tombstones(i)` says whether
/// tombstones of source `i` have outlived their retention, and `go_on`, asked
/// before each batch, whether to go on (as in [`latest_offsets`]). Memory
/// stays at about one write chunk, whatever the segment size. Returns the
/// segment's length and index.
pub(crate) fn rewrite(
    base_offset: u64,
    sources: &[(&Segment, &[u8])],
    latest: &[u64],
    drop_tombstones: impl Fn(usize) -> bool,
    dest: &DataFile,
    stats: &mut RewriteStats,
    go_on: &dyn Fn() -> Result<()>,
) -> Result<(u64, IndexBuilder)> {
    let mut out: Vec<u8> = Vec::with_capacity(WRITE_CHUNK_BYTES);
    let mut packed = Vec::new();
    let mut flushed = 0u64;
    let mut ix = IndexBuilder::new();
    // Records come in offset order: `latest[next]` is the first latest
    // offset not yet passed.
    let mut next = latest.partition_point(|&o| o < base_offset);
    for (i, (seg, data)) in sources.iter().enumerate() {
        stats.bytes_in += data.len() as u64;
        let drop_deletes = drop_tombstones(i);
        for b in batches(seg, data) {
            go_on()?;
            let (at, h, batch) = b?;
            let (bytes, recs) = records(seg, at, &h, batch)?;
            stats.records_in += recs.len() as u64;
            let kept: Vec<_> = recs
                .into_iter()
                .filter(|r| {
                    while latest.get(next).is_some_and(|&o| o < r.offset) {
                        next += 1;
                    }
                    if h.is_control() {
                        // A marker tells readers which records before it
                        // were aborted: it stays as long as they may.
                        return true;
                    }
                    let latest_here = r.key.is_none() || latest.get(next) == Some(&r.offset);
                    latest_here && !(r.tombstone && drop_deletes)
                })
                .collect();
            if kept.is_empty() {
                continue;
            }
            stats.records_out += kept.len() as u64;
            if out.len() >= WRITE_CHUNK_BYTES {
                dest.write_all_at(&out, flushed)?;
                flushed += out.len() as u64;
                out.clear();
            }
            let start = out.len();
            out.extend_from_slice(&batch[..BATCH_HEADER_BYTES]);
            let mut max_ts = i64::MIN;
            for r in &kept {
                out.extend_from_slice(&bytes[r.start..r.end]);
                max_ts = max_ts.max(r.timestamp);
            }
            seal_batch(
                &mut out[start..],
                h.last_offset_delta,
                max_ts,
                kept.len() as i32,
            );
            let codec = h.compression();
            if codec != Compression::None {
                // Kept records go back compressed with the batch's codec.
                compress_batch(&out[start..], codec, &mut packed)
                    .map_err(|e| Error::corrupt(&seg.log_path, at, e.0))?;
                out.truncate(start);
                out.extend_from_slice(&packed);
            }
            let len = (out.len() - start) as u64;
            ix.add_batch(
                base_offset,
                flushed + start as u64,
                len,
                h.last_offset(),
                max_ts,
            );
        }
    }
    dest.write_all_at(&out, flushed)?;
    let total = flushed + out.len() as u64;
    ix.add_time_entry(base_offset);
    stats.bytes_out += total;
    Ok((total, ix))
}
