//! Observability: the metrics snapshot counts exactly what happened, and
//! the storage and cluster events a operator needs are logged through
//! `tracing`.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use brook::{
    Acks, CleanupPolicy, Cluster, ClusterConfig, Compression, ConsumerConfig, Log, OffsetReset,
    Record, TopicConfig, TopicPartition,
};

/// Waits (bounded) until `cond` holds; panics with `what` if it never does.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn metrics_count_every_record_and_byte_appended_and_read() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let t = log
        .create_topic(
            "orders",
            TopicConfig::default()
                .partitions(2)
                .compression(Compression::None),
        )
        .unwrap();
    // Partition 0: 100 single appends; partition 1: one batch of 50.
    let mut payload0 = 0u64;
    for i in 0..100 {
        let (k, v) = (format!("key-{i}"), format!("value number {i}"));
        payload0 += (k.len() + v.len()) as u64;
        t.send(Record::new(v).key(k).partition(0)).unwrap();
    }
    let batch: Vec<Record> = (0..50)
        .map(|i| Record::new(vec![7u8; 10 + i]).partition(1))
        .collect();
    let payload1: u64 = (0..50).map(|i| 10 + i as u64).sum();
    t.send_batch(&batch).unwrap();

    let m = log.metrics();
    let (p0, p1) = (
        m.partition("orders", 0).unwrap(),
        m.partition("orders", 1).unwrap(),
    );
    assert_eq!((p0.records_in, p1.records_in), (100, 50), "records in");
    assert_eq!((p0.records_out, p1.records_out), (0, 0), "nothing read yet");
    // One call in APPEND_LATENCY_SAMPLE_EVERY (64) is timed, counted per
    // thread: 100 single appends in a row have 1 or 2 timed.
    let timed = (p0.append_latency.count(), p1.append_latency.count());
    assert!(
        (1..=2).contains(&timed.0) && timed.1 <= 1,
        "sampled append latency: {timed:?}"
    );
    assert_eq!(
        m.append_latency.count(),
        timed.0 + timed.1,
        "the log's histogram merges the partitions'"
    );
    // An uncompressed partition's appends are exactly its segment bytes.
    assert_eq!(p0.bytes_in, p0.size_bytes, "bytes in of partition 0");
    assert_eq!(p1.bytes_in, p1.size_bytes, "bytes in of partition 1");
    assert!(
        p0.bytes_in > payload0,
        "encoding adds record and batch headers"
    );
    assert_eq!((p0.start_offset, p0.end_offset), (0, 100));
    assert_eq!((p1.start_offset, p1.end_offset), (0, 50));
    assert_eq!(p0.segments, 1);

    // Partition 0 read directly in three calls, partition 1 polled.
    let part = t.partition(0).unwrap();
    let mut next = 0;
    while next < 100 {
        let msgs = part.read(next, 40).unwrap();
        next = msgs.last().unwrap().offset() + 1;
    }
    let mut c = log
        .consumer_with(ConsumerConfig::new("g").auto_offset_reset(OffsetReset::Earliest))
        .unwrap();
    c.assign(&[TopicPartition::new("orders", 1)]).unwrap();
    let mut polled = 0;
    while polled < 50 {
        polled += c.poll(Duration::from_millis(100)).unwrap().len();
    }
    let fsyncs_before = log.metrics().fsyncs;
    log.sync().unwrap();

    let m = log.metrics();
    let (p0, p1) = (
        m.partition("orders", 0).unwrap(),
        m.partition("orders", 1).unwrap(),
    );
    assert_eq!(
        (p0.records_out, p0.bytes_out),
        (100, payload0),
        "partition 0 out"
    );
    assert_eq!(
        (p1.records_out, p1.bytes_out),
        (50, payload1),
        "partition 1 out"
    );
    assert!(
        p0.fsyncs >= 1 && p1.fsyncs >= 1,
        "sync fsyncs every partition"
    );
    assert!(m.fsyncs > fsyncs_before, "the log's fsync total grows");
    assert!(p0.fsync_time_ns > 0);
    let h = &p0.append_latency;
    assert!(h.p50() <= h.p99() && h.p99() <= h.max() && h.mean() <= h.max());
    assert!(h.max() > Duration::ZERO);
}

