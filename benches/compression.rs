//! Compression: ratio and throughput per codec on JSON-like events.
//!
//! Each event is a 16-byte key and a ~200-byte JSON object of the kind
//! applications log (ids, a user, an action, an amount, tags, a timestamp),
//! varied enough that no two are alike. For every codec compiled in (run
//! with `--all-features` for gzip and snappy), in one run:
//!
//! - `compression_write/<codec>`: `send_batch` of 1,000 events into a topic
//!   with that codec, sealed by a flush at the end of each sample —
//!   throughput in MB/s of *uncompressed* record bytes, so codecs compare
//!   directly with `none`;
//! - `compression_read/<codec>`: `Partition::read` of the whole partition
//!   (decompressing every batch), MB/s of uncompressed record bytes;
//! - the compression ratio (segment bytes without compression / with it),
//!   printed once per codec.
//!
//! `cargo bench --all-features --bench compression`. Under `cargo test
//! --benches` each runs once.

use std::path::Path;
use std::time::{Duration, Instant};

use brook::{Compression, Log, Record, TopicConfig};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const BATCH: u64 = 1000;
/// Events in the topic each read sample reads back.
const READ_EVENTS: u64 = 200_000;

const CODECS: [(&str, Compression); 5] = [
    ("none", Compression::None),
    ("gzip", Compression::Gzip),
    ("snappy", Compression::Snappy),
    ("lz4", Compression::Lz4),
    ("zstd", Compression::Zstd),
];

fn bench_mode() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// A JSON-like event; a small xorshift makes the fields vary.
fn event(i: u64) -> (String, String) {
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let key = format!("order-{:010}", next() % 10_000_000_000);
    let actions = ["view", "add_to_cart", "checkout", "refund", "login"];
    let value = format!(
        r#"{{"event_id":{i},"user":"user-{:06}","action":"{}","amount":{}.{:02},"currency":"EUR","session":"{:016x}","ts":{},"tags":["web","{}"]}}"#,
        next() % 1_000_000,
        actions[(next() % 5) as usize],
        next() % 10_000,
        next() % 100,
        next(),
        1_700_000_000_000 + i * 37,
        ["eu", "us", "apac"][(next() % 3) as usize],
    );
    (key, value)
}

fn records(from: u64, n: u64) -> Vec<Record> {
    (from..from + n)
        .map(|i| {
            let (k, v) = event(i);
            Record::new(v).key(k).partition(0)
        })
        .collect()
}

/// Key and value bytes of events `0..n`.
fn raw_bytes(n: u64) -> u64 {
    (0..n)
        .map(|i| {
            let (k, v) = event(i);
            (k.len() + v.len()) as u64
        })
        .sum()
}

fn topic_config(codec: Compression) -> TopicConfig {
    TopicConfig::default()
        .segment_bytes(256 << 20)
        .compression(codec)
}

fn segment_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join("t-0"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

/// Writes `n` events to a fresh log with `codec`; returns the segment bytes.
fn fill(dir: &Path, codec: Compression, n: u64) -> u64 {
    let log = Log::open(dir).unwrap();
    let t = log.create_topic("t", topic_config(codec)).unwrap();
    let mut i = 0;
    while i < n {
        t.send_batch(records(i, BATCH.min(n - i))).unwrap();
        i += BATCH;
    }
    log.close().unwrap();
    segment_bytes(dir)
}

fn bench_compression(c: &mut Criterion) {
    let available: Vec<_> = CODECS.iter().filter(|(_, c)| c.is_available()).collect();
    let read_events = if bench_mode() { READ_EVENTS } else { 2 * BATCH };

    let mut ratios = Vec::new();
    let plain_dir = tempfile::tempdir().unwrap();
    let plain = fill(plain_dir.path(), Compression::None, read_events);
    for &&(name, codec) in &available {
        let dir = tempfile::tempdir().unwrap();
        let packed = fill(dir.path(), codec, read_events);
        ratios.push((name, plain as f64 / packed as f64, packed));
    }

    let batch = records(0, BATCH);
    let batch_bytes = raw_bytes(BATCH);
    let mut group = c.benchmark_group("compression_write");
    group.throughput(Throughput::Bytes(batch_bytes));
    for &&(name, codec) in &available {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path()).unwrap();
        let t = log.create_topic("t", topic_config(codec)).unwrap();
        group.bench_function(name, |b| {
            b.iter(|| {
                t.send_batch(&batch).unwrap();
                log.flush().unwrap();
            })
        });
        log.close().unwrap();
    }
    group.finish();

    let all_bytes = raw_bytes(read_events);
    let mut group = c.benchmark_group("compression_read");
    group.throughput(Throughput::Bytes(all_bytes));
    for &&(name, codec) in &available {
        let dir = tempfile::tempdir().unwrap();
        fill(dir.path(), codec, read_events);
        let log = Log::open(dir.path()).unwrap();
        let p = log.topic("t").unwrap().partition(0).unwrap();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    let mut at = 0;
                    while at < read_events {
                        let msgs = p.read(at, 10_000).unwrap();
                        at = msgs.last().unwrap().offset() + 1;
                    }
                }
                start.elapsed()
            })
        });
        log.close().unwrap();
    }
    group.finish();

    for (name, ratio, packed) in ratios {
        eprintln!(
            "compression ratio {name:>6}: {ratio:5.2}x ({plain} -> {packed} segment bytes, {read_events} events)"
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = bench_compression
}
criterion_main!(benches);
