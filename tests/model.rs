//! A log behaves like a list of records per partition, whatever happens in
//! between: random sequences of appends, batches, reads, syncs and reopens
//! run against both brook and an in-memory model (a `Vec` of the expected
//! records of each partition). Segments are small so that rolls happen, and
//! some cases set `retention_bytes` so that retention deletes segments.
//!
//! After every operation: `end_offset` equals the model's length,
//! `start_offset` never decreases, and reading `[start_offset, end_offset)`
//! returns exactly the model's records there (offset, key, value, headers,
//! timestamp). Now and then a `send_batch` is a bulk one, large enough to
//! take brook's `pwrite` path. Appends must get the next offset of the
//! partition they report, keyed records must land on Kafka's partition,
//! unkeyed records of one `send_batch` on one partition.

use std::path::Path;
use std::time::Duration;

use brook::{murmur2, Error, Log, LogConfig, Message, Partition, Record, Topic, TopicConfig};
use proptest::prelude::*;

const TOPIC: &str = "model";
const SEGMENT_BYTES: u64 = 4096;
const MAX_RECORD_BYTES: usize = 1024;

#[derive(Debug, Clone, PartialEq)]
struct Expected {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Vec<u8>)>,
    timestamp: i64,
}

#[derive(Debug, Clone)]
struct Spec {
    key: Option<Vec<u8>>,
    /// None makes a tombstone (only generated with a key).
    value: Option<Vec<u8>>,
    header: Option<(String, Vec<u8>)>,
    partition: Option<u32>,
    timestamp: Option<i64>,
}

impl Spec {
    fn record(&self) -> Record {
        let mut r = match (&self.value, &self.key) {
            (Some(v), _) => Record::new(v),
            (None, Some(k)) => Record::tombstone(k),
            (None, None) => unreachable!("a tombstone needs a key"),
        };
        if let (Some(k), Some(_)) = (&self.key, &self.value) {
            r = r.key(k);
        }
        if let Some((name, value)) = &self.header {
            r = r.header(name, value);
        }
        if let Some(p) = self.partition {
            r = r.partition(p);
        }
        if let Some(ts) = self.timestamp {
            r = r.timestamp(ts);
        }
        r
    }
}

#[derive(Debug, Clone)]
enum Op {
    Send(Spec),
    /// `append(key, value)`, the plain keyed call.
    Append {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    SendBatch(Vec<Spec>),
    Read {
        partition: u32,
        /// Where to start, as a fraction of `start..=end + 1` (the last
        /// step is past the end: `OffsetOutOfRange`).
        from_permille: u16,
        max: usize,
    },
    Reopen,
    Sync,
    Flush,
}

fn bytes(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..=max_len)
}

fn spec(partitions: u32) -> impl Strategy<Value = Spec> {
    (
        prop::option::weighted(0.6, prop::collection::vec(b'a'..=b'f', 1..4)),
        bytes(300),
        prop::bool::weighted(0.1),
        prop::option::weighted(0.3, ("[a-z]{1,6}", bytes(20))),
        prop::option::weighted(0.2, 0..partitions),
        prop::option::weighted(0.3, 0i64..2_000_000_000_000),
    )
        .prop_map(|(key, value, tombstone, header, partition, timestamp)| {
            let value = if tombstone && key.is_some() {
                None
            } else {
                Some(value)
            };
            Spec {
                key,
                value,
                header,
                partition,
                timestamp,
            }
        })
}

/// A `send_batch` of 260–299 records of 900–999 bytes to one partition:
/// over 256 KiB of records of over 512 bytes, which brook writes with
/// `pwrite` rather than through the map, rolling many segments.
fn bulk(partitions: u32) -> impl Strategy<Value = Vec<Spec>> {
    (0..partitions, 260usize..300, any::<u8>()).prop_map(|(partition, n, seed)| {
        (0..n)
            .map(|i| Spec {
                key: None,
                value: Some(vec![seed.wrapping_add(i as u8); 900 + (i * 37) % 100]),
                header: (i % 5 == 0).then(|| ("h".to_owned(), vec![i as u8; i % 20])),
                partition: Some(partition),
                timestamp: (i % 3 == 0).then_some(1_600_000_000_000 + i as i64),
            })
            .collect()
    })
}

