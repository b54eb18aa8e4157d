//! Everything at once, for a bounded time: many threads use one log
//! concurrently, then the test checks that nothing was lost, duplicated or
//! corrupted and that every error a call returned is one the API documents
//! for that situation.
//!
//! Threads (all started together, stopped after the budget):
//! - appenders on topic `plain` (4 partitions, small segments so they roll,
//!   no retention, no compaction): `Topic::send`, `Topic::send_batch`, and
//!   an idempotent `Producer` (`send` and `send_batch`);
//! - an appender on `retained` (small `retention_bytes`: retention deletes
//!   segments while the others read) and one on `compacted` (a compacted
//!   topic with few keys);
//! - readers: `Partition::read` from random offsets of all three topics;
//!   every message must be the record whose content its own bytes name
//!   (values, keys and headers are derived from the writer and sequence
//!   number), in offset order, without gaps where there can be none;
//! - a consumer group of 3 members polling `plain` and committing after
//!   each poll; one member leaves and rejoins half-way (rebalances);
//! - a thread flushing and syncing the log (segments roll by size);
//! - a compaction thread running `log.compact_now("compacted")`;
//! - a thread creating, appending to and deleting scratch topics (half of
//!   them compacted with a small `retention_bytes`), one using them (via
//!   `log.topic`) while they come and go, and one compacting them.
//!
//! At the end: every acknowledged record of `plain` is at its offset with
//! its content, and `plain` holds nothing else (no loss, no duplicate, also
//! for the idempotent producer); reads saw what was acknowledged at each
//! offset; the group consumed every record at least once, in order within
//! each member's ownership of a partition, and committed the end; each
//! key's latest record of `compacted` survived compaction; and every error
//! returned is in the allowed list (printed with counts).
//!
//! `BROOK_STRESS_SECS` sets how long the load runs (default 4 s; about 8 s
//! in all in a debug build). The run's budget is twice that plus 2 s (load,
//! then draining the group, checking and closing); a watchdog aborts the
//! process with a message (phase, threads still running, errors so far,
//! and every thread's stack if gdb is installed) if the test runs longer
//! than 3x its budget: a deadlock or livelock. `BROOK_STRESS_SEED` replays
//! the random choices.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use brook::{
    CleanupPolicy, ConsumerConfig, Error, Log, LogConfig, Message, OffsetReset, ProducerConfig,
    Record, TopicConfig, TopicPartition,
};

const PLAIN: &str = "plain";
const PLAIN_PARTS: u32 = 4;
const RETAINED: &str = "retained";
const COMPACTED: &str = "compacted";
const COMPACTED_KEYS: u64 = 40;
const GROUP: &str = "stress-group";
const SCRATCH: [&str; 3] = ["scratch-a", "scratch-b", "scratch-c"];

/// Writers: each has an id that goes into its records.
const W_SEND: u64 = 1;
const W_BATCH: u64 = 2;
const W_PRODUCER: u64 = 3;
const W_RETAINED: u64 = 4;
const W_COMPACTED: u64 = 5;
const W_SCRATCH: u64 = 6;
const W_SCRATCH_USER: u64 = 7;

/// Errors each kind of call may return in this test, and why.
const ALLOWED: &[(&str, &str, &str)] = &[
    (
        "read retained",
        "OffsetOutOfRange",
        "retention moved the start past the offset picked",
    ),
    (
        "scratch user",
        "UnknownTopic",
        "the scratch topic was deleted (handles of deleted topics fail so)",
    ),
    (
        "scratch user",
        "OffsetOutOfRange",
        "retention moved the start of a retained scratch topic past the offset",
    ),
    (
        "scratch admin read",
        "OffsetOutOfRange",
        "retention of a retained scratch topic removed the record just written",
    ),
    (
        "scratch compact",
        "UnknownTopic",
        "the scratch topic was deleted, or not created yet",
    ),
    (
        "scratch compact",
        "InvalidConfig",
        "this scratch topic is not compacted",
    ),
];

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The value of writer `w`'s record `s`: a prefix naming both, then bytes
/// derived from them (0 to 400 of them).
fn value(w: u64, s: u64) -> Vec<u8> {
    let mut v = format!("w{w}s{s}|").into_bytes();
    let n = (s.wrapping_mul(7919) ^ w) % 401;
    v.extend((0..n).map(|i| (w.wrapping_mul(31) + s + i) as u8));
    v
}

