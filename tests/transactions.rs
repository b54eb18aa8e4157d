//! Transactions through the public API: visibility under both isolation
//! levels, the last stable offset, fencing, offsets committed with a
//! transaction, timeouts, and recovery of transactions a close or crash
//! interrupted.

mod common;
use common::Rng;

use std::time::Duration;

use brook::{
    ConsumerConfig, Error, IsolationLevel, Log, OffsetReset, ProducerConfig, Record, TopicConfig,
    TopicPartition,
};

fn values(msgs: &[brook::Message]) -> Vec<String> {
    msgs.iter()
        .map(|m| String::from_utf8(m.value().unwrap().to_vec()).unwrap())
        .collect()
}

fn rec(v: &str, p: u32) -> Record {
    Record::new(v).partition(p)
}

#[test]
fn committed_records_appear_at_commit_and_aborted_ones_never() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let t = log
        .create_topic("out", TopicConfig::default().partitions(2))
        .unwrap();
    let p0 = t.partition(0).unwrap();
    let mut tx = log
        .producer(ProducerConfig::default().transactional_id("etl"))
        .unwrap();

    tx.begin_transaction().unwrap();
    tx.send_batch("out", &[rec("a1", 0), rec("a2", 0), rec("b1", 1)])
        .unwrap();
    // A plain append after the open transaction's first record waits for
    // it under read_committed, as in Kafka.
    t.send(rec("plain", 0)).unwrap();
    assert_eq!(p0.last_stable_offset(), 0);
    assert!(p0.read_committed(0, 100).unwrap().is_empty());
    assert_eq!(values(&p0.read(0, 100).unwrap()), ["a1", "a2", "plain"]);
    tx.commit_transaction().unwrap();
    assert_eq!(
        values(&p0.read_committed(0, 100).unwrap()),
        ["a1", "a2", "plain"]
    );
    assert_eq!(p0.last_stable_offset(), p0.end_offset());

    tx.begin_transaction().unwrap();
    tx.send("out", rec("x1", 0)).unwrap();
    tx.send("out", rec("x2", 1)).unwrap();
    t.send(rec("plain2", 0)).unwrap();
    tx.abort_transaction().unwrap();
    tx.begin_transaction().unwrap();
    tx.send("out", rec("c1", 0)).unwrap();
    tx.commit_transaction().unwrap();

    let committed = values(&p0.read_committed(0, 100).unwrap());
    assert_eq!(committed, ["a1", "a2", "plain", "plain2", "c1"]);
    // read_uncommitted sees the aborted record, never the markers.
    let all = values(&p0.read(0, 100).unwrap());
    assert_eq!(all, ["a1", "a2", "plain", "x1", "plain2", "c1"]);
    // Markers take offsets: a1 a2 plain marker x1 plain2 marker c1 marker.
    assert_eq!(p0.end_offset(), 9);
    let p1 = t.partition(1).unwrap();
    assert_eq!(values(&p1.read_committed(0, 100).unwrap()), ["b1"]);

    // The same after a reopen (state from the checkpoint) ...
    log.close().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let p0 = log.topic("out").unwrap().partition(0).unwrap();
    assert_eq!(values(&p0.read_committed(0, 100).unwrap()), committed);
    drop(p0);
    log.close().unwrap();
    // ... and when the state is rebuilt from the log alone.
    std::fs::remove_file(dir.path().join("recovery-checkpoint")).unwrap();
    let log = Log::open(dir.path()).unwrap();
    let p0 = log.topic("out").unwrap().partition(0).unwrap();
    assert_eq!(values(&p0.read_committed(0, 100).unwrap()), committed);
}

