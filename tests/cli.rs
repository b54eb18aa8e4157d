//! The `brook` binary, run as an operator would: each subcommand's happy
//! path, produce → consume round trips, groups, dump and verify finding
//! damage, and errors as one line with a non-zero exit.
#![cfg(feature = "cli")]

use std::path::{Path, PathBuf};

use assert_cmd::cargo::cargo_bin_cmd;

/// `brook --dir <dir> <args>`, with nothing from the environment.
fn brook(dir: &Path, args: &[&str]) -> assert_cmd::Command {
    let mut c = cargo_bin_cmd!("brook");
    c.env_remove("BROOK_DIR").arg("--dir").arg(dir).args(args);
    c
}

/// Runs and expects success; returns stdout.
fn ok(dir: &Path, args: &[&str]) -> String {
    ok_with(dir, args, Vec::new())
}

/// Runs with `stdin` and expects success; returns stdout.
fn ok_with(dir: &Path, args: &[&str], stdin: impl Into<Vec<u8>>) -> String {
    let out = brook(dir, args).write_stdin(stdin).output().unwrap();
    assert!(
        out.status.success(),
        "brook {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs and expects failure with exactly one line on stderr; returns it.
fn fails(dir: &Path, args: &[&str]) -> String {
    let out = brook(dir, args).output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        !out.status.success(),
        "brook {args:?} succeeded; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        stderr.lines().count(),
        1,
        "brook {args:?}: the error is not one line: {stderr:?}"
    );
    assert!(stderr.starts_with("brook: error: "), "{stderr:?}");
    stderr.trim_end().to_owned()
}

/// A log directory with topic `orders` of `partitions` partitions.
fn log_with_topic(partitions: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    ok(
        &dir,
        &["topics", "create", "orders", "--partitions", partitions],
    );
    (tmp, dir)
}

#[test]
fn topics_create_list_describe_add_partitions_and_delete() {
    let (_tmp, dir) = log_with_topic("2");
    let out = ok(
        &dir,
        &["topics", "create", "events", "--cleanup-policy", "compact"],
    );
    assert!(
        out.contains("created topic events with 1 partition"),
        "{out}"
    );
    assert_eq!(ok(&dir, &["topics", "list"]), "events\norders\n");

    ok_with(&dir, &["produce", "orders", "--partition", "1"], "a\nb\n");
    let out = ok(&dir, &["topics", "describe", "orders"]);
    assert!(
        out.contains("Topic: orders\tPartitions: 2\tCleanupPolicy: delete"),
        "{out}"
    );
    assert!(
        out.contains("Partition: 0\tStartOffset: 0\tEndOffset: 0"),
        "{out}"
    );
    assert!(
        out.contains("Partition: 1\tStartOffset: 0\tEndOffset: 2"),
        "{out}"
    );
    let out = ok(&dir, &["topics", "describe"]);
    assert!(
        out.contains("Topic: events\tPartitions: 1\tCleanupPolicy: compact"),
        "{out}"
    );

    let out = ok(
        &dir,
        &["topics", "add-partitions", "orders", "--partitions", "5"],
    );
    assert!(out.contains("now has 5 partitions"), "{out}");
    assert!(ok(&dir, &["topics", "describe", "orders"]).contains("Partition: 4\t"));
    let e = fails(
        &dir,
        &["topics", "add-partitions", "orders", "--partitions", "3"],
    );
    assert!(e.contains("has 5 partitions; cannot change to 3"), "{e}");

    ok(&dir, &["topics", "delete", "events"]);
    assert_eq!(ok(&dir, &["topics", "list"]), "orders\n");
    let e = fails(&dir, &["topics", "create", "orders"]);
    assert!(e.contains("already exists"), "{e}");
}

#[test]
fn produced_lines_consume_back_byte_for_byte() {
    let (_tmp, dir) = log_with_topic("3");
    let input = "first\nsecond with spaces\n\nünïcödé ✓\ncarriage\r\nlast\n";
    assert_eq!(ok_with(&dir, &["produce", "orders"], input), "");
    // Unkeyed lines of one produce call stay in one partition, in order.
    assert_eq!(ok(&dir, &["consume", "orders"]), input);
}

#[test]
fn produced_key_value_pairs_consume_back_byte_for_byte() {
    let (_tmp, dir) = log_with_topic("1");
    let input = "alice:ordered a book\nbob:paid: twice\ncarol:\n";
    ok_with(&dir, &["produce", "orders", "-K", ":"], input);
    assert_eq!(ok(&dir, &["consume", "orders", "-K", ":"]), input);
    // Without -K on the way out, only the values.
    assert_eq!(
        ok(&dir, &["consume", "orders"]),
        "ordered a book\npaid: twice\n\n"
    );
}

#[test]
fn keys_pick_partitions_like_kafka_and_consume_reads_all_of_them() {
    let (_tmp, dir) = log_with_topic("4");
    let input: String = (0..40).map(|i| format!("key-{i}=value-{i}\n")).collect();
    ok_with(&dir, &["produce", "orders", "-K", "="], input.clone());
    let json = ok(&dir, &["consume", "orders", "-F", "json"]);
    let mut partitions = std::collections::BTreeSet::new();
    for line in json.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let key = v["key"].as_str().unwrap();
        let p = v["partition"].as_u64().unwrap() as u32;
        assert_eq!(
            (brook::murmur2(key.as_bytes()) & 0x7fff_ffff) as u32 % 4,
            p,
            "{line}"
        );
        partitions.insert(p);
    }
    assert!(partitions.len() > 1, "{partitions:?}");
    let mut got: Vec<String> = ok(&dir, &["consume", "orders", "-K", "="])
        .lines()
        .map(str::to_owned)
        .collect();
    let mut want: Vec<String> = input.lines().map(str::to_owned).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn consume_formats_json_lines_and_hex() {
    let (_tmp, dir) = log_with_topic("1");
    ok_with(
        &dir,
        &[
            "produce",
            "orders",
            "-K",
            ":",
            "-H",
            "trace=42",
            "--timestamp",
            "1700000000000",
        ],
        "k1:hello\nk2:wörld\n",
    );
    let json = ok(&dir, &["consume", "orders", "--format", "json"]);
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        lines[1],
        serde_json::json!({
            "topic": "orders", "partition": 0, "offset": 1,
            "timestamp": 1_700_000_000_000i64, "key": "k2", "value": "wörld",
            "headers": [["trace", "42"]],
        })
    );
    let hex = ok(&dir, &["consume", "orders", "--format", "hex", "-K", " "]);
    assert_eq!(hex, "6b31 68656c6c6f\n6b32 77c3b6726c64\n");
}

