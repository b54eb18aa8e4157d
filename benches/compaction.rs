//! Compaction throughput and key-map memory.
//!
//! A compacted topic of 1 GiB of 16-byte keys and 100-byte values, cycling
//! through 1,000,000 distinct keys (about 8.5 versions of each), is written
//! once in 128 MiB segments with the background cleaner off. Each sample
//! copies it to a fresh directory (not timed), opens it and times
//! `Log::compact_now`: throughput is MB/s of the input segments (the closed
//! ones, 7/8 of the log: like Kafka, compaction leaves the active segment).
//!
//! A counting global allocator records the peak heap in use during one
//! compaction above what was in use before it; divided by the number of
//! distinct keys, that is the memory the key map costs per key (it also
//! includes the cleaner's 1 MiB write buffer, negligible at this size).
//!
//! `cargo bench --bench compaction`; `BROOK_COMPACTION_MB` and
//! `BROOK_COMPACTION_KEYS` change the size. Under `cargo test --benches`
//! it runs once on 8 MiB and 50,000 keys.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use brook::{CleanupPolicy, Log, LogConfig, Record, TopicConfig};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// Counts the bytes allocated and their high-water mark.
struct Counting;

static IN_USE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counters are only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `alloc`'s contract, passed on as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = IN_USE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) };
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size > layout.size() {
                let grow = new_size - layout.size();
                let now = IN_USE.fetch_add(grow, Ordering::Relaxed) + grow;
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                IN_USE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const TOPIC: &str = "changelog";
const VALUE_BYTES: usize = 100;

struct Size {
    bytes: u64,
    keys: u64,
}

fn size() -> Size {
    let env = |name: &str| std::env::var(name).ok().map(|v| v.parse::<u64>().unwrap());
    if std::env::args().any(|a| a == "--bench") {
        Size {
            bytes: env("BROOK_COMPACTION_MB").unwrap_or(1024) << 20,
            keys: env("BROOK_COMPACTION_KEYS").unwrap_or(1_000_000),
        }
    } else {
        Size {
            bytes: 8 << 20,
            keys: 50_000,
        }
    }
}

fn config() -> LogConfig {
    LogConfig::default().cleaner(false)
}

/// Writes the uncompacted source log.
fn write_source(dir: &Path, size: &Size) {
    let log = Log::open_with(dir, config()).unwrap();
    let topic = log
        .create_topic(
            TOPIC,
            TopicConfig::default()
                .cleanup_policy(CleanupPolicy::Compact)
                .segment_bytes((size.bytes / 8).max(1 << 20))
                .max_record_bytes(1024),
        )
        .unwrap();
    let value = [b'v'; VALUE_BYTES];
    let mut i = 0u64;
    let mut batch = Vec::with_capacity(1000);
    // 16-byte key + 100-byte value: about 126 bytes a record on disk.
    let records = size.bytes / 126;
    while i < records {
        batch.clear();
        for _ in 0..1000 {
            let key = format!("key-{:012}", i % size.keys);
            batch.push(Record::new(value).key(key));
            i += 1;
        }
        topic.send_batch(&batch).unwrap();
    }
    log.close().unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != ".lock" {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Opens a fresh copy of the source and compacts it; returns the time
/// compaction took, the peak heap it added and the bytes it read.
fn compact_copy(source: &Path, scratch: &Path) -> (Duration, usize, u64) {
    let _ = fs::remove_dir_all(scratch);
    copy_dir(source, scratch);
    let log = Log::open_with(scratch, config()).unwrap();
    let before = IN_USE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let start = Instant::now();
    let stats = log.compact_now(TOPIC).unwrap();
    let took = start.elapsed();
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(before);
    assert!(stats.records_out < stats.records_in, "{stats:?}");
    log.close().unwrap();
    (took, peak, stats.bytes_in)
}

fn compaction(c: &mut Criterion) {
    let size = size();
    let root = tempfile::tempdir().unwrap();
    let source = root.path().join("source");
    let scratch = root.path().join("scratch");
    write_source(&source, &size);
    let (took, peak, input) = compact_copy(&source, &scratch);
    println!(
        "compaction of {:.0} MiB of closed segments over {} keys: {:.0} MB/s (one run), key map {:.1} bytes per key \
         ({:.1} MiB peak heap)",
        input as f64 / (1 << 20) as f64,
        size.keys,
        input as f64 / 1e6 / took.as_secs_f64(),
        peak as f64 / size.keys as f64,
        peak as f64 / (1 << 20) as f64
    );
    let mut group = c.benchmark_group("compaction");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(1));
    group.measurement_time(Duration::from_secs(1));
    group.throughput(Throughput::Bytes(input));
    group.bench_function("compact_now", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| compact_copy(&source, &scratch).0).sum())
    });
    group.finish();
}

criterion_group!(benches, compaction);
criterion_main!(benches);
