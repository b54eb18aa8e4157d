//! Every public constructor and method fed its edge cases.
//!
//! One table of rows `(name, call, expected outcome)`. A row either expects
//! a `brook::Error` of a named variant whose message names what and where
//! (the given substrings), or succeeds and checks the behaviour itself. A
//! panic is always a failure. After every row the shared log must still
//! take an append and read it back. All rows run even when some fail; the
//! test then fails listing every failing row by name.
//!
//! Decisions this test pins down:
//! - Record timestamps must be `>= 0`: negative ones, `-1` included, are
//!   `Error::InvalidRecord` (as the Java client's `ProducerRecord` refuses
//!   them; `-1` on the wire means "no timestamp", which brook never
//!   writes). `i64::MAX` is accepted and read back unchanged.
//! - `offset_for_timestamp(i64::MIN)` is the first stored offset,
//!   `offset_for_timestamp(i64::MAX)` is `None` unless a record carries
//!   `i64::MAX`.
//! - Committing an offset past the end (even `u64::MAX`) is accepted, as
//!   in Kafka; a consumer that finds it out of range resets by its policy.
//! - Durations too long to represent (`Duration::MAX`) mean "forever".

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::Command;
use std::time::Duration;

use brook::{
    CleanupPolicy, ConsumerConfig, Error, Log, LogConfig, OffsetReset, Partitioner, ProducerConfig,
    Record, ResetTo, Result, SyncPolicy, Topic, TopicConfig, TopicPartition, MAX_PARTITIONS,
    MAX_SEGMENT_BYTES,
};

/// `max_record_bytes` of the shared topic `t`.
const LIMIT: usize = 1000;
/// Partitions of the shared topic `t`.
const PARTS: u32 = 3;

const CHILD_TEST: &str = "child_opens_a_log_directory";
const CHILD_DIR_ENV: &str = "BROOK_BAD_INPUT_CHILD_DIR";

/// What a row expects.
enum Expect {
    /// The call returns `Ok` (the row asserts the behaviour itself).
    Ok,
    /// The call fails with this variant (its `Debug` name) and the message
    /// contains each of these substrings.
    Err(&'static str, &'static [&'static str]),
}

struct Row {
    name: &'static str,
    run: fn(&Fx) -> Result<()>,
    expect: Expect,
}

fn row(name: &'static str, expect: Expect, run: fn(&Fx) -> Result<()>) -> Row {
    Row { name, run, expect }
}

/// The shared log: topic `t` with [`PARTS`] partitions and [`LIMIT`].
struct Fx {
    dir: tempfile::TempDir,
    log: Log,
    t: Topic,
}

fn ends(t: &Topic) -> Vec<u64> {
    (0..t.partition_count())
        .map(|p| t.partition(p).unwrap().end_offset())
        .collect()
}

/// Runs `f`; when it fails, asserts that no partition of `t` grew.
fn nothing_written<T>(t: &Topic, f: impl FnOnce() -> Result<T>) -> Result<()> {
    let before = ends(t);
    let r = f();
    if r.is_err() {
        assert_eq!(ends(t), before, "a refused call wrote records");
    }
    r.map(drop)
}

/// Kafka's zigzag varint length.
fn varint_len(v: i64) -> usize {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut n = 1;
    while z >= 0x80 {
        z >>= 7;
        n += 1;
    }
    n
}

/// A record's size inside a RecordBatch v2 with zero deltas, computed from
/// Kafka's record layout (length, attributes, timestamp delta, offset
/// delta, key, value, headers): what `max_record_bytes` limits.
fn record_size(key: Option<&[u8]>, value: Option<&[u8]>, headers: &[(&str, &[u8])]) -> usize {
    let opt = |b: Option<&[u8]>| b.map_or(1, |b| varint_len(b.len() as i64) + b.len());
    let mut body = 1 + 1 + 1 + opt(key) + opt(value) + varint_len(headers.len() as i64);
    for (n, v) in headers {
        body += opt(Some(n.as_bytes())) + opt(Some(v));
    }
    varint_len(body as i64) + body
}

/// The largest unkeyed, header-less value that fits `limit`.
fn value_len_at(limit: usize) -> usize {
    let n = (0..=limit)
        .rev()
        .find(|&n| record_size(None, Some(&vec![0; n]), &[]) <= limit)
        .unwrap();
    assert_eq!(
        record_size(None, Some(&vec![0; n]), &[]),
        limit,
        "no value fits exactly"
    );
    n
}

/// Sends `r` and reads it back.
fn roundtrip(t: &Topic, r: Record) -> Result<brook::Message> {
    let m = t.send(r)?;
    let msgs = t.partition(m.partition)?.read(m.offset, 1)?;
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].offset(), m.offset);
    Ok(msgs[0].clone())
}

fn topic(fx: &Fx, name: &str, cfg: TopicConfig) -> Result<Topic> {
    fx.log.create_topic(name, cfg)
}

struct Fixed(u32);
impl Partitioner for Fixed {
    fn partition(&self, _: Option<&[u8]>, _: &[u8], _: u32) -> u32 {
        self.0
    }
}

/// Runs this test binary's child test against `dir`; returns its report line.
fn child_open(dir: &std::path::Path) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            CHILD_TEST,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, dir)
        .output()
        .expect("spawn the child test process");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed: {stdout}");
    stdout
        .lines()
        .find_map(|l| l.split_once("child: ").map(|(_, r)| r))
        .unwrap_or_else(|| panic!("child printed no result: {stdout}"))
        .to_owned()
}

/// The child: opens the directory it is given, appends one record if it
/// could, and reports. Does nothing without the parent's environment.
#[test]
#[ignore = "run by bad_input_rows in a child process"]
fn child_opens_a_log_directory() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    match Log::open(&dir) {
        Ok(log) => {
            let t = log
                .topic("x")
                .or_else(|_| log.create_topic("x", TopicConfig::default()))
                .unwrap();
            t.append("k", "from the child").unwrap();
            log.close().unwrap();
            println!("child: opened");
        }
        Err(e) => println!("child: {e:?} | {e}"),
    }
}

