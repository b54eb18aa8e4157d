//! Idempotent and transactional producers on a replicated cluster: retries
//! deduplicated by whichever replica leads, transaction markers replicated
//! like data, fencing, a coordinator that survives the loss of its
//! leader, and transactions a reopened cluster or a timeout aborts.

use std::time::{Duration, Instant};

use brook::{
    Cluster, ClusterConfig, Error, Producer, ProducerConfig, Record, RecordMetadata, TopicConfig,
    TopicPartition,
};

fn rf3(partitions: u32) -> TopicConfig {
    TopicConfig::default()
        .partitions(partitions)
        .replication_factor(3)
        .min_insync_replicas(2)
}

/// Followers stay in the ISR for the whole test unless it says otherwise;
/// an unacknowledged append gives up after `ack_timeout`.
fn config(ack_timeout: Duration) -> ClusterConfig {
    ClusterConfig::default()
        .brokers(3)
        .replica_lag_time_max(Duration::from_secs(30))
        .ack_timeout(ack_timeout)
}

/// Waits (bounded) until `cond` holds; panics with `what` if it never does.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `f` again while leadership moves (what a Kafka client retries).
fn retrying<T>(what: &str, mut f: impl FnMut() -> brook::Result<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match f() {
            Ok(v) => return v,
            Err(Error::NotLeader { .. } | Error::NoLeader { .. } | Error::Timeout { .. })
                if Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

fn send(p: &mut Producer, topic: &str, record: Record) -> RecordMetadata {
    retrying("send", || p.send(topic, record.clone()))
}

fn strings(msgs: &[brook::Message]) -> Vec<String> {
    msgs.iter()
        .map(|m| String::from_utf8(m.value().unwrap().to_vec()).unwrap())
        .collect()
}

/// Every record of a partition from the current leader, and the ones a
/// `ReadCommitted` reader sees.
fn contents(c: &Cluster, topic: &str, p: u32) -> (Vec<String>, Vec<String>) {
    let part = c.topic(topic).unwrap().partition(p).unwrap();
    let all = strings(&part.read(0, 10_000).unwrap());
    let committed = strings(&part.read_committed(0, 10_000).unwrap());
    (all, committed)
}

fn leader(c: &Cluster, topic: &str, p: u32) -> u32 {
    let tp = TopicPartition::new(topic, p);
    let mut leader = None;
    eventually("a leader", || {
        leader = c.leader(&tp);
        leader.is_some()
    });
    leader.unwrap()
}

#[test]
fn an_idempotent_producer_goes_on_across_failovers_and_writes_each_record_once() {
    // (Retries of sends a leader wrote but did not acknowledge are tested
    // deterministically on a manual cluster: `cargo test --lib
    // cluster::producer_tests`.)
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::open(dir.path(), config(Duration::from_secs(5))).unwrap();
    c.create_topic("t", rf3(1)).unwrap();
    let mut p = c.producer(ProducerConfig::default()).unwrap();
    let mut expect = Vec::new();
    for round in 0..4 {
        for i in 0..25 {
            let v = format!("r{round}-{i}");
            let m = send(&mut p, "t", Record::new(v.clone()));
            assert_eq!(m.offset, expect.len() as u64, "{v}");
            expect.push(v);
        }
        // The new leader knows the producer's sequences from the batches
        // it copied: the next send is neither refused nor duplicated.
        let l = leader(&c, "t", 0);
        c.stop_broker(l).unwrap();
        let v = format!("after-stop-{round}");
        assert_eq!(
            send(&mut p, "t", Record::new(v.clone())).offset,
            expect.len() as u64
        );
        expect.push(v);
        c.start_broker(l).unwrap();
        eventually("the ISR whole again", || {
            c.isr(&TopicPartition::new("t", 0)).len() == 3
        });
    }
    assert_eq!(contents(&c, "t", 0).0, expect);
}

#[test]
fn transactions_commit_and_abort_and_their_markers_replicate() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::open(dir.path(), config(Duration::from_secs(5))).unwrap();
    c.create_topic("in", rf3(1)).unwrap();
    c.create_topic("out", rf3(2)).unwrap();
    let mut tx = c
        .producer(ProducerConfig::default().transactional_id("etl"))
        .unwrap();
    let input = TopicPartition::new("in", 0);

    tx.begin_transaction().unwrap();
    for i in 0..6 {
        tx.send("out", Record::new(format!("c{i}")).partition(i % 2))
            .unwrap();
    }
    // While open: nothing visible to ReadCommitted, the LSO held back.
    let (all, committed) = contents(&c, "out", 0);
    assert_eq!(all, ["c0", "c2", "c4"]);
    assert!(committed.is_empty());
    tx.send_offsets_to_transaction(&[(input.clone(), 42)], "g")
        .unwrap();
    tx.commit_transaction().unwrap();

    tx.begin_transaction().unwrap();
    for i in 0..4 {
        tx.send("out", Record::new(format!("x{i}")).partition(i % 2))
            .unwrap();
    }
    tx.send_offsets_to_transaction(&[(input.clone(), 99)], "g")
        .unwrap();
    tx.abort_transaction().unwrap();

    tx.begin_transaction().unwrap();
    tx.send("out", Record::new("d0").partition(0)).unwrap();
    tx.commit_transaction().unwrap();

    let expect = [vec!["c0", "c2", "c4", "d0"], vec!["c1", "c3", "c5"]];
    for p in 0..2u32 {
        let (all, committed) = contents(&c, "out", p);
        assert_eq!(committed, expect[p as usize], "out-{p}");
        assert_eq!(
            all.len(),
            expect[p as usize].len() + 2,
            "aborted ones stored"
        );
        let part = c.topic("out").unwrap().partition(p).unwrap();
        assert_eq!(part.last_stable_offset(), part.end_offset());
    }
    assert_eq!(c.group("g").unwrap().committed(&input).unwrap(), Some(42));

    // Every replica has the markers: each leader in turn goes away, and
    // the next one shows the same committed records and a stable end.
    for round in 0..2 {
        for p in 0..2u32 {
            let l = leader(&c, "out", p);
            c.stop_broker(l).unwrap();
            let committed = retrying("read_committed", || {
                let part = c.topic("out")?.partition(p)?;
                part.read_committed(0, 100).map(|m| strings(&m))
            });
            assert_eq!(committed, expect[p as usize], "round {round}, out-{p}");
            c.start_broker(l).unwrap();
            eventually("the ISR whole again", || {
                c.isr(&TopicPartition::new("out", p)).len() == 3
            });
        }
    }
}

#[test]
fn a_new_producer_fences_the_old_one_and_aborts_its_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::open(dir.path(), config(Duration::from_secs(5))).unwrap();
    c.create_topic("out", rf3(1)).unwrap();
    let cfg = ProducerConfig::default().transactional_id("job");
    let mut old = c.producer(cfg.clone()).unwrap();
    old.begin_transaction().unwrap();
    old.send("out", Record::new("zombie")).unwrap();

    let mut new = c.producer(cfg).unwrap();
    assert!(new.epoch() > old.epoch());
    let fenced = old.send("out", Record::new("late")).unwrap_err();
    assert!(matches!(fenced, Error::ProducerFenced { .. }), "{fenced}");
    assert!(matches!(
        old.commit_transaction().unwrap_err(),
        Error::ProducerFenced { .. }
    ));
    new.begin_transaction().unwrap();
    new.send("out", Record::new("fresh")).unwrap();
    new.commit_transaction().unwrap();
    let (all, committed) = contents(&c, "out", 0);
    assert_eq!(all, ["zombie", "fresh"]);
    assert_eq!(committed, ["fresh"]);
}

