//! Storage guarantees of a single `Log`, through the public API only:
//! topics and their configs survive reopening; the directory layout is
//! Kafka's; one process owns a directory; records round-trip with keys,
//! headers, tombstones, explicit partitions and timestamps; offsets are
//! contiguous and never reused; `read` and `offset_for_timestamp` return
//! exactly what the contract says; segments roll and retention deletes whole
//! old segments but never the active one; every bad input gets its error;
//! keys are partitioned exactly like the Java Kafka client; appends from many
//! threads are contiguous; a clean close leaves only whole, CRC-valid
//! batches; damage to closed data is reported as `Error::Corrupt`, a torn
//! tail of the active segment is dropped on reopen and missing indexes are
//! rebuilt.
//!
//! Some tests parse `.log` files themselves (Kafka RecordBatch v2 framing:
//! `baseOffset` i64 BE, `batchLength` i32 BE at +8, the next batch at
//! `pos + 12 + batchLength`) so that they check the bytes on disk rather
//! than what brook says about them.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use brook::{
    murmur2, CleanupPolicy, Error, Log, LogConfig, Message, Partition, Partitioner, Record,
    RecordMetadata, SyncPolicy, Topic, TopicConfig,
};

// ---------------------------------------------------------------- helpers

/// Size of a RecordBatch v2 header: every batch costs this much on disk.
const BATCH_HEADER_BYTES: usize = 61;

fn open(dir: &Path) -> Log {
    Log::open(dir).unwrap_or_else(|e| panic!("open log in {}: {e}", dir.display()))
}

/// A log whose background retention runs every 50 ms instead of every minute.
fn open_with_fast_retention(dir: &Path) -> Log {
    Log::open_with(
        dir,
        LogConfig::default().retention_check_interval(Duration::from_millis(50)),
    )
    .unwrap_or_else(|e| panic!("open log in {}: {e}", dir.display()))
}

fn create(log: &Log, name: &str, config: TopicConfig) -> Topic {
    log.create_topic(name, config)
        .unwrap_or_else(|e| panic!("create topic {name}: {e}"))
}

/// Records of at most 1 KiB in 4 KiB segments: a few dozen records roll.
fn small_segments() -> TopicConfig {
    TopicConfig::default()
        .segment_bytes(4096)
        .max_record_bytes(1024)
}

fn expect_err<T: Debug>(r: brook::Result<T>, what: &str) -> Error {
    match r {
        Ok(v) => panic!("{what}: expected an error, got Ok({v:?})"),
        Err(e) => e,
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Kafka's default partitioner for a keyed record.
fn kafka_partition(key: &[u8], partitions: u32) -> u32 {
    (murmur2(key) & 0x7fff_ffff) as u32 % partitions
}

/// Every message of `[start_offset, end_offset)`, checking that each `read`
/// returns at least one message and that offsets have no gap.
fn read_all(p: &Partition) -> Vec<Message> {
    let (start, end) = (p.start_offset(), p.end_offset());
    let mut out = Vec::new();
    let mut next = start;
    while next < end {
        let batch = p
            .read(next, 10_000)
            .unwrap_or_else(|e| panic!("read {}-{} at {next}: {e}", p.topic(), p.id()));
        assert!(
            !batch.is_empty(),
            "read {}-{} at {next} returned nothing although end_offset is {end}",
            p.topic(),
            p.id()
        );
        for m in batch {
            assert_eq!(
                m.offset(),
                next,
                "{}-{}: offsets must be contiguous",
                p.topic(),
                p.id()
            );
            next += 1;
            out.push(m);
        }
    }
    out
}

fn values(msgs: &[Message]) -> Vec<Vec<u8>> {
    msgs.iter()
        .map(|m| m.value().expect("a value").to_vec())
        .collect()
}

fn headers_of(m: &Message) -> Vec<(String, Vec<u8>)> {
    m.headers()
        .map(|(k, v)| (k.to_owned(), v.to_vec()))
        .collect()
}

fn partition_dir(dir: &Path, topic: &str, partition: u32) -> PathBuf {
    dir.join(format!("{topic}-{partition}"))
}

/// Files of a partition directory with extension `ext`, oldest segment first.
fn segment_files(pdir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(pdir)
        .unwrap_or_else(|e| panic!("list {}: {e}", pdir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some(ext))
        .collect();
    files.sort();
    files
}

/// The base offset a segment file is named after (`00000000000000000042.log` -> 42).
fn base_offset_of(path: &Path) -> u64 {
    let stem = path.file_stem().unwrap().to_str().unwrap();
    assert_eq!(
        stem.len(),
        20,
        "{}: segment names are 20-digit base offsets",
        path.display()
    );
    stem.parse()
        .unwrap_or_else(|_| panic!("{}: name is not a number", path.display()))
}

fn total_bytes(files: &[PathBuf]) -> u64 {
    files.iter().map(|f| fs::metadata(f).unwrap().len()).sum()
}

fn all_log_files(dir: &Path, topic: &str, partitions: u32) -> Vec<PathBuf> {
    (0..partitions)
        .flat_map(|p| segment_files(&partition_dir(dir, topic, p), "log"))
        .collect()
}

/// CRC-32C (Castagnoli), as RecordBatch v2 uses; our own, to check brook's.
fn crc32c(data: &[u8]) -> u32 {
    static TABLE: OnceLock<[u32; 256]> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82f6_3b78
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        t
    });
    let mut crc = !0u32;
    for &b in data {
        crc = table[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// One RecordBatch v2 as found in a `.log` file.
#[derive(Debug, Clone)]
struct Batch {
    position: usize,
    /// `12 + batchLength`: the whole batch.
    size: usize,
    base_offset: i64,
    magic: i8,
    crc_ok: bool,
    last_offset_delta: i32,
    max_timestamp: i64,
    records: i32,
}

impl Batch {
    fn next_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64 + 1
    }
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

/// Walks the batch chain of a `.log` file's bytes. With `zero_tail_allowed`
/// the chain may stop where the rest of the file is zeros (a live, pre-grown
/// active segment); otherwise it must end exactly at the end of the file.
fn batch_chain(bytes: &[u8], zero_tail_allowed: bool) -> Result<Vec<Batch>, String> {
    let mut batches = Vec::new();
    let mut pos = 0usize;
    while pos < bytes.len() {
        if zero_tail_allowed && bytes[pos..].iter().all(|&b| b == 0) {
            break;
        }
        if bytes.len() - pos < BATCH_HEADER_BYTES {
            return Err(format!(
                "{} trailing bytes at {pos} are too short for a batch header",
                bytes.len() - pos
            ));
        }
        let length = be_i32(bytes, pos + 8);
        if length < (BATCH_HEADER_BYTES - 12) as i32 {
            return Err(format!(
                "batch at {pos} has batchLength {length} (zero tail or garbage)"
            ));
        }
        let end = pos + 12 + length as usize;
        if end > bytes.len() {
            return Err(format!(
                "batch at {pos} of {} bytes runs past the end of the file ({} bytes)",
                12 + length,
                bytes.len()
            ));
        }
        let crc = be_i32(bytes, pos + 17) as u32;
        batches.push(Batch {
            position: pos,
            size: end - pos,
            base_offset: be_i64(bytes, pos),
            magic: bytes[pos + 16] as i8,
            crc_ok: crc == crc32c(&bytes[pos + 21..end]),
            last_offset_delta: be_i32(bytes, pos + 23),
            max_timestamp: be_i64(bytes, pos + 35),
            records: be_i32(bytes, pos + 57),
        });
        pos = end;
    }
    Ok(batches)
}

fn file_batches(path: &Path, zero_tail_allowed: bool) -> Vec<Batch> {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    batch_chain(&bytes, zero_tail_allowed)
        .unwrap_or_else(|e| panic!("{}: broken batch chain: {e}", path.display()))
}

/// Polls `done` every 20 ms for up to `limit`; false if it never held.
fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn value_of(i: u64, len: usize) -> Vec<u8> {
    let mut v = format!("value-{i}-").into_bytes();
    v.resize(len, b'a' + (i % 26) as u8);
    v
}

// ------------------------------------------------------ topics and layout

#[test]
fn topics_and_their_configs_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let custom = TopicConfig::default()
        .partitions(3)
        .segment_bytes(1 << 20)
        .retention_bytes(Some(10 << 20))
        .retention(Some(Duration::from_secs(3600)))
        .max_record_bytes(4096)
        .cleanup_policy(CleanupPolicy::Compact);
    {
        let log = open(dir.path());
        let orders = create(&log, "orders", custom.clone());
        create(&log, "audit", TopicConfig::default());
        create(&log, "billing", TopicConfig::default().partitions(2));
        for i in 0..30 {
            orders.append(format!("k{i}"), format!("v{i}")).unwrap();
        }
        log.close().unwrap();
    }
    let log = open(dir.path());
    assert_eq!(
        log.topics(),
        vec!["audit", "billing", "orders"],
        "topics() must list every topic, sorted, after reopen"
    );
    let orders = log.topic("orders").unwrap();
    assert_eq!(orders.name(), "orders");
    assert_eq!(orders.partition_count(), 3, "partition count restored");
    let restored = orders.config();
    assert_eq!(restored.partitions, 3, "partitions restored");
    assert_eq!(restored.segment_bytes, 1 << 20, "segment_bytes restored");
    assert_eq!(
        restored.retention_bytes,
        Some(10 << 20),
        "retention_bytes restored"
    );
    assert_eq!(
        restored.retention,
        Some(Duration::from_secs(3600)),
        "retention restored"
    );
    assert_eq!(restored.max_record_bytes, 4096, "max_record_bytes restored");
    assert_eq!(
        restored.cleanup_policy,
        CleanupPolicy::Compact,
        "cleanup_policy restored"
    );
    assert_eq!(restored, custom, "the whole TopicConfig must round-trip");
    assert_eq!(
        log.topic("audit").unwrap().config(),
        TopicConfig::default(),
        "a default config round-trips"
    );
    assert_eq!(log.topic("billing").unwrap().partition_count(), 2);
    let stored: usize = (0..3)
        .map(|p| read_all(&orders.partition(p).unwrap()).len())
        .sum();
    assert_eq!(stored, 30, "every record appended before close is readable");
}

#[test]
fn partition_directories_and_segments_use_kafkas_names() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let t = create(&log, "orders", TopicConfig::default().partitions(2));
    t.send(Record::new("a").partition(0)).unwrap();
    t.send(Record::new("b").partition(1)).unwrap();
    log.close().unwrap();
    for p in 0..2 {
        let pdir = partition_dir(dir.path(), "orders", p);
        assert!(
            pdir.is_dir(),
            "missing partition directory {}",
            pdir.display()
        );
        for ext in ["log", "index", "timeindex"] {
            let f = pdir.join(format!("00000000000000000000.{ext}"));
            assert!(f.is_file(), "missing segment file {}", f.display());
        }
    }
}

#[test]
fn a_second_open_of_the_same_directory_fails_with_locked() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let e = expect_err(Log::open(dir.path()), "second open while the first is open");
    assert!(
        matches!(e, Error::Locked { .. }),
        "expected Locked, got {e:?}"
    );
    let dir_name = dir.path().display().to_string();
    assert!(
        e.to_string().contains(&dir_name),
        "Locked must name the directory {dir_name}: {e}"
    );

    // A clone going away does not release the directory.
    drop(log.clone());
    let e = expect_err(Log::open(dir.path()), "open while a clone was dropped");
    assert!(
        matches!(e, Error::Locked { .. }),
        "expected Locked, got {e:?}"
    );

    log.close().unwrap();
    let second = Log::open(dir.path()).expect("close() releases the directory");
    drop(second);
    drop(Log::open(dir.path()).expect("dropping the last handle releases the directory"));
}

// --------------------------------------------------------------- records

struct Expected {
    meta: RecordMetadata,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Vec<u8>)>,
    timestamp: Option<i64>,
}

