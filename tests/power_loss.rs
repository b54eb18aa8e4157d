//! Power loss at any point: no acknowledged-durable record, commit or topic
//! is lost, nothing half-written is ever read back.
//!
//! Each seed runs a random workload on a real log directory watched by a
//! `brook::power_loss::Recorder` (feature `power-loss-sim`): appends under
//! `SyncPolicy::Always` and `Never`, `send_batch` (now and then of over
//! 256 KiB, which brook writes with `pwrite`), `log.sync()`, topic
//! creation and deletion, consumer commits, segment rolls, retention,
//! in-place compression, `compact_now`, and clean close/reopen. After every
//! API call the test marks the operation log and notes what the call
//! acknowledged as durable. Then it cuts power at many points of the log
//! (inside calls too: between a temp file's fsync and its rename, between
//! a compaction's commit and its swap, ...) in each loss mode — drop
//! everything unsynced, keep a prefix of it, tear the last write at a
//! byte, reorder between files — materialises the directory a reboot
//! would find, opens it with `Log::open` and checks it.
//!
//! ```text
//! cargo test --release --all-features --test power_loss
//! BROOK_POWER_LOSS_SEEDS=500 BROOK_POWER_LOSS_CRASHES=40 cargo test --release --all-features --test power_loss
//! BROOK_POWER_LOSS_SEED=1234 cargo test --release --all-features --test power_loss   # one seed
//! ```
//!
//! A workload is a function of its seed; background work (fsyncs of rolled
//! segments, idle seals) may shift positions slightly between runs, so a
//! reproduction replays the same calls with crash points drawn the same way.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use brook::power_loss::{History, LossMode, Op, Recorder, Rng};
use brook::{
    CleanupPolicy, Compression, ConsumerConfig, Log, LogConfig, Record, SyncPolicy, TopicConfig,
    TopicPartition,
};

type Key = Option<Vec<u8>>;
type Value = Option<Vec<u8>>;

/// What one partition had acknowledged after a call.
#[derive(Debug, Clone, Default)]
struct PartExpect {
    /// Offsets below this were covered by a completed sync.
    durable_end: u64,
    /// First offset the partition still held (retention moves it).
    start: u64,
}

#[derive(Debug, Clone)]
struct TopicExpect {
    config: TopicConfig,
    parts: Vec<PartExpect>,
}

/// The acknowledged state after a call.
#[derive(Debug, Clone, Default)]
struct Snap {
    topics: BTreeMap<String, TopicExpect>,
    /// Per (group, topic, partition): index into `Workload::commits` of the
    /// last commit known durable.
    durable_commit: BTreeMap<(String, String, u32), usize>,
    /// Per (group, topic, partition): how many commits were issued.
    issued_commits: BTreeMap<(String, String, u32), usize>,
}

/// Everything the workload did, for the checks.
struct Workload {
    /// Every record appended, by partition and offset (one timeline: a
    /// record present after any power cut must be this one).
    records: BTreeMap<(String, u32), BTreeMap<u64, (Key, Value)>>,
    commits: BTreeMap<(String, String, u32), Vec<u64>>,
    /// `snaps[i]`: state after the call that ended at `marks[i]`.
    snaps: Vec<Snap>,
    marks: Vec<usize>,
    /// Description of each call, for failure messages.
    calls: Vec<String>,
}

const GROUPS: [&str; 2] = ["billing", "audit"];

fn topic_config(rng: &mut Rng) -> TopicConfig {
    let base = TopicConfig::default()
        .partitions(1 + rng.below(3) as u32)
        .max_record_bytes(1024)
        .segment_bytes(2048 + rng.below(4) * 1024);
    match rng.below(4) {
        0 => base,
        1 => base.retention_bytes(Some(4096 + rng.below(4096))),
        2 => base
            .cleanup_policy(CleanupPolicy::Compact)
            .min_cleanable_dirty_ratio(0.0),
        _ => base.compression(Compression::Lz4),
    }
}

fn log_config(rng: &mut Rng) -> LogConfig {
    let policy = if rng.below(2) == 0 {
        SyncPolicy::Always
    } else {
        SyncPolicy::Never
    };
    LogConfig::default().sync(policy).cleaner(false)
}

