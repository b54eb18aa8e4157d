//! The public API contract (`API.md`) as code: every call that document
//! shows, written the way it shows it, plus the trait bounds it promises.
//! A rename, a dropped item or a signature change that breaks a caller
//! breaks this file's build — on stable, in CI — before it breaks a user.
//!
//! Additions are free; changing a line here is an API break and belongs
//! in the CHANGELOG.

use std::time::Duration;

use brook::{
    Acks, Assignor, CleanupPolicy, Cluster, ClusterConfig, Compression, Consumer, ConsumerConfig,
    ConsumerGroup, Error, IsolationLevel, Log, LogConfig, Message, Metrics, OffsetReset, Partition,
    PartitionLag, Partitioner, Producer, ProducerConfig, Record, RecordMetadata, ResetTo,
    SyncPolicy, Topic, TopicConfig, TopicPartition,
};

fn assert_send_sync<T: Send + Sync>() {}
fn assert_send<T: Send>() {}
fn assert_clone<T: Clone>() {}
fn assert_debug<T: std::fmt::Debug>() {}
fn assert_error<T: std::error::Error + Send + Sync + 'static>() {}
fn assert_key<T: Clone + Eq + std::hash::Hash + Ord + std::fmt::Debug>() {}

/// Handles are shared across threads; a `Consumer` moves between threads
/// but is used by one at a time (its methods take `&mut self`), so it is
/// `Send` and need not be `Sync`; the same holds for a `Producer`, which
/// is `Sync` too.
#[test]
fn handles_are_send_and_sync_as_promised() {
    assert_send_sync::<Log>();
    assert_send_sync::<Topic>();
    assert_send_sync::<Partition>();
    assert_send_sync::<ConsumerGroup>();
    assert_send_sync::<Cluster>();
    assert_send_sync::<Producer>();
    assert_send::<Consumer>();
    assert_send_sync::<Message>();
    assert_send_sync::<Metrics>();
    assert_error::<Error>();
    assert_key::<TopicPartition>();
    assert_clone::<Log>();
    assert_clone::<Topic>();
    assert_clone::<Partition>();
    assert_clone::<ConsumerGroup>();
    assert_clone::<Message>();
    assert_clone::<RecordMetadata>();
    assert_clone::<PartitionLag>();
    assert_clone::<Metrics>();
    assert_debug::<Log>();
    assert_debug::<Topic>();
    assert_debug::<Partition>();
    assert_debug::<Consumer>();
    assert_debug::<ConsumerGroup>();
    assert_debug::<Cluster>();
    assert_debug::<Producer>();
    assert_debug::<Message>();
    assert_debug::<Record>();
    assert_debug::<Metrics>();
}

struct FirstPartition;

impl Partitioner for FirstPartition {
    fn partition(&self, _key: Option<&[u8]>, _value: &[u8], _partitions: u32) -> u32 {
        0
    }
}

/// Every `Error` variant `API.md` names, matched by name.
fn name_of(e: &Error) -> &'static str {
    match e {
        Error::Io { .. } => "Io",
        Error::Corrupt { .. } => "Corrupt",
        Error::Locked { .. } => "Locked",
        Error::InvalidTopicName { .. } => "InvalidTopicName",
        Error::TopicExists { .. } => "TopicExists",
        Error::UnknownTopic { .. } => "UnknownTopic",
        Error::UnknownPartition { .. } => "UnknownPartition",
        Error::InvalidPartitions { .. } => "InvalidPartitions",
        Error::InvalidConfig { .. } => "InvalidConfig",
        Error::RecordTooLarge { .. } => "RecordTooLarge",
        Error::InvalidRecord { .. } => "InvalidRecord",
        Error::OffsetOutOfRange { .. } => "OffsetOutOfRange",
        Error::NoOffset { .. } => "NoOffset",
        Error::NotEnoughReplicas { .. } => "NotEnoughReplicas",
        Error::NoLeader { .. } => "NoLeader",
        Error::Closed { .. } => "Closed",
        _ => "other",
    }
}

