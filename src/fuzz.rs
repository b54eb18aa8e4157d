//! Fuzz entry points (cargo feature `fuzzing`; not part of the API).
//!
//! Each takes arbitrary bytes and returns nothing. None may panic on any
//! input: bad bytes are errors (`Error::Corrupt` where the public API is
//! involved) or a refusal. A panic is a finding — either a decoder that
//! trusts its input or one of the properties asserted here:
//!
//! - [`batch`]: the RecordBatch read path. A batch `validate_batch`
//!   accepts decodes record by record; an open batch `scan_open_batch`
//!   accepts validates once resealed; a valid batch compressed with
//!   `compress_batch` validates and decodes to the same records.
//! - [`index`]: the offset/time index readers. Lookups in indexes the
//!   checks accept agree with a linear search; an index rebuilt from a
//!   clean scan passes the check that loads it.
//! - [`segment`]: the bytes as a segment file in a real partition, opened
//!   as after a clean close and as after a crash: open, read everything,
//!   `offset_for_timestamp` give `Ok` or `Error::Corrupt`; reads make
//!   progress; a recovered partition takes an append and reopens to the
//!   same records.
//! - [`offsets`]: the consumer-offset store's key/value decoders and the
//!   transaction store's record decoder; accepted keys and states
//!   re-encode to what was decoded.
//!
//! `fuzz/` (cargo-fuzz) and `tests/fuzz_corpus.rs` drive these.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::format::{
    compress_batch, decode_records, marker_kind, reseal_open_batch, scan_open_batch,
    validate_batch, BatchHeader, BATCH_HEADER_BYTES,
};
use crate::storage::{
    check_closed_index, offset_lookup, scan_batches, time_floor, IndexBuilder, Scan,
};
use crate::{Compression, Error, Log, LogConfig, Partition, Record, SyncPolicy, TopicConfig};

// ---------------------------------------------------------------------------
// batch

/// One decoded record: offset delta, timestamp delta, key, value, headers.
type Decoded = (
    i32,
    i64,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(String, Vec<u8>)>,
);

/// Parses and validates `data` as one RecordBatch the way reads do, and
/// decodes every record of a batch that validates. Also runs the bytes with
/// `batchLength` and the CRC fixed up, so the fuzzer reaches the records.
pub fn batch(data: &[u8]) {
    check_batch(data);
    if data.len() >= BATCH_HEADER_BYTES {
        let mut fixed = data.to_vec();
        if let Ok(len) = i32::try_from(data.len() - 12) {
            fixed[8..12].copy_from_slice(&len.to_be_bytes());
        }
        fix_crc(&mut fixed);
        check_batch(&fixed);
    }
}

/// Recomputes the CRC-32C of the batch occupying all of `b` (61+ bytes).
fn fix_crc(b: &mut [u8]) {
    let crc = crate::format::crc::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
}

fn check_batch(b: &[u8]) {
    if let Some(scan) = scan_open_batch(b) {
        assert!(scan.len <= b.len() && scan.len >= BATCH_HEADER_BYTES);
        let mut sealed = b[..scan.len].to_vec();
        reseal_open_batch(&mut sealed, scan);
        let h = validate_batch(&sealed).unwrap_or_else(|e| {
            panic!("an open batch scan_open_batch accepted fails validation once resealed: {e}")
        });
        assert_eq!(h.records_count, scan.count);
        assert_eq!(h.last_offset_delta, scan.last_offset_delta);
        decode_all(&h, &sealed);
    }
    let Ok(h) = BatchHeader::parse(b) else { return };
    let (_, _, _) = (h.compression(), h.is_control(), h.is_transactional());
    assert!(h.last_offset() >= h.base_offset as u64);
    if h.total_len() > b.len() {
        return;
    }
    let batch = &b[..h.total_len()];
    let _ = h.crc_matches(batch);
    let Ok(v) = validate_batch(batch) else {
        return;
    };
    assert_eq!(v, h);
    let records = decode_all(&h, batch);
    if h.is_control() && h.compression() == Compression::None {
        let _ = marker_kind(batch);
    }
    // Compressing a valid plain batch keeps it valid and its records equal.
    if h.compression() == Compression::None && batch.len() <= 1 << 16 {
        let codecs = [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ];
        let codec = codecs[batch.len() % codecs.len()];
        let mut packed = Vec::new();
        if codec.is_available() && compress_batch(batch, codec, &mut packed).is_ok() {
            let ph = validate_batch(&packed)
                .unwrap_or_else(|e| panic!("{codec:?} batch fails validation: {e}"));
            assert_eq!(ph.compression(), codec);
            assert_eq!(
                decode_all(&ph, &packed),
                records,
                "{codec:?} changed the records"
            );
        }
    }
}