fn check_round_trip(t: &Topic, expected: &[Expected], before_ms: i64, after_ms: i64, when: &str) {
    for (i, e) in expected.iter().enumerate() {
        let p = t.partition(e.meta.partition).unwrap();
        let msgs = p.read(e.meta.offset, 1).unwrap();
        assert_eq!(
            msgs.len(),
            1,
            "{when}: record #{i} at {:?} is missing",
            e.meta
        );
        let m = &msgs[0];
        assert_eq!(m.topic(), t.name(), "{when}: record #{i} topic");
        assert_eq!(
            m.partition(),
            e.meta.partition,
            "{when}: record #{i} partition"
        );
        assert_eq!(m.offset(), e.meta.offset, "{when}: record #{i} offset");
        assert_eq!(m.key(), e.key.as_deref(), "{when}: record #{i} key");
        assert_eq!(m.value(), e.value.as_deref(), "{when}: record #{i} value");
        assert_eq!(headers_of(m), e.headers, "{when}: record #{i} headers");
        assert_eq!(
            m.timestamp(),
            e.meta.timestamp,
            "{when}: record #{i} timestamp differs from what append returned"
        );
        match e.timestamp {
            Some(ts) => assert_eq!(ts, e.meta.timestamp, "{when}: explicit timestamp #{i}"),
            None => assert!(
                (before_ms..=after_ms).contains(&e.meta.timestamp),
                "{when}: record #{i} has timestamp {} outside the append window {before_ms}..={after_ms}",
                e.meta.timestamp
            ),
        }
    }
}

#[test]
fn records_round_trip_with_keys_headers_tombstones_partitions_and_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let t = create(&log, "events", TopicConfig::default().partitions(3));
    let h = |pairs: &[(&str, &[u8])]| -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect()
    };
    let before = now_ms();
    let mut expected = Vec::new();
    let meta = t
        .send(
            Record::new("value-1")
                .key("key-1")
                .header("trace", "42")
                .header("trace", "43")
                .header("empty", "")
                .header("bin", [0u8, 255, 7]),
        )
        .unwrap();
    assert_eq!(
        meta.partition,
        kafka_partition(b"key-1", 3),
        "keyed record on Kafka's partition"
    );
    expected.push(Expected {
        meta,
        key: Some(b"key-1".to_vec()),
        value: Some(b"value-1".to_vec()),
        headers: h(&[
            ("trace", b"42"),
            ("trace", b"43"),
            ("empty", b""),
            ("bin", &[0, 255, 7]),
        ]),
        timestamp: None,
    });
    let meta = t.send(Record::new(b"no key")).unwrap();
    expected.push(Expected {
        meta,
        key: None,
        value: Some(b"no key".to_vec()),
        headers: vec![],
        timestamp: None,
    });
    let meta = t.send(Record::tombstone("gone")).unwrap();
    expected.push(Expected {
        meta,
        key: Some(b"gone".to_vec()),
        value: None,
        headers: vec![],
        timestamp: None,
    });
    let meta = t
        .send(
            Record::new("explicit")
                .partition(2)
                .timestamp(1_700_000_000_000),
        )
        .unwrap();
    assert_eq!(meta.partition, 2, "explicit partition honoured");
    assert_eq!(
        meta.timestamp, 1_700_000_000_000,
        "explicit timestamp honoured"
    );
    expected.push(Expected {
        meta,
        key: None,
        value: Some(b"explicit".to_vec()),
        headers: vec![],
        timestamp: Some(1_700_000_000_000),
    });
    let meta = t
        .send(Record::new("").key("").header("h", "v").timestamp(0))
        .unwrap();
    expected.push(Expected {
        meta,
        key: Some(vec![]),
        value: Some(vec![]),
        headers: h(&[("h", b"v")]),
        timestamp: Some(0),
    });
    let meta = t.append("plain-key", vec![0u8, 1, 2, 255]).unwrap();
    expected.push(Expected {
        meta,
        key: Some(b"plain-key".to_vec()),
        value: Some(vec![0, 1, 2, 255]),
        headers: vec![],
        timestamp: None,
    });
    let meta = t.append(String::from("owned"), [9u8; 3]).unwrap();
    expected.push(Expected {
        meta,
        key: Some(b"owned".to_vec()),
        value: Some(vec![9; 3]),
        headers: vec![],
        timestamp: None,
    });
    let big = value_of(7, 100_000);
    let meta = t
        .send(
            Record::new(&big)
                .key(&b"\x00\xffbinary"[..])
                .header("ünïcode", &big[..10]),
        )
        .unwrap();
    expected.push(Expected {
        meta,
        key: Some(b"\x00\xffbinary".to_vec()),
        value: Some(big.clone()),
        headers: h(&[("ünïcode", &big[..10])]),
        timestamp: None,
    });
    let after = now_ms();

    check_round_trip(&t, &expected, before, after, "before reopen");
    log.close().unwrap();
    let log = open(dir.path());
    let t = log.topic("events").unwrap();
    check_round_trip(&t, &expected, before, after, "after reopen");
}

