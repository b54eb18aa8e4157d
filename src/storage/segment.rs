//! A segment: one `.log` file of whole batches plus its sparse `.index`
//! (offset -> position) and `.timeindex` (max timestamp -> offset), named by
//! the segment's base offset, Kafka style.
//!
//! Invariants:
//! - Offsets in a segment are at least `base_offset` and increase batch by
//!   batch; the next segment's base offset is above every offset here.
//! - An index entry `(relative offset, position)` says: the batch starting
//!   at `position` ends at offset `base_offset + relative offset`. Entries
//!   increase in both fields, and are sparse: a batch gets one when more
//!   than [`INDEX_INTERVAL_BYTES`] were written since the last entry.
//! - A time index entry `(timestamp, relative offset)` says: no record at or
//!   below that offset has a larger timestamp. Entries increase in both
//!   fields; the last entry of a closed segment carries the segment's
//!   largest timestamp.
//! - A closed segment is immutable: its `.log` holds exactly its batches.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use memmap2::{Mmap, MmapRaw};
use parking_lot::Mutex;

use super::pager;
use crate::bulk_arc::BulkArc;
use crate::error::{Error, Result};
use crate::format::{validate_batch, BatchHeader};
use crate::io;
use crate::record::ReadRegion;

/// Bytes of log between two offset-index entries (Kafka's `index.interval.bytes`).
pub(crate) const INDEX_INTERVAL_BYTES: u64 = 4096;
pub(crate) const INDEX_ENTRY_BYTES: usize = 8;
pub(crate) const TIME_INDEX_ENTRY_BYTES: usize = 12;
/// How far behind a sequential writer or reader its map's pages are
/// released (see [`Segment::release_behind`]).
pub(crate) const RELEASE_CHUNK: u64 = 8 * 1024 * 1024;

/// File name of a segment file: 20-digit zero-padded base offset.
pub(crate) fn file_name(base_offset: u64, ext: &str) -> String {
    format!("{base_offset:020}.{ext}")
}

/// A memory map of segment data that [`Bytes`] can share.
pub(crate) enum SegmentMap {
    /// The active segment's writable map (capacity may exceed the file).
    Raw(MmapRaw),
    /// A closed segment's read-only map of the whole file.
    Read(Mmap),
    /// Bytes in memory: a decompressed records section, or a copy of an
    /// open batch that will be compressed in place (never written).
    Heap(Box<[u8]>),
}

impl SegmentMap {
    pub(crate) fn ptr(&self) -> *const u8 {
        match self {
            SegmentMap::Raw(m) => m.as_ptr(),
            SegmentMap::Read(m) => m.as_ptr(),
            SegmentMap::Heap(b) => b.as_ptr(),
        }
    }

