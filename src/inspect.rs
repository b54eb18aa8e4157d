//! Read-only inspection of a log directory's files, for the `brook` tool's
//! `dump` and `verify` (feature `cli`; hidden, not an API).
//!
//! Nothing here opens a [`Log`](crate::Log) or writes a byte, so nothing is
//! recovered, resealed or rebuilt on the way: what is reported is what is
//! on disk. The directory is read under a shared lock ([`lock`]) that keeps
//! a `Log` out meanwhile and fails with [`Error::Locked`] while one is open.
//!
//! Batches are walked by the same scanner recovery uses
//! (`storage::scan_batches`), decoded by the read path's decoders
//! (`format`), and every `.index` and `.timeindex` entry is checked against
//! the batches found:
//!
//! - an offset index entry `(offset, position)` must name the start of a
//!   batch whose last offset is `offset`, entries increasing in both;
//! - a time index entry `(timestamp, offset)` must name the last offset of
//!   a batch, with `timestamp` the largest timestamp up to and including
//!   that batch, entries increasing in both;
//! - a finished segment's last time entry carries its largest timestamp.
//!
//! The last segment of a log that was not closed cleanly may end in an
//! unsealed (open) batch and preallocated zeros, and its indexes are
//! rebuilt at the next open: that tail is reported, not counted as damage,
//! and those indexes are not checked.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::consumer::OFFSETS_TOPIC;
use crate::error::{Error, Result};
use crate::format::{decode_records, marker_kind, scan_open_batch, BatchHeader, Compression};
use crate::io;
use crate::storage::{
    dir_name, file_name, parse_segment_name, read_offset_entry, read_time_entry, scan_batches_with,
    Scan, INDEX_ENTRY_BYTES, TIME_INDEX_ENTRY_BYTES,
};
use crate::txn::TXN_TOPIC;

/// A shared lock on a log directory, held while its files are read.
#[derive(Debug)]
pub struct ReadLock {
    _file: File,
}

/// Takes a shared lock on the log in `dir`: [`Error::Locked`] while a `Log`
/// has it open; while held, no `Log` can open it.
pub fn lock(dir: &Path) -> Result<ReadLock> {
    Ok(ReadLock {
        _file: io::lock_dir_shared(dir)?,
    })
}

/// The partitions of a log directory and how it was closed.
#[derive(Debug, Clone)]
pub struct LogFiles {
    /// Every partition of every topic, then the internal partitions.
    pub partitions: Vec<PartitionFiles>,
    /// `.clean-shutdown` is present: the last `Log` closed cleanly.
    pub clean_shutdown: bool,
}

/// One partition directory and its segments.
#[derive(Debug, Clone)]
pub struct PartitionFiles {
    /// Topic name (`__consumer_offsets` and `__transaction_state` for the
    /// internal partitions).
    pub topic: String,
    /// Partition number.
    pub partition: u32,
    /// The partition directory.
    pub dir: PathBuf,
    /// A compacted topic: offsets may have gaps.
    pub compacted: bool,
    /// Base offsets of the segments, ascending.
    pub segments: Vec<u64>,
    /// Other files in the directory (an in-place compression's copy, a
    /// compaction's swap files), which the next open deals with.
    pub other_files: Vec<String>,
}

/// Lists the partitions of the log in `dir` from its topics file.
pub fn log_files(dir: &Path) -> Result<LogFiles> {
    let Some((topics, clean_shutdown)) = crate::log::read_topics_unopened(dir)? else {
        let path = dir.join("topics.json");
        return Err(Error::io(
            "open",
            path,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no topics file: not a brook log directory",
            ),
        ));
    };
    let mut partitions = Vec::new();
    for (topic, config) in &topics {
        for p in 0..config.partitions {
            let compacted = config.cleanup_policy.compacts();
            partitions.push(partition_files(dir, topic, p, compacted)?);
        }
    }
    for internal in [OFFSETS_TOPIC, TXN_TOPIC] {
        if dir.join(dir_name(internal, 0)).is_dir() {
            partitions.push(partition_files(dir, internal, 0, false)?);
        }
    }
    Ok(LogFiles {
        partitions,
        clean_shutdown,
    })
}