#[test]
fn offsets_are_contiguous_from_zero() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let t = create(&log, "seq", TopicConfig::default());
    let mut metas = Vec::new();
    let mut i = 0u64;
    for _ in 0..100 {
        metas.push(t.append(format!("k{i}"), value_of(i, 20)).unwrap());
        i += 1;
    }
    for _ in 0..100 {
        metas.push(t.send(Record::new(value_of(i, 20))).unwrap());
        i += 1;
    }
    for _ in 0..2 {
        let batch: Vec<Record> = (i..i + 300).map(|j| Record::new(value_of(j, 20))).collect();
        metas.extend(t.send_batch(batch).unwrap());
        i += 300;
    }
    let offsets: Vec<u64> = metas.iter().map(|m| m.offset).collect();
    assert_eq!(
        offsets,
        (0..i).collect::<Vec<_>>(),
        "append/send/send_batch must hand out offsets 0, 1, 2, ... without gaps"
    );
    let p = t.partition(0).unwrap();
    assert_eq!(p.start_offset(), 0);
    assert_eq!(
        p.end_offset(),
        i,
        "end_offset is the next offset to be assigned"
    );
    let msgs = read_all(&p);
    assert_eq!(
        values(&msgs),
        (0..i).map(|j| value_of(j, 20)).collect::<Vec<_>>()
    );
}

#[test]
fn read_returns_at_most_max_records_and_refuses_offsets_outside_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let t = create(&log, "reads", TopicConfig::default());
    let p = t.partition(0).unwrap();
    assert!(
        p.read(0, 10).unwrap().is_empty(),
        "reading an empty partition at end_offset 0 returns nothing"
    );
    let e = expect_err(p.read(1, 10), "read past the end of an empty partition");
    assert!(matches!(e, Error::OffsetOutOfRange { .. }), "{e:?}");

    for i in 0..10 {
        t.append("k", value_of(i, 10)).unwrap();
    }
    let first3 = p.read(0, 3).unwrap();
    assert_eq!(
        first3.iter().map(Message::offset).collect::<Vec<_>>(),
        vec![0, 1, 2],
        "read(0, 3) must return offsets 0..3"
    );
    let tail = p.read(7, 100).unwrap();
    assert!(
        !tail.is_empty() && tail.len() <= 3,
        "read(7, 100) of 10 records: expected 1..=3 messages, got {}",
        tail.len()
    );
    for (i, m) in tail.iter().enumerate() {
        assert_eq!(m.offset(), 7 + i as u64, "read(7, ..) offsets in order");
        assert_eq!(m.value(), Some(&value_of(7 + i as u64, 10)[..]));
    }
    let one = p.read(9, 1).unwrap();
    assert_eq!(one.len(), 1, "read of the last record");
    assert!(
        p.read(10, 5).unwrap().is_empty(),
        "reading at end_offset returns an empty vector"
    );
    for beyond in [11, 1000, u64::MAX] {
        let e = expect_err(p.read(beyond, 5), "read beyond end_offset");
        assert!(
            matches!(e, Error::OffsetOutOfRange { .. }),
            "read({beyond}): expected OffsetOutOfRange, got {e:?}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains("reads") && msg.contains(&beyond.to_string()),
            "OffsetOutOfRange must name the topic and the offset {beyond}: {msg}"
        );
    }
}

// ---------------------------------------------------- segments and retention

#[test]
fn segments_roll_at_segment_bytes_and_reads_cross_them() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let t = create(&log, "rolling", small_segments());
    let n = 300u64;
    for i in 0..n {
        t.append(format!("key-{i}"), value_of(i, 100)).unwrap();
    }
    let p = t.partition(0).unwrap();
    let expected: Vec<Vec<u8>> = (0..n).map(|i| value_of(i, 100)).collect();
    assert_eq!(
        values(&read_all(&p)),
        expected,
        "reads across live segments"
    );
    let pdir = partition_dir(dir.path(), "rolling", 0);
    let logs = segment_files(&pdir, "log");
    assert!(
        logs.len() >= 5,
        "300 records of ~130 bytes in 4 KiB segments must roll into several segments, found {}",
        logs.len()
    );
    log.close().unwrap();

    let logs = segment_files(&pdir, "log");
    let mut next_offset = 0i64;
    for f in &logs {
        let len = fs::metadata(f).unwrap().len();
        assert!(
            len <= 4096,
            "{} is {len} bytes, more than segment_bytes 4096",
            f.display()
        );
        let batches = file_batches(f, false);
        assert!(!batches.is_empty(), "{} holds no batch", f.display());
        assert_eq!(
            base_offset_of(f) as i64,
            batches[0].base_offset,
            "{} must be named after its first offset",
            f.display()
        );
        for b in &batches {
            assert_eq!(
                b.base_offset,
                next_offset,
                "{} batch at {}: offsets must continue across batches and segments",
                f.display(),
                b.position
            );
            next_offset = b.next_offset();
        }
    }
    assert_eq!(next_offset, n as i64, "the segments hold every record");

    let log = open(dir.path());
    let p = log.topic("rolling").unwrap().partition(0).unwrap();
    assert_eq!(
        values(&read_all(&p)),
        expected,
        "reads across segments after reopen"
    );
    let middle = p.read(150, 10).unwrap();
    assert_eq!(
        middle[0].offset(),
        150,
        "read from the middle of a closed segment"
    );
    assert_eq!(middle[0].value(), Some(&expected[150][..]));
}

#[test]
fn retention_by_bytes_deletes_the_oldest_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_with_fast_retention(dir.path());
    let retention = 8192u64;
    let t = create(
        &log,
        "bounded",
        small_segments().retention_bytes(Some(retention)),
    );
    let n = 400u64;
    for i in 0..n {
        t.append(format!("key-{i}"), value_of(i, 100)).unwrap();
    }
    let p = t.partition(0).unwrap();
    assert!(
        eventually(Duration::from_secs(5), || p.start_offset() > 0),
        "retention_bytes {retention}: start_offset still 0 after ~50 KB were appended"
    );
    assert_eq!(p.end_offset(), n, "retention must not change end_offset");
    let start = p.start_offset();
    let e = expect_err(p.read(start - 1, 1), "read below start_offset");
    assert!(matches!(e, Error::OffsetOutOfRange { .. }), "{e:?}");
    let kept = read_all(&p);
    assert_eq!(
        values(&kept),
        (start..n).map(|i| value_of(i, 100)).collect::<Vec<_>>(),
        "the records that retention kept are intact"
    );
    let pdir = partition_dir(dir.path(), "bounded", 0);
    assert_eq!(
        base_offset_of(&segment_files(&pdir, "log")[0]),
        start,
        "start_offset is the base offset of the oldest remaining segment"
    );
    log.close().unwrap();
    let stored = total_bytes(&segment_files(&pdir, "log"));
    assert!(
        stored <= retention + 2 * 4096,
        "{stored} bytes of segments kept with retention_bytes {retention} and 4 KiB segments"
    );

    let log = open(dir.path());
    let t = log.topic("bounded").unwrap();
    let p = t.partition(0).unwrap();
    assert!(
        p.start_offset() >= start,
        "start_offset went back after reopen"
    );
    assert_eq!(p.end_offset(), n, "end_offset restored after reopen");
    let meta = t.append("k", "after reopen").unwrap();
    assert_eq!(
        meta.offset, n,
        "offsets are never reused after retention and reopen"
    );
}

