//! Page-table work moved off the append and read paths, onto one helper
//! thread per process.
//!
//! - **Faulting in ahead of the writer.** The first touch of a page of the
//!   active segment's shared map costs the writer a page fault that
//!   allocates a page-cache page and zero-fills it (the file's blocks are
//!   preallocated but unwritten), then a `page_mkwrite` that marks it dirty:
//!   about 40 % of a `send_batch` of 1,000 records, and 20 % of a single
//!   append, in the profile. The writer asks for the pages ahead of it
//!   (`Active::prefault_ahead` decides how far), and the helper faults them
//!   in with `madvise(MADV_POPULATE_WRITE)` while the writer fills the pages
//!   before them. (`MADV_POPULATE_READ` would leave them clean, but measured
//!   slower than no prefaulting at all: the writer still takes the
//!   `page_mkwrite` fault, and contends with the helper for the pages.)
//! - **Unmapping behind writers and readers.** `madvise(MADV_DONTNEED)` of
//!   the pages a sequential writer or reader left behind (see
//!   `Segment::release_behind`) costs a page-table walk and TLB shootdowns;
//!   the helper does that too.
//!
//! Neither changes a byte of the file. `MADV_POPULATE_WRITE` faults pages in
//! as a write would, without writing, and returns an error instead of raising
//! `SIGBUS` for pages past the file's end (a file truncated meanwhile); the
//! pages it dirties hold the zeros the file held there already. An
//! unmapped page of a shared file mapping reads back the same from the page
//! cache. Each request holds an `Arc` of its map, so the range stays mapped
//! until the helper is done with it.
//!
//! Prefaulting is a hint: a request that finds the queue full is dropped, a
//! failure (a file truncated meanwhile) is ignored, and a kernel without
//! `MADV_POPULATE_WRITE` (older than 5.14, or not Linux) turns it off for
//! the process. A populate never faults in pages below what the segment's
//! sequential writer or reader released already. A release that finds the
//! queue full is done by the caller. The thread exits after a few idle
//! seconds and the next request starts it again; if it cannot be started,
//! or dies, releases are done by the callers and prefaulting is skipped
//! until it can be.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{const_mutex, Condvar, Mutex};

use super::segment::{Segment, SegmentMap};

/// Requests beyond this many waiting are not queued. (Each holds a map,
/// and with it a deleted segment's disk space, until it runs.)
const MAX_QUEUED: usize = 256;
/// The helper exits after this long without a request.
const IDLE: Duration = Duration::from_secs(5);

enum Work {
    /// Fault in, unless the segment's reader or writer released the pages
    /// meanwhile.
    Populate(Arc<Segment>),
    Release,
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
            Work::Populate(seg) => {
                let start = self.start.max(seg.released());
                if let Err(e) = self.map.populate(start, self.end) {
                    populate_failed(&e);
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

/// Has bytes `start..end` of `map`, the active segment `seg`'s, faulted in,
/// if the helper can take it.
pub(crate) fn populate(seg: &Arc<Segment>, map: &Arc<SegmentMap>, start: u64, end: u64) {
    if start >= end || NO_POPULATE.load(Ordering::Relaxed) {
        return;
    }
    // Not queued when the queue is full: it is only a hint.
    let _ = submit(map, start, end, Work::Populate(Arc::clone(seg)));
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
/// again; the jobs it left are run here (releases) or dropped (populates).
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
