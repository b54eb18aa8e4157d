//! One partition's log: a directory of segments, the newest of them active.
//!
//! # Appending: the open batch
//!
//! The active segment's `.log` is memory-mapped (`MAP_SHARED`) and grown
//! ahead of the writer with `posix_fallocate`. Appends are encoded straight
//! into the map, into the *open batch*: a Kafka RecordBatch whose header was
//! written when it opened and which collects consecutive records until it
//! reaches [`BATCH_TARGET_BYTES`], a sync, a flush, a roll or a second of
//! idleness; then it is *sealed* (length, last offset delta, max timestamp,
//! count and CRC-32C filled in). One append costs a `memcpy` into the page
//! cache and a few stores, no system call, and on disk a record costs its
//! own ~126 bytes plus 61 header bytes shared by the whole batch.
//!
//! A record whose batch would exceed `LARGE_RECORD_BYTES` (64 KiB) skips
//! the map: it becomes a sealed batch of its own, written with `pwrite`
//! from the caller's buffers (value and headers first, the batch header
//! last, so a process killed in between leaves zeros where the header goes,
//! which recovery reads as the end of the log). Copying it into fresh pages
//! of the shared map would cost a fault, a zero-fill and a page-mkwrite per
//! page; `pwrite` fills the page cache directly.
//!
//! A call of many large records (256 KiB or more of records of 512 bytes
//! or more) skips the map as well: its batches are encoded into a buffer
//! and written with `pwrite`, a megabyte at a time (see `staged.rs`).
//!
//! Mapped pages count in the process's resident size, so the writer (and a
//! sequential reader of a closed segment) unmaps what lies more than
//! `RELEASE_CHUNK` (8 MiB) behind it; the pages stay in the page cache (see
//! `Segment::release_behind`). Ahead of a writer that appends fast and
//! does not fsync every few records, up to `PREFAULT_AHEAD` (8 MiB) of the
//! file is written as zeros and the map faulted in before the writer gets
//! there, so that it rarely takes a page fault itself. A helper thread
//! (`pager.rs`) does both; the writer claims the bytes it is about to
//! write first (`Active::make_room`), and the zeros stay out of them.
//!
//! The three guarantees, and why they hold:
//!
//! 1. **Visible and safe from `kill -9` when the call returns.** The record's
//!    bytes are in the page cache (the map is shared with the file) before
//!    `append` returns, and the in-memory state that readers consult is
//!    updated under the same lock. The open batch's header stores its
//!    `recordsCount` *after* each record's bytes, so a process killed at any
//!    instruction leaves a count that covers only whole records.
//! 2. **Power loss follows [`SyncPolicy`](crate::SyncPolicy).** A sync seals
//!    the open batch, then fdatasyncs the segment files (and the directory
//!    if segments were created), so what a completed sync covers is whole,
//!    CRC-valid batches on stable storage. Appends that arrive during an
//!    fsync go into a new batch and share the next fsync (group commit).
//! 3. **No read returns a record that fails its integrity check.** Batches
//!    written by this process are checked in memory; any other batch is
//!    CRC-checked before its records are returned. On reopen after a crash,
//!    a trailing open batch (CRC field 0) is *resealed* from its committed
//!    records only when the directory was last written during the current
//!    kernel boot (the boot id in `.lock` matches): then the page cache
//!    still holds every byte the dead process wrote. After a reboot the open
//!    batch may be torn, so it is truncated instead — it was never synced,
//!    so no guarantee covered it.
//!
//! # Recovery
//!
//! A clean close writes every partition's end state to `recovery-checkpoint`
//! and a `.clean-shutdown` marker; reopening then reads no segment data.
//! Otherwise each partition restarts from its *recovery point* (segment and
//! byte position up to which data was fsynced and checked, recorded in the
//! checkpoint): older segments are trusted (and CRC-checked lazily when
//! read), the rest of the active segment is walked batch by batch, and
//! everything after the first invalid batch is truncated. A corrupt batch in
//! a segment that recovery trusts is reported by `read` as
//! [`Error::Corrupt`] naming file and position.
//!
//! # Locking
//!
//! `state` guards the segment list and the writer; it is held for the
//! length of an append or a read's planning, never across an fsync.
//! `sync_lock` serializes fsyncs of the partition (and holds the recovery
//! point); it is taken before `state`, never after. `cleaner_lock` (one
//! compaction, truncation or restart of the partition at a time; topic
//! deletion takes it to wait for a compaction, which it first asks to stop
//! through `abort_cleaning`) comes before both.
//! `files_lock` (retention removing segment files by name, and topic
//! deletion) comes after `cleaner_lock` and before `sync_lock` and
//! `state`. `watchers`, then the locks of the `Notify`s it rings, are
//! innermost. The full order is therefore `cleaner_lock` → `files_lock` →
//! `sync_lock` → `state` → a segment's map and index locks (topic deletion
//! marks segments deleted under `state`, waiting for an index rebuild in
//! progress) → `watchers` → a `Notify`'s lock; callers above the
//! storage (a `Log`'s topic table, the cluster's metadata and partition
//! locks, the offset and transaction stores) take theirs before any of
//! these, and storage never calls back into them. The group-commit round
//! (`group_commit.rs`), which followers of an fsync wait on, is taken with
//! no other lock held, or by an fsync's leader under `sync_lock` alone.

use std::path::{Path, PathBuf};
use std::sync::atomic::{compiler_fence, AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::cleaner;
use super::group_commit::GroupCommit;
use super::pager::Fence;
use super::producers::{self, AbortedTxn, Check, ProducerBatch, ProducerSnapshot, ProducerStates};
#[cfg(test)]
use super::segment::{self, RELEASE_CHUNK};
use super::segment::{scan_batches, share_region, IndexBuilder, Scan, Segment, SegmentMap};
use crate::bulk_arc::BulkArc;
use crate::error::{Error, Result};
use crate::format::{
    self, varint_len, BatchHeader, Compression, NewBatch, RecordParts, RecordView,
    BATCH_HEADER_BYTES, NO_PARTITION_LEADER_EPOCH, RECORDS_COUNT_OFFSET,
};
use crate::io::{self, DataFile};
use crate::metrics::{AppendTimer, LatencyCounters, PartitionMetrics, ReadCounters, SyncCounters};
use crate::record::{Field, Message, ReadRegion, TopicPartition};

mod replica;
mod staged;

/// An open batch is sealed once it holds this many bytes (Kafka's default
/// producer `batch.size`).
pub(crate) const BATCH_TARGET_BYTES: u64 = 16 * 1024;

/// A record whose batch would take more than this is written with `pwrite`
/// as a batch of its own (see `State::append_alone`).
const LARGE_RECORD_BYTES: u64 = 64 * 1024;

/// A compressed topic's partition keeps here a copy of the batch being
/// compressed in place (see `Active::compress_sealed`).
const COMPRESSING_FILE: &str = "compressing.batch";
/// First growth step of an active segment file; doubles up to [`ALLOC_STEP_MAX`].
const ALLOC_STEP_MIN: u64 = 64 * 1024;
const ALLOC_STEP_MAX: u64 = 64 * 1024 * 1024;
/// The most the pager keeps zeroed and faulted in ahead of the writer, the
/// least it is asked to, and how long a writer may take to write that
/// least (see `Active::prefault_ahead`). 8 MiB rather than 4 since the
/// pager writes zeros: `compare -- --only=2`, three alternating pairs,
/// 26.2–27.5 against 21.9–24.9 M records/s (single appends alike).
const PREFAULT_AHEAD: u64 = 8 * 1024 * 1024;
const PREFAULT_MIN: u64 = 256 * 1024;
const PREFAULT_PACE: Duration = Duration::from_millis(50);
/// How far past its position the writer claims the file from the pager's
/// zeroing at a time (see [`Active::make_room`]).
const WRITE_RESERVE: u64 = 256 * 1024;
/// Durable appends keep the file's blocks *written* (zeros) this far ahead
/// of the writer, topped up when fewer than [`HARDEN_LOW`] bytes are left,
/// and only while an fsync covers less than [`HARDEN_MAX_RUN`] of new data
/// (see `Active::harden_ahead`).
const HARDEN_AHEAD: u64 = 1024 * 1024;
const HARDEN_LOW: u64 = 256 * 1024;
const HARDEN_MAX_RUN: u64 = 64 * 1024;
/// An open batch idle this long is sealed by the background thread, so the
/// OS writes back valid batches even if nobody syncs.
pub(crate) const OPEN_BATCH_LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// A segment rolls before offsets relative to its base (4 bytes in the
/// index, like Kafka) could overflow.
const REL_OFFSET_MAX: u64 = i32::MAX as u64 / 2;

/// Record timestamps' clock, read for every record appended without one.
pub(crate) use crate::clock::now_ms;

/// Per-partition settings taken from the topic config.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub segment_bytes: u64,
    /// Compacted topic: offsets may have gaps (removed records).
    pub compacted: bool,
    pub retention_bytes: Option<u64>,
    pub retention_ms: Option<u64>,
    /// Codec batches are compressed with when sealed.
    pub compression: Compression,
}

/// How a compaction pass decides what to do.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CompactSettings {
    pub now_ms: i64,
    /// Compact even below the dirty ratio (`compact_now`).
    pub force: bool,
    pub min_dirty_ratio: f64,
    pub min_lag_ms: u64,
    pub delete_retention_ms: u64,
}

/// What a compaction pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CompactionReport {
    pub segments_in: u64,
    pub segments_out: u64,
    pub records_in: u64,
    pub records_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Where recovery must start checking: everything before `position` of
/// segment `segment` (and all older segments) was fsynced and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct RecoveryPoint {
    pub segment: u64,
    pub position: u64,
}

/// What a clean close records so reopening needs no scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CleanState {
    pub next_offset: u64,
    pub active_len: u64,
    pub max_timestamp: i64,
    pub offset_of_max_timestamp: u64,
}

/// Which batches to replay for producer state when there is no snapshot.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ProducerWalk {
    /// None: no producer was known when the log closed cleanly.
    Nothing,
    /// Batches from this offset on.
    FromOffset(u64),
    /// Batches from this recovery point on: no producer was known when the
    /// checkpoint that recorded it was taken.
    FromPoint(RecoveryPoint),
}

/// How to open an existing partition.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct OpenHints {
    pub recovery: RecoveryPoint,
    pub clean: Option<CleanState>,
    /// The directory was last written during this kernel boot.
    pub same_boot: bool,
    /// Offsets below this were compacted.
    pub clean_offset: u64,
}

struct OpenBatch {
    start: u64,
    base_offset: u64,
    base_timestamp: i64,
    max_timestamp: i64,
    count: u32,
    opened: Instant,
    /// The idempotent producer whose records the batch holds, if any: a
    /// batch holds records of one producer (or of none), with consecutive
    /// sequences.
    producer: Option<ProducerBatch>,
}

/// Where a record goes in the open batch (see `State::open_fit`).
struct OpenFit {
    ts_delta: i64,
    off_delta: i32,
    /// `RecordParts::body_len` for these deltas.
    body: usize,
    /// Encoded bytes, with the length prefix.
    len: u64,
}

impl OpenBatch {
    /// Whether a record with producer fields `p` (its own sequence) may
    /// join this batch.
    fn takes(&self, p: Option<ProducerBatch>) -> bool {
        match (self.producer, p) {
            (None, None) => true,
            (Some(o), Some(p)) => {
                o.producer_id == p.producer_id
                    && o.epoch == p.epoch
                    && o.attributes == p.attributes
                    && p.attributes & format::CONTROL == 0
                    && producers::last_sequence(o.base_sequence, self.count + 1) == p.base_sequence
            }
            _ => false,
        }
    }
}

struct Active {
    seg: Arc<Segment>,
    /// The file is opened only for the rare calls that need a descriptor
    /// (grow, truncate, fsync): a log of thousands of partitions holds
    /// maps, not thousands of open files.
    map: Arc<SegmentMap>,
    capacity: u64,
    allocated: u64,
    write_pos: u64,
    sealed_end: u64,
    /// Bytes below this have been handed to the pager to zero and fault in.
    prefaulted: u64,
    /// Bytes below this count toward no prefault window: up to here the
    /// writer wrote with `pwrite` (see [`append_alone`](PartitionLog::append_alone)).
    pwritten_to: u64,
    /// Where and when the writer's current *run* began: the stretch of
    /// writes that sizes the prefault window (see
    /// [`prefault_ahead`](Active::prefault_ahead)). An fsync, a new
    /// segment, or a run older than [`PREFAULT_PACE`] starts a new one.
    run_start: u64,
    run_began: Instant,
    /// Bytes below this are known to be written blocks on disk (data, or
    /// the zeros of [`harden_ahead`](Active::harden_ahead)).
    hardened: u64,
    /// The writer may write below this: the pager's zeros stay out of it
    /// (see [`make_room`](Active::make_room)). At most `allocated` while
    /// the partition is open.
    writable: u64,
    /// Shared with the pager's zeroing jobs (see `pager::Fence`).
    fence: Arc<Fence>,
    open: Option<OpenBatch>,
    ix: IndexBuilder,
}

impl Drop for Active {
    /// Whatever ends the segment's time as the active one (a roll, a close,
    /// a replica's cut, dropping the partition), no zeros land in its file
    /// after it. `roll` and `close` close the fence themselves, before they
    /// cut the file.
    fn drop(&mut self) {
        self.fence.close();
    }
}

struct State {
    closed: Vec<Arc<Segment>>,
    active: Active,
    next_offset: u64,
    /// Files written but not yet fsynced (rolled segments and their indexes).
    unsynced: Vec<Arc<DataFile>>,
    dir_dirty: bool,
    failed: Option<(PathBuf, String)>,
    shut: bool,
    /// The topic was deleted: nothing is readable any more.
    deleted: bool,
    /// A compaction pass is rewriting the closed segments from this base
    /// offset on: retention leaves them alone until it ends (the swap
    /// needs its group in the list).
    cleaning_from: Option<u64>,
    /// Records were appended (or recovery rewrote the tail) since the
    /// partition was created or opened clean: close has work to do.
    changed: bool,
    /// Idempotent producers' sequences (see `producers.rs`).
    producers: ProducerStates,
    /// Codec sealed batches are compressed with (see `compress_sealed`).
    compression: Compression,
    /// Written into the `partitionLeaderEpoch` field of new batches
    /// (`-1` outside a cluster).
    leader_epoch: i32,
    /// A replica's leader-epoch cache: `(epoch, first offset)` for every
    /// epoch its batches carry, in order (empty outside a cluster).
    epochs: Vec<(i32, u64)>,
    /// Records appended since the partition was opened (metrics; counted
    /// under the lock the append holds anyway).
    records_in: u64,
    /// Bytes those appends encoded into the log, batch headers included.
    bytes_in: u64,
}

/// What a read does next, decided under the lock.
enum ReadPlan {
    Closed {
        seg: Arc<Segment>,
        next_base: u64,
    },
    Active {
        seg: Arc<Segment>,
        map: Arc<SegmentMap>,
        start_pos: u64,
        sealed_end: u64,
        /// First offset not in a sealed batch.
        limit_offset: u64,
        open: Option<OpenSnapshot>,
    },
}

/// Bytes of a segment map a read decodes.
struct Region {
    start: u64,
    end: u64,
    /// The last offset of the first batch, when an index entry says so.
    expect_last: Option<u64>,
    /// Offsets at or past this cannot be in the region.
    limit_offset: u64,
}

struct OpenSnapshot {
    start: u64,
    end: u64,
    base_offset: u64,
    base_timestamp: i64,
    /// A compressed topic's open batch records, copied under the lock: the
    /// batch is rewritten in place when it is sealed.
    copy: Option<Arc<SegmentMap>>,
}

/// One partition's log.
pub(crate) struct PartitionLog {
    pub topic: Arc<str>,
    pub partition: u32,
    dir: PathBuf,
    limits: Limits,
    state: Mutex<State>,
    /// Offsets below this are on stable storage.
    durable_offset: AtomicU64,
    sync_lock: Mutex<RecoveryPoint>,
    /// The active segment's file, kept open between the fsyncs of
    /// [`sync_to`](Self::sync_to) (see [`active_file`](Self::active_file));
    /// used under `sync_lock` only.
    sync_file: Mutex<Option<(Arc<Segment>, Arc<DataFile>)>>,
    /// Group commit: the rounds of fsyncs through [`sync_to`](Self::sync_to).
    group_commit: GroupCommit,
    /// Offsets below this were compacted (the clean section).
    clean_offset: AtomicU64,
    /// One compaction at a time.
    cleaner_lock: Mutex<()>,
    /// Set by the topic's deletion before it waits for `cleaner_lock`: a
    /// compaction in progress stops at its next batch (or before its
    /// commit point) instead of finishing work that is about to be
    /// deleted, as Kafka's log cleaner aborts the cleaning of a deleted
    /// partition. Never cleared: a deleted partition's log is not reused.
    abort_cleaning: AtomicBool,
    /// Held while segment files are removed by name (retention) and while
    /// the topic's deletion removes the directory: after a deletion, those
    /// names may be a new topic's of the same name.
    files_lock: Mutex<()>,
    /// Wakers of consumers that read this partition (appends skip the
    /// notification while `watcher_count` is 0).
    watchers: Mutex<Vec<std::sync::Weak<Notify>>>,
    watcher_count: std::sync::atomic::AtomicUsize,
    /// Readers see offsets below this only: a replica's high watermark in
    /// a cluster (see `replica.rs`), `u64::MAX` for a plain log.
    visible_end: AtomicU64,
    /// Metrics counters, each group on its own cache line.
    reads: ReadCounters,
    syncs: SyncCounters,
    append_latency: LatencyCounters,
}

impl std::fmt::Debug for PartitionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PartitionLog({}-{} in {})",
            self.topic,
            self.partition,
            self.dir.display()
        )
    }
}

/// A wake-up signal a reader waits on; appends to watched partitions (and
/// group changes) ring it.
///
/// A waiter first spins briefly on the generation (a sleeping thread takes
/// tens of microseconds to wake on a VM, longer than most waits for the
/// next record), then sleeps on the condition variable. A notifier bumps the
/// generation, then signals only if someone sleeps; the waiter registers in
/// `sleepers` before its last check of the generation, so with both sides
/// `SeqCst` one of them always sees the other and no wake-up is lost.
///
/// An async consumer's task registers a `Waker` instead of sleeping
/// (`register_waker`), with the same argument: it sets `has_waker` before
/// its last check of the generation, a notifier bumps the generation before
/// it reads `has_waker`.
#[derive(Debug, Default)]
pub(crate) struct Notify {
    generation: AtomicU64,
    sleepers: std::sync::atomic::AtomicUsize,
    lock: Mutex<()>,
    cv: Condvar,
    #[cfg(feature = "tokio")]
    waker: Mutex<Option<std::task::Waker>>,
    #[cfg(feature = "tokio")]
    has_waker: std::sync::atomic::AtomicBool,
}

/// How long a waiter spins before it sleeps.
const NOTIFY_SPIN: std::time::Duration = std::time::Duration::from_micros(50);