    /// Drops this process's page-table entries for the whole pages in
    /// `start..end` (see [`Segment::release_behind`]); the bytes stay in the
    /// page cache and read the same when touched again.
    pub(crate) fn release(&self, start: u64, end: u64) {
        let page = io::page_size() as u64;
        let mapped = match self {
            SegmentMap::Raw(m) => m.len(),
            SegmentMap::Read(m) => m.len(),
            SegmentMap::Heap(_) => 0,
        } as u64;
        // Never past the map, whatever the caller passes: DONTNEED over a
        // neighbouring anonymous mapping would zero it.
        let end = end.min(mapped);
        let (start, end) = (start.next_multiple_of(page), end / page * page);
        if start >= end {
            return;
        }
        let (start, len) = (start as usize, (end - start) as usize);
        // SAFETY: MADV_DONTNEED on a shared, file-backed mapping (both maps
        // below are `MAP_SHARED` of the segment's file) only unmaps pages:
        // their contents stay in the page cache, dirty pages stay dirty
        // (the kernel moves the dirty bit to the page as it unmaps it), and
        // the next access faults the same bytes back in. So no byte that a
        // reference into the map (a `Message`, the writer's window) may
        // point at changes, and the range is within the mapping (`end` is
        // clamped to its length above). The
        // danger of DONTNEED, zero-filled pages, concerns private and
        // anonymous mappings only.
        let result = unsafe {
            match self {
                SegmentMap::Raw(m) => {
                    m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, len)
                }
                SegmentMap::Read(m) => {
                    m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, len)
                }
                SegmentMap::Heap(_) => Ok(()),
            }
        };
        // Only memory use depends on it: nothing to report.
        if let Err(e) = result {
            tracing::debug!(error = %e, "madvise(MADV_DONTNEED) of a segment map failed");
        }
    }

    /// Faults in the pages of `start..end` of the active segment's map
    /// without changing their bytes (see `pager.rs`), as a write would.
    /// Pages past the file's end fail the call with an error, never a
    /// `SIGBUS`. Not a map of the active segment, or an empty range: `Ok`.
    /// Elsewhere than on Linux (5.14 and later): `Unsupported`.
    pub(crate) fn populate(&self, start: u64, end: u64) -> std::io::Result<()> {
        let SegmentMap::Raw(m) = self else {
            return Ok(());
        };
        let page = io::page_size() as u64;
        let end = end.min(m.len() as u64);
        let start = start / page * page;
        if start >= end {
            return Ok(());
        }
        let (start, len) = (start as usize, (end - start) as usize);
        #[cfg(target_os = "linux")]
        return m.advise_range(memmap2::Advice::PopulateWrite, start, len);
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (m, start, len);
            Err(std::io::ErrorKind::Unsupported.into())
        }
    }

    pub(crate) fn mut_ptr(&self) -> *mut u8 {
        match self {
            SegmentMap::Raw(m) => m.as_mut_ptr(),
            SegmentMap::Read(_) | SegmentMap::Heap(_) => {
                unreachable!("only the active segment's map is written")
            }
        }
    }
}

/// Shares bytes `start..end` of `map` with readers, without copying.
///
/// The caller guarantees the range is within the mapped file and no longer
/// written (see [`ReadRegion::bytes`]).
pub(crate) fn share_region(
    topic: &Arc<str>,
    map: &Arc<SegmentMap>,
    start: u64,
    end: u64,
) -> BulkArc<ReadRegion> {
    debug_assert!(start <= end);
    BulkArc::new(ReadRegion {
        topic: Arc::clone(topic),
        _map: Arc::clone(map),
        // SAFETY: `start` is within the mapping (the caller's guarantee).
        ptr: unsafe { map.ptr().add(start as usize) },
        len: (end - start) as usize,
    })
}

/// A closed segment's sparse indexes, mapped from their files and checked.
pub(crate) struct ClosedIndex {
    offsets: Option<Mmap>,
    times: Option<Mmap>,
}

impl ClosedIndex {
    fn offset_entries(&self) -> &[u8] {
        self.offsets.as_deref().unwrap_or(&[])
    }

    fn time_entries(&self) -> &[u8] {
        self.times.as_deref().unwrap_or(&[])
    }
}

pub(crate) fn read_offset_entry(b: &[u8], i: usize) -> (u32, u32) {
    let e = &b[i * INDEX_ENTRY_BYTES..];
    (
        u32::from_be_bytes(e[0..4].try_into().expect("4 bytes")),
        u32::from_be_bytes(e[4..8].try_into().expect("4 bytes")),
    )
}

pub(crate) fn read_time_entry(b: &[u8], i: usize) -> (i64, u32) {
    let e = &b[i * TIME_INDEX_ENTRY_BYTES..];
    (
        i64::from_be_bytes(e[0..8].try_into().expect("8 bytes")),
        u32::from_be_bytes(e[8..12].try_into().expect("4 bytes")),
    )
}

