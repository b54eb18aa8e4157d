//! Acknowledged commits survive `kill -9`.
//!
//! The parent test re-executes this test binary to run the `#[ignore]`d
//! child test in its own process. The child appends, polls and commits in a
//! loop and prints `committed <partition> <offset>` after each commit
//! returns; the parent SIGKILLs it after a random delay, reopens the log and
//! checks that every partition's committed offset is at least the last one
//! acknowledged (and not past the partition's end). The cycles share one
//! directory, so each child also starts from a log its predecessor left
//! after a crash.
//!
//! `BROOK_CRASH_CYCLES` sets the number of cycles (default 10);
//! `BROOK_CRASH_SEED` replays a run (the seed is printed on failure).

mod common;
use common::{env_u64, seed, spawn_child_test, stdout_lines, Rng};

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use brook::{ConsumerConfig, Log, LogConfig, OffsetReset, Record, SyncPolicy, TopicConfig};
use brook::{Error, TopicPartition};

const CHILD_TEST: &str = "crash_child_consumes_and_commits";
const DIR_ENV: &str = "BROOK_GROUPS_CRASH_DIR";
const SYNC_ENV: &str = "BROOK_GROUPS_CRASH_SYNC";
const TOPIC: &str = "events";
const GROUP: &str = "crash";
const PARTITIONS: u32 = 4;

#[test]
fn acknowledged_commits_survive_kill_9() {
    let cycles = env_u64("BROOK_CRASH_CYCLES").unwrap_or(10);
    let seed = seed("BROOK_CRASH_SEED");
    let mut rng = Rng(seed);
    let ctx = format!("(seed {seed}: rerun with BROOK_CRASH_SEED={seed})");
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path()).unwrap();
        let t = log
            .create_topic(TOPIC, TopicConfig::default().partitions(PARTITIONS))
            .unwrap();
        t.send_batch((0..2_000).map(|i| Record::new(format!("prefill {i}")).key(format!("{i}"))))
            .unwrap();
        log.close().unwrap();
    }

    let mut acked: BTreeMap<u32, u64> = BTreeMap::new();
    let mut total_acks = 0usize;
    for cycle in 0..cycles {
        let sync = ["never", "interval", "always"][rng.below(3) as usize];
        let delay = Duration::from_millis(20 + rng.below(480));
        let mut child = spawn_child_test(
            CHILD_TEST,
            &[(DIR_ENV, dir.path().into()), (SYNC_ENV, sync.into())],
        );
        let (rx, reader) = stdout_lines(&mut child);
        // Wait until the child has opened the log, then let it run.
        let started = Instant::now();
        let mut lines = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    let ready = line.ends_with("ready");
                    lines.push(line);
                    if ready {
                        break;
                    }
                }
                Err(e) => panic!(
                    "cycle {cycle}: the child never became ready ({e:?} after {:?}); output {lines:?} {ctx}",
                    started.elapsed()
                ),
            }
        }
        std::thread::sleep(delay);
        child.0.kill().expect("SIGKILL the child");
        let status = child.0.wait().unwrap();
        assert!(
            !status.success(),
            "cycle {cycle}: the child exited by itself ({status}) instead of being killed {ctx}"
        );
        reader.join().unwrap();
        lines.extend(rx.try_iter());

        let mut this_cycle = 0;
        for line in &lines {
            let Some(rest) = line.strip_prefix("committed ") else {
                continue;
            };
            let mut it = rest.split(' ');
            let (Some(p), Some(o), None) = (it.next(), it.next(), it.next()) else {
                continue; // a line cut short by the kill
            };
            let (Ok(p), Ok(o)) = (p.parse::<u32>(), o.parse::<u64>()) else {
                continue;
            };
            let prev = acked.entry(p).or_insert(0);
            *prev = (*prev).max(o);
            this_cycle += 1;
        }
        total_acks += this_cycle;

        let log = Log::open_with(dir.path(), LogConfig::default())
            .unwrap_or_else(|e| panic!("cycle {cycle}: reopen after kill -9 failed: {e} {ctx}"));
        let group = log.group(GROUP).unwrap();
        let topic = log.topic(TOPIC).unwrap();
        for p in 0..PARTITIONS {
            let tp = TopicPartition::new(TOPIC, p);
            let committed = group.committed(&tp).unwrap();
            let end = topic.partition(p).unwrap().end_offset();
            if let Some(&ack) = acked.get(&p) {
                let c = committed.unwrap_or_else(|| {
                    panic!(
                        "cycle {cycle} ({sync}, killed after {delay:?}): {TOPIC}-{p} lost its \
                         committed offset; last acknowledged {ack} {ctx}"
                    )
                });
                assert!(
                    c >= ack,
                    "cycle {cycle} ({sync}, killed after {delay:?}): {TOPIC}-{p} committed {c} \
                     after kill -9, but commit of {ack} had been acknowledged {ctx}"
                );
            }
            if let Some(c) = committed {
                assert!(
                    c <= end,
                    "cycle {cycle}: {TOPIC}-{p} committed {c} is past its end offset {end} {ctx}"
                );
            }
        }
        // A new member resumes exactly at the committed offsets.
        let mut c = log
            .consumer_with(ConsumerConfig::new(GROUP).enable_auto_commit(false))
            .unwrap();
        c.assign(
            &(0..PARTITIONS)
                .map(|p| TopicPartition::new(TOPIC, p))
                .collect::<Vec<_>>(),
        )
        .unwrap();
        for p in 0..PARTITIONS {
            let tp = TopicPartition::new(TOPIC, p);
            if let Some(committed) = group.committed(&tp).unwrap() {
                assert_eq!(
                    c.position(&tp).unwrap(),
                    committed,
                    "cycle {cycle}: {tp} {ctx}"
                );
            }
        }
        drop(c);
        log.close().unwrap();
        eprintln!(
            "cycle {cycle}: sync {sync}, killed after {delay:?}, {this_cycle} acknowledged \
             commits, last acknowledged {acked:?}"
        );
    }
    assert!(
        total_acks > 0,
        "no child acknowledged a single commit in {cycles} cycles {ctx}"
    );
}

