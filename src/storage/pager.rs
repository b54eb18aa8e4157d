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
//! Prefaulting is a hint: a request that finds the queue full is dropped, and
//! a failure (a kernel older than 5.14, a file truncated meanwhile) is
//! ignored. A release that finds the queue full is done by the caller. The
//! thread exits after a few idle seconds and the next request starts it
//! again; if it cannot be started, releases are done by the caller and
//! prefaulting is skipped.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{const_mutex, Condvar, Mutex};

use super::segment::SegmentMap;

/// Requests beyond this many waiting are not queued.
const MAX_QUEUED: usize = 64;
/// The helper exits after this long without a request.
const IDLE: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Work {
    Populate,
    Release,
}

struct Job {
    map: Arc<SegmentMap>,
    start: u64,
    end: u64,
    work: Work,
}

impl Job {
    fn run(self) {
        match self.work {
            Work::Populate => self.map.populate(self.start, self.end),
            Work::Release => self.map.release(self.start, self.end),
        }
    }
}

struct Queue {
    jobs: VecDeque<Job>,
    /// The helper thread exists.
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
/// goes idle (`drain` waits on it).
static WAKE: Condvar = Condvar::new();

/// Has bytes `start..end` of the active segment's `map` faulted in, if the
/// helper can take it.
pub(crate) fn populate(map: &Arc<SegmentMap>, start: u64, end: u64) {
    if let Err(job) = submit(map, start, end, Work::Populate) {
        drop(job);
    }
}

/// Has the whole pages of `start..end` of `map` unmapped from this process
/// (see [`SegmentMap::release`]), by the helper or, failing that, now.
pub(crate) fn release(map: &Arc<SegmentMap>, start: u64, end: u64) {
    if let Err(job) = submit(map, start, end, Work::Release) {
        job.run();
    }
}

/// Queues a job; hands it back if it was not queued.
fn submit(map: &Arc<SegmentMap>, start: u64, end: u64, work: Work) -> Result<(), Job> {
    let job = Job {
        map: Arc::clone(map),
        start,
        end,
        work,
    };
    if start >= end {
        return Ok(());
    }
    let mut q = QUEUE.lock();
    if q.jobs.len() >= MAX_QUEUED {
        return Err(job);
    }
    if !q.running {
        let spawned = std::thread::Builder::new()
            .name("brook-pager".into())
            .spawn(run);
        if let Err(e) = spawned {
            tracing::debug!(error = %e, "could not start the pager thread");
            return Err(job);
        }
        q.running = true;
    }
    q.jobs.push_back(job);
    WAKE.notify_all();
    Ok(())
}

fn run() {
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
            q.running = false;
            return;
        }
    }
}

/// Waits until every queued job is done.
#[cfg(test)]
pub(crate) fn drain() {
    let mut q = QUEUE.lock();
    while !q.jobs.is_empty() || q.busy {
        WAKE.wait(&mut q);
    }
}
