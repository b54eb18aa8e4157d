//! Acknowledged work survives `kill -9` while appends, consumer commits,
//! segment rolls, retention and compaction all run at once.
//!
//! The parent test re-executes this test binary to run the `#[ignore]`d
//! child test in a process of its own. The child opens the log and, until
//! it is killed, does a random mix of work on two topics:
//!
//! - `events` (cleanup policy delete, 3 partitions, 32 KiB segments,
//!   `retention_bytes` 96 KiB, retention checked every 50 ms and at each
//!   roll): single appends and batches, keyed and unkeyed, a few bytes to
//!   6 KiB;
//! - `table` (compacted, 2 partitions, 16 KiB segments, dirty ratio 0.2, the
//!   background cleaner on): keyed appends over 48 keys, some tombstones,
//!   and now and then `Log::compact_now`;
//!
//! plus consumer group commits (polls, then commits of positions or of
//! offsets rewound at random), `Log::sync`, and rarely a clean close and
//! reopen. Every operation is announced on stdout before it starts and
//! acknowledged after it returns (one line each, whole lines only count):
//!
//! ```text
//! b <topic> <seq> <n>          appending records seq..seq+n
//! a <topic> <seq> <p> <o>      record seq was acknowledged at partition p, offset o
//! c <tp> <offset>              committing offset for partition index tp ...
//! C                            ... the commit was acknowledged
//! s / k / r                    a sync, a compact_now, a close and reopen returned
//! ```
//!
//! Each record carries its sequence number in a `seq` header, and its
//! key, value, headers, partition and timestamp are a function of (topic,
//! seq), so the parent can recompute any record it finds.
//!
//! The parent SIGKILLs the child at a random moment (one cycle in eight
//! while it is still opening, that is recovering, the log), reopens the log
//! and checks:
//!
//! - reopening succeeds;
//! - every record acknowledged (or found after an earlier crash) is stored
//!   byte for byte at its offset, unless retention removed it (`events`:
//!   only below the start offset, which never goes backwards) or
//!   compaction did (`table`: only when a later record with the same key is
//!   stored, so each key keeps its latest acknowledged value or a later one);
//! - every stored record is one that was acknowledged or was being appended
//!   when the child died, appears once, and matches what was appended;
//! - `events` offsets run without a gap from the start offset to the end;
//!   `table` offsets only increase;
//! - each committed offset is the last acknowledged commit, or the one in
//!   flight at the kill;
//! - after a clean close, every batch of every `.log` file in the directory
//!   (the offsets store included) passes its CRC-32C, checked here
//!   independently of brook's reader.
//!
//! A kill leaves the page cache intact, so the checks are the same under
//! `SyncPolicy::Never` and `SyncPolicy::Always` (every third cycle): under
//! both, everything acknowledged must survive. The cycles share one
//! directory, so every child also starts from the log its killed
//! predecessor left, and the checks are cumulative.
//!
//! `BROOK_CRASH_MIXED_CYCLES` sets the number of cycles (default 60);
//! `BROOK_CRASH_MIXED_SEED` replays a run's choices (the seed is printed,
//! also on failure; kill timing is not replayable).

mod common;
use common::{env_u64, seed, spawn_child_test, Rng};

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use brook::{
    CleanupPolicy, Consumer, ConsumerConfig, Error, Log, LogConfig, OffsetReset, Record,
    SyncPolicy, Topic, TopicConfig, TopicPartition,
};

const CHILD_TEST: &str = "crash_mixed_child_works_until_killed";
const DIR_ENV: &str = "BROOK_CRASH_MIXED_CHILD_DIR";
const SYNC_ENV: &str = "BROOK_CRASH_MIXED_CHILD_SYNC";
const CYCLE_ENV: &str = "BROOK_CRASH_MIXED_CHILD_CYCLE";
const SEED_ENV: &str = "BROOK_CRASH_MIXED_CHILD_SEED";
const GROUP: &str = "mixed";

