//! Brook's segments are Kafka's: an independent decoder, kafka-python's
//! `kafka.record.MemoryRecords` driven by `tests/kafka_decode.py`, reads
//! every `.log` file brook leaves after `close()`, validates each batch's
//! CRC-32C and finds exactly what was written: magic 2, no compression,
//! create-time timestamps, producer id, epoch and base sequence -1, no
//! transaction or control batches, contiguous offsets, each batch's
//! `maxTimestamp`, and every record's offset, timestamp, key (or null),
//! value (or null for a tombstone) and headers; and it consumes each file to
//! its last byte.
//!
//! kafka-python is a test requirement (`tests/requirements.txt`): without
//! python3 or the package this test fails and says how to install it.

use std::path::{Path, PathBuf};
use std::process::Command;

use brook::{Compression, Log, Record, TopicConfig};
use serde_json::Value;

const TOPIC: &str = "compat";
const PARTITIONS: u32 = 3;
const INSTALL_HINT: &str = "pip install kafka-python==3.0.12";

/// What one record must decode to.
#[derive(Debug, Clone, PartialEq)]
struct Expected {
    offset: u64,
    timestamp: i64,
    key: Option<String>,
    value: Option<String>,
    headers: Vec<(String, Option<String>)>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Runs the decoder on one segment file; one JSON value per output line.
fn decode(path: &Path) -> Vec<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka_decode.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(path)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run python3 ({e}); the decoder check needs python3 and `{INSTALL_HINT}`")
        });
    assert!(
        out.status.success(),
        "kafka-python could not decode {} ({}): {}\nIf kafka-python is missing: {INSTALL_HINT}",
        path.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("decoder output is UTF-8")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("decoder line {l:?}: {e}")))
        .collect()
}

fn int(v: &Value, field: &str) -> i64 {
    v[field]
        .as_i64()
        .unwrap_or_else(|| panic!("decoder output lacks integer {field:?}: {v}"))
}

fn opt_str(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => panic!("expected a hex string or null, got {other}"),
    }
}

fn decoded_record(v: &Value) -> Expected {
    let headers = v["headers"]
        .as_array()
        .unwrap_or_else(|| panic!("record without headers array: {v}"))
        .iter()
        .map(|h| {
            (
                h[0].as_str().expect("header name").to_owned(),
                opt_str(&h[1]),
            )
        })
        .collect();
    Expected {
        offset: int(v, "offset") as u64,
        timestamp: int(v, "timestamp"),
        key: opt_str(&v["key"]),
        value: opt_str(&v["value"]),
        headers,
    }
}

fn log_files(dir: &Path, partition: u32) -> Vec<PathBuf> {
    let pdir = dir.join(format!("{TOPIC}-{partition}"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&pdir)
        .unwrap_or_else(|e| panic!("list {}: {e}", pdir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

/// The fields of record number `i` of partition `p`: keys, null keys,
/// tombstones, headers (repeated, empty, non-ASCII, binary), explicit
/// non-monotonic timestamps and values from empty to more than one 16 KiB
/// batch.
struct Fields {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Vec<u8>)>,
    timestamp: Option<i64>,
}

/// Record `i` of partition `p`; `large` adds values over 64 KiB.
fn fields(p: u32, i: u64, large: bool) -> Fields {
    let value_len = match i % 11 {
        0 => 0,
        // Larger than a batch's target size: a batch of its own.
        5 => 17 * 1024,
        // Larger still: written with pwrite rather than through the map.
        9 if large && i % 2 == 1 => 70 * 1024,
        7 => 3000,
        _ => 20 + (i as usize * 13) % 200,
    };
    let value: Vec<u8> = (0..value_len)
        .map(|j| (j as u64 * 31 + i * 7 + p as u64) as u8)
        .collect();
    let key = format!("key-{p}-{}", i % 5).into_bytes();
    let (key, value) = match i % 9 {
        3 => (Some(key), None),
        4 | 8 => (None, Some(value)),
        _ => (Some(key), Some(value)),
    };
    let headers = match i % 4 {
        1 => vec![("trace-id".to_owned(), i.to_string().into_bytes())],
        2 => vec![
            ("dup".to_owned(), b"first".to_vec()),
            ("dup".to_owned(), b"second".to_vec()),
            ("empty".to_owned(), vec![]),
            ("ünïcode".to_owned(), vec![0, 0xff, 0x10]),
        ],
        _ => vec![],
    };
    let timestamp =
        (!i.is_multiple_of(3)).then(|| 1_700_000_000_000 + ((i * 7919) % 1000) as i64 * 1000);
    Fields {
        key,
        value,
        headers,
        timestamp,
    }
}

fn record(f: &Fields, partition: u32) -> Record {
    let mut r = match (&f.key, &f.value) {
        (Some(k), None) => Record::tombstone(k),
        (key, Some(v)) => {
            let r = Record::new(v);
            match key {
                Some(k) => r.key(k),
                None => r,
            }
        }
        (None, None) => unreachable!("every record has a key or a value"),
    };
    for (name, value) in &f.headers {
        r = r.header(name, value);
    }
    if let Some(ts) = f.timestamp {
        r = r.timestamp(ts);
    }
    r.partition(partition)
}

fn expected(f: &Fields, meta: &brook::RecordMetadata) -> Expected {
    if let Some(ts) = f.timestamp {
        assert_eq!(meta.timestamp, ts, "an explicit timestamp is kept");
    }
    Expected {
        offset: meta.offset,
        timestamp: meta.timestamp,
        key: f.key.as_deref().map(hex),
        value: f.value.as_deref().map(hex),
        headers: f
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), Some(hex(v))))
            .collect(),
    }
}