/// Runs the workload of `seed` on the recorded directory.
fn run_workload(seed: u64, rec: &Recorder, steps: usize) -> Workload {
    let mut rng = Rng::new(seed);
    let dir = rec.dir().to_owned();
    let mut cfg = log_config(&mut rng);
    let mut log = Log::open_with(&dir, cfg.clone()).expect("open the recorded log");
    let mut w = Workload {
        records: BTreeMap::new(),
        commits: BTreeMap::new(),
        snaps: Vec::new(),
        marks: Vec::new(),
        calls: Vec::new(),
    };
    let mut snap = Snap::default();
    let mut next_topic = 0;
    let end = |w: &mut Workload, snap: &Snap, what: String| {
        w.marks.push(rec.mark());
        w.snaps.push(snap.clone());
        w.calls.push(what);
    };
    end(&mut w, &snap, format!("open with {:?}", cfg.sync));
    for step in 0..steps {
        let names: Vec<String> = snap.topics.keys().cloned().collect();
        let roll = rng.below(100);
        let what;
        if names.is_empty() || (roll < 4 && names.len() < 4) {
            let name = format!("t{next_topic}");
            next_topic += 1;
            let tc = topic_config(&mut rng);
            log.create_topic(&name, tc.clone()).expect("create topic");
            what = format!("create topic {name} {tc:?}");
            let parts = vec![PartExpect::default(); tc.partitions as usize];
            snap.topics.insert(name, TopicExpect { config: tc, parts });
        } else if roll < 60 {
            let name = &names[rng.below(names.len() as u64) as usize];
            let t = log.topic(name).expect("topic");
            let te = &snap.topics[name];
            let compacted = te.config.cleanup_policy == CleanupPolicy::Compact;
            // Now and then a bulk call: over 256 KiB of records of over
            // 512 bytes, which brook writes with `pwrite` (unless the topic
            // compresses), rolling many segments.
            let bulk = roll >= 58;
            let n = match roll {
                _ if bulk => 260 + rng.below(40),
                0..40 => 1,
                _ => 2 + rng.below(7),
            };
            let partition = rng.below(te.parts.len() as u64) as u32;
            let mut batch = Vec::new();
            for i in 0..n {
                let key = if compacted || rng.below(2) == 0 {
                    Some(format!("k{}", rng.below(6)).into_bytes())
                } else {
                    None
                };
                let len = match bulk {
                    true => 900 + rng.below(100) as usize,
                    false => 1 + rng.below(600) as usize,
                };
                let value = if compacted && rng.below(10) == 0 {
                    None
                } else {
                    let mut v = format!("s{seed}-{step}-{i}-").into_bytes();
                    v.resize(len.max(v.len()), b'a' + (step % 26) as u8);
                    Some(v)
                };
                batch.push((key, value));
            }
            let records: Vec<Record> = batch
                .iter()
                .map(|(k, v)| {
                    let r = match (k, v) {
                        (Some(k), None) => Record::tombstone(k),
                        (_, Some(v)) => Record::new(v),
                        (None, None) => unreachable!("tombstones have keys"),
                    };
                    let r = match k {
                        Some(k) if v.is_some() => r.key(k),
                        _ => r,
                    };
                    r.partition(partition)
                })
                .collect();
            let metas = if n == 1 {
                vec![t.send(records[0].clone()).expect("send")]
            } else {
                t.send_batch(&records).expect("send_batch")
            };
            let stored = w.records.entry((name.clone(), partition)).or_default();
            for (m, kv) in metas.iter().zip(batch) {
                assert_eq!(m.partition, partition);
                assert!(stored.insert(m.offset, kv).is_none(), "offset reused");
            }
            let last = metas.last().expect("at least one").offset;
            if cfg.sync == SyncPolicy::Always {
                let p = &mut snap.topics.get_mut(name).expect("topic").parts[partition as usize];
                p.durable_end = p.durable_end.max(last + 1);
            }
            what = format!("append {n} to {name}-{partition}, last offset {last}");
        } else if roll < 70 {
            log.sync().expect("sync");
            mark_all_durable(&log, &mut snap, &w);
            what = "log.sync()".into();
        } else if roll < 80 {
            let name = &names[rng.below(names.len() as u64) as usize];
            let group = GROUPS[rng.below(2) as usize];
            let partition = rng.below(snap.topics[name].parts.len() as u64) as u32;
            let tp = TopicPartition::new(name.as_str(), partition);
            let end_offset = log
                .topic(name)
                .and_then(|t| t.partition(partition))
                .expect("partition")
                .end_offset();
            let offset = rng.below(end_offset + 1);
            let mut c = log
                .consumer_with(ConsumerConfig::new(group).enable_auto_commit(false))
                .expect("consumer");
            c.assign(std::slice::from_ref(&tp)).expect("assign");
            c.commit_offsets(&[(tp, offset)]).expect("commit");
            drop(c);
            let key = (group.to_owned(), name.clone(), partition);
            let list = w.commits.entry(key.clone()).or_default();
            list.push(offset);
            snap.issued_commits.insert(key.clone(), list.len());
            if cfg.sync == SyncPolicy::Always {
                snap.durable_commit.insert(key, list.len() - 1);
            }
            what = format!("commit {group} {name}-{partition} at {offset}");
        } else if roll < 86 {
            let compacted: Vec<&String> = names
                .iter()
                .filter(|n| snap.topics[*n].config.cleanup_policy == CleanupPolicy::Compact)
                .collect();
            if !compacted.is_empty() {
                let name = compacted[rng.below(compacted.len() as u64) as usize];
                let stats = log.compact_now(name).expect("compact_now");
                what = format!("compact_now {name}: {stats:?}");
            } else {
                log.flush().expect("flush");
                what = "flush".into();
            }
        } else if roll < 89 && names.len() > 1 {
            let name = &names[rng.below(names.len() as u64) as usize];
            log.delete_topic(name).expect("delete topic");
            snap.topics.remove(name);
            snap.durable_commit.retain(|(_, t, _), _| t != name);
            what = format!("delete topic {name}");
        } else if roll < 92 {
            log.close().expect("close");
            drop(log);
            mark_all_durable_closed(&mut snap, &w);
            cfg = log_config(&mut rng);
            log = Log::open_with(&dir, cfg.clone()).expect("reopen the recorded log");
            what = format!("close, reopen with {:?}", cfg.sync);
        } else if roll < 95 {
            // Metadata changes: each is old or new after a power cut.
            let name = &names[rng.below(names.len() as u64) as usize];
            let te = snap.topics.get_mut(name).expect("topic");
            if rng.below(2) == 0 && te.parts.len() < 4 {
                let n = te.parts.len() as u32 + 1;
                log.add_partitions(name, n).expect("add_partitions");
                te.config = te.config.clone().partitions(n);
                te.parts.push(PartExpect::default());
                what = format!("add_partitions {name} to {n}");
            } else {
                let codec = if te.config.compression == Compression::None {
                    Compression::Lz4
                } else {
                    Compression::None
                };
                log.set_compression(name, codec).expect("set_compression");
                te.config = te.config.clone().compression(codec);
                what = format!("set_compression {name} {codec:?}");
            }
        } else {
            log.flush().expect("flush");
            what = "flush".into();
        }
        update_starts(&log, &mut snap);
        end(&mut w, &snap, what);
    }
    log.close().expect("close");
    drop(log);
    mark_all_durable_closed(&mut snap, &w);
    end(&mut w, &snap, "close".into());
    w
}