/// Decodes every record of a batch `validate_batch` accepted (panics if one
/// does not decode: validation promised they do).
fn decode_all(h: &BatchHeader, batch: &[u8]) -> Vec<Decoded> {
    let records = decode_records(h, batch).expect("a validated batch's records decode");
    assert_eq!(records.len(), h.records_count as usize);
    records
        .into_iter()
        .map(|r| {
            assert!(r.offset_delta <= h.last_offset_delta);
            let _ = h.base_timestamp.wrapping_add(r.timestamp_delta);
            (r.offset_delta, r.timestamp_delta, r.key, r.value, r.headers)
        })
        .collect()
}

// ---------------------------------------------------------------------------
// index

/// The sparse index readers. Layout of `data`: segment length (u32 BE),
/// base offset (u64 BE, top bit ignored), bytes of the `.index` part and of
/// the `.timeindex` part (u16 BE each), then the `.index` bytes, the
/// `.timeindex` bytes, and the rest: the segment's `.log` bytes, which are
/// scanned as a rebuild does, and the index rebuilt from them checked and
/// looked up.
pub fn index(data: &[u8]) {
    if data.len() < 16 {
        return;
    }
    let len = u32::from_be_bytes(data[0..4].try_into().expect("4 bytes")) as u64;
    let base = u64::from_be_bytes(data[4..12].try_into().expect("8 bytes")) & i64::MAX as u64;
    let n_off = u16::from_be_bytes(data[12..14].try_into().expect("2 bytes")) as usize;
    let n_time = u16::from_be_bytes(data[14..16].try_into().expect("2 bytes")) as usize;
    let rest = &data[16..];
    let (offsets, rest) = rest.split_at(n_off.min(rest.len()));
    let (times, log) = rest.split_at(n_time.min(rest.len()));

    let offset_entries: Vec<(u32, u32)> = offsets
        .chunks_exact(8)
        .map(|e| {
            (
                u32::from_be_bytes(e[0..4].try_into().expect("4")),
                u32::from_be_bytes(e[4..8].try_into().expect("4")),
            )
        })
        .collect();
    let time_entries: Vec<(i64, u32)> = times
        .chunks_exact(12)
        .map(|e| {
            (
                i64::from_be_bytes(e[0..8].try_into().expect("8")),
                u32::from_be_bytes(e[8..12].try_into().expect("4")),
            )
        })
        .collect();
    let mut targets: Vec<u64> = vec![0, base, base.saturating_sub(1), base + 1, u64::MAX];
    for &(rel, _) in offset_entries.iter().take(64) {
        let at = base + rel as u64;
        targets.extend([at.saturating_sub(1), at, at + 1]);
    }
    let mut stamps: Vec<i64> = vec![i64::MIN, -1, 0, 1, i64::MAX];
    for &(ts, _) in time_entries.iter().take(64) {
        stamps.extend([ts.saturating_sub(1), ts, ts.saturating_add(1)]);
    }

    // A closed segment's index, as `Segment::load_index` checks it.
    if let Some(max_ts) = check_closed_index(offsets, times, len) {
        assert_eq!(max_ts, time_entries.last().map(|e| e.0));
        for &t in &targets {
            let (pos, expect) = offset_lookup(offsets, base, t);
            let rel = t.saturating_sub(base);
            let want = offset_entries.iter().rev().find(|e| e.0 as u64 <= rel);
            match want {
                Some(&(r, p)) => {
                    assert_eq!((pos, expect), (p as u64, Some(base + r as u64)));
                    assert!(pos < len);
                }
                None => assert_eq!((pos, expect), (0, None)),
            }
        }
        for &ts in &stamps {
            let got = time_floor(times, base, ts);
            let want = time_entries
                .iter()
                .rev()
                .find(|e| e.0 < ts)
                .map(|e| base + e.1 as u64);
            assert_eq!(got, want, "time_floor({ts})");
        }
    }

    // An active segment's index, as a clean reopen reads it.
    if let Some(ix) = IndexBuilder::from_active_files(offsets, times, len) {
        assert_eq!(ix.encode_offsets(), offsets[..offset_entries.len() * 8]);
        assert_eq!(ix.encode_times(), times[..time_entries.len() * 12]);
        for &t in &targets {
            let pos = ix.lookup(base, t);
            assert!(pos == 0 || pos < len);
        }
    }

    // The index a rebuild writes (`Segment::rebuild_index`) passes the
    // check that loads it, unless the segment is one no writer makes:
    // relative offsets past 32 bits or a negative largest timestamp. Each
    // lookup in it lands on a batch that ends where the entry says.
    for gaps in [false, true] {
        let Scan {
            mut ix, bad, end, ..
        } = scan_batches(log, base, 0, gaps);
        assert!(end as usize <= log.len());
        if bad.is_some() {
            continue;
        }
        assert_eq!(end as usize, log.len());
        ix.add_time_entry(base);
        let fits = ix.offset_of_max_timestamp.saturating_sub(base) <= u32::MAX as u64
            && scan_last_offset(log).is_none_or(|last| last - base <= u32::MAX as u64);
        if !fits || (ix.max_timestamp < 0 && !log.is_empty()) {
            continue;
        }
        let (ob, tb) = (ix.encode_offsets(), ix.encode_times());
        assert!(
            check_closed_index(&ob, &tb, end).is_some(),
            "a rebuilt index fails its own check (gaps: {gaps})"
        );
        for &(rel, _) in ix.offsets.iter().take(64) {
            let at = base + rel as u64;
            for t in [at, at + 1] {
                let (pos, expect) = offset_lookup(&ob, base, t);
                let h = BatchHeader::parse(&log[pos as usize..])
                    .expect("an index entry points at a batch");
                assert_eq!(Some(h.last_offset()), expect, "index entry for {t}");
                assert_eq!(ix.lookup(base, t), pos);
            }
        }
    }
}