/// Topic index 0: retention by size.
const EVENTS: usize = 0;
/// Topic index 1: compacted.
const TABLE: usize = 1;
const TOPICS: [&str; 2] = ["events", "table"];
const PARTITIONS: [u32; 2] = [3, 2];
const TABLE_KEYS: u64 = 48;
/// The child stops by itself after this long, should the parent vanish.
const CHILD_LIFETIME: Duration = Duration::from_secs(60);

fn topic_config(topic: usize) -> TopicConfig {
    match topic {
        EVENTS => TopicConfig::default()
            .partitions(PARTITIONS[EVENTS])
            .segment_bytes(32 * 1024)
            .max_record_bytes(8 * 1024)
            .retention_bytes(Some(96 * 1024)),
        _ => TopicConfig::default()
            .partitions(PARTITIONS[TABLE])
            .segment_bytes(16 * 1024)
            .max_record_bytes(4 * 1024)
            .cleanup_policy(CleanupPolicy::Compact)
            .min_cleanable_dirty_ratio(0.2),
    }
}

/// Partitions the consumer commits for, by index (`c <tp> ...` lines).
fn committed_partitions() -> Vec<TopicPartition> {
    (0..TOPICS.len())
        .flat_map(|t| (0..PARTITIONS[t]).map(move |p| TopicPartition::new(TOPICS[t], p)))
        .collect()
}

/// Everything about record `seq` of `topic`, derived from the two alone.
#[derive(Debug, PartialEq)]
struct Shape {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Vec<u8>)>,
    partition: Option<u32>,
    timestamp: Option<i64>,
}

fn shape(topic: usize, seq: u64) -> Shape {
    let mut rng = Rng::new(seq ^ ((topic as u64) << 62));
    let len = match (topic, rng.below(100)) {
        (EVENTS, 0..=4) => 1024 + rng.below(5 * 1024) as usize,
        (EVENTS, _) => rng.below(300) as usize,
        (_, 0..=9) => 400 + rng.below(1200) as usize,
        _ => rng.below(200) as usize,
    };
    let tombstone = topic == TABLE && rng.below(16) == 0;
    let value = (!tombstone).then(|| {
        let mut v = format!("seq={seq};").into_bytes();
        while v.len() < len {
            v.push(b'a' + (rng.next() % 26) as u8);
        }
        v
    });
    let key = match topic {
        EVENTS => (rng.below(2) == 0).then(|| format!("user-{}", rng.below(20)).into_bytes()),
        _ => Some(format!("k-{}", rng.below(TABLE_KEYS)).into_bytes()),
    };
    let partition =
        (key.is_none() && rng.below(2) == 0).then(|| rng.below(PARTITIONS[topic] as u64) as u32);
    let mut headers = vec![("seq".to_owned(), seq.to_string().into_bytes())];
    if rng.below(4) == 0 {
        headers.push(("trace".to_owned(), rng.next().to_le_bytes().to_vec()));
    }
    let timestamp = (rng.below(4) == 0).then(|| 1_600_000_000_000 + (seq % 1_000_000) as i64);
    Shape {
        key,
        value,
        headers,
        partition,
        timestamp,
    }
}

fn record(s: &Shape) -> Record {
    let mut r = match (&s.value, &s.key) {
        (Some(v), _) => Record::new(v),
        (None, Some(k)) => Record::tombstone(k),
        (None, None) => unreachable!("a tombstone has a key"),
    };
    if let Some(k) = &s.key {
        r = r.key(k);
    }
    for (name, value) in &s.headers {
        r = r.header(name, value);
    }
    if let Some(p) = s.partition {
        r = r.partition(p);
    }
    if let Some(ts) = s.timestamp {
        r = r.timestamp(ts);
    }
    r
}

// ---------------------------------------------------------------------------
// The child

struct Worker {
    log: Log,
    topics: [Topic; 2],
    consumer: Consumer,
}

