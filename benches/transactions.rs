//! Transactional throughput against plain appends.
//!
//! 100 records (16-byte key, 100-byte value) to one partition per
//! iteration, `SyncPolicy::Never`, in one run:
//!
//! - `transactions_100/plain`: an idempotent `Producer::send_batch`;
//! - `transactions_100/transactional`: `begin_transaction`, the same
//!   `send_batch`, `commit_transaction` — the coordinator's two state
//!   records, the commit marker, and the first-partition registration.
//!
//! The ratio of the two medians is the cost of a transaction of 100
//! records. `cargo bench --bench transactions`; under `cargo test
//! --benches` each runs once.

use std::time::Duration;

use brook::{Log, ProducerConfig, Record, TopicConfig};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const RECORDS: usize = 100;

fn records() -> Vec<Record> {
    (0..RECORDS)
        .map(|i| {
            Record::new(vec![b'v'; 100])
                .key(format!("key-{i:012}"))
                .partition(0)
        })
        .collect()
}

fn bench_transactions(c: &mut Criterion) {
    let batch = records();
    let mut group = c.benchmark_group("transactions_100");
    group.throughput(Throughput::Elements(RECORDS as u64));

    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic("t", TopicConfig::default()).unwrap();
    let mut plain = log.producer(ProducerConfig::default()).unwrap();
    group.bench_function("plain", |b| {
        b.iter(|| plain.send_batch("t", &batch).unwrap())
    });
    let mut tx = log
        .producer(ProducerConfig::default().transactional_id("bench"))
        .unwrap();
    group.bench_function("transactional", |b| {
        b.iter(|| {
            tx.begin_transaction().unwrap();
            tx.send_batch("t", &batch).unwrap();
            tx.commit_transaction().unwrap();
        })
    });
    group.finish();
    drop((plain, tx));
    log.close().unwrap();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = bench_transactions
}
criterion_main!(benches);
