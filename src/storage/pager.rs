//! Page-cache and page-table work moved off the append and read paths,
//! onto one helper thread per process.
//!
//! - **Zeroing and mapping in ahead of the writer.** The first touch of a
//!   page of the active segment's shared map costs the writer a page fault
//!   that allocates a page-cache page and zero-fills it (the file's blocks
//!   are preallocated but unwritten), then a `page_mkwrite` that marks it
//!   dirty: about 40 % of a `send_batch` of 1,000 records, and 20 % of a
//!   single append, in the profile. The writer asks for the pages ahead of
//!   it (`Active::prefault_ahead` decides how far), and while it fills the
//!   pages before them the helper
//!   1. writes zeros there with `pwrite`, which allocates the page-cache
//!      pages, in large folios and without touching a page table (see
//!      [`Fence`] for how it keeps out of the bytes the writer writes);
//!   2. then maps them into the writer's map with
//!      `madvise(MADV_POPULATE_WRITE)`, which faults them in as a write
//!      would (`page_mkwrite` included), without writing.
//!
//!   Before the zeros, the helper did step 2 alone, which allocated and
//!   zero-filled one page per fault. On this VM a run that has to take
//!   fresh memory from the host (see `benches/compare.rs`,
//!   `prime_memory`) spends most of its time there: eight alternating
//!   `cargo bench --bench compare -- --only=2` runs without priming sent
//!   batches of 1,000 at 8.5–23.0 M records/s (median 14.4) against
//!   8.4–18.7 (median 10.7). With the memory primed the two were alike
//!   (17.1–26.4 against 20.5–25.0), and step 2 still counted for single
//!   appends: 16.3–18.3 M/s with it, 12.1–13.5 without (three alternating
//!   pairs). In `benches/map_helper_probe.c` a writer copying 126 KB
//!   chunks into a map reached 4.2–7.3 GB/s behind a zeroing helper and
//!   0.6–4.4 behind a populating one. (`MADV_POPULATE_READ` would leave the
//!   pages clean, but measured slower than no prefaulting at all: the
//!   writer still takes the `page_mkwrite` fault, and contends with the
//!   helper for the pages.)
//! - **Faulting in for a durable append's fsync.** `Active::harden_ahead`
//!   populates pages with `MADV_POPULATE_WRITE` (in the appending thread,
//!   not here); [`populate_failed`] and [`populates`] are shared with it.
//! - **Unmapping behind writers and readers.** `madvise(MADV_DONTNEED)` of
//!   the pages a sequential writer or reader left behind (see
//!   `Segment::release_behind`) costs a page-table walk and TLB shootdowns;
//!   the helper does that too.
//!
//! None changes what the file reads back. The zeros go where the file
//! held zeros already (preallocated blocks past the writer, which read
//! back as zeros), and only where the writer has not written and will not
//! write until the zeros are in (see [`Fence`]); they never reach past the
//! file's end, which moves back only after the fence is closed.
//! `MADV_POPULATE_WRITE` faults pages in as a write would, without
//! writing, and returns an error instead of raising `SIGBUS` for pages past
//! the file's end. An unmapped page of a shared file mapping reads back the
//! same from the page cache. Each request holds an `Arc` of its map, so the
//! range stays mapped until the helper is done with it; a zeroing request
//! holds a descriptor of the segment's file, opened by the writer under
//! the partition's lock (so it is the file the writer writes, even if
//! another is renamed over it later), and closed when the job is done.
//!
//! Zeroing ahead is a hint: a request that finds the queue full is dropped,
//! and a failed write or populate is ignored (the writer's own page faults
//! then do the work); a kernel without `MADV_POPULATE_WRITE` (older than
//! 5.14, or not Linux) turns populating off for the process. A release
//! that finds the queue full is done by the caller. Each queued zeroing
//! job holds a descriptor until it runs (at most [`MAX_QUEUED`] jobs).
//! The thread exits after a few idle seconds and the next request starts
//! it again; if it cannot be started, or dies, releases are done by the
//! callers and zeroing is skipped until it can be.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{const_mutex, Condvar, Mutex};

use super::segment::{Segment, SegmentMap};
use crate::io::{self, DataFile};