#[test]
fn transactions_go_on_when_the_coordinators_leader_stops() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::open(dir.path(), config(Duration::from_secs(5))).unwrap();
    c.create_topic("out", rf3(2)).unwrap();
    let mut tx = c
        .producer(ProducerConfig::default().transactional_id("etl"))
        .unwrap();
    let mut expect: [Vec<String>; 2] = Default::default();
    // Broker 0 leads the internal topics of a new cluster; every broker
    // stops once, in the middle of a transaction.
    for (round, stopped) in [0u32, 1, 2].into_iter().enumerate() {
        tx.begin_transaction().unwrap();
        for i in 0..4u32 {
            let v = format!("r{round}-{i}");
            send(&mut tx, "out", Record::new(v.clone()).partition(i % 2));
            expect[(i % 2) as usize].push(v);
        }
        c.stop_broker(stopped).unwrap();
        retrying("commit", || tx.commit_transaction());
        c.start_broker(stopped).unwrap();
        for p in 0..2 {
            eventually("the ISR whole again", || {
                c.isr(&TopicPartition::new("out", p)).len() == 3
            });
        }
    }
    for p in 0..2u32 {
        assert_eq!(contents(&c, "out", p).1, expect[p as usize], "out-{p}");
    }
}

#[test]
fn a_reopened_cluster_aborts_the_transaction_left_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let c = Cluster::open(dir.path(), config(Duration::from_secs(5))).unwrap();
        c.create_topic("out", rf3(1)).unwrap();
        let mut tx = c
            .producer(ProducerConfig::default().transactional_id("etl"))
            .unwrap();
        tx.begin_transaction().unwrap();
        tx.send("out", Record::new("kept")).unwrap();
        tx.commit_transaction().unwrap();
        tx.begin_transaction().unwrap();
        tx.send("out", Record::new("left open")).unwrap();
        drop(tx);
        c.close().unwrap();
    }
    let c = Cluster::open(dir.path(), config(Duration::from_secs(5))).unwrap();
    let part = c.topic("out").unwrap().partition(0).unwrap();
    eventually("the open transaction aborted", || {
        part.last_stable_offset() == part.end_offset()
    });
    assert_eq!(
        contents(&c, "out", 0),
        (vec!["kept".into(), "left open".into()], vec!["kept".into()])
    );
    // The id is usable again, with a higher epoch.
    let mut tx = c
        .producer(ProducerConfig::default().transactional_id("etl"))
        .unwrap();
    tx.begin_transaction().unwrap();
    tx.send("out", Record::new("after")).unwrap();
    tx.commit_transaction().unwrap();
    assert_eq!(contents(&c, "out", 0).1, ["kept", "after"]);
}