/// After `log.sync()`: everything appended and committed is durable.
fn mark_all_durable(log: &Log, snap: &mut Snap, w: &Workload) {
    for (name, te) in snap.topics.iter_mut() {
        let t = log.topic(name).expect("topic");
        for (p, pe) in te.parts.iter_mut().enumerate() {
            pe.durable_end = t.partition(p as u32).expect("partition").end_offset();
        }
    }
    commits_durable(snap, w);
}

/// After `close()`: as after a sync (the records are all in `w.records`).
fn mark_all_durable_closed(snap: &mut Snap, w: &Workload) {
    for (name, te) in snap.topics.iter_mut() {
        for (p, pe) in te.parts.iter_mut().enumerate() {
            if let Some(r) = w.records.get(&(name.clone(), p as u32)) {
                if let Some((&last, _)) = r.last_key_value() {
                    pe.durable_end = last + 1;
                }
            }
        }
    }
    commits_durable(snap, w);
}

fn commits_durable(snap: &mut Snap, w: &Workload) {
    for (key, list) in &w.commits {
        if snap.topics.contains_key(&key.1) {
            snap.durable_commit.insert(key.clone(), list.len() - 1);
        }
    }
}

fn update_starts(log: &Log, snap: &mut Snap) {
    for (name, te) in snap.topics.iter_mut() {
        let t = log.topic(name).expect("topic");
        for (p, pe) in te.parts.iter_mut().enumerate() {
            pe.start = t.partition(p as u32).expect("partition").start_offset();
        }
    }
}