/// Requests beyond this many waiting are not queued. (Each holds a map,
/// and with it a deleted segment's disk space, until it runs.)
const MAX_QUEUED: usize = 256;
/// The helper exits after this long without a request.
const IDLE: Duration = Duration::from_secs(5);
/// The helper zeroes at most this much between two looks at the writer's
/// [`Fence`]: a writer that catches up waits for at most one such write.
const ZERO_CHUNK: u64 = 256 * 1024;

enum Work {
    /// Write zeros to the file, past the writer's fence, then map the
    /// range's pages in (not below what the segment's writer released
    /// meanwhile).
    Zero {
        seg: Arc<Segment>,
        fence: Arc<Fence>,
        file: DataFile,
    },
    Release,
}

/// Keeps the helper's zeros out of the bytes the writer of an active
/// segment writes.
///
/// The writer writes only below `writer_end`, which it moves forward
/// ([`advance`](Fence::advance)) before it writes past it. The helper
/// writes zeros only at or past `writer_end`, announcing in `zeroing`
/// where its current write starts. Both sides first store their own word,
/// then load the other's, all sequentially consistent (Dekker's mutual
/// exclusion): of a writer moving its end past `at` and the helper
/// announcing a write at `at`, at least one sees the other's store. If the
/// helper sees the new end, it skips past it; if the writer sees the
/// announcement, it waits until the helper's write is done (at most
/// [`ZERO_CHUNK`]) before writing there. The end only grows
/// (`fetch_max`), so a closed fence (`u64::MAX`, see
/// [`close`](Fence::close)) stays closed.
pub(crate) struct Fence {
    writer_end: AtomicU64,
    /// Where the helper's current write starts; [`IDLE_AT`] when none.
    zeroing: AtomicU64,
}

/// `Fence::zeroing` while the helper writes nothing.
const IDLE_AT: u64 = u64::MAX;

impl Fence {
    /// A fence the writer may write below `end` of.
    pub(crate) fn new(end: u64) -> Fence {
        Fence {
            writer_end: AtomicU64::new(end),
            zeroing: AtomicU64::new(IDLE_AT),
        }
    }

    /// Lets the writer write below `end`: from here on no zeros land
    /// below it. Waits out a write of zeros that started below it.
    pub(crate) fn advance(&self, end: u64) {
        self.writer_end.fetch_max(end, Ordering::SeqCst);
        let mut spins = 0u32;
        while self.zeroing.load(Ordering::SeqCst) < end {
            if spins < 64 {
                std::hint::spin_loop();
                spins += 1;
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// No zeros land anywhere from here on: called before the file is cut
    /// or the segment stops being active. Waits out a write in progress.
    pub(crate) fn close(&self) {
        self.advance(u64::MAX);
    }

    fn is_closed(&self) -> bool {
        self.writer_end.load(Ordering::SeqCst) == u64::MAX
    }

    /// The helper's side: writes zeros to `start..end` of `file`, in whole
    /// pages at or past the writer's end, a chunk at a time; returns how
    /// many bytes it wrote.
    fn zero(&self, file: &DataFile, start: u64, end: u64) -> u64 {
        /// Announces the end of the helper's write however it ends, also
        /// by a panic: a writer waiting for it would otherwise wait
        /// forever, holding the partition's lock.
        struct Done<'a>(&'a AtomicU64);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.store(IDLE_AT, Ordering::SeqCst);
            }
        }
        let page = io::page_size() as u64;
        let mut at = start.next_multiple_of(page);
        let mut zeroed = 0;
        while at < end {
            self.zeroing.store(at, Ordering::SeqCst);
            let writer = self.writer_end.load(Ordering::SeqCst);
            if writer > at {
                self.zeroing.store(IDLE_AT, Ordering::SeqCst);
                if writer >= end {
                    break;
                }
                at = writer.next_multiple_of(page);
                continue;
            }
            let to = (at + ZERO_CHUNK).min(end);
            let written = {
                let _done = Done(&self.zeroing);
                file.write_zeros(at, to - at)
            };
            if let Err(e) = written {
                tracing::trace!(error = %e, "zeroing ahead of a writer failed");
                break;
            }
            zeroed += to - at;
            at = to;
        }
        zeroed
    }
}

struct Job {
    map: Arc<SegmentMap>,
    start: u64,
    end: u64,
    work: Work,
}

/// Set once the kernel refused `MADV_POPULATE_WRITE` as unknown.
static NO_POPULATE: AtomicBool = AtomicBool::new(false);

