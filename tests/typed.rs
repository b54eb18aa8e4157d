//! Typed topics: Rust values appended and polled through a codec, on a Log
//! and on a Cluster, and what happens to a record that does not decode.
#![cfg(all(feature = "postcard", feature = "json"))]

use std::time::Duration;

use brook::{
    Cluster, ClusterConfig, Codec, ConsumerConfig, Error, Json, Log, OffsetReset, Postcard, Record,
    TopicConfig, TopicPartition, TypedConsumer, TypedMessage, TypedTopic,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OrderId(u64);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Status {
    Placed,
    Paid { cents: u64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    customer: String,
    items: Vec<String>,
    note: Option<String>,
    status: Status,
}

fn order(n: u64) -> Order {
    Order {
        customer: format!("customer-{n}"),
        items: (0..n % 3).map(|i| format!("item-{i}")).collect(),
        note: n.is_multiple_of(2).then(|| "gift".to_string()),
        status: if n.is_multiple_of(2) {
            Status::Placed
        } else {
            Status::Paid { cents: n * 100 }
        },
    }
}

fn earliest(group: &str) -> ConsumerConfig {
    ConsumerConfig::new(group).auto_offset_reset(OffsetReset::Earliest)
}

type Items<K, V> = Vec<brook::Result<TypedMessage<K, V>>>;

/// Polls until `n` items (decoded or not) arrived; bounded, so a lost
/// record fails the test instead of hanging it.
fn poll_n<K, V, C>(c: &mut TypedConsumer<K, V, C>, n: usize) -> Items<K, V>
where
    K: serde::de::DeserializeOwned,
    V: serde::de::DeserializeOwned,
    C: Codec,
{
    let mut items = Vec::new();
    for _ in 0..300 {
        if items.len() >= n {
            break;
        }
        items.extend(c.poll(Duration::from_millis(100)).expect("poll"));
    }
    assert_eq!(items.len(), n, "expected {n} items from poll");
    items
}

fn values<K, V: Clone>(items: Items<K, V>) -> Vec<V> {
    items
        .into_iter()
        .map(|r| r.expect("decodes").value().cloned().expect("a value"))
        .collect()
}

#[test]
fn typed_values_round_trip_through_postcard_on_a_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let orders: TypedTopic<OrderId, Order> =
        TypedTopic::new(log.create_topic("orders", TopicConfig::default()).unwrap());
    let sent: Vec<Order> = (0..20).map(order).collect();
    for (n, o) in sent.iter().enumerate() {
        let meta = orders.append(&OrderId(n as u64), o).unwrap();
        assert_eq!(meta.offset, n as u64);
    }

    let mut c: TypedConsumer<OrderId, Order> =
        TypedConsumer::new(log.consumer_with(earliest("g")).unwrap());
    c.subscribe(&["orders"]).unwrap();
    let items = poll_n(&mut c, 20);
    for (n, item) in items.iter().enumerate() {
        let m = item.as_ref().expect("every record decodes");
        assert_eq!(m.key(), Some(&OrderId(n as u64)));
        assert_eq!(m.offset(), n as u64);
        assert_eq!(m.topic(), "orders");
    }
    assert_eq!(values(items), sent);
}

#[test]
fn equal_typed_keys_land_on_one_partition() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let t = log
        .create_topic("orders", TopicConfig::default().partitions(8))
        .unwrap();
    let orders: TypedTopic<String, u32> = TypedTopic::new(t);
    let key = "customer-42".to_string();
    let first = orders.append(&key, &1).unwrap().partition;
    for v in 2..20 {
        assert_eq!(orders.append(&key, &v).unwrap().partition, first);
    }
}

#[test]
fn json_codec_writes_plain_json_that_untyped_readers_can_read() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let t = log.create_topic("orders", TopicConfig::default()).unwrap();
    let orders: TypedTopic<String, Order, Json> = TypedTopic::new(t.clone());
    let meta = orders.append(&"k1".to_string(), &order(1)).unwrap();

    let raw = t.partition(0).unwrap().read(meta.offset, 1).unwrap();
    assert_eq!(raw[0].key(), Some(&b"\"k1\""[..]));
    let json: serde_json::Value = serde_json::from_slice(raw[0].value().unwrap()).unwrap();
    assert_eq!(json["customer"], "customer-1");
    assert_eq!(json["status"]["Paid"]["cents"], 100);

    let mut c: TypedConsumer<String, Order, Json> =
        TypedConsumer::new(log.consumer_with(earliest("g")).unwrap());
    c.assign(&[TopicPartition::new("orders", 0)]).unwrap();
    assert_eq!(values(poll_n(&mut c, 1)), vec![order(1)]);
}