/// Checks the log a reboot finds in `dir` after a power cut at `pos`.
fn check_after_crash(w: &Workload, pos: usize, dir: &Path) -> Result<(), String> {
    // Calls whose mark precedes the cut had returned; the next one was
    // under way (its effects may or may not be there).
    let done = w.marks.iter().take_while(|&&m| m < pos).count();
    let empty = Snap::default();
    let before = if done == 0 {
        &empty
    } else {
        &w.snaps[done - 1]
    };
    let after = w.snaps.get(done).unwrap_or(before);
    let log = Log::open_with(dir, LogConfig::default().cleaner(false))
        .map_err(|e| format!("reopen failed: {e}"))?;
    let present: BTreeSet<String> = log.topics().into_iter().collect();
    let mut names: BTreeSet<&String> = before.topics.keys().collect();
    names.extend(after.topics.keys());
    for name in &present {
        if !names.contains(name) {
            return Err(format!(
                "topic {name} exists, but it was deleted or never created"
            ));
        }
    }
    for name in names {
        let (b, a) = (before.topics.get(name), after.topics.get(name));
        if b.is_some() && a.is_some() && !present.contains(name) {
            return Err(format!("topic {name} is gone, but its creation returned"));
        }
        if !present.contains(name) {
            continue;
        }
        let t = log.topic(name).map_err(|e| e.to_string())?;
        let cfg = t.config();
        if b.is_none_or(|b| b.config != cfg) && a.is_none_or(|a| a.config != cfg) {
            return Err(format!(
                "topic {name}: config {cfg:?}, expected {:?} or {:?}",
                b.map(|b| &b.config),
                a.map(|a| &a.config)
            ));
        }
        for p in 0..cfg.partitions {
            let part = |s: Option<&TopicExpect>| {
                s.and_then(|s| s.parts.get(p as usize).cloned())
                    .unwrap_or_default()
            };
            let (pe_before, pe_after) = (part(b), part(a));
            check_partition(w, &log, name, p, &cfg, &pe_before, &pe_after)?;
        }
        for g in GROUPS {
            for p in 0..cfg.partitions {
                let key = (g.to_owned(), name.clone(), p);
                let Some(list) = w.commits.get(&key) else {
                    continue;
                };
                let tp = TopicPartition::new(name.as_str(), p);
                let got = log
                    .group(g)
                    .and_then(|grp| grp.committed(&tp))
                    .map_err(|e| format!("committed {g} {tp}: {e}"))?;
                let from = before.durable_commit.get(&key).copied();
                let issued = after.issued_commits.get(&key).copied().unwrap_or(0);
                let allowed: Vec<u64> = list[from.unwrap_or(0)..issued].to_vec();
                let ok = match got {
                    None => from.is_none(),
                    Some(v) => allowed.contains(&v),
                };
                if !ok {
                    return Err(format!(
                        "group {g} {tp}: committed {got:?}, expected one of {allowed:?}{}",
                        if from.is_none() { " or none" } else { "" }
                    ));
                }
            }
        }
    }
    // The recovered log takes appends where it ends.
    if let Some(name) = present.iter().next() {
        let t = log.topic(name).map_err(|e| e.to_string())?;
        let end = t.partition(0).map_err(|e| e.to_string())?.end_offset();
        let m = t
            .send(Record::new("after the power loss").key("k0").partition(0))
            .map_err(|e| format!("append after recovery: {e}"))?;
        if m.offset != end {
            return Err(format!(
                "append after recovery got offset {}, end was {end}",
                m.offset
            ));
        }
    }
    log.close()
        .map_err(|e| format!("close after recovery: {e}"))
}