impl Notify {
    /// Current generation; pass it to [`wait`](Self::wait).
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    pub(crate) fn notify(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = self.lock.lock();
            self.cv.notify_all();
        }
        #[cfg(feature = "tokio")]
        if self.has_waker.load(Ordering::SeqCst) {
            let mut slot = self.waker.lock();
            self.has_waker.store(false, Ordering::SeqCst);
            let waker = slot.take();
            drop(slot);
            if let Some(w) = waker {
                w.wake();
            }
        }
    }

    /// Wakes `waker` at the next [`notify`](Self::notify) (once). The
    /// caller then checks the generation it saw before its last read: if
    /// it moved, the wake-up may already have happened.
    #[cfg(feature = "tokio")]
    pub(crate) fn register_waker(&self, waker: &std::task::Waker) {
        let mut slot = self.waker.lock();
        match &*slot {
            Some(w) if w.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
        self.has_waker.store(true, Ordering::SeqCst);
    }

    /// Returns once the generation moves past `seen` or `deadline` passes.
    pub(crate) fn wait(&self, seen: u64, deadline: Instant) {
        let spin_until = (Instant::now() + NOTIFY_SPIN).min(deadline);
        'spin: loop {
            for _ in 0..64 {
                if self.generation() != seen {
                    return;
                }
                std::hint::spin_loop();
            }
            if Instant::now() >= spin_until {
                break 'spin;
            }
        }
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        let mut guard = self.lock.lock();
        while self.generation() == seen {
            if self.cv.wait_until(&mut guard, deadline).timed_out() {
                break;
            }
        }
        drop(guard);
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Name of a partition directory: `<topic>-<partition>`.
pub(crate) fn dir_name(topic: &str, partition: u32) -> String {
    format!("{topic}-{partition}")
}

impl PartitionLog {
    /// Creates a new, empty partition directory with segment 0.
    pub(crate) fn create(
        root: &Path,
        topic: Arc<str>,
        partition: u32,
        limits: Limits,
    ) -> Result<Self> {
        let dir = root.join(dir_name(&topic, partition));
        // The caller fsyncs `root` once for all the partitions it creates
        // (creating a topic ends with the atomic replace of topics.json,
        // which fsyncs the directory).
        io::create_dir(&dir)?;
        let active = Active::create(&dir, 0, limits)?;
        let log = Self::assemble(
            topic,
            partition,
            dir,
            limits,
            Vec::new(),
            active,
            0,
            RecoveryPoint::default(),
        );
        // The segment files' directory entries become durable with the first
        // sync of the partition (before any append is acknowledged as
        // durable); a partition whose files a power loss took reopens empty.
        log.state.lock().dir_dirty = true;
        Ok(log)
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        topic: Arc<str>,
        partition: u32,
        dir: PathBuf,
        limits: Limits,
        closed: Vec<Arc<Segment>>,
        active: Active,
        next_offset: u64,
        recovery: RecoveryPoint,
    ) -> Self {
        PartitionLog {
            topic,
            partition,
            dir,
            limits,
            state: Mutex::new(State {
                closed,
                active,
                next_offset,
                unsynced: Vec::new(),
                dir_dirty: false,
                failed: None,
                shut: false,
                deleted: false,
                cleaning_from: None,
                changed: false,
                producers: ProducerStates::default(),
                compression: limits.compression,
                leader_epoch: NO_PARTITION_LEADER_EPOCH,
                epochs: Vec::new(),
                records_in: 0,
                bytes_in: 0,
            }),
            durable_offset: AtomicU64::new(0),
            sync_lock: Mutex::new(recovery),
            sync_file: Mutex::new(None),
            group_commit: GroupCommit::default(),
            clean_offset: AtomicU64::new(0),
            cleaner_lock: Mutex::new(()),
            abort_cleaning: AtomicBool::new(false),
            files_lock: Mutex::new(()),
            watchers: Mutex::new(Vec::new()),
            watcher_count: std::sync::atomic::AtomicUsize::new(0),
            visible_end: AtomicU64::new(u64::MAX),
            reads: ReadCounters::default(),
            syncs: SyncCounters::default(),
            append_latency: LatencyCounters::default(),
        }
    }

    /// Compresses batches sealed from now on with `codec`. The open batch
    /// is sealed first, under the codec it was written for: readers may
    /// hold its bytes (uncompressed topics share them) or copies of them
    /// (compressed topics), and each must stay right.
    pub(crate) fn set_compression(&self, codec: Compression) {
        let mut st = self.state.lock();
        st.seal_open();
        st.compression = codec;
    }

    /// Opens an existing partition directory, recovering it if needed;
    /// reports what recovery did (see [`RecoveryReport`]).
    pub(crate) fn open(
        root: &Path,
        topic: Arc<str>,
        partition: u32,
        limits: Limits,
        hints: OpenHints,
    ) -> Result<Self> {
        let started = Instant::now();
        let mut report = RecoveryReport::default();
        let log = Self::open_recovering(root, topic, partition, limits, hints, &mut report)?;
        report.emit(&log, hints, started.elapsed());
        Ok(log)
    }

    fn open_recovering(
        root: &Path,
        topic: Arc<str>,
        partition: u32,
        limits: Limits,
        hints: OpenHints,
        report: &mut RecoveryReport,
    ) -> Result<Self> {
        let dir = root.join(dir_name(&topic, partition));
        recover_swaps(&dir)?;
        let mut bases = Vec::new();
        let mut journal = false;
        for e in io::list_dir(&dir)? {
            if e.is_dir {
                continue;
            }
            journal |= e.name == COMPRESSING_FILE;
            if e.name.ends_with(io::TMP_SUFFIX) {
                io::remove_file(&dir.join(&e.name))?;
            } else if let Some(base) = parse_segment_name(&e.name, "log") {
                bases.push(base);
            }
        }
        bases.sort_unstable();
        // Index files whose log is gone (a crash during deletion) are removed.
        for e in io::list_dir(&dir)? {
            let base = parse_segment_name(&e.name, "index")
                .or_else(|| parse_segment_name(&e.name, "timeindex"));
            if let Some(b) = base {
                if bases.binary_search(&b).is_err() {
                    io::remove_file(&dir.join(&e.name))?;
                }
            }
        }
        if bases.is_empty() {
            // Every segment is gone: start over at the recovery point's segment.
            let active = Active::create(&dir, hints.recovery.segment, limits)?;
            io::sync_dir(&dir)?;
            let next = hints.recovery.segment;
            let log = Self::assemble(
                topic,
                partition,
                dir,
                limits,
                Vec::new(),
                active,
                next,
                hints.recovery,
            );
            log.durable_offset.store(next, Ordering::Release);
            return Ok(log);
        }
        if let Some(clean) = hints.clean {
            if journal {
                // A clean close finished every compression.
                io::remove_file(&dir.join(COMPRESSING_FILE))?;
            }
            if let Some(log) = Self::open_clean(
                &dir,
                &topic,
                partition,
                limits,
                &bases,
                clean,
                hints.recovery,
            )? {
                report.clean = true;
                return Ok(log);
            }
        }
        let mut closed = Vec::new();
        let mut i = 0;
        let rp = hints.recovery;
        // Trusted segments: fully fsynced before the recovery point.
        while i + 1 < bases.len() && bases[i + 1] <= rp.segment {
            let seg = Segment::new(&dir, bases[i], limits.compacted);
            let len = io::file_len(&seg.log_path)?.unwrap_or(0);
            seg.set_closed(len, None);
            closed.push(Arc::new(seg));
            i += 1;
        }
        // The rest is scanned; the last one becomes the active segment.
        // Scanned segments past the recovery point may still be only in
        // the page cache (a process killed in this boot): they are queued
        // for the first sync, which fsyncs them before it moves the
        // recovery point past them.
        let mut scanned_closed: Vec<PathBuf> = Vec::new();
        let mut next_offset = bases[i];
        loop {
            let base = bases[i];
            let is_last = i + 1 == bases.len();
            let trusted_end = if base == rp.segment { rp.position } else { 0 };
            let seg = Segment::new(&dir, base, limits.compacted);
            // In the boot that wrote them, a segment before the last one
            // cannot have a torn tail (a killed process loses nothing from
            // the page cache, and a roll seals the open batch first): a bad
            // batch there is damage, kept in place for reads to report
            // rather than cut off with everything after it.
            let mode = match (hints.same_boot, is_last) {
                (false, _) => TailMode::Truncate,
                (true, true) => TailMode::Reseal,
                (true, false) => TailMode::KeepDamage,
            };
            let mut rec = recover_segment(&seg, trusted_end, mode)?;
            if is_last && journal {
                recover_compressing(&dir, &seg, &mut rec)?;
            }
            report.scanned += 1;
            report.scanned_bytes += rec.end.saturating_sub(trusted_end);
            report.resealed |= rec.resealed;
            report.damaged |= rec.damaged;
            report.truncated |= rec.truncated;
            // The scan checked every batch from `trusted_end` to the end,
            // unless it stopped at damage: then reads check every batch.
            seg.set_verified_from(if rec.damaged { u64::MAX } else { trusted_end });
            if let Some(last) = rec.next_offset {
                next_offset = last;
            } else {
                next_offset = next_offset.max(base);
            }
            // A segment ending before the next one begins lost its unsynced
            // tail to a power cut that kept the next segment's directory
            // entry. Nothing after it was synced (a sync fsyncs rolled
            // segments first), so the log ends there too, gapless.
            let gap = !is_last
                && !limits.compacted
                && !rec.damaged
                && rec.next_offset.unwrap_or(base) < bases[i + 1];
            let truncated = rec.truncated || gap;
            report.gap |= gap;
            if is_last || truncated {
                report.dropped_segments = bases.len() - i - 1;
                // A bad batch before the active segment ends the log there:
                // later segments cannot follow a gap, so they go, durably
                // (before appends reuse their offsets).
                for &later in &bases[i + 1..] {
                    let s = Segment::new(&dir, later, limits.compacted);
                    s.delete_files()?;
                }
                if !is_last {
                    io::sync_dir(&dir)?;
                }
                let active = Active::resume(seg, rec.end, rec.ix, limits.segment_bytes)?;
                let log = Self::assemble(
                    topic,
                    partition,
                    dir,
                    limits,
                    closed,
                    active,
                    next_offset,
                    rp,
                );
                log.durable_offset.store(0, Ordering::Release);
                let mut st = log.state.lock();
                // Close must write the rebuilt indexes.
                st.changed = true;
                for path in &scanned_closed {
                    st.unsynced.push(Arc::new(DataFile::open(path, false)?));
                }
                // So must the first sync the directory: the process that
                // wrote it may have died before it did.
                st.dir_dirty = true;
                drop(st);
                return Ok(log);
            }
            let mut ix = rec.ix;
            ix.add_time_entry(base);
            io::write_atomic(&seg.index_path, &ix.encode_offsets())?;
            io::write_atomic(&seg.timeindex_path, &ix.encode_times())?;
            seg.set_closed(rec.end, Some(ix.max_timestamp));
            scanned_closed.push(seg.log_path.clone());
            closed.push(Arc::new(seg));
            i += 1;
        }
    }

    /// The fast path after a clean close: trust the checkpoint, read only
    /// index files. `None` if the files do not match what close recorded.
    fn open_clean(
        dir: &Path,
        topic: &Arc<str>,
        partition: u32,
        limits: Limits,
        bases: &[u64],
        clean: CleanState,
        rp: RecoveryPoint,
    ) -> Result<Option<Self>> {
        let active_base = *bases.last().expect("at least one segment");
        let seg = Segment::new(dir, active_base, limits.compacted);
        if io::file_len(&seg.log_path)? != Some(clean.active_len) {
            return Ok(None);
        }
        let offsets = io::read_optional(&seg.index_path)?.unwrap_or_default();
        let times = io::read_optional(&seg.timeindex_path)?.unwrap_or_default();
        let Some(mut ix) = IndexBuilder::from_active_files(&offsets, &times, clean.active_len)
        else {
            return Ok(None);
        };
        ix.max_timestamp = clean.max_timestamp;
        ix.offset_of_max_timestamp = clean.offset_of_max_timestamp;
        let mut closed = Vec::with_capacity(bases.len() - 1);
        for &b in &bases[..bases.len() - 1] {
            let s = Segment::new(dir, b, limits.compacted);
            let len = io::file_len(&s.log_path)?.unwrap_or(0);
            s.set_closed(len, None);
            closed.push(Arc::new(s));
        }
        let active = Active::resume(seg, clean.active_len, ix, limits.segment_bytes)?;
        let log = Self::assemble(
            topic.clone(),
            partition,
            dir.to_owned(),
            limits,
            closed,
            active,
            clean.next_offset,
            rp,
        );
        log.durable_offset
            .store(clean.next_offset, Ordering::Release);
        Ok(Some(log))
    }

    fn closed_error(&self) -> Error {
        Error::Closed {
            what: format!(
                "log is closed (partition {}-{})",
                self.topic, self.partition
            ),
        }
    }

    /// What calls on a partition of a deleted topic fail with.
    fn unknown_topic(&self) -> Error {
        Error::UnknownTopic {
            topic: self.topic.to_string(),
        }
    }

    fn failed_error(&self, path: &Path, msg: &str) -> Error {
        Error::io(
            "append to a partition made read-only by an earlier fsync failure",
            path,
            std::io::Error::other(format!("{}-{}: {msg}", self.topic, self.partition)),
        )
    }

    fn check_writable(&self, st: &State) -> Result<()> {
        if st.deleted {
            // Its topic was deleted (shut too, but the log is not closed).
            return Err(self.unknown_topic());
        }
        if st.shut {
            return Err(self.closed_error());
        }
        if let Some((path, msg)) = &st.failed {
            return Err(self.failed_error(path, msg));
        }
        Ok(())
    }

    /// Appends records in order, calling `on_append(offset, timestamp)` for
    /// each. Returns the offset after the last one. Records must already be
    /// validated (size, timestamp).
    ///
    /// On an error, a prefix of the records may have been appended, and
    /// `on_append` may have been called for records that were not (a
    /// staged call hands out offsets as it encodes, before it writes): the
    /// log's end offset says which were taken.
    pub(crate) fn append<'r, I>(
        &self,
        records: I,
        mut on_append: impl FnMut(u64, i64),
    ) -> Result<u64>
    where
        I: IntoIterator<Item = (RecordParts<'r>, i64)>,
    {
        let mut st = self.state.lock();
        self.check_writable(&st)?;
        let segments_before = st.closed.len();
        let offset_before = st.next_offset;
        st.changed = true;
        let mut records = records.into_iter();
        let result = (|| {
            // Runs of records go straight into the open batch; a record that
            // does not fit (or finds no open batch) takes the general path,
            // which seals, grows or rolls, and opens the next batch.
            while let Some((parts, ts)) = st.append_run(&mut records, &mut on_append) {
                st.commit_open_count();
                if st.stages(&parts, ts, records.size_hint().0) {
                    let dir = &self.dir;
                    st.append_staged(dir, self.limits, (parts, ts), &mut records, &mut on_append)?;
                    break;
                }
                let offset = st.append_one(&self.dir, self.limits, parts, ts, None)?;
                on_append(offset, ts);
            }
            Ok(st.next_offset)
        })();
        // Whatever happened, every record written so far is committed to the
        // open batch before the lock is released.
        st.commit_open_count();
        st.records_in += st.next_offset - offset_before;
        let rolled = st.closed.len() > segments_before;
        drop(st);
        if result.is_ok() {
            self.notify_append();
            if rolled && self.has_retention() {
                self.apply_retention(now_ms())?;
            }
        }
        result
    }

    /// Appends the records of one idempotent producer's send, whose first
    /// record carries sequence `producer.base_sequence`, calling
    /// `on_append(offset, timestamp)` for each. A retry of an append
    /// already written writes nothing and returns `Some(first offset)` of
    /// the original; otherwise `None`. Records must already be validated.
    pub(crate) fn append_idempotent<'r>(
        &self,
        producer: ProducerBatch,
        records: &[(RecordParts<'r>, i64)],
        mut on_append: impl FnMut(u64, i64),
    ) -> Result<Option<u64>> {
        let count = records.len() as u32;
        if count == 0 {
            return Ok(None);
        }
        let mut st = self.state.lock();
        self.check_writable(&st)?;
        let where_ = format!("{}-{}", self.topic, self.partition);
        if let Check::Duplicate { offset } = st.producers.check(producer, count, &where_)? {
            return Ok(Some(offset));
        }
        let segments_before = st.closed.len();
        st.changed = true;
        let first_offset = st.next_offset;
        let mut written = 0u32;
        let result = (|| {
            for &(parts, ts) in records {
                let own = ProducerBatch {
                    base_sequence: producers::last_sequence(producer.base_sequence, written + 1),
                    ..producer
                };
                let offset = st.append_one(&self.dir, self.limits, parts, ts, Some(own))?;
                written += 1;
                on_append(offset, ts);
            }
            Ok(())
        })();
        st.commit_open_count();
        if written > 0 {
            // Even a partly written send is remembered: the sequences it
            // used are in the log.
            let last = producers::last_sequence(producer.base_sequence, written);
            st.producers.record(producer, last, first_offset, now_ms());
            st.records_in += u64::from(written);
        }
        let rolled = st.closed.len() > segments_before;
        drop(st);
        result?;
        self.notify_append();
        if rolled && self.has_retention() {
            self.apply_retention(now_ms())?;
        }
        Ok(None)
    }

    /// Ends `producer_id`'s open transaction on this partition with a
    /// commit or abort marker: a control batch of one record, in a batch of
    /// its own. Returns the marker's offset, or `None` when the producer
    /// has no open transaction here (a marker already written: completing
    /// a transaction again after a crash writes nothing twice).
    pub(crate) fn append_marker(
        &self,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    ) -> Result<Option<u64>> {
        let mut st = self.state.lock();
        self.check_writable(&st)?;
        let where_ = format!("{}-{}", self.topic, self.partition);
        st.producers.check_marker(producer_id, epoch, &where_)?;
        if !st.producers.in_transaction(producer_id) {
            return Ok(None);
        }
        st.changed = true;
        let (key, value) = format::marker_record(commit);
        let parts = RecordParts::new(Some(&key), Some(&value), &[]);
        let marker = ProducerBatch {
            producer_id,
            epoch,
            base_sequence: -1,
            attributes: format::TRANSACTIONAL | format::CONTROL,
        };
        let now = now_ms();
        st.seal_open();
        let result = st.append_one(&self.dir, self.limits, parts, now, Some(marker));
        st.commit_open_count();
        st.seal_open();
        let offset = result?;
        st.producers
            .end_transaction(producer_id, epoch, offset, commit, now);
        drop(st);
        self.notify_append();
        Ok(Some(offset))
    }

    /// The producer state to keep in a recovery checkpoint, or `None` if
    /// no producer is known (idle ones expire here).
    pub(crate) fn producer_snapshot(&self) -> Option<ProducerSnapshot> {
        let mut st = self.state.lock();
        st.producers.expire(now_ms());
        let start = st.start_offset();
        st.producers.trim_aborted(start);
        (!st.producers.is_empty()).then(|| st.producers.snapshot(st.next_offset))
    }

    /// Rebuilds the producer state after opening: from `snapshot` and the
    /// batches after it; without a snapshot, from the batches `walk` names
    /// (see `producers.rs`); from every batch if the snapshot describes
    /// more than the log holds.
    pub(crate) fn restore_producers(
        &self,
        snapshot: Option<&ProducerSnapshot>,
        walk: ProducerWalk,
    ) -> Result<()> {
        let mut st = self.state.lock();
        let (mut states, walk) = match snapshot {
            Some(s) if s.offset <= st.next_offset => (
                ProducerStates::from_snapshot(s),
                ProducerWalk::FromOffset(s.offset),
            ),
            // The snapshot describes batches the log no longer holds.
            Some(_) => (ProducerStates::default(), ProducerWalk::FromOffset(0)),
            None => (ProducerStates::default(), walk),
        };
        let (from_offset, from_point) = match walk {
            ProducerWalk::Nothing => (st.next_offset, None),
            ProducerWalk::FromOffset(o) => (o, None),
            ProducerWalk::FromPoint(rp) => (0, Some(rp)),
        };
        if from_offset < st.next_offset {
            st.seal_open();
            let active = (Arc::clone(&st.active.seg), st.active.sealed_end);
            let segments: Vec<Arc<Segment>> = st.closed.clone();
            let n = segments.len();
            for (i, seg) in segments.iter().chain([&active.0]).enumerate() {
                let next_base = segments
                    .get(i + 1)
                    .map_or(active.0.base_offset, |s| s.base_offset);
                // A recovery point's segment is walked from its start: its
                // byte position may predate a compaction that rewrote the
                // segment (or merged it into an older one) since the
                // checkpoint, and then it is no batch boundary.
                let start = match from_point {
                    Some(rp) if i < n && next_base <= rp.segment => continue,
                    Some(rp) if i == n && seg.base_offset < rp.segment => continue,
                    Some(_) => 0,
                    None if i < n && next_base <= from_offset => continue,
                    None => 0,
                };
                let (map, len) = if i < n {
                    (seg.closed_map()?, seg.closed_len())
                } else {
                    (Some(Arc::clone(&st.active.map)), active.1)
                };
                let Some(map) = map else { continue };
                // SAFETY: the first `len` bytes of a segment's map are
                // written, sealed batches that never change while we hold
                // the state lock (closed segments never change at all).
                let data = unsafe { std::slice::from_raw_parts(map.ptr(), len as usize) };
                let mut pos = start as usize;
                while pos < data.len() {
                    let h = BatchHeader::parse(&data[pos..])
                        .map_err(|e| Error::corrupt(&seg.log_path, pos as u64, e.0))?;
                    if h.last_offset() >= from_offset {
                        let batch = data.get(pos..pos + h.total_len()).unwrap_or(&[]);
                        states.replay(&h, batch);
                    }
                    pos += h.total_len();
                }
            }
        }
        st.producers = states;
        Ok(())
    }

    fn has_retention(&self) -> bool {
        self.limits.retention_bytes.is_some() || self.limits.retention_ms.is_some()
    }

    /// Wakes consumers watching this partition. One atomic load when none.
    /// A consumer registers before it reads, and reads before it sleeps on
    /// a generation taken before the read, so no append is missed.
    fn notify_append(&self) {
        if self.watcher_count.load(Ordering::SeqCst) > 0 {
            for w in self.watchers.lock().iter() {
                if let Some(n) = w.upgrade() {
                    n.notify();
                }
            }
        }
    }

    /// Rings `notify` on every append until [`unwatch`](Self::unwatch).
    pub(crate) fn watch(&self, notify: &Arc<Notify>) {
        let mut w = self.watchers.lock();
        w.retain(|x| x.strong_count() > 0);
        w.push(Arc::downgrade(notify));
        self.watcher_count.store(w.len(), Ordering::SeqCst);
    }

    pub(crate) fn unwatch(&self, notify: &Arc<Notify>) {
        let mut w = self.watchers.lock();
        w.retain(|x| x.strong_count() > 0 && !std::ptr::eq(x.as_ptr(), Arc::as_ptr(notify)));
        self.watcher_count.store(w.len(), Ordering::SeqCst);
    }

    /// Closes the active segment now (if it holds data) so that what follows
    /// starts a new segment; returns the new segment's base offset.
    pub(crate) fn roll_now(&self) -> Result<u64> {
        let mut st = self.state.lock();
        self.check_writable(&st)?;
        if st.active.write_pos > 0 {
            st.roll(&self.dir, self.limits)?;
        }
        Ok(st.active.seg.base_offset)
    }

    /// Deletes the files of segments already taken out of the segment list
    /// (readers holding their maps keep reading them).
    fn remove_segments(&self, doomed: &[Arc<Segment>]) -> Result<()> {
        for seg in doomed {
            seg.mark_deleted();
        }
        let _files = self.files_lock.lock();
        if self.state.lock().deleted {
            // The directory went with the topic; its names may be a new
            // topic's now.
            return Ok(());
        }
        for seg in doomed {
            seg.delete_files()?;
        }
        if !doomed.is_empty() {
            self.state.lock().dir_dirty = true;
        }
        Ok(())
    }

    /// Deletes every closed segment below `base_offset` (which must be a
    /// segment's base): the log then starts there.
    pub(crate) fn delete_before(&self, base_offset: u64) -> Result<()> {
        let doomed: Vec<Arc<Segment>> = {
            let mut st = self.state.lock();
            let n = st.closed.partition_point(|s| s.base_offset < base_offset);
            st.closed.drain(..n).collect()
        };
        self.remove_segments(&doomed)
    }

    /// Offsets below this were compacted.
    pub(crate) fn clean_offset(&self) -> u64 {
        self.clean_offset.load(Ordering::Acquire)
    }

    pub(crate) fn set_clean_offset(&self, offset: u64) {
        self.clean_offset.store(offset, Ordering::Release);
    }

    /// One compaction pass over the closed segments (see `cleaner` for what
    /// is kept and the crash-safe swap).
    pub(crate) fn compact(&self, settings: CompactSettings) -> Result<CompactionReport> {
        let started = Instant::now();
        let mut keys = 0;
        let report = self.compact_pass(settings, &mut keys)?;
        if report.segments_in > 0 {
            tracing::info!(
                topic = %self.topic,
                partition = self.partition,
                segments_in = report.segments_in,
                segments_out = report.segments_out,
                records_in = report.records_in,
                records_out = report.records_out,
                bytes_in = report.bytes_in,
                bytes_out = report.bytes_out,
                keys,
                took_ms = started.elapsed().as_millis() as u64,
                "compaction pass"
            );
        }
        Ok(report)
    }

    fn compact_pass(
        &self,
        settings: CompactSettings,
        keys: &mut usize,
    ) -> Result<CompactionReport> {
        let _one_at_a_time = self.cleaner_lock.lock();
        // A record is dropped for a later one of its key in any closed
        // segment; that one must be durable first, or a power cut between
        // two swaps could take both.
        self.flush_rolled()?;
        let mut report = CompactionReport::default();
        let (candidates, active_base) = {
            let mut st = self.state.lock();
            self.check_writable(&st)?;
            st.cleaning_from = st.closed.first().map(|s| s.base_offset);
            (st.closed.clone(), st.active.seg.base_offset)
        };
        /// Lets retention in again however the pass ends.
        struct Cleaning<'a>(&'a Mutex<State>);
        impl Drop for Cleaning<'_> {
            fn drop(&mut self) {
                self.0.lock().cleaning_from = None;
            }
        }
        let _cleaning = Cleaning(&self.state);
        // Segments younger than the compaction lag stay dirty, and so does
        // everything after them.
        let lag_cutoff = settings
            .now_ms
            .saturating_sub(settings.min_lag_ms.min(i64::MAX as u64) as i64);
        let mut eligible = Vec::new();
        for seg in &candidates {
            if settings.min_lag_ms > 0 && seg.closed_max_timestamp()? > lag_cutoff {
                break;
            }
            eligible.push(Arc::clone(seg));
        }
        if eligible.is_empty() {
            return Ok(report);
        }
        let clean_offset = self.clean_offset();
        let ends: Vec<u64> = eligible
            .iter()
            .skip(1)
            .map(|s| s.base_offset)
            .chain(std::iter::once(
                candidates
                    .get(eligible.len())
                    .map_or(active_base, |s| s.base_offset),
            ))
            .collect();
        let total: u64 = eligible.iter().map(|s| s.closed_len()).sum();
        let dirty: u64 = eligible
            .iter()
            .zip(&ends)
            .filter(|(_, &end)| end > clean_offset)
            .map(|(s, _)| s.closed_len())
            .sum();
        if total == 0
            || (!settings.force && (dirty as f64) < settings.min_dirty_ratio * total as f64)
        {
            return Ok(report);
        }
        let maps: Vec<Option<Arc<SegmentMap>>> = eligible
            .iter()
            .map(|s| s.closed_map())
            .collect::<Result<_>>()?;
        let bytes = |i: usize| -> &[u8] {
            match &maps[i] {
                // SAFETY: a closed segment's map covers at least `closed_len`
                // bytes (checked when mapped) that never change.
                Some(m) => unsafe {
                    std::slice::from_raw_parts(m.ptr(), eligible[i].closed_len() as usize)
                },
                None => &[],
            }
        };
        let sources: Vec<(&Segment, &[u8])> = (0..eligible.len())
            .map(|i| (&*eligible[i], bytes(i)))
            .collect();
        let go_on = || self.cleaning_goes_on();
        let latest = cleaner::latest_offsets(&sources, &go_on)?;
        *keys = latest.len();
        // Group consecutive segments while their sources fit one segment.
        let mut start = 0;
        while start < eligible.len() {
            let mut end = start + 1;
            let mut size = eligible[start].closed_len();
            while end < eligible.len()
                && size + eligible[end].closed_len() <= self.limits.segment_bytes
            {
                size += eligible[end].closed_len();
                end += 1;
            }
            let group_end = ends[end - 1];
            let drop_tombstones = |i: usize| {
                let seg = &eligible[start + i];
                ends[start + i] <= clean_offset
                    && io::modified_ms(&seg.log_path).is_some_and(|m| {
                        // Clamped: u64::MAX ms (Duration::MAX) must not wrap to -1.
                        let keep = settings.delete_retention_ms.min(i64::MAX as u64) as i64;
                        m.saturating_add(keep) < settings.now_ms
                    })
            };
            self.swap_in(
                &eligible[start..end],
                &sources[start..end],
                &latest,
                group_end,
                drop_tombstones,
                &mut report,
            )?;
            start = end;
        }
        self.set_clean_offset(ends[eligible.len() - 1]);
        Ok(report)
    }

    /// `Err(UnknownTopic)` once the topic's deletion asked a compaction in
    /// progress to stop (see `abort_cleaning`): asked before each batch of
    /// the key scan and of the rewrite, and right before the commit point.
    fn cleaning_goes_on(&self) -> Result<()> {
        if self.abort_cleaning.load(Ordering::Acquire) {
            return Err(self.unknown_topic());
        }
        Ok(())
    }

    /// Compacts one group of segments and swaps the result in.
    fn swap_in(
        &self,
        group: &[Arc<Segment>],
        sources: &[(&Segment, &[u8])],
        latest: &[u64],
        group_end: u64,
        drop_tombstones: impl Fn(usize) -> bool,
        report: &mut CompactionReport,
    ) -> Result<()> {
        let base = group[0].base_offset;
        let mut stats = cleaner::RewriteStats::default();
        // 1. The compacted files, fsynced.
        let cleaned = |path: &Path| {
            let mut s = path.as_os_str().to_owned();
            s.push(cleaner::CLEANED_SUFFIX);
            PathBuf::from(s)
        };
        let first = &group[0];
        let targets = [&first.log_path, &first.index_path, &first.timeindex_path];
        let staged = targets.map(|p| cleaned(p));
        for path in &staged {
            io::remove_file(path)?;
        }
        let log_file = DataFile::create_new(&staged[0])?;
        let (len, ix) = cleaner::rewrite(
            base,
            sources,
            latest,
            drop_tombstones,
            &log_file,
            &mut stats,
            &|| self.cleaning_goes_on(),
        )?;
        log_file.sync_data()?;
        for (path, bytes) in staged[1..]
            .iter()
            .zip([ix.encode_offsets(), ix.encode_times()])
        {
            let f = DataFile::create_new(path)?;
            f.write_all_at(&bytes, 0)?;
            f.sync_data()?;
        }
        let new_seg = Arc::new(Segment::from_written_files(
            &self.dir,
            base,
            true,
            [&staged[0], &staged[1], &staged[2]],
            len,
            ix.max_timestamp,
        )?);
        crash_point(1)?;
        // The last point at which the topic's deletion can stop the pass
        // (its staged files go with the directory); past the commit point
        // the swap is finished whatever happens.
        self.cleaning_goes_on()?;
        // 2. Commit point.
        let manifest = self.dir.join(format!(
            "{}.{}",
            super::segment::file_name(base, "log"),
            cleaner::SWAP_EXT
        ));
        io::write_atomic(&manifest, format!("end={group_end}\n").as_bytes())?;
        crash_point(2)?;
        // 3. In memory: readers see the new segment or re-plan.
        {
            let mut st = self.state.lock();
            let i = st.closed.iter().position(|s| Arc::ptr_eq(s, first));
            if let Some(i) = i {
                st.closed.splice(i..i + group.len(), [Arc::clone(&new_seg)]);
            }
        }
        for seg in group {
            seg.mark_deleted();
        }
        crash_point(3)?;
        // 4 and 5.
        finish_swap(&self.dir, &manifest, base, group_end)?;
        report.segments_in += group.len() as u64;
        report.segments_out += 1;
        report.records_in += stats.records_in;
        report.records_out += stats.records_out;
        report.bytes_in += stats.bytes_in;
        report.bytes_out += stats.bytes_out;
        Ok(())
    }

    /// Offsets below this are known durable (a test's view of group
    /// commit's mark).
    #[cfg(test)]
    pub(crate) fn durable_end(&self) -> u64 {
        self.durable_offset.load(Ordering::Acquire)
    }

    /// First offset still stored.
    pub(crate) fn start_offset(&self) -> u64 {
        let st = self.state.lock();
        st.start_offset()
    }

    /// The end readers see: the offset the next record will get, or a
    /// cluster replica's high watermark if that is lower.
    pub(crate) fn end_offset(&self) -> u64 {
        let end = self.state.lock().next_offset;
        end.min(self.visible_end.load(Ordering::Acquire))
    }

    /// The offset the next record will get (a replica's log end offset,
    /// whatever readers may see).
    pub(crate) fn log_end_offset(&self) -> u64 {
        self.state.lock().next_offset
    }

    /// Makes every record appended before this call durable (group commit:
    /// concurrent callers share one fsync).
    pub(crate) fn sync(&self) -> Result<()> {
        let target = self.log_end_offset();
        self.sync_until(target, false)
    }

    /// Makes offsets below `target` durable: the fsync of a durable append
    /// (`SyncPolicy::Always`), which keeps the active segment's file open
    /// for the next one.
    pub(crate) fn sync_to(&self, target: u64) -> Result<()> {
        self.sync_until(target, true)
    }

    /// Makes offsets below `target` durable; with `keep`, the active
    /// segment's file stays open afterwards.
    fn sync_until(&self, target: u64, keep: bool) -> Result<()> {
        // Group commit (see `group_commit.rs`): one caller leads an fsync
        // round; the others wait for it to end and return if it covered
        // them, or lead the next round themselves.
        let mut first = true;
        loop {
            // The round before the check: a round that ends in between is
            // not waited for.
            let seen = self.group_commit.current();
            if self.durable_offset.load(Ordering::Acquire) >= target {
                return Ok(());
            }
            if let Some(mut rp) = self.sync_lock.try_lock() {
                if self.durable_offset.load(Ordering::Acquire) >= target {
                    return Ok(());
                }
                self.group_commit.gather();
                let started = Instant::now();
                let result = self.sync_locked(&mut rp, keep);
                // Ended before the sync lock is released, so the next
                // leader gathers a fresh round.
                self.group_commit.end(started);
                return result;
            }
            // Bounded: the lock may be held by something other than an
            // fsync here (a roll, a truncation), which ends no round. Only
            // the first wait polls (see `group_commit.rs`).
            self.group_commit
                .wait(seen, Duration::from_millis(1), first);
            first = false;
        }
    }

    /// The fsync of [`sync_to`](Self::sync_to), under `sync_lock`, once it
    /// found its target not yet durable.
    fn sync_locked(&self, rp: &mut RecoveryPoint, keep: bool) -> Result<()> {
        let (mut files, active, dir_dirty, end, point, harden) = {
            let mut st = self.state.lock();
            if st.deleted {
                // Nothing left to make durable, and the file names may be
                // a new topic's (see `delete_files`).
                return Ok(());
            }
            if let Some((path, msg)) = &st.failed {
                return Err(self.failed_error(path, msg));
            }
            let harden = if keep { st.active.harden_ahead() } else { None };
            // A new run, before the seal asks for a window sized by the
            // old one: that window's zeros would be this fsync's to write.
            st.active.restart_run();
            st.seal_open();
            let files = std::mem::take(&mut st.unsynced);
            let point = RecoveryPoint {
                segment: st.active.seg.base_offset,
                position: st.active.sealed_end,
            };
            (
                files,
                Arc::clone(&st.active.seg),
                std::mem::take(&mut st.dir_dirty),
                st.next_offset,
                point,
                harden,
            )
        };
        if let Some((map, start, end)) = harden {
            // Dirty zeros for this fsync to write; a failure (a kernel
            // without `MADV_POPULATE_WRITE`, a file cut meanwhile) leaves
            // them unwritten, as before.
            if let Err(e) = map.populate(start, end) {
                super::pager::populate_failed(&e);
            }
        }
        match self.active_file(active, keep) {
            Ok(Some(f)) => files.push(f),
            Ok(None) => {}
            Err(e) => {
                // Nothing was fsynced (no descriptor left, say): what this
                // round took stays to be synced, or the next round, finding
                // nothing rolled, would move the durable offset and the
                // recovery point past segments never fsynced.
                let mut st = self.state.lock();
                files.append(&mut st.unsynced);
                st.unsynced = files;
                st.dir_dirty |= dir_dirty;
                return Err(e);
            }
        }
        self.fsync_all(&files, dir_dirty)?;
        *rp = point;
        self.durable_offset.fetch_max(end, Ordering::AcqRel);
        Ok(())
    }

    /// The file of `seg`, the active segment when the caller (holding
    /// `sync_lock`) looked; `None` if it has rolled and been deleted by
    /// retention since: then its data is gone and there is nothing to sync.
    ///
    /// Opening it costs an `openat` and a `close`, 9 µs here: a tenth of a
    /// durable append. So the fsyncs of durable appends (`keep`) leave it
    /// open, one descriptor per partition written with
    /// `SyncPolicy::Always`; other syncs (the background flush of
    /// `SyncPolicy::Interval`, `Log::sync`, close) use it if it is there
    /// but do not keep one, so a log of thousands of partitions under those
    /// policies still holds maps, not open files. The kept file is
    /// remembered with its `Segment`, and the `Arc` held here keeps that
    /// address from being reused: a new active segment (a roll, a
    /// truncation that rewrote the file, a reopen) never matches it, so an
    /// fsync never goes to a replaced file.
    fn active_file(&self, seg: Arc<Segment>, keep: bool) -> Result<Option<Arc<DataFile>>> {
        let mut kept = self.sync_file.lock();
        if let Some((s, f)) = kept.as_ref() {
            if Arc::ptr_eq(s, &seg) {
                return Ok(Some(Arc::clone(f)));
            }
        }
        *kept = None;
        let file = match DataFile::open(&seg.log_path, false) {
            Ok(f) => Arc::new(f),
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        if keep {
            *kept = Some((seg, Arc::clone(&file)));
        }
        Ok(Some(file))
    }

    /// fsyncs files; on failure the partition turns read-only for good (an
    /// fsync error may have dropped dirty pages: retrying could report data
    /// durable that is not).
    fn fsync_all(&self, files: &[Arc<DataFile>], dir: bool) -> Result<()> {
        let started = Instant::now();
        let mut result = Ok(());
        for f in files {
            if let Err(e) = f.sync_data() {
                result = Err((f.path().to_owned(), e));
                break;
            }
        }
        if result.is_ok() && dir {
            if let Err(e) = io::sync_dir(&self.dir) {
                result = Err((self.dir.clone(), e));
            }
        }
        self.syncs.record(started.elapsed());
        result.or_else(|(path, e)| {
            let mut st = self.state.lock();
            if st.deleted {
                // The topic was deleted meanwhile (its directory is gone):
                // nothing is left to make durable, and nothing failed.
                return Ok(());
            }
            tracing::error!(
                topic = %self.topic,
                partition = self.partition,
                file = %path.display(),
                error = %e,
                "fsync failed: the partition is read-only from now on"
            );
            st.failed = Some((path, e.to_string()));
            Err(e)
        })
    }

    /// fsyncs segments that rolled since the last sync and moves the recovery
    /// point to the start of the active segment (background work).
    pub(crate) fn flush_rolled(&self) -> Result<()> {
        let mut rp = self.sync_lock.lock();
        let (files, dir, active_base) = {
            let mut st = self.state.lock();
            if st.unsynced.is_empty() {
                return Ok(());
            }
            (
                std::mem::take(&mut st.unsynced),
                std::mem::take(&mut st.dir_dirty),
                st.active.seg.base_offset,
            )
        };
        self.fsync_all(&files, dir)?;
        if rp.segment < active_base {
            *rp = RecoveryPoint {
                segment: active_base,
                position: 0,
            };
        }
        Ok(())
    }

    /// Seals the open batch (everything appended is then whole batches in the
    /// page cache).
    pub(crate) fn flush(&self) -> Result<()> {
        let mut st = self.state.lock();
        st.seal_open();
        Ok(())
    }

    /// Seals the open batch if it has been open longer than `linger`.
    pub(crate) fn seal_if_idle(&self, linger: std::time::Duration) {
        let mut st = self.state.lock();
        if st
            .active
            .open
            .as_ref()
            .is_some_and(|o| o.opened.elapsed() >= linger)
        {
            st.seal_open();
        }
    }

    pub(crate) fn recovery_point(&self) -> RecoveryPoint {
        *self.sync_lock.lock()
    }

    /// Clean shutdown: seal, write the active segment's indexes, trim the
    /// preallocated tail, fsync everything. Returns the state reopening needs.
    pub(crate) fn close(&self) -> Result<(RecoveryPoint, CleanState)> {
        let mut rp = self.sync_lock.lock();
        let mut st = self.state.lock();
        if st.shut {
            return Err(self.closed_error());
        }
        st.shut = true;
        st.seal_open();
        let unchanged = !st.changed && st.unsynced.is_empty() && !st.dir_dirty;
        let clean = CleanState {
            next_offset: st.next_offset,
            active_len: st.active.write_pos,
            max_timestamp: st.active.ix.max_timestamp,
            offset_of_max_timestamp: st.active.ix.offset_of_max_timestamp,
        };
        if unchanged {
            // Nothing written since it was opened clean or created: the
            // files are as durable as they were.
            return Ok((*rp, clean));
        }
        let a = &mut st.active;
        let active_file = DataFile::open(&a.seg.log_path, false)?;
        a.fence.close();
        active_file.truncate(a.write_pos)?;
        a.allocated = a.write_pos;
        let index_files = write_index_files(&a.seg, &a.ix)?;
        let mut files = std::mem::take(&mut st.unsynced);
        files.push(Arc::new(active_file));
        files.extend(index_files);
        let dir = std::mem::take(&mut st.dir_dirty);
        let point = RecoveryPoint {
            segment: st.active.seg.base_offset,
            position: st.active.write_pos,
        };
        drop(st);
        self.fsync_all(&files, dir)?;
        *rp = point;
        self.durable_offset
            .fetch_max(clean.next_offset, Ordering::AcqRel);
        Ok((point, clean))
    }

    /// Applies retention by size and age; deletes whole closed segments,
    /// oldest first, never the active one.
    pub(crate) fn apply_retention(&self, now_ms: i64) -> Result<()> {
        if !self.has_retention() {
            return Ok(());
        }
        let candidates: Vec<Arc<Segment>> = self.state.lock().closed.clone();
        // Learn the age of each candidate outside the lock (reads time indexes).
        let mut n_expired = 0usize;
        if let Some(ms) = self.limits.retention_ms {
            let cutoff = now_ms.saturating_sub(ms.min(i64::MAX as u64) as i64);
            for seg in &candidates {
                match seg.closed_max_timestamp() {
                    Ok(ts) if ts < cutoff => n_expired += 1,
                    Ok(_) => break,
                    // Removed meanwhile: by another pass, a compaction, or
                    // with its topic (then nothing is removed below).
                    Err(_) if seg.is_deleted() => break,
                    Err(e) => return Err(e),
                }
            }
        }
        #[cfg(test)]
        io::faults::run_after_retention_scan();
        let (doomed, by_age): (Vec<Arc<Segment>>, usize) = {
            let mut st = self.state.lock();
            if st.deleted {
                return Ok(());
            }
            // The expired candidates still at the front: another retention
            // pass (an appender's, the background thread's) or a compaction
            // may have changed the list since it was copied, and a count
            // alone would then take segments that have not expired.
            // Both lists are in offset order: find the live list's first
            // segment among the expired, then match pairwise.
            let expired = &candidates[..n_expired];
            let by_age = st.closed.first().map_or(0, |first| {
                let at = expired.iter().position(|e| Arc::ptr_eq(e, first));
                at.map_or(0, |at| {
                    expired[at..]
                        .iter()
                        .zip(&st.closed)
                        .take_while(|(e, s)| Arc::ptr_eq(e, s))
                        .count()
                })
            });
            let mut n = by_age;
            if let Some(limit) = self.limits.retention_bytes {
                let mut total: u64 =
                    st.closed.iter().map(|s| s.closed_len()).sum::<u64>() + st.active.write_pos;
                total -= st.closed[..n].iter().map(|s| s.closed_len()).sum::<u64>();
                while n < st.closed.len() && total - st.closed[n].closed_len() >= limit {
                    total -= st.closed[n].closed_len();
                    n += 1;
                }
            }
            if let Some(from) = st.cleaning_from {
                // A compaction is rewriting those: the next pass takes them.
                n = n.min(st.closed.partition_point(|s| s.base_offset < from));
            }
            (st.closed.drain(..n).collect(), by_age.min(n))
        };
        if !doomed.is_empty() {
            let next = doomed.last().map(|s| s.base_offset);
            tracing::info!(
                topic = %self.topic,
                partition = self.partition,
                segments = doomed.len(),
                bytes = doomed.iter().map(|s| s.closed_len()).sum::<u64>(),
                by_age,
                first_base_offset = doomed[0].base_offset,
                last_base_offset = next,
                "retention deleted segments"
            );
        }
        self.remove_segments(&doomed)
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records the latency of one append call (a `Topic` call, sync and
    /// acknowledgement included), if it was sampled.
    #[inline]
    pub(crate) fn record_append_latency(&self, timer: AppendTimer) {
        if let Some(elapsed) = timer.elapsed() {
            self.append_latency.record(elapsed);
        }
    }

    /// A snapshot of this partition's counters and state.
    pub(crate) fn metrics(&self) -> PartitionMetrics {
        let (records_in, bytes_in, start_offset, end_offset, size_bytes, segments) = {
            let st = self.state.lock();
            let closed: u64 = st.closed.iter().map(|s| s.closed_len()).sum();
            (
                st.records_in,
                st.bytes_in,
                st.start_offset(),
                st.next_offset.min(self.visible_end.load(Ordering::Acquire)),
                closed + st.active.write_pos,
                st.closed.len() as u64 + 1,
            )
        };
        PartitionMetrics {
            topic_partition: TopicPartition::new(&*self.topic, self.partition),
            records_in,
            bytes_in,
            records_out: self.reads.records_out.load(Ordering::Relaxed),
            bytes_out: self.reads.bytes_out.load(Ordering::Relaxed),
            start_offset,
            end_offset,
            size_bytes,
            segments,
            fsyncs: self.syncs.fsyncs.load(Ordering::Relaxed),
            fsync_time_ns: self.syncs.fsync_ns.load(Ordering::Relaxed),
            append_latency: self.append_latency.snapshot(),
        }
    }

    /// Reads up to `max` messages from `from`.
    pub(crate) fn read(&self, from: u64, max: usize) -> Result<Vec<Message>> {
        let mut out = Vec::new();
        self.read_into(from, max, &mut out)?;
        Ok(out)
    }

    /// Appends up to `max` messages from `from` to `out` (every record,
    /// as Kafka's `read_uncommitted`; transaction markers are never
    /// returned).
    pub(crate) fn read_into(&self, from: u64, max: usize, out: &mut Vec<Message>) -> Result<()> {
        self.read_with(from, max, out, false).map(drop)
    }

    /// The last stable offset: records below it belong to no open
    /// transaction.
    pub(crate) fn last_stable_offset(&self) -> u64 {
        let st = self.state.lock();
        let end = st.next_offset.min(self.visible_end.load(Ordering::Acquire));
        st.producers.last_stable_offset(end)
    }

    /// Appends up to `max` messages from `from` to `out`; with `committed`,
    /// only records below the last stable offset and outside aborted
    /// transactions (Kafka's `read_committed`). Returns the offset to read
    /// from next: after the last message returned, or after transaction
    /// markers and aborted records skipped beyond it.
    pub(crate) fn read_with(
        &self,
        from: u64,
        max: usize,
        out: &mut Vec<Message>,
        committed: bool,
    ) -> Result<u64> {
        let cap = self.visible_end.load(Ordering::Acquire);
        self.read_below(from, max, out, committed, cap)
    }

    /// [`read_with`](Self::read_with), seeing offsets below `cap` only.
    pub(crate) fn read_below(
        &self,
        from: u64,
        max: usize,
        out: &mut Vec<Message>,
        committed: bool,
        cap: u64,
    ) -> Result<u64> {
        // The regions of this thread's earlier reads go now if their
        // messages are gone (see `bulk_arc`'s deferred decrements).
        crate::bulk_arc::flush();
        if max == 0 {
            // No records wanted, but the offset is still checked.
            let st = self.state.lock();
            if st.deleted {
                return Err(self.unknown_topic());
            }
            let (start, end) = (st.start_offset(), st.next_offset.min(cap));
            if from < start || from > end {
                return Err(Error::OffsetOutOfRange {
                    topic: self.topic.to_string(),
                    partition: self.partition,
                    offset: from,
                    start,
                    end,
                });
            }
            return Ok(from);
        }
        let initial = out.len();
        let max = initial.saturating_add(max);
        let mut next = from;
        let mut first = true;
        // A cluster replica's high watermark; for `committed` reads, the
        // last stable offset below it.
        let mut visible_end = cap;
        let mut aborted = Vec::new();
        let mut skipped_to = from;
        while out.len() < max {
            let plan = {
                let st = self.state.lock();
                if st.deleted {
                    return Err(self.unknown_topic());
                }
                let (start, end) = (st.start_offset(), st.next_offset.min(cap));
                if next < start || next > end {
                    // Nothing read yet, also when retention deleted the
                    // segment planned before it could be read: the offset
                    // is gone, which is an error, not an empty read.
                    if out.len() == initial || next > end {
                        return Err(Error::OffsetOutOfRange {
                            topic: self.topic.to_string(),
                            partition: self.partition,
                            offset: if out.len() == initial { from } else { next },
                            start,
                            end,
                        });
                    }
                    // Retention overtook a multi-segment read: return what we have.
                    break;
                }
                if first && committed {
                    visible_end = st.producers.last_stable_offset(end);
                    aborted = st.producers.aborted_from(next);
                }
                if next >= end.min(visible_end) {
                    break;
                }
                st.plan_read(next)
            };
            first = false;
            let txn = committed.then_some(&aborted[..]);
            #[cfg(test)]
            io::faults::run_after_read_plan();
            if out.capacity() == 0 {
                out.reserve(max.min(1024));
            }
            let before = out.len();
            match plan {
                ReadPlan::Closed { seg, next_base } => {
                    let read =
                        self.read_closed(&seg, next_base, next, max, txn, &mut skipped_to, out)?;
                    if !read {
                        continue; // deleted under us: re-plan
                    }
                    if out.len() == before {
                        next = next_base;
                        continue;
                    }
                }
                ReadPlan::Active {
                    seg,
                    map,
                    start_pos,
                    sealed_end,
                    limit_offset,
                    open,
                } => {
                    let region = Region {
                        start: start_pos,
                        end: sealed_end,
                        expect_last: None,
                        limit_offset,
                    };
                    self.read_region(&seg, &map, region, next, max, txn, &mut skipped_to, out)
                        .map_err(|e| e.into_error(&seg, start_pos))?;
                    if let Some(o) = open {
                        if out.len() < max {
                            self.read_open(&map, &o, next, max, out);
                        }
                    }
                    // The active segment is the end of the log.
                    break;
                }
            }
            next = out[before..].last().map_or(next, |m| m.offset + 1);
        }
        if visible_end != u64::MAX {
            // Records of other producers may follow an open transaction's
            // first record: nothing from the last stable offset on (nor
            // from a replica's high watermark on).
            let keep = out[initial..].partition_point(|m| m.offset < visible_end);
            out.truncate(initial + keep);
        }
        let returned = &out[initial..];
        if !returned.is_empty() {
            let bytes: usize = returned.iter().map(Message::payload_len).sum();
            self.reads
                .records_out
                .fetch_add(returned.len() as u64, Ordering::Relaxed);
            self.reads
                .bytes_out
                .fetch_add(bytes as u64, Ordering::Relaxed);
        }
        let read_to = returned.last().map_or(from, |m| m.offset + 1);
        Ok(read_to.max(skipped_to).min(visible_end).max(from))
    }

    /// Reads from a closed segment; `false` if it was deleted meanwhile.
    #[allow(clippy::too_many_arguments)]
    fn read_closed(
        &self,
        seg: &Arc<Segment>,
        limit: u64,
        from: u64,
        max: usize,
        txn: Option<&[AbortedTxn]>,
        skipped_to: &mut u64,
        out: &mut Vec<Message>,
    ) -> Result<bool> {
        let Some(map) = seg.closed_map()? else {
            if seg.is_deleted() {
                return Ok(false);
            }
            return Ok(true); // empty segment
        };
        let len = seg.closed_len();
        let (pos, expect) = match seg.closed_lookup(from) {
            Ok(found) => found,
            Err(_) if seg.is_deleted() => return Ok(false),
            Err(e) => return Err(e),
        };
        seg.release_behind(&map, pos);
        let before = out.len();
        let mut read = |pos: u64, expect_last: Option<u64>, out: &mut Vec<Message>| {
            let region = Region {
                start: pos,
                end: len,
                expect_last,
                limit_offset: limit,
            };
            self.read_region(seg, &map, region, from, max, txn, skipped_to, out)
        };
        let to_end = match read(pos, expect, out) {
            Err(ReadError::IndexMismatch) => {
                out.truncate(before);
                tracing::warn!(
                    topic = %self.topic,
                    partition = self.partition,
                    segment = %seg.index_path.display(),
                    "offset index does not match its segment; rebuilding it"
                );
                let rebuilt = seg
                    .discard_index_and_rebuild()
                    .and_then(|()| seg.closed_lookup(from));
                let (pos, expect) = match rebuilt {
                    Ok(found) => found,
                    Err(_) if seg.is_deleted() => return Ok(false),
                    Err(e) => return Err(e),
                };
                read(pos, expect, out).map_err(|e| e.into_error(seg, pos))?
            }
            other => other.map_err(|e| e.into_error(seg, pos))?,
        };
        if to_end {
            // The reader is done with this segment: none of it stays
            // mapped (what `release_behind` keeps behind a reader would
            // otherwise stay, segment after segment).
            seg.release_all(&map);
        }
        Ok(true)
    }

    /// Decodes the sealed batches of `map[region.start..region.end]`,
    /// pushing messages with offsets `>= from` until `out` holds `max`.
    /// Transaction markers are skipped, and with `txn` (a `read_committed`
    /// read) batches of those aborted transactions too; `skipped_to` moves
    /// past what was skipped. Returns whether it got to the region's end.
    #[allow(clippy::too_many_arguments)]
    fn read_region(
        &self,
        seg: &Segment,
        map: &Arc<SegmentMap>,
        region: Region,
        from: u64,
        max: usize,
        txn: Option<&[AbortedTxn]>,
        skipped_to: &mut u64,
        out: &mut Vec<Message>,
    ) -> std::result::Result<bool, ReadError> {
        let Region {
            start,
            end,
            mut expect_last,
            limit_offset,
        } = region;
        if start >= end {
            return Ok(true);
        }
        // Offsets are not covered by the CRC: check that each batch follows
        // the previous one and stays below the segment's end.
        let mut expected_base = (start == 0).then_some(seg.base_offset);
        let region = share_region(&self.topic, map, start, end);
        let bytes = region.bytes();
        let mut pos = 0usize;
        while pos < bytes.len() && out.len() < max {
            let abs = start + pos as u64;
            let rest = &bytes[pos..];
            let h = BatchHeader::parse(rest).map_err(|e| ReadError::Corrupt(abs, e.0))?;
            let len = h.total_len();
            if len > rest.len() {
                return Err(ReadError::Corrupt(
                    abs,
                    format!("batch of {len} bytes runs past the segment end"),
                ));
            }
            if let Some(expected) = expect_last.take() {
                if h.last_offset() != expected {
                    return Err(ReadError::IndexMismatch);
                }
            }
            let base = h.base_offset as u64;
            let misplaced =
                expected_base.is_some_and(|e| if seg.gaps { base < e } else { base != e });
            if misplaced || h.last_offset() >= limit_offset {
                return Err(ReadError::Corrupt(
                    abs,
                    format!(
                        "batch offsets {base}..={} do not fit the segment (expected base {expected_base:?}, end {limit_offset})",
                        h.last_offset()
                    ),
                ));
            }
            expected_base = Some(h.last_offset() + 1);
            seg.verify_batch(abs, &rest[..len])
                .map_err(ReadError::Error)?;
            let hidden = h.is_control()
                || (h.is_transactional()
                    && txn.is_some_and(|t| {
                        t.iter()
                            .any(|a| a.covers(h.producer_id, h.base_offset as u64))
                    }));
            if hidden {
                if h.last_offset() >= from {
                    *skipped_to = (*skipped_to).max(h.last_offset() + 1);
                }
            } else if h.last_offset() >= from {
                // A compressed batch's records are decoded from one buffer
                // its messages share; a plain batch's from the map.
                let decompressed;
                let (records, range, first) = if h.compression() == Compression::None {
                    (&region, pos..pos + len, pos + BATCH_HEADER_BYTES)
                } else {
                    let (bytes, _) = format::batch_records(&h, &rest[..len])
                        .map_err(|e| ReadError::Corrupt(abs, e.0))?;
                    let bytes: Box<[u8]> = bytes.into_owned().into();
                    let n = bytes.len();
                    let map = Arc::new(SegmentMap::Heap(bytes));
                    decompressed = share_region(&self.topic, &map, 0, n as u64);
                    (&decompressed, 0..n, 0)
                };
                decode_records(
                    records,
                    self.partition,
                    range,
                    first,
                    h.records_count as u32,
                    h.base_offset as u64,
                    h.base_timestamp,
                    from,
                    max,
                    out,
                )
                .map_err(|e| ReadError::Corrupt(abs, e.0))?;
            }
            pos += len;
        }
        Ok(pos >= bytes.len())
    }

    fn read_open(
        &self,
        map: &Arc<SegmentMap>,
        o: &OpenSnapshot,
        from: u64,
        max: usize,
        out: &mut Vec<Message>,
    ) {
        let region = match &o.copy {
            Some(copy) => share_region(
                &self.topic,
                copy,
                0,
                o.end - o.start - BATCH_HEADER_BYTES as u64,
            ),
            None => share_region(&self.topic, map, o.start + BATCH_HEADER_BYTES as u64, o.end),
        };
        // Records of the open batch were encoded by this process under the
        // lock; decoding them cannot fail short of a bug.
        let len = region.len;
        let r = decode_records(
            &region,
            self.partition,
            0..len,
            0,
            u32::MAX,
            o.base_offset,
            o.base_timestamp,
            from,
            max,
            out,
        );
        debug_assert!(r.is_ok(), "open batch failed to decode: {r:?}");
    }

    /// Earliest offset whose timestamp is `>= ts`.
    pub(crate) fn offset_for_timestamp(&self, ts: i64) -> Result<Option<u64>> {
        let (closed, active_max) = {
            let st = self.state.lock();
            if st.deleted {
                return Err(self.unknown_topic());
            }
            let a = &st.active;
            let open_max = a.open.as_ref().map_or(-1, |o| o.max_timestamp);
            (st.closed.clone(), a.ix.max_timestamp.max(open_max))
        };
        for seg in &closed {
            let found = match seg.closed_max_timestamp() {
                Ok(max) if max < ts => continue,
                Ok(_) => seg.closed_time_floor(ts),
                Err(e) => Err(e),
            };
            let after = match found {
                Ok(after) => after,
                // Retention took it, or its topic was deleted.
                Err(_) if seg.is_deleted() => {
                    if self.state.lock().deleted {
                        return Err(self.unknown_topic());
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            let from = after.map_or(seg.base_offset, |o| o + 1);
            if let Some(o) = self.first_at_or_after(from, ts, Some(seg))? {
                return Ok(Some(o));
            }
        }
        if active_max < ts {
            return Ok(None);
        }
        let from = {
            let st = self.state.lock();
            let a = &st.active;
            let rel =
                a.ix.times
                    .iter()
                    .rev()
                    .find(|&&(t, _)| t < ts)
                    .map(|&(_, r)| a.seg.base_offset + r as u64 + 1);
            rel.unwrap_or(a.seg.base_offset).max(st.start_offset())
        };
        self.first_at_or_after(from, ts, None)
    }

    /// Scans forward from `from` (within `seg`, or to the end of the log) for
    /// the first record with timestamp `>= ts`.
    fn first_at_or_after(
        &self,
        from: u64,
        ts: i64,
        seg: Option<&Arc<Segment>>,
    ) -> Result<Option<u64>> {
        const CHUNK: usize = 4096;
        let mut next = from;
        loop {
            let end = match seg {
                Some(_) => u64::MAX,
                None => self.end_offset(),
            };
            if next >= end {
                return Ok(None);
            }
            let msgs = match self.read(next, CHUNK) {
                Ok(m) => m,
                Err(Error::OffsetOutOfRange { .. }) => return Ok(None),
                Err(e) => return Err(e),
            };
            let Some(last) = msgs.last() else {
                return Ok(None);
            };
            if let Some(m) = msgs.iter().find(|m| m.timestamp >= ts) {
                return Ok(Some(m.offset));
            }
            if let Some(s) = seg {
                // Stop at the segment's end: the caller moves to the next one.
                if last.offset + 1 >= self.segment_end(s) {
                    return Ok(None);
                }
            }
            next = last.offset + 1;
        }
    }

    /// Base offset of the segment after `seg` (or the log end).
    fn segment_end(&self, seg: &Segment) -> u64 {
        let st = self.state.lock();
        st.closed
            .iter()
            .map(|s| s.base_offset)
            .chain(std::iter::once(st.active.seg.base_offset))
            .find(|&b| b > seg.base_offset)
            .unwrap_or(st.next_offset)
    }

    /// Deletes the partition's directory (topic deletion). Reads fail with
    /// [`Error::UnknownTopic`] from now on.
    pub(crate) fn delete_files(&self) -> Result<()> {
        // A compaction writes files into the directory outside the state
        // lock: it ends first (later ones find the log deleted), or it
        // would write into a removed directory, or into the directory of a
        // topic of the same name created next. Asked to stop, it ends at
        // its next batch rather than after all of its work.
        self.abort_cleaning.store(true, Ordering::Release);
        let _no_compaction = self.cleaner_lock.lock();
        let _files = self.files_lock.lock();
        {
            let mut st = self.state.lock();
            st.shut = true;
            st.deleted = true;
            // Zeros queued for the pager land nowhere.
            st.active.fence.close();
            // A read that planned before this lock may still reach a closed
            // segment: marked deleted, it loads no index (nor rebuilds one
            // into the removed directory) and re-plans, finding `deleted`.
            for seg in &st.closed {
                seg.mark_deleted();
            }
        }
        io::remove_dir_all(&self.dir)
    }
}

#[derive(Debug)]
enum ReadError {
    /// The index entry pointed at a batch that does not end where it said.
    IndexMismatch,
    Corrupt(u64, String),
    Error(Error),
}

impl ReadError {
    fn into_error(self, seg: &Segment, pos: u64) -> Error {
        match self {
            ReadError::IndexMismatch => Error::corrupt(
                &seg.index_path,
                0,
                format!("index entry for position {pos} does not match the log"),
            ),
            ReadError::Corrupt(at, reason) => Error::corrupt(&seg.log_path, at, reason),
            ReadError::Error(e) => e,
        }
    }
}

/// Decodes up to `count` records of the batch occupying `batch` of the
/// region, starting at `pos`, pushing those with offset `>= from` until `out`
/// holds `max`. With `count == u32::MAX` decodes until the end of `batch`.
#[allow(clippy::too_many_arguments)]
fn decode_records(
    region: &BulkArc<ReadRegion>,
    partition: u32,
    batch: std::ops::Range<usize>,
    mut pos: usize,
    count: u32,
    base_offset: u64,
    base_timestamp: i64,
    from: u64,
    max: usize,
    out: &mut Vec<Message>,
) -> std::result::Result<(), format::FormatError> {
    let bytes = &region.bytes()[..batch.end];
    // One reference per message, taken at once: at most one per record
    // left (each takes at least 7 bytes) and per message wanted.
    let most = (count as usize)
        .min(max.saturating_sub(out.len()))
        .min(batch.end.saturating_sub(pos) / 7);
    let mut refs = region.reserve(most);
    let mut i = 0u32;
    while i < count && pos < batch.end && out.len() < max {
        let r = RecordView::decode(bytes, pos)?;
        let offset = base_offset + r.offset_delta as u64;
        if offset >= from {
            out.push(Message {
                region: refs.take(),
                offset,
                timestamp: base_timestamp.wrapping_add(r.timestamp_delta),
                partition,
                key: Field::from_range(r.key),
                value: Field::from_range(r.value),
                headers_start: r.headers.0 as u32,
                header_count: r.header_count,
                end: r.end as u32,
            });
        }
        pos = r.end;
        i += 1;
    }
    if count != u32::MAX && i < count && out.len() < max {
        return Err(format::FormatError(format!(
            "batch holds fewer than its {count} records"
        )));
    }
    Ok(())
}

/// Asks the CPU for the four cache lines after `next`, where the next
/// appends will store, in a writable state. The pager zeroed those pages
/// on the other core; fetched here while the caller still has work to do,
/// they no longer hold up the partition mutex's release, a locked
/// instruction that waits for the record's stores to complete (that
/// release was 12 % of a single append in `perf annotate`, 5 % with this;
/// criterion `append` 198 → 177 ns, medians of 11 alternating pairs). A
/// prefetch is only a hint: it never faults, whatever the address, and a
/// CPU without `PREFETCHW` treats it as a no-op.
#[inline(always)]
fn prefetch_for_write(next: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_ET0};
        for line in 1..=4 {
            // SAFETY: `_mm_prefetch` needs SSE, which every x86_64 CPU has
            // (it is in the target's baseline). It reads and writes no
            // memory: a prefetch of any address, mapped or not, is allowed
            // and cannot fault, so `wrapping_add` past the map is fine.
            unsafe { _mm_prefetch::<_MM_HINT_ET0>(next.wrapping_add(64 * line).cast()) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = next;
}

/// Tests stop a compaction after a step to play a crash (see
/// `io::faults::crash_compaction_after`).
fn crash_point(step: u32) -> Result<()> {
    #[cfg(test)]
    io::faults::run_at_compaction_step(step);
    #[cfg(test)]
    if io::faults::compaction_crash_due(step) {
        return Err(Error::io(
            "simulated crash",
            format!("compaction step {step}"),
            std::io::Error::other("injected"),
        ));
    }
    let _ = step;
    Ok(())
}

/// Steps 4 and 5 of the swap (idempotent, also run by recovery): delete the
/// group's other segments, move the `.cleaned` files into place, drop the
/// manifest.
fn finish_swap(dir: &Path, manifest: &Path, base: u64, group_end: u64) -> Result<()> {
    for e in io::list_dir(dir)? {
        for ext in ["log", "index", "timeindex"] {
            if let Some(b) = parse_segment_name(&e.name, ext) {
                if b > base && b < group_end {
                    io::remove_file(&dir.join(&e.name))?;
                }
            }
        }
    }
    crash_point(4)?;
    for ext in ["log", "index", "timeindex"] {
        let target = dir.join(super::segment::file_name(base, ext));
        let mut staged = target.as_os_str().to_owned();
        staged.push(cleaner::CLEANED_SUFFIX);
        let staged = PathBuf::from(staged);
        if io::file_len(&staged)?.is_some() {
            io::rename(&staged, &target)?;
        }
    }
    io::sync_dir(dir)?;
    io::remove_file(manifest)?;
    io::sync_dir(dir)
}

/// Before a partition opens: finish committed compaction swaps and drop
/// uncommitted `.cleaned` files.
fn recover_swaps(dir: &Path) -> Result<()> {
    for e in io::list_dir(dir)? {
        let Some(stem) = e.name.strip_suffix(&format!(".{}", cleaner::SWAP_EXT)) else {
            continue;
        };
        let Some(base) = parse_segment_name(stem, "log") else {
            continue;
        };
        let manifest = dir.join(&e.name);
        let text = io::read_optional(&manifest)?.unwrap_or_default();
        let end = std::str::from_utf8(&text)
            .ok()
            .and_then(|t| t.trim().strip_prefix("end="))
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| Error::corrupt(&manifest, 0, "unreadable compaction manifest"))?;
        finish_swap(dir, &manifest, base, end)?;
    }
    for e in io::list_dir(dir)? {
        if e.name.ends_with(cleaner::CLEANED_SUFFIX) {
            io::remove_file(&dir.join(&e.name))?;
        }
    }
    Ok(())
}

pub(crate) fn parse_segment_name(name: &str, ext: &str) -> Option<u64> {
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Writes a segment's final indexes in place and returns the files, which
/// the caller fsyncs (with the segment) before anything trusts them: the
/// background flush after a roll, `close` before the clean-shutdown marker.
/// Until then recovery does not rely on them.
fn write_index_files(seg: &Segment, ix: &IndexBuilder) -> Result<[Arc<DataFile>; 2]> {
    let mut ix = ix.clone();
    ix.add_time_entry(seg.base_offset);
    let write = |path: &Path, bytes: Vec<u8>| -> Result<Arc<DataFile>> {
        let f = DataFile::open(path, true)?;
        f.truncate(0)?;
        f.write_all_at(&bytes, 0)?;
        Ok(Arc::new(f))
    };
    Ok([
        write(&seg.index_path, ix.encode_offsets())?,
        write(&seg.timeindex_path, ix.encode_times())?,
    ])
}

struct Recovered {
    /// Where the segment ends: after its last good batch, or at the file's
    /// end when damage was kept.
    end: u64,
    ix: IndexBuilder,
    next_offset: Option<u64>,
    /// Bytes after the last good batch were cut off.
    truncated: bool,
    /// Bytes after the last good batch were kept (`TailMode::KeepDamage`).
    damaged: bool,
    /// An open batch a killed writer left was resealed.
    resealed: bool,
}

/// What opening a partition found and did, for the log (see
/// [`PartitionLog::open`]).
#[derive(Debug, Default)]
struct RecoveryReport {
    /// The clean-close fast path applied: no segment data was read.
    clean: bool,
    /// Segments walked batch by batch (those after the recovery point).
    scanned: usize,
    /// Bytes of those segments checked.
    scanned_bytes: u64,
    /// An open batch a killed writer left was resealed (same boot).
    resealed: bool,
    /// A torn or never-synced tail was cut off.
    truncated: bool,
    /// A segment lost its unsynced tail (a power cut), so the log ends there.
    gap: bool,
    /// Damage before the active segment was kept for reads to report.
    damaged: bool,
    /// Segments after a truncation point that were deleted.
    dropped_segments: usize,
}

impl RecoveryReport {
    fn emit(&self, log: &PartitionLog, hints: OpenHints, took: std::time::Duration) {
        let (topic, partition) = (&*log.topic, log.partition);
        if self.clean {
            tracing::debug!(
                topic = %topic,
                partition,
                took_us = took.as_micros() as u64,
                "partition opened after a clean close"
            );
            return;
        }
        let (segments, end_offset) = {
            let st = log.state.lock();
            (st.closed.len() + 1, st.next_offset)
        };
        tracing::info!(
            topic = %topic,
            partition,
            segments,
            scanned_segments = self.scanned,
            scanned_bytes = self.scanned_bytes,
            recovery_segment = hints.recovery.segment,
            recovery_position = hints.recovery.position,
            resealed_open_batch = self.resealed,
            end_offset,
            took_us = took.as_micros() as u64,
            "partition recovered"
        );
        if self.truncated || self.gap || self.dropped_segments > 0 {
            tracing::warn!(
                topic = %topic,
                partition,
                torn_tail_truncated = self.truncated,
                lost_unsynced_tail = self.gap,
                segments_deleted = self.dropped_segments,
                end_offset,
                "recovery cut the log back: records after the last valid batch were never acknowledged as durable"
            );
        }
        if self.damaged {
            tracing::warn!(
                topic = %topic,
                partition,
                "recovery found a damaged batch in a closed segment; reads of it will report Error::Corrupt"
            );
        }
    }
}

/// What recovery does with bytes after a segment's last good batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TailMode {
    /// Cut them off: a torn or never-synced tail.
    Truncate,
    /// Reseal an open batch a killed writer left (same boot, last
    /// segment), then cut off what follows it.
    Reseal,
    /// Leave them: they can only be damage, which reads report as
    /// `Error::Corrupt` at its position.
    KeepDamage,
}

/// Scans a segment from its start (checking CRCs from `trusted_end` on) and
/// deals with what follows its last good batch as `mode` says.
fn recover_segment(seg: &Segment, trusted_end: u64, mode: TailMode) -> Result<Recovered> {
    let file = DataFile::open(&seg.log_path, false)?;
    let file_len = file.len()?;
    let map = io::map_read(&seg.log_path)?;
    let data: &[u8] = map.as_deref().unwrap_or(&[]);
    let Scan {
        mut ix,
        mut end,
        mut next_offset,
        bad,
    } = scan_batches(data, seg.base_offset, trusted_end.min(file_len), seg.gaps);
    let mut truncated = false;
    let mut resealed = false;
    if bad.is_some() && mode == TailMode::KeepDamage && data[end as usize..].iter().any(|&b| b != 0)
    {
        return Ok(Recovered {
            end: file_len,
            ix,
            next_offset,
            truncated,
            damaged: true,
            resealed: false,
        });
    }
    if bad.is_some() {
        let tail = &data[end as usize..];
        let expected = next_offset.unwrap_or(seg.base_offset);
        let scan = format::scan_open_batch(tail).filter(|_| mode == TailMode::Reseal);
        if let Some(scan) = scan.filter(|_| read_base_offset(tail) == expected) {
            let mut batch = tail[..scan.len].to_vec();
            format::reseal_open_batch(&mut batch, scan);
            file.write_all_at(&batch[..BATCH_HEADER_BYTES], end)?;
            let last = expected + scan.last_offset_delta as u64;
            ix.add_batch(
                seg.base_offset,
                end,
                scan.len as u64,
                last,
                scan.max_timestamp,
            );
            next_offset = Some(last + 1);
            end += scan.len as u64;
            resealed = true;
        }
        // What follows is a torn or never-synced tail: zeros, or bytes whose
        // appends were never acknowledged as durable.
        truncated = data[end as usize..].iter().any(|&b| b != 0);
    }
    drop(map);
    if end < file_len {
        file.truncate(end)?;
        file.sync_data()?;
    }
    Ok(Recovered {
        end,
        ix,
        next_offset,
        truncated,
        damaged: false,
        resealed,
    })
}

/// Puts back the batch a killed writer was compressing in place (see
/// `Active::compress_sealed`) if the active segment, recovered as `rec`,
/// ends where that batch belongs; then drops the copy.
fn recover_compressing(dir: &Path, seg: &Segment, rec: &mut Recovered) -> Result<()> {
    let path = dir.join(COMPRESSING_FILE);
    let saved = io::read_optional(&path)?.unwrap_or_default();
    let expected = rec.next_offset.unwrap_or(seg.base_offset);
    let batch = BatchHeader::parse(&saved)
        .ok()
        .filter(|h| h.base_offset as u64 == expected && h.total_len() <= saved.len())
        .and_then(|h| format::validate_batch(&saved[..h.total_len()]).ok());
    if let Some(h) = batch {
        let len = h.total_len();
        let file = DataFile::open(&seg.log_path, false)?;
        file.write_all_at(&saved[..len], rec.end)?;
        file.sync_data()?;
        rec.ix.add_batch(
            seg.base_offset,
            rec.end,
            len as u64,
            h.last_offset(),
            h.max_timestamp,
        );
        rec.next_offset = Some(h.last_offset() + 1);
        rec.end += len as u64;
    }
    io::remove_file(&path)
}

fn read_base_offset(batch: &[u8]) -> u64 {
    i64::from_be_bytes(batch[..8].try_into().expect("an open batch has a header")) as u64
}

impl State {
    fn start_offset(&self) -> u64 {
        self.closed
            .first()
            .map_or(self.active.seg.base_offset, |s| s.base_offset)
    }

    fn plan_read(&self, from: u64) -> ReadPlan {
        let a = &self.active;
        if from >= a.seg.base_offset {
            let start_pos = a.ix.lookup(a.seg.base_offset, from).min(a.sealed_end);
            let open = a.open.as_ref().map(|o| OpenSnapshot {
                start: o.start,
                end: a.write_pos,
                base_offset: o.base_offset,
                base_timestamp: o.base_timestamp,
                copy: (self.compression != Compression::None).then(|| {
                    let records = o.start as usize + BATCH_HEADER_BYTES;
                    // SAFETY: the open batch's records are written and
                    // published, and we hold the state lock: no writer
                    // changes them while they are copied.
                    let bytes = unsafe {
                        std::slice::from_raw_parts(
                            a.map.ptr().add(records),
                            a.write_pos as usize - records,
                        )
                    };
                    Arc::new(SegmentMap::Heap(bytes.into()))
                }),
            });
            let start_pos = match &open {
                Some(o) if from >= o.base_offset => a.sealed_end,
                _ => start_pos,
            };
            let limit_offset = open.as_ref().map_or(self.next_offset, |o| o.base_offset);
            return ReadPlan::Active {
                seg: Arc::clone(&a.seg),
                map: Arc::clone(&a.map),
                start_pos,
                sealed_end: a.sealed_end,
                limit_offset,
                open,
            };
        }
        let i = self
            .closed
            .partition_point(|s| s.base_offset <= from)
            .saturating_sub(1);
        let next_base = self
            .closed
            .get(i + 1)
            .map_or(a.seg.base_offset, |s| s.base_offset);
        ReadPlan::Closed {
            seg: Arc::clone(&self.closed[i]),
            next_base,
        }
    }

    /// Appends one record and returns its offset; `producer` carries the
    /// record's own sequence.
    fn append_one(
        &mut self,
        dir: &Path,
        limits: Limits,
        parts: RecordParts<'_>,
        ts: i64,
        producer: Option<ProducerBatch>,
    ) -> Result<u64> {
        loop {
            let offset = self.next_offset;
            if let Some(fit) = self.open_fit(&parts, ts, producer) {
                let a = &mut self.active;
                a.make_room(a.write_pos + fit.len)?;
                a.write_record(parts, fit.body, fit.ts_delta, fit.off_delta, fit.len, ts);
                self.next_offset += 1;
                self.bytes_in += fit.len;
                return Ok(offset);
            }
            // An open batch that is full, or of another producer (or of
            // none), is sealed first.
            self.seal_open();
            let len = (BATCH_HEADER_BYTES + parts.encoded_len(0, 0)) as u64;
            if self.rolls_before(self.active.write_pos, len, offset, limits) {
                self.roll(dir, limits)?;
                continue;
            }
            let epoch = self.stamp_epoch(offset);
            let a = &mut self.active;
            a.make_room(a.write_pos + len)?;
            if len > LARGE_RECORD_BYTES && producer.is_none() {
                return self.append_alone(parts, ts, epoch);
            }
            let a = &mut self.active;
            a.open_batch(offset, ts, producer, epoch);
            // The loop appends the record to the new batch; a first record
            // always fits (segment_bytes >= max record + header).
            let open = a.open.as_ref().expect("just opened");
            let ts_delta = ts - open.base_timestamp;
            let body = parts.body_len(ts_delta, 0);
            let rec_len = (varint_len(body as i64) + body) as u64;
            a.make_room(a.write_pos + rec_len)?;
            a.write_record(parts, body, ts_delta, 0, rec_len, ts);
            self.next_offset += 1;
            self.bytes_in += BATCH_HEADER_BYTES as u64 + rec_len;
            return Ok(offset);
        }
    }

    /// Where a record (`parts`, timestamp `ts`, of `producer`) goes in the
    /// open batch, if that batch takes it: the batch is `producer`'s, and
    /// the record keeps it within its target size, its offset deltas and
    /// the segment's map. (Both append paths ask this, so that they cut
    /// the same batches.)
    #[inline]
    fn open_fit(
        &self,
        parts: &RecordParts<'_>,
        ts: i64,
        producer: Option<ProducerBatch>,
    ) -> Option<OpenFit> {
        let a = &self.active;
        let open = a.open.as_ref().filter(|o| o.takes(producer))?;
        let ts_delta = ts - open.base_timestamp;
        let off_delta = self.next_offset - open.base_offset;
        let body = parts.body_len(ts_delta, off_delta as i32);
        let len = (varint_len(body as i64) + body) as u64;
        let fits = a.write_pos - open.start + len <= BATCH_TARGET_BYTES
            && off_delta < i32::MAX as u64
            && a.write_pos + len <= a.capacity;
        fits.then_some(OpenFit {
            ts_delta,
            off_delta: off_delta as i32,
            body,
            len,
        })
    }

    /// Whether a batch of `len` bytes whose first offset is `offset`, to
    /// start at `at` in the active segment, needs a new segment first: the
    /// segment would grow past `segment_bytes` (unless the batch is its
    /// first), or offsets relative to its base could overflow.
    #[inline]
    fn rolls_before(&self, at: u64, len: u64, offset: u64, limits: Limits) -> bool {
        (at > 0 && at + len > limits.segment_bytes)
            || offset - self.active.seg.base_offset > REL_OFFSET_MAX
    }

    /// The leader epoch of a batch starting at `offset`, noted in the
    /// leader-epoch cache if it begins there.
    #[inline]
    fn stamp_epoch(&mut self, offset: u64) -> i32 {
        let epoch = self.leader_epoch;
        if epoch >= 0 && self.epochs.last().is_none_or(|&(e, _)| e < epoch) {
            self.epochs.push((epoch, offset));
        }
        epoch
    }

    /// Appends records from `records` to the open batch while they fit it
    /// and the allocated part of the file, calling `on_append(offset,
    /// timestamp)` for each; returns the first record that needs the
    /// general path (no open batch, an idempotent producer's batch, a full
    /// batch or file), or `None` once `records` is exhausted. The batch
    /// header's count is left for
    /// [`commit_open_count`](Self::commit_open_count), which runs before the
    /// lock is released.
    #[inline]
    fn append_run<'r>(
        &mut self,
        records: &mut impl Iterator<Item = (RecordParts<'r>, i64)>,
        on_append: &mut impl FnMut(u64, i64),
    ) -> Option<(RecordParts<'r>, i64)> {
        let a = &mut self.active;
        let Some(open) = a.open.as_mut().filter(|o| o.producer.is_none()) else {
            return records.next();
        };
        // The free bytes the batch may still take: up to its target size
        // and the writable end of the file (a first record may already
        // have taken the batch past its target).
        let start = a.write_pos;
        let end = (open.start + BATCH_TARGET_BYTES).min(a.writable).max(start);
        // SAFETY: `start..end` is within the allocated file (`writable <=
        // allocated <= capacity`, the map's length), out of the pager's
        // reach (below the fence, see `make_room`), and beyond everything
        // published to readers (they see bytes below `write_pos` only); we
        // hold the state lock, so no other writer exists while `window`
        // lives.
        let window = unsafe {
            std::slice::from_raw_parts_mut(
                a.map.mut_ptr().add(start as usize),
                (end - start) as usize,
            )
        };
        let (base_offset, base_timestamp) = (open.base_offset, open.base_timestamp);
        let first = self.next_offset;
        let mut offset = first;
        let mut pos = 0usize;
        let mut max_timestamp = open.max_timestamp;
        let mut rest = None;
        for (parts, ts) in records.by_ref() {
            let off_delta = offset - base_offset;
            let written = match off_delta < i32::MAX as u64 {
                true => {
                    parts.encode_into(&mut window[pos..], ts - base_timestamp, off_delta as i32)
                }
                false => None,
            };
            let Some(len) = written else {
                rest = Some((parts, ts));
                break;
            };
            pos += len;
            max_timestamp = max_timestamp.max(ts);
            on_append(offset, ts);
            offset += 1;
        }
        open.count += (offset - first) as u32;
        open.max_timestamp = max_timestamp;
        a.write_pos += pos as u64;
        prefetch_for_write(a.map.mut_ptr().wrapping_add(a.write_pos as usize));
        self.next_offset = offset;
        self.bytes_in += pos as u64;
        rest
    }

    /// Stores the open batch's record count in its header, after the
    /// records' bytes: from here on a crash of the process keeps them.
    fn commit_open_count(&mut self) {
        let a = &self.active;
        if let Some(open) = &a.open {
            compiler_fence(Ordering::Release);
            // SAFETY: the count field lies in the open batch's header, which
            // no reader references (see `seal_open`).
            unsafe {
                std::ptr::write_unaligned(
                    a.map
                        .mut_ptr()
                        .add(open.start as usize + RECORDS_COUNT_OFFSET)
                        as *mut [u8; 4],
                    (open.count as i32).to_be_bytes(),
                );
            }
        }
    }

    fn seal_open(&mut self) {
        if self.deleted {
            // Its topic is gone, and its file names may be a new topic's
            // (sealing can compress through a journal file and ask for
            // zeros ahead): nothing is sealed.
            return;
        }
        let a = &mut self.active;
        let Some(open) = a.open.take() else {
            return;
        };
        debug_assert!(open.count > 0, "an open batch always holds a record");
        let records_start = open.start + BATCH_HEADER_BYTES as u64;
        // SAFETY: the header bytes `open.start..records_start` lie within the
        // allocated part of the map, and no reader holds a reference to them:
        // readers see only sealed batches (below `sealed_end`, which is
        // `open.start`) and the open batch's records (from `records_start`).
        // We hold the state lock, so no other writer exists.
        let header = unsafe {
            std::slice::from_raw_parts_mut(
                a.map.mut_ptr().add(open.start as usize),
                BATCH_HEADER_BYTES,
            )
        };
        // SAFETY: the records are written and published; shared references
        // to them may coexist with this one.
        let records = unsafe {
            std::slice::from_raw_parts(
                a.map.ptr().add(records_start as usize),
                (a.write_pos - records_start) as usize,
            )
        };
        format::seal_header(
            header,
            records,
            open.count as i32 - 1,
            open.max_timestamp,
            open.count as i32,
        );
        let control = open
            .producer
            .is_some_and(|p| p.attributes & format::CONTROL != 0);
        let last = open.base_offset + open.count as u64 - 1;
        self.finish_batch(open.start, last, open.max_timestamp, control);
    }

    /// What follows the sealing of the batch at `start..write_pos` (last
    /// offset `last`): compression in place, the index entries, and
    /// publishing it to readers.
    fn finish_batch(&mut self, start: u64, last: u64, max_timestamp: i64, control: bool) {
        let a = &mut self.active;
        if self.compression != Compression::None && !control {
            a.compress_sealed(start, self.compression);
        }
        a.ix.add_batch(
            a.seg.base_offset,
            start,
            a.write_pos - start,
            last,
            max_timestamp,
        );
        a.publish_sealed();
    }

    /// Appends a record larger than [`LARGE_RECORD_BYTES`] as a sealed
    /// batch of its own, written with `pwrite` from the caller's buffers
    /// rather than copied through the map: a copy into fresh pages of a
    /// shared map costs a fault, a zero-fill and a page-mkwrite per page,
    /// where `pwrite` fills the page cache directly (1 MiB values: see
    /// docs/performance-history.md). The open batch is sealed and the bytes
    /// allocated by the caller; `leader_epoch` is the batch's.
    ///
    /// The value and headers are written first and the batch header last,
    /// so a process killed in between leaves zeros where the header goes,
    /// which recovery reads as the end of the log. A failed write makes
    /// the partition read-only (the bytes after the log's end may then be
    /// neither zeros nor a batch).
    #[cold]
    fn append_alone(&mut self, parts: RecordParts<'_>, ts: i64, leader_epoch: i32) -> Result<u64> {
        debug_assert!(self.active.open.is_none());
        let offset = self.next_offset;
        let a = &mut self.active;
        let start = a.write_pos;
        let mut header = [0u8; BATCH_HEADER_BYTES];
        format::write_open_header(
            &mut header,
            NewBatch {
                base_offset: offset,
                base_timestamp: ts,
                leader_epoch,
                producer: None,
            },
        );
        let (mut head, mut tail) = (Vec::new(), Vec::new());
        let value = parts.encode_pieces(0, 0, &mut head, &mut tail);
        format::seal_header_pieces(&mut header, &[&head, value, &tail], 0, ts, 1);
        let len = (BATCH_HEADER_BYTES + head.len() + value.len() + tail.len()) as u64;
        let value_at = start + (BATCH_HEADER_BYTES + head.len()) as u64;
        let path = &a.seg.log_path;
        // Failing to open (no descriptor left) writes nothing: a plain,
        // retryable error.
        let file = DataFile::open(path, false)?;
        let written = (|| {
            file.write_all_at(value, value_at)?;
            file.write_all_at(&tail, value_at + value.len() as u64)?;
            #[cfg(test)]
            if io::faults::large_write_crash_due() {
                // The process "dies" here; the test drops this state unused.
                return Err(Error::io(
                    "write",
                    path,
                    std::io::Error::other("killed before the batch header"),
                ));
            }
            head.splice(0..0, header);
            file.write_all_at(&head, start)
        })();
        if let Err(e) = written {
            let path = path.clone();
            return Err(self.write_failed(path, e));
        }
        let a = &mut self.active;
        a.write_pos += len;
        // Bytes written with `pwrite` count toward no prefault window:
        // zeros ahead of them would be overwritten by the next record's
        // `pwrite`, and the two writes to one file take turns on its
        // inode lock (1 MiB values in a scratch program: the pager and
        // the writer spun on it for 28 % of the samples). They still
        // count in the run that `harden_ahead` checks.
        a.pwritten_to = a.write_pos;
        self.next_offset += 1;
        self.bytes_in += len;
        self.finish_batch(start, offset, ts, false);
        Ok(offset)
    }

    /// A write into the active segment's file failed: the partition turns
    /// read-only (the bytes after the log's end may now be neither zeros
    /// nor a batch). Returns the error.
    #[cold]
    fn write_failed(&mut self, path: PathBuf, e: Error) -> Error {
        tracing::error!(
            file = %path.display(),
            error = %e,
            "a write failed: the partition is read-only from now on"
        );
        self.failed = Some((path, e.to_string()));
        e
    }

    /// Closes the active segment and starts a new one at `next_offset`.
    ///
    /// Every step that can fail (a full disk, no file descriptor left) comes
    /// before any change: a failed roll leaves the active segment as it was
    /// (its file not cut, still mapped for appends) and no new files, so the
    /// next append simply tries again.
    fn roll(&mut self, dir: &Path, limits: Limits) -> Result<()> {
        self.seal_open();
        let new_active = Active::create(dir, self.next_offset, limits)?;
        let a = &mut self.active;
        let prepared = (|| {
            let old_file = DataFile::open(&a.seg.log_path, false)?;
            // The indexes are fsynced with the segment by the background
            // flush; until then the segment is after the recovery point, and
            // recovery rebuilds them.
            let index_files = write_index_files(&a.seg, &a.ix)?;
            // No zeros may land past the cut (a failed roll leaves the
            // fence closed: the segment is then written without zeroing).
            a.fence.close();
            old_file.truncate(a.write_pos)?;
            Ok((old_file, index_files))
        })();
        let (old_file, index_files) = match prepared {
            Ok(p) => p,
            Err(e) => {
                new_active.remove_files();
                return Err(e);
            }
        };
        self.unsynced.extend(index_files);
        let a = &mut self.active;
        let mut ix = a.ix.clone();
        ix.add_time_entry(a.seg.base_offset);
        a.seg.set_closed(a.write_pos, Some(ix.max_timestamp));
        let old = std::mem::replace(&mut self.active, new_active);
        tracing::debug!(
            dir = %dir.display(),
            base_offset = old.seg.base_offset,
            bytes = old.write_pos,
            next_base_offset = self.next_offset,
            "segment rolled"
        );
        self.unsynced.push(Arc::new(old_file));
        self.closed.push(Arc::clone(&old.seg));
        self.dir_dirty = true;
        Ok(())
    }
}

impl Active {
    /// A new, empty segment; on failure, no file of it is left behind.
    fn create(dir: &Path, base_offset: u64, limits: Limits) -> Result<Active> {
        let segment_bytes = limits.segment_bytes;
        let seg = Segment::new(dir, base_offset, limits.compacted);
        let file = DataFile::create_new(&seg.log_path)?;
        let paths = [
            seg.log_path.clone(),
            seg.index_path.clone(),
            seg.timeindex_path.clone(),
        ];
        let created = (|| {
            DataFile::open(&seg.index_path, true)?;
            DataFile::open(&seg.timeindex_path, true)?;
            seg.set_verified_from(0);
            Active::with_file(seg, file, 0, IndexBuilder::new(), segment_bytes)
        })();
        if created.is_err() {
            for p in paths {
                let _ = std::fs::remove_file(p);
            }
        }
        created
    }

    /// Removes the files of a segment [`create`](Self::create) made and
    /// that was never used.
    fn remove_files(self) {
        for p in [
            &self.seg.log_path,
            &self.seg.index_path,
            &self.seg.timeindex_path,
        ] {
            let _ = std::fs::remove_file(p);
        }
    }

    fn resume(seg: Segment, len: u64, ix: IndexBuilder, segment_bytes: u64) -> Result<Active> {
        let file = DataFile::open(&seg.log_path, false)?;
        Active::with_file(seg, file, len, ix, segment_bytes)
    }

    fn with_file(
        seg: Segment,
        file: DataFile,
        len: u64,
        ix: IndexBuilder,
        segment_bytes: u64,
    ) -> Result<Active> {
        let capacity = segment_bytes.max(len);
        let map = Arc::new(SegmentMap::Raw(file.map_raw(capacity)?));
        let allocated = file.len()?;
        Ok(Active {
            seg: Arc::new(seg),
            map,
            capacity,
            allocated,
            write_pos: len,
            sealed_end: len,
            prefaulted: len,
            pwritten_to: len,
            run_start: len,
            run_began: Instant::now(),
            hardened: len,
            writable: len,
            fence: Arc::new(Fence::new(len)),
            open: None,
            ix,
        })
    }

    #[inline]
    /// Replaces the batch just sealed at `start..write_pos` with its
    /// compressed form, in place, if that is smaller. Compressed topics never
    /// share the open batch's bytes with readers (`plan_read` copies them),
    /// so nothing else refers to these bytes.
    ///
    /// Crash safety: the sealed batch is first written to the partition's
    /// `compressing.batch` file (no fsync: it guards against the process
    /// dying mid-copy, when the page cache still holds it; a power loss
    /// loses only unsynced batches, as without compression). Recovery puts
    /// it back if the segment ends in a half-copied batch at its offset
    /// (see `recover_compressing`). On any error the batch simply stays
    /// uncompressed.
    fn compress_sealed(&mut self, start: u64, codec: Compression) {
        let len = (self.write_pos - start) as usize;
        let mut packed = Vec::new();
        {
            // SAFETY: `start..write_pos` lies within the allocated part of
            // the map and holds the batch this writer (holding the state
            // lock) just sealed; no mutable reference to it exists.
            let batch =
                unsafe { std::slice::from_raw_parts(self.map.ptr().add(start as usize), len) };
            if format::compress_batch(batch, codec, &mut packed).is_err() || packed.len() >= len {
                return;
            }
            let journal = self.seg.log_path.with_file_name(COMPRESSING_FILE);
            let saved = DataFile::open(&journal, true).and_then(|f| f.write_all_at(batch, 0));
            if saved.is_err() {
                return;
            }
        }
        // SAFETY: as above, and no shared reference to these bytes exists:
        // the one above is gone, and readers of a compressed topic are
        // handed copies of the open batch, never these bytes (readers see
        // the map only below `sealed_end`, which is `start`).
        let dst =
            unsafe { std::slice::from_raw_parts_mut(self.map.mut_ptr().add(start as usize), len) };
        #[cfg(test)]
        if io::faults::compression_crash_due() {
            // The process "dies" here; the test drops this state unused.
            let half = packed.len() / 2;
            dst[..half].copy_from_slice(&packed[..half]);
            return;
        }
        dst[..packed.len()].copy_from_slice(&packed);
        dst[packed.len()..].fill(0);
        self.write_pos = start + packed.len() as u64;
    }

    /// Publishes everything written as sealed, to readers, and keeps the
    /// mapped pages around the writer bounded: released behind it, zeroed
    /// and faulted in ahead of it (both by the pager). Every path that
    /// seals or copies a batch ends here.
    fn publish_sealed(&mut self) {
        self.sealed_end = self.write_pos;
        self.seg.release_behind(&self.map, self.sealed_end);
        self.prefault_ahead();
    }

    /// Has the pager (see `pager.rs`) write zeros to and fault in the pages
    /// ahead of the writer: as far ahead as the writer wrote through the
    /// map in its current run, at most [`PREFAULT_AHEAD`], and only once
    /// that is [`PREFAULT_MIN`]. Called whenever a batch is sealed.
    ///
    /// The pages are dirty zeros until the writer fills them
    /// (the kernel may write them back first), so the window follows the
    /// writer's pace. A run lasts at most [`PREFAULT_PACE`] and ends at an
    /// fsync, so a partition that writes less than `PREFAULT_MIN` in that
    /// time, or is fsynced every few appends (`SyncPolicy::Always`, where
    /// the fsync, not the fault, is the cost), gets no window, and an fsync
    /// writes no more zeros than the data written in the run before it.
    #[inline]
    fn prefault_ahead(&mut self) {
        // Saturating: compressing the batch just sealed moves the writer
        // back, possibly past a `run_start` set before the seal.
        let run = self
            .write_pos
            .saturating_sub(self.run_start.max(self.pwritten_to));
        if run >= PREFAULT_MIN {
            self.prefault_run(run);
        }
    }

    fn prefault_run(&mut self, run: u64) {
        if self.run_began.elapsed() > PREFAULT_PACE {
            // Too slow for a window: start measuring again from here.
            self.restart_run();
            return;
        }
        let ahead = run.min(PREFAULT_AHEAD);
        if self.write_pos + ahead >= self.prefaulted + ahead / 4 {
            self.prefault_range(ahead);
        }
    }

    /// Before the fsync of a durable append: if the writer is within
    /// [`HARDEN_LOW`] of the end of the blocks known written, the range up
    /// to [`HARDEN_AHEAD`] past it, for the fsync to write as zeros.
    ///
    /// Segment files grow by `posix_fallocate`, whose blocks are
    /// *unwritten* extents on ext4 and XFS: the first writeback into one
    /// converts it, a metadata change that `fdatasync` must commit to the
    /// journal. Small durable appends land in a new page every few fsyncs
    /// (every other one at 16 appenders of 126-byte records), and on this
    /// machine such an fsync took 180–240 µs against 110–140 µs for one
    /// that rewrote a page already written (a C probe of `fdatasync` after
    /// `memcpy` into a shared map). Writing the zeros ahead, about 768 KiB
    /// at a time in an fsync that happens anyway, converts the extents in
    /// bulk: 16 threads × 2,000 durable appends ran at 64.7–83.9 against
    /// 51.1–64.2 k/s (a scratch program, six alternating pairs). (A first
    /// version that wrote the zeros with `pwrite` and an fsync of its own
    /// at every growth of the file brought the 16-thread fsync from
    /// 183–217 to 126–150 µs in `cargo bench --bench compare -- --only=5
    /// --quick`; zeros written by `pwrite` and left in the page cache made
    /// later writes through the map slower, so the pages are filled
    /// through the map.) PostgreSQL zero-fills new WAL files for the same
    /// reason.
    ///
    /// Only while each fsync covers little new data (less than
    /// [`HARDEN_MAX_RUN`]): an fsync of large records converts one extent
    /// per fsync anyway, and zeros ahead of it would double what it writes.
    /// `hardened` is a hint for speed only (zeros and unwritten blocks read
    /// back the same). So when the blocks cannot be allocated (a full
    /// disk), the range already allocated is written and the mark moves
    /// anyway, so that the allocation is not tried again at every fsync;
    /// an append that needs the space reports the error. `None` if nothing
    /// is to be written, or populating is off (see `pager.rs`).
    fn harden_ahead(&mut self) -> Option<(Arc<SegmentMap>, u64, u64)> {
        let run = self.write_pos.saturating_sub(self.run_start);
        if run >= HARDEN_MAX_RUN
            || self.hardened >= self.write_pos + HARDEN_LOW
            || !super::pager::populates()
        {
            return None;
        }
        let start = self.hardened.max(self.write_pos);
        let want = (self.write_pos + HARDEN_AHEAD).min(self.capacity);
        let end = match self.ensure_allocated(want) {
            Ok(()) => want,
            Err(_) => want.min(self.allocated),
        };
        self.hardened = want;
        (end > start).then(|| (Arc::clone(&self.map), start, end))
    }

    fn restart_run(&mut self) {
        self.run_start = self.write_pos;
        self.run_began = Instant::now();
    }

    #[cold]
    fn prefault_range(&mut self, ahead: u64) {
        let want = (self.write_pos + ahead).min(self.capacity);
        // An error here (a full disk) is the next append's to report.
        let _ = self.ensure_allocated(want);
        let start = self.prefaulted.max(self.writable);
        let end = want.min(self.allocated);
        if end > start {
            // Opened here, under the state lock, so it is this segment's
            // file; the job closes it. Without a descriptor (none left),
            // the writer's page faults do the work.
            if let Ok(file) = DataFile::open(&self.seg.log_path, false) {
                super::pager::zero(&self.seg, &self.fence, file, &self.map, start, end);
            }
            self.prefaulted = end;
        }
    }

    /// Makes `write_pos..end` writable: allocated, and out of the pager's
    /// zeroing. Every write into the segment's file comes after it.
    ///
    /// The writer claims [`WRITE_RESERVE`] past its position at a time, so
    /// the fence (two sequentially consistent atomic operations, see
    /// `pager::Fence`) is crossed once per that many bytes, not per record.
    #[inline]
    fn make_room(&mut self, end: u64) -> Result<()> {
        if end <= self.writable {
            return Ok(());
        }
        self.reserve(end)
    }

    #[cold]
    fn reserve(&mut self, end: u64) -> Result<()> {
        self.ensure_allocated(end)?;
        let to = (self.write_pos + WRITE_RESERVE)
            .max(end)
            .min(self.allocated);
        self.fence.advance(to);
        self.writable = to;
        Ok(())
    }

    fn ensure_allocated(&mut self, end: u64) -> Result<()> {
        if end <= self.allocated {
            return Ok(());
        }
        self.grow(end)
    }

    #[cold]
    fn grow(&mut self, end: u64) -> Result<()> {
        let step = self.allocated.clamp(ALLOC_STEP_MIN, ALLOC_STEP_MAX);
        let target = (self.allocated + step).max(end).min(self.capacity);
        DataFile::open(&self.seg.log_path, false)?.allocate(target)?;
        self.allocated = target;
        Ok(())
    }

    fn open_batch(
        &mut self,
        base_offset: u64,
        ts: i64,
        producer: Option<ProducerBatch>,
        leader_epoch: i32,
    ) {
        // SAFETY: `write_pos..write_pos+61` is allocated (checked by the
        // caller) and beyond everything published to readers; we hold the
        // state lock.
        let header = unsafe {
            std::slice::from_raw_parts_mut(
                self.map.mut_ptr().add(self.write_pos as usize),
                BATCH_HEADER_BYTES,
            )
        };
        format::write_open_header(
            header,
            NewBatch {
                base_offset,
                base_timestamp: ts,
                leader_epoch,
                producer,
            },
        );
        self.open = Some(OpenBatch {
            start: self.write_pos,
            base_offset,
            base_timestamp: ts,
            max_timestamp: ts,
            count: 0,
            opened: Instant::now(),
            producer,
        });
        self.write_pos += BATCH_HEADER_BYTES as u64;
    }

    /// Encodes a record (`body` from `RecordParts::body_len`, `len` with
    /// its length prefix) at `write_pos` and commits it to the open batch.
    #[inline]
    fn write_record(
        &mut self,
        parts: RecordParts<'_>,
        body: usize,
        ts_delta: i64,
        off_delta: i32,
        len: u64,
        ts: i64,
    ) {
        let open = self.open.as_mut().expect("an open batch");
        // SAFETY: `write_pos..write_pos+len` is allocated (checked by the
        // caller), within the map's capacity, and beyond everything published
        // to readers; we hold the state lock, so nobody else touches it.
        let dst = unsafe {
            std::slice::from_raw_parts_mut(
                self.map.mut_ptr().add(self.write_pos as usize),
                len as usize,
            )
        };
        let written = parts.encode_body(dst, body, ts_delta, off_delta);
        debug_assert_eq!(written as u64, len);
        open.count += 1;
        open.max_timestamp = open.max_timestamp.max(ts);
        // The count is stored after the record's bytes: a process killed
        // between the two leaves a count that covers whole records only.
        compiler_fence(Ordering::Release);
        // SAFETY: the count field lies in the open batch's header, which no
        // reader references (see `seal_open`).
        unsafe {
            std::ptr::write_unaligned(
                self.map
                    .mut_ptr()
                    .add(open.start as usize + RECORDS_COUNT_OFFSET)
                    as *mut [u8; 4],
                (open.count as i32).to_be_bytes(),
            );
        }
        self.write_pos += len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    pub(super) const LIMITS: Limits = Limits {
        segment_bytes: 64 * 1024,
        compacted: false,
        retention_bytes: None,
        retention_ms: None,
        compression: Compression::None,
    };

    pub(super) fn topic() -> Arc<str> {
        Arc::from("t")
    }

    /// An hour in milliseconds: the time retention of tests that expire
    /// segments by moving "now" rather than by waiting.
    const HOUR: i64 = 3_600_000;

    fn append_n(log: &PartitionLog, from: usize, n: usize, value_len: usize) {
        append_n_at(log, from, n, value_len, 1_000);
    }

    /// [`append_n`] with record `i` stamped `ts0 + i`.
    fn append_n_at(log: &PartitionLog, from: usize, n: usize, value_len: usize, ts0: i64) {
        for i in from..from + n {
            let key = format!("key-{i}");
            let value = vec![(i % 251) as u8; value_len];
            let parts = RecordParts::new(Some(key.as_bytes()), Some(&value), &[]);
            log.append([(parts, ts0 + i as i64)], |_, _| {}).unwrap();
        }
    }

    /// A batch whose third record is malformed: the two before it are
    /// returned, the read fails, and the region's count is exactly one
    /// per message left plus the reader's own (no reference leaked or
    /// lost by the bulk reservation).
    #[test]
    fn a_failed_decode_leaves_the_region_counted_once_per_message() {
        let mut bytes = vec![0u8; 1024];
        let mut pos = 0;
        for (i, v) in [&b"one"[..], b"two"].iter().enumerate() {
            let parts = RecordParts::new(Some(b"k"), Some(v), &[]);
            pos += parts.encode(&mut bytes[pos..], 0, i as i32);
        }
        // A record whose length runs past the batch.
        bytes[pos] = 0x7e; // zig-zag 63
        bytes[pos + 1] = 0;
        let end = pos + 10;
        let map = Arc::new(SegmentMap::Heap(bytes.into_boxed_slice()));
        let region = share_region(&topic(), &map, 0, end as u64);
        let mut out = Vec::new();
        let result = decode_records(&region, 0, 0..end, 0, 5, 100, 0, 0, 10, &mut out);
        assert!(result.is_err(), "the third record is malformed");
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].value(), Some(&b"two"[..]));
        assert_eq!(region.count(), 3, "the reader's and one per message");
        out.truncate(1);
        assert_eq!(region.count(), 2);
        // A read that stops at `max` gives back what it reserved beyond.
        let mut more = Vec::new();
        decode_records(&region, 0, 0..end, 0, 2, 100, 0, 0, 1, &mut more).unwrap();
        assert_eq!((more.len(), region.count()), (1, 3));
        drop((out, more));
        assert_eq!(region.count(), 1);
    }

    #[test]
    fn concurrent_durable_appenders_are_covered_when_sync_returns_and_share_fsyncs() {
        const THREADS: usize = 8;
        const EACH: usize = 100;
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(PartitionLog::create(dir.path(), topic(), 0, LIMITS).unwrap());
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    let value = [t as u8; 100];
                    for _ in 0..EACH {
                        let parts = RecordParts::new(None, Some(&value), &[]);
                        let end = log.append([(parts, 1_000)], |_, _| {}).unwrap();
                        log.sync_to(end).unwrap();
                        let durable = log.durable_offset.load(Ordering::Acquire);
                        assert!(durable >= end, "sync_to({end}) returned at {durable}");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let appends = (THREADS * EACH) as u64;
        let m = log.metrics();
        assert_eq!(m.records_in, appends);
        // Eight appenders that wait for an fsync each time share them (an
        // fsync per append would be `appends`).
        assert!(
            m.fsyncs < appends,
            "{} fsyncs for {appends} durable appends",
            m.fsyncs
        );
        drop(log);
        let log = reopen(dir.path(), false, RecoveryPoint::default());
        assert_eq!(log.end_offset(), appends, "all durable after a reboot");
    }

    /// Resident bytes of this process's maps of `file` (`/proc/self/smaps`).
    #[cfg(target_os = "linux")]
    fn resident_bytes_of(file: &Path) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let name = file.to_str().unwrap();
        let mut in_file = false;
        let mut total = 0;
        for line in smaps.lines() {
            if let Some(kb) = line.strip_prefix("Rss:") {
                if in_file {
                    let kb: u64 = kb.trim().trim_end_matches("kB").trim().parse().unwrap();
                    total += kb * 1024;
                }
            } else if line.contains('-') && line.split_whitespace().count() >= 5 {
                // A mapping's header line: address range, perms, offset,
                // device, inode, then the path (if any).
                in_file = line.ends_with(name);
            }
        }
        total
    }

    /// Pages of `start..end` of the active segment's file in the page cache
    /// (`mincore` on the writer's map, which reports the page cache for
    /// pages not mapped in).
    #[cfg(target_os = "linux")]
    fn cached_pages(log: &PartitionLog, start: u64, end: u64) -> u64 {
        let page = io::page_size() as u64;
        let map = Arc::clone(&log.state.lock().active.map);
        let mut vec = vec![0u8; (end - start).div_ceil(page) as usize];
        // SAFETY: `start` is page-aligned and `start..end` lies within the
        // map (it is below the segment's capacity); mincore writes one byte
        // per page into `vec`, which has room for them all.
        let rc = unsafe {
            libc::mincore(
                map.mut_ptr().add(start as usize).cast(),
                (end - start) as usize,
                vec.as_mut_ptr(),
            )
        };
        assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
        vec.iter().filter(|&&b| b & 1 == 1).count() as u64
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn writers_and_sequential_readers_keep_a_bounded_part_of_a_segment_mapped() {
        const MIB: u64 = 1024 * 1024;
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            segment_bytes: 96 * MIB,
            ..LIMITS
        };
        let log = PartitionLog::create(dir.path(), topic(), 0, limits).unwrap();
        let first = log.state.lock().active.seg.log_path.clone();
        // Small enough to be written through the map (larger records are
        // written with pwrite and never map the writer's pages).
        let value = vec![7u8; 4096];
        let parts = RecordParts::new(None, Some(&value), &[]);
        let records = 64 * MIB / value.len() as u64;
        for _ in 0..records {
            log.append([(parts, 1_000)], |_, _| {}).unwrap();
        }
        // Behind the writer: the chunk kept for readers and the one not yet
        // released; ahead of it, what the pager faulted in.
        let bound = 2 * RELEASE_CHUNK + PREFAULT_AHEAD + MIB;
        crate::storage::pager::drain();
        let writing = resident_bytes_of(&first);
        assert!(
            writing <= bound,
            "the writer keeps {writing} bytes of 64 MiB mapped (bound {bound})"
        );
        // Roll, then read the closed segment back in order, holding on
        // to a message from its start.
        log.roll_now().unwrap();
        let held = log.read(0, 1).unwrap();
        let mut next = 0;
        let mut total = 0;
        while next < records {
            let msgs = log.read(next, 16).unwrap();
            for m in &msgs {
                assert_eq!(m.value().unwrap(), &value[..], "offset {}", m.offset());
            }
            next = msgs.last().unwrap().offset() + 1;
            total += msgs.len() as u64;
        }
        assert_eq!(total, records);
        crate::storage::pager::drain();
        let reading = resident_bytes_of(&first);
        assert!(
            reading <= MIB,
            "a reader done with the segment keeps {reading} bytes of it mapped"
        );
        // Half way through, it keeps the chunks behind it.
        let mut next = 0;
        while next < records / 2 {
            next = log.read(next, 16).unwrap().last().unwrap().offset() + 1;
        }
        crate::storage::pager::drain();
        let half = resident_bytes_of(&first);
        assert!(
            half <= bound,
            "the reader keeps {half} bytes of 64 MiB mapped (bound {bound})"
        );
        // What was released reads back the same from the page cache, also
        // through a message that pointed there all along.
        let again = log.read(0, 1).unwrap();
        assert_eq!(again[0].value().unwrap(), &value[..]);
        assert_eq!(held[0].value().unwrap(), &value[..]);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn the_pager_zeroes_ahead_of_a_fast_writer_only() {
        const MIB: u64 = 1024 * 1024;
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            segment_bytes: 64 * MIB,
            ..LIMITS
        };
        let log = PartitionLog::create(dir.path(), topic(), 0, limits).unwrap();
        let file = log.state.lock().active.seg.log_path.clone();
        let page = io::page_size() as u64;
        // Records under `staged::STAGED_MIN_RECORD`: calls of them go
        // through the map, however large.
        let value = vec![7u8; 400];
        let parts = RecordParts::new(None, Some(&value), &[]);
        let requested_ahead = |log: &PartitionLog| {
            let st = log.state.lock();
            (
                st.active.write_pos,
                st.active.prefaulted.saturating_sub(st.active.write_pos),
            )
        };
        // Durable appends: every fsync restarts the run, so the pager is
        // asked for nothing ahead; what is mapped ahead of the writer is
        // only the zeros the fsyncs wrote (`Active::harden_ahead`).
        for _ in 0..2 * MIB / 400 {
            log.append([(parts, 1_000)], |_, _| {}).unwrap();
            log.sync_to(log.end_offset()).unwrap();
        }
        crate::storage::pager::drain();
        let (written, ahead) = requested_ahead(&log);
        let hardened = log.state.lock().active.hardened;
        let synced = resident_bytes_of(&file);
        assert_eq!(ahead, 0, "nothing requested ahead of a synced writer");
        assert!(hardened <= written + HARDEN_AHEAD);
        assert!(
            synced <= hardened.next_multiple_of(page),
            "{synced} bytes mapped for {written} written and synced, {hardened} hardened"
        );
        // A slow writer, one that takes longer than PREFAULT_PACE for
        // PREFAULT_MIN, gets nothing either. (A loaded machine can only
        // make it slower.)
        for _ in 0..5 {
            std::thread::sleep(PREFAULT_PACE + Duration::from_millis(10));
            let records = (0..200 * 1024 / 400).map(|_| (parts, 1_000));
            log.append(records, |_, _| {}).unwrap();
        }
        assert_eq!(requested_ahead(&log).1, 0, "nothing ahead of a slow writer");
        // A fast writer: 2 MiB in one call. (Retried should the machine
        // stall the call for longer than PREFAULT_PACE.)
        for _ in 0..10 {
            let records = (0..2 * MIB / 400).map(|_| (parts, 1_000));
            log.append(records, |_, _| {}).unwrap();
            if requested_ahead(&log).1 > 0 {
                break;
            }
        }
        crate::storage::pager::drain();
        let (written, ahead) = requested_ahead(&log);
        assert!(
            (PREFAULT_MIN / 2..=PREFAULT_AHEAD).contains(&ahead),
            "{ahead} bytes requested ahead of a fast writer"
        );
        // What was requested is in the page cache, written as zeros by
        // the pager past what the writer had claimed.
        let (claimed, requested_end) = {
            let st = log.state.lock();
            (st.active.writable, st.active.prefaulted)
        };
        // (A window smaller than the writer's claim, after a stall of
        // the machine restarted the run, leaves nothing past the claim.)
        let from = claimed.next_multiple_of(page);
        if from < requested_end {
            let cached = cached_pages(&log, from, requested_end);
            assert_eq!(
                cached,
                (requested_end - from).div_ceil(page),
                "pages cached of {from}..{requested_end}"
            );
        }
        if crate::storage::pager::populates() {
            // And mapped in, and nothing more. (The pages released behind
            // the writer are not counted; pages the writer had claimed
            // when the window opened were neither zeroed nor mapped in by
            // the pager, and may not be written yet.)
            let released = log.state.lock().active.seg.released();
            let fast = resident_bytes_of(&file);
            let expected = written + ahead - released;
            assert!(
                fast + page + WRITE_RESERVE >= expected && fast <= expected + 2 * page,
                "{fast} bytes mapped for {written} written, {ahead} ahead, {released} released"
            );
        }
        // The pages faulted in ahead are not data: a reopen without a
        // clean close ends the log where the writer stopped.
        let end = log.end_offset();
        drop(log);
        let log = reopen_with(dir.path(), limits);
        assert_eq!(log.end_offset(), end);
    }

    /// Records written with `pwrite` (larger than `LARGE_RECORD_BYTES`)
    /// ask the pager for nothing ahead: its zeros would only be
    /// overwritten, while both writes take turns on the file's lock. They
    /// still count as a large run for a durable sync, which then writes
    /// no zeros ahead either (`harden_ahead`).
    #[test]
    fn large_records_ask_for_no_zeros_ahead() {
        const MIB: u64 = 1024 * 1024;
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            segment_bytes: 64 * MIB,
            ..LIMITS
        };
        let log = PartitionLog::create(dir.path(), topic(), 0, limits).unwrap();
        let value = vec![7u8; MIB as usize];
        let parts = RecordParts::new(None, Some(&value), &[]);
        let records = (0..8).map(|_| (parts, 1_000));
        log.append(records, |_, _| {}).unwrap();
        log.sync_to(log.end_offset()).unwrap();
        let st = log.state.lock();
        assert!(st.active.write_pos > 8 * MIB);
        assert_eq!(st.active.prefaulted, 0, "nothing requested ahead");
        assert_eq!(st.active.hardened, 0, "no zeros written ahead by the sync");
    }

    /// A roll and a close cut the file at the writer's end while the pager
    /// may still have zeroing jobs for it queued: no zeros may land past
    /// the cut afterwards (a `pwrite` there would grow the file again).
    #[test]
    fn zeros_queued_ahead_never_grow_a_cut_segment() {
        const MIB: u64 = 1024 * 1024;
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            segment_bytes: 8 * MIB,
            ..LIMITS
        };
        let log = PartitionLog::create(dir.path(), topic(), 0, limits).unwrap();
        let part_dir = log
            .state
            .lock()
            .active
            .seg
            .log_path
            .parent()
            .unwrap()
            .to_owned();
        // Records under `staged::STAGED_MIN_RECORD`: calls of them go
        // through the map, however large.
        let value = vec![7u8; 400];
        let parts = RecordParts::new(None, Some(&value), &[]);
        // Fast writes, each asking for zeros ahead, then rolls (at 8 MiB)
        // and a close, with the requests still queued.
        let mut zeroed_segments = 0;
        for _ in 0..12 {
            let segment = Arc::clone(&log.state.lock().active.seg);
            let records = (0..2 * MIB / 400).map(|_| (parts, 1_000));
            log.append(records, |_, _| {}).unwrap();
            let st = log.state.lock();
            if Arc::ptr_eq(&st.active.seg, &segment) && st.active.prefaulted > st.active.writable {
                zeroed_segments += 1;
            }
        }
        assert!(zeroed_segments > 0, "no zeros were ever asked for");
        let end = log.end_offset();
        let (_, clean) = log.close().unwrap();
        crate::storage::pager::drain();
        let mut logs: Vec<_> = std::fs::read_dir(&part_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.sort();
        assert!(logs.len() >= 2, "rolled: {logs:?}");
        let last = logs.pop().unwrap();
        assert_eq!(std::fs::metadata(&last).unwrap().len(), clean.active_len);
        for closed in &logs {
            let data = std::fs::read(closed).unwrap();
            let base: u64 = closed
                .file_stem()
                .unwrap()
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            let scan = scan_batches(&data, base, 0, false);
            assert!(scan.bad.is_none(), "{}: {:?}", closed.display(), scan.bad);
            assert_eq!(
                scan.end,
                data.len() as u64,
                "{} ends in whole batches",
                closed.display()
            );
        }
        let log = reopen_with(dir.path(), limits);
        assert_eq!(log.end_offset(), end);
        assert_eq!(
            log.read(end - 1, 1).unwrap()[0].value().unwrap(),
            &value[..]
        );
    }

    /// Regression: a read of zero records returned `Ok(vec![])` for any
    /// offset, even past the end, skipping the range check `read` documents.
    #[test]
    fn a_read_of_zero_records_still_checks_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::create(dir.path(), topic(), 0, LIMITS).unwrap();
        append_n(&log, 0, 3, 10);
        assert!(log.read(3, 0).unwrap().is_empty());
        assert!(log.read(0, 0).unwrap().is_empty());
        for past in [4, u64::MAX] {
            assert!(
                matches!(log.read(past, 0), Err(Error::OffsetOutOfRange { offset, end: 3, .. }) if offset == past),
                "read({past}, 0)"
            );
        }
    }

    /// Regression: when retention deleted the segment a read had just
    /// planned to start in, the read returned `Ok(vec![])` for an offset
    /// below the end instead of `Error::OffsetOutOfRange` (found by
    /// tests/stress.rs).
    #[test]
    fn a_read_whose_segment_retention_deletes_is_out_of_range() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(PartitionLog::create(dir.path(), topic(), 0, LIMITS).unwrap());
        append_n(&log, 0, 200, 1000);
        let active = log.state.lock().active.seg.base_offset;
        assert!(active > 0, "no segment rolled");
        let l = Arc::clone(&log);
        crate::io::faults::after_next_read_plan(move || l.delete_before(active).unwrap());
        let r = log.read(0, 10);
        assert!(
            matches!(r, Err(Error::OffsetOutOfRange { offset: 0, start, .. }) if start == active),
            "{r:?}"
        );
        assert_eq!(log.read(active, 5).unwrap()[0].offset(), active);
    }

    /// The file kept open between durable appends' fsyncs is always the
    /// active segment's: a roll, or a truncation that rewrites the active
    /// file, makes the next fsync open the new one; other syncs keep none.
    #[test]
    fn the_kept_fsync_file_follows_the_active_segment() {
        let limits = Limits {
            segment_bytes: 16 * 1024,
            ..LIMITS
        };
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::create(dir.path(), topic(), 0, limits).unwrap();
        let append = |log: &PartitionLog, len: usize| {
            let value = vec![7u8; len];
            let parts = RecordParts::new(Some(b"k"), Some(&value), &[]);
            log.append([(parts, 1_000)], |_, _| {}).unwrap()
        };
        let kept = |log: &PartitionLog| {
            let st = log.state.lock();
            let slot = log.sync_file.lock();
            slot.as_ref().map(|(seg, f)| {
                assert_eq!(f.path(), seg.log_path, "the file is its segment's");
                Arc::ptr_eq(seg, &st.active.seg)
            })
        };
        append(&log, 100);
        log.sync().unwrap();
        assert_eq!(kept(&log), None, "a plain sync keeps no file open");
        let end = append(&log, 100);
        log.sync_to(end).unwrap();
        assert_eq!(kept(&log), Some(true));
        let first = Arc::clone(&log.state.lock().active.seg);
        while log.state.lock().closed.is_empty() {
            append(&log, 1000);
        }
        assert_eq!(kept(&log), Some(false), "stale until the next fsync");
        let end = append(&log, 100);
        log.sync_to(end).unwrap();
        assert_eq!(kept(&log), Some(true), "the new segment's file");
        assert!(!Arc::ptr_eq(&first, &log.state.lock().active.seg));
        // A truncation into the active segment rewrites its file.
        let before = Arc::clone(&log.state.lock().active.seg);
        log.truncate_to(log.log_end_offset() - 1).unwrap();
        assert_eq!(
            kept(&log),
            Some(false),
            "a rewritten file is not the kept one"
        );
        let end = append(&log, 100);
        log.sync_to(end).unwrap();
        assert_eq!(kept(&log), Some(true));
        assert!(!Arc::ptr_eq(&before, &log.state.lock().active.seg));
        // Everything synced reads back after a crash-reopen.
        let n = log.read(0, usize::MAX).unwrap().len();
        drop(log);
        assert_eq!(records_after_reopen(dir.path(), limits), n);
    }

    /// Bytes of `start..end` of `path` that the file system reports as
    /// unwritten or delayed-allocation extents, or as holes (`FIEMAP`,
    /// without syncing); `None` if it does not answer `FIEMAP`.
    #[cfg(target_os = "linux")]
    fn unwritten_bytes(path: &Path, start: u64, end: u64) -> Option<u64> {
        use std::os::fd::AsRawFd;
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Extent {
            logical: u64,
            physical: u64,
            length: u64,
            reserved64: [u64; 2],
            flags: u32,
            reserved: [u32; 3],
        }
        #[repr(C)]
        struct Fiemap {
            start: u64,
            length: u64,
            flags: u32,
            mapped: u32,
            count: u32,
            reserved: u32,
            extents: [Extent; 64],
        }
        const FS_IOC_FIEMAP: u64 = 0xC020_660B; // _IOWR('f', 11, struct fiemap)
        const LAST: u32 = 0x1;
        const DELALLOC: u32 = 0x4;
        const UNWRITTEN: u32 = 0x800;
        let file = std::fs::File::open(path).ok()?;
        let none = Extent {
            logical: 0,
            physical: 0,
            length: 0,
            reserved64: [0; 2],
            flags: 0,
            reserved: [0; 3],
        };
        // Walks the extents 64 at a time; `written` counts the bytes of
        // `start..end` in written extents, the rest is the answer.
        let (mut pos, mut written) = (start, 0);
        while pos < end {
            let mut map = Fiemap {
                start: pos,
                length: end - pos,
                flags: 0,
                mapped: 0,
                count: 64,
                reserved: 0,
                extents: [none; 64],
            };
            // SAFETY: `map` is a `struct fiemap` (same layout, `repr(C)`)
            // with room for the `count` extents the kernel may write, and
            // lives across the call; the descriptor is open.
            let rc = unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FIEMAP as _, &mut map) };
            if rc != 0 {
                return None;
            }
            let extents = &map.extents[..(map.mapped as usize).min(64)];
            for e in extents {
                if e.flags & (UNWRITTEN | DELALLOC) == 0 {
                    let (from, to) = (e.logical.max(start), (e.logical + e.length).min(end));
                    written += to.saturating_sub(from);
                }
            }
            match extents.last() {
                Some(e) if e.flags & LAST == 0 && e.logical + e.length > pos => {
                    pos = e.logical + e.length;
                }
                _ => break,
            }
        }
        Some(end - start - written)
    }

    /// Durable appends (`sync_to`) have their fsync write the blocks up to
    /// `HARDEN_AHEAD` past the writer as zeros, so the fsyncs after them
    /// rewrite written blocks instead of converting unwritten extents; a
    /// plain sync, or one that covers a large run, does not.
    #[cfg(target_os = "linux")]
    #[test]
    fn durable_syncs_write_the_blocks_ahead_as_zeros() {
        let limits = Limits {
            segment_bytes: 8 << 20,
            ..LIMITS
        };
        let file = |log: &PartitionLog| log.state.lock().active.seg.log_path.clone();
        let positions = |log: &PartitionLog| {
            let st = log.state.lock();
            (st.active.write_pos, st.active.hardened)
        };

        let plain_dir = tempfile::tempdir().unwrap();
        let plain = PartitionLog::create(plain_dir.path(), topic(), 0, limits).unwrap();
        append_n(&plain, 0, 10, 100);
        plain.sync().unwrap();
        let (pos, hardened) = positions(&plain);
        assert_eq!(hardened, 0, "a plain sync writes nothing ahead");
        let page = io::page_size() as u64;
        let ahead = pos.div_ceil(page) * page..pos + HARDEN_LOW;
        let Some(unwritten) = unwritten_bytes(&file(&plain), ahead.start, ahead.end) else {
            eprintln!("skipped: the file system does not answer FIEMAP");
            return;
        };
        if unwritten == 0 {
            eprintln!("skipped: the file system has no unwritten extents");
            return;
        }
        let map = Arc::clone(&plain.state.lock().active.map);
        if map.populate(0, page).is_err() {
            eprintln!("skipped: the kernel does not populate maps (MADV_POPULATE_WRITE)");
            return;
        }

        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::create(dir.path(), topic(), 0, limits).unwrap();
        append_n(&log, 0, 10, 100);
        log.sync_to(log.log_end_offset()).unwrap();
        let (pos, hardened) = positions(&log);
        assert_eq!(hardened, pos + HARDEN_AHEAD);
        assert_eq!(unwritten_bytes(&file(&log), 0, hardened), Some(0));
        let bytes = std::fs::read(file(&log)).unwrap();
        assert!(bytes.len() as u64 >= hardened);
        assert!(bytes[pos as usize..hardened as usize]
            .iter()
            .all(|&b| b == 0));

        // An fsync of a large run writes nothing ahead; the next small one
        // tops up once fewer than `HARDEN_LOW` bytes are left.
        let from = log.log_end_offset() as usize;
        append_n(&log, from, 8000, 100);
        log.sync_to(log.log_end_offset()).unwrap();
        let (pos, after_run) = positions(&log);
        assert_eq!(after_run, hardened, "a large run is not followed by zeros");
        assert!(pos + HARDEN_LOW > hardened);
        let from = log.log_end_offset() as usize;
        append_n(&log, from, 1, 100);
        log.sync_to(log.log_end_offset()).unwrap();
        let (pos, topped_up) = positions(&log);
        assert_eq!(topped_up, pos + HARDEN_AHEAD);
        assert_eq!(unwritten_bytes(&file(&log), 0, topped_up), Some(0));

        // Every record reads back, after a reopen too.
        let n = log.log_end_offset() as usize;
        assert_eq!(log.read(0, usize::MAX).unwrap().len(), n);
        drop(log);
        assert_eq!(records_after_reopen(dir.path(), limits), n);
    }

    /// A partition of 16 KiB segments created under a power-loss recorder,
    /// its directory durable (as creating a topic makes it).
    #[cfg(feature = "power-loss-sim")]
    pub(super) fn recorded_log() -> (
        tempfile::TempDir,
        crate::io::power_loss::Recorder,
        PartitionLog,
        Limits,
    ) {
        let base = tempfile::tempdir().unwrap();
        let rec = crate::io::power_loss::Recorder::start(&base.path().join("log")).unwrap();
        let limits = Limits {
            segment_bytes: 16 * 1024,
            ..LIMITS
        };
        let log = PartitionLog::create(rec.dir(), topic(), 0, limits).unwrap();
        crate::io::sync_dir(rec.dir()).unwrap();
        (base, rec, log, limits)
    }

    /// Appends records `range`, record `i` being 1,000 bytes of `i` (what
    /// [`cut_power_and_check`] checks).
    #[cfg(feature = "power-loss-sim")]
    fn append_thousands(log: &PartitionLog, range: std::ops::Range<u64>) {
        for i in range {
            let v = vec![i as u8; 1000];
            let parts = RecordParts::new(Some(b"k"), Some(&v), &[]);
            log.append([(parts, 1_000 + i as i64)], |o, _| assert_eq!(o, i))
                .unwrap();
        }
    }

    /// Cuts power right after everything `rec` recorded (what was not
    /// fsynced is lost), reopens the partition from what survives trusting
    /// `log`'s recovery point (as a checkpoint would), and checks that it
    /// holds records `0..end`, record `i` being 1,000 bytes of `i`.
    #[cfg(feature = "power-loss-sim")]
    pub(super) fn cut_power_and_check(
        base: &Path,
        rec: crate::io::power_loss::Recorder,
        log: PartitionLog,
        limits: Limits,
        end: u64,
        what: &str,
    ) {
        let point = log.recovery_point();
        let mark = rec.mark();
        let history = rec.history();
        drop(log);
        drop(rec);
        let mut replay = history.replay();
        replay.advance_to(mark);
        let after = base.join("after");
        replay
            .materialise(crate::io::power_loss::LossMode::DropUnsynced, 0, &after)
            .unwrap();
        let hints = OpenHints {
            recovery: point,
            ..Default::default()
        };
        let log = PartitionLog::open(&after, topic(), 0, limits, hints).unwrap();
        let msgs = log.read(0, usize::MAX).unwrap();
        let offsets: Vec<u64> = msgs.iter().map(|m| m.offset()).collect();
        assert_eq!(
            offsets,
            (0..end).collect::<Vec<_>>(),
            "{what}: every synced record"
        );
        for m in &msgs {
            let i = m.offset();
            assert_eq!(m.value(), Some(&vec![i as u8; 1000][..]), "{what}: {i}");
        }
    }

    /// A sync that found no descriptor left to open the active segment's
    /// file had already taken the rolled segments waiting for their fsync
    /// (and the directory's) and dropped them with the error; the next
    /// sync, finding nothing rolled, fsynced the active file alone and
    /// moved the recovery point past segments never fsynced, which a power
    /// loss then took. Found by a read-only audit of the durable path.
    #[cfg(feature = "power-loss-sim")]
    #[test]
    fn a_sync_that_fails_to_open_the_active_file_leaves_the_rolled_ones_to_the_next() {
        let (base, rec, log, limits) = recorded_log();
        // 12 records of 1000 bytes fill the first segment: 30 roll it.
        append_thousands(&log, 0..30);
        let active = {
            let st = log.state.lock();
            assert!(!st.closed.is_empty(), "rolled");
            st.active.seg.log_path.clone()
        };
        let end = log.log_end_offset();
        crate::io::faults::fail_next_open(active.file_name().unwrap().to_str().unwrap());
        let r = log.sync_to(end);
        assert!(matches!(r, Err(Error::Io { .. })), "{r:?}");
        log.sync_to(end).unwrap();
        cut_power_and_check(base.path(), rec, log, limits, end, "after a failed open");
    }

    /// After a process crash, reopening in the same boot scans the
    /// segments past the recovery point, which may exist only in the page
    /// cache. They were not queued for an fsync: the first sync fsynced
    /// the active file alone and moved the recovery point past them, and a
    /// power loss then took them while the log trusted them. Nor was the
    /// directory, whose entries the dead process may not have fsynced yet.
    /// Found by a read-only audit of the durable path.
    #[cfg(feature = "power-loss-sim")]
    #[test]
    fn the_first_sync_after_a_crash_fsyncs_the_segments_recovery_scanned() {
        // Rolled once (segment 0 scanned and queued), and not at all (the
        // directory entry of segment 0 itself, never fsynced before the
        // crash, must be by the first sync after it).
        for n in [30, 5] {
            first_sync_after_a_crash(n);
        }
    }

    #[cfg(feature = "power-loss-sim")]
    fn first_sync_after_a_crash(n: u64) {
        let (base, rec, log, limits) = recorded_log();
        let append = |log: &PartitionLog, i: u64| append_thousands(log, i..i + 1);
        // Nothing synced; then the process dies (no close).
        for i in 0..n {
            append(&log, i);
        }
        assert_eq!(!log.state.lock().closed.is_empty(), n > 12, "rolled");
        let point = log.recovery_point();
        drop(log);
        let hints = OpenHints {
            recovery: point,
            same_boot: true,
            ..Default::default()
        };
        let log = PartitionLog::open(rec.dir(), topic(), 0, limits, hints).unwrap();
        append(&log, n);
        let end = log.log_end_offset();
        log.sync_to(end).unwrap();
        cut_power_and_check(base.path(), rec, log, limits, end, &format!("{n} records"));
    }

    /// A replica's truncation rebuilt the partition's state from its files
    /// and dropped the queue of rolled segments still to be fsynced, and
    /// set the recovery point to the cut segment: the next sync moved the
    /// durable offset past segments never fsynced, which a power loss then
    /// took. Found by a read-only audit of the durable path.
    #[cfg(feature = "power-loss-sim")]
    #[test]
    fn a_truncation_leaves_rolled_segments_queued_for_their_fsync() {
        let (base, rec, log, limits) = recorded_log();
        append_thousands(&log, 0..30);
        assert!(!log.state.lock().closed.is_empty(), "rolled");
        // A follower cuts its divergent tail: the active segment's (whole)
        // batch goes, the rolled segment stays.
        let end = log.truncate_to(25).unwrap();
        assert!(end >= 12 && !log.state.lock().closed.is_empty(), "{end}");
        log.sync_to(end).unwrap();
        cut_power_and_check(base.path(), rec, log, limits, end, "after a truncation");
    }

    /// A truncation that failed after deleting segments (here the rewrite
    /// of the cut segment: no descriptor left) left the old state in
    /// place, its active segment's file unlinked: appends went into that
    /// file and syncs reported them durable. The partition is now
    /// read-only until reopened, and the reopen recovers what is on disk.
    #[test]
    fn a_truncation_that_fails_part_way_leaves_the_partition_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            segment_bytes: 16 * 1024,
            ..LIMITS
        };
        let log = PartitionLog::create(dir.path(), topic(), 0, limits).unwrap();
        let append = |log: &PartitionLog, i: u64| {
            let v = vec![i as u8; 1000];
            let parts = RecordParts::new(Some(b"k"), Some(&v), &[]);
            log.append([(parts, 1_000 + i as i64)], |_, _| {})
        };
        for i in 0..30 {
            append(&log, i).unwrap();
        }
        assert!(!log.state.lock().closed.is_empty(), "rolled");
        // Cut inside the first segment: the active one goes.
        crate::io::faults::fail_next_open("00000000000000000000.log.tmp");
        let r = log.truncate_to(5);
        assert!(matches!(r, Err(Error::Io { .. })), "{r:?}");
        let r = append(&log, 30);
        assert!(
            matches!(r, Err(Error::Io { .. })),
            "appended after it: {r:?}"
        );
        let end = log.log_end_offset();
        assert!(log.sync_to(end).is_err(), "synced after it");
        drop(log);
        // Reopening recovers what the files hold: whole batches, gapless.
        let log = reopen_with(dir.path(), limits);
        let msgs = log.read(0, usize::MAX).unwrap();
        let offsets: Vec<u64> = msgs.iter().map(|m| m.offset()).collect();
        assert_eq!(offsets, (0..log.end_offset()).collect::<Vec<_>>());
    }

    /// Regression: a roll that failed (here: no file descriptor left to
    /// open a file of the new segment) had already cut the active segment's
    /// file to its length and marked it closed, and left the new segment's
    /// `.log` behind. Every later roll failed ("file exists"), and appends
    /// that still fitted went into the map past the end of the cut file,
    /// where they were lost or read back as zeros ("magic 0 is not 2").
    /// Found by tests/stress.rs running out of file descriptors.
    #[test]
    fn a_failed_roll_changes_nothing_and_the_next_append_rolls() {
        let limits = Limits {
            segment_bytes: 16 * 1024,
            ..LIMITS
        };
        let append = |log: &PartitionLog, i: usize, len: usize| {
            let key = format!("key-{i}");
            let value = vec![i as u8; len];
            let parts = RecordParts::new(Some(key.as_bytes()), Some(&value), &[]);
            log.append([(parts, 1_000 + i as i64)], |o, _| assert_eq!(o, i as u64))
        };
        // Each step of the roll that can fail: a file of the new segment
        // (named 12: 12 records of 1000 bytes fill the first one), then the
        // old segment's log and index files.
        for suffix in [
            "00000000000000000012.timeindex",
            "00000000000000000012.log",
            "00000000000000000000.log",
            "00000000000000000000.index",
        ] {
            let dir = tempfile::tempdir().unwrap();
            let log = PartitionLog::create(dir.path(), topic(), 0, limits).unwrap();
            let mut lens = Vec::new();
            for i in 0..12 {
                append(&log, i, 1000).unwrap();
                lens.push(1000);
            }
            // 8000 bytes do not fit what is left: the append must roll.
            crate::io::faults::fail_next_open(suffix);
            let r = append(&log, 12, 8000);
            assert!(matches!(r, Err(Error::Io { .. })), "{suffix}: {r:?}");
            assert_eq!(log.end_offset(), 12, "{suffix}");
            // Small records still fit the active segment; then it rolls.
            for (i, len) in (12..).zip([10, 10, 10, 8000, 8000, 10]) {
                append(&log, i, len).unwrap_or_else(|e| panic!("{suffix}: append {i}: {e}"));
                lens.push(len);
            }
            assert!(
                !log.state.lock().closed.is_empty(),
                "{suffix}: never rolled"
            );
            let check = |log: &PartitionLog, when: &str| {
                let msgs = log.read(0, usize::MAX).unwrap();
                assert_eq!(msgs.len(), lens.len(), "{suffix} {when}");
                for (i, (m, &len)) in msgs.iter().zip(&lens).enumerate() {
                    assert_eq!(m.offset(), i as u64);
                    assert_eq!(
                        m.value(),
                        Some(&vec![i as u8; len][..]),
                        "{suffix} {when}: {i}"
                    );
                }
            };
            check(&log, "before reopening");
            drop(log);
            // After a crash (no clean close) too, byte for byte.
            check(&reopen_with(dir.path(), limits), "after reopening");
        }
    }

    /// Regression: `Log::sync` (and the background fsync of rolled
    /// segments) racing `delete_topic` failed with `Error::Io` ("open
    /// directory ...: No such file or directory") and marked the deleted
    /// partition failed; `log.sync()` then kept returning that error until
    /// the partition was dropped. Found by tests/stress.rs.
    #[test]
    fn syncing_a_partition_deleted_meanwhile_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::create(dir.path(), topic(), 0, LIMITS).unwrap();
        append_n(&log, 0, 200, 1000); // rolls: rolled files and the directory to sync
        assert!(!log.state.lock().unsynced.is_empty());
        log.delete_files().unwrap();
        log.sync().unwrap();
        log.flush_rolled().unwrap();
        assert!(log.state.lock().failed.is_none());
    }

    /// Regression: a read that had mapped a closed segment just before
    /// retention deleted it went on to load the segment's index, found the
    /// files gone, "rebuilt" an empty index (writing stray index files into
    /// the partition directory) and failed with `Error::Corrupt` ("rebuilt
    /// index failed its own check"). Found by tests/stress.rs.
    #[test]
    fn index_lookups_in_a_segment_deleted_meanwhile_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::create(dir.path(), topic(), 0, LIMITS).unwrap();
        append_n(&log, 0, 200, 1000);
        let (seg, active) = {
            let st = log.state.lock();
            (Arc::clone(&st.closed[0]), st.active.seg.base_offset)
        };
        let _map = seg.closed_map().unwrap().unwrap(); // what the reader holds
        log.delete_before(active).unwrap();
        let r = seg.closed_lookup(5);
        assert!(!matches!(r, Err(Error::Corrupt { .. }) | Ok(_)), "{r:?}");
        let r = seg.closed_time_floor(1_005);
        assert!(!matches!(r, Err(Error::Corrupt { .. }) | Ok(_)), "{r:?}");
        // As after a lookup that found the index did not match the log.
        assert!(seg.discard_index_and_rebuild().is_err());
        assert!(!seg.index_path.exists() && !seg.timeindex_path.exists());
        assert!(matches!(
            log.read(0, 1),
            Err(Error::OffsetOutOfRange { .. })
        ));
        assert_eq!(log.offset_for_timestamp(0).unwrap(), Some(active));
    }

    /// Regression: a read that planned to read a closed segment just
    /// before its topic was deleted found the index files gone, "rebuilt"
    /// them into the removed directory and failed with `Error::Io`
    /// ("open ...index.tmp: No such file or directory"); deleted topics
    /// answer `Error::UnknownTopic`, and write nothing. Found by
    /// tests/stress.rs.
    #[test]
    fn a_read_whose_topic_is_deleted_meanwhile_is_unknown_topic() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(PartitionLog::create(dir.path(), topic(), 0, LIMITS).unwrap());
        append_n(&log, 0, 200, 1000);
        let seg = Arc::clone(&log.state.lock().closed[0]);
        // As after an earlier read: the segment mapped, its index not loaded.
        seg.closed_map().unwrap().unwrap();
        let l = Arc::clone(&log);
        crate::io::faults::after_next_read_plan(move || l.delete_files().unwrap());
        let r = log.read(0, 10);
        assert!(
            matches!(&r, Err(Error::UnknownTopic { topic }) if topic == "t"),
            "{r:?}"
        );
        for ts in [0, i64::MAX] {
            let r = log.offset_for_timestamp(ts);
            assert!(matches!(r, Err(Error::UnknownTopic { .. })), "{ts}: {r:?}");
        }
        assert!(
            !log.dir.exists(),
            "a lookup wrote into the removed directory"
        );
    }

    /// Regression: an append that passed its topic handle's "deleted"
    /// check just before `delete_topic` removed the partition failed with
    /// `Error::Closed` ("log is closed"), though the log was open; deleted
    /// topics answer `Error::UnknownTopic`. Found by tests/stress.rs.
    #[test]
    fn appending_to_a_deleted_partition_is_unknown_topic() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::create(dir.path(), topic(), 0, LIMITS).unwrap();
        append_n(&log, 0, 3, 10);
        log.delete_files().unwrap();
        let parts = RecordParts::new(None, Some(b"v"), &[]);
        let r = log.append([(parts, 0)], |_, _| {});
        assert!(
            matches!(&r, Err(Error::UnknownTopic { topic }) if topic == "t"),
            "{r:?}"
        );
        let b = ProducerBatch {
            producer_id: 1,
            epoch: 0,
            base_sequence: 0,
            attributes: 0,
        };
        let r = log.append_idempotent(b, &[(parts, 0)], |_, _| {});
        assert!(matches!(r, Err(Error::UnknownTopic { .. })), "{r:?}");
    }

    fn check_all(log: &PartitionLog, n: usize, value_len: usize) {
        assert_eq!(log.end_offset(), n as u64, "end offset");
        let msgs = log.read(0, usize::MAX).unwrap();
        assert_eq!(msgs.len(), n, "records read back");
        for (i, m) in msgs.iter().enumerate() {
            assert_eq!(m.offset(), i as u64);
            assert_eq!(m.key(), Some(format!("key-{i}").as_bytes()));
            assert_eq!(
                m.value().unwrap(),
                &vec![(i % 251) as u8; value_len][..],
                "value of {i}"
            );
            assert_eq!(m.timestamp(), 1_000 + i as i64);
        }
    }

    fn reopen(root: &Path, same_boot: bool, recovery: RecoveryPoint) -> PartitionLog {
        let hints = OpenHints {
            recovery,
            clean: None,
            same_boot,
            clean_offset: 0,
        };
        PartitionLog::open(root, topic(), 0, LIMITS, hints).unwrap()
    }

    #[test]
    fn appends_coalesce_into_batches_and_roll_into_segments() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::create(dir.path(), topic(), 0, LIMITS).unwrap();
        append_n(&log, 0, 3000, 100);
        check_all(&log, 3000, 100);
        let segments = std::fs::read_dir(dir.path().join("t-0"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().unwrap() == "log")
            .count();
        assert!(segments > 3, "expected several segments, got {segments}");
        // Reads from the middle of every region.
        for from in [0u64, 1, 499, 1500, 2999] {
            let m = log.read(from, 7).unwrap();
            assert_eq!(m[0].offset(), from);
            assert!(m.len() <= 7);
        }
    }

    /// Record `i` of [`append_mixed`]: key, value and headers.
    pub(super) fn mixed_record(i: usize, len: usize) -> (String, Vec<u8>, Vec<(String, Bytes)>) {
        let headers = match i % 2 {
            0 => Vec::new(),
            _ => vec![("h".to_string(), Bytes::from(vec![i as u8; i]))],
        };
        (format!("key-{i}"), vec![(i % 251) as u8; len], headers)
    }

    /// Appends records of the given value sizes (small ones coalescing,
    /// large ones written alone), numbered from `from`.
    pub(super) fn append_mixed(log: &PartitionLog, from: usize, sizes: &[usize]) {
        for (i, &len) in sizes.iter().enumerate() {
            let (key, value, headers) = mixed_record(from + i, len);
            let parts = RecordParts::new(Some(key.as_bytes()), Some(&value), &headers);
            let offset = log
                .append([(parts, 1_000 + (from + i) as i64)], |_, _| {})
                .unwrap();
            assert_eq!(offset, (from + i + 1) as u64);
        }
    }

    pub(super) fn check_mixed(log: &PartitionLog, sizes: &[usize]) {
        assert_eq!(log.end_offset(), sizes.len() as u64, "end offset");
        let msgs = log.read(0, usize::MAX).unwrap();
        assert_eq!(msgs.len(), sizes.len(), "records read back");
        for (i, m) in msgs.iter().enumerate() {
            let (key, value, headers) = mixed_record(i, sizes[i]);
            assert_eq!(m.offset(), i as u64);
            assert_eq!(m.key(), Some(key.as_bytes()));
            assert!(m.value() == Some(&value[..]), "value of {i}");
            assert_eq!(m.timestamp(), 1_000 + i as i64);
            let got: Vec<_> = m
                .headers()
                .map(|(k, v)| (k.to_string(), v.to_vec()))
                .collect();
            let want: Vec<_> = headers
                .iter()
                .map(|(k, v)| (k.clone(), v.to_vec()))
                .collect();
            assert_eq!(got, want, "headers of {i}");
        }
    }

    #[test]
    fn large_records_are_batches_of_their_own_and_survive_a_kill() {
        large_records_round_trip(Compression::None);
    }

    #[cfg(feature = "lz4")]
    #[test]
    fn large_records_of_a_compressed_topic_are_compressed_in_place() {
        large_records_round_trip(Compression::Lz4);
    }

    fn large_records_round_trip(compression: Compression) {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            segment_bytes: 4 << 20,
            compression,
            ..LIMITS
        };
        let log = PartitionLog::create(dir.path(), topic(), 0, limits).unwrap();
        let limit = LARGE_RECORD_BYTES as usize;
        let sizes = [
            10,
            limit + 1,
            10,
            10,
            limit - 200,
            limit - 40,
            200_000,
            1_000_000,
            10,
            3 * limit,
        ];
        append_mixed(&log, 0, &sizes);
        check_mixed(&log, &sizes);
        // Dropped without close, as kill -9 leaves it.
        drop(log);
        let log = reopen_with(dir.path(), limits);
        check_mixed(&log, &sizes);
        let more = [limit * 2, 5];
        append_mixed(&log, sizes.len(), &more);
        log.close().unwrap();
        let all = [&sizes[..], &more].concat();
        let log = reopen_with(dir.path(), limits);
        check_mixed(&log, &all);

        // Every batch is valid; a record larger than the limit is a batch
        // of its own, and small records next to each other share one.
        let path = log.state.lock().active.seg.log_path.clone();
        let data = std::fs::read(path).unwrap();
        let mut batches = Vec::new();
        let scan = segment::scan_batches_with(&data, 0, 0, false, |_, h, _| {
            batches.push((h.base_offset as usize, h.records_count as usize));
        });
        assert_eq!(
            (scan.end, scan.bad),
            (data.len() as u64, None),
            "all batches"
        );
        for (i, &len) in all.iter().enumerate() {
            if len > limit {
                assert!(batches.contains(&(i, 1)), "record {i} ({len} bytes) alone");
            }
        }
        assert!(
            batches.contains(&(2, 2)),
            "records 2 and 3 share a batch: {batches:?}"
        );
        if compression != Compression::None {
            let packed: usize = all.iter().sum::<usize>() / 10;
            assert!(data.len() < packed, "compressed: {} bytes", data.len());
        }
    }

    #[test]
    fn a_large_record_killed_before_its_header_was_written_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            segment_bytes: 4 << 20,
            ..LIMITS
        };
        let log = PartitionLog::create(dir.path(), topic(), 0, limits).unwrap();
        let sizes = [10, 100_000, 10];
        append_mixed(&log, 0, &sizes);
        // The process dies after `append_alone` wrote a value and headers,
        // before the batch header.
        let (path, end) = {
            let st = log.state.lock();
            (st.active.seg.log_path.clone(), st.active.write_pos)
        };
        io::faults::crash_next_large_write();
        let (key, value, headers) = mixed_record(sizes.len(), 150_000);
        let parts = RecordParts::new(Some(key.as_bytes()), Some(&value), &headers);
        assert!(log.append([(parts, 5)], |_, _| {}).is_err());
        drop(log);
        let data = std::fs::read(&path).unwrap();
        let after = &data[end as usize..];
        assert!(
            after[..BATCH_HEADER_BYTES].iter().all(|&b| b == 0)
                && after.windows(4).any(|w| w == [sizes.len() as u8; 4]),
            "the value is on disk after the log's end, with no header before it"
        );
        let log = reopen_with(dir.path(), limits);
        check_mixed(&log, &sizes);
        let more = [200_000, 10];
        append_mixed(&log, sizes.len(), &more);
        check_mixed(&log, &[&sizes[..], &more].concat());
    }

    #[test]
    fn a_killed_writer_leaves_an_open_batch_that_is_resealed_in_the_same_boot() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::create(dir.path(), topic(), 0, LIMITS).unwrap();
        append_n(&log, 0, 10, 50);
        // Dropping without close is what kill -9 leaves: the open batch is
        // in the file with CRC 0 and a committed count.
        drop(log);
        let log = reopen(dir.path(), true, RecoveryPoint::default());
        check_all(&log, 10, 50);
        append_n(&log, 10, 5, 50);
        check_all(&log, 15, 50);
    }

    #[test]
    fn after_a_reboot_an_unsynced_open_batch_is_dropped_but_synced_data_stays() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::create(dir.path(), topic(), 0, LIMITS).unwrap();
        append_n(&log, 0, 10, 50);
        log.sync().unwrap();
        append_n(&log, 10, 5, 50);
        let rp = log.recovery_point();
        drop(log);
        let log = reopen(dir.path(), false, rp);
        check_all(&log, 10, 50);
        // Offsets continue where the durable data ends.
        append_n(&log, 10, 1, 50);
        check_all(&log, 11, 50);
    }

    #[test]
    fn a_torn_tail_is_truncated_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::create(dir.path(), topic(), 0, LIMITS).unwrap();
        append_n(&log, 0, 20, 50);
        log.flush().unwrap();
        let (_, clean) = log.close().unwrap();
        let path = dir.path().join("t-0").join("00000000000000000000.log");
        // Tear the last batch and add garbage after it.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 7);
        bytes.extend_from_slice(&[0xAB; 33]);
        std::fs::write(&path, &bytes).unwrap();
        let log = reopen(dir.path(), false, RecoveryPoint::default());
        assert_eq!(log.end_offset(), 0, "the only batch was torn");
        assert!(clean.next_offset == 20, "close had recorded 20 records");
        // The garbage is gone: new appends take the torn records' offsets
        // and read back intact, also after another reopen.
        append_n(&log, 0, 7, 50);
        check_all(&log, 7, 50);
        drop(log);
        let log = reopen(dir.path(), true, RecoveryPoint::default());
        check_all(&log, 7, 50);
    }

    #[test]
    fn clean_close_reopens_without_scanning_and_keeps_appending() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::create(dir.path(), topic(), 0, LIMITS).unwrap();
        append_n(&log, 0, 1000, 100);
        let (rp, clean) = log.close().unwrap();
        assert!(matches!(
            log.append([], |_, _| {}),
            Err(Error::Closed { .. })
        ));
        let hints = OpenHints {
            recovery: rp,
            clean: Some(clean),
            same_boot: true,
            clean_offset: 0,
        };
        let log = PartitionLog::open(dir.path(), topic(), 0, LIMITS, hints).unwrap();
        check_all(&log, 1000, 100);
        append_n(&log, 1000, 10, 100);
        check_all(&log, 1010, 100);
    }

    #[test]
    fn a_failed_fsync_makes_the_partition_read_only_and_is_never_retried_away() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::create(dir.path(), topic(), 0, LIMITS).unwrap();
        append_n(&log, 0, 10, 50);
        log.sync().unwrap();
        assert_eq!(log.durable_offset.load(Ordering::Acquire), 10);
        append_n(&log, 10, 5, 50);
        crate::io::faults::fail_next_fsync("00000000000000000000.log");
        let err = log.sync().unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        // Not reported durable, and no later sync pretends otherwise.
        assert_eq!(log.durable_offset.load(Ordering::Acquire), 10);
        let again = log.sync().unwrap_err();
        assert!(
            again.to_string().contains("00000000000000000000.log"),
            "{again}"
        );
        assert_eq!(log.durable_offset.load(Ordering::Acquire), 10);
        // Every later append fails naming the file; what was acknowledged
        // stays readable.
        let parts = RecordParts::new(Some(b"k"), Some(b"v"), &[]);
        let err = log.append([(parts, 1)], |_, _| {}).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        assert!(
            err.to_string().contains("00000000000000000000.log"),
            "{err}"
        );
        check_all(&log, 15, 50);
    }

    const COMPACTED: Limits = Limits {
        segment_bytes: 4096,
        compacted: true,
        retention_bytes: None,
        retention_ms: None,
        compression: Compression::None,
    };

    fn compact_settings(delete_retention_ms: u64) -> CompactSettings {
        CompactSettings {
            now_ms: now_ms(),
            force: true,
            min_dirty_ratio: 0.5,
            min_lag_ms: 0,
            delete_retention_ms,
        }
    }

    /// Appends `n` records `value = i` to keys `i % keys`; every 7th record
    /// of key 3 is a tombstone.
    fn append_keyed(log: &PartitionLog, from: u64, n: u64, keys: u64) {
        append_keyed_at(log, from, n, keys, 1_000);
    }

    /// [`append_keyed`] with record `i` stamped `ts0 + i`.
    fn append_keyed_at(log: &PartitionLog, from: u64, n: u64, keys: u64, ts0: i64) {
        for i in from..from + n {
            let key = format!("key-{}", i % keys);
            let value = i.to_string();
            let tombstone = i % keys == 3 && i % 7 == 0;
            let parts = RecordParts::new(
                Some(key.as_bytes()),
                (!tombstone).then_some(value.as_bytes()),
                &[],
            );
            log.append([(parts, ts0 + i as i64)], |o, _| assert_eq!(o, i))
                .unwrap();
        }
    }

    /// What a compacted read must satisfy: offsets increase, each record is
    /// unchanged at its offset, and each key's latest record is present.
    fn check_compacted(log: &PartitionLog, end: u64, keys: u64) -> Vec<Message> {
        let msgs = log.read(log.start_offset(), usize::MAX).unwrap();
        assert!(
            msgs.windows(2).all(|w| w[0].offset() < w[1].offset()),
            "offsets must increase"
        );
        for m in &msgs {
            let i = m.offset();
            assert_eq!(
                m.key(),
                Some(format!("key-{}", i % keys).as_bytes()),
                "key at {i}"
            );
            if let Some(v) = m.value() {
                assert_eq!(v, i.to_string().as_bytes(), "value at {i} changed");
            }
        }
        for k in 0..keys {
            let latest = (0..end).rev().find(|i| i % keys == k).unwrap();
            let tombstoned = k == 3 && latest % 7 == 0;
            let present = msgs.iter().any(|m| m.offset() == latest);
            assert!(
                present || tombstoned,
                "latest record of key-{k} (offset {latest}) lost"
            );
        }
        msgs
    }

    #[test]
    fn compaction_keeps_each_keys_latest_record_at_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::create(dir.path(), topic(), 0, COMPACTED).unwrap();
        append_keyed(&log, 0, 3000, 10);
        let report = log.compact(compact_settings(u64::MAX)).unwrap();
        assert!(report.records_out < report.records_in / 10, "{report:?}");
        // The compacted segments are small now: the next pass groups them.
        let regroup = log.compact(compact_settings(u64::MAX)).unwrap();
        assert!(regroup.segments_out < regroup.segments_in, "{regroup:?}");
        let msgs = check_compacted(&log, 3000, 10);
        assert!(
            msgs.len() < 400,
            "superseded records remain: {}",
            msgs.len()
        );
        // Superseded records of closed segments are gone: at most one per key
        // below the active segment.
        let active = log.state.lock().active.seg.base_offset;
        for k in 0..10u64 {
            let n = msgs
                .iter()
                .filter(|m| m.offset() < active && m.offset() % 10 == k)
                .count();
            assert!(n <= 1, "key-{k} has {n} records in compacted segments");
        }
        // And it all survives reopening, clean or not, and more appends.
        drop(log);
        let log = reopen_with(dir.path(), COMPACTED);
        check_compacted(&log, 3000, 10);
        append_keyed(&log, 3000, 500, 10);
        log.compact(compact_settings(u64::MAX)).unwrap();
        let (rp, clean) = log.close().unwrap();
        let log = PartitionLog::open(
            dir.path(),
            topic(),
            0,
            COMPACTED,
            OpenHints {
                recovery: rp,
                clean: Some(clean),
                same_boot: true,
                clean_offset: 0,
            },
        )
        .unwrap();
        check_compacted(&log, 3500, 10);
    }

    pub(super) fn reopen_with(root: &Path, limits: Limits) -> PartitionLog {
        let hints = OpenHints {
            same_boot: true,
            ..Default::default()
        };
        PartitionLog::open(root, topic(), 0, limits, hints).unwrap()
    }

    /// How many records the partition under `root` reads back once
    /// reopened as after a crash.
    fn records_after_reopen(root: &Path, limits: Limits) -> usize {
        reopen_with(root, limits).read(0, usize::MAX).unwrap().len()
    }

    #[test]
    fn tombstones_outlive_one_compaction_then_go_after_delete_retention() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::create(dir.path(), topic(), 0, COMPACTED).unwrap();
        // Keys whose latest record is a tombstone (key 3 at offsets that 7
        // divides), spread over several closed segments.
        append_keyed(&log, 0, 1064, 10);
        log.compact(compact_settings(0)).unwrap();
        let count_tombstones = |log: &PartitionLog| {
            log.read(log.start_offset(), usize::MAX)
                .unwrap()
                .iter()
                .filter(|m| m.value().is_none())
                .count()
        };
        let first = count_tombstones(&log);
        assert!(first > 0, "a first compaction keeps tombstones");
        std::thread::sleep(std::time::Duration::from_millis(20));
        log.compact(compact_settings(0)).unwrap();
        let active = log.state.lock().active.seg.base_offset;
        let left: Vec<u64> = log
            .read(log.start_offset(), usize::MAX)
            .unwrap()
            .iter()
            .filter(|m| m.value().is_none() && m.offset() < active)
            .map(|m| m.offset())
            .collect();
        assert!(
            left.is_empty(),
            "tombstones past delete_retention remain at {left:?}"
        );
    }

    /// Regression: `delete_retention_ms` of `u64::MAX` (what
    /// `delete_retention(Duration::MAX)` becomes) wrapped to -1 ms, so the
    /// second compaction dropped tombstones it should keep forever.
    #[test]
    fn tombstones_stay_with_the_longest_delete_retention() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::create(dir.path(), topic(), 0, COMPACTED).unwrap();
        append_keyed(&log, 0, 1064, 10);
        let tombstones = |log: &PartitionLog| {
            log.read(log.start_offset(), usize::MAX)
                .unwrap()
                .iter()
                .filter(|m| m.value().is_none())
                .count()
        };
        log.compact(compact_settings(u64::MAX)).unwrap();
        let first = tombstones(&log);
        assert!(first > 0);
        log.compact(compact_settings(u64::MAX)).unwrap();
        assert_eq!(tombstones(&log), first, "tombstones dropped");
    }

    /// Regression: sealing and syncing a partition whose topic was deleted
    /// (the background thread's list of partitions, `Log::flush` or a
    /// durable append's fsync, taken before the deletion) went on to use
    /// files by name: the compression journal, growing the segment file
    /// for the fsync's zeros. With a topic of the same name created
    /// meanwhile, those names were the new topic's files.
    #[test]
    fn sealing_a_deleted_partition_touches_no_file_of_its_successor() {
        let limits = Limits {
            compression: Compression::Lz4,
            ..LIMITS
        };
        let listing = |dir: &Path| {
            let mut files: Vec<(String, u64)> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    let len = e.metadata().unwrap().len();
                    (e.file_name().to_string_lossy().into_owned(), len)
                })
                .collect();
            files.sort();
            files
        };
        let dir = tempfile::tempdir().unwrap();
        let old = PartitionLog::create(dir.path(), topic(), 0, limits).unwrap();
        append_n(&old, 0, 50, 100);
        assert!(old.state.lock().active.open.is_some(), "no open batch");
        old.delete_files().unwrap();
        let new = PartitionLog::create(dir.path(), topic(), 0, LIMITS).unwrap();
        append_n(&new, 0, 3, 10);
        let before = listing(&new.dir);
        old.seal_if_idle(Duration::ZERO);
        old.flush().unwrap();
        old.sync_to(50).unwrap();
        old.sync().unwrap();
        assert_eq!(listing(&new.dir), before);
        assert_eq!(new.read(0, 10).unwrap().len(), 3);
    }

    /// Regression: two retention passes at once (an appender's after a
    /// roll and the background thread's) each counted the expired
    /// segments, and each removed that many from the front of the list:
    /// the second took segments that had not expired.
    #[test]
    fn concurrent_retention_passes_remove_only_expired_segments() {
        let limits = Limits {
            retention_ms: Some(HOUR as u64),
            ..LIMITS
        };
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(PartitionLog::create(dir.path(), topic(), 0, limits).unwrap());
        // Timestamps of now, a millisecond apart: appends' own retention
        // passes find nothing expired.
        append_n_at(&log, 0, 300, 1000, now_ms());
        let closed = log.state.lock().closed.clone();
        assert!(closed.len() >= 4, "{} segments", closed.len());
        // At this time, the first two segments have expired, no others.
        let now = closed[1].closed_max_timestamp().unwrap() + 1 + HOUR;
        let l = Arc::clone(&log);
        crate::io::faults::after_next_retention_scan(move || l.apply_retention(now).unwrap());
        log.apply_retention(now).unwrap();
        let left = log.state.lock().closed.clone();
        assert_eq!(left.len(), closed.len() - 2);
        assert!(Arc::ptr_eq(&left[0], &closed[2]));
        assert_eq!(log.start_offset(), closed[2].base_offset);
    }

    /// Regression: retention in a partition whose topic was deleted, with
    /// segments whose largest timestamp was not known yet (trusted on
    /// reopen, never read), failed with `Error::Io` ("load index of
    /// deleted segment"), also as the result of an append that had been
    /// written.
    #[test]
    fn retention_in_a_deleted_partition_is_not_an_error() {
        let limits = Limits {
            retention_ms: Some(HOUR as u64),
            ..LIMITS
        };
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::create(dir.path(), topic(), 0, limits).unwrap();
        append_n_at(&log, 0, 300, 1000, now_ms());
        let (rp, _) = log.close().unwrap();
        let hints = OpenHints {
            recovery: rp,
            clean: None,
            same_boot: true,
            clean_offset: 0,
        };
        let log = PartitionLog::open(dir.path(), topic(), 0, limits, hints).unwrap();
        assert!(log.state.lock().closed.len() > 1);
        log.delete_files().unwrap();
        log.apply_retention(now_ms() + 10 * HOUR).unwrap();
        let r = log.offset_for_timestamp(i64::MAX);
        assert!(matches!(r, Err(Error::UnknownTopic { .. })), "{r:?}");
    }

    /// Regression: retention (or `delete_before`) that had picked segments
    /// of a partition just before its topic was deleted removed their
    /// files by path afterwards: from the directory of a topic of the same
    /// name created meanwhile, whose first segment has the same name.
    #[test]
    fn retention_in_a_deleted_partition_removes_no_files_of_its_successor() {
        let dir = tempfile::tempdir().unwrap();
        let old = PartitionLog::create(dir.path(), topic(), 0, LIMITS).unwrap();
        append_n(&old, 0, 200, 1000);
        let active = old.state.lock().active.seg.base_offset;
        assert!(active > 0, "no segment rolled");
        old.delete_files().unwrap();
        let new = PartitionLog::create(dir.path(), topic(), 0, LIMITS).unwrap();
        append_n(&new, 0, 3, 10);
        let first = new.state.lock().active.seg.log_path.clone();
        assert_eq!(
            first,
            old.state.lock().closed[0].log_path,
            "not the same name"
        );
        old.delete_before(active).unwrap();
        assert!(first.exists(), "the new topic's segment was removed");
        let (rp, _) = new.close().unwrap();
        let reopened = reopen(dir.path(), true, rp);
        assert_eq!(reopened.read(0, 10).unwrap().len(), 3);
    }

    /// Regression: retention that removed the first segment of a group a
    /// compaction was rewriting (a `CompactAndDelete` topic) made the swap
    /// find its group gone: the compacted segment was not put in the
    /// list, yet the group's other segments, still listed and unexpired
    /// as far as the list knew, were marked deleted and their files
    /// removed, and the compacted files were renamed into place as a
    /// segment the list did not know.
    #[test]
    fn retention_waits_for_a_compaction_of_the_segments_it_would_remove() {
        let limits = Limits {
            retention_ms: Some(HOUR as u64),
            ..COMPACTED
        };
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(PartitionLog::create(dir.path(), topic(), 0, limits).unwrap());
        let start = now_ms();
        append_keyed_at(&log, 0, 2000, 10, start);
        assert!(log.state.lock().closed.len() >= 2);
        let l = Arc::clone(&log);
        // Everything closed has expired by then.
        crate::io::faults::at_compaction_step(1, move || {
            l.apply_retention(start + 10 * HOUR).unwrap();
        });
        log.compact(compact_settings(u64::MAX)).unwrap();
        let closed = log.state.lock().closed.clone();
        for seg in &closed {
            assert!(
                !seg.is_deleted(),
                "segment {} listed but deleted",
                seg.base_offset
            );
            assert!(
                seg.log_path.exists(),
                "segment {} listed, no file",
                seg.base_offset
            );
        }
        let on_disk = std::fs::read_dir(&log.dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".log")
            })
            .count();
        assert_eq!(on_disk, closed.len() + 1, "segment files not in the list");
        // Retention runs once the compaction is done.
        log.apply_retention(start + 10 * HOUR).unwrap();
        assert!(log.state.lock().closed.is_empty());
        let all = log.read(log.start_offset(), usize::MAX).unwrap();
        assert!(all.iter().all(|m| m.offset() >= log.start_offset()));
    }

    /// Regression: a compaction that was writing its files when its topic
    /// was deleted went on writing into the removed directory (failing
    /// with `Error::Io`), and, had a topic of the same name been created
    /// there meanwhile, would have renamed its files over the new topic's
    /// segment. Deletion now waits for the compaction to end.
    #[test]
    fn deleting_a_topic_stops_its_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(PartitionLog::create(dir.path(), topic(), 0, COMPACTED).unwrap());
        append_keyed(&log, 0, 2000, 10);
        let (deleting, deleted) = (
            Arc::new(std::sync::atomic::AtomicBool::new(false)),
            Arc::new(std::sync::atomic::AtomicBool::new(false)),
        );
        let deleter = {
            let (log, deleting, deleted) = (Arc::clone(&log), deleting.clone(), deleted.clone());
            std::thread::spawn(move || {
                while !deleting.load(Ordering::Acquire) {
                    std::thread::yield_now();
                }
                log.delete_files().unwrap();
                deleted.store(true, Ordering::Release);
            })
        };
        let observed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = Arc::clone(&observed);
        let committed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Once the compacted files are written: start the deletion, wait
        // until it has asked the pass to stop, and give it time to run (it
        // must not run before the pass ends). Then watch for the commit
        // point (the pass must not reach it).
        let (start, asked, reached) = (
            Arc::clone(&deleting),
            Arc::clone(&log),
            Arc::clone(&committed),
        );
        crate::io::faults::at_compaction_step(1, move || {
            start.store(true, Ordering::Release);
            while !asked.abort_cleaning.load(Ordering::Acquire) {
                std::thread::yield_now();
            }
            std::thread::sleep(Duration::from_millis(100));
            seen.store(deleted.load(Ordering::Acquire), Ordering::Release);
            crate::io::faults::at_compaction_step(2, move || {
                reached.store(true, Ordering::Release);
            });
        });
        let r = log.compact(compact_settings(u64::MAX));
        // Also if the compaction failed before the step (then `r` says so).
        deleting.store(true, Ordering::Release);
        deleter.join().unwrap();
        assert!(
            !observed.load(Ordering::Acquire),
            "deleted under a compaction"
        );
        // Asked to stop while it waited at step 1, the pass stopped before
        // its commit point instead of swapping its files in.
        assert!(matches!(r, Err(Error::UnknownTopic { .. })), "{r:?}");
        assert!(
            !committed.load(Ordering::Acquire),
            "the pass went on past its commit point"
        );
        assert!(!log.dir.exists(), "files left after the deletion");
        let r = log.compact(compact_settings(u64::MAX));
        assert!(matches!(r, Err(Error::UnknownTopic { .. })), "{r:?}");
    }

    #[test]
    fn a_compaction_asked_to_stop_reads_and_writes_no_further_batch() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::create(dir.path(), topic(), 0, COMPACTED).unwrap();
        append_keyed(&log, 0, 2000, 10);
        let segs = log.state.lock().closed.clone();
        let data: Vec<Vec<u8>> = segs
            .iter()
            .map(|s| {
                let mut d = std::fs::read(&s.log_path).unwrap();
                d.truncate(s.closed_len() as usize);
                d
            })
            .collect();
        let sources: Vec<(&Segment, &[u8])> = segs
            .iter()
            .map(|s| &**s)
            .zip(data.iter().map(|d| &d[..]))
            .collect();
        // Lets `n` batches through, then answers as a deletion would;
        // counts the questions.
        let asked = std::cell::Cell::new(0);
        let stop_after = |n: usize| {
            let asked = &asked;
            asked.set(0);
            move || {
                asked.set(asked.get() + 1);
                if asked.get() > n {
                    return Err(Error::UnknownTopic { topic: "t".into() });
                }
                Ok(())
            }
        };
        let latest = cleaner::latest_offsets(&sources, &stop_after(usize::MAX)).unwrap();
        let batches = asked.get();
        assert!(batches > 4, "{batches} batches: too few to stop halfway");

        let r = cleaner::latest_offsets(&sources, &stop_after(3));
        assert!(matches!(r, Err(Error::UnknownTopic { .. })), "{r:?}");
        assert_eq!(asked.get(), 4, "the key scan stopped at the 4th batch");

        let dest = DataFile::create_new(&dir.path().join("rewritten")).unwrap();
        let mut stats = cleaner::RewriteStats::default();
        let r = cleaner::rewrite(
            0,
            &sources,
            &latest,
            |_| false,
            &dest,
            &mut stats,
            &stop_after(3),
        );
        assert!(matches!(r, Err(Error::UnknownTopic { .. })), "{r:?}");
        assert_eq!(asked.get(), 4, "the rewrite stopped at the 4th batch");
        assert!(stats.records_in < 2000, "{stats:?}");
    }

    #[test]
    fn a_crash_at_any_step_of_the_swap_leaves_old_or_new_never_a_mix() {
        for step in 1..=4 {
            let dir = tempfile::tempdir().unwrap();
            let log = PartitionLog::create(dir.path(), topic(), 0, COMPACTED).unwrap();
            append_keyed(&log, 0, 2000, 10);
            let before = log.read(0, usize::MAX).unwrap().len();
            crate::io::faults::crash_compaction_after(step);
            assert!(
                log.compact(compact_settings(u64::MAX)).is_err(),
                "step {step} did not stop"
            );
            drop(log);
            let log = reopen_with(dir.path(), COMPACTED);
            let msgs = check_compacted(&log, 2000, 10);
            let committed = step >= 2;
            if committed {
                assert!(
                    msgs.len() < before,
                    "step {step}: committed compaction not finished"
                );
            } else {
                assert_eq!(
                    msgs.len(),
                    before,
                    "step {step}: uncommitted compaction leaked"
                );
            }
            let stray: Vec<String> = std::fs::read_dir(dir.path().join("t-0"))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n.ends_with(".cleaned") || n.ends_with(".swap"))
                .collect();
            assert!(stray.is_empty(), "step {step}: leftovers {stray:?}");
        }
    }

    #[test]
    fn messages_outlive_the_log_and_share_the_map() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::create(dir.path(), topic(), 0, LIMITS).unwrap();
        let headers = vec![("h".to_string(), Bytes::from_static(b"v"))];
        let parts = RecordParts::new(None, Some(b"hello"), &headers);
        log.append([(parts, 5)], |_, _| {}).unwrap();
        let msgs = log.read(0, 1).unwrap();
        log.close().unwrap();
        drop(log);
        std::fs::remove_dir_all(dir.path().join("t-0")).unwrap();
        assert_eq!(msgs[0].value(), Some(&b"hello"[..]));
        assert_eq!(
            msgs[0].headers().collect::<Vec<_>>(),
            vec![("h", &b"v"[..])]
        );
    }

    #[test]
    fn a_flipped_byte_in_a_closed_segment_is_reported_with_file_and_position() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::create(dir.path(), topic(), 0, LIMITS).unwrap();
        append_n(&log, 0, 2000, 100);
        let (rp, clean) = log.close().unwrap();
        let path = dir.path().join("t-0").join("00000000000000000000.log");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[20_000] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        let hints = OpenHints {
            recovery: rp,
            clean: Some(clean),
            same_boot: true,
            clean_offset: 0,
        };
        let log = PartitionLog::open(dir.path(), topic(), 0, LIMITS, hints).unwrap();
        let err = log.read(0, usize::MAX).unwrap_err();
        match &err {
            Error::Corrupt {
                path: p, position, ..
            } => {
                assert_eq!(p, &path);
                assert!(*position <= 20_000, "{err}");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    fn send_as(
        log: &PartitionLog,
        pid: i64,
        epoch: i16,
        seq: i32,
        n: usize,
    ) -> Result<Option<u64>> {
        let values: Vec<String> = (0..n)
            .map(|i| format!("p{pid}-e{epoch}-s{}", seq as usize + i))
            .collect();
        let records: Vec<(RecordParts<'_>, i64)> = values
            .iter()
            .map(|v| (RecordParts::new(Some(b"k"), Some(v.as_bytes()), &[]), 5))
            .collect();
        let b = ProducerBatch {
            producer_id: pid,
            epoch,
            base_sequence: seq,
            attributes: 0,
        };
        log.append_idempotent(b, &records, |_, _| {})
    }

    #[test]
    fn idempotent_appends_write_once_and_refuse_gaps_and_old_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::create(dir.path(), topic(), 0, LIMITS).unwrap();
        append_n(&log, 0, 3, 10); // plain records first: separate batches
        assert_eq!(send_as(&log, 7, 0, 0, 4).unwrap(), None);
        assert_eq!(send_as(&log, 7, 0, 4, 2).unwrap(), None);
        assert_eq!(log.end_offset(), 9);
        // Retries, whole or in part, write nothing and find the offsets.
        assert_eq!(send_as(&log, 7, 0, 0, 4).unwrap(), Some(3));
        assert_eq!(send_as(&log, 7, 0, 5, 1).unwrap(), Some(8));
        assert_eq!(log.end_offset(), 9);
        let err = send_as(&log, 7, 0, 9, 1).unwrap_err();
        assert!(
            matches!(
                err,
                Error::OutOfOrderSequence {
                    expected: 6,
                    got: 9,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("t-0"), "{err}");
        // Another producer interleaves; a new epoch starts at 0 and fences
        // the old one.
        assert_eq!(send_as(&log, 8, 0, 0, 1).unwrap(), None);
        assert_eq!(send_as(&log, 7, 1, 0, 1).unwrap(), None);
        assert!(matches!(
            send_as(&log, 7, 0, 6, 1).unwrap_err(),
            Error::ProducerFenced {
                epoch: 0,
                current_epoch: 1,
                ..
            }
        ));
        append_n(&log, 11, 1, 10);
        // Every batch on disk carries its producer's fields.
        log.flush().unwrap();
        let msgs = log.read(0, usize::MAX).unwrap();
        assert_eq!(msgs.len(), 12);
        let data = std::fs::read(
            dir.path()
                .join("t-0")
                .join(super::super::segment::file_name(0, "log")),
        )
        .unwrap();
        let mut pos = 0;
        let mut seen = Vec::new();
        while pos < data.len() {
            let Ok(h) = BatchHeader::parse(&data[pos..]) else {
                break;
            };
            if h.batch_length == 0 {
                break;
            }
            seen.push((
                h.base_offset,
                h.producer_id,
                h.producer_epoch,
                h.base_sequence,
                h.records_count,
            ));
            pos += h.total_len();
        }
        assert_eq!(
            seen,
            vec![
                (0, -1, -1, -1, 3),
                (3, 7, 0, 0, 6), // two sends with consecutive sequences share a batch
                (9, 8, 0, 0, 1),
                (10, 7, 1, 0, 1),
                (11, -1, -1, -1, 1),
            ]
        );
    }

    #[test]
    fn producer_state_comes_back_from_a_snapshot_or_from_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::create(dir.path(), topic(), 0, LIMITS).unwrap();
        send_as(&log, 1, 0, 0, 3).unwrap();
        let snapshot = log.producer_snapshot().expect("a producer is known");
        assert_eq!(snapshot.offset, 3);
        send_as(&log, 1, 0, 3, 2).unwrap();
        send_as(&log, 2, 0, 0, 1).unwrap();
        let (rp, _) = log.close().unwrap();
        drop(log);
        let check = |log: &PartitionLog| {
            assert_eq!(send_as(log, 1, 0, 3, 2).unwrap(), Some(3), "retry found");
            assert_eq!(send_as(log, 2, 0, 0, 1).unwrap(), Some(5), "retry found");
            assert!(matches!(
                send_as(log, 1, 0, 9, 1).unwrap_err(),
                Error::OutOfOrderSequence { expected: 5, .. }
            ));
        };
        // From the old snapshot plus the batches after it.
        let log = reopen(dir.path(), true, rp);
        log.restore_producers(Some(&snapshot), ProducerWalk::Nothing)
            .unwrap();
        check(&log);
        drop(log);
        // Without a snapshot, walking the whole log.
        let log = reopen(dir.path(), true, rp);
        log.restore_producers(None, ProducerWalk::FromOffset(0))
            .unwrap();
        check(&log);
        drop(log);
        // A snapshot beyond the log's end (a power loss took batches) is
        // dropped, and the log walked.
        let mut ahead = snapshot.clone();
        ahead.offset = 1_000;
        let log = reopen(dir.path(), true, rp);
        log.restore_producers(Some(&ahead), ProducerWalk::Nothing)
            .unwrap();
        check(&log);
    }

    const COMPRESSED: Limits = Limits {
        segment_bytes: 64 * 1024,
        compacted: false,
        retention_bytes: None,
        retention_ms: None,
        compression: Compression::Lz4,
    };

    /// Bytes of the partition's segment files.
    fn segment_bytes_on_disk(root: &Path) -> u64 {
        std::fs::read_dir(root.join("t-0"))
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .map(|e| e.metadata().unwrap().len())
            .sum()
    }

    #[test]
    fn sealed_batches_are_compressed_in_place_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::create(dir.path(), topic(), 0, COMPRESSED).unwrap();
        append_n(&log, 0, 300, 200);
        // Open-batch records come from a copy: still intact once the batch
        // is rewritten compressed under them.
        let before = log.read(0, usize::MAX).unwrap();
        log.flush().unwrap();
        for (i, m) in before.iter().enumerate() {
            assert_eq!(m.value().unwrap(), &vec![(i % 251) as u8; 200][..]);
        }
        check_all(&log, 300, 200);
        let (recovery, clean) = log.close().unwrap();
        // 300 records of ~215 bytes, in well under a tenth of that.
        let on_disk = segment_bytes_on_disk(dir.path());
        assert!(on_disk < 300 * 215 / 10, "{on_disk} bytes on disk");
        let hints = OpenHints {
            recovery,
            clean: Some(clean),
            same_boot: true,
            clean_offset: 0,
        };
        let log = PartitionLog::open(dir.path(), topic(), 0, COMPRESSED, hints).unwrap();
        check_all(&log, 300, 200);
        append_n(&log, 300, 50, 200);
        drop(log);
        let log = reopen_with(dir.path(), COMPRESSED);
        check_all(&log, 350, 200);
        // Batches keep their codec when the topic's changes.
        let plain = Limits {
            compression: Compression::None,
            ..COMPRESSED
        };
        drop(log);
        let log = reopen_with(dir.path(), plain);
        append_n(&log, 350, 10, 200);
        log.flush().unwrap();
        check_all(&log, 360, 200);
    }

    #[test]
    fn a_kill_while_a_batch_is_compressed_in_place_loses_nothing() {
        for same_boot in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let log = PartitionLog::create(dir.path(), topic(), 0, COMPRESSED).unwrap();
            append_n(&log, 0, 40, 100);
            log.flush().unwrap();
            append_n(&log, 40, 60, 100);
            io::faults::crash_next_compression();
            log.flush().unwrap();
            drop(log);
            let hints = OpenHints {
                same_boot,
                ..Default::default()
            };
            let log = PartitionLog::open(dir.path(), topic(), 0, COMPRESSED, hints).unwrap();
            check_all(&log, 100, 100);
            assert!(!dir.path().join("t-0").join(COMPRESSING_FILE).exists());
            append_n(&log, 100, 5, 100);
            log.flush().unwrap();
            check_all(&log, 105, 100);
        }
    }
}