fn partition_files(
    root: &Path,
    topic: &str,
    partition: u32,
    compacted: bool,
) -> Result<PartitionFiles> {
    let dir = root.join(dir_name(topic, partition));
    let mut segments = Vec::new();
    let mut other_files = Vec::new();
    for e in io::list_dir(&dir)? {
        if let Some(base) = parse_segment_name(&e.name, "log") {
            segments.push(base);
        } else if parse_segment_name(&e.name, "index").is_none()
            && parse_segment_name(&e.name, "timeindex").is_none()
        {
            other_files.push(e.name);
        }
    }
    segments.sort_unstable();
    other_files.sort();
    Ok(PartitionFiles {
        topic: topic.to_owned(),
        partition,
        dir,
        compacted,
        segments,
        other_files,
    })
}

/// One batch as its header describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchInfo {
    /// Byte position in the `.log` file.
    pub position: u64,
    /// Bytes of the whole batch.
    pub size: u64,
    /// First and last offset the batch covers.
    pub base_offset: u64,
    /// Last offset (`base_offset + lastOffsetDelta`).
    pub last_offset: u64,
    /// `recordsCount`.
    pub count: i32,
    /// `baseTimestamp` and `maxTimestamp` (ms).
    pub base_timestamp: i64,
    /// Largest record timestamp in the batch.
    pub max_timestamp: i64,
    /// `partitionLeaderEpoch`.
    pub leader_epoch: i32,
    /// Producer id, epoch and base sequence (`-1`: none).
    pub producer_id: i64,
    /// Producer epoch.
    pub producer_epoch: i16,
    /// Base sequence.
    pub base_sequence: i32,
    /// Codec of the records section.
    pub compression: Compression,
    /// Written inside a transaction.
    pub transactional: bool,
    /// A control batch: `Some(true)` a commit marker, `Some(false)` an
    /// abort marker.
    pub control: Option<bool>,
    /// Stored CRC-32C.
    pub crc: u32,
    /// Whether it matches the bytes.
    pub crc_ok: bool,
}

impl BatchInfo {
    fn new(position: u64, h: &BatchHeader, bytes: &[u8]) -> BatchInfo {
        BatchInfo {
            position,
            size: bytes.len() as u64,
            base_offset: h.base_offset as u64,
            last_offset: h.last_offset(),
            count: h.records_count,
            base_timestamp: h.base_timestamp,
            max_timestamp: h.max_timestamp,
            leader_epoch: h.leader_epoch,
            producer_id: h.producer_id,
            producer_epoch: h.producer_epoch,
            base_sequence: h.base_sequence,
            compression: h.compression(),
            transactional: h.is_transactional(),
            control: if h.is_control() {
                marker_kind(bytes)
            } else {
                None
            },
            crc: h.crc,
            crc_ok: h.crc_matches(bytes),
        }
    }
}

/// One record of a batch, copied out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordInfo {
    /// Offset.
    pub offset: u64,
    /// Timestamp (ms).
    pub timestamp: i64,
    /// Key, if any.
    pub key: Option<Vec<u8>>,
    /// Value (`None`: a tombstone).
    pub value: Option<Vec<u8>>,
    /// Headers in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// What follows the last good batch of a segment.
#[derive(Debug)]
pub enum Tail {
    /// Nothing: the file is whole batches.
    None,
    /// The unsealed end of the active segment of a log that was not closed
    /// cleanly: an open batch (with this many committed records) and/or
    /// preallocated zeros, `bytes` long from `position`. The next open
    /// reseals or truncates it.
    Unsealed {
        /// Where it starts.
        position: u64,
        /// Records of the open batch, if one is there.
        open_batch_records: Option<i32>,
        /// Bytes to the end of the file.
        bytes: u64,
    },
    /// Bytes that are not a valid batch.
    Damaged(Error),
}

/// What walking a segment's `.log` found.
#[derive(Debug)]
pub struct SegmentScan {
    /// Good batches in file order.
    pub batches: Vec<BatchInfo>,
    /// End of the last good batch.
    pub end: u64,
    /// Offset after the last good batch.
    pub next_offset: Option<u64>,
    /// What follows it.
    pub tail: Tail,
}

