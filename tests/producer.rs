//! Idempotent producers through the public API: unique producer ids that
//! survive reopening, records routed like `Topic::send`, and batches that
//! carry producer id, epoch and sequence on disk as Kafka writes them.

use std::path::Path;

use brook::{Log, ProducerConfig, Record, TopicConfig};

/// `(base offset, producer id, epoch, base sequence, records)` of every
/// batch in a segment file (RecordBatch v2 header fields).
fn batch_headers(path: &Path) -> Vec<(i64, i64, i16, i32, i32)> {
    let data = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 61 <= data.len() {
        let b = &data[pos..];
        let i64_at = |at: usize| i64::from_be_bytes(b[at..at + 8].try_into().unwrap());
        let i32_at = |at: usize| i32::from_be_bytes(b[at..at + 4].try_into().unwrap());
        let len = i32_at(8);
        if len == 0 {
            break;
        }
        out.push((
            i64_at(0),
            i64_at(43),
            i16::from_be_bytes(b[51..53].try_into().unwrap()),
            i32_at(53),
            i32_at(57),
        ));
        pos += 12 + len as usize;
    }
    out
}

#[test]
fn producer_ids_are_unique_and_never_reused_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let log = Log::open(dir.path()).unwrap();
        for _ in 0..4 {
            let p = log.producer(ProducerConfig::default()).unwrap();
            assert_eq!(p.epoch(), 0);
            seen.push(p.producer_id());
        }
        log.close().unwrap();
    }
    let mut sorted = seen.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        seen.len(),
        "an id was handed out twice: {seen:?}"
    );
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    let log = Log::open(dir.path()).unwrap();
    let plain = log
        .producer(ProducerConfig::default().idempotent(false))
        .unwrap();
    assert_eq!(plain.producer_id(), -1);
}

#[test]
fn a_producer_routes_like_topic_send_and_stamps_its_batches() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let topic = log
        .create_topic("orders", TopicConfig::default().partitions(3))
        .unwrap();
    let mut producer = log.producer(ProducerConfig::default()).unwrap();
    let id = producer.producer_id();
    let mut expected = vec![Vec::new(); 3];
    for i in 0..30 {
        let key = format!("customer-{}", i % 7);
        let meta = producer
            .send("orders", Record::new(format!("order {i}")).key(&key))
            .unwrap();
        // The same partition and the next offset a plain send would give.
        assert_eq!(
            meta.partition,
            (brook::murmur2(key.as_bytes()) as u32 & 0x7fff_ffff) % 3
        );
        assert_eq!(meta.offset, expected[meta.partition as usize].len() as u64);
        expected[meta.partition as usize].push(format!("order {i}"));
    }
    let values: Vec<String> = (30..40).map(|i| format!("order {i}")).collect();
    let batch: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record::new(v).key(format!("customer-{}", (30 + i) % 7)))
        .collect();
    for (meta, v) in producer
        .send_batch("orders", &batch)
        .unwrap()
        .iter()
        .zip(values)
    {
        assert_eq!(meta.offset, expected[meta.partition as usize].len() as u64);
        expected[meta.partition as usize].push(v);
    }
    // A plain append in between starts its own batch.
    topic.send(Record::new("plain").partition(0)).unwrap();
    expected[0].push("plain".into());
    log.close().unwrap();

    let log = Log::open(dir.path()).unwrap();
    let topic = log.topic("orders").unwrap();
    for (p, values) in expected.iter().enumerate() {
        let msgs = topic
            .partition(p as u32)
            .unwrap()
            .read(0, usize::MAX)
            .unwrap();
        let got: Vec<String> = msgs
            .iter()
            .map(|m| String::from_utf8(m.value().unwrap().to_vec()).unwrap())
            .collect();
        assert_eq!(&got, values, "partition {p}");
        let headers = batch_headers(
            &dir.path()
                .join(format!("orders-{p}"))
                .join("00000000000000000000.log"),
        );
        // The producer's batches carry its id, epoch 0 and sequences that
        // continue from batch to batch; the plain record's batch does not.
        let mut next_seq = 0;
        for &(base, pid, epoch, seq, count) in &headers {
            if pid == -1 {
                assert_eq!((epoch, seq), (-1, -1));
                continue;
            }
            assert_eq!((pid, epoch), (id, 0), "batch at {base}");
            assert_eq!(seq, next_seq, "batch at {base}");
            next_seq += count;
        }
        assert_eq!(
            next_seq as usize,
            values.len() - usize::from(p == 0),
            "partition {p}: {headers:?}"
        );
    }
}
