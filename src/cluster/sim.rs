//! Deterministic simulation of the replicated cluster.
//!
//! A cluster in manual mode has no background thread and a logical clock;
//! a seeded random generator picks every step — appends (through the
//! leader, or through a broker with a stale view), single fetches,
//! controller ticks, clock jumps, broker stops, starts, isolations, heals,
//! whole-cluster restarts from disk, and reads — on real replica files.
//! After every step it checks:
//!
//! - no record acknowledged with `Acks::All` is ever lost;
//! - replicas that reconciled with the current epoch agree on every
//!   offset below the high watermark;
//! - the high watermark never moves backwards;
//! - a record a reader saw never disappears or changes;
//! - every partition with a running, reachable in-sync replica has a
//!   leader after the controller's tick.
//!
//! A failing seed prints itself; `BROOK_SIM_SEED=<seed>` reruns exactly
//! that seed. `BROOK_SIM_SEEDS` sets how many seeds run (CI: 200),
//! `BROOK_SIM_STEPS` the steps per seed.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{ClusterConfig, ClusterInner, Network, Part};
use crate::cluster::replication::Ticket;
use crate::config::{SyncPolicy, TopicConfig};
use crate::format::RecordParts;
use crate::record::Message;

/// splitmix64: small, seedable, good enough to pick steps.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        (!items.is_empty()).then(|| items[self.below(items.len() as u64) as usize])
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const BROKERS: u32 = 3;
const LAG_MS: u64 = 200;

struct Pending {
    part: usize,
    ticket: Ticket,
    end: u64,
    records: Vec<(u64, Vec<u8>)>,
}

struct Sim {
    seed: u64,
    rng: Rng,
    dir: tempfile::TempDir,
    c: Arc<ClusterInner>,
    parts: Vec<Arc<Part>>,
    /// Per partition: records acknowledged with `Acks::All`.
    acked: Vec<BTreeMap<u64, Vec<u8>>>,
    /// Per partition: records some reader saw.
    seen: Vec<BTreeMap<u64, Vec<u8>>>,
    /// Per partition: the highest high watermark observed.
    hw: Vec<u64>,
    pending: Vec<Pending>,
    next_value: u64,
    step: u64,
    log: Vec<String>,
}

fn manual_config() -> ClusterConfig {
    ClusterConfig {
        manual: true,
        replica_lag_time_max: std::time::Duration::from_millis(LAG_MS),
        ..ClusterConfig::default().brokers(BROKERS)
    }
}