/// The key of writer `w`'s record `s` (compacted writers: few keys;
/// scratch topics may be compacted, so their writers key every record).
fn key(w: u64, s: u64) -> Option<Vec<u8>> {
    match w {
        W_COMPACTED => Some(format!("key-{}", s % COMPACTED_KEYS).into_bytes()),
        W_SCRATCH | W_SCRATCH_USER => Some(format!("k{w}-{}", s % 97).into_bytes()),
        _ if s.is_multiple_of(3) => None,
        _ => Some(format!("k{w}-{}", s % 97).into_bytes()),
    }
}

fn record(w: u64, s: u64) -> Record {
    let mut r = Record::new(value(w, s));
    if let Some(k) = key(w, s) {
        r = r.key(k);
    }
    if s.is_multiple_of(5) {
        r = r.header("seq", s.to_string());
    }
    r
}

/// Checks a message against the record its value names; returns `(w, s)`.
fn check(m: &Message) -> (u64, u64) {
    let v = m.value().unwrap_or_else(|| panic!("no value: {m:?}"));
    let prefix = v.split(|&b| b == b'|').next().unwrap();
    let text = std::str::from_utf8(prefix).unwrap_or_else(|_| panic!("bad prefix: {m:?}"));
    let (w, s) = text
        .strip_prefix('w')
        .and_then(|t| t.split_once('s'))
        .and_then(|(w, s)| Some((w.parse().ok()?, s.parse().ok()?)))
        .unwrap_or_else(|| panic!("unparsable value prefix {text:?}: {m:?}"));
    assert_eq!(v, &value(w, s)[..], "value of w{w} s{s} at {m:?}");
    assert_eq!(m.key(), key(w, s).as_deref(), "key of w{w} s{s} at {m:?}");
    let headers: Vec<(&str, &[u8])> = m.headers().collect();
    let want = s.to_string();
    if s.is_multiple_of(5) {
        assert_eq!(headers, [("seq", want.as_bytes())], "headers at {m:?}");
    } else {
        assert!(headers.is_empty(), "headers at {m:?}");
    }
    (w, s)
}

/// One acknowledged append: `(topic index, partition, offset, writer, seq)`.
type Ack = (u8, u32, u64, u64, u64);

/// Errors seen, by `"<call>: <variant>"`.
#[derive(Default)]
struct Errors(Mutex<BTreeMap<String, (u64, String)>>);

impl Errors {
    fn note(&self, call: &str, e: &Error) {
        let debug = format!("{e:?}");
        let variant = debug
            .split(|c: char| !c.is_alphanumeric())
            .next()
            .unwrap_or("?")
            .to_owned();
        let mut m = self.0.lock().unwrap();
        let entry = m
            .entry(format!("{call}: {variant}"))
            .or_insert((0, e.to_string()));
        entry.0 += 1;
    }
}

struct Shared {
    log: Log,
    stop: AtomicBool,
    /// Set when the consumers may stop (the group committed the end).
    consumers_stop: AtomicBool,
    errors: Errors,
    phase: AtomicUsize,
    /// What the drain phase waits for, for the watchdog's message.
    progress: Mutex<String>,
    seed: u64,
}

const PHASES: [&str; 4] = [
    "load (all threads)",
    "joining the load threads",
    "draining the consumer group",
    "verifying",
];

fn budget() -> Duration {
    let secs: f64 = std::env::var("BROOK_STRESS_SECS")
        .ok()
        .map(|v| v.parse().expect("BROOK_STRESS_SECS is a number of seconds"))
        .unwrap_or(4.0);
    Duration::from_secs_f64(secs)
}

fn topic_index(name: &str) -> u8 {
    match name {
        PLAIN => 0,
        RETAINED => 1,
        COMPACTED => 2,
        _ => 3,
    }
}

/// Names of the threads still running, for the watchdog's message.
static RUNNING: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

struct Running(String);

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.0);
    }
}

fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> (String, JoinHandle<T>) {
    RUNNING.lock().unwrap().insert(name.to_owned());
    let guard = Running(name.to_owned());
    let h = thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let _guard = guard;
            f()
        })
        .unwrap();
    (name.to_owned(), h)
}

fn join<T>((name, h): (String, JoinHandle<T>)) -> T {
    let t0 = Instant::now();
    match h.join() {
        Ok(t) => {
            if std::env::var("BROOK_STRESS_VERBOSE").is_ok() {
                eprintln!("stress: joined {name} after {:.1?}", t0.elapsed());
            }
            t
        }
        Err(p) => {
            eprintln!("stress: thread {name} panicked");
            std::panic::resume_unwind(p)
        }
    }
}

/// An appender loop: `append(rng, seq)` appends records from `seq` on and
/// returns how many it tried; acks are collected by the closure.
fn appender(
    sh: Arc<Shared>,
    mut step: impl FnMut(&mut Rng, u64, &mut Vec<Ack>) -> Result<u64, (String, Error)>,
    salt: u64,
) -> Vec<Ack> {
    let mut rng = Rng::new(sh.seed ^ salt);
    let mut acks = Vec::new();
    let mut seq = 0;
    while !sh.stop.load(Ordering::Relaxed) {
        match step(&mut rng, seq, &mut acks) {
            Ok(n) => seq += n,
            Err((call, e)) => {
                sh.errors.note(&call, &e);
                seq += 64; // sequences of a failed call are not reused
            }
        }
    }
    acks
}

/// A reader: random partitions and offsets, checking what comes back.
/// Returns what it saw at each offset: `(topic index, partition, offset, w, s)`.
fn reader(sh: Arc<Shared>, salt: u64) -> Vec<Ack> {
    let mut rng = Rng::new(sh.seed ^ salt);
    let mut seen = Vec::new();
    let topics = [PLAIN, RETAINED, COMPACTED];
    while !sh.stop.load(Ordering::Relaxed) {
        let name = topics[rng.below(3) as usize];
        let t = sh.log.topic(name).expect("stress topics are never deleted");
        let pn = rng.below(t.partition_count() as u64) as u32;
        let p = t.partition(pn).unwrap();
        let (start, end) = (p.start_offset(), p.end_offset());
        let from = start + rng.below(end - start + 1);
        let max = 1 + rng.below(200) as usize;
        let msgs = match p.read(from, max) {
            Ok(m) => m,
            Err(e) => {
                sh.errors.note(&format!("read {name}"), &e);
                continue;
            }
        };
        if from < end {
            assert!(
                !msgs.is_empty(),
                "{name}-{pn}: read({from}) below end {end} was empty"
            );
        }
        let mut expect = from;
        for m in &msgs {
            assert_eq!((m.topic(), m.partition()), (name, pn));
            if name == COMPACTED {
                assert!(m.offset() >= expect, "{name}-{pn}: offsets out of order");
            } else {
                assert_eq!(
                    m.offset(),
                    expect,
                    "{name}-{pn}: gap or disorder in a read from {from}"
                );
            }
            expect = m.offset() + 1;
            if m.value().is_none() {
                continue; // no tombstones are written, but be explicit
            }
            let (w, s) = check(m);
            if rng.below(8) == 0 {
                seen.push((topic_index(name), pn, m.offset(), w, s));
            }
        }
    }
    seen
}

