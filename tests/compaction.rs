//! Guarantees of compacted topics through the public API: every key keeps
//! its latest record at its original offset, records need keys, reads and
//! consumers skip the offsets compaction removed, and the background
//! cleaner runs by itself once the dirty ratio passes its mark.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use brook::{
    CleanupPolicy, ConsumerConfig, Error, Log, LogConfig, OffsetReset, Record, TopicConfig,
    TopicPartition,
};

fn compacted() -> TopicConfig {
    TopicConfig::default()
        .cleanup_policy(CleanupPolicy::Compact)
        .segment_bytes(4096)
        .max_record_bytes(1024)
}

/// Appends `n` records, `value = i`, to keys `i % keys`.
fn fill(topic: &brook::Topic, n: u64, keys: u64) -> BTreeMap<String, (u64, String)> {
    let mut latest = BTreeMap::new();
    for i in 0..n {
        let key = format!("key-{}", i % keys);
        let meta = topic.append(&key, i.to_string()).unwrap();
        assert_eq!(meta.offset, i);
        latest.insert(key, (i, i.to_string()));
    }
    latest
}

/// Offsets of every record a partition holds.
fn offsets(p: &brook::Partition) -> Vec<u64> {
    p.read(0, usize::MAX)
        .unwrap()
        .iter()
        .map(|m| m.offset())
        .collect()
}

#[test]
fn compaction_keeps_the_latest_value_of_every_key_at_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let topic = log.create_topic("state", compacted()).unwrap();
    let latest = fill(&topic, 5_000, 25);
    let stats = log.compact_now("state").unwrap();
    assert!(stats.records_out < stats.records_in, "{stats:?}");
    let p = topic.partition(0).unwrap();
    assert_eq!(p.end_offset(), 5_000, "the end offset never moves back");
    let msgs = p.read(p.start_offset(), usize::MAX).unwrap();
    assert!(msgs.len() < 5_000 / 4, "{} records survived", msgs.len());
    let mut state = BTreeMap::new();
    for m in &msgs {
        assert_eq!(
            m.value().unwrap(),
            m.offset().to_string().as_bytes(),
            "record moved from its offset"
        );
        state.insert(
            String::from_utf8(m.key().unwrap().to_vec()).unwrap(),
            (
                m.offset(),
                String::from_utf8(m.value().unwrap().to_vec()).unwrap(),
            ),
        );
    }
    assert_eq!(
        state, latest,
        "replaying the compacted topic must give every key's latest value"
    );
    // The same after a reopen.
    log.close().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let p = log.topic("state").unwrap().partition(0).unwrap();
    assert_eq!(
        p.read(p.start_offset(), usize::MAX).unwrap().len(),
        msgs.len()
    );
}

#[test]
fn compacted_topics_refuse_records_without_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let topic = log.create_topic("state", compacted()).unwrap();
    let err = topic.send(Record::new("no key")).unwrap_err();
    assert!(matches!(err, Error::InvalidRecord { .. }), "{err}");
    assert!(err.to_string().contains("state"), "{err}");
    assert_eq!(
        topic.partition(0).unwrap().end_offset(),
        0,
        "nothing was written"
    );
    topic.send(Record::tombstone("gone")).unwrap();
    let plain = log.create_topic("plain", TopicConfig::default()).unwrap();
    plain.send(Record::new("fine")).unwrap();
    assert!(matches!(
        log.compact_now("plain"),
        Err(Error::InvalidConfig { .. })
    ));
}

#[test]
fn a_consumer_at_a_removed_offset_continues_at_the_next_kept_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let topic = log.create_topic("state", compacted()).unwrap();
    fill(&topic, 3_000, 10);
    log.compact_now("state").unwrap();
    let p = topic.partition(0).unwrap();
    let kept = offsets(&p);
    let removed = (0..3_000)
        .find(|o| !kept.contains(o))
        .expect("compaction removed something");
    let next_kept = *kept.iter().find(|&&o| o > removed).unwrap();
    // Partition::read from a removed offset starts at the next kept one.
    assert_eq!(p.read(removed, 1).unwrap()[0].offset(), next_kept);
    let mut c = log
        .consumer_with(ConsumerConfig::new("g").auto_offset_reset(OffsetReset::Earliest))
        .unwrap();
    let tp = TopicPartition::new("state", 0);
    c.assign(std::slice::from_ref(&tp)).unwrap();
    c.seek(&tp, removed).unwrap();
    let got = c.poll(Duration::from_secs(1)).unwrap();
    assert_eq!(got[0].offset(), next_kept);
    assert!(got.windows(2).all(|w| w[0].offset() < w[1].offset()));
}

