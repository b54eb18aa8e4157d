//! The in-process replicated cluster on real threads: replication, acks,
//! failover, ISR changes, isolation, restarts and consumers.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use brook::{
    Acks, Cluster, ClusterConfig, Error, OffsetReset, Record, TopicConfig, TopicPartition,
};

fn rf3(partitions: u32, min_isr: u16) -> TopicConfig {
    TopicConfig::default()
        .partitions(partitions)
        .replication_factor(3)
        .min_insync_replicas(min_isr)
}

fn config() -> ClusterConfig {
    ClusterConfig::default()
        .brokers(3)
        .replica_lag_time_max(Duration::from_millis(300))
        .ack_timeout(Duration::from_secs(5))
}

/// Waits (bounded) until `cond` holds; panics with `what` if it never does.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Appends, retrying while leadership moves (as a Kafka producer does).
fn append_retrying(t: &brook::Topic, key: &str, value: &str) -> brook::RecordMetadata {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match t.append(key, value) {
            Ok(m) => return m,
            Err(Error::NotLeader { .. } | Error::NoLeader { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("append: {e}"),
        }
    }
}

fn values(c: &Cluster, topic: &str, p: u32) -> Vec<(u64, Vec<u8>)> {
    let part = c.topic(topic).unwrap().partition(p).unwrap();
    let mut out = Vec::new();
    let mut next = part.start_offset();
    loop {
        let batch = part.read(next, 1000).unwrap();
        let Some(last) = batch.last() else { break };
        next = last.offset() + 1;
        out.extend(
            batch
                .iter()
                .map(|m| (m.offset(), m.value().unwrap().to_vec())),
        );
    }
    out
}

#[test]
fn records_reach_every_replica_and_consumers_see_them() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::open(dir.path(), config()).unwrap();
    let t = c.create_topic("orders", rf3(3, 2)).unwrap();
    let mut sent = BTreeMap::new();
    for i in 0..300u32 {
        let m = t.append(format!("k{i}"), format!("v{i}")).unwrap();
        sent.insert((m.partition, m.offset), format!("v{i}"));
    }
    for p in 0..3 {
        let tp = TopicPartition::new("orders", p);
        assert_eq!(c.isr(&tp).len(), 3, "{tp:?}");
        assert_eq!(c.replicas(&tp).len(), 3);
        let hw = c.high_watermark(&tp).unwrap();
        assert_eq!(hw, t.partition(p).unwrap().end_offset());
    }
    // Leaders are spread over the brokers.
    let leaders: std::collections::BTreeSet<u32> = (0..3)
        .map(|p| c.leader(&TopicPartition::new("orders", p)).unwrap())
        .collect();
    assert_eq!(leaders.len(), 3, "one leader per broker");
    let mut consumer = c
        .consumer_with(brook::ConsumerConfig::new("g").auto_offset_reset(OffsetReset::Earliest))
        .unwrap();
    consumer.subscribe(&["orders"]).unwrap();
    let mut seen = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < sent.len() && Instant::now() < deadline {
        for m in consumer.poll(Duration::from_millis(50)).unwrap() {
            seen.insert(
                (m.partition(), m.offset()),
                String::from_utf8(m.value().unwrap().to_vec()).unwrap(),
            );
        }
    }
    assert_eq!(seen, sent);
    consumer.commit().unwrap();
    let g = c.group("g").unwrap();
    for p in 0..3 {
        let tp = TopicPartition::new("orders", p);
        assert_eq!(
            g.committed(&tp).unwrap(),
            Some(t.partition(p).unwrap().end_offset())
        );
    }
    // Every replica's directory holds the same batches: byte-identical
    // segment files.
    for p in 0..3 {
        let tp = TopicPartition::new("orders", p);
        let files: Vec<Vec<u8>> = c
            .replicas(&tp)
            .iter()
            .map(|b| {
                std::fs::read(
                    dir.path()
                        .join(format!("broker-{b}/orders-{p}/00000000000000000000.log")),
                )
                .unwrap()
            })
            .collect();
        eventually("replicas flushed", || true);
        let hw = c.high_watermark(&tp).unwrap();
        assert!(hw > 0);
        let shortest = files.iter().map(Vec::len).min().unwrap();
        assert!(shortest > 0);
        for f in &files {
            assert_eq!(&f[..shortest], &files[0][..shortest], "{tp:?}");
        }
    }
    c.close().unwrap();
}