/// What one consumer thread saw: `(partition, offset, w, s)`.
fn member(sh: Arc<Shared>, index: usize, budget: Duration) -> Vec<(u32, u64, u64, u64)> {
    let started = Instant::now();
    let new_consumer = || {
        let mut c = sh
            .log
            .consumer_with(
                ConsumerConfig::new(GROUP)
                    .auto_offset_reset(OffsetReset::Earliest)
                    .enable_auto_commit(false)
                    .max_poll_records(300),
            )
            .unwrap();
        c.subscribe(&[PLAIN]).unwrap();
        c
    };
    let mut c = new_consumer();
    let mut rejoined = index != 2;
    let mut seen = Vec::new();
    // Last offset delivered per partition during the current ownership.
    let mut last: HashMap<u32, u64> = HashMap::new();
    while !sh.consumers_stop.load(Ordering::Relaxed) {
        if !rejoined && started.elapsed() >= budget / 2 {
            rejoined = true;
            if let Err(e) = c.close() {
                sh.errors.note("consumer close", &e);
            }
            last.clear();
            c = new_consumer();
        }
        let msgs = match c.poll(Duration::from_millis(20)) {
            Ok(m) => m,
            Err(e) => {
                sh.errors.note("consumer poll", &e);
                continue;
            }
        };
        let owned: BTreeSet<u32> = c.assignment().iter().map(|tp| tp.partition).collect();
        last.retain(|p, _| owned.contains(p));
        for m in &msgs {
            let p = m.partition();
            assert!(
                owned.contains(&p),
                "member {index} got {m:?} it does not own"
            );
            if let Some(&l) = last.get(&p) {
                assert_eq!(
                    m.offset(),
                    l + 1,
                    "member {index}: {PLAIN}-{p} skipped or repeated within one ownership"
                );
            }
            last.insert(p, m.offset());
            let (w, s) = check(m);
            seen.push((p, m.offset(), w, s));
        }
        if let Err(e) = c.commit() {
            sh.errors.note("consumer commit", &e);
        }
    }
    if let Err(e) = c.close() {
        sh.errors.note("consumer close", &e);
    }
    seen
}