#[test]
fn a_read_committed_consumer_skips_aborts_and_waits_at_open_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic("out", TopicConfig::default()).unwrap();
    let mut tx = log
        .producer(ProducerConfig::default().transactional_id("t"))
        .unwrap();
    let mut consumer = log
        .consumer_with(
            ConsumerConfig::new("g")
                .auto_offset_reset(OffsetReset::Earliest)
                .isolation_level(IsolationLevel::ReadCommitted),
        )
        .unwrap();
    consumer.subscribe(&["out"]).unwrap();
    let poll = |c: &mut brook::Consumer| values(&c.poll(Duration::from_millis(50)).unwrap());

    tx.begin_transaction().unwrap();
    tx.send("out", rec("aborted", 0)).unwrap();
    tx.abort_transaction().unwrap();
    tx.begin_transaction().unwrap();
    tx.send("out", rec("open", 0)).unwrap();
    assert!(
        poll(&mut consumer).is_empty(),
        "stops at the open transaction"
    );
    tx.commit_transaction().unwrap();
    assert_eq!(poll(&mut consumer), ["open"]);
    assert!(poll(&mut consumer).is_empty());
    // The position moved past the final marker: nothing left to consume.
    consumer.commit().unwrap();
    let lag: u64 = log
        .group("g")
        .unwrap()
        .lag()
        .unwrap()
        .iter()
        .map(|l| l.lag)
        .sum();
    assert_eq!(lag, 0, "lag after commit");
}

#[test]
fn a_new_instance_fences_the_old_one_and_aborts_its_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let t = log.create_topic("out", TopicConfig::default()).unwrap();
    let p = t.partition(0).unwrap();
    let mut old = log
        .producer(ProducerConfig::default().transactional_id("job"))
        .unwrap();
    old.begin_transaction().unwrap();
    old.send("out", rec("zombie", 0)).unwrap();

    let mut new = log
        .producer(ProducerConfig::default().transactional_id("job"))
        .unwrap();
    assert_eq!(new.producer_id(), old.producer_id());
    assert_eq!(new.epoch(), old.epoch() + 1);
    // The old transaction was aborted: nothing blocks readers.
    assert_eq!(p.last_stable_offset(), p.end_offset());
    assert!(p.read_committed(0, 10).unwrap().is_empty());

    let err = old.send("out", rec("zombie2", 0)).unwrap_err();
    assert!(matches!(err, Error::ProducerFenced { .. }), "{err:?}");
    let err = old.commit_transaction().unwrap_err();
    assert!(matches!(err, Error::ProducerFenced { .. }), "{err:?}");

    new.begin_transaction().unwrap();
    new.send("out", rec("fresh", 0)).unwrap();
    new.commit_transaction().unwrap();
    assert_eq!(values(&p.read_committed(0, 10).unwrap()), ["fresh"]);
}

#[test]
fn offsets_sent_to_a_transaction_commit_with_it_and_only_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic("in", TopicConfig::default()).unwrap();
    log.create_topic("out", TopicConfig::default()).unwrap();
    let tp = TopicPartition::new("in", 0);
    let group = log.group("etl-group").unwrap();
    let mut tx = log
        .producer(ProducerConfig::default().transactional_id("etl"))
        .unwrap();

    tx.begin_transaction().unwrap();
    tx.send("out", rec("r1", 0)).unwrap();
    tx.send_offsets_to_transaction(&[(tp.clone(), 5)], "etl-group")
        .unwrap();
    assert_eq!(group.committed(&tp).unwrap(), None, "not before the commit");
    tx.abort_transaction().unwrap();
    assert_eq!(group.committed(&tp).unwrap(), None, "not after an abort");

    tx.begin_transaction().unwrap();
    tx.send("out", rec("r2", 0)).unwrap();
    tx.send_offsets_to_transaction(&[(tp.clone(), 7)], "etl-group")
        .unwrap();
    tx.commit_transaction().unwrap();
    assert_eq!(group.committed(&tp).unwrap(), Some(7));
}

#[test]
fn misuse_is_an_error_naming_the_transactional_id() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic("out", TopicConfig::default()).unwrap();
    let mut tx = log
        .producer(ProducerConfig::default().transactional_id("x"))
        .unwrap();
    let outside = tx.send("out", rec("v", 0)).unwrap_err();
    assert!(
        matches!(&outside, Error::InvalidTxnState { transactional_id, .. } if transactional_id == "x"),
        "{outside:?}"
    );
    assert!(tx.commit_transaction().is_err());
    tx.begin_transaction().unwrap();
    assert!(tx.begin_transaction().is_err());
    // A transaction without sends commits to nothing.
    tx.commit_transaction().unwrap();
    let mut plain = log.producer(ProducerConfig::default()).unwrap();
    assert!(matches!(
        plain.begin_transaction().unwrap_err(),
        Error::InvalidTxnState { .. }
    ));
    assert!(log
        .producer(ProducerConfig::default().transactional_id(""))
        .is_err());
}