/// Every record of `log` below `cap`, whatever its high watermark.
pub(super) fn records(log: &crate::storage::PartitionLog, cap: u64) -> Vec<(u64, Vec<u8>)> {
    let mut out: Vec<Message> = Vec::new();
    let mut next = log.start_offset();
    loop {
        let before = out.len();
        match log.read_below(next, 1000, &mut out, false, cap) {
            Ok(n) if out.len() > before => next = n,
            _ => break,
        }
    }
    out.iter()
        .map(|m| (m.offset(), m.value().unwrap_or_default().to_vec()))
        .collect()
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let dir = tempfile::tempdir().unwrap();
        let c = ClusterInner::open(dir.path(), manual_config()).unwrap();
        let mut sim = Sim {
            seed,
            rng: Rng(seed),
            dir,
            c,
            parts: Vec::new(),
            acked: Vec::new(),
            seen: Vec::new(),
            hw: Vec::new(),
            pending: Vec::new(),
            next_value: 0,
            step: 0,
            log: Vec::new(),
        };
        let small = TopicConfig::default()
            .segment_bytes(4096)
            .max_record_bytes(1024);
        sim.c
            .create_topic(
                "a",
                small
                    .clone()
                    .partitions(2)
                    .replication_factor(3)
                    .min_insync_replicas(2),
            )
            .unwrap();
        sim.c
            .create_topic(
                "b",
                small
                    .partitions(1)
                    .replication_factor(2)
                    .min_insync_replicas(1),
            )
            .unwrap();
        sim.load_parts();
        let n = sim.parts.len();
        sim.acked = vec![BTreeMap::new(); n];
        sim.seen = vec![BTreeMap::new(); n];
        sim.hw = vec![0; n];
        sim
    }

    fn load_parts(&mut self) {
        let meta = self.c.meta.lock();
        self.parts = ["a", "b"]
            .iter()
            .flat_map(|t| meta.topics[*t].parts.iter().cloned())
            .collect();
    }

    fn fail(&self, what: String) -> ! {
        let keep = env("BROOK_SIM_HISTORY", 25) as usize;
        let recent: Vec<&String> = self.log.iter().rev().take(keep).collect();
        panic!(
            "simulation seed {} failed at step {}: {what}\nrerun: BROOK_SIM_SEED={} cargo test --release --lib cluster::sim\nlast steps (newest first): {recent:#?}",
            self.seed, self.step, self.seed
        );
    }

    fn value(&mut self) -> Vec<u8> {
        self.next_value += 1;
        format!("v{}-{}", self.seed, self.next_value).into_bytes()
    }

    fn append(&mut self, i: usize, via: Option<u32>) {
        let part = Arc::clone(&self.parts[i]);
        let ticket = match via {
            None => part.route(super::Acks::All),
            Some(b) => part.ticket_via(b),
        };
        let Ok(ticket) = ticket else { return };
        let n = 1 + self.rng.below(3) as usize;
        let values: Vec<Vec<u8>> = (0..n).map(|_| self.value()).collect();
        let mut offsets = Vec::new();
        let written = ticket.log.append(
            values.iter().map(|v| {
                (
                    RecordParts::new(Some(b"k"), Some(v), &[]),
                    1_700_000_000_000,
                )
            }),
            |o, _| offsets.push(o),
        );
        let Ok(end) = written else { return };
        self.log.push(format!(
            "append {:?} to part {i} via broker {} epoch {}: offsets {offsets:?}",
            via, ticket.broker, ticket.epoch
        ));
        {
            let mut st = part.st.lock();
            part.advance_hw(&mut st);
        }
        self.pending.push(Pending {
            part: i,
            ticket,
            end,
            records: offsets.into_iter().zip(values).collect(),
        });
    }

    fn random_step(&mut self) {
        let n = self.parts.len();
        let brokers: Vec<u32> = (0..BROKERS).collect();
        let stopped: Vec<u32> = brokers
            .iter()
            .copied()
            .filter(|&b| !self.c.alive(b))
            .collect();
        let running: Vec<u32> = brokers
            .iter()
            .copied()
            .filter(|&b| self.c.alive(b))
            .collect();
        let isolated: Vec<u32> = brokers
            .iter()
            .copied()
            .filter(|&b| self.c.isolated[b as usize].load(Ordering::Acquire))
            .collect();
        match self.rng.below(100) {
            0..=24 => {
                let i = self.rng.below(n as u64) as usize;
                self.append(i, None);
            }
            25..=29 => {
                let i = self.rng.below(n as u64) as usize;
                let b = self.rng.below(BROKERS as u64) as u32;
                self.append(i, Some(b));
            }
            30..=64 => {
                let i = self.rng.below(n as u64) as usize;
                let part = Arc::clone(&self.parts[i]);
                let replicas = part.st.lock().replicas();
                if let Some(f) = self.rng.pick(&replicas) {
                    let now = self.c.now();
                    let changed = self.c.fetch_once(&part, f, now);
                    self.log.push(format!("fetch part {i} by {f}: {changed:?}"));
                    if changed.truth {
                        let meta = self.c.meta.lock();
                        self.c.persist(&meta).unwrap();
                    }
                }
            }
            65..=72 => {
                self.log.push("tick".into());
                self.c.tick();
                self.check_leaders();
            }
            73..=79 => {
                let ms = self.rng.below(LAG_MS * 3 / 2);
                self.c.manual_clock.fetch_add(ms, Ordering::AcqRel);
                self.log.push(format!("clock +{ms} ms"));
            }
            80..=83 => {
                if let Some(b) = self.rng.pick(&running) {
                    self.log.push(format!("stop broker {b}"));
                    self.c.stop_broker(b).unwrap();
                }
            }
            84..=88 => {
                if let Some(b) = self.rng.pick(&stopped) {
                    self.log.push(format!("start broker {b}"));
                    self.c.start_broker(b).unwrap();
                }
            }
            89..=91 => {
                let b = self.rng.below(BROKERS as u64) as u32;
                self.log.push(format!("isolate broker {b}"));
                self.c.set_isolated(b, true).unwrap();
            }
            92..=95 => {
                if let Some(b) = self.rng.pick(&isolated) {
                    self.log.push(format!("heal broker {b}"));
                    self.c.set_isolated(b, false).unwrap();
                }
            }
            96..=97 => self.read(),
            _ => self.restart(),
        }
    }

    /// A reader reads the whole partition from its leader.
    fn read(&mut self) {
        let i = self.rng.below(self.parts.len() as u64) as usize;
        let Some(log) = self.parts[i].read_log() else {
            return;
        };
        let got = records(&log, log.end_offset());
        self.log
            .push(format!("read part {i}: {} records", got.len()));
        for (o, v) in got {
            self.seen[i].insert(o, v);
        }
    }

    /// The whole process restarts: every replica reopens from disk.
    fn restart(&mut self) {
        self.log.push("restart the cluster".into());
        // In-flight appends die with the process.
        self.pending.clear();
        self.c.close().unwrap();
        self.c = ClusterInner::open(self.dir.path(), manual_config()).unwrap();
        self.load_parts();
    }

    fn settle_pending(&mut self) {
        let mut keep = Vec::new();
        for p in std::mem::take(&mut self.pending) {
            let part = &self.parts[p.part];
            let state = {
                let st = part.st.lock();
                part.ack_state(&st, &p.ticket, p.end)
            };
            match state {
                Some(Ok(())) => {
                    self.log
                        .push(format!("acknowledged part {} up to {}", p.part, p.end));
                    self.acked[p.part].extend(p.records);
                }
                Some(Err(_)) => {}
                None => keep.push(p),
            }
        }
        self.pending = keep;
    }

    fn check_leaders(&self) {
        let meta = self.c.meta.lock();
        let Some(controller) = meta.controller else {
            return;
        };
        drop(meta);
        for (i, part) in self.parts.iter().enumerate() {
            let st = part.st.lock();
            let electable = st.isr.iter().any(|&b| {
                self.c.reachable(controller, b) && st.slot(b).is_some_and(|s| s.log.is_some())
            });
            if electable && st.leader.is_none() {
                self.fail(format!(
                    "part {i} has live in-sync replicas {:?} but no leader",
                    st.isr
                ));
            }
        }
    }

    fn check(&mut self) {
        self.settle_pending();
        for i in 0..self.parts.len() {
            let part = Arc::clone(&self.parts[i]);
            let st = part.st.lock();
            if st.hw < self.hw[i] {
                self.fail(format!(
                    "part {i}: high watermark fell from {} to {}",
                    self.hw[i], st.hw
                ));
            }
            self.hw[i] = st.hw;
            let Some(leader_log) = st.leader_log().cloned() else {
                continue;
            };
            let hw = st.hw;
            let leader: BTreeMap<u64, Vec<u8>> = records(&leader_log, hw).into_iter().collect();
            for (o, v) in &self.acked[i] {
                if leader.get(o) != Some(v) {
                    self.fail(format!(
                        "part {i}: acknowledged offset {o} is {:?} on leader {:?}, hw {hw}",
                        leader
                            .get(o)
                            .map(|v| String::from_utf8_lossy(v).into_owned()),
                        st.leader
                    ));
                }
            }
            for (o, v) in &self.seen[i] {
                if *o >= leader_log.start_offset() && leader.get(o) != Some(v) {
                    self.fail(format!(
                        "part {i}: offset {o} a reader saw as {:?} is {:?} on leader {:?} (hw {hw})",
                        String::from_utf8_lossy(v),
                        leader.get(o).map(|v| String::from_utf8_lossy(v).into_owned()),
                        st.leader
                    ));
                }
            }
            for s in &st.slots {
                let Some(log) = &s.log else { continue };
                if s.synced_epoch != st.epoch || Some(s.broker) == st.leader {
                    continue;
                }
                let cap = hw.min(log.log_end_offset());
                for (o, v) in records(log, cap) {
                    if leader.get(&o).is_some_and(|lv| *lv != v) {
                        self.fail(format!(
                            "part {i}: replica on broker {} disagrees with the leader at offset {o} (hw {hw})",
                            s.broker
                        ));
                    }
                }
            }
        }
    }

    /// Ends the run: everything heals and starts, replication settles, and
    /// every replica must hold the same records as its leader.
    fn finish(&mut self) {
        for b in 0..BROKERS {
            self.c.set_isolated(b, false).unwrap();
            self.c.start_broker(b).unwrap();
        }
        for _ in 0..50 {
            self.c.replicate_round();
            self.c.tick();
        }
        self.check();
        self.check_leaders();
        for (i, part) in self.parts.iter().enumerate() {
            let st = part.st.lock();
            let Some(leader_log) = st.leader_log() else {
                self.fail(format!("part {i} has no leader after healing"));
            };
            let end = leader_log.log_end_offset();
            let leader = records(leader_log, end);
            for s in &st.slots {
                let log = s.log.as_ref().unwrap();
                if records(log, end) != leader {
                    self.fail(format!(
                        "part {i}: broker {} differs from the leader after settling",
                        s.broker
                    ));
                }
            }
            if st.hw != end {
                self.fail(format!(
                    "part {i}: hw {} below the settled end {end}",
                    st.hw
                ));
            }
        }
    }
}