fn check_partition(
    w: &Workload,
    log: &Log,
    name: &str,
    p: u32,
    cfg: &TopicConfig,
    before: &PartExpect,
    after: &PartExpect,
) -> Result<(), String> {
    let part = log
        .topic(name)
        .and_then(|t| t.partition(p))
        .map_err(|e| e.to_string())?;
    let where_ = format!("{name}-{p}");
    let empty = BTreeMap::new();
    let appended = w.records.get(&(name.to_owned(), p)).unwrap_or(&empty);
    let (start, end) = (part.start_offset(), part.end_offset());
    let mut read = Vec::new();
    let mut at = start;
    while at < end {
        let batch = part
            .read(at, 500)
            .map_err(|e| format!("{where_}: read at {at}: {e}"))?;
        let Some(last) = batch.last() else { break };
        at = last.offset() + 1;
        for m in &batch {
            read.push((
                m.offset(),
                m.key().map(<[u8]>::to_vec),
                m.value().map(<[u8]>::to_vec),
            ));
        }
    }
    let mut prev: Option<u64> = None;
    for (o, k, v) in &read {
        match appended.get(o) {
            Some((ek, ev)) if ek == k && ev == v => {}
            Some(_) => return Err(format!("{where_}: offset {o} holds a different record")),
            None => return Err(format!("{where_}: offset {o} was never appended")),
        }
        if let Some(pr) = prev {
            if *o <= pr {
                return Err(format!("{where_}: offset {o} after {pr}"));
            }
        }
        prev = Some(*o);
    }
    if end < before.durable_end {
        return Err(format!(
            "{where_}: ends at {end}, but offsets below {} were synced",
            before.durable_end
        ));
    }
    if cfg.cleanup_policy == CleanupPolicy::Compact {
        // Every key keeps its latest synced record or a later one.
        let mut latest: BTreeMap<&Key, u64> = BTreeMap::new();
        for (o, (k, _)) in appended.range(..before.durable_end) {
            latest.insert(k, *o);
        }
        let mut kept: BTreeMap<Key, u64> = BTreeMap::new();
        for (o, k, _) in &read {
            kept.insert(k.clone(), *o);
        }
        for (k, o) in latest {
            if kept.get(k).is_none_or(|&got| got < o) {
                return Err(format!(
                    "{where_}: key {:?} lost its synced record at offset {o} (latest present: {:?})",
                    k.as_ref().map(|k| String::from_utf8_lossy(k).into_owned()),
                    kept.get(k)
                ));
            }
        }
        return Ok(());
    }
    // Not compacted: gapless from start to end, and covering every synced
    // offset retention had not removed.
    let offsets: Vec<u64> = read.iter().map(|r| r.0).collect();
    let expected: Vec<u64> = (start..end).collect();
    if offsets != expected {
        let gap = offsets
            .iter()
            .zip(&expected)
            .find(|(a, b)| a != b)
            .map(|(a, b)| format!("read {a} where {b} belongs"));
        return Err(format!(
            "{where_}: offsets not contiguous from start {start} to end {end}: {}",
            gap.unwrap_or_else(|| format!("{} records read", offsets.len()))
        ));
    }
    let retained_from = before.start.max(after.start);
    if retained_from < before.durable_end && start > retained_from {
        return Err(format!(
            "{where_}: starts at {start}, but synced offsets from {retained_from} were never deleted"
        ));
    }
    Ok(())
}

/// Writes the operation log, with the calls, for a failure's reader.
fn dump_ops(w: &Workload, ops: &[Op], path: &Path) {
    let mut out = String::new();
    let mut call = 0;
    for (i, op) in ops.iter().enumerate() {
        let line = match op {
            Op::Write { id, offset, data } => {
                format!(
                    "Write {{ id: {id}, offset: {offset}, len: {} }}",
                    data.len()
                )
            }
            Op::Mark => {
                call += 1;
                format!("Mark: call {} returned: {}", call - 1, w.calls[call - 1])
            }
            other => format!("{other:?}"),
        };
        out.push_str(&format!("{i:6} {line}\n"));
    }
    let _ = std::fs::write(path, out);
}

/// Crash positions for a history of `len` operations: ends, every barrier
/// neighbourhood drawn at random, and random points.
fn crash_points(rng: &mut Rng, ops: &[Op], count: usize) -> Vec<usize> {
    let barriers: Vec<usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, op)| {
            matches!(
                op,
                Op::Fsync { .. } | Op::DirSync { .. } | Op::Rename { .. }
            )
        })
        .map(|(i, _)| i)
        .collect();
    let mut points = BTreeSet::from([ops.len()]);
    while points.len() < count.min(ops.len() + 1) {
        let p = if rng.below(2) == 0 && !barriers.is_empty() {
            // Just before or just after a barrier.
            barriers[rng.below(barriers.len() as u64) as usize] + rng.below(2) as usize
        } else {
            rng.below(ops.len() as u64 + 1) as usize
        };
        points.insert(p);
    }
    points.into_iter().collect()
}