impl Worker {
    fn open(dir: &Path, sync: SyncPolicy) -> Worker {
        let config = LogConfig::default()
            .sync(sync)
            .retention_check_interval(Duration::from_millis(50));
        let log = Log::open_with(dir, config).expect("child: open log");
        let topic = |t: usize| match log.create_topic(TOPICS[t], topic_config(t)) {
            Ok(topic) => topic,
            Err(Error::TopicExists { .. }) => log.topic(TOPICS[t]).expect("child: existing topic"),
            Err(e) => panic!("child: create topic {}: {e}", TOPICS[t]),
        };
        let topics = [topic(EVENTS), topic(TABLE)];
        let mut consumer = log
            .consumer_with(
                ConsumerConfig::new(GROUP)
                    .enable_auto_commit(false)
                    .auto_offset_reset(OffsetReset::Earliest)
                    .max_poll_records(200),
            )
            .expect("child: consumer");
        consumer
            .assign(&committed_partitions())
            .expect("child: assign");
        Worker {
            log,
            topics,
            consumer,
        }
    }

    fn append(&self, out: &mut impl Write, rng: &mut Rng, seq: &mut u64) {
        let t = if rng.below(5) < 3 { EVENTS } else { TABLE };
        let n = if rng.below(12) == 0 {
            1 + rng.below(24)
        } else {
            1
        };
        writeln!(out, "b {t} {} {n}", *seq).unwrap();
        out.flush().unwrap();
        let shapes: Vec<Shape> = (*seq..*seq + n).map(|s| shape(t, s)).collect();
        let metas = if n == 1 {
            vec![self.topics[t]
                .send(record(&shapes[0]))
                .expect("child: send")]
        } else {
            self.topics[t]
                .send_batch(shapes.iter().map(record))
                .expect("child: send_batch")
        };
        for (i, m) in metas.iter().enumerate() {
            writeln!(
                out,
                "a {t} {} {} {}",
                *seq + i as u64,
                m.partition,
                m.offset
            )
            .unwrap();
        }
        *seq += n;
    }

    /// Polls, then commits positions or, now and then, an offset rewound to
    /// a random point, for a random subset of the partitions.
    fn commit(&mut self, out: &mut impl Write, rng: &mut Rng) {
        self.consumer
            .poll(Duration::from_millis(1))
            .expect("child: poll");
        let mut list = Vec::new();
        for tp in committed_partitions() {
            if rng.below(3) == 0 {
                continue;
            }
            let offset = if rng.below(10) == 0 {
                let t = TOPICS.iter().position(|&n| n == tp.topic).unwrap();
                let part = self.topics[t].partition(tp.partition).unwrap();
                let (start, end) = (part.start_offset(), part.end_offset());
                let o = start + rng.below(end - start + 1);
                self.consumer.seek(&tp, o).expect("child: seek");
                o
            } else {
                self.consumer.position(&tp).expect("child: position")
            };
            list.push((tp, offset));
        }
        if list.is_empty() {
            return;
        }
        let all = committed_partitions();
        for (tp, o) in &list {
            let i = all.iter().position(|x| x == tp).unwrap();
            writeln!(out, "c {i} {o}").unwrap();
        }
        out.flush().unwrap();
        self.consumer
            .commit_offsets(&list)
            .expect("child: commit_offsets");
        writeln!(out, "C").unwrap();
    }
}

fn sync_policy(name: &str) -> SyncPolicy {
    match name {
        "never" => SyncPolicy::Never,
        "always" => SyncPolicy::Always,
        other => panic!("unknown sync policy {other:?}"),
    }
}