#[test]
fn leader_failover_with_acks_all_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::open(dir.path(), config()).unwrap();
    let t = c.create_topic("t", rf3(1, 2)).unwrap().with_acks(Acks::All);
    let tp = TopicPartition::new("t", 0);
    let writer = {
        let t = t.clone();
        std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut failed = 0;
            for i in 0..3000u32 {
                match t.send(Record::new(format!("r{i}")).partition(0)) {
                    Ok(m) => acked.push((m.offset, format!("r{i}"))),
                    Err(
                        Error::NotLeader { .. }
                        | Error::NoLeader { .. }
                        | Error::NotEnoughReplicas { .. }
                        | Error::Timeout { .. },
                    ) => failed += 1,
                    Err(e) => panic!("unexpected error: {e}"),
                }
            }
            (acked, failed)
        })
    };
    eventually("some records written", || {
        c.high_watermark(&tp).unwrap() > 500
    });
    let old = c.leader(&tp).unwrap();
    c.stop_broker(old).unwrap();
    let new = c.leader(&tp).expect("a new leader");
    assert_ne!(new, old);
    let (acked, failed) = writer.join().unwrap();
    eprintln!(
        "failover: {} acknowledged, {failed} refused, old leader {old}, new {new}",
        acked.len()
    );
    let stored: BTreeMap<u64, Vec<u8>> = values(&c, "t", 0).into_iter().collect();
    for (offset, v) in &acked {
        assert_eq!(
            stored.get(offset),
            Some(&v.as_bytes().to_vec()),
            "acknowledged offset {offset} lost"
        );
    }
    // The old leader comes back, truncates what it alone had, catches up.
    c.start_broker(old).unwrap();
    eventually("old leader back in the ISR", || c.isr(&tp).contains(&old));
    let end = t.partition(0).unwrap().end_offset();
    append_retrying(&t, "x", "after");
    eventually("hw past the new record", || {
        c.high_watermark(&tp).unwrap() > end
    });
    c.close().unwrap();
}

#[test]
fn acks_all_refuses_below_min_insync_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::open(dir.path(), config()).unwrap();
    let t = c.create_topic("t", rf3(1, 2)).unwrap();
    let tp = TopicPartition::new("t", 0);
    t.append("k", "v").unwrap();
    let leader = c.leader(&tp).unwrap();
    let followers: Vec<u32> = c
        .replicas(&tp)
        .into_iter()
        .filter(|&b| b != leader)
        .collect();
    c.stop_broker(followers[0]).unwrap();
    t.append("k", "two of three").unwrap();
    c.stop_broker(followers[1]).unwrap();
    assert_eq!(c.isr(&tp), vec![leader]);
    let err = t.append("k", "v").unwrap_err();
    assert!(
        matches!(err, Error::NotEnoughReplicas { isr: 1, min: 2, .. }),
        "{err}"
    );
    // Acks::Leader still takes it.
    t.with_acks(Acks::Leader)
        .append("k", "leader only")
        .unwrap();
    c.start_broker(followers[0]).unwrap();
    eventually("ISR back to two", || c.isr(&tp).len() >= 2);
    append_retrying(&t, "k", "again");
    c.close().unwrap();
}