#[test]
fn the_log_api_compiles_and_runs_as_documented() -> brook::Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    {
        let log = brook::Log::open(dir)?;
        log.close()?;
    }
    let config = brook::LogConfig::default().sync(brook::SyncPolicy::Always);
    let _: LogConfig = config.clone();
    let _ = [
        SyncPolicy::Never,
        SyncPolicy::Interval(Duration::from_millis(5)),
    ];
    let log = brook::Log::open_with(dir, config)?;
    assert_eq!(name_of(&Log::open(dir).unwrap_err()), "Locked");

    let orders: brook::Topic =
        log.create_topic("orders", brook::TopicConfig::default().partitions(4))?;
    let orders = log.topic(orders.name())?;
    let names: Vec<String> = log.topics();
    assert_eq!(names, ["orders"]);
    assert_eq!(orders.name(), "orders");
    let n: u32 = orders.partition_count();
    assert_eq!(n, 4);
    log.add_partitions("orders", 8)?;
    assert_eq!(
        name_of(
            &log.create_topic("bad name", TopicConfig::default())
                .unwrap_err()
        ),
        "InvalidTopicName"
    );
    let _ = TopicConfig::default()
        .partitions(1)
        .segment_bytes(1 << 20)
        .retention_bytes(Some(1 << 30))
        .retention(Some(Duration::from_secs(3600)))
        .max_record_bytes(1 << 16)
        .cleanup_policy(CleanupPolicy::Delete)
        .cleanup_policy(CleanupPolicy::Compact)
        .replication_factor(1)
        .min_insync_replicas(1)
        .compression(Compression::None);

    let meta: brook::RecordMetadata = orders.append("alice", "ordered a book")?;
    let meta2 = orders.send(brook::Record::new("payload").key("k").header("trace", "42"))?;
    let meta3 = orders.send(
        brook::Record::new("x")
            .partition(2)
            .timestamp(1_700_000_000_000),
    )?;
    let (p, o, t): (u32, u64, i64) = (meta.partition, meta.offset, meta.timestamp);
    assert!(p < 8 && o == 0 && t > 0 && meta2.offset < 2 && meta3.partition == 2);
    let key = String::from("k");
    let value: Vec<u8> = b"v".to_vec();
    orders.append(&key, &value)?;
    orders.append(key.clone(), value.clone())?;
    orders.append(b"k", &b"v"[..])?;
    let records = vec![Record::new("a"), Record::tombstone("k")];
    let metas: Vec<brook::RecordMetadata> = orders.send_batch(records)?;
    assert_eq!(metas.len(), 2);
    orders.with_partitioner(FirstPartition).append("k", "v")?;

    let p: brook::Partition = orders.partition(0)?;
    let (start, end): (u64, u64) = (p.start_offset(), p.end_offset());
    let msgs: Vec<brook::Message> = p.read(start, 10)?;
    assert!(!msgs.is_empty() && end > 0);
    let first: Option<u64> = p.offset_for_timestamp(0)?;
    assert_eq!(first, Some(0));
    let m = &msgs[0];
    let _: (&str, u32, u64, i64) = (m.topic(), m.partition(), m.offset(), m.timestamp());
    let _: (Option<&[u8]>, Option<&[u8]>) = (m.key(), m.value());
    let _: Vec<(&str, &[u8])> = m.headers().collect();

    let mut c: brook::Consumer = log.consumer("billing")?;
    let mut c2 = log.consumer_with(
        brook::ConsumerConfig::new("billing")
            .auto_offset_reset(brook::OffsetReset::Earliest)
            .enable_auto_commit(false)
            .auto_commit_interval(Duration::from_secs(5))
            .max_poll_records(500)
            .assignor(Assignor::Range)
            .assignor(Assignor::RoundRobin)
            .assignor(Assignor::CooperativeSticky)
            .session_timeout(Duration::from_secs(10))
            .isolation_level(IsolationLevel::ReadCommitted),
    )?;
    let _ = [OffsetReset::Latest, OffsetReset::None];
    c.subscribe(&["orders"])?;
    let tp = brook::TopicPartition::new("orders", 0);
    let (_, _): (&String, u32) = (&tp.topic, tp.partition);
    c2.assign(&[brook::TopicPartition::new("orders", 0)])?;
    let batch: Vec<brook::Message> = c2.poll(Duration::from_millis(100))?;
    assert!(!batch.is_empty());
    c2.commit()?;
    c2.commit_offsets(&[(brook::TopicPartition::new("orders", 0), 1)])?;
    let _: Option<u64> = c2.committed(&tp)?;
    let _: u64 = c2.position(&tp)?;
    c2.seek(&tp, 0)?;
    let tps = vec![tp.clone()];
    c2.seek_to_beginning(&tps)?;
    c2.seek_to_end(&tps)?;
    let _: Vec<TopicPartition> = c2.assignment();
    c2.pause(&tps);
    c2.resume(&tps);
    c2.close()?;
    c.poll(Duration::from_millis(10))?;
    c.close()?;

    let g: ConsumerGroup = log.group("billing")?;
    let _ = g.members().len();
    let _: Option<u64> = g.committed(&tp)?;
    let lag: Vec<brook::PartitionLag> = g.lag()?;
    let l = &lag[0];
    let _: (&TopicPartition, Option<u64>, u64, u64) =
        (&l.topic_partition, l.committed, l.end_offset, l.lag);
    g.reset_offsets(&tps, ResetTo::Earliest)?;

    let mut p = log.producer(brook::ProducerConfig::default().transactional_id("etl"))?;
    log.create_topic("orders-enriched", TopicConfig::default())?;
    p.begin_transaction()?;
    p.send("orders-enriched", brook::Record::new("...").key("k"))?;
    p.send_offsets_to_transaction(&[(tp.clone(), 1)], "etl-group")?;
    p.commit_transaction()?;
    p.begin_transaction()?;
    p.abort_transaction()?;
    let _ = log.producer(ProducerConfig::default().idempotent(true))?;

    let _: Metrics = log.metrics();
    log.flush()?;
    log.sync()?;
    log.delete_topic("orders")?;
    assert_eq!(name_of(&log.topic("orders").unwrap_err()), "UnknownTopic");
    log.close()?;
    Ok(())
}