/// An offset index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// Last offset of the batch at `position`.
    pub offset: u64,
    /// Byte position in the `.log`.
    pub position: u64,
}

/// A time index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeIndexEntry {
    /// Largest timestamp up to `offset`.
    pub timestamp: i64,
    /// An offset.
    pub offset: u64,
}

/// A segment's three files, its `.log` mapped read-only.
pub struct SegmentFile {
    /// Base offset (the files' name).
    pub base_offset: u64,
    /// The `.log` file.
    pub log_path: PathBuf,
    /// The `.index` file.
    pub index_path: PathBuf,
    /// The `.timeindex` file.
    pub timeindex_path: PathBuf,
    gaps: bool,
    map: Option<Mmap>,
}

impl std::fmt::Debug for SegmentFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentFile")
            .field("log_path", &self.log_path)
            .field("len", &self.len())
            .finish()
    }
}

impl SegmentFile {
    /// Maps the segment of `partition` at `base_offset`.
    pub fn open(partition: &PartitionFiles, base_offset: u64) -> Result<SegmentFile> {
        let path = |ext| partition.dir.join(file_name(base_offset, ext));
        let log_path = path("log");
        let map = io::map_read(&log_path)?;
        Ok(SegmentFile {
            base_offset,
            index_path: path("index"),
            timeindex_path: path("timeindex"),
            log_path,
            gaps: partition.compacted,
            map,
        })
    }

    /// Bytes of the `.log`.
    pub fn len(&self) -> u64 {
        self.data().len() as u64
    }

    /// Whether the `.log` is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn data(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// Walks the batches. With `full`, each batch is validated as a read
    /// validates it (CRC-32C, every record decodes, offsets in order);
    /// otherwise only headers and framing are, and a batch with a bad CRC
    /// is listed with `crc_ok: false`. `unsealed_ok`: the active segment of
    /// a log not closed cleanly (see [`Tail::Unsealed`]).
    pub fn scan(&self, full: bool, unsealed_ok: bool) -> SegmentScan {
        let data = self.data();
        let trusted_end = if full { 0 } else { data.len() as u64 };
        let mut batches = Vec::new();
        let Scan {
            end,
            next_offset,
            bad,
            ..
        } = scan_batches_with(
            data,
            self.base_offset,
            trusted_end,
            self.gaps,
            |pos, h, b| batches.push(BatchInfo::new(pos, h, b)),
        );
        let tail = match bad {
            None => Tail::None,
            Some((pos, reason)) => {
                let rest = &data[pos as usize..];
                let open = scan_open_batch(rest);
                let after_open = open.map_or(0, |o| o.len);
                // What follows an open batch's committed records may be a
                // record a killed writer was still copying.
                let zeros = rest[after_open..].iter().all(|&b| b == 0);
                if unsealed_ok && (open.is_some() || zeros) {
                    Tail::Unsealed {
                        position: pos,
                        open_batch_records: open.map(|o| o.count),
                        bytes: rest.len() as u64,
                    }
                } else {
                    Tail::Damaged(Error::corrupt(&self.log_path, pos, reason))
                }
            }
        };
        SegmentScan {
            batches,
            end,
            next_offset,
            tail,
        }
    }

    /// Decodes the records of a batch [`scan`](Self::scan) listed.
    pub fn records(&self, batch: &BatchInfo) -> Result<Vec<RecordInfo>> {
        let corrupt = |reason: String| Error::corrupt(&self.log_path, batch.position, reason);
        let start = batch.position as usize;
        let bytes = self
            .data()
            .get(start..start + batch.size as usize)
            .ok_or_else(|| corrupt("batch runs past the end of the file".into()))?;
        let h = BatchHeader::parse(bytes).map_err(|e| corrupt(e.0))?;
        let records = decode_records(&h, bytes).map_err(|e| corrupt(e.0))?;
        Ok(records
            .into_iter()
            .map(|r| RecordInfo {
                offset: batch.base_offset + r.offset_delta as u64,
                timestamp: h.base_timestamp.wrapping_add(r.timestamp_delta),
                key: r.key,
                value: r.value,
                headers: r.headers,
            })
            .collect())
    }