#[test]
fn retention_never_deletes_the_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_with_fast_retention(dir.path());
    let t = create(&log, "tiny", small_segments().retention_bytes(Some(1)));
    let n = 200u64;
    for i in 0..n {
        t.append(format!("key-{i}"), value_of(i, 100)).unwrap();
    }
    let p = t.partition(0).unwrap();
    let pdir = partition_dir(dir.path(), "tiny", 0);
    assert!(
        eventually(Duration::from_secs(5), || segment_files(&pdir, "log").len()
            == 1),
        "retention_bytes 1 must delete every segment but the active one; left: {:?}",
        segment_files(&pdir, "log")
    );
    let start = p.start_offset();
    assert!(
        start > 0 && start < n,
        "start_offset {start}: the active segment must still hold the newest records"
    );
    assert_eq!(p.end_offset(), n);
    assert_eq!(
        values(&read_all(&p)),
        (start..n).map(|i| value_of(i, 100)).collect::<Vec<_>>(),
        "the active segment's records stay readable"
    );
    log.close().unwrap();

    let log = open_with_fast_retention(dir.path());
    let t = log.topic("tiny").unwrap();
    let p = t.partition(0).unwrap();
    assert_eq!(
        p.start_offset(),
        start,
        "start_offset restored after reopen"
    );
    assert_eq!(p.end_offset(), n, "end_offset restored after reopen");
    let meta = t.append("k", "next").unwrap();
    assert_eq!(meta.offset, n, "offsets are never reused after reopen");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(p.end_offset(), n + 1);
    assert!(
        !read_all(&p).is_empty(),
        "background retention deleted the active segment"
    );
}

#[test]
fn retention_by_time_deletes_old_segments_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_with_fast_retention(dir.path());
    let t = create(
        &log,
        "aging",
        small_segments().retention(Some(Duration::from_millis(500))),
    );
    let n = 200u64;
    for i in 0..n {
        t.append(format!("key-{i}"), value_of(i, 100)).unwrap();
    }
    let pdir = partition_dir(dir.path(), "aging", 0);
    let segments = segment_files(&pdir, "log");
    assert!(
        segments.len() > 1,
        "right after appending, segments are younger than the 500 ms retention \
         and must still exist; found {segments:?}"
    );
    let p = t.partition(0).unwrap();
    // No more appends, so no more rolls: only the background check can delete now.
    assert!(
        eventually(Duration::from_secs(10), || {
            let files = segment_files(&pdir, "log");
            files.len() == 1 && p.start_offset() == base_offset_of(&files[0])
        }),
        "retention 500 ms with a 50 ms check interval: old segments not deleted in 10 s \
         (start_offset {}, files {:?})",
        p.start_offset(),
        segment_files(&pdir, "log")
    );
    let start = p.start_offset();
    assert!(start > 0 && start < n, "start_offset {start} out of 1..{n}");
    assert_eq!(p.end_offset(), n, "retention must not change end_offset");
    assert_eq!(
        values(&read_all(&p)),
        (start..n).map(|i| value_of(i, 100)).collect::<Vec<_>>()
    );
    let meta = t.append("k", "fresh").unwrap();
    assert_eq!(meta.offset, n, "offsets continue after time retention");
}

// -------------------------------------------------------- offset_for_timestamp

/// The contract's definition: the earliest offset with a timestamp >= `ts`.
fn expected_offset_for(timestamps: &[i64], ts: i64) -> Option<u64> {
    timestamps.iter().position(|&t| t >= ts).map(|i| i as u64)
}

fn check_offset_for_timestamp(p: &Partition, timestamps: &[i64], when: &str) {
    let mut probes: Vec<i64> = vec![0, i64::MAX];
    for &t in timestamps {
        probes.extend([t - 1, t, t + 1]);
    }
    probes.sort_unstable();
    probes.dedup();
    for ts in probes {
        assert_eq!(
            p.offset_for_timestamp(ts).unwrap(),
            expected_offset_for(timestamps, ts),
            "{when}: offset_for_timestamp({ts})"
        );
    }
}

#[test]
fn offset_for_timestamp_returns_the_earliest_offset_at_or_after_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let t = create(&log, "times", TopicConfig::default());
    let timestamps = [1000, 3000, 2000, 4000, 4000, 2500];
    for &ts in &timestamps {
        t.send(Record::new("v").timestamp(ts)).unwrap();
    }
    let p = t.partition(0).unwrap();
    assert_eq!(p.offset_for_timestamp(0).unwrap(), Some(0));
    assert_eq!(p.offset_for_timestamp(1000).unwrap(), Some(0));
    assert_eq!(
        p.offset_for_timestamp(2000).unwrap(),
        Some(1),
        "offset 1 (3000) is earlier than offset 2 (2000)"
    );
    assert_eq!(p.offset_for_timestamp(3500).unwrap(), Some(3));
    assert_eq!(p.offset_for_timestamp(4000).unwrap(), Some(3));
    assert_eq!(
        p.offset_for_timestamp(4001).unwrap(),
        None,
        "a timestamp after every record has no offset"
    );
    check_offset_for_timestamp(&p, &timestamps, "one open segment");
    let empty = create(&log, "empty", TopicConfig::default());
    assert_eq!(
        empty.partition(0).unwrap().offset_for_timestamp(0).unwrap(),
        None,
        "an empty partition has no offset for any time"
    );
}

#[test]
fn offset_for_timestamp_is_exact_across_segments_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let t = create(&log, "times", small_segments());
    // Non-monotonic, with duplicates and regressions inside and across segments.
    let timestamps: Vec<i64> = (0..400i64)
        .map(|i| 1_600_000_000_000 + (i * 37 % 101) * 10 + i * 3)
        .collect();
    for (i, &ts) in timestamps.iter().enumerate() {
        t.send(Record::new(value_of(i as u64, 60)).timestamp(ts))
            .unwrap();
    }
    let p = t.partition(0).unwrap();
    assert!(
        segment_files(&partition_dir(dir.path(), "times", 0), "log").len() > 3,
        "the records must span several segments"
    );
    check_offset_for_timestamp(&p, &timestamps, "live log");
    log.close().unwrap();
    let log = open(dir.path());
    let p = log.topic("times").unwrap().partition(0).unwrap();
    check_offset_for_timestamp(&p, &timestamps, "after reopen");
}

// ------------------------------------------------------------- bad input

#[test]
fn topic_names_follow_kafkas_rule() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let long_ok = "x".repeat(249);
    let too_long = "x".repeat(250);
    for bad in [
        "",
        ".",
        "..",
        "a/b",
        "a b",
        "ü",
        "../escape",
        too_long.as_str(),
    ] {
        let e = expect_err(
            log.create_topic(bad, TopicConfig::default()),
            &format!("create_topic({bad:?})"),
        );
        assert!(
            matches!(e, Error::InvalidTopicName { .. }),
            "create_topic({bad:?}): expected InvalidTopicName, got {e:?}"
        );
        if !bad.is_empty() {
            assert!(
                e.to_string().contains(bad),
                "InvalidTopicName must name the topic {bad:?}: {e}"
            );
        }
    }
    assert!(log.topics().is_empty(), "no invalid topic was created");
    assert!(
        !dir.path().join("a").exists() && !dir.path().parent().unwrap().join("escape-0").exists(),
        "a refused name must not create directories"
    );
    for good in ["a", "A.b_c-9", long_ok.as_str()] {
        create(&log, good, TopicConfig::default());
    }
    create(
        &log,
        &long_ok.clone().replace('x', "y"),
        TopicConfig::default(),
    );
    assert_eq!(
        log.topics().len(),
        4,
        "valid names, including 249 characters, are accepted"
    );
    let t = log.topic(&long_ok).unwrap();
    t.append("k", "v").unwrap();
    log.close().unwrap();
    let log = open(dir.path());
    assert_eq!(
        log.topic(&long_ok)
            .unwrap()
            .partition(0)
            .unwrap()
            .end_offset(),
        1
    );
}