struct Outcome {
    checks: usize,
    failures: Vec<String>,
}

fn run_seed(seed: u64, steps: usize, crashes: usize, scratch: &Path) -> Outcome {
    let base = scratch.join(format!("seed-{seed}"));
    let rec = Recorder::start(&base.join("log")).expect("start the recorder");
    let w = run_workload(seed, &rec, steps);
    let mut failures = Vec::new();
    for e in rec.errors() {
        failures.push(format!("seed {seed}: the recorder could not follow: {e}"));
    }
    for d in rec.differences_from_disk() {
        failures.push(format!("seed {seed}: model differs from the disk: {d}"));
    }
    let history = rec.history();
    drop(rec);
    if std::env::var_os("BROOK_POWER_LOSS_VERBOSE").is_some() {
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for op in history.ops() {
            let k = format!("{op:?}");
            let k = k.split([' ', '{']).next().unwrap_or("").to_owned();
            *kinds.entry(Box::leak(k.into_boxed_str())).or_default() += 1;
        }
        let compactions: Vec<&String> = w
            .calls
            .iter()
            .filter(|c| c.starts_with("compact_now") && !c.contains("segments_in: 0"))
            .collect();
        eprintln!("seed {seed}: {kinds:?}; compactions: {compactions:?}");
    }
    let mut rng = Rng::new(seed ^ 0xC0FF_EE00);
    let points = crash_points(&mut rng, history.ops(), crashes);
    let mut replay = history.replay();
    let mut checks = 0;
    for &pos in &points {
        replay.advance_to(pos);
        for mode in LossMode::ALL {
            let loss_seed = seed
                .wrapping_mul(0x9E37_79B9)
                .wrapping_add(pos as u64 * 4 + mode as u64);
            let dest = base.join(format!("crash-{pos}-{mode:?}"));
            let choice = replay
                .materialise(mode, loss_seed, &dest)
                .expect("materialise the post-crash directory");
            checks += 1;
            match check_after_crash(&w, pos, &dest) {
                Ok(()) => {
                    let _ = std::fs::remove_dir_all(&dest);
                }
                Err(e) => {
                    // The checked copy was recovered; keep one as found.
                    let found = base.join(format!("crash-{pos}-{mode:?}-as-found"));
                    let _ = replay.materialise(mode, loss_seed, &found);
                    let done = w.marks.iter().take_while(|&&m| m < pos).count();
                    failures.push(format!(
                        "seed {seed}, power cut after {pos} of {} operations, {mode:?} ({choice}), \
                         during call {done} ({}), after {:?}: {e}\n  kept at {} (and as found by the reboot: {})\n  reproduce: \
                         BROOK_POWER_LOSS_SEED={seed} cargo test --release --all-features --test power_loss",
                        history.ops().len(),
                        w.calls.get(done).map_or("none: all returned", String::as_str),
                        done.checked_sub(1).and_then(|d| w.calls.get(d)),
                        dest.display(),
                        found.display()
                    ));
                    if failures.len() > 3 {
                        dump_ops(&w, history.ops(), &base.join("ops.txt"));
                        return Outcome { checks, failures };
                    }
                }
            }
        }
    }
    if failures.is_empty() {
        let _ = std::fs::remove_dir_all(&base);
    } else {
        dump_ops(&w, history.ops(), &base.join("ops.txt"));
    }
    Outcome { checks, failures }
}

