//! Storage throughput: brook beside the `commitlog` crate, same workloads,
//! same groups.
//!
//! - `append_single`: one record (16-byte key, 100-byte value) per call,
//!   one partition, `SyncPolicy::Never` (commitlog never fsyncs by itself).
//! - `send_batch_1000`: 1,000 such records per call.
//! - `read`: 1,000 records per read from a prefilled partition of 1M
//!   records, cycling through it; every value is touched.
//!
//! Each benchmark has its own temporary directory. Appending logs are
//! replaced, outside the timed section, once they hold a few million
//! records, so a run needs a few hundred MB of disk at most. Before the
//! read group, the bytes on disk per record of both prefilled logs are
//! printed once.
//!
//! `cargo bench --bench storage`; under `cargo test --benches` each
//! benchmark runs once on a small prefill.

use std::fs;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use brook::{Log, LogConfig, Partition, Record, SyncPolicy, Topic, TopicConfig};
use commitlog::message::{MessageBuf, MessageSet};
use commitlog::{CommitLog, LogOptions, ReadLimit};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tempfile::TempDir;

const KEY_BYTES: usize = 16;
const VALUE_BYTES: usize = 100;
/// Distinct keys cycled through by the appends (precomputed: formatting a
/// key is not what is measured).
const KEYS: usize = 1024;
const BATCH: usize = 1000;
/// An appending log is replaced once it holds this many records.
const REPLACE_AFTER: u64 = 2_000_000;

fn keys() -> Vec<[u8; KEY_BYTES]> {
    (0..KEYS)
        .map(|i| {
            let mut k = [0u8; KEY_BYTES];
            k.copy_from_slice(format!("key-{i:012}").as_bytes());
            k
        })
        .collect()
}

fn value() -> [u8; VALUE_BYTES] {
    let mut v = [0u8; VALUE_BYTES];
    for (i, b) in v.iter_mut().enumerate() {
        *b = b'a' + (i % 26) as u8;
    }
    v
}

/// `cargo bench` passes `--bench`; without it criterion runs each benchmark
/// once as a test, so a small prefill is enough.
fn bench_mode() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn log_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        if path.is_dir() {
            total += log_bytes(&path);
        } else if path.extension().is_some_and(|e| e == "log") {
            total += entry.metadata().unwrap().len();
        }
    }
    total
}

// ------------------------------------------------------------------ brook

struct BrookAppender {
    _dir: TempDir,
    log: Log,
    topic: Topic,
    generation: u32,
    appended: u64,
}

impl BrookAppender {
    fn new() -> BrookAppender {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open_with(dir.path(), LogConfig::default().sync(SyncPolicy::Never)).unwrap();
        let topic = log.create_topic("bench-0", TopicConfig::default()).unwrap();
        BrookAppender {
            _dir: dir,
            log,
            topic,
            generation: 0,
            appended: 0,
        }
    }

    /// Replaces the topic once it is large (not timed).
    fn make_room(&mut self) {
        if self.appended < REPLACE_AFTER {
            return;
        }
        self.log.delete_topic(self.topic.name()).unwrap();
        self.generation += 1;
        self.topic = self
            .log
            .create_topic(
                &format!("bench-{}", self.generation),
                TopicConfig::default(),
            )
            .unwrap();
        self.appended = 0;
    }
}

fn brook_records(keys: &[[u8; KEY_BYTES]], value: &[u8], n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| Record::new(value).key(keys[i % keys.len()]))
        .collect()
}

/// A closed-then-reopened partition of `n` records, and the bytes on disk
/// per record after the close.
fn brook_prefilled(dir: &Path, n: u64) -> (Log, Partition, f64) {
    let keys = keys();
    let value = value();
    {
        let log = Log::open_with(dir, LogConfig::default().sync(SyncPolicy::Never)).unwrap();
        let topic = log.create_topic("read", TopicConfig::default()).unwrap();
        let records = brook_records(&keys, &value, BATCH);
        for _ in 0..n / BATCH as u64 {
            topic.send_batch(&records).unwrap();
        }
        log.close().unwrap();
    }
    let per_record = log_bytes(dir) as f64 / n as f64;
    let log = Log::open(dir).unwrap();
    let partition = log.topic("read").unwrap().partition(0).unwrap();
    assert_eq!(partition.end_offset(), n);
    (log, partition, per_record)
}

// -------------------------------------------------------------- commitlog

struct CommitLogAppender {
    dir: TempDir,
    log: CommitLog,
    generation: u32,
}

impl CommitLogAppender {
    fn open(dir: &Path, generation: u32) -> CommitLog {
        CommitLog::new(LogOptions::new(dir.join(format!("gen-{generation}")))).unwrap()
    }

    fn new() -> CommitLogAppender {
        let dir = tempfile::tempdir().unwrap();
        let log = Self::open(dir.path(), 0);
        CommitLogAppender {
            dir,
            log,
            generation: 0,
        }
    }

    fn make_room(&mut self) {
        if self.log.next_offset() < REPLACE_AFTER {
            return;
        }
        self.generation += 1;
        self.log = Self::open(self.dir.path(), self.generation);
        fs::remove_dir_all(self.dir.path().join(format!("gen-{}", self.generation - 1))).unwrap();
    }
}

/// The same record as brook's: the key as message metadata, the value as payload.
fn commitlog_batch(keys: &[[u8; KEY_BYTES]], value: &[u8], n: usize) -> MessageBuf {
    let mut buf = MessageBuf::default();
    for i in 0..n {
        buf.push_with_metadata(keys[i % keys.len()], value).unwrap();
    }
    buf
}

