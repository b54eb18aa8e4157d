//! Acknowledged appends survive `kill -9`.
//!
//! The parent test re-executes this test binary to run the `#[ignore]`d
//! child test in a process of its own. The child opens the log and appends
//! forever (several partitions, keyed and unkeyed records, sizes from a few
//! bytes to more than one 16 KiB batch, now and then a bulk call of over
//! 256 KiB, small segments so that rolls happen) and prints `ack <seq> <partition> <offset>` after each append
//! returns. The parent SIGKILLs it after a random delay, reopens the log and
//! checks that every acknowledged record is stored byte for byte at its
//! offset and that each partition's offsets run from 0 without a gap. The
//! cycles share one directory, so every child also starts from the log its
//! killed predecessor left, and the checks are cumulative.
//!
//! `BROOK_CRASH_CYCLES` sets the number of cycles (default 30 with
//! `SyncPolicy::Never`, a third of that with `SyncPolicy::Always`);
//! `BROOK_CRASH_SEED` replays a run (the seed is printed on failure).

mod common;
use common::{env_u64, spawn_child_test, stdout_lines, Rng};

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use brook::{Error, Log, LogConfig, Record, SyncPolicy, Topic, TopicConfig};

const CHILD_TEST: &str = "crash_child_appends_until_killed";
const DIR_ENV: &str = "BROOK_CRASH_CHILD_DIR";
const SYNC_ENV: &str = "BROOK_CRASH_CHILD_SYNC";
const CYCLE_ENV: &str = "BROOK_CRASH_CHILD_CYCLE";
const TOPIC: &str = "crash";
const PARTITIONS: u32 = 3;
/// Small enough that a cycle rolls several segments.
const SEGMENT_BYTES: u64 = 256 * 1024;
const MAX_RECORD_BYTES: usize = 64 * 1024;
/// The child stops by itself after this long, should the parent vanish.
const CHILD_LIFETIME: Duration = Duration::from_secs(60);

/// Everything about the record with sequence number `seq`, derived from
/// `seq` alone so that the parent can recompute what the child appended.
#[derive(Debug, PartialEq)]
struct Shape {
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
    partition: Option<u32>,
    timestamp: Option<i64>,
}

/// Set in the sequence numbers of records sent in bulk: large records, all
/// to one partition, in calls of over 256 KiB (which brook writes with
/// `pwrite` rather than through the map).
const BULK: u64 = 1 << 31;

fn shape(seq: u64) -> Shape {
    let mut rng = Rng::new(seq);
    if seq & BULK != 0 {
        let len = 7 * 1024 + rng.below(5 * 1024) as usize;
        return Shape {
            partition: Some((seq >> 32) as u32 % PARTITIONS),
            ..shape_of(&mut rng, seq, len)
        };
    }
    let len = match rng.below(100) {
        0..=1 => 16 * 1024 + rng.below(8 * 1024) as usize, // more than one batch
        2..=9 => 1024 + rng.below(4096) as usize,
        _ => rng.below(300) as usize,
    };
    shape_of(&mut rng, seq, len)
}