fn op(partitions: u32) -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => spec(partitions).prop_map(Op::Send),
        3 => (prop::collection::vec(b'a'..=b'z', 0..8), bytes(200))
            .prop_map(|(key, value)| Op::Append { key, value }),
        3 => prop::collection::vec(spec(partitions), 1..40).prop_map(Op::SendBatch),
        1 => bulk(partitions).prop_map(Op::SendBatch),
        3 => (0..partitions, 0u16..=1000, 1usize..50).prop_map(|(partition, from_permille, max)| {
            Op::Read { partition, from_permille, max }
        }),
        1 => Just(Op::Reopen),
        1 => Just(Op::Sync),
        1 => Just(Op::Flush),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    partitions: u32,
    retention_bytes: Option<u64>,
    ops: Vec<Op>,
}

fn case() -> impl Strategy<Value = Case> {
    (1u32..=3, prop::option::weighted(0.3, 6_000u64..20_000)).prop_flat_map(
        |(partitions, retention_bytes)| {
            prop::collection::vec(op(partitions), 1..40).prop_map(move |ops| Case {
                partitions,
                retention_bytes,
                ops,
            })
        },
    )
}

/// What brook must hold: every record ever appended, per partition, by offset.
struct Model {
    records: Vec<Vec<Expected>>,
    start: Vec<u64>,
}

fn open(dir: &Path) -> Log {
    Log::open_with(
        dir,
        LogConfig::default().retention_check_interval(Duration::from_millis(50)),
    )
    .expect("open log")
}

fn kafka_partition(key: &[u8], partitions: u32) -> u32 {
    (murmur2(key) & 0x7fff_ffff) as u32 % partitions
}

fn observed(m: &Message) -> Expected {
    Expected {
        key: m.key().map(<[u8]>::to_vec),
        value: m.value().map(<[u8]>::to_vec),
        headers: m
            .headers()
            .map(|(k, v)| (k.to_owned(), v.to_vec()))
            .collect(),
        timestamp: m.timestamp(),
    }
}

fn expected(s: &Spec, timestamp: i64) -> Expected {
    Expected {
        key: s.key.clone(),
        value: s.value.clone(),
        headers: s.header.iter().cloned().collect(),
        timestamp,
    }
}

fn check_message(m: &Message, model: &Model, p: u32, when: &str) -> Result<(), TestCaseError> {
    let want = &model.records[p as usize][m.offset() as usize];
    prop_assert_eq!(
        m.partition(),
        p,
        "{}: partition of offset {}",
        when,
        m.offset()
    );
    prop_assert_eq!(m.topic(), TOPIC);
    prop_assert_eq!(
        &observed(m),
        want,
        "{}: {}-{} offset {}",
        when,
        TOPIC,
        p,
        m.offset()
    );
    Ok(())
}

/// The invariants that hold after every operation.
fn check_all(t: &Topic, model: &mut Model, when: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(t.partition_count() as usize, model.records.len());
    for p in 0..t.partition_count() {
        let part = t
            .partition(p)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let (start, end) = (part.start_offset(), part.end_offset());
        let len = model.records[p as usize].len() as u64;
        prop_assert_eq!(end, len, "{}: end_offset of partition {}", when, p);
        prop_assert!(
            start >= model.start[p as usize],
            "{}: start_offset of partition {} went back from {} to {}",
            when,
            p,
            model.start[p as usize],
            start
        );
        prop_assert!(
            start <= end,
            "{}: start_offset {} past end_offset {}",
            when,
            start,
            end
        );
        model.start[p as usize] = start;
        let mut next = start;
        while next < end {
            let msgs = read(&part, next, 10_000)?;
            prop_assert!(
                !msgs.is_empty(),
                "{}: read({}) below end {} returned nothing",
                when,
                next,
                end
            );
            for m in &msgs {
                prop_assert_eq!(m.offset(), next, "{}: offsets contiguous", when);
                check_message(m, model, p, when)?;
                next += 1;
            }
        }
        prop_assert!(
            read(&part, end, 10)?.is_empty(),
            "{}: reading at end_offset must return nothing",
            when
        );
    }
    Ok(())
}

fn read(p: &Partition, from: u64, max: usize) -> Result<Vec<Message>, TestCaseError> {
    p.read(from, max)
        .map_err(|e| TestCaseError::fail(format!("read({from}, {max}): {e}")))
}

fn check_metadata(
    model: &mut Model,
    s: &Spec,
    meta: &brook::RecordMetadata,
    partitions: u32,
) -> Result<(), TestCaseError> {
    if let Some(p) = s.partition {
        prop_assert_eq!(meta.partition, p, "explicit partition");
    } else if let Some(k) = &s.key {
        prop_assert_eq!(
            meta.partition,
            kafka_partition(k, partitions),
            "keyed partition"
        );
    }
    prop_assert!(meta.partition < partitions);
    let log = &mut model.records[meta.partition as usize];
    prop_assert_eq!(
        meta.offset,
        log.len() as u64,
        "next offset of partition {}",
        meta.partition
    );
    if let Some(ts) = s.timestamp {
        prop_assert_eq!(meta.timestamp, ts, "explicit timestamp");
    }
    log.push(expected(s, meta.timestamp));
    Ok(())
}