/// The child: works until killed, announcing and acknowledging each
/// operation on stdout. Without the parent's environment it does nothing,
/// so that `cargo test -- --ignored` stays harmless.
#[test]
#[ignore = "run by mixed_work_survives_kill_9 in a child process"]
fn crash_mixed_child_works_until_killed() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return;
    };
    let dir = Path::new(&dir);
    let sync = sync_policy(&std::env::var(SYNC_ENV).expect("sync policy"));
    let cycle: u64 = std::env::var(CYCLE_ENV).unwrap().parse().unwrap();
    let seed: u64 = std::env::var(SEED_ENV).unwrap().parse().unwrap();
    let mut w = Worker::open(dir, sync);
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    let started = Instant::now();
    let mut seq = cycle << 32;
    let mut rng = Rng::new(seed ^ cycle.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    while started.elapsed() < CHILD_LIFETIME {
        match rng.below(1000) {
            0..=799 => w.append(&mut out, &mut rng, &mut seq),
            800..=959 => w.commit(&mut out, &mut rng),
            960..=979 => {
                w.log.sync().expect("child: sync");
                writeln!(out, "s").unwrap();
            }
            980..=997 => {
                w.log
                    .compact_now(TOPICS[TABLE])
                    .expect("child: compact_now");
                writeln!(out, "k").unwrap();
            }
            _ => {
                let Worker { log, consumer, .. } = w;
                drop(consumer);
                log.close().expect("child: close");
                w = Worker::open(dir, sync);
                writeln!(out, "r").unwrap();
            }
        }
        out.flush().unwrap();
    }
}

// ---------------------------------------------------------------------------
// The parent

/// What one child acknowledged before it was killed.
#[derive(Default)]
struct Cycle {
    /// `(topic, seq, partition, offset)`.
    acks: Vec<(usize, u64, u32, u64)>,
    /// Records announced but not acknowledged: they may or may not be stored.
    in_flight: HashSet<(usize, u64)>,
    /// The last acknowledged commit per partition index.
    commits: BTreeMap<usize, u64>,
    /// The commit announced but not acknowledged.
    commit_in_flight: BTreeMap<usize, u64>,
    commits_acked: u64,
    syncs: u64,
    compactions: u64,
    reopens: u64,
    ready: bool,
}

fn parse(lines: &[String], ctx: &str) -> Cycle {
    let mut c = Cycle::default();
    let bad = |l: &str| -> ! { panic!("unreadable line from the child: {l:?} {ctx}") };
    let num = |s: Option<&str>, l: &str| -> u64 {
        s.and_then(|s| s.parse().ok()).unwrap_or_else(|| bad(l))
    };
    for l in lines {
        let mut f = l.split(' ');
        match f.next() {
            Some("ready") => c.ready = true,
            Some("b") => {
                let (t, seq, n) = (num(f.next(), l), num(f.next(), l), num(f.next(), l));
                c.in_flight.extend((seq..seq + n).map(|s| (t as usize, s)));
            }
            Some("a") => {
                let (t, seq) = (num(f.next(), l) as usize, num(f.next(), l));
                let (p, o) = (num(f.next(), l) as u32, num(f.next(), l));
                assert!(
                    c.in_flight.remove(&(t, seq)),
                    "seq {seq} acknowledged without being announced, or twice {ctx}"
                );
                c.acks.push((t, seq, p, o));
            }
            Some("c") => {
                c.commit_in_flight
                    .insert(num(f.next(), l) as usize, num(f.next(), l));
            }
            Some("C") => {
                c.commits.append(&mut c.commit_in_flight);
                c.commits_acked += 1;
            }
            Some("s") => c.syncs += 1,
            Some("k") => c.compactions += 1,
            Some("r") => c.reopens += 1,
            _ => {} // test harness chatter
        }
    }
    c
}