#[test]
fn group_lag_is_the_end_offset_minus_the_committed_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let t = log
        .create_topic("orders", TopicConfig::default().partitions(2))
        .unwrap();
    for i in 0..100u32 {
        t.send(Record::new("v").partition(i % 2)).unwrap();
    }
    let mut c = log.consumer("billing").unwrap();
    c.subscribe(&["orders"]).unwrap();
    c.poll(Duration::from_millis(50)).unwrap();
    c.commit_offsets(&[
        (TopicPartition::new("orders", 0), 30),
        (TopicPartition::new("orders", 1), 45),
    ])
    .unwrap();

    let m = log.metrics();
    let g = m.group("billing").expect("the group is listed");
    assert_eq!(g.members, 1);
    assert!(g.generation >= 1, "a subscription computes an assignment");
    let lag: Vec<(u32, Option<u64>, u64, u64)> = g
        .partitions
        .iter()
        .map(|p| {
            let tp = &p.topic_partition;
            (tp.partition, p.committed, p.end_offset, p.lag)
        })
        .collect();
    assert_eq!(lag, vec![(0, Some(30), 50, 20), (1, Some(45), 50, 5)]);
    assert_eq!(g.total_lag, 25);
    // The same numbers as the admin view.
    assert_eq!(g.partitions, log.group("billing").unwrap().lag().unwrap());
}

#[test]
fn a_stopped_follower_is_out_of_the_isr_and_lags() {
    let dir = tempfile::tempdir().unwrap();
    let lag_max = Duration::from_millis(200);
    let cluster = Cluster::open(
        dir.path(),
        ClusterConfig::default()
            .brokers(3)
            .replica_lag_time_max(lag_max),
    )
    .unwrap();
    let t = cluster
        .create_topic(
            "orders",
            TopicConfig::default()
                .replication_factor(3)
                .min_insync_replicas(1),
        )
        .unwrap()
        .with_acks(Acks::All);
    let tp = TopicPartition::new("orders", 0);
    for _ in 0..5 {
        t.append("k", "v").unwrap();
    }
    eventually("every replica caught up", || {
        let m = cluster.metrics();
        let r = m.replicas_of(&tp);
        r.len() == 3
            && r.iter()
                .all(|r| r.in_isr && r.lag == 0 && r.log_end_offset == Some(5))
    });
    let leader = cluster.leader(&tp).unwrap();
    let follower = (0..3).find(|&b| b != leader).unwrap();
    cluster.stop_broker(follower).unwrap();
    for _ in 0..10 {
        t.append("k", "v").unwrap();
    }
    std::thread::sleep(lag_max * 2);

    let m = cluster.metrics();
    let replicas = m.replicas_of(&tp);
    let stopped = replicas.iter().find(|r| r.broker == follower).unwrap();
    assert!(!stopped.online && !stopped.in_isr, "{stopped:?}");
    assert_eq!(stopped.log_end_offset, None);
    assert_eq!(stopped.lag, 10, "behind by the records appended since");
    assert_eq!(stopped.high_watermark, 15);
    let lead = replicas.iter().find(|r| r.leader).unwrap();
    assert_eq!((lead.broker, lead.lag, lead.in_isr), (leader, 0, true));
    let p = m.partition("orders", 0).unwrap();
    assert_eq!(p.end_offset, 15, "the high watermark");
    assert!(p.records_in >= 10, "the leader counted its appends");
    assert_eq!(cluster.isr(&tp).len(), 2);
}

/// A `tracing` writer that keeps what is written.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Panics unless some event line holds every one of `needles`.
    fn assert_line(&self, what: &str, needles: &[&str]) {
        let text = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
        assert!(
            text.lines().any(|l| needles.iter().all(|n| l.contains(n))),
            "no event for {what} (a line with {needles:?}) in:\n{text}"
        );
    }
}

/// Every event of this test binary, from every thread, from the first
/// call on. One global subscriber: per-thread ones (`set_default`) in
/// tests running in parallel lose events to tracing's shared callsite
/// interest cache. Tests look for lines naming their own topics and groups.
fn events() -> &'static Captured {
    static EVENTS: OnceLock<Captured> = OnceLock::new();
    EVENTS.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
        captured
    })
}

