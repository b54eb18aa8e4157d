//! Idempotent producers on a manual cluster: the test decides when
//! followers fetch, so a record can be written by a leader and not
//! acknowledged, deterministically.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::sim::records;
use super::{Cluster, ClusterConfig};
use crate::config::TopicConfig;
use crate::error::Error;
use crate::producer::ProducerConfig;
use crate::record::{Record, TopicPartition};

fn manual() -> ClusterConfig {
    ClusterConfig {
        manual: true,
        ack_timeout: Duration::from_millis(50),
        ..ClusterConfig::default().brokers(3)
    }
}

fn open(dir: &tempfile::TempDir) -> Cluster {
    let c = Cluster::open(dir.path(), manual()).unwrap();
    c.create_topic(
        "t",
        TopicConfig::default()
            .replication_factor(3)
            .min_insync_replicas(2),
    )
    .unwrap();
    c
}

/// Every replica's records (whatever the high watermark), by broker.
fn replicas(c: &Cluster) -> Vec<(u32, Vec<String>)> {
    let part = c.c().part(&TopicPartition::new("t", 0)).unwrap();
    let st = part.st.lock();
    st.slots
        .iter()
        .filter_map(|s| {
            let log = s.log.as_ref()?;
            let values = records(log, u64::MAX)
                .into_iter()
                .map(|(_, v)| String::from_utf8(v).unwrap())
                .collect();
            Some((s.broker, values))
        })
        .collect()
}

/// Followers fetch until nothing moves.
fn replicate(c: &Cluster) {
    while c.c().replicate_round() {}
    c.c().tick();
}

/// Fetches continuously on another thread while `f` runs.
fn pumping<T>(c: &Cluster, f: impl FnOnce() -> T) -> T {
    let stop = Arc::new(AtomicBool::new(false));
    let pump = {
        let (c, stop) = (c.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                replicate(&c);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let out = f();
    stop.store(true, Ordering::Release);
    pump.join().unwrap();
    out
}

fn is_timeout(e: &Error) -> bool {
    matches!(e, Error::Timeout { .. })
}

#[test]
fn a_retry_of_a_written_but_unacknowledged_send_returns_the_original_offset() {
    let dir = tempfile::tempdir().unwrap();
    let c = open(&dir);
    let mut p = c.producer(ProducerConfig::default()).unwrap();
    for (i, v) in ["a", "b"].into_iter().enumerate() {
        // The leader writes it; nobody fetches: not acknowledged.
        let e = p.send("t", Record::new(v)).unwrap_err();
        assert!(is_timeout(&e), "{e}");
        replicate(&c);
        let m = p.send("t", Record::new(v)).unwrap();
        assert_eq!(m.offset, i as u64, "the retry of {v:?}");
    }
    for (b, values) in replicas(&c) {
        assert_eq!(values, ["a", "b"], "broker {b}");
    }
}

#[test]
fn a_new_leader_deduplicates_a_retry_it_replicated_and_writes_one_it_never_saw() {
    let dir = tempfile::tempdir().unwrap();
    let c = open(&dir);
    let tp = TopicPartition::new("t", 0);
    let mut p = c.producer(ProducerConfig::default()).unwrap();

    // "a": written by the leader and copied by the followers, but the
    // acknowledgement timed out before they fetched.
    assert!(is_timeout(&p.send("t", Record::new("a")).unwrap_err()));
    while c.c().replicate_round() {}
    let first = c.leader(&tp).unwrap();
    c.stop_broker(first).unwrap();
    let second = c.leader(&tp).unwrap();
    assert_ne!(first, second);
    // The new leader rebuilt the producer's sequences from the copied
    // batches: the retry is found, not written again.
    let m = pumping(&c, || p.send("t", Record::new("a"))).unwrap();
    assert_eq!(m.offset, 0);

    // "b": only the leader ever had it; it goes away.
    assert!(is_timeout(&p.send("t", Record::new("b")).unwrap_err()));
    c.stop_broker(second).unwrap();
    c.start_broker(first).unwrap();
    replicate(&c);
    let m = pumping(&c, || p.send("t", Record::new("b"))).unwrap();
    assert_eq!(m.offset, 1, "written once by the leader that never saw it");
    let m = pumping(&c, || p.send("t", Record::new("c"))).unwrap();
    assert_eq!(m.offset, 2);

    // The old leader drops its own "b" and follows.
    c.start_broker(second).unwrap();
    replicate(&c);
    for (b, values) in replicas(&c) {
        assert_eq!(values, ["a", "b", "c"], "broker {b}");
    }
}