/// Runs one child until a random point, SIGKILLs it and returns its
/// complete output lines.
fn run_child(
    dir: &Path,
    sync: &str,
    cycle: u64,
    seed: u64,
    rng: &mut Rng,
    ctx: &str,
) -> (Vec<String>, bool) {
    let mut child = spawn_child_test(
        CHILD_TEST,
        &[
            (DIR_ENV, dir.into()),
            (SYNC_ENV, sync.into()),
            (CYCLE_ENV, cycle.to_string().into()),
            (SEED_ENV, seed.to_string().into()),
        ],
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                // A line the kill cut short says nothing: only whole ones count.
                Ok(0) | Err(_) => break,
                Ok(_) if buf.last() != Some(&b'\n') => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf[..buf.len() - 1]).into_owned();
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let early = rng.below(8) == 0;
    let mut lines = Vec::new();
    if early {
        std::thread::sleep(Duration::from_millis(rng.below(60)));
    } else {
        let waited = Instant::now();
        loop {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    let ready = line.ends_with("ready");
                    lines.push(line);
                    if ready {
                        break;
                    }
                }
                Err(_) => panic!(
                    "cycle {cycle}: the child did not open the log within {:?} {ctx}; output: {lines:?}",
                    waited.elapsed()
                ),
            }
        }
        std::thread::sleep(Duration::from_millis(rng.below(300)));
    }
    child.0.kill().expect("SIGKILL the child");
    let status = child.0.wait().expect("reap the child");
    reader.join().unwrap();
    lines.extend(rx.try_iter());
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "cycle {cycle}: the child ended by itself ({status}) before it was killed {ctx}; \
         last output: {:?}",
        &lines[lines.len().saturating_sub(5)..]
    );
    (lines, early)
}

/// What the parent knows about the log: every record that must still be
/// there (unless retention or compaction was allowed to remove it) and the
/// committed offsets.
struct Model {
    /// Per topic and partition: offset -> seq of each record acknowledged,
    /// or found stored after a crash (then part of the log for good).
    known: [Vec<BTreeMap<u64, u64>>; 2],
    /// Where each known seq is stored: `(topic, seq) -> (partition, offset)`.
    placed: HashMap<(usize, u64), (u32, u64)>,
    /// Start offsets seen last time (they never go backwards).
    start: [Vec<u64>; 2],
    /// Per `table` partition: offsets at or after the start whose record
    /// compaction removed (the only gaps allowed).
    compacted_away: Vec<BTreeSet<u64>>,
    /// Committed offset per partition index.
    committed: Vec<Option<u64>>,
}

#[derive(Default, Debug)]
struct Totals {
    kills: u64,
    early_kills: u64,
    cycles_always: u64,
    appends_acked: u64,
    in_flight_found: u64,
    in_flight_lost: u64,
    commits_acked: u64,
    syncs: u64,
    compactions: u64,
    reopens: u64,
    records_verified: u64,
    removed_by_retention: u64,
    removed_by_compaction: u64,
    batches_crc_checked: u64,
    bytes_crc_checked: u64,
}

impl Model {
    fn new() -> Model {
        Model {
            known: [
                vec![BTreeMap::new(); PARTITIONS[EVENTS] as usize],
                vec![BTreeMap::new(); PARTITIONS[TABLE] as usize],
            ],
            placed: HashMap::new(),
            start: [
                vec![0; PARTITIONS[EVENTS] as usize],
                vec![0; PARTITIONS[TABLE] as usize],
            ],
            committed: vec![None; committed_partitions().len()],
            compacted_away: vec![BTreeSet::new(); PARTITIONS[TABLE] as usize],
        }
    }

    fn learn(&mut self, t: usize, seq: u64, p: u32, o: u64, what: &str, ctx: &str) {
        let name = TOPICS[t];
        if let Some(old) = self.known[t][p as usize].insert(o, seq) {
            panic!(
                "{name}-{p} offset {o} holds seq {old}, and seq {seq} was {what} at the same \
                 offset: an acknowledged record was lost or overwritten {ctx}"
            );
        }
        if let Some(was) = self.placed.insert((t, seq), (p, o)) {
            panic!("{name} seq {seq} {what} at {p}/{o} was already stored at {was:?} {ctx}");
        }
    }
}

/// The records a partition holds: offset -> (seq, key).
type Stored = BTreeMap<u64, (u64, Option<Vec<u8>>)>;