#[test]
fn roll_retention_compaction_and_recovery_are_logged() {
    let events = events();
    let dir = tempfile::tempdir().unwrap();
    let small = |policy| {
        TopicConfig::default()
            .segment_bytes(4096)
            .max_record_bytes(1024)
            .cleanup_policy(policy)
    };
    {
        let log = Log::open(dir.path()).unwrap();
        let events = log
            .create_topic(
                "events",
                small(CleanupPolicy::Delete).retention_bytes(Some(8192)),
            )
            .unwrap();
        let value = vec![b'x'; 500];
        for i in 0..100 {
            events.append(format!("k{i}"), &value).unwrap();
        }
        let table = log
            .create_topic("table", small(CleanupPolicy::Compact))
            .unwrap();
        for i in 0..100 {
            table.append(format!("k{}", i % 5), &value).unwrap();
        }
        log.compact_now("table").unwrap();
        log.close().unwrap();
    }
    // A crash: without the clean-shutdown marker the next open recovers.
    std::fs::remove_file(dir.path().join(".clean-shutdown")).unwrap();
    drop(Log::open(dir.path()).unwrap());

    let events_dir = dir.path().join("events-0").display().to_string();
    let log_dir = format!("dir={}", dir.path().display());
    events.assert_line("a segment roll", &["DEBUG", "segment rolled", &events_dir]);
    events.assert_line(
        "a retention deletion",
        &["INFO", "retention deleted segments", "topic=events "],
    );
    events.assert_line(
        "a compaction pass",
        &["INFO", "compaction pass", "topic=table ", "keys=5 "],
    );
    events.assert_line(
        "a recovery",
        &[
            "INFO",
            "partition recovered",
            "topic=events ",
            "end_offset=100 ",
        ],
    );
    events.assert_line("the log opening", &["log opened", &log_dir]);
}

#[test]
fn failover_isr_changes_and_rebalances_are_logged_and_an_isolated_follower_lags() {
    let events = events();
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), ClusterConfig::default().brokers(3)).unwrap();
    let t = cluster
        .create_topic(
            "failover",
            TopicConfig::default()
                .replication_factor(3)
                .min_insync_replicas(1),
        )
        .unwrap()
        .with_acks(Acks::All);
    let tp = TopicPartition::new("failover", 0);
    for _ in 0..3 {
        t.append("k", "v").unwrap();
    }
    eventually("every replica caught up", || {
        let m = cluster.metrics();
        m.replicas_of(&tp)
            .iter()
            .all(|r| r.log_end_offset == Some(3))
    });
    let leader = cluster.leader(&tp).unwrap();
    let cut_off = (0..3).find(|&b| b != leader).unwrap();
    cluster.isolate_broker(cut_off).unwrap();
    for _ in 0..4 {
        t.append("k", "v").unwrap();
    }
    let m = cluster.metrics();
    let r = m
        .replicas_of(&tp)
        .into_iter()
        .find(|r| r.broker == cut_off)
        .unwrap();
    assert!(r.online && !r.in_isr && !r.leader, "{r:?}");
    assert_eq!((r.log_end_offset, r.lag), (Some(3), 4), "{r:?}");

    cluster.stop_broker(leader).unwrap();
    let mut c = cluster
        .consumer_with(
            ConsumerConfig::new("failover-group").auto_offset_reset(OffsetReset::Earliest),
        )
        .unwrap();
    c.subscribe(&["failover"]).unwrap();
    c.poll(Duration::from_millis(50)).unwrap();

    let (cut_off, leader) = (cut_off.to_string(), leader.to_string());
    events.assert_line(
        "the isolation",
        &[
            "broker cut off from the others",
            &format!("broker={cut_off}"),
        ],
    );
    events.assert_line(
        "the ISR shrink",
        &[
            "ISR shrunk: broker went away",
            "topic=failover ",
            &format!("broker={cut_off} "),
        ],
    );
    events.assert_line("the stop", &["broker stopped", &format!("broker={leader}")]);
    events.assert_line(
        "the failover",
        &[
            "leader elected",
            "topic=failover partition=0",
            &format!("previous={leader} "),
        ],
    );
    events.assert_line(
        "the rebalance",
        &[
            "consumer group rebalanced",
            "group=failover-group generation=1 members=1",
        ],
    );
}
