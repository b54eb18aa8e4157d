//! Consumer benchmarks: `poll` throughput, append-to-poll latency across
//! threads, and the `commit()` rate.
//!
//! Run with `cargo bench --bench consumer`. One log, prefilled once, serves
//! every benchmark: the poll benchmark re-reads it from the beginning each
//! iteration instead of writing a fresh log (this VM is slow to hand out
//! page-cache memory that sat idle).

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use brook::{ConsumerConfig, Log, LogConfig, OffsetReset, Record, SyncPolicy, TopicConfig};
use brook::{Topic, TopicPartition};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// Records in the poll benchmark's topic: 16-byte keys, 100-byte values.
const RECORDS: u64 = 200_000;
const MAX_POLL_RECORDS: usize = 2_000;
/// Samples in the latency histogram printed beside criterion's figures.
const LATENCY_SAMPLES: usize = 20_000;
/// Pause before each append in the "idle consumer" latency figures: long
/// enough for the polling thread to stop spinning and sleep.
const IDLE_PAUSE: Duration = Duration::from_micros(200);

fn prefill(topic: &Topic) {
    let value = [b'v'; 100];
    for chunk in 0..RECORDS / 1_000 {
        let batch = (0..1_000u64).map(|i| {
            let key = format!("{:016}", chunk * 1_000 + i);
            Record::new(value).key(key).partition(0)
        });
        topic.send_batch(batch).expect("prefill");
    }
}

fn poll_throughput(c: &mut Criterion, log: &Log) {
    let topic = log
        .create_topic("poll", TopicConfig::default())
        .expect("topic");
    prefill(&topic);
    let mut consumer = log
        .consumer_with(
            ConsumerConfig::new("bench-poll")
                .auto_offset_reset(OffsetReset::Earliest)
                .enable_auto_commit(false)
                .max_poll_records(MAX_POLL_RECORDS),
        )
        .unwrap();
    consumer.assign(&[TopicPartition::new("poll", 0)]).unwrap();

    let mut g = c.benchmark_group("consumer");
    g.throughput(Throughput::Elements(RECORDS));
    g.bench_function("poll_16b_key_100b_value", |b| {
        b.iter(|| {
            consumer.seek_to_beginning(&[]).unwrap();
            let mut n = 0u64;
            while n < RECORDS {
                let msgs = consumer.poll(Duration::ZERO).unwrap();
                n += msgs.len() as u64;
                black_box(msgs);
            }
            n
        })
    });
    g.finish();
}

/// A consumer thread polls `latency`; each record carries the nanoseconds
/// (since `base`) at which the appender started its `append`.
struct Echo {
    stop: Arc<AtomicBool>,
    latencies: mpsc::Receiver<Duration>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Echo {
    fn start(log: &Log, base: Instant) -> Echo {
        let mut consumer = log
            .consumer_with(
                ConsumerConfig::new("bench-latency")
                    .enable_auto_commit(false)
                    .max_poll_records(MAX_POLL_RECORDS),
            )
            .unwrap();
        consumer
            .assign(&[TopicPartition::new("latency", 0)])
            .unwrap();
        consumer.poll(Duration::ZERO).unwrap(); // positions resolve to the end
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, latencies) = mpsc::channel();
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    for m in consumer.poll(Duration::from_millis(100)).unwrap() {
                        let now = base.elapsed().as_nanos() as u64;
                        let sent = u64::from_be_bytes(m.value().unwrap().try_into().unwrap());
                        let _ = tx.send(Duration::from_nanos(now - sent));
                    }
                }
            })
        };
        Echo {
            stop,
            latencies,
            thread: Some(thread),
        }
    }

    /// Appends one record and waits for the consumer thread to see it.
    fn round_trip(&self, topic: &Topic, base: Instant) -> Duration {
        let sent = base.elapsed().as_nanos() as u64;
        topic
            .append(b"latency-key-0000", sent.to_be_bytes())
            .unwrap();
        self.latencies
            .recv_timeout(Duration::from_secs(10))
            .expect("the consumer thread saw the record")
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn append_to_poll_latency(c: &mut Criterion, log: &Log) {
    let topic = log
        .create_topic("latency", TopicConfig::default())
        .expect("topic");
    let base = Instant::now();
    let echo = Echo::start(log, base);

    // Our own histograms: criterion reports a mean and median, not tails.
    // "busy": appends back to back, so the consumer is often still spinning
    // in poll; "idle": a pause before each append lets it fall asleep.
    for _ in 0..1_000 {
        echo.round_trip(&topic, base); // warm up
    }
    for (name, pause) in [("busy", None), ("idle", Some(IDLE_PAUSE))] {
        let mut samples: Vec<Duration> = (0..LATENCY_SAMPLES)
            .map(|_| {
                if let Some(p) = pause {
                    std::thread::sleep(p);
                }
                echo.round_trip(&topic, base)
            })
            .collect();
        samples.sort();
        let q = |f: f64| samples[((samples.len() as f64 * f) as usize).min(samples.len() - 1)];
        println!(
            "append -> poll latency, {name} consumer, {LATENCY_SAMPLES} samples: p50 {:.1?}, \
             p90 {:.1?}, p99 {:.1?}, p99.9 {:.1?}, max {:.1?}",
            q(0.50),
            q(0.90),
            q(0.99),
            q(0.999),
            samples[samples.len() - 1]
        );
    }

    let mut g = c.benchmark_group("consumer");
    g.bench_function("append_to_poll_latency", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| echo.round_trip(&topic, base)).sum())
    });
    g.bench_function("append_to_poll_latency_idle_consumer", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    std::thread::sleep(IDLE_PAUSE); // not timed
                    echo.round_trip(&topic, base)
                })
                .sum()
        })
    });
    g.finish();
}

fn commit_rate(c: &mut Criterion, log: &Log) {
    let mut consumer = log
        .consumer_with(
            ConsumerConfig::new("bench-commit")
                .auto_offset_reset(OffsetReset::Earliest)
                .enable_auto_commit(false)
                .max_poll_records(10),
        )
        .unwrap();
    consumer.assign(&[TopicPartition::new("poll", 0)]).unwrap();
    consumer.poll(Duration::ZERO).unwrap(); // a position to commit

    let mut g = c.benchmark_group("consumer");
    g.throughput(Throughput::Elements(1));
    g.bench_function("commit_sync_never", |b| {
        b.iter(|| consumer.commit().unwrap())
    });
    g.finish();
}

fn consumer_benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let log = Log::open_with(dir.path(), LogConfig::default().sync(SyncPolicy::Never))
        .expect("open the log");
    poll_throughput(c, &log);
    append_to_poll_latency(c, &log);
    commit_rate(c, &log);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = consumer_benches
}
criterion_main!(benches);