#[test]
fn creating_an_existing_topic_fails_with_topic_exists() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    create(&log, "orders", TopicConfig::default().partitions(2));
    let e = expect_err(
        log.create_topic("orders", TopicConfig::default().partitions(5)),
        "create_topic of an existing name",
    );
    assert!(
        matches!(e, Error::TopicExists { .. }),
        "expected TopicExists, got {e:?}"
    );
    assert!(
        e.to_string().contains("orders"),
        "TopicExists must name the topic: {e}"
    );
    assert_eq!(
        log.topic("orders").unwrap().partition_count(),
        2,
        "the existing topic is unchanged"
    );
}

#[test]
fn unknown_topics_fail_with_unknown_topic() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let checks: Vec<(&str, Error)> = vec![
        ("topic", expect_err(log.topic("nope"), "topic(nope)")),
        (
            "add_partitions",
            expect_err(log.add_partitions("nope", 2), "add_partitions(nope)"),
        ),
        (
            "delete_topic",
            expect_err(log.delete_topic("nope"), "delete_topic(nope)"),
        ),
    ];
    for (call, e) in checks {
        assert!(
            matches!(e, Error::UnknownTopic { .. }),
            "{call}: expected UnknownTopic, got {e:?}"
        );
        assert!(
            e.to_string().contains("nope"),
            "{call}: error must name the topic: {e}"
        );
    }
}

#[test]
fn add_partitions_to_the_same_or_a_lower_count_fails_with_invalid_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    create(&log, "orders", TopicConfig::default().partitions(4));
    for total in [4, 3, 0] {
        let e = expect_err(
            log.add_partitions("orders", total),
            &format!("add_partitions(orders, {total})"),
        );
        assert!(
            matches!(e, Error::InvalidPartitions { .. }),
            "add_partitions to {total}: expected InvalidPartitions, got {e:?}"
        );
        assert!(e.to_string().contains("orders"), "must name the topic: {e}");
    }
    assert_eq!(log.topic("orders").unwrap().partition_count(), 4);
}

#[test]
fn invalid_topic_configs_fail_with_invalid_config() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let bad = [
        ("zero partitions", TopicConfig::default().partitions(0)),
        (
            "segment smaller than one record (default 1 MiB max)",
            TopicConfig::default().segment_bytes(1000),
        ),
        (
            "segment equal to max_record_bytes, no room for a batch header",
            TopicConfig::default()
                .max_record_bytes(1024)
                .segment_bytes(1024),
        ),
        (
            "segment larger than i32::MAX",
            TopicConfig::default().segment_bytes(i32::MAX as u64 + 1),
        ),
    ];
    for (what, cfg) in bad {
        let e = expect_err(log.create_topic("cfg", cfg), what);
        assert!(
            matches!(e, Error::InvalidConfig { .. }),
            "{what}: expected InvalidConfig, got {e:?}"
        );
    }
    assert!(
        log.topics().is_empty(),
        "no topic is created from an invalid config"
    );
    assert!(!partition_dir(dir.path(), "cfg", 0).exists());
    create(
        &log,
        "cfg",
        TopicConfig::default()
            .max_record_bytes(1024)
            .segment_bytes(1024 + BATCH_HEADER_BYTES as u64 + 32),
    );
}

#[test]
fn a_record_larger_than_max_record_bytes_fails_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let t = create(
        &log,
        "limited",
        TopicConfig::default().max_record_bytes(1024),
    );
    let p = t.partition(0).unwrap();
    t.append("k", value_of(0, 900))
        .expect("a record under the limit is accepted");
    let e = expect_err(t.append("k", value_of(1, 2000)), "append of 2000 bytes");
    assert!(
        matches!(e, Error::RecordTooLarge { .. }),
        "expected RecordTooLarge, got {e:?}"
    );
    assert!(
        e.to_string().contains("limited"),
        "RecordTooLarge must name the topic: {e}"
    );
    assert_eq!(p.end_offset(), 1, "a refused record must not be written");

    let e = expect_err(
        t.send(Record::new("small").header("big", value_of(2, 2000))),
        "send with a 2000-byte header",
    );
    assert!(
        matches!(e, Error::RecordTooLarge { .. }),
        "header bytes count: {e:?}"
    );

    let batch = vec![
        Record::new(value_of(3, 10)),
        Record::new(value_of(4, 5000)),
        Record::new(value_of(5, 10)),
    ];
    let e = expect_err(t.send_batch(batch), "send_batch with one oversized record");
    assert!(matches!(e, Error::RecordTooLarge { .. }), "{e:?}");
    assert_eq!(
        p.end_offset(),
        1,
        "a batch with an oversized record must write none of its records"
    );
    let meta = t.append("k", "after").unwrap();
    assert_eq!(meta.offset, 1, "the next record takes the next offset");
    log.close().unwrap();
    let log = open(dir.path());
    let msgs = read_all(&log.topic("limited").unwrap().partition(0).unwrap());
    assert_eq!(msgs.len(), 2, "only the two accepted records are on disk");
}

#[test]
fn an_explicit_partition_out_of_range_fails_with_unknown_partition() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let t = create(&log, "three", TopicConfig::default().partitions(3));
    let e = expect_err(
        t.send(Record::new("x").partition(3)),
        "send to partition 3 of 3",
    );
    assert!(
        matches!(e, Error::UnknownPartition { .. }),
        "expected UnknownPartition, got {e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("three") && msg.contains('3'),
        "UnknownPartition must name topic and partition: {msg}"
    );
    let e = expect_err(
        t.send_batch([
            Record::new("ok").partition(0),
            Record::new("bad").partition(7),
        ]),
        "send_batch with a bad partition",
    );
    assert!(matches!(e, Error::UnknownPartition { .. }), "{e:?}");
    let e = expect_err(t.partition(3), "partition(3) of 3");
    assert!(matches!(e, Error::UnknownPartition { .. }), "{e:?}");
    for p in 0..3 {
        assert_eq!(
            t.partition(p).unwrap().end_offset(),
            0,
            "partition {p}: nothing may be written by a refused send"
        );
    }
}

#[test]
fn a_negative_timestamp_fails_with_invalid_record() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let t = create(&log, "ts", TopicConfig::default());
    let e = expect_err(t.send(Record::new("x").timestamp(-5)), "negative timestamp");
    assert!(
        matches!(e, Error::InvalidRecord { .. }),
        "expected InvalidRecord, got {e:?}"
    );
    assert_eq!(t.partition(0).unwrap().end_offset(), 0, "nothing written");
}

// ------------------------------------------------------- topic admin

#[test]
fn added_partitions_take_keyed_records_by_the_new_count() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let t = create(&log, "growing", TopicConfig::default().partitions(2));
    for i in 0..50 {
        let key = format!("key-{i}");
        let meta = t.append(&key, "before").unwrap();
        assert_eq!(meta.partition, kafka_partition(key.as_bytes(), 2));
    }
    log.add_partitions("growing", 5).unwrap();
    let t = log.topic("growing").unwrap();
    assert_eq!(
        t.partition_count(),
        5,
        "partition_count after add_partitions"
    );
    assert_eq!(
        t.config().partitions,
        5,
        "config().partitions after add_partitions"
    );
    let mut used = [false; 5];
    for i in 0..200 {
        let key = format!("key-{i}");
        let meta = t.append(&key, "after").unwrap();
        assert_eq!(
            meta.partition,
            kafka_partition(key.as_bytes(), 5),
            "key {key:?} after growing to 5 partitions"
        );
        used[meta.partition as usize] = true;
    }
    assert!(
        used[2] && used[3] && used[4],
        "the new partitions receive records"
    );
    for p in 0..5 {
        assert!(
            partition_dir(dir.path(), "growing", p).is_dir(),
            "growing-{p} missing"
        );
    }
    let counts: Vec<u64> = (0..5)
        .map(|p| t.partition(p).unwrap().end_offset())
        .collect();
    log.close().unwrap();
    let log = open(dir.path());
    let t = log.topic("growing").unwrap();
    assert_eq!(t.partition_count(), 5, "added partitions survive reopen");
    for p in 0..5 {
        assert_eq!(
            read_all(&t.partition(p).unwrap()).len() as u64,
            counts[p as usize]
        );
    }
}