/// Reads every record of `topic-p` (with its start and end offsets),
/// checking each against its shape.
fn read_partition(
    log: &Log,
    t: usize,
    p: u32,
    model: &Model,
    cycle: &Cycle,
    ctx: &str,
) -> (u64, u64, Stored) {
    let name = TOPICS[t];
    let part = log.topic(name).unwrap().partition(p).unwrap();
    let (start, end) = (part.start_offset(), part.end_offset());
    let mut found = BTreeMap::new();
    let mut next = start;
    while next < end {
        let msgs = part
            .read(next, 5_000)
            .unwrap_or_else(|e| panic!("read {name}-{p} at {next}: {e} {ctx}"));
        if msgs.is_empty() {
            assert!(
                t == TABLE,
                "read {name}-{p} at {next} < end {end} is empty {ctx}"
            );
            break;
        }
        for m in msgs {
            let o = m.offset();
            assert!(
                o >= next && o < end,
                "{name}-{p}: offset {o} read at {next} (end {end}) is out of order {ctx}"
            );
            let seq: u64 = m
                .headers()
                .find(|(k, _)| *k == "seq")
                .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse().ok())
                .unwrap_or_else(|| panic!("{name}-{p} offset {o} has no seq header: {m:?} {ctx}"));
            match model.known[t][p as usize].get(&o) {
                Some(&k) => assert_eq!(
                    k, seq,
                    "{name}-{p} offset {o}: holds seq {seq}, but seq {k} was acknowledged there {ctx}"
                ),
                None => {
                    assert!(
                        cycle.in_flight.contains(&(t, seq)),
                        "{name}-{p} offset {o} holds seq {seq}, which was neither acknowledged \
                         there nor in flight at the kill {ctx}"
                    );
                }
            }
            let want = shape(t, seq);
            let got = Shape {
                key: m.key().map(<[u8]>::to_vec),
                value: m.value().map(<[u8]>::to_vec),
                headers: m
                    .headers()
                    .map(|(k, v)| (k.to_owned(), v.to_vec()))
                    .collect(),
                partition: want.partition.map(|_| p),
                timestamp: want.timestamp.map(|_| m.timestamp()),
            };
            assert!(
                got == want,
                "{name}-{p} offset {o}: seq {seq} differs from what was appended {ctx}:\n got  {}\n want {}",
                summary(&got),
                summary(&want)
            );
            found.insert(o, (seq, want.key));
            next = o + 1;
        }
    }
    (start, end, found)
}

fn summary(s: &Shape) -> String {
    format!(
        "key={:?} value={:?} headers={:?} partition={:?} timestamp={:?}",
        s.key.as_deref().map(String::from_utf8_lossy),
        s.value.as_ref().map(|v| format!(
            "{} bytes {:?}",
            v.len(),
            String::from_utf8_lossy(&v[..v.len().min(24)])
        )),
        s.headers,
        s.partition,
        s.timestamp
    )
}