impl Job {
    fn run(self) {
        match self.work {
            Work::Zero { seg, fence, file } => {
                fence.zero(&file, self.start, self.end);
                let start = self.start.max(seg.released());
                if populates() && !fence.is_closed() {
                    if let Err(e) = self.map.populate(start, self.end) {
                        populate_failed(&e);
                    }
                }
            }
            Work::Release => self.map.release(self.start, self.end),
        }
    }
}

struct Queue {
    jobs: VecDeque<Job>,
    /// The helper thread exists (or is being started).
    running: bool,
    /// The helper is running a job (tests wait for it; see [`drain`]).
    busy: bool,
}

static QUEUE: Mutex<Queue> = const_mutex(Queue {
    jobs: VecDeque::new(),
    running: false,
    busy: false,
});
/// Rung when a job is queued (the helper waits on it) and when the helper
/// finishes one or stops (`drain` waits on it).
static WAKE: Condvar = Condvar::new();

/// Has zeros written to the pages of `start..end` of `file` (the file of
/// `map`, an active segment's) that lie at or past `fence`'s writer end,
/// if the helper can take it.
pub(crate) fn zero(
    seg: &Arc<Segment>,
    fence: &Arc<Fence>,
    file: DataFile,
    map: &Arc<SegmentMap>,
    start: u64,
    end: u64,
) {
    if start >= end {
        return;
    }
    let work = Work::Zero {
        seg: Arc::clone(seg),
        fence: Arc::clone(fence),
        file,
    };
    // Not queued when the queue is full: it is only a hint.
    let _ = submit(map, start, end, work);
}

/// Has the whole pages of `start..end` of `map` unmapped from this process
/// (see [`SegmentMap::release`]), by the helper or, failing that, now.
pub(crate) fn release(map: &Arc<SegmentMap>, start: u64, end: u64) {
    if start >= end {
        return;
    }
    if let Err(job) = submit(map, start, end, Work::Release) {
        job.run();
    }
}

/// Queues a job, starting the helper if needed; hands the job back if it
/// was not queued.
fn submit(map: &Arc<SegmentMap>, start: u64, end: u64, work: Work) -> Result<(), Job> {
    let job = Job {
        map: Arc::clone(map),
        start,
        end,
        work,
    };
    let mut q = QUEUE.lock();
    if q.jobs.len() >= MAX_QUEUED {
        return Err(job);
    }
    q.jobs.push_back(job);
    if q.running {
        WAKE.notify_all();
        return Ok(());
    }
    q.running = true;
    drop(q);
    // Started without the queue's lock held: callers hold a partition's.
    let spawned = std::thread::Builder::new()
        .name("brook-pager".into())
        .spawn(run);
    if let Err(e) = spawned {
        tracing::debug!(error = %e, "could not start the pager thread");
        stopped();
    }
    Ok(())
}

/// The helper is gone (or never started): the next request starts it
/// again; the jobs it left are run here (releases) or dropped (zeroing).
fn stopped() {
    let jobs = {
        let mut q = QUEUE.lock();
        q.running = false;
        q.busy = false;
        WAKE.notify_all();
        std::mem::take(&mut q.jobs)
    };
    for job in jobs {
        if matches!(job.work, Work::Release) {
            job.run();
        }
    }
}

fn run() {
    /// Runs [`stopped`] however the helper ends, also by a panic.
    struct Exit;
    impl Drop for Exit {
        fn drop(&mut self) {
            stopped();
        }
    }
    let _exit = Exit;
    let mut q = QUEUE.lock();
    loop {
        if let Some(job) = q.jobs.pop_front() {
            q.busy = true;
            drop(q);
            job.run();
            q = QUEUE.lock();
            q.busy = false;
            WAKE.notify_all();
            continue;
        }
        if WAKE.wait_for(&mut q, IDLE).timed_out() && q.jobs.is_empty() {
            return;
        }
    }
}

/// Notes a failed `populate` (here or of a durable append's fsync, see
/// `Active::harden_ahead`): a kernel that does not know
/// `MADV_POPULATE_WRITE` turns populating off for the process; anything
/// else (a file truncated meanwhile) is ignored.
pub(crate) fn populate_failed(e: &std::io::Error) {
    let unknown =
        e.raw_os_error() == Some(libc::EINVAL) || e.kind() == std::io::ErrorKind::Unsupported;
    if unknown {
        NO_POPULATE.store(true, Ordering::Relaxed);
    }
    tracing::trace!(error = %e, "populating a segment map failed");
}