/// Last offset of the last batch of whole-batch segment bytes.
fn scan_last_offset(mut b: &[u8]) -> Option<u64> {
    let mut last = None;
    while let Ok(h) = BatchHeader::parse(b) {
        last = Some(h.last_offset());
        b = b.get(h.total_len()..)?;
    }
    last
}

// ---------------------------------------------------------------------------
// segment

/// `data[0]` picks the scenario, `data[1..]` is a segment file's bytes:
///
/// - bit 0: the bytes replace the first segment of partition `t-0` of a
///   template log (0), or its last, active one (1);
/// - bit 1: that segment's `.index` and `.timeindex` are deleted;
/// - bit 2: the crashed copy looks rebooted since (the boot id in `.lock`
///   differs), so recovery truncates instead of resealing;
/// - bit 3: every batch's CRC is recomputed first (walking `batchLength`),
///   so mutations reach record decoding;
///
/// The template (three segments of small batches) is written once per
/// process. The bytes are then opened in two fresh copies of it: as after
/// its clean close, and as after a crash (no marker, no checkpoint).
pub fn segment(data: &[u8]) {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    let mut bytes = bytes.to_vec();
    if mode & 8 != 0 {
        fix_crcs(&mut bytes);
    }
    let template = template();
    for crashed in [false, true] {
        let dir = fresh_dir();
        copy_dir(template, &dir);
        let part = dir.join("t-0");
        let logs = segment_files(&part);
        let target = if mode & 1 == 0 {
            logs.first()
        } else {
            logs.last()
        }
        .expect("template segments")
        .clone();
        std::fs::write(&target, &bytes).expect("write segment");
        if mode & 2 != 0 {
            let _ = std::fs::remove_file(target.with_extension("index"));
            let _ = std::fs::remove_file(target.with_extension("timeindex"));
        }
        if crashed {
            let _ = std::fs::remove_file(dir.join(".clean-shutdown"));
            let _ = std::fs::remove_file(dir.join("recovery-checkpoint"));
            if mode & 4 != 0 {
                std::fs::write(dir.join(".lock"), "pid=1\nboot_id=a-reboot-ago\n")
                    .expect("write .lock");
            }
        }
        open_read_reopen(&dir, &data[1..]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Recomputes the CRC of every batch of `b` whose declared length fits.
fn fix_crcs(b: &mut [u8]) {
    let mut pos = 0usize;
    while pos + BATCH_HEADER_BYTES <= b.len() {
        let len = i32::from_be_bytes(b[pos + 8..pos + 12].try_into().expect("4 bytes"));
        let Some(total) = usize::try_from(len).ok().and_then(|l| l.checked_add(12)) else {
            return;
        };
        if total < BATCH_HEADER_BYTES || pos + total > b.len() {
            return;
        }
        fix_crc(&mut b[pos..pos + total]);
        pos += total;
    }
}

/// `(offset, timestamp, key, value)` of each record read.
type ReadRecord = (u64, i64, Option<Vec<u8>>, Option<Vec<u8>>);

fn config() -> LogConfig {
    LogConfig::default().sync(SyncPolicy::Never).cleaner(false)
}

/// An error the documented outcomes allow: only `Error::Corrupt`.
fn expect_corrupt(what: &str, e: &Error) {
    assert!(
        matches!(e, Error::Corrupt { .. }),
        "{what}: expected Ok or Error::Corrupt, got {e:?}"
    );
}

fn open_read_reopen(dir: &Path, data: &[u8]) {
    let log = match Log::open_with(dir, config()) {
        Ok(log) => log,
        Err(e) => return expect_corrupt("open", &e),
    };
    let p = log.topic("t").expect("topic t").partition(0).expect("t-0");
    let first = read_all(&p);
    probe_timestamps(&p, data, first.as_ref().ok());
    let Ok(records) = first else {
        let _ = log.close();
        return;
    };
    // A partition that read back without error takes an append, and
    // reopens (clean) to the same records plus that one.
    let end = p.end_offset();
    let mut want = records;
    if end < 1 << 62 {
        let meta = log
            .topic("t")
            .expect("topic t")
            .send(Record::new("after").key("fuzz").partition(0).timestamp(7))
            .unwrap_or_else(|e| panic!("append after open at {end}: {e:?}"));
        assert_eq!(meta.offset, end, "append after open");
        want.push((end, 7, Some(b"fuzz".to_vec()), Some(b"after".to_vec())));
    }
    match log.close() {
        Ok(()) => {}
        Err(e) => return expect_corrupt("close", &e),
    }
    drop(p);
    drop(log);
    let log = Log::open_with(dir, config()).unwrap_or_else(|e| panic!("reopen: {e:?}"));
    let p = log.topic("t").expect("topic t").partition(0).expect("t-0");
    let again = read_all(&p).unwrap_or_else(|e| panic!("read after reopen: {e:?}"));
    assert!(
        again == want,
        "reopen changed the records ({} then {})",
        want.len(),
        again.len()
    );
    log.close()
        .unwrap_or_else(|e| panic!("close after reopen: {e:?}"));
}

/// Reads the partition from its start to its end (`read_with`, as
/// consumers do), checking offsets; the first error ends it. A read that
/// returns nothing and no later offset also ends it: no record follows
/// (the offsets left are the tail of a batch whose `lastOffsetDelta`
/// passes its last record, or, after a clean close, a checkpoint end past
/// a replaced active segment's records).
fn read_all(p: &Partition) -> Result<Vec<ReadRecord>, Error> {
    let (start, end) = (p.start_offset(), p.end_offset());
    assert!(start <= end);
    let mut at = start;
    let mut out: Vec<ReadRecord> = Vec::new();
    let mut msgs = Vec::new();
    for _ in 0..100_000 {
        if at >= end {
            break;
        }
        msgs.clear();
        let next = match p.log().read_with(at, 64, &mut msgs, false) {
            Ok(next) => next,
            Err(e) => {
                expect_corrupt("read", &e);
                return Err(e);
            }
        };
        for m in &msgs {
            assert!(
                m.offset() >= at && m.offset() < end,
                "read({at}) returned offset {} outside {at}..{end}",
                m.offset()
            );
            if let Some(last) = out.last() {
                assert!(m.offset() > last.0, "offsets go backwards");
            }
            let _ = m.headers().count();
            out.push((
                m.offset(),
                m.timestamp(),
                m.key().map(<[u8]>::to_vec),
                m.value().map(<[u8]>::to_vec),
            ));
        }
        if next <= at {
            break;
        }
        at = next;
    }
    Ok(out)
}

/// `offset_for_timestamp` for a few timestamps: `Ok` with an offset in the
/// partition, or `Error::Corrupt`.
fn probe_timestamps(p: &Partition, data: &[u8], records: Option<&Vec<ReadRecord>>) {
    let mut stamps = vec![i64::MIN, 0, i64::MAX];
    if let Some(r) = records {
        stamps.extend(r.iter().step_by(16).take(4).map(|r| r.1));
    }
    if data.len() >= 8 {
        stamps.push(i64::from_be_bytes(
            data[data.len() - 8..].try_into().expect("8"),
        ));
    }
    let (start, end) = (p.start_offset(), p.end_offset());
    for ts in stamps {
        match p.offset_for_timestamp(ts) {
            Ok(Some(o)) => assert!(
                (start..end).contains(&o),
                "offset_for_timestamp({ts}) = {o} outside {start}..{end}"
            ),
            Ok(None) => {}
            Err(e) => expect_corrupt("offset_for_timestamp", &e),
        }
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Where the fuzz logs go: `BROOK_FUZZ_TMP`, else `/dev/shm` (memory), else
/// the system temp dir.
fn tmp_root() -> PathBuf {
    if let Some(d) = std::env::var_os("BROOK_FUZZ_TMP") {
        return d.into();
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        return shm.to_owned();
    }
    std::env::temp_dir()
}

/// A new, empty directory that nothing else uses.
fn fresh_dir() -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = tmp_root().join(format!("brook-fuzz-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for e in std::fs::read_dir(from).expect("read template") {
        let e = e.expect("dir entry");
        let path = e.path();
        if path.is_dir() {
            copy_dir(&path, &to.join(e.file_name()));
        } else {
            std::fs::copy(&path, to.join(e.file_name())).expect("copy template file");
        }
    }
}

/// The template log, closed cleanly: topic `t`, one partition of three
/// segments (600 bytes each) holding batches of four small records, one
/// of them with a header and one a tombstone.
pub(crate) fn template() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let dir = fresh_dir();
        write_sample_log(&dir, Compression::None).expect("write the template log");
        dir
    })
}

/// Writes a small log to `dir`: topic `t`, 600-byte segments, batches of
/// four records sealed one by one, compressed with `codec`; closed.
pub fn write_sample_log(dir: &Path, codec: Compression) -> crate::Result<()> {
    let log = Log::open_with(dir, config())?;
    let topic = log.create_topic(
        "t",
        TopicConfig::default()
            .segment_bytes(600)
            .max_record_bytes(100)
            .compression(codec),
    )?;
    for b in 0..9i64 {
        let records: Vec<Record> = (0..4i64)
            .map(|i| {
                let n = b * 4 + i;
                let r = Record::new(format!("value-{n}"))
                    .key(format!("k{n}"))
                    .partition(0)
                    .timestamp(1_700_000_000_000 + n * 10 - i);
                match n % 7 {
                    3 => r.header("trace", format!("{n}")),
                    5 => Record::tombstone(format!("k{n}"))
                        .partition(0)
                        .timestamp(1_700_000_000_000 + n * 10),
                    _ => r,
                }
            })
            .collect();
        topic.send_batch(&records)?;
        log.flush()?;
    }
    log.close()
}

// ---------------------------------------------------------------------------
// offsets

/// The consumer-offset store's record decoder and the transaction store's.
/// The whole of `data` is tried as a key, as a value and as a transaction
/// state; then, with `data[0]` giving the key's length, as a key/value
/// pair split from `data[1..]`.
pub fn offsets(data: &[u8]) {
    check_offset_record(Some(data), None);
    check_offset_record(Some(data), Some(data));
    check_txn_record(Some(b"id"), Some(data));
    if let Some((&n, rest)) = data.split_first() {
        let (key, value) = rest.split_at((n as usize).min(rest.len()));
        check_offset_record(Some(key), Some(value));
        check_offset_record(None, Some(value));
        check_txn_record(Some(key), Some(value));
        check_txn_record(Some(key), None);
    }
}

fn check_offset_record(key: Option<&[u8]>, value: Option<&[u8]>) {
    let Ok((group, tp, offset)) = crate::consumer::decode_offset_record(key, value) else {
        return;
    };
    let key = key.expect("a decoded record has a key");
    assert_eq!(
        crate::consumer::encode_offset_key(&group, &tp),
        key,
        "a decoded key re-encodes differently"
    );
    assert_eq!(offset.map(u64::to_be_bytes).as_ref().map(|v| &v[..]), value);
}

fn check_txn_record(key: Option<&[u8]>, value: Option<&[u8]>) {
    let Ok((id, state)) = crate::txn::decode_record(key, value) else {
        return;
    };
    assert_eq!(Some(id.as_bytes()), key);
    let _ = state.is_open();
    let json = serde_json::to_vec(&state).expect("a transaction state serializes");
    let (_, back) = crate::txn::decode_record(key, Some(&json))
        .unwrap_or_else(|e| panic!("a re-encoded transaction state fails to decode: {e}"));
    assert_eq!(back, state);
}

// ---------------------------------------------------------------------------
// seeds

/// One seed input: entry point, file name, bytes.
pub type Seed = (&'static str, String, Vec<u8>);

/// Seed inputs for every entry point, written by brook itself (what
/// `fuzz/corpus/` holds; `tests/fuzz_corpus.rs` regenerates it). Logs are
/// written under `scratch`.
pub fn seeds(scratch: &Path) -> crate::Result<Vec<Seed>> {
    let mut out: Vec<Seed> = Vec::new();
    let codecs = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];
    for codec in codecs.into_iter().filter(|c| c.is_available()) {
        let name = format!("{codec:?}").to_lowercase();
        let dir = scratch.join(format!("sample-{name}"));
        write_sample_log(&dir, codec)?;
        let logs = segment_files(&dir.join("t-0"));
        let first = std::fs::read(&logs[0]).expect("read segment");
        if codec == Compression::None {
            let last = std::fs::read(logs.last().expect("segments")).expect("read segment");
            out.push(("segment", "plain-first".into(), with_mode(0, &first)));
            out.push((
                "segment",
                "plain-first-no-index".into(),
                with_mode(2, &first),
            ));
            out.push(("segment", "plain-active".into(), with_mode(1, &last)));
            out.push((
                "segment",
                "plain-first-reboot".into(),
                with_mode(4 | 8, &first),
            ));
            let b = batches(&first);
            // An open batch as a killed writer leaves it: CRC 0, length and
            // last offset delta stale, zeros after its records.
            let mut open = b[1].clone();
            open[17..21].fill(0);
            open[8..12].copy_from_slice(&49i32.to_be_bytes());
            open[23..27].fill(0);
            open.extend_from_slice(&[0; 40]);
            out.push(("batch", "open".into(), open));
            out.push(("batch", "plain".into(), b[0].clone()));
            out.push(("batch", "plain-with-header".into(), b[1].clone()));
        } else {
            out.push(("segment", format!("{name}-first"), with_mode(8, &first)));
            out.push(("batch", name, batches(&first)[0].clone()));
        }
    }

    // Transactions: batches of a producer, commit and abort markers.
    let dir = scratch.join("txn");
    {
        let log = Log::open_with(&dir, config())?;
        log.create_topic(
            "t",
            TopicConfig::default()
                .segment_bytes(600)
                .max_record_bytes(100),
        )?;
        let mut p = log.producer(crate::ProducerConfig::default().transactional_id("fuzz"))?;
        for (n, commit) in [(3, true), (2, false)] {
            p.begin_transaction()?;
            for i in 0..n {
                p.send("t", Record::new(format!("v{i}")).key("k").partition(0))?;
            }
            if commit {
                p.commit_transaction()?;
            } else {
                p.abort_transaction()?;
            }
        }
        drop(p);
        log.close()?;
    }
    let first = std::fs::read(&segment_files(&dir.join("t-0"))[0]).expect("read segment");
    out.push(("segment", "txn-first".into(), with_mode(0, &first)));
    out.push(("segment", "txn-first-crash".into(), with_mode(2, &first)));
    let b = batches(&first);
    if let Some(c) = b
        .iter()
        .find(|b| BatchHeader::parse(b).is_ok_and(|h| h.is_control()))
    {
        out.push(("batch", "marker".into(), c.clone()));
    }
    if let Some(t) = b
        .iter()
        .find(|b| BatchHeader::parse(b).is_ok_and(|h| h.is_transactional() && !h.is_control()))
    {
        out.push(("batch", "transactional".into(), t.clone()));
    }

    // Indexes: a segment big enough for a few entries.
    let dir = scratch.join("index");
    {
        let log = Log::open_with(&dir, config())?;
        let t = log.create_topic("t", TopicConfig::default())?;
        for b in 0..24i64 {
            let records: Vec<Record> = (0..4i64)
                .map(|i| {
                    Record::new(vec![b'v'; 300])
                        .key(format!("k{b}-{i}"))
                        .partition(0)
                        .timestamp(1_700_000_000_000 + b * 100 + (i * 37) % 100)
                })
                .collect();
            t.send_batch(&records)?;
            log.flush()?;
        }
        log.close()?;
    }
    let seg = &segment_files(&dir.join("t-0"))[0];
    let log_bytes = std::fs::read(seg).expect("read segment");
    let ix = std::fs::read(seg.with_extension("index")).expect("read index");
    let tix = std::fs::read(seg.with_extension("timeindex")).expect("read timeindex");
    let index_seed = |ix: &[u8], tix: &[u8], log: &[u8], base: u64| {
        let mut v = Vec::new();
        v.extend_from_slice(&(log_bytes.len() as u32).to_be_bytes());
        v.extend_from_slice(&base.to_be_bytes());
        v.extend_from_slice(&(ix.len() as u16).to_be_bytes());
        v.extend_from_slice(&(tix.len() as u16).to_be_bytes());
        v.extend_from_slice(ix);
        v.extend_from_slice(tix);
        v.extend_from_slice(log);
        v
    };
    out.push((
        "index",
        "with-log".into(),
        index_seed(&ix, &tix, &log_bytes, 0),
    ));
    out.push((
        "index",
        "entries-only".into(),
        index_seed(&ix, &tix, &[], 0),
    ));
    out.push((
        "index",
        "base-52133".into(),
        index_seed(&ix, &tix, &[], 52133),
    ));

    // Consumer offsets and transaction states.
    let key = |g: &str, t: &str, p: u32| {
        crate::consumer::encode_offset_key(g, &crate::TopicPartition::new(t, p))
    };
    let pair = |k: &[u8], v: &[u8]| {
        let mut d = vec![k.len() as u8];
        d.extend_from_slice(k);
        d.extend_from_slice(v);
        d
    };
    out.push(("offsets", "key".into(), key("billing", "orders", 3)));
    out.push(("offsets", "key-empty-group".into(), key("", "t", 0)));
    out.push((
        "offsets",
        "commit".into(),
        pair(&key("g", "orders", 7), &42u64.to_be_bytes()),
    ));
    out.push((
        "offsets",
        "commit-unicode".into(),
        pair(
            &key("grüppe", "topic.x_y-1", u32::MAX),
            &u64::MAX.to_be_bytes(),
        ),
    ));
    let state = crate::txn::TxnState {
        producer_id: 1000,
        epoch: 3,
        status: crate::txn::TxnStatus::Ongoing,
        partitions: [("orders".to_string(), 0u32), ("invoices".to_string(), 2)]
            .into_iter()
            .collect(),
        offsets: vec![("billing".into(), "orders".into(), 0, 42)],
        started_ms: 1_700_000_000_000,
        timeout_ms: 60_000,
    };
    let json = serde_json::to_vec(&state).expect("serializes");
    out.push(("offsets", "txn-state".into(), json.clone()));
    out.push(("offsets", "txn-record".into(), pair(b"etl", &json)));
    let empty = crate::txn::TxnState {
        status: crate::txn::TxnStatus::CompleteCommit,
        partitions: Default::default(),
        offsets: Vec::new(),
        ..state
    };
    let json = serde_json::to_vec(&empty).expect("serializes");
    out.push(("offsets", "txn-complete".into(), json));
    Ok(out)
}

fn with_mode(mode: u8, bytes: &[u8]) -> Vec<u8> {
    let mut v = vec![mode];
    v.extend_from_slice(bytes);
    v
}

/// The `.log` files of a partition directory, oldest first.
fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("partition directory")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs
}

/// The batches of whole-batch segment bytes.
fn batches(mut b: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Ok(h) = BatchHeader::parse(b) {
        let Some(batch) = b.get(..h.total_len()) else {
            break;
        };
        out.push(batch.to_vec());
        b = &b[h.total_len()..];
    }
    out
}
