//! Open a log, create a topic, append a few records, read them back.
//!
//! Run with `cargo run --example quickstart`.

use brook::{Log, Record, TopicConfig};

fn main() -> brook::Result<()> {
    // A log is a directory; this one lives in a fresh temporary directory.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let log = Log::open(dir.path())?;

    // Three partitions: keyed records are spread by murmur2(key), like Kafka.
    let orders = log.create_topic("orders", TopicConfig::default().partitions(3))?;
    for (customer, item) in [
        ("alice", "a book"),
        ("bob", "a lamp"),
        ("carol", "tea"),
        ("alice", "a pen"),
    ] {
        let meta = orders.append(customer, format!("{customer} ordered {item}"))?;
        println!(
            "appended to partition {} at offset {}",
            meta.partition, meta.offset
        );
    }
    orders.send(
        Record::new("stock check")
            .key("warehouse")
            .header("trace-id", "42"),
    )?;

    // Read every partition from its first offset.
    for p in 0..orders.partition_count() {
        let partition = orders.partition(p)?;
        for m in partition.read(partition.start_offset(), 100)? {
            let key = String::from_utf8_lossy(m.key().unwrap_or_default());
            let value = String::from_utf8_lossy(m.value().unwrap_or_default());
            let headers: Vec<String> = m
                .headers()
                .map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(v)))
                .collect();
            println!("orders-{p} @{}: {key} -> {value} {headers:?}", m.offset());
        }
    }

    // A clean close makes the next open instant; dropping the last handle does it too.
    log.close()?;
    println!("segments are in {}", dir.path().display());
    Ok(())
}