fn rows() -> Vec<Row> {
    use Expect::{Err as E, Ok as K};
    vec![
        // ---------------------------------------------------------------- records
        row("empty key and empty value are stored as empty, not null", K, |fx| {
            let m = roundtrip(&fx.t, Record::new("").key(""))?;
            assert_eq!((m.key(), m.value()), (Some(&b""[..]), Some(&b""[..])));
            let m = fx.t.append("", "")?;
            let got = fx.t.partition(m.partition)?.read(m.offset, 1)?;
            assert_eq!(got[0].value(), Some(&b""[..]));
            Ok(())
        }),
        row("unkeyed record with an empty value", K, |fx| {
            let m = roundtrip(&fx.t, Record::new(b""))?;
            assert_eq!((m.key(), m.value()), (None, Some(&b""[..])));
            Ok(())
        }),
        row("tombstone in a non-compacted topic is a null value", K, |fx| {
            let m = roundtrip(&fx.t, Record::tombstone("k"))?;
            assert_eq!((m.key(), m.value()), (Some(&b"k"[..]), None));
            Ok(())
        }),
        row("value one byte over max_record_bytes", E("RecordTooLarge", &["\"t\"", "1001", "1000"]), |fx| {
            let n = value_len_at(LIMIT) + 1;
            nothing_written(&fx.t, || fx.t.send(Record::new(vec![7u8; n])))
        }),
        row("value exactly at max_record_bytes is accepted", K, |fx| {
            let n = value_len_at(LIMIT);
            let v = vec![7u8; n];
            let m = roundtrip(&fx.t, Record::new(&v))?;
            assert_eq!(m.value(), Some(&v[..]));
            Ok(())
        }),
        row("key and headers count towards max_record_bytes (exactly at it)", K, |fx| {
            let (k, hv) = (vec![1u8; 300], vec![2u8; 300]);
            let base = record_size(Some(&k), Some(b""), &[("h", &hv)]);
            let v = vec![3u8; LIMIT - base - 1]; // the value's length varint grows by 1
            assert_eq!(record_size(Some(&k), Some(&v), &[("h", &hv)]), LIMIT);
            let m = roundtrip(&fx.t, Record::new(&v).key(&k).header("h", &hv))?;
            assert_eq!(m.headers().collect::<Vec<_>>(), vec![("h", &hv[..])]);
            Ok(())
        }),
        row("key alone over max_record_bytes", E("RecordTooLarge", &["\"t\"", "max_record_bytes 1000"]), |fx| {
            nothing_written(&fx.t, || fx.t.append(vec![0u8; LIMIT], ""))
        }),
        row("huge value (16 MiB) is refused without writing", E("RecordTooLarge", &["\"t\""]), |fx| {
            nothing_written(&fx.t, || fx.t.append("k", vec![0u8; 16 << 20]))
        }),
        row("header value over max_record_bytes", E("RecordTooLarge", &["\"t\""]), |fx| {
            nothing_written(&fx.t, || fx.t.send(Record::new("v").header("h", vec![0u8; LIMIT])))
        }),
        row("oversized record in a batch refuses the whole batch", E("RecordTooLarge", &["\"t\""]), |fx| {
            let rs = vec![Record::new("ok").partition(0), Record::new(vec![0u8; 2 * LIMIT])];
            nothing_written(&fx.t, || fx.t.send_batch(rs))
        }),
        row("empty batch returns no metadata", K, |fx| {
            assert!(fx.t.send_batch(Vec::<Record>::new())?.is_empty());
            Ok(())
        }),
        row("records at the limit in the smallest segments roll one per segment", K, |fx| {
            let t = topic(fx, "smallest-segments", TopicConfig::default().max_record_bytes(LIMIT).segment_bytes(LIMIT as u64 + 61))?;
            let n = value_len_at(LIMIT);
            for i in 0..5u8 {
                // Timestamps far apart make the second record of a batch
                // larger than its zero-delta size.
                let ts = if i % 2 == 0 { 0 } else { i64::MAX };
                t.send(Record::new(vec![i; n]).timestamp(ts))?;
            }
            let msgs = t.partition(0)?.read(0, 10)?;
            assert_eq!(msgs.len(), 5);
            for (i, m) in msgs.iter().enumerate() {
                assert_eq!(m.value(), Some(&vec![i as u8; n][..]));
            }
            let logs = std::fs::read_dir(fx.dir.path().join("smallest-segments-0"))
                .unwrap()
                .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "log"))
                .count();
            assert_eq!(logs, 5, "one record per segment");
            Ok(())
        }),
        // ------------------------------------------------------------- partitions
        row("explicit partition u32::MAX", E("UnknownPartition", &["4294967295", "\"t\"", "3 partitions"]), |fx| {
            nothing_written(&fx.t, || fx.t.send(Record::new("v").partition(u32::MAX)))
        }),
        row("explicit partition == partition count", E("UnknownPartition", &["unknown partition 3", "\"t\""]), |fx| {
            nothing_written(&fx.t, || fx.t.send(Record::new("v").partition(PARTS)))
        }),
        row("partition out of range in a batch refuses the whole batch", E("UnknownPartition", &["3"]), |fx| {
            let rs = [Record::new("a").partition(0), Record::new("b").partition(PARTS)];
            nothing_written(&fx.t, || fx.t.send_batch(&rs))
        }),
        row("custom partitioner returning u32::MAX", E("UnknownPartition", &["4294967295"]), |fx| {
            let t = fx.t.with_partitioner(Fixed(u32::MAX));
            nothing_written(&fx.t, || t.append("k", "v"))
        }),
        row("custom partitioner returning u32::MAX in a batch", E("UnknownPartition", &["4294967295"]), |fx| {
            let t = fx.t.with_partitioner(Fixed(u32::MAX));
            nothing_written(&fx.t, || t.send_batch([Record::new("v")]))
        }),
        row("Topic::partition(u32::MAX)", E("UnknownPartition", &["4294967295", "\"t\""]), |fx| {
            fx.t.partition(u32::MAX).map(drop)
        }),
        row("Topic::partition(count)", E("UnknownPartition", &["3"]), |fx| fx.t.partition(PARTS).map(drop)),
        // ------------------------------------------------------------- timestamps
        row("timestamp i64::MIN", E("InvalidRecord", &["\"t\"", "-9223372036854775808"]), |fx| {
            nothing_written(&fx.t, || fx.t.send(Record::new("v").timestamp(i64::MIN)))
        }),
        row("timestamp -1 (Kafka's 'no timestamp') is refused too", E("InvalidRecord", &["\"t\"", "timestamp -1"]), |fx| {
            nothing_written(&fx.t, || fx.t.send(Record::new("v").timestamp(-1)))
        }),
        row("negative timestamp in a batch refuses the whole batch", E("InvalidRecord", &["negative"]), |fx| {
            let rs = [Record::new("a"), Record::new("b").timestamp(-5)];
            nothing_written(&fx.t, || fx.t.send_batch(&rs))
        }),
        row("timestamps 0 and i64::MAX, mixed in one batch, read back unchanged", K, |fx| {
            let t = topic(fx, "ts-extremes", TopicConfig::default())?;
            let ts = [0, i64::MAX, 0, i64::MAX - 1, 1];
            let metas = t.send_batch(ts.iter().map(|&s| Record::new(s.to_string()).timestamp(s)))?;
            assert_eq!(metas.iter().map(|m| m.timestamp).collect::<Vec<_>>(), ts);
            t.send(Record::new("single").timestamp(i64::MAX))?;
            log_sync(fx)?;
            let got: Vec<i64> = t.partition(0)?.read(0, 10)?.iter().map(|m| m.timestamp()).collect();
            assert_eq!(got, [0, i64::MAX, 0, i64::MAX - 1, 1, i64::MAX]);
            let p = t.partition(0)?;
            assert_eq!(p.offset_for_timestamp(i64::MAX)?, Some(1));
            assert_eq!(p.offset_for_timestamp(i64::MIN)?, Some(0));
            assert_eq!(p.offset_for_timestamp(2)?, Some(1));
            Ok(())
        }),
        row("offset_for_timestamp at i64::MIN / i64::MAX", K, |fx| {
            let t = topic(fx, "ts-lookup", TopicConfig::default().max_record_bytes(100).segment_bytes(4096))?;
            let p = t.partition(0)?;
            assert_eq!(p.offset_for_timestamp(i64::MIN)?, None, "empty partition");
            assert_eq!(p.offset_for_timestamp(i64::MAX)?, None, "empty partition");
            for i in 0..200 {
                t.send(Record::new([0u8; 50]).timestamp(1_000 + i))?;
            }
            assert_eq!(p.offset_for_timestamp(i64::MIN)?, Some(0));
            assert_eq!(p.offset_for_timestamp(-1)?, Some(0));
            assert_eq!(p.offset_for_timestamp(1_150)?, Some(150));
            assert_eq!(p.offset_for_timestamp(i64::MAX)?, None);
            Ok(())
        }),
        // ----------------------------------------------------------------- headers
        row("header with an empty name and an empty value", K, |fx| {
            let m = roundtrip(&fx.t, Record::new("v").header("", ""))?;
            assert_eq!(m.headers().collect::<Vec<_>>(), vec![("", &b""[..])]);
            Ok(())
        }),
        row("non-ASCII header name, repeated names", K, |fx| {
            let m = roundtrip(&fx.t, Record::new("v").header("ü名", "1").header("ü名", "2"))?;
            assert_eq!(m.headers().collect::<Vec<_>>(), vec![("ü名", &b"1"[..]), ("ü名", &b"2"[..])]);
            Ok(())
        }),
        row("large header name and value, 10,000 headers (bigger than a batch)", K, |fx| {
            let t = topic(fx, "big-headers", TopicConfig::default())?;
            let name = "n".repeat(100_000);
            let m = roundtrip(&t, Record::new("v").header(&name, vec![9u8; 200_000]))?;
            let h: Vec<_> = m.headers().collect();
            assert_eq!((h[0].0.len(), h[0].1.len()), (100_000, 200_000));
            let mut r = Record::new("many");
            for i in 0..10_000 {
                r = r.header(&i.to_string(), [i as u8]);
            }
            let m = roundtrip(&t, r)?;
            assert_eq!(m.headers().count(), 10_000);
            assert_eq!(m.headers().nth(9_999), Some(("9999", &[9_999u16 as u8][..])));
            Ok(())
        }),
        row("header name over max_record_bytes", E("RecordTooLarge", &["\"t\""]), |fx| {
            nothing_written(&fx.t, || fx.t.send(Record::new("v").header(&"h".repeat(LIMIT), "")))
        }),
        // ------------------------------------------------------------- topic names
        row("topic name empty", E("InvalidTopicName", &["\"\"", "empty"]), |fx| topic(fx, "", TopicConfig::default()).map(drop)),
        row("topic name with '/'", E("InvalidTopicName", &["\"a/b\""]), |fx| topic(fx, "a/b", TopicConfig::default()).map(drop)),
        row("topic name '..'", E("InvalidTopicName", &["\"..\""]), |fx| topic(fx, "..", TopicConfig::default()).map(drop)),
        row("topic name '.'", E("InvalidTopicName", &["\".\""]), |fx| topic(fx, ".", TopicConfig::default()).map(drop)),
        row("topic name '../escape'", E("InvalidTopicName", &["../escape"]), |fx| {
            let r = topic(fx, "../escape", TopicConfig::default()).map(drop);
            assert!(!fx.dir.path().parent().unwrap().join("escape-0").exists());
            r
        }),
        row("topic name with a space, a NUL, non-ASCII", E("InvalidTopicName", &["only ASCII"]), |fx| {
            for bad in ["a b", "a\0b", "ü"] {
                assert!(matches!(topic(fx, bad, TopicConfig::default()), Err(Error::InvalidTopicName { .. })), "{bad:?}");
            }
            topic(fx, "tab\t", TopicConfig::default()).map(drop)
        }),
        row("topic name of 249 characters is accepted", K, |fx| {
            let name = "n".repeat(249);
            let t = topic(fx, &name, TopicConfig::default().partitions(2))?;
            let m = roundtrip(&t, Record::new("v").partition(1))?;
            assert_eq!(m.topic(), name);
            assert_eq!(fx.log.topic(&name)?.name(), name);
            fx.log.delete_topic(&name)
        }),
        row("topic name of 250 characters", E("InvalidTopicName", &["249"]), |fx| {
            topic(fx, &"n".repeat(250), TopicConfig::default()).map(drop)
        }),
        row("topic name of 1 MiB", E("InvalidTopicName", &["249"]), |fx| {
            topic(fx, &"n".repeat(1 << 20), TopicConfig::default()).map(drop)
        }),
        row("reserved topic name __consumer_offsets", E("InvalidTopicName", &["__consumer_offsets", "reserved"]), |fx| {
            topic(fx, "__consumer_offsets", TopicConfig::default()).map(drop)
        }),
        row("create an existing topic", E("TopicExists", &["\"t\""]), |fx| topic(fx, "t", TopicConfig::default()).map(drop)),
        row("Log::topic of a missing or invalid name", E("UnknownTopic", &["\"../etc\""]), |fx| {
            assert!(matches!(fx.log.topic(""), Err(Error::UnknownTopic { .. })));
            fx.log.topic("../etc").map(drop)
        }),
        row("delete a missing topic", E("UnknownTopic", &["\"nope\""]), |fx| fx.log.delete_topic("nope")),
        row("handles of a deleted topic", K, |fx| {
            let t = topic(fx, "deleted", TopicConfig::default().partitions(2))?;
            t.append("k", "v")?;
            let p = t.partition(0)?;
            let old = p.read(0, 10)?;
            fx.log.delete_topic("deleted")?;
            let unknown = |r: Result<()>| matches!(r, Err(Error::UnknownTopic { ref topic }) if topic == "deleted");
            assert!(unknown(t.append("k", "v").map(drop)));
            assert!(unknown(t.send_batch([Record::new("v")]).map(drop)));
            assert!(unknown(t.partition(0).map(drop)));
            assert!(unknown(p.read(0, 10).map(drop)), "{:?}", p.read(0, 10));
            let r = p.offset_for_timestamp(0);
            assert!(matches!(r, Ok(_) | Err(Error::UnknownTopic { .. })), "{r:?}");
            assert_eq!(old[0].value(), Some(&b"v"[..]), "messages read before stay valid");
            let again = topic(fx, "deleted", TopicConfig::default())?;
            assert_eq!(again.append("k", "v")?.offset, 0, "a re-created topic starts over");
            assert!(unknown(t.append("k", "v").map(drop)), "the old handle stays dead");
            Ok(())
        }),
        // ------------------------------------------------------------ topic configs
        row("TopicConfig partitions(0)", E("InvalidConfig", &["\"c\"", "partitions"]), |fx| topic(fx, "c", TopicConfig::default().partitions(0)).map(drop)),
        row("TopicConfig partitions(u32::MAX)", E("InvalidConfig", &["\"c\"", "partitions", "100000", "4294967295"]), |fx| {
            topic(fx, "c", TopicConfig::default().partitions(u32::MAX)).map(drop)
        }),
        row("TopicConfig partitions(MAX_PARTITIONS + 1)", E("InvalidConfig", &["partitions"]), |fx| {
            topic(fx, "c", TopicConfig::default().partitions(MAX_PARTITIONS + 1)).map(drop)
        }),
        row("TopicConfig segment_bytes(0)", E("InvalidConfig", &["\"c\"", "segment_bytes 0"]), |fx| {
            topic(fx, "c", TopicConfig::default().segment_bytes(0)).map(drop)
        }),
        row("TopicConfig segment_bytes one byte below a record plus header", E("InvalidConfig", &["segment_bytes 1060", "max_record_bytes 1000"]), |fx| {
            topic(fx, "c", TopicConfig::default().max_record_bytes(LIMIT).segment_bytes(LIMIT as u64 + 60)).map(drop)
        }),
        row("TopicConfig segment_bytes i32::MAX + 1", E("InvalidConfig", &["segment_bytes 2147483648", "2147483647"]), |fx| {
            topic(fx, "c", TopicConfig::default().segment_bytes(MAX_SEGMENT_BYTES + 1)).map(drop)
        }),
        row("TopicConfig segment_bytes u64::MAX", E("InvalidConfig", &["segment_bytes"]), |fx| {
            topic(fx, "c", TopicConfig::default().segment_bytes(u64::MAX)).map(drop)
        }),
        row("TopicConfig segment_bytes i32::MAX is accepted", K, |fx| {
            let t = topic(fx, "max-segment", TopicConfig::default().segment_bytes(MAX_SEGMENT_BYTES))?;
            roundtrip(&t, Record::new("v")).map(drop)
        }),
        row("TopicConfig max_record_bytes(0)", E("InvalidConfig", &["max_record_bytes"]), |fx| {
            topic(fx, "c", TopicConfig::default().max_record_bytes(0)).map(drop)
        }),
        row("TopicConfig max_record_bytes(usize::MAX)", E("InvalidConfig", &["\"c\"", "max_record_bytes"]), |fx| {
            topic(fx, "c", TopicConfig::default().max_record_bytes(usize::MAX)).map(drop)
        }),
        row("TopicConfig min_cleanable_dirty_ratio NaN", E("InvalidConfig", &["min_cleanable_dirty_ratio", "NaN"]), |fx| {
            topic(fx, "c", TopicConfig::default().min_cleanable_dirty_ratio(f64::NAN)).map(drop)
        }),
        row("TopicConfig min_cleanable_dirty_ratio -0.1, 1.5, inf", E("InvalidConfig", &["min_cleanable_dirty_ratio", "inf"]), |fx| {
            for r in [-0.1, 1.5] {
                let e = topic(fx, "c", TopicConfig::default().min_cleanable_dirty_ratio(r));
                assert!(matches!(e, Err(Error::InvalidConfig { .. })), "{r}: {e:?}");
            }
            topic(fx, "c", TopicConfig::default().min_cleanable_dirty_ratio(f64::INFINITY)).map(drop)
        }),
        row("TopicConfig min_cleanable_dirty_ratio 0.0 and 1.0 are accepted", K, |fx| {
            topic(fx, "ratio-0", TopicConfig::default().min_cleanable_dirty_ratio(0.0))?;
            topic(fx, "ratio-1", TopicConfig::default().min_cleanable_dirty_ratio(1.0)).map(drop)
        }),
        row("TopicConfig replication_factor(0)", E("InvalidConfig", &["replication_factor"]), |fx| {
            topic(fx, "c", TopicConfig::default().replication_factor(0)).map(drop)
        }),
        row("TopicConfig min_insync_replicas above the replication factor", E("InvalidConfig", &["min_insync_replicas 2"]), |fx| {
            topic(fx, "c", TopicConfig::default().min_insync_replicas(2)).map(drop)
        }),
        row("refused configs create no topic and no directory", K, |fx| {
            assert!(!fx.log.topics().contains(&"c".to_owned()));
            assert!(!fx.dir.path().join("c-0").exists());
            Ok(())
        }),
        row("retention Some(0) bytes and zero age keep only the active segment", K, |fx| {
            let t = topic(fx, "retention-zero", TopicConfig::default().max_record_bytes(100).segment_bytes(1024).retention_bytes(Some(0)).retention(Some(Duration::ZERO)))?;
            for i in 0..100u32 {
                t.append(i.to_be_bytes(), [0u8; 40])?;
            }
            let p = t.partition(0)?;
            assert!(p.start_offset() > 0 && p.end_offset() == 100);
            let msgs = p.read(p.start_offset(), 100)?;
            assert_eq!(msgs.last().unwrap().key(), Some(&99u32.to_be_bytes()[..]));
            Ok(())
        }),
        row("Duration::MAX retention, lag and delete_retention mean forever", K, |fx| {
            let cfg = TopicConfig::default()
                .cleanup_policy(CleanupPolicy::CompactAndDelete)
                .max_record_bytes(100)
                .segment_bytes(1024)
                .retention(Some(Duration::MAX))
                .delete_retention(Duration::MAX);
            let t = topic(fx, "forever", cfg)?;
            t.append("gone", "v")?;
            t.send(Record::tombstone("gone"))?;
            for i in 0..60u32 {
                t.append(format!("k{}", i % 3), [0u8; 40])?;
            }
            // Two passes: the first marks the tombstone's segment clean, the
            // second would drop tombstones whose delete_retention passed.
            fx.log.compact_now("forever")?;
            fx.log.compact_now("forever")?;
            let p = t.partition(0)?;
            assert_eq!(p.start_offset(), 0, "retention of Duration::MAX deleted data");
            let msgs = p.read(0, 1000)?;
            assert!(
                msgs.iter().any(|m| m.offset() == 1 && m.value().is_none()),
                "the tombstone was dropped although delete_retention is Duration::MAX"
            );
            let lag = topic(fx, "forever-lag", TopicConfig::default().cleanup_policy(CleanupPolicy::Compact).max_record_bytes(100).segment_bytes(1024).min_compaction_lag(Duration::MAX))?;
            for i in 0..60u32 {
                lag.append("same", i.to_be_bytes())?;
            }
            fx.log.compact_now("forever-lag")?;
            assert_eq!(lag.partition(0)?.read(0, 100)?.len(), 60, "min_compaction_lag of Duration::MAX compacted");
            Ok(())
        }),
        row("compact_now of a topic that is not compacted", E("InvalidConfig", &["\"t\"", "not compacted"]), |fx| fx.log.compact_now("t").map(drop)),
        row("compact_now of a missing topic", E("UnknownTopic", &["\"nope\""]), |fx| fx.log.compact_now("nope").map(drop)),
        row("compacted topic refuses a record without a key", E("InvalidRecord", &["\"compacted\"", "key"]), |fx| {
            let t = topic(fx, "compacted", TopicConfig::default().cleanup_policy(CleanupPolicy::Compact))?;
            nothing_written(&t, || t.send(Record::new("v")))
        }),
        row("add_partitions to the same count", E("InvalidPartitions", &["\"t\"", "3 partitions", "3"]), |fx| fx.log.add_partitions("t", PARTS)),
        row("add_partitions to fewer", E("InvalidPartitions", &["\"t\"", "cannot change to 0"]), |fx| fx.log.add_partitions("t", 0)),
        row("add_partitions to u32::MAX", E("InvalidConfig", &["\"t\"", "4294967295"]), |fx| fx.log.add_partitions("t", u32::MAX)),
        row("add_partitions of a missing topic", E("UnknownTopic", &["\"nope\""]), |fx| fx.log.add_partitions("nope", 4)),
        row("set_compression of a missing topic", E("UnknownTopic", &["\"nope\""]), |fx| fx.log.set_compression("nope", brook::Compression::Zstd)),
        // ------------------------------------------------------------- log configs
        row("LogConfig SyncPolicy::Interval(0)", E("InvalidConfig", &["SyncPolicy::Interval"]), |_| {
            let d = tempfile::tempdir().unwrap();
            Log::open_with(d.path(), LogConfig::default().sync(SyncPolicy::Interval(Duration::ZERO))).map(drop)
        }),
        row("LogConfig retention_check_interval 0 and 61 s", E("InvalidConfig", &["retention_check_interval", "61s"]), |_| {
            let d = tempfile::tempdir().unwrap();
            let e = Log::open_with(d.path(), LogConfig::default().retention_check_interval(Duration::ZERO));
            assert!(matches!(e, Err(Error::InvalidConfig { .. })), "{e:?}");
            Log::open_with(d.path(), LogConfig::default().retention_check_interval(Duration::from_secs(61))).map(drop)
        }),
        row("LogConfig SyncPolicy::Interval(Duration::MAX) works", K, |_| {
            let d = tempfile::tempdir().unwrap();
            let log = Log::open_with(d.path(), LogConfig::default().sync(SyncPolicy::Interval(Duration::MAX)))?;
            let t = log.create_topic("x", TopicConfig::default())?;
            roundtrip(&t, Record::new("v"))?;
            log.close()
        }),
        row("open a directory that is a file", E("Io", &["create directory", "not-a-dir"]), |fx| {
            let f = fx.dir.path().join("not-a-dir");
            std::fs::write(&f, b"x").unwrap();
            Log::open(&f).map(drop)
        }),
        row("open a directory below a file", E("Io", &["not-a-dir-2"]), |fx| {
            let f = fx.dir.path().join("not-a-dir-2");
            std::fs::write(&f, b"x").unwrap();
            Log::open(f.join("sub")).map(drop)
        }),
        row("second open of the shared directory in this process", E("Locked", &[".lock"]), |fx| Log::open(fx.dir.path()).map(drop)),
        row("second open from another process is Locked, then opens once released", K, |_| {
            let d = tempfile::tempdir().unwrap();
            let log = Log::open(d.path())?;
            log.create_topic("x", TopicConfig::default())?.append("k", "from the parent")?;
            let report = child_open(d.path());
            assert!(report.starts_with("Locked {"), "child: {report}");
            assert!(report.contains(&d.path().join(".lock").display().to_string()), "child: {report}");
            assert_eq!(log.topic("x")?.partition(0)?.end_offset(), 1, "the refused child wrote");
            log.close()?;
            drop(log);
            assert_eq!(child_open(d.path()), "opened", "the lock was not released by close");
            let log = Log::open(d.path())?;
            let values: Vec<_> = log.topic("x")?.partition(0)?.read(0, 10)?.iter().map(|m| m.value().unwrap().to_vec()).collect();
            assert_eq!(values, [b"from the parent".to_vec(), b"from the child".to_vec()]);
            log.close()
        }),
        row("calls after close are Closed", K, |_| {
            let d = tempfile::tempdir().unwrap();
            let log = Log::open(d.path())?;
            let t = log.create_topic("x", TopicConfig::default())?;
            let p = t.partition(0)?;
            let mut c = log.consumer("g")?;
            c.assign(&[TopicPartition::new("x", 0)])?;
            log.close()?;
            log.close()?; // idempotent
            let closed = |r: Result<()>| matches!(&r, Err(Error::Closed { what }) if what.contains(&d.path().display().to_string()));
            assert!(closed(log.create_topic("y", TopicConfig::default()).map(drop)));
            assert!(closed(log.topic("x").map(drop)));
            assert!(closed(log.sync()));
            assert!(closed(log.consumer("g").map(drop)));
            assert!(closed(c.poll(Duration::ZERO).map(drop)));
            let r = t.append("k", "v").map(drop);
            assert!(matches!(r, Err(Error::Closed { .. })), "{r:?}");
            let r = p.read(0, 1).map(drop);
            assert!(matches!(r, Ok(()) | Err(Error::Closed { .. })), "{r:?}");
            Ok(())
        }),
        // ------------------------------------------------------------------ reads
        row("read at u64::MAX", E("OffsetOutOfRange", &["t-0", "18446744073709551615"]), |fx| fx.t.partition(0)?.read(u64::MAX, 10).map(drop)),
        row("read one past the end", E("OffsetOutOfRange", &["t-1"]), |fx| {
            let p = fx.t.partition(1)?;
            p.read(p.end_offset() + 1, 10).map(drop)
        }),
        row("read at u64::MAX for zero records", E("OffsetOutOfRange", &["t-0", "18446744073709551615"]), |fx| fx.t.partition(0)?.read(u64::MAX, 0).map(drop)),
        row("read at the end is empty; zero records is empty; usize::MAX records is everything", K, |fx| {
            let p = fx.t.partition(2)?;
            assert!(p.read(p.end_offset(), 10)?.is_empty());
            assert!(p.read(p.start_offset(), 0)?.is_empty());
            let all = p.read(p.start_offset(), usize::MAX)?;
            assert_eq!(all.len() as u64, p.end_offset() - p.start_offset());
            Ok(())
        }),
        row("read below the start after retention", E("OffsetOutOfRange", &["retained-0", "offset 0"]), |fx| {
            let t = topic(fx, "retained", TopicConfig::default().max_record_bytes(100).segment_bytes(1024).retention_bytes(Some(1)))?;
            for _ in 0..100 {
                t.append("k", [0u8; 40])?;
            }
            let p = t.partition(0)?;
            assert!(p.start_offset() > 0);
            p.read(0, 10).map(drop)
        }),
        // ------------------------------------------------------------- consumers
        row("consumer group id empty", E("InvalidGroupId", &["\"\"", "empty"]), |fx| fx.log.consumer("").map(drop)),
        row("consumer group id of 250 characters", E("InvalidGroupId", &["249"]), |fx| fx.log.consumer(&"g".repeat(250)).map(drop)),
        row("consumer group id of 1 MiB", E("InvalidGroupId", &["249"]), |fx| fx.log.consumer(&"g".repeat(1 << 20)).map(drop)),
        row("consumer group id with a control character", E("InvalidGroupId", &["control"]), |fx| fx.log.consumer("a\nb").map(drop)),
        row("admin view of an empty group id", E("InvalidGroupId", &["empty"]), |fx| fx.log.group("").map(drop)),
        row("consumer group id of 249 characters, non-ASCII ids work", K, |fx| {
            for id in ["g".repeat(249), "gruppe-ü名".to_owned()] {
                let mut c = fx.log.consumer_with(ConsumerConfig::new(&id).auto_offset_reset(OffsetReset::Earliest))?;
                c.subscribe(&["t"])?;
                assert!(!c.poll(Duration::from_secs(5))?.is_empty());
                c.commit()?;
                c.close()?;
                assert!(fx.log.groups().contains(&id));
            }
            Ok(())
        }),
        row("ConsumerConfig max_poll_records(0)", E("InvalidConfig", &["max_poll_records"]), |fx| fx.log.consumer_with(ConsumerConfig::new("g").max_poll_records(0)).map(drop)),
        row("ConsumerConfig session_timeout(0)", E("InvalidConfig", &["session_timeout"]), |fx| fx.log.consumer_with(ConsumerConfig::new("g").session_timeout(Duration::ZERO)).map(drop)),
        row("ConsumerConfig auto_commit_interval(0)", E("InvalidConfig", &["auto_commit_interval"]), |fx| fx.log.consumer_with(ConsumerConfig::new("g").auto_commit_interval(Duration::ZERO)).map(drop)),
        row("poll(Duration::MAX), session_timeout and auto_commit_interval of Duration::MAX, max_poll_records usize::MAX", K, |fx| {
            let cfg = ConsumerConfig::new("huge-durations")
                .auto_offset_reset(OffsetReset::Earliest)
                .session_timeout(Duration::MAX)
                .auto_commit_interval(Duration::MAX)
                .max_poll_records(usize::MAX);
            let mut c = fx.log.consumer_with(cfg)?;
            c.subscribe(&["t"])?;
            let got = c.poll(Duration::MAX)?; // data is there: returns at once
            assert!(!got.is_empty());
            c.commit()?;
            assert_eq!(fx.log.group("huge-durations")?.members().len(), 1);
            c.close()
        }),
        row("subscribe to a missing topic", E("UnknownTopic", &["\"nope\""]), |fx| fx.log.consumer("g")?.subscribe(&["t", "nope"])),
        row("assign partition u32::MAX", E("UnknownPartition", &["4294967295", "\"t\""]), |fx| {
            fx.log.consumer("g")?.assign(&[TopicPartition::new("t", u32::MAX)])
        }),
        row("assign a missing topic", E("UnknownTopic", &["\"nope\""]), |fx| fx.log.consumer("g")?.assign(&[TopicPartition::new("nope", 0)])),
        row("seek to u64::MAX", E("OffsetOutOfRange", &["t-0", "18446744073709551615"]), |fx| {
            let mut c = fx.log.consumer("g")?;
            let tp = TopicPartition::new("t", 0);
            c.assign(std::slice::from_ref(&tp))?;
            c.seek(&tp, u64::MAX)
        }),
        row("seek one past the end", E("OffsetOutOfRange", &["t-0"]), |fx| {
            let mut c = fx.log.consumer("g")?;
            let tp = TopicPartition::new("t", 0);
            c.assign(std::slice::from_ref(&tp))?;
            c.seek(&tp, fx.t.partition(0)?.end_offset() + 1)
        }),
        row("seek, position, commit of an unassigned partition", E("NotAssigned", &["t-1", "\"g\""]), |fx| {
            let mut c = fx.log.consumer("g")?;
            c.assign(&[TopicPartition::new("t", 0)])?;
            let tp = TopicPartition::new("t", 1);
            assert!(matches!(c.position(&tp), Err(Error::NotAssigned { .. })));
            assert!(matches!(c.commit_offsets(&[(tp.clone(), 0)]), Err(Error::NotAssigned { .. })));
            c.seek(&tp, 0)
        }),
        row("seek to the end, to i64::MIN and i64::MAX timestamps", K, |fx| {
            let mut c = fx.log.consumer_with(ConsumerConfig::new("seeker").enable_auto_commit(false))?;
            let tp = TopicPartition::new("t", 0);
            c.assign(std::slice::from_ref(&tp))?;
            let p = fx.t.partition(0)?;
            c.seek(&tp, p.end_offset())?;
            assert!(c.poll(Duration::ZERO)?.is_empty());
            c.seek_to_timestamp(&tp, i64::MIN)?;
            assert_eq!(c.position(&tp)?, p.start_offset());
            c.seek_to_timestamp(&tp, i64::MAX)?;
            assert_eq!(c.position(&tp)?, p.end_offset());
            Ok(())
        }),
        row("commit u64::MAX: accepted; the next consumer resets by its policy", K, |fx| {
            let tp = TopicPartition::new("t", 0);
            let mut c = fx.log.consumer_with(ConsumerConfig::new("far-commit").enable_auto_commit(false))?;
            c.assign(std::slice::from_ref(&tp))?;
            c.commit_offsets(&[(tp.clone(), u64::MAX)])?;
            assert_eq!(c.committed(&tp)?, Some(u64::MAX));
            c.close()?;
            let mut c = fx.log.consumer_with(ConsumerConfig::new("far-commit").auto_offset_reset(OffsetReset::Earliest))?;
            c.assign(std::slice::from_ref(&tp))?;
            assert_eq!(c.position(&tp)?, fx.t.partition(0)?.start_offset());
            let lag = fx.log.group("far-commit")?.lag()?;
            let l = lag.iter().find(|l| l.topic_partition == tp).unwrap();
            assert_eq!((l.committed, l.lag), (Some(u64::MAX), 0), "{lag:?}");
            Ok(())
        }),
        row("reset_offsets to u64::MAX", E("OffsetOutOfRange", &["t-0", "18446744073709551615"]), |fx| {
            fx.log.group("resetter")?.reset_offsets(&[TopicPartition::new("t", 0)], ResetTo::Offset(u64::MAX))
        }),
        row("reset_offsets of partition u32::MAX", E("UnknownPartition", &["4294967295"]), |fx| {
            fx.log.group("resetter")?.reset_offsets(&[TopicPartition::new("t", u32::MAX)], ResetTo::Earliest)
        }),
        row("reset_offsets to timestamps i64::MIN and i64::MAX", K, |fx| {
            let g = fx.log.group("resetter")?;
            let tp = TopicPartition::new("t", 0);
            g.reset_offsets(std::slice::from_ref(&tp), ResetTo::Timestamp(i64::MIN))?;
            assert_eq!(g.committed(&tp)?, Some(fx.t.partition(0)?.start_offset()));
            g.reset_offsets(std::slice::from_ref(&tp), ResetTo::Timestamp(i64::MAX))?;
            assert_eq!(g.committed(&tp)?, Some(fx.t.partition(0)?.end_offset()));
            Ok(())
        }),
        row("consumer calls after close are Closed", E("Closed", &["\"g\""]), |fx| {
            let mut c = fx.log.consumer("g")?;
            c.close()?;
            c.close()?;
            c.poll(Duration::ZERO).map(drop)
        }),
        // -------------------------------------------------------------- producers
        row("producer: too large, unknown partition, unknown topic, then a clean send", K, |fx| {
            let t = topic(fx, "produced", TopicConfig::default().max_record_bytes(LIMIT).partitions(2))?;
            let mut p = fx.log.producer(ProducerConfig::default())?;
            p.send("produced", Record::new("first").partition(0))?;
            let e = p.send("produced", Record::new(vec![0u8; 2 * LIMIT]).partition(0));
            assert!(matches!(e, Err(Error::RecordTooLarge { .. })), "{e:?}");
            let e = p.send("produced", Record::new("v").partition(u32::MAX));
            assert!(matches!(e, Err(Error::UnknownPartition { partition: u32::MAX, .. })), "{e:?}");
            let e = p.send("produced", Record::new("v").partition(0).timestamp(i64::MIN));
            assert!(matches!(e, Err(Error::InvalidRecord { .. })), "{e:?}");
            let e = p.send("nope", Record::new("v"));
            assert!(matches!(e, Err(Error::UnknownTopic { .. })), "{e:?}");
            let e = p.send("", Record::new("v"));
            assert!(matches!(e, Err(Error::UnknownTopic { .. })), "{e:?}");
            assert!(p.send_batch::<Record>("produced", &[])?.is_empty());
            // Refused sends spent no sequence numbers: the next one is in order.
            let m = p.send("produced", Record::new("second").partition(0))?;
            assert_eq!(m.offset, 1);
            let vals: Vec<_> = t.partition(0)?.read(0, 10)?.iter().map(|m| m.value().unwrap().to_vec()).collect();
            assert_eq!(vals, [b"first".to_vec(), b"second".to_vec()]);
            Ok(())
        }),
    ]
}