/// Checks the bytes of a closed segment's `.index` (`offsets`) and
/// `.timeindex` (`times`) against the segment's length `len`: whole
/// entries, increasing in both fields, positions inside the segment (and
/// never 0, which needs no entry), timestamps not negative, and a time
/// entry in any non-empty segment. `None` if the indexes need a rebuild;
/// else the timestamp of the last time entry, if any (the segment's
/// largest).
pub(crate) fn check_closed_index(offsets: &[u8], times: &[u8], len: u64) -> Option<Option<i64>> {
    if !offsets.len().is_multiple_of(INDEX_ENTRY_BYTES)
        || !times.len().is_multiple_of(TIME_INDEX_ENTRY_BYTES)
    {
        return None;
    }
    let mut prev: Option<(u32, u32)> = None;
    for i in 0..offsets.len() / INDEX_ENTRY_BYTES {
        let (rel, pos) = read_offset_entry(offsets, i);
        let increasing = prev.is_none_or(|(r, p)| rel > r && pos > p);
        if !increasing || pos as u64 >= len || pos == 0 {
            return None;
        }
        prev = Some((rel, pos));
    }
    let m = times.len() / TIME_INDEX_ENTRY_BYTES;
    let mut prev_t: Option<(i64, u32)> = None;
    for i in 0..m {
        let (ts, rel) = read_time_entry(times, i);
        let increasing = prev_t.is_none_or(|(t, r)| ts > t && rel > r);
        if !increasing || ts < 0 {
            return None;
        }
        prev_t = Some((ts, rel));
    }
    if m == 0 && len > 0 {
        // A non-empty closed segment always ends with a time entry.
        return None;
    }
    Some(prev_t.map(|(ts, _)| ts))
}

/// Looks `target` up in the offset index `offsets` (checked by
/// [`check_closed_index`]) of the segment at `base_offset`: the position
/// to start scanning at, and the last offset of the batch there (when it
/// came from an entry).
pub(crate) fn offset_lookup(offsets: &[u8], base_offset: u64, target: u64) -> (u64, Option<u64>) {
    let rel = target.saturating_sub(base_offset);
    let found = floor_search(offsets.len() / INDEX_ENTRY_BYTES, rel, |i| {
        read_offset_entry(offsets, i).0 as u64
    });
    match found {
        Some(i) => {
            let (r, pos) = read_offset_entry(offsets, i);
            (pos as u64, Some(base_offset + r as u64))
        }
        None => (0, None),
    }
}