#[test]
fn a_transaction_open_past_its_timeout_is_aborted_and_its_producer_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let t = log.create_topic("out", TopicConfig::default()).unwrap();
    let p = t.partition(0).unwrap();
    let mut tx = log
        .producer(
            ProducerConfig::default()
                .transactional_id("slow")
                .transaction_timeout(Duration::from_millis(100)),
        )
        .unwrap();
    tx.begin_transaction().unwrap();
    tx.send("out", rec("late", 0)).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while p.last_stable_offset() < p.end_offset() {
        assert!(std::time::Instant::now() < deadline, "never aborted");
        std::thread::sleep(Duration::from_millis(20));
    }
    let err = tx.commit_transaction().unwrap_err();
    assert!(matches!(err, Error::ProducerFenced { .. }), "{err:?}");
    assert!(p.read_committed(0, 10).unwrap().is_empty());
}

#[test]
fn a_transaction_open_at_close_is_aborted_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path()).unwrap();
        log.create_topic("out", TopicConfig::default()).unwrap();
        let mut tx = log
            .producer(ProducerConfig::default().transactional_id("t"))
            .unwrap();
        tx.begin_transaction().unwrap();
        tx.send("out", rec("done", 0)).unwrap();
        tx.commit_transaction().unwrap();
        tx.begin_transaction().unwrap();
        tx.send("out", rec("left open", 0)).unwrap();
        log.close().unwrap();
    }
    let log = Log::open(dir.path()).unwrap();
    let p = log.topic("out").unwrap().partition(0).unwrap();
    assert_eq!(p.last_stable_offset(), p.end_offset());
    assert_eq!(values(&p.read_committed(0, 10).unwrap()), ["done"]);
    assert_eq!(values(&p.read(0, 10).unwrap()), ["done", "left open"]);
}

