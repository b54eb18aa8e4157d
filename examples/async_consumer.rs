//! An async consumer: a `Stream` of messages that wakes when a record is
//! appended (no polling loop), fed by async appends from another task.
//!
//! Run with `cargo run --example async_consumer --features tokio`.

use std::time::Duration;

use brook::{AsyncConsumer, AsyncTopic, ConsumerConfig, Log, OffsetReset, TopicConfig};

#[tokio::main]
async fn main() -> brook::Result<()> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let log = Log::open(dir.path())?;
    let orders = AsyncTopic::new(log.create_topic("orders", TopicConfig::default().partitions(2))?);

    let config = ConsumerConfig::new("shipping").auto_offset_reset(OffsetReset::Earliest);
    let mut consumer = AsyncConsumer::new(log.consumer_with(config)?);
    consumer.consumer_mut()?.subscribe(&["orders"])?;

    // A producer task: appends resolve once the record is in the log (and,
    // under SyncPolicy::Always, fsynced), without blocking the runtime.
    let producer = tokio::spawn(async move {
        for (i, customer) in ["alice", "bob", "carol", "alice", "dave"]
            .iter()
            .enumerate()
        {
            tokio::time::sleep(Duration::from_millis(150)).await;
            let meta = orders
                .append(*customer, format!("order {i} from {customer}"))
                .await?;
            println!(
                "produced order {i} -> partition {} offset {}",
                meta.partition, meta.offset
            );
        }
        Ok::<_, brook::Error>(())
    });

    // The consumer sleeps between appends: each append wakes its task.
    let mut received = 0;
    while received < 5 {
        tokio::select! {
            next = consumer.recv() => {
                let m = next.expect("the stream ends only when the consumer is closed")?;
                received += 1;
                println!(
                    "consumed {}-{}@{}: {}",
                    m.topic(),
                    m.partition(),
                    m.offset(),
                    String::from_utf8_lossy(m.value().unwrap_or_default())
                );
            }
            // recv() is cancellation safe: losing this race drops no message.
            _ = tokio::time::sleep(Duration::from_millis(100)) => println!("(waiting for orders)"),
        }
    }
    consumer.commit()?;
    producer.await.expect("the producer task")?;
    println!("committed; lag per partition:");
    for lag in log.group("shipping")?.lag()? {
        println!("  {}: {}", lag.topic_partition, lag.lag);
    }
    Ok(())
}