#[test]
fn json_shows_bytes_that_are_not_utf8_as_hex() {
    let (_tmp, dir) = log_with_topic("1");
    ok_with(&dir, &["produce", "orders"], &b"\xff\xfe\n"[..]);
    let json = ok(&dir, &["consume", "orders", "-F", "json"]);
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["value"], serde_json::json!({"hex": "fffe"}));
    assert_eq!(v["key"], serde_json::Value::Null);
}

#[test]
fn consume_from_an_offset_and_from_a_timestamp() {
    let (_tmp, dir) = log_with_topic("1");
    ok_with(
        &dir,
        &["produce", "orders", "--timestamp", "1000"],
        "a\nb\nc\n",
    );
    ok_with(
        &dir,
        &["produce", "orders", "--timestamp", "2000"],
        "d\ne\n",
    );
    assert_eq!(ok(&dir, &["consume", "orders", "--offset", "3"]), "d\ne\n");
    assert_eq!(
        ok(&dir, &["consume", "orders", "--offset", "1", "-n", "2"]),
        "b\nc\n"
    );
    assert_eq!(ok(&dir, &["consume", "orders", "--offset", "end"]), "");
    assert_eq!(
        ok(&dir, &["consume", "orders", "--from-timestamp", "1500"]),
        "d\ne\n"
    );
    assert_eq!(
        ok(&dir, &["consume", "orders", "-t", "0"]),
        "a\nb\nc\nd\ne\n"
    );
    let e = fails(&dir, &["consume", "orders", "--offset", "9"]);
    assert!(e.contains("offset 9") && e.contains("orders"), "{e}");
}