#[test]
fn the_background_cleaner_compacts_once_the_dirty_ratio_passes() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open_with(dir.path(), LogConfig::default()).unwrap();
    let topic = log
        .create_topic("state", compacted().min_cleanable_dirty_ratio(0.1))
        .unwrap();
    fill(&topic, 3_000, 10);
    let p = topic.partition(0).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = p.read(p.start_offset(), usize::MAX).unwrap().len();
        if n < 1_000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no background compaction within 20 s ({n} records)"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value appended at `offset` by [`reads_and_polls_stay_consistent_while_compaction_runs`].
fn value_at(offset: u64) -> String {
    format!("{offset}:{}", "v".repeat((offset % 64) as usize))
}

#[test]
fn reads_and_polls_stay_consistent_while_compaction_runs() {
    const RECORDS: u64 = 40_000;
    const KEYS: u64 = 300;
    let key_at = |offset: u64| format!("key-{}", offset % KEYS);
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let topic = log
        .create_topic("state", compacted().segment_bytes(16 * 1024))
        .unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    let check = |m: &brook::Message| {
        assert_eq!(m.key(), Some(key_at(m.offset()).as_bytes()), "{m:?}");
        assert_eq!(m.value(), Some(value_at(m.offset()).as_bytes()), "{m:?}");
    };
    let passes = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        // One writer: offset i holds key i % KEYS. The run ends only once
        // the compactor has finished two passes, however the threads are
        // scheduled: compaction always overlaps the readers (compact_now
        // rewrites and swaps segments even when nothing changed).
        s.spawn(|| {
            for i in 0..RECORDS {
                assert_eq!(topic.append(key_at(i), value_at(i)).unwrap().offset, i);
            }
            while passes.load(std::sync::atomic::Ordering::SeqCst) < 2 {
                std::thread::sleep(Duration::from_millis(1));
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        // A compactor, as fast as it can go.
        s.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                log.compact_now("state").unwrap();
                passes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        // Readers scanning the partition from its start, over and over.
        for _ in 0..2 {
            let p = topic.partition(0).unwrap();
            let (done, check) = (&done, &check);
            s.spawn(move || loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                let end = p.end_offset();
                let mut at = p.start_offset();
                while at < end {
                    let msgs = p.read(at, 700).unwrap();
                    assert!(!msgs.is_empty(), "read({at}) below end {end} gave nothing");
                    assert!(msgs[0].offset() >= at);
                    for w in msgs.windows(2) {
                        assert!(w[0].offset() < w[1].offset());
                    }
                    msgs.iter().for_each(check);
                    at = msgs.last().unwrap().offset() + 1;
                }
                if finished {
                    break;
                }
            });
        }
        // A consumer polling along, rebuilding the key -> value state.
        s.spawn(|| {
            let mut c = log
                .consumer_with(ConsumerConfig::new("g").auto_offset_reset(OffsetReset::Earliest))
                .unwrap();
            c.subscribe(&["state"]).unwrap();
            let mut state = BTreeMap::new();
            let mut last = None;
            loop {
                for m in c.poll(Duration::from_millis(20)).unwrap() {
                    check(&m);
                    assert!(last < Some(m.offset()), "{last:?} then {}", m.offset());
                    last = Some(m.offset());
                    state.insert(m.offset() % KEYS, m.offset());
                }
                if done.load(std::sync::atomic::Ordering::SeqCst) && last == Some(RECORDS - 1) {
                    break;
                }
            }
            let expected: BTreeMap<u64, u64> =
                (RECORDS - KEYS..RECORDS).map(|o| (o % KEYS, o)).collect();
            assert_eq!(state, expected, "the consumer missed a latest value");
        });
    });
    // Afterwards the partition holds every key's latest value once more.
    log.compact_now("state").unwrap();
    let p = topic.partition(0).unwrap();
    let msgs = p.read(p.start_offset(), usize::MAX).unwrap();
    msgs.iter().for_each(check);
    let latest: Vec<u64> = msgs
        .iter()
        .map(|m| m.offset())
        .filter(|&o| o >= RECORDS - KEYS)
        .collect();
    assert_eq!(latest, (RECORDS - KEYS..RECORDS).collect::<Vec<_>>());
}

