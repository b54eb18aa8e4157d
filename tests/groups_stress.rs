//! Multithreaded stress: 4 producer threads append to a 16-partition topic
//! while a group of 4 consumer threads reads it, committing after
//! processing each poll. Every record must be delivered exactly once, in
//! offset order per partition within each consumer, and the whole run must
//! finish within a bounded time (no deadlock, no livelock).
//!
//! One consumer leaves and rejoins half-way, so partitions move under load.
//!
//! Size: `BROOK_STRESS_RECORDS` (default 200,000, quick in debug builds).
//! The issue's full size is 2,000,000:
//!
//! ```text
//! BROOK_STRESS_RECORDS=2000000 cargo test --release --test groups_stress -- --nocapture
//! ```
//!
//! The time limit is 120 s per 200,000 records.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use brook::{Consumer, ConsumerConfig, Log, OffsetReset, TopicConfig};

const PRODUCERS: u64 = 4;
const CONSUMERS: usize = 4;
const PARTITIONS: u32 = 16;
const TOPIC: &str = "stress";
const GROUP: &str = "stress-group";

/// What one consumer thread saw: (partition, offset, producer, sequence).
type Deliveries = Vec<(u32, u64, u64, u64)>;

struct Report {
    records: u64,
    elapsed: Duration,
    per_consumer: Vec<usize>,
}

#[test]
fn four_producers_and_four_consumers_deliver_every_record_exactly_once() {
    let records: u64 = std::env::var("BROOK_STRESS_RECORDS")
        .ok()
        .map(|v| v.parse().expect("BROOK_STRESS_RECORDS is a number"))
        .unwrap_or(200_000);
    assert!(
        records.is_multiple_of(PRODUCERS),
        "BROOK_STRESS_RECORDS must divide by {PRODUCERS}"
    );
    let limit = Duration::from_secs(120 * records.div_ceil(200_000).max(1));

    let (tx, rx) = mpsc::channel();
    let runner = thread::spawn(move || {
        let report = run(records);
        let _ = tx.send(report);
    });
    match rx.recv_timeout(limit) {
        Ok(r) => {
            runner.join().unwrap();
            eprintln!(
                "{} records through {PARTITIONS} partitions in {:.2?} ({:.0} records/s); \
                 per consumer thread {:?}",
                r.records,
                r.elapsed,
                r.records as f64 / r.elapsed.as_secs_f64(),
                r.per_consumer
            );
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // The run panicked: report its message.
            std::panic::resume_unwind(runner.join().unwrap_err());
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{records} records did not get through within {limit:?}: deadlock or livelock")
        }
    }
}