/// Random interleavings of three transactional producers, plain appends,
/// commits, aborts, new instances (fencing) and reopens, checked against a
/// model after every step: `read_committed` returns exactly the committed
/// and plain records below the last stable offset, `read` every record
/// sent, both in send order per partition.
#[test]
fn random_interleavings_match_a_model() {
    #[derive(Clone, Copy, PartialEq, Debug)]
    enum State {
        Open(usize),
        Committed,
        Aborted,
    }
    const PARTS: u32 = 2;
    for seed in 1..=25u64 {
        let mut rng = Rng(seed * 0x9e37_79b9);
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path()).unwrap();
        log.create_topic("t", TopicConfig::default().partitions(PARTS))
            .unwrap();
        // Per partition: (value, state) in offset order.
        let mut model: Vec<Vec<(String, State)>> = vec![Vec::new(); PARTS as usize];
        let ids = ["a", "b", "c"];
        let new_producer = |log: &Log, i: usize| {
            log.producer(ProducerConfig::default().transactional_id(ids[i]))
                .unwrap()
        };
        let mut producers: Vec<_> = (0..3).map(|i| new_producer(&log, i)).collect();
        let mut open = [false; 3];
        let end_txn = |model: &mut Vec<Vec<(String, State)>>, i: usize, to: State| {
            for part in model.iter_mut() {
                for r in part.iter_mut().filter(|r| r.1 == State::Open(i)) {
                    r.1 = to;
                }
            }
        };
        for step in 0..150 {
            let i = rng.below(3) as usize;
            let p = rng.below(PARTS as u64) as u32;
            let value = format!("s{seed}-{step}");
            match rng.below(12) {
                0..=4 => {
                    if !open[i] {
                        producers[i].begin_transaction().unwrap();
                        open[i] = true;
                    }
                    producers[i].send("t", rec(&value, p)).unwrap();
                    model[p as usize].push((value, State::Open(i)));
                }
                5 => {
                    let t = log.topic("t").unwrap();
                    t.send(rec(&value, p)).unwrap();
                    model[p as usize].push((value, State::Committed));
                }
                6 | 7 if open[i] => {
                    producers[i].commit_transaction().unwrap();
                    end_txn(&mut model, i, State::Committed);
                    open[i] = false;
                }
                8 if open[i] => {
                    producers[i].abort_transaction().unwrap();
                    end_txn(&mut model, i, State::Aborted);
                    open[i] = false;
                }
                9 => {
                    // A new instance fences the old one and aborts its
                    // open transaction.
                    producers[i] = new_producer(&log, i);
                    end_txn(&mut model, i, State::Aborted);
                    open[i] = false;
                }
                10 => {
                    // Reopen: open transactions are aborted.
                    drop(producers);
                    log.close().unwrap();
                    log = Log::open(dir.path()).unwrap();
                    for j in 0..3 {
                        end_txn(&mut model, j, State::Aborted);
                    }
                    open = [false; 3];
                    producers = (0..3).map(|i| new_producer(&log, i)).collect();
                }
                _ => {}
            }
            let t = log.topic("t").unwrap();
            for part in 0..PARTS {
                let m = &model[part as usize];
                let p = t.partition(part).unwrap();
                let ctx = format!("seed {seed} step {step} partition {part}");
                let all: Vec<&str> = m.iter().map(|r| r.0.as_str()).collect();
                assert_eq!(values(&p.read(0, usize::MAX).unwrap()), all, "{ctx}: read");
                let stable = m
                    .iter()
                    .position(|r| matches!(r.1, State::Open(_)))
                    .unwrap_or(m.len());
                let committed: Vec<&str> = m[..stable]
                    .iter()
                    .filter(|r| r.1 == State::Committed)
                    .map(|r| r.0.as_str())
                    .collect();
                assert_eq!(
                    values(&p.read_committed(0, usize::MAX).unwrap()),
                    committed,
                    "{ctx}: read_committed"
                );
            }
        }
        drop(producers);
        log.close().unwrap();
    }
}

#[test]
fn compaction_keeps_transaction_markers_so_aborts_stay_aborted() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic(
        "state",
        TopicConfig::default()
            .cleanup_policy(brook::CleanupPolicy::Compact)
            .segment_bytes(4096)
            .max_record_bytes(1024),
    )
    .unwrap();
    let mut tx = log
        .producer(ProducerConfig::default().transactional_id("t"))
        .unwrap();
    // Two aborted transactions, and a committed one between them, with keys
    // nobody writes again, among committed ones that rewrite three keys:
    // compaction keeps those three records (latest of their keys), and only
    // the markers tell which of them were aborted.
    for round in 0..300 {
        tx.begin_transaction().unwrap();
        let aborted = round == 100 || round == 200;
        let key = if aborted || round == 150 {
            format!("only-{round}")
        } else {
            format!("k{}", round % 3)
        };
        tx.send("state", Record::new(format!("round-{round}")).key(key))
            .unwrap();
        if aborted {
            tx.abort_transaction().unwrap();
        } else {
            tx.commit_transaction().unwrap();
        }
    }
    drop(tx);
    log.compact_now("state").unwrap();
    let p = log.topic("state").unwrap().partition(0).unwrap();
    let before = values(&p.read_committed(0, usize::MAX).unwrap());
    assert!(
        !before.iter().any(|v| v == "round-100" || v == "round-200"),
        "{before:?}"
    );
    assert!(values(&p.read(0, usize::MAX).unwrap()).contains(&"round-100".to_owned()));
    drop(p);
    log.close().unwrap();
    // Rebuilt from the log alone, the aborted records are still hidden.
    std::fs::remove_file(dir.path().join("recovery-checkpoint")).unwrap();
    let log = Log::open(dir.path()).unwrap();
    let p = log.topic("state").unwrap().partition(0).unwrap();
    assert_eq!(values(&p.read_committed(0, usize::MAX).unwrap()), before);
}
