//! Guarantee: after `close()`, every `.log` file is byte for byte what
//! Kafka writes — an independent decoder (kafka-python's `MemoryRecords`,
//! installed by the README's test command) reads every batch, validates its
//! CRC-32C, and finds exactly the records brook wrote, with nothing after
//! the last batch.

use std::path::Path;
use std::process::Command;

use brook::{Log, Record, TopicConfig};

/// What one record should decode to.
struct Expected {
    offset: u64,
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Vec<u8>)>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn decode(path: &Path) -> Vec<serde_json::Value> {
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/kafka_decode.py"
        ))
        .arg(path)
        .output()
        .expect("python3 runs (the README's test command installs kafka-python)");
    assert!(
        out.status.success(),
        "kafka-python could not decode {}: {} (install it with: pip install kafka-python==3.0.12)",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn kafka_python_decodes_every_segment_brook_writes() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let topic = log
        .create_topic(
            "compat",
            TopicConfig::default()
                .partitions(2)
                .segment_bytes(20 * 1024)
                .max_record_bytes(8 * 1024),
        )
        .unwrap();
    let mut expected: Vec<Vec<Expected>> = vec![Vec::new(), Vec::new()];
    let mut push = |meta: brook::RecordMetadata,
                    key: Option<&[u8]>,
                    value: Option<&[u8]>,
                    headers: &[(&str, &[u8])]| {
        expected[meta.partition as usize].push(Expected {
            offset: meta.offset,
            timestamp: meta.timestamp,
            key: key.map(<[u8]>::to_vec),
            value: value.map(<[u8]>::to_vec),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_vec()))
                .collect(),
        });
    };
    for i in 0..600u32 {
        let key = format!("user-{}", i % 13).into_bytes();
        let value: Vec<u8> = (0..(i % 300) as usize)
            .map(|j| (i as usize + j) as u8)
            .collect();
        let trace = i.to_be_bytes();
        let headers: Vec<(&str, &[u8])> = match i % 4 {
            0 => vec![],
            1 => vec![("trace", &trace[..])],
            2 => vec![("a", b"1"), ("a", b"2"), ("empty", b"")],
            _ => vec![("ü-utf8", b"\x00\xff")],
        };
        let mut r = Record::new(&value);
        for (k, v) in &headers {
            r = r.header(k, v);
        }
        let key = (i % 5 != 0).then_some(key);
        if let Some(k) = &key {
            r = r.key(k);
        }
        if i % 7 == 0 {
            // Explicit, non-monotonic timestamps.
            r = r.timestamp(1_700_000_000_000 + ((i * 7919) % 1000) as i64);
        }
        let value_opt = if i % 50 == 3 && key.is_some() {
            r = Record::tombstone(key.as_ref().unwrap());
            None
        } else {
            Some(&value[..])
        };
        let headers = if value_opt.is_none() { vec![] } else { headers };
        let meta = topic.send(r).unwrap();
        push(meta, key.as_deref(), value_opt, &headers);
    }
    log.close().unwrap();

    for p in 0..2u32 {
        let part_dir = dir.path().join(format!("compat-{p}"));
        let mut logs: Vec<_> = std::fs::read_dir(&part_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        logs.sort();
        assert!(logs.len() > 1, "partition {p}: expected several segments");
        let mut seen = 0usize;
        for path in &logs {
            let lines = decode(path);
            let end = lines.last().unwrap();
            assert_eq!(
                end["consumed"],
                end["file_size"],
                "{}: bytes after the last batch",
                path.display()
            );
            for line in &lines {
                match line["kind"].as_str().unwrap() {
                    "batch" => {
                        assert_eq!(line["magic"], 2, "{}", path.display());
                        assert_eq!(
                            line["crc_valid"],
                            true,
                            "{}: CRC rejected by kafka-python",
                            path.display()
                        );
                        assert_eq!(line["compression"], 0);
                        assert_eq!(line["timestamp_type"], 0, "create time");
                        assert_eq!(line["transactional"], false);
                        assert_eq!(line["control"], false);
                        assert_eq!(line["producer_id"], -1);
                        assert_eq!(line["producer_epoch"], -1);
                        assert_eq!(line["base_sequence"], -1);
                    }
                    "record" => {
                        let want = &expected[p as usize][seen];
                        let offset = line["offset"].as_u64().unwrap();
                        assert_eq!(offset, want.offset, "partition {p}: record {seen}");
                        assert_eq!(
                            line["timestamp"].as_i64().unwrap(),
                            want.timestamp,
                            "offset {offset}"
                        );
                        assert_eq!(
                            line["key"].as_str().map(str::to_owned),
                            want.key.as_deref().map(hex),
                            "offset {offset}: key"
                        );
                        assert_eq!(
                            line["value"].as_str().map(str::to_owned),
                            want.value.as_deref().map(hex),
                            "offset {offset}: value"
                        );
                        let headers: Vec<(String, String)> = line["headers"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|h| {
                                (
                                    h[0].as_str().unwrap().to_owned(),
                                    h[1].as_str().unwrap().to_owned(),
                                )
                            })
                            .collect();
                        let want_headers: Vec<(String, String)> = want
                            .headers
                            .iter()
                            .map(|(k, v)| (k.clone(), hex(v)))
                            .collect();
                        assert_eq!(headers, want_headers, "offset {offset}: headers");
                        seen += 1;
                    }
                    _ => {}
                }
            }
        }
        assert_eq!(
            seen,
            expected[p as usize].len(),
            "partition {p}: kafka-python saw a different number of records"
        );
    }
}