#[test]
fn acknowledged_data_survives_power_loss_at_any_point_in_every_loss_mode() {
    let seeds: Vec<u64> = match common::env_u64("BROOK_POWER_LOSS_SEED") {
        Some(s) => vec![s],
        None => {
            let n = common::env_u64("BROOK_POWER_LOSS_SEEDS").unwrap_or(12);
            let first = common::env_u64("BROOK_POWER_LOSS_FIRST_SEED").unwrap_or(1);
            (first..first + n).collect()
        }
    };
    let steps = common::env_u64("BROOK_POWER_LOSS_STEPS").unwrap_or(150) as usize;
    let crashes = common::env_u64("BROOK_POWER_LOSS_CRASHES").unwrap_or(40) as usize;
    // Real files; on tmpfs when there is one (fsync is free there, and the
    // simulation, not the disk, decides what survives).
    let scratch = match std::env::var_os("BROOK_POWER_LOSS_DIR") {
        Some(d) => tempfile::tempdir_in(d),
        None if Path::new("/dev/shm").is_dir() => tempfile::tempdir_in("/dev/shm"),
        None => tempfile::tempdir(),
    }
    .expect("tempdir");
    let scratch_path: PathBuf = scratch.path().to_owned();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new((0usize, Vec::<String>::new()));
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(&seed) = seeds.get(i) else { break };
                let out = run_seed(seed, steps, crashes, &scratch_path);
                let mut r = results.lock().unwrap();
                r.0 += out.checks;
                r.1.extend(out.failures);
            });
        }
    });
    let (checks, failures) = results.into_inner().unwrap();
    if !failures.is_empty() {
        // Keep the post-crash directories for inspection.
        let kept = scratch.keep();
        panic!(
            "{} power-loss check(s) failed (directories under {}):\n{}",
            failures.len(),
            kept.display(),
            failures.join("\n")
        );
    }
    eprintln!(
        "power loss: {} seeds x {steps} calls, {checks} reopened crash states ({} modes)",
        seeds.len(),
        LossMode::ALL.len()
    );
}

/// A power loss can take the unsynced tail of a rolled segment while the
/// next segment's directory entry survives (nothing orders the two). The
/// log must end where the surviving data ends, not leave an offset gap a
/// reader can never cross.
#[test]
fn a_lost_tail_before_a_surviving_next_segment_ends_the_log_there() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let (rec, log) = recorded_log(scratch.path());
    let t = log.create_topic("t", small_segments()).expect("create");
    for i in 0..4 {
        t.send(Record::new(vec![b'a' + i; 300])).expect("send");
    }
    log.sync().expect("sync");
    let synced = t.partition(0).expect("partition").end_offset();
    let synced_len =
        used_len(&std::fs::read(rec.dir().join("t-0/00000000000000000000.log")).expect("segment"));
    // Unsynced appends until the partition rolls: the new segment exists.
    let mut i = 0;
    while t.partition(0).expect("partition").end_offset() < 12 {
        t.send(Record::new(vec![b'k' + i; 300])).expect("send");
        i += 1;
    }
    let history = rec.history();
    let mut replay = history.replay();
    replay.advance_to(history.ops().len());
    // Per-file prefixes, with seeds until one keeps the new segments'
    // directory entries and drops the first segment's unsynced tail.
    let dest = scratch.path().join("after");
    let mut found = false;
    for seed in 0..5000 {
        let _ = std::fs::remove_dir_all(&dest);
        replay
            .materialise(LossMode::ReorderBetweenFiles, seed, &dest)
            .expect("materialise");
        let segments = std::fs::read_dir(dest.join("t-0"))
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
                    .count()
            })
            .unwrap_or(0);
        let first = std::fs::read(dest.join("t-0/00000000000000000000.log")).unwrap_or_default();
        if segments >= 2 && used_len(&first) == synced_len {
            found = true;
            break;
        }
    }
    assert!(found, "no seed produced the crash state");
    let after = Log::open_with(&dest, LogConfig::default().cleaner(false)).expect("reopen");
    let p = after
        .topic("t")
        .expect("topic")
        .partition(0)
        .expect("partition");
    let end = p.end_offset();
    assert!(
        end >= synced,
        "synced records lost: end {end}, synced {synced}"
    );
    let read = p.read(0, 100).expect("read");
    assert_eq!(
        read.len() as u64,
        end,
        "the log ends at {end}, but only {} records can be read: an offset gap",
        read.len()
    );
    drop(log);
}

/// Length of `data` without its trailing zeros.
/// A log recording its file operations under `scratch` (its cleaner off:
/// the tests compact when they choose).
fn recorded_log(scratch: &Path) -> (Recorder, Log) {
    let rec = Recorder::start(&scratch.join("log")).expect("recorder");
    let log = Log::open_with(rec.dir(), LogConfig::default().cleaner(false)).expect("open");
    (rec, log)
}

/// Segments that roll every few 300-byte records.
fn small_segments() -> TopicConfig {
    TopicConfig::default()
        .max_record_bytes(512)
        .segment_bytes(2048)
}