#[test]
fn with_the_cleaner_off_only_compact_now_compacts() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open_with(dir.path(), LogConfig::default().cleaner(false)).unwrap();
    let topic = log
        .create_topic("state", compacted().min_cleanable_dirty_ratio(0.1))
        .unwrap();
    fill(&topic, 3_000, 10);
    let p = topic.partition(0).unwrap();
    // The background thread ticks every 500 ms; give it three chances.
    std::thread::sleep(Duration::from_millis(1_600));
    assert_eq!(p.read(0, usize::MAX).unwrap().len(), 3_000);
    log.compact_now("state").unwrap();
    assert!(p.read(0, usize::MAX).unwrap().len() < 1_000);
}

#[test]
fn records_younger_than_min_compaction_lag_are_not_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open_with(dir.path(), LogConfig::default().cleaner(false)).unwrap();
    let lag = Duration::from_secs(3600);
    let topic = log
        .create_topic("state", compacted().min_compaction_lag(lag))
        .unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // Two hours old, then fresh: only the old segments may be compacted.
    let old = now_ms - 2 * 3600 * 1000;
    let mut offsets_of_fresh = Vec::new();
    for (i, ts) in (0..6_000).map(|i| (i, if i < 3_000 { old } else { now_ms })) {
        let r = Record::new(i.to_string())
            .key(format!("key-{}", i % 10))
            .timestamp(ts);
        let meta = topic.send(r).unwrap();
        if ts == now_ms {
            offsets_of_fresh.push(meta.offset);
        }
    }
    let stats = log.compact_now("state").unwrap();
    assert!(stats.records_out < stats.records_in, "{stats:?}");
    let p = topic.partition(0).unwrap();
    let kept = offsets(&p);
    assert!(kept.len() < 6_000, "old records were compacted");
    // Every fresh record is still there, duplicates of its key included.
    let fresh_kept = kept.iter().filter(|&&o| o >= 3_000).count();
    assert_eq!(fresh_kept, offsets_of_fresh.len());
}

/// A crash leaves the recovery checkpoint of the last background write (or
/// close), whose byte position in a segment predates later compactions of
/// that segment. Reopening must not read batch headers at that stale
/// position (found by `tests/crash_mixed.rs`: reopening failed with
/// `Error::Corrupt`, "magic ... is not 2").
#[test]
fn reopening_after_a_crash_survives_compaction_of_the_recovery_point_segment() {
    let dir = tempfile::tempdir().unwrap();
    let config = TopicConfig::default()
        .cleanup_policy(CleanupPolicy::Compact)
        .segment_bytes(1100)
        .max_record_bytes(1000);
    let value = |len: usize| "v".repeat(len);
    // One batch per record; the close records a recovery point after x and y.
    {
        let log = Log::open(dir.path()).unwrap();
        let t = log.create_topic("table", config).unwrap();
        t.append("x", value(100)).unwrap();
        log.flush().unwrap();
        t.append("y", value(100)).unwrap();
        log.close().unwrap();
    }
    let checkpoint = std::fs::read(dir.path().join("recovery-checkpoint")).unwrap();
    // A later x supersedes the first; z rolls the segment; compaction then
    // rewrites segment 0 as [y, x'], so the recovered position falls inside x'.
    {
        let log = Log::open(dir.path()).unwrap();
        let t = log.topic("table").unwrap();
        t.append("x", value(300)).unwrap();
        log.flush().unwrap();
        t.append("z", value(600)).unwrap();
        let stats = log.compact_now("table").unwrap();
        assert!(
            stats.records_out < stats.records_in,
            "compaction removed nothing: {stats:?}"
        );
        log.close().unwrap();
    }
    // Crash: the older checkpoint is what the disk holds, no clean marker.
    std::fs::write(dir.path().join("recovery-checkpoint"), checkpoint).unwrap();
    std::fs::remove_file(dir.path().join(".clean-shutdown")).unwrap();
    let log = Log::open(dir.path())
        .unwrap_or_else(|e| panic!("reopen after a crash following compaction: {e}"));
    let p = log.topic("table").unwrap().partition(0).unwrap();
    let kept: Vec<(u64, Vec<u8>)> = p
        .read(0, 100)
        .unwrap()
        .iter()
        .map(|m| (m.offset(), m.key().unwrap().to_vec()))
        .collect();
    assert_eq!(
        kept,
        vec![(1, b"y".to_vec()), (2, b"x".to_vec()), (3, b"z".to_vec())]
    );
}