fn commitlog_prefilled(dir: &Path, n: u64) -> (CommitLog, f64) {
    let keys = keys();
    let value = value();
    let mut log = CommitLog::new(LogOptions::new(dir)).unwrap();
    let mut batch = commitlog_batch(&keys, &value, BATCH);
    for _ in 0..n / BATCH as u64 {
        log.append(&mut batch).unwrap();
    }
    log.flush().unwrap();
    let per_record = log_bytes(dir) as f64 / n as f64;
    (log, per_record)
}

// ------------------------------------------------------------- benchmarks

fn append_single(c: &mut Criterion) {
    let keys = keys();
    let value = value();
    let mut group = c.benchmark_group("append_single");
    group.throughput(Throughput::Elements(1));

    let mut brook = BrookAppender::new();
    group.bench_function("brook", |b| {
        b.iter_custom(|iters| {
            brook.make_room();
            let topic = &brook.topic;
            let start = Instant::now();
            for i in 0..iters as usize {
                black_box(topic.append(keys[i % KEYS], value).unwrap());
            }
            let elapsed = start.elapsed();
            brook.appended += iters;
            elapsed
        })
    });
    drop(brook);

    let mut commitlog = CommitLogAppender::new();
    let mut buf = MessageBuf::default();
    group.bench_function("commitlog", |b| {
        b.iter_custom(|iters| {
            commitlog.make_room();
            let start = Instant::now();
            for i in 0..iters as usize {
                buf.clear();
                buf.push_with_metadata(keys[i % KEYS], value).unwrap();
                black_box(commitlog.log.append(&mut buf).unwrap());
            }
            start.elapsed()
        })
    });
    group.finish();
}

fn send_batch_1000(c: &mut Criterion) {
    let keys = keys();
    let value = value();
    let mut group = c.benchmark_group("send_batch_1000");
    group.throughput(Throughput::Elements(BATCH as u64));

    let mut brook = BrookAppender::new();
    let records = brook_records(&keys, &value, BATCH);
    group.bench_function("brook", |b| {
        b.iter_custom(|iters| {
            brook.make_room();
            let topic = &brook.topic;
            let start = Instant::now();
            for _ in 0..iters {
                black_box(topic.send_batch(&records).unwrap());
            }
            let elapsed = start.elapsed();
            brook.appended += iters * BATCH as u64;
            elapsed
        })
    });
    drop(brook);

    let mut commitlog = CommitLogAppender::new();
    let mut batch = commitlog_batch(&keys, &value, BATCH);
    group.bench_function("commitlog", |b| {
        b.iter_custom(|iters| {
            commitlog.make_room();
            let start = Instant::now();
            for _ in 0..iters {
                black_box(commitlog.log.append(&mut batch).unwrap());
            }
            start.elapsed()
        })
    });
    // The above re-appends one buffer encoded (and checksummed) before the
    // clock starts; here commitlog builds it in each call, as brook's
    // `send_batch` does from its records.
    group.bench_function("commitlog_encoding", |b| {
        b.iter_custom(|iters| {
            commitlog.make_room();
            let start = Instant::now();
            for _ in 0..iters {
                batch.clear();
                for i in 0..BATCH {
                    batch.push_with_metadata(keys[i % KEYS], value).unwrap();
                }
                black_box(commitlog.log.append(&mut batch).unwrap());
            }
            start.elapsed()
        })
    });
    group.finish();
}

fn read(c: &mut Criterion) {
    let records: u64 = if bench_mode() { 1_000_000 } else { 10_000 };
    let brook_dir = tempfile::tempdir().unwrap();
    let (_brook_log, partition, brook_bytes) = brook_prefilled(brook_dir.path(), records);
    let commitlog_dir = tempfile::tempdir().unwrap();
    let (commitlog, commitlog_bytes) = commitlog_prefilled(commitlog_dir.path(), records);
    println!(
        "bytes on disk per record ({KEY_BYTES}-byte key, {VALUE_BYTES}-byte value, \
         {records} records): brook {brook_bytes:.1} (after close), commitlog {commitlog_bytes:.1}"
    );
    // commitlog limits reads by bytes: the size of 1,000 of its messages.
    let message_bytes = {
        let some = commitlog.read(0, ReadLimit::max_bytes(64 * 1024)).unwrap();
        some.bytes().len() / some.len()
    };
    let limit = ReadLimit::max_bytes(message_bytes * BATCH);

    let mut group = c.benchmark_group("read");
    group.throughput(Throughput::Elements(BATCH as u64));

    let mut next = 0u64;
    group.bench_function("brook", |b| {
        b.iter(|| {
            let mut got = 0;
            let mut bytes = 0;
            while got < BATCH {
                let msgs = partition.read(next, BATCH - got).unwrap();
                for m in &msgs {
                    bytes += m.value().map_or(0, <[u8]>::len);
                }
                got += msgs.len();
                next = (next + msgs.len() as u64) % records;
            }
            black_box(bytes)
        })
    });

    let mut next = 0u64;
    group.bench_function("commitlog", |b| {
        b.iter(|| {
            let mut got = 0;
            let mut bytes = 0;
            while got < BATCH {
                let msgs = commitlog.read(next, limit).unwrap();
                let mut n = 0;
                for m in msgs.iter().take(BATCH - got) {
                    bytes += m.payload().len();
                    n += 1;
                }
                got += n;
                next = (next + n as u64) % records;
            }
            black_box(bytes)
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = append_single, send_batch_1000, read
}
criterion_main!(benches);
