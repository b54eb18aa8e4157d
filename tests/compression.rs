//! Compressed topics through the public API: every codec this build has
//! round-trips single appends and batches, across flushes, a clean reopen
//! and a crash; readers running while batches are compressed in place see
//! only the records written; compaction keeps a compressed topic compressed.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use brook::{CleanupPolicy, Compression, Log, Message, Record, TopicConfig};

const CODECS: [Compression; 4] = [
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

fn codecs() -> impl Iterator<Item = Compression> {
    CODECS.into_iter().filter(|c| c.is_available())
}

/// A JSON-like event, as applications log them.
fn event(i: u64) -> String {
    format!(
        r#"{{"id":{i},"user":"user-{}","action":"{}","amount":{}.{:02},"tags":["web","eu"]}}"#,
        i % 1000,
        ["view", "click", "buy"][(i % 3) as usize],
        i % 500,
        i % 100
    )
}

fn check(msgs: &[Message], from: u64, what: &str) {
    for (n, m) in msgs.iter().enumerate() {
        let i = from + n as u64;
        assert_eq!(m.offset(), i, "{what}: offset");
        assert_eq!(
            m.key(),
            Some(format!("k{}", i % 64).as_bytes()),
            "{what}: key at {i}"
        );
        assert_eq!(m.value(), Some(event(i).as_bytes()), "{what}: value at {i}");
    }
}

fn write(log: &Log, topic: &str, from: u64, n: u64) {
    let t = log.topic(topic).unwrap();
    let record = |i: u64| {
        Record::new(event(i))
            .key(format!("k{}", i % 64))
            .partition(0)
    };
    let mut i = from;
    while i < from + n {
        if i % 100 < 50 {
            t.send(record(i)).unwrap();
            i += 1;
        } else {
            let k = (from + n - i).min(25);
            t.send_batch((i..i + k).map(record)).unwrap();
            i += k;
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.path().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn log_bytes(dir: &Path, topic: &str) -> u64 {
    std::fs::read_dir(dir.join(format!("{topic}-0")))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

#[test]
fn every_codec_round_trips_through_flushes_reopens_and_crashes() {
    for codec in codecs() {
        let what = format!("{codec:?}");
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path()).unwrap();
        for (name, c) in [("plain", Compression::None), ("packed", codec)] {
            let cfg = TopicConfig::default()
                .segment_bytes(256 * 1024)
                .max_record_bytes(1024)
                .compression(c);
            log.create_topic(name, cfg).unwrap();
            write(&log, name, 0, 3000);
        }
        let p = log.topic("packed").unwrap().partition(0).unwrap();
        // Part of the last batch is still open: read from a copy.
        let early = p.read(0, usize::MAX).unwrap();
        check(&early, 0, &what);
        log.flush().unwrap();
        check(
            &early,
            0,
            &format!("{what}: messages read before the flush"),
        );
        check(&p.read(0, usize::MAX).unwrap(), 0, &what);
        check(&p.read(1234, 10).unwrap(), 1234, &what);
        log.close().unwrap();

        let (plain, packed) = (
            log_bytes(dir.path(), "plain"),
            log_bytes(dir.path(), "packed"),
        );
        assert!(
            packed * 3 < plain,
            "{what}: {packed} bytes compressed vs {plain} plain"
        );

        let log = Log::open(dir.path()).unwrap();
        let p = log.topic("packed").unwrap().partition(0).unwrap();
        check(
            &p.read(0, usize::MAX).unwrap(),
            0,
            &format!("{what}: reopened"),
        );
        write(&log, "packed", 3000, 500);
        // The files as a kill -9 would leave them: copied while the log is
        // open, unflushed open batch and all.
        let crashed = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), crashed.path());
        drop(p);
        log.close().unwrap();
        let log = Log::open(crashed.path()).unwrap();
        let p = log.topic("packed").unwrap().partition(0).unwrap();
        let all = p.read(0, usize::MAX).unwrap();
        assert_eq!(all.len(), 3500, "{what}: after a crash");
        check(&all, 0, &format!("{what}: after a crash"));
        log.close().unwrap();
    }
}

#[test]
fn readers_running_while_batches_are_compressed_see_only_written_records() {
    let Some(codec) = codecs().next() else {
        return; // built without any codec
    };
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic(
        "t",
        TopicConfig::default()
            .segment_bytes(128 * 1024)
            .max_record_bytes(1024)
            .compression(codec),
    )
    .unwrap();
    let done = AtomicBool::new(false);
    thread::scope(|s| {
        for r in 0..2 {
            let (log, done) = (&log, &done);
            s.spawn(move || {
                let p = log.topic("t").unwrap().partition(0).unwrap();
                let mut kept: Vec<Message> = Vec::new();
                let mut passes = 0;
                while !done.load(Ordering::Acquire) || passes < 2 {
                    let from = if r == 0 {
                        0
                    } else {
                        p.end_offset().saturating_sub(40)
                    };
                    let msgs = p.read(from, usize::MAX).unwrap();
                    check(&msgs, from, &format!("reader {r}"));
                    // Messages held across later seals stay intact.
                    kept.extend(msgs.into_iter().rev().take(3));
                    passes += 1;
                }
                for m in &kept {
                    assert_eq!(
                        m.value(),
                        Some(event(m.offset()).as_bytes()),
                        "kept message"
                    );
                }
            });
        }
        for round in 0..40 {
            write(&log, "t", round * 100, 100);
            if round % 3 == 0 {
                log.flush().unwrap();
            }
        }
        done.store(true, Ordering::Release);
    });
    log.close().unwrap();
}

#[test]
fn compaction_keeps_a_compressed_topic_compressed_and_correct() {
    let Some(codec) = codecs().next() else {
        return; // built without any codec
    };
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let t = log
        .create_topic(
            "state",
            TopicConfig::default()
                .cleanup_policy(CleanupPolicy::Compact)
                .segment_bytes(16 * 1024)
                .max_record_bytes(1024)
                .compression(codec),
        )
        .unwrap();
    let mut latest = std::collections::HashMap::new();
    for i in 0..4000u64 {
        let key = format!("k{}", i % 64);
        let m = t.send(Record::new(event(i)).key(key.clone())).unwrap();
        latest.insert(key, (m.offset, event(i)));
        if i % 500 == 499 {
            log.flush().unwrap();
        }
    }
    log.flush().unwrap();
    let before = log_bytes(dir.path(), "state");
    log.compact_now("state").unwrap();
    let after = log_bytes(dir.path(), "state");
    assert!(
        after < before,
        "compaction shrank nothing: {before} -> {after}"
    );
    let p = t.partition(0).unwrap();
    let msgs = p.read(0, usize::MAX).unwrap();
    let mut seen = std::collections::HashMap::new();
    for m in &msgs {
        let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
        assert_eq!(
            m.value(),
            Some(event(m.offset()).as_bytes()),
            "offset {}",
            m.offset()
        );
        seen.insert(key, m.offset());
    }
    for (key, (offset, _)) in &latest {
        assert_eq!(seen.get(key), Some(offset), "latest record of {key}");
    }
    // The rewritten segments are still compressed: far smaller than the
    // kept records' plain size.
    let plain: usize = msgs.iter().map(|m| m.value().unwrap().len() + 16).sum();
    assert!(
        (after as usize) < plain,
        "{after} bytes for {plain} bytes of records"
    );
    log.close().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let p = log.topic("state").unwrap().partition(0).unwrap();
    assert_eq!(p.read(0, usize::MAX).unwrap().len(), msgs.len());
}

#[test]
fn changing_a_topics_codec_keeps_earlier_batches_readable() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let t = log
        .create_topic("t", TopicConfig::default().max_record_bytes(1024))
        .unwrap();
    let p = t.partition(0).unwrap();
    let mut held = Vec::new();
    let mut from = 0;
    for codec in std::iter::once(Compression::None)
        .chain(codecs())
        .chain([Compression::None])
    {
        log.set_compression("t", codec).unwrap();
        write(&log, "t", from, 250);
        // Hold messages of the open batch across the switch and its seal.
        held.extend(p.read(from + 240, 10).unwrap());
        from += 250;
    }
    log.close().unwrap();
    for m in &held {
        assert_eq!(
            m.value(),
            Some(event(m.offset()).as_bytes()),
            "held message"
        );
    }
    let log = Log::open(dir.path()).unwrap();
    assert_eq!(
        log.topic("t").unwrap().config().compression,
        Compression::None,
        "the codec is persisted"
    );
    let p = log.topic("t").unwrap().partition(0).unwrap();
    check(&p.read(0, usize::MAX).unwrap(), 0, "every codec's batches");
    assert!(log.set_compression("nope", Compression::None).is_err());
}

#[test]
fn a_codec_this_build_lacks_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    for codec in CODECS.into_iter().filter(|c| !c.is_available()) {
        let err = log
            .create_topic("t", TopicConfig::default().compression(codec))
            .unwrap_err();
        assert!(matches!(err, brook::Error::InvalidConfig { .. }), "{err:?}");
    }
}