/// Reopens the directory a reboot finds after the first `ops` operations
/// of `history` when everything unsynced is lost (under `scratch/after`).
fn reopen_without_unsynced(history: &History, ops: usize, scratch: &Path) -> brook::Result<Log> {
    let mut replay = history.replay();
    replay.advance_to(ops);
    let dest = scratch.join("after");
    replay
        .materialise(LossMode::DropUnsynced, 0, &dest)
        .expect("materialise");
    Log::open_with(&dest, LogConfig::default().cleaner(false))
}

fn used_len(data: &[u8]) -> usize {
    data.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1)
}

/// The recovery point on disk can name a byte position in a segment that
/// compaction has since rewritten (the checkpoint is written lazily). A
/// crash then must not make reopening fail on a position that is no longer
/// a batch boundary.
#[test]
fn a_recovery_point_inside_a_since_compacted_segment_still_reopens() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let (rec, log) = recorded_log(scratch.path());
    let t = log
        .create_topic(
            "c",
            small_segments()
                .cleanup_policy(CleanupPolicy::Compact)
                .min_cleanable_dirty_ratio(0.0),
        )
        .expect("create");
    for i in 0..4u8 {
        t.send(Record::new(vec![b'a' + i; 300]).key(format!("k{i}")))
            .expect("send");
    }
    log.sync().expect("sync");
    // Writes the checkpoint: the recovery point is inside segment 0.
    log.create_topic("other", TopicConfig::default())
        .expect("create");
    // The first key again (compaction then shortens segment 0's first
    // batch, moving every later batch), then more keys until segment 0
    // rolls.
    t.send(Record::new(vec![b'z'; 300]).key("k0"))
        .expect("send");
    let mut i = 4;
    while t.partition(0).expect("partition").end_offset() < 12 {
        t.send(Record::new(vec![b'y'; 300]).key(format!("k{i}")))
            .expect("send");
        i += 1;
    }
    let stats = log.compact_now("c").expect("compact");
    assert!(stats.segments_in > 0, "nothing compacted: {stats:?}");
    let history = rec.history();
    let after = reopen_without_unsynced(&history, history.ops().len(), scratch.path())
        .expect("reopen after compaction rewrote the recovery point's segment");
    let p = after
        .topic("c")
        .expect("topic")
        .partition(0)
        .expect("partition");
    let read = p.read(p.start_offset(), 100).expect("read");
    for k in ["k1", "k2", "k3"] {
        assert!(
            read.iter().any(|m| m.key() == Some(k.as_bytes())),
            "the synced record of {k} is gone"
        );
    }
    drop(log);
}

/// Compaction drops a synced record when a later record of its key exists
/// in a closed segment. If that segment was never synced, a power cut
/// between two groups of one compaction pass (or during it) must not lose
/// the key altogether.
#[test]
fn compaction_never_drops_a_synced_record_for_an_unsynced_successor() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let (rec, log) = recorded_log(scratch.path());
    let t = log
        .create_topic(
            "c",
            small_segments()
                .cleanup_policy(CleanupPolicy::Compact)
                .min_cleanable_dirty_ratio(0.0),
        )
        .expect("create");
    let p = t.partition(0).expect("partition");
    let mut filler = 0;
    let mut fill_until = |end: u64| {
        while p.end_offset() < end {
            t.send(Record::new(vec![b'f'; 300]).key(format!("f{filler}")))
                .expect("send");
            filler += 1;
        }
    };
    t.send(Record::new("v1").key("k0")).expect("send");
    fill_until(14);
    log.sync().expect("sync");
    t.send(Record::new("v2").key("k0")).expect("send");
    fill_until(28);
    log.compact_now("c").expect("compact");
    let history = rec.history();
    let ops = history.ops();
    // Just after the first group's swap finished.
    let first_swap_done = ops
        .iter()
        .position(|op| matches!(op, Op::Unlink { name, .. } if name.ends_with(".log.swap")))
        .expect("a compaction swap")
        + 2;
    let after = reopen_without_unsynced(&history, first_swap_done, scratch.path()).expect("reopen");
    let p = after
        .topic("c")
        .expect("topic")
        .partition(0)
        .expect("partition");
    let read = p.read(p.start_offset(), 1000).expect("read");
    assert!(
        read.iter().any(|m| m.key() == Some(&b"k0"[..])),
        "key k0 lost: its synced record was compacted away for one a power cut took"
    );
    drop(log);
}
