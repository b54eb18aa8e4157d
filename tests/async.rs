//! The async API: a consumer stream that an append wakes (no polling),
//! appends as futures, and what dropping a future does.
#![cfg(feature = "tokio")]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use brook::{
    AsyncConsumer, AsyncTopic, Cluster, ClusterConfig, ConsumerConfig, Error, Log, OffsetReset,
    Record, SyncPolicy, TopicConfig, TopicPartition,
};
use futures_core::Stream;

fn earliest(group: &str) -> ConsumerConfig {
    ConsumerConfig::new(group).auto_offset_reset(OffsetReset::Earliest)
}

/// Counts wake-ups.
#[derive(Default)]
struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn poll_once(
    stream: &mut AsyncConsumer,
    waker: &Waker,
) -> Poll<Option<brook::Result<brook::Message>>> {
    Pin::new(stream).poll_next(&mut Context::from_waker(waker))
}

/// Waiting is a registered waker, not a loop: a pending stream is woken by
/// the append itself (synchronously, on the appending thread), and not
/// before.
async fn an_append_wakes_a_pending_stream(subscribe: bool) {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let t = log.create_topic("orders", TopicConfig::default()).unwrap();
    let mut c = AsyncConsumer::new(log.consumer_with(earliest("g")).unwrap());
    if subscribe {
        c.consumer_mut().unwrap().subscribe(&["orders"]).unwrap();
    } else {
        c.consumer_mut()
            .unwrap()
            .assign(&[TopicPartition::new("orders", 0)])
            .unwrap();
    }

    let counter = Arc::new(CountingWaker::default());
    let waker = Waker::from(Arc::clone(&counter));
    assert!(
        poll_once(&mut c, &waker).is_pending(),
        "nothing to read yet"
    );
    assert_eq!(
        counter.0.load(Ordering::SeqCst),
        0,
        "no wake-up without an append"
    );

    t.append("k", "v0").unwrap();
    assert_eq!(
        counter.0.load(Ordering::SeqCst),
        1,
        "the append woke the waiting task"
    );
    match poll_once(&mut c, &waker) {
        Poll::Ready(Some(Ok(m))) => assert_eq!(m.value(), Some(&b"v0"[..])),
        other => panic!("expected the appended message, got {other:?}"),
    }
    assert!(poll_once(&mut c, &waker).is_pending());
    t.append("k", "v1").unwrap();
    assert_eq!(counter.0.load(Ordering::SeqCst), 2, "woken once per wait");
}

#[tokio::test]
async fn an_append_wakes_a_pending_subscribed_stream() {
    an_append_wakes_a_pending_stream(true).await;
}