/// The crashing process: appends, polls and commits until killed.
#[test]
#[ignore = "the child process of acknowledged_commits_survive_kill_9"]
fn crash_child_consumes_and_commits() {
    let Some(dir) = std::env::var_os(DIR_ENV) else {
        eprintln!("{DIR_ENV} is not set: this test only runs as a child of acknowledged_commits_survive_kill_9");
        return;
    };
    let sync = match std::env::var(SYNC_ENV).as_deref() {
        Ok("always") => SyncPolicy::Always,
        Ok("interval") => SyncPolicy::Interval(Duration::from_millis(5)),
        _ => SyncPolicy::Never,
    };
    let log = Log::open_with(&dir, LogConfig::default().sync(sync)).unwrap();
    let topic = log.topic(TOPIC).unwrap();
    let mut c = log
        .consumer_with(
            ConsumerConfig::new(GROUP)
                .auto_offset_reset(OffsetReset::Earliest)
                .enable_auto_commit(false)
                .max_poll_records(64),
        )
        .unwrap();
    c.subscribe(&[TOPIC]).unwrap();
    let mut out = std::io::stdout().lock();
    writeln!(out, "\nready").unwrap();
    out.flush().unwrap();
    let started = Instant::now();
    let mut round = 0u64;
    // Bounded in case the parent dies without killing us.
    while started.elapsed() < Duration::from_secs(60) {
        round += 1;
        topic
            .send_batch(
                (0..8).map(|i| {
                    Record::new(format!("round {round} #{i}")).key(format!("{round}-{i}"))
                }),
            )
            .unwrap();
        let msgs = c.poll(Duration::from_millis(5)).unwrap();
        let mut next: BTreeMap<u32, u64> = BTreeMap::new();
        for m in &msgs {
            next.insert(m.partition(), m.offset() + 1);
        }
        let result = if round.is_multiple_of(3) {
            let list: Vec<(TopicPartition, u64)> = next
                .iter()
                .map(|(&p, &o)| (TopicPartition::new(TOPIC, p), o))
                .collect();
            c.commit_offsets(&list)
        } else {
            c.commit()
        };
        match result {
            Ok(()) => {}
            Err(e @ Error::Fenced { .. }) => panic!("a lone member was fenced: {e}"),
            Err(e) => panic!("commit failed: {e}"),
        }
        for (p, o) in next {
            writeln!(out, "committed {p} {o}").unwrap();
        }
        out.flush().unwrap();
    }
}