/// Record `seq` with a value of `len` bytes, the rest drawn from `rng`.
fn shape_of(rng: &mut Rng, seq: u64, len: usize) -> Shape {
    let mut value = format!("seq={seq};").into_bytes();
    while value.len() < len {
        value.push(b'a' + (rng.next() % 26) as u8);
    }
    let key = match rng.below(3) {
        0 => None,
        _ => Some(format!("key-{}", rng.below(50)).into_bytes()),
    };
    let partition =
        (key.is_none() && rng.below(2) == 0).then(|| rng.below(PARTITIONS as u64) as u32);
    let headers = if rng.below(4) == 0 {
        vec![("seq".to_owned(), seq.to_string().into_bytes())]
    } else {
        vec![]
    };
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
    let mut r = Record::new(&s.value);
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

fn sync_policy(name: &str) -> SyncPolicy {
    match name {
        "never" => SyncPolicy::Never,
        "always" => SyncPolicy::Always,
        other => panic!("unknown sync policy {other:?}"),
    }
}

fn open_or_create(log: &Log) -> Topic {
    let config = TopicConfig::default()
        .partitions(PARTITIONS)
        .segment_bytes(SEGMENT_BYTES)
        .max_record_bytes(MAX_RECORD_BYTES);
    match log.create_topic(TOPIC, config) {
        Ok(t) => t,
        Err(Error::TopicExists { .. }) => log.topic(TOPIC).expect("existing topic"),
        Err(e) => panic!("create topic: {e}"),
    }
}

/// The child: appends until killed, acknowledging each append on stdout.
/// Without the parent's environment it does nothing, so that
/// `cargo test -- --ignored` stays harmless.
#[test]
#[ignore = "run by the crash tests in a child process"]
fn crash_child_appends_until_killed() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return;
    };
    let sync = sync_policy(&std::env::var(SYNC_ENV).expect("sync policy"));
    let cycle: u64 = std::env::var(CYCLE_ENV).expect("cycle").parse().unwrap();
    let log = Log::open_with(&dir, LogConfig::default().sync(sync)).expect("child: open log");
    let topic = open_or_create(&log);
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    let started = Instant::now();
    let mut seq = cycle << 32;
    let mut rng = Rng::new(cycle);
    while started.elapsed() < CHILD_LIFETIME {
        let s = shape(seq);
        // Mostly single sends; now and then a batch, acknowledged record by
        // record, or a bulk one.
        if rng.below(40) == 0 {
            let n = 40 + rng.below(20);
            let seqs: Vec<u64> = (seq..seq + n).map(|s| s | BULK).collect();
            let shapes: Vec<Shape> = seqs.iter().map(|&s| shape(s)).collect();
            let metas = topic
                .send_batch(shapes.iter().map(record))
                .expect("child: bulk send_batch");
            for (s, m) in seqs.iter().zip(&metas) {
                writeln!(out, "ack {s} {} {}", m.partition, m.offset).unwrap();
            }
            seq += n;
        } else if rng.below(20) == 0 {
            let n = 1 + rng.below(30);
            let shapes: Vec<Shape> = (seq..seq + n).map(shape).collect();
            let metas = topic
                .send_batch(shapes.iter().map(record))
                .expect("child: send_batch");
            for (i, m) in metas.iter().enumerate() {
                writeln!(out, "ack {} {} {}", seq + i as u64, m.partition, m.offset).unwrap();
            }
            seq += n;
        } else {
            let m = topic.send(record(&s)).expect("child: send");
            writeln!(out, "ack {seq} {} {}", m.partition, m.offset).unwrap();
            seq += 1;
        }
        out.flush().unwrap();
    }
}

/// Runs one child until a random point, SIGKILLs it and returns its
/// acknowledgements `(seq, partition, offset)`.
fn run_child(
    dir: &std::path::Path,
    sync: &str,
    cycle: u64,
    rng: &mut Rng,
    ctx: &str,
) -> Vec<(u64, u32, u64)> {
    let mut child = spawn_child_test(
        CHILD_TEST,
        &[
            (DIR_ENV, dir.into()),
            (SYNC_ENV, sync.into()),
            (CYCLE_ENV, cycle.to_string().into()),
        ],
    );
    let (rx, reader) = stdout_lines(&mut child);
    // One cycle in eight kills the child while it may still be opening
    // (recovering) the log; the others let it append for a while first.
    let early = rng.below(8) == 0;
    let delay = if early {
        Duration::from_millis(rng.below(40))
    } else {
        Duration::from_millis(rng.below(300))
    };
    let mut lines = Vec::new();
    if !early {
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
    }
    std::thread::sleep(delay);
    child.0.kill().expect("SIGKILL the child");
    let status = child.0.wait().expect("reap the child");
    reader.join().unwrap();
    lines.extend(rx.try_iter());
    assert!(
        !status.success(),
        "cycle {cycle}: the child exited by itself before it was killed {ctx}; output: {lines:?}"
    );
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("ack "))
        .map(|l| {
            let f: Vec<u64> = l
                .split(' ')
                .map(|x| x.parse().unwrap_or_else(|_| panic!("bad ack line {l:?}")))
                .collect();
            (f[0], f[1] as u32, f[2])
        })
        .collect()
}