#[test]
fn delete_topic_removes_its_directories_and_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let doomed = create(&log, "doomed", TopicConfig::default().partitions(2));
    create(&log, "kept", TopicConfig::default());
    for i in 0..20 {
        doomed.append(format!("k{i}"), "v").unwrap();
    }
    log.delete_topic("doomed").unwrap();
    assert_eq!(log.topics(), vec!["kept"], "topics() after delete_topic");
    let e = expect_err(log.topic("doomed"), "topic() of a deleted topic");
    assert!(matches!(e, Error::UnknownTopic { .. }), "{e:?}");
    for p in 0..2 {
        assert!(
            !partition_dir(dir.path(), "doomed", p).exists(),
            "doomed-{p} must be removed"
        );
    }
    let e = expect_err(
        doomed.append("k", "v"),
        "append through a deleted topic's handle",
    );
    assert!(
        matches!(e, Error::UnknownTopic { .. } | Error::Closed { .. }),
        "expected UnknownTopic or Closed, got {e:?}"
    );
    log.close().unwrap();

    let log = open(dir.path());
    assert_eq!(
        log.topics(),
        vec!["kept"],
        "a deleted topic stays deleted after reopen"
    );
    let again = create(&log, "doomed", TopicConfig::default().partitions(2));
    for p in 0..2 {
        let part = again.partition(p).unwrap();
        assert_eq!(
            (part.start_offset(), part.end_offset()),
            (0, 0),
            "a re-created topic starts empty"
        );
    }
}

// ------------------------------------------------------------ partitioning

#[test]
fn murmur2_matches_kafkas_published_test_vectors() {
    // Kafka's clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java.
    let cases: [(&[u8], i32); 6] = [
        (b"21", -973_932_308),
        (b"foobar", -790_332_482),
        (b"a-little-bit-long-string", -985_981_536),
        (b"a-little-bit-longer-string", -1_486_304_829),
        (
            b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
            -58_897_971,
        ),
        (b"abc", 479_470_107),
    ];
    for (input, want) in cases {
        assert_eq!(
            murmur2(input),
            want,
            "murmur2({:?})",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn keyed_records_land_on_kafkas_default_partition() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let t = create(&log, "keyed", TopicConfig::default().partitions(7));
    let mut first_partition: BTreeMap<String, u32> = BTreeMap::new();
    for round in 0..2 {
        for i in 0..300 {
            let key = format!("customer-{i}");
            let meta = if round == 0 {
                t.append(&key, "v").unwrap()
            } else {
                t.send(Record::new("v").key(&key)).unwrap()
            };
            assert_eq!(
                meta.partition,
                kafka_partition(key.as_bytes(), 7),
                "key {key:?} must land on (murmur2 & 0x7fffffff) % 7"
            );
            let p = *first_partition.entry(key.clone()).or_insert(meta.partition);
            assert_eq!(
                p, meta.partition,
                "a key always lands on the same partition"
            );
        }
    }
    let batch: Vec<Record> = (0..300)
        .map(|i| Record::new("b").key(format!("customer-{i}")))
        .collect();
    for (i, meta) in t.send_batch(batch).unwrap().into_iter().enumerate() {
        assert_eq!(
            meta.partition,
            first_partition[&format!("customer-{i}")],
            "send_batch partitions keyed records like append"
        );
    }
}

#[test]
fn unkeyed_records_are_spread_over_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let t = create(&log, "spread", TopicConfig::default().partitions(3));
    let mut counts = [0u32; 3];
    for i in 0..30 {
        counts[t.send(Record::new(format!("v{i}"))).unwrap().partition as usize] += 1;
    }
    assert!(
        counts.iter().all(|&c| c > 0),
        "unkeyed sends must reach every partition: {counts:?}"
    );
    let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
    assert!(max - min <= 1, "unkeyed sends go round robin: {counts:?}");

    let metas = t
        .send_batch((0..10).map(|i| Record::new(format!("b{i}"))))
        .unwrap();
    let first = metas[0].partition;
    assert!(
        metas.iter().all(|m| m.partition == first),
        "an unkeyed send_batch sticks to one partition: {metas:?}"
    );
    let offsets: Vec<u64> = metas.iter().map(|m| m.offset).collect();
    let base = offsets[0];
    assert_eq!(
        offsets,
        (base..base + 10).collect::<Vec<_>>(),
        "in order, no gap"
    );
}

struct ByValueLength;

impl Partitioner for ByValueLength {
    fn partition(&self, _key: Option<&[u8]>, value: &[u8], partitions: u32) -> u32 {
        value.len() as u32 % partitions
    }
}

/// One call of a partitioner: key, value, partition count.
type PartitionerCall = (Option<Vec<u8>>, Vec<u8>, u32);

/// Records every call, then sends everything to partition 1.
struct Recording(Arc<Mutex<Vec<PartitionerCall>>>);

impl Partitioner for Recording {
    fn partition(&self, key: Option<&[u8]>, value: &[u8], partitions: u32) -> u32 {
        self.0
            .lock()
            .unwrap()
            .push((key.map(<[u8]>::to_vec), value.to_vec(), partitions));
        1
    }
}

struct OutOfRange;

impl Partitioner for OutOfRange {
    fn partition(&self, _key: Option<&[u8]>, _value: &[u8], partitions: u32) -> u32 {
        partitions
    }
}

#[test]
fn a_custom_partitioner_chooses_the_partition() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let t = create(&log, "custom", TopicConfig::default().partitions(4));
    let by_len = t.with_partitioner(ByValueLength);
    for len in 0..12usize {
        let meta = by_len.append("same-key", vec![b'x'; len]).unwrap();
        assert_eq!(
            meta.partition,
            len as u32 % 4,
            "custom partitioner for value length {len}"
        );
    }
    let explicit = by_len.send(Record::new("xx").partition(3)).unwrap();
    assert_eq!(
        explicit.partition, 3,
        "an explicit partition wins over the partitioner"
    );
    assert_eq!(
        t.append("same-key", "x").unwrap().partition,
        kafka_partition(b"same-key", 4),
        "with_partitioner must not change the original handle"
    );

    let calls = Arc::new(Mutex::new(Vec::new()));
    let recording = t.with_partitioner(Recording(Arc::clone(&calls)));
    assert_eq!(recording.append("k1", "v1").unwrap().partition, 1);
    assert_eq!(recording.send(Record::new("v2")).unwrap().partition, 1);
    assert_eq!(
        *calls.lock().unwrap(),
        vec![
            (Some(b"k1".to_vec()), b"v1".to_vec(), 4),
            (None, b"v2".to_vec(), 4)
        ],
        "the partitioner receives key, value and partition count"
    );

    let bad = t.with_partitioner(OutOfRange);
    let e = expect_err(bad.append("k", "v"), "partitioner returning 4 of 4");
    assert!(matches!(e, Error::UnknownPartition { .. }), "{e:?}");
}

// ------------------------------------------------------------ concurrency

#[test]
fn handles_are_send_sync_and_messages_are_clone() {
    fn send_sync_clone<T: Send + Sync + Clone>() {}
    fn clone<T: Clone>() {}
    send_sync_clone::<Log>();
    send_sync_clone::<Topic>();
    send_sync_clone::<Partition>();
    clone::<Message>();
    clone::<RecordMetadata>();
}

