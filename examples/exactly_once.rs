//! Exactly-once processing: read orders, write invoices, commit both at once.
//!
//! A consume-transform-produce loop: a `ReadCommitted` consumer of group
//! `billing` reads `orders`, and a transactional producer writes one
//! invoice per order to `invoices` and adds the consumer's positions to the
//! same transaction (`send_offsets_to_transaction`). Either the invoices
//! and the new positions are committed together, or neither is: if the
//! process dies in between, the transaction is aborted at the next open,
//! the consumer resumes from the last committed position, and no order is
//! invoiced twice. One batch is aborted on purpose to show it vanish.
//!
//! Run with `cargo run --example exactly_once` (a fresh temporary
//! directory) or `cargo run --example exactly_once -- <dir>`.

use std::collections::BTreeMap;
use std::time::Duration;

use brook::{
    ConsumerConfig, IsolationLevel, Log, OffsetReset, ProducerConfig, Record, TopicConfig,
    TopicPartition,
};

fn main() -> brook::Result<()> {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = std::env::args()
        .nth(1)
        .map_or_else(|| tmp.path().to_owned(), Into::into);
    let log = Log::open(&dir)?;
    for name in ["orders", "invoices"] {
        if log.topic(name).is_err() {
            log.create_topic(name, TopicConfig::default().partitions(2))?;
        }
    }
    let orders = log.topic("orders")?;
    for i in 0..10 {
        orders.send(Record::new(format!("{} EUR", 10 * (i + 1))).key(format!("order-{i}")))?;
    }

    // One instance per transactional id: a second `producer("billing")`
    // would fence this one and abort whatever it left open.
    let mut producer = log.producer(ProducerConfig::default().transactional_id("billing"))?;
    let mut consumer = log.consumer_with(
        ConsumerConfig::new("billing")
            .auto_offset_reset(OffsetReset::Earliest)
            .enable_auto_commit(false)
            .isolation_level(IsolationLevel::ReadCommitted)
            .max_poll_records(4),
    )?;
    consumer.subscribe(&["orders"])?;

    let mut batch = 0;
    loop {
        let msgs = consumer.poll(Duration::from_millis(100))?;
        if msgs.is_empty() {
            break;
        }
        producer.begin_transaction()?;
        let mut positions = BTreeMap::new();
        for m in &msgs {
            let order = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            let amount = String::from_utf8_lossy(m.value().unwrap_or_default()).into_owned();
            producer.send(
                "invoices",
                Record::new(format!("invoice for {order}: {amount}")).key(order),
            )?;
            positions.insert(TopicPartition::new("orders", m.partition()), m.offset() + 1);
        }
        let positions: Vec<(TopicPartition, u64)> = positions.into_iter().collect();
        producer.send_offsets_to_transaction(&positions, "billing")?;
        batch += 1;
        if batch == 2 {
            // Changed our mind: the invoices vanish, the orders are read
            // again from the last committed position.
            producer.abort_transaction()?;
            println!("batch {batch}: aborted {} invoices", msgs.len());
            for (tp, _) in &positions {
                let committed = log.group("billing")?.committed(tp)?.unwrap_or(0);
                consumer.seek(tp, committed)?;
            }
        } else {
            producer.commit_transaction()?;
            println!("batch {batch}: committed {} invoices", msgs.len());
        }
    }

    let invoices = log.topic("invoices")?;
    let mut committed = 0;
    let mut written = 0;
    for p in 0..invoices.partition_count() {
        let part = invoices.partition(p)?;
        committed += part.read_committed(0, usize::MAX)?.len();
        written += part.read(0, usize::MAX)?.len();
    }
    println!(
        "{committed} invoices visible to read_committed consumers \
         ({written} written, {} of them aborted)",
        written - committed
    );
    consumer.close()?;
    drop(producer);
    log.close()
}