#[test]
fn a_group_commits_what_it_printed_and_resumes_there() {
    let (_tmp, dir) = log_with_topic("2");
    ok_with(
        &dir,
        &["produce", "orders", "--partition", "0"],
        "a\nb\nc\n",
    );
    ok_with(&dir, &["produce", "orders", "--partition", "1"], "x\ny\n");

    assert_eq!(
        ok(
            &dir,
            &[
                "consume",
                "orders",
                "--group",
                "billing",
                "--partition",
                "0",
                "-n",
                "2"
            ]
        ),
        "a\nb\n"
    );
    let out = ok(&dir, &["groups", "describe", "billing"]);
    let rows: Vec<Vec<&str>> = out
        .lines()
        .filter(|l| l.starts_with("billing "))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        vec![
            vec!["billing", "orders", "0", "2", "3", "1"],
            vec!["billing", "orders", "1", "-", "2", "2"],
        ],
        "{out}"
    );
    assert!(out.contains("no active members"), "{out}");
    assert_eq!(ok(&dir, &["groups", "list"]), "billing\n");

    // The whole topic as a member: the rest of partition 0, all of 1.
    let mut rest: Vec<String> = ok(&dir, &["consume", "orders", "-g", "billing"])
        .lines()
        .map(str::to_owned)
        .collect();
    rest.sort();
    assert_eq!(rest, ["c", "x", "y"]);
    assert_eq!(ok(&dir, &["consume", "orders", "-g", "billing"]), "");
    let out = ok(&dir, &["groups", "describe", "billing"]);
    assert!(
        out.lines()
            .filter(|l| l.starts_with("billing "))
            .all(|l| l.ends_with(" 0")),
        "lag left: {out}"
    );
}

#[test]
fn reset_offsets_moves_a_groups_committed_offsets() {
    let (_tmp, dir) = log_with_topic("1");
    ok_with(
        &dir,
        &["produce", "orders", "--timestamp", "1000"],
        "a\nb\n",
    );
    ok_with(&dir, &["produce", "orders", "--timestamp", "2000"], "c\n");
    assert_eq!(ok(&dir, &["consume", "orders", "-g", "g"]), "a\nb\nc\n");

    let out = ok(&dir, &["groups", "reset-offsets", "g", "--to-earliest"]);
    assert!(out.contains("g      orders  0          0"), "{out}");
    assert_eq!(
        ok(&dir, &["consume", "orders", "-g", "g", "-n", "1"]),
        "a\n"
    );

    ok(
        &dir,
        &[
            "groups",
            "reset-offsets",
            "g",
            "--topic",
            "orders",
            "--to-offset",
            "2",
        ],
    );
    assert_eq!(ok(&dir, &["consume", "orders", "-g", "g"]), "c\n");

    ok(
        &dir,
        &["groups", "reset-offsets", "g", "--to-timestamp", "1500"],
    );
    assert_eq!(ok(&dir, &["consume", "orders", "-g", "g"]), "c\n");

    ok(&dir, &["groups", "reset-offsets", "g", "--to-latest"]);
    assert_eq!(ok(&dir, &["consume", "orders", "-g", "g"]), "");

    // A new group gets offsets when a topic is named.
    ok(
        &dir,
        &[
            "groups",
            "reset-offsets",
            "fresh",
            "--topic",
            "orders",
            "--to-offset",
            "1",
        ],
    );
    assert_eq!(ok(&dir, &["consume", "orders", "-g", "fresh"]), "b\nc\n");

    let e = fails(&dir, &["groups", "reset-offsets", "g", "--to-offset", "99"]);
    assert!(e.contains("offset 99"), "{e}");
    let e = fails(&dir, &["groups", "describe", "nobody"]);
    assert!(e.contains("unknown group \"nobody\""), "{e}");
}

/// A topic with several segments, each with index entries: 40 batches of
/// 10 records of ~200 bytes, 64 KiB segments.
fn log_with_segments() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    ok(
        &dir,
        &[
            "topics",
            "create",
            "orders",
            "--segment-bytes",
            "65536",
            "--max-record-bytes",
            "1024",
        ],
    );
    for b in 0..40 {
        let input: String = (0..10)
            .map(|i| format!("key-{b}-{i}:{}\n", "v".repeat(200)))
            .collect();
        let ts = (1_000 + b).to_string();
        ok_with(
            &dir,
            &[
                "produce",
                "orders",
                "-K",
                ":",
                "--partition",
                "0",
                "--timestamp",
                &ts,
            ],
            input,
        );
    }
    (tmp, dir)
}