fn run(seed: u64, steps: u64) -> (usize, usize) {
    let mut sim = Sim::new(seed);
    for step in 0..steps {
        sim.step = step;
        sim.random_step();
        sim.check();
    }
    sim.finish();
    let acked = sim.acked.iter().map(BTreeMap::len).sum();
    let seen = sim.seen.iter().map(BTreeMap::len).sum();
    sim.c.close().unwrap();
    (acked, seen)
}

/// Under `SyncPolicy::Always`, a follower's copy counted toward the high
/// watermark (and so toward `Acks::All`) before the fsync that followed the
/// fetch, whose error was ignored.
#[test]
fn a_follower_counts_toward_the_high_watermark_only_once_its_copy_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let config = ClusterConfig {
        sync: SyncPolicy::Always,
        ..manual_config()
    };
    let c = ClusterInner::open(dir.path(), config).unwrap();
    c.create_topic(
        "t",
        TopicConfig::default()
            .replication_factor(2)
            .min_insync_replicas(1),
    )
    .unwrap();
    let part = Arc::clone(&c.meta.lock().topics["t"].parts[0]);
    let ticket = part.route(super::Acks::All).unwrap();
    let follower = part
        .st
        .lock()
        .replicas()
        .into_iter()
        .find(|&b| b != ticket.broker)
        .unwrap();
    let append = || {
        let record = RecordParts::new(Some(b"k"), Some(b"v"), &[]);
        ticket
            .log
            .append([(record, 1_700_000_000_000)], |_, _| {})
            .unwrap()
    };
    let leo = |part: &Part| part.st.lock().slot(follower).unwrap().leo;
    let flog = part.st.lock().slot(follower).unwrap().log.clone().unwrap();
    // A first record: copied (the follower's file grows), fsynced, counted.
    let first = append();
    c.fetch_once(&part, follower, c.now());
    assert_eq!(leo(&part), first);
    // A second one is copied, but its fsync fails (no descriptor left to
    // open the follower's segment): the copy does not count.
    let end = append();
    let segment = format!("broker-{follower}/t-0/00000000000000000000.log");
    crate::io::faults::fail_next_open(&segment);
    c.fetch_once(&part, follower, c.now());
    assert_eq!(flog.log_end_offset(), end, "copied");
    assert_eq!(leo(&part), first, "counted though not durable");
    // The next fetch copies nothing, fsyncs the copy, and then it counts.
    c.fetch_once(&part, follower, c.now());
    assert_eq!(leo(&part), end, "the follower's end counts");
    assert!(
        flog.durable_end() >= end,
        "counted before it was durable: durable below {}, end {end}",
        flog.durable_end()
    );
    assert_eq!(part.st.lock().hw, end);
}

#[test]
fn simulated_failures_never_lose_acknowledged_records() {
    let steps = env("BROOK_SIM_STEPS", 300);
    let seeds: Vec<u64> = match std::env::var("BROOK_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("BROOK_SIM_SEED is a number")],
        Err(_) => {
            let base = env("BROOK_SIM_BASE", 0x5eed);
            (0..env("BROOK_SIM_SEEDS", 200)).map(|i| base + i).collect()
        }
    };
    let (mut acked, mut seen) = (0, 0);
    for &seed in &seeds {
        let (a, s) = run(seed, steps);
        acked += a;
        seen += s;
    }
    eprintln!(
        "cluster simulation: {} seeds x {steps} steps, {acked} acknowledged records checked, {seen} read records checked",
        seeds.len()
    );
    assert!(
        acked > seeds.len(),
        "the workload acknowledged almost nothing"
    );
}
