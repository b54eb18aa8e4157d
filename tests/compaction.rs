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
    let kept: Vec<u64> = p
        .read(0, usize::MAX)
        .unwrap()
        .iter()
        .map(|m| m.offset())
        .collect();
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