fn run(records: u64) -> Report {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let topic = log
        .create_topic(TOPIC, TopicConfig::default().partitions(PARTITIONS))
        .unwrap();
    let per_producer = records / PRODUCERS;
    let producing = Arc::new(AtomicU64::new(PRODUCERS));
    let start = Arc::new(Barrier::new(PRODUCERS as usize + CONSUMERS + 1));
    let started = Instant::now();

    let producers: Vec<_> = (0..PRODUCERS)
        .map(|id| {
            let topic = topic.clone();
            let producing = Arc::clone(&producing);
            let start = Arc::clone(&start);
            thread::spawn(move || {
                start.wait();
                let mut value = [0u8; 48];
                value[..8].copy_from_slice(&id.to_be_bytes());
                for seq in 0..per_producer {
                    value[8..16].copy_from_slice(&seq.to_be_bytes());
                    topic
                        .append(seq.to_be_bytes(), value)
                        .unwrap_or_else(|e| panic!("producer {id}: append #{seq}: {e}"));
                }
                producing.fetch_sub(1, Ordering::AcqRel);
            })
        })
        .collect();

    let failed = Arc::new(AtomicBool::new(false));
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|k| {
            let log = log.clone();
            let producing = Arc::clone(&producing);
            let start = Arc::clone(&start);
            let failed = Arc::clone(&failed);
            thread::spawn(move || {
                start.wait();
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    consume(&log, k, records, &producing, &failed)
                }));
                if result.is_err() {
                    failed.store(true, Ordering::Release);
                }
                result.unwrap_or_else(|e| std::panic::resume_unwind(e))
            })
        })
        .collect();

    start.wait();
    for p in producers {
        p.join().expect("a producer thread panicked");
    }
    let mut all: Vec<Deliveries> = Vec::new();
    for c in consumers {
        all.push(c.join().expect("a consumer thread panicked"));
    }
    let elapsed = started.elapsed();

    // Every (partition, offset) below the end exactly once ...
    let ends: Vec<u64> = (0..PARTITIONS)
        .map(|p| topic.partition(p).unwrap().end_offset())
        .collect();
    assert_eq!(ends.iter().sum::<u64>(), records, "records stored");
    let mut by_offset: Vec<Vec<u8>> = ends.iter().map(|&e| vec![0u8; e as usize]).collect();
    // ... and every (producer, sequence) exactly once.
    let mut by_seq = vec![0u8; records as usize];
    for d in &all {
        for &(p, o, producer, seq) in d {
            let slot = &mut by_offset[p as usize][o as usize];
            *slot = slot.saturating_add(1);
            let slot = &mut by_seq[(producer * per_producer + seq) as usize];
            *slot = slot.saturating_add(1);
        }
    }
    let delivered: usize = all.iter().map(Vec::len).sum();
    for (p, counts) in by_offset.iter().enumerate() {
        let dup = counts.iter().position(|&c| c > 1);
        let missing = counts.iter().position(|&c| c == 0);
        assert!(
            dup.is_none() && missing.is_none(),
            "{TOPIC}-{p}: offset {dup:?} delivered more than once, offset {missing:?} never \
             ({delivered} deliveries for {records} records)"
        );
    }
    let bad = by_seq.iter().position(|&c| c != 1);
    assert!(
        bad.is_none(),
        "record #{bad:?} (producer * {per_producer} + sequence) delivered {:?} times",
        bad.map(|i| by_seq[i])
    );
    assert_eq!(delivered as u64, records);
    let group = log.group(GROUP).unwrap();
    for l in group.lag().unwrap() {
        assert_eq!(l.lag, 0, "{:?} not fully committed", l);
    }
    assert!(
        group.members().is_empty(),
        "members left: {:?}",
        group.members()
    );
    Report {
        records,
        elapsed,
        per_consumer: all.iter().map(Vec::len).collect(),
    }
}

fn new_member(log: &Log) -> Consumer {
    let mut c = log
        .consumer_with(
            ConsumerConfig::new(GROUP)
                .auto_offset_reset(OffsetReset::Earliest)
                .enable_auto_commit(false)
                .session_timeout(Duration::from_secs(60))
                .max_poll_records(500),
        )
        .unwrap();
    c.subscribe(&[TOPIC]).unwrap();
    c
}

/// One consumer thread: poll, "process" (record), commit; until the
/// producers are done and the group has committed everything.
fn consume(
    log: &Log,
    k: usize,
    records: u64,
    producing: &AtomicU64,
    failed: &AtomicBool,
) -> Deliveries {
    let mut c = new_member(log);
    let group = log.group(GROUP).unwrap();
    let mut out: Deliveries = Vec::new();
    let mut last = [None::<u64>; PARTITIONS as usize];
    let mut rejoined = k != CONSUMERS - 1;
    loop {
        assert!(!failed.load(Ordering::Acquire), "another consumer failed");
        let msgs = c
            .poll(Duration::from_millis(20))
            .unwrap_or_else(|e| panic!("consumer {k}: poll: {e}"));
        for m in &msgs {
            let p = m.partition() as usize;
            if let Some(prev) = last[p] {
                assert!(
                    m.offset() > prev,
                    "consumer {k}: {TOPIC}-{p} went from offset {prev} back to {}",
                    m.offset()
                );
            }
            last[p] = Some(m.offset());
            let v = m.value().expect("a value");
            let producer = u64::from_be_bytes(v[..8].try_into().unwrap());
            let seq = u64::from_be_bytes(v[8..16].try_into().unwrap());
            out.push((m.partition(), m.offset(), producer, seq));
        }
        c.commit()
            .unwrap_or_else(|e| panic!("consumer {k}: commit after processing: {e}"));

        // The last consumer leaves and rejoins once, half-way through.
        if !rejoined && out.len() as u64 >= records / (2 * CONSUMERS as u64) {
            rejoined = true;
            c.close().unwrap();
            c = new_member(log);
        }
        if msgs.is_empty()
            && producing.load(Ordering::Acquire) == 0
            && group.lag().unwrap().iter().all(|l| l.lag == 0)
        {
            break;
        }
    }
    c.close().unwrap();
    out
}