/// Whether populating works on this kernel, as far as known yet: off once
/// the kernel refused `MADV_POPULATE_WRITE`.
pub(crate) fn populates() -> bool {
    !NO_POPULATE.load(Ordering::Relaxed)
}

/// Waits until every queued job is done.
#[cfg(test)]
pub(crate) fn drain() {
    let mut q = QUEUE.lock();
    while !q.jobs.is_empty() || q.busy {
        WAKE.wait(&mut q);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    use super::{Fence, ZERO_CHUNK};
    use crate::io::DataFile;

    /// The byte the writer of the fence test writes at `pos` (never zero).
    fn pattern(pos: u64) -> u8 {
        (pos % 251) as u8 + 1
    }

    /// A writer fills a shared map of a real file chunk by chunk, claiming
    /// room ahead through the fence as `Active::make_room` does, while
    /// another thread keeps zeroing from *behind* the writer's published
    /// position (a stale request, the worst case) to past it. Every byte
    /// the writer wrote must read back, and the zeroing must have run.
    #[test]
    fn the_fence_keeps_zeros_out_of_the_writers_bytes() {
        const FILE: u64 = 48 << 20;
        const RESERVE: u64 = 64 * 1024;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fenced.log");
        let file = DataFile::create_new(&path).unwrap();
        file.allocate(FILE).unwrap();
        let map = file.map_raw(FILE).unwrap();
        let fence = Arc::new(Fence::new(0));
        let published = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let zeroer = {
            let (fence, published, done) = (fence.clone(), published.clone(), done.clone());
            let file = DataFile::open(&path, false).unwrap();
            std::thread::spawn(move || {
                let (mut zeroed, mut rounds) = (0, 0u64);
                while !done.load(Ordering::Relaxed) {
                    let pos = published.load(Ordering::Relaxed);
                    let behind = (rounds * 7919) % (3 * ZERO_CHUNK);
                    let start = pos.saturating_sub(behind);
                    zeroed += fence.zero(&file, start, (pos + 2 * ZERO_CHUNK).min(FILE));
                    rounds += 1;
                }
                zeroed
            })
        };
        let (mut pos, mut writable, mut step) = (0u64, 0u64, 97u64);
        while pos + 8192 < FILE - 4 * ZERO_CHUNK {
            let len = 100 + step % 5000;
            step = step
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407)
                >> 11;
            if pos + len > writable {
                writable = (pos + RESERVE).max(pos + len);
                fence.advance(writable);
                // The far end of the claim first: a zero write in flight
                // there, not waited for, would wipe it.
                let last = writable - 1;
                // SAFETY: as below.
                unsafe { *map.as_mut_ptr().add(last as usize) = pattern(last) };
            }
            for at in pos..pos + len {
                // SAFETY: `at` is below the file's allocated length and the
                // map's; only this thread stores through the map.
                unsafe { *map.as_mut_ptr().add(at as usize) = pattern(at) };
            }
            pos += len;
            published.store(pos, Ordering::Relaxed);
        }
        done.store(true, Ordering::Relaxed);
        let zeroed = zeroer.join().unwrap();
        fence.close();
        // SAFETY: the writer is done and the zeroer joined; the bytes lie
        // within the map.
        let bytes = unsafe { std::slice::from_raw_parts(map.as_ptr(), pos as usize) };
        let lost = (0..pos).find(|&at| bytes[at as usize] != pattern(at));
        assert_eq!(
            lost, None,
            "a written byte was zeroed ({pos} bytes written)"
        );
        assert!(zeroed >= 4 * ZERO_CHUNK, "the zeroing ran: {zeroed} bytes");
    }

    /// A closed fence lets no zeros through, so a file cut after it is
    /// closed is never extended again by a late zeroing job.
    #[test]
    fn a_closed_fence_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("closed.log");
        let file = DataFile::create_new(&path).unwrap();
        file.allocate(1 << 20).unwrap();
        let fence = Fence::new(4096);
        assert_eq!(fence.zero(&file, 0, 1 << 20), (1 << 20) - 4096);
        fence.close();
        file.truncate(8192).unwrap();
        assert_eq!(fence.zero(&file, 0, 1 << 20), 0);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 8192);
    }
}