#[test]
fn the_cluster_api_compiles_and_runs_as_documented() -> brook::Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let cluster = brook::Cluster::open(dir.path(), brook::ClusterConfig::default().brokers(3))?;
    let _: ClusterConfig = ClusterConfig::default()
        .replica_lag_time_max(Duration::from_secs(2))
        .ack_timeout(Duration::from_secs(5))
        .sync(SyncPolicy::Never);
    let t: brook::Topic = cluster.create_topic(
        "orders",
        brook::TopicConfig::default()
            .partitions(6)
            .replication_factor(3)
            .min_insync_replicas(2),
    )?;
    let t = t.with_acks(brook::Acks::All);
    let _ = [Acks::None, Acks::Leader];
    t.append("k", "v")?;
    let mut c: brook::Consumer = cluster.consumer("g")?;
    let _ = cluster.consumer_with(ConsumerConfig::new("g2"))?;
    c.subscribe(&["orders"])?;
    cluster.topic("orders")?;
    cluster.group("g")?;
    let mut p: brook::Producer = cluster.producer(brook::ProducerConfig::default())?;
    p.send("orders", brook::Record::new("v").key("k"))?;
    drop(p);
    let tp = TopicPartition::new("orders", 0);
    let leader: Option<u32> = cluster.leader(&tp);
    let isr: Vec<u32> = cluster.isr(&tp);
    let controller: Option<u32> = cluster.controller();
    assert!(leader.is_some() && isr.len() == 3 && controller.is_some());
    let follower = (0..3).find(|&b| Some(b) != leader).unwrap();
    cluster.stop_broker(follower)?;
    cluster.start_broker(follower)?;
    cluster.isolate_broker(follower)?;
    cluster.heal_broker(follower)?;
    let _: Metrics = cluster.metrics();
    cluster.close()?;
    Ok(())
}
