//! Guarantee: resources do not grow with the number of partitions beyond
//! memory maps — a log of thousands of partitions opens, appends, closes
//! and reopens without holding a file descriptor per partition (the
//! default `ulimit -n` is often 1,024). CI opens 2,000 partitions;
//! `BROOK_PARTITIONS=10000 cargo test --release --test resources` runs
//! issue 6's 10,000.

use brook::{Log, TopicConfig};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("Linux /proc")
        .count()
}

#[test]
fn many_partitions_hold_no_file_descriptor_each() {
    let partitions: u32 = std::env::var("BROOK_PARTITIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let dir = tempfile::tempdir().unwrap();
    let before = open_fds();
    let started = std::time::Instant::now();
    let log = Log::open(dir.path()).unwrap();
    let topic = log
        .create_topic("wide", TopicConfig::default().partitions(partitions))
        .unwrap();
    for i in 0..4 * partitions {
        topic.append(i.to_be_bytes(), "v").unwrap();
    }
    let while_open = open_fds();
    let created = started.elapsed();
    assert!(
        while_open < before + 64,
        "{while_open} descriptors open with {partitions} partitions (was {before})"
    );
    let closing = std::time::Instant::now();
    log.close().unwrap();
    let closed = closing.elapsed();
    // A second log on the same directory while the closed handle still exists.
    let reopening = std::time::Instant::now();
    let reopened = Log::open(dir.path()).unwrap();
    let reopen = reopening.elapsed();
    let t = reopened.topic("wide").unwrap();
    let total: u64 = (0..partitions)
        .map(|p| t.partition(p).unwrap().end_offset())
        .sum();
    assert_eq!(
        total,
        4 * partitions as u64,
        "records lost across close and reopen"
    );
    let after_reopen = open_fds();
    assert!(
        after_reopen < before + 64,
        "reopening holds a descriptor per partition"
    );
    // Figures for the README (not assertions: the machine is shared).
    eprintln!(
        "{partitions} partitions: descriptors {before} before, {while_open} open, \
         {after_reopen} reopened; create + {} appends {created:?}, close {closed:?}, \
         clean reopen {reopen:?}",
        4 * partitions
    );
    drop(log);
}