#[test]
fn kafka_python_decodes_every_batch_and_record_brook_wrote() {
    check_decodes(Compression::None);
}

/// Every codec this build has; kafka-python decodes each (its codec
/// packages are in tests/requirements.txt).
#[test]
fn kafka_python_decodes_compressed_batches() {
    let codecs = [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];
    for codec in codecs.into_iter().filter(|c| c.is_available()) {
        check_decodes(codec);
    }
}

/// Kafka's `attributes` bits of each codec.
fn codec_bits(codec: Compression) -> i64 {
    match codec {
        Compression::Gzip => 1,
        Compression::Snappy => 2,
        Compression::Lz4 => 3,
        Compression::Zstd => 4,
        _ => 0,
    }
}

fn check_decodes(codec: Compression) {
    // Values over 64 KiB, which take their own write path, would need
    // more records for compressed segments to roll; their compression in
    // place is the same as any batch's (unit tests in partition_log.rs).
    let large = codec == Compression::None;
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let topic = log
        .create_topic(
            TOPIC,
            TopicConfig::default()
                .partitions(PARTITIONS)
                // Compressed batches are smaller: smaller segments roll too.
                .segment_bytes(if large { 160 } else { 24 } * 1024)
                .max_record_bytes(if large { 80 } else { 20 } * 1024)
                .compression(codec),
        )
        .unwrap();
    let mut expected_records: Vec<Vec<Expected>> = vec![Vec::new(); PARTITIONS as usize];
    for p in 0..PARTITIONS {
        let mut i = 0u64;
        while i < 120 {
            if i % 40 == 20 {
                // Ten records in one send_batch call.
                let batch: Vec<Fields> = (i..i + 10).map(|j| fields(p, j, large)).collect();
                let metas = topic
                    .send_batch(batch.iter().map(|f| record(f, p)))
                    .unwrap();
                for (f, m) in batch.iter().zip(&metas) {
                    assert_eq!(m.partition, p, "explicit partition");
                    expected_records[p as usize].push(expected(f, m));
                }
                i += 10;
            } else {
                let f = fields(p, i, large);
                let m = topic.send(record(&f, p)).unwrap();
                assert_eq!(m.partition, p, "explicit partition");
                expected_records[p as usize].push(expected(&f, &m));
                i += 1;
            }
            if i.is_multiple_of(7) {
                // Seal the open batch: more, smaller batches.
                log.flush().unwrap();
            }
        }
    }
    log.close().unwrap();

    let mut batches_seen = 0;
    let mut compressed_seen = 0;
    let mut files_seen = 0;
    for p in 0..PARTITIONS {
        let mut decoded: Vec<Expected> = Vec::new();
        let mut next_offset = 0i64;
        let files = log_files(dir.path(), p);
        assert!(!files.is_empty(), "{TOPIC}-{p} has no segment");
        for file in files {
            files_seen += 1;
            let file_len = std::fs::metadata(&file).unwrap().len() as i64;
            let lines = decode(&file);
            let at = |what: &str| format!("{}: {what}", file.display());
            let end = lines
                .last()
                .unwrap_or_else(|| panic!("{}", at("no output")));
            assert_eq!(end["kind"], "end", "{}", at("the last line is the summary"));
            assert_eq!(
                int(end, "file_size"),
                file_len,
                "{}",
                at("decoder read the whole file")
            );
            assert_eq!(
                int(end, "consumed"),
                file_len,
                "{}",
                at("the batches must cover the file exactly (no zero tail, no trailing bytes)")
            );
            let mut i = 0;
            while i < lines.len() - 1 {
                let b = &lines[i];
                assert_eq!(
                    b["kind"],
                    "batch",
                    "{}",
                    at(&format!("line {i}: expected a batch"))
                );
                batches_seen += 1;
                let base = int(b, "base_offset");
                let ctx = at(&format!("batch at base offset {base}"));
                assert_eq!(b["crc_valid"], true, "{ctx}: CRC-32C must validate");
                assert_eq!(int(b, "magic"), 2, "{ctx}: magic");
                // A batch that would not shrink is stored uncompressed.
                let bits = int(b, "compression");
                assert!(
                    bits == 0 || bits == codec_bits(codec),
                    "{ctx}: compression {bits} in a {codec:?} topic"
                );
                compressed_seen += usize::from(bits != 0);
                assert_eq!(int(b, "timestamp_type"), 0, "{ctx}: CreateTime");
                assert_eq!(int(b, "producer_id"), -1, "{ctx}: producer id");
                assert_eq!(int(b, "producer_epoch"), -1, "{ctx}: producer epoch");
                assert_eq!(int(b, "base_sequence"), -1, "{ctx}: base sequence");
                assert_eq!(b["transactional"], false, "{ctx}: not transactional");
                assert_eq!(b["control"], false, "{ctx}: not a control batch");
                assert_eq!(
                    base, next_offset,
                    "{ctx}: offsets continue from the previous batch"
                );
                let last = int(b, "last_offset");
                i += 1;
                let mut in_batch = Vec::new();
                while i < lines.len() - 1 && lines[i]["kind"] == "record" {
                    in_batch.push(decoded_record(&lines[i]));
                    i += 1;
                }
                assert!(!in_batch.is_empty(), "{ctx}: an empty batch");
                assert_eq!(
                    in_batch.iter().map(|r| r.offset as i64).collect::<Vec<_>>(),
                    (base..=last).collect::<Vec<_>>(),
                    "{ctx}: records must carry offsets base..=last without a gap"
                );
                assert_eq!(
                    int(b, "max_timestamp"),
                    in_batch.iter().map(|r| r.timestamp).max().unwrap(),
                    "{ctx}: maxTimestamp is the largest record timestamp"
                );
                next_offset = last + 1;
                decoded.extend(in_batch);
            }
        }
        let want = &expected_records[p as usize];
        assert_eq!(
            decoded.len(),
            want.len(),
            "{TOPIC}-{p}: kafka-python found {} records, brook acknowledged {}",
            decoded.len(),
            want.len()
        );
        for (got, want) in decoded.iter().zip(want) {
            assert_eq!(
                got, want,
                "{TOPIC}-{p} offset {}: kafka-python decodes a different record",
                want.offset
            );
        }
    }
    assert!(
        batches_seen >= 3 * files_seen,
        "the writes were meant to give several batches per file: {batches_seen} batches in {files_seen} files"
    );
    assert!(
        files_seen > PARTITIONS as usize,
        "segments were meant to roll: {files_seen} files"
    );
    if codec != Compression::None {
        assert!(
            compressed_seen * 2 >= batches_seen,
            "{codec:?}: only {compressed_seen} of {batches_seen} batches compressed"
        );
    }
}

