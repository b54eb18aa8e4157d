//! Compaction checked against a model over random workloads.
//!
//! Random sequences of puts, deletes (tombstones), batches, compactions and
//! reopens run against a compacted topic of two partitions and an in-memory
//! model that remembers every record ever appended, by offset. Segments are
//! tiny so that many of them close and get compacted.
//!
//! After every compaction and reopen, for each partition:
//! - every record read is the record the model appended at that offset
//!   (compaction never moves, alters or invents a record);
//! - offsets are strictly increasing and `end_offset` never moves back;
//! - the latest record of every key is still there, at its offset — unless
//!   it is a tombstone and `delete_retention` has passed, in which case no
//!   record of that key remains;
//! - replaying what is read (put on a value, remove on a tombstone) gives
//!   exactly the model's final key → value state.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use brook::{CleanupPolicy, Log, Message, Record, Topic, TopicConfig};
use proptest::prelude::*;

const TOPIC: &str = "changelog";
const PARTITIONS: u32 = 2;
const KEYS: u8 = 12;

#[derive(Debug, Clone)]
enum Op {
    /// A value for a key (value length varies so segments fill unevenly).
    Put(u8, usize),
    /// A tombstone for a key.
    Delete(u8),
    /// One `send_batch` of puts and deletes, all of one partition.
    Batch(Vec<(u8, Option<usize>)>),
    Compact,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (0..KEYS, 0usize..300).prop_map(|(k, n)| Op::Put(k, n)),
        3 => (0..KEYS).prop_map(Op::Delete),
        2 => prop::collection::vec((0..KEYS / 2, prop::option::weighted(0.8, 0usize..100)), 1..20)
            .prop_map(|records| Op::Batch(records.into_iter().map(|(k, v)| (k * 2, v)).collect())),
        2 => Just(Op::Compact),
        1 => Just(Op::Reopen),
    ]
}

/// What the model remembers of one appended record.
#[derive(Debug, Clone, PartialEq)]
struct Appended {
    key: Vec<u8>,
    value: Option<Vec<u8>>,
}

/// Every record appended to each partition, by offset.
type Model = Vec<Vec<Appended>>;

fn key_of(k: u8) -> Vec<u8> {
    format!("key-{k}").into_bytes()
}

fn partition_of(k: u8) -> u32 {
    u32::from(k) % PARTITIONS
}

/// A value that names its key and its place in the workload, so a record
/// that moved or came from elsewhere cannot pass for another.
fn value_of(k: u8, seq: usize, len: usize) -> Vec<u8> {
    let mut v = format!("{k}/{seq}/").into_bytes();
    v.resize(v.len() + len, b'a' + (seq % 26) as u8);
    v
}

fn record(a: &Appended, partition: u32) -> Record {
    match &a.value {
        Some(v) => Record::new(v).key(&a.key).partition(partition),
        None => Record::tombstone(&a.key).partition(partition),
    }
}

fn config(delete_retention: Duration) -> TopicConfig {
    TopicConfig::default()
        .partitions(PARTITIONS)
        .cleanup_policy(CleanupPolicy::Compact)
        .segment_bytes(2048)
        .max_record_bytes(1024)
        .delete_retention(delete_retention)
}

fn open(dir: &Path, delete_retention: Duration) -> (Log, Topic) {
    let log = Log::open(dir).unwrap();
    let topic = match log.topic(TOPIC) {
        Ok(t) => t,
        Err(_) => log.create_topic(TOPIC, config(delete_retention)).unwrap(),
    };
    (log, topic)
}