#[test]
fn an_isolated_leader_cannot_acknowledge_and_rejoins_after_heal() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::open(dir.path(), config()).unwrap();
    let t = c.create_topic("t", rf3(1, 2)).unwrap();
    let tp = TopicPartition::new("t", 0);
    for i in 0..10 {
        t.append("k", format!("v{i}")).unwrap();
    }
    let old = c.leader(&tp).unwrap();
    c.isolate_broker(old).unwrap();
    let new = c.leader(&tp).unwrap();
    assert_ne!(old, new);
    // A client that still talks to the old leader: it writes, but cannot
    // acknowledge with Acks::All.
    let err = c
        .append_via_broker(old, &tp, Record::new("stale"), Acks::All)
        .unwrap_err();
    assert!(matches!(err, Error::NotLeader { .. }), "{err}");
    // With Acks::Leader it does acknowledge (and that record is lost: the
    // documented risk of acks=1).
    c.append_via_broker(old, &tp, Record::new("lost"), Acks::Leader)
        .unwrap();
    t.append("k", "on the new leader").unwrap();
    c.heal_broker(old).unwrap();
    eventually("old leader rejoins", || c.isr(&tp).contains(&old));
    let all: Vec<Vec<u8>> = values(&c, "t", 0).into_iter().map(|(_, v)| v).collect();
    assert!(!all.contains(&b"stale".to_vec()) && !all.contains(&b"lost".to_vec()));
    assert_eq!(all.last().unwrap(), b"on the new leader");
    // After a heal, the preferred leader takes over again once in sync.
    let preferred = c.replicas(&tp)[0];
    eventually("preferred leader back", || c.leader(&tp) == Some(preferred));
    c.close().unwrap();
}

#[test]
fn a_reopened_cluster_resumes_its_topics_leaders_and_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let sent: Vec<(u32, u64)>;
    {
        let c = Cluster::open(dir.path(), config()).unwrap();
        let t = c.create_topic("t", rf3(2, 2)).unwrap();
        sent = (0..100)
            .map(|i| {
                let m = t.append(format!("k{i}"), "v").unwrap();
                (m.partition, m.offset)
            })
            .collect();
        let mut consumer = c
            .consumer_with(brook::ConsumerConfig::new("g").auto_offset_reset(OffsetReset::Earliest))
            .unwrap();
        consumer.assign(&[TopicPartition::new("t", 0)]).unwrap();
        consumer
            .commit_offsets(&[(TopicPartition::new("t", 0), 7)])
            .unwrap();
        c.close().unwrap();
    }
    let c = Cluster::open(dir.path(), config()).unwrap();
    assert_eq!(c.topics(), vec!["t".to_string()]);
    let t = c.topic("t").unwrap();
    for (p, o) in &sent {
        let m = t.partition(*p).unwrap().read(*o, 1).unwrap();
        assert_eq!(m[0].offset(), *o);
    }
    assert_eq!(
        c.group("g")
            .unwrap()
            .committed(&TopicPartition::new("t", 0))
            .unwrap(),
        Some(7)
    );
    assert!(matches!(
        Cluster::open(dir.path(), config()),
        Err(Error::Locked { .. })
    ));
    c.close().unwrap();
}

#[test]
fn a_consumer_keeps_its_position_across_a_failover_and_commits_survive_a_broker() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::open(dir.path(), config()).unwrap();
    let t = c.create_topic("t", rf3(1, 2)).unwrap();
    let tp = TopicPartition::new("t", 0);
    for i in 0..100 {
        append_retrying(&t, "k", &format!("before-{i}"));
    }
    let mut consumer = c
        .consumer_with(brook::ConsumerConfig::new("g").auto_offset_reset(OffsetReset::Earliest))
        .unwrap();
    consumer.subscribe(&["t"]).unwrap();
    let mut got: Vec<String> = Vec::new();
    while got.len() < 100 {
        for m in consumer.poll(Duration::from_millis(50)).unwrap() {
            got.push(String::from_utf8(m.value().unwrap().to_vec()).unwrap());
        }
    }
    consumer.commit().unwrap();
    // The partition's leader and the offsets topic's leader both go.
    let leader = c.leader(&tp).unwrap();
    let offsets_leader = c
        .leader(&TopicPartition::new("__consumer_offsets", 0))
        .unwrap();
    c.stop_broker(leader).unwrap();
    if offsets_leader != leader && c.is_running(offsets_leader) {
        c.stop_broker(offsets_leader).unwrap();
    }
    assert_eq!(c.group("g").unwrap().committed(&tp).unwrap(), Some(100));
    for i in 0..100 {
        append_retrying(&t.with_acks(Acks::Leader), "k", &format!("after-{i}"));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < 200 && Instant::now() < deadline {
        for m in consumer.poll(Duration::from_millis(50)).unwrap() {
            got.push(String::from_utf8(m.value().unwrap().to_vec()).unwrap());
        }
    }
    let want: Vec<String> = (0..100)
        .map(|i| format!("before-{i}"))
        .chain((0..100).map(|i| format!("after-{i}")))
        .collect();
    assert_eq!(
        got, want,
        "every record once, in order, across the failover"
    );
    c.close().unwrap();
}