fn run(case: &Case) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let config = TopicConfig::default()
        .partitions(case.partitions)
        .segment_bytes(SEGMENT_BYTES)
        .max_record_bytes(MAX_RECORD_BYTES)
        .retention_bytes(case.retention_bytes);
    let mut log = open(dir.path());
    let mut t = log.create_topic(TOPIC, config).expect("create topic");
    let n = case.partitions;
    let mut model = Model {
        records: vec![Vec::new(); n as usize],
        start: vec![0; n as usize],
    };
    for (i, op) in case.ops.iter().enumerate() {
        let when = format!("after op #{i} {op:?}");
        match op {
            Op::Send(s) => {
                let meta = t
                    .send(s.record())
                    .map_err(|e| TestCaseError::fail(format!("send: {e}")))?;
                check_metadata(&mut model, s, &meta, n)?;
            }
            Op::Append { key, value } => {
                let meta = t
                    .append(key, value)
                    .map_err(|e| TestCaseError::fail(format!("append: {e}")))?;
                let s = Spec {
                    key: Some(key.clone()),
                    value: Some(value.clone()),
                    header: None,
                    partition: None,
                    timestamp: None,
                };
                check_metadata(&mut model, &s, &meta, n)?;
            }
            Op::SendBatch(specs) => {
                let metas = t
                    .send_batch(specs.iter().map(Spec::record))
                    .map_err(|e| TestCaseError::fail(format!("send_batch: {e}")))?;
                prop_assert_eq!(metas.len(), specs.len());
                let mut sticky = None;
                for (s, meta) in specs.iter().zip(&metas) {
                    if s.key.is_none() && s.partition.is_none() {
                        let p = *sticky.get_or_insert(meta.partition);
                        prop_assert_eq!(
                            meta.partition,
                            p,
                            "unkeyed records of a batch share a partition"
                        );
                    }
                    check_metadata(&mut model, s, meta, n)?;
                }
            }
            Op::Read {
                partition,
                from_permille,
                max,
            } => {
                let part = t.partition(*partition).unwrap();
                let (start, end) = (part.start_offset(), part.end_offset());
                let from = start + (end + 1 - start) * *from_permille as u64 / 1000;
                if from > end {
                    match part.read(from, *max) {
                        Err(Error::OffsetOutOfRange { .. }) => {}
                        other => {
                            prop_assert!(false, "read({}) past end {}: {:?}", from, end, other)
                        }
                    }
                } else {
                    let msgs = read(&part, from, *max)?;
                    prop_assert!(
                        msgs.len() <= *max,
                        "read returned {} > max {}",
                        msgs.len(),
                        max
                    );
                    prop_assert_eq!(
                        msgs.is_empty(),
                        from == end,
                        "read({}) with end {}",
                        from,
                        end
                    );
                    for (j, m) in msgs.iter().enumerate() {
                        prop_assert_eq!(m.offset(), from + j as u64);
                        check_message(m, &model, *partition, &when)?;
                    }
                }
                if start > 0 {
                    match part.read(start - 1, 1) {
                        Err(Error::OffsetOutOfRange { .. }) => {}
                        other => prop_assert!(false, "read below start {}: {:?}", start, other),
                    }
                }
            }
            Op::Reopen => {
                log.close()
                    .map_err(|e| TestCaseError::fail(format!("close: {e}")))?;
                drop(t);
                drop(log);
                log = open(dir.path());
                t = log.topic(TOPIC).expect("topic after reopen");
            }
            Op::Sync => log
                .sync()
                .map_err(|e| TestCaseError::fail(format!("sync: {e}")))?,
            Op::Flush => log
                .flush()
                .map_err(|e| TestCaseError::fail(format!("flush: {e}")))?,
        }
        check_all(&t, &mut model, &when)?;
    }
    log.close()
        .map_err(|e| TestCaseError::fail(format!("final close: {e}")))?;
    drop(t);
    drop(log);
    let log = open(dir.path());
    let t = log.topic(TOPIC).expect("topic after the final reopen");
    check_all(&t, &mut model, "after the final reopen")
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        max_shrink_iters: 2_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn a_log_holds_exactly_what_a_list_per_partition_would(case in case()) {
        run(&case)?;
    }
}