fn log_sync(fx: &Fx) -> Result<()> {
    fx.log.sync()
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(non-string panic)".into())
}

/// Appends to every partition of `t` and reads each record back.
fn still_usable(fx: &Fx, after: &str) -> std::result::Result<(), String> {
    let check = || -> Result<()> {
        for p in 0..PARTS {
            let v = format!("after {after}");
            let m = fx.t.send(Record::new(&v).key("usable").partition(p))?;
            let got = fx.t.partition(p)?.read(m.offset, 1)?;
            if got.len() != 1 || got[0].value() != Some(v.as_bytes()) {
                panic!("read back {got:?}");
            }
        }
        Ok(())
    };
    match catch_unwind(AssertUnwindSafe(check)) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("log unusable afterwards: {e}")),
        Err(p) => Err(format!(
            "log unusable afterwards: panicked: {}",
            panic_text(&*p)
        )),
    }
}

#[test]
fn bad_input_rows() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let t = log
        .create_topic(
            "t",
            TopicConfig::default()
                .partitions(PARTS)
                .max_record_bytes(LIMIT)
                .segment_bytes(64 << 10),
        )
        .unwrap();
    for i in 0..30u32 {
        t.send(Record::new(format!("seed {i}")).partition(i % PARTS))
            .unwrap();
    }
    let fx = Fx { dir, log, t };
    let rows = rows();
    let mut names = std::collections::HashSet::new();
    let mut failures = Vec::new();
    for row in &rows {
        assert!(names.insert(row.name), "duplicate row name {:?}", row.name);
        let outcome = catch_unwind(AssertUnwindSafe(|| (row.run)(&fx)));
        let verdict = match (outcome, &row.expect) {
            (Err(p), _) => Err(format!("panicked: {}", panic_text(&*p))),
            (Ok(Ok(())), Expect::Ok) => Ok(()),
            (Ok(Ok(())), Expect::Err(v, _)) => Err(format!("returned Ok, expected Error::{v}")),
            (Ok(Err(e)), Expect::Ok) => Err(format!("failed: {e:?} ({e})")),
            (Ok(Err(e)), Expect::Err(variant, mentions)) => {
                let debug = format!("{e:?}");
                let text = e.to_string();
                if !debug.starts_with(&format!("{variant} ")) {
                    Err(format!("expected Error::{variant}, got {debug}"))
                } else if let Some(m) = mentions.iter().find(|m| !text.contains(*m)) {
                    Err(format!("message does not mention {m:?}: {text}"))
                } else {
                    Ok(())
                }
            }
        };
        let verdict = verdict.and_then(|()| still_usable(&fx, row.name));
        if let Err(why) = verdict {
            failures.push(format!("row {:?}: {why}", row.name));
        }
    }
    fx.log.close().unwrap();
    drop(fx.log);
    // Everything the rows left behind reopens.
    let log = Log::open(fx.dir.path()).unwrap();
    let t = log.topic("t").unwrap();
    for p in 0..PARTS {
        let part = t.partition(p).unwrap();
        let msgs = part.read(0, usize::MAX).unwrap();
        assert_eq!(msgs.len() as u64, part.end_offset(), "t-{p} after reopen");
    }
    log.close().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
    eprintln!("bad_input: {} rows passed", rows.len());
}