    /// The whole entries of the `.index` (`None`: no file).
    pub fn offset_index(&self) -> Result<Option<Vec<IndexEntry>>> {
        Ok(io::read_optional(&self.index_path)?.map(|b| {
            (0..b.len() / INDEX_ENTRY_BYTES)
                .map(|i| {
                    let (rel, pos) = read_offset_entry(&b, i);
                    IndexEntry {
                        offset: self.base_offset + rel as u64,
                        position: pos as u64,
                    }
                })
                .collect()
        }))
    }

    /// The whole entries of the `.timeindex` (`None`: no file).
    pub fn time_index(&self) -> Result<Option<Vec<TimeIndexEntry>>> {
        Ok(io::read_optional(&self.timeindex_path)?.map(|b| {
            (0..b.len() / TIME_INDEX_ENTRY_BYTES)
                .map(|i| {
                    let (ts, rel) = read_time_entry(&b, i);
                    TimeIndexEntry {
                        timestamp: ts,
                        offset: self.base_offset + rel as u64,
                    }
                })
                .collect()
        }))
    }

    /// Checks both index files against the batches of `scan` (a full one
    /// of this segment). `finished`: the segment's indexes are final (a
    /// closed segment, or the active one after a clean close), so the last
    /// time entry must carry the segment's largest timestamp.
    pub fn check_indexes(&self, scan: &SegmentScan, finished: bool) -> Result<()> {
        let batches = &scan.batches;
        let offsets = io::read_optional(&self.index_path)?.unwrap_or_default();
        let path = &self.index_path;
        whole_entries(path, offsets.len(), INDEX_ENTRY_BYTES)?;
        let mut prev: Option<IndexEntry> = None;
        for (i, e) in self
            .offset_index()?
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let at = (i * INDEX_ENTRY_BYTES) as u64;
            let bad = |why: String| {
                Err(Error::corrupt(
                    path,
                    at,
                    format!(
                        "entry {i} (offset {}, position {}): {why}",
                        e.offset, e.position
                    ),
                ))
            };
            if prev.is_some_and(|p| e.offset <= p.offset || e.position <= p.position) {
                return bad("does not increase over the entry before it".into());
            }
            if e.position == 0 {
                return bad("position 0 needs no entry".into());
            }
            match batches.binary_search_by_key(&e.position, |b| b.position) {
                Err(_) => return bad("no batch starts at that position".into()),
                Ok(b) if batches[b].last_offset != e.offset => {
                    return bad(format!(
                        "the batch there ends at offset {}",
                        batches[b].last_offset
                    ))
                }
                Ok(_) => {}
            }
            prev = Some(e);
        }

        let times = io::read_optional(&self.timeindex_path)?.unwrap_or_default();
        let path = &self.timeindex_path;
        whole_entries(path, times.len(), TIME_INDEX_ENTRY_BYTES)?;
        // Largest timestamp up to and including each batch.
        let running_max: Vec<i64> = batches
            .iter()
            .scan(-1i64, |max, b| {
                *max = (*max).max(b.max_timestamp);
                Some(*max)
            })
            .collect();
        let entries = self.time_index()?.unwrap_or_default();
        let mut prev: Option<TimeIndexEntry> = None;
        for (i, e) in entries.iter().enumerate() {
            let at = (i * TIME_INDEX_ENTRY_BYTES) as u64;
            let bad = |why: String| {
                Err(Error::corrupt(
                    path,
                    at,
                    format!(
                        "entry {i} (timestamp {}, offset {}): {why}",
                        e.timestamp, e.offset
                    ),
                ))
            };
            if prev.is_some_and(|p| e.timestamp <= p.timestamp || e.offset <= p.offset) {
                return bad("does not increase over the entry before it".into());
            }
            match batches.binary_search_by_key(&e.offset, |b| b.last_offset) {
                Err(_) => return bad("no batch ends at that offset".into()),
                Ok(b) if running_max[b] != e.timestamp => {
                    return bad(format!(
                        "the largest timestamp up to that offset is {}",
                        running_max[b]
                    ))
                }
                Ok(_) => {}
            }
            prev = Some(*e);
        }
        let largest = running_max.last().copied().unwrap_or(-1);
        if finished && largest >= 0 && entries.last().map(|e| e.timestamp) != Some(largest) {
            return Err(Error::corrupt(
                path,
                times.len() as u64,
                format!("the last entry does not carry the segment's largest timestamp {largest}"),
            ));
        }
        Ok(())
    }
}