#[test]
fn a_bad_record_is_an_error_naming_topic_partition_and_offset_and_the_consumer_moves_on() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let raw = log
        .create_topic("orders", TopicConfig::default().partitions(1))
        .unwrap();
    let orders: TypedTopic<u64, Order> = TypedTopic::new(raw.clone());
    orders.append(&0, &order(0)).unwrap();
    raw.append([0u8], "not postcard at all: \u{ff}\u{ff}")
        .unwrap(); // offset 1: value bad
    raw.append([0xffu8; 11], [0u8]).unwrap(); // offset 2: key bad (varint too long)
    orders.append(&3, &order(3)).unwrap();

    let mut c: TypedConsumer<u64, Order> =
        TypedConsumer::new(log.consumer_with(earliest("billing")).unwrap());
    c.subscribe(&["orders"]).unwrap();
    let items = poll_n(&mut c, 4);

    let mut good = Vec::new();
    let mut bad = Vec::new();
    for item in items {
        match item {
            Ok(m) => good.push(m.offset()),
            Err(Error::Decode {
                topic,
                partition,
                offset,
                field,
                codec,
                ..
            }) => {
                assert_eq!(
                    (topic.as_str(), partition, codec),
                    ("orders", 0, "postcard")
                );
                bad.push((offset, field));
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(good, vec![0, 3], "the records around the bad ones decode");
    assert_eq!(bad, vec![(1, "value"), (2, "key")]);

    // Skipping is going on: a commit covers the bad records, and the
    // consumer reads what comes next.
    c.commit().unwrap();
    let tp = TopicPartition::new("orders", 0);
    assert_eq!(c.committed(&tp).unwrap(), Some(4));
    orders.append(&4, &order(4)).unwrap();
    assert_eq!(values(poll_n(&mut c, 1)), vec![order(4)]);
}

#[test]
fn a_decode_error_message_names_topic_partition_offset_and_codec() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let raw = log
        .create_topic("payments", TopicConfig::default())
        .unwrap();
    raw.append("k", "{not json").unwrap();
    let mut c: TypedConsumer<String, Order, Json> =
        TypedConsumer::new(log.consumer_with(earliest("g")).unwrap());
    c.assign(&[TopicPartition::new("payments", 0)]).unwrap();
    let err = poll_n(&mut c, 1).pop().unwrap().unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("payments-0") && text.contains("offset 0") && text.contains("json"),
        "the message should name topic-partition, offset and codec: {text}"
    );
    assert!(
        std::error::Error::source(&err).is_some(),
        "keeps the codec's error"
    );
}

#[test]
fn a_consumer_can_stop_at_a_bad_record_by_seeking_back_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let raw = log.create_topic("orders", TopicConfig::default()).unwrap();
    let orders: TypedTopic<u64, u64> = TypedTopic::new(raw.clone());
    orders.append(&0, &10).unwrap();
    raw.append([0u8], [0xffu8; 12]).unwrap();
    orders.append(&2, &12).unwrap();

    let mut c: TypedConsumer<u64, u64> =
        TypedConsumer::new(log.consumer_with(earliest("g")).unwrap());
    let tp = TopicPartition::new("orders", 0);
    c.assign(std::slice::from_ref(&tp)).unwrap();
    let items = poll_n(&mut c, 3);
    let bad = items
        .iter()
        .find_map(|i| match i {
            Err(Error::Decode { offset, .. }) => Some(*offset),
            _ => None,
        })
        .expect("one bad record");
    c.seek(&tp, bad).unwrap();
    c.commit_offsets(&[(tp.clone(), bad)]).unwrap();
    assert_eq!(c.committed(&tp).unwrap(), Some(1));
    assert!(
        poll_n(&mut c, 2)[0].is_err(),
        "the bad record comes back first"
    );
}

#[test]
fn postcard_refuses_a_record_written_as_a_longer_type() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let t = log.create_topic("pairs", TopicConfig::default()).unwrap();
    let pairs: TypedTopic<u8, (u64, u64)> = TypedTopic::new(t);
    pairs.append(&1, &(7, 8)).unwrap();
    let mut c: TypedConsumer<u8, u64> =
        TypedConsumer::new(log.consumer_with(earliest("g")).unwrap());
    c.subscribe(&["pairs"]).unwrap();
    let err = poll_n(&mut c, 1).pop().unwrap().unwrap_err();
    assert!(err.to_string().contains("left over"), "{err}");
}