#[tokio::test]
async fn an_append_wakes_a_pending_assigned_stream() {
    an_append_wakes_a_pending_stream(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_receives_in_order_what_another_task_appends() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let topic = AsyncTopic::new(log.create_topic("events", TopicConfig::default()).unwrap());
    let mut c = AsyncConsumer::new(log.consumer_with(earliest("g")).unwrap());
    c.consumer_mut().unwrap().subscribe(&["events"]).unwrap();

    let producer = tokio::spawn(async move {
        for i in 0..200u32 {
            let meta = topic.append("k", i.to_string()).await.unwrap();
            assert_eq!(meta.offset, u64::from(i));
        }
    });
    for i in 0..200u64 {
        let m = c.recv().await.expect("stream open").expect("no error");
        assert_eq!((m.offset(), m.value()), (i, Some(i.to_string().as_bytes())));
    }
    producer.await.unwrap();
}

#[tokio::test]
async fn async_append_resolves_once_the_record_is_in_the_log_under_sync_always() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open_with(
        dir.path(),
        brook::LogConfig::default().sync(SyncPolicy::Always),
    )
    .unwrap();
    let t = log
        .create_topic("orders", TopicConfig::default().partitions(2))
        .unwrap();
    let topic = AsyncTopic::new(t.clone());
    let meta = topic.append("alice", "a book").await.unwrap();
    let read = t
        .partition(meta.partition)
        .unwrap()
        .read(meta.offset, 1)
        .unwrap();
    assert_eq!(read[0].value(), Some(&b"a book"[..]));
    let metas = topic
        .send_batch(vec![
            Record::new("x").key("bob"),
            Record::new("y").key("bob"),
        ])
        .await
        .unwrap();
    assert_eq!(metas[1].offset, metas[0].offset + 1);

    // Durable across a reopen (the directory lock forces a real close).
    drop((topic, t));
    log.close().unwrap();
    drop(log);
    let log = Log::open(dir.path()).unwrap();
    let p = log
        .topic("orders")
        .unwrap()
        .partition(meta.partition)
        .unwrap();
    assert_eq!(
        p.read(meta.offset, 1).unwrap()[0].value(),
        Some(&b"a book"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_append_future_still_writes_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let topic = AsyncTopic::new(log.create_topic("orders", TopicConfig::default()).unwrap());
    let mut c = AsyncConsumer::new(log.consumer_with(earliest("g")).unwrap());
    c.consumer_mut().unwrap().subscribe(&["orders"]).unwrap();

    // Polled once (the append is handed to a blocking thread), then dropped.
    let mut append = Box::pin(topic.append("k", "dropped"));
    let waker = Waker::from(Arc::new(CountingWaker::default()));
    let _ = append.as_mut().poll(&mut Context::from_waker(&waker));
    drop(append);

    // Never polled: nothing happens.
    drop(topic.append("k", "never polled"));

    let m = c.recv().await.unwrap().unwrap();
    assert_eq!(m.value(), Some(&b"dropped"[..]));
    topic.append("k", "after").await.unwrap();
    let m = c.recv().await.unwrap().unwrap();
    assert_eq!(
        m.value(),
        Some(&b"after"[..]),
        "the unpolled future wrote nothing"
    );
}

#[tokio::test]
async fn dropping_a_waiting_recv_future_loses_no_message() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let t = log.create_topic("orders", TopicConfig::default()).unwrap();
    let mut c = AsyncConsumer::new(log.consumer_with(earliest("g")).unwrap());
    c.consumer_mut().unwrap().subscribe(&["orders"]).unwrap();
    for i in 0..10u64 {
        // The recv finds nothing and waits; the other branch wins and the
        // waiting recv is dropped.
        tokio::select! {
            biased;
            m = c.recv() => panic!("nothing was appended yet, got {m:?}"),
            _ = tokio::task::yield_now() => {}
        }
        t.append("k", format!("{i}")).unwrap();
        let m = c.recv().await.unwrap().unwrap();
        assert_eq!(m.offset(), i);
    }
}

#[tokio::test]
async fn commit_covers_only_what_the_stream_yielded() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let t = log.create_topic("orders", TopicConfig::default()).unwrap();
    for i in 0..5 {
        t.append("k", format!("{i}")).unwrap();
    }
    let tp = TopicPartition::new("orders", 0);
    let mut c = AsyncConsumer::new(
        log.consumer_with(earliest("g").enable_auto_commit(false))
            .unwrap(),
    );
    c.consumer_mut().unwrap().subscribe(&["orders"]).unwrap();
    for _ in 0..2 {
        c.recv().await.unwrap().unwrap();
    }
    c.commit().unwrap();
    assert_eq!(c.consumer().committed(&tp).unwrap(), Some(2));

    // Handing out the consumer rewinds it to the first unyielded message.
    assert_eq!(c.consumer_mut().unwrap().position(&tp).unwrap(), 2);
    let m = c.recv().await.unwrap().unwrap();
    assert_eq!(m.offset(), 2);
    let consumer = c.into_inner().unwrap();
    drop(consumer);
}

#[tokio::test]
async fn a_closed_consumer_ends_the_stream_after_one_error() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic("orders", TopicConfig::default()).unwrap();
    let mut c = AsyncConsumer::new(log.consumer_with(earliest("g")).unwrap());
    c.consumer_mut().unwrap().subscribe(&["orders"]).unwrap();
    c.consumer_mut().unwrap().close().unwrap();
    assert!(matches!(c.recv().await, Some(Err(Error::Closed { .. }))));
    assert!(c.recv().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_async_api_works_the_same_on_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), ClusterConfig::default().brokers(3)).unwrap();
    let t = cluster
        .create_topic(
            "orders",
            TopicConfig::default()
                .partitions(2)
                .replication_factor(3)
                .min_insync_replicas(2),
        )
        .unwrap();
    let topic = AsyncTopic::new(t);
    let mut c = AsyncConsumer::new(cluster.consumer_with(earliest("g")).unwrap());
    c.consumer_mut().unwrap().subscribe(&["orders"]).unwrap();
    let producer = tokio::spawn(async move {
        for i in 0..50u32 {
            topic.append(format!("k{i}"), i.to_string()).await.unwrap();
        }
    });
    let mut got = Vec::new();
    while got.len() < 50 {
        let m = c.recv().await.unwrap().unwrap();
        got.push(String::from_utf8(m.value().unwrap().to_vec()).unwrap());
    }
    producer.await.unwrap();
    got.sort_by_key(|s| s.parse::<u32>().unwrap());
    assert_eq!(got, (0..50).map(|i| i.to_string()).collect::<Vec<_>>());
    drop(c);
    cluster.close().unwrap();
}

#[tokio::test]
async fn the_stream_is_a_futures_stream() {
    fn assert_stream<S: Stream<Item = brook::Result<brook::Message>> + Send + Unpin>(_: &S) {}
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let c = AsyncConsumer::new(log.consumer("g").unwrap());
    assert_stream(&c);
}