/// The offset of the last entry of the time index `times` (checked by
/// [`check_closed_index`]) whose timestamp is below `timestamp`, in the
/// segment at `base_offset`.
pub(crate) fn time_floor(times: &[u8], base_offset: u64, timestamp: i64) -> Option<u64> {
    let n = times.len() / TIME_INDEX_ENTRY_BYTES;
    // Largest entry with ts < timestamp.
    let (mut lo, mut hi) = (0usize, n);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if read_time_entry(times, mid).0 < timestamp {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo.checked_sub(1)
        .map(|i| base_offset + read_time_entry(times, i).1 as u64)
}

/// Largest `i` with `key(i) <= target`, for keys increasing in `i`.
pub(crate) fn floor_search(n: usize, target: u64, key: impl Fn(usize) -> u64) -> Option<usize> {
    let (mut lo, mut hi) = (0usize, n);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if key(mid) <= target {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo.checked_sub(1)
}

/// Sparse index entries built while scanning or appending batches.
#[derive(Debug, Default, Clone)]
pub(crate) struct IndexBuilder {
    pub offsets: Vec<(u32, u32)>,
    pub times: Vec<(i64, u32)>,
    pub bytes_since_entry: u64,
    pub max_timestamp: i64,
    pub offset_of_max_timestamp: u64,
}

impl IndexBuilder {
    pub(crate) fn new() -> Self {
        IndexBuilder {
            max_timestamp: -1,
            ..Default::default()
        }
    }

    /// The index of an active segment of `active_len` bytes, from its
    /// `.index` and `.timeindex` bytes as a clean close left them; `None`
    /// if they are not whole entries, or the offset entries do not
    /// increase or point past the segment. The caller sets the largest
    /// timestamp (kept in the checkpoint).
    pub(crate) fn from_active_files(
        offsets: &[u8],
        times: &[u8],
        active_len: u64,
    ) -> Option<IndexBuilder> {
        if !offsets.len().is_multiple_of(INDEX_ENTRY_BYTES)
            || !times.len().is_multiple_of(TIME_INDEX_ENTRY_BYTES)
        {
            return None;
        }
        let mut ix = IndexBuilder::new();
        ix.offsets = (0..offsets.len() / INDEX_ENTRY_BYTES)
            .map(|i| read_offset_entry(offsets, i))
            .collect();
        ix.times = (0..times.len() / TIME_INDEX_ENTRY_BYTES)
            .map(|i| read_time_entry(times, i))
            .collect();
        let sane = ix
            .offsets
            .windows(2)
            .all(|w| w[1].0 > w[0].0 && w[1].1 > w[0].1)
            && ix
                .offsets
                .last()
                .is_none_or(|&(_, p)| (p as u64) < active_len);
        if !sane {
            return None;
        }
        ix.bytes_since_entry = active_len - ix.offsets.last().map_or(0, |&(_, p)| p as u64);
        Some(ix)
    }

    /// Accounts for a batch `[position, position+len)` holding offsets up to
    /// `last_offset` with largest timestamp `max_timestamp` (Kafka's rule:
    /// the entry is added before the batch's bytes are counted).
    pub(crate) fn add_batch(
        &mut self,
        base_offset: u64,
        position: u64,
        len: u64,
        last_offset: u64,
        max_timestamp: i64,
    ) {
        if max_timestamp > self.max_timestamp {
            self.max_timestamp = max_timestamp;
            self.offset_of_max_timestamp = last_offset;
        }
        if self.bytes_since_entry > INDEX_INTERVAL_BYTES {
            self.offsets
                .push(((last_offset - base_offset) as u32, position as u32));
            self.add_time_entry(base_offset);
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry += len;
    }

    /// Appends `(max timestamp so far, its offset)` if it moves forward.
    pub(crate) fn add_time_entry(&mut self, base_offset: u64) {
        if self.max_timestamp < 0 {
            return;
        }
        let rel = (self.offset_of_max_timestamp - base_offset) as u32;
        match self.times.last() {
            Some(&(ts, r)) if ts >= self.max_timestamp || r >= rel => {}
            _ => self.times.push((self.max_timestamp, rel)),
        }
    }

    /// Largest entry position whose offset is `<= target`, else 0.
    pub(crate) fn lookup(&self, base_offset: u64, target: u64) -> u64 {
        let rel = target.saturating_sub(base_offset);
        floor_search(self.offsets.len(), rel, |i| self.offsets[i].0 as u64)
            .map_or(0, |i| self.offsets[i].1 as u64)
    }

    pub(crate) fn encode_offsets(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.offsets.len() * INDEX_ENTRY_BYTES);
        for &(rel, pos) in &self.offsets {
            out.extend_from_slice(&rel.to_be_bytes());
            out.extend_from_slice(&pos.to_be_bytes());
        }
        out
    }

    pub(crate) fn encode_times(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.times.len() * TIME_INDEX_ENTRY_BYTES);
        for &(ts, rel) in &self.times {
            out.extend_from_slice(&ts.to_be_bytes());
            out.extend_from_slice(&rel.to_be_bytes());
        }
        out
    }
}

/// What [`scan_batches`] found.
pub(crate) struct Scan {
    pub ix: IndexBuilder,
    /// End of the last good batch.
    pub end: u64,
    /// Offset after the last good batch (`None`: no batch).
    pub next_offset: Option<u64>,
    /// Position of the first bad batch and why it is bad.
    pub bad: Option<(u64, String)>,
}

/// Walks the batches of `data` (a whole segment's bytes) from its start and
/// rebuilds its indexes. Batches starting below `trusted_end` get their
/// headers checked; the rest are fully validated (CRC, records).
/// With `gaps` (a compacted segment) a batch may start after the offset
/// following the previous one, never before it.
pub(crate) fn scan_batches(data: &[u8], base_offset: u64, trusted_end: u64, gaps: bool) -> Scan {
    scan_batches_with(data, base_offset, trusted_end, gaps, |_, _, _| {})
}

/// [`scan_batches`], calling `on_batch(position, header, bytes)` for each
/// good batch in file order (`brook::inspect` lists them this way).
pub(crate) fn scan_batches_with(
    data: &[u8],
    base_offset: u64,
    trusted_end: u64,
    gaps: bool,
    mut on_batch: impl FnMut(u64, &BatchHeader, &[u8]),
) -> Scan {
    let mut ix = IndexBuilder::new();
    let mut pos = 0u64;
    let mut next_offset = None;
    while (pos as usize) < data.len() {
        let rest = &data[pos as usize..];
        let expected = next_offset.unwrap_or(base_offset);
        let checked = BatchHeader::parse(rest).and_then(|h| {
            if h.total_len() > rest.len() {
                return Err(crate::format::FormatError(format!(
                    "batch of {} bytes runs past the end of the file ({} left)",
                    h.total_len(),
                    rest.len()
                )));
            }
            if pos >= trusted_end {
                validate_batch(&rest[..h.total_len()])?;
            }
            let misplaced = if gaps {
                (h.base_offset as u64) < expected
            } else {
                h.base_offset as u64 != expected
            };
            if misplaced {
                return Err(crate::format::FormatError(format!(
                    "batch base offset {} does not follow the previous batch (expected {expected})",
                    h.base_offset
                )));
            }
            Ok(h)
        });
        match checked {
            Ok(h) => {
                let len = h.total_len() as u64;
                on_batch(pos, &h, &rest[..h.total_len()]);
                ix.add_batch(base_offset, pos, len, h.last_offset(), h.max_timestamp);
                next_offset = Some(h.last_offset() + 1);
                pos += len;
            }
            Err(e) => {
                return Scan {
                    ix,
                    end: pos,
                    next_offset,
                    bad: Some((pos, e.0)),
                }
            }
        }
    }
    Scan {
        ix,
        end: pos,
        next_offset,
        bad: None,
    }
}

/// A segment as readers see it. The active segment's writer state lives in
/// the partition log; this holds what is shared.
pub(crate) struct Segment {
    pub base_offset: u64,
    /// Compacted: offsets may have gaps between batches.
    pub gaps: bool,
    pub log_path: PathBuf,
    pub index_path: PathBuf,
    pub timeindex_path: PathBuf,
    /// Size of a closed segment's `.log` (0 while active).
    closed_len: AtomicU64,
    /// Largest timestamp, `i64::MIN` when not yet known.
    max_timestamp: AtomicI64,
    /// Batches starting below this position passed their CRC check in this
    /// process (grows contiguously from 0).
    verified_prefix: AtomicU64,
    /// Batches starting at or after this position were validated (or written)
    /// by this process.
    verified_from: AtomicU64,
    deleted: AtomicBool,
    /// Pages of the current map (the writer's while active, then the
    /// closed one's) below this position were released (see
    /// [`release_behind`](Self::release_behind)).
    released: AtomicU64,
    map: Mutex<Option<Arc<SegmentMap>>>,
    index: Mutex<Option<Arc<ClosedIndex>>>,
}

impl Segment {
    pub(crate) fn new(dir: &Path, base_offset: u64, gaps: bool) -> Segment {
        Segment {
            base_offset,
            gaps,
            log_path: dir.join(file_name(base_offset, "log")),
            index_path: dir.join(file_name(base_offset, "index")),
            timeindex_path: dir.join(file_name(base_offset, "timeindex")),
            closed_len: AtomicU64::new(0),
            max_timestamp: AtomicI64::new(i64::MIN),
            verified_prefix: AtomicU64::new(0),
            verified_from: AtomicU64::new(u64::MAX),
            deleted: AtomicBool::new(false),
            released: AtomicU64::new(0),
            map: Mutex::new(None),
            index: Mutex::new(None),
        }
    }

    /// A closed segment whose bytes and indexes were just written by this
    /// process to the given (not yet renamed) files: it is mapped from them
    /// now, so renaming the files into place later changes nothing for it.
    pub(crate) fn from_written_files(
        dir: &Path,
        base_offset: u64,
        gaps: bool,
        files: [&Path; 3],
        len: u64,
        max_timestamp: i64,
    ) -> Result<Segment> {
        let seg = Segment::new(dir, base_offset, gaps);
        seg.closed_len.store(len, Ordering::Release);
        seg.max_timestamp.store(max_timestamp, Ordering::Release);
        seg.verified_from.store(0, Ordering::Release);
        if let Some(map) = io::map_read(files[0])? {
            *seg.map.lock() = Some(Arc::new(SegmentMap::Read(map)));
        }
        *seg.index.lock() = Some(Arc::new(ClosedIndex {
            offsets: io::map_read(files[1])?,
            times: io::map_read(files[2])?,
        }));
        Ok(seg)
    }

    pub(crate) fn closed_len(&self) -> u64 {
        self.closed_len.load(Ordering::Acquire)
    }

    /// Marks the segment closed at `len` bytes; readers map it read-only
    /// from now on.
    pub(crate) fn set_closed(&self, len: u64, max_timestamp: Option<i64>) {
        self.closed_len.store(len, Ordering::Release);
        if let Some(ts) = max_timestamp {
            self.max_timestamp.store(ts, Ordering::Release);
        }
        *self.map.lock() = None;
        // The closed map, mapped on first read, starts with nothing mapped.
        self.released.store(0, Ordering::Release);
    }

    /// Keeps the memory a sequential writer or reader of `map` holds
    /// bounded: once `pos` is [`RELEASE_CHUNK`] past the last release plus
    /// one chunk, the pages from there to a chunk before `pos` are unmapped
    /// from this process (they stay in the page cache, so the kernel still
    /// writes them back and a later read finds them there; only the
    /// process's resident size stops growing with the data it has
    /// touched). The pager thread does the unmapping (see `pager.rs`), or
    /// the caller when the pager's queue is full.
    /// The chunk just behind `pos` stays mapped for readers
    /// tailing it. A reader far behind the furthest one maps what it reads
    /// back in, and those pages stay until a reader reaches the end of the
    /// closed segment ([`release_all`](Self::release_all)) or the map is
    /// dropped.
    pub(crate) fn release_behind(&self, map: &Arc<SegmentMap>, pos: u64) {
        let done = self.released.load(Ordering::Acquire);
        if pos < done + 2 * RELEASE_CHUNK {
            return;
        }
        // Page-aligned, so the next release starts where this one ended.
        let page = io::page_size() as u64;
        let upto = (pos - RELEASE_CHUNK) / page * page;
        if self
            .released
            .compare_exchange(done, upto, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            pager::release(map, done, upto);
        }
    }

    /// Releases every page of a closed segment's `map` (see
    /// [`release_behind`](Self::release_behind)), for a reader that read
    /// to its end. The next sequential reader releases from the start
    /// again.
    pub(crate) fn release_all(&self, map: &Arc<SegmentMap>) {
        pager::release(map, 0, self.closed_len());
        self.released.store(0, Ordering::Release);
    }

    /// Pages below this were released by a sequential writer or reader;
    /// the pager does not fault them back in.
    pub(crate) fn released(&self) -> u64 {
        self.released.load(Ordering::Acquire)
    }

    pub(crate) fn set_verified_from(&self, pos: u64) {
        self.verified_from.store(pos, Ordering::Release);
    }

    pub(crate) fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
        *self.map.lock() = None;
        *self.index.lock() = None;
    }

    fn is_verified(&self, pos: u64) -> bool {
        pos < self.verified_prefix.load(Ordering::Acquire)
            || pos >= self.verified_from.load(Ordering::Acquire)
    }

    /// Checks the batch at `pos` unless this process already did.
    pub(crate) fn verify_batch(&self, pos: u64, batch: &[u8]) -> Result<()> {
        if self.is_verified(pos) {
            return Ok(());
        }
        validate_batch(batch).map_err(|e| Error::corrupt(&self.log_path, pos, e.0))?;
        let _ = self.verified_prefix.compare_exchange(
            pos,
            pos + batch.len() as u64,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
        Ok(())
    }

    /// The read-only map of a closed segment (mapped on first use).
    pub(crate) fn closed_map(&self) -> Result<Option<Arc<SegmentMap>>> {
        let mut slot = self.map.lock();
        if let Some(m) = &*slot {
            return Ok(Some(Arc::clone(m)));
        }
        if self.deleted.load(Ordering::Acquire) {
            return Ok(None);
        }
        let Some(map) = io::map_read(&self.log_path)? else {
            return Ok(None);
        };
        if (map.len() as u64) < self.closed_len() {
            return Err(Error::corrupt(
                &self.log_path,
                map.len() as u64,
                format!("segment shrank below its {} bytes", self.closed_len()),
            ));
        }
        let m = Arc::new(SegmentMap::Read(map));
        *slot = Some(Arc::clone(&m));
        Ok(Some(m))
    }

    pub(crate) fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    /// The closed segment's indexes, loaded and checked on first use and
    /// rebuilt from the log if they are missing or damaged.
    fn closed_index(&self) -> Result<Arc<ClosedIndex>> {
        let mut slot = self.index.lock();
        if let Some(ix) = &*slot {
            return Ok(Arc::clone(ix));
        }
        // A deleted segment's files are gone or going: loading them would
        // find nothing, and a rebuild would write stray index files.
        // (`mark_deleted` sets the flag before it takes this lock, so a
        // rebuild under the lock always finishes before the files go.)
        if self.deleted.load(Ordering::Acquire) {
            return Err(Error::io(
                "load index of deleted segment",
                &self.index_path,
                std::io::ErrorKind::NotFound.into(),
            ));
        }
        let ix = match self.load_index()? {
            Some(ix) => ix,
            None => self.rebuild_index()?,
        };
        let ix = Arc::new(ix);
        *slot = Some(Arc::clone(&ix));
        Ok(ix)
    }

    /// Maps the index files and checks their entries; `None` if they need a
    /// rebuild.
    fn load_index(&self) -> Result<Option<ClosedIndex>> {
        let offsets = io::map_read(&self.index_path)?;
        let times = io::map_read(&self.timeindex_path)?;
        let ix = ClosedIndex { offsets, times };
        let Some(max_ts) =
            check_closed_index(ix.offset_entries(), ix.time_entries(), self.closed_len())
        else {
            return Ok(None);
        };
        if let Some(ts) = max_ts {
            self.max_timestamp.store(ts, Ordering::Release);
        }
        Ok(Some(ix))
    }

    /// Rebuilds both indexes by scanning the log, replaces the files
    /// atomically, and maps them.
    fn rebuild_index(&self) -> Result<ClosedIndex> {
        let map = self.closed_map()?;
        let data: &[u8] = match &map {
            // SAFETY: a closed segment's map covers its whole file, which is
            // at least `closed_len` bytes (checked in `closed_map`) and
            // immutable.
            Some(m) => unsafe { std::slice::from_raw_parts(m.ptr(), self.closed_len() as usize) },
            None => &[],
        };
        let Scan { mut ix, bad, .. } = scan_batches(data, self.base_offset, 0, self.gaps);
        if let Some((pos, reason)) = bad {
            return Err(Error::corrupt(&self.log_path, pos, reason));
        }
        ix.add_time_entry(self.base_offset);
        io::write_atomic(&self.index_path, &ix.encode_offsets())?;
        io::write_atomic(&self.timeindex_path, &ix.encode_times())?;
        self.max_timestamp
            .store(ix.max_timestamp, Ordering::Release);
        self.load_index()?.ok_or_else(|| {
            Error::corrupt(&self.index_path, 0, "rebuilt index failed its own check")
        })
    }

    /// Drops a loaded index so the next lookup rebuilds it (after a lookup
    /// landed on a position that is not the batch the entry promised).
    pub(crate) fn discard_index_and_rebuild(&self) -> Result<()> {
        let mut slot = self.index.lock();
        *slot = None;
        // Under the lock, as in `closed_index`: a deleted segment's files
        // are gone or going, and a rebuild would write stray ones.
        if self.deleted.load(Ordering::Acquire) {
            return Err(Error::io(
                "rebuild index of deleted segment",
                &self.index_path,
                std::io::ErrorKind::NotFound.into(),
            ));
        }
        *slot = Some(Arc::new(self.rebuild_index()?));
        Ok(())
    }

    /// Position to start scanning for `target` in a closed segment, and the
    /// last offset the batch there must end at (when it came from an entry).
    pub(crate) fn closed_lookup(&self, target: u64) -> Result<(u64, Option<u64>)> {
        let ix = self.closed_index()?;
        Ok(offset_lookup(ix.offset_entries(), self.base_offset, target))
    }

    /// Offset after which the search for `timestamp` starts: every record up
    /// to the returned offset has a smaller timestamp.
    pub(crate) fn closed_time_floor(&self, timestamp: i64) -> Result<Option<u64>> {
        let ix = self.closed_index()?;
        Ok(time_floor(ix.time_entries(), self.base_offset, timestamp))
    }

    /// The largest timestamp of a closed segment (loads the time index).
    pub(crate) fn closed_max_timestamp(&self) -> Result<i64> {
        let ts = self.max_timestamp.load(Ordering::Acquire);
        if ts != i64::MIN {
            return Ok(ts);
        }
        self.closed_index()?;
        Ok(self.max_timestamp.load(Ordering::Acquire))
    }

    /// Removes the segment's files (after [`mark_deleted`](Self::mark_deleted)).
    pub(crate) fn delete_files(&self) -> Result<()> {
        io::remove_file(&self.log_path)?;
        io::remove_file(&self.index_path)?;
        io::remove_file(&self.timeindex_path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_search_finds_largest_not_above() {
        let keys = [10u64, 20, 30];
        assert_eq!(floor_search(3, 5, |i| keys[i]), None);
        assert_eq!(floor_search(3, 10, |i| keys[i]), Some(0));
        assert_eq!(floor_search(3, 25, |i| keys[i]), Some(1));
        assert_eq!(floor_search(3, 99, |i| keys[i]), Some(2));
    }

    #[test]
    fn index_entries_follow_kafkas_interval_rule() {
        let mut ix = IndexBuilder::new();
        // 3 batches of 3000 bytes: the first and second get no entry (bytes
        // since the last entry do not exceed 4096 before them), the third does.
        ix.add_batch(100, 0, 3000, 104, 5);
        ix.add_batch(100, 3000, 3000, 109, 7);
        ix.add_batch(100, 6000, 3000, 114, 6);
        assert_eq!(ix.offsets, vec![(14, 6000)]);
        assert_eq!(ix.times, vec![(7, 9)]);
        assert_eq!(ix.lookup(100, 113), 0);
        assert_eq!(ix.lookup(100, 114), 6000);
        assert_eq!((ix.max_timestamp, ix.offset_of_max_timestamp), (7, 109));
    }
}
