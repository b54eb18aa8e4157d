//! Several worker threads share the work of one consumer group while a
//! producer thread fills the topic. Each order reaches exactly one worker;
//! the group splits the topic's partitions between them.
//!
//! Run with `cargo run --example consumer_group`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use brook::{ConsumerConfig, Log, OffsetReset, TopicConfig};

const WORKERS: usize = 3;
const ORDERS: u64 = 30;

fn main() -> brook::Result<()> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let log = Log::open(dir.path())?;
    let orders = log.create_topic("orders", TopicConfig::default().partitions(6))?;
    let done = Arc::new(AtomicBool::new(false));

    // The producer: one order every few milliseconds, keyed by customer so
    // a customer's orders stay in one partition, in order.
    let producer = {
        let done = Arc::clone(&done);
        thread::spawn(move || -> brook::Result<()> {
            for n in 1..=ORDERS {
                let customer = format!("customer-{}", n % 7);
                orders.append(&customer, format!("order #{n} from {customer}"))?;
                thread::sleep(Duration::from_millis(5));
            }
            done.store(true, Ordering::Release);
            Ok(())
        })
    };

    // The workers: members of the group "shipping".
    let workers: Vec<_> = (1..=WORKERS)
        .map(|w| {
            let log = log.clone();
            let done = Arc::clone(&done);
            thread::spawn(move || -> brook::Result<(usize, BTreeSet<u32>)> {
                let mut consumer = log.consumer_with(
                    ConsumerConfig::new("shipping").auto_offset_reset(OffsetReset::Earliest),
                )?;
                consumer.subscribe(&["orders"])?;
                let group = log.group("shipping")?;
                let mut shipped = 0;
                let mut partitions = BTreeSet::new();
                loop {
                    let batch = consumer.poll(Duration::from_millis(100))?;
                    for m in &batch {
                        let order = String::from_utf8_lossy(m.value().unwrap_or_default());
                        println!(
                            "worker {w} ships {order:<26} (partition {}, offset {})",
                            m.partition(),
                            m.offset()
                        );
                    }
                    shipped += batch.len();
                    partitions.extend(batch.iter().map(|m| m.partition()));
                    // Processed: record that in the group, so a restarted
                    // worker would not ship these again.
                    consumer.commit()?;
                    let all_committed = group.lag()?.iter().all(|l| l.lag == 0);
                    if batch.is_empty() && done.load(Ordering::Acquire) && all_committed {
                        break;
                    }
                }
                consumer.close()?;
                Ok((shipped, partitions))
            })
        })
        .collect();

    producer.join().expect("producer thread")?;
    println!();
    let mut total = 0;
    for (w, handle) in workers.into_iter().enumerate() {
        let (shipped, partitions) = handle.join().expect("worker thread")?;
        println!(
            "worker {} shipped {shipped} orders from partitions {partitions:?}",
            w + 1
        );
        total += shipped;
    }
    println!("{total} of {ORDERS} orders shipped, each exactly once");
    assert_eq!(total as u64, ORDERS);
    Ok(())
}