#[test]
fn a_transaction_open_past_its_timeout_is_aborted_and_its_producer_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::open(dir.path(), config(Duration::from_secs(5))).unwrap();
    c.create_topic("out", rf3(1)).unwrap();
    let mut tx = c
        .producer(
            ProducerConfig::default()
                .transactional_id("slow")
                .transaction_timeout(Duration::from_millis(200)),
        )
        .unwrap();
    tx.begin_transaction().unwrap();
    tx.send("out", Record::new("too late")).unwrap();
    let part = c.topic("out").unwrap().partition(0).unwrap();
    eventually("the timed-out transaction aborted", || {
        part.last_stable_offset() == part.end_offset()
    });
    assert!(part.read_committed(0, 10).unwrap().is_empty());
    assert!(matches!(
        tx.commit_transaction().unwrap_err(),
        Error::ProducerFenced { .. }
    ));
}

/// One run of the consume-transform-produce loop, until an error: a
/// `ReadCommitted` consumer of group `etl` reads `in`, a transactional
/// producer writes one `out` record per input and commits the consumer's
/// positions in the same transaction (now and then it writes junk in a
/// transaction it aborts). Returns `Ok(true)` when the group committed the
/// end of the input.
fn pipeline(c: &Cluster, junk: &mut u64, input_end: &[u64]) -> brook::Result<bool> {
    let mut producer = c.producer(ProducerConfig::default().transactional_id("etl"))?;
    let mut consumer = c.consumer_with(
        brook::ConsumerConfig::new("etl")
            .auto_offset_reset(brook::OffsetReset::Earliest)
            .enable_auto_commit(false)
            .isolation_level(brook::IsolationLevel::ReadCommitted)
            .max_poll_records(1 + (*junk % 17) as usize),
    )?;
    consumer.subscribe(&["in"])?;
    let group = c.group("etl")?;
    loop {
        let msgs = consumer.poll(Duration::from_millis(20))?;
        if msgs.is_empty() {
            let mut finished = true;
            for (p, &end) in input_end.iter().enumerate() {
                finished &= group.committed(&TopicPartition::new("in", p as u32))? == Some(end);
            }
            if finished {
                return Ok(true);
            }
            continue;
        }
        if junk.is_multiple_of(5) {
            producer.begin_transaction()?;
            producer.send("out", Record::new(format!("junk-{junk}")).key("junk"))?;
            producer.abort_transaction()?;
        }
        *junk += 1;
        producer.begin_transaction()?;
        let mut next = std::collections::BTreeMap::new();
        for m in &msgs {
            let v = std::str::from_utf8(m.value().unwrap()).unwrap();
            producer.send("out", Record::new(format!("out-{v}")).key(m.key().unwrap()))?;
            next.insert(TopicPartition::new("in", m.partition()), m.offset() + 1);
        }
        let offsets: Vec<(TopicPartition, u64)> = next.into_iter().collect();
        producer.send_offsets_to_transaction(&offsets, "etl")?;
        producer.commit_transaction()?;
    }
}

