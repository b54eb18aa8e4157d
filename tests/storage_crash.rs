//! Guarantee: an append that returned survives `kill -9` of the process,
//! byte for byte, and offsets stay contiguous across any number of crashes.
//!
//! The test binary re-executes itself: an ignored child test appends in a
//! loop (several partitions, keyed and unkeyed records, sizes from a few
//! bytes to 40 KiB, small segments so rolls happen) and prints
//! `ack <seq> <partition> <offset>` after each append returns. The parent
//! kills it with SIGKILL after a random delay, reopens the log, checks every
//! acknowledged record, and starts the next child on the same directory.
//!
//! `BROOK_CRASH_CYCLES` sets the number of kills (default 30);
//! `BROOK_CRASH_SEED` replays a run.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use brook::{Log, LogConfig, Record, SyncPolicy, TopicConfig};

const TOPIC: &str = "crash";
const PARTITIONS: u32 = 3;

/// A tiny deterministic PRNG (xorshift64*), so a failing seed replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The value for sequence number `seq`: its length and bytes derive from
/// `seq`, so the parent can check content without being told it.
fn value_of(seq: u64) -> Vec<u8> {
    let len = match seq % 10 {
        0 => 40 * 1024,
        1..=3 => (seq % 700) as usize,
        _ => 100,
    };
    let mut v = format!("seq={seq};").into_bytes();
    v.extend((0..len).map(|i| (seq as usize * 31 + i) as u8));
    v
}

fn key_of(seq: u64) -> Option<String> {
    (seq % 3 != 0).then(|| format!("key-{}", seq % 17))
}

fn policy_from_env() -> SyncPolicy {
    match std::env::var("BROOK_CRASH_POLICY").as_deref() {
        Ok("always") => SyncPolicy::Always,
        _ => SyncPolicy::Never,
    }
}

fn open(dir: &Path, policy: SyncPolicy) -> Log {
    Log::open_with(dir, LogConfig::default().sync(policy))
        .expect("reopening after a crash never fails")
}

/// The child: appends until killed. Not a test on its own.
#[test]
#[ignore = "run by crash tests as a child process"]
fn crash_child_appends_until_killed() {
    let Ok(dir) = std::env::var("BROOK_CRASH_DIR") else {
        return;
    };
    let first_seq: u64 = std::env::var("BROOK_CRASH_FIRST_SEQ")
        .unwrap()
        .parse()
        .unwrap();
    let log = open(Path::new(&dir), policy_from_env());
    let topic = match log.topic(TOPIC) {
        Ok(t) => t,
        Err(_) => log
            .create_topic(
                TOPIC,
                TopicConfig::default()
                    .partitions(PARTITIONS)
                    .segment_bytes(256 * 1024)
                    .max_record_bytes(64 * 1024),
            )
            .unwrap(),
    };
    let mut out = std::io::stdout().lock();
    for seq in first_seq.. {
        let mut r = Record::new(value_of(seq)).header("seq", seq.to_string());
        if let Some(k) = key_of(seq) {
            r = r.key(k);
        }
        let meta = if seq % 50 == 7 {
            // Now and then a small batch, to cover send_batch.
            let metas = topic.send_batch(vec![r]).unwrap();
            metas[0]
        } else {
            topic.send(r).unwrap()
        };
        use std::io::Write;
        writeln!(out, "ack {seq} {} {}", meta.partition, meta.offset).unwrap();
        out.flush().unwrap();
    }
}

struct Acked {
    seq: u64,
    partition: u32,
    offset: u64,
}

