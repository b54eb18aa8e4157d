//! Typed topics: append Rust values, poll decoded ones, skip a record that
//! does not decode.
//!
//! Run with `cargo run --example typed_topic` (postcard, the default
//! codec, is a default feature).

use std::time::Duration;

use brook::{
    ConsumerConfig, Log, OffsetReset, TopicConfig, TopicPartition, TypedConsumer, TypedTopic,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct OrderId(u64);

#[derive(Debug, Serialize, Deserialize)]
struct Order {
    customer: String,
    items: Vec<String>,
    total_cents: u64,
}

fn main() -> brook::Result<()> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let log = Log::open(dir.path())?;
    let topic = log.create_topic("orders", TopicConfig::default().partitions(2))?;

    // Keys and values are encoded with postcard; the same key always goes
    // to the same partition, as with byte keys.
    let orders: TypedTopic<OrderId, Order> = TypedTopic::new(topic.clone());
    for (id, customer, items, total_cents) in [
        (1, "alice", vec!["a book"], 1_200),
        (2, "bob", vec!["a lamp", "a bulb"], 3_450),
        (3, "alice", vec!["tea"], 600),
    ] {
        let order = Order {
            customer: customer.into(),
            items: items.into_iter().map(String::from).collect(),
            total_cents,
        };
        let meta = orders.append(&OrderId(id), &order)?;
        println!(
            "appended order {id} to partition {} at offset {}",
            meta.partition, meta.offset
        );
    }
    // Someone writes bytes that are not an Order to the same topic.
    let bad = topic.append("garbage", [0xff; 12])?;
    println!(
        "an untyped writer put garbage in partition {} at offset {}",
        bad.partition, bad.offset
    );

    let config = ConsumerConfig::new("billing").auto_offset_reset(OffsetReset::Earliest);
    let mut consumer: TypedConsumer<OrderId, Order> =
        TypedConsumer::new(log.consumer_with(config)?);
    consumer.subscribe(&["orders"])?;

    let mut seen = 0;
    while seen < 4 {
        for item in consumer.poll(Duration::from_millis(200))? {
            seen += 1;
            match item {
                Ok(m) => {
                    let (id, order) = (m.key().expect("keyed"), m.value().expect("a value"));
                    println!(
                        "order {} from {}: {:?}, {}.{:02}",
                        id.0,
                        order.customer,
                        order.items,
                        order.total_cents / 100,
                        order.total_cents % 100
                    );
                }
                // The error names topic, partition and offset; the consumer
                // is already past the record, so going on skips it.
                Err(e) => println!("skipped: {e}"),
            }
        }
    }
    consumer.commit()?;
    for p in 0..2 {
        let tp = TopicPartition::new("orders", p);
        println!("committed {tp}: {:?}", consumer.committed(&tp)?);
    }
    Ok(())
}