#[test]
fn everything_at_once_loses_nothing_and_fails_only_as_documented() {
    let budget = budget();
    let seed = std::env::var("BROOK_STRESS_SEED")
        .ok()
        .map(|v| v.parse().expect("BROOK_STRESS_SEED is a number"))
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let ctx = format!("(seed {seed}: rerun with BROOK_STRESS_SEED={seed})");
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open_with(
        dir.path(),
        LogConfig::default().retention_check_interval(Duration::from_millis(200)),
    )
    .unwrap();
    let small = TopicConfig::default()
        .max_record_bytes(4096)
        .segment_bytes(64 << 10);
    log.create_topic(PLAIN, small.clone().partitions(PLAIN_PARTS))
        .unwrap();
    log.create_topic(
        RETAINED,
        small
            .clone()
            .partitions(2)
            .segment_bytes(32 << 10)
            .retention_bytes(Some(96 << 10)),
    )
    .unwrap();
    log.create_topic(
        COMPACTED,
        small
            .clone()
            .partitions(2)
            .cleanup_policy(CleanupPolicy::Compact),
    )
    .unwrap();

    let sh = Arc::new(Shared {
        log,
        stop: AtomicBool::new(false),
        consumers_stop: AtomicBool::new(false),
        errors: Errors::default(),
        phase: AtomicUsize::new(0),
        progress: Mutex::new(String::new()),
        seed,
    });

    // The watchdog: aborts (no unwinding can hang) past 3x the budget of
    // the whole run: the load, then up to as long again plus 2 s to drain
    // the group, verify and close (about half of that is used in debug).
    let (done_tx, done_rx) = mpsc::channel::<()>();
    {
        let sh = Arc::clone(&sh);
        let ctx = ctx.clone();
        let limit = (budget * 2 + Duration::from_secs(2)) * 3;
        thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = done_rx.recv_timeout(limit) {
                // Straight to stderr: the test harness captures eprintln!,
                // and its capture is lost when the process aborts.
                let _ = writeln!(
                    std::io::stderr(),
                    "stress: still running after {limit:?} (3x its budget) while {} {}, \
                     threads still running: {:?}: deadlock or livelock; aborting {ctx}",
                    PHASES[sh.phase.load(Ordering::SeqCst)],
                    sh.progress.lock().unwrap(),
                    RUNNING.lock().unwrap_or_else(|e| e.into_inner())
                );
                for (what, (n, example)) in
                    sh.errors.0.lock().unwrap_or_else(|e| e.into_inner()).iter()
                {
                    let _ = writeln!(
                        std::io::stderr(),
                        "stress: so far {what} x{n} (e.g. {example})"
                    );
                }
                // Every thread's stack, when gdb is installed (best effort).
                let _ = std::process::Command::new("gdb")
                    .args(["-p", &std::process::id().to_string(), "-batch"])
                    .args(["-ex", "thread apply all bt 30"])
                    .stdout(std::process::Stdio::inherit())
                    .stderr(std::process::Stdio::null())
                    .status();
                std::process::abort();
            }
        });
    }

    let started = Instant::now();
    let mut appenders = Vec::new();
    {
        let s = Arc::clone(&sh);
        let t = sh.log.topic(PLAIN).unwrap();
        appenders.push(spawn("send", move || {
            appender(
                s,
                |rng, seq, acks| {
                    let mut r = record(W_SEND, seq);
                    if rng.below(4) == 0 {
                        r = r.partition(rng.below(PLAIN_PARTS as u64) as u32);
                    }
                    let m = t.send(r).map_err(|e| ("send".to_owned(), e))?;
                    acks.push((0, m.partition, m.offset, W_SEND, seq));
                    Ok(1)
                },
                1,
            )
        }));
    }
    {
        let s = Arc::clone(&sh);
        let t = sh.log.topic(PLAIN).unwrap();
        appenders.push(spawn("send_batch", move || {
            appender(
                s,
                |rng, seq, acks| {
                    let n = 1 + rng.below(40);
                    let records: Vec<Record> = (seq..seq + n).map(|s| record(W_BATCH, s)).collect();
                    let metas = t
                        .send_batch(&records)
                        .map_err(|e| ("send_batch".to_owned(), e))?;
                    assert_eq!(metas.len() as u64, n);
                    for (i, m) in metas.iter().enumerate() {
                        acks.push((0, m.partition, m.offset, W_BATCH, seq + i as u64));
                    }
                    Ok(n)
                },
                2,
            )
        }));
    }
    {
        let s = Arc::clone(&sh);
        let mut producer = sh.log.producer(ProducerConfig::default()).unwrap();
        appenders.push(spawn("producer", move || {
            appender(
                s,
                |rng, seq, acks| {
                    if rng.below(2) == 0 {
                        let m = producer
                            .send(PLAIN, record(W_PRODUCER, seq))
                            .map_err(|e| ("producer send".to_owned(), e))?;
                        acks.push((0, m.partition, m.offset, W_PRODUCER, seq));
                        return Ok(1);
                    }
                    let n = 1 + rng.below(20);
                    let records: Vec<Record> =
                        (seq..seq + n).map(|s| record(W_PRODUCER, s)).collect();
                    let metas = producer
                        .send_batch(PLAIN, &records)
                        .map_err(|e| ("producer send_batch".to_owned(), e))?;
                    for (i, m) in metas.iter().enumerate() {
                        acks.push((0, m.partition, m.offset, W_PRODUCER, seq + i as u64));
                    }
                    Ok(n)
                },
                3,
            )
        }));
    }
    for (name, topic, w) in [
        ("retained appender", RETAINED, W_RETAINED),
        ("compacted appender", COMPACTED, W_COMPACTED),
    ] {
        let s = Arc::clone(&sh);
        let t = sh.log.topic(topic).unwrap();
        appenders.push(spawn(name, move || {
            appender(
                s,
                |rng, seq, acks| {
                    let n = 1 + rng.below(4);
                    let records: Vec<Record> = (seq..seq + n).map(|s| record(w, s)).collect();
                    let metas = t
                        .send_batch(&records)
                        .map_err(|e| (format!("send_batch {topic}"), e))?;
                    for (i, m) in metas.iter().enumerate() {
                        acks.push((topic_index(topic), m.partition, m.offset, w, seq + i as u64));
                    }
                    Ok(n)
                },
                w,
            )
        }));
    }

    let mut others: Vec<(String, JoinHandle<Vec<Ack>>)> = Vec::new();
    for i in 0..2 {
        let s = Arc::clone(&sh);
        others.push(spawn(&format!("reader {i}"), move || reader(s, 100 + i)));
    }
    {
        let s = Arc::clone(&sh);
        others.push(spawn("flush/sync", move || {
            let mut n = 0u64;
            while !s.stop.load(Ordering::Relaxed) {
                let r = if n.is_multiple_of(3) {
                    s.log.sync()
                } else {
                    s.log.flush()
                };
                if let Err(e) = r {
                    s.errors.note(
                        if n.is_multiple_of(3) {
                            "log sync"
                        } else {
                            "log flush"
                        },
                        &e,
                    );
                }
                n += 1;
                thread::sleep(Duration::from_millis(2));
            }
            Vec::new()
        }));
    }
    {
        let s = Arc::clone(&sh);
        others.push(spawn("scratch compactor", move || {
            let mut i = 0;
            while !s.stop.load(Ordering::Relaxed) {
                if let Err(e) = s.log.compact_now(SCRATCH[i % SCRATCH.len()]) {
                    s.errors.note("scratch compact", &e);
                }
                i += 1;
                thread::sleep(Duration::from_millis(3));
            }
            Vec::new()
        }));
    }
    {
        let s = Arc::clone(&sh);
        others.push(spawn("compactor", move || {
            while !s.stop.load(Ordering::Relaxed) {
                if let Err(e) = s.log.compact_now(COMPACTED) {
                    s.errors.note("compact_now", &e);
                }
                thread::sleep(Duration::from_millis(20));
            }
            Vec::new()
        }));
    }
    {
        let s = Arc::clone(&sh);
        others.push(spawn("scratch admin", move || {
            let mut rng = Rng::new(s.seed ^ 200);
            let mut seq = 0;
            let mut i = 0;
            while !s.stop.load(Ordering::Relaxed) {
                let name = SCRATCH[i % SCRATCH.len()];
                i += 1;
                let mut cfg = TopicConfig::default()
                    .partitions(1 + rng.below(3) as u32)
                    .max_record_bytes(4096)
                    .segment_bytes(8 << 10);
                if rng.below(2) == 0 {
                    // Compacted and retained: deletion races the cleaner
                    // and retention too (the scratch compactor's
                    // `compact_now`, retention after each roll).
                    cfg = cfg
                        .cleanup_policy(CleanupPolicy::CompactAndDelete)
                        .retention_bytes(Some(32 << 10));
                }
                let t = match s.log.create_topic(name, cfg) {
                    Ok(t) => t,
                    Err(e) => {
                        s.errors.note("scratch create", &e);
                        continue;
                    }
                };
                for _ in 0..rng.below(50) {
                    match t.send(record(W_SCRATCH, seq)) {
                        Ok(m) => {
                            let got = t.partition(m.partition).and_then(|p| p.read(m.offset, 1));
                            match got {
                                Ok(msgs) => assert_eq!(check(&msgs[0]), (W_SCRATCH, seq)),
                                Err(e) => s.errors.note("scratch admin read", &e),
                            }
                        }
                        Err(e) => s.errors.note("scratch admin send", &e),
                    }
                    seq += 1;
                }
                if rng.below(2) == 0 {
                    let _ = s
                        .log
                        .add_partitions(name, t.partition_count() + 1)
                        .map_err(|e| s.errors.note("scratch add_partitions", &e));
                }
                if let Err(e) = s.log.delete_topic(name) {
                    s.errors.note("scratch delete", &e);
                }
            }
            Vec::new()
        }));
    }
    {
        let s = Arc::clone(&sh);
        others.push(spawn("scratch user", move || {
            let mut rng = Rng::new(s.seed ^ 300);
            let mut seq = 0;
            while !s.stop.load(Ordering::Relaxed) {
                let name = SCRATCH[rng.below(SCRATCH.len() as u64) as usize];
                let Ok(t) = s.log.topic(name) else {
                    continue; // not there now: fine
                };
                for _ in 0..rng.below(20) {
                    let r = t.send(record(W_SCRATCH_USER, seq)).and_then(|m| {
                        let msgs = t.partition(m.partition)?.read(m.offset, 1)?;
                        assert_eq!(check(&msgs[0]), (W_SCRATCH_USER, seq));
                        Ok(())
                    });
                    seq += 1;
                    if let Err(e) = r {
                        s.errors.note("scratch user", &e);
                        break;
                    }
                }
                let p = rng.below(t.partition_count() as u64) as u32;
                let r = t.partition(p).and_then(|p| p.read(p.start_offset(), 100));
                if let Err(e) = r {
                    s.errors.note("scratch user", &e);
                }
            }
            Vec::new()
        }));
    }
    let members: Vec<_> = (0..3)
        .map(|i| {
            let s = Arc::clone(&sh);
            spawn(&format!("member {i}"), move || member(s, i, budget))
        })
        .collect();

    // Load phase: sleep through the budget, stopping early if a thread died.
    while started.elapsed() < budget {
        let dead = appenders
            .iter()
            .map(|(n, h)| (n, h.is_finished()))
            .chain(others.iter().map(|(n, h)| (n, h.is_finished())))
            .chain(members.iter().map(|(n, h)| (n, h.is_finished())))
            .find(|(_, f)| *f);
        if dead.is_some() {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    sh.phase.store(1, Ordering::SeqCst);
    sh.stop.store(true, Ordering::SeqCst);
    let acks: Vec<Ack> = appenders.into_iter().flat_map(join).collect();
    let observed: Vec<Ack> = others.into_iter().flat_map(join).collect();

    // Drain: the group commits the end of every partition of `plain`.
    sh.phase.store(2, Ordering::SeqCst);
    let plain = sh.log.topic(PLAIN).unwrap();
    let ends: Vec<u64> = (0..PLAIN_PARTS)
        .map(|p| plain.partition(p).unwrap().end_offset())
        .collect();
    let group = sh.log.group(GROUP).unwrap();
    loop {
        let committed: Vec<Option<u64>> = (0..PLAIN_PARTS)
            .map(|p| group.committed(&TopicPartition::new(PLAIN, p)).unwrap())
            .collect();
        if committed.iter().zip(&ends).all(|(c, e)| *c == Some(*e)) {
            break;
        }
        *sh.progress.lock().unwrap() = format!(
            "(committed {committed:?} of ends {ends:?}; members {:?})",
            group
                .members()
                .iter()
                .map(|m| m
                    .assignment
                    .iter()
                    .map(|tp| tp.partition)
                    .collect::<Vec<_>>())
                .collect::<Vec<_>>()
        );
        if let Some((n, _)) = members.iter().find(|(_, h)| h.is_finished()) {
            panic!("consumer thread {n} stopped early {ctx}");
        }
        thread::sleep(Duration::from_millis(10));
    }
    sh.consumers_stop.store(true, Ordering::SeqCst);
    let consumed: Vec<Vec<(u32, u64, u64, u64)>> = members.into_iter().map(join).collect();
    let load_time = started.elapsed();
    let verify_started = Instant::now();

    // ------------------------------------------------------------ verification
    sh.phase.store(3, Ordering::SeqCst);
    let log = &sh.log;
    // Every record stored in each topic, by (topic index, partition, offset).
    let mut stored: BTreeMap<(u8, u32, u64), (u64, u64)> = BTreeMap::new();
    for name in [PLAIN, RETAINED, COMPACTED] {
        let t = log.topic(name).unwrap();
        for p in 0..t.partition_count() {
            let part = t.partition(p).unwrap();
            for m in part.read(part.start_offset(), usize::MAX).unwrap() {
                stored.insert((topic_index(name), p, m.offset()), check(&m));
            }
        }
    }
    // `plain`: every ack at its offset, and nothing else.
    let mut plain_acks = 0u64;
    let mut by_record = BTreeSet::new();
    for &(ti, p, o, w, s) in &acks {
        assert!(
            by_record.insert((w, s)),
            "w{w} s{s} acknowledged twice {ctx}"
        );
        match ti {
            0 => {
                plain_acks += 1;
                assert_eq!(
                    stored.get(&(0, p, o)),
                    Some(&(w, s)),
                    "acknowledged record w{w} s{s} not at {PLAIN}-{p}@{o} {ctx}"
                );
            }
            // Retention may have deleted it; if stored, it is this one.
            1 => {
                if let Some(got) = stored.get(&(1, p, o)) {
                    assert_eq!(*got, (w, s), "{RETAINED}-{p}@{o} {ctx}");
                }
            }
            _ => {}
        }
    }
    for p in 0..PLAIN_PARTS {
        let n = stored.range((0, p, 0)..=(0, p, u64::MAX)).count() as u64;
        assert_eq!(
            n, ends[p as usize],
            "{PLAIN}-{p}: offsets 0..end not all stored {ctx}"
        );
    }
    let plain_stored = stored.range((0, 0, 0)..(1, 0, 0)).count() as u64;
    assert_eq!(
        plain_stored, plain_acks,
        "{PLAIN} holds records nobody acknowledged (duplicates?) {ctx}"
    );
    // `compacted`: each key's latest acknowledged record survives, unchanged.
    // By (partition, key): (offset, (writer, sequence)) of the latest ack.
    type Latest = BTreeMap<(u32, Vec<u8>), (u64, (u64, u64))>;
    let mut latest = Latest::new();
    for &(ti, p, o, w, s) in &acks {
        if ti == 2 {
            let k = (p, key(w, s).unwrap());
            if latest.get(&k).is_none_or(|(lo, _)| o > *lo) {
                latest.insert(k, (o, (w, s)));
            }
            if let Some(got) = stored.get(&(2, p, o)) {
                assert_eq!(*got, (w, s), "{COMPACTED}-{p}@{o} {ctx}");
            }
        }
    }
    for ((p, k), (o, ws)) in &latest {
        assert_eq!(
            stored.get(&(2, *p, *o)),
            Some(ws),
            "latest record of key {:?} ({COMPACTED}-{p}@{o}) lost to compaction {ctx}",
            String::from_utf8_lossy(k)
        );
    }
    // Readers saw what was acknowledged at each offset.
    let ack_at: HashMap<(u8, u32, u64), (u64, u64)> = acks
        .iter()
        .map(|&(t, p, o, w, s)| ((t, p, o), (w, s)))
        .collect();
    for &(t, p, o, w, s) in &observed {
        assert_eq!(
            ack_at.get(&(t, p, o)),
            Some(&(w, s)),
            "a reader saw w{w} s{s} at topic #{t} partition {p} offset {o}, \
             which was acknowledged otherwise {ctx}"
        );
    }
    // The group consumed every record of `plain`, as acknowledged.
    let mut consumed_offsets: BTreeSet<(u32, u64)> = BTreeSet::new();
    let mut deliveries = 0;
    for seen in &consumed {
        for &(p, o, w, s) in seen {
            assert_eq!(
                ack_at.get(&(0, p, o)),
                Some(&(w, s)),
                "the group got w{w} s{s} at {PLAIN}-{p}@{o} {ctx}"
            );
            consumed_offsets.insert((p, o));
            deliveries += 1;
        }
    }
    for p in 0..PLAIN_PARTS {
        let got = consumed_offsets.range((p, 0)..=(p, u64::MAX)).count() as u64;
        assert_eq!(
            got, ends[p as usize],
            "the group committed {PLAIN}-{p} to its end but consumed only {got} records {ctx}"
        );
    }
    // Errors: only the documented ones.
    let errors = std::mem::take(&mut *sh.errors.0.lock().unwrap());
    let mut unexpected = Vec::new();
    for (what, (n, example)) in &errors {
        let (call, variant) = what.split_once(": ").unwrap();
        let allowed = ALLOWED.iter().any(|(c, v, _)| *c == call && *v == variant);
        eprintln!(
            "stress: {what} x{n} (e.g. {example}){}",
            if allowed { "" } else { "  <-- not allowed" }
        );
        if !allowed {
            unexpected.push(format!("{what} x{n}: {example}"));
        }
    }
    assert!(
        unexpected.is_empty(),
        "errors outside the documented ones:\n{}\n{ctx}",
        unexpected.join("\n")
    );
    let by_writer = |w: u64| acks.iter().filter(|a| a.3 == w).count();
    eprintln!(
        "stress: {load_time:.1?} of load and drain, {:.1?} of checks; acknowledged: send {}, send_batch {}, \
         producer {}, retained {}, compacted {}; {} reads checked; the group delivered {} \
         records ({} distinct) {ctx}",
        verify_started.elapsed(),
        by_writer(W_SEND),
        by_writer(W_BATCH),
        by_writer(W_PRODUCER),
        by_writer(W_RETAINED),
        by_writer(W_COMPACTED),
        observed.len(),
        deliveries,
        consumed_offsets.len(),
    );
    sh.log.close().unwrap();
    let _ = done_tx.send(());
}