fn check(topic: &Topic, model: &Model, tombstones_may_expire: bool) -> Result<(), TestCaseError> {
    for (p, appended) in model.iter().enumerate() {
        let part = topic.partition(p as u32).unwrap();
        prop_assert_eq!(part.end_offset(), appended.len() as u64);
        let msgs: Vec<Message> = part.read(part.start_offset(), usize::MAX).unwrap();
        let mut last = None;
        let mut replayed: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut present: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
        for m in &msgs {
            let o = m.offset();
            prop_assert!(last.is_none_or(|l| l < o), "offset {} after {:?}", o, last);
            last = Some(o);
            let expected = &appended[o as usize];
            prop_assert_eq!(m.key(), Some(&expected.key[..]), "key at offset {}", o);
            prop_assert_eq!(
                m.value(),
                expected.value.as_deref(),
                "value at offset {}",
                o
            );
            match m.value() {
                Some(v) => replayed.insert(expected.key.clone(), v.to_vec()),
                None => replayed.remove(&expected.key),
            };
            present.insert(expected.key.clone(), o);
        }
        // The model's latest record per key and its final state.
        let mut latest: BTreeMap<Vec<u8>, (u64, Option<Vec<u8>>)> = BTreeMap::new();
        for (o, a) in appended.iter().enumerate() {
            latest.insert(a.key.clone(), (o as u64, a.value.clone()));
        }
        for (key, (offset, value)) in &latest {
            let found = msgs.iter().any(|m| m.offset() == *offset);
            if value.is_none() && tombstones_may_expire && !found {
                prop_assert!(
                    !present.contains_key(key),
                    "tombstone of {:?} expired but offset {:?} of the key remains",
                    String::from_utf8_lossy(key),
                    present.get(key)
                );
            } else {
                prop_assert!(
                    found,
                    "latest record of {:?} at offset {} is gone",
                    String::from_utf8_lossy(key),
                    offset
                );
            }
        }
        let state: BTreeMap<Vec<u8>, Vec<u8>> = latest
            .into_iter()
            .filter_map(|(k, (_, v))| v.map(|v| (k, v)))
            .collect();
        prop_assert_eq!(
            replayed,
            state,
            "replaying partition {} gives the wrong state",
            p
        );
    }
    Ok(())
}

fn run(ops: Vec<Op>, delete_retention: Duration) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, mut topic) = open(dir.path(), delete_retention);
    let mut model: Model = vec![Vec::new(); PARTITIONS as usize];
    let may_expire = delete_retention.is_zero();
    for (seq, op) in ops.into_iter().enumerate() {
        match op {
            Op::Put(k, len) => {
                let a = Appended {
                    key: key_of(k),
                    value: Some(value_of(k, seq, len)),
                };
                let p = partition_of(k);
                let meta = topic.send(record(&a, p)).unwrap();
                prop_assert_eq!(meta.offset, model[p as usize].len() as u64);
                model[p as usize].push(a);
            }
            Op::Delete(k) => {
                let a = Appended {
                    key: key_of(k),
                    value: None,
                };
                let p = partition_of(k);
                let meta = topic.send(record(&a, p)).unwrap();
                prop_assert_eq!(meta.offset, model[p as usize].len() as u64);
                model[p as usize].push(a);
            }
            Op::Batch(records) => {
                // Even keys only: every record of the batch is in partition 0.
                let batch: Vec<Appended> = records
                    .iter()
                    .map(|&(k, len)| Appended {
                        key: key_of(k),
                        value: len.map(|n| value_of(k, seq, n)),
                    })
                    .collect();
                let sent: Vec<Record> = batch.iter().map(|a| record(a, 0)).collect();
                let metas = topic.send_batch(&sent).unwrap();
                for (meta, a) in metas.iter().zip(batch) {
                    prop_assert_eq!(meta.offset, model[0].len() as u64);
                    model[0].push(a);
                }
            }
            Op::Compact => {
                // Tombstone expiry is by file time in milliseconds.
                std::thread::sleep(Duration::from_millis(2));
                log.compact_now(TOPIC).unwrap();
                check(&topic, &model, may_expire)?;
            }
            Op::Reopen => {
                log.close().unwrap();
                drop(topic);
                drop(log);
                (log, topic) = open(dir.path(), delete_retention);
                check(&topic, &model, may_expire)?;
            }
        }
    }
    log.compact_now(TOPIC).unwrap();
    check(&topic, &model, may_expire)?;
    log.close().unwrap();
    drop(log);
    let (_log, topic) = open(dir.path(), delete_retention);
    check(&topic, &model, may_expire)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Tombstones stay (delete_retention of a day): every key's latest
    /// record, delete or not, survives every compaction.
    #[test]
    fn compaction_keeps_every_latest_record(ops in prop::collection::vec(op(), 1..160)) {
        run(ops, Duration::from_secs(24 * 3600))?;
    }

    /// Tombstones expire as soon as they may (delete_retention zero): a
    /// deleted key may vanish, but never leaves an older value behind.
    #[test]
    fn expired_tombstones_take_their_key_with_them(ops in prop::collection::vec(op(), 1..160)) {
        run(ops, Duration::ZERO)?;
    }
}