#[test]
fn exactly_once_consume_transform_produce_while_brokers_fail() {
    // `BROOK_CLUSTER_EOS_INPUT=N` runs a longer soak.
    let input_count: u64 = std::env::var("BROOK_CLUSTER_EOS_INPUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4_000);
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::open(dir.path(), config(Duration::from_millis(500))).unwrap();
    let input = c.create_topic("in", rf3(2)).unwrap();
    c.create_topic("out", rf3(2)).unwrap();
    for i in 0..input_count {
        input.append(format!("k{i}"), format!("{i}")).unwrap();
    }
    let input_end: Vec<u64> = (0..2)
        .map(|p| input.partition(p).unwrap().end_offset())
        .collect();

    // Chaos: one broker at a time stops for a while, then comes back.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let chaos = {
        let (c, stop) = (c.clone(), std::sync::Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut stops = 0u32;
            let mut b = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(15));
                c.stop_broker(b).unwrap();
                stops += 1;
                std::thread::sleep(Duration::from_millis(15));
                c.start_broker(b).unwrap();
                b = (b + 1) % 3;
            }
            stops
        })
    };
    let deadline = Instant::now() + Duration::from_secs(120 + input_count / 100);
    let (mut junk, mut restarts) = (0u64, 0u32);
    loop {
        match pipeline(&c, &mut junk, &input_end) {
            Ok(true) => break,
            Ok(false) => unreachable!("the pipeline returns only when finished"),
            // Restart as a Kafka application does: a new producer fences
            // the old one and ends its transaction; the consumer resumes
            // from the committed positions.
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "no end in sight; last error: {e}"
                );
                restarts += 1;
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    let stops = chaos.join().unwrap();

    let mut seen = std::collections::BTreeMap::new();
    for p in 0..2 {
        let committed = retrying("read_committed", || {
            let part = c.topic("out")?.partition(p)?;
            part.read_committed(0, 1_000_000).map(|m| strings(&m))
        });
        for v in committed {
            assert!(!v.starts_with("junk"), "aborted junk visible: {v}");
            *seen.entry(v).or_insert(0u32) += 1;
        }
    }
    for i in 0..input_count {
        let n = seen.get(&format!("out-{i}")).copied().unwrap_or(0);
        assert_eq!(n, 1, "input {i} is in the output {n} times");
    }
    assert_eq!(seen.len() as u64, input_count);
    eprintln!("{input_count} inputs exactly once through {stops} broker stops and {restarts} pipeline restarts");
}

#[test]
fn a_commit_that_fails_half_way_is_finished_by_calling_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::open(dir.path(), config(Duration::from_millis(300))).unwrap();
    // One replica: when its broker stops, the partition has no leader.
    c.create_topic("single", TopicConfig::default().replication_factor(1))
        .unwrap();
    let mut tx = c
        .producer(ProducerConfig::default().transactional_id("etl"))
        .unwrap();
    tx.begin_transaction().unwrap();
    tx.send("single", Record::new("one")).unwrap();
    let b = leader(&c, "single", 0);
    c.stop_broker(b).unwrap();
    let err = tx.commit_transaction().unwrap_err();
    assert!(matches!(err, Error::NoLeader { .. }), "{err}");
    // The transaction takes nothing new until it is finished.
    let refused = tx.send("single", Record::new("two")).unwrap_err();
    assert!(
        matches!(refused, Error::InvalidTxnState { .. }),
        "{refused}"
    );
    c.start_broker(b).unwrap();
    retrying("commit again", || tx.commit_transaction());
    let part = c.topic("single").unwrap().partition(0).unwrap();
    assert_eq!(strings(&part.read_committed(0, 10).unwrap()), ["one"]);
    assert_eq!(part.last_stable_offset(), part.end_offset());

    // The same, asking for an abort after the commit was decided.
    tx.begin_transaction().unwrap();
    tx.send("single", Record::new("three")).unwrap();
    c.stop_broker(b).unwrap();
    assert!(tx.commit_transaction().is_err());
    c.start_broker(b).unwrap();
    let said = retrying("abort", || match tx.abort_transaction() {
        Err(Error::InvalidTxnState { reason, .. }) => Ok(reason),
        Ok(()) => panic!("an abort of a decided commit must say it committed"),
        Err(e) => Err(e),
    });
    assert!(said.contains("committed"), "{said}");
    assert_eq!(
        strings(&part.read_committed(0, 10).unwrap()),
        ["one", "three"]
    );
}
