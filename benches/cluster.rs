//! The replicated cluster against a single log, and failover time.
//!
//! In one run, `SyncPolicy::Never`, records of a 16-byte key and a
//! 100-byte value to one partition:
//!
//! - `replicated_1000/log`: `send_batch` of 1,000 records on a `Log`;
//! - `replicated_1000/cluster_rf3_acks_all`: the same on a 3-broker
//!   `Cluster`, replication factor 3, `Acks::All` (returns once both
//!   followers copied the batch);
//! - `replicated_1000/cluster_rf3_acks_leader`: the same with `Acks::Leader`;
//! - `append_1/...`: single appends, same three setups (acks=all waits for
//!   a replication round trip per record);
//! - `failover/stop_leader_to_first_append`: from `stop_broker(leader)` to
//!   the first successful `Acks::All` append on the new leader (the old
//!   leader restarts and rejoins the ISR between samples, untimed).
//!
//! - `producers_100/...`: 100 records per call on the cluster (RF 3,
//!   `Acks::All`): a plain `send_batch`, an idempotent `Producer`'s
//!   `send_batch`, and a transaction of 100 records (`begin`, one
//!   `send_batch`, `commit`: two coordinator records and a marker, each
//!   acknowledged by the ISR).
//!
//! The ratios of the medians are the cost of replication.
//! `cargo bench --bench cluster`; under `cargo test --benches` each runs once.

use std::time::{Duration, Instant};

use brook::{
    Acks, Cluster, ClusterConfig, Error, Log, ProducerConfig, Record, Topic, TopicConfig,
    TopicPartition,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const RECORDS: usize = 1000;

fn records() -> Vec<Record> {
    (0..RECORDS)
        .map(|i| {
            Record::new(vec![b'v'; 100])
                .key(format!("key-{i:012}"))
                .partition(0)
        })
        .collect()
}

fn rf3() -> TopicConfig {
    TopicConfig::default()
        .replication_factor(3)
        .min_insync_replicas(2)
}

fn bench_throughput(c: &mut Criterion) {
    let batch = records();
    let log_dir = tempfile::tempdir().unwrap();
    let log = Log::open(log_dir.path()).unwrap();
    let plain = log.create_topic("t", TopicConfig::default()).unwrap();
    let cluster_dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(cluster_dir.path(), ClusterConfig::default().brokers(3)).unwrap();
    let replicated = cluster.create_topic("t", rf3()).unwrap();
    let setups: [(&str, Topic); 3] = [
        ("log", plain),
        ("cluster_rf3_acks_all", replicated.with_acks(Acks::All)),
        (
            "cluster_rf3_acks_leader",
            replicated.with_acks(Acks::Leader),
        ),
    ];

    let mut group = c.benchmark_group("replicated_1000");
    group.throughput(Throughput::Elements(RECORDS as u64));
    for (name, topic) in &setups {
        group.bench_function(*name, |b| b.iter(|| topic.send_batch(&batch).unwrap()));
    }
    group.finish();

    let mut group = c.benchmark_group("append_1");
    group.throughput(Throughput::Elements(1));
    let value = vec![b'v'; 100];
    for (name, topic) in &setups {
        group.bench_function(*name, |b| {
            b.iter(|| topic.append("key-000000000000", &value).unwrap())
        });
    }
    group.finish();
    drop(setups);
    cluster.close().unwrap();
    log.close().unwrap();
}

fn bench_producers(c: &mut Criterion) {
    let batch: Vec<Record> = records().into_iter().take(100).collect();
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), ClusterConfig::default().brokers(3)).unwrap();
    let topic = cluster.create_topic("t", rf3()).unwrap();
    let mut idempotent = cluster.producer(ProducerConfig::default()).unwrap();
    let mut tx = cluster
        .producer(ProducerConfig::default().transactional_id("bench"))
        .unwrap();
    let mut group = c.benchmark_group("producers_100");
    group.throughput(Throughput::Elements(batch.len() as u64));
    group.bench_function("plain_acks_all", |b| {
        b.iter(|| topic.send_batch(&batch).unwrap())
    });
    group.bench_function("idempotent", |b| {
        b.iter(|| idempotent.send_batch("t", &batch).unwrap())
    });
    group.bench_function("transaction", |b| {
        b.iter(|| {
            tx.begin_transaction().unwrap();
            tx.send_batch("t", &batch).unwrap();
            tx.commit_transaction().unwrap();
        })
    });
    group.finish();
    drop((idempotent, tx));
    cluster.close().unwrap();
}

fn append_until_ok(t: &Topic) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match t.append("k", "v") {
            Ok(_) => return,
            Err(
                Error::NotLeader { .. } | Error::NoLeader { .. } | Error::NotEnoughReplicas { .. },
            ) if Instant::now() < deadline => {}
            Err(e) => panic!("append after failover: {e}"),
        }
    }
}

fn bench_failover(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), ClusterConfig::default().brokers(3)).unwrap();
    let t = cluster.create_topic("t", rf3()).unwrap();
    let tp = TopicPartition::new("t", 0);
    t.append("k", "v").unwrap();
    let mut group = c.benchmark_group("failover");
    group.bench_function("stop_leader_to_first_append", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let leader = cluster.leader(&tp).unwrap();
                let start = Instant::now();
                cluster.stop_broker(leader).unwrap();
                append_until_ok(&t);
                total += start.elapsed();
                cluster.start_broker(leader).unwrap();
                let deadline = Instant::now() + Duration::from_secs(30);
                while cluster.isr(&tp).len() < 3 {
                    assert!(Instant::now() < deadline, "restarted broker never rejoined");
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            total
        })
    });
    group.finish();
    cluster.close().unwrap();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = bench_throughput, bench_producers, bench_failover
}
criterion_main!(benches);