/// Reopens the log after the kill and checks it against the model, then
/// folds what it found into the model.
fn verify(dir: &Path, model: &mut Model, cycle: &Cycle, totals: &mut Totals, ctx: &str) {
    // No cleaner and no timed retention: the check must see what the child left.
    let log = Log::open_with(dir, LogConfig::default().cleaner(false))
        .unwrap_or_else(|e| panic!("reopen after kill -9: {e} {ctx}"));
    let have_topics = TOPICS.iter().all(|t| log.topic(t).is_ok());
    if !have_topics {
        // Killed before the first child created its topics.
        assert!(
            model.placed.is_empty() && cycle.acks.is_empty(),
            "topics missing after kill -9: {:?} {ctx}",
            log.topics()
        );
        log.close().unwrap();
        return;
    }
    for t in [EVENTS, TABLE] {
        let name = TOPICS[t];
        for p in 0..PARTITIONS[t] {
            let (start, end, found) = read_partition(&log, t, p, model, cycle, ctx);
            let pi = p as usize;
            assert!(
                start >= model.start[t][pi],
                "{name}-{p}: start offset went back from {} to {start} {ctx}",
                model.start[t][pi]
            );
            model.start[t][pi] = start;
            if t == EVENTS {
                let contiguous = found.keys().copied().eq(start..end);
                assert!(
                    contiguous,
                    "{name}-{p}: offsets {start}..{end} have gaps: {} records read {ctx}",
                    found.len()
                );
            }
            if let Some((&last, &seq)) = model.known[t][pi].last_key_value() {
                assert!(
                    last < end,
                    "{name}-{p}: seq {seq} at offset {last} is missing: end offset {end} {ctx}"
                );
            }
            // Latest stored offset of each key (compacted topic).
            let mut latest: HashMap<&[u8], u64> = HashMap::new();
            for (&o, (_, key)) in &found {
                if let Some(k) = key {
                    latest.insert(k, o);
                }
            }
            let mut gone = Vec::new();
            for (&o, &seq) in &model.known[t][pi] {
                if found.contains_key(&o) {
                    continue;
                }
                if o < start {
                    totals.removed_by_retention += 1;
                } else if t == TABLE {
                    let key = shape(t, seq).key.unwrap();
                    let superseded = latest.get(&key[..]).is_some_and(|&l| l > o);
                    assert!(
                        superseded,
                        "{name}-{p}: seq {seq} (key {:?}) at offset {o} is gone, but no later \
                         record of its key is stored (latest: {:?}) {ctx}",
                        String::from_utf8_lossy(&key),
                        latest.get(&key[..])
                    );
                    totals.removed_by_compaction += 1;
                } else {
                    panic!(
                        "{name}-{p}: acknowledged seq {seq} at offset {o} is gone, though the \
                         start offset is {start} {ctx}"
                    );
                }
                gone.push((o, seq));
            }
            for (o, seq) in gone {
                model.known[t][pi].remove(&o);
                model.placed.remove(&(t, seq));
                if t == TABLE && o >= start {
                    model.compacted_away[pi].insert(o);
                }
            }
            if t == TABLE {
                // Every offset from start to end holds a record, or held one
                // that compaction removed (found records are never among
                // those: they would have failed the checks above).
                let away = &mut model.compacted_away[pi];
                *away = away.split_off(&start);
                assert_eq!(
                    end - start,
                    found.len() as u64 + away.len() as u64,
                    "{name}-{p}: offsets {start}..{end} hold {} records and {} were compacted \
                     away: the rest are gaps that compaction did not make {ctx}",
                    found.len(),
                    away.len()
                );
            }
            totals.records_verified += found.len() as u64;
            for (&o, &(seq, _)) in &found {
                if !model.known[t][pi].contains_key(&o) {
                    model.learn(t, seq, p, o, "found after the kill", ctx);
                    totals.in_flight_found += 1;
                }
            }
        }
    }
    let group = log.group(GROUP).unwrap();
    for (i, tp) in committed_partitions().iter().enumerate() {
        let got = group.committed(tp).unwrap();
        let acked = model.committed[i];
        let in_flight = cycle.commit_in_flight.get(&i).copied();
        assert!(
            got == acked || (got.is_some() && got == in_flight),
            "{tp}: committed offset {got:?} after kill -9; the last acknowledged commit was \
             {acked:?}, the one in flight {in_flight:?} {ctx}"
        );
        model.committed[i] = got;
    }
    log.close()
        .unwrap_or_else(|e| panic!("close after verification: {e} {ctx}"));
    check_crcs(dir, totals, ctx);
}