#[test]
fn concurrent_appends_on_cloned_topics_get_contiguous_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let t = create(&log, "busy", TopicConfig::default().partitions(2));
    let threads = 4u64;
    let per_thread = 500u64;
    let handles: Vec<_> = (0..threads)
        .map(|th| {
            let t = t.clone();
            std::thread::spawn(move || {
                let mut acks = Vec::new();
                for j in 0..per_thread {
                    let value = format!("thread-{th}-record-{j}").into_bytes();
                    let meta = if j % 3 == 0 {
                        t.send(Record::new(&value)).unwrap()
                    } else {
                        t.append(format!("k-{th}-{j}"), &value).unwrap()
                    };
                    acks.push((meta, value));
                }
                acks
            })
        })
        .collect();
    let mut by_offset: BTreeMap<(u32, u64), Vec<u8>> = BTreeMap::new();
    for h in handles {
        for (meta, value) in h.join().unwrap() {
            let dup = by_offset.insert((meta.partition, meta.offset), value);
            assert!(dup.is_none(), "offset {meta:?} was handed out twice");
        }
    }
    let mut total = 0;
    for p in 0..2 {
        let part = t.partition(p).unwrap();
        let msgs = read_all(&part);
        assert_eq!(part.end_offset(), msgs.len() as u64);
        for m in msgs {
            let want = by_offset
                .get(&(p, m.offset()))
                .unwrap_or_else(|| panic!("busy-{p} offset {} was never acknowledged", m.offset()));
            assert_eq!(m.value(), Some(&want[..]), "busy-{p} offset {}", m.offset());
            total += 1;
        }
    }
    assert_eq!(
        total,
        threads * per_thread,
        "every acknowledged record is readable"
    );
}

#[test]
fn messages_outlive_the_log_and_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let big = value_of(99, 50_000);
    let msgs = {
        let log = open(dir.path());
        let t = create(&log, "ephemeral", TopicConfig::default());
        for i in 0..50 {
            t.send(
                Record::new(value_of(i, 30))
                    .key(format!("k{i}"))
                    .header("i", i.to_string()),
            )
            .unwrap();
        }
        t.append("big", &big).unwrap();
        let msgs = read_all(&t.partition(0).unwrap());
        log.close().unwrap();
        msgs
    };
    drop(dir);
    assert_eq!(msgs.len(), 51);
    for (i, m) in msgs.iter().take(50).enumerate() {
        let m = m.clone();
        assert_eq!(
            m.value(),
            Some(&value_of(i as u64, 30)[..]),
            "value of #{i}"
        );
        assert_eq!(m.key(), Some(format!("k{i}").as_bytes()), "key of #{i}");
        assert_eq!(
            headers_of(&m),
            vec![("i".to_owned(), i.to_string().into_bytes())]
        );
        assert_eq!(m.topic(), "ephemeral");
    }
    assert_eq!(
        msgs[50].value(),
        Some(&big[..]),
        "a large value outlives the log"
    );
}

// ------------------------------------------------------------ durability

/// The active segment's bytes, as the OS has them: whole batches then zeros.
fn sealed_records_on_disk(dir: &Path, topic: &str, partition: u32) -> i64 {
    let logs = segment_files(&partition_dir(dir, topic, partition), "log");
    let last = logs.last().expect("a segment");
    file_batches(last, true)
        .last()
        .map_or(base_offset_of(last) as i64, Batch::next_offset)
}

#[test]
fn appends_under_every_sync_policy_survive_reopen() {
    for policy in [
        SyncPolicy::Always,
        SyncPolicy::Interval(Duration::from_millis(10)),
        SyncPolicy::Never,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig::default().sync(policy);
        let log = Log::open_with(dir.path(), config.clone()).unwrap();
        let t = create(&log, "durable", TopicConfig::default().partitions(2));
        let handles: Vec<_> = (0..2u64)
            .map(|th| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for i in 0..100 {
                        t.send(Record::new(value_of(th * 1000 + i, 40)).partition(th as u32))
                            .unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        if matches!(policy, SyncPolicy::Always) {
            for p in 0..2 {
                assert_eq!(
                    sealed_records_on_disk(dir.path(), "durable", p),
                    100,
                    "SyncPolicy::Always: every acknowledged record of durable-{p} \
                     must be in a whole, sealed batch on disk"
                );
            }
        }
        log.close().unwrap();
        let log = Log::open_with(dir.path(), config).unwrap();
        let t = log.topic("durable").unwrap();
        for p in 0..2u32 {
            let msgs = read_all(&t.partition(p).unwrap());
            assert_eq!(
                values(&msgs),
                (0..100)
                    .map(|i| value_of(p as u64 * 1000 + i, 40))
                    .collect::<Vec<_>>(),
                "{policy:?}: durable-{p} after reopen"
            );
        }
    }
}

#[test]
fn flush_and_sync_leave_every_record_in_whole_batches_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let t = create(&log, "flushed", TopicConfig::default());
    for i in 0..50 {
        t.append("k", value_of(i, 50)).unwrap();
    }
    log.flush().unwrap();
    assert_eq!(
        sealed_records_on_disk(dir.path(), "flushed", 0),
        50,
        "after flush() every record must be in a whole batch in the file"
    );
    for i in 50..120 {
        t.append("k", value_of(i, 50)).unwrap();
    }
    log.sync().unwrap();
    assert_eq!(
        sealed_records_on_disk(dir.path(), "flushed", 0),
        120,
        "after sync() every record must be in a whole batch in the file"
    );
    let pdir = partition_dir(dir.path(), "flushed", 0);
    for b in file_batches(&segment_files(&pdir, "log")[0], true) {
        assert!(
            b.crc_ok,
            "batch at {} has a bad CRC-32C after sync",
            b.position
        );
    }
    assert_eq!(read_all(&t.partition(0).unwrap()).len(), 120);
}

#[test]
fn a_closed_log_refuses_every_call_with_closed() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let t = create(&log, "t", TopicConfig::default());
    t.append("k", "v").unwrap();
    let clone = log.clone();
    log.close().unwrap();
    let errors: Vec<(&str, Error)> = vec![
        (
            "create_topic",
            expect_err(
                log.create_topic("u", TopicConfig::default()),
                "create_topic",
            ),
        ),
        ("topic", expect_err(log.topic("t"), "topic")),
        (
            "add_partitions",
            expect_err(log.add_partitions("t", 2), "add_partitions"),
        ),
        (
            "delete_topic",
            expect_err(log.delete_topic("t"), "delete_topic"),
        ),
        ("flush", expect_err(log.flush(), "flush")),
        ("sync", expect_err(log.sync(), "sync")),
        (
            "clone.topic",
            expect_err(clone.topic("t"), "topic on a clone"),
        ),
        ("append", expect_err(t.append("k", "v"), "append")),
        ("send", expect_err(t.send(Record::new("v")), "send")),
        (
            "send_batch",
            expect_err(t.send_batch([Record::new("v")]), "send_batch"),
        ),
    ];
    for (call, e) in errors {
        assert!(
            matches!(e, Error::Closed { .. }),
            "{call} on a closed log: expected Closed, got {e:?}"
        );
    }
    drop(clone);
    drop(log);
    let log = open(dir.path());
    assert_eq!(
        log.topic("t").unwrap().partition(0).unwrap().end_offset(),
        1,
        "calls refused after close wrote nothing"
    );
}

// ------------------------------------------------------------- on disk

#[test]
fn a_record_of_16_byte_key_and_100_byte_value_costs_at_most_135_bytes_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let n = 10_000u64;
    let single = create(&log, "single", TopicConfig::default());
    let batched = create(&log, "batched", TopicConfig::default());
    for i in 0..n {
        single
            .append(format!("key-{i:012}"), value_of(i, 100))
            .unwrap();
    }
    for chunk in 0..n / 1000 {
        batched
            .send_batch(
                (chunk * 1000..(chunk + 1) * 1000)
                    .map(|i| Record::new(value_of(i, 100)).key(format!("key-{i:012}"))),
            )
            .unwrap();
    }
    log.close().unwrap();
    for topic in ["single", "batched"] {
        let bytes = total_bytes(&all_log_files(dir.path(), topic, 1));
        let per_record = bytes as f64 / n as f64;
        assert!(
            per_record <= 135.0,
            "{topic}: {per_record:.1} bytes on disk per record ({bytes} bytes / {n}); at most 135"
        );
    }
}