fn whole_entries(path: &Path, len: usize, entry_bytes: usize) -> Result<()> {
    let rest = len % entry_bytes;
    if rest != 0 {
        return Err(Error::corrupt(
            path,
            (len - rest) as u64,
            format!("{rest} bytes at the end are not a whole {entry_bytes}-byte entry"),
        ));
    }
    Ok(())
}

/// Counts of what [`PartitionFiles::verify`] checked.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    /// Segments.
    pub segments: u64,
    /// Batches (CRC-32C and records).
    pub batches: u64,
    /// Records.
    pub records: u64,
    /// Bytes of `.log`.
    pub bytes: u64,
    /// Index entries (both kinds).
    pub index_entries: u64,
    /// Bytes of unsealed tail left for the next open to recover.
    pub unsealed_bytes: u64,
}

impl PartitionFiles {
    /// Checks segment `i` (scanned in full into `scan`) as part of this
    /// partition: no damaged bytes, offsets following those of the segment
    /// before (`prev_next_offset`; equal unless compacted), indexes valid.
    /// `clean_shutdown`: see [`LogFiles`].
    pub fn check_segment(
        &self,
        i: usize,
        seg: &SegmentFile,
        scan: &SegmentScan,
        prev_next_offset: Option<u64>,
        clean_shutdown: bool,
    ) -> Result<()> {
        if let Tail::Damaged(e) = &scan.tail {
            return Err(clone_corrupt(e));
        }
        if let Some(expected) = prev_next_offset {
            let base = seg.base_offset;
            if base < expected || (!self.compacted && base != expected) {
                return Err(Error::corrupt(
                    &seg.log_path,
                    0,
                    format!("segment base offset {base} does not follow the segment before it (expected {expected})"),
                ));
            }
        }
        let active = i + 1 == self.segments.len();
        if active && !clean_shutdown {
            return Ok(()); // its indexes are rebuilt at the next open
        }
        seg.check_indexes(scan, true)
    }

    /// Checks every segment of the partition, calling `progress` with the
    /// bytes of each segment once checked. The first problem is the error.
    pub fn verify(&self, clean_shutdown: bool, progress: &mut dyn FnMut(u64)) -> Result<Checked> {
        let mut checked = Checked::default();
        let mut prev_next = None;
        for (i, &base) in self.segments.iter().enumerate() {
            let seg = SegmentFile::open(self, base)?;
            let active = i + 1 == self.segments.len();
            let scan = seg.scan(true, active && !clean_shutdown);
            self.check_segment(i, &seg, &scan, prev_next, clean_shutdown)?;
            checked.segments += 1;
            checked.batches += scan.batches.len() as u64;
            checked.records += scan.batches.iter().map(|b| b.count as u64).sum::<u64>();
            checked.bytes += seg.len();
            checked.index_entries += seg.offset_index()?.map_or(0, |v| v.len() as u64)
                + seg.time_index()?.map_or(0, |v| v.len() as u64);
            if let Tail::Unsealed { bytes, .. } = scan.tail {
                checked.unsealed_bytes += bytes;
            }
            prev_next = Some(scan.next_offset.unwrap_or(base));
            progress(seg.len());
        }
        Ok(checked)
    }
}

/// `Error` is not `Clone` (it holds `io::Error`); scans only keep
/// `Corrupt` ones.
fn clone_corrupt(e: &Error) -> Error {
    match e {
        Error::Corrupt {
            path,
            position,
            reason,
        } => Error::corrupt(path.clone(), *position, reason.clone()),
        other => Error::corrupt(PathBuf::new(), 0, other.to_string()),
    }
}
