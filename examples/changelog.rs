//! A key-value store whose only durable state is a compacted topic.
//!
//! Every change to the store is appended to the `inventory` changelog: a
//! record `sku -> quantity` for a write, a tombstone for a delete. At
//! start-up the store rebuilds its map by replaying the changelog from the
//! beginning. Compaction keeps that replay short: it removes every record
//! that a later one of the same key replaced, so the topic stays about the
//! size of the state, not of its history.
//!
//! Run with `cargo run --example changelog` (a fresh temporary directory)
//! or `cargo run --example changelog -- <dir>` to keep the state between
//! runs: each run changes a few quantities and starts from what the last
//! one left.

use std::collections::BTreeMap;
use std::path::Path;

use brook::{CleanupPolicy, Log, Record, Topic, TopicConfig};

const TOPIC: &str = "inventory";

/// The in-memory state and the changelog that makes it durable.
struct Inventory {
    log: Log,
    changelog: Topic,
    stock: BTreeMap<String, u64>,
}

impl Inventory {
    /// Opens the log and rebuilds the state from the changelog.
    fn open(dir: &Path) -> brook::Result<Inventory> {
        let log = Log::open(dir)?;
        let changelog = match log.topic(TOPIC) {
            Ok(topic) => topic,
            Err(brook::Error::UnknownTopic { .. }) => log.create_topic(
                TOPIC,
                TopicConfig::default()
                    .partitions(2)
                    .cleanup_policy(CleanupPolicy::Compact)
                    // Small segments so that this small example has closed
                    // segments to compact; real stores keep the default.
                    .segment_bytes(16 * 1024)
                    .max_record_bytes(1024),
            )?,
            Err(e) => return Err(e),
        };
        let mut stock = BTreeMap::new();
        let mut replayed = 0;
        for p in 0..changelog.partition_count() {
            let partition = changelog.partition(p)?;
            let mut at = partition.start_offset();
            while at < partition.end_offset() {
                let batch = partition.read(at, 1_000)?;
                for m in &batch {
                    let sku = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                    match m.value() {
                        Some(v) => stock.insert(sku, parse_quantity(v)),
                        None => stock.remove(&sku), // a tombstone: deleted
                    };
                    replayed += 1;
                }
                // Compaction leaves gaps: continue after the last record read.
                at = batch.last().map_or(at, |m| m.offset() + 1);
            }
        }
        println!(
            "rebuilt {} items from {replayed} changelog records",
            stock.len()
        );
        Ok(Inventory {
            log,
            changelog,
            stock,
        })
    }

    /// Sets a quantity: durable in the changelog first, then in memory.
    fn set(&mut self, sku: &str, quantity: u64) -> brook::Result<()> {
        self.changelog.append(sku, quantity.to_string())?;
        self.stock.insert(sku.to_owned(), quantity);
        Ok(())
    }

    /// Deletes an item with a tombstone.
    fn delete(&mut self, sku: &str) -> brook::Result<()> {
        self.changelog.send(Record::tombstone(sku))?;
        self.stock.remove(sku);
        Ok(())
    }
}

fn parse_quantity(bytes: &[u8]) -> u64 {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn main() -> brook::Result<()> {
    let temp = tempfile::tempdir().expect("a temporary directory");
    let dir = std::env::args_os()
        .nth(1)
        .map_or_else(|| temp.path().to_path_buf(), Into::into);

    // First life: a busy day of stock movements.
    let mut store = Inventory::open(&dir)?;
    for round in 0..10_000u64 {
        let sku = format!("sku-{:03}", round % 50);
        let quantity = store.stock.get(&sku).copied().unwrap_or(100);
        store.set(&sku, (quantity + round) % 500)?;
    }
    store.delete("sku-007")?;
    store.delete("sku-013")?;
    let before = store.stock.clone();
    store.log.close()?;
    drop(store);

    // Second life: the state comes back from the changelog alone.
    let store = Inventory::open(&dir)?;
    assert_eq!(store.stock, before, "the changelog rebuilds the same state");

    // Compaction keeps the latest record of each key (and the tombstones,
    // for `delete_retention`), so the next start-up replays far less.
    let stats = store.log.compact_now(TOPIC)?;
    println!(
        "compaction kept {} of {} records in closed segments",
        stats.records_out, stats.records_in
    );
    store.log.close()?;
    drop(store);

    // Third life: same state, shorter replay.
    let store = Inventory::open(&dir)?;
    assert_eq!(store.stock, before, "compaction never changes the state");
    println!(
        "sku-001 = {:?}, sku-007 = {:?} (deleted)",
        store.stock.get("sku-001"),
        store.stock.get("sku-007")
    );
    store.log.close()
}