/// The first `(position, last offset)` entry of `orders-0`'s first index.
fn first_index_entry(dump: &str) -> (u64, u64) {
    let line = dump
        .lines()
        .find(|l| l.starts_with("offset: ") && l.contains(" position: "))
        .expect("an index entry in the dump");
    let f: Vec<&str> = line.split_whitespace().collect();
    (f[3].parse().unwrap(), f[1].parse().unwrap())
}

#[test]
fn dump_lists_batches_offsets_crcs_and_index_entries() {
    let (_tmp, dir) = log_with_segments();
    let out = ok(&dir, &["dump", "--topic", "orders"]);
    assert!(out.contains("Partition orders-0"), "{out}");
    assert!(out.contains("00000000000000000000.log"), "{out}");
    let batches: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("baseOffset: "))
        .collect();
    // 40 produce calls of 10 records; a roll splits a batch.
    let counts: Vec<u64> = batches
        .iter()
        .map(|b| b.split_whitespace().nth(5).unwrap().parse().unwrap())
        .collect();
    assert_eq!(counts.iter().sum::<u64>(), 400, "{out}");
    assert!(batches[0].starts_with("baseOffset: 0 lastOffset: 9 count: 10 position: 0 "));
    assert!(batches[1].starts_with("baseOffset: 10 lastOffset: 19 count: 10 position: "));
    assert!(batches.iter().all(|b| b.ends_with("(crc ok)")), "{out}");
    let segments = out
        .lines()
        .filter(|l| l.ends_with(" bytes)") && l.contains(".log"))
        .count();
    assert!(segments > 1, "one segment only: {out}");
    let (position, offset) = first_index_entry(&out);
    let batch_there = batches
        .iter()
        .find(|b| b.contains(&format!(" position: {position} ")))
        .expect("an index entry points at a batch");
    assert!(
        batch_there.contains(&format!("lastOffset: {offset} ")),
        "{batch_there}"
    );
    assert!(out.contains(".timeindex ("), "{out}");

    let records = ok(
        &dir,
        &[
            "dump",
            "--topic",
            "orders",
            "--partition",
            "0",
            "--segment",
            "0",
            "--records",
        ],
    );
    assert!(
        records.contains("| offset: 0 timestamp: 1000 key: \"key-0-0\" value: \"vvv"),
        "{records}"
    );

    let verified = ok(&dir, &["dump", "--verify"]);
    assert!(verified.contains("Verified: every CRC-32C"), "{verified}");
    let out = ok(&dir, &["verify"]);
    assert!(out.contains("orders-0: ok ("), "{out}");
    assert!(out.contains("400 records"), "{out}");
    assert!(out.contains("Verified 3 partitions"), "{out}"); // and the two internal ones
}