#[test]
fn without_unclean_election_a_partition_waits_for_its_last_in_sync_replica() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::open(dir.path(), config()).unwrap();
    let t = c
        .create_topic("t", rf3(1, 1).replication_factor(2))
        .unwrap();
    let tp = TopicPartition::new("t", 0);
    t.append("k", "v").unwrap();
    let replicas = c.replicas(&tp);
    let (leader, follower) = (replicas[0], replicas[1]);
    assert_eq!(c.leader(&tp), Some(leader));
    // The follower goes first, then the leader: the ISR keeps its last
    // member, and nobody else may lead.
    c.stop_broker(follower).unwrap();
    t.append("k", "only on the leader").unwrap();
    c.stop_broker(leader).unwrap();
    c.start_broker(follower).unwrap();
    assert_eq!(c.leader(&tp), None);
    assert!(matches!(t.append("k", "v"), Err(Error::NoLeader { .. })));
    c.start_broker(leader).unwrap();
    assert_eq!(c.leader(&tp), Some(leader));
    let all: Vec<Vec<u8>> = values(&c, "t", 0).into_iter().map(|(_, v)| v).collect();
    assert_eq!(all, vec![b"v".to_vec(), b"only on the leader".to_vec()]);
    c.close().unwrap();
}

#[test]
fn bad_cluster_calls_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::open(dir.path(), config()).unwrap();
    assert!(matches!(
        c.create_topic("t", TopicConfig::default().replication_factor(4)),
        Err(Error::InvalidConfig { .. })
    ));
    assert!(matches!(
        c.create_topic("__x", TopicConfig::default()),
        Err(Error::InvalidTopicName { .. })
    ));
    assert!(matches!(c.stop_broker(3), Err(Error::InvalidConfig { .. })));
    assert!(matches!(c.topic("nope"), Err(Error::UnknownTopic { .. })));
    c.create_topic("t", TopicConfig::default()).unwrap();
    assert!(matches!(
        c.create_topic("t", TopicConfig::default()),
        Err(Error::TopicExists { .. })
    ));
    c.close().unwrap();
    assert!(matches!(
        Cluster::open(dir.path(), ClusterConfig::default().brokers(5)),
        Err(Error::InvalidConfig { .. })
    ));
    assert!(matches!(
        Cluster::open(dir.path(), ClusterConfig::default().brokers(0)),
        Err(Error::InvalidConfig { .. })
    ));
    assert!(matches!(c.topic("t"), Err(Error::Closed { .. })));
}

#[test]
fn unclean_election_trades_acknowledged_records_for_availability() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::open(dir.path(), config()).unwrap();
    let t = c
        .create_topic(
            "t",
            rf3(1, 1)
                .replication_factor(2)
                .unclean_leader_election(true),
        )
        .unwrap();
    let tp = TopicPartition::new("t", 0);
    t.append("k", "v").unwrap();
    let replicas = c.replicas(&tp);
    let (leader, follower) = (replicas[0], replicas[1]);
    c.stop_broker(follower).unwrap();
    t.append("k", "only on the leader").unwrap();
    c.stop_broker(leader).unwrap();
    c.start_broker(follower).unwrap();
    assert_eq!(
        c.leader(&tp),
        Some(follower),
        "an out-of-sync replica leads"
    );
    append_retrying(&t, "k", "new history");
    c.start_broker(leader).unwrap();
    eventually("old leader back in sync", || c.isr(&tp).len() == 2);
    eventually("preferred leader back", || c.leader(&tp) == Some(leader));
    let all: Vec<Vec<u8>> = values(&c, "t", 0).into_iter().map(|(_, v)| v).collect();
    assert_eq!(all, vec![b"v".to_vec(), b"new history".to_vec()]);
    c.close().unwrap();
}