#[test]
fn a_clean_close_leaves_only_whole_crc_valid_batches() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let small = create(&log, "small", small_segments().partitions(3));
    let large = create(&log, "large", TopicConfig::default().partitions(2));
    for i in 0..600u64 {
        let len = [10, 100, 700][i as usize % 3];
        small.append(format!("k{i}"), value_of(i, len)).unwrap();
        let len = [10, 1000, 20_000][i as usize % 3];
        large
            .send(
                Record::new(value_of(i, len))
                    .key(format!("k{i}"))
                    .header("i", "x"),
            )
            .unwrap();
        if i % 97 == 0 {
            log.flush().unwrap();
        }
    }
    let mut ends = BTreeMap::new();
    for (t, n) in [(&small, 3), (&large, 2)] {
        for p in 0..n {
            ends.insert(
                (t.name().to_owned(), p),
                t.partition(p).unwrap().end_offset(),
            );
        }
    }
    log.close().unwrap();
    for ((topic, p), end) in ends {
        let mut next = 0i64;
        for f in segment_files(&partition_dir(dir.path(), &topic, p), "log") {
            let bytes = fs::read(&f).unwrap();
            let batches = batch_chain(&bytes, false).unwrap_or_else(|e| {
                panic!(
                    "{}: after close the file must hold only whole batches: {e}",
                    f.display()
                )
            });
            assert_eq!(
                batches.iter().map(|b| b.size).sum::<usize>(),
                bytes.len(),
                "{}: the batch chain must end exactly at the end of the file",
                f.display()
            );
            for b in batches {
                let at = format!("{} batch at {}", f.display(), b.position);
                assert_eq!(b.magic, 2, "{at}: magic");
                assert!(b.crc_ok, "{at}: CRC-32C mismatch");
                assert_eq!(b.base_offset, next, "{at}: base offset continues the chain");
                assert_eq!(
                    b.records,
                    b.last_offset_delta + 1,
                    "{at}: recordsCount matches lastOffsetDelta"
                );
                assert!(b.max_timestamp > 0, "{at}: maxTimestamp set");
                next = b.next_offset();
            }
        }
        assert_eq!(next as u64, end, "{topic}-{p}: the files hold every record");
    }
}

// ------------------------------------------------------------- damage

/// Appends `n` records of ~100 bytes, flushing every 5 so that each 4 KiB
/// segment holds several batches, and closes the log.
fn write_flushed_batches(dir: &Path, topic: &str, n: u64) -> Vec<Vec<u8>> {
    let log = open(dir);
    let t = create(&log, topic, small_segments());
    for i in 0..n {
        t.append(format!("k{i}"), value_of(i, 100)).unwrap();
        if i % 5 == 4 {
            log.flush().unwrap();
        }
    }
    log.close().unwrap();
    (0..n).map(|i| value_of(i, 100)).collect()
}

#[test]
fn a_flipped_byte_in_a_closed_segment_is_reported_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let expected = write_flushed_batches(dir.path(), "damaged", 200);
    let pdir = partition_dir(dir.path(), "damaged", 0);
    let logs = segment_files(&pdir, "log");
    assert!(logs.len() > 2, "need closed segments, found {logs:?}");
    let victim = &logs[0];
    let batches = file_batches(victim, false);
    assert!(
        batches.len() >= 3,
        "{}: want several batches, found {}",
        victim.display(),
        batches.len()
    );
    let hit = batches[batches.len() / 2].clone();
    let flip_at = hit.position + BATCH_HEADER_BYTES + (hit.size - BATCH_HEADER_BYTES) / 2;
    let mut bytes = fs::read(victim).unwrap();
    bytes[flip_at] ^= 0x5a;
    fs::write(victim, &bytes).unwrap();
    let damaged_range = hit.base_offset as u64..hit.next_offset() as u64;

    let log = open(dir.path());
    let p = log.topic("damaged").unwrap().partition(0).unwrap();
    let victim_name = victim.file_name().unwrap().to_str().unwrap().to_owned();
    let mut next = 0u64;
    let error = loop {
        match p.read(next, 10_000) {
            Ok(msgs) => {
                assert!(!msgs.is_empty(), "read at {next} returned nothing");
                for m in msgs {
                    assert!(
                        !damaged_range.contains(&m.offset()),
                        "offset {} of the damaged batch {damaged_range:?} was returned",
                        m.offset()
                    );
                    assert_eq!(m.offset(), next);
                    assert_eq!(
                        m.value(),
                        Some(&expected[next as usize][..]),
                        "offset {next}"
                    );
                    next += 1;
                }
                assert!(
                    next <= damaged_range.start,
                    "reads went past the damaged batch {damaged_range:?} without an error"
                );
            }
            Err(e) => break e,
        }
    };
    assert!(
        matches!(error, Error::Corrupt { .. }),
        "expected Corrupt reading the damaged batch, got {error:?}"
    );
    assert!(
        error.to_string().contains(&victim_name),
        "Corrupt must name the damaged file {victim_name}: {error}"
    );
    let e = expect_err(p.read(damaged_range.start, 1), "read of the damaged batch");
    assert!(matches!(e, Error::Corrupt { .. }), "{e:?}");

    let active_base = base_offset_of(logs.last().unwrap());
    let tail = p
        .read(active_base, 1)
        .expect("undamaged segments stay readable");
    assert_eq!(tail[0].value(), Some(&expected[active_base as usize][..]));
}

#[test]
fn a_torn_last_batch_of_the_active_segment_is_dropped_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    {
        let log = open(dir.path());
        let t = create(&log, "torn", TopicConfig::default());
        for i in 0..30u64 {
            t.append(format!("k{i}"), value_of(i, 80)).unwrap();
            expected.push(value_of(i, 80));
            if i % 10 == 9 {
                log.flush().unwrap();
            }
        }
        log.close().unwrap();
    }
    let pdir = partition_dir(dir.path(), "torn", 0);
    let active = segment_files(&pdir, "log").pop().unwrap();
    let batches = file_batches(&active, false);
    assert!(
        batches.len() >= 3,
        "want several batches, found {}",
        batches.len()
    );
    let last = batches.last().unwrap();
    let cut = last.position + last.size / 2;
    fs::OpenOptions::new()
        .write(true)
        .open(&active)
        .unwrap()
        .set_len(cut as u64)
        .unwrap();
    let survivors = last.base_offset as u64;

    let log = open(dir.path());
    let t = log.topic("torn").unwrap();
    let p = t.partition(0).unwrap();
    assert_eq!(
        p.end_offset(),
        survivors,
        "reopen must drop exactly the torn batch (offsets {survivors}..30)"
    );
    assert_eq!(
        values(&read_all(&p)),
        expected[..survivors as usize].to_vec(),
        "the whole batches before the torn one are intact"
    );
    let meta = t.append("k", "after recovery").unwrap();
    assert_eq!(
        meta.offset, survivors,
        "appends continue at the recovered end"
    );
    log.close().unwrap();
    let bytes = fs::read(&active).unwrap();
    batch_chain(&bytes, false)
        .unwrap_or_else(|e| panic!("after recovery and close the segment is whole: {e}"));
}

#[test]
fn missing_indexes_of_closed_segments_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let n = 200u64;
    let expected = write_flushed_batches(dir.path(), "indexed", n);
    let pdir = partition_dir(dir.path(), "indexed", 0);
    let logs = segment_files(&pdir, "log");
    assert!(logs.len() > 2, "need closed segments, found {logs:?}");
    for closed in &logs[..logs.len() - 1] {
        fs::remove_file(closed.with_extension("index")).unwrap();
    }
    fs::remove_file(logs[0].with_extension("timeindex")).unwrap();

    let log = open(dir.path());
    let p = log.topic("indexed").unwrap().partition(0).unwrap();
    assert_eq!(p.end_offset(), n);
    for offset in 0..n {
        let m = p
            .read(offset, 1)
            .unwrap_or_else(|e| panic!("read({offset}) without its index: {e}"));
        assert_eq!(m.len(), 1, "read({offset}, 1)");
        assert_eq!(
            m[0].offset(),
            offset,
            "read({offset}) must start at {offset}"
        );
        assert_eq!(m[0].value(), Some(&expected[offset as usize][..]));
    }
    assert_eq!(values(&read_all(&p)), expected);
    assert_eq!(
        p.offset_for_timestamp(0).unwrap(),
        Some(0),
        "time lookup without a time index"
    );
}