/// Reopens the log and checks every acknowledged record and the offsets.
fn verify(dir: &std::path::Path, acked: &BTreeMap<(u32, u64), u64>, cycle: u64, ctx: &str) {
    let log =
        Log::open(dir).unwrap_or_else(|e| panic!("cycle {cycle}: reopen after kill -9: {e} {ctx}"));
    let topic = match log.topic(TOPIC) {
        Ok(t) => t,
        Err(Error::UnknownTopic { .. }) if acked.is_empty() => return,
        Err(e) => panic!("cycle {cycle}: topic after kill -9: {e} {ctx}"),
    };
    for p in 0..PARTITIONS {
        let part = topic.partition(p).unwrap();
        assert_eq!(
            part.start_offset(),
            0,
            "cycle {cycle}: {TOPIC}-{p} lost its start {ctx}"
        );
        let end = part.end_offset();
        let mut next = 0u64;
        while next < end {
            let msgs = part
                .read(next, 5_000)
                .unwrap_or_else(|e| panic!("cycle {cycle}: read {TOPIC}-{p} at {next}: {e} {ctx}"));
            assert!(
                !msgs.is_empty(),
                "cycle {cycle}: read {TOPIC}-{p} at {next} < end {end} is empty {ctx}"
            );
            for m in msgs {
                assert_eq!(
                    m.offset(),
                    next,
                    "cycle {cycle}: {TOPIC}-{p} offsets must run without a gap {ctx}"
                );
                if let Some(&seq) = acked.get(&(p, next)) {
                    let want = shape(seq);
                    let got = Shape {
                        key: m.key().map(<[u8]>::to_vec),
                        value: m.value().expect("a value").to_vec(),
                        headers: m
                            .headers()
                            .map(|(k, v)| (k.to_owned(), v.to_vec()))
                            .collect(),
                        partition: want.partition.map(|_| p),
                        timestamp: want.timestamp.map(|_| m.timestamp()),
                    };
                    assert!(
                        got == want,
                        "cycle {cycle}: acknowledged record seq {seq} at {TOPIC}-{p} offset {next} \
                         differs after kill -9 {ctx}:\n got  {:?}\n want {:?}",
                        summary(&got),
                        summary(&want)
                    );
                }
                next += 1;
            }
        }
        if let Some((&(_, last), &seq)) = acked.range((p, 0)..=(p, u64::MAX)).next_back() {
            assert!(
                last < end,
                "cycle {cycle}: acknowledged seq {seq} at {TOPIC}-{p} offset {last} is missing: \
                 end_offset is {end} {ctx}"
            );
        }
    }
    log.close().unwrap();
}

fn summary(s: &Shape) -> String {
    format!(
        "key={:?} value={} bytes starting {:?} headers={:?} partition={:?} timestamp={:?}",
        s.key.as_deref().map(String::from_utf8_lossy),
        s.value.len(),
        String::from_utf8_lossy(&s.value[..s.value.len().min(24)]),
        s.headers,
        s.partition,
        s.timestamp
    )
}

fn crash_cycles(sync: &str, cycles: u64) {
    let seed = env_u64("BROOK_CRASH_SEED").unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    let ctx = format!("(SyncPolicy {sync}, seed {seed}: rerun with BROOK_CRASH_SEED={seed})");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut acked: BTreeMap<(u32, u64), u64> = BTreeMap::new();
    let mut cycles_with_acks = 0;
    for cycle in 0..cycles {
        let acks = run_child(dir.path(), sync, cycle, &mut rng, &ctx);
        if !acks.is_empty() {
            cycles_with_acks += 1;
        }
        for (seq, p, offset) in acks {
            if let Some(old) = acked.insert((p, offset), seq) {
                panic!(
                    "cycle {cycle}: {TOPIC}-{p} offset {offset} acknowledged twice \
                     (seq {old}, then seq {seq}): an acknowledged record was lost or overwritten {ctx}"
                );
            }
        }
        verify(dir.path(), &acked, cycle, &ctx);
    }
    assert!(
        cycles_with_acks * 2 >= cycles,
        "only {cycles_with_acks} of {cycles} cycles acknowledged anything: the test proved little {ctx}"
    );
    eprintln!(
        "crash test ({sync}): {cycles} kills, {} acknowledged records verified {ctx}",
        acked.len()
    );
}

#[test]
fn acknowledged_appends_survive_kill_9_with_sync_never() {
    crash_cycles("never", env_u64("BROOK_CRASH_CYCLES").unwrap_or(30));
}

#[test]
fn acknowledged_appends_survive_kill_9_with_sync_always() {
    let cycles = env_u64("BROOK_CRASH_CYCLES").map_or(10, |c| c.div_ceil(3));
    crash_cycles("always", cycles.max(1));
}