#[test]
fn tombstones_and_unkeyed_records_decode_to_none() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let t = log.create_topic("state", TopicConfig::default()).unwrap();
    let state: TypedTopic<String, u32> = TypedTopic::new(t);
    state.append_value(&5).unwrap();
    state.tombstone(&"gone".to_string()).unwrap();
    let mut c: TypedConsumer<String, u32> =
        TypedConsumer::new(log.consumer_with(earliest("g")).unwrap());
    c.subscribe(&["state"]).unwrap();
    let items: Vec<_> = poll_n(&mut c, 2)
        .into_iter()
        .map(|r| {
            let (k, v, _) = r.unwrap().into_parts();
            (k, v)
        })
        .collect();
    assert_eq!(
        items,
        vec![(None, Some(5)), (Some("gone".to_string()), None)]
    );
}

#[test]
fn batches_and_records_with_headers_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let t = log
        .create_topic("orders", TopicConfig::default().partitions(3))
        .unwrap();
    let orders: TypedTopic<u64, Order> = TypedTopic::new(t.clone());
    let keys: Vec<u64> = (0..10).collect();
    let sent: Vec<Order> = keys.iter().map(|&k| order(k)).collect();
    let metas = orders.append_batch(keys.iter().zip(&sent)).unwrap();
    assert_eq!(metas.len(), 10);
    t.send(
        orders
            .record(&99, &order(99))
            .unwrap()
            .header("trace", "7")
            .partition(2),
    )
    .unwrap();

    let mut c: TypedConsumer<u64, Order> =
        TypedConsumer::new(log.consumer_with(earliest("g")).unwrap());
    c.subscribe(&["orders"]).unwrap();
    let mut got: Vec<(u64, Order)> = poll_n(&mut c, 11)
        .into_iter()
        .map(|r| {
            let m = r.unwrap();
            if m.key() == Some(&99) {
                assert_eq!(m.partition(), 2);
                assert_eq!(m.message().headers().next(), Some(("trace", &b"7"[..])));
            }
            let (k, v, _) = m.into_parts();
            (k.unwrap(), v.unwrap())
        })
        .collect();
    got.sort_by_key(|(k, _)| *k);
    let mut want: Vec<(u64, Order)> = keys.into_iter().zip(sent).collect();
    want.push((99, order(99)));
    assert_eq!(got, want);
}

/// A value whose serialisation always fails.
struct Unencodable;

impl Serialize for Unencodable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "this value refuses to be encoded",
        ))
    }
}

#[test]
fn an_encode_failure_names_the_topic_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let t = log.create_topic("orders", TopicConfig::default()).unwrap();
    let orders: TypedTopic<u64, Unencodable> = TypedTopic::new(t.clone());
    let err = orders.append(&1, &Unencodable).unwrap_err();
    assert!(
        matches!(&err, Error::Encode { topic, field: "value", codec: "postcard", .. } if topic == "orders"),
        "{err:?}"
    );
    let err = orders.append_batch([(&1, &Unencodable)]).unwrap_err();
    assert!(matches!(err, Error::Encode { .. }), "{err:?}");
    // postcard's errors are fixed kinds; serde_json keeps the value's text.
    let json: TypedTopic<u64, Unencodable, Json> = TypedTopic::new(t.clone());
    let err = json.append(&1, &Unencodable).unwrap_err();
    assert!(err.to_string().contains("refuses to be encoded"), "{err}");
    assert_eq!(
        t.partition(0).unwrap().end_offset(),
        0,
        "nothing was written"
    );
}

#[test]
fn typed_topics_work_the_same_on_a_cluster() {
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
    let orders: TypedTopic<OrderId, Order> = TypedTopic::new(t);
    for n in 0..10 {
        orders.append(&OrderId(n), &order(n)).unwrap();
    }
    let mut c: TypedConsumer<OrderId, Order> =
        TypedConsumer::new(cluster.consumer_with(earliest("g")).unwrap());
    c.subscribe(&["orders"]).unwrap();
    let mut got: Vec<(u64, Order)> = poll_n(&mut c, 10)
        .into_iter()
        .map(|r| {
            let (k, v, _) = r.unwrap().into_parts();
            (k.unwrap().0, v.unwrap())
        })
        .collect();
    got.sort_by_key(|(k, _)| *k);
    assert_eq!(got, (0..10).map(|n| (n, order(n))).collect::<Vec<_>>());
    cluster.close().unwrap();
}

#[test]
fn a_message_read_directly_decodes_with_any_codec() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let t = log.create_topic("orders", TopicConfig::default()).unwrap();
    t.send(Record::new(Postcard.encode(&order(5)).unwrap()).key(Postcard.encode(&5u64).unwrap()))
        .unwrap();
    let msg = t.partition(0).unwrap().read(0, 1).unwrap().remove(0);
    let m: TypedMessage<u64, Order> = TypedMessage::decode(&Postcard, msg).unwrap();
    assert_eq!((m.key(), m.value()), (Some(&5), Some(&order(5))));
}