/// Transactional batches and commit/abort markers, as kafka-python reads
/// them: data batches flagged transactional with the producer's id and
/// epoch, and a control batch ending each transaction whose one record's
/// key is Kafka's `EndTransactionMarker` key (version 0, type 1 commit /
/// 0 abort).
#[test]
fn kafka_python_decodes_transactional_batches_and_markers() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic(TOPIC, TopicConfig::default()).unwrap();
    let mut p = log
        .producer(brook::ProducerConfig::default().transactional_id("compat"))
        .unwrap();
    for commit in [true, false, true] {
        p.begin_transaction().unwrap();
        p.send_batch(
            TOPIC,
            &[Record::new("a").partition(0), Record::new("b").partition(0)],
        )
        .unwrap();
        if commit {
            p.commit_transaction().unwrap();
        } else {
            p.abort_transaction().unwrap();
        }
    }
    let (id, epoch) = (p.producer_id(), p.epoch() as i64);
    drop(p);
    log.close().unwrap();

    let lines = decode(&log_files(dir.path(), 0)[0]);
    let batches: Vec<(&Value, Vec<&Value>)> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l["kind"] == "batch")
        .map(|(i, b)| {
            let records = lines[i + 1..]
                .iter()
                .take_while(|l| l["kind"] == "record")
                .collect();
            (b, records)
        })
        .collect();
    assert_eq!(batches.len(), 6, "3 data batches and 3 markers: {lines:?}");
    for (k, (b, records)) in batches.iter().enumerate() {
        assert_eq!(b["crc_valid"], true);
        assert_eq!(b["transactional"], true, "batch {k}");
        assert_eq!(int(b, "producer_id"), id);
        assert_eq!(int(b, "producer_epoch"), epoch);
        let control = k % 2 == 1;
        assert_eq!(b["control"], control, "batch {k}");
        if control {
            assert_eq!(int(b, "base_sequence"), -1, "markers carry no sequence");
            assert_eq!(records.len(), 1);
            let commit = k != 3;
            let key = if commit { "00000001" } else { "00000000" };
            assert_eq!(records[0]["key"], key, "marker {k}");
        } else {
            assert_eq!(int(b, "base_sequence"), (k as i64 / 2) * 2, "batch {k}");
            assert_eq!(records.len(), 2);
        }
    }
}