/// Flips one byte of `path` at `position`.
fn flip(path: &Path, position: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[position as usize] ^= 0x5a;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn verify_and_dump_verify_find_a_flipped_byte_in_a_batch() {
    let (_tmp, dir) = log_with_segments();
    let out = ok(&dir, &["dump", "--topic", "orders"]);
    let second = out
        .lines()
        .filter(|l| l.starts_with("baseOffset: "))
        .nth(1)
        .unwrap();
    let f: Vec<&str> = second.split_whitespace().collect();
    let (position, size): (u64, u64) = (f[7].parse().unwrap(), f[9].parse().unwrap());
    let log = dir.join("orders-0/00000000000000000000.log");
    flip(&log, position + size - 3); // inside the batch's last record

    let e = fails(&dir, &["verify"]);
    let want = format!(
        "corrupt data in {} at byte {position}: CRC-32C mismatch",
        log.display()
    );
    assert!(e.contains(&want), "{e}");
    let e = fails(&dir, &["dump", "--verify"]);
    assert!(e.contains(&want), "{e}");
    // Without --verify, dump shows the damage and goes on.
    let out = ok(&dir, &["dump", "--topic", "orders"]);
    assert_eq!(out.matches("(crc MISMATCH)").count(), 1, "{out}");
    // And the log itself refuses to hand the batch out.
    let e = fails(&dir, &["consume", "orders"]);
    assert!(e.contains("corrupt data in"), "{e}");
}

#[test]
fn verify_finds_a_flipped_byte_in_an_index() {
    let (_tmp, dir) = log_with_segments();
    let index = dir.join("orders-0/00000000000000000000.index");
    assert!(std::fs::metadata(&index).unwrap().len() >= 8);
    flip(&index, 7); // the first entry's position
    let e = fails(&dir, &["verify"]);
    assert!(
        e.contains(&format!(
            "corrupt data in {} at byte 0: entry 0",
            index.display()
        )),
        "{e}"
    );
    assert!(fails(&dir, &["dump", "--verify"]).contains(".index at byte 0"));

    let (_tmp, dir) = log_with_segments();
    let timeindex = dir.join("orders-0/00000000000000000000.timeindex");
    flip(&timeindex, 12 + 7); // the second entry's timestamp
    let e = fails(&dir, &["verify", "--topic", "orders"]);
    assert!(
        e.contains(&format!(
            "corrupt data in {} at byte 12: entry 1",
            timeindex.display()
        )),
        "{e}"
    );
}

#[test]
fn verify_reports_an_unsealed_tail_of_a_log_not_closed_cleanly() {
    let (_tmp, dir) = log_with_topic("1");
    ok_with(&dir, &["produce", "orders"], "a\nb\n");
    // As a killed writer leaves it: no clean-shutdown marker, the active
    // segment preallocated with zeros.
    std::fs::remove_file(dir.join(".clean-shutdown")).unwrap();
    let log = dir.join("orders-0/00000000000000000000.log");
    let mut bytes = std::fs::read(&log).unwrap();
    bytes.extend_from_slice(&[0; 4096]);
    std::fs::write(&log, bytes).unwrap();
    let out = ok(&dir, &["verify"]);
    assert!(out.contains("not closed cleanly"), "{out}");
    assert!(out.contains("4096 bytes of unsealed tail"), "{out}");
    let out = ok(&dir, &["dump", "--verify", "--topic", "orders"]);
    assert!(out.contains("Unsealed tail at position"), "{out}");
    // Closed cleanly, the same zeros are damage.
    std::fs::write(dir.join(".clean-shutdown"), b"").unwrap();
    let e = fails(&dir, &["verify"]);
    assert!(
        e.contains(&format!("corrupt data in {} at byte", log.display())),
        "{e}"
    );
}

#[test]
fn errors_are_one_line_with_a_non_zero_exit() {
    let (_tmp, dir) = log_with_topic("1");
    let e = fails(&dir, &["consume", "nope"]);
    assert_eq!(e, "brook: error: unknown topic \"nope\"");
    assert!(fails(&dir, &["produce", "nope"]).contains("unknown topic \"nope\""));
    assert!(fails(&dir, &["topics", "describe", "nope"]).contains("unknown topic"));
    assert!(fails(&dir, &["dump", "--topic", "nope"]).contains("unknown topic"));
    assert!(fails(&dir, &["topics", "create", "bad name"]).contains("invalid topic name"));
    assert!(fails(&dir, &["consume", "orders", "--partition", "7"]).contains("unknown partition 7"));
    let e = fails(&dir, &["consume", "orders", "--bogus"]);
    assert!(e.contains("unexpected argument '--bogus'"), "{e}");
    let e = fails(&dir, &["consume"]);
    assert!(e.contains("<TOPIC>"), "{e}");

    // A directory that holds no log is not created by mistake.
    let missing = dir.join("typo");
    assert!(fails(&missing, &["topics", "list"]).contains("no brook log in"));
    assert!(fails(&missing, &["verify"]).contains("no brook log in"));
    assert!(!missing.exists());

    let out = cargo_bin_cmd!("brook")
        .env_remove("BROOK_DIR")
        .args(["topics", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "brook: error: no log directory: pass --dir DIR or set BROOK_DIR\n"
    );
    // BROOK_DIR stands in for --dir.
    let out = cargo_bin_cmd!("brook")
        .env("BROOK_DIR", &dir)
        .args(["topics", "list"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "orders\n");
}

/// Kills the child on drop, so a failed test leaves no process behind.
struct Live(std::process::Child);

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_log_a_live_process_holds_is_refused_with_one_line() {
    let (_tmp, dir) = log_with_topic("1");
    // The live process: a consumer following the topic. (Not a `Log` in
    // this process: children that other tests spawn meanwhile would inherit
    // its lock until they exec.)
    let mut live = std::process::Command::new(assert_cmd::cargo::cargo_bin!("brook"));
    let live = Live(
        live.env_remove("BROOK_DIR")
            .arg("--dir")
            .arg(&dir)
            .args(["consume", "orders", "--follow"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Wait until it holds the lock: the lock file names its owner's pid.
    let lock = dir.join(".lock");
    let owner = format!("pid={}\n", live.0.id());
    let mut waited = 0;
    while !std::fs::read_to_string(&lock).unwrap().contains(&owner) {
        waited += 1;
        assert!(waited < 6000, "the consumer never opened the log");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let want = format!(
        "brook: error: log directory {} is locked by another open Log",
        lock.display()
    );
    for args in [
        &["topics", "list"][..],
        &["produce", "orders"],
        &["consume", "orders"],
        &["groups", "list"],
        &["dump"],
        &["verify"],
    ] {
        assert_eq!(fails(&dir, args), want, "{args:?}");
    }
    drop(live);
    assert_eq!(ok(&dir, &["topics", "list"]), "orders\n");
}

#[test]
fn help_says_not_to_run_against_a_live_log() {
    let tmp = tempfile::tempdir().unwrap();
    let help = ok(tmp.path(), &["--help"]);
    assert!(help.contains("must not"), "{help}");
    for cmd in ["topics", "produce", "consume", "groups", "dump", "verify"] {
        let help = ok(tmp.path(), &[cmd, "--help"]);
        assert!(help.contains("Usage: brook"), "{cmd}: {help}");
    }
}

/// Copies the files of log directory `from` to `to`. A log built in this
/// process is copied before the tool reads it: a child that another test
/// spawns while the log is open inherits its lock until it execs, which
/// could make the tool see the original as locked.
fn copy_log(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_log(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn dump_and_verify_read_compacted_compressed_and_transactional_batches() {
    use brook::{CleanupPolicy, Compression, Log, ProducerConfig, Record, TopicConfig};
    let tmp = tempfile::tempdir().unwrap();
    let built = tmp.path().join("built");
    let log = Log::open(&built).unwrap();
    let state = log
        .create_topic(
            "state",
            TopicConfig::default()
                .cleanup_policy(CleanupPolicy::Compact)
                .segment_bytes(4096)
                .max_record_bytes(1024)
                .compression(Compression::Lz4),
        )
        .unwrap();
    for round in 0..200 {
        for k in 0..5 {
            state
                .append(
                    format!("key-{k}"),
                    format!("value-{round}-{}", "x".repeat(100)),
                )
                .unwrap();
        }
        log.flush().unwrap();
    }
    log.compact_now("state").unwrap();
    log.create_topic("txn", TopicConfig::default()).unwrap();
    let mut p = log
        .producer(ProducerConfig::default().transactional_id("etl"))
        .unwrap();
    p.begin_transaction().unwrap();
    p.send("txn", Record::new("kept")).unwrap();
    p.commit_transaction().unwrap();
    p.begin_transaction().unwrap();
    p.send("txn", Record::new("dropped")).unwrap();
    p.abort_transaction().unwrap();
    drop(p);
    drop(state);
    log.close().unwrap();
    let dir = tmp.path().join("copy");
    copy_log(&built, &dir);

    let out = ok(&dir, &["verify"]);
    assert!(out.contains("state-0: ok ("), "{out}");
    assert!(out.contains("txn-0: ok ("), "{out}");
    assert!(out.contains("__transaction_state-0: ok ("), "{out}");
    let dump = ok(&dir, &["dump", "--verify", "--records"]);
    assert!(dump.contains("compression: lz4"), "{dump}");
    assert!(
        dump.contains("transactional: true control: commit"),
        "{dump}"
    );
    assert!(
        dump.contains("transactional: true control: abort"),
        "{dump}"
    );
    // Compaction left gaps: the latest value of each key is kept.
    assert!(
        dump.contains("key: \"key-4\" value: \"value-199-x"),
        "{dump}"
    );
    assert!(
        !dump.contains("key: \"key-4\" value: \"value-0-x"),
        "{dump}"
    );
    assert_eq!(ok(&dir, &["consume", "txn", "--read-committed"]), "kept\n");
    assert_eq!(ok(&dir, &["consume", "txn"]), "kept\ndropped\n");
}