/// Walks every `.log` file under `dir` (a cleanly closed log, so each holds
/// exactly its batches) and checks each RecordBatch's magic, length, base
/// offset order and CRC-32C, independently of brook's reader.
fn check_crcs(dir: &Path, totals: &mut Totals, ctx: &str) {
    for part in std::fs::read_dir(dir).unwrap() {
        let part = part.unwrap().path();
        if !part.is_dir() {
            continue;
        }
        let mut files: Vec<_> = std::fs::read_dir(&part)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        files.sort();
        let mut next_offset = 0i64;
        for file in files {
            let data = std::fs::read(&file).unwrap();
            let base: i64 = file
                .file_stem()
                .and_then(|s| s.to_str()?.parse().ok())
                .unwrap_or_else(|| panic!("{}: not a segment name {ctx}", file.display()));
            assert!(
                base >= next_offset,
                "{}: base offset {base} is below the previous segment's end {next_offset} {ctx}",
                file.display()
            );
            let mut pos = 0usize;
            while pos < data.len() {
                let at = |what: &str| format!("{} at byte {pos}: {what} {ctx}", file.display());
                assert!(data.len() - pos >= 61, "{}", at("a batch header cut short"));
                let b = &data[pos..];
                let base_offset = i64::from_be_bytes(b[0..8].try_into().unwrap());
                let total = 12 + i32::from_be_bytes(b[8..12].try_into().unwrap()) as usize;
                assert!(
                    (61..=b.len()).contains(&total),
                    "{}",
                    at(&format!("batch length {total} of {} bytes left", b.len()))
                );
                assert_eq!(b[16], 2, "{}", at("magic is not 2"));
                let stored = u32::from_be_bytes(b[17..21].try_into().unwrap());
                let computed = crc32c::crc32c(&b[21..total]);
                assert_eq!(stored, computed, "{}", at("CRC-32C mismatch"));
                let last_delta = i32::from_be_bytes(b[23..27].try_into().unwrap()) as i64;
                assert!(
                    base_offset >= next_offset.max(base) && last_delta >= 0,
                    "{}",
                    at(&format!(
                        "batch offsets {base_offset}+{last_delta} after {next_offset}"
                    ))
                );
                next_offset = base_offset + last_delta + 1;
                totals.batches_crc_checked += 1;
                totals.bytes_crc_checked += total as u64;
                pos += total;
            }
        }
    }
}

#[test]
fn mixed_work_survives_kill_9() {
    let cycles = env_u64("BROOK_CRASH_MIXED_CYCLES").unwrap_or(60);
    let seed = seed("BROOK_CRASH_MIXED_SEED");
    let ctx = format!("(seed {seed}: rerun with BROOK_CRASH_MIXED_SEED={seed})");
    eprintln!("mixed crash loop: {cycles} cycles {ctx}");
    let mut rng = Rng::new(seed);
    let mut dir = tempfile::tempdir().unwrap();
    if std::env::var_os("BROOK_CRASH_MIXED_KEEP").is_some() {
        // For post-mortems: the directory outlives the run.
        eprintln!("mixed crash loop: keeping {}", dir.path().display());
        dir.disable_cleanup(true);
    }
    let mut model = Model::new();
    let mut totals = Totals::default();
    for cycle in 0..cycles {
        let sync = if cycle % 3 == 2 { "always" } else { "never" };
        let cctx = format!("in cycle {cycle} (SyncPolicy {sync}) {ctx}");
        let (lines, early) = run_child(dir.path(), sync, cycle, seed, &mut rng, &cctx);
        let c = parse(&lines, &cctx);
        totals.kills += 1;
        totals.early_kills += u64::from(early);
        totals.cycles_always += u64::from(sync == "always");
        totals.appends_acked += c.acks.len() as u64;
        totals.commits_acked += c.commits_acked;
        totals.syncs += c.syncs;
        totals.compactions += c.compactions;
        totals.reopens += c.reopens;
        for &(t, seq, p, o) in &c.acks {
            model.learn(t, seq, p, o, "acknowledged", &cctx);
        }
        for (&i, &o) in &c.commits {
            model.committed[i] = Some(o);
        }
        let before = totals.in_flight_found;
        verify(dir.path(), &mut model, &c, &mut totals, &cctx);
        totals.in_flight_lost += c.in_flight.len() as u64 - (totals.in_flight_found - before);
    }
    eprintln!("mixed crash loop: {totals:#?} {ctx}");
    assert!(
        totals.appends_acked > 0 && totals.commits_acked > 0,
        "the children acknowledged too little for the test to prove anything: {totals:?} {ctx}"
    );
}
