//! A 3-broker cluster in one process: produce with `acks=all`, stop the
//! leader in the middle, keep producing and consuming, and show that no
//! acknowledged record was lost.
//!
//! Run with `cargo run --example replicated_cluster` (a fresh temporary
//! directory) or `cargo run --example replicated_cluster -- <dir>`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use brook::{
    Acks, Cluster, ClusterConfig, ConsumerConfig, Error, OffsetReset, Record, Topic, TopicConfig,
    TopicPartition,
};

/// Appends, retrying while the partition has no leader or a new one takes
/// over (what a Kafka producer does with `retries`).
fn send(t: &Topic, value: String) -> brook::Result<brook::RecordMetadata> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match t.send(Record::new(value.as_str()).partition(0)) {
            Err(Error::NotLeader { .. } | Error::NoLeader { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1))
            }
            other => return other,
        }
    }
}

fn main() -> brook::Result<()> {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_owned());
    let cluster = Cluster::open(&dir, ClusterConfig::default().brokers(3))?;
    let tp = TopicPartition::new("payments", 0);
    let payments = match cluster.topic("payments") {
        Ok(t) => t,
        Err(_) => cluster.create_topic(
            "payments",
            TopicConfig::default()
                .replication_factor(3)
                .min_insync_replicas(2),
        )?,
    }
    .with_acks(Acks::All);
    println!(
        "cluster in {}: controller {:?}, {tp} replicas {:?}, leader {:?}, ISR {:?}",
        dir.display(),
        cluster.controller(),
        cluster.replicas(&tp),
        cluster.leader(&tp),
        cluster.isr(&tp)
    );

    let mut acknowledged = BTreeSet::new();
    for i in 0..500 {
        let m = send(&payments, format!("payment-{i}"))?;
        acknowledged.insert(m.offset);
    }
    let leader = cluster.leader(&tp).expect("a leader");
    println!(
        "500 payments acknowledged by every in-sync replica (high watermark {:?}); stopping leader {leader}",
        cluster.high_watermark(&tp)
    );
    let stopped = Instant::now();
    cluster.stop_broker(leader)?;
    let m = send(&payments, "payment-500".into())?;
    acknowledged.insert(m.offset);
    println!(
        "new leader {:?} (ISR {:?}, controller {:?}) took its first append {:?} after the stop",
        cluster.leader(&tp),
        cluster.isr(&tp),
        cluster.controller(),
        stopped.elapsed()
    );
    for i in 501..1000 {
        let m = send(&payments, format!("payment-{i}"))?;
        acknowledged.insert(m.offset);
    }

    let mut consumer = cluster
        .consumer_with(ConsumerConfig::new("ledger").auto_offset_reset(OffsetReset::Earliest))?;
    consumer.subscribe(&["payments"])?;
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !acknowledged.is_subset(&seen) && Instant::now() < deadline {
        for m in consumer.poll(Duration::from_millis(100))? {
            seen.insert(m.offset());
        }
    }
    consumer.commit()?;
    let lost = acknowledged.difference(&seen).count();
    println!(
        "consumer read {} records; acknowledged and missing: {lost}",
        seen.len()
    );

    cluster.start_broker(leader)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.isr(&tp).len() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    println!(
        "broker {leader} restarted, caught up and rejoined: ISR {:?}, leader {:?}",
        cluster.isr(&tp),
        cluster.leader(&tp)
    );
    cluster.close()?;
    assert_eq!(lost, 0, "an acknowledged record was lost");
    Ok(())
}