fn run_cycles(policy_name: &str, default_cycles: u64) {
    let cycles: u64 = std::env::var("BROOK_CRASH_CYCLES")
        .ok()
        .map_or(default_cycles, |s| s.parse().unwrap());
    let seed: u64 = std::env::var("BROOK_CRASH_SEED").ok().map_or_else(
        || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        },
        |s| s.parse().unwrap(),
    );
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked: Vec<Acked> = Vec::new();
    let mut next_seq = 0u64;
    for cycle in 0..cycles {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child_appends_until_killed",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("BROOK_CRASH_DIR", dir.path())
            .env("BROOK_CRASH_FIRST_SEQ", next_seq.to_string())
            .env("BROOK_CRASH_POLICY", policy_name)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut it = line.split_whitespace();
                if it.next() != Some("ack") {
                    continue;
                }
                let nums: Vec<u64> = it.map(|x| x.parse().unwrap()).collect();
                lines.push(Acked {
                    seq: nums[0],
                    partition: nums[1] as u32,
                    offset: nums[2],
                });
            }
            lines
        });
        // Let it start (open + recovery) and append for a random while.
        let delay = Duration::from_millis(30 + rng.below(250));
        let started = Instant::now();
        std::thread::sleep(delay);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let new_acks = reader.join().unwrap();
        if let Some(last) = new_acks.last() {
            next_seq = last.seq + 1;
        }
        acked.extend(new_acks);
        verify(
            dir.path(),
            &acked,
            policy_from_name(policy_name),
            seed,
            cycle,
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "cycle {cycle} hung (seed {seed})"
        );
    }
    assert!(
        acked.len() as u64 > cycles,
        "children acknowledged almost nothing (seed {seed})"
    );
}

fn policy_from_name(name: &str) -> SyncPolicy {
    if name == "always" {
        SyncPolicy::Always
    } else {
        SyncPolicy::Never
    }
}

/// Every acknowledged record is present and intact; offsets contiguous.
fn verify(dir: &Path, acked: &[Acked], policy: SyncPolicy, seed: u64, cycle: u64) {
    let log = open(dir, policy);
    let Ok(topic) = log.topic(TOPIC) else {
        assert!(
            acked.is_empty(),
            "topic lost after cycle {cycle} (seed {seed})"
        );
        return;
    };
    let mut by_offset: HashMap<(u32, u64), u64> = HashMap::new();
    for a in acked {
        assert!(
            by_offset.insert((a.partition, a.offset), a.seq).is_none(),
            "offset {}-{} acknowledged twice (seed {seed})",
            a.partition,
            a.offset
        );
    }
    for p in 0..PARTITIONS {
        let part = topic.partition(p).unwrap();
        let end = part.end_offset();
        let msgs = part
            .read(0, usize::MAX)
            .unwrap_or_else(|e| panic!("reading {p} after cycle {cycle}: {e} (seed {seed})"));
        assert_eq!(
            msgs.len() as u64,
            end,
            "partition {p}: offsets not contiguous after cycle {cycle} (seed {seed})"
        );
        for (i, m) in msgs.iter().enumerate() {
            assert_eq!(
                m.offset(),
                i as u64,
                "partition {p}: gap at {i} (seed {seed})"
            );
            let seq: u64 = std::str::from_utf8(m.headers().next().unwrap().1)
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(
                m.value().unwrap(),
                &value_of(seq)[..],
                "partition {p} offset {i}: wrong bytes (seed {seed})"
            );
            assert_eq!(
                m.key(),
                key_of(seq).as_deref().map(str::as_bytes),
                "partition {p} offset {i}: wrong key"
            );
            if let Some(&want) = by_offset.get(&(p, i as u64)) {
                assert_eq!(
                    seq, want,
                    "partition {p} offset {i} holds seq {seq}, acknowledged {want} (seed {seed})"
                );
            }
        }
        let max_acked = acked
            .iter()
            .filter(|a| a.partition == p)
            .map(|a| a.offset + 1)
            .max()
            .unwrap_or(0);
        assert!(end >= max_acked, "partition {p}: acknowledged up to {max_acked}, only {end} after cycle {cycle} (seed {seed})");
    }
    log.close().unwrap();
}

#[test]
fn acknowledged_appends_survive_kill_9_under_sync_never() {
    run_cycles("never", 30);
}

#[test]
fn acknowledged_appends_survive_kill_9_under_sync_always() {
    run_cycles("always", 8);
}
